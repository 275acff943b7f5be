//! [`Executor`]: what a transactional spawn or emit runs on, and the two calls made on it.

use std::future::Future;
use std::pin::Pin;

use durable_core::store::NewTask;
use durable_core::{SpawnResult, StoreError, policy};
use durable_postgres_sql::statements as sql;
use serde_json::Value;
use tokio_postgres::Row;
use tokio_postgres::types::{Json, ToSql, Type};

use crate::convert::{count, get, int4, opt_micros, to_json};
use crate::error::{Ctx, map_pg, unexpected};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A connection, or a transaction on one, that [`Durable::spawn_with`](crate::Durable::spawn_with)
/// and the other `_with` methods run on: the statement runs there, so a spawn inside a
/// transaction exists if and only if that transaction commits.
///
/// Implemented for what applications hold:
///
/// - [`tokio_postgres::Client`] and [`tokio_postgres::Transaction`]: the statement is sent with
///   its parameter types (`query_typed`), one round trip, nothing prepared on the connection;
/// - [`deadpool_postgres::Object`] (the pool's client), [`deadpool_postgres::ClientWrapper`]
///   and [`deadpool_postgres::Transaction`]: the statement is prepared once per connection
///   through the pool's statement cache;
/// - references (`&C`, `&mut C`) to any of these.
///
/// The trait is sealed: the list above is complete. A `deadpool_postgres::Transaction` is not a
/// `tokio_postgres::GenericClient` (deadpool has its own), which is why this trait exists.
pub trait Executor: private::Sealed {}

pub(crate) mod private {
    use super::*;

    /// The method behind [`Executor`](super::Executor), out of users' reach.
    #[allow(unreachable_pub)] // sealed-trait pattern: public, but not nameable outside the crate
    pub trait Sealed: Send + Sync {
        /// Runs one of the statements of `durable-postgres-sql` with `params` of `types`.
        fn run<'a>(
            &'a self,
            statement: &'static str,
            types: &'static [Type],
            params: &'a [&'a (dyn ToSql + Sync)],
        ) -> BoxFuture<'a, Result<Vec<Row>, tokio_postgres::Error>>;
    }
}

/// Sends the statement with its parameter types: one round trip, nothing left prepared.
macro_rules! typed_executor {
    ($($ty:ty),*) => {$(
        impl private::Sealed for $ty {
            fn run<'a>(
                &'a self,
                statement: &'static str,
                types: &'static [Type],
                params: &'a [&'a (dyn ToSql + Sync)],
            ) -> BoxFuture<'a, Result<Vec<Row>, tokio_postgres::Error>> {
                Box::pin(async move {
                    let typed: Vec<(&(dyn ToSql + Sync), Type)> = params
                        .iter()
                        .copied()
                        .zip(types.iter().cloned())
                        .collect();
                    self.query_typed(statement, &typed).await
                })
            }
        }
        impl Executor for $ty {}
    )*};
}

/// Prepares the statement once per connection through deadpool's statement cache.
macro_rules! cached_executor {
    ($($ty:ty),*) => {$(
        impl private::Sealed for $ty {
            fn run<'a>(
                &'a self,
                statement: &'static str,
                _types: &'static [Type],
                params: &'a [&'a (dyn ToSql + Sync)],
            ) -> BoxFuture<'a, Result<Vec<Row>, tokio_postgres::Error>> {
                Box::pin(async move {
                    let prepared = self.prepare_cached(statement).await?;
                    self.query(&prepared, params).await
                })
            }
        }
        impl Executor for $ty {}
    )*};
}

typed_executor!(tokio_postgres::Client, tokio_postgres::Transaction<'_>);
cached_executor!(
    deadpool_postgres::Object,
    deadpool_postgres::ClientWrapper,
    deadpool_postgres::Transaction<'_>
);

impl<C: private::Sealed + ?Sized> private::Sealed for &C {
    fn run<'a>(
        &'a self,
        statement: &'static str,
        types: &'static [Type],
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> BoxFuture<'a, Result<Vec<Row>, tokio_postgres::Error>> {
        (**self).run(statement, types, params)
    }
}
impl<C: Executor + ?Sized> Executor for &C {}

impl<C: private::Sealed + ?Sized> private::Sealed for &mut C {
    fn run<'a>(
        &'a self,
        statement: &'static str,
        types: &'static [Type],
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> BoxFuture<'a, Result<Vec<Row>, tokio_postgres::Error>> {
        (**self).run(statement, types, params)
    }
}
impl<C: Executor + ?Sized> Executor for &mut C {}

/// The parameter types of [`sql::SPAWN_TASK`], as its casts spell them.
const SPAWN_TYPES: &[Type] = &[
    Type::TEXT,
    Type::TEXT,
    Type::JSONB,
    Type::JSONB,
    Type::INT4,
    Type::JSONB,
    Type::JSONB,
    Type::TEXT,
    Type::UUID,
    Type::INT8,
];

/// The parameter types of [`sql::SPAWN_TASKS`].
const SPAWN_MANY_TYPES: &[Type] = &[
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::JSONB_ARRAY,
    Type::JSONB_ARRAY,
    Type::INT4_ARRAY,
    Type::JSONB_ARRAY,
    Type::JSONB_ARRAY,
    Type::TEXT_ARRAY,
    Type::UUID_ARRAY,
    Type::INT8_ARRAY,
];

/// The parameter types of [`sql::EMIT_EVENT`].
const EMIT_TYPES: &[Type] = &[Type::TEXT, Type::TEXT, Type::JSONB];

