//! [`Durable`], the client on PostgreSQL through tokio-postgres, and its [`DurableBuilder`].

use std::fmt;
use std::ops::Deref;

use deadpool_postgres::Pool;
use durable_core::telemetry::record_spawned;
use durable_core::{
    CancellationPolicy, DurableError, DurableResult, RetryStrategy, SpawnOptions, SpawnResult, Task,
};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::Socket;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};

use crate::connect::SharedConnector;
use crate::executor::{Executor, emit_on, spawn_many_on, spawn_on};
use crate::migrate::migrate;
use crate::store::NativeStore;

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
/// use durable_postgres_native::Durable;
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
    inner: durable_core::Durable<NativeStore>,
}

impl Deref for Durable {
    type Target = durable_core::Durable<NativeStore>;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl From<durable_core::Durable<NativeStore>> for Durable {
    fn from(inner: durable_core::Durable<NativeStore>) -> Self {
        Durable { inner }
    }
}

impl Durable {
    /// A builder; see [`DurableBuilder`].
    pub fn builder() -> DurableBuilder {
        DurableBuilder::default()
    }

    /// The connection pool, for the application's own queries and transactions.
    pub fn pool(&self) -> &Pool {
        self.inner.store().pool()
    }

    /// The store behind this client.
    pub fn store(&self) -> &NativeStore {
        self.inner.store()
    }

    /// The generic client this one wraps.
    pub fn into_inner(self) -> durable_core::Durable<NativeStore> {
        self.inner
    }

    /// Spawns task `T` with default options on `executor`: typically a transaction of the
    /// application (see [`Executor`] for what is accepted), so that the task exists if and only
    /// if the transaction commits. Workers are woken when it commits.
    ///
    /// ```no_run
    /// # use durable_postgres_native::Durable;
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
    /// let mut connection = client.pool().get().await?;
    /// let tx = connection.transaction().await?;
    /// tx.execute(
    ///     "INSERT INTO orders (id, status) VALUES ($1, $2)",
    ///     &[&42_i64, &"pending"],
    /// )
    /// .await?;
    /// client.spawn_with::<ProcessOrder, _>(&tx, 42).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn spawn_with<T, C>(
        &self,
        executor: &C,
        params: T::Params,
    ) -> DurableResult<SpawnResult>
    where
        T: Task,
        C: Executor + ?Sized,
    {
        self.spawn_with_options_with::<T, C>(executor, params, SpawnOptions::default())
            .await
    }

    /// Spawns task `T` with `options` on `executor` (see [`Durable::spawn_with`]).
    pub async fn spawn_with_options_with<T, C>(
        &self,
        executor: &C,
        params: T::Params,
        options: SpawnOptions,
    ) -> DurableResult<SpawnResult>
    where
        T: Task,
        C: Executor + ?Sized,
    {
        let task = self.inner.prepare_spawn::<T>(params, options)?;
        let result = spawn_on(executor, &task).await?;
        record_spawned(&task.queue, &task.task_name, std::slice::from_ref(&result));
        Ok(result)
    }

