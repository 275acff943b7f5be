//! The statements of `durable-postgres-sql` with their parameters bound, and their rows read
//! back into the port's types.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use durable_core::store::{
    ClaimedRun, DueSchedules, NewTask, RunRef, ScheduleAdvance, ScheduleRecord, ScheduleSpec,
};
use durable_core::{SpawnResult, StoreError, policy};
use durable_postgres_sql::statements as sql;
use serde_json::Value;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{Executor, Postgres};
use uuid::Uuid;

use crate::convert::{count, get, int4, json, opt_micros, to_json};
use crate::error::{Ctx, map_sqlx, unexpected};

/// A bound statement.
pub(crate) type Statement<'q> = Query<'q, Postgres, PgArguments>;

/// A spawn's parameters, converted once (a retried call binds them again).
pub(crate) struct SpawnArgs<'t> {
    task: &'t NewTask,
    delay: Option<i64>,
    retry_strategy: Value,
    cancellation: Value,
}

impl<'t> SpawnArgs<'t> {
    pub(crate) fn new(task: &'t NewTask) -> Result<Self, StoreError> {
        policy::validate_queue_name(&task.queue).map_err(StoreError::invalid)?;
        Ok(SpawnArgs {
            task,
            delay: opt_micros("spawn delay", task.delay)?,
            retry_strategy: to_json("retry strategy", &task.retry_strategy)?,
            cancellation: to_json("cancellation policy", &task.cancellation)?,
        })
    }

    pub(crate) fn statement(&self) -> Statement<'_> {
        let task = self.task;
        sqlx::query(sql::SPAWN_TASK)
            .bind(&task.queue)
            .bind(&task.task_name)
            .bind(Json(&task.params))
            .bind(Json(&task.headers))
            .bind(int4(u64::from(task.max_attempts.max(1))))
            .bind(Json(&self.retry_strategy))
            .bind(Json(&self.cancellation))
            .bind(task.idempotency_key.as_deref())
            .bind(task.parent_task_id)
            .bind(self.delay)
    }
}

/// Reads the row of `SPAWN_TASK`.
pub(crate) fn spawn_result(row: &PgRow) -> Result<SpawnResult, StoreError> {
    Ok(SpawnResult {
        task_id: get(row, "task_id")?,
        run_id: get(row, "run_id")?,
        attempt: count(row, "attempt")?,
        created: get(row, "created")?,
    })
}

/// Spawns on any executor (an application's transaction).
pub(crate) async fn spawn_on<'c, E>(executor: E, task: &NewTask) -> Result<SpawnResult, StoreError>
where
    E: Executor<'c, Database = Postgres>,
{
    let args = SpawnArgs::new(task)?;
    let rows = args
        .statement()
        .fetch_all(executor)
        .await
        .map_err(|e| map_sqlx(e, Ctx::None))?;
    spawn_result(first(&rows)?)
}

/// The parameters of `SPAWN_TASKS`, one array per column, converted once (a retried call
/// binds them again).
pub(crate) struct SpawnManyArgs<'t> {
    queues: Vec<&'t str>,
    task_names: Vec<&'t str>,
    params: Vec<Json<&'t Value>>,
    headers: Vec<Json<&'t BTreeMap<String, Value>>>,
    max_attempts: Vec<i32>,
    retry_strategies: Vec<Value>,
    cancellations: Vec<Value>,
    idempotency_keys: Vec<Option<&'t str>>,
    parent_task_ids: Vec<Option<Uuid>>,
    delays: Vec<Option<i64>>,
}

impl<'t> SpawnManyArgs<'t> {
    pub(crate) fn new(tasks: &'t [NewTask]) -> Result<Self, StoreError> {
        let n = tasks.len();
        let mut args = SpawnManyArgs {
            queues: Vec::with_capacity(n),
            task_names: Vec::with_capacity(n),
            params: Vec::with_capacity(n),
            headers: Vec::with_capacity(n),
            max_attempts: Vec::with_capacity(n),
            retry_strategies: Vec::with_capacity(n),
            cancellations: Vec::with_capacity(n),
            idempotency_keys: Vec::with_capacity(n),
            parent_task_ids: Vec::with_capacity(n),
            delays: Vec::with_capacity(n),
        };
        for task in tasks {
            policy::validate_queue_name(&task.queue).map_err(StoreError::invalid)?;
            args.queues.push(&task.queue);
            args.task_names.push(&task.task_name);
            args.params.push(Json(&task.params));
            args.headers.push(Json(&task.headers));
            args.max_attempts
                .push(int4(u64::from(task.max_attempts.max(1))));
            args.retry_strategies
                .push(to_json("retry strategy", &task.retry_strategy)?);
            args.cancellations
                .push(to_json("cancellation policy", &task.cancellation)?);
            args.idempotency_keys.push(task.idempotency_key.as_deref());
            args.parent_task_ids.push(task.parent_task_id);
            args.delays.push(opt_micros("spawn delay", task.delay)?);
        }
        Ok(args)
    }

