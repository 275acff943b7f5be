//! [`Durable`], the client on PostgreSQL through sqlx, and its [`DurableBuilder`].

use std::ops::Deref;

use durable_core::telemetry::record_spawned;
use durable_core::{
    CancellationPolicy, DurableError, DurableResult, RetryStrategy, SpawnOptions, SpawnResult, Task,
};
use serde::Serialize;
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgPool, Postgres};

use crate::migrate::migrate;
use crate::queries::{emit_on, spawn_many_on, spawn_on};
use crate::store::SqlxStore;

/// The environment variable read for the database URL when the builder is given none.
pub const DATABASE_URL_ENV: &str = "DURABLE_DATABASE_URL";

/// The client of `durable` on PostgreSQL: spawns tasks, emits events, cancels, inspects, and
/// starts workers.
///
/// It dereferences to [`durable_core::Durable`], which has `register`, `spawn`,
/// `spawn_with_options`, `spawn_many`, `spawn_by_name`, `emit_event`, `cancel_task`,
/// `retry_task`, `get_task_result`, `start_worker` and `work_until_idle`. On top of those it can
/// spawn and emit inside an application's transaction (`spawn_with`, `spawn_with_options_with`,
/// `spawn_many_with`, `spawn_by_name_with`, `emit_event_with`). Cheap to clone; clones share the pool, the store
/// and the task registry.
///
/// ```no_run
/// use durable_postgres_sqlx::Durable;
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let client = Durable::builder()
///     .database_url("postgres://localhost/myapp")
///     .queue_name("research")
///     .build()
///     .await?;
/// println!("tasks go to queue {}", client.queue_name());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Durable {
    inner: durable_core::Durable<SqlxStore>,
}

impl Deref for Durable {
    type Target = durable_core::Durable<SqlxStore>;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl From<durable_core::Durable<SqlxStore>> for Durable {
    fn from(inner: durable_core::Durable<SqlxStore>) -> Self {
        Durable { inner }
    }
}

impl Durable {
    /// A builder; see [`DurableBuilder`].
    pub fn builder() -> DurableBuilder {
        DurableBuilder::default()
    }

    /// The connection pool, for the application's own queries and transactions.
    pub fn pool(&self) -> &PgPool {
        self.inner.store().pool()
    }

    /// The store behind this client.
    pub fn store(&self) -> &SqlxStore {
        self.inner.store()
    }

    /// The generic client this one wraps.
    pub fn into_inner(self) -> durable_core::Durable<SqlxStore> {
        self.inner
    }

    /// Spawns task `T` with default options on `executor`: typically `&mut *tx` for a
    /// transaction of the application, so that the task exists if and only if the transaction
    /// commits. Workers are woken when it commits.
    ///
    /// ```no_run
    /// # use durable_postgres_sqlx::Durable;
    /// # use durable_core::{Task, TaskContext, TaskResult, async_trait};
    /// # struct ProcessOrder;
    /// # #[async_trait]
    /// # impl Task for ProcessOrder {
    /// #     const NAME: &'static str = "process-order";
    /// #     type Params = i64;
    /// #     type Output = ();
    /// #     async fn run(_: i64, _: TaskContext) -> TaskResult<()> { Ok(()) }
    /// # }
    /// # async fn example(client: Durable) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = client.pool().begin().await?;
    /// sqlx::query("INSERT INTO orders (id, status) VALUES ($1, $2)")
    ///     .bind(42_i64)
    ///     .bind("pending")
    ///     .execute(&mut *tx)
    ///     .await?;
    /// client.spawn_with::<ProcessOrder, _>(&mut *tx, 42).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn spawn_with<'c, T, E>(
        &self,
        executor: E,
        params: T::Params,
    ) -> DurableResult<SpawnResult>
    where
        T: Task,
        E: Executor<'c, Database = Postgres>,
    {
        self.spawn_with_options_with::<T, E>(executor, params, SpawnOptions::default())
            .await
    }