/// Spawns `task` on `executor` (a pooled connection of the store, or an application's
/// transaction).
pub(crate) async fn spawn_on<C: Executor + ?Sized>(
    executor: &C,
    task: &NewTask,
) -> Result<SpawnResult, StoreError> {
    policy::validate_queue_name(&task.queue).map_err(StoreError::invalid)?;
    let delay = opt_micros("spawn delay", task.delay)?;
    let retry_strategy = to_json("retry strategy", &task.retry_strategy)?;
    let cancellation = to_json("cancellation policy", &task.cancellation)?;
    let max_attempts = int4(u64::from(task.max_attempts.max(1)));
    let headers = Json(&task.headers);
    let params: [&(dyn ToSql + Sync); 10] = [
        &task.queue,
        &task.task_name,
        &task.params,
        &headers,
        &max_attempts,
        &retry_strategy,
        &cancellation,
        &task.idempotency_key,
        &task.parent_task_id,
        &delay,
    ];
    let rows = executor
        .run(sql::SPAWN_TASK, SPAWN_TYPES, &params)
        .await
        .map_err(|e| map_pg(e, Ctx::None))?;
    let row = first(&rows, "spawn_task")?;
    Ok(SpawnResult {
        task_id: get(row, "task_id")?,
        run_id: get(row, "run_id")?,
        attempt: count(row, "attempt")?,
        created: get(row, "created")?,
    })
}

/// Spawns `tasks` on `executor` in one statement (a pooled connection of the store, or an
/// application's transaction).
pub(crate) async fn spawn_many_on<C: Executor + ?Sized>(
    executor: &C,
    tasks: &[NewTask],
) -> Result<Vec<SpawnResult>, StoreError> {
    if tasks.is_empty() {
        return Ok(Vec::new());
    }
    let n = tasks.len();
    let mut queues = Vec::with_capacity(n);
    let mut task_names = Vec::with_capacity(n);
    let mut params = Vec::with_capacity(n);
    let mut headers = Vec::with_capacity(n);
    let mut max_attempts = Vec::with_capacity(n);
    let mut retry_strategies = Vec::with_capacity(n);
    let mut cancellations = Vec::with_capacity(n);
    let mut idempotency_keys = Vec::with_capacity(n);
    let mut parent_task_ids = Vec::with_capacity(n);
    let mut delays = Vec::with_capacity(n);
    for task in tasks {
        policy::validate_queue_name(&task.queue).map_err(StoreError::invalid)?;
        queues.push(task.queue.as_str());
        task_names.push(task.task_name.as_str());
        params.push(&task.params);
        headers.push(Json(&task.headers));
        max_attempts.push(int4(u64::from(task.max_attempts.max(1))));
        retry_strategies.push(to_json("retry strategy", &task.retry_strategy)?);
        cancellations.push(to_json("cancellation policy", &task.cancellation)?);
        idempotency_keys.push(task.idempotency_key.as_deref());
        parent_task_ids.push(task.parent_task_id);
        delays.push(opt_micros("spawn delay", task.delay)?);
    }
    let params: [&(dyn ToSql + Sync); 10] = [
        &queues,
        &task_names,
        &params,
        &headers,
        &max_attempts,
        &retry_strategies,
        &cancellations,
        &idempotency_keys,
        &parent_task_ids,
        &delays,
    ];
    let rows = executor
        .run(sql::SPAWN_TASKS, SPAWN_MANY_TYPES, &params)
        .await
        .map_err(|e| map_pg(e, Ctx::None))?;
    if rows.len() != n {
        return Err(unexpected(format!(
            "spawn_tasks answered {} rows for {n} tasks",
            rows.len()
        )));
    }
    rows.iter()
        .map(|row| {
            Ok(SpawnResult {
                task_id: get(row, "task_id")?,
                run_id: get(row, "run_id")?,
                attempt: count(row, "attempt")?,
                created: get(row, "created")?,
            })
        })
        .collect()
}

/// Emits an event on `executor`. Returns whether this emit was the first.
pub(crate) async fn emit_on<C: Executor + ?Sized>(
    executor: &C,
    queue: &str,
    name: &str,
    payload: &Value,
) -> Result<bool, StoreError> {
    policy::validate_queue_name(queue).map_err(StoreError::invalid)?;
    let params: [&(dyn ToSql + Sync); 3] = [&queue, &name, payload];
    let rows = executor
        .run(sql::EMIT_EVENT, EMIT_TYPES, &params)
        .await
        .map_err(|e| map_pg(e, Ctx::None))?;
    get(first(&rows, "emit_event")?, "first")
}

/// The first row of a result that has one.
pub(crate) fn first<'r>(rows: &'r [Row], function: &str) -> Result<&'r Row, StoreError> {
    rows.first()
        .ok_or_else(|| unexpected(format!("{function} returned no row")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_refuses_an_empty_result() {
        assert!(first(&[], "f").is_err());
    }

    #[test]
    fn parameter_types_match_the_statements() {
        assert!(sql::SPAWN_TASK.contains(&format!("${}::", SPAWN_TYPES.len())));
        assert!(!sql::SPAWN_TASK.contains(&format!("${}::", SPAWN_TYPES.len() + 1)));
        assert!(sql::SPAWN_TASKS.contains(&format!("${}::", SPAWN_MANY_TYPES.len())));
        assert!(!sql::SPAWN_TASKS.contains(&format!("${}::", SPAWN_MANY_TYPES.len() + 1)));
        assert!(sql::EMIT_EVENT.contains(&format!("${}::", EMIT_TYPES.len())));
        assert!(!sql::EMIT_EVENT.contains(&format!("${}::", EMIT_TYPES.len() + 1)));
    }
}
