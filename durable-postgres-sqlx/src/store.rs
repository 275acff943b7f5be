//! [`SqlxStore`]: the storage port on a `sqlx::PgPool`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use durable_core::store::{
    AwaitOutcome, ClaimBatch, ClaimRequest, DueSchedules, NewTask, PurgeOutcome, QueueDepth,
    RunCompletion, RunRef, ScheduleAdvance, ScheduleRecord, ScheduleSpec, SleepOutcome,
    UnservedName, WakeAt, schedule_task_key,
};
use durable_core::{
    SpawnResult, Store, StoreError, TaskErrorInfo, TaskPollResult, TaskStatus, policy,
};
use durable_postgres_sql::statements as sql;
use serde_json::Value;
use sqlx::postgres::{PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{Connection, PgPool};
use tokio::sync::watch;
use uuid::Uuid;

use crate::convert::{
    CompletionOutcome, completion_outcome, count, get, int4, micros, opt_json, opt_micros, to_json,
};
use crate::error::{Ctx, map_sqlx, retrying, timed_out, unexpected};
use crate::listener::Wakeups;
use crate::queries::{
    SpawnArgs, SpawnManyArgs, Statement, claimed_run, due_schedules, emit, schedule_advance,
    schedule_record, spawn_result, spawn_results,
};

/// The most calls one `expire_leases` makes (each recovers a bounded number of tasks).
const MAX_EXPIRE_CALLS: usize = 100;

/// The [`Store`] of `durable` on PostgreSQL through a [`sqlx::PgPool`].
///
/// Every operation is one call of a stored function of `durable-postgres-sql` (one round trip,
/// one atomic step, a statement prepared once per connection), on the database clock.
/// Cheap to clone; clones share the pool and the wake-up listener.
///
/// Wake-ups: unless built with [`SqlxStore::poll_only`], the first
/// [`work_signal`](Store::work_signal) starts a background task that `LISTEN`s on a connection
/// of its own (made with the pool's connect options, outside the pool) and wakes the workers of
/// a queue as soon as work is announced there. It reconnects with backoff when its connection
/// drops, and stops when the last clone of the store is dropped.
///
/// The schema must exist: see [`migrate`](crate::migrate). Most applications use
/// [`Durable::builder`](crate::Durable::builder), which migrates and builds the store.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use durable_postgres_sqlx::SqlxStore;
///
/// let pool = sqlx::PgPool::connect("postgres://localhost/myapp").await?;
/// durable_postgres_sqlx::migrate(&pool).await?;
/// let store = SqlxStore::new(pool);
/// let client = durable_core::DurableBuilder::new().build_with_store(store).await?;
/// # let _ = client;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SqlxStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    wakeups: Wakeups,
    /// See [`SqlxStore::set_call_timeout`], in milliseconds.
    /// Shared with the listener, which checks its connection at this interval when quiet.
    call_timeout_ms: Arc<AtomicU64>,
}

/// How long one call may wait for PostgreSQL's answer by default: see
/// [`SqlxStore::set_call_timeout`].
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

fn inner(pool: PgPool, wakeups: Wakeups) -> Arc<Inner> {
    Arc::new(Inner {
        pool,
        call_timeout_ms: wakeups.call_timeout_ms(),
        wakeups,
    })
}

impl SqlxStore {
    /// A store on `pool` that listens for wake-ups.
    pub fn new(pool: PgPool) -> Self {
        let wakeups = Wakeups::listening(&pool);
        SqlxStore {
            inner: inner(pool, wakeups),
        }
    }

    /// A store on `pool` without `LISTEN`, for connection poolers that break it (PgBouncer in
    /// transaction mode...): [`work_signal`](Store::work_signal) never changes and workers find
    /// work by polling every `WorkerOptions::poll_interval`.
    pub fn poll_only(pool: PgPool) -> Self {
        SqlxStore {
            inner: inner(pool, Wakeups::poll_only()),
        }
    }

