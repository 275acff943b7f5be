//! Cron expressions for schedules: [`CronSchedule`] parses one and computes when it fires next.
//!
//! # Syntax
//!
//! An expression has five fields, or six with a leading `second` field, separated by whitespace:
//!
//! | field          | values                 | names           |
//! |----------------|------------------------|-----------------|
//! | `second`       | 0-59 (six-field form)  |                 |
//! | `minute`       | 0-59                   |                 |
//! | `hour`         | 0-23                   |                 |
//! | `day-of-month` | 1-31                   |                 |
//! | `month`        | 1-12                   | `JAN`-`DEC`     |
//! | `day-of-week`  | 0-7 (0 and 7: Sunday)  | `SUN`-`SAT`     |
//!
//! Each field is a comma-separated list of items; an item is one of
//!
//! - `*`: every value of the field;
//! - `5`: one value (a number, or a name in the month and day-of-week fields; names are
//!   case-insensitive);
//! - `1-5`: an inclusive range, start not after end (`MON-FRI`, `JAN-MAR`);
//! - `*/15`, `1-30/2`, `5/10`: a step over `*`, over a range, or from a value up to the end
//!   of the field (the end of the day-of-week field is Saturday, so `1/2` means Monday,
//!   Wednesday and Friday). Steps run from 1 to the number of values of the field.
//!
//! A five-field expression fires at second 0 of each matching minute. These macros stand for
//! whole five-field expressions:
//!
//! | macro                     | same as       |
//! |---------------------------|---------------|
//! | `@yearly`, `@annually`    | `0 0 1 1 *`   |
//! | `@monthly`                | `0 0 1 * *`   |
//! | `@weekly`                 | `0 0 * * 0`   |
//! | `@daily`, `@midnight`     | `0 0 * * *`   |
//! | `@hourly`                 | `0 * * * *`   |
//!
//! Expressions longer than [`MAX_EXPRESSION_LEN`] bytes are refused.
//!
//! # Time zone
//!
//! Schedules are read in UTC, always: `0 9 * * *` fires at 09:00 UTC, whatever the time zone of
//! the machine or of the user. There are no daylight-saving gaps or repeats in UTC.
//!
//! # Day of month and day of week
//!
//! As in Vixie cron: when both the day-of-month and the day-of-week fields are restricted, a
//! day matches if it matches **either** of them; otherwise it must match both. A field counts as
//! unrestricted when it begins with `*` (so `*` and `*/2` alike). `0 0 1,15 * MON` fires on the
//! 1st, on the 15th and on every Monday; `0 0 */2 * MON` fires on Mondays that fall on an odd
//! day of the month.
//!
//! # Example
//!
//! ```
//! use chrono::{DateTime, Utc};
//! use durable_core::CronSchedule;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // 09:00 UTC on weekdays.
//! let schedule: CronSchedule = "0 9 * * MON-FRI".parse()?;
//!
//! // From a Friday evening, the next run is on Monday morning.
//! let friday_evening: DateTime<Utc> = "2024-03-08T18:00:00Z".parse()?;
//! let next = schedule.next_after(friday_evening);
//! assert_eq!(next, Some("2024-03-11T09:00:00Z".parse()?));
//! assert_eq!(schedule.to_string(), "0 9 * * MON-FRI");
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest expression [`CronSchedule::parse`] accepts, in bytes.
pub const MAX_EXPRESSION_LEN: usize = 1_000;

/// How many years past the start [`CronSchedule::next_after`] searches. The Gregorian calendar
/// repeats every 400 years (146,097 days, a whole number of weeks), so a schedule that does not
/// fire within 401 calendar years never fires: `None` is exact, never a give-up.
const SEARCH_YEARS: i32 = 401;

/// A field of a cron expression, named in [`CronError`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CronField {
    /// Seconds, 0-59 (only in six-field expressions).
    Second,
    /// Minutes, 0-59.
    Minute,
    /// Hours, 0-23.
    Hour,
    /// Day of the month, 1-31.
    DayOfMonth,
    /// Month, 1-12 or `JAN`-`DEC`.
    Month,
    /// Day of the week, 0-7 (0 and 7 are Sunday) or `SUN`-`SAT`.
    DayOfWeek,
}

impl CronField {
    /// The values a field accepts as numbers, and the largest value `*` and `a/n` reach.
    const fn bounds(self) -> (u32, u32, u32) {
        match self {
            CronField::Second | CronField::Minute => (0, 59, 59),
            CronField::Hour => (0, 23, 23),
            CronField::DayOfMonth => (1, 31, 31),
            CronField::Month => (1, 12, 12),
            // 7 is accepted as Sunday, but `*` and `a/n` stop at Saturday (6).
            CronField::DayOfWeek => (0, 7, 6),
        }
    }

