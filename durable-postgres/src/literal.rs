//! Statements with their parameters written in as SQL literals, for drivers that cannot send a
//! statement and its values in one exchange behind a connection pooler in transaction mode
//! (such a pooler may run the preparation and the execution on different server connections).

use std::fmt::Write as _;

use durable_core::BoxError;

use crate::driver::Param;

/// `statement` with every placeholder `$n` replaced by `params[n - 1]` written as a SQL literal.
///
/// Every statement of `durable-postgres-sql` casts each placeholder (`$1::text`), so a literal
/// takes the type the statement gives it. Text is written as an escape string (`E'...'`, with
/// `\` and `'` doubled), which reads the same whatever `standard_conforming_strings` says; a
/// text holding a NUL character is refused (PostgreSQL cannot store it). The statement itself
/// must hold no `$` outside placeholders, which is true of every statement of
/// `durable-postgres-sql` (a test checks it).
pub fn inline(statement: &str, params: &[Param<'_>]) -> Result<String, BoxError> {
    let mut out = String::with_capacity(statement.len() + 32 * params.len());
    let mut chars = statement.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let digits_start = at + 1;
        let mut digits_end = digits_start;
        while let Some((i, d)) = chars.peek().copied() {
            if !d.is_ascii_digit() {
                break;
            }
            digits_end = i + d.len_utf8();
            chars.next();
        }
        let number: usize = statement[digits_start..digits_end]
            .parse()
            .map_err(|_| format!("a `$` at byte {at} of the statement is not a placeholder"))?;
        let param = number
            .checked_sub(1)
            .and_then(|index| params.get(index))
            .ok_or_else(|| {
                format!(
                    "the statement uses ${number}, but {} parameters were given",
                    params.len()
                )
            })?;
        write_param(&mut out, param)?;
    }
    Ok(out)
}

fn write_param(out: &mut String, param: &Param<'_>) -> Result<(), BoxError> {
    match param {
        Param::Text(v) => option(out, *v, write_text),
        Param::Uuid(v) => option(out, *v, |out, u| {
            write!(out, "'{u}'")?;
            Ok(())
        }),
        Param::Int4(v) => option(out, *v, |out, n| write_number(out, i64::from(n))),
        Param::Int8(v) => option(out, *v, write_number),
        Param::Bool(v) => option(out, *v, |out, b| {
            out.push_str(if b { "true" } else { "false" });
            Ok(())
        }),
        Param::Timestamptz(v) => option(out, *v, |out, at| {
            write!(
                out,
                "'{}'",
                at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            )?;
            Ok(())
        }),
        Param::Jsonb(v) => option(out, *v, |out, json| write_text(out, &json.to_string())),
        Param::TextArray(items) => array(out, items, |out, v| option(out, *v, write_text)),
        Param::UuidArray(items) => array(out, items, |out, v| {
            option(out, *v, |out, u| {
                write!(out, "'{u}'::uuid")?;
                Ok(())
            })
        }),
        Param::Int4Array(items) => array(out, items, |out, v| {
            option(out, *v, |out, n| write_number(out, i64::from(n)))
        }),
        Param::Int8Array(items) => array(out, items, |out, v| option(out, *v, write_number)),
        Param::JsonbArray(items) => array(out, items, |out, v| {
            option(out, *v, |out, json| {
                write_text(out, &json.to_string())?;
                out.push_str("::jsonb");
                Ok(())
            })
        }),
    }
}

/// `NULL` for `None`, else the value as `write` writes it.
fn option<T>(
    out: &mut String,
    value: Option<T>,
    write: impl FnOnce(&mut String, T) -> Result<(), BoxError>,
) -> Result<(), BoxError> {
    match value {
        None => {
            out.push_str("NULL");
            Ok(())
        }
        Some(value) => write(out, value),
    }
}

/// `ARRAY[...]`, or `'{}'` for no element (the statement's cast gives both their type).
fn array<T>(
    out: &mut String,
    items: &[T],
    mut write: impl FnMut(&mut String, &T) -> Result<(), BoxError>,
) -> Result<(), BoxError> {
    if items.is_empty() {
        out.push_str("'{}'");
        return Ok(());
    }
    out.push_str("ARRAY[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write(out, item)?;
    }
    out.push(']');
    Ok(())
}

