//! The tasks the benchmarks run, and the probes through which they report their timings to
//! the measuring code in the same process.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use durable_core::{Task, TaskContext, TaskError, TaskResult, async_trait};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use uuid::Uuid;

/// What a task reported about itself.
#[derive(Debug, Default, Clone)]
pub(crate) struct Probe {
    /// When the task's code first started.
    pub(crate) started: Option<Instant>,
    /// Each fresh step of the first attempt, timed around `ctx.step`.
    pub(crate) fresh_steps: Vec<Duration>,
    /// The first attempt's steps in all.
    pub(crate) fresh_total: Option<Duration>,
    /// The second attempt, from its start to the end of its (cached) steps.
    pub(crate) replay_total: Option<Duration>,
    /// When the task called its durable sleep for the first time.
    pub(crate) slept_at: Option<Instant>,
    /// When the task ran again after its sleep or await.
    pub(crate) resumed_at: Option<Instant>,
    /// The step that checkpointed a large value.
    pub(crate) blob_step: Option<Duration>,
}

static PROBES: LazyLock<Mutex<HashMap<Uuid, Probe>>> = LazyLock::new(Mutex::default);
static CHANGED: LazyLock<Notify> = LazyLock::new(Notify::new);
static NOOP_RUNS: AtomicU64 = AtomicU64::new(0);

fn update(task_id: Uuid, f: impl FnOnce(&mut Probe)) {
    {
        let mut probes = PROBES.lock().unwrap_or_else(PoisonError::into_inner);
        f(probes.entry(task_id).or_default());
    }
    CHANGED.notify_waiters();
}

/// Waits (at most `limit`) until the probe of `task_id` gives `pick` something, and removes it.
pub(crate) async fn wait_for<T>(
    task_id: Uuid,
    limit: Duration,
    pick: impl Fn(&Probe) -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let mut notified = pin!(CHANGED.notified());
        notified.as_mut().enable();
        {
            let mut probes = PROBES.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(value) = probes.get(&task_id).and_then(&pick) {
                probes.remove(&task_id);
                return Ok(value);
            }
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Err(anyhow!("task {task_id} did not report within {:?}", limit));
        }
    }
}

/// How many no-op runs this process executed.
pub(crate) fn noop_runs() -> u64 {
    NOOP_RUNS.load(Ordering::Relaxed)
}

/// Does nothing: the burn-down's task.
pub(crate) struct Noop;

#[async_trait]
impl Task for Noop {
    const NAME: &'static str = "bench.noop";
    type Params = ();
    type Output = ();

    async fn run(_: (), _: TaskContext) -> TaskResult<()> {
        NOOP_RUNS.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Reports when it started: the spawn-to-start latency.
pub(crate) struct Ping;

#[async_trait]
impl Task for Ping {
    const NAME: &'static str = "bench.ping";
    type Params = ();
    type Output = ();

    async fn run(_: (), ctx: TaskContext) -> TaskResult<()> {
        let now = Instant::now();
        update(ctx.task_id, |probe| probe.started = Some(now));
        Ok(())
    }
}

/// Params of [`Steps`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StepsParams {
    /// How many steps.
    pub(crate) steps: u32,
    /// Fail the first attempt after its steps, so the second replays them from checkpoints.
    pub(crate) replay: bool,
}

/// Runs `steps` small steps (one checkpoint each), timing them; with `replay`, fails once after
/// them so that the next attempt replays every step from its checkpoint.
pub(crate) struct Steps;

#[async_trait]
impl Task for Steps {
    const NAME: &'static str = "bench.steps";
    type Params = StepsParams;
    type Output = u64;

    async fn run(params: StepsParams, ctx: TaskContext) -> TaskResult<u64> {
        let started = Instant::now();
        let mut durations = Vec::with_capacity(params.steps as usize);
        let mut sum = 0u64;
        for i in 0..params.steps {
            let before = Instant::now();
            let value: u64 = ctx.step("step", || async move { Ok(u64::from(i)) }).await?;
            durations.push(before.elapsed());
            sum += value;
        }
        let total = started.elapsed();
        if !params.replay {
            return Ok(sum);
        }
        if ctx.attempt() == 1 {
            update(ctx.task_id, |probe| {
                probe.fresh_steps = durations;
                probe.fresh_total = Some(total);
            });
            return Err(TaskError::from(anyhow!(
                "failing once so that the next attempt replays"
            )));
        }
        update(ctx.task_id, |probe| probe.replay_total = Some(total));
        Ok(sum)
    }
}

/// Checkpoints one large string of `bytes` bytes.
pub(crate) struct Blob;

#[async_trait]
impl Task for Blob {
    const NAME: &'static str = "bench.blob";
    type Params = usize;
    type Output = ();

    async fn run(bytes: usize, ctx: TaskContext) -> TaskResult<()> {
        let before = Instant::now();
        let blob: String = ctx
            .step("blob", || async move { Ok("x".repeat(bytes)) })
            .await?;
        let took = before.elapsed();
        drop(blob);
        update(ctx.task_id, |probe| probe.blob_step = Some(took));
        Ok(())
    }
}

/// Sleeps durably for the given milliseconds and reports when it ran again.
pub(crate) struct Sleeper;

#[async_trait]
impl Task for Sleeper {
    const NAME: &'static str = "bench.sleep";
    type Params = u64;
    type Output = ();

    async fn run(ms: u64, ctx: TaskContext) -> TaskResult<()> {
        let now = Instant::now();
        update(ctx.task_id, |probe| {
            probe.slept_at.get_or_insert(now);
        });
        ctx.sleep_for("nap", Duration::from_millis(ms)).await?;
        let now = Instant::now();
        update(ctx.task_id, |probe| probe.resumed_at = Some(now));
        Ok(())
    }
}

/// Awaits the named event and reports when it ran again.
pub(crate) struct Awaiter;

#[async_trait]
impl Task for Awaiter {
    const NAME: &'static str = "bench.await";
    type Params = String;
    type Output = ();

    async fn run(event: String, ctx: TaskContext) -> TaskResult<()> {
        let _: serde_json::Value = ctx.await_event(&event, None).await?;
        let now = Instant::now();
        update(ctx.task_id, |probe| probe.resumed_at = Some(now));
        Ok(())
    }
}
