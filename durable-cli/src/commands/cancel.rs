//! `durable cancel ID`: cancels a task and its unfinished subtasks.

use std::fmt;

use durable_core::Store;
use serde::Serialize;
use uuid::Uuid;

use super::Context;
use crate::cli::queue_name;
use crate::error::CliError;

/// The arguments of `cancel`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The task id
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
    /// `false`: the task had already finished, and nothing changed.
    cancelled: bool,
    /// The task's state now.
    state: String,
}

pub(super) async fn run(ctx: &Context, args: Args) -> Result<(), CliError> {
    let location = ctx.locate_task(args.id, args.queue.as_deref()).await?;
    let cancelled = ctx
        .store()
        .cancel_task(&location.queue, args.id)
        .await
        .map_err(CliError::store("cancelling the task"))?;
    let state = if cancelled {
        "cancelled".to_owned()
    } else {
        // Already finished: say how.
        ctx.locate_task(args.id, None).await?.state
    };
    ctx.print(&Report {
        task_id: args.id,
        queue: location.queue,
        cancelled,
        state,
    })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.cancelled {
            writeln!(
                f,
                "cancelled task {} (queue `{}`) and its unfinished subtasks",
                self.task_id, self.queue
            )
        } else {
            writeln!(
                f,
                "task {} had already finished ({}): nothing to cancel",
                self.task_id, self.state
            )
        }
    }
}
