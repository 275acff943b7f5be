//! What a store tells about its tasks for operators and tools: lists with filters and keyset
//! pages ([`TaskQuery`], [`TaskPage`]), and everything about one task ([`TaskDetail`]): its
//! runs, checkpoints, waits and subtasks. `Durable::list_tasks` and `Durable::inspect_task` are
//! the client's side; the admin CLI and the dashboard are built on them.
//!
//! A [`TaskDetail`] serialized as JSON is also a task's exported history: the replay check of
//! `durable-testing` reads it back.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::model::{TaskErrorInfo, TaskStatus};

/// The most tasks one [`TaskQuery`] returns, whatever its `limit` says.
pub const MAX_PAGE: usize = 1000;

/// The most runs a store keeps for a task: the latest ones. A task that is retried or resumed
/// more often keeps its last [`MAX_RUNS`] runs (and its latest error in full).
pub const MAX_RUNS: usize = 100;

/// The longest error text a run record keeps, in characters (the task's last error keeps up to
/// 64 KiB, see [`policy::error_text`](crate::policy::error_text)).
pub const MAX_RUN_ERROR_CHARS: usize = 2048;

/// The most subtasks a [`TaskDetail`] lists (descendants at every depth, oldest first).
pub const MAX_SUBTASKS: usize = 1000;

/// Which tasks to list, and which page. Every filter is optional; tasks come newest first
/// (by task id, which grows with creation time), in pages of at most `limit`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TaskQuery {
    /// Only tasks of this queue.
    pub queue: Option<String>,
    /// Only tasks in one of these states (none: every state).
    pub states: Vec<TaskStatus>,
    /// Only tasks of this registered name.
    pub task_name: Option<String>,
    /// Only tasks created at least this long ago (store time).
    pub older_than: Option<Duration>,
    /// Only tasks created less than this long ago (store time).
    pub newer_than: Option<Duration>,
    /// Only subtasks of this task.
    pub parent_task_id: Option<Uuid>,
    /// Only the task with this idempotency key (unique within a queue).
    pub idempotency_key: Option<String>,
    /// Only unfinished tasks that took the old path at the patch gate of this change id
    /// (see `TaskContext::patched`): while any is left, the gate must stay.
    pub old_path_of_patch: Option<String>,
    /// The page after this task id: the `next` of the page before. `None`: the first page.
    pub after: Option<Uuid>,
    /// The most tasks of the page (at most [`MAX_PAGE`]; 0 means 50).
    pub limit: usize,
}

impl TaskQuery {
    /// The page size this query asks for: `limit`, 50 when 0, at most [`MAX_PAGE`].
    pub fn page_size(&self) -> usize {
        match self.limit {
            0 => 50,
            n => n.min(MAX_PAGE),
        }
    }
}

/// A page of tasks, newest first.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TaskPage {
    /// The tasks of the page.
    pub tasks: Vec<TaskSummary>,
    /// Where the next page starts ([`TaskQuery::after`]); `None` when this page is the last.
    /// Pages stay stable while tasks are spawned: new tasks come before the first page.
    pub next: Option<Uuid>,
    /// Store time of the query (ages are relative to it).
    pub now: DateTime<Utc>,
}

/// A task in a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSummary {
    /// The task.
    pub task_id: Uuid,
    /// Its queue.
    pub queue: String,
    /// Its registered name.
    pub task_name: String,
    /// Its state.
    pub state: TaskStatus,
    /// Its current attempt (1-based).
    pub attempt: u32,
    /// Its attempts in all.
    pub max_attempts: u32,
    /// Its parent, for a subtask.
    pub parent_task_id: Option<Uuid>,
    /// Its idempotency key, if spawned with one.
    pub idempotency_key: Option<String>,
    /// When it was spawned.
    pub created_at: DateTime<Utc>,
    /// When it reached its terminal state.
    pub finished_at: Option<DateTime<Utc>>,
    /// The error of its last failed attempt.
    pub last_error: Option<TaskErrorInfo>,
}

/// Everything a store holds about one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDetail {
    /// What a list shows.
    pub summary: TaskSummary,
    /// Its current run (the fencing token of the current attempt's writes).
    pub run_id: Uuid,
    /// Its params.
    pub params: Value,
    /// Its headers.
    pub headers: std::collections::BTreeMap<String, Value>,
    /// Its retry strategy.
    pub retry_strategy: crate::RetryStrategy,
    /// Its cancellation policy.
    pub cancellation: crate::CancellationPolicy,
    /// When a pending or sleeping task becomes claimable (`None`: not by time).
    pub available_at: Option<DateTime<Utc>>,
    /// When a worker first started it.
    pub first_started_at: Option<DateTime<Utc>>,
    /// When the current (running) run's lease ends.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Its output, once completed.
    pub output: Option<Value>,
    /// Its runs, oldest first: one per claim, the current or last one included. At most
    /// [`MAX_RUNS`], the latest.
    pub runs: Vec<RunRecord>,
    /// Its checkpoints, in the order they were last written.
    pub checkpoints: Vec<CheckpointRecord>,
    /// The events it awaits now.
    pub waits: Vec<WaitRecord>,
    /// Its subtasks at every depth, oldest first (at most [`MAX_SUBTASKS`]); each names its
    /// parent, which gives the tree.
    pub subtasks: Vec<TaskSummary>,
    /// Store time of the read.
    pub now: DateTime<Utc>,
}