    /// The names a field accepts, the first one standing for the field's smallest value.
    fn names(self) -> &'static [&'static str] {
        match self {
            CronField::Month => &[
                "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
            ],
            CronField::DayOfWeek => &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
            _ => &[],
        }
    }

    /// What an item of this field may be, for error messages.
    fn expected(self) -> &'static str {
        match self {
            CronField::Month => "a number or a month name JAN-DEC",
            CronField::DayOfWeek => "a number or a weekday name SUN-SAT",
            _ => "a number",
        }
    }
}

impl fmt::Display for CronField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CronField::Second => "second",
            CronField::Minute => "minute",
            CronField::Hour => "hour",
            CronField::DayOfMonth => "day-of-month",
            CronField::Month => "month",
            CronField::DayOfWeek => "day-of-week",
        })
    }
}

/// Why a cron expression was refused. Field errors name the field and quote its text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CronError {
    /// The expression is empty or only whitespace.
    #[error("empty cron expression")]
    Empty,
    /// The expression is longer than [`MAX_EXPRESSION_LEN`].
    #[error("cron expression is {len} bytes long, the limit is {max} bytes")]
    TooLong {
        /// The length of the expression, in bytes.
        len: usize,
        /// The limit, [`MAX_EXPRESSION_LEN`].
        max: usize,
    },
    /// The expression does not have five or six fields.
    #[error("expected 5 or 6 fields, found {found}")]
    FieldCount {
        /// How many whitespace-separated fields the expression has.
        found: usize,
    },
    /// The expression begins with `@` but is not a known macro.
    #[error(
        "unknown macro \"{text}\": expected @yearly, @annually, @monthly, @weekly, @daily, \
         @midnight or @hourly"
    )]
    UnknownMacro {
        /// The expression, trimmed.
        text: String,
    },
    /// A value lies outside the field's range.
    #[error("{field} field \"{text}\": value {value} out of range {min}-{max}")]
    OutOfRange {
        /// The field holding the value.
        field: CronField,
        /// The field's text.
        text: String,
        /// The value, as written.
        value: String,
        /// The smallest value of the field.
        min: u32,
        /// The largest value of the field.
        max: u32,
    },
    /// A step is 0 or larger than the number of values of the field.
    #[error("{field} field \"{text}\": step {step} out of range 1-{max}")]
    BadStep {
        /// The field holding the step.
        field: CronField,
        /// The field's text.
        text: String,
        /// The step, as written.
        step: String,
        /// The largest step the field accepts.
        max: u32,
    },
    /// A range starts after it ends.
    #[error("{field} field \"{text}\": range start {start} is after its end {end}")]
    ReversedRange {
        /// The field holding the range.
        field: CronField,
        /// The field's text.
        text: String,
        /// The start of the range.
        start: u32,
        /// The end of the range.
        end: u32,
    },
    /// A name is not a month name (in the month field) or a weekday name (day-of-week field).
    #[error("{field} field \"{text}\": unknown name \"{name}\", expected {}", .field.expected())]
    UnknownName {
        /// The field holding the name.
        field: CronField,
        /// The field's text.
        text: String,
        /// The name, as written.
        name: String,
    },
    /// Part of a field is neither `*`, a number, a name, a range nor a step (an empty list item,
    /// a stray character, a name in a field that has none).
    #[error("{field} field \"{text}\": cannot read \"{part}\", expected {}", .field.expected())]
    Malformed {
        /// The field.
        field: CronField,
        /// The field's text.
        text: String,
        /// The part that could not be read.
        part: String,
    },
}

/// A parsed cron expression; see the [module documentation](crate::cron) for the syntax and
/// rules.
///
/// It displays, serializes and deserializes as its expression text, whitespace-normalised
/// (fields separated by one space, macros in lower case). Deserializing validates the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CronSchedule {
    /// The normalised expression; the sets below are a function of it.
    text: String,
    has_seconds: bool,
    /// Bit `n` set: value `n` matches. Days of week use bits 0-6 (7 is stored as 0).
    seconds: u64,
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    days_of_week: u64,
    /// Whether the day-of-month / day-of-week field begins with `*` (the Vixie cron rule).
    day_of_month_star: bool,
    day_of_week_star: bool,
}

