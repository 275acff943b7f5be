//! Error types: [`StoreError`] (what the storage port reports), [`DurableError`] (what the client
//! reports) and [`TaskError`] (what task code returns, control-flow signals included).

use std::fmt;

use uuid::Uuid;

use crate::model::{FailureKind, TaskErrorInfo, TaskStatus};

/// A boxed error kept as the source of a wrapping error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a [`Store`](crate::store::Store) operation reports when it does not succeed.
///
/// Backends map their driver errors to these meanings; driver types never appear here.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The run no longer owns its task: its lease expired, or another run took the task over.
    /// The write was refused and nothing changed.
    #[error("run {run_id} of task {task_id} no longer owns the task (lease expired or taken over)")]
    LeaseLost {
        /// The task the run belonged to.
        task_id: Uuid,
        /// The run whose write was refused.
        run_id: Uuid,
    },
    /// The task was cancelled; the write was refused and nothing changed.
    #[error("task {task_id} was cancelled")]
    Cancelled {
        /// The cancelled task.
        task_id: Uuid,
    },
    /// The thing looked up does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked up, e.g. `task 0190...`.
        what: String,
    },
    /// The operation does not fit the current state (e.g. retrying a task that did not fail).
    #[error("conflict: {message}")]
    Conflict {
        /// Why the operation conflicts with the current state.
        message: String,
    },
    /// The input was refused before anything was written.
    #[error("invalid input: {message}")]
    InvalidInput {
        /// What was wrong with the input.
        message: String,
    },
    /// The backend failed (connection lost, database error...). The operation may or may not have
    /// been applied if the failure happened while committing; every operation is safe to retry.
    #[error("{store} store failed: {source}")]
    Backend {
        /// Which store reported it (`memory`, `postgres-sqlx`, `postgres-native`).
        store: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
}

impl StoreError {
    /// Builds [`StoreError::InvalidInput`].
    pub fn invalid(message: impl Into<String>) -> Self {
        StoreError::InvalidInput {
            message: message.into(),
        }
    }

    /// Builds [`StoreError::NotFound`].
    pub fn not_found(what: impl Into<String>) -> Self {
        StoreError::NotFound { what: what.into() }
    }

    /// Builds [`StoreError::Conflict`].
    pub fn conflict(message: impl Into<String>) -> Self {
        StoreError::Conflict {
            message: message.into(),
        }
    }

    /// Builds [`StoreError::Backend`] from a driver error.
    pub fn backend(store: &'static str, source: impl Into<BoxError>) -> Self {
        StoreError::Backend {
            store,
            source: source.into(),
        }
    }
}

