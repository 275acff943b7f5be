//! The PostgreSQL backend of `durable` on [tokio-postgres](tokio_postgres) and
//! [deadpool-postgres](deadpool_postgres): a [`Store`](durable_core::Store) implementation
//! ([`NativeStore`]) and the client users meet ([`Durable`]).
//!
//! It runs the same migrations and statement texts as `durable-postgres-sqlx` (both come from
//! `durable-postgres-sql`), so the two backends share one schema and behave alike; switching
//! is a change of crate feature, and of the pool type where the application touches it.
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

mod client;
mod connect;
mod convert;
mod error;
mod executor;
mod listener;
mod migrate;
mod store;

pub use client::{DATABASE_URL_ENV, Durable, DurableBuilder};
pub use deadpool_postgres;
pub use executor::Executor;
pub use migrate::{migrate, migrate_connection, migrate_url};
pub use store::{DEFAULT_CALL_TIMEOUT, NativeStore};
pub use tokio_postgres;
