//! A seeded cross-check of random expressions against a brute-force reference.

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Timelike, Utc};

use super::cron;
use crate::cron::CronField;

/// SplitMix64: a tiny, seeded pseudo-random generator, enough to draw test cases.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    fn range(&mut self, lo: u32, hi: u32) -> u32 {
        lo + (self.next_u64() % u64::from(hi - lo + 1)) as u32
    }

    fn percent(&mut self, percent: u32) -> bool {
        self.range(0, 99) < percent
    }
}

/// A field drawn at random: its text, and the values it stands for, worked out from the
/// documented syntax rather than by the parser.
struct RandomField {
    text: String,
    /// `(start, end, step)` of every item.
    items: Vec<(u32, u32, u32)>,
}

impl RandomField {
    fn contains(&self, value: u32) -> bool {
        self.items.iter().any(|&(start, end, step)| {
            (start..=end).contains(&value) && (value - start).is_multiple_of(step)
        })
    }

    fn star(&self) -> bool {
        self.text.starts_with('*')
    }
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

fn random_value_text(rng: &mut SplitMix64, field: CronField, value: u32) -> String {
    let name = match field {
        CronField::Month => Some(MONTHS[value as usize - 1]),
        CronField::DayOfWeek if value < 7 => Some(WEEKDAYS[value as usize]),
        _ => None,
    };
    match name {
        Some(name) if rng.percent(40) => name
            .chars()
            .map(|c| {
                if rng.percent(50) {
                    c.to_ascii_lowercase()
                } else {
                    c
                }
            })
            .collect(),
        _ => value.to_string(),
    }
}

fn random_field(rng: &mut SplitMix64, field: CronField, star_percent: u32) -> RandomField {
    // (smallest, largest, end of `*` and `a/n`), as documented.
    let (min, max, end_of_field) = match field {
        CronField::Second | CronField::Minute => (0, 59, 59),
        CronField::Hour => (0, 23, 23),
        CronField::DayOfMonth => (1, 31, 31),
        CronField::Month => (1, 12, 12),
        CronField::DayOfWeek => (0, 7, 6),
    };
    let max_step = end_of_field - min + 1;
    if rng.percent(star_percent) {
        if rng.percent(25) {
            let step = rng.range(1, max_step);
            return RandomField {
                text: format!("*/{step}"),
                items: vec![(min, end_of_field, step)],
            };
        }
        return RandomField {
            text: "*".to_owned(),
            items: vec![(min, end_of_field, 1)],
        };
    }
    let mut texts = Vec::new();
    let mut items = Vec::new();
    for _ in 0..rng.range(1, 3) {
        let a = rng.range(min, max);
        let b = rng.range(a, max);
        let step = rng.range(1, max_step);
        let (a_text, b_text) = (
            random_value_text(rng, field, a),
            random_value_text(rng, field, b),
        );
        match rng.range(0, 3) {
            0 => {
                texts.push(a_text);
                items.push((a, a, 1));
            }
            1 => {
                texts.push(format!("{a_text}-{b_text}"));
                items.push((a, b, 1));
            }
            2 => {
                texts.push(format!("{a_text}-{b_text}/{step}"));
                items.push((a, b, step));
            }
            _ => {
                texts.push(format!("{a_text}/{step}"));
                items.push((a, end_of_field.max(a), step));
            }
        }
    }
    RandomField {
        text: texts.join(","),
        items,
    }
}

/// A random expression with a reference matcher that knows nothing of the parser's bit sets.
struct RandomSchedule {
    second: Option<RandomField>,
    minute: RandomField,
    hour: RandomField,
    day_of_month: RandomField,
    month: RandomField,
    day_of_week: RandomField,
}

impl RandomSchedule {
    fn draw(rng: &mut SplitMix64) -> Self {
        let second = rng
            .percent(30)
            .then(|| random_field(rng, CronField::Second, 40));
        RandomSchedule {
            second,
            minute: random_field(rng, CronField::Minute, 30),
            hour: random_field(rng, CronField::Hour, 40),
            day_of_month: random_field(rng, CronField::DayOfMonth, 70),
            month: random_field(rng, CronField::Month, 90),
            day_of_week: random_field(rng, CronField::DayOfWeek, 60),
        }
    }

    fn text(&self) -> String {
        let fields = [
            &self.minute,
            &self.hour,
            &self.day_of_month,
            &self.month,
            &self.day_of_week,
        ];
        let texts = self
            .second
            .iter()
            .chain(fields)
            .map(|f| f.text.as_str())
            .collect::<Vec<_>>();
        texts.join(" ")
    }

    fn day_matches(&self, t: DateTime<Utc>) -> bool {
        let weekday = t.weekday().num_days_from_sunday();
        let by_month_day = self.day_of_month.contains(t.day());
        let by_week_day =
            self.day_of_week.contains(weekday) || (weekday == 0 && self.day_of_week.contains(7));
        if self.day_of_month.star() || self.day_of_week.star() {
            by_month_day && by_week_day
        } else {
            by_month_day || by_week_day
        }
    }

