//! Work a worker does besides running tasks: firing the schedules of its queue and deleting
//! finished tasks past their retention age. Both run on a task of their own, so neither ever
//! delays a claim, and both are safe with any number of workers (the store fences schedule
//! ticks and skips rows other workers hold).

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::cron::CronSchedule;
use crate::error::StoreError;
use crate::store::{PurgeOutcome, ScheduleAdvance, Store};
use crate::telemetry;

/// The most schedules one query of [`fire_due_schedules`] handles; it queries again while a
/// query comes back full, up to [`MAX_SCHEDULE_ROUNDS`] times.
const SCHEDULE_BATCH: usize = 100;
const MAX_SCHEDULE_ROUNDS: usize = 10;

/// What one pass over the due schedules of a queue did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ScheduleTick {
    /// Tasks spawned (one per schedule whose tick had come).
    pub fired: usize,
    /// New or changed schedules given their first tick.
    pub armed: usize,
    /// Store time of the pass.
    pub now: DateTime<Utc>,
    /// The earliest tick still to come, if any (as of the pass).
    pub next_due_at: Option<DateTime<Utc>>,
}

/// Fires every due schedule of `queue` once, and arms new or changed ones. Missed ticks (no
/// worker was running) collapse into one spawn; the next tick is then the first one after the
/// store's present time.
pub(crate) async fn fire_due_schedules(
    store: &dyn Store,
    queue: &str,
) -> Result<ScheduleTick, StoreError> {
    let mut tick = ScheduleTick::default();
    for _ in 0..MAX_SCHEDULE_ROUNDS {
        let due = store.due_schedules(queue, SCHEDULE_BATCH).await?;
        tick.now = due.now;
        tick.next_due_at = due.next_due_at;
        let full = due.schedules.len() >= SCHEDULE_BATCH;
        for record in due.schedules {
            let name = &record.spec.name;
            let cron = match CronSchedule::parse(&record.spec.cron) {
                Ok(cron) => cron,
                Err(error) => {
                    tracing::warn!(schedule = %name, %error, "schedule has an invalid cron expression; skipped");
                    continue;
                }
            };
            let from = record.next_run_at.map_or(due.now, |at| at.max(due.now));
            let next = cron.next_after(from);
            if next.is_none() {
                tracing::warn!(schedule = %name, cron = %record.spec.cron, "schedule has no tick left");
            }
            let fire = record.next_run_at.is_some();
            match store
                .advance_schedule(queue, name, record.next_run_at, next, fire)
                .await?
            {
                ScheduleAdvance::Fired(spawned) => {
                    tick.fired += 1;
                    tracing::debug!(schedule = %name, task_id = %spawned.task_id, "schedule fired");
                }
                ScheduleAdvance::Moved => tick.armed += usize::from(!fire),
                ScheduleAdvance::Stale => {}
            }
            if let Some(next) = next {
                tick.next_due_at = Some(tick.next_due_at.map_or(next, |at| at.min(next)));
            }
        }
        if !full {
            break;
        }
    }
    Ok(tick)
}

/// Deletes finished tasks of `queue` older than `older_than`, batch after batch, until a batch
/// comes back not full or `max_batches` batches ran.
pub(crate) async fn purge(
    store: &dyn Store,
    queue: &str,
    older_than: Duration,
    batch_size: usize,
    max_batches: usize,
) -> Result<PurgeOutcome, StoreError> {
    let mut total = PurgeOutcome::default();
    for _ in 0..max_batches {
        let batch = store.purge_finished(queue, older_than, batch_size).await?;
        total.tasks += batch.tasks;
        total.events += batch.events;
        total.more = batch.more;
        if !batch.more {
            break;
        }
        // Let other work on this runtime go between batches.
        tokio::task::yield_now().await;
    }
    Ok(total)
}

/// What the maintenance task of a worker does, from its options (`Default`: nothing).
#[derive(Default)]
pub(crate) struct MaintenancePlan {
    pub(crate) schedules: Option<Duration>,
    pub(crate) retention: Option<RetentionPlan>,
    /// How often to report the queue's depth (with the `telemetry` feature).
    pub(crate) depth: Option<Duration>,
    /// The task names the worker serves, to log waiting tasks of other names.
    pub(crate) served: Option<Vec<String>>,
}

/// How often a worker looks for waiting tasks whose names it does not serve.
const UNSERVED_INTERVAL: Duration = Duration::from_secs(60);

