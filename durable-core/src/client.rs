//! The client: [`Durable`] spawns tasks, emits events, cancels and inspects, and starts workers.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::defaults::ClientDefaults;
use crate::error::{DurableError, DurableResult};
use crate::model::{SpawnResult, TaskPollResult};
use crate::options::{CancellationPolicy, RetryStrategy, SpawnOptions, WorkerOptions};
use crate::policy;
use crate::registry::SharedRegistry;
use crate::store::{NewTask, Store};
use crate::task::{Task, params_value};
use crate::telemetry;
use crate::worker::{self, Worker};

/// Configures a [`Durable`] client over any [`Store`]. The PostgreSQL adapters wrap it in a
/// builder that also takes a database URL or pool.
#[derive(Debug, Clone, Default)]
pub struct DurableBuilder {
    defaults: ClientDefaults,
}

impl DurableBuilder {
    /// A builder with the default options (queue `default`).
    pub fn new() -> Self {
        DurableBuilder::default()
    }

    /// The queue this client spawns into and its workers claim from. Default `default`.
    pub fn queue_name(mut self, queue: impl Into<String>) -> Self {
        self.defaults.queue = queue.into();
        self
    }

    /// Attempts a task gets when its spawn does not say. Default 5.
    pub fn default_max_attempts(mut self, attempts: u32) -> Self {
        self.defaults.max_attempts = attempts;
        self
    }

    /// Retry strategy when a spawn does not say. Default: [`RetryStrategy::default`].
    pub fn default_retry_strategy(mut self, strategy: RetryStrategy) -> Self {
        self.defaults.retry_strategy = strategy;
        self
    }

    /// Cancellation policy when a spawn does not say. Default: none.
    pub fn default_cancellation(mut self, policy: CancellationPolicy) -> Self {
        self.defaults.cancellation = policy;
        self
    }

    /// The largest JSON value stored for a task: params, headers, step results, output, event
    /// payloads. Default 4 MiB; see [`ClientDefaults::max_payload_bytes`].
    pub fn max_payload_bytes(mut self, bytes: usize) -> Self {
        self.defaults.max_payload_bytes = bytes;
        self
    }

    /// The defaults configured so far.
    pub fn defaults(&self) -> &ClientDefaults {
        &self.defaults
    }

    /// Builds a client over `store`, creating its queue.
    pub async fn build_with_store<S: Store>(self, store: S) -> DurableResult<Durable<S>> {
        self.build_with_shared_store(Arc::new(store)).await
    }

    /// Builds a client over a store shared with other clients.
    pub async fn build_with_shared_store<S: Store>(
        self,
        store: Arc<S>,
    ) -> DurableResult<Durable<S>> {
        let defaults = self.defaults;
        defaults.validate()?;
        store.ensure_queue(&defaults.queue).await?;
        Ok(Durable {
            inner: Arc::new(ClientInner {
                store,
                defaults: Arc::new(defaults),
                registry: SharedRegistry::default(),
            }),
        })
    }
}

pub(crate) struct ClientInner<S> {
    pub(crate) store: Arc<S>,
    pub(crate) defaults: Arc<ClientDefaults>,
    pub(crate) registry: SharedRegistry,
}

/// The client of `durable`: spawns tasks, emits events, cancels, inspects, and starts workers.
///
/// Cheap to clone; clones share the store and the task registry.
pub struct Durable<S: Store> {
    pub(crate) inner: Arc<ClientInner<S>>,
}

impl<S: Store> Clone for Durable<S> {
    fn clone(&self) -> Self {
        Durable {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S: Store> std::fmt::Debug for Durable<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durable")
            .field("queue", &self.inner.defaults.queue)
            .finish_non_exhaustive()
    }
}

impl<S: Store> Durable<S> {
    /// A builder; finish it with [`DurableBuilder::build_with_store`].
    pub fn builder() -> DurableBuilder {
        DurableBuilder::new()
    }

    /// The store behind this client.
    pub fn store(&self) -> &Arc<S> {
        &self.inner.store
    }

    /// The client's queue.
    pub fn queue_name(&self) -> &str {
        &self.inner.defaults.queue
    }

    /// The defaults this client applies to spawns.
    pub fn defaults(&self) -> &ClientDefaults {
        &self.inner.defaults
    }

    /// Registers task type `T` so this client's workers run it and `spawn_by_name` accepts its
    /// name. Registering a name again replaces the earlier registration.
    pub async fn register<T: Task>(&self) {
        self.inner.registry.register::<T>();
    }

