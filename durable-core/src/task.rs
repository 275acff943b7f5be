//! The [`Task`] trait and its type-erased form kept in a client's registry.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use async_trait::async_trait;
use serde::{Deserialize as _, Serialize, de::DeserializeOwned};
use serde_json::Value;
use uuid::Uuid;

use crate::context::TaskContext;
use crate::error::{TaskError, TaskResult};

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

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Why an erased task could not produce JSON output.
pub(crate) enum ErasedFailure {
    /// The params did not deserialize.
    InvalidParams(serde_json::Error),
    /// The output did not serialize, did not read back, or is too large.
    InvalidOutput(String),
    /// The task returned an error.
    Task(TaskError),
}

/// A registered task with its types erased to JSON.
pub(crate) trait ErasedTask: Send + Sync + 'static {
    fn run(&self, params: Value, ctx: TaskContext) -> BoxFuture<Result<Value, ErasedFailure>>;
    fn check_params(&self, params: &Value) -> Result<(), serde_json::Error>;
}

pub(crate) struct Registered<T>(PhantomData<fn() -> T>);

impl<T> Registered<T> {
    pub(crate) fn new() -> Self {
        Registered(PhantomData)
    }
}

impl<T: Task> ErasedTask for Registered<T> {
    fn run(&self, params: Value, ctx: TaskContext) -> BoxFuture<Result<Value, ErasedFailure>> {
        Box::pin(async move {
            let params: T::Params =
                serde_json::from_value(params).map_err(ErasedFailure::InvalidParams)?;
            let defaults = ctx.defaults();
            let output = T::run(params, ctx).await.map_err(ErasedFailure::Task)?;
            let value = serde_json::to_value(output)
                .map_err(|e| ErasedFailure::InvalidOutput(e.to_string()))?;
            // A joining parent reads it back as a `T::Output`: a NaN becomes null and would fail.
            if let Err(e) = T::Output::deserialize(&value) {
                return Err(ErasedFailure::InvalidOutput(format!(
                    "it does not read back from its JSON (a NaN or infinite float becomes null): {e}"
                )));
            }
            defaults
                .check_payload("the output", &value)
                .map_err(ErasedFailure::InvalidOutput)?;
            Ok(value)
        })
    }

    fn check_params(&self, params: &Value) -> Result<(), serde_json::Error> {
        T::Params::deserialize(params).map(drop)
    }
}
