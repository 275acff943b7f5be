#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Timelike, Utc, Weekday};

use super::*;

mod random;

fn cron(expr: &str) -> CronSchedule {
    CronSchedule::parse(expr).unwrap_or_else(|e| panic!("{expr:?} should parse: {e}"))
}

fn err(expr: &str) -> CronError {
    match CronSchedule::parse(expr) {
        Ok(schedule) => panic!("{expr:?} should be refused, parsed as {schedule:?}"),
        Err(e) => e,
    }
}

fn at(rfc3339: &str) -> DateTime<Utc> {
    rfc3339.parse().unwrap()
}

fn next(expr: &str, after: &str) -> Option<DateTime<Utc>> {
    cron(expr).next_after(at(after))
}

/// The firings of `expr` after `after`, `count` of them.
fn firings(expr: &str, after: &str, count: usize) -> Vec<DateTime<Utc>> {
    let schedule = cron(expr);
    let mut t = at(after);
    let mut out = Vec::new();
    for _ in 0..count {
        t = schedule.next_after(t).unwrap();
        out.push(t);
    }
    out
}

fn ats(rfc3339: &[&str]) -> Vec<DateTime<Utc>> {
    rfc3339.iter().map(|s| at(s)).collect()
}

fn bits(values: impl IntoIterator<Item = u32>) -> u64 {
    values.into_iter().fold(0, |set, v| set | 1 << v)
}

// ---------------------------------------------------------------- parsing

#[test]
fn star_number_list_and_range() {
    let s = cron("* 5 1,15 1-3 *");
    assert!(!s.has_seconds());
    assert_eq!(s.seconds, bits([0]), "five fields fire at second 0");
    assert_eq!(s.minutes, bits(0..60));
    assert_eq!(s.hours, bits([5]));
    assert_eq!(s.days_of_month, bits([1, 15]));
    assert_eq!(s.months, bits(1..=3));
    assert_eq!(s.days_of_week, bits(0..7));
}

#[test]
fn steps_over_star_and_ranges() {
    let s = cron("*/15 1-10/3 */10 */5 */2");
    assert_eq!(s.minutes, bits([0, 15, 30, 45]));
    assert_eq!(s.hours, bits([1, 4, 7, 10]));
    assert_eq!(s.days_of_month, bits([1, 11, 21, 31]));
    assert_eq!(s.months, bits([1, 6, 11]));
    assert_eq!(s.days_of_week, bits([0, 2, 4, 6]));
}

#[test]
fn step_from_a_value_runs_to_the_end_of_the_field() {
    let s = cron("50/3 20/2 25/3 10/1 1/2");
    assert_eq!(s.minutes, bits([50, 53, 56, 59]));
    assert_eq!(s.hours, bits([20, 22]));
    assert_eq!(s.days_of_month, bits([25, 28, 31]));
    assert_eq!(s.months, bits([10, 11, 12]));
    assert_eq!(s.days_of_week, bits([1, 3, 5]), "the week ends on Saturday");
    assert_eq!(cron("0 0 * * 7/1").days_of_week, bits([0]), "7/n is Sunday");
}

#[test]
fn mixed_lists() {
    let s = cron("1,5-7,*/20 0,12 1,10-12,20/5 2,JUN-AUG 0,3-4");
    assert_eq!(s.minutes, bits([0, 1, 5, 6, 7, 20, 40]));
    assert_eq!(s.hours, bits([0, 12]));
    assert_eq!(s.days_of_month, bits([1, 10, 11, 12, 20, 25, 30]));
    assert_eq!(s.months, bits([2, 6, 7, 8]));
    assert_eq!(s.days_of_week, bits([0, 3, 4]));
}

#[test]
fn names_are_case_insensitive_and_work_in_ranges_and_steps() {
    let s = cron("0 0 * jan,Mar-MAY,oCt sun,Mon-wed");
    assert_eq!(s.months, bits([1, 3, 4, 5, 10]));
    assert_eq!(s.days_of_week, bits([0, 1, 2, 3]));
    let s = cron("0 0 * JAN/4 MON-FRI/2");
    assert_eq!(s.months, bits([1, 5, 9]));
    assert_eq!(s.days_of_week, bits([1, 3, 5]));
    let s = cron("0 0 * DEC SAT");
    assert_eq!((s.months, s.days_of_week), (bits([12]), bits([6])));
}

