//! [`PgStore`]: the one [`Store`] on PostgreSQL, over any [`Driver`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use durable_core::inspect::{MAX_SUBTASKS, TaskDetail, TaskPage, TaskQuery};
use durable_core::store::{
    AwaitOutcome, ClaimBatch, ClaimRequest, DueSchedules, NewTask, PurgeOutcome, QueueDepth,
    RunCompletion, RunRef, ScheduleAdvance, ScheduleRecord, ScheduleSpec, SleepOutcome,
    UnservedName, WakeAt, schedule_task_key,
};
use durable_core::{
    FailureKind, SpawnResult, Store, StoreError, TaskErrorInfo, TaskPollResult, TaskStatus,
};
use durable_postgres_sql::statements as sql;
use serde_json::Value;
use tokio::sync::watch;
use uuid::Uuid;

use crate::calls::{Call, Emit, Spawn, SpawnMany, checked_queue};
use crate::claim::read_claim;
use crate::decode::{Reader, due_schedules, int4, micros, only_row, opt_micros, read, to_json};
use crate::driver::{Connect, Driver, Param, PoolSettings};
use crate::error::{Ctx, retrying, store_error, unexpected};
use crate::inspect::{list_params, patch_checkpoint, task_detail, task_page};
use crate::listener::Wakeups;

/// The most calls one `expire_leases` makes (each recovers a bounded number of tasks).
const MAX_EXPIRE_CALLS: usize = 100;

/// How long one call may wait for PostgreSQL's answer by default: see
/// [`PgStore::set_call_timeout`].
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The [`Store`] of `durable` on PostgreSQL, through the driver `D`.
///
/// Every operation is one call of a stored function of `durable-postgres-sql` (one round trip,
/// one atomic step), on the database clock. Deadlocks and serialization failures are retried
/// after a short random pause (every call is atomic, so a failed call changed nothing); the
/// refusals of the stored functions become [`StoreError::LeaseLost`],
/// [`StoreError::Cancelled`], [`StoreError::NotFound`], [`StoreError::Conflict`] or
/// [`StoreError::InvalidInput`]. Cheap to clone; clones share the driver and the wake-up
/// listener.
///
/// Wake-ups: unless built with [`PgStore::poll_only`], the first
/// [`work_signal`](Store::work_signal) starts a background task that `LISTEN`s on a connection
/// of its own ([`Driver::listen`]) and wakes the workers of a queue as soon as work is announced
/// there. It reconnects with backoff when its connection drops, checks a connection that stays
/// quiet for a call timeout, and stops when the last clone of the store is dropped.
///
/// The schema must exist: see [`migrate::run`](crate::migrate::run) and the adapters'
/// `migrate` functions.
pub struct PgStore<D: Driver> {
    inner: Arc<Inner<D>>,
}

struct Inner<D: Driver> {
    driver: D,
    wakeups: Wakeups<D>,
}

impl<D: Driver> Clone for PgStore<D> {
    fn clone(&self) -> Self {
        PgStore {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<D: Driver> std::fmt::Debug for PgStore<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("driver", &self.inner.driver)
            .field("listening", &self.is_listening())
            .field("call_timeout", &self.call_timeout())
            .finish()
    }
}

impl<D: Driver> PgStore<D> {
    /// A store on `driver` that listens for wake-ups.
    pub fn new(driver: impl Into<D>) -> Self {
        let driver = driver.into();
        Self::with_wakeups(driver.clone(), Some(driver))
    }

    /// A store on `driver` without `LISTEN`, for connection poolers that break it (PgBouncer in
    /// transaction mode...): [`work_signal`](Store::work_signal) never changes and workers find
    /// work by polling every `WorkerOptions::poll_interval`.
    pub fn poll_only(driver: impl Into<D>) -> Self {
        Self::with_wakeups(driver.into(), None)
    }

