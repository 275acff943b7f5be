//! A busy worker claims and completes in batches: far fewer store calls than tasks, and every
//! task completed once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use durable_core::store::{
    AwaitOutcome, ClaimBatch, ClaimRequest, DueSchedules, NewTask, PurgeOutcome, QueueDepth,
    RunCompletion, RunRef, ScheduleAdvance, ScheduleRecord, ScheduleSpec, SleepOutcome,
    UnservedName, WakeAt,
};
use durable_core::{
    DurableBuilder, SpawnOptions, SpawnResult, Store, StoreError, Task, TaskContext, TaskErrorInfo,
    TaskPollResult, TaskResult, TaskStatus, WorkerOptions, async_trait,
};
use durable_testing::MemoryStore;
use serde_json::Value;
use tokio::sync::watch;
use uuid::Uuid;

/// The memory store, counting the calls a worker makes.
#[derive(Clone, Default)]
struct Counting {
    inner: MemoryStore,
    claims: Arc<AtomicUsize>,
    single_completions: Arc<AtomicUsize>,
    batch_completions: Arc<AtomicUsize>,
}

#[async_trait]
impl Store for Counting {
    async fn ensure_queue(&self, queue: &str) -> Result<(), StoreError> {
        self.inner.ensure_queue(queue).await
    }
    async fn spawn(&self, task: NewTask) -> Result<SpawnResult, StoreError> {
        self.inner.spawn(task).await
    }
    async fn spawn_many(&self, tasks: Vec<NewTask>) -> Result<Vec<SpawnResult>, StoreError> {
        self.inner.spawn_many(tasks).await
    }
    async fn claim(&self, request: ClaimRequest) -> Result<ClaimBatch, StoreError> {
        self.claims.fetch_add(1, Ordering::Relaxed);
        self.inner.claim(request).await
    }
    async fn expire_leases(&self, queue: &str) -> Result<u64, StoreError> {
        self.inner.expire_leases(queue).await
    }
    async fn write_checkpoint(
        &self,
        run: &RunRef,
        name: &str,
        value: Value,
        lease: Duration,
    ) -> Result<(), StoreError> {
        self.inner.write_checkpoint(run, name, value, lease).await
    }
    async fn extend_lease(&self, run: &RunRef, lease: Duration) -> Result<(), StoreError> {
        self.inner.extend_lease(run, lease).await
    }
    async fn sleep(
        &self,
        run: &RunRef,
        name: &str,
        wake: WakeAt,
        lease: Duration,
    ) -> Result<SleepOutcome, StoreError> {
        self.inner.sleep(run, name, wake, lease).await
    }
    async fn await_event(
        &self,
        run: &RunRef,
        name: &str,
        event_name: &str,
        timeout: Option<Duration>,
        lease: Duration,
    ) -> Result<AwaitOutcome, StoreError> {
        self.inner
            .await_event(run, name, event_name, timeout, lease)
            .await
    }
    async fn emit_event(
        &self,
        queue: &str,
        name: &str,
        payload: Value,
    ) -> Result<bool, StoreError> {
        self.inner.emit_event(queue, name, payload).await
    }
    async fn complete_run(&self, run: &RunRef, output: Value) -> Result<(), StoreError> {
        self.single_completions.fetch_add(1, Ordering::Relaxed);
        self.inner.complete_run(run, output).await
    }
    async fn complete_runs(
        &self,
        runs: Vec<RunCompletion>,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        self.batch_completions.fetch_add(1, Ordering::Relaxed);
        self.inner.complete_runs(runs).await
    }
    async fn fail_run(
        &self,
        run: &RunRef,
        error: TaskErrorInfo,
        retry_after: Option<Duration>,
    ) -> Result<(), StoreError> {
        self.inner.fail_run(run, error, retry_after).await
    }
    async fn cancel_task(&self, queue: &str, task_id: Uuid) -> Result<bool, StoreError> {
        self.inner.cancel_task(queue, task_id).await
    }
    async fn retry_task(&self, queue: &str, task_id: Uuid) -> Result<SpawnResult, StoreError> {
        self.inner.retry_task(queue, task_id).await
    }
    async fn task_result(&self, task_id: Uuid) -> Result<Option<TaskPollResult>, StoreError> {
        self.inner.task_result(task_id).await
    }
    async fn list_tasks(
        &self,
        query: &durable_core::inspect::TaskQuery,
    ) -> Result<durable_core::inspect::TaskPage, StoreError> {
        self.inner.list_tasks(query).await
    }
    async fn inspect_task(
        &self,
        task_id: Uuid,
    ) -> Result<Option<durable_core::inspect::TaskDetail>, StoreError> {
        self.inner.inspect_task(task_id).await
    }
    fn work_signal(&self, queue: &str) -> watch::Receiver<u64> {
        self.inner.work_signal(queue)
    }
    async fn purge_finished(
        &self,
        queue: &str,
        older_than: Duration,
        limit: usize,
    ) -> Result<PurgeOutcome, StoreError> {
        self.inner.purge_finished(queue, older_than, limit).await
    }
    async fn queue_depth(&self, queue: &str) -> Result<QueueDepth, StoreError> {
        self.inner.queue_depth(queue).await
    }
    async fn unserved_names(
        &self,
        queue: &str,
        registered: &[String],
        scan: usize,
    ) -> Result<Vec<UnservedName>, StoreError> {
        self.inner.unserved_names(queue, registered, scan).await
    }
    async fn upsert_schedule(&self, spec: ScheduleSpec) -> Result<bool, StoreError> {
        self.inner.upsert_schedule(spec).await
    }
    async fn list_schedules(&self, queue: Option<&str>) -> Result<Vec<ScheduleRecord>, StoreError> {
        self.inner.list_schedules(queue).await
    }
    async fn delete_schedule(&self, queue: &str, name: &str) -> Result<bool, StoreError> {
        self.inner.delete_schedule(queue, name).await
    }
    async fn due_schedules(&self, queue: &str, limit: usize) -> Result<DueSchedules, StoreError> {
        self.inner.due_schedules(queue, limit).await
    }
    async fn advance_schedule(
        &self,
        queue: &str,
        name: &str,
        expected: Option<DateTime<Utc>>,
        next: Option<DateTime<Utc>>,
        fire: bool,
    ) -> Result<ScheduleAdvance, StoreError> {
        self.inner
            .advance_schedule(queue, name, expected, next, fire)
            .await
    }
    async fn watch_finish(
        &self,
        task_id: Uuid,
    ) -> Result<(watch::Receiver<u64>, Option<TaskStatus>), StoreError> {
        self.inner.watch_finish(task_id).await
    }
}