/// How a run (one claim of a task by a worker) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunOutcome {
    /// Not yet: the task is running.
    Running,
    /// The task completed.
    Completed,
    /// The task suspended (a sleep, an await, a join) and was claimed again later or waits.
    Suspended,
    /// The attempt failed and the task was scheduled again as a new attempt.
    Retried,
    /// The run's lease expired; the task was scheduled again or failed.
    LeaseExpired,
    /// The attempt failed and the task with it, for good.
    Failed,
    /// The task was cancelled while this run held it.
    Cancelled,
}

impl RunOutcome {
    /// The name stores use.
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Running => "running",
            RunOutcome::Completed => "completed",
            RunOutcome::Suspended => "suspended",
            RunOutcome::Retried => "retried",
            RunOutcome::LeaseExpired => "lease_expired",
            RunOutcome::Failed => "failed",
            RunOutcome::Cancelled => "cancelled",
        }
    }

    /// Parses the name returned by [`RunOutcome::as_str`].
    pub fn parse(name: &str) -> Option<RunOutcome> {
        Some(match name {
            "running" => RunOutcome::Running,
            "completed" => RunOutcome::Completed,
            "suspended" => RunOutcome::Suspended,
            "retried" => RunOutcome::Retried,
            "lease_expired" => RunOutcome::LeaseExpired,
            "failed" => RunOutcome::Failed,
            "cancelled" => RunOutcome::Cancelled,
            _ => return None,
        })
    }
}

/// One run of a task: a claim by a worker, until the task completed, suspended, failed, was
/// retried, lost its lease or was cancelled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The attempt the run belonged to.
    pub attempt: u32,
    /// The run's id (the fencing token; a resumed attempt keeps its run id).
    pub run_id: Uuid,
    /// The worker that claimed it.
    pub worker_id: Option<String>,
    /// When it was claimed.
    pub claimed_at: Option<DateTime<Utc>>,
    /// When it ended (`None`: still running).
    pub ended_at: Option<DateTime<Utc>>,
    /// How it ended.
    pub outcome: RunOutcome,
    /// Its error, for a failed run (the text cut at [`MAX_RUN_ERROR_CHARS`]).
    pub error: Option<TaskErrorInfo>,
    /// What a suspended run waits for: `until <time>`, `event <name>`, `subtask <id>`.
    pub waiting_for: Option<String>,
}

/// A checkpoint of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    /// Its name (`step`, `step#2`, `$sleep:nap`, `$await:approved`, `$spawn:child`...).
    pub name: String,
    /// Its value.
    pub value: Value,
    /// Its size in bytes of JSON.
    pub size_bytes: u64,
    /// The run that wrote it.
    pub run_id: Uuid,
    /// When it was written.
    pub updated_at: DateTime<Utc>,
}

/// An await in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitRecord {
    /// The await's checkpoint name.
    pub name: String,
    /// The event awaited (a subtask's end is the event `$child:<id>`).
    pub event_name: String,
    /// When it times out (`None`: never).
    pub timeout_at: Option<DateTime<Utc>>,
}

/// The size in bytes of a JSON value as text.
pub fn json_size(value: &Value) -> u64 {
    struct Counter(u64);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_default_and_cap() {
        let mut query = TaskQuery::default();
        assert_eq!(query.page_size(), 50);
        query.limit = 7;
        assert_eq!(query.page_size(), 7);
        query.limit = 1_000_000;
        assert_eq!(query.page_size(), MAX_PAGE);
    }

    #[test]
    fn run_outcomes_round_trip_their_names() {
        for outcome in [
            RunOutcome::Running,
            RunOutcome::Completed,
            RunOutcome::Suspended,
            RunOutcome::Retried,
            RunOutcome::LeaseExpired,
            RunOutcome::Failed,
            RunOutcome::Cancelled,
        ] {
            assert_eq!(RunOutcome::parse(outcome.as_str()), Some(outcome));
        }
        assert_eq!(RunOutcome::parse("other"), None);
    }

    #[test]
    fn json_sizes_count_text_bytes() {
        assert_eq!(json_size(&serde_json::json!({"a": "é"})), 10);
    }
}
