//! `durable tasks list | inspect`.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Subcommand, ValueEnum};
use durable_postgres_sql::admin;
use serde::Serialize;
use serde_json::Value;
use sqlx::Connection;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use super::{Age, Context, get};
use crate::cli::{queue_name, task_name};
use crate::duration::parse_duration;
use crate::error::CliError;
use crate::output::table::{Align, Table, shorten, write_fields};
use crate::output::{error_line, json, json_block, opt_time, time};

/// How much of an error message `tasks list` shows.
const ERROR_WIDTH: usize = 60;

/// The `tasks` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// List tasks, newest first
    List(ListArgs),
    /// Show everything about a task: params, headers, attempts, error, output, checkpoints,
    /// waits and subtasks
    Inspect {
        /// The task id
        id: Uuid,
    },
}

/// The filters of `tasks list`.
#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    /// Only tasks of this queue (default: every queue)
    #[arg(long, value_parser = queue_name)]
    queue: Option<String>,
    /// Only tasks in this state (repeat, or separate with commas, for several)
    #[arg(long, value_enum, value_delimiter = ',')]
    state: Vec<State>,
    /// Only tasks of this task name
    #[arg(long, value_parser = task_name)]
    name: Option<String>,
    /// Only tasks spawned at least this long ago (30s, 15m, 2h, 7d)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    older_than: Option<Duration>,
    /// Only tasks spawned less than this long ago (30s, 15m, 2h, 7d)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    newer_than: Option<Duration>,
    /// The most tasks to list
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    limit: u32,
}

/// A task state, as a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum State {
    Pending,
    Running,
    Sleeping,
    Completed,
    Failed,
    Cancelled,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Running => "running",
            State::Sleeping => "sleeping",
            State::Completed => "completed",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
        }
    }
}

pub(super) async fn run(ctx: &Context, command: Command) -> Result<(), CliError> {
    match command {
        Command::List(args) => list(ctx, args).await,
        Command::Inspect { id } => inspect(ctx, id).await,
    }
}

/// A duration in whole microseconds, for the admin queries.
fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

#[derive(Debug, Serialize)]
struct TaskList {
    tasks: Vec<TaskRow>,
}

#[derive(Debug, Serialize)]
struct TaskRow {
    task_id: Uuid,
    queue: String,
    task_name: String,
    state: String,
    attempt: i32,
    max_attempts: i32,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    /// Since spawn, in seconds.
    age_seconds: Age,
    last_error: Option<Value>,
}

async fn list(ctx: &Context, args: ListArgs) -> Result<(), CliError> {
    if let Some(queue) = &args.queue {
        ctx.require_queue(queue).await?;
    }
    let states: Option<Vec<&str>> =
        (!args.state.is_empty()).then(|| args.state.iter().map(|s| s.as_str()).collect());
    let rows = sqlx::query(admin::LIST_TASKS)
        .bind(args.queue.as_deref())
        .bind(states)
        .bind(args.name.as_deref())
        .bind(args.older_than.map(micros))
        .bind(args.newer_than.map(micros))
        .bind(i64::from(args.limit))
        .fetch_all(ctx.pool())
        .await
        .map_err(CliError::db("listing tasks"))?;
    let mut tasks = Vec::with_capacity(rows.len());
    for row in &rows {
        let created_at: DateTime<Utc> = get(row, "created_at")?;
        tasks.push(TaskRow {
            task_id: get(row, "task_id")?,
            queue: get(row, "queue_name")?,
            task_name: get(row, "task_name")?,
            state: get(row, "state")?,
            attempt: get(row, "attempt")?,
            max_attempts: get(row, "max_attempts")?,
            created_at,
            finished_at: get(row, "finished_at")?,
            age_seconds: Age::between(created_at, get(row, "store_now")?),
            last_error: get(row, "last_error")?,
        });
    }
    ctx.print(&TaskList { tasks })
}

