//! `durable stats`: task counts by state, the oldest pending task, the last minute's throughput.

use std::fmt;

use chrono::{DateTime, Utc};
use durable_postgres_sql::admin;
use serde::Serialize;

use super::{Age, Context, StateCounts, get};
use crate::cli::queue_name;
use crate::error::CliError;
use crate::output::table::write_fields;

/// The arguments of `stats`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Only this queue (default: every queue)
    #[arg(long, value_parser = queue_name)]
    queue: Option<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    /// The queue counted, or `null` for every queue.
    queue: Option<String>,
    counts: StateCounts,
    /// When the oldest pending task was spawned.
    oldest_pending_at: Option<DateTime<Utc>>,
    /// Its age in seconds.
    oldest_pending_age_seconds: Option<Age>,
    /// Tasks completed within the last minute.
    completed_last_minute: i64,
    /// Tasks that failed for good within the last minute.
    failed_last_minute: i64,
}

pub(super) async fn run(ctx: &Context, args: Args) -> Result<(), CliError> {
    if let Some(queue) = &args.queue {
        ctx.require_queue(queue).await?;
    }
    let row = sqlx::query(admin::STATS)
        .bind(args.queue.as_deref())
        .fetch_one(ctx.pool())
        .await
        .map_err(CliError::db("counting tasks"))?;
    let now: DateTime<Utc> = get(&row, "store_now")?;
    let oldest_pending_at: Option<DateTime<Utc>> = get(&row, "oldest_pending_at")?;
    ctx.print(&Report {
        queue: args.queue,
        counts: StateCounts::from_row(&row)?,
        oldest_pending_at,
        oldest_pending_age_seconds: oldest_pending_at.map(|at| Age::between(at, now)),
        completed_last_minute: get(&row, "completed_last_minute")?,
        failed_last_minute: get(&row, "failed_last_minute")?,
    })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut fields = vec![(
            "queue",
            self.queue.clone().unwrap_or_else(|| "(all)".to_owned()),
        )];
        fields.extend(
            self.counts
                .by_state()
                .iter()
                .map(|(state, n)| (*state, n.to_string())),
        );
        fields.push((
            "oldest pending",
            self.oldest_pending_age_seconds
                .map_or_else(|| "-".to_owned(), Age::text),
        ));
        fields.push((
            "completed (last minute)",
            self.completed_last_minute.to_string(),
        ));
        fields.push(("failed (last minute)", self.failed_last_minute.to_string()));
        write_fields(f, &fields)
    }
}