#[test]
fn sunday_is_both_0_and_7() {
    assert_eq!(cron("0 0 * * 7").days_of_week, bits([0]));
    assert_eq!(cron("0 0 * * 0").days_of_week, bits([0]));
    assert_eq!(cron("0 0 * * 5-7").days_of_week, bits([0, 5, 6]));
    assert_eq!(cron("0 0 * * 0-7").days_of_week, bits(0..7));
    assert_eq!(
        next("0 0 * * 7", "2024-03-06T00:00:00Z"),
        Some(at("2024-03-10T00:00:00Z")),
        "2024-03-10 is a Sunday"
    );
}

#[test]
fn six_field_form_has_a_leading_second_field() {
    let s = cron("*/15 0 12 * * *");
    assert!(s.has_seconds());
    assert_eq!(s.seconds, bits([0, 15, 30, 45]));
    assert_eq!(s.minutes, bits([0]));
    assert_eq!(s.hours, bits([12]));
    assert_eq!(cron("0-59 * * * * *").seconds, bits(0..60));
}

#[test]
fn macros_stand_for_their_expressions() {
    for (name, expansion) in [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
    ] {
        let by_macro = cron(name);
        let spelled = cron(expansion);
        assert_eq!(by_macro.to_string(), name);
        assert!(!by_macro.has_seconds(), "{name}");
        assert_eq!(
            CronSchedule {
                text: spelled.text.clone(),
                ..by_macro
            },
            spelled,
            "{name}"
        );
    }
    assert_eq!(cron("  @DAILY\t").to_string(), "@daily");
    assert_eq!(cron("@Hourly"), cron("@hourly"));
}

#[test]
fn the_day_rule_looks_at_the_first_character_of_the_day_fields() {
    let both = cron("0 0 1 * MON");
    assert!(!both.day_of_month_star && !both.day_of_week_star);
    let stepped = cron("0 0 */2 * MON");
    assert!(stepped.day_of_month_star && !stepped.day_of_week_star);
    let weekly = cron("0 0 1 * */2");
    assert!(!weekly.day_of_month_star && weekly.day_of_week_star);
}

#[test]
fn display_normalises_whitespace_and_parses_back() {
    let s = cron(" 0  9\t* *  MON-FRI \n");
    assert_eq!(s.to_string(), "0 9 * * MON-FRI");
    assert_eq!(cron(&s.to_string()), s);
    let s = cron("*/5   0 9 * * mon");
    assert_eq!(s.to_string(), "*/5 0 9 * * mon");
    assert_eq!(cron(&s.to_string()), s);
}

#[test]
fn from_str_and_parse_agree() {
    let parsed: CronSchedule = "0 9 * * MON-FRI".parse().unwrap();
    assert_eq!(parsed, cron("0 9 * * MON-FRI"));
    assert_eq!(
        "61 * * * *".parse::<CronSchedule>(),
        CronSchedule::parse("61 * * * *")
    );
}

