//! The state of a [`MemoryStore`](super::MemoryStore): its tables as maps, and what every
//! transition relies on: the fence of a run, checkpoints, deadlines on the store's clock.
//!
//! The transitions themselves are methods of [`State`] in the sibling modules, grouped by
//! area; each runs under the store's one lock, so it is atomic like a PostgreSQL statement.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use durable_core::inspect::{MAX_RUN_ERROR_CHARS, MAX_RUNS, RunOutcome, RunRecord};
use durable_core::policy;
use durable_core::store::{RunRef, ScheduleRecord, WorkSignals};
use durable_core::{CancellationPolicy, RetryStrategy, StoreError, TaskErrorInfo, TaskStatus};
use serde_json::Value;
use uuid::Uuid;

/// The store's name in backend errors.
const STORE: &str = "memory";

/// Every table of the store.
#[derive(Debug, Default)]
pub(super) struct State {
    /// The end-of-task signals handed out by `watch_finish`, keyed by task id.
    pub(super) finish: Arc<WorkSignals>,
    /// When each event was emitted (retention).
    pub(super) event_times: HashMap<(String, String), DateTime<Utc>>,
    pub(super) schedules: BTreeMap<(String, String), ScheduleRecord>,
    pub(super) queues: BTreeSet<String>,
    pub(super) tasks: HashMap<Uuid, TaskRow>,
    pub(super) checkpoints: HashMap<Uuid, HashMap<String, Value>>,
    /// Who wrote each checkpoint, when, and in which order, by task and name.
    pub(super) checkpoint_meta: HashMap<(Uuid, String), CheckpointMeta>,
    pub(super) events: HashMap<(String, String), Value>,
    pub(super) waits: HashMap<(Uuid, String), Wait>,
    pub(super) idempotency: HashMap<(String, String), Uuid>,
    pub(super) next_seq: u64,
}

/// Who wrote a checkpoint and when.
#[derive(Debug, Clone, Copy)]
pub(super) struct CheckpointMeta {
    pub(super) run_id: Uuid,
    pub(super) updated_at: DateTime<Utc>,
    /// The order of writing, across the store.
    pub(super) seq: u64,
}

/// A task asleep on an event, keyed by (task, checkpoint name).
#[derive(Debug, Clone)]
pub(super) struct Wait {
    pub(super) queue: String,
    pub(super) event_name: String,
    pub(super) timeout_at: Option<DateTime<Utc>>,
}

/// One task.
#[derive(Debug, Clone)]
pub(super) struct TaskRow {
    /// The order of creation.
    pub(super) seq: u64,
    pub(super) queue: String,
    pub(super) task_name: String,
    pub(super) params: Value,
    pub(super) headers: BTreeMap<String, Value>,
    pub(super) max_attempts: u32,
    pub(super) retry_strategy: RetryStrategy,
    pub(super) cancellation: CancellationPolicy,
    pub(super) parent_task_id: Option<Uuid>,
    pub(super) state: TaskStatus,
    pub(super) attempt: u32,
    pub(super) run_id: Uuid,
    pub(super) available_at: Option<DateTime<Utc>>,
    pub(super) claimed_by: Option<String>,
    pub(super) lease_expires_at: Option<DateTime<Utc>>,
    pub(super) created_at: DateTime<Utc>,
    pub(super) first_started_at: Option<DateTime<Utc>>,
    pub(super) finished_at: Option<DateTime<Utc>>,
    pub(super) output: Option<Value>,
    pub(super) last_error: Option<TaskErrorInfo>,
    pub(super) idempotency_key: Option<String>,
    /// When the current (or last) run was claimed.
    pub(super) claimed_at: Option<DateTime<Utc>>,
    /// The runs that ended, oldest first (the latest [`MAX_RUNS`]).
    pub(super) runs: Vec<RunRecord>,
}

