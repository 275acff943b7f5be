//! The command line: global options, and value parsers shared by the commands.

use clap::Parser;
use durable_core::policy;
use durable_postgres_sqlx::DATABASE_URL_ENV;
use serde_json::Value;

use crate::commands::Command;
use crate::error::EXIT_CODES_HELP;

/// Administer the tasks and queues of durable on PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "durable", version, after_help = EXIT_CODES_HELP)]
pub(crate) struct Cli {
    /// PostgreSQL connection URL (the database the applications of durable use)
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = DATABASE_URL_ENV,
        hide_env_values = true
    )]
    pub(crate) database_url: Option<String>,

    /// Print one JSON document on stdout instead of a table
    #[arg(long, global = true)]
    pub(crate) json: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// A queue name, checked as `durable` checks it.
pub(crate) fn queue_name(text: &str) -> Result<String, String> {
    policy::validate_queue_name(text)?;
    Ok(text.to_owned())
}

/// An event name chosen by a user (names starting with `$` are reserved).
pub(crate) fn event_name(text: &str) -> Result<String, String> {
    policy::validate_user_name("event", text)?;
    Ok(text.to_owned())
}

/// A task name, as a filter.
pub(crate) fn task_name(text: &str) -> Result<String, String> {
    policy::validate_name("task", text)?;
    Ok(text.to_owned())
}

/// A JSON value, checked as `durable` checks a payload before storing it.
pub(crate) fn json_value(text: &str) -> Result<Value, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    policy::check_payload("the payload", &value, policy::DEFAULT_MAX_PAYLOAD_BYTES)?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn values_are_checked() {
        assert!(queue_name("jobs.v2").is_ok());
        assert!(queue_name("bad name").is_err());
        assert!(event_name("order:42").is_ok());
        assert!(event_name("$child:x").is_err());
        assert_eq!(json_value("{\"a\": 1}"), Ok(serde_json::json!({"a": 1})));
        assert!(json_value("{a: 1}").is_err_and(|e| e.starts_with("invalid JSON")));
        assert!(json_value("\"a\\u0000b\"").is_err());
    }
}