    pub(crate) fn statement(&self) -> Statement<'_> {
        sqlx::query(sql::SPAWN_TASKS)
            .bind(&self.queues)
            .bind(&self.task_names)
            .bind(&self.params)
            .bind(&self.headers)
            .bind(&self.max_attempts)
            .bind(&self.retry_strategies)
            .bind(&self.cancellations)
            .bind(&self.idempotency_keys)
            .bind(&self.parent_task_ids)
            .bind(&self.delays)
    }
}

/// Reads the rows of `SPAWN_TASKS`, checking that they answer for the `expected` tasks in
/// order.
pub(crate) fn spawn_results(
    rows: &[PgRow],
    expected: usize,
) -> Result<Vec<SpawnResult>, StoreError> {
    if rows.len() != expected {
        return Err(unexpected(format!(
            "spawn_tasks answered {} rows for {expected} tasks",
            rows.len()
        )));
    }
    rows.iter().map(spawn_result).collect()
}

/// Spawns several tasks on any executor (an application's transaction), in one statement.
pub(crate) async fn spawn_many_on<'c, E>(
    executor: E,
    tasks: &[NewTask],
) -> Result<Vec<SpawnResult>, StoreError>
where
    E: Executor<'c, Database = Postgres>,
{
    if tasks.is_empty() {
        return Ok(Vec::new());
    }
    let args = SpawnManyArgs::new(tasks)?;
    let rows = args
        .statement()
        .fetch_all(executor)
        .await
        .map_err(|e| map_sqlx(e, Ctx::None))?;
    spawn_results(&rows, tasks.len())
}

/// `EMIT_EVENT` with its parameters (the queue name must have been validated).
pub(crate) fn emit<'q>(queue: &'q str, name: &'q str, payload: &'q Value) -> Statement<'q> {
    sqlx::query(sql::EMIT_EVENT)
        .bind(queue)
        .bind(name)
        .bind(Json(payload))
}

/// Emits on any executor (an application's transaction).
pub(crate) async fn emit_on<'c, E>(
    executor: E,
    queue: &str,
    name: &str,
    payload: &Value,
) -> Result<bool, StoreError>
where
    E: Executor<'c, Database = Postgres>,
{
    policy::validate_queue_name(queue).map_err(StoreError::invalid)?;
    let rows = emit(queue, name, payload)
        .fetch_all(executor)
        .await
        .map_err(|e| map_sqlx(e, Ctx::None))?;
    get(first(&rows)?, "first")
}

/// The first row of a statement that returns exactly one.
pub(crate) fn first(rows: &[PgRow]) -> Result<&PgRow, StoreError> {
    rows.first()
        .ok_or_else(|| unexpected("a durable function returned no row"))
}

/// Reads a claimed run from a row of `CLAIM_RUNS`.
pub(crate) fn claimed_run(
    queue: &str,
    row: &PgRow,
    now: DateTime<Utc>,
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
pub(crate) fn schedule_record(row: &PgRow) -> Result<ScheduleRecord, StoreError> {
    Ok(ScheduleRecord {
        spec: ScheduleSpec {
            queue: get(row, "queue_name")?,
            name: get(row, "schedule_name")?,
            cron: get(row, "cron")?,
            task_name: get(row, "task_name")?,
            params: json(row, "params")?,
            headers: json::<BTreeMap<String, Value>>(row, "headers")?,
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

/// Reads the rows of `DUE_SCHEDULES`: the schedules, then one summary row.
pub(crate) fn due_schedules(rows: &[PgRow]) -> Result<DueSchedules, StoreError> {
    let (summary, due) = rows
        .split_last()
        .ok_or_else(|| unexpected("due_schedules returned no summary row"))?;
    if get::<Option<String>>(summary, "schedule_name")?.is_some() {
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

/// Reads the row of `ADVANCE_SCHEDULE`.
pub(crate) fn schedule_advance(row: &PgRow) -> Result<ScheduleAdvance, StoreError> {
    if !get::<bool>(row, "advanced")? {
        return Ok(ScheduleAdvance::Stale);
    }
    if get::<Option<Uuid>>(row, "task_id")?.is_none() {
        return Ok(ScheduleAdvance::Moved);
    }
    Ok(ScheduleAdvance::Fired(spawn_result(row)?))
}
