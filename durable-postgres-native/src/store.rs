//! [`NativeStore`]: the storage port on a `deadpool_postgres::Pool` of tokio-postgres
//! connections.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Object, Pool};
use durable_core::store::{
    AwaitOutcome, ClaimBatch, ClaimRequest, ClaimedRun, DueSchedules, NewTask, PurgeOutcome,
    QueueDepth, RunCompletion, RunRef, ScheduleAdvance, ScheduleRecord, ScheduleSpec, SleepOutcome,
    UnservedName, WakeAt, schedule_task_key,
};
use durable_core::{
    SpawnResult, Store, StoreError, TaskErrorInfo, TaskPollResult, TaskStatus, policy,
};
use durable_postgres_sql::statements as sql;
use serde_json::Value;
use tokio::sync::watch;
use tokio_postgres::Row;
use tokio_postgres::Socket;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::connect::SharedConnector;
use crate::convert::{
    CompletionOutcome, completion_outcome, count, get, int4, json, micros, opt_json, opt_micros,
    to_json,
};
use crate::error::{Ctx, STORE, map_pg, map_pool, retrying, timed_out, unexpected};
use crate::executor::private::Sealed;
use crate::executor::{emit_on, spawn_many_on, spawn_on};
use crate::listener::Wakeups;

/// The most calls one `expire_leases` makes (each recovers a bounded number of tasks).
const MAX_EXPIRE_CALLS: usize = 100;

/// The [`Store`] of `durable` on PostgreSQL through a [`deadpool_postgres::Pool`] of
/// tokio-postgres connections.
///
/// Every operation is one call of a stored function of `durable-postgres-sql` (one round trip,
/// one atomic step, a statement prepared once per connection through the pool's statement
/// cache), on the database clock. Cheap to clone; clones share the pool and the wake-up
/// listener.
///
/// Wake-ups: unless built with [`NativeStore::poll_only`], the first
/// [`work_signal`](Store::work_signal) starts a background task that `LISTEN`s on a connection
/// of its own, outside the pool (a deadpool pool drives its connections itself and drops their
/// notifications), and wakes the workers of a queue as soon as work is announced there. That
/// connection is made from the [`tokio_postgres::Config`] given to [`NativeStore::new`] (a
/// pool does not reveal its settings). It reconnects with backoff when its connection drops,
/// and stops when the last clone of the store is dropped.
///
/// The schema must exist: see [`migrate`](crate::migrate). Most applications use
/// [`Durable::builder`](crate::Durable::builder), which migrates and builds the store.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use durable_postgres_native::NativeStore;
/// use durable_postgres_native::deadpool_postgres::{Manager, Pool};
/// use durable_postgres_native::tokio_postgres::{Config, NoTls};
///
/// let config: Config = "postgres://localhost/myapp".parse()?;
/// let pool = Pool::builder(Manager::new(config.clone(), NoTls)).max_size(10).build()?;
/// durable_postgres_native::migrate(&pool).await?;
/// let store = NativeStore::new(pool, config);
/// let client = durable_core::DurableBuilder::new().build_with_store(store).await?;
/// // The client with the transactional `_with` methods:
/// let client = durable_postgres_native::Durable::from(client);
/// # let _ = client;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct NativeStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: Pool,
    wakeups: Wakeups,
    /// See [`NativeStore::set_call_timeout`], in milliseconds.
    /// Shared with the listener, which checks its connection at this interval when quiet.
    call_timeout_ms: Arc<AtomicU64>,
}

/// How long one call may wait for PostgreSQL's answer by default: see
/// [`NativeStore::set_call_timeout`].
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

fn inner(pool: Pool, wakeups: Wakeups) -> Arc<Inner> {
    Arc::new(Inner {
        pool,
        call_timeout_ms: wakeups.call_timeout_ms(),
        wakeups,
    })
}

impl NativeStore {
    /// A store on `pool` that listens for wake-ups on a connection made from `config` without
    /// TLS (use [`NativeStore::with_tls`] for TLS). `config` is normally the one the pool was
    /// made from.
    pub fn new(pool: Pool, config: tokio_postgres::Config) -> Self {
        Self::listening(pool, config, SharedConnector::no_tls())
    }