impl fmt::Display for TaskList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut table = Table::new(&[
            ("ID", Align::Left),
            ("QUEUE", Align::Left),
            ("NAME", Align::Left),
            ("STATE", Align::Left),
            ("ATTEMPT", Align::Right),
            ("AGE", Align::Right),
            ("LAST ERROR", Align::Left),
        ]);
        for t in &self.tasks {
            table.row(vec![
                t.task_id.to_string(),
                t.queue.clone(),
                t.task_name.clone(),
                t.state.clone(),
                format!("{}/{}", t.attempt, t.max_attempts),
                t.age_seconds.text(),
                t.last_error
                    .as_ref()
                    .map(|e| shorten(&error_line(e), ERROR_WIDTH))
                    .unwrap_or_default(),
            ]);
        }
        write!(f, "{table}")
    }
}

#[derive(Debug, Serialize)]
struct TaskDetail {
    task_id: Uuid,
    queue: String,
    task_name: String,
    state: String,
    params: Value,
    headers: Value,
    attempt: i32,
    max_attempts: i32,
    retry_strategy: Value,
    cancellation: Value,
    idempotency_key: Option<String>,
    parent_task_id: Option<Uuid>,
    run_id: Uuid,
    available_at: Option<DateTime<Utc>>,
    claimed_by: Option<String>,
    lease_expires_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    first_started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    /// Since spawn, in seconds.
    age_seconds: Age,
    output: Option<Value>,
    last_error: Option<Value>,
    checkpoints: Vec<Checkpoint>,
    waits: Vec<Wait>,
    children: Vec<Child>,
}

#[derive(Debug, Serialize)]
struct Checkpoint {
    name: String,
    value: Value,
    run_id: Uuid,
    updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
struct Wait {
    name: String,
    event_name: String,
    timeout_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize)]
