//! [`Durable`], the client on PostgreSQL through a driver, and its [`DurableBuilder`]: written
//! once for every adapter, which names them for its driver (`durable_postgres_sqlx::Durable` is
//! `Durable<SqlxDriver>`).

use std::fmt;
use std::ops::Deref;
use std::time::Duration;

use durable_core::telemetry::record_spawned;
use durable_core::{
    CancellationPolicy, DurableError, DurableResult, RetryStrategy, SpawnOptions, SpawnResult,
    StoreError, Task,
};
use serde::Serialize;
use serde_json::Value;

use crate::calls::{Call, Emit, Spawn, SpawnMany};
use crate::driver::{Connect, Driver, PoolSettings, RunsOn, UsesTls};
use crate::store::PgStore;

/// The environment variable read for the database URL when the builder is given none.
pub const DATABASE_URL_ENV: &str = "DURABLE_DATABASE_URL";

/// The client of `durable` on PostgreSQL through the driver `D`: spawns tasks, emits events,
/// cancels, inspects, and starts workers.
///
/// It dereferences to [`durable_core::Durable`], which has `register`, `spawn`,
/// `spawn_with_options`, `spawn_many`, `spawn_by_name`, `emit_event`, `cancel_task`,
/// `retry_task`, `get_task_result`, `wait_for_result`, `start_worker` and `work_until_idle`. On
/// top of those it spawns and emits inside an application's transaction (`spawn_with`,
/// `spawn_with_options_with`, `spawn_many_with`, `spawn_by_name_with`, `emit_event_with`), on any
/// connection or transaction the driver can run on ([`RunsOn`]). Cheap to clone; clones share
/// the pool, the store and the task registry.
#[derive(Debug, Clone)]
pub struct Durable<D: Driver> {
    inner: durable_core::Durable<PgStore<D>>,
}

impl<D: Driver> Deref for Durable<D> {
    type Target = durable_core::Durable<PgStore<D>>;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl<D: Driver> From<durable_core::Durable<PgStore<D>>> for Durable<D> {
    fn from(inner: durable_core::Durable<PgStore<D>>) -> Self {
        Durable { inner }
    }
}

impl<D: Connect> Durable<D> {
    /// A builder; see [`DurableBuilder`].
    pub fn builder() -> DurableBuilder<D> {
        DurableBuilder::default()
    }

    /// The connection pool, for the application's own queries and transactions.
    pub fn pool(&self) -> &D::Pool {
        self.inner.store().pool()
    }
}

/// Runs `call` on `executor` (an application's connection or transaction) through `driver`.
async fn run_on<'c, D, E, C>(driver: &D, executor: E, call: &C) -> Result<C::Output, StoreError>
where
    D: RunsOn<'c, E>,
    C: Call,
{
    let params = call.params();
    call.finish::<D>(driver.run_on(executor, C::STATEMENT, &params).await)
}

impl<D: Driver> Durable<D> {
    /// The store behind this client.
    pub fn store(&self) -> &PgStore<D> {
        self.inner.store()
    }

    /// The generic client this one wraps.
    pub fn into_inner(self) -> durable_core::Durable<PgStore<D>> {
        self.inner
    }

