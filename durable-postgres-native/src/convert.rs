//! Values between the port's types and the stored functions' parameters and rows.

use std::time::Duration;

use durable_core::StoreError;
use durable_core::policy;
use durable_core::store::RunRef;
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, Json};

use crate::error::unexpected;

/// A duration as whole microseconds (rounded up, so nothing wakes early), refusing durations
/// longer than [`policy::MAX_DURATION`].
pub(crate) fn micros(what: &str, duration: Duration) -> Result<i64, StoreError> {
    policy::checked_duration(what, duration).map_err(StoreError::invalid)?;
    let micros = duration.as_nanos().div_ceil(1_000);
    i64::try_from(micros).map_err(|_| StoreError::invalid(format!("{what} is too long")))
}

/// An optional duration as optional microseconds.
pub(crate) fn opt_micros(
    what: &str,
    duration: Option<Duration>,
) -> Result<Option<i64>, StoreError> {
    duration.map(|d| micros(what, d)).transpose()
}

/// A count for an `integer` parameter, capped at `i32::MAX`.
pub(crate) fn int4(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// An `integer` column that holds a count (attempts).
pub(crate) fn count(row: &Row, column: &str) -> Result<u32, StoreError> {
    let n: i32 = get(row, column)?;
    u32::try_from(n).map_err(|_| unexpected(format!("column {column} holds {n}")))
}

/// Reads a column.
pub(crate) fn get<'r, T: FromSql<'r>>(row: &'r Row, column: &str) -> Result<T, StoreError> {
    row.try_get(column)
        .map_err(|e| unexpected(format!("reading column {column}: {e}")))
}

/// Reads a `jsonb` column into `T`.
pub(crate) fn json<T: serde::de::DeserializeOwned>(
    row: &Row,
    column: &str,
) -> Result<T, StoreError> {
    let Json(value) = get::<Json<T>>(row, column)?;
    Ok(value)
}

/// Reads a nullable `jsonb` column into `T`.
pub(crate) fn opt_json<T: serde::de::DeserializeOwned>(
    row: &Row,
    column: &str,
) -> Result<Option<T>, StoreError> {
    Ok(get::<Option<Json<T>>>(row, column)?.map(|json| json.0))
}

/// A value as JSON for a `jsonb` parameter.
pub(crate) fn to_json<T: serde::Serialize>(
    what: &str,
    value: &T,
) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(value).map_err(|e| StoreError::invalid(format!("{what} is not JSON: {e}")))
}

/// What `COMPLETE_RUNS` said about one run.
pub(crate) enum CompletionOutcome {
    /// Completed, or refused with this error.
    Done(Result<(), StoreError>),
    /// A subtask, left alone: complete it with `COMPLETE_RUN`.
    Deferred,
}

/// Reads the `outcome` of a row of `COMPLETE_RUNS` for `run`.
pub(crate) fn completion_outcome(run: &RunRef, outcome: &str) -> CompletionOutcome {
    CompletionOutcome::Done(match outcome {
        "completed" => Ok(()),
        "deferred" => return CompletionOutcome::Deferred,
        "cancelled" => Err(StoreError::Cancelled {
            task_id: run.task_id,
        }),
        "lease_lost" => Err(StoreError::LeaseLost {
            task_id: run.task_id,
            run_id: run.run_id,
        }),
        other => Err(unexpected(format!(
            "complete_runs returned outcome {other:?}"
        ))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micros_round_up_and_refuse_too_long() {
        assert_eq!(micros("d", Duration::from_nanos(1)).ok(), Some(1));
        assert_eq!(
            micros("d", Duration::from_millis(1500)).ok(),
            Some(1_500_000)
        );
        assert_eq!(micros("d", Duration::ZERO).ok(), Some(0));
        assert!(matches!(
            micros("d", Duration::from_secs(u64::MAX)),
            Err(StoreError::InvalidInput { .. })
        ));
    }

    #[test]
    fn int4_caps() {
        assert_eq!(int4(5), 5);
        assert_eq!(int4(u64::MAX), i32::MAX);
    }
}