struct Child {
    task_id: Uuid,
    task_name: String,
    state: String,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

async fn inspect(ctx: &Context, task_id: Uuid) -> Result<(), CliError> {
    let mut connection = ctx
        .pool()
        .acquire()
        .await
        .map_err(CliError::db("connecting"))?;
    // One snapshot for the task and its checkpoints, waits and subtasks.
    let mut tx = connection
        .begin()
        .await
        .map_err(CliError::db("starting a transaction"))?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(CliError::db("starting a read-only snapshot"))?;
    let Some(row) = sqlx::query(admin::TASK_DETAIL)
        .bind(task_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(CliError::db("reading the task"))?
    else {
        return Err(CliError::not_found(format!("task {task_id} not found")));
    };
    let checkpoints = sqlx::query(admin::TASK_CHECKPOINTS)
        .bind(task_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(CliError::db("reading the task's checkpoints"))?;
    let waits = sqlx::query(admin::TASK_WAITS)
        .bind(task_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(CliError::db("reading the task's waits"))?;
    let children = sqlx::query(admin::TASK_CHILDREN)
        .bind(task_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(CliError::db("reading the task's subtasks"))?;
    tx.commit()
        .await
        .map_err(CliError::db("ending the snapshot"))?;
    let detail = TaskDetail::from_rows(&row, &checkpoints, &waits, &children)?;
    ctx.print(&detail)
}

impl TaskDetail {
    fn from_rows(
        row: &PgRow,
        checkpoints: &[PgRow],
        waits: &[PgRow],
        children: &[PgRow],
    ) -> Result<Self, CliError> {
        let created_at: DateTime<Utc> = get(row, "created_at")?;
        Ok(TaskDetail {
            task_id: get(row, "task_id")?,
            queue: get(row, "queue_name")?,
            task_name: get(row, "task_name")?,
            state: get(row, "state")?,
            params: get(row, "params")?,
            headers: get(row, "headers")?,
            attempt: get(row, "attempt")?,
            max_attempts: get(row, "max_attempts")?,
            retry_strategy: get(row, "retry_strategy")?,
            cancellation: get(row, "cancellation")?,
            idempotency_key: get(row, "idempotency_key")?,
            parent_task_id: get(row, "parent_task_id")?,
            run_id: get(row, "run_id")?,
            available_at: get(row, "available_at")?,
            claimed_by: get(row, "claimed_by")?,
            lease_expires_at: get(row, "lease_expires_at")?,
            created_at,
            first_started_at: get(row, "first_started_at")?,
            finished_at: get(row, "finished_at")?,
            age_seconds: Age::between(created_at, get(row, "store_now")?),
            output: get(row, "output")?,
            last_error: get(row, "last_error")?,
            checkpoints: checkpoints
                .iter()
                .map(|r| {
                    Ok(Checkpoint {
                        name: get(r, "name")?,
                        value: get(r, "value")?,
                        run_id: get(r, "run_id")?,
                        updated_at: get(r, "updated_at")?,
                    })
                })
                .collect::<Result<_, CliError>>()?,
            waits: waits
                .iter()
                .map(|r| {
                    Ok(Wait {
                        name: get(r, "name")?,
                        event_name: get(r, "event_name")?,
                        timeout_at: get(r, "timeout_at")?,
                    })
                })
                .collect::<Result<_, CliError>>()?,
            children: children
                .iter()
                .map(|r| {
                    Ok(Child {
                        task_id: get(r, "task_id")?,
                        task_name: get(r, "task_name")?,
                        state: get(r, "state")?,
                        created_at: get(r, "created_at")?,
                        finished_at: get(r, "finished_at")?,
                    })
                })
                .collect::<Result<_, CliError>>()?,
        })
    }
}

impl fmt::Display for TaskDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let or_dash = |value: Option<String>| value.unwrap_or_else(|| "-".to_owned());
        write_fields(
            f,
            &[
                ("task", self.task_id.to_string()),
                ("queue", self.queue.clone()),
                ("name", self.task_name.clone()),
                ("state", self.state.clone()),
                (
                    "attempt",
                    format!("{} of {}", self.attempt, self.max_attempts),
                ),
                ("run", self.run_id.to_string()),
                (
                    "parent",
                    or_dash(self.parent_task_id.map(|id| id.to_string())),
                ),
                ("idempotency key", or_dash(self.idempotency_key.clone())),
                (
                    "created",
                    format!(
                        "{} ({} ago)",
                        time(self.created_at),
                        self.age_seconds.text()
                    ),
                ),
                ("first started", opt_time(self.first_started_at)),
                ("finished", opt_time(self.finished_at)),
                ("available at", opt_time(self.available_at)),
                ("claimed by", or_dash(self.claimed_by.clone())),
                ("lease expires", opt_time(self.lease_expires_at)),
                ("retry strategy", json(&self.retry_strategy)),
                ("cancellation", json(&self.cancellation)),
                ("params", json_block(&self.params)),
                ("headers", json_block(&self.headers)),
                ("output", or_dash(self.output.as_ref().map(json_block))),
                (
                    "last error",
                    or_dash(self.last_error.as_ref().map(error_line)),
                ),
            ],
        )?;

        writeln!(f, "\ncheckpoints ({}):", self.checkpoints.len())?;
        if !self.checkpoints.is_empty() {
            let mut table = Table::new(&[
                ("NAME", Align::Left),
                ("UPDATED", Align::Left),
                ("RUN", Align::Left),
                ("VALUE", Align::Left),
            ]);
            for c in &self.checkpoints {
                table.row(vec![
                    c.name.clone(),
                    time(c.updated_at),
                    c.run_id.to_string(),
                    json(&c.value),
                ]);
            }
            write!(f, "{table}")?;
        }

        writeln!(f, "\nwaits ({}):", self.waits.len())?;
        if !self.waits.is_empty() {
            let mut table = Table::new(&[
                ("NAME", Align::Left),
                ("EVENT", Align::Left),
                ("TIMEOUT AT", Align::Left),
            ]);
            for w in &self.waits {
                table.row(vec![
                    w.name.clone(),
                    w.event_name.clone(),
                    opt_time(w.timeout_at),
                ]);
            }
            write!(f, "{table}")?;
        }

        writeln!(f, "\nsubtasks ({}):", self.children.len())?;
        if !self.children.is_empty() {
            let mut table = Table::new(&[
                ("ID", Align::Left),
                ("NAME", Align::Left),
                ("STATE", Align::Left),
                ("CREATED", Align::Left),
                ("FINISHED", Align::Left),
            ]);
            for c in &self.children {
                table.row(vec![
                    c.task_id.to_string(),
                    c.task_name.clone(),
                    c.state.clone(),
                    time(c.created_at),
                    opt_time(c.finished_at),
                ]);
            }
            write!(f, "{table}")?;
        }
        Ok(())
    }
}
