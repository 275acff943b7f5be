//! The worker: claims runs in batches, executes them concurrently, completes the runs that finish
//! together in one store call, recovers expired leases.
//!
//! A busy worker makes no store call per run beyond the run's own durable calls: it claims once
//! a quarter of its slots are free (or after a millisecond), does not claim again after a claim
//! that drained the queue until a wake-up, a due timer or the poll interval says there may be
//! work, and hands finished runs to [`Store::complete_runs`] in batches.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::Instrument;
use uuid::Uuid;

use crate::completer::Completer;
use crate::context::TaskContext;
use crate::defaults::ClientDefaults;
use crate::error::{ControlFlow, DurableError, DurableResult, StoreError, TaskError};
use crate::maintenance::{self, MaintenancePlan, RetentionPlan};
use crate::model::{FailureKind, TaskErrorInfo};
use crate::options::WorkerOptions;
use crate::policy;
use crate::registry::{ErasedFailure, Registry};
use crate::store::{ClaimBatch, ClaimRequest, ClaimedRun, RunRef, Store};
use crate::telemetry::{self, Stopwatch, TaskLabel};

/// What a worker shares with the client that started it.
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) defaults: Arc<ClientDefaults>,
    /// The tasks registered when the worker started.
    pub(crate) registry: Arc<Registry>,
}

impl Clone for Shared {
    fn clone(&self) -> Self {
        Shared {
            store: Arc::clone(&self.store),
            defaults: Arc::clone(&self.defaults),
            registry: Arc::clone(&self.registry),
        }
    }
}

