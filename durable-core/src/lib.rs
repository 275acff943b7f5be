//! The task model of `durable`: the [`Task`] trait, [`TaskContext`], the [`Store`] port, the
//! [`Durable`] client and the [`Worker`].
//!
//! This crate knows no database. Storage comes from an implementation of [`store::Store`]: the
//! PostgreSQL adapters (`durable-postgres-sqlx`, `durable-postgres-native`) or the in-memory store
//! of `durable-testing`. Most users depend on the `durable` facade crate instead of this one.

mod client;
mod completer;
mod context;
pub mod cron;
mod defaults;
mod error;
pub mod inspect;
mod maintenance;
pub mod model;
mod operations;
mod options;
pub mod policy;
mod registry;
pub mod store;
mod task;
pub mod telemetry;
mod worker;

pub use async_trait::async_trait;
pub use client::{Durable, DurableBuilder};
pub use context::TaskContext;
pub use cron::{CronError, CronSchedule};
pub use defaults::ClientDefaults;
pub use error::{
    BoxError, ControlFlow, DurableError, DurableResult, NonRetryable, StoreError, TaskError,
    TaskResult,
};
pub use maintenance::ScheduleTick;
pub use model::{FailureKind, SpawnResult, TaskErrorInfo, TaskPollResult, TaskStatus};
pub use options::{CancellationPolicy, RetryStrategy, SpawnOptions, WorkerOptions};
pub use store::Store;
pub use task::{Task, TaskHandle};
pub use worker::Worker;