#[test]
fn serde_uses_the_expression_text_and_validates_it() {
    let s = cron("0  9 * * MON-FRI");
    assert_eq!(serde_json::to_string(&s).unwrap(), r#""0 9 * * MON-FRI""#);
    let back: CronSchedule = serde_json::from_str(r#""0 9 * * MON-FRI""#).unwrap();
    assert_eq!(back, s);
    let back: CronSchedule = serde_json::from_str(r#""@weekly""#).unwrap();
    assert_eq!(back, cron("@weekly"));

    let refused = serde_json::from_str::<CronSchedule>(r#""61 * * * *""#).unwrap_err();
    assert!(
        refused
            .to_string()
            .contains(r#"minute field "61": value 61 out of range 0-59"#),
        "{refused}"
    );
    assert!(serde_json::from_str::<CronSchedule>("5").is_err());
}

// ---------------------------------------------------------------- errors

#[test]
fn error_messages_say_which_field_what_value_and_why() {
    let cases = [
        (
            "61 * * * *",
            r#"minute field "61": value 61 out of range 0-59"#,
        ),
        ("* *  *", "expected 5 or 6 fields, found 3"),
        ("", "empty cron expression"),
        (
            "*/0 * * * *",
            r#"minute field "*/0": step 0 out of range 1-60"#,
        ),
        (
            "* * * * FRI-MON",
            r#"day-of-week field "FRI-MON": range start 5 is after its end 1"#,
        ),
        (
            "* * * FOO *",
            r#"month field "FOO": unknown name "FOO", expected a number or a month name JAN-DEC"#,
        ),
        (
            "1,,2 * * * *",
            r#"minute field "1,,2": cannot read "", expected a number"#,
        ),
        (
            "@reboot",
            "unknown macro \"@reboot\": expected @yearly, @annually, @monthly, @weekly, @daily, \
             @midnight or @hourly",
        ),
    ];
    for (expr, message) in cases {
        assert_eq!(err(expr).to_string(), message, "{expr:?}");
    }
    assert_eq!(
        err(&"1".repeat(1_001)).to_string(),
        "cron expression is 1001 bytes long, the limit is 1000 bytes"
    );
}

#[test]
fn empty_expressions_are_refused() {
    for expr in ["", " ", "\t\n  "] {
        assert_eq!(err(expr), CronError::Empty, "{expr:?}");
    }
}

#[test]
fn long_expressions_are_refused_before_anything_else() {
    assert_eq!(
        err(&"x".repeat(MAX_EXPRESSION_LEN + 1)),
        CronError::TooLong {
            len: 1_001,
            max: 1_000
        }
    );
    // Surrounding whitespace counts too: the bound is on the input.
    let padded = format!("{}* * * * *", " ".repeat(MAX_EXPRESSION_LEN));
    assert!(matches!(
        err(&padded),
        CronError::TooLong { len: 1_009, .. }
    ));
    // Exactly at the limit is fine.
    let tail = " * * * *";
    let mut minutes = String::from("0");
    while minutes.len() + tail.len() + 2 <= MAX_EXPRESSION_LEN {
        minutes.push_str(",0");
    }
    while minutes.len() + tail.len() < MAX_EXPRESSION_LEN {
        minutes.push('0');
    }
    let at_limit = format!("{minutes}{tail}");
    assert_eq!(at_limit.len(), MAX_EXPRESSION_LEN);
    assert_eq!(cron(&at_limit).minutes, bits([0]));
}

#[test]
fn field_counts_other_than_5_or_6_are_refused() {
    for (expr, found) in [
        ("*", 1),
        ("* *", 2),
        ("* * * *", 4),
        ("* * * * * * *", 7),
        ("0 0 1 1 * 2024 x", 7),
    ] {
        assert_eq!(err(expr), CronError::FieldCount { found }, "{expr:?}");
    }
}

#[test]
fn unknown_macros_are_refused() {
    for expr in ["@reboot", "@", "@daily 5", "@every 5m", " @yearlyy "] {
        assert_eq!(
            err(expr),
            CronError::UnknownMacro {
                text: expr.trim().to_owned()
            },
            "{expr:?}"
        );
    }
}

#[test]
fn values_out_of_range_are_refused_in_every_field() {
    use CronField::*;
    let cases = [
        ("60 * * * * *", Second, "60", "60", 0, 59),
        ("60 * * * *", Minute, "60", "60", 0, 59),
        ("* 24 * * *", Hour, "24", "24", 0, 23),
        ("* * 0 * *", DayOfMonth, "0", "0", 1, 31),
        ("* * 32 * *", DayOfMonth, "32", "32", 1, 31),
        ("* * * 0 *", Month, "0", "0", 1, 12),
        ("* * * 13 *", Month, "13", "13", 1, 12),
        ("* * * * 8", DayOfWeek, "8", "8", 0, 7),
        ("* * * * 1-8", DayOfWeek, "1-8", "8", 0, 7),
        ("10-70/5 * * * *", Minute, "10-70/5", "70", 0, 59),
        ("1,99 * * * *", Minute, "1,99", "99", 0, 59),
        (
            "99999999999999999999 * * * *",
            Minute,
            "99999999999999999999",
            "99999999999999999999",
            0,
            59,
        ),
    ];
    for (expr, field, text, value, min, max) in cases {
        assert_eq!(
            err(expr),
            CronError::OutOfRange {
                field,
                text: text.to_owned(),
                value: value.to_owned(),
                min,
                max
            },
            "{expr:?}"
        );
    }
}

#[test]
fn steps_of_zero_or_beyond_the_field_are_refused() {
    use CronField::*;
    let cases = [
        ("*/0 * * * *", Minute, "*/0", "0", 60),
        ("1-5/0 * * * *", Minute, "1-5/0", "0", 60),
        ("*/61 * * * *", Minute, "*/61", "61", 60),
        ("*/61 * * * * *", Second, "*/61", "61", 60),
        ("* */25 * * *", Hour, "*/25", "25", 24),
        ("* * */32 * *", DayOfMonth, "*/32", "32", 31),
        ("* * * */13 *", Month, "*/13", "13", 12),
        ("* * * * */8", DayOfWeek, "*/8", "8", 7),
        (
            "* * * * 1/99999999999",
            DayOfWeek,
            "1/99999999999",
            "99999999999",
            7,
        ),
    ];
    for (expr, field, text, step, max) in cases {
        assert_eq!(
            err(expr),
            CronError::BadStep {
                field,
                text: text.to_owned(),
                step: step.to_owned(),
                max
            },
            "{expr:?}"
        );
    }
    // The largest steps are accepted.
    assert_eq!(cron("*/60 * * * *").minutes, bits([0]));
    assert_eq!(cron("* * * * */7").days_of_week, bits([0]));
}

#[test]
fn ranges_that_run_backwards_are_refused() {
    use CronField::*;
    let cases = [
        ("30-10 * * * *", Minute, "30-10", 30, 10),
        ("* * * DEC-JAN *", Month, "DEC-JAN", 12, 1),
        ("* * * * SAT-SUN", DayOfWeek, "SAT-SUN", 6, 0),
        ("* * 1,20-5/2 * *", DayOfMonth, "1,20-5/2", 20, 5),
    ];
    for (expr, field, text, start, end) in cases {
        assert_eq!(
            err(expr),
            CronError::ReversedRange {
                field,
                text: text.to_owned(),
                start,
                end
            },
            "{expr:?}"
        );
    }
}

#[test]
fn unknown_names_are_refused() {
    use CronField::*;
    let cases = [
        ("* * * FOO *", Month, "FOO", "FOO"),
        ("* * * JANUARY *", Month, "JANUARY", "JANUARY"),
        ("* * * SUN *", Month, "SUN", "SUN"),
        ("* * * * MOX", DayOfWeek, "MOX", "MOX"),
        ("* * * * MON-JAN", DayOfWeek, "MON-JAN", "JAN"),
    ];
    for (expr, field, text, name) in cases {
        assert_eq!(
            err(expr),
            CronError::UnknownName {
                field,
                text: text.to_owned(),
                name: name.to_owned()
            },
            "{expr:?}"
        );
    }
}

#[test]
fn unreadable_parts_are_refused() {
    use CronField::*;
    let cases = [
        ("abc * * * *", Minute, "abc", "abc"),
        ("1,,2 * * * *", Minute, "1,,2", ""),
        ("5, * * * *", Minute, "5,", ""),
        ("1- * * * *", Minute, "1-", ""),
        ("-5 * * * *", Minute, "-5", ""),
        ("1/2/3 * * * *", Minute, "1/2/3", "2/3"),
        ("*/x * * * *", Minute, "*/x", "x"),
        ("*/ * * * *", Minute, "*/", ""),
        ("** * * * *", Minute, "**", "**"),
        ("*-5 * * * *", Minute, "*-5", "*"),
        ("1-2-3 * * * *", Minute, "1-2-3", "2-3"),
        ("1.5 * * * *", Minute, "1.5", "1.5"),
        ("+1 * * * *", Minute, "+1", "+1"),
        ("* MON * * *", Hour, "MON", "MON"),
        ("* * L * *", DayOfMonth, "L", "L"),
        ("* * * * ?", DayOfWeek, "?", "?"),
        ("* * * * 1#2", DayOfWeek, "1#2", "1#2"),
        ("* * * \u{FF15} *", Month, "\u{FF15}", "\u{FF15}"),
    ];
    for (expr, field, text, part) in cases {
        assert_eq!(
            err(expr),
            CronError::Malformed {
                field,
                text: text.to_owned(),
                part: part.to_owned()
            },
            "{expr:?}"
        );
    }
}

// ---------------------------------------------------------------- next_after

#[test]
fn every_minute_fires_at_the_next_whole_minute() {
    assert_eq!(
        firings("* * * * *", "2024-01-01T10:00:00Z", 3),
        ats(&[
            "2024-01-01T10:01:00Z",
            "2024-01-01T10:02:00Z",
            "2024-01-01T10:03:00Z"
        ])
    );
    assert_eq!(
        next("* * * * *", "2024-01-01T10:00:30.5Z"),
        Some(at("2024-01-01T10:01:00Z"))
    );
}

#[test]
fn every_15_seconds_in_the_six_field_form() {
    assert_eq!(
        firings("*/15 * * * * *", "2024-01-01T10:00:00Z", 5),
        ats(&[
            "2024-01-01T10:00:15Z",
            "2024-01-01T10:00:30Z",
            "2024-01-01T10:00:45Z",
            "2024-01-01T10:01:00Z",
            "2024-01-01T10:01:15Z"
        ])
    );
    assert_eq!(
        next("*/15 * * * * *", "2024-01-01T10:00:14.999999999Z"),
        Some(at("2024-01-01T10:00:15Z"))
    );
}

#[test]
fn the_result_is_strictly_after_and_in_whole_seconds() {
    assert_eq!(
        next("* * * * * *", "2024-01-01T10:00:00Z"),
        Some(at("2024-01-01T10:00:01Z"))
    );
    assert_eq!(
        next("* * * * * *", "2024-01-01T10:00:00.000000001Z"),
        Some(at("2024-01-01T10:00:01Z"))
    );
    assert_eq!(
        next("0 9 * * *", "2024-01-01T09:00:00Z"),
        Some(at("2024-01-02T09:00:00Z")),
        "a firing at exactly `after` is not returned"
    );
    assert_eq!(
        next("0 9 * * *", "2024-01-01T08:59:59.999Z"),
        Some(at("2024-01-01T09:00:00Z"))
    );
}

#[test]
fn weekdays_skip_the_weekend() {
    // 2024-03-08 is a Friday.
    assert_eq!(
        firings("0 9 * * MON-FRI", "2024-03-07T09:00:00Z", 3),
        ats(&[
            "2024-03-08T09:00:00Z",
            "2024-03-11T09:00:00Z",
            "2024-03-12T09:00:00Z"
        ])
    );
    assert_eq!(
        next("0 9 * * MON-FRI", "2024-03-09T08:00:00Z"),
        Some(at("2024-03-11T09:00:00Z"))
    );
}

#[test]
fn days_missing_from_a_month_are_skipped() {
    assert_eq!(
        firings("0 0 31 * *", "2024-01-31T00:00:00Z", 3),
        ats(&[
            "2024-03-31T00:00:00Z",
            "2024-05-31T00:00:00Z",
            "2024-07-31T00:00:00Z"
        ])
    );
    assert_eq!(
        next("30 12 30 * *", "2023-01-30T12:30:00Z"),
        Some(at("2023-03-30T12:30:00Z"))
    );
}

#[test]
fn february_29th_waits_for_leap_years() {
    assert_eq!(
        firings("0 0 29 2 *", "2023-03-01T00:00:00Z", 3),
        ats(&[
            "2024-02-29T00:00:00Z",
            "2028-02-29T00:00:00Z",
            "2032-02-29T00:00:00Z"
        ])
    );
    // 2100 is no leap year: eight years between two firings, found all the same.
    assert_eq!(
        next("0 0 29 2 *", "2096-02-29T00:00:00Z"),
        Some(at("2104-02-29T00:00:00Z"))
    );
    assert_eq!(
        next("0 0 29 2 *", "2000-01-01T00:00:00Z"),
        Some(at("2000-02-29T00:00:00Z")),
        "2000 is a leap year"
    );
}

#[test]
fn restricted_day_of_month_and_day_of_week_match_either() {
    // 2024-01-01 is a Monday; 2024-02-15 is a Thursday.
    assert_eq!(
        firings("0 0 15 * MON", "2024-01-01T00:00:00Z", 8),
        ats(&[
            "2024-01-08T00:00:00Z",
            "2024-01-15T00:00:00Z",
            "2024-01-22T00:00:00Z",
            "2024-01-29T00:00:00Z",
            "2024-02-05T00:00:00Z",
            "2024-02-12T00:00:00Z",
            "2024-02-15T00:00:00Z",
            "2024-02-19T00:00:00Z"
        ])
    );
}

#[test]
fn a_day_field_beginning_with_star_makes_both_day_fields_required() {
    // Mondays on odd days of the month.
    assert_eq!(
        firings("0 0 */2 * MON", "2024-01-01T00:00:00Z", 3),
        ats(&[
            "2024-01-15T00:00:00Z",
            "2024-01-29T00:00:00Z",
            "2024-02-05T00:00:00Z"
        ])
    );
    // `*/5` (Sunday and Friday) begins with `*`: the 13th, when it is a Sunday or a Friday.
    assert_eq!(
        firings("0 0 13 * */5", "2024-01-01T00:00:00Z", 2),
        ats(&["2024-09-13T00:00:00Z", "2024-10-13T00:00:00Z"])
    );
    assert_eq!(
        firings("0 0 13 * *", "2024-01-01T00:00:00Z", 2),
        ats(&["2024-01-13T00:00:00Z", "2024-02-13T00:00:00Z"])
    );
    assert_eq!(
        firings("0 0 * * FRI", "2024-01-01T00:00:00Z", 2),
        ats(&["2024-01-05T00:00:00Z", "2024-01-12T00:00:00Z"])
    );
}

#[test]
fn years_roll_over() {
    assert_eq!(
        next("0 0 1 1 *", "2024-06-15T12:00:00Z"),
        Some(at("2025-01-01T00:00:00Z"))
    );
    assert_eq!(
        next("59 23 31 12 *", "2024-12-31T23:59:00Z"),
        Some(at("2025-12-31T23:59:00Z"))
    );
    assert_eq!(
        next("* * * * *", "2024-12-31T23:59:30Z"),
        Some(at("2025-01-01T00:00:00Z"))
    );
    assert_eq!(
        next("*/15 * * * * *", "2024-12-31T23:59:59.5Z"),
        Some(at("2025-01-01T00:00:00Z"))
    );
    assert_eq!(
        next("30 * * JUN *", "2024-07-01T00:00:00Z"),
        Some(at("2025-06-01T00:30:00Z"))
    );
}

#[test]
fn macros_fire_when_documented() {
    let after = "2024-05-15T10:20:30Z";
    for (expr, expected) in [
        ("@yearly", "2025-01-01T00:00:00Z"),
        ("@monthly", "2024-06-01T00:00:00Z"),
        ("@weekly", "2024-05-19T00:00:00Z"),
        ("@daily", "2024-05-16T00:00:00Z"),
        ("@hourly", "2024-05-15T11:00:00Z"),
    ] {
        assert_eq!(next(expr, after), Some(at(expected)), "{expr}");
    }
}

#[test]
fn impossible_dates_never_fire() {
    for expr in [
        "0 0 30 2 *",
        "0 0 31 2,4,6,9,11 *",
        "* * 31 FEB *",
        "*/10 * * 30,31 FEB */2",
    ] {
        for after in ["1970-01-01T00:00:00Z", "2024-02-28T23:59:59Z"] {
            assert_eq!(next(expr, after), None, "{expr} after {after}");
        }
        assert_eq!(cron(expr).next_after(DateTime::<Utc>::MIN_UTC), None);
        assert_eq!(cron(expr).next_after(DateTime::<Utc>::MAX_UTC), None);
    }
}

#[test]
fn rare_schedules_are_found_many_years_ahead() {
    // `*/31` is the 1st only, but begins with `*`: February 1st when it is a Monday.
    let expected_year = (2028..)
        .find(|&y| NaiveDate::from_ymd_opt(y, 2, 1).unwrap().weekday() == Weekday::Mon)
        .unwrap();
    assert!(expected_year > 2033, "a gap of more than five years");
    assert_eq!(
        next("0 0 */31 2 MON", "2027-02-02T00:00:00Z"),
        Some(at(&format!("{expected_year}-02-01T00:00:00Z")))
    );
}

#[test]
fn the_edges_of_the_time_range_do_not_overflow() {
    let max = DateTime::<Utc>::MAX_UTC;
    let min = DateTime::<Utc>::MIN_UTC;
    let last_whole_second = max.with_nanosecond(0).unwrap();
    assert_eq!(cron("* * * * * *").next_after(max), None);
    assert_eq!(
        cron("* * * * * *").next_after(max - TimeDelta::seconds(1)),
        Some(last_whole_second)
    );
    assert_eq!(cron("* * * * *").next_after(max), None);
    assert_eq!(cron("@yearly").next_after(max - TimeDelta::days(1)), None);
    assert_eq!(
        cron("0 0 29 2 *").next_after(max - TimeDelta::days(400)),
        None
    );
    assert_eq!(
        cron("* * * * *").next_after(min),
        Some(min + TimeDelta::minutes(1))
    );
    assert_eq!(
        cron("0 0 29 2 *").next_after(min).map(|t| t.month()),
        Some(2)
    );
}