    /// Spawns task `T` with `options` on `executor` (see [`Durable::spawn_with`]).
    pub async fn spawn_with_options_with<'c, T, E>(
        &self,
        executor: E,
        params: T::Params,
        options: SpawnOptions,
    ) -> DurableResult<SpawnResult>
    where
        T: Task,
        E: Executor<'c, Database = Postgres>,
    {
        let task = self.inner.prepare_spawn::<T>(params, options)?;
        let result = spawn_on(executor, &task).await?;
        record_spawned(&task.queue, &task.task_name, std::slice::from_ref(&result));
        Ok(result)
    }

    /// Spawns a registered task by name on `executor` (see [`Durable::spawn_with`]); the params
    /// are checked against the task's `Params`.
    pub async fn spawn_by_name_with<'c, E>(
        &self,
        executor: E,
        task_name: &str,
        params: Value,
        options: SpawnOptions,
    ) -> DurableResult<SpawnResult>
    where
        E: Executor<'c, Database = Postgres>,
    {
        let task = self
            .inner
            .prepare_spawn_by_name(task_name, params, options)?;
        let result = spawn_on(executor, &task).await?;
        record_spawned(&task.queue, &task.task_name, std::slice::from_ref(&result));
        Ok(result)
    }

    /// Spawns one task `T` per element of `params`, all with `options`, on `executor` in one
    /// statement (see [`Durable::spawn_with`] and `spawn_many`): the tasks exist if and only
    /// if the transaction commits. `options` may not hold an idempotency key.
    pub async fn spawn_many_with<'c, T, E>(
        &self,
        executor: E,
        params: Vec<T::Params>,
        options: SpawnOptions,
    ) -> DurableResult<Vec<SpawnResult>>
    where
        T: Task,
        E: Executor<'c, Database = Postgres>,
    {
        let tasks = self.inner.prepare_spawn_many::<T>(params, options)?;
        let results = spawn_many_on(executor, &tasks).await?;
        if let Some(first) = tasks.first() {
            // One spawn_many shares its queue and task name.
            record_spawned(&first.queue, &first.task_name, &results);
        }
        Ok(results)
    }

    /// Emits an event in `queue` (default: the client's) on `executor`: the event exists, and
    /// the tasks awaiting it wake, only if the transaction commits. The first emit of a name
    /// wins; returns whether this one was the first.
    ///
    /// ```no_run
    /// # async fn example(client: durable_postgres_sqlx::Durable) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = client.pool().begin().await?;
    /// client
    ///     .emit_event_with(&mut *tx, "approved:42", &serde_json::json!({"by": "admin"}), None)
    ///     .await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn emit_event_with<'c, E, P>(
        &self,
        executor: E,
        event_name: &str,
        payload: &P,
        queue: Option<&str>,
    ) -> DurableResult<bool>
    where
        E: Executor<'c, Database = Postgres>,
        P: Serialize + ?Sized,
    {
        let (queue, payload) = self.inner.prepare_emit(event_name, payload, queue)?;
        Ok(emit_on(executor, &queue, event_name, &payload).await?)
    }
}

/// Configures a [`Durable`] client: where the database is, the client's queue and defaults, and
/// whether to migrate and to listen for wake-ups.
///
/// ```no_run
/// use std::time::Duration;
/// use durable_postgres_sqlx::Durable;
/// use durable_core::RetryStrategy;
///
/// # async fn example() -> Result<(), durable_core::DurableError> {
/// let client = Durable::builder()
///     .database_url("postgres://localhost/myapp")
///     .queue_name("emails")
///     .default_max_attempts(3)
///     .default_retry_strategy(RetryStrategy::Fixed { base_delay: Duration::from_secs(5) })
///     .max_connections(20)
///     .build()
///     .await?;
/// # let _ = client;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DurableBuilder {
    core: durable_core::DurableBuilder,
    database_url: Option<String>,
    pool: Option<PgPool>,
    migrate: bool,
    listen: bool,
    max_connections: Option<u32>,
    call_timeout: Option<std::time::Duration>,
}

impl Default for DurableBuilder {
    fn default() -> Self {
        DurableBuilder {
            core: durable_core::DurableBuilder::new(),
            database_url: None,
            pool: None,
            migrate: true,
            listen: true,
            max_connections: None,
            call_timeout: None,
        }
    }
}

impl std::fmt::Debug for DurableBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: it is not printed.
        f.debug_struct("DurableBuilder")
            .field("defaults", self.core.defaults())
            .field("database_url", &self.database_url.as_ref().map(|_| "<set>"))
            .field("pool", &self.pool.is_some())
            .field("migrate", &self.migrate)
            .field("listen", &self.listen)
            .field("max_connections", &self.max_connections)
            .field("call_timeout", &self.call_timeout)
            .finish()
    }
}