    /// The names of the registered tasks.
    pub fn registered_tasks(&self) -> Vec<String> {
        self.inner.registry.names()
    }

    /// Spawns task `T` with default options.
    pub async fn spawn<T: Task>(&self, params: T::Params) -> DurableResult<SpawnResult> {
        self.spawn_with_options::<T>(params, SpawnOptions::default())
            .await
    }

    /// Spawns task `T` with `options`.
    pub async fn spawn_with_options<T: Task>(
        &self,
        params: T::Params,
        options: SpawnOptions,
    ) -> DurableResult<SpawnResult> {
        let task = self.prepare_spawn::<T>(params, options)?;
        self.spawn_prepared(task).await
    }

    /// Spawns one task `T` per element of `params`, all with `options`, in one round trip on
    /// the PostgreSQL stores (one statement: all are created or none). Returns the results in
    /// the order of `params`; an empty `params` returns at once.
    ///
    /// `options` may not hold an idempotency key (it would make every task the same task): use
    /// [`Durable::spawn_with_options`] for keyed spawns.
    pub async fn spawn_many<T: Task>(
        &self,
        params: Vec<T::Params>,
        options: SpawnOptions,
    ) -> DurableResult<Vec<SpawnResult>> {
        let tasks = self.prepare_spawn_many::<T>(params, options)?;
        let Some(first) = tasks.first() else {
            return Ok(Vec::new());
        };
        let label = telemetry::TaskLabel::of(&first.queue, &first.task_name);
        let results = self.inner.store.spawn_many(tasks).await?;
        label.spawned(&results);
        Ok(results)
    }

    /// The store's view of `spawn_many::<T>`: for adapters that spawn inside a caller's
    /// transaction. Refuses an idempotency key in `options`.
    pub fn prepare_spawn_many<T: Task>(
        &self,
        params: Vec<T::Params>,
        options: SpawnOptions,
    ) -> DurableResult<Vec<NewTask>> {
        if options.idempotency_key.is_some() {
            return Err(DurableError::invalid(
                "idempotency key",
                "spawn_many applies its options to every task, so it takes no idempotency key",
            ));
        }
        let mut tasks = Vec::with_capacity(params.len());
        let mut params = params.into_iter();
        let Some(first) = params.next() else {
            return Ok(tasks);
        };
        // Options are checked and defaults applied once; every task then shares them.
        let mut template = self.prepare_spawn::<T>(first, options)?;
        let first_params = std::mem::take(&mut template.params);
        for next in params {
            let value = params_value::<T>(&next)?;
            self.inner
                .defaults
                .check_payload(&format!("params of task `{}`", T::NAME), &value)
                .map_err(|r| DurableError::invalid("params", r))?;
            tasks.push(NewTask {
                params: value,
                ..template.clone()
            });
        }
        template.params = first_params;
        tasks.insert(0, template);
        Ok(tasks)
    }

    /// Spawns a registered task by name with JSON params, checked against the task's `Params`.
    pub async fn spawn_by_name(
        &self,
        task_name: &str,
        params: Value,
        options: SpawnOptions,
    ) -> DurableResult<SpawnResult> {
        let task = self.prepare_spawn_by_name(task_name, params, options)?;
        self.spawn_prepared(task).await
    }

    async fn spawn_prepared(&self, task: NewTask) -> DurableResult<SpawnResult> {
        let label = telemetry::TaskLabel::of(&task.queue, &task.task_name);
        let result = self.inner.store.spawn(task).await?;
        label.spawned(std::slice::from_ref(&result));
        Ok(result)
    }

    /// The store's view of `spawn_with_options::<T>`: for adapters that spawn inside a caller's
    /// transaction.
    pub fn prepare_spawn<T: Task>(
        &self,
        params: T::Params,
        options: SpawnOptions,
    ) -> DurableResult<NewTask> {
        let params = params_value::<T>(&params)?;
        self.inner
            .defaults
            .new_task(&self.inner.defaults.queue, T::NAME, params, options)
    }

    /// The store's view of `spawn_by_name`: for adapters that spawn inside a caller's
    /// transaction. Refuses unregistered names and params that do not fit the task.
    pub fn prepare_spawn_by_name(
        &self,
        task_name: &str,
        params: Value,
        options: SpawnOptions,
    ) -> DurableResult<NewTask> {
        if !self.inner.registry.check_params(task_name, &params)? {
            return Err(DurableError::UnknownTask {
                name: task_name.to_owned(),
            });
        }
        self.inner
            .defaults
            .new_task(&self.inner.defaults.queue, task_name, params, options)
    }

