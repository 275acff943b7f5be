//! The rows of `LIST_TASKS` and `INSPECT_TASK` read back into [`TaskPage`] and [`TaskDetail`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use durable_core::inspect::{
    CheckpointRecord, MAX_RUNS, RunOutcome, RunRecord, TaskDetail, TaskPage, TaskQuery,
    TaskSummary, WaitRecord,
};
use durable_core::{
    CancellationPolicy, RetryStrategy, StoreError, TaskErrorInfo, TaskStatus, policy,
};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::decode::{Reader, int4, opt_micros, read};
use crate::driver::{Driver, Param};
use crate::error::unexpected;

/// The parameters of `LIST_TASKS` for `query`, asking for one row more than the page holds
/// (whether a next page exists). `patch` owns the gate's checkpoint name.
pub(crate) fn list_params<'q>(
    query: &'q TaskQuery,
    patch: &'q Option<String>,
) -> Result<Vec<Param<'q>>, StoreError> {
    Ok(vec![
        Param::Text(query.queue.as_deref()),
        Param::TextArray(query.states.iter().map(|s| Some(s.as_str())).collect()),
        Param::Text(query.task_name.as_deref()),
        Param::Int8(opt_micros("older_than", query.older_than)?),
        Param::Int8(opt_micros("newer_than", query.newer_than)?),
        Param::Uuid(query.parent_task_id),
        Param::Text(query.idempotency_key.as_deref()),
        Param::Text(patch.as_deref()),
        Param::Uuid(query.after),
        Param::Int4(Some(int4(query.page_size() as u64 + 1))),
    ])
}

/// The checkpoint name of the patch gate `change_id` (`$patch:<id>`).
pub(crate) fn patch_checkpoint(change_id: &str) -> String {
    format!("{}patch:{change_id}", policy::RESERVED_PREFIX)
}

/// A page from the rows of `LIST_TASKS` (one more than the page when there is a next page).
pub(crate) fn task_page<D: Driver>(
    rows: &[D::Row],
    query: &TaskQuery,
) -> Result<TaskPage, StoreError> {
    let size = query.page_size();
    let mut tasks = Vec::with_capacity(rows.len().min(size));
    let mut now = None;
    for row in rows.iter().take(size) {
        let row = read::<D>(row);
        now = Some(row.get("store_now")?);
        tasks.push(summary(&row)?);
    }
    let next = (rows.len() > size)
        .then(|| tasks.last().map(|t| t.task_id))
        .flatten();
    let now = match now {
        Some(now) => now,
        None => Utc::now(),
    };
    Ok(TaskPage { tasks, next, now })
}

fn state<D: Driver>(row: &Reader<'_, D>) -> Result<TaskStatus, StoreError> {
    let state: &str = row.get("state")?;
    TaskStatus::parse(state)
        .ok_or_else(|| unexpected(D::NAME, format!("unknown task state {state:?}")))
}

fn summary<D: Driver>(row: &Reader<'_, D>) -> Result<TaskSummary, StoreError> {
    Ok(TaskSummary {
        task_id: row.get("task_id")?,
        queue: row.get("queue_name")?,
        task_name: row.get("task_name")?,
        state: state(row)?,
        attempt: row.attempts("attempt")?,
        max_attempts: row.attempts("max_attempts")?,
        parent_task_id: row.opt("parent_task_id")?,
        idempotency_key: row.opt("idempotency_key")?,
        created_at: row.get("created_at")?,
        finished_at: row.opt("finished_at")?,
        last_error: row.opt_json("last_error")?,
    })
}

/// A task's row as `to_jsonb` writes it.
#[derive(Deserialize)]
struct TaskJson {
    task_id: Uuid,
    queue_name: String,
    task_name: String,
    #[serde(default)]
    params: Value,
    #[serde(default)]
    headers: BTreeMap<String, Value>,
    max_attempts: u32,
    retry_strategy: Option<RetryStrategy>,
    cancellation: Option<CancellationPolicy>,
    idempotency_key: Option<String>,
    parent_task_id: Option<Uuid>,
    state: TaskStatus,
    attempt: u32,
    run_id: Uuid,
    available_at: Option<DateTime<Utc>>,
    claimed_by: Option<String>,
    claimed_at: Option<DateTime<Utc>>,
    lease_expires_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    first_started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    output: Option<Value>,
    last_error: Option<TaskErrorInfo>,
    store_now: Option<DateTime<Utc>>,
}

impl TaskJson {
    fn summary(&self) -> TaskSummary {
        TaskSummary {
            task_id: self.task_id,
            queue: self.queue_name.clone(),
            task_name: self.task_name.clone(),
            state: self.state,
            attempt: self.attempt,
            max_attempts: self.max_attempts,
            parent_task_id: self.parent_task_id,
            idempotency_key: self.idempotency_key.clone(),
            created_at: self.created_at,
            finished_at: self.finished_at,
            last_error: self.last_error.clone(),
        }
    }

