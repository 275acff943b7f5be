//! The [`Task`] trait, the [`TaskHandle`] of a subtask, and a task's params as checked JSON.

use std::marker::PhantomData;

use async_trait::async_trait;
use serde::{Deserialize as _, Serialize, de::DeserializeOwned};
use serde_json::Value;
use uuid::Uuid;

use crate::context::TaskContext;
use crate::error::{DurableError, DurableResult, TaskResult};

/// A kind of durable task.
///
/// `run` is plain async Rust. Everything it does through its [`TaskContext`] is checkpointed, so
/// when the task is retried or resumed (after a crash, a sleep, an event) the completed steps
/// return their recorded results instead of running again.
///
/// ```
/// use durable_core::{Task, TaskContext, TaskResult, async_trait};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Greet { name: String }
///
/// struct GreetTask;
///
/// #[async_trait]
/// impl Task for GreetTask {
///     const NAME: &'static str = "greet";
///     type Params = Greet;
///     type Output = String;
///
///     async fn run(params: Self::Params, ctx: TaskContext) -> TaskResult<Self::Output> {
///         let greeting: String = ctx
///             .step("compose", || async { Ok(format!("hello, {}", params.name)) })
///             .await?;
///         Ok(greeting)
///     }
/// }
/// ```
#[async_trait]
pub trait Task: Send + Sync + 'static {
    /// The name the task is stored and registered under. Unique within a queue.
    const NAME: &'static str;
    /// The task's input, stored as JSON.
    type Params: Serialize + DeserializeOwned + Send + 'static;
    /// The task's output, stored as JSON.
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// Runs (or resumes) the task.
    async fn run(params: Self::Params, ctx: TaskContext) -> TaskResult<Self::Output>;
}

/// A handle to a subtask spawned with [`TaskContext::spawn`], to pass to [`TaskContext::join`].
#[derive(Debug)]
pub struct TaskHandle<T> {
    /// The subtask's id.
    pub task_id: Uuid,
    _output: PhantomData<fn() -> T>,
}

impl<T> TaskHandle<T> {
    /// A handle to the task `task_id` whose output is a `T`.
    pub fn new(task_id: Uuid) -> Self {
        TaskHandle {
            task_id,
            _output: PhantomData,
        }
    }
}

impl<T> Clone for TaskHandle<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for TaskHandle<T> {}

/// The params of a task as JSON, checked to read back as `T::Params`: serde_json writes a NaN
/// or infinite float as `null`, which a worker could then not read (the task would fail only
/// when it runs).
pub(crate) fn params_value<T: Task>(params: &T::Params) -> DurableResult<Value> {
    let value = serde_json::to_value(params).map_err(|source| DurableError::Serialization {
        what: format!("params of task `{}`", T::NAME),
        source,
    })?;
    if let Err(source) = T::Params::deserialize(&value) {
        return Err(DurableError::Serialization {
            what: format!(
                "params of task `{}` (they do not read back from their JSON; a NaN or infinite \
                 float becomes null)",
                T::NAME
            ),
            source,
        });
    }
    Ok(value)
}
