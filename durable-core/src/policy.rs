//! The policy of `durable` as pure functions: retry delays, cancellation policies and input
//! validation. Stores apply decisions; they never compute them.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::options::{CancellationPolicy, RetryStrategy};

/// The longest duration accepted anywhere (sleeps, timeouts, leases, delays): about 100 years.
/// Anything longer is refused instead of overflowing a timestamp.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 366 * 24 * 3600);

/// The longest queue name. Queue names travel in notification payloads and keys.
pub const MAX_QUEUE_NAME_LEN: usize = 64;

/// The longest task, step or event name.
pub const MAX_NAME_LEN: usize = 255;

/// The default of [`ClientDefaults::max_payload_bytes`](crate::ClientDefaults::max_payload_bytes):
/// 4 MiB of JSON.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 4 * 1024 * 1024;

/// Event names beginning with this are reserved for `durable` itself (subtask completion).
pub const RESERVED_PREFIX: char = '$';

/// The delay before retrying after attempt `attempt` (1-based) failed, ignoring attempt limits.
/// `None` means the strategy never retries.
pub fn retry_delay(strategy: &RetryStrategy, attempt: u32) -> Option<Duration> {
    match strategy {
        RetryStrategy::None => None,
        RetryStrategy::Fixed { base_delay } => Some(*base_delay),
        RetryStrategy::Exponential {
            base_delay,
            factor,
            max_backoff,
        } => {
            let exponent = attempt.saturating_sub(1).min(1_000) as i32;
            let factor = if factor.is_finite() && *factor >= 1.0 {
                *factor
            } else {
                1.0
            };
            let secs = base_delay.as_secs_f64() * factor.powi(exponent);
            let capped = secs.min(max_backoff.as_secs_f64());
            Some(Duration::try_from_secs_f64(capped).unwrap_or(*max_backoff))
        }
    }
}

/// Whether attempt `attempt` (1-based) of `max_attempts` is followed by another one after a
/// failure, and after what delay. `None`: the failure is final.
pub fn next_retry(
    strategy: &RetryStrategy,
    attempt: u32,
    max_attempts: u32,
    retryable: bool,
) -> Option<Duration> {
    if !retryable || attempt >= max_attempts {
        return None;
    }
    retry_delay(strategy, attempt)
}

/// Why a cancellation policy fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// The task waited longer than `max_pending_time` for its first start.
    PendingTooLong,
    /// The task ran longer than `max_running_time` since its first start.
    RunningTooLong,
}

/// Whether `policy` cancels a task spawned at `created_at` and first started at
/// `first_started_at` (`None`: never started before), at store time `now`.
pub fn cancellation_due(
    policy: &CancellationPolicy,
    created_at: DateTime<Utc>,
    first_started_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<CancelReason> {
    let exceeded = |since: DateTime<Utc>, limit: Duration| {
        (now - since)
            .to_std()
            .map(|elapsed| elapsed > limit)
            .unwrap_or(false)
    };
    match first_started_at {
        None => policy
            .max_pending_time
            .filter(|limit| exceeded(created_at, *limit))
            .map(|_| CancelReason::PendingTooLong),
        Some(started) => policy
            .max_running_time
            .filter(|limit| exceeded(started, *limit))
            .map(|_| CancelReason::RunningTooLong),
    }
}

/// Checks a queue name: 1 to 64 characters from `a-z`, `A-Z`, `0-9`, `_`, `-` and `.`.
pub fn validate_queue_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("queue name is empty".into());
    }
    if name.len() > MAX_QUEUE_NAME_LEN {
        return Err(format!(
            "queue name is {} bytes long; the limit is {MAX_QUEUE_NAME_LEN}",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "queue name {name:?} contains {bad:?}; allowed are ASCII letters, digits, '_', '-' and '.'"
        ));
    }
    Ok(())
}

/// Checks a task, step or event name: 1 to 255 bytes, no control characters.
pub fn validate_name(kind: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{kind} name is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "{kind} name is {} bytes long; the limit is {MAX_NAME_LEN}",
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{kind} name {name:?} contains a control character"));
    }
    Ok(())
}

/// Checks a name chosen by a user for an event or a checkpoint: as [`validate_name`], and not
/// starting with the reserved `$`.
pub fn validate_user_name(kind: &str, name: &str) -> Result<(), String> {
    validate_name(kind, name)?;
    if name.starts_with(RESERVED_PREFIX) {
        return Err(format!(
            "{kind} name {name:?} starts with '{RESERVED_PREFIX}', which is reserved for durable"
        ));
    }
    Ok(())
}