    fn with_wakeups(driver: D, listener: Option<D>) -> Self {
        PgStore {
            inner: Arc::new(Inner {
                driver,
                wakeups: Wakeups::new(listener, DEFAULT_CALL_TIMEOUT),
            }),
        }
    }

    /// The driver the store runs on.
    pub fn driver(&self) -> &D {
        &self.inner.driver
    }

    /// Whether the store listens for wake-ups (`false`: poll-only).
    pub fn is_listening(&self) -> bool {
        self.inner.wakeups.is_listening()
    }

    /// How long one call may wait for PostgreSQL's answer (default [`DEFAULT_CALL_TIMEOUT`],
    /// for every clone of this store). A call that takes longer fails with
    /// [`StoreError::Backend`] and its connection is closed rather than returned to the pool: a
    /// connection whose peer vanished without a word (a network cut, a firewall that forgot the
    /// connection) would otherwise hold its caller, and a slot of the pool, for good. As with any
    /// backend error, the call may or may not have been applied.
    ///
    /// The wake-up listener's connection is checked (`SELECT 1`) when it has been quiet for that
    /// long and made again if the answer takes longer, so wake-ups resume after such a cut
    /// instead of waiting for TCP to give up (workers poll meanwhile).
    pub fn set_call_timeout(&self, timeout: Duration) {
        self.inner.wakeups.set_call_timeout(timeout);
    }

    /// See [`PgStore::set_call_timeout`].
    pub fn call_timeout(&self) -> Duration {
        self.inner.wakeups.call_timeout()
    }

    /// Runs one statement and reads all its rows, retrying deadlocks and serialization failures;
    /// a failure is mapped to its meaning for a call about `ctx`.
    async fn rows(
        &self,
        statement: &str,
        params: &[Param<'_>],
        ctx: Ctx<'_>,
    ) -> Result<Vec<D::Row>, StoreError> {
        let timeout = self.call_timeout();
        retrying(|| self.inner.driver.query(statement, params, timeout))
            .await
            .map_err(|e| store_error(D::NAME, e, ctx))
    }

    /// Runs a [`Call`] on the store's driver.
    async fn call<C: Call>(&self, call: &C) -> Result<C::Output, StoreError> {
        let rows = self.rows(C::STATEMENT, &call.params(), Ctx::None).await?;
        call.read::<D>(&rows)
    }
}

impl<D: Connect> PgStore<D> {
    /// A listening store on a new pool of up to 10 connections to `url`, one made at once to
    /// check that the database answers. It does not migrate (see [`migrate::on_pool`](crate::migrate::on_pool) and the
    /// adapters' `migrate_url`). This is all a test needs to build the store on a fresh
    /// database, e.g. for the conformance suite of `durable-testing`.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let config = D::parse_url(url)
            .map_err(|e| StoreError::invalid(format!("invalid database URL: {e}")))?;
        let driver = D::connect(config, &D::Options::default(), &PoolSettings::default())
            .await
            .map_err(|e| store_error(D::NAME, e, Ctx::None))?;
        Ok(Self::new(driver))
    }

    /// The pool the store runs on.
    pub fn pool(&self) -> &D::Pool {
        self.inner.driver.pool()
    }
}

/// The state column of a task, read into a [`TaskStatus`].
fn status<D: Driver>(row: &Reader<'_, D>, task_id: Uuid) -> Result<Option<TaskStatus>, StoreError> {
    row.opt::<&str>("state")?
        .map(|state| {
            TaskStatus::parse(state).ok_or_else(|| {
                unexpected(
                    D::NAME,
                    format!("task {task_id} has unknown state {state:?}"),
                )
            })
        })
        .transpose()
}

/// Parameters of a fenced call of `run`: queue, task, run.
fn run_params(run: &RunRef) -> [Param<'_>; 3] {
    [
        Param::Text(Some(&run.queue)),
        Param::Uuid(Some(run.task_id)),
        Param::Uuid(Some(run.run_id)),
    ]
}

#[async_trait]
impl<D: Driver> Store for PgStore<D> {
    async fn ensure_queue(&self, queue: &str) -> Result<(), StoreError> {
        let queue = checked_queue(queue)?;
        self.rows(sql::ENSURE_QUEUE, &[Param::Text(Some(queue))], Ctx::None)
            .await?;
        Ok(())
    }

