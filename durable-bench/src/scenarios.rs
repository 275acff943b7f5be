//! The scenarios that run in this process, on any backend: spawn rates, spawn-to-start latency,
//! step overhead and replay, a large checkpoint, and sleep and event wake-ups.

use std::time::{Duration, Instant};

use durable_core::{Durable, SpawnOptions, Store, TaskStatus, WorkerOptions};
use serde_json::json;

use crate::backends::{Maker, queue};
use crate::report::Measurement;
use crate::tasks::{Awaiter, Blob, Noop, Ping, Sleeper, Steps, StepsParams, wait_for};

/// How much each scenario does.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    pub(crate) spawn_single: usize,
    pub(crate) spawn_batch: usize,
    pub(crate) latency: usize,
    pub(crate) replays: usize,
    pub(crate) blobs: usize,
    pub(crate) wakes: usize,
    pub(crate) burn_down: usize,
    pub(crate) long_run: usize,
    pub(crate) memory_step_tasks: usize,
}

impl Sizes {
    pub(crate) fn full() -> Sizes {
        Sizes {
            spawn_single: 5_000,
            spawn_batch: 20_000,
            latency: 1_000,
            replays: 10,
            blobs: 5,
            wakes: 20,
            burn_down: 20_000,
            long_run: 1_000_000,
            memory_step_tasks: 100,
        }
    }

    pub(crate) fn quick() -> Sizes {
        Sizes {
            spawn_single: 500,
            spawn_batch: 2_000,
            latency: 100,
            replays: 3,
            blobs: 2,
            wakes: 5,
            burn_down: 2_000,
            long_run: 20_000,
            memory_step_tasks: 10,
        }
    }
}

/// The reference figures measured on the server, in one-row INSERT commits per second.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct References {
    pub(crate) insert_1: Option<f64>,
    pub(crate) insert_8: Option<f64>,
    pub(crate) insert_16: Option<f64>,
    pub(crate) insert_32: Option<f64>,
}

impl References {
    /// Milliseconds per one-row INSERT commit from one client.
    pub(crate) fn commit_ms(&self) -> Option<f64> {
        self.insert_1.filter(|r| *r > 0.0).map(|r| 1000.0 / r)
    }
}

/// How long to wait for one task at most.
const TASK_TIMEOUT: Duration = Duration::from_secs(30);
/// The size of the large checkpoint.
const BLOB_BYTES: usize = 1 << 20;
/// How long the sleeping task sleeps.
const NAP_MS: u64 = 100;
/// The poll interval of the poll-only latency measurement.
pub(crate) const POLL_ONLY_INTERVAL: Duration = Duration::from_millis(25);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `p`-th percentile (0.0-1.0) of `values`, which it sorts.
pub(crate) fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let index = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[index.min(values.len() - 1)]
}

/// The in-process scenarios of the selected `groups` on one backend.
pub(crate) async fn run_selected<M: Maker>(
    maker: &M,
    sizes: &Sizes,
    refs: &References,
    groups: &[String],
    out: &mut Vec<Measurement>,
) -> anyhow::Result<()> {
    let runs = |group: &str| groups.iter().any(|g| g == group);
    if runs("spawn") {
        spawn_rates(maker, sizes, refs, out).await?;
    }
    if runs("latency") {
        latency(maker, true, sizes.latency, out).await?;
        if maker.name() != "memory" {
            latency(maker, false, sizes.latency, out).await?;
        }
    }
    if runs("steps") {
        steps(maker, sizes.replays, refs, out).await?;
        blob(maker, sizes.blobs, out).await?;
    }
    if runs("wakeups") {
        sleep_wake(maker, sizes.wakes, out).await?;
        event_wake(maker, sizes.wakes, out).await?;
    }
    Ok(())
}

async fn spawn_rates<M: Maker>(
    maker: &M,
    sizes: &Sizes,
    refs: &References,
    out: &mut Vec<Measurement>,
) -> anyhow::Result<()> {
    let client = maker.client(&queue("spawn"), true).await?;
    // Warm the pool up.
    client.spawn::<Noop>(()).await?;
    let started = Instant::now();
    for _ in 0..sizes.spawn_single {
        client.spawn::<Noop>(()).await?;
    }
    let single = sizes.spawn_single as f64 / started.elapsed().as_secs_f64();
    out.push(
        Measurement::new("spawn_single", maker.name(), single, "spawns/s")
            .with_reference(refs.insert_1),
    );
    let started = Instant::now();
    let mut left = sizes.spawn_batch;
    while left > 0 {
        let n = left.min(1000);
        client
            .spawn_many::<Noop>(vec![(); n], SpawnOptions::default())
            .await?;
        left -= n;
    }
    let batch = sizes.spawn_batch as f64 / started.elapsed().as_secs_f64();
    out.push(
        Measurement::new("spawn_batch", maker.name(), batch, "spawns/s")
            .with_reference(refs.insert_1),
    );
    Ok(())
}

