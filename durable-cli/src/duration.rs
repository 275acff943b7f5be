//! Durations on the command line (`30s`, `15m`, `2h`, `7d`, `1h30m`) and ages in tables.

use std::time::Duration;

use durable_core::policy::MAX_DURATION;

/// Parses a duration: one or more `<whole number><unit>` parts, with units `s`, `m`, `h`, `d`
/// (`90s`, `15m`, `2h`, `7d`, `1h30m`). At most [`MAX_DURATION`].
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("invalid duration {text:?}: {why} (examples: 30s, 15m, 2h, 7d)");
    if text.is_empty() {
        return Err(bad("it is empty"));
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(bad("expected a number"));
        }
        let (number, after) = rest.split_at(digits);
        let mut units = after.chars();
        let seconds_per_unit = match units.next() {
            Some('s') => 1,
            Some('m') => 60,
            Some('h') => 3_600,
            Some('d') => 86_400,
            Some(_) => return Err(bad("units are s, m, h and d")),
            None => return Err(bad("a number needs a unit")),
        };
        let part = number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(seconds_per_unit))
            .ok_or_else(|| bad("too long"))?;
        total = total.checked_add(part).ok_or_else(|| bad("too long"))?;
        rest = units.as_str();
    }
    let duration = Duration::from_secs(total);
    if duration > MAX_DURATION {
        return Err(bad("longer than 100 years"));
    }
    Ok(duration)
}

/// An age for a table: the two largest units (`45s`, `3m12s`, `2h05m`, `3d04h`); a negative
/// age (clocks apart) shows as `0s`.
pub(crate) fn format_age(age: chrono::Duration) -> String {
    let seconds = age.num_seconds().max(0);
    let (days, hours, minutes, secs) = (
        seconds / 86_400,
        seconds / 3_600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    if days > 0 {
        format!("{days}d{hours:02}h")
    } else if hours > 0 {
        format!("{hours}h{minutes:02}m")
    } else if minutes > 0 {
        format!("{minutes}m{secs:02}s")
    } else {
        format!("{secs}s")
    }
}

/// An age in seconds for JSON, to the millisecond; never negative.
pub(crate) fn age_seconds(age: chrono::Duration) -> f64 {
    age.num_milliseconds().max(0) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        let secs = |s| parse_duration(s).map(|d| d.as_secs());
        assert_eq!(secs("30s"), Ok(30));
        assert_eq!(secs("15m"), Ok(900));
        assert_eq!(secs("2h"), Ok(7_200));
        assert_eq!(secs("7d"), Ok(604_800));
        assert_eq!(secs("1h30m"), Ok(5_400));
        assert_eq!(secs("0s"), Ok(0));
    }

    #[test]
    fn bad_durations_are_refused_with_a_reason() {
        for (text, why) in [
            ("", "empty"),
            ("15", "needs a unit"),
            ("m", "expected a number"),
            ("1.5h", "units are"),
            ("3w", "units are"),
            ("-1s", "expected a number"),
            ("1h ", "expected a number"),
            ("99999999999999999999s", "too long"),
            ("40000d", "100 years"),
        ] {
            let error = parse_duration(text).err().unwrap_or_default();
            assert!(error.contains(why), "{text:?}: {error}");
        }
    }

    #[test]
    fn ages_show_two_units() {
        let age = |s| format_age(chrono::Duration::seconds(s));
        assert_eq!(age(-5), "0s");
        assert_eq!(age(45), "45s");
        assert_eq!(age(192), "3m12s");
        assert_eq!(age(2 * 3600 + 5 * 60 + 9), "2h05m");
        assert_eq!(age(3 * 86_400 + 4 * 3600), "3d04h");
        assert_eq!(age_seconds(chrono::Duration::milliseconds(1_234)), 1.234);
        assert_eq!(age_seconds(chrono::Duration::milliseconds(-3)), 0.0);
    }
}