struct Noop;

#[async_trait]
impl Task for Noop {
    const NAME: &'static str = "noop";
    type Params = u32;
    type Output = u32;

    async fn run(n: u32, _: TaskContext) -> TaskResult<u32> {
        tokio::task::yield_now().await;
        Ok(n)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_worker_claims_and_completes_in_batches() {
    const TASKS: u32 = 2000;
    let store = Counting {
        inner: MemoryStore::with_system_clock(),
        ..Counting::default()
    };
    let client = DurableBuilder::new()
        .build_with_store(store.clone())
        .await
        .unwrap();
    client.register::<Noop>().await;
    let spawned = client
        .spawn_many::<Noop>((0..TASKS).collect(), SpawnOptions::default())
        .await
        .unwrap();
    assert_eq!(spawned.len(), TASKS as usize);
    let worker = client
        .start_worker(WorkerOptions::default().concurrency(64))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let done = store
            .inner
            .tasks()
            .iter()
            .all(|t| t.status == TaskStatus::Completed);
        if done {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "tasks did not finish"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    worker.shutdown().await;
    for (n, result) in spawned.iter().enumerate() {
        let poll = client
            .get_task_result(result.task_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(poll.output, Some(serde_json::json!(n)));
    }
    let claims = store.claims.load(Ordering::Relaxed);
    let batches = store.batch_completions.load(Ordering::Relaxed);
    let singles = store.single_completions.load(Ordering::Relaxed);
    eprintln!(
        "{TASKS} tasks: {claims} claims, {batches} completion batches, {singles} single completions"
    );
    assert_eq!(singles, 0, "completions go through complete_runs");
    assert!(
        batches < TASKS as usize / 4,
        "{batches} completion batches for {TASKS} tasks"
    );
    assert!(
        claims < TASKS as usize / 4,
        "{claims} claims for {TASKS} tasks"
    );
}