/// What the client ([`Durable`](crate::Durable)) and the worker report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DurableError {
    /// No task of this name is registered with this client.
    #[error("task `{name}` is not registered with this client; call `register::<T>()` first")]
    UnknownTask {
        /// The name that was asked for.
        name: String,
    },
    /// The params do not deserialize into the task's `Params`.
    #[error("params for task `{task}` do not match its Params type: {source}")]
    InvalidParams {
        /// The task name.
        task: String,
        /// Why deserialization failed.
        #[source]
        source: serde_json::Error,
    },
    /// A value could not be turned into JSON (or read back from it).
    #[error("could not serialize {what}: {source}")]
    Serialization {
        /// What was being serialized, e.g. `params of task "research"`.
        what: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// An argument was refused before anything was written (bad queue name, duration...).
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// Which argument.
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// The client could not be configured (missing database URL, unreachable database...).
    #[error("configuration error: {message}")]
    Config {
        /// What is missing or wrong.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// The task awaited by [`Durable::wait_for_result`](crate::Durable::wait_for_result)
    /// failed for good.
    #[error("task {task_id} failed{}", error.as_ref().map(|e| format!(": {}", e.message)).unwrap_or_default())]
    TaskFailed {
        /// The task.
        task_id: uuid::Uuid,
        /// The error of its last attempt, when recorded.
        error: Option<crate::model::TaskErrorInfo>,
    },
    /// The task awaited by [`Durable::wait_for_result`](crate::Durable::wait_for_result) was
    /// cancelled.
    #[error("task {task_id} was cancelled")]
    TaskCancelled {
        /// The task.
        task_id: uuid::Uuid,
    },
    /// [`Durable::wait_for_result`](crate::Durable::wait_for_result) gave up: the task had not
    /// ended.
    #[error("task {task_id} had not ended after {timeout:?}")]
    WaitTimedOut {
        /// The task.
        task_id: uuid::Uuid,
        /// How long the wait was.
        timeout: std::time::Duration,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl DurableError {
    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        DurableError::InvalidInput {
            what,
            reason: reason.into(),
        }
    }

    /// Builds [`DurableError::Config`].
    pub fn config(message: impl Into<String>, source: Option<BoxError>) -> Self {
        DurableError::Config {
            message: message.into(),
            source,
        }
    }
}

/// The result type of client operations.
pub type DurableResult<T> = Result<T, DurableError>;

/// Signals that end a run without it failing. Task code passes them on with `?`; the worker acts
/// on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControlFlow {
    /// The run suspended (durable sleep, awaited event, join on a subtask); it is resumed later
    /// from its checkpoints, possibly by another worker.
    Suspend,
    /// The task was cancelled; the run stops and the task never completes.
    Cancelled,
    /// The run lost its lease (it was too slow or its worker was paused); another run owns the
    /// task now and this one must stop.
    LeaseLost,
}

impl fmt::Display for ControlFlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ControlFlow::Suspend => "run suspended",
            ControlFlow::Cancelled => "task cancelled",
            ControlFlow::LeaseLost => "run lost its lease",
        })
    }
}

/// The result type of task code.
pub type TaskResult<T> = Result<T, TaskError>;

/// An error raised on purpose to fail a task at once, without retries.
///
/// Return it from a step closure (`Err(NonRetryable::new("card declined").into())`) or from
/// `run` through [`TaskError::permanent`].
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct NonRetryable {
    message: String,
}

impl NonRetryable {
    /// A non-retryable error with this message.
    pub fn new(message: impl fmt::Display) -> Self {
        NonRetryable {
            message: message.to_string(),
        }
    }
}

/// What task code returns when it does not produce its output.
///
/// Control-flow signals ([`TaskError::Control`]) are not failures: they stop the current run and
/// the worker records nothing as an error. Every other variant fails the current attempt; the task
/// is retried according to its [`RetryStrategy`](crate::RetryStrategy) unless the error is
/// non-retryable.
///
/// `?` works on `anyhow::Error` inside `run`: it becomes a retryable [`TaskError::Failed`]
/// (non-retryable when the error is a [`NonRetryable`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum TaskError {
    /// Stop this run without failing it.
    Control(ControlFlow),
    /// The attempt failed.
    Failed {
        /// What went wrong.
        error: anyhow::Error,
        /// Whether another attempt may be made.
        retryable: bool,
    },
    /// [`TaskContext::await_event`](crate::TaskContext::await_event) timed out. The timeout is
    /// checkpointed, so a replay sees the same outcome. Match on it to handle the timeout.
    Timeout {
        /// The checkpoint name of the await.
        step_name: String,
        /// The awaited event.
        event_name: String,
    },
    /// A joined subtask did not complete.
    ChildFailed {
        /// The checkpoint name of the join.
        step_name: String,
        /// The subtask.
        task_id: Uuid,
        /// How the subtask ended (`Failed` or `Cancelled`).
        status: TaskStatus,
        /// The subtask's error message, if it failed.
        message: Option<String>,
    },
}

impl TaskError {
    /// A failure that is not retried: the task fails at once.
    pub fn permanent(message: impl fmt::Display) -> Self {
        TaskError::Failed {
            error: anyhow::Error::new(NonRetryable::new(message)),
            retryable: false,
        }
    }