async fn worker<S: Store>(client: &Durable<S>, poll: Duration) -> durable_core::Worker {
    client
        .start_worker(WorkerOptions::default().concurrency(8).poll_interval(poll))
        .await
}

async fn latency<M: Maker>(
    maker: &M,
    listen: bool,
    samples: usize,
    out: &mut Vec<Measurement>,
) -> anyhow::Result<()> {
    let client = maker.client(&queue("latency"), listen).await?;
    client.register::<Ping>().await;
    // With LISTEN, a 10 s poll interval: only a notification explains a quick start.
    let poll = if listen {
        Duration::from_secs(10)
    } else {
        POLL_ONLY_INTERVAL
    };
    let worker = worker(&client, poll).await;
    let mut latencies = Vec::with_capacity(samples);
    let warm_up = 5;
    for i in 0..samples + warm_up {
        // An idle system: the previous run has finished and been recorded. Polling, a random
        // pause too, so that spawns do not fall at the same moment of every poll interval.
        let jitter = if listen {
            0
        } else {
            (uuid::Uuid::new_v4().as_u128() % POLL_ONLY_INTERVAL.as_millis()) as u64
        };
        tokio::time::sleep(Duration::from_millis(3 + jitter)).await;
        let spawned_at = Instant::now();
        let id = client.spawn::<Ping>(()).await?.task_id;
        let started = wait_for(id, TASK_TIMEOUT, |p| p.started).await?;
        if i >= warm_up {
            latencies.push(ms(started.saturating_duration_since(spawned_at)));
        }
    }
    worker.shutdown().await;
    let mode = if listen { "listen" } else { "poll" };
    out.push(Measurement::new(
        &format!("start_{mode}_p50"),
        maker.name(),
        percentile(&mut latencies, 0.50),
        "ms",
    ));
    out.push(Measurement::new(
        &format!("start_{mode}_p99"),
        maker.name(),
        percentile(&mut latencies, 0.99),
        "ms",
    ));
    Ok(())
}

async fn steps<M: Maker>(
    maker: &M,
    reps: usize,
    refs: &References,
    out: &mut Vec<Measurement>,
) -> anyhow::Result<()> {
    let client = maker.client(&queue("steps"), true).await?;
    client.register::<Steps>().await;
    let worker = worker(&client, Duration::from_secs(10)).await;
    let mut fresh = Vec::new();
    let mut means = Vec::new();
    let mut replays = Vec::new();
    for _ in 0..reps {
        let params = StepsParams {
            steps: 100,
            replay: true,
        };
        let id = client.spawn::<Steps>(params).await?.task_id;
        let (steps, total, replay) = wait_for(id, TASK_TIMEOUT, |p| {
            p.fresh_total
                .zip(p.replay_total)
                .map(|(total, replay)| (p.fresh_steps.clone(), total, replay))
        })
        .await?;
        fresh.extend(steps.into_iter().map(ms));
        means.push(ms(total) / 100.0);
        replays.push(ms(replay));
    }
    worker.shutdown().await;
    let commit = refs.commit_ms().filter(|_| maker.name() != "memory");
    out.push(
        Measurement::new(
            "step_fresh_p50",
            maker.name(),
            percentile(&mut fresh, 0.5),
            "ms",
        )
        .with_reference(commit),
    );
    out.push(
        Measurement::new(
            "step_fresh_mean",
            maker.name(),
            percentile(&mut means, 0.5),
            "ms",
        )
        .with_reference(commit),
    );
    out.push(Measurement::new(
        "replay_100_cached",
        maker.name(),
        percentile(&mut replays, 0.5),
        "ms",
    ));
    Ok(())
}

