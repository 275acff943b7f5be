//! The state of a [`MemoryStore`](super::MemoryStore): its tables as maps, and what every
//! transition relies on: the fence of a run, checkpoints, deadlines on the store's clock.
//!
//! The transitions themselves are methods of [`State`] in the sibling modules, grouped by
//! area; each runs under the store's one lock, so it is atomic like a PostgreSQL statement.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
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
    pub(super) events: HashMap<(String, String), Value>,
    pub(super) waits: HashMap<(Uuid, String), Wait>,
    pub(super) idempotency: HashMap<(String, String), Uuid>,
    pub(super) next_seq: u64,
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

    /// Stores checkpoint `name` of a task, replacing an earlier value.
    pub(super) fn put_checkpoint(&mut self, task_id: Uuid, name: &str, value: Value) {
        self.checkpoints
            .entry(task_id)
            .or_default()
            .insert(name.to_owned(), value);
    }

    /// Checkpoint `name` of a task, if written.
    pub(super) fn checkpoint(&self, task_id: Uuid, name: &str) -> Option<Value> {
        self.checkpoints.get(&task_id)?.get(name).cloned()
    }
}
