//! `durable tasks list | inspect | export`, on the inspection API of the library
//! ([`Store::list_tasks`](durable_core::Store::list_tasks),
//! [`Store::inspect_task`](durable_core::Store::inspect_task)).

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Subcommand, ValueEnum};
use durable_core::inspect::{self, RunRecord, TaskQuery, TaskSummary};
use durable_core::{Store, TaskStatus};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::{Age, Context};
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
    /// Show everything about a task: params, headers, runs (attempt, worker, times, outcome,
    /// error), output, checkpoints, waits and subtasks
    Inspect {
        /// The task id
        id: Uuid,
    },
    /// Print a task's recorded history as JSON (what the replay check of durable-testing
    /// reads back)
    Export {
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
    /// Only subtasks of this task
    #[arg(long, value_name = "TASK_ID")]
    parent: Option<Uuid>,
    /// Only the task spawned with this idempotency key
    #[arg(long, value_name = "KEY")]
    key: Option<String>,
    /// Only unfinished tasks that took the old path at the patch gate of this change id
    /// (`ctx.patched(ID)`): the gate can go once none is left
    #[arg(long, value_name = "CHANGE_ID")]
    patch: Option<String>,
    /// The page after this task id (the `next` of the page before)
    #[arg(long, value_name = "TASK_ID")]
    after: Option<Uuid>,
    /// The most tasks to list (at most 1000)
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
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
    fn status(self) -> TaskStatus {
        match self {
            State::Pending => TaskStatus::Pending,
            State::Running => TaskStatus::Running,
            State::Sleeping => TaskStatus::Sleeping,
            State::Completed => TaskStatus::Completed,
            State::Failed => TaskStatus::Failed,
            State::Cancelled => TaskStatus::Cancelled,
        }
    }
}

pub(super) async fn run(ctx: &Context, command: Command) -> Result<(), CliError> {
    match command {
        Command::List(args) => list(ctx, args).await,
        Command::Inspect { id } => inspect(ctx, id).await,
        Command::Export { id } => export(ctx, id).await,
    }
}

#[derive(Debug, Serialize)]
struct TaskList {
    tasks: Vec<TaskRow>,
    /// The `--after` of the next page; `null` on the last page.
    next: Option<Uuid>,
}

#[derive(Debug, Serialize)]
struct TaskRow {
    task_id: Uuid,
    queue: String,
    task_name: String,
    state: String,
    attempt: u32,
    max_attempts: u32,
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
    let query = TaskQuery {
        queue: args.queue,
        states: args.state.iter().map(|s| s.status()).collect(),
        task_name: args.name,
        older_than: args.older_than,
        newer_than: args.newer_than,
        parent_task_id: args.parent,
        idempotency_key: args.key,
        old_path_of_patch: args.patch,
        after: args.after,
        limit: usize::try_from(args.limit).unwrap_or(inspect::MAX_PAGE),
    };
    let page = ctx
        .store()
        .list_tasks(&query)
        .await
        .map_err(CliError::store("listing tasks"))?;
    let tasks = page
        .tasks
        .iter()
        .map(|t| TaskRow::new(t, page.now))
        .collect();
    ctx.print(&TaskList {
        tasks,
        next: page.next,
    })
}

impl TaskRow {
    fn new(t: &TaskSummary, now: DateTime<Utc>) -> Self {
        TaskRow {
            task_id: t.task_id,
            queue: t.queue.clone(),
            task_name: t.task_name.clone(),
            state: t.state.as_str().to_owned(),
            attempt: t.attempt,
            max_attempts: t.max_attempts,
            created_at: t.created_at,
            finished_at: t.finished_at,
            age_seconds: Age::between(t.created_at, now),
            last_error: t
                .last_error
                .as_ref()
                .and_then(|e| serde_json::to_value(e).ok()),
        }
    }
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
    attempt: u32,
    max_attempts: u32,
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
    runs: Vec<RunRecord>,
    checkpoints: Vec<Checkpoint>,
    waits: Vec<Wait>,
    subtasks: Vec<Subtask>,
}

