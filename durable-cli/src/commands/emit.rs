//! `durable emit NAME [PAYLOAD]`: emits an event in a queue.

use std::fmt;

use durable_core::Store;
use serde::Serialize;
use serde_json::Value;

use super::Context;
use crate::cli::{event_name, json_value, queue_name};
use crate::error::CliError;

/// The arguments of `emit`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The queue (it must exist)
    #[arg(long, default_value = "default", value_parser = queue_name)]
    queue: String,
    /// The event name (names starting with '$' are reserved)
    #[arg(value_parser = event_name)]
    name: String,
    /// The payload, as JSON
    #[arg(value_parser = json_value, default_value = "null")]
    payload: Value,
}

#[derive(Debug, Serialize)]
struct Report {
    queue: String,
    event: String,
    /// `false`: an event of that name had been emitted in the queue already; the first emit
    /// wins, so nothing changed.
    first: bool,
}

pub(super) async fn run(ctx: &Context, args: Args) -> Result<(), CliError> {
    // Events are remembered per queue: an emit into a misspelt queue would wait there for good.
    ctx.require_queue(&args.queue).await?;
    let first = ctx
        .store()
        .emit_event(&args.queue, &args.name, args.payload)
        .await
        .map_err(CliError::store("emitting the event"))?;
    ctx.print(&Report {
        queue: args.queue,
        event: args.name,
        first,
    })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first {
            writeln!(
                f,
                "emitted event `{}` in queue `{}`",
                self.event, self.queue
            )
        } else {
            writeln!(
                f,
                "event `{}` had already been emitted in queue `{}`: the first emit wins, \
                 nothing changed",
                self.event, self.queue
            )
        }
    }
}
