//! The PostgreSQL backend of `durable` on [tokio-postgres](tokio_postgres) and
//! [deadpool-postgres](deadpool_postgres): the [`Store`](durable_core::Store) of
//! `durable-postgres` on a deadpool pool ([`NativeStore`], through [`NativeDriver`]) and the
//! client users meet ([`Durable`]).
//!
//! This crate supplies the driver only (statements run on the pool, rows read, errors reported,
//! a listening connection, migration scripts on one connection), plus the client and the
//! transactional methods that take the application's own tokio-postgres or deadpool client or
//! transaction. The store itself is `durable-postgres`'s, the same for every driver, so the two
//! backends run the same statements and behave alike; switching is a change of crate feature,
//! and of the pool type where the application touches it.
//!
//! - **Schema**: the migrations of `durable-postgres-sql`, applied by
//!   [`DurableBuilder::build`] (or [`migrate`]) under an advisory lock, recorded in
//!   `durable.schema_migrations`.
//! - **Operations**: each store operation is one call of a stored function, prepared once per
//!   pooled connection, on the database clock, fenced by the run's identity; deadlocks and
//!   serialization failures are retried.
//! - **Wake-ups**: `LISTEN`/`NOTIFY` on the channel `durable`, read from the message stream of
//!   a dedicated tokio-postgres connection, starts work within milliseconds; polling remains
//!   the fallback, and [`DurableBuilder::listen`]`(false)` gives a poll-only client for poolers
//!   that break `LISTEN`.
//! - **Transactions**: [`Durable::spawn_with`] and friends spawn (or emit) on the
//!   application's tokio-postgres or deadpool client or transaction ([`Executor`]), so a task
//!   exists if and only if the application's transaction commits.
//! - **TLS**: off by default; see [`DurableBuilder::tls`].
//!
//! ```no_run
//! use durable_postgres_native::Durable;
//! use durable_core::{Task, TaskContext, TaskResult, WorkerOptions, async_trait};
//!
//! struct Greet;
//!
//! #[async_trait]
//! impl Task for Greet {
//!     const NAME: &'static str = "greet";
//!     type Params = String;
//!     type Output = String;
//!
//!     async fn run(name: String, ctx: TaskContext) -> TaskResult<String> {
//!         Ok(ctx.step("compose", || async { Ok(format!("hello, {name}")) }).await?)
//!     }
//! }
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Durable::builder()
//!     .database_url("postgres://localhost/myapp")
//!     .build()
//!     .await?;
//! client.register::<Greet>().await;
//! let spawned = client.spawn::<Greet>("world".into()).await?;
//! let worker = client.start_worker(WorkerOptions::default()).await;
//! # let _ = spawned;
//! worker.shutdown().await;
//! # Ok(()) }
//! ```

mod connect;
mod driver;
mod executor;
mod listener;
mod migrate;
mod values;

pub use connect::TlsConnector;
pub use deadpool_postgres;
pub use driver::{NativeConnection, NativeDriver};
pub use durable_postgres::{DATABASE_URL_ENV, DEFAULT_CALL_TIMEOUT, PgStore};
pub use executor::Executor;
pub use listener::NativeListener;
pub use migrate::{migrate, migrate_connection, migrate_url};
pub use tokio_postgres;
pub use values::NativeRow;

/// The [`Store`](durable_core::Store) of `durable` on a [`deadpool_postgres::Pool`] of
/// tokio-postgres connections: `durable-postgres`'s [`PgStore`] on the [`NativeDriver`].
///
/// Every operation is one call of a stored function of `durable-postgres-sql` (one round trip,
/// one atomic step, a statement prepared once per connection through the pool's statement
/// cache), on the database clock. Cheap to clone; clones share the pool and the wake-up
/// listener.
///
/// Wake-ups: a deadpool pool drives its connections itself and drops their notifications, and
/// does not reveal its settings, so a listening store needs the [`tokio_postgres::Config`] to
/// make a connection of its own ([`NativeDriver::new`], [`NativeDriver::with_tls`]); a store on
/// a pool alone is poll-only ([`PgStore::poll_only`]).
///
/// The schema must exist: see [`migrate`]. Most applications use [`Durable::builder`], which
/// migrates and builds the store.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use durable_postgres_native::{NativeDriver, NativeStore};
/// use durable_postgres_native::deadpool_postgres::{Manager, Pool};
/// use durable_postgres_native::tokio_postgres::{Config, NoTls};
///
/// let config: Config = "postgres://localhost/myapp".parse()?;
/// let pool = Pool::builder(Manager::new(config.clone(), NoTls)).max_size(10).build()?;
/// durable_postgres_native::migrate(&pool).await?;
/// let store = NativeStore::new(NativeDriver::new(pool, config));
/// let client = durable_core::DurableBuilder::new().build_with_store(store).await?;
/// // The client with the transactional `_with` methods:
/// let client = durable_postgres_native::Durable::from(client);
/// # let _ = client;
/// # Ok(()) }
/// ```
pub type NativeStore = PgStore<NativeDriver>;

/// The client of `durable` on PostgreSQL through tokio-postgres and deadpool-postgres:
/// `durable-postgres`'s [`Durable`](durable_postgres::Durable) on the [`NativeDriver`].
///
/// It spawns tasks, emits events, cancels, inspects and starts workers (through
/// [`durable_core::Durable`], which it dereferences to), and spawns and emits inside an
/// application's transaction on a tokio-postgres or deadpool client or transaction
/// ([`Executor`], by reference): `spawn_with`, `spawn_with_options_with`, `spawn_many_with`,
/// `spawn_by_name_with`, `emit_event_with`. `client.pool()` is the
/// [`deadpool_postgres::Pool`], for the application's own queries.
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
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let client = Durable::builder()
///     .database_url("postgres://localhost/myapp")
///     .queue_name("orders")
///     .build()
///     .await?;
/// let mut connection = client.pool().get().await?;
/// let tx = connection.transaction().await?;
/// tx.execute("INSERT INTO orders (id, status) VALUES ($1, $2)", &[&42_i64, &"pending"])
///     .await?;
/// // The task exists if and only if the transaction commits.
/// client.spawn_with::<ProcessOrder, _>(&tx, 42).await?;
/// client
///     .emit_event_with(&tx, "approved:42", &serde_json::json!({"by": "admin"}), None)
///     .await?;
/// tx.commit().await?;
/// # Ok(()) }
/// ```
pub type Durable = durable_postgres::Durable<NativeDriver>;

/// Configures a [`Durable`] client on tokio-postgres: `durable-postgres`'s
/// [`DurableBuilder`](durable_postgres::DurableBuilder) on the [`NativeDriver`]. A URL, a
/// [`tokio_postgres::Config`] (`pg_config`) or an existing [`deadpool_postgres::Pool`] (`pool`)
/// says where the database is.
///
/// # TLS
///
/// Connections are made without TLS unless `tls` is given a connector of tokio-postgres (for
/// example `postgres-native-tls`'s or `tokio-postgres-rustls`'s `MakeTlsConnector`); it is used
/// for the pool that `build` makes and for the `LISTEN` connection. With your own pool, give its
/// manager the connector, and give the builder the same connector and the connection settings
/// for the `LISTEN` connection (a pool does not reveal its settings):
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
pub type DurableBuilder = durable_postgres::DurableBuilder<NativeDriver>;