/// A running worker. It claims the tasks its client had registered when it started.
///
/// [`Worker::shutdown`] stops claiming and waits for the tasks in flight;
/// [`Worker::shutdown_timeout`] waits at most a given time. Dropping a `Worker` stops it at once:
/// tasks in flight are abandoned and their leases expire, so other workers retry them.
#[derive(Debug)]
pub struct Worker {
    id: String,
    stop: watch::Sender<bool>,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    /// The worker's id, as recorded on the runs it claims.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Stops claiming and waits until every task in flight has finished or suspended.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(handle) = self.handle.take()
            && let Err(error) = handle.await
            && error.is_panic()
        {
            tracing::error!(worker = %self.id, "worker loop panicked during shutdown");
        }
    }

    /// Like [`Worker::shutdown`], but waits at most `timeout`; tasks still in flight then are
    /// abandoned (their leases expire and other workers retry them). Returns whether every task
    /// finished in time.
    pub async fn shutdown_timeout(mut self, timeout: Duration) -> bool {
        let _ = self.stop.send(true);
        let Some(mut handle) = self.handle.take() else {
            return true;
        };
        match tokio::time::timeout(timeout, &mut handle).await {
            Ok(_) => true,
            Err(_) => {
                handle.abort();
                false
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

/// `<host>-<pid>-<random>`: the machine's host name (what the system says, else `HOSTNAME` or
/// `COMPUTERNAME`), the process, and a suffix that tells workers of one process apart.
fn default_worker_id() -> String {
    let host = host_name().unwrap_or_else(|| "worker".to_owned());
    let suffix = Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &suffix[..8])
}

/// The host name, from the system where it says (Linux), else from the environment.
fn host_name() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .chain(
            ["HOSTNAME", "COMPUTERNAME"]
                .iter()
                .filter_map(|v| std::env::var(v).ok()),
        )
        .map(|name| name.trim().to_owned())
        .find(|name| !name.is_empty())
}

struct Plan {
    id: String,
    concurrency: usize,
    batch: usize,
    /// A busy worker claims once at least this many slots are free (or after `linger`), so
    /// that it claims in batches rather than one run per finished run.
    min_claim: usize,
    lease: Duration,
    poll: Duration,
    lease_check: Duration,
    maintenance: MaintenancePlan,
}

/// How long a busy worker with fewer than `min_claim` free slots waits for more before it
/// claims anyway.
const CLAIM_LINGER: Duration = Duration::from_millis(1);

/// A worker id as stored on the runs it claims: control characters (which PostgreSQL may refuse,
/// NUL above all) become `?`, and it is cut to [`policy::MAX_NAME_LEN`] bytes.
fn clean_worker_id(id: &str) -> String {
    let mut clean: String = id
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if clean.len() > policy::MAX_NAME_LEN {
        let mut end = policy::MAX_NAME_LEN;
        while !clean.is_char_boundary(end) {
            end -= 1;
        }
        clean.truncate(end);
    }
    if clean.is_empty() {
        return default_worker_id();
    }
    clean
}

fn plan(options: &WorkerOptions) -> Plan {
    let concurrency = options.concurrency.max(1);
    let batch = options
        .batch_size
        .unwrap_or(concurrency)
        .clamp(1, concurrency);
    Plan {
        id: options
            .worker_id
            .as_deref()
            .map(clean_worker_id)
            .unwrap_or_else(default_worker_id),
        concurrency,
        batch,
        min_claim: (batch / 4).max(1),
        lease: options
            .claim_timeout
            .clamp(Duration::from_millis(1), policy::MAX_DURATION),
        // Bounded, so that no deadline computed from them overflows.
        poll: options
            .poll_interval
            .clamp(Duration::from_millis(1), policy::MAX_DURATION),
        lease_check: options
            .lease_check_interval
            .clamp(Duration::from_millis(1), policy::MAX_DURATION),
        maintenance: MaintenancePlan {
            schedules: options
                .schedule_interval
                .map(|i| i.clamp(Duration::from_millis(1), policy::MAX_DURATION)),
            retention: options.retention.map(|older_than| RetentionPlan {
                older_than: older_than.min(policy::MAX_DURATION),
                interval: options
                    .retention_interval
                    .clamp(Duration::from_millis(1), policy::MAX_DURATION),
                batch_size: options.retention_batch_size.clamp(1, i32::MAX as usize),
            }),
            depth: telemetry::ENABLED.then_some(maintenance::DEPTH_INTERVAL),
            // Set by the run loop, which knows the registered tasks.
            served: None,
        },
    }
}

pub(crate) fn start(shared: Shared, options: WorkerOptions) -> Worker {
    let plan = plan(&options);
    let (stop, stop_rx) = watch::channel(false);
    let id = plan.id.clone();
    let span = tracing::info_span!("durable.worker", worker = %id, queue = %shared.defaults.queue);
    let handle = tokio::spawn(run_loop(shared, plan, stop_rx).instrument(span));
    Worker {
        id,
        stop,
        handle: Some(handle),
    }
}

fn claim_request(shared: &Shared, plan: &Plan, limit: usize) -> ClaimRequest {
    ClaimRequest {
        queue: shared.defaults.queue.clone(),
        worker_id: plan.id.clone(),
        task_names: shared.registry.names(),
        limit,
        lease: plan.lease,
    }
}

/// Claims up to `limit` runs, timing the claim.
async fn claim(shared: &Shared, plan: &Plan, limit: usize) -> Result<ClaimBatch, StoreError> {
    let stopwatch = Stopwatch::start();
    let claimed = shared.store.claim(claim_request(shared, plan, limit)).await;
    telemetry::record_claim_duration(&shared.defaults.queue, &stopwatch);
    claimed
}

async fn run_loop(shared: Shared, mut plan: Plan, mut stop: watch::Receiver<bool>) {
    let queue = shared.defaults.queue.clone();
    // Schedules and retention on a task of their own, stopped with the loop (or aborted with it).
    let mut maintenance_plan = std::mem::take(&mut plan.maintenance);
    maintenance_plan.served = (!shared.registry.is_empty()).then(|| shared.registry.names());
    let maintenance = AbortOnDrop(tokio::spawn(
        maintenance::run(
            Arc::clone(&shared.store),
            queue.clone(),
            maintenance_plan,
            stop.clone(),
        )
        .in_current_span(),
    ));
    let mut signal = shared.store.work_signal(&queue);
    let (completer, completer_task) = Completer::start(Arc::clone(&shared.store));
    let mut in_flight: JoinSet<RunEnd> = JoinSet::new();
    let mut next_lease_check = Instant::now();
    let mut failures: u32 = 0;
    // Whether a claim may find work: after a spawn signal, a poll interval, a due timer, or a
    // run that ended otherwise than by completing; not after a claim that found less than it
    // asked for. A busy worker thus makes no claim per finished run on a drained queue.
    let mut may_have_work = true;
    let mut next_poll = Instant::now();
    let mut linger_until: Option<Instant> = None;
    if shared.registry.is_empty() {
        tracing::warn!("worker started with no registered task; it will claim nothing");
    }
    loop {
        if *stop.borrow() {
            break;
        }
        while let Some(joined) = in_flight.try_join_next() {
            may_have_work |= claims_again(joined);
        }
        let now = Instant::now();
        if now >= next_lease_check {
            next_lease_check = now + plan.lease_check;
            match shared.store.expire_leases(&queue).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(recovered = n, "recovered tasks whose lease expired");
                    may_have_work = true;
                }
                Err(error) => tracing::warn!(%error, "lease recovery failed"),
            }
        }
        if now >= next_poll {
            may_have_work = true;
        }
        let free = plan.concurrency.saturating_sub(in_flight.len());
        if free > 0 && may_have_work && !shared.registry.is_empty() {
            let enough = free >= plan.min_claim
                || in_flight.is_empty()
                || linger_until.is_some_and(|until| now >= until);
            if enough {
                linger_until = None;
                // Marking the signal seen before claiming means a wake-up that arrives during
                // the claim makes the next wait return at once: no lost wake-up.
                signal.borrow_and_update();
                let limit = free.min(plan.batch);
                match claim(&shared, &plan, limit).await {
                    Ok(batch) => {
                        failures = 0;
                        may_have_work = batch.runs.len() == limit;
                        // Wake for a due timer without waiting out a whole poll interval
                        // (counted from the answer: never before the store's due time).
                        let wait = batch
                            .next_wake_at
                            .map(|at| (at - batch.now).to_std().unwrap_or_default())
                            .map_or(plan.poll, |wake| wake.min(plan.poll));
                        next_poll = Instant::now() + wait;
                        for run in batch.runs {
                            let shared = shared.clone();
                            let completer = completer.clone();
                            in_flight.spawn(execute(shared, completer, run, plan.lease));
                        }
                    }
                    Err(error) => {
                        failures = failures.saturating_add(1);
                        may_have_work = false;
                        // Back off on a failing store, up to 32 poll intervals.
                        next_poll = Instant::now() + plan.poll * 2u32.pow(failures.min(5));
                        tracing::warn!(%error, failures, "claim failed; backing off");
                    }
                }
                if may_have_work && in_flight.len() < plan.concurrency {
                    // There may be more work: claim again as soon as a slot is free.
                    continue;
                }
            } else if linger_until.is_none() {
                linger_until = Some(now + CLAIM_LINGER);
            }
        }
        let slots_full = in_flight.len() >= plan.concurrency;
        let linger = linger_until.filter(|_| may_have_work && !slots_full);
        tokio::select! {
            _ = stop.changed() => {}
            Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => {
                may_have_work |= claims_again(joined);
            }
            // A signal that arrives while every slot is busy stays unseen until a slot frees.
            Ok(()) = signal.changed(), if !slots_full && failures == 0 => may_have_work = true,
            _ = tokio::time::sleep_until(next_poll), if !slots_full && !may_have_work => {}
            _ = tokio::time::sleep_until(linger.unwrap_or(now)), if linger.is_some() => {}
            _ = tokio::time::sleep_until(next_lease_check) => {}
        }
    }
    // Drain: let the tasks in flight finish or suspend, and their completions be recorded.
    drop(maintenance);
    while in_flight.join_next().await.is_some() {}
    drop(completer);
    if let Err(error) = completer_task.await
        && error.is_panic()
    {
        tracing::error!("the completion task panicked");
    }
}