/// The deepest nesting of arrays and objects a stored JSON value may have. JSON readers refuse
/// values nested deeper than 128 levels, and `durable` wraps some values in a few levels of its
/// own (an awaited subtask's output), so a value that deep would be stored but never read back.
pub const MAX_JSON_DEPTH: usize = 100;

/// Checks a JSON value that `durable` is about to store (params, headers, a step's result, an
/// output, an event payload), so that what is stored always reads back: its serialized form must
/// be at most `max_bytes` long, it may be nested at most [`MAX_JSON_DEPTH`] levels deep, and no
/// string or key in it may hold the NUL character, which PostgreSQL cannot store in `jsonb`.
/// `what` names the value in the message.
pub fn check_payload(
    what: &str,
    value: &serde_json::Value,
    max_bytes: usize,
) -> Result<(), String> {
    use serde_json::Value;
    let mut stack = vec![(value, 0usize)];
    while let Some((value, depth)) = stack.pop() {
        if depth > MAX_JSON_DEPTH {
            return Err(format!(
                "{what} is nested more than {MAX_JSON_DEPTH} levels deep, which could not be read \
                 back"
            ));
        }
        match value {
            Value::String(s) if s.contains('\0') => {
                return Err(format!(
                    "{what} holds a string with a NUL character (\\u0000), which cannot be stored"
                ));
            }
            Value::Array(items) => stack.extend(items.iter().map(|item| (item, depth + 1))),
            Value::Object(map) => {
                if map.keys().any(|k| k.contains('\0')) {
                    return Err(format!(
                        "{what} holds a key with a NUL character (\\u0000), which cannot be stored"
                    ));
                }
                stack.extend(map.values().map(|item| (item, depth + 1)));
            }
            _ => {}
        }
    }
    let mut counter = Counter { left: max_bytes };
    if serde_json::to_writer(&mut counter, value).is_err() {
        return Err(format!(
            "{what} is larger than the limit of {max_bytes} bytes of JSON (max_payload_bytes)"
        ));
    }
    Ok(())
}