    async fn spawn(&self, task: NewTask) -> Result<SpawnResult, StoreError> {
        self.call(&Spawn::new(&task)?).await
    }

    async fn claim(&self, request: ClaimRequest) -> Result<ClaimBatch, StoreError> {
        let queue = checked_queue(&request.queue)?;
        let params = [
            Param::Text(Some(queue)),
            Param::Text(Some(&request.worker_id)),
            Param::TextArray(
                request
                    .task_names
                    .iter()
                    .map(|n| Some(n.as_str()))
                    .collect(),
            ),
            Param::Int4(Some(int4(request.limit as u64))),
            Param::Int8(Some(micros("lease", request.lease)?)),
        ];
        let rows = self.rows(sql::CLAIM_TASKS, &params, Ctx::None).await?;
        let claim = read_claim::<D>(queue, &rows)?;
        for (run, why) in claim.unreadable {
            // Fails this task alone, at once and for good: another attempt reads the same rows.
            let error = TaskErrorInfo::new(
                FailureKind::Unreadable,
                format!("task {} cannot be loaded: {why}", run.task_id),
            );
            tracing::warn!(task_id = %run.task_id, queue, error = %error.message, "failing a task whose stored data does not read back");
            if let Err(failed) = self.fail_run(&run, error, None).await {
                tracing::warn!(task_id = %run.task_id, error = %failed, "could not fail the task; its lease will expire");
            }
        }
        Ok(ClaimBatch {
            runs: claim.runs,
            now: claim.now,
            next_wake_at: claim.next_wake_at,
        })
    }