impl CronSchedule {
    /// Parses a cron expression; see the [module documentation](crate::cron) for the syntax.
    pub fn parse(expr: &str) -> Result<CronSchedule, CronError> {
        if expr.len() > MAX_EXPRESSION_LEN {
            return Err(CronError::TooLong {
                len: expr.len(),
                max: MAX_EXPRESSION_LEN,
            });
        }
        let trimmed = expr.trim();
        if trimmed.is_empty() {
            return Err(CronError::Empty);
        }
        if trimmed.starts_with('@') {
            return Self::parse_macro(trimmed);
        }
        let fields: Vec<&str> = trimmed.split_whitespace().collect();
        let (second, minute, hour, day_of_month, month, day_of_week) = match fields[..] {
            [minute, hour, day_of_month, month, day_of_week] => {
                (None, minute, hour, day_of_month, month, day_of_week)
            }
            [second, minute, hour, day_of_month, month, day_of_week] => {
                (Some(second), minute, hour, day_of_month, month, day_of_week)
            }
            _ => {
                return Err(CronError::FieldCount {
                    found: fields.len(),
                });
            }
        };
        let seconds = match second {
            Some(text) => parse_field(CronField::Second, text)?,
            // Five fields: second 0 only.
            None => 1,
        };
        Ok(CronSchedule {
            text: fields.join(" "),
            has_seconds: second.is_some(),
            seconds,
            minutes: parse_field(CronField::Minute, minute)?,
            hours: parse_field(CronField::Hour, hour)?,
            days_of_month: parse_field(CronField::DayOfMonth, day_of_month)?,
            months: parse_field(CronField::Month, month)?,
            days_of_week: parse_field(CronField::DayOfWeek, day_of_week)?,
            day_of_month_star: day_of_month.starts_with('*'),
            day_of_week_star: day_of_week.starts_with('*'),
        })
    }

    fn parse_macro(trimmed: &str) -> Result<CronSchedule, CronError> {
        let name = trimmed.to_ascii_lowercase();
        let expansion = match name.as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            _ => {
                return Err(CronError::UnknownMacro {
                    text: trimmed.to_owned(),
                });
            }
        };
        let mut schedule = CronSchedule::parse(expansion)?;
        schedule.text = name;
        Ok(schedule)
    }

    /// Whether the expression has the six-field form, with a leading `second` field. A
    /// five-field expression (and a macro) fires at second 0.
    pub fn has_seconds(&self) -> bool {
        self.has_seconds
    }

    /// The first instant strictly after `after` at which the schedule fires, at whole-second
    /// precision (the result has no fraction of a second).
    ///
    /// `None` when the schedule never fires again: the expression names no existing day
    /// (`0 0 30 2 *`, February 30th), or the next firing lies beyond the latest instant a
    /// [`DateTime<Utc>`] can hold. The search skips whole months, days, hours and minutes
    /// that cannot match, and never looks more than 401 years ahead (the Gregorian calendar
    /// repeats every 400 years, so a schedule that does not fire within them never fires).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = after.naive_utc();
        let mut year = start.year();
        let mut month = start.month();
        let mut day = start.day();
        let mut hour = start.hour();
        let mut minute = start.minute();
        // Strictly after, whole seconds: the first candidate is the next whole second. A
        // value of 60 carries over like any other exhausted field below.
        let mut second = start.second() + 1;
        let last_year = year.saturating_add(SEARCH_YEARS).min(NaiveDate::MAX.year());

        // Each step either accepts the current value of a field, moves it forward to the next
        // matching value (resetting the smaller fields), or, when the field is exhausted,
        // carries into the next larger field and starts over.
        loop {
            if year > last_year {
                return None;
            }
            match next_bit(self.months, month) {
                None => {
                    year += 1;
                    (month, day, hour, minute, second) = (1, 1, 0, 0, 0);
                    continue;
                }
                Some(found) if found != month => {
                    month = found;
                    (day, hour, minute, second) = (1, 0, 0, 0);
                }
                Some(_) => {}
            }
            match self.next_day(year, month, day)? {
                None => {
                    month += 1;
                    (day, hour, minute, second) = (1, 0, 0, 0);
                    continue;
                }
                Some(found) if found != day => {
                    day = found;
                    (hour, minute, second) = (0, 0, 0);
                }
                Some(_) => {}
            }
            match next_bit(self.hours, hour) {
                None => {
                    day += 1;
                    (hour, minute, second) = (0, 0, 0);
                    continue;
                }
                Some(found) if found != hour => {
                    hour = found;
                    (minute, second) = (0, 0);
                }
                Some(_) => {}
            }
            match next_bit(self.minutes, minute) {
                None => {
                    hour += 1;
                    (minute, second) = (0, 0);
                    continue;
                }
                Some(found) if found != minute => {
                    minute = found;
                    second = 0;
                }
                Some(_) => {}
            }
            match next_bit(self.seconds, second) {
                None => {
                    minute += 1;
                    second = 0;
                    continue;
                }
                Some(found) => second = found,
            }
            // Out of `DateTime<Utc>`'s range only past its last day: then nothing is left.
            let date = NaiveDate::from_ymd_opt(year, month, day)?;
            return Some(date.and_hms_opt(hour, minute, second)?.and_utc());
        }
    }

    /// The first day of `year`-`month` from `from` on that matches the day fields: `Some(None)`
    /// when none is left in the month, `None` when the month lies outside `NaiveDate`'s range.
    fn next_day(&self, year: i32, month: u32, from: u32) -> Option<Option<u32>> {
        let last = days_in_month(year, month);
        let either = !(self.day_of_month_star || self.day_of_week_star);
        // When both fields must match, only the listed days of the month are candidates: a
        // month without one (February for `30`) is skipped without looking at a calendar.
        let candidate_after = |day: u32| {
            if either {
                Some(day)
            } else {
                next_bit(self.days_of_month, day)
            }
        };
        let Some(first) = candidate_after(from).filter(|&day| day <= last) else {
            return Some(None);
        };
        let first_weekday = NaiveDate::from_ymd_opt(year, month, first)?
            .weekday()
            .num_days_from_sunday();
        let mut day = first;
        while day <= last {
            let weekday = (first_weekday + day - first) % 7;
            let by_month_day = self.days_of_month & (1 << day) != 0;
            let by_week_day = self.days_of_week & (1 << weekday) != 0;
            let matches = if either {
                by_month_day || by_week_day
            } else {
                by_month_day && by_week_day
            };
            if matches {
                return Some(Some(day));
            }
            match candidate_after(day + 1) {
                Some(next) => day = next,
                None => break,
            }
        }
        Some(None)
    }
}

