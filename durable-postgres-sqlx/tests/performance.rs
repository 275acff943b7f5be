//! Measured figures on a real PostgreSQL: spawn-to-start latency on an idle worker (NOTIFY) and
//! throughput of 4 workers x concurrency 8, each step body running exactly once. Run with
//! `--nocapture` to see the figures. The two tests take turns so they do not skew each other.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use durable_core::{Task, TaskContext, TaskResult, WorkerOptions, async_trait};
use tokio::sync::Notify;
use uuid::Uuid;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

static STARTS: LazyLock<Mutex<HashMap<Uuid, Instant>>> = LazyLock::new(Mutex::default);
static STARTED: LazyLock<Notify> = LazyLock::new(Notify::new);

struct Ping;

#[async_trait]
impl Task for Ping {
    const NAME: &'static str = "ping";
    type Params = ();
    type Output = ();

    async fn run(_: (), ctx: TaskContext) -> TaskResult<()> {
        STARTS.lock().unwrap().insert(ctx.task_id, Instant::now());
        STARTED.notify_waiters();
        Ok(())
    }
}

static STEP_RUNS: LazyLock<Mutex<HashMap<(Uuid, &'static str), usize>>> =
    LazyLock::new(Mutex::default);

struct TwoSteps;

#[async_trait]
impl Task for TwoSteps {
    const NAME: &'static str = "two-steps";
    type Params = u32;
    type Output = u32;

    async fn run(n: u32, ctx: TaskContext) -> TaskResult<u32> {
        let id = ctx.task_id;
        let count = |step: &'static str| {
            *STEP_RUNS.lock().unwrap().entry((id, step)).or_default() += 1;
        };
        let a: u32 = ctx
            .step("first", || async {
                count("first");
                Ok(n + 1)
            })
            .await?;
        let b: u32 = ctx
            .step("second", || async {
                count("second");
                Ok(a * 2)
            })
            .await?;
        Ok(b)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_to_start_latency_on_an_idle_worker() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let db = common::database().await;
    let client = common::client(&db, "latency").await;
    client.register::<Ping>().await;
    // A 10 s poll interval: only NOTIFY can explain a start within milliseconds.
    let worker = client
        .start_worker(WorkerOptions::default().poll_interval(Duration::from_secs(10)))
        .await;
    let mut latencies = Vec::with_capacity(200);
    for _ in 0..201 {
        // Let the worker finish its previous run and go back to waiting.
        tokio::time::sleep(Duration::from_millis(15)).await;
        let spawned_at = Instant::now();
        let id = client.spawn::<Ping>(()).await.unwrap().task_id;
        let started_at = loop {
            let notified = STARTED.notified();
            if let Some(at) = STARTS.lock().unwrap().get(&id) {
                break *at;
            }
            tokio::time::timeout(Duration::from_secs(5), notified)
                .await
                .unwrap_or_else(|_| panic!("task {id} did not start within 5 s"));
        };
        latencies.push(started_at - spawned_at);
    }
    worker.shutdown().await;
    latencies.remove(0); // the first one warms up the connections
    latencies.sort();
    let (p50, p99, max) = (
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1],
    );
    println!(
        "spawn-to-start latency over {} tasks on an idle worker (poll interval 10 s): \
         p50 {p50:?}, p99 {p99:?}, max {max:?}",
        latencies.len()
    );
    assert!(
        p99 < Duration::from_secs(1),
        "p99 {p99:?}: wake-ups are not working"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_run_a_thousand_tasks_each_step_once() {
    let _turn = ONE_AT_A_TIME.lock().await;
    const TASKS: u32 = 1000;
    let db = common::database().await;
    // Four clients, as four worker processes would have: four pools, four listeners.
    let mut clients = Vec::new();
    for _ in 0..4 {
        let client = common::client(&db, "throughput").await;
        client.register::<TwoSteps>().await;
        clients.push(client);
    }
    let spawn_started = Instant::now();
    let mut ids = Vec::with_capacity(TASKS as usize);
    for n in 0..TASKS {
        ids.push(clients[0].spawn::<TwoSteps>(n).await.unwrap().task_id);
    }
    let spawn_elapsed = spawn_started.elapsed();

    let started = Instant::now();
    let mut workers = Vec::new();
    for client in &clients {
        workers.push(
            client
                .start_worker(
                    WorkerOptions::default()
                        .concurrency(8)
                        .poll_interval(Duration::from_millis(250)),
                )
                .await,
        );
    }
    common::eventually("every task completes", Duration::from_secs(120), || async {
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM durable.tasks WHERE state = 'completed'")
                .fetch_one(clients[0].pool())
                .await
                .unwrap();
        done == i64::from(TASKS)
    })
    .await;
    let elapsed = started.elapsed();
    for worker in workers {
        worker.shutdown().await;
    }
    {
        let runs = STEP_RUNS.lock().unwrap();
        for id in &ids {
            for step in ["first", "second"] {
                assert_eq!(runs.get(&(*id, step)), Some(&1), "step {step} of task {id}");
            }
        }
    }
    let attempts: i32 = sqlx::query_scalar("SELECT max(attempt) FROM durable.tasks")
        .fetch_one(clients[0].pool())
        .await
        .unwrap();
    assert_eq!(attempts, 1, "no task needed a second attempt");
    println!(
        "spawned {TASKS} tasks one by one in {spawn_elapsed:?} ({:.0} spawns/s); \
         4 workers x concurrency 8 ran them (2 steps each) in {elapsed:?}: {:.0} tasks/s",
        f64::from(TASKS) / spawn_elapsed.as_secs_f64(),
        f64::from(TASKS) / elapsed.as_secs_f64()
    );
}
