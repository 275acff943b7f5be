//! The PostgreSQL backend of `durable` on [sqlx]: the [`Store`](durable_core::Store) of
//! `durable-postgres` on a sqlx pool ([`SqlxStore`], through [`SqlxDriver`]) and the client users
//! meet ([`Durable`]).
//!
//! This crate supplies the driver only (statements run on the pool, rows read, errors reported,
//! a listening connection, migration scripts on one connection), plus the client and the
//! transactional methods that take the application's own sqlx connection or transaction. What
//! the store does is written once, in `durable-postgres`, for every driver.
//!
//! - **Schema**: the migrations of `durable-postgres-sql`, applied by
//!   [`DurableBuilder::build`] (or [`migrate`]) under an advisory lock, recorded in
//!   `durable.schema_migrations`.
//! - **Operations**: each store operation is one call of a stored function, on the database
//!   clock, fenced by the run's identity; deadlocks and serialization failures are retried.
//! - **Wake-ups**: `LISTEN`/`NOTIFY` on the channel `durable` starts work within milliseconds;
//!   polling remains the fallback, and [`DurableBuilder::listen`]`(false)` gives a poll-only
//!   client for poolers that break `LISTEN`.
//! - **Transactions**: [`Durable::spawn_with`] and friends spawn (or emit) on any sqlx Postgres
//!   executor, so a task exists if and only if the application's transaction commits.
//!
//! ```no_run
//! use durable_postgres_sqlx::Durable;
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

mod driver;
mod migrate;

pub use driver::{SqlxConnection, SqlxDriver, SqlxListener, SqlxRow};
pub use durable_postgres::{DATABASE_URL_ENV, DEFAULT_CALL_TIMEOUT, PgStore};
pub use migrate::{migrate, migrate_connection, migrate_url};
pub use sqlx;

/// The [`Store`](durable_core::Store) of `durable` on a [`sqlx::PgPool`]: `durable-postgres`'s
/// [`PgStore`] on the [`SqlxDriver`].
///
/// Every operation is one call of a stored function of `durable-postgres-sql` (one round trip,
/// one atomic step, a statement prepared once per connection), on the database clock. Cheap to
/// clone; clones share the pool and the wake-up listener.
///
/// Wake-ups: unless built with [`PgStore::poll_only`], the first
/// [`work_signal`](durable_core::Store::work_signal) starts a background task that `LISTEN`s on a
/// connection of its own (made with the pool's connect options, outside the pool) and wakes the
/// workers of a queue as soon as work is announced there.
///
/// The schema must exist: see [`migrate`]. Most applications use
/// [`Durable::builder`], which migrates and builds the store.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use durable_postgres_sqlx::SqlxStore;
///
/// let pool = sqlx::PgPool::connect("postgres://localhost/myapp").await?;
/// durable_postgres_sqlx::migrate(&pool).await?;
/// let store = SqlxStore::new(pool);
/// let client = durable_core::DurableBuilder::new().build_with_store(store).await?;
/// # let _ = client;
/// # Ok(()) }
/// ```
pub type SqlxStore = PgStore<SqlxDriver>;

/// The client of `durable` on PostgreSQL through sqlx: `durable-postgres`'s
/// [`Durable`](durable_postgres::Durable) on the [`SqlxDriver`].
///
/// It spawns tasks, emits events, cancels, inspects and starts workers (through
/// [`durable_core::Durable`], which it dereferences to), and spawns and emits inside an
/// application's transaction on any sqlx executor: `spawn_with`, `spawn_with_options_with`,
/// `spawn_many_with`, `spawn_by_name_with`, `emit_event_with`. `client.pool()` is the
/// [`sqlx::PgPool`], for the application's own queries.
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
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let client = Durable::builder()
///     .database_url("postgres://localhost/myapp")
///     .queue_name("orders")
///     .build()
///     .await?;
/// let mut tx = client.pool().begin().await?;
/// sqlx::query("INSERT INTO orders (id, status) VALUES ($1, $2)")
///     .bind(42_i64)
///     .bind("pending")
///     .execute(&mut *tx)
///     .await?;
/// // The task exists if and only if the transaction commits.
/// client.spawn_with::<ProcessOrder, _>(&mut *tx, 42).await?;
/// client
///     .emit_event_with(&mut *tx, "approved:42", &serde_json::json!({"by": "admin"}), None)
///     .await?;
/// tx.commit().await?;
/// # Ok(()) }
/// ```
pub type Durable = durable_postgres::Durable<SqlxDriver>;

/// Configures a [`Durable`] client on sqlx: `durable-postgres`'s
/// [`DurableBuilder`](durable_postgres::DurableBuilder) on the [`SqlxDriver`]. A URL, sqlx's
/// [`PgConnectOptions`](sqlx::postgres::PgConnectOptions) (`pg_config`) or an existing
/// [`sqlx::PgPool`] (`pool`) says where the database is.
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
pub type DurableBuilder = durable_postgres::DurableBuilder<SqlxDriver>;