/// The smallest set bit of `mask` at position `from` or above.
fn next_bit(mask: u64, from: u32) -> Option<u32> {
    if from >= u64::BITS {
        return None;
    }
    let rest = mask & (u64::MAX << from);
    (rest != 0).then(|| rest.trailing_zeros())
}

fn is_leap_year(year: i32) -> bool {
    year.rem_euclid(4) == 0 && (year.rem_euclid(100) != 0 || year.rem_euclid(400) == 0)
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Parses one field into a bit set of the values it matches.
fn parse_field(field: CronField, text: &str) -> Result<u64, CronError> {
    let (min, _, star_max) = field.bounds();
    let mut set = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(parse_step(field, text, step)?)),
            None => (item, None),
        };
        let (start, end) = if range == "*" {
            (min, star_max)
        } else if let Some((start, end)) = range.split_once('-') {
            let start = parse_value(field, text, start)?;
            let end = parse_value(field, text, end)?;
            if start > end {
                return Err(CronError::ReversedRange {
                    field,
                    text: text.to_owned(),
                    start,
                    end,
                });
            }
            (start, end)
        } else {
            let start = parse_value(field, text, range)?;
            // `a/n` runs from `a` to the end of the field.
            let end = if step.is_some() {
                star_max.max(start)
            } else {
                start
            };
            (start, end)
        };
        let step = step.unwrap_or(1) as usize;
        for value in (start..=end).step_by(step) {
            set |= 1 << value;
        }
    }
    if field == CronField::DayOfWeek && set & (1 << 7) != 0 {
        set = (set & !(1 << 7)) | 1;
    }
    Ok(set)
}

/// Parses a step: a number from 1 to the number of values of the field.
fn parse_step(field: CronField, text: &str, step: &str) -> Result<u32, CronError> {
    let (min, _, star_max) = field.bounds();
    let max = star_max - min + 1;
    if step.is_empty() || !step.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CronError::Malformed {
            field,
            text: text.to_owned(),
            part: step.to_owned(),
        });
    }
    match step.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(CronError::BadStep {
            field,
            text: text.to_owned(),
            step: step.to_owned(),
            max,
        }),
    }
}

/// Parses one value: a number within the field's range, or a name where the field has names.
fn parse_value(field: CronField, text: &str, part: &str) -> Result<u32, CronError> {
    let (min, max, _) = field.bounds();
    if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
        return match part.parse::<u32>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(CronError::OutOfRange {
                field,
                text: text.to_owned(),
                value: part.to_owned(),
                min,
                max,
            }),
        };
    }
    let names = field.names();
    if !names.is_empty() && !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphabetic()) {
        return names
            .iter()
            .position(|name| name.eq_ignore_ascii_case(part))
            .map(|index| min + index as u32)
            .ok_or_else(|| CronError::UnknownName {
                field,
                text: text.to_owned(),
                name: part.to_owned(),
            });
    }
    Err(CronError::Malformed {
        field,
        text: text.to_owned(),
        part: part.to_owned(),
    })
}

impl FromStr for CronSchedule {
    type Err = CronError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CronSchedule::parse(s)
    }
}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for CronSchedule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for CronSchedule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        CronSchedule::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
