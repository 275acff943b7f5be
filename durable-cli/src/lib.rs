//! `durable`: the admin CLI of [durable](https://github.com/durable-rs/durable), for the
//! operators of an application that runs its tasks on PostgreSQL.
//!
//! It reads and changes the same database as the `durable` library, through the same SQL: the
//! schema migrations and statement texts of `durable-postgres-sql`, and for cancel, retry and
//! emit the operations of the storage port (`durable-postgres-sqlx`'s `SqlxStore`), so a command
//! does exactly what the library's call would. This crate's library is the whole program; the
//! binary `durable` calls [`run`].
//!
//! # Connecting
//!
//! `--database-url URL`, or else the environment variable `DURABLE_DATABASE_URL` (the one the
//! library reads).
//!
//! # Commands
//!
//! | command | what it does |
//! |---------|--------------|
//! | `migrate` | applies the schema migrations the database lacks; lists the applied ones |
//! | `queues list` | every queue with its tasks counted by state and its oldest pending task's age |
//! | `queues create NAME` | creates a queue (nothing happens if it exists) |
//! | `queues drop NAME [--force]` | deletes a queue, its tasks (with checkpoints and waits), events and schedules, in one transaction; refused while it has unfinished tasks, unless `--force` |
//! | `tasks list [--queue Q] [--state S].. [--name N] [--older-than D] [--newer-than D] [--limit N]` | tasks, newest first (at most 50 unless `--limit`) |
//! | `tasks inspect ID` | everything about a task: params, headers, attempts, error, output, timestamps, checkpoints with their values, waits, subtasks |
//! | `cancel ID [--queue Q]` | cancels a task and its unfinished subtasks |
//! | `retry ID [--queue Q]` | makes a failed task pending again as a new attempt |
//! | `emit [--queue Q] NAME [PAYLOAD_JSON]` | emits an event in a queue, which must exist (`default` unless `--queue`; payload `null` unless given) |
//! | `stats [--queue Q]` | counts by state, the oldest pending task's age, tasks completed and failed in the last minute |
//! | `schedules list [--queue Q]` | schedules (every queue unless `--queue`): cron, task, next and last tick |
//! | `schedules create NAME --cron EXPR --task T [--params JSON] [--queue Q] [--max-attempts N]` | creates a schedule, or updates the one of that name |
//! | `schedules delete NAME [--queue Q]` | deletes a schedule (its tasks stay) |
//!
//! Durations are whole numbers with a unit, `s`, `m`, `h` or `d`, and may be combined:
//! `30s`, `15m`, `2h`, `7d`, `1h30m`. Ages are measured on the database clock.
//!
//! # Output
//!
//! Aligned tables (or `label  value` lists) on stdout by default; with `--json`, one JSON
//! document on stdout instead (timestamps in RFC 3339, ages as `*_age_seconds` numbers).
//! Errors go to stderr, as one line per cause.
//!
//! # Exit codes
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success; also cancel of a task that had already finished (the output says so; `"cancelled": false`), emit of an event already emitted in the queue (`"first": false`), create of a queue that exists (`"created": false`) |
//! | 1 | the database could not be reached, or failed |
//! | 2 | usage error: bad arguments or values (a queue name, a duration, JSON, a cron expression), no database URL |
//! | 3 | not found: no such task, queue or schedule |
//! | 4 | refused: retry of a task that is not failed, drop of a queue with unfinished tasks without `--force` |
//!
//! # Examples
//!
//! ```text
//! $ export DURABLE_DATABASE_URL=postgres://localhost/myapp
//! $ durable migrate
//! $ durable tasks list --state failed --newer-than 1h
//! $ durable tasks inspect 0190d1a2-7c4e-7f3a-9b1e-2f6c8d9e0a1b
//! $ durable retry 0190d1a2-7c4e-7f3a-9b1e-2f6c8d9e0a1b
//! $ durable emit --queue orders payment-received '{"order": 42}'
//! $ durable stats --queue orders --json | jq .counts.pending
//! $ durable queues drop old-jobs --force
//! ```

mod cli;
mod commands;
mod duration;
mod error;
mod output;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;
use crate::error::{CliError, exit};

/// Runs `durable` with the arguments of the process: parses them, runs the command, prints its
/// result on stdout (or the error on stderr) and returns the exit code (see
/// [Exit codes](crate#exit-codes)). For `--help`, `--version` and usage errors, clap prints and
/// exits the process at once (code 0, 0 and 2).
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::runtime("could not start the async runtime", e))
        .and_then(|runtime| runtime.block_on(commands::run(cli)));
    match outcome {
        Ok(()) => ExitCode::from(exit::OK),
        Err(error) => {
            eprintln!("{}", error_report(&error));
            error.exit_code()
        }
    }
}

/// `durable: what failed`, then one `caused by:` line per cause.
fn error_report(error: &CliError) -> String {
    let mut report = format!("durable: {error}");
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        report.push_str(&format!("\n  caused by: {inner}"));
        cause = inner.source();
    }
    report
}