    /// Spawns task `T` with default options on `executor`: typically the application's
    /// transaction, so that the task exists if and only if the transaction commits. Workers are
    /// woken when it commits.
    pub async fn spawn_with<'c, T, E>(
        &self,
        executor: E,
        params: T::Params,
    ) -> DurableResult<SpawnResult>
    where
        T: Task,
        D: RunsOn<'c, E>,
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
        D: RunsOn<'c, E>,
    {
        let task = self.inner.prepare_spawn::<T>(params, options)?;
        let result = run_on(self.store().driver(), executor, &Spawn::new(&task)?).await?;
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
        D: RunsOn<'c, E>,
    {
        let task = self
            .inner
            .prepare_spawn_by_name(task_name, params, options)?;
        let result = run_on(self.store().driver(), executor, &Spawn::new(&task)?).await?;
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
        D: RunsOn<'c, E>,
    {
        let tasks = self.inner.prepare_spawn_many::<T>(params, options)?;
        let call = SpawnMany::new(&tasks)?;
        if call.is_empty() {
            return Ok(Vec::new());
        }
        let results = run_on(self.store().driver(), executor, &call).await?;
        if let Some(first) = tasks.first() {
            // One spawn_many shares its queue and task name.
            record_spawned(&first.queue, &first.task_name, &results);
        }
        Ok(results)
    }

    /// Emits an event in `queue` (default: the client's) on `executor`: the event exists, and
    /// the tasks awaiting it wake, only if the transaction commits. The first emit of a name
    /// wins; returns whether this one was the first.
    pub async fn emit_event_with<'c, E, P>(
        &self,
        executor: E,
        event_name: &str,
        payload: &P,
        queue: Option<&str>,
    ) -> DurableResult<bool>
    where
        D: RunsOn<'c, E>,
        P: Serialize + ?Sized,
    {
        let (queue, payload) = self.inner.prepare_emit(event_name, payload, queue)?;
        Ok(run_on(
            self.store().driver(),
            executor,
            &Emit::new(&queue, event_name, &payload)?,
        )
        .await?)
    }
}

/// Configures a [`Durable`] client: where the database is, the client's queue and defaults, and
/// whether to migrate and to listen for wake-ups.
pub struct DurableBuilder<D: Connect> {
    core: durable_core::DurableBuilder,
    database_url: Option<String>,
    config: Option<D::Config>,
    pool: Option<D::Pool>,
    options: D::Options,
    migrate: bool,
    listen: bool,
    listen_url: Option<String>,
    transaction_pooler: bool,
    max_connections: Option<u32>,
    call_timeout: Option<Duration>,
}

impl<D: Connect> Default for DurableBuilder<D> {
    fn default() -> Self {
        DurableBuilder {
            core: durable_core::DurableBuilder::new(),
            database_url: None,
            config: None,
            pool: None,
            options: D::Options::default(),
            migrate: true,
            listen: true,
            listen_url: None,
            transaction_pooler: false,
            max_connections: None,
            call_timeout: None,
        }
    }
}

impl<D: Connect> Clone for DurableBuilder<D> {
    fn clone(&self) -> Self {
        DurableBuilder {
            core: self.core.clone(),
            database_url: self.database_url.clone(),
            config: self.config.clone(),
            pool: self.pool.clone(),
            options: self.options.clone(),
            migrate: self.migrate,
            listen: self.listen,
            listen_url: self.listen_url.clone(),
            transaction_pooler: self.transaction_pooler,
            max_connections: self.max_connections,
            call_timeout: self.call_timeout,
        }
    }
}

impl<D: Connect> fmt::Debug for DurableBuilder<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL and the settings may hold a password: they are not printed.
        f.debug_struct("DurableBuilder")
            .field("driver", &D::NAME)
            .field("defaults", self.core.defaults())
            .field("database_url", &self.database_url.as_ref().map(|_| "<set>"))
            .field("config", &self.config.as_ref().map(|_| "<set>"))
            .field("pool", &self.pool.is_some())
            .field("migrate", &self.migrate)
            .field("listen", &self.listen)
            .field("listen_url", &self.listen_url.as_ref().map(|_| "<set>"))
            .field("transaction_pooler", &self.transaction_pooler)
            .field("max_connections", &self.max_connections)
            .field("call_timeout", &self.call_timeout)
            .finish_non_exhaustive()
    }
}

impl<D: Connect> DurableBuilder<D> {
    /// A builder with the defaults: queue `default`, migrations applied, listening for
    /// wake-ups. The same as [`Durable::builder`].
    pub fn new() -> Self {
        DurableBuilder::default()
    }

