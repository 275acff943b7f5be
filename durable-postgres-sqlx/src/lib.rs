//! The PostgreSQL backend of `durable` on [sqlx]: a [`Store`](durable_core::Store)
//! implementation ([`SqlxStore`]) and the client users meet ([`Durable`]).
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

mod client;
mod convert;
mod error;
mod listener;
mod migrate;
mod queries;
mod store;

pub use client::{DATABASE_URL_ENV, Durable, DurableBuilder};
pub use migrate::{migrate, migrate_connection, migrate_url};
pub use sqlx;
pub use store::{DEFAULT_CALL_TIMEOUT, SqlxStore};
