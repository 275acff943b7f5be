//! Measured figures on a real PostgreSQL, the same benchmark as the sqlx adapter's
//! `tests/performance.rs` so that the figures compare: spawn-to-start latency on an idle worker
//! (NOTIFY) and throughput of 4 workers x concurrency 8, each step body running exactly once.
//! Run with `--nocapture` to see the figures. The two tests take turns.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use durable_core::{Task, TaskContext, TaskResult, WorkerOptions, async_trait};
use tokio::sync::mpsc;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Where started pings report their number and start time.
static PINGS: Mutex<Option<mpsc::UnboundedSender<(u32, Instant)>>> = Mutex::new(None);

struct Ping;

#[async_trait]
impl Task for Ping {
    const NAME: &'static str = "ping";
    type Params = u32;
    type Output = ();

    async fn run(n: u32, _ctx: TaskContext) -> TaskResult<()> {
        if let Some(sender) = PINGS.lock().unwrap().as_ref() {
            let _ = sender.send((n, Instant::now()));
        }
        Ok(())
    }
}

/// Step bodies run, by (task number, step).
static STEP_RUNS: Mutex<Option<HashMap<(u32, &'static str), usize>>> = Mutex::new(None);
static DONE: AtomicUsize = AtomicUsize::new(0);
static MAX_ATTEMPT: AtomicU32 = AtomicU32::new(0);

struct TwoSteps;

#[async_trait]
impl Task for TwoSteps {
    const NAME: &'static str = "two-steps";
    type Params = u32;
    type Output = u32;

    async fn run(n: u32, ctx: TaskContext) -> TaskResult<u32> {
        MAX_ATTEMPT.fetch_max(ctx.attempt(), Ordering::SeqCst);
        let count = |step: &'static str| {
            let mut runs = STEP_RUNS.lock().unwrap();
            *runs.get_or_insert_default().entry((n, step)).or_default() += 1;
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
        DONE.fetch_add(1, Ordering::SeqCst);
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
    let (tx, mut started) = mpsc::unbounded_channel();
    *PINGS.lock().unwrap() = Some(tx);
    // A 10 s poll interval: only NOTIFY can explain a start within milliseconds.
    let worker = client
        .start_worker(WorkerOptions::default().poll_interval(Duration::from_secs(10)))
        .await;
    let mut latencies = Vec::with_capacity(201);
    for n in 0..201 {
        // Let the worker finish its previous run and go back to waiting.
        tokio::time::sleep(Duration::from_millis(15)).await;
        let spawned_at = Instant::now();
        client.spawn::<Ping>(n).await.unwrap();
        let (got, started_at) = tokio::time::timeout(Duration::from_secs(5), started.recv())
            .await
            .unwrap_or_else(|_| panic!("ping {n} did not start within 5 s"))
            .unwrap();
        assert_eq!(got, n);
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
        "[native] spawn-to-start latency over {} tasks on an idle worker (poll interval 10 s): \
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
    const TASKS: u32 = 1000;
    let _turn = ONE_AT_A_TIME.lock().await;
    let db = common::database().await;
    // Four clients, as four worker processes would have: four pools, four listeners.
    let mut clients = Vec::new();
    for _ in 0..4 {
        let client = common::client(&db, "throughput").await;
        client.register::<TwoSteps>().await;
        clients.push(client);
    }
    let spawn_started = Instant::now();
    for n in 0..TASKS {
        clients[0].spawn::<TwoSteps>(n).await.unwrap();
    }
    let spawn_elapsed = spawn_started.elapsed();

    let started = Instant::now();
    let mut workers = Vec::new();
    for client in &clients {
        let options = WorkerOptions::default()
            .concurrency(8)
            .poll_interval(Duration::from_millis(250));
        workers.push(client.start_worker(options).await);
    }
    while DONE.load(Ordering::SeqCst) < TASKS as usize {
        let done = DONE.load(Ordering::SeqCst);
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "only {done} tasks done"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    for worker in workers {
        worker.shutdown().await;
    }
    let runs = STEP_RUNS.lock().unwrap().take().unwrap_or_default();
    for n in 0..TASKS {
        for step in ["first", "second"] {
            assert_eq!(runs.get(&(n, step)), Some(&1), "step {step} of task {n}");
        }
    }
    assert_eq!(
        DONE.load(Ordering::SeqCst),
        TASKS as usize,
        "each task finished once"
    );
    assert_eq!(
        MAX_ATTEMPT.load(Ordering::SeqCst),
        1,
        "no task needed a second attempt"
    );
    println!(
        "[native] spawned {TASKS} tasks one by one in {spawn_elapsed:?} ({:.0} spawns/s); \
         4 workers x concurrency 8 ran them (2 steps each) in {elapsed:?}: {:.0} tasks/s",
        f64::from(TASKS) / spawn_elapsed.as_secs_f64(),
        f64::from(TASKS) / elapsed.as_secs_f64()
    );
}