    /// A listening store on a new pool of up to 10 connections to `url`, connected at once. It
    /// does not migrate: run [`migrate`](crate::migrate) or [`migrate_url`](crate::migrate_url)
    /// first. This is all a test needs to build the store on a fresh database, e.g. for the
    /// conformance suite of `durable-testing`.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), durable_core::StoreError> {
    /// let url = "postgres://localhost/durable_test";
    /// durable_postgres_sqlx::migrate_url(url).await?;
    /// let store = durable_postgres_sqlx::SqlxStore::connect(url).await?;
    /// # let _ = store;
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .connect(url)
            .await
            .map_err(|e| map_sqlx(e, Ctx::None))?;
        Ok(SqlxStore::new(pool))
    }

    /// The pool the store runs on.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Whether the store listens for wake-ups (`false`: poll-only).
    pub fn is_listening(&self) -> bool {
        self.inner.wakeups.is_listening()
    }

    /// How long one call may wait for PostgreSQL's answer (default [`DEFAULT_CALL_TIMEOUT`],
    /// for every clone of this store). A call that takes longer fails with
    /// [`StoreError::Backend`] and its connection is closed rather than returned to the pool:
    /// a connection whose peer vanished without a word (a network cut, a firewall that forgot
    /// the connection) would otherwise hold its caller, and a slot of the pool, for good. As
    /// with any backend error, the call may or may not have been applied.
    ///
    /// The wake-up listener's connection is checked with `SELECT 1` quiet for that long and made
    /// again if the answer takes longer, so wake-ups resume after such a cut instead of
    /// waiting for TCP to give up (workers poll meanwhile).
    pub fn set_call_timeout(&self, timeout: Duration) {
        let ms = u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.inner.call_timeout_ms.store(ms, Ordering::Relaxed);
    }

    /// See [`SqlxStore::set_call_timeout`].
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.inner.call_timeout_ms.load(Ordering::Relaxed))
    }
}

impl SqlxStore {
    /// Runs one statement on a connection of the pool and reads all its rows, retrying
    /// deadlocks and serialization failures.
    ///
    /// Reading to the end means the call returns once the statement's transaction has
    /// committed. After an error, the connection is waited on until the server has rolled the
    /// transaction back (PostgreSQL reports the error first): a caller's next call never finds
    /// rows still locked by this one.
    async fn rows<'q, F>(&self, ctx: Ctx<'_>, statement: F) -> Result<Vec<PgRow>, StoreError>
    where
        F: Fn() -> Statement<'q>,
    {
        let limit = self.call_timeout();
        retrying(|| async {
            // Acquiring may ping an idle connection: bounded too.
            let mut connection = tokio::time::timeout(limit, self.pool().acquire())
                .await
                .map_err(|_| timed_out(limit))?
                .map_err(|e| map_sqlx(e, ctx))?;
            match tokio::time::timeout(limit, statement().fetch_all(&mut *connection)).await {
                Ok(Ok(rows)) => Ok(rows),
                Ok(Err(error)) => {
                    match tokio::time::timeout(limit, connection.ping()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(ping)) => {
                            tracing::debug!(error = %ping, "connection unusable after an error")
                        }
                        Err(_) => drop(connection.detach()),
                    }
                    Err(map_sqlx(error, ctx))
                }
                Err(_) => {
                    // The connection is in an unknown state: close it, freeing its slot.
                    drop(connection.detach());
                    Err(timed_out(limit))
                }
            }
        })
        .await
    }

    /// [`SqlxStore::rows`] for a statement that returns exactly one row.
    async fn row<'q, F>(&self, ctx: Ctx<'_>, statement: F) -> Result<PgRow, StoreError>
    where
        F: Fn() -> Statement<'q>,
    {
        let mut rows = self.rows(ctx, statement).await?;
        if rows.is_empty() {
            return Err(unexpected("a durable function returned no row"));
        }
        Ok(rows.swap_remove(0))
    }
}

