//! The worker: claims runs in batches, executes them concurrently, recovers expired leases.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::Instrument;
use uuid::Uuid;

use crate::client::{ClientDefaults, Registry};
use crate::context::TaskContext;
use crate::error::{ControlFlow, DurableError, DurableResult, StoreError, TaskError};
use crate::model::{FailureKind, TaskErrorInfo};
use crate::options::WorkerOptions;
use crate::policy;
use crate::store::{ClaimRequest, ClaimedRun, Store};
use crate::task::ErasedFailure;

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

fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".to_owned());
    let suffix = Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &suffix[..8])
}

struct Plan {
    id: String,
    concurrency: usize,
    batch: usize,
    lease: Duration,
    poll: Duration,
    lease_check: Duration,
}

fn plan(options: &WorkerOptions) -> Plan {
    let concurrency = options.concurrency.max(1);
    Plan {
        id: options.worker_id.clone().unwrap_or_else(default_worker_id),
        concurrency,
        batch: options
            .batch_size
            .unwrap_or(concurrency)
            .clamp(1, concurrency),
        lease: options
            .claim_timeout
            .clamp(Duration::from_millis(1), policy::MAX_DURATION),
        poll: options.poll_interval.max(Duration::from_millis(1)),
        lease_check: options.lease_check_interval.max(Duration::from_millis(1)),
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
    let mut task_names: Vec<String> = shared.registry.keys().map(|n| (*n).to_owned()).collect();
    task_names.sort();
    ClaimRequest {
        queue: shared.defaults.queue.clone(),
        worker_id: plan.id.clone(),
        task_names,
        limit,
        lease: plan.lease,
    }
}

async fn run_loop(shared: Shared, plan: Plan, mut stop: watch::Receiver<bool>) {
    let queue = shared.defaults.queue.clone();
    let mut signal = shared.store.work_signal(&queue);
    let mut in_flight = JoinSet::new();
    let mut next_lease_check = tokio::time::Instant::now();
    let mut failures: u32 = 0;
    if shared.registry.is_empty() {
        tracing::warn!("worker started with no registered task; it will claim nothing");
    }
    loop {
        if *stop.borrow() {
            break;
        }
        while in_flight.try_join_next().is_some() {}
        if tokio::time::Instant::now() >= next_lease_check {
            next_lease_check = tokio::time::Instant::now() + plan.lease_check;
            match shared.store.expire_leases(&queue).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(recovered = n, "recovered tasks whose lease expired"),
                Err(error) => tracing::warn!(%error, "lease recovery failed"),
            }
        }
        let free = plan.concurrency.saturating_sub(in_flight.len());
        let mut claimed_full_batch = false;
        let mut next_wake: Option<Duration> = None;
        if free > 0 && !shared.registry.is_empty() {
            // Marking the signal seen before claiming means a wake-up that arrives during the
            // claim makes the next wait return at once: no lost wake-up.
            signal.borrow_and_update();
            let limit = free.min(plan.batch);
            match shared
                .store
                .claim(claim_request(&shared, &plan, limit))
                .await
            {
                Ok(batch) => {
                    failures = 0;
                    claimed_full_batch = batch.runs.len() == limit;
                    next_wake = batch
                        .next_wake_at
                        .map(|at| (at - batch.now).to_std().unwrap_or_default());
                    for run in batch.runs {
                        let shared = shared.clone();
                        let lease = plan.lease;
                        in_flight.spawn(execute(shared, run, lease));
                    }
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(%error, failures, "claim failed; backing off");
                }
            }
        }
        if claimed_full_batch {
            // There may be more work: claim again as soon as a slot is free, without sleeping.
            if in_flight.len() < plan.concurrency {
                continue;
            }
        }
        let idle_wait = if failures > 0 {
            // Back off on a failing store, up to 32 poll intervals.
            plan.poll * 2u32.pow(failures.min(5))
        } else {
            // Wake for a due timer without waiting out a whole poll interval.
            next_wake.map_or(plan.poll, |wake| wake.min(plan.poll))
        };
        let slots_full = in_flight.len() >= plan.concurrency;
        tokio::select! {
            _ = stop.changed() => {}
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            _ = signal.changed(), if !slots_full && failures == 0 => {}
            _ = tokio::time::sleep(idle_wait), if !slots_full || failures > 0 => {}
            _ = tokio::time::sleep_until(next_lease_check) => {}
        }
    }
    // Drain: let the tasks in flight finish or suspend.
    while in_flight.join_next().await.is_some() {}
}

pub(crate) async fn drain(shared: Shared, options: WorkerOptions) -> DurableResult<usize> {
    let plan = plan(&options);
    let queue = shared.defaults.queue.clone();
    let mut executed = 0;
    loop {
        shared.store.expire_leases(&queue).await?;
        let limit = plan.batch;
        let runs = shared
            .store
            .claim(claim_request(&shared, &plan, limit))
            .await?
            .runs;
        if runs.is_empty() {
            return Ok(executed);
        }
        executed += runs.len();
        let mut batch = JoinSet::new();
        for run in runs {
            batch.spawn(execute(shared.clone(), run, plan.lease));
        }
        while let Some(joined) = batch.join_next().await {
            if let Err(error) = joined {
                return Err(DurableError::config(
                    "a task execution was aborted",
                    Some(Box::new(error)),
                ));
            }
        }
    }
}

/// Aborts the wrapped task when dropped, so abandoning a run also stops its code.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn execute(shared: Shared, claimed: ClaimedRun, lease: Duration) {
    let span = tracing::info_span!(
        "durable.task",
        task_id = %claimed.run.task_id,
        run_id = %claimed.run.run_id,
        attempt = claimed.attempt,
        task = %claimed.task_name,
        queue = %claimed.run.queue,
    );
    execute_run(shared, claimed, lease).instrument(span).await;
}

async fn execute_run(shared: Shared, claimed: ClaimedRun, lease: Duration) {
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
        return;
    }
    let Some(task) = shared.registry.get(claimed.task_name.as_str()).cloned() else {
        // Claims only ask for registered names, so this cannot happen; the lease expires and a
        // worker that knows the task takes it.
        tracing::error!("claimed a task this worker has not registered");
        return;
    };
    let strategy = claimed.retry_strategy.clone();
    let (attempt, max_attempts) = (claimed.attempt, claimed.max_attempts);
    let params = claimed.params.clone();
    let ctx = TaskContext::new(claimed, Arc::clone(&store), shared.defaults, lease);
    let user_code = AbortOnDrop(tokio::spawn(task.run(params, ctx)));
    let joined = (&mut { user_code }.0).await;
    let result = match joined {
        Ok(Ok(output)) => store.complete_run(&run, output).await,
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
                        format!("output could not be serialized: {e}"),
                    ),
                    false,
                ),
            };
            let retry = policy::next_retry(&strategy, attempt, max_attempts, retryable);
            store.fail_run(&run, info, retry).await
        }
        Err(join_error) if join_error.is_panic() => {
            let message = panic_message(join_error.into_panic());
            tracing::error!(panic = %message, "task code panicked");
            let info = TaskErrorInfo::new(FailureKind::Panic, format!("task panicked: {message}"));
            let retry = policy::next_retry(&strategy, attempt, max_attempts, true);
            store.fail_run(&run, info, retry).await
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