    async fn expire_leases(&self, queue: &str) -> Result<u64, StoreError> {
        let queue = checked_queue(queue)?;
        let mut recovered = 0u64;
        for _ in 0..MAX_EXPIRE_CALLS {
            let rows = self
                .rows(sql::EXPIRE_LEASES, &[Param::Text(Some(queue))], Ctx::None)
                .await?;
            let row = only_row::<D>(&rows, "expire_leases")?;
            recovered += row.count("recovered")?;
            if !row.get::<bool>("more")? {
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
        let [queue, task, run_id] = run_params(run);
        let params = [
            queue,
            task,
            run_id,
            Param::Text(Some(name)),
            Param::Jsonb(Some(&value)),
            Param::Int8(Some(micros("lease", lease)?)),
        ];
        self.rows(sql::WRITE_CHECKPOINT, &params, Ctx::Run(run))
            .await?;
        Ok(())
    }

    async fn extend_lease(&self, run: &RunRef, lease: Duration) -> Result<(), StoreError> {
        let [queue, task, run_id] = run_params(run);
        let params = [
            queue,
            task,
            run_id,
            Param::Int8(Some(micros("lease", lease)?)),
        ];
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
        let (after, at) = match wake {
            WakeAt::After(duration) => (Some(micros("sleep", duration)?), None),
            WakeAt::At(at) => (None, Some(at)),
        };
        let [queue, task, run_id] = run_params(run);
        let params = [
            queue,
            task,
            run_id,
            Param::Text(Some(name)),
            Param::Int8(after),
            Param::Timestamptz(at),
            Param::Int8(Some(micros("lease", lease)?)),
        ];
        let rows = self.rows(sql::SLEEP_RUN, &params, Ctx::Run(run)).await?;
        let row = only_row::<D>(&rows, "sleep_run")?;
        match row.get::<&str>("outcome")? {
            "elapsed" => Ok(SleepOutcome::Elapsed),
            "suspended" => Ok(SleepOutcome::Suspended {
                wake_at: row.get("wake_at")?,
            }),
            other => Err(unexpected(
                D::NAME,
                format!("sleep_run returned outcome {other:?}"),
            )),
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
        let [queue, task, run_id] = run_params(run);
        let params = [
            queue,
            task,
            run_id,
            Param::Text(Some(name)),
            Param::Text(Some(event_name)),
            Param::Int8(opt_micros("event timeout", timeout)?),
            Param::Int8(Some(micros("lease", lease)?)),
        ];
        let rows = self.rows(sql::AWAIT_EVENT, &params, Ctx::Run(run)).await?;
        let row = only_row::<D>(&rows, "await_event")?;
        match row.get::<&str>("outcome")? {
            "received" => Ok(AwaitOutcome::Received(
                row.opt_json("payload")?.unwrap_or(Value::Null),
            )),
            "timed_out" => Ok(AwaitOutcome::TimedOut),
            "suspended" => Ok(AwaitOutcome::Suspended),
            other => Err(unexpected(
                D::NAME,
                format!("await_event returned outcome {other:?}"),
            )),
        }
    }

    async fn emit_event(
        &self,
        queue: &str,
        name: &str,
        payload: Value,
    ) -> Result<bool, StoreError> {
        self.call(&Emit::new(queue, name, &payload)?).await
    }

    async fn complete_run(&self, run: &RunRef, output: Value) -> Result<(), StoreError> {
        let [queue, task, run_id] = run_params(run);
        let params = [queue, task, run_id, Param::Jsonb(Some(&output))];
        self.rows(sql::COMPLETE_RUN, &params, Ctx::Run(run)).await?;
        Ok(())
    }

    async fn fail_run(
        &self,
        run: &RunRef,
        error: TaskErrorInfo,
        retry_after: Option<Duration>,
    ) -> Result<(), StoreError> {
        // Storable whatever built it: NUL characters escaped, the length capped.
        let error = TaskErrorInfo::new(error.kind, error.message);
        let error = to_json("error", &error)?;
        let [queue, task, run_id] = run_params(run);
        let params = [
            queue,
            task,
            run_id,
            Param::Jsonb(Some(&error)),
            Param::Int8(opt_micros("retry delay", retry_after)?),
        ];
        self.rows(sql::FAIL_RUN, &params, Ctx::Run(run)).await?;
        Ok(())
    }

    async fn cancel_task(&self, queue: &str, task_id: Uuid) -> Result<bool, StoreError> {
        let params = [Param::Text(Some(queue)), Param::Uuid(Some(task_id))];
        let rows = self
            .rows(sql::CANCEL_TASK, &params, Ctx::Task { queue, task_id })
            .await?;
        only_row::<D>(&rows, "cancel_task")?.get("cancelled")
    }

    async fn retry_task(&self, queue: &str, task_id: Uuid) -> Result<SpawnResult, StoreError> {
        let params = [Param::Text(Some(queue)), Param::Uuid(Some(task_id))];
        let rows = self
            .rows(sql::RETRY_TASK, &params, Ctx::Task { queue, task_id })
            .await?;
        let row = only_row::<D>(&rows, "retry_task")?;
        Ok(SpawnResult {
            task_id: row.get("task_id")?,
            run_id: row.get("run_id")?,
            attempt: row.attempts("attempt")?,
            created: false,
        })
    }

    async fn task_result(&self, task_id: Uuid) -> Result<Option<TaskPollResult>, StoreError> {
        let rows = self
            .rows(sql::TASK_RESULT, &[Param::Uuid(Some(task_id))], Ctx::None)
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let row = read::<D>(row);
        let status = status(&row, task_id)?
            .ok_or_else(|| unexpected(D::NAME, format!("task {task_id} has no state")))?;
        Ok(Some(TaskPollResult {
            task_id,
            status,
            output: row.opt_json("output")?,
            error: row.opt_json("last_error")?,
        }))
    }

    async fn purge_finished(
        &self,
        queue: &str,
        older_than: Duration,
        limit: usize,
    ) -> Result<PurgeOutcome, StoreError> {
        let params = [
            Param::Text(Some(checked_queue(queue)?)),
            Param::Int8(Some(micros("retention age", older_than)?)),
            Param::Int4(Some(int4(limit as u64))),
        ];
        let rows = self.rows(sql::PURGE_FINISHED, &params, Ctx::None).await?;
        let row = only_row::<D>(&rows, "purge_finished")?;
        Ok(PurgeOutcome {
            tasks: row.count("tasks")?,
            events: row.count("events")?,
            more: row.get("more")?,
        })
    }

    async fn queue_depth(&self, queue: &str) -> Result<QueueDepth, StoreError> {
        let params = [Param::Text(Some(checked_queue(queue)?))];
        let rows = self.rows(sql::QUEUE_DEPTH, &params, Ctx::None).await?;
        let row = only_row::<D>(&rows, "queue_depth")?;
        Ok(QueueDepth {
            pending: row.count("pending")?,
            running: row.count("running")?,
            sleeping: row.count("sleeping")?,
        })
    }

    async fn unserved_names(
        &self,
        queue: &str,
        registered: &[String],
        scan: usize,
    ) -> Result<Vec<UnservedName>, StoreError> {
        let params = [
            Param::Text(Some(checked_queue(queue)?)),
            Param::TextArray(registered.iter().map(|n| Some(n.as_str())).collect()),
            Param::Int4(Some(int4(scan as u64))),
        ];
        let rows = self.rows(sql::UNSERVED_NAMES, &params, Ctx::None).await?;
        rows.iter()
            .map(|row| {
                let row = read::<D>(row);
                Ok(UnservedName {
                    task_name: row.get("task_name")?,
                    waiting: row.count("waiting")?,
                })
            })
            .collect()
    }

    async fn upsert_schedule(&self, spec: ScheduleSpec) -> Result<bool, StoreError> {
        let headers = to_json("headers", &spec.headers)?;
        let retry_strategy = to_json("retry strategy", &spec.retry_strategy)?;
        let cancellation = to_json("cancellation policy", &spec.cancellation)?;
        let params = [
            Param::Text(Some(checked_queue(&spec.queue)?)),
            Param::Text(Some(&spec.name)),
            Param::Text(Some(&spec.cron)),
            Param::Text(Some(&spec.task_name)),
            Param::Jsonb(Some(&spec.params)),
            Param::Jsonb(Some(&headers)),
            Param::Int4(Some(int4(u64::from(spec.max_attempts.max(1))))),
            Param::Jsonb(Some(&retry_strategy)),
            Param::Jsonb(Some(&cancellation)),
        ];
        let rows = self.rows(sql::UPSERT_SCHEDULE, &params, Ctx::None).await?;
        only_row::<D>(&rows, "upsert_schedule")?.get("created")
    }

    async fn list_schedules(&self, queue: Option<&str>) -> Result<Vec<ScheduleRecord>, StoreError> {
        let rows = self
            .rows(sql::LIST_SCHEDULES, &[Param::Text(queue)], Ctx::None)
            .await?;
        rows.iter()
            .map(|row| read::<D>(row).schedule_record())
            .collect()
    }

    async fn delete_schedule(&self, queue: &str, name: &str) -> Result<bool, StoreError> {
        let params = [Param::Text(Some(queue)), Param::Text(Some(name))];
        let rows = self.rows(sql::DELETE_SCHEDULE, &params, Ctx::None).await?;
        only_row::<D>(&rows, "delete_schedule")?.get("deleted")
    }

    async fn due_schedules(&self, queue: &str, limit: usize) -> Result<DueSchedules, StoreError> {
        let params = [
            Param::Text(Some(queue)),
            Param::Int4(Some(int4(limit as u64))),
        ];
        let rows = self.rows(sql::DUE_SCHEDULES, &params, Ctx::None).await?;
        due_schedules::<D>(&rows)
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
        let params = [
            Param::Text(Some(queue)),
            Param::Text(Some(name)),
            Param::Timestamptz(expected),
            Param::Timestamptz(next),
            Param::Bool(Some(fire)),
            Param::Text(key.as_deref()),
        ];
        let rows = self.rows(sql::ADVANCE_SCHEDULE, &params, Ctx::None).await?;
        only_row::<D>(&rows, "advance_schedule")?.schedule_advance()
    }

    async fn list_tasks(&self, query: &TaskQuery) -> Result<TaskPage, StoreError> {
        if let Some(queue) = &query.queue {
            checked_queue(queue)?;
        }
        let patch = query.old_path_of_patch.as_deref().map(patch_checkpoint);
        let params = list_params(query, &patch)?;
        let rows = self.rows(sql::LIST_TASKS, &params, Ctx::None).await?;
        task_page::<D>(&rows, query)
    }

    async fn inspect_task(&self, task_id: Uuid) -> Result<Option<TaskDetail>, StoreError> {
        let params = [
            Param::Uuid(Some(task_id)),
            Param::Int4(Some(int4(MAX_SUBTASKS as u64))),
        ];
        let rows = self.rows(sql::INSPECT_TASK, &params, Ctx::None).await?;
        task_detail::<D>(&rows, task_id)
    }

    async fn watch_finish(
        &self,
        task_id: Uuid,
    ) -> Result<(watch::Receiver<u64>, Option<TaskStatus>), StoreError> {
        // Subscribed before the flag is set and the state read: no end goes unseen.
        let signal = self.inner.wakeups.finish_signal(task_id);
        let rows = self
            .rows(sql::WATCH_FINISH, &[Param::Uuid(Some(task_id))], Ctx::None)
            .await?;
        let state = status(&only_row::<D>(&rows, "watch_finish")?, task_id)?;
        Ok((signal, state))
    }

    fn work_signal(&self, queue: &str) -> watch::Receiver<u64> {
        self.inner.wakeups.work_signal(queue)
    }

    async fn spawn_many(&self, tasks: Vec<NewTask>) -> Result<Vec<SpawnResult>, StoreError> {
        let call = SpawnMany::new(&tasks)?;
        if call.is_empty() {
            return Ok(Vec::new());
        }
        self.call(&call).await
    }

    async fn complete_runs(
        &self,
        runs: Vec<RunCompletion>,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let params = [
            Param::TextArray(runs.iter().map(|c| Some(c.run.queue.as_str())).collect()),
            Param::UuidArray(runs.iter().map(|c| Some(c.run.task_id)).collect()),
            Param::UuidArray(runs.iter().map(|c| Some(c.run.run_id)).collect()),
            Param::JsonbArray(runs.iter().map(|c| Some(&c.output)).collect()),
        ];
        let rows = self.rows(sql::COMPLETE_RUNS, &params, Ctx::None).await?;
        drop(params);
        if rows.len() != runs.len() {
            return Err(unexpected(
                D::NAME,
                format!(
                    "complete_runs answered {} rows for {} runs",
                    rows.len(),
                    runs.len()
                ),
            ));
        }
        let mut results = Vec::with_capacity(runs.len());
        for (completion, row) in runs.into_iter().zip(&rows) {
            let run = &completion.run;
            let result = match read::<D>(row).get::<&str>("outcome")? {
                "completed" => Ok(()),
                // A subtask: its completion tells its parent, under its event's lock first.
                "deferred" => self.complete_run(run, completion.output).await,
                "cancelled" => Err(StoreError::Cancelled {
                    task_id: run.task_id,
                }),
                "lease_lost" => Err(StoreError::LeaseLost {
                    task_id: run.task_id,
                    run_id: run.run_id,
                }),
                other => Err(unexpected(
                    D::NAME,
                    format!("complete_runs returned outcome {other:?}"),
                )),
            };
            results.push(result);
        }
        Ok(results)
    }
}
