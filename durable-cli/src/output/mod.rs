//! What a command prints on stdout: an aligned table (or key-value list) by default, one JSON
//! document with `--json`.

pub(crate) mod table;

use std::fmt;
use std::io::Write;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::error::CliError;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// For people: [`fmt::Display`].
    Text,
    /// For scripts: one pretty-printed JSON document.
    Json,
}

/// The result of a command: JSON through [`Serialize`], text through [`fmt::Display`].
pub(crate) trait Report: Serialize + fmt::Display {}

impl<T: Serialize + fmt::Display> Report for T {}

/// Prints `report` on stdout in `format`. A closed pipe (`durable tasks list | head`) is not
/// an error.
pub(crate) fn print(format: Format, report: &impl Report) -> Result<(), CliError> {
    let mut text = match format {
        Format::Text => escape_controls(&report.to_string()),
        Format::Json => escape_json_controls(
            &serde_json::to_string_pretty(report)
                .map_err(|e| CliError::runtime("serializing the result failed", e))?,
        ),
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(CliError::runtime("writing the result failed", e))
        }
        _ => Ok(()),
    }
}

/// Text for a terminal: every control character but the line break written as an escape
/// (`\u{1b}`), so nothing a task stored (names, payloads, error texts) can move the cursor,
/// change colours or retitle the operator's terminal.
pub(crate) fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// JSON for a terminal: serde_json escapes the controls below U+0020; the others (U+007F to
/// U+009F, such as the one-character CSI) are escaped too. They only occur inside strings,
/// where `\u00XX` means the same character.
pub(crate) fn escape_json_controls(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_control() && !matches!(c, '\n' | '\r' | '\t') {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// A moment for text output: RFC 3339 in UTC, to the millisecond.
pub(crate) fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An optional moment for text output (`-` for none).
pub(crate) fn opt_time(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(|| "-".to_owned(), time)
}

/// A JSON value on one line, for text output.
pub(crate) fn json(value: &Value) -> String {
    value.to_string()
}

/// A JSON value for text output, pretty-printed over several lines when it is a non-empty
/// object or array.
pub(crate) fn json_block(value: &Value) -> String {
    match value {
        Value::Object(map) if !map.is_empty() => {
            serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
        }
        Value::Array(items) if !items.is_empty() => {
            serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
        }
        _ => value.to_string(),
    }
}

/// A stored error (`{"kind": ..., "message": ...}`) in one line: `kind: message`.
pub(crate) fn error_line(error: &Value) -> String {
    let kind = error.get("kind").and_then(Value::as_str);
    let message = error.get("message").and_then(Value::as_str);
    match (kind, message) {
        (Some(kind), Some(message)) => format!("{kind}: {message}"),
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn control_characters_never_reach_the_terminal() {
        let hostile = "red \u{1b}[31mtext\u{7}\r\tend\u{9b}2J\nnext";
        let text = escape_controls(hostile);
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert!(
            text.contains("\\u{1b}[31m") && text.contains("\nnext"),
            "{text}"
        );
        let json = serde_json::to_string(&json!({ "message": hostile })).unwrap_or_default();
        let escaped = escape_json_controls(&json);
        assert!(!escaped.chars().any(char::is_control), "{escaped:?}");
        let back: Value = serde_json::from_str(&escaped).unwrap_or_default();
        assert_eq!(back["message"], hostile, "the JSON still means the same");
    }

    #[test]
    fn errors_read_as_kind_and_message() {
        let error = json!({"kind": "non_retryable", "message": "boom"});
        assert_eq!(error_line(&error), "non_retryable: boom");
        assert_eq!(error_line(&json!("odd")), "\"odd\"");
    }

    #[test]
    fn values_print_on_one_line_or_as_a_block() {
        assert_eq!(json(&json!({"a": [1, 2]})), r#"{"a":[1,2]}"#);
        assert_eq!(json_block(&json!({"a": 1})), "{\n  \"a\": 1\n}");
        assert_eq!(json_block(&json!({})), "{}");
        assert_eq!(json_block(&json!("x")), "\"x\"");
    }

    #[test]
    fn times_are_utc_to_the_millisecond() {
        let at = DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::milliseconds(1_500);
        assert_eq!(time(at), "1970-01-01T00:00:01.500Z");
        assert_eq!(opt_time(None), "-");
    }
}