/// A number in parentheses, so that a cast applies to the whole negative number.
fn write_number(out: &mut String, n: i64) -> Result<(), BoxError> {
    write!(out, "({n})")?;
    Ok(())
}

/// An escape string literal: `E'...'` with `\` and `'` doubled.
fn write_text(out: &mut String, text: &str) -> Result<(), BoxError> {
    if text.contains('\0') {
        return Err("a text holds a NUL character, which PostgreSQL cannot store".into());
    }
    out.push_str("E'");
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("''"),
            c => out.push(c),
        }
    }
    out.push('\'');
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use serde_json::json;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn every_placeholder_takes_its_literal() {
        let at = Utc
            .with_ymd_and_hms(2026, 12, 2, 9, 15, 17)
            .single()
            .unwrap_or_default();
        let json = json!({"a": "it's \\ here"});
        let sql = inline(
            "SELECT f($1::text, $2::uuid, $3::integer, $10::bigint, $4::boolean, $5::timestamptz, \
             $6::jsonb, $7::text[], $8::bigint[], $9::jsonb[])",
            &[
                Param::Text(Some("O'Brien \\ 🦀")),
                Param::Uuid(Some(Uuid::nil())),
                Param::Int4(Some(-5)),
                Param::Bool(Some(true)),
                Param::Timestamptz(Some(at)),
                Param::Jsonb(Some(&json)),
                Param::TextArray(vec![Some("a"), None]),
                Param::Int8Array(vec![]),
                Param::JsonbArray(vec![Some(&json)]),
                Param::Int8(None),
            ],
        );
        assert_eq!(
            sql.ok().as_deref(),
            Some(
                "SELECT f(E'O''Brien \\\\ 🦀'::text, '00000000-0000-0000-0000-000000000000'::uuid, \
                 (-5)::integer, NULL::bigint, true::boolean, \
                 '2026-12-02T09:15:17.000000Z'::timestamptz, \
                 E'{\"a\":\"it''s \\\\\\\\ here\"}'::jsonb, ARRAY[E'a',NULL]::text[], \
                 '{}'::bigint[], ARRAY[E'{\"a\":\"it''s \\\\\\\\ here\"}'::jsonb]::jsonb[])"
            )
        );
    }

    #[test]
    fn what_cannot_be_written_is_refused() {
        assert!(inline("SELECT $1::text", &[Param::Text(Some("a\0b"))]).is_err());
        assert!(inline("SELECT $2::text", &[Param::Text(None)]).is_err());
        assert!(inline("SELECT $0::text", &[Param::Text(None)]).is_err());
        assert!(inline("SELECT '$'", &[]).is_err());
    }

    #[test]
    fn every_statement_has_only_placeholders_after_a_dollar() {
        use durable_postgres_sql::statements as sql;
        for statement in [
            sql::ENSURE_QUEUE,
            sql::SPAWN_TASK,
            sql::CLAIM_TASKS,
            sql::EXPIRE_LEASES,
            sql::WRITE_CHECKPOINT,
            sql::EXTEND_LEASE,
            sql::SLEEP_RUN,
            sql::AWAIT_EVENT,
            sql::EMIT_EVENT,
            sql::COMPLETE_RUN,
            sql::FAIL_RUN,
            sql::CANCEL_TASK,
            sql::RETRY_TASK,
            sql::TASK_RESULT,
            sql::SPAWN_TASKS,
            sql::COMPLETE_RUNS,
            sql::PURGE_FINISHED,
            sql::UPSERT_SCHEDULE,
            sql::LIST_SCHEDULES,
            sql::DELETE_SCHEDULE,
            sql::DUE_SCHEDULES,
            sql::ADVANCE_SCHEDULE,
            sql::WATCH_FINISH,
            sql::QUEUE_DEPTH,
            sql::UNSERVED_NAMES,
        ] {
            let params: Vec<Param<'_>> = (0..12).map(|_| Param::Text(None)).collect();
            assert!(inline(statement, &params).is_ok(), "{statement}");
        }
    }
}