    /// The run the task's row holds: running now, or the last one of a completed task.
    fn current_run(&self) -> Option<RunRecord> {
        let outcome = match self.state {
            TaskStatus::Running => RunOutcome::Running,
            TaskStatus::Completed if self.claimed_at.is_some() => RunOutcome::Completed,
            _ => return None,
        };
        Some(RunRecord {
            attempt: self.attempt,
            run_id: self.run_id,
            worker_id: self.claimed_by.clone(),
            claimed_at: self.claimed_at,
            ended_at: self
                .finished_at
                .filter(|_| outcome == RunOutcome::Completed),
            outcome,
            error: None,
            waiting_for: None,
        })
    }
}

/// A recorded run as `to_jsonb` writes a row of `durable.task_runs`.
#[derive(Deserialize)]
struct RunJson {
    seq: i64,
    attempt: u32,
    run_id: Uuid,
    worker_id: Option<String>,
    claimed_at: Option<DateTime<Utc>>,
    ended_at: DateTime<Utc>,
    outcome: String,
    error: Option<TaskErrorInfo>,
    waiting_for: Option<String>,
}

#[derive(Deserialize)]
struct CheckpointJson {
    name: String,
    value: Value,
    size_bytes: u64,
    run_id: Uuid,
    updated_at: DateTime<Utc>,
}

/// The rows of `INSPECT_TASK` for `task_id`; `None` when there are none (no such task).
pub(crate) fn task_detail<D: Driver>(
    rows: &[D::Row],
    task_id: Uuid,
) -> Result<Option<TaskDetail>, StoreError> {
    let bad = |what: &str, e: serde_json::Error| {
        unexpected(
            D::NAME,
            format!("reading the {what} of task {task_id}: {e}"),
        )
    };
    let mut task: Option<TaskJson> = None;
    let mut runs: Vec<(i64, RunRecord)> = Vec::new();
    let mut checkpoints = Vec::new();
    let mut waits = Vec::new();
    let mut subtasks = Vec::new();
    for row in rows {
        let row = read::<D>(row);
        let data: Value = row.json("data")?;
        match row.get::<&str>("kind")? {
            "task" => task = Some(serde_json::from_value(data).map_err(|e| bad("row", e))?),
            "run" => {
                let run: RunJson = serde_json::from_value(data).map_err(|e| bad("runs", e))?;
                let outcome = RunOutcome::parse(&run.outcome).ok_or_else(|| {
                    unexpected(D::NAME, format!("unknown run outcome {:?}", run.outcome))
                })?;
                runs.push((
                    run.seq,
                    RunRecord {
                        attempt: run.attempt,
                        run_id: run.run_id,
                        worker_id: run.worker_id,
                        claimed_at: run.claimed_at,
                        ended_at: Some(run.ended_at),
                        outcome,
                        error: run.error,
                        waiting_for: run.waiting_for,
                    },
                ));
            }
            "checkpoint" => {
                let c: CheckpointJson =
                    serde_json::from_value(data).map_err(|e| bad("checkpoints", e))?;
                checkpoints.push(CheckpointRecord {
                    name: c.name,
                    value: c.value,
                    size_bytes: c.size_bytes,
                    run_id: c.run_id,
                    updated_at: c.updated_at,
                });
            }
            "wait" => {
                waits.push(serde_json::from_value::<WaitRecord>(data).map_err(|e| bad("waits", e))?)
            }
            "subtask" => subtasks.push(
                serde_json::from_value::<TaskJson>(data)
                    .map_err(|e| bad("subtasks", e))?
                    .summary(),
            ),
            other => {
                return Err(unexpected(
                    D::NAME,
                    format!("inspect_task returned a row of kind {other:?}"),
                ));
            }
        }
    }
    let Some(task) = task else {
        return Ok(None);
    };
    runs.sort_by_key(|(seq, _)| *seq);
    let mut runs: Vec<RunRecord> = runs.into_iter().map(|(_, run)| run).collect();
    runs.extend(task.current_run());
    let excess = runs.len().saturating_sub(MAX_RUNS);
    runs.drain(..excess);
    checkpoints.sort_by(|a, b| (a.updated_at, &a.name).cmp(&(b.updated_at, &b.name)));
    waits.sort_by(|a, b| a.name.cmp(&b.name));
    subtasks.sort_by_key(|s| s.task_id);
    let output = match (&task.output, task.state) {
        (None, TaskStatus::Completed) => Some(Value::Null),
        (output, _) => output.clone(),
    };
    Ok(Some(TaskDetail {
        summary: task.summary(),
        run_id: task.run_id,
        params: task.params,
        headers: task.headers,
        retry_strategy: task.retry_strategy.unwrap_or_default(),
        cancellation: task.cancellation.unwrap_or_default(),
        available_at: task.available_at,
        first_started_at: task.first_started_at,
        lease_expires_at: task.lease_expires_at,
        output,
        runs,
        checkpoints,
        waits,
        subtasks,
        now: task.store_now.unwrap_or_else(Utc::now),
    }))
}