    fn minute_matches(&self, t: DateTime<Utc>) -> bool {
        self.month.contains(t.month())
            && self.day_matches(t)
            && self.hour.contains(t.hour())
            && self.minute.contains(t.minute())
    }

    fn second_matches(&self, second: u32) -> bool {
        match &self.second {
            Some(field) => field.contains(second),
            None => second == 0,
        }
    }

    fn matches(&self, t: DateTime<Utc>) -> bool {
        t.nanosecond() == 0 && self.minute_matches(t) && self.second_matches(t.second())
    }

    /// The first firing after `after`, minute by minute, up to `minutes` minutes ahead.
    fn brute_force_next(&self, after: DateTime<Utc>, minutes: i64) -> Option<DateTime<Utc>> {
        let base = after.with_nanosecond(0)?.with_second(0)?;
        (0..=minutes)
            .map(|k| base + TimeDelta::minutes(k))
            .filter(|&t| self.minute_matches(t))
            .flat_map(|t| (0..60).map(move |s| t + TimeDelta::seconds(s)))
            .find(|&t| t > after && self.second_matches(t.second()))
    }
}

fn random_start(rng: &mut SplitMix64) -> DateTime<Utc> {
    let year = rng.range(1970, 2199) as i32;
    let month = rng.range(1, 12);
    let last_day = NaiveDate::from_ymd_opt(year, month, 1)
        .unwrap()
        .checked_add_months(chrono::Months::new(1))
        .unwrap()
        .pred_opt()
        .unwrap()
        .day();
    // Often the last hour of a month, to cross month and year ends.
    let (day, hour) = if rng.percent(25) {
        (last_day, 23)
    } else {
        (rng.range(1, last_day), rng.range(0, 23))
    };
    let nanos = if rng.percent(30) {
        rng.range(0, 999_999_999)
    } else {
        0
    };
    NaiveDate::from_ymd_opt(year, month, day)
        .unwrap()
        .and_hms_nano_opt(hour, rng.range(0, 59), rng.range(0, 59), nanos)
        .unwrap()
        .and_utc()
}

#[test]
fn random_expressions_agree_with_a_minute_by_minute_search() {
    const CASES: usize = 1_000;
    const WINDOW_MINUTES: i64 = 3 * 24 * 60;
    let mut rng = SplitMix64(0x00C0_FFEE_D00D_2024);
    let mut found_in_window = 0;
    for case in 0..CASES {
        let reference = RandomSchedule::draw(&mut rng);
        let text = reference.text();
        let schedule = cron(&text);
        assert_eq!(schedule.has_seconds(), reference.second.is_some(), "{text}");
        let after = random_start(&mut rng);
        let actual = schedule.next_after(after);
        let context = format!("case {case}: {text:?} after {after}: got {actual:?}");
        if let Some(t) = actual {
            assert!(t > after, "{context}");
            assert!(reference.matches(t), "{context}");
        }
        match reference.brute_force_next(after, WINDOW_MINUTES) {
            Some(expected) => {
                found_in_window += 1;
                assert_eq!(actual, Some(expected), "{context}");
            }
            None => {
                let window_end = after + TimeDelta::minutes(WINDOW_MINUTES);
                assert!(actual.is_none_or(|t| t > window_end), "{context}");
            }
        }
    }
    // Unless most cases are decided by the reference, the check proves little (545 of 1,000 are,
    // with this seed).
    assert!(
        found_in_window >= 500,
        "only {found_in_window} of {CASES} expressions fired within the window"
    );
}

#[test]
fn random_expressions_from_any_instant_never_panic_and_match() {
    let mut rng = SplitMix64(7);
    let min = DateTime::<Utc>::MIN_UTC.timestamp();
    let max = DateTime::<Utc>::MAX_UTC.timestamp();
    let mut fired = 0;
    for case in 0..300 {
        let reference = RandomSchedule::draw(&mut rng);
        let schedule = cron(&reference.text());
        let after = match case % 4 {
            0 => DateTime::<Utc>::MAX_UTC - TimeDelta::seconds(i64::from(rng.range(0, 1 << 30))),
            1 => DateTime::<Utc>::MIN_UTC + TimeDelta::seconds(i64::from(rng.range(0, 1 << 30))),
            _ => {
                let span = (max - min) as u64;
                let secs = min + (rng.next_u64() % span) as i64;
                DateTime::from_timestamp(secs, 0).unwrap()
            }
        };
        if let Some(t) = schedule.next_after(after) {
            fired += 1;
            assert!(t > after, "{schedule} after {after}: {t}");
            assert!(reference.matches(t), "{schedule} after {after}: {t}");
            // Nothing was skipped just before it.
            assert_eq!(
                schedule.next_after(t - TimeDelta::seconds(1)),
                Some(t),
                "{schedule} after {after}"
            );
        }
    }
    assert!(fired >= 290, "only {fired} of 300 expressions fired");
}
