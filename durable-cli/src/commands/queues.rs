//! `durable queues list | create | drop`.

use std::fmt;

use chrono::{DateTime, Utc};
use clap::Subcommand;
use durable_postgres_sql::admin;
use serde::Serialize;
use sqlx::Connection;

use super::{Age, Context, StateCounts, get};
use crate::cli::queue_name;
use crate::error::CliError;
use crate::output::table::{Align, Table};

/// The `queues` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// List the queues with their tasks counted by state
    List,
    /// Create a queue (nothing happens if it exists)
    Create {
        /// The queue: 1 to 64 characters from a-z, A-Z, 0-9, '_', '-' and '.'
        #[arg(value_parser = queue_name)]
        name: String,
    },
    /// Drop a queue with its tasks, their checkpoints and waits, and its events
    ///
    /// Refused (exit code 4) while the queue has pending, running or sleeping tasks, unless
    /// --force is given. Stop the queue's workers and clients first: a task spawned into the
    /// queue while it is dropped may outlive it.
    Drop {
        /// The queue
        #[arg(value_parser = queue_name)]
        name: String,
        /// Drop the queue even if it has unfinished tasks (they are deleted)
        #[arg(long)]
        force: bool,
    },
}

pub(super) async fn run(ctx: &Context, command: Command) -> Result<(), CliError> {
    match command {
        Command::List => list(ctx).await,
        Command::Create { name } => create(ctx, name).await,
        Command::Drop { name, force } => drop_queue(ctx, name, force).await,
    }
}

#[derive(Debug, Serialize)]
struct QueueList {
    queues: Vec<QueueRow>,
}

#[derive(Debug, Serialize)]
struct QueueRow {
    queue: String,
    created_at: DateTime<Utc>,
    counts: StateCounts,
    /// When the oldest pending task was spawned.
    oldest_pending_at: Option<DateTime<Utc>>,
    /// Its age in seconds.
    oldest_pending_age_seconds: Option<Age>,
}

async fn list(ctx: &Context) -> Result<(), CliError> {
    let rows = sqlx::query(admin::LIST_QUEUES)
        .fetch_all(ctx.pool())
        .await
        .map_err(CliError::db("listing queues"))?;
    let mut queues = Vec::with_capacity(rows.len());
    for row in &rows {
        let now: DateTime<Utc> = get(row, "store_now")?;
        let oldest_pending_at: Option<DateTime<Utc>> = get(row, "oldest_pending_at")?;
        queues.push(QueueRow {
            queue: get(row, "queue_name")?,
            created_at: get(row, "created_at")?,
            counts: StateCounts::from_row(row)?,
            oldest_pending_at,
            oldest_pending_age_seconds: oldest_pending_at.map(|at| Age::between(at, now)),
        });
    }
    ctx.print(&QueueList { queues })
}

impl fmt::Display for QueueList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut table = Table::new(&[
            ("QUEUE", Align::Left),
            ("PENDING", Align::Right),
            ("RUNNING", Align::Right),
            ("SLEEPING", Align::Right),
            ("COMPLETED", Align::Right),
            ("FAILED", Align::Right),
            ("CANCELLED", Align::Right),
            ("OLDEST PENDING", Align::Right),
        ]);
        for q in &self.queues {
            let mut cells = vec![q.queue.clone()];
            cells.extend(q.counts.by_state().iter().map(|(_, n)| n.to_string()));
            cells.push(
                q.oldest_pending_age_seconds
                    .map_or_else(|| "-".to_owned(), Age::text),
            );
            table.row(cells);
        }
        write!(f, "{table}")
    }
}

#[derive(Debug, Serialize)]
struct Created {
    queue: String,
    /// `false`: the queue existed.
    created: bool,
}

async fn create(ctx: &Context, queue: String) -> Result<(), CliError> {
    let row = sqlx::query(admin::CREATE_QUEUE)
        .bind(&queue)
        .fetch_optional(ctx.pool())
        .await
        .map_err(CliError::db("creating the queue"))?;
    ctx.print(&Created {
        queue,
        created: row.is_some(),
    })
}

impl fmt::Display for Created {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.created {
            writeln!(f, "created queue `{}`", self.queue)
        } else {
            writeln!(f, "queue `{}` already exists", self.queue)
        }
    }
}

#[derive(Debug, Serialize)]
struct Dropped {
    queue: String,
    /// Tasks deleted, in every state.
    tasks_deleted: i64,
    /// Of those, the pending, running or sleeping ones (only with `--force`).
    unfinished_deleted: i64,
    /// Events deleted.
    events_deleted: i64,
}

async fn drop_queue(ctx: &Context, queue: String, force: bool) -> Result<(), CliError> {
    let refuse = |unfinished: i64| {
        CliError::refused(format!(
            "queue `{queue}` has {unfinished} unfinished task(s) (pending, running or \
             sleeping); stop its workers, cancel them, or pass --force to delete them anyway"
        ))
    };
    let mut connection = ctx
        .pool()
        .acquire()
        .await
        .map_err(CliError::db("connecting"))?;
    let mut tx = connection
        .begin()
        .await
        .map_err(CliError::db("starting a transaction"))?;
    let locked = sqlx::query(admin::LOCK_QUEUE)
        .bind(&queue)
        .fetch_optional(&mut *tx)
        .await
        .map_err(CliError::db("locking the queue"))?;
    if locked.is_none() {
        return Err(CliError::not_found(format!("queue `{queue}` not found")));
    }
    let counts = sqlx::query(admin::LOCK_QUEUE_TASKS)
        .bind(&queue)
        .fetch_one(&mut *tx)
        .await
        .map_err(CliError::db("locking the queue's tasks"))?;
    let unfinished: i64 = get(&counts, "unfinished")?;
    if unfinished > 0 && !force {
        return Err(refuse(unfinished));
    }
    let deleted = sqlx::query(admin::DELETE_QUEUE)
        .bind(&queue)
        .fetch_one(&mut *tx)
        .await
        .map_err(CliError::db("dropping the queue"))?;
    let unfinished: i64 = get(&deleted, "unfinished")?;
    if unfinished > 0 && !force {
        // Spawned since the count: the transaction rolls back when `tx` drops.
        return Err(refuse(unfinished));
    }
    let report = Dropped {
        tasks_deleted: get(&deleted, "tasks")?,
        unfinished_deleted: unfinished,
        events_deleted: get(&deleted, "events")?,
        queue,
    };
    tx.commit()
        .await
        .map_err(CliError::db("committing the drop"))?;
    ctx.print(&report)
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "dropped queue `{}`: {} task(s) deleted ({} unfinished), {} event(s) deleted",
            self.queue, self.tasks_deleted, self.unfinished_deleted, self.events_deleted
        )
    }
}