    /// Checks an event for [`Durable::emit_event`] and returns `(queue, payload)`: for adapters
    /// that emit inside a caller's transaction.
    pub fn prepare_emit<T: Serialize + ?Sized>(
        &self,
        event_name: &str,
        payload: &T,
        queue: Option<&str>,
    ) -> DurableResult<(String, Value)> {
        let queue = self.resolve_queue(queue)?;
        policy::validate_user_name("event", event_name)
            .map_err(|r| DurableError::invalid("event name", r))?;
        let payload =
            serde_json::to_value(payload).map_err(|source| DurableError::Serialization {
                what: format!("payload of event `{event_name}`"),
                source,
            })?;
        self.inner
            .defaults
            .check_payload(&format!("payload of event `{event_name}`"), &payload)
            .map_err(|r| DurableError::invalid("event payload", r))?;
        Ok((queue, payload))
    }

    /// Emits an event in `queue` (default: the client's), waking every task awaiting it. Events
    /// are remembered and the first emit of a name wins: later emits change nothing and return
    /// `false`.
    pub async fn emit_event<T: Serialize + ?Sized>(
        &self,
        event_name: &str,
        payload: &T,
        queue: Option<&str>,
    ) -> DurableResult<bool> {
        let (queue, payload) = self.prepare_emit(event_name, payload, queue)?;
        Ok(self
            .inner
            .store
            .emit_event(&queue, event_name, payload)
            .await?)
    }

    /// Cancels a task of `queue` (default: the client's) and its subtasks. A running task stops
    /// at its next durable call. Returns `false` if the task had already ended.
    pub async fn cancel_task(&self, task_id: Uuid, queue: Option<&str>) -> DurableResult<bool> {
        let queue = self.resolve_queue(queue)?;
        Ok(self.inner.store.cancel_task(&queue, task_id).await?)
    }

    /// Makes a failed task of `queue` (default: the client's) run again as a new attempt. Its
    /// completed steps are not repeated.
    pub async fn retry_task(
        &self,
        task_id: Uuid,
        queue: Option<&str>,
    ) -> DurableResult<SpawnResult> {
        let queue = self.resolve_queue(queue)?;
        Ok(self.inner.store.retry_task(&queue, task_id).await?)
    }

    /// The state of a task: status, output once completed, last error. `None` if there is no
    /// such task.
    pub async fn get_task_result(&self, task_id: Uuid) -> DurableResult<Option<TaskPollResult>> {
        Ok(self.inner.store.task_result(task_id).await?)
    }

    /// Creates a queue (idempotent). Spawning into a queue also works without it.
    pub async fn create_queue(&self, queue: &str) -> DurableResult<()> {
        policy::validate_queue_name(queue).map_err(|r| DurableError::invalid("queue name", r))?;
        Ok(self.inner.store.ensure_queue(queue).await?)
    }

    /// Starts a worker that claims this client's registered tasks from its queue and runs them,
    /// until [`Worker::shutdown`] or until the `Worker` is dropped.
    pub async fn start_worker(&self, options: WorkerOptions) -> Worker {
        worker::start(self.worker_shared(), options)
    }

    /// Runs every task of the queue that can run now, in this call, until none is left (sleeping
    /// tasks whose time has not come stay asleep). Returns how many runs were executed. Useful in
    /// tests and scripts; a production deployment uses [`Durable::start_worker`].
    pub async fn work_until_idle(&self, options: WorkerOptions) -> DurableResult<usize> {
        worker::drain(self.worker_shared(), options).await
    }

    fn worker_shared(&self) -> worker::Shared {
        let store: Arc<dyn Store> = self.inner.store.clone();
        worker::Shared {
            store,
            defaults: Arc::clone(&self.inner.defaults),
            registry: Arc::new(self.inner.registry.snapshot()),
        }
    }

    pub(crate) fn resolve_queue(&self, queue: Option<&str>) -> DurableResult<String> {
        let queue = queue.unwrap_or(&self.inner.defaults.queue);
        policy::validate_queue_name(queue).map_err(|r| DurableError::invalid("queue name", r))?;
        Ok(queue.to_owned())
    }
}
