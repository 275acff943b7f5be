//! `durable retry ID`: makes a failed task pending again.

use std::fmt;

use durable_core::Store;
use serde::Serialize;
use uuid::Uuid;

use super::Context;
use crate::cli::queue_name;
use crate::error::CliError;

/// The arguments of `retry`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The id of a failed task
    id: Uuid,
    /// The task's queue (default: wherever the task is; given, a task of another queue is
    /// not found)
    #[arg(long, value_parser = queue_name)]
    queue: Option<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    task_id: Uuid,
    queue: String,
    /// The run of the new attempt.
    run_id: Uuid,
    /// The new attempt's number.
    attempt: u32,
}

pub(super) async fn run(ctx: &Context, args: Args) -> Result<(), CliError> {
    let location = ctx.locate_task(args.id, args.queue.as_deref()).await?;
    // The store refuses a task that is not failed (exit code 4), in the same statement that
    // retries a failed one.
    let retried = ctx
        .store()
        .retry_task(&location.queue, args.id)
        .await
        .map_err(CliError::store("retrying the task"))?;
    ctx.print(&Report {
        task_id: retried.task_id,
        queue: location.queue,
        run_id: retried.run_id,
        attempt: retried.attempt,
    })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "task {} (queue `{}`) is pending again as attempt {} (run {})",
            self.task_id, self.queue, self.attempt, self.run_id
        )
    }
}