impl TaskRow {
    /// Records the end of the run the row holds, if it is running; call it before the row
    /// leaves `running` (and, for a failure, after `last_error` is set).
    pub(super) fn end_run(
        &mut self,
        outcome: RunOutcome,
        now: DateTime<Utc>,
        waiting_for: Option<String>,
    ) {
        if self.state != TaskStatus::Running {
            return;
        }
        let error = matches!(
            outcome,
            RunOutcome::Retried | RunOutcome::LeaseExpired | RunOutcome::Failed
        )
        .then(|| self.last_error.clone())
        .flatten()
        .map(|error| TaskErrorInfo {
            kind: error.kind,
            message: error.message.chars().take(MAX_RUN_ERROR_CHARS).collect(),
        });
        self.runs.push(RunRecord {
            attempt: self.attempt,
            run_id: self.run_id,
            worker_id: self.claimed_by.clone(),
            claimed_at: self.claimed_at,
            ended_at: Some(now),
            outcome,
            error,
            waiting_for,
        });
        let excess = self.runs.len().saturating_sub(MAX_RUNS);
        self.runs.drain(..excess);
    }
}

/// What a suspended run waits for, as every store writes it: `until <time>`, `event <name>`,
/// `subtask <id>`.
pub(super) fn waiting_for(event: Option<&str>, until: Option<DateTime<Utc>>) -> Option<String> {
    match (event, until) {
        (Some(event), _) => Some(
            match event.strip_prefix(durable_core::store::CHILD_EVENT_PREFIX) {
                Some(child) => format!("subtask {child}"),
                None => format!("event {event}"),
            },
        ),
        (None, Some(at)) => Some(format!("until {}", at.format("%Y-%m-%dT%H:%M:%S%.6fZ"))),
        (None, None) => None,
    }
}

/// `now + d`, refusing a duration that does not fit (`what` names it in the error).
pub(super) fn after(
    now: DateTime<Utc>,
    d: Duration,
    what: &str,
) -> Result<DateTime<Utc>, StoreError> {
    let d = policy::checked_duration(what, d).map_err(StoreError::invalid)?;
    now.checked_add_signed(d)
        .ok_or_else(|| StoreError::invalid(format!("{what} ends past the end of time")))
}

/// A value as JSON, for a checkpoint the store writes itself.
pub(super) fn to_value<T: serde::Serialize>(value: &T) -> Result<Value, StoreError> {
    serde_json::to_value(value).map_err(|e| StoreError::backend(STORE, e))
}

impl State {
    /// The fence: the row of `run`'s task while `run` owns it (running, current run, lease not
    /// expired at `now`); otherwise [`StoreError::Cancelled`] or [`StoreError::LeaseLost`].
    pub(super) fn owned(
        &mut self,
        run: &RunRef,
        now: DateTime<Utc>,
    ) -> Result<&mut TaskRow, StoreError> {
        let row = self
            .tasks
            .get_mut(&run.task_id)
            .ok_or_else(|| StoreError::LeaseLost {
                task_id: run.task_id,
                run_id: run.run_id,
            })?;
        if row.state == TaskStatus::Cancelled {
            return Err(StoreError::Cancelled {
                task_id: run.task_id,
            });
        }
        let owns = row.state == TaskStatus::Running
            && row.run_id == run.run_id
            && row.lease_expires_at.is_some_and(|lease| lease > now);
        if owns {
            Ok(row)
        } else {
            Err(StoreError::LeaseLost {
                task_id: run.task_id,
                run_id: run.run_id,
            })
        }
    }

    /// Stores checkpoint `name` of `run`'s task, replacing an earlier value.
    pub(super) fn put_checkpoint(
        &mut self,
        run: &RunRef,
        name: &str,
        value: Value,
        now: DateTime<Utc>,
    ) {
        self.checkpoints
            .entry(run.task_id)
            .or_default()
            .insert(name.to_owned(), value);
        self.next_seq += 1;
        self.checkpoint_meta.insert(
            (run.task_id, name.to_owned()),
            CheckpointMeta {
                run_id: run.run_id,
                updated_at: now,
                seq: self.next_seq,
            },
        );
    }

    /// Checkpoint `name` of a task, if written.
    pub(super) fn checkpoint(&self, task_id: Uuid, name: &str) -> Option<Value> {
        self.checkpoints.get(&task_id)?.get(name).cloned()
    }
}
