//! The rows of `CLAIM_TASKS` read back into claimed runs, task by task: what one task stored
//! that does not read back fails that task alone, never the batch.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use durable_core::StoreError;
use durable_core::store::{ClaimedRun, RunRef};
use serde_json::Value;
use uuid::Uuid;

use crate::decode::{Reader, read, summary_last};
use crate::driver::Driver;

/// A claim as read: the runs to hand to the worker, and the runs whose task does not read back.
pub(crate) struct ReadClaim {
    pub(crate) runs: Vec<ClaimedRun>,
    /// Claimed runs to fail at once, each with why its task cannot be loaded.
    pub(crate) unreadable: Vec<(RunRef, String)>,
    pub(crate) now: DateTime<Utc>,
    pub(crate) next_wake_at: Option<DateTime<Utc>>,
}

/// Reads the rows of `CLAIM_TASKS` for `queue`. An error means the result as a whole does not
/// have the expected shape; a task whose own data does not read back lands in `unreadable`.
pub(crate) fn read_claim<D: Driver>(queue: &str, rows: &[D::Row]) -> Result<ReadClaim, StoreError> {
    let (summary, rows) = summary_last::<D>(rows, "claim_tasks", |row| {
        Ok(row.get::<&str>("kind")? == "summary")
    })?;
    let summary = read::<D>(summary);
    let now = summary.get("store_now")?;
    let mut checkpoints: HashMap<Uuid, Result<HashMap<String, Value>, String>> = HashMap::new();
    let mut run_rows = Vec::new();
    for row in rows {
        let row = read::<D>(row);
        match row.get::<&str>("kind")? {
            "run" => run_rows.push(row),
            "checkpoint" => {
                let task_id: Uuid = row.get("task_id")?;
                let name: String = row.get("checkpoint_name")?;
                let value = row
                    .json::<Value>("checkpoint_value")
                    .map_err(|e| format!("its checkpoint `{name}` does not read back: {}", why(e)));
                let task = checkpoints
                    .entry(task_id)
                    .or_insert_with(|| Ok(HashMap::new()));
                match (task, value) {
                    (Ok(map), Ok(value)) => {
                        map.insert(name, value);
                    }
                    (task @ Ok(_), Err(why)) => *task = Err(why),
                    (Err(_), _) => {}
                }
            }
            other => {
                return Err(crate::error::unexpected(
                    D::NAME,
                    format!("claim_tasks returned a row of kind {other:?}"),
                ));
            }
        }
    }
    let mut runs = Vec::with_capacity(run_rows.len());
    let mut unreadable = Vec::new();
    for row in run_rows {
        let run = RunRef {
            queue: queue.to_owned(),
            task_id: row.get("task_id")?,
            run_id: row.get("run_id")?,
        };
        let task_checkpoints = checkpoints
            .remove(&run.task_id)
            .unwrap_or_else(|| Ok(HashMap::new()));
        match task_checkpoints.and_then(|checkpoints| {
            claimed_run(&run, &row, now, checkpoints)
                .map_err(|e| format!("what it stored does not read back: {}", why(e)))
        }) {
            Ok(claimed) => runs.push(claimed),
            Err(why) => unreadable.push((run, why)),
        }
    }
    Ok(ReadClaim {
        runs,
        unreadable,
        now,
        next_wake_at: summary.opt("next_wake_at")?,
    })
}

/// A claimed run from a `run` row of `CLAIM_TASKS`.
fn claimed_run<D: Driver>(
    run: &RunRef,
    row: &Reader<'_, D>,
    now: DateTime<Utc>,
    checkpoints: HashMap<String, Value>,
) -> Result<ClaimedRun, StoreError> {
    Ok(ClaimedRun {
        run: run.clone(),
        task_name: row.get("task_name")?,
        params: row.json("params")?,
        headers: row.json("headers")?,
        attempt: row.attempts("attempt")?,
        max_attempts: row.attempts("max_attempts")?,
        retry_strategy: row.json("retry_strategy")?,
        cancellation: row.json("cancellation")?,
        parent_task_id: row.opt("parent_task_id")?,
        created_at: row.get("created_at")?,
        first_started_at: row.opt("first_started_at")?,
        now,
        checkpoints,
    })
}

/// The message of a reading error, without the store's name.
fn why(error: StoreError) -> String {
    match error {
        StoreError::Backend { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}