#[async_trait]
impl Store for SqlxStore {
    async fn ensure_queue(&self, queue: &str) -> Result<(), StoreError> {
        policy::validate_queue_name(queue).map_err(StoreError::invalid)?;
        self.rows(Ctx::None, || sqlx::query(sql::ENSURE_QUEUE).bind(queue))
            .await?;
        Ok(())
    }

    async fn spawn(&self, task: NewTask) -> Result<SpawnResult, StoreError> {
        let args = SpawnArgs::new(&task)?;
        let row = self.row(Ctx::None, || args.statement()).await?;
        spawn_result(&row)
    }

    async fn claim(&self, request: ClaimRequest) -> Result<ClaimBatch, StoreError> {
        policy::validate_queue_name(&request.queue).map_err(StoreError::invalid)?;
        let lease = micros("lease", request.lease)?;
        let limit = int4(request.limit as u64);
        let rows = self
            .rows(Ctx::None, || {
                sqlx::query(sql::CLAIM_RUNS)
                    .bind(&request.queue)
                    .bind(&request.worker_id)
                    .bind(&request.task_names)
                    .bind(limit)
                    .bind(lease)
            })
            .await?;
        // The runs, then one summary row without a task.
        let (summary, claimed) = rows
            .split_last()
            .ok_or_else(|| unexpected("claim_runs returned no summary row"))?;
        if get::<Option<Uuid>>(summary, "task_id")?.is_some() {
            return Err(unexpected("claim_runs did not end with its summary row"));
        }
        let now = get(summary, "store_now")?;
        let runs = claimed
            .iter()
            .map(|row| claimed_run(&request.queue, row, now))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ClaimBatch {
            runs,
            now,
            next_wake_at: get(summary, "next_wake_at")?,
        })
    }

    async fn expire_leases(&self, queue: &str) -> Result<u64, StoreError> {
        policy::validate_queue_name(queue).map_err(StoreError::invalid)?;
        let mut recovered = 0u64;
        for _ in 0..MAX_EXPIRE_CALLS {
            let row = self
                .row(Ctx::None, || sqlx::query(sql::EXPIRE_LEASES).bind(queue))
                .await?;
            let count: i64 = get(&row, "recovered")?;
            recovered += u64::try_from(count).unwrap_or(0);
            if !get::<bool>(&row, "more")? {
                break;
            }
        }
        Ok(recovered)
    }

    async fn write_checkpoint(
        &self,
        run: &RunRef,
        name: &str,
        value: Value,
        lease: Duration,
    ) -> Result<(), StoreError> {
        let lease = micros("lease", lease)?;
        self.rows(Ctx::Run(run), || {
            sqlx::query(sql::WRITE_CHECKPOINT)
                .bind(&run.queue)
                .bind(run.task_id)
                .bind(run.run_id)
                .bind(name)
                .bind(Json(&value))
                .bind(lease)
        })
        .await?;
        Ok(())
    }

    async fn extend_lease(&self, run: &RunRef, lease: Duration) -> Result<(), StoreError> {
        let lease = micros("lease", lease)?;
        self.rows(Ctx::Run(run), || {
            sqlx::query(sql::EXTEND_LEASE)
                .bind(&run.queue)
                .bind(run.task_id)
                .bind(run.run_id)
                .bind(lease)
        })
        .await?;
        Ok(())
    }

    async fn sleep(
        &self,
        run: &RunRef,
        name: &str,
        wake: WakeAt,
        lease: Duration,
    ) -> Result<SleepOutcome, StoreError> {
        let lease = micros("lease", lease)?;
        let (after, at) = match wake {
            WakeAt::After(duration) => (Some(micros("sleep", duration)?), None),
            WakeAt::At(at) => (None, Some(at)),
        };
        let row = self
            .row(Ctx::Run(run), || {
                sqlx::query(sql::SLEEP_RUN)
                    .bind(&run.queue)
                    .bind(run.task_id)
                    .bind(run.run_id)
                    .bind(name)
                    .bind(after)
                    .bind(at)
                    .bind(lease)
            })
            .await?;
        let outcome: String = get(&row, "outcome")?;
        match outcome.as_str() {
            "elapsed" => Ok(SleepOutcome::Elapsed),
            "suspended" => Ok(SleepOutcome::Suspended {
                wake_at: get(&row, "wake_at")?,
            }),
            other => Err(unexpected(format!("sleep_run returned outcome {other:?}"))),
        }
    }

    async fn await_event(
        &self,
        run: &RunRef,
        name: &str,
        event_name: &str,
        timeout: Option<Duration>,
        lease: Duration,
    ) -> Result<AwaitOutcome, StoreError> {
        let lease = micros("lease", lease)?;
        let timeout = opt_micros("event timeout", timeout)?;
        let row = self
            .row(Ctx::Run(run), || {
                sqlx::query(sql::AWAIT_EVENT)
                    .bind(&run.queue)
                    .bind(run.task_id)
                    .bind(run.run_id)
                    .bind(name)
                    .bind(event_name)
                    .bind(timeout)
                    .bind(lease)
            })
            .await?;
        let outcome: String = get(&row, "outcome")?;
        match outcome.as_str() {
            "received" => Ok(AwaitOutcome::Received(
                opt_json::<Value>(&row, "payload")?.unwrap_or(Value::Null),
            )),
            "timed_out" => Ok(AwaitOutcome::TimedOut),
            "suspended" => Ok(AwaitOutcome::Suspended),
            other => Err(unexpected(format!(
                "await_event returned outcome {other:?}"
            ))),
        }
    }

    async fn emit_event(
        &self,
        queue: &str,
        name: &str,
        payload: Value,
    ) -> Result<bool, StoreError> {
        policy::validate_queue_name(queue).map_err(StoreError::invalid)?;
        let row = self.row(Ctx::None, || emit(queue, name, &payload)).await?;
        get(&row, "first")
    }

    async fn complete_run(&self, run: &RunRef, output: Value) -> Result<(), StoreError> {
        self.rows(Ctx::Run(run), || {
            sqlx::query(sql::COMPLETE_RUN)
                .bind(&run.queue)
                .bind(run.task_id)
                .bind(run.run_id)
                .bind(Json(&output))
        })
        .await?;
        Ok(())
    }

    async fn fail_run(
        &self,
        run: &RunRef,
        error: TaskErrorInfo,
        retry_after: Option<Duration>,
    ) -> Result<(), StoreError> {
        let retry_after = opt_micros("retry delay", retry_after)?;
        let error = to_json("error", &error)?;
        self.rows(Ctx::Run(run), || {
            sqlx::query(sql::FAIL_RUN)
                .bind(&run.queue)
                .bind(run.task_id)
                .bind(run.run_id)
                .bind(Json(&error))
                .bind(retry_after)
        })
        .await?;
        Ok(())
    }

    async fn cancel_task(&self, queue: &str, task_id: Uuid) -> Result<bool, StoreError> {
        let row = self
            .row(Ctx::Task { queue, task_id }, || {
                sqlx::query(sql::CANCEL_TASK).bind(queue).bind(task_id)
            })
            .await?;
        get(&row, "cancelled")
    }

    async fn retry_task(&self, queue: &str, task_id: Uuid) -> Result<SpawnResult, StoreError> {
        let row = self
            .row(Ctx::Task { queue, task_id }, || {
                sqlx::query(sql::RETRY_TASK).bind(queue).bind(task_id)
            })
            .await?;
        Ok(SpawnResult {
            task_id: get(&row, "task_id")?,
            run_id: get(&row, "run_id")?,
            attempt: count(&row, "attempt")?,
            created: false,
        })
    }

    async fn task_result(&self, task_id: Uuid) -> Result<Option<TaskPollResult>, StoreError> {
        let rows = self
            .rows(Ctx::None, || sqlx::query(sql::TASK_RESULT).bind(task_id))
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let state: String = get(row, "state")?;
        let status = TaskStatus::parse(&state)
            .ok_or_else(|| unexpected(format!("task {task_id} has unknown state {state:?}")))?;
        Ok(Some(TaskPollResult {
            task_id,
            status,
            output: opt_json(row, "output")?,
            error: opt_json::<TaskErrorInfo>(row, "last_error")?,
        }))
    }

    fn work_signal(&self, queue: &str) -> watch::Receiver<u64> {
        self.inner.wakeups.signal(queue)
    }

    async fn purge_finished(
        &self,
        queue: &str,
        older_than: Duration,
        limit: usize,
    ) -> Result<PurgeOutcome, StoreError> {
        policy::validate_queue_name(queue).map_err(StoreError::invalid)?;
        let age = micros("retention age", older_than)?;
        let limit = int4(limit as u64);
        let row = self
            .row(Ctx::None, || {
                sqlx::query(sql::PURGE_FINISHED)
                    .bind(queue)
                    .bind(age)
                    .bind(limit)
            })
            .await?;
        Ok(PurgeOutcome {
            tasks: u64::try_from(get::<i64>(&row, "tasks")?).unwrap_or(0),
            events: u64::try_from(get::<i64>(&row, "events")?).unwrap_or(0),
            more: get(&row, "more")?,
        })
    }

    async fn queue_depth(&self, queue: &str) -> Result<QueueDepth, StoreError> {
        policy::validate_queue_name(queue).map_err(StoreError::invalid)?;
        let row = self
            .row(Ctx::None, || sqlx::query(sql::QUEUE_DEPTH).bind(queue))
            .await?;
        let count = |column: &str| -> Result<u64, StoreError> {
            Ok(u64::try_from(get::<i64>(&row, column)?).unwrap_or(0))
        };
        Ok(QueueDepth {
            pending: count("pending")?,
            running: count("running")?,
            sleeping: count("sleeping")?,
        })
    }

    async fn unserved_names(
        &self,
        queue: &str,
        registered: &[String],
        scan: usize,
    ) -> Result<Vec<UnservedName>, StoreError> {
        policy::validate_queue_name(queue).map_err(StoreError::invalid)?;
        let scan = int4(scan as u64);
        let rows = self
            .rows(Ctx::None, || {
                sqlx::query(sql::UNSERVED_NAMES)
                    .bind(queue)
                    .bind(registered)
                    .bind(scan)
            })
            .await?;
        rows.iter()
            .map(|row| {
                Ok(UnservedName {
                    task_name: get(row, "task_name")?,
                    waiting: u64::try_from(get::<i64>(row, "waiting")?).unwrap_or(0),
                })
            })
            .collect()
    }

    async fn upsert_schedule(&self, spec: ScheduleSpec) -> Result<bool, StoreError> {
        policy::validate_queue_name(&spec.queue).map_err(StoreError::invalid)?;
        let retry_strategy = to_json("retry strategy", &spec.retry_strategy)?;
        let cancellation = to_json("cancellation policy", &spec.cancellation)?;
        let row = self
            .row(Ctx::None, || {
                sqlx::query(sql::UPSERT_SCHEDULE)
                    .bind(&spec.queue)
                    .bind(&spec.name)
                    .bind(&spec.cron)
                    .bind(&spec.task_name)
                    .bind(Json(&spec.params))
                    .bind(Json(&spec.headers))
                    .bind(int4(u64::from(spec.max_attempts.max(1))))
                    .bind(Json(&retry_strategy))
                    .bind(Json(&cancellation))
            })
            .await?;
        get(&row, "created")
    }

    async fn list_schedules(&self, queue: Option<&str>) -> Result<Vec<ScheduleRecord>, StoreError> {
        let rows = self
            .rows(Ctx::None, || sqlx::query(sql::LIST_SCHEDULES).bind(queue))
            .await?;
        rows.iter().map(schedule_record).collect()
    }

    async fn delete_schedule(&self, queue: &str, name: &str) -> Result<bool, StoreError> {
        let row = self
            .row(Ctx::None, || {
                sqlx::query(sql::DELETE_SCHEDULE).bind(queue).bind(name)
            })
            .await?;
        get(&row, "deleted")
    }

    async fn due_schedules(&self, queue: &str, limit: usize) -> Result<DueSchedules, StoreError> {
        let limit = int4(limit as u64);
        let rows = self
            .rows(Ctx::None, || {
                sqlx::query(sql::DUE_SCHEDULES).bind(queue).bind(limit)
            })
            .await?;
        due_schedules(&rows)
    }

    async fn advance_schedule(
        &self,
        queue: &str,
        name: &str,
        expected: Option<DateTime<Utc>>,
        next: Option<DateTime<Utc>>,
        fire: bool,
    ) -> Result<ScheduleAdvance, StoreError> {
        let key = expected.map(|tick| schedule_task_key(name, tick));
        let row = self
            .row(Ctx::None, || {
                sqlx::query(sql::ADVANCE_SCHEDULE)
                    .bind(queue)
                    .bind(name)
                    .bind(expected)
                    .bind(next)
                    .bind(fire)
                    .bind(key.as_deref())
            })
            .await?;
        schedule_advance(&row)
    }

    async fn watch_finish(
        &self,
        task_id: Uuid,
    ) -> Result<(watch::Receiver<u64>, Option<TaskStatus>), StoreError> {
        // Subscribed before the flag is set and the state read: no end goes unseen.
        let signal = self.inner.wakeups.finish_signal(task_id);
        let row = self
            .row(Ctx::None, || sqlx::query(sql::WATCH_FINISH).bind(task_id))
            .await?;
        let state = get::<Option<String>>(&row, "state")?
            .map(|state| {
                TaskStatus::parse(&state).ok_or_else(|| {
                    unexpected(format!("task {task_id} has unknown state {state:?}"))
                })
            })
            .transpose()?;
        Ok((signal, state))
    }

    async fn spawn_many(&self, tasks: Vec<NewTask>) -> Result<Vec<SpawnResult>, StoreError> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let args = SpawnManyArgs::new(&tasks)?;
        let rows = self.rows(Ctx::None, || args.statement()).await?;
        spawn_results(&rows, tasks.len())
    }

    async fn complete_runs(
        &self,
        runs: Vec<RunCompletion>,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let queues: Vec<&str> = runs.iter().map(|c| c.run.queue.as_str()).collect();
        let task_ids: Vec<Uuid> = runs.iter().map(|c| c.run.task_id).collect();
        let run_ids: Vec<Uuid> = runs.iter().map(|c| c.run.run_id).collect();
        let outputs: Vec<Json<&Value>> = runs.iter().map(|c| Json(&c.output)).collect();
        let rows = self
            .rows(Ctx::None, || {
                sqlx::query(sql::COMPLETE_RUNS)
                    .bind(&queues)
                    .bind(&task_ids)
                    .bind(&run_ids)
                    .bind(&outputs)
            })
            .await?;
        let outcomes = rows
            .iter()
            .map(|row| get::<String>(row, "outcome"))
            .collect::<Result<Vec<_>, _>>()?;
        if outcomes.len() != runs.len() {
            return Err(unexpected(format!(
                "complete_runs answered {} rows for {} runs",
                outcomes.len(),
                runs.len()
            )));
        }
        let mut results = Vec::with_capacity(runs.len());
        for (completion, outcome) in runs.into_iter().zip(outcomes) {
            let result = match completion_outcome(&completion.run, &outcome) {
                CompletionOutcome::Done(result) => result,
                // A subtask: its completion tells its parent, under its event's lock first.
                CompletionOutcome::Deferred => {
                    self.complete_run(&completion.run, completion.output).await
                }
            };
            results.push(result);
        }
        Ok(results)
    }
}