    /// The database to connect to. Without it (and without [`pool`](Self::pool) or
    /// [`pg_config`](Self::pg_config)), `build` reads the environment variable
    /// `DURABLE_DATABASE_URL`.
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.database_url = Some(url.into());
        self
    }

    /// The connection settings in the driver's own form (`sqlx`'s `PgConnectOptions`,
    /// `tokio_postgres::Config`) instead of a URL. Takes precedence over
    /// [`database_url`](Self::database_url).
    pub fn pg_config(mut self, config: D::Config) -> Self {
        self.config = Some(config);
        self
    }

    /// Runs on an existing pool (for example the application's own) instead of connecting.
    /// Takes precedence over [`database_url`](Self::database_url) and
    /// [`pg_config`](Self::pg_config), which a driver that cannot learn a pool's settings still
    /// needs to listen for wake-ups.
    pub fn pool(mut self, pool: D::Pool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// The TLS connector the driver makes its connections with (a driver that takes one, such
    /// as tokio-postgres's `MakeTlsConnect` implementations).
    pub fn tls<T>(mut self, tls: T) -> Self
    where
        D: UsesTls<T>,
    {
        D::use_tls(&mut self.options, tls);
        self
    }

    /// The most connections of the pool that `build` creates (any integer type from 1 to
    /// `u32::MAX`; `build` refuses others). Default 10. Ignored with [`pool`](Self::pool).
    pub fn max_connections<N: TryInto<u32>>(mut self, max_connections: N) -> Self {
        self.max_connections = Some(max_connections.try_into().unwrap_or(0));
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

    /// Whether `build` applies the schema migrations ([`migrate::on_pool`](crate::migrate::on_pool)). Default `true`;
    /// turn it off when migrations run separately, before deployment.
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// Whether the store `LISTEN`s for wake-ups, so that workers start new work within
    /// milliseconds. Default `true`; turn it off behind a connection pooler that breaks
    /// `LISTEN` (workers then poll, see [`PgStore::poll_only`]).
    pub fn listen(mut self, listen: bool) -> Self {
        self.listen = listen;
        self
    }

    /// Where the `LISTEN` connection goes, when it cannot go where the pool's connections go:
    /// a direct connection to PostgreSQL beside a connection pooler in transaction mode, which
    /// breaks `LISTEN` (see [`transaction_pooler`](Self::transaction_pooler)). Default: the
    /// pool's own settings.
    pub fn listen_url(mut self, url: impl Into<String>) -> Self {
        self.listen_url = Some(url.into());
        self
    }

    /// Whether the connections go through a connection pooler in transaction mode (PgBouncer's
    /// `pool_mode = transaction`), which may run consecutive statements of one connection on
    /// different server connections. With it, no statement is prepared on a connection: each is
    /// sent with its values in one exchange. Such a pooler breaks `LISTEN`: give
    /// [`listen_url`](Self::listen_url) a direct connection, or turn
    /// [`listen`](Self::listen) off (workers then poll). Migrations belong on a direct
    /// connection too: run them separately before deploying, with [`migrate`](Self::migrate)
    /// off here (docs/operations.md). Default `false`.
    pub fn transaction_pooler(mut self, behind_pooler: bool) -> Self {
        self.transaction_pooler = behind_pooler;
        self
    }

    /// How long one call to PostgreSQL may wait for its answer before it fails and its
    /// connection is closed. Default [`DEFAULT_CALL_TIMEOUT`](crate::DEFAULT_CALL_TIMEOUT)
    /// (30 s); see [`PgStore::set_call_timeout`].
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = Some(timeout);
        self
    }

    /// Connects (or takes the pool), migrates unless told not to, creates the client's queue and
    /// returns the client.
    ///
    /// Fails with [`DurableError::Config`] when no database is given (neither a URL, settings,
    /// a pool, nor `DURABLE_DATABASE_URL`), when the database cannot be reached, or when
    /// listening is asked of a pool without the settings to listen with.
    pub async fn build(self) -> DurableResult<Durable<D>> {
        let url = match self.database_url {
            Some(url) => Some(url),
            None if self.config.is_some() => None,
            // With a pool too: a driver that cannot learn a pool's settings listens with these.
            None => url_from_env()?,
        };
        let config = match (self.config, url) {
            (Some(config), _) => Some(config),
            (None, Some(url)) => Some(
                D::parse_url(&url)
                    .map_err(|e| DurableError::config("the database URL is not valid", Some(e)))?,
            ),
            (None, None) => None,
        };
        let max_connections = self.max_connections.unwrap_or(10);
        if max_connections == 0 {
            return Err(DurableError::config(
                "DurableBuilder::max_connections must be from 1 to u32::MAX",
                None,
            ));
        }
        let listen = self
            .listen_url
            .as_deref()
            .map(D::parse_url)
            .transpose()
            .map_err(|e| DurableError::config("the LISTEN URL is not valid", Some(e)))?;
        let settings = PoolSettings {
            max_connections,
            transaction_pooler: self.transaction_pooler,
            listen,
        };
        let driver =
            match (self.pool, config) {
                (Some(pool), config) => D::from_pool(pool, config, &self.options, &settings),
                (None, Some(config)) => D::connect(config, &self.options, &settings)
                    .await
                    .map_err(|e| {
                        DurableError::config("could not connect to PostgreSQL", Some(Box::new(e)))
                    })?,
                (None, None) => {
                    return Err(DurableError::config(
                        format!(
                            "no database given: call DurableBuilder::database_url, \
                         DurableBuilder::pg_config or DurableBuilder::pool, or set the \
                         environment variable {DATABASE_URL_ENV}"
                        ),
                        None,
                    ));
                }
            };
        if self.listen && !driver.can_listen() {
            return Err(DurableError::config(
                "DurableBuilder::pool was given without the connection settings that the LISTEN \
                 connection (made outside the pool) needs: call DurableBuilder::database_url or \
                 DurableBuilder::pg_config too, or turn listening off with \
                 DurableBuilder::listen(false)",
                None,
            ));
        }
        if self.migrate {
            crate::migrate::on_pool(&driver).await?;
        }
        let store = if self.listen {
            PgStore::new(driver)
        } else {
            PgStore::poll_only(driver)
        };
        if let Some(timeout) = self.call_timeout {
            store.set_call_timeout(timeout);
        }
        let inner = self.core.build_with_store(store).await?;
        Ok(Durable { inner })
    }
}

/// The URL of `DURABLE_DATABASE_URL`, if set.
fn url_from_env() -> DurableResult<Option<String>> {
    match std::env::var(DATABASE_URL_ENV) {
        Ok(url) => Ok(Some(url)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(DurableError::config(
            format!("the environment variable {DATABASE_URL_ENV} is not valid Unicode"),
            None,
        )),
    }
}