/// Whether a run that ended this way may have made work claimable that a claim would find
/// (a suspension, a retry, a cancellation...): anything but a recorded completion.
fn claims_again(joined: Result<RunEnd, tokio::task::JoinError>) -> bool {
    !matches!(joined, Ok(RunEnd::Completed))
}

pub(crate) async fn drain(shared: Shared, options: WorkerOptions) -> DurableResult<usize> {
    let plan = plan(&options);
    let queue = shared.defaults.queue.clone();
    let (completer, completer_task) = Completer::start(Arc::clone(&shared.store));
    let mut executed = 0;
    let result = loop {
        if let Err(error) = shared.store.expire_leases(&queue).await {
            break Err(error.into());
        }
        let limit = plan.batch;
        let runs = match claim(&shared, &plan, limit).await {
            Ok(batch) => batch.runs,
            Err(error) => break Err(error.into()),
        };
        if runs.is_empty() {
            break Ok(executed);
        }
        executed += runs.len();
        let mut batch = JoinSet::new();
        for run in runs {
            batch.spawn(execute(shared.clone(), completer.clone(), run, plan.lease));
        }
        let mut aborted = None;
        while let Some(joined) = batch.join_next().await {
            if let Err(error) = joined {
                aborted = Some(error);
            }
        }
        if let Some(error) = aborted {
            break Err(DurableError::config(
                "a task execution was aborted",
                Some(Box::new(error)),
            ));
        }
    };
    drop(completer);
    let _ = completer_task.await;
    result
}