    /// Spawns a registered task by name on `executor` (see [`Durable::spawn_with`]); the params
    /// are checked against the task's `Params`.
    pub async fn spawn_by_name_with<C>(
        &self,
        executor: &C,
        task_name: &str,
        params: Value,
        options: SpawnOptions,
    ) -> DurableResult<SpawnResult>
    where
        C: Executor + ?Sized,
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
    pub async fn spawn_many_with<T, C>(
        &self,
        executor: &C,
        params: Vec<T::Params>,
        options: SpawnOptions,
    ) -> DurableResult<Vec<SpawnResult>>
    where
        T: Task,
        C: Executor + ?Sized,
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
    /// # async fn example(client: durable_postgres_native::Durable) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut connection = client.pool().get().await?;
    /// let tx = connection.transaction().await?;
    /// client
    ///     .emit_event_with(&tx, "approved:42", &serde_json::json!({"by": "admin"}), None)
    ///     .await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn emit_event_with<C, P>(
        &self,
        executor: &C,
        event_name: &str,
        payload: &P,
        queue: Option<&str>,
    ) -> DurableResult<bool>
    where
        C: Executor + ?Sized,
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
/// use durable_postgres_native::Durable;
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
///
/// # TLS
///
/// Connections are made without TLS unless [`tls`](Self::tls) is given a connector of
/// tokio-postgres (for example `postgres-native-tls`'s or `tokio-postgres-rustls`'s
/// `MakeTlsConnector`); it is used for the pool that `build` makes and for the `LISTEN`
/// connection. With your own [`pool`](Self::pool), give its manager the connector and pass the
/// same to `tls` for the `LISTEN` connection:
///
/// ```no_run
/// # async fn example<T>(tls: T) -> Result<(), Box<dyn std::error::Error>>
/// # where
/// #     T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket> + Clone + Send + Sync + 'static,
/// #     T::Stream: Send + Sync,
/// #     T::TlsConnect: Send + Sync,
/// #     <T::TlsConnect as tokio_postgres::tls::TlsConnect<tokio_postgres::Socket>>::Future: Send,
/// # {
/// use durable_postgres_native::Durable;
/// use durable_postgres_native::deadpool_postgres::{Manager, Pool};
///
/// let url = "postgres://app@db.internal/myapp?sslmode=require";
/// let pool = Pool::builder(Manager::new(url.parse()?, tls.clone())).build()?;
/// let client = Durable::builder().pool(pool).database_url(url).tls(tls).build().await?;
/// # let _ = client;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DurableBuilder {
    core: durable_core::DurableBuilder,
    settings: Option<Settings>,
    pool: Option<Pool>,
    connector: Option<SharedConnector>,
    migrate: bool,
    listen: bool,
    max_connections: Option<usize>,
    call_timeout: Option<std::time::Duration>,
}

/// Where the database is.
#[derive(Clone)]
enum Settings {
    Url(String),
    Config(Box<tokio_postgres::Config>),
}

impl Default for DurableBuilder {
    fn default() -> Self {
        DurableBuilder {
            core: durable_core::DurableBuilder::new(),
            settings: None,
            pool: None,
            connector: None,
            migrate: true,
            listen: true,
            max_connections: None,
            call_timeout: None,
        }
    }
}

impl fmt::Debug for DurableBuilder {
    // No URL: it may hold a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableBuilder")
            .field("core", &self.core)
            .field("database_given", &self.settings.is_some())
            .field("pool", &self.pool)
            .field("tls", &self.connector.is_some())
            .field("migrate", &self.migrate)
            .field("listen", &self.listen)
            .field("max_connections", &self.max_connections)
            .field("call_timeout", &self.call_timeout)
            .finish()
    }
}

impl DurableBuilder {
    /// A builder with the defaults: queue `default`, migrations applied, listening for
    /// wake-ups, no TLS. The same as [`Durable::builder`].
    pub fn new() -> Self {
        DurableBuilder::default()
    }