#[derive(Debug, Serialize)]
struct Checkpoint {
    name: String,
    value: Value,
    size_bytes: u64,
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
struct Subtask {
    task_id: Uuid,
    parent_task_id: Option<Uuid>,
    task_name: String,
    state: String,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

/// Everything about task `task_id`, or a not-found error.
async fn detail(ctx: &Context, task_id: Uuid) -> Result<inspect::TaskDetail, CliError> {
    ctx.store()
        .inspect_task(task_id)
        .await
        .map_err(CliError::store("reading the task"))?
        .ok_or_else(|| CliError::not_found(format!("task {task_id} not found")))
}

async fn inspect(ctx: &Context, task_id: Uuid) -> Result<(), CliError> {
    let detail = detail(ctx, task_id).await?;
    ctx.print(&TaskDetail::from_detail(detail))
}

async fn export(ctx: &Context, task_id: Uuid) -> Result<(), CliError> {
    let detail = detail(ctx, task_id).await?;
    // Always JSON: the export is read back by programs.
    crate::output::print(crate::output::Format::Json, &Export(detail))
}

/// A task's history as the library serializes it.
#[derive(Debug, Serialize)]
#[serde(transparent)]
struct Export(inspect::TaskDetail);

impl fmt::Display for Export {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let json = serde_json::to_string_pretty(&self.0).map_err(|_| fmt::Error)?;
        f.write_str(&json)
    }
}

impl TaskDetail {
    fn from_detail(d: inspect::TaskDetail) -> Self {
        let s = d.summary;
        let running = d
            .runs
            .last()
            .filter(|run| run.outcome == inspect::RunOutcome::Running);
        TaskDetail {
            task_id: s.task_id,
            queue: s.queue,
            task_name: s.task_name,
            state: s.state.as_str().to_owned(),
            params: d.params,
            headers: json_of(&d.headers),
            attempt: s.attempt,
            max_attempts: s.max_attempts,
            retry_strategy: json_of(&d.retry_strategy),
            cancellation: json_of(&d.cancellation),
            idempotency_key: s.idempotency_key,
            parent_task_id: s.parent_task_id,
            run_id: d.run_id,
            available_at: d.available_at,
            claimed_by: running.and_then(|run| run.worker_id.clone()),
            lease_expires_at: d.lease_expires_at,
            created_at: s.created_at,
            first_started_at: d.first_started_at,
            finished_at: s.finished_at,
            age_seconds: Age::between(s.created_at, d.now),
            output: d.output,
            last_error: s.last_error.as_ref().map(json_of),
            runs: d.runs,
            checkpoints: d
                .checkpoints
                .into_iter()
                .map(|c| Checkpoint {
                    name: c.name,
                    value: c.value,
                    size_bytes: c.size_bytes,
                    run_id: c.run_id,
                    updated_at: c.updated_at,
                })
                .collect(),
            waits: d
                .waits
                .into_iter()
                .map(|w| Wait {
                    name: w.name,
                    event_name: w.event_name,
                    timeout_at: w.timeout_at,
                })
                .collect(),
            subtasks: d
                .subtasks
                .into_iter()
                .map(|t| Subtask {
                    task_id: t.task_id,
                    parent_task_id: t.parent_task_id,
                    task_name: t.task_name,
                    state: t.state.as_str().to_owned(),
                    created_at: t.created_at,
                    finished_at: t.finished_at,
                })
                .collect(),
        }
    }
}

/// A value of the library as JSON (they all serialize).
fn json_of<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
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

        writeln!(f, "\nruns ({}):", self.runs.len())?;
        if !self.runs.is_empty() {
            let mut table = Table::new(&[
                ("ATTEMPT", Align::Right),
                ("RUN", Align::Left),
                ("WORKER", Align::Left),
                ("CLAIMED", Align::Left),
                ("ENDED", Align::Left),
                ("OUTCOME", Align::Left),
                ("DETAIL", Align::Left),
            ]);
            for r in &self.runs {
                let detail = match (&r.error, &r.waiting_for) {
                    (Some(error), _) => shorten(
                        &format!(
                            "{}: {}",
                            json_of(&error.kind).as_str().unwrap_or("-"),
                            error.message
                        ),
                        ERROR_WIDTH,
                    ),
                    (None, Some(waiting)) => format!("waits for {waiting}"),
                    (None, None) => String::new(),
                };
                table.row(vec![
                    r.attempt.to_string(),
                    r.run_id.to_string(),
                    r.worker_id.clone().unwrap_or_else(|| "-".to_owned()),
                    opt_time(r.claimed_at),
                    opt_time(r.ended_at),
                    r.outcome.as_str().to_owned(),
                    detail,
                ]);
            }
            write!(f, "{table}")?;
        }

        writeln!(f, "\ncheckpoints ({}):", self.checkpoints.len())?;
        if !self.checkpoints.is_empty() {
            let mut table = Table::new(&[
                ("NAME", Align::Left),
                ("UPDATED", Align::Left),
                ("RUN", Align::Left),
                ("SIZE", Align::Right),
                ("VALUE", Align::Left),
            ]);
            for c in &self.checkpoints {
                table.row(vec![
                    c.name.clone(),
                    time(c.updated_at),
                    c.run_id.to_string(),
                    c.size_bytes.to_string(),
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

        writeln!(f, "\nsubtasks ({}):", self.subtasks.len())?;
        if !self.subtasks.is_empty() {
            let mut table = Table::new(&[
                ("ID", Align::Left),
                ("PARENT", Align::Left),
                ("NAME", Align::Left),
                ("STATE", Align::Left),
                ("CREATED", Align::Left),
                ("FINISHED", Align::Left),
            ]);
            for c in &self.subtasks {
                table.row(vec![
                    c.task_id.to_string(),
                    c.parent_task_id
                        .map(|id| id.to_string())
                        .unwrap_or_default(),
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
