//! The calls an application's own transaction can make too: spawn, spawn many, emit. Each is a
//! statement with its parameters and a reader of its rows, run by [`PgStore`](crate::PgStore) on
//! its pool and by the adapters on the application's connection or transaction (their `_with`
//! methods), so both paths send and read exactly the same thing.

use durable_core::store::NewTask;
use durable_core::{SpawnResult, StoreError, policy};
use durable_postgres_sql::statements as sql;
use serde_json::Value;

use crate::decode::{int4, only_row, opt_micros, read, to_json};
use crate::driver::{Driver, DriverError, Param};
use crate::error::{Ctx, store_error, unexpected};

/// A statement with its parameters, and how to read its rows.
pub trait Call {
    /// What the rows mean.
    type Output;

    /// The statement of `durable-postgres-sql`.
    const STATEMENT: &'static str;

    /// The parameters, in order.
    fn params(&self) -> Vec<Param<'_>>;

    /// Reads the rows the statement returned on driver `D`.
    fn read<D: Driver>(&self, rows: &[D::Row]) -> Result<Self::Output, StoreError>;

    /// What the statement's `result` on driver `D` means: its rows read, or its failure mapped
    /// to a [`StoreError`].
    fn finish<D: Driver>(
        &self,
        result: Result<Vec<D::Row>, DriverError>,
    ) -> Result<Self::Output, StoreError> {
        let rows = result.map_err(|e| store_error(D::NAME, e, Ctx::None))?;
        self.read::<D>(&rows)
    }
}

/// Checks a queue name at the store's boundary (the client has checked it already; the store
/// is a public API of its own).
pub(crate) fn checked_queue(queue: &str) -> Result<&str, StoreError> {
    policy::validate_queue_name(queue).map_err(StoreError::invalid)?;
    Ok(queue)
}

/// The values of a spawn that are converted before they are sent.
struct SpawnValues {
    headers: Value,
    max_attempts: i32,
    retry_strategy: Value,
    cancellation: Value,
    delay: Option<i64>,
}

impl SpawnValues {
    fn new(task: &NewTask) -> Result<Self, StoreError> {
        checked_queue(&task.queue)?;
        Ok(SpawnValues {
            headers: to_json("headers", &task.headers)?,
            max_attempts: int4(u64::from(task.max_attempts.max(1))),
            retry_strategy: to_json("retry strategy", &task.retry_strategy)?,
            cancellation: to_json("cancellation policy", &task.cancellation)?,
            delay: opt_micros("spawn delay", task.delay)?,
        })
    }
}

/// [`sql::SPAWN_TASK`]: creates a task (or finds the one with its idempotency key).
pub struct Spawn<'t> {
    task: &'t NewTask,
    values: SpawnValues,
}

impl<'t> Spawn<'t> {
    /// The spawn of `task`, its values checked and converted.
    pub fn new(task: &'t NewTask) -> Result<Self, StoreError> {
        Ok(Spawn {
            task,
            values: SpawnValues::new(task)?,
        })
    }
}

impl Call for Spawn<'_> {
    type Output = SpawnResult;
    const STATEMENT: &'static str = sql::SPAWN_TASK;

    fn params(&self) -> Vec<Param<'_>> {
        let (task, values) = (self.task, &self.values);
        vec![
            Param::Text(Some(&task.queue)),
            Param::Text(Some(&task.task_name)),
            Param::Jsonb(Some(&task.params)),
            Param::Jsonb(Some(&values.headers)),
            Param::Int4(Some(values.max_attempts)),
            Param::Jsonb(Some(&values.retry_strategy)),
            Param::Jsonb(Some(&values.cancellation)),
            Param::Text(task.idempotency_key.as_deref()),
            Param::Uuid(task.parent_task_id),
            Param::Int8(values.delay),
        ]
    }

    fn read<D: Driver>(&self, rows: &[D::Row]) -> Result<SpawnResult, StoreError> {
        only_row::<D>(rows, "spawn_task")?.spawn_result()
    }
}

/// [`sql::SPAWN_TASKS`]: creates several tasks in one statement, all or none.
pub struct SpawnMany<'t> {
    tasks: &'t [NewTask],
    values: Vec<SpawnValues>,
}

impl<'t> SpawnMany<'t> {
    /// The spawn of `tasks`, their values checked and converted.
    pub fn new(tasks: &'t [NewTask]) -> Result<Self, StoreError> {
        Ok(SpawnMany {
            tasks,
            values: tasks
                .iter()
                .map(SpawnValues::new)
                .collect::<Result<_, _>>()?,
        })
    }

    /// Whether there is nothing to spawn (the statement need not run).
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

impl Call for SpawnMany<'_> {
    type Output = Vec<SpawnResult>;
    const STATEMENT: &'static str = sql::SPAWN_TASKS;

    fn params(&self) -> Vec<Param<'_>> {
        let tasks = self.tasks;
        let values = &self.values;
        vec![
            Param::TextArray(tasks.iter().map(|t| Some(t.queue.as_str())).collect()),
            Param::TextArray(tasks.iter().map(|t| Some(t.task_name.as_str())).collect()),
            Param::JsonbArray(tasks.iter().map(|t| Some(&t.params)).collect()),
            Param::JsonbArray(values.iter().map(|v| Some(&v.headers)).collect()),
            Param::Int4Array(values.iter().map(|v| Some(v.max_attempts)).collect()),
            Param::JsonbArray(values.iter().map(|v| Some(&v.retry_strategy)).collect()),
            Param::JsonbArray(values.iter().map(|v| Some(&v.cancellation)).collect()),
            Param::TextArray(tasks.iter().map(|t| t.idempotency_key.as_deref()).collect()),
            Param::UuidArray(tasks.iter().map(|t| t.parent_task_id).collect()),
            Param::Int8Array(values.iter().map(|v| v.delay).collect()),
        ]
    }

    fn read<D: Driver>(&self, rows: &[D::Row]) -> Result<Vec<SpawnResult>, StoreError> {
        if rows.len() != self.tasks.len() {
            return Err(unexpected(
                D::NAME,
                format!(
                    "spawn_tasks answered {} rows for {} tasks",
                    rows.len(),
                    self.tasks.len()
                ),
            ));
        }
        rows.iter()
            .map(|row| read::<D>(row).spawn_result())
            .collect()
    }
}

/// [`sql::EMIT_EVENT`]: emits an event (the first emit of a name wins).
pub struct Emit<'a> {
    queue: &'a str,
    name: &'a str,
    payload: &'a Value,
}

impl<'a> Emit<'a> {
    /// The emit of event `name` with `payload` in `queue`.
    pub fn new(queue: &'a str, name: &'a str, payload: &'a Value) -> Result<Self, StoreError> {
        Ok(Emit {
            queue: checked_queue(queue)?,
            name,
            payload,
        })
    }
}

impl Call for Emit<'_> {
    /// Whether this emit was the first of its name.
    type Output = bool;
    const STATEMENT: &'static str = sql::EMIT_EVENT;

    fn params(&self) -> Vec<Param<'_>> {
        vec![
            Param::Text(Some(self.queue)),
            Param::Text(Some(self.name)),
            Param::Jsonb(Some(self.payload)),
        ]
    }

    fn read<D: Driver>(&self, rows: &[D::Row]) -> Result<bool, StoreError> {
        only_row::<D>(rows, "emit_event")?.get("first")
    }
}
