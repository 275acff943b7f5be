//! The statements of `durable-postgres-sql` with their parameters bound, and their rows read
//! back into the port's types.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use durable_core::store::{ClaimedRun, NewTask, RunRef};
use durable_core::{SpawnResult, StoreError, policy};
use durable_postgres_sql::statements as sql;
use serde_json::Value;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{Executor, Postgres};

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