/// Counts bytes written, failing past a limit (so an oversized value is not serialized whole).
struct Counter {
    left: usize,
}

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.left = self
            .left
            .checked_sub(buf.len())
            .ok_or_else(|| std::io::Error::other("over the limit"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The longest error message stored for a failure, in bytes (64 KiB): a longer one is cut and
/// marked by [`error_text`].
pub const MAX_ERROR_BYTES: usize = 64 * 1024;

/// An error message as it is stored for a failure: every NUL character (which PostgreSQL cannot
/// store) written as `\0`, and a message longer than [`MAX_ERROR_BYTES`] cut at a character
/// boundary, with a marker that says how long it was.
pub fn error_text(message: &str) -> String {
    let clean = if message.contains('\0') {
        std::borrow::Cow::Owned(message.replace('\0', "\\0"))
    } else {
        std::borrow::Cow::Borrowed(message)
    };
    if clean.len() <= MAX_ERROR_BYTES {
        return clean.into_owned();
    }
    let marker = format!(" [... cut: {} bytes in all]", clean.len());
    let mut end = MAX_ERROR_BYTES.saturating_sub(marker.len());
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    let mut text = String::with_capacity(end + marker.len());
    text.push_str(&clean[..end]);
    text.push_str(&marker);
    text
}

/// Checks a duration against [`MAX_DURATION`] and converts it for timestamp arithmetic.
pub fn checked_duration(what: &str, duration: Duration) -> Result<chrono::Duration, String> {
    if duration > MAX_DURATION {
        return Err(format!(
            "{what} of {duration:?} is longer than the limit of {} days",
            MAX_DURATION.as_secs() / 86_400
        ));
    }
    chrono::Duration::from_std(duration).map_err(|e| format!("{what} of {duration:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_texts_lose_their_nul_characters_and_their_excess() {
        assert_eq!(error_text("plain"), "plain");
        assert_eq!(error_text("a\0b"), "a\\0b");
        let huge = "é".repeat(MAX_ERROR_BYTES);
        let cut = error_text(&huge);
        assert!(cut.len() <= MAX_ERROR_BYTES, "{}", cut.len());
        assert!(cut.starts_with("éé"));
        assert!(
            cut.ends_with(&format!(" [... cut: {} bytes in all]", huge.len())),
            "{}",
            &cut[cut.len() - 40..]
        );
        let exact = "x".repeat(MAX_ERROR_BYTES);
        assert_eq!(error_text(&exact), exact);
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn none_strategy_never_retries_whatever_max_attempts_says() {
        assert_eq!(next_retry(&RetryStrategy::None, 1, 10, true), None);
        assert_eq!(retry_delay(&RetryStrategy::None, 1), None);
    }

    #[test]
    fn fixed_strategy_keeps_sub_second_delays() {
        let s = RetryStrategy::Fixed {
            base_delay: ms(250),
        };
        assert_eq!(next_retry(&s, 1, 3, true), Some(ms(250)));
        assert_eq!(next_retry(&s, 2, 3, true), Some(ms(250)));
        assert_eq!(next_retry(&s, 3, 3, true), None, "attempts exhausted");
    }

    #[test]
    fn exponential_strategy_grows_and_caps() {
        let s = RetryStrategy::Exponential {
            base_delay: ms(100),
            factor: 2.0,
            max_backoff: ms(500),
        };
        let delays: Vec<_> = (1..=5).map(|a| retry_delay(&s, a)).collect();
        assert_eq!(
            delays,
            vec![
                Some(ms(100)),
                Some(ms(200)),
                Some(ms(400)),
                Some(ms(500)),
                Some(ms(500))
            ]
        );
    }

    #[test]
    fn exponential_strategy_survives_huge_attempts_and_bad_factors() {
        let s = RetryStrategy::Exponential {
            base_delay: ms(100),
            factor: f64::NAN,
            max_backoff: ms(500),
        };
        assert_eq!(retry_delay(&s, u32::MAX), Some(ms(100)));
        let s = RetryStrategy::Exponential {
            base_delay: ms(100),
            factor: 10.0,
            max_backoff: ms(500),
        };
        assert_eq!(retry_delay(&s, u32::MAX), Some(ms(500)));
    }

    #[test]
    fn default_strategy_is_the_documented_one() {
        assert_eq!(
            RetryStrategy::default(),
            RetryStrategy::Exponential {
                base_delay: Duration::from_secs(1),
                factor: 2.0,
                max_backoff: Duration::from_secs(300)
            }
        );
    }

    #[test]
    fn non_retryable_failure_is_final() {
        assert_eq!(next_retry(&RetryStrategy::default(), 1, 5, false), None);
    }

    #[test]
    fn cancellation_policy_fires_on_pending_and_running_limits() {
        let t0 = DateTime::<Utc>::UNIX_EPOCH;
        let at = |ms: i64| t0 + chrono::Duration::milliseconds(ms);
        let policy = CancellationPolicy {
            max_pending_time: Some(ms(500)),
            max_running_time: Some(ms(1500)),
        };
        assert_eq!(cancellation_due(&policy, t0, None, at(500)), None);
        assert_eq!(
            cancellation_due(&policy, t0, None, at(501)),
            Some(CancelReason::PendingTooLong)
        );
        assert_eq!(cancellation_due(&policy, t0, Some(at(400)), at(1900)), None);
        assert_eq!(
            cancellation_due(&policy, t0, Some(at(400)), at(1901)),
            Some(CancelReason::RunningTooLong)
        );
        assert_eq!(
            cancellation_due(&CancellationPolicy::default(), t0, None, at(1_000_000)),
            None
        );
    }

    #[test]
    fn queue_names_are_validated() {
        assert!(validate_queue_name("research").is_ok());
        assert!(validate_queue_name("a-b_c.9").is_ok());
        assert!(validate_queue_name("").is_err());
        assert!(validate_queue_name(&"q".repeat(65)).is_err());
        assert!(validate_queue_name("x'; drop table tasks; --").is_err());
        assert!(validate_queue_name("ünïcode").is_err());
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_user_name("event", "packed:42").is_ok());
        assert!(validate_user_name("event", "$child:x").is_err());
        assert!(validate_name("step", "").is_err());
        assert!(validate_name("step", "a\u{0}b").is_err());
        assert!(validate_name("step", &"s".repeat(256)).is_err());
    }

    #[test]
    fn payloads_are_checked_for_size_and_nul() {
        use serde_json::json;
        assert!(check_payload("params", &json!({"a": [1, "x"]}), 100).is_ok());
        assert!(check_payload("params", &json!("x".repeat(20)), 22).is_ok());
        let too_big = check_payload("params", &json!("x".repeat(20)), 21);
        assert!(
            too_big
                .as_ref()
                .is_err_and(|e| e.contains("limit of 21 bytes")),
            "{too_big:?}"
        );
        assert!(check_payload("output", &json!({"k": ["a\u{0}b"]}), 100).is_err());
        assert!(check_payload("output", &json!({"a\u{0}": 1}), 100).is_err());
        assert!(check_payload("output", &json!("a\\u0000 is text"), 100).is_ok());
    }

    #[test]
    fn absurd_durations_are_refused() {
        assert!(checked_duration("sleep", Duration::MAX).is_err());
        assert_eq!(
            checked_duration("sleep", ms(1)),
            Ok(chrono::Duration::milliseconds(1))
        );
    }
}
