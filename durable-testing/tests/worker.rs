//! The worker loop on the in-memory store: draining speed, shutdown and drop.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::Duration;

use durable_core::{
    Durable, DurableBuilder, Task, TaskContext, TaskResult, TaskStatus, WorkerOptions, async_trait,
};
use durable_testing::MemoryStore;
use tokio::sync::Semaphore;

struct Noop;

#[async_trait]
impl Task for Noop {
    const NAME: &'static str = "noop";
    type Params = u32;
    type Output = u32;

    async fn run(n: u32, _ctx: TaskContext) -> TaskResult<u32> {
        Ok(n)
    }
}

/// Gates that block a `Gated` task until its test adds a permit; one per test, since tests run
/// in parallel.
static GATES: [Semaphore; 2] = [Semaphore::const_new(0), Semaphore::const_new(0)];

struct Gated;

#[async_trait]
impl Task for Gated {
    const NAME: &'static str = "gated";
    type Params = usize;
    type Output = ();

    async fn run(gate: usize, ctx: TaskContext) -> TaskResult<()> {
        ctx.step("before", || async { Ok(()) }).await?;
        GATES[gate]
            .acquire()
            .await
            .map_err(anyhow::Error::from)?
            .forget();
        Ok(())
    }
}

async fn client(queue: &str) -> Durable<MemoryStore> {
    let client = DurableBuilder::new()
        .queue_name(queue)
        .build_with_store(MemoryStore::new())
        .await
        .unwrap();
    client.register::<Noop>().await;
    client.register::<Gated>().await;
    client
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn status(client: &Durable<MemoryStore>, id: uuid::Uuid) -> TaskStatus {
    client.get_task_result(id).await.unwrap().unwrap().status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_found_work_is_followed_at_once_by_another() {
    // With a 1 h poll interval, a worker that slept a poll interval after finding work would
    // finish one task per hour. Concurrency 1 and batch 1 make every task its own claim.
    let client = client("drain").await;
    let mut ids = Vec::new();
    for n in 0..300 {
        ids.push(client.spawn::<Noop>(n).await.unwrap().task_id);
    }
    let worker = client
        .start_worker(WorkerOptions::default().poll_interval(Duration::from_secs(3600)))
        .await;
    let last = *ids.last().unwrap();
    wait_for("all 300 tasks complete", async || {
        status(&client, last).await == TaskStatus::Completed
    })
    .await;
    worker.shutdown().await;
    for id in ids {
        assert_eq!(status(&client, id).await, TaskStatus::Completed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawn_wakes_an_idle_worker_without_waiting_for_a_poll() {
    let client = client("wake").await;
    let worker = client
        .start_worker(WorkerOptions::default().poll_interval(Duration::from_secs(3600)))
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await; // the worker is idle, waiting
    let id = client.spawn::<Noop>(1).await.unwrap().task_id;
    wait_for("the task completes", async || {
        status(&client, id).await == TaskStatus::Completed
    })
    .await;
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_tasks_in_flight() {
    let client = client("shutdown").await;
    let id = client.spawn::<Gated>(0).await.unwrap().task_id;
    let worker = client.start_worker(WorkerOptions::default()).await;
    wait_for("the task runs", async || {
        status(&client, id).await == TaskStatus::Running
    })
    .await;
    let shutdown = tokio::spawn(worker.shutdown());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !shutdown.is_finished(),
        "shutdown waits for the task in flight"
    );
    GATES[0].add_permits(1);
    shutdown.await.unwrap();
    assert_eq!(status(&client, id).await, TaskStatus::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_shutdown_gives_up_and_dropping_a_worker_stops_it() {
    let client = client("bounded").await;
    let stuck = client.spawn::<Gated>(1).await.unwrap().task_id;
    let worker = client.start_worker(WorkerOptions::default()).await;
    wait_for("the task runs", async || {
        status(&client, stuck).await == TaskStatus::Running
    })
    .await;
    let finished = worker.shutdown_timeout(Duration::from_millis(50)).await;
    assert!(!finished, "the gated task could not finish in time");
    assert_eq!(
        status(&client, stuck).await,
        TaskStatus::Running,
        "abandoned: its lease will expire and another worker retries it"
    );

    let dropped = client.start_worker(WorkerOptions::default()).await;
    drop(dropped);
    let id = client.spawn::<Noop>(7).await.unwrap().task_id;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        status(&client, id).await,
        TaskStatus::Pending,
        "a dropped worker claims nothing"
    );
}

#[test]
fn client_and_worker_options_are_clone() {
    fn assert_clone<T: Clone>() {}
    assert_clone::<Durable<MemoryStore>>();
    assert_clone::<WorkerOptions>();
}
