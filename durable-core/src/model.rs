//! The vocabulary shared by the client, the worker and every store: task states, results, and the
//! JSON shapes that stores persist for sleeps, awaited events and subtask outcomes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting to be claimed by a worker (new, or retrying after a failed attempt).
    Pending,
    /// Claimed by a worker that holds its lease.
    Running,
    /// Suspended until a time, an event or a subtask.
    Sleeping,
    /// Finished with an output. Terminal.
    Completed,
    /// Failed with no attempt left. Terminal.
    Failed,
    /// Cancelled. Terminal: a cancelled task never completes afterwards.
    Cancelled,
}

impl TaskStatus {
    /// Whether the task has reached a final state.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }

    /// The name stores use for this state.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Running => "running",
            TaskStatus::Sleeping => "sleeping",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// Parses the name returned by [`TaskStatus::as_str`].
    pub fn parse(name: &str) -> Option<TaskStatus> {
        Some(match name {
            "pending" => TaskStatus::Pending,
            "running" => TaskStatus::Running,
            "sleeping" => TaskStatus::Sleeping,
            "completed" => TaskStatus::Completed,
            "failed" => TaskStatus::Failed,
            "cancelled" => TaskStatus::Cancelled,
            _ => return None,
        })
    }
}

/// What a spawn returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnResult {
    /// The task's id: stable across retries, usable as an idempotency key for side effects.
    pub task_id: Uuid,
    /// The id of the task's current run (one run per attempt).
    pub run_id: Uuid,
    /// The current attempt number, starting at 1.
    pub attempt: u32,
    /// `false` when an idempotency key matched an existing task and that task was returned.
    pub created: bool,
}

/// How a failure is classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// An ordinary, retryable failure.
    Failed,
    /// A failure raised as non-retryable.
    NonRetryable,
    /// The task code panicked.
    Panic,
    /// An awaited event timed out.
    Timeout,
    /// A joined subtask failed or was cancelled.
    ChildFailed,
    /// The run's lease expired before it finished.
    LeaseExpired,
    /// The params did not deserialize into the task's `Params`.
    InvalidParams,
    /// The output could not be serialized.
    InvalidOutput,
    /// The task was cancelled.
    Cancelled,
    /// What the store holds for the task (its params, headers, options or a checkpoint) does
    /// not read back: the task fails alone, without retry, since every attempt would read the
    /// same data.
    Unreadable,
}

/// A recorded failure of an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskErrorInfo {
    /// What kind of failure it was.
    pub kind: FailureKind,
    /// The error message, with its chain of causes.
    pub message: String,
}

impl TaskErrorInfo {
    /// A failure record, its message made storable by [`policy::error_text`](crate::policy::error_text)
    /// (NUL characters escaped, at most 64 KiB).
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        TaskErrorInfo {
            kind,
            message: crate::policy::error_text(&message.into()),
        }
    }
}

/// The state of a task as seen from outside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskPollResult {
    /// The task.
    pub task_id: Uuid,
    /// Its current state.
    pub status: TaskStatus,
    /// Its output, once `Completed`.
    pub output: Option<Value>,
    /// The error of its last failed attempt (the final one once `Failed`).
    pub error: Option<TaskErrorInfo>,
}

/// How a subtask ended, as delivered to a parent's `join`.
///
/// Stores emit this as the payload of the event named by
/// [`child_event_name`](crate::store::child_event_name) when a task with a parent ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ChildOutcome {
    /// The subtask completed with this output.
    Completed {
        /// The subtask's output.
        output: Value,
    },
    /// The subtask failed with no attempt left.
    Failed {
        /// Its final error.
        error: TaskErrorInfo,
    },
    /// The subtask was cancelled.
    Cancelled,
}

/// The checkpoint a store writes for a durable sleep: the moment the sleep ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SleepCheckpoint {
    /// When the sleep is over (store clock).
    pub wake_at: DateTime<Utc>,
}

/// The checkpoint a store writes when an await on an event resolves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum AwaitCheckpoint {
    /// The event arrived with this payload.
    Received {
        /// The event's payload.
        payload: Value,
    },
    /// The timeout passed first.
    TimedOut,
}
