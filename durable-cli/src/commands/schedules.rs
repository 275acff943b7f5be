//! `durable schedules list|create|delete`: the recurring spawns of a queue.

use std::fmt;

use chrono::{DateTime, Utc};
use durable_core::{DurableBuilder, DurableError, SpawnOptions, Store};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::Context;
use crate::cli::{json_value, queue_name, task_name};
use crate::error::CliError;
use crate::output::opt_time;
use crate::output::table::{Align, Table};

/// The subcommands of `schedules`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// List schedules (every queue unless --queue is given)
    List {
        /// Only this queue's schedules
        #[arg(long, value_parser = queue_name)]
        queue: Option<String>,
    },
    /// Create a schedule, or update the one of that name (it then starts again from its cron)
    Create(CreateArgs),
    /// Delete a schedule (the tasks it spawned stay)
    Delete {
        /// The schedule's name
        name: String,
        /// Its queue
        #[arg(long, default_value = "default", value_parser = queue_name)]
        queue: String,
    },
}

/// The arguments of `schedules create`.
#[derive(Debug, clap::Args)]
pub(crate) struct CreateArgs {
    /// The schedule's name, unique in its queue
    name: String,
    /// When to spawn: a cron expression in UTC (5 fields, or 6 with seconds first; @hourly,
    /// @daily...)
    #[arg(long)]
    cron: String,
    /// The name of the task to spawn at each tick
    #[arg(long, value_parser = task_name)]
    task: String,
    /// The params of each spawned task, as JSON
    #[arg(long, default_value = "null", value_parser = json_value)]
    params: Value,
    /// The queue of the schedule and of its tasks
    #[arg(long, default_value = "default", value_parser = queue_name)]
    queue: String,
    /// Attempts in all for each spawned task (default: the library's default, 5)
    #[arg(long)]
    max_attempts: Option<u32>,
}

#[derive(Debug, Serialize)]
struct ScheduleRow {
    queue: String,
    name: String,
    cron: String,
    task_name: String,
    params: Value,
    next_run_at: Option<DateTime<Utc>>,
    last_run_at: Option<DateTime<Utc>>,
    last_task_id: Option<Uuid>,
}

#[derive(Debug, Serialize)]
struct ScheduleList {
    schedules: Vec<ScheduleRow>,
}

#[derive(Debug, Serialize)]
struct Created {
    queue: String,
    name: String,
    cron: String,
    /// `false`: an existing schedule was updated.
    created: bool,
}

#[derive(Debug, Serialize)]
struct Deleted {
    queue: String,
    name: String,
}

pub(super) async fn run(ctx: &Context, command: Command) -> Result<(), CliError> {
    match command {
        Command::List { queue } => list(ctx, queue).await,
        Command::Create(args) => create(ctx, args).await,
        Command::Delete { name, queue } => delete(ctx, name, queue).await,
    }
}

async fn list(ctx: &Context, queue: Option<String>) -> Result<(), CliError> {
    if let Some(queue) = &queue {
        ctx.require_queue(queue).await?;
    }
    let records = ctx
        .store()
        .list_schedules(queue.as_deref())
        .await
        .map_err(CliError::store("listing schedules"))?;
    let schedules = records
        .into_iter()
        .map(|record| ScheduleRow {
            queue: record.spec.queue,
            name: record.spec.name,
            cron: record.spec.cron,
            task_name: record.spec.task_name,
            params: record.spec.params,
            next_run_at: record.next_run_at,
            last_run_at: record.last_run_at,
            last_task_id: record.last_task_id,
        })
        .collect();
    ctx.print(&ScheduleList { schedules })
}

async fn create(ctx: &Context, args: CreateArgs) -> Result<(), CliError> {
    let client = DurableBuilder::new()
        .queue_name(&args.queue)
        .build_with_store(ctx.store())
        .await
        .map_err(client_error("creating the schedule"))?;
    let options = SpawnOptions {
        max_attempts: args.max_attempts,
        ..SpawnOptions::default()
    };
    let created = client
        .create_schedule_by_name(&args.name, &args.cron, &args.task, args.params, options)
        .await
        .map_err(client_error("creating the schedule"))?;
    ctx.print(&Created {
        queue: args.queue,
        name: args.name,
        cron: args.cron,
        created,
    })
}

async fn delete(ctx: &Context, name: String, queue: String) -> Result<(), CliError> {
    let deleted = ctx
        .store()
        .delete_schedule(&queue, &name)
        .await
        .map_err(CliError::store("deleting the schedule"))?;
    if !deleted {
        return Err(CliError::not_found(format!(
            "schedule `{name}` not found in queue `{queue}`"
        )));
    }
    ctx.print(&Deleted { queue, name })
}

/// Maps a client error: refused input is a usage error, the store's errors by their meaning.
fn client_error(what: &str) -> impl FnOnce(DurableError) -> CliError + '_ {
    move |error| match error {
        DurableError::InvalidInput { .. } | DurableError::InvalidParams { .. } => {
            CliError::usage(error.to_string())
        }
        DurableError::Store(store) => CliError::store(what)(store),
        other => CliError::runtime(format!("{what} failed"), other),
    }
}

impl fmt::Display for ScheduleList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut table = Table::new(&[
            ("QUEUE", Align::Left),
            ("NAME", Align::Left),
            ("CRON", Align::Left),
            ("TASK", Align::Left),
            ("NEXT RUN", Align::Left),
            ("LAST RUN", Align::Left),
        ]);
        for s in &self.schedules {
            table.row(vec![
                s.queue.clone(),
                s.name.clone(),
                s.cron.clone(),
                s.task_name.clone(),
                opt_time(s.next_run_at),
                opt_time(s.last_run_at),
            ]);
        }
        write!(f, "{table}")
    }
}

impl fmt::Display for Created {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.created { "created" } else { "updated" };
        writeln!(
            f,
            "{verb} schedule `{}` in queue `{}`: {}",
            self.name, self.queue, self.cron
        )
    }
}

impl fmt::Display for Deleted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "deleted schedule `{}` of queue `{}`",
            self.name, self.queue
        )
    }
}