    /// The database to connect to, as a URL (`postgres://user:password@host/db`) or a
    /// key-value string (`host=... dbname=...`). Without it (and without
    /// [`pg_config`](Self::pg_config)), `build` reads the environment variable
    /// `DURABLE_DATABASE_URL`.
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.settings = Some(Settings::Url(url.into()));
        self
    }

    /// The database to connect to, as a [`tokio_postgres::Config`] (instead of
    /// [`database_url`](Self::database_url); the last one given wins).
    pub fn pg_config(mut self, config: tokio_postgres::Config) -> Self {
        self.settings = Some(Settings::Config(Box::new(config)));
        self
    }

    /// Runs on an existing pool (for example the application's own) instead of making one.
    ///
    /// A pool does not reveal its connection settings, and the `LISTEN` connection is made
    /// outside it: give them too ([`database_url`](Self::database_url),
    /// [`pg_config`](Self::pg_config) or `DURABLE_DATABASE_URL`), or turn
    /// [`listen`](Self::listen) off.
    pub fn pool(mut self, pool: Pool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// The TLS connector for the connections the client makes (the pool, unless given one,
    /// and the `LISTEN` connection). Default: no TLS. See [TLS](Self#tls).
    pub fn tls<T>(mut self, tls: T) -> Self
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send + Sync,
        T::TlsConnect: Send + Sync,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        self.connector = Some(SharedConnector::new(tls));
        self
    }

    /// The most connections of the pool that `build` creates. Default 10. Ignored with
    /// [`pool`](Self::pool).
    pub fn max_connections(mut self, max_connections: usize) -> Self {
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
    /// `LISTEN` (workers then poll, see [`NativeStore::poll_only`]).
    pub fn listen(mut self, listen: bool) -> Self {
        self.listen = listen;
        self
    }

    /// How long one call to PostgreSQL may wait for its answer before it fails and its
    /// connection is dropped. Default [`DEFAULT_CALL_TIMEOUT`](crate::DEFAULT_CALL_TIMEOUT)
    /// (30 s); see [`NativeStore::set_call_timeout`].
    pub fn call_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.call_timeout = Some(timeout);
        self
    }

    /// Connects (or takes the pool), migrates unless told not to, creates the client's queue and
    /// returns the client.
    ///
    /// Fails with [`DurableError::Config`] when no database is given (neither a URL, a config,
    /// a pool, nor `DURABLE_DATABASE_URL`), when a pool is given without the settings the
    /// `LISTEN` connection needs, or when the database cannot be reached.
    pub async fn build(self) -> DurableResult<Durable> {
        let settings = match self.settings {
            Some(settings) => Some(settings),
            None => from_env()?,
        };
        let config = settings.map(parse).transpose()?;
        let connector = self.connector.unwrap_or_else(SharedConnector::no_tls);
        let pool = match (self.pool, &config) {
            (Some(pool), _) => pool,
            (None, Some(config)) => {
                let max = self.max_connections.unwrap_or(10);
                let pool = connector.pool(config.clone(), max).map_err(|e| {
                    DurableError::config("could not make the connection pool", Some(Box::new(e)))
                })?;
                // Fail here, with a configuration error, when the database does not answer.
                drop(pool.get().await.map_err(|e| {
                    DurableError::config("could not connect to PostgreSQL", Some(Box::new(e)))
                })?);
                pool
            }
            (None, None) => {
                return Err(missing(
                    "no database given: call DurableBuilder::database_url, DurableBuilder::pg_config or DurableBuilder::pool",
                ));
            }
        };
        if self.migrate {
            migrate(&pool).await?;
        }
        let store = match (self.listen, config) {
            (false, _) => NativeStore::poll_only(pool),
            (true, Some(config)) => NativeStore::listening(pool, config, connector),
            (true, None) => {
                return Err(missing(
                    "DurableBuilder::pool was given without the connection settings that the \
                     LISTEN connection (made outside the pool) needs: call \
                     DurableBuilder::database_url or DurableBuilder::pg_config too, or turn \
                     listening off with DurableBuilder::listen(false)",
                ));
            }
        };
        if let Some(timeout) = self.call_timeout {
            store.set_call_timeout(timeout);
        }
        let inner = self.core.build_with_store(store).await?;
        Ok(Durable { inner })
    }
}

/// The URL of `DURABLE_DATABASE_URL`, if set.
fn from_env() -> DurableResult<Option<Settings>> {
    match std::env::var(DATABASE_URL_ENV) {
        Ok(url) => Ok(Some(Settings::Url(url))),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(DurableError::config(
            format!("the environment variable {DATABASE_URL_ENV} is not valid Unicode"),
            None,
        )),
    }
}

fn parse(settings: Settings) -> DurableResult<tokio_postgres::Config> {
    match settings {
        Settings::Config(config) => Ok(*config),
        Settings::Url(url) => url
            .parse()
            .map_err(|e| DurableError::config("the database URL is not valid", Some(Box::new(e)))),
    }
}

/// A configuration error that says what to set.
fn missing(what: &str) -> DurableError {
    DurableError::config(
        format!("{what}, or set the environment variable {DATABASE_URL_ENV}"),
        None,
    )
}