    /// A retryable failure with this message.
    pub fn failed(message: impl fmt::Display) -> Self {
        TaskError::Failed {
            error: anyhow::anyhow!("{message}"),
            retryable: true,
        }
    }

    /// Whether this is a control-flow signal rather than a failure.
    pub fn is_control(&self) -> bool {
        matches!(self, TaskError::Control(_))
    }

    /// Whether another attempt may follow this failure.
    pub fn is_retryable(&self) -> bool {
        match self {
            TaskError::Control(_) => false,
            TaskError::Failed { retryable, .. } => *retryable,
            TaskError::Timeout { .. } | TaskError::ChildFailed { .. } => true,
        }
    }

    /// The record of this failure that the store keeps.
    pub fn to_info(&self) -> TaskErrorInfo {
        let kind = match self {
            TaskError::Control(ControlFlow::Cancelled) => FailureKind::Cancelled,
            TaskError::Control(_) => FailureKind::Failed,
            TaskError::Failed {
                retryable: true, ..
            } => FailureKind::Failed,
            TaskError::Failed {
                retryable: false, ..
            } => FailureKind::NonRetryable,
            TaskError::Timeout { .. } => FailureKind::Timeout,
            TaskError::ChildFailed { .. } => FailureKind::ChildFailed,
        };
        let message = match self {
            // `{:#}` keeps anyhow's context chain on one line.
            TaskError::Failed { error, .. } => format!("{error:#}"),
            other => other.to_string(),
        };
        TaskErrorInfo::new(kind, message)
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Control(flow) => write!(f, "{flow}"),
            TaskError::Failed { error, .. } => write!(f, "{error:#}"),
            TaskError::Timeout {
                step_name,
                event_name,
            } => write!(
                f,
                "timed out waiting for event `{event_name}` (step `{step_name}`)"
            ),
            TaskError::ChildFailed {
                step_name,
                task_id,
                status,
                message,
            } => {
                write!(
                    f,
                    "subtask {task_id} joined at `{step_name}` ended {status:?}"
                )?;
                if let Some(message) = message {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for TaskError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TaskError::Failed { error, .. } => Some(error.as_ref()),
            _ => None,
        }
    }
}

impl From<anyhow::Error> for TaskError {
    fn from(error: anyhow::Error) -> Self {
        // A TaskError that travelled through anyhow (e.g. out of a step closure) keeps its meaning.
        let error = match error.downcast::<TaskError>() {
            Ok(task_error) => return task_error,
            Err(error) => error,
        };
        let retryable = error.downcast_ref::<NonRetryable>().is_none();
        TaskError::Failed { error, retryable }
    }
}

impl From<ControlFlow> for TaskError {
    fn from(flow: ControlFlow) -> Self {
        TaskError::Control(flow)
    }
}

impl From<DurableError> for TaskError {
    fn from(error: DurableError) -> Self {
        match error {
            DurableError::Store(store) => TaskError::from(store),
            other => {
                let retryable = !matches!(
                    other,
                    DurableError::InvalidInput { .. }
                        | DurableError::InvalidParams { .. }
                        | DurableError::Serialization { .. }
                        | DurableError::UnknownTask { .. }
                );
                TaskError::Failed {
                    error: anyhow::Error::new(other),
                    retryable,
                }
            }
        }
    }
}

impl From<StoreError> for TaskError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::LeaseLost { .. } => TaskError::Control(ControlFlow::LeaseLost),
            StoreError::Cancelled { .. } => TaskError::Control(ControlFlow::Cancelled),
            StoreError::InvalidInput { .. } => TaskError::Failed {
                error: anyhow::Error::new(error),
                retryable: false,
            },
            other => TaskError::Failed {
                error: anyhow::Error::new(other),
                retryable: true,
            },
        }
    }
}
