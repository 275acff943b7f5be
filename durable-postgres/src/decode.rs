//! Rows of the stored functions read back into the port's types, and the port's values
//! converted into parameters.

use std::marker::PhantomData;
use std::time::Duration;

use durable_core::store::{DueSchedules, ScheduleAdvance, ScheduleRecord, ScheduleSpec};
use durable_core::{SpawnResult, StoreError, policy};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::driver::{Decodes, Driver, Row};
use crate::error::unexpected;

/// Reads the columns of one row of a driver `D`, with errors that name the column.
pub(crate) struct Reader<'r, D: Driver> {
    row: &'r D::Row,
    _driver: PhantomData<D>,
}

/// A [`Reader`] of `row`.
pub(crate) fn read<D: Driver>(row: &D::Row) -> Reader<'_, D> {
    Reader {
        row,
        _driver: PhantomData,
    }
}

impl<'r, D: Driver> Reader<'r, D> {
    /// A nullable column.
    pub(crate) fn opt<T>(&self, column: &str) -> Result<Option<T>, StoreError>
    where
        D::Row: Decodes<'r, T>,
    {
        self.row.decode(column).map_err(|e| {
            unexpected(
                D::NAME,
                format!("reading column {column}: {}", with_sources(&*e)),
            )
        })
    }

    /// A column that must not be `NULL`.
    pub(crate) fn get<T>(&self, column: &str) -> Result<T, StoreError>
    where
        D::Row: Decodes<'r, T>,
    {
        self.opt(column)?
            .ok_or_else(|| unexpected(D::NAME, format!("column {column} is NULL")))
    }

    /// A nullable `jsonb` column parsed into `T`.
    pub(crate) fn opt_json<T: DeserializeOwned>(
        &self,
        column: &str,
    ) -> Result<Option<T>, StoreError> {
        let text = self.row.json(column).map_err(|e| {
            unexpected(
                D::NAME,
                format!("reading column {column}: {}", with_sources(&*e)),
            )
        })?;
        let Some(text) = text else {
            return Ok(None);
        };
        serde_json::from_str(text)
            .map(Some)
            .map_err(|e| unexpected(D::NAME, format!("reading the JSON of column {column}: {e}")))
    }

    /// A `jsonb` column parsed into `T`.
    pub(crate) fn json<T: DeserializeOwned>(&self, column: &str) -> Result<T, StoreError> {
        self.opt_json(column)?
            .ok_or_else(|| unexpected(D::NAME, format!("column {column} is NULL")))
    }

    /// An `integer` column that holds an attempt count.
    pub(crate) fn attempts(&self, column: &str) -> Result<u32, StoreError> {
        let n: i32 = self.get(column)?;
        u32::try_from(n).map_err(|_| unexpected(D::NAME, format!("column {column} holds {n}")))
    }

    /// A `bigint` column that holds a count.
    pub(crate) fn count(&self, column: &str) -> Result<u64, StoreError> {
        let n: i64 = self.get(column)?;
        u64::try_from(n).map_err(|_| unexpected(D::NAME, format!("column {column} holds {n}")))
    }

    /// The `task_id, run_id, attempt, created` columns of a spawn.
    pub(crate) fn spawn_result(&self) -> Result<SpawnResult, StoreError> {
        Ok(SpawnResult {
            task_id: self.get("task_id")?,
            run_id: self.get("run_id")?,
            attempt: self.attempts("attempt")?,
            created: self.get("created")?,
        })
    }

    /// A schedule, from a row of `LIST_SCHEDULES` or `DUE_SCHEDULES`.
    pub(crate) fn schedule_record(&self) -> Result<ScheduleRecord, StoreError> {
        Ok(ScheduleRecord {
            spec: ScheduleSpec {
                queue: self.get("queue_name")?,
                name: self.get("schedule_name")?,
                cron: self.get("cron")?,
                task_name: self.get("task_name")?,
                params: self.json("params")?,
                headers: self.json("headers")?,
                max_attempts: self.attempts("max_attempts")?,
                retry_strategy: self.json("retry_strategy")?,
                cancellation: self.json("cancellation")?,
            },
            next_run_at: self.opt("next_run_at")?,
            last_run_at: self.opt("last_run_at")?,
            last_task_id: self.opt("last_task_id")?,
            created_at: self.get("created_at")?,
            updated_at: self.get("updated_at")?,
        })
    }

    /// The row of `ADVANCE_SCHEDULE`.
    pub(crate) fn schedule_advance(&self) -> Result<ScheduleAdvance, StoreError> {
        if !self.get::<bool>("advanced")? {
            return Ok(ScheduleAdvance::Stale);
        }
        if self.opt::<Uuid>("task_id")?.is_none() {
            return Ok(ScheduleAdvance::Moved);
        }
        Ok(ScheduleAdvance::Fired(self.spawn_result()?))
    }
}

/// An error's message followed by those of its sources (drivers wrap the useful part).
fn with_sources(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(next) = source {
        let next_text = next.to_string();
        if !text.contains(&next_text) {
            text.push_str(": ");
            text.push_str(&next_text);
        }
        source = next.source();
    }
    text
}

/// Splits the rows of a statement that ends with one summary row, which `is_summary` recognises
/// (`CLAIM_RUNS`, `DUE_SCHEDULES`): the summary, then the other rows.
pub(crate) fn summary_last<'r, D: Driver>(
    rows: &'r [D::Row],
    function: &str,
    is_summary: impl Fn(&Reader<'r, D>) -> Result<bool, StoreError>,
) -> Result<(&'r D::Row, &'r [D::Row]), StoreError> {
    let (summary, others) = rows
        .split_last()
        .ok_or_else(|| unexpected(D::NAME, format!("{function} returned no summary row")))?;
    if !is_summary(&read::<D>(summary))? {
        return Err(unexpected(
            D::NAME,
            format!("{function} did not end with its summary row"),
        ));
    }
    Ok((summary, others))
}

/// The rows of `DUE_SCHEDULES`: the schedules, then one summary row.
pub(crate) fn due_schedules<D: Driver>(rows: &[D::Row]) -> Result<DueSchedules, StoreError> {
    let (summary, due) = summary_last::<D>(rows, "due_schedules", |row| {
        Ok(row.opt::<&str>("schedule_name")?.is_none())
    })?;
    let summary = read::<D>(summary);
    Ok(DueSchedules {
        schedules: due
            .iter()
            .map(|row| read::<D>(row).schedule_record())
            .collect::<Result<Vec<_>, _>>()?,
        now: summary.get("next_run_at")?,
        next_due_at: summary.opt("last_run_at")?,
    })
}

/// The one row of a statement that returns exactly one.
pub(crate) fn only_row<'r, D: Driver>(
    rows: &'r [D::Row],
    statement: &str,
) -> Result<Reader<'r, D>, StoreError> {
    rows.first()
        .map(read::<D>)
        .ok_or_else(|| unexpected(D::NAME, format!("`{statement}` returned no row")))
}

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

/// A value as JSON for a `jsonb` parameter.
pub(crate) fn to_json<T: serde::Serialize>(
    what: &str,
    value: &T,
) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(value).map_err(|e| StoreError::invalid(format!("{what} is not JSON: {e}")))
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
