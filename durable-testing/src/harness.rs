//! [`TestHarness`]: unit-test your own tasks on a [`MemoryStore`] with a virtual clock.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use durable_core::{
    Durable, DurableBuilder, DurableResult, SpawnOptions, Task, TaskPollResult, TaskStatus,
    WorkerOptions,
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use uuid::Uuid;

use crate::memory::MemoryStore;

/// A client on a fresh [`MemoryStore`], with helpers to run tasks to a standstill, move time
/// and inspect what happened. Everything is deterministic: time moves only when you advance it.
///
/// See the [crate documentation](crate) for an example.
#[derive(Debug, Clone)]
pub struct TestHarness {
    client: Durable<MemoryStore>,
    store: MemoryStore,
    worker: WorkerOptions,
}

impl TestHarness {
    /// A harness on queue `default` with the client's default options.
    pub async fn new() -> DurableResult<Self> {
        TestHarness::with_builder(DurableBuilder::new()).await
    }

    /// A harness whose client is configured by `builder` (queue name, default retry strategy...).
    pub async fn with_builder(builder: DurableBuilder) -> DurableResult<Self> {
        let store = MemoryStore::new();
        let client = builder.build_with_store(store.clone()).await?;
        Ok(TestHarness {
            client,
            store,
            worker: WorkerOptions::default().concurrency(16),
        })
    }

    /// The worker options [`TestHarness::run_until_idle`] uses (default: concurrency 16).
    pub fn with_worker_options(mut self, options: WorkerOptions) -> Self {
        self.worker = options;
        self
    }

    /// The client.
    pub fn client(&self) -> &Durable<MemoryStore> {
        &self.client
    }

    /// The store.
    pub fn store(&self) -> &MemoryStore {
        &self.store
    }

    /// Registers task `T`.
    pub async fn register<T: Task>(&self) {
        self.client.register::<T>().await;
    }

    /// Spawns task `T` and returns its id.
    pub async fn spawn<T: Task>(&self, params: T::Params) -> DurableResult<Uuid> {
        Ok(self.client.spawn::<T>(params).await?.task_id)
    }

    /// Spawns task `T` with options and returns its id.
    pub async fn spawn_with_options<T: Task>(
        &self,
        params: T::Params,
        options: SpawnOptions,
    ) -> DurableResult<Uuid> {
        Ok(self
            .client
            .spawn_with_options::<T>(params, options)
            .await?
            .task_id)
    }

    /// Runs every task that can run at the current virtual time until none is left. Returns how
    /// many runs were executed.
    pub async fn run_until_idle(&self) -> DurableResult<usize> {
        self.client.work_until_idle(self.worker.clone()).await
    }

    /// Moves the virtual clock forward.
    pub fn advance(&self, by: Duration) {
        self.store.advance(by);
    }

    /// Moves the virtual clock forward, then runs until idle.
    pub async fn advance_and_run(&self, by: Duration) -> DurableResult<usize> {
        self.advance(by);
        self.run_until_idle().await
    }

    /// Emits an event on the harness's queue.
    pub async fn emit<T: Serialize + ?Sized>(
        &self,
        name: &str,
        payload: &T,
    ) -> DurableResult<bool> {
        self.client.emit_event(name, payload, None).await
    }

    /// The task's status, or `None` if there is no such task.
    pub fn status(&self, task_id: Uuid) -> Option<TaskStatus> {
        self.store.task(task_id).map(|task| task.status)
    }

    /// The task's state as the client reports it.
    pub async fn result(&self, task_id: Uuid) -> DurableResult<Option<TaskPollResult>> {
        self.client.get_task_result(task_id).await
    }

    /// The task's output, or an error saying what state it is in instead.
    pub fn output<T: DeserializeOwned>(&self, task_id: Uuid) -> anyhow::Result<T> {
        let task = self
            .store
            .task(task_id)
            .ok_or_else(|| anyhow!("no task {task_id}"))?;
        match (task.status, task.output) {
            (TaskStatus::Completed, Some(output)) => serde_json::from_value(output)
                .with_context(|| format!("output of task {task_id} has another type")),
            (status, _) => Err(anyhow!(
                "task {task_id} is {status:?}, not completed (last error: {:?})",
                task.last_error
            )),
        }
    }

    /// The task's current attempt number.
    pub fn attempts(&self, task_id: Uuid) -> Option<u32> {
        self.store.task(task_id).map(|task| task.attempt)
    }

    /// The task's checkpoints, by name.
    pub fn checkpoints(&self, task_id: Uuid) -> HashMap<String, Value> {
        self.store
            .task(task_id)
            .map(|task| task.checkpoints)
            .unwrap_or_default()
    }
}
