//! # durable
//!
//! Durable, fault-tolerant workflows on PostgreSQL, written as plain async Rust.
//!
//! A [`Task`] runs through a [`TaskContext`] whose calls are checkpointed in PostgreSQL: steps,
//! subtasks, durable sleeps, events and heartbeats. When a worker crashes, the task resumes on
//! another worker from its last checkpoint; failed attempts are retried with backoff; tasks can
//! sleep for days and wait for events without holding a worker.
//!
//! ## Backends
//!
//! | feature | [`Durable`] is | re-exported driver |
//! |---------|----------------|--------------------|
//! | `postgres-sqlx` (default) | the sqlx client, `client.pool()` is a `sqlx::PgPool` | [`sqlx`] |
//! | `postgres-native` | `native::Durable` on tokio-postgres + deadpool-postgres | `tokio_postgres`, `deadpool_postgres` |
//!
//! Features are additive: with both on, [`Durable`] is the sqlx client and `native::Durable`
//! the other. With neither, [`Durable`] is the store-generic client of `durable-core`, for use
//! with your own [`Store`] (or the in-memory store of `durable-testing`).
//!
//! Feature `telemetry` (off by default) adds OpenTelemetry: the trace context of a spawner
//! carried into its tasks through their headers, and task metrics. See [`telemetry`].
//!
//! ## Quick start
//!
//! ```no_run
//! # #[cfg(feature = "postgres-sqlx")]
//! # mod quick {
//! use durable::{Durable, Task, TaskContext, TaskResult, WorkerOptions, async_trait};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct ResearchParams {
//!     query: String,
//! }
//!
//! struct ResearchTask;
//!
//! #[async_trait]
//! impl Task for ResearchTask {
//!     const NAME: &'static str = "research";
//!     type Params = ResearchParams;
//!     type Output = String;
//!
//!     async fn run(params: Self::Params, ctx: TaskContext) -> TaskResult<Self::Output> {
//!         let sources: Vec<String> = ctx
//!             .step("find-sources", || async { Ok(vec!["https://example.com/a".into()]) })
//!             .await?;
//!         Ok(format!("{} sources for '{}'", sources.len(), params.query))
//!     }
//! }
//!
//! pub async fn main() -> anyhow::Result<()> {
//!     let client = Durable::builder()
//!         .database_url("postgres://localhost/myapp")
//!         .queue_name("research")
//!         .build()
//!         .await?;
//!     client.register::<ResearchTask>().await;
//!     let spawned = client
//!         .spawn::<ResearchTask>(ResearchParams { query: "consensus".into() })
//!         .await?;
//!     println!("spawned {}", spawned.task_id);
//!     let worker = client.start_worker(WorkerOptions::default()).await;
//!     tokio::signal::ctrl_c().await?;
//!     worker.shutdown().await;
//!     Ok(())
//! }
//! # }
//! ```
//!
//! See the README for the concepts (checkpoints, retries, events, subtasks, cancellation,
//! leases) and `durable-testing` for unit-testing tasks on an in-memory store with a virtual
//! clock.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub use durable_core::model;
pub use durable_core::policy;
pub use durable_core::store;
pub use durable_core::telemetry;
pub use durable_core::{
    BoxError, CancellationPolicy, ClientDefaults, ControlFlow, DurableError, DurableResult,
    FailureKind, NonRetryable, RetryStrategy, SpawnOptions, SpawnResult, Store, StoreError, Task,
    TaskContext, TaskError, TaskErrorInfo, TaskHandle, TaskPollResult, TaskResult, TaskStatus,
    Worker, WorkerOptions, async_trait,
};

/// The store-generic client and builder of `durable-core`, whatever the features.
pub mod generic {
    pub use durable_core::{Durable, DurableBuilder};
}

#[cfg(feature = "postgres-sqlx")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres-sqlx")))]
pub use durable_postgres_sqlx::{DATABASE_URL_ENV, Durable, DurableBuilder, SqlxStore};

/// Schema migrations of the sqlx backend, for applications that migrate separately
/// (`DurableBuilder::migrate(false)`).
#[cfg(feature = "postgres-sqlx")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres-sqlx")))]
pub mod migrations {
    pub use durable_postgres_sqlx::{migrate, migrate_connection, migrate_url};
}

#[cfg(feature = "postgres-sqlx")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres-sqlx")))]
pub use sqlx;

/// The PostgreSQL backend on tokio-postgres and deadpool-postgres.
#[cfg(feature = "postgres-native")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres-native")))]
pub mod native {
    pub use durable_postgres_native::{
        DATABASE_URL_ENV, Durable, DurableBuilder, Executor, NativeStore, migrate,
        migrate_connection, migrate_url,
    };
}

#[cfg(all(feature = "postgres-native", not(feature = "postgres-sqlx")))]
pub use durable_postgres_native::{DATABASE_URL_ENV, Durable, DurableBuilder, NativeStore};

#[cfg(feature = "postgres-native")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres-native")))]
pub use deadpool_postgres;

#[cfg(feature = "postgres-native")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres-native")))]
pub use tokio_postgres;

#[cfg(not(any(feature = "postgres-sqlx", feature = "postgres-native")))]
pub use durable_core::{Durable, DurableBuilder};