    /// A store on `pool` that listens for wake-ups on a connection made from `config` with the
    /// TLS connector `tls` (for example `postgres-native-tls`'s or `tokio-postgres-rustls`'s
    /// `MakeTlsConnector`, the one the pool's manager was given).
    pub fn with_tls<T>(pool: Pool, config: tokio_postgres::Config, tls: T) -> Self
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send + Sync,
        T::TlsConnect: Send + Sync,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        Self::listening(pool, config, SharedConnector::new(tls))
    }

    pub(crate) fn listening(
        pool: Pool,
        config: tokio_postgres::Config,
        connector: SharedConnector,
    ) -> Self {
        NativeStore {
            inner: inner(pool, Wakeups::listening(config, connector)),
        }
    }

    /// A store on `pool` without `LISTEN`, for connection poolers that break it (PgBouncer in
    /// transaction mode...): [`work_signal`](Store::work_signal) never changes and workers find
    /// work by polling every `WorkerOptions::poll_interval`.
    pub fn poll_only(pool: Pool) -> Self {
        NativeStore {
            inner: inner(pool, Wakeups::poll_only()),
        }
    }

    /// A listening store on a new pool of up to 10 connections to `url` (without TLS), one
    /// connection made at once to check that the database answers. It does not migrate: run
    /// [`migrate`](crate::migrate) or [`migrate_url`](crate::migrate_url) first. This is all a
    /// test needs to build the store on a fresh database, e.g. for the conformance suite of
    /// `durable-testing`.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), durable_core::StoreError> {
    /// let url = "postgres://localhost/durable_test";
    /// durable_postgres_native::migrate_url(url).await?;
    /// let store = durable_postgres_native::NativeStore::connect(url).await?;
    /// # let _ = store;
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::invalid(format!("invalid database URL: {e}")))?;
        let connector = SharedConnector::no_tls();
        let pool = connector
            .pool(config.clone(), 10)
            .map_err(|e| StoreError::backend(STORE, e))?;
        drop(pool.get().await.map_err(map_pool)?);
        Ok(Self::listening(pool, config, connector))
    }

    /// The pool the store runs on.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// Whether the store listens for wake-ups (`false`: poll-only).
    pub fn is_listening(&self) -> bool {
        self.inner.wakeups.is_listening()
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.inner.pool.get().await.map_err(map_pool)
    }

    /// How long one call may wait for PostgreSQL's answer (default [`DEFAULT_CALL_TIMEOUT`],
    /// for every clone of this store). A call that takes longer fails with
    /// [`StoreError::Backend`] and its connection is taken out of the pool and dropped: a
    /// connection whose peer vanished without a word (a network cut, a firewall that forgot
    /// the connection) would otherwise hold its caller, and a slot of the pool, for good. As
    /// with any backend error, the call may or may not have been applied.
    ///
    /// The wake-up listener's connection is checked with `SELECT 1` at that interval and made
    /// again if the answer takes longer, so wake-ups resume after such a cut instead of
    /// waiting for TCP to give up (workers poll meanwhile).
    pub fn set_call_timeout(&self, timeout: Duration) {
        let ms = u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.inner.call_timeout_ms.store(ms, Ordering::Relaxed);
    }

    /// See [`NativeStore::set_call_timeout`].
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.inner.call_timeout_ms.load(Ordering::Relaxed))
    }

    /// Runs `call` on a pooled connection within the call timeout; a connection that did not
    /// answer in time is removed from the pool.
    async fn bounded<T, F>(&self, call: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&Object) -> Result<T, StoreError>,
    {
        let limit = self.call_timeout();
        let client = tokio::time::timeout(limit, self.client())
            .await
            .map_err(|_| timed_out(limit))??;
        match tokio::time::timeout(limit, call(&client)).await {
            Ok(result) => result,
            Err(_) => {
                drop(Object::take(client));
                Err(timed_out(limit))
            }
        }
    }

    /// Runs `statement` on a pooled connection (prepared once per connection), retrying
    /// transient failures.
    async fn rows(
        &self,
        statement: &'static str,
        params: &[&(dyn ToSql + Sync)],
        ctx: Ctx<'_>,
    ) -> Result<Vec<Row>, StoreError> {
        retrying(|| {
            self.bounded(async |client: &Object| {
                client
                    .run(statement, &[], params)
                    .await
                    .map_err(|e| map_pg(e, ctx))
            })
        })
        .await
    }

    /// [`rows`](Self::rows) for a statement that returns exactly one row.
    async fn one(
        &self,
        statement: &'static str,
        params: &[&(dyn ToSql + Sync)],
        ctx: Ctx<'_>,
    ) -> Result<Row, StoreError> {
        let mut rows = self.rows(statement, params, ctx).await?;
        if rows.is_empty() {
            return Err(unexpected(format!("`{statement}` returned no row")));
        }
        Ok(rows.swap_remove(0))
    }
}