async fn blob<M: Maker>(maker: &M, reps: usize, out: &mut Vec<Measurement>) -> anyhow::Result<()> {
    let client = maker.client(&queue("blob"), true).await?;
    client.register::<Blob>().await;
    let worker = worker(&client, Duration::from_secs(10)).await;
    let mut took = Vec::new();
    for _ in 0..reps {
        let id = client.spawn::<Blob>(BLOB_BYTES).await?.task_id;
        took.push(ms(wait_for(id, TASK_TIMEOUT, |p| p.blob_step).await?));
    }
    worker.shutdown().await;
    out.push(Measurement::new(
        "checkpoint_1mb",
        maker.name(),
        percentile(&mut took, 0.5),
        "ms",
    ));
    Ok(())
}

async fn sleep_wake<M: Maker>(
    maker: &M,
    reps: usize,
    out: &mut Vec<Measurement>,
) -> anyhow::Result<()> {
    let client = maker.client(&queue("sleep"), true).await?;
    client.register::<Sleeper>().await;
    // A 10 s poll interval: the worker must wake for the due time by itself.
    let worker = worker(&client, Duration::from_secs(10)).await;
    let mut late = Vec::new();
    for _ in 0..reps {
        let id = client.spawn::<Sleeper>(NAP_MS).await?.task_id;
        let (slept, resumed) = wait_for(id, TASK_TIMEOUT, |p| p.slept_at.zip(p.resumed_at)).await?;
        let due = slept + Duration::from_millis(NAP_MS);
        late.push(ms(resumed.saturating_duration_since(due)));
    }
    worker.shutdown().await;
    let max = late.iter().copied().fold(0.0, f64::max);
    out.push(Measurement::new(
        "sleep_wake_p50",
        maker.name(),
        percentile(&mut late, 0.5),
        "ms",
    ));
    out.push(Measurement::new("sleep_wake_max", maker.name(), max, "ms"));
    Ok(())
}

async fn event_wake<M: Maker>(
    maker: &M,
    reps: usize,
    out: &mut Vec<Measurement>,
) -> anyhow::Result<()> {
    let client = maker.client(&queue("event"), true).await?;
    client.register::<Awaiter>().await;
    let worker = worker(&client, Duration::from_secs(10)).await;
    let mut late = Vec::new();
    for i in 0..reps {
        let event = format!("go-{i}-{}", uuid::Uuid::new_v4().simple());
        let id = client.spawn::<Awaiter>(event.clone()).await?.task_id;
        crate::server::poll_until(
            "the task awaits",
            Duration::from_millis(2),
            TASK_TIMEOUT,
            || async {
                Ok(client
                    .get_task_result(id)
                    .await?
                    .is_some_and(|r| r.status == TaskStatus::Sleeping))
            },
        )
        .await?;
        let emitted = Instant::now();
        client.emit_event(&event, &json!(i), None).await?;
        let resumed = wait_for(id, TASK_TIMEOUT, |p| p.resumed_at).await?;
        late.push(ms(resumed.saturating_duration_since(emitted)));
    }
    worker.shutdown().await;
    let max = late.iter().copied().fold(0.0, f64::max);
    out.push(Measurement::new(
        "event_wake_p50",
        maker.name(),
        percentile(&mut late, 0.5),
        "ms",
    ));
    out.push(Measurement::new("event_wake_max", maker.name(), max, "ms"));
    Ok(())
}

/// Steps per second on the in-memory store: tasks of 1,000 steps, run to completion by
/// `work_until_idle`.
pub(crate) async fn memory_steps(tasks: usize, out: &mut Vec<Measurement>) -> anyhow::Result<()> {
    let store = durable_testing::MemoryStore::new();
    let client = durable_core::DurableBuilder::new()
        .queue_name(queue("memsteps"))
        .build_with_store(store)
        .await?;
    client.register::<Steps>().await;
    let params = StepsParams {
        steps: 1000,
        replay: false,
    };
    client
        .spawn_many::<Steps>(vec![params; tasks], SpawnOptions::default())
        .await?;
    let started = Instant::now();
    let ran = client
        .work_until_idle(WorkerOptions::default().concurrency(8))
        .await?;
    let elapsed = started.elapsed();
    anyhow::ensure!(ran == tasks, "ran {ran} of {tasks} tasks");
    out.push(Measurement::new(
        "steps_per_second",
        "memory",
        (tasks * 1000) as f64 / elapsed.as_secs_f64(),
        "steps/s",
    ));
    Ok(())
}