/// Aborts the wrapped task when dropped, so abandoning a run also stops its code.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How a run ended, as far as the worker loop cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunEnd {
    /// The task completed and that was recorded.
    Completed,
    /// Anything else: suspended, failed, cancelled, refused...
    Other,
}

async fn execute(
    shared: Shared,
    completer: Completer,
    claimed: ClaimedRun,
    lease: Duration,
) -> RunEnd {
    let span = tracing::info_span!(
        "durable.task",
        task_id = %claimed.run.task_id,
        run_id = %claimed.run.run_id,
        attempt = claimed.attempt,
        task = %claimed.task_name,
        queue = %claimed.run.queue,
        error = tracing::field::Empty,
    );
    telemetry::adopt_trace_context(&span, &claimed.headers);
    execute_run(shared, completer, claimed, lease)
        .instrument(span)
        .await
}

async fn execute_run(
    shared: Shared,
    completer: Completer,
    claimed: ClaimedRun,
    lease: Duration,
) -> RunEnd {
    let run = claimed.run.clone();
    let store = Arc::clone(&shared.store);
    if let Some(reason) = policy::cancellation_due(
        &claimed.cancellation,
        claimed.created_at,
        claimed.first_started_at,
        claimed.now,
    ) {
        tracing::info!(?reason, "cancellation policy fired");
        if let Err(error) = store.cancel_task(&run.queue, run.task_id).await {
            tracing::warn!(%error, "could not cancel task");
        }
        return RunEnd::Other;
    }
    let Some(task) = shared.registry.get(&claimed.task_name) else {
        // Claims only ask for registered names, so this cannot happen; the lease expires and a
        // worker that knows the task takes it.
        tracing::error!("claimed a task this worker has not registered");
        return RunEnd::Other;
    };
    let strategy = claimed.retry_strategy.clone();
    let (attempt, max_attempts) = (claimed.attempt, claimed.max_attempts);
    let label = TaskLabel::of(&run.queue, &claimed.task_name);
    if claimed.first_started_at.is_none() {
        label.started();
    }
    let mut claimed = claimed;
    let params = std::mem::take(&mut claimed.params);
    let ctx = TaskContext::new(claimed, Arc::clone(&store), shared.defaults, lease);
    let lease_deadline = ctx.lease_watch();
    // The task's code runs in its own Tokio task; it stays inside this run's span.
    let mut user_code = AbortOnDrop(tokio::spawn(task.run(params, ctx).in_current_span()));
    let joined = tokio::select! {
        joined = &mut user_code.0 => joined,
        () = lease_expired(&lease_deadline) => {
            // Its writes would all be refused now: stop its code (dropping `user_code` aborts
            // it) and give the slot to other work. The task is retried from its checkpoints.
            tracing::warn!(
                "run abandoned: its lease expired while its code made no durable call"
            );
            return RunEnd::Other;
        }
    };
    drop(user_code);
    let mut end = RunEnd::Other;
    let result = match joined {
        Ok(Ok(output)) => {
            let recorded = completer.complete(run, output).await;
            if recorded.is_ok() {
                end = RunEnd::Completed;
                label.completed();
            }
            recorded
        }
        Ok(Err(ErasedFailure::Task(TaskError::Control(flow)))) => {
            match flow {
                ControlFlow::Suspend => tracing::debug!("run suspended"),
                ControlFlow::Cancelled => tracing::info!("run stopped: task cancelled"),
                ControlFlow::LeaseLost => tracing::warn!("run stopped: lease lost"),
            }
            Ok(())
        }
        Ok(Err(failure)) => {
            let (info, retryable) = match failure {
                ErasedFailure::Task(error) => {
                    tracing::warn!(error = %error, "attempt failed");
                    (error.to_info(), error.is_retryable())
                }
                ErasedFailure::InvalidParams(e) => (
                    TaskErrorInfo::new(
                        FailureKind::InvalidParams,
                        format!("params do not match the task's Params type: {e}"),
                    ),
                    false,
                ),
                ErasedFailure::InvalidOutput(e) => (
                    TaskErrorInfo::new(
                        FailureKind::InvalidOutput,
                        format!("the output could not be stored: {e}"),
                    ),
                    false,
                ),
            };
            let retry = policy::next_retry(&strategy, attempt, max_attempts, retryable);
            fail_run(store.as_ref(), &run, info, retry, &label).await
        }
        Err(join_error) if join_error.is_panic() => {
            let message = panic_message(join_error.into_panic());
            tracing::error!(panic = %message, "task code panicked");
            let info = TaskErrorInfo::new(FailureKind::Panic, format!("task panicked: {message}"));
            let retry = policy::next_retry(&strategy, attempt, max_attempts, true);
            fail_run(store.as_ref(), &run, info, retry, &label).await
        }
        Err(_) => Ok(()), // aborted: the worker is stopping; the lease will expire.
    };
    match result {
        Ok(()) => {}
        Err(StoreError::LeaseLost { .. }) => {
            tracing::warn!("result refused: the run lost its lease, another run owns the task")
        }
        Err(StoreError::Cancelled { .. }) => {
            tracing::info!("result refused: the task was cancelled")
        }
        Err(error) => {
            tracing::error!(%error, "could not record the run's result; its lease will expire and it will be retried")
        }
    }
    end
}

/// Records a failed attempt (on the run's span too), counted as retried or failed once the store
/// has taken it.
async fn fail_run(
    store: &dyn Store,
    run: &RunRef,
    info: TaskErrorInfo,
    retry: Option<Duration>,
    label: &TaskLabel,
) -> Result<(), StoreError> {
    telemetry::record_error(&tracing::Span::current(), &info.message);
    store.fail_run(run, info, retry).await?;
    if retry.is_some() {
        label.retried();
    } else {
        label.failed();
    }
    Ok(())
}

/// Returns once the local clock passes the deadline (which successful fenced calls move).
async fn lease_expired(deadline: &std::sync::Mutex<std::time::Instant>) {
    loop {
        let at = *deadline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if std::time::Instant::now() >= at {
            return;
        }
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