/// How many of the oldest due tasks that look examines.
const UNSERVED_SCAN: usize = 10_000;

/// Logs the waiting tasks of `queue` that no task registered with this worker can run.
async fn log_unserved(store: &dyn Store, queue: &str, served: &[String]) {
    match store.unserved_names(queue, served, UNSERVED_SCAN).await {
        Ok(names) => {
            for name in names {
                tracing::warn!(
                    task = %name.task_name,
                    waiting = name.waiting,
                    "tasks wait in this queue under a name that no task registered with this \
                     worker has; they wait, without using an attempt, until a worker that \
                     registers it runs"
                );
            }
        }
        Err(error) => tracing::debug!(%error, "looking for unserved tasks failed"),
    }
}

/// How often a worker reports its queue's depth when metrics are exported.
pub(crate) const DEPTH_INTERVAL: Duration = Duration::from_secs(10);

/// Counts the unfinished tasks of `queue` and reports them to the queue-depth gauge.
async fn report_depth(store: &dyn Store, queue: &str) {
    match store.queue_depth(queue).await {
        Ok(depth) => {
            telemetry::record_queue_depth(queue, "pending", depth.pending);
            telemetry::record_queue_depth(queue, "running", depth.running);
            telemetry::record_queue_depth(queue, "sleeping", depth.sleeping);
        }
        Err(error) => tracing::debug!(%error, "counting the queue's tasks failed"),
    }
}

pub(crate) struct RetentionPlan {
    pub(crate) older_than: Duration,
    pub(crate) interval: Duration,
    pub(crate) batch_size: usize,
}

/// The most batches one retention round deletes; the rest waits for the next round, so one
/// round never holds a connection for long.
const MAX_RETENTION_BATCHES: usize = 100;

/// Runs schedules and retention for `queue` until `stop` turns true (or the task is aborted).
pub(crate) async fn run(
    store: std::sync::Arc<dyn Store>,
    queue: String,
    plan: MaintenancePlan,
    mut stop: watch::Receiver<bool>,
) {
    let mut next_depth = plan.depth.map(|_| Instant::now());
    let mut next_unserved = plan
        .served
        .as_ref()
        .map(|_| Instant::now() + UNSERVED_INTERVAL);
    let mut next_schedules = plan.schedules.map(|_| Instant::now());
    let mut next_retention = plan.retention.as_ref().map(|r| Instant::now() + r.interval);
    loop {
        if *stop.borrow() {
            return;
        }
        let now = Instant::now();
        if let (Some(at), Some(interval)) = (next_schedules, plan.schedules)
            && now >= at
        {
            let wait = match fire_due_schedules(store.as_ref(), &queue).await {
                Ok(tick) => {
                    if tick.fired > 0 {
                        tracing::info!(fired = tick.fired, "fired due schedules");
                    }
                    // Wake for the next tick without waiting out a whole interval.
                    tick.next_due_at
                        .map(|at| (at - tick.now).to_std().unwrap_or_default())
                        .map_or(interval, |until| until.min(interval))
                }
                Err(error) => {
                    tracing::warn!(%error, "firing schedules failed");
                    interval
                }
            };
            next_schedules = Some(Instant::now() + wait);
        }
        if let (Some(at), Some(retention)) = (next_retention, &plan.retention)
            && now >= at
        {
            match purge(
                store.as_ref(),
                &queue,
                retention.older_than,
                retention.batch_size,
                MAX_RETENTION_BATCHES,
            )
            .await
            {
                Ok(outcome) if outcome.tasks > 0 || outcome.events > 0 => tracing::info!(
                    tasks = outcome.tasks,
                    events = outcome.events,
                    "deleted finished tasks past their retention age"
                ),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "retention failed"),
            }
            next_retention = Some(Instant::now() + retention.interval);
        }
        if let (Some(at), Some(interval)) = (next_depth, plan.depth)
            && now >= at
        {
            report_depth(store.as_ref(), &queue).await;
            next_depth = Some(Instant::now() + interval);
        }
        if let (Some(at), Some(served)) = (next_unserved, &plan.served)
            && now >= at
        {
            log_unserved(store.as_ref(), &queue, served).await;
            next_unserved = Some(Instant::now() + UNSERVED_INTERVAL);
        }
        let wake = [next_schedules, next_retention, next_depth, next_unserved]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(60));
        tokio::select! {
            changed = stop.changed() => if changed.is_err() {
                return;
            },
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}