fn claimed_run(
    queue: &str,
    row: &Row,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<ClaimedRun, StoreError> {
    Ok(ClaimedRun {
        run: RunRef {
            queue: queue.to_owned(),
            task_id: get(row, "task_id")?,
            run_id: get(row, "run_id")?,
        },
        task_name: get(row, "task_name")?,
        params: json(row, "params")?,
        headers: json(row, "headers")?,
        attempt: count(row, "attempt")?,
        max_attempts: count(row, "max_attempts")?,
        retry_strategy: json(row, "retry_strategy")?,
        cancellation: json(row, "cancellation")?,
        parent_task_id: get(row, "parent_task_id")?,
        created_at: get(row, "created_at")?,
        first_started_at: get(row, "first_started_at")?,
        now,
        checkpoints: json::<HashMap<String, Value>>(row, "checkpoints")?,
    })
}

/// Reads a schedule from a row of `LIST_SCHEDULES` or `DUE_SCHEDULES`.
fn schedule_record(row: &Row) -> Result<ScheduleRecord, StoreError> {
    Ok(ScheduleRecord {
        spec: ScheduleSpec {
            queue: get(row, "queue_name")?,
            name: get(row, "schedule_name")?,
            cron: get(row, "cron")?,
            task_name: get(row, "task_name")?,
            params: json(row, "params")?,
            headers: json(row, "headers")?,
            max_attempts: count(row, "max_attempts")?,
            retry_strategy: json(row, "retry_strategy")?,
            cancellation: json(row, "cancellation")?,
        },
        next_run_at: get(row, "next_run_at")?,
        last_run_at: get(row, "last_run_at")?,
        last_task_id: get(row, "last_task_id")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

#[async_trait]
impl Store for NativeStore {
    async fn ensure_queue(&self, queue: &str) -> Result<(), StoreError> {
        policy::validate_queue_name(queue).map_err(StoreError::invalid)?;
        self.rows(sql::ENSURE_QUEUE, &[&queue], Ctx::None).await?;
        Ok(())
    }

    async fn spawn(&self, task: NewTask) -> Result<SpawnResult, StoreError> {
        retrying(|| self.bounded(async |client: &Object| spawn_on(client, &task).await)).await
    }

    async fn claim(&self, request: ClaimRequest) -> Result<ClaimBatch, StoreError> {
        policy::validate_queue_name(&request.queue).map_err(StoreError::invalid)?;
        let lease = micros("lease", request.lease)?;
        let limit = int4(request.limit as u64);
        let params: [&(dyn ToSql + Sync); 5] = [
            &request.queue,
            &request.worker_id,
            &request.task_names,
            &limit,
            &lease,
        ];
        let rows = self.rows(sql::CLAIM_RUNS, &params, Ctx::None).await?;
        let summary = rows
            .iter()
            .find(|row| matches!(get::<Option<Uuid>>(row, "task_id"), Ok(None)))
            .ok_or_else(|| unexpected("claim_runs returned no summary row"))?;
        let now = get(summary, "store_now")?;
        let next_wake_at = get(summary, "next_wake_at")?;
        let mut runs = Vec::with_capacity(rows.len().saturating_sub(1));
        for row in &rows {
            if get::<Option<Uuid>>(row, "task_id")?.is_some() {
                runs.push(claimed_run(&request.queue, row, now)?);
            }
        }
        Ok(ClaimBatch {
            runs,
            now,
            next_wake_at,
        })
    }

    async fn expire_leases(&self, queue: &str) -> Result<u64, StoreError> {
        policy::validate_queue_name(queue).map_err(StoreError::invalid)?;
        let mut recovered = 0u64;
        for _ in 0..MAX_EXPIRE_CALLS {
            let row = self.one(sql::EXPIRE_LEASES, &[&queue], Ctx::None).await?;
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
        let params: [&(dyn ToSql + Sync); 6] =
            [&run.queue, &run.task_id, &run.run_id, &name, &value, &lease];
        self.rows(sql::WRITE_CHECKPOINT, &params, Ctx::Run(run))
            .await?;
        Ok(())
    }

    async fn extend_lease(&self, run: &RunRef, lease: Duration) -> Result<(), StoreError> {
        let lease = micros("lease", lease)?;
        let params: [&(dyn ToSql + Sync); 4] = [&run.queue, &run.task_id, &run.run_id, &lease];
        self.rows(sql::EXTEND_LEASE, &params, Ctx::Run(run)).await?;
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
        let params: [&(dyn ToSql + Sync); 7] = [
            &run.queue,
            &run.task_id,
            &run.run_id,
            &name,
            &after,
            &at,
            &lease,
        ];
        let row = self.one(sql::SLEEP_RUN, &params, Ctx::Run(run)).await?;
        let outcome: &str = get(&row, "outcome")?;
        match outcome {
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
        let params: [&(dyn ToSql + Sync); 7] = [
            &run.queue,
            &run.task_id,
            &run.run_id,
            &name,
            &event_name,
            &timeout,
            &lease,
        ];
        let row = self.one(sql::AWAIT_EVENT, &params, Ctx::Run(run)).await?;
        let outcome: &str = get(&row, "outcome")?;
        match outcome {
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
        retrying(|| {
            self.bounded(async |client: &Object| emit_on(client, queue, name, &payload).await)
        })
        .await
    }

    async fn complete_run(&self, run: &RunRef, output: Value) -> Result<(), StoreError> {
        let params: [&(dyn ToSql + Sync); 4] = [&run.queue, &run.task_id, &run.run_id, &output];
        self.rows(sql::COMPLETE_RUN, &params, Ctx::Run(run)).await?;
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
        let params: [&(dyn ToSql + Sync); 5] =
            [&run.queue, &run.task_id, &run.run_id, &error, &retry_after];
        self.rows(sql::FAIL_RUN, &params, Ctx::Run(run)).await?;
        Ok(())
    }

    async fn cancel_task(&self, queue: &str, task_id: Uuid) -> Result<bool, StoreError> {
        let ctx = Ctx::Task { queue, task_id };
        let row = self.one(sql::CANCEL_TASK, &[&queue, &task_id], ctx).await?;
        get(&row, "cancelled")
    }

    async fn retry_task(&self, queue: &str, task_id: Uuid) -> Result<SpawnResult, StoreError> {
        let ctx = Ctx::Task { queue, task_id };
        let row = self.one(sql::RETRY_TASK, &[&queue, &task_id], ctx).await?;
        Ok(SpawnResult {
            task_id: get(&row, "task_id")?,
            run_id: get(&row, "run_id")?,
            attempt: count(&row, "attempt")?,
            created: false,
        })
    }

    async fn task_result(&self, task_id: Uuid) -> Result<Option<TaskPollResult>, StoreError> {
        let rows = self.rows(sql::TASK_RESULT, &[&task_id], Ctx::None).await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let state: &str = get(row, "state")?;
        let status = TaskStatus::parse(state)
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
            .one(sql::PURGE_FINISHED, &[&queue, &age, &limit], Ctx::None)
            .await?;
        Ok(PurgeOutcome {
            tasks: u64::try_from(get::<i64>(&row, "tasks")?).unwrap_or(0),
            events: u64::try_from(get::<i64>(&row, "events")?).unwrap_or(0),
            more: get(&row, "more")?,
        })
    }

    async fn queue_depth(&self, queue: &str) -> Result<QueueDepth, StoreError> {
        policy::validate_queue_name(queue).map_err(StoreError::invalid)?;
        let row = self.one(sql::QUEUE_DEPTH, &[&queue], Ctx::None).await?;
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
            .rows(
                sql::UNSERVED_NAMES,
                &[&queue, &registered, &scan],
                Ctx::None,
            )
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
        let headers = to_json("headers", &spec.headers)?;
        let retry_strategy = to_json("retry strategy", &spec.retry_strategy)?;
        let cancellation = to_json("cancellation policy", &spec.cancellation)?;
        let max_attempts = int4(u64::from(spec.max_attempts.max(1)));
        let params: [&(dyn ToSql + Sync); 9] = [
            &spec.queue,
            &spec.name,
            &spec.cron,
            &spec.task_name,
            &spec.params,
            &headers,
            &max_attempts,
            &retry_strategy,
            &cancellation,
        ];
        let row = self.one(sql::UPSERT_SCHEDULE, &params, Ctx::None).await?;
        get(&row, "created")
    }

    async fn list_schedules(&self, queue: Option<&str>) -> Result<Vec<ScheduleRecord>, StoreError> {
        let rows = self.rows(sql::LIST_SCHEDULES, &[&queue], Ctx::None).await?;
        rows.iter().map(schedule_record).collect()
    }

    async fn delete_schedule(&self, queue: &str, name: &str) -> Result<bool, StoreError> {
        let row = self
            .one(sql::DELETE_SCHEDULE, &[&queue, &name], Ctx::None)
            .await?;
        get(&row, "deleted")
    }

    async fn due_schedules(&self, queue: &str, limit: usize) -> Result<DueSchedules, StoreError> {
        let limit = int4(limit as u64);
        let rows = self
            .rows(sql::DUE_SCHEDULES, &[&queue, &limit], Ctx::None)
            .await?;
        let (summary, due) = rows
            .split_last()
            .ok_or_else(|| unexpected("due_schedules returned no summary row"))?;
        if get::<Option<&str>>(summary, "schedule_name")?.is_some() {
            return Err(unexpected("due_schedules did not end with its summary row"));
        }
        Ok(DueSchedules {
            schedules: due
                .iter()
                .map(schedule_record)
                .collect::<Result<Vec<_>, _>>()?,
            now: get(summary, "next_run_at")?,
            next_due_at: get(summary, "last_run_at")?,
        })
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
        let params: [&(dyn ToSql + Sync); 6] = [&queue, &name, &expected, &next, &fire, &key];
        let row = self.one(sql::ADVANCE_SCHEDULE, &params, Ctx::None).await?;
        if !get::<bool>(&row, "advanced")? {
            return Ok(ScheduleAdvance::Stale);
        }
        let Some(task_id) = get::<Option<Uuid>>(&row, "task_id")? else {
            return Ok(ScheduleAdvance::Moved);
        };
        Ok(ScheduleAdvance::Fired(SpawnResult {
            task_id,
            run_id: get(&row, "run_id")?,
            attempt: count(&row, "attempt")?,
            created: get(&row, "created")?,
        }))
    }

    async fn watch_finish(
        &self,
        task_id: Uuid,
    ) -> Result<(watch::Receiver<u64>, Option<TaskStatus>), StoreError> {
        // Subscribed before the flag is set and the state read: no end goes unseen.
        let signal = self.inner.wakeups.finish_signal(task_id);
        let row = self.one(sql::WATCH_FINISH, &[&task_id], Ctx::None).await?;
        let state = get::<Option<&str>>(&row, "state")?
            .map(|state| {
                TaskStatus::parse(state).ok_or_else(|| {
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
        retrying(|| self.bounded(async |client: &Object| spawn_many_on(client, &tasks).await)).await
    }

    async fn complete_runs(
        &self,
        runs: Vec<RunCompletion>,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let outcomes = {
            let queues: Vec<&str> = runs.iter().map(|c| c.run.queue.as_str()).collect();
            let task_ids: Vec<Uuid> = runs.iter().map(|c| c.run.task_id).collect();
            let run_ids: Vec<Uuid> = runs.iter().map(|c| c.run.run_id).collect();
            let outputs: Vec<&Value> = runs.iter().map(|c| &c.output).collect();
            let params: [&(dyn ToSql + Sync); 4] = [&queues, &task_ids, &run_ids, &outputs];
            let rows = self.rows(sql::COMPLETE_RUNS, &params, Ctx::None).await?;
            if rows.len() != runs.len() {
                return Err(unexpected(format!(
                    "complete_runs answered {} rows for {} runs",
                    rows.len(),
                    runs.len()
                )));
            }
            runs.iter()
                .zip(&rows)
                .map(|(completion, row)| {
                    Ok(completion_outcome(&completion.run, get(row, "outcome")?))
                })
                .collect::<Result<Vec<_>, StoreError>>()?
        };
        let mut results = Vec::with_capacity(runs.len());
        for (completion, outcome) in runs.into_iter().zip(outcomes) {
            let result = match outcome {
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