impl DurableBuilder {
    /// A builder with the defaults: queue `default`, migrations applied, listening for
    /// wake-ups. The same as [`Durable::builder`].
    pub fn new() -> Self {
        DurableBuilder::default()
    }

    /// The database to connect to. Without it (and without [`pool`](Self::pool)), `build` reads
    /// the environment variable `DURABLE_DATABASE_URL`.
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.database_url = Some(url.into());
        self
    }

    /// Runs on an existing pool (for example the application's own) instead of connecting.
    /// Takes precedence over [`database_url`](Self::database_url).
    pub fn pool(mut self, pool: PgPool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// The most connections of the pool that `build` creates from a URL. Default 10. Ignored
    /// with [`pool`](Self::pool).
    pub fn max_connections(mut self, max_connections: u32) -> Self {
        self.max_connections = Some(max_connections);
        self
    }

    /// The queue this client spawns into and its workers claim from. Default `default`.
    pub fn queue_name(mut self, queue: impl Into<String>) -> Self {
        self.core = self.core.queue_name(queue);
        self
    }

    /// Attempts a task gets when its spawn does not say. Default 5.
    pub fn default_max_attempts(mut self, attempts: u32) -> Self {
        self.core = self.core.default_max_attempts(attempts);
        self
    }

    /// Retry strategy when a spawn does not say. Default: [`RetryStrategy::default`].
    pub fn default_retry_strategy(mut self, strategy: RetryStrategy) -> Self {
        self.core = self.core.default_retry_strategy(strategy);
        self
    }

    /// Cancellation policy when a spawn does not say. Default: none.
    pub fn default_cancellation(mut self, policy: CancellationPolicy) -> Self {
        self.core = self.core.default_cancellation(policy);
        self
    }

    /// The largest JSON value stored for a task (params, headers, step results, output, event
    /// payloads), in bytes. Default 4 MiB; see
    /// [`ClientDefaults::max_payload_bytes`](durable_core::ClientDefaults::max_payload_bytes).
    pub fn max_payload_bytes(mut self, bytes: usize) -> Self {
        self.core = self.core.max_payload_bytes(bytes);
        self
    }

    /// Whether `build` applies the schema migrations (see [`migrate`](crate::migrate)).
    /// Default `true`; turn it off when migrations run separately, before deployment.
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// Whether the store `LISTEN`s for wake-ups, so that workers start new work within
    /// milliseconds. Default `true`; turn it off behind a connection pooler that breaks
    /// `LISTEN` (workers then poll, see [`SqlxStore::poll_only`]).
    pub fn listen(mut self, listen: bool) -> Self {
        self.listen = listen;
        self
    }

    /// How long one call to PostgreSQL may wait for its answer before it fails and its
    /// connection is closed. Default [`DEFAULT_CALL_TIMEOUT`](crate::DEFAULT_CALL_TIMEOUT)
    /// (30 s); see [`SqlxStore::set_call_timeout`].
    pub fn call_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.call_timeout = Some(timeout);
        self
    }

    /// Connects (or takes the pool), migrates unless told not to, creates the client's queue and
    /// returns the client.
    ///
    /// Fails with [`DurableError::Config`] when no database is given (neither a URL, a pool, nor
    /// `DURABLE_DATABASE_URL`) or the database cannot be reached.
    pub async fn build(self) -> DurableResult<Durable> {
        let pool = match self.pool {
            Some(pool) => pool,
            None => {
                let url = match self.database_url {
                    Some(url) => url,
                    None => std::env::var(DATABASE_URL_ENV).map_err(|_| {
                        DurableError::config(
                            format!(
                                "no database given: call DurableBuilder::database_url or \
                                 DurableBuilder::pool, or set the environment variable \
                                 {DATABASE_URL_ENV}"
                            ),
                            None,
                        )
                    })?,
                };
                PgPoolOptions::new()
                    .max_connections(self.max_connections.unwrap_or(10).max(1))
                    .connect(&url)
                    .await
                    .map_err(|e| {
                        DurableError::config("could not connect to PostgreSQL", Some(Box::new(e)))
                    })?
            }
        };
        if self.migrate {
            migrate(&pool).await?;
        }
        let store = if self.listen {
            SqlxStore::new(pool)
        } else {
            SqlxStore::poll_only(pool)
        };
        if let Some(timeout) = self.call_timeout {
            store.set_call_timeout(timeout);
        }
        let inner = self.core.build_with_store(store).await?;
        Ok(Durable { inner })
    }
}
