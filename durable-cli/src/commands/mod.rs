//! The commands, one module per command group. Adding one: a module with its clap arguments
//! and a `run(&Context, args)`, a variant of [`Command`], and its arm in [`run`].

mod cancel;
mod emit;
mod migrate;
mod queues;
mod retry;
mod schedules;
mod stats;
mod tasks;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Subcommand;
use durable_postgres_sql::admin;
use durable_postgres_sqlx::{DATABASE_URL_ENV, SqlxStore};
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

use crate::cli::Cli;
use crate::duration::{age_seconds, format_age};
use crate::error::CliError;
use crate::output::{self, Format, Report};

/// How long connecting (or waiting for a pooled connection) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The commands of `durable`.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Apply the schema migrations the database lacks, and list the applied ones
    Migrate,
    /// List, create and drop queues
    #[command(subcommand)]
    Queues(queues::Command),
    /// List and inspect tasks
    #[command(subcommand)]
    Tasks(tasks::Command),
    /// Cancel a task and its unfinished subtasks
    Cancel(cancel::Args),
    /// Make a failed task pending again, as a new attempt
    Retry(retry::Args),
    /// Emit an event in a queue (the first emit of a name wins)
    Emit(emit::Args),
    /// Count tasks by state, the oldest pending one, and the last minute's throughput
    Stats(stats::Args),
    /// List, create and delete schedules (recurring spawns)
    #[command(subcommand)]
    Schedules(schedules::Command),
}

/// Runs the command line's command.
pub(crate) async fn run(cli: Cli) -> Result<(), CliError> {
    let url = cli.database_url.ok_or_else(|| {
        CliError::usage(format!(
            "no database given: pass --database-url or set {DATABASE_URL_ENV}"
        ))
    })?;
    let format = if cli.json { Format::Json } else { Format::Text };
    let ctx = Context::connect(&url, format).await?;
    match cli.command {
        Command::Migrate => migrate::run(&ctx).await,
        Command::Queues(command) => queues::run(&ctx, command).await,
        Command::Tasks(command) => tasks::run(&ctx, command).await,
        Command::Cancel(args) => cancel::run(&ctx, args).await,
        Command::Retry(args) => retry::run(&ctx, args).await,
        Command::Emit(args) => emit::run(&ctx, args).await,
        Command::Stats(args) => stats::run(&ctx, args).await,
        Command::Schedules(command) => schedules::run(&ctx, command).await,
    }
}

/// What every command works with: the database and the output format.
#[derive(Debug)]
pub(crate) struct Context {
    pool: PgPool,
    format: Format,
}

impl Context {
    /// Connects to the database at `url`.
    async fn connect(url: &str, format: Format) -> Result<Self, CliError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| CliError::usage(format!("invalid database URL: {e}")))?;
        // One connection first, so that an unreachable server is reported with its reason
        // at once (a pool retries a refused connection until its timeout, then reports only
        // the timeout).
        let failed = "could not connect to PostgreSQL";
        let probe = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
            .await
            .map_err(|_| {
                CliError::runtime(failed, format!("no answer within {CONNECT_TIMEOUT:?}"))
            })?
            .map_err(|e| CliError::runtime(failed, e))?;
        // Best effort: the server ends the session anyway when the socket closes.
        let _ = probe.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_lazy_with(options);
        Ok(Context { pool, format })
    }

    /// The connection pool.
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The store of `durable` on this database, for the operations of its storage port
    /// (cancel, retry, emit): the CLI runs exactly what the library runs. Poll-only: a command
    /// has no use for wake-ups.
    pub(crate) fn store(&self) -> SqlxStore {
        SqlxStore::poll_only(self.pool.clone())
    }

    /// Prints a command's result.
    pub(crate) fn print(&self, report: &impl Report) -> Result<(), CliError> {
        output::print(self.format, report)
    }

    /// Fails with "not found" unless `queue` exists.
    pub(crate) async fn require_queue(&self, queue: &str) -> Result<(), CliError> {
        let present: bool = sqlx::query_scalar(admin::QUEUE_EXISTS)
            .bind(queue)
            .fetch_one(self.pool())
            .await
            .map_err(CliError::db("looking up the queue"))?;
        if present {
            Ok(())
        } else {
            Err(CliError::not_found(format!("queue `{queue}` not found")))
        }
    }

    /// The queue and state of a task; "not found" if there is no such task, or if `queue` is
    /// given and the task is in another queue.
    pub(crate) async fn locate_task(
        &self,
        task_id: Uuid,
        queue: Option<&str>,
    ) -> Result<TaskLocation, CliError> {
        let row: Option<(String, String)> = sqlx::query_as(admin::TASK_QUEUE)
            .bind(task_id)
            .fetch_optional(self.pool())
            .await
            .map_err(CliError::db("looking up the task"))?;
        match (row, queue) {
            (None, _) => Err(CliError::not_found(format!("task {task_id} not found"))),
            (Some((found, _)), Some(wanted)) if found != wanted => Err(CliError::not_found(
                format!("task {task_id} not found in queue `{wanted}` (it is in queue `{found}`)"),
            )),
            (Some((queue, state)), _) => Ok(TaskLocation { queue, state }),
        }
    }
}

/// Where a task is and what state it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskLocation {
    /// Its queue.
    pub(crate) queue: String,
    /// Its state.
    pub(crate) state: String,
}

/// A column of a row, with the column named in the error.
pub(crate) fn get<'r, T>(row: &'r PgRow, column: &str) -> Result<T, CliError>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    sqlx::Row::try_get(row, column)
        .map_err(|e| CliError::runtime(format!("reading column `{column}` failed"), e))
}

/// Task counts by state, as the admin queries return them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct StateCounts {
    pub(crate) pending: i64,
    pub(crate) running: i64,
    pub(crate) sleeping: i64,
    pub(crate) completed: i64,
    pub(crate) failed: i64,
    pub(crate) cancelled: i64,
}

impl StateCounts {
    /// Reads the six count columns of a row.
    pub(crate) fn from_row(row: &PgRow) -> Result<Self, CliError> {
        Ok(StateCounts {
            pending: get(row, "pending")?,
            running: get(row, "running")?,
            sleeping: get(row, "sleeping")?,
            completed: get(row, "completed")?,
            failed: get(row, "failed")?,
            cancelled: get(row, "cancelled")?,
        })
    }

    /// The counts in state order, with their names.
    pub(crate) fn by_state(&self) -> [(&'static str, i64); 6] {
        [
            ("pending", self.pending),
            ("running", self.running),
            ("sleeping", self.sleeping),
            ("completed", self.completed),
            ("failed", self.failed),
            ("cancelled", self.cancelled),
        ]
    }
}

/// How old something is, measured on the database clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Age(pub(crate) chrono::Duration);

impl Age {
    /// The age at `now` of something made at `at`.
    pub(crate) fn between(at: DateTime<Utc>, now: DateTime<Utc>) -> Self {
        Age(now - at)
    }

    /// For tables: `3m12s`.
    pub(crate) fn text(self) -> String {
        format_age(self.0)
    }
}

impl Serialize for Age {
    /// Seconds, to the millisecond.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(age_seconds(self.0))
    }
}
