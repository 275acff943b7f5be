//! The task registry: the task types a client has registered, by name, with their types erased
//! to JSON so that a worker runs them from what the store holds.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use serde::Deserialize as _;
use serde_json::Value;

use crate::context::TaskContext;
use crate::error::{DurableError, DurableResult, TaskError};
use crate::task::Task;

/// The tasks registered at one moment, by name: what a worker serves.
#[derive(Clone, Default)]
pub(crate) struct Registry {
    tasks: HashMap<&'static str, Arc<dyn ErasedTask>>,
}

impl Registry {
    /// The registered task named `name`.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<dyn ErasedTask>> {
        self.tasks.get(name).cloned()
    }

    /// Whether no task is registered.
    pub(crate) fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The names of the registered tasks, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.tasks.keys().map(|name| (*name).to_owned()).collect();
        names.sort();
        names
    }
}

/// A client's registry, shared by its clones. Registering adds to it; each worker takes a
/// [`Registry`] snapshot when it starts.
#[derive(Default)]
pub(crate) struct SharedRegistry(RwLock<Registry>);

impl SharedRegistry {
    /// Registers task type `T`; a registration under the same name is replaced.
    pub(crate) fn register<T: Task>(&self) {
        let mut registry = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if registry
            .tasks
            .insert(T::NAME, Arc::new(Registered::<T>(PhantomData)))
            .is_some()
        {
            tracing::debug!(
                task = T::NAME,
                "task registered again; the new registration wins"
            );
        }
    }

    /// The tasks registered now.
    pub(crate) fn snapshot(&self) -> Registry {
        self.read().clone()
    }

    /// The names of the registered tasks, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        self.read().names()
    }

    /// Checks `params` against the `Params` of task `task_name` if it is registered, and says
    /// whether it is.
    pub(crate) fn check_params(&self, task_name: &str, params: &Value) -> DurableResult<bool> {
        let Some(task) = self.read().get(task_name) else {
            return Ok(false);
        };
        task.check_params(params)
            .map_err(|source| DurableError::InvalidParams {
                task: task_name.to_owned(),
                source,
            })?;
        Ok(true)
    }

    fn read(&self) -> RwLockReadGuard<'_, Registry> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

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
    /// Runs the task on JSON params and returns its output as checked JSON.
    fn run(&self, params: Value, ctx: TaskContext) -> BoxFuture<Result<Value, ErasedFailure>>;
    /// Whether `params` read as the task's `Params`.
    fn check_params(&self, params: &Value) -> Result<(), serde_json::Error>;
}

/// Task type `T` behind [`ErasedTask`].
struct Registered<T>(PhantomData<fn() -> T>);

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
