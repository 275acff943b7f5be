//! What a command reports when it does not succeed, and the exit code that goes with it.

use std::fmt;
use std::process::ExitCode;

use durable_core::StoreError;

/// A boxed error kept as the cause of a [`CliError`].
type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The exit codes of `durable`, documented in the crate docs and in `--help`.
pub(crate) mod exit {
    /// The command did what was asked (also: cancel of a task that had already finished, emit
    /// of an event that had already been emitted, create of a queue that exists).
    pub(crate) const OK: u8 = 0;
    /// The database could not be reached, or failed.
    pub(crate) const RUNTIME: u8 = 1;
    /// The command line was wrong (clap's own code for usage errors).
    pub(crate) const USAGE: u8 = 2;
    /// No such task or queue.
    pub(crate) const NOT_FOUND: u8 = 3;
    /// Refused: the operation does not fit the current state.
    pub(crate) const REFUSED: u8 = 4;
}

/// The text after `--help`: the exit codes, for scripts.
pub(crate) const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success (also: cancel of a task that had already finished, emit of an event
     that had already been emitted, create of a queue that exists)
  1  the database could not be reached, or failed
  2  usage error (bad arguments, no database URL)
  3  not found (no such task or queue)
  4  refused (retry of a task that has not failed, drop of a queue with
     unfinished tasks without --force)";

/// Why a command failed; decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The database could not be reached or failed: [`exit::RUNTIME`].
    Runtime,
    /// The command line (or a value in it) was refused: [`exit::USAGE`].
    Usage,
    /// No such task or queue: [`exit::NOT_FOUND`].
    NotFound,
    /// The operation does not fit the current state: [`exit::REFUSED`].
    Refused,
}

/// A failed command: what went wrong, in words for the operator, and the cause.
#[derive(Debug)]
pub(crate) struct CliError {
    failure: Failure,
    message: String,
    source: Option<Source>,
}

impl CliError {
    fn new(failure: Failure, message: impl Into<String>) -> Self {
        CliError {
            failure,
            message: message.into(),
            source: None,
        }
    }

    /// A usage error.
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::new(Failure::Usage, message)
    }

    /// No such task or queue.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(Failure::NotFound, message)
    }

    /// A refusal.
    pub(crate) fn refused(message: impl Into<String>) -> Self {
        Self::new(Failure::Refused, message)
    }

    /// A runtime failure with its cause.
    pub(crate) fn runtime(message: impl Into<String>, source: impl Into<Source>) -> Self {
        CliError {
            failure: Failure::Runtime,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A function that maps a database error met while doing `what` (e.g. `listing tasks`).
    pub(crate) fn db(what: &str) -> impl FnOnce(sqlx::Error) -> CliError + '_ {
        move |source| CliError::runtime(format!("{what} failed"), source)
    }

    /// A function that maps a store error met while doing `what`, by its meaning.
    pub(crate) fn store(what: &str) -> impl FnOnce(StoreError) -> CliError + '_ {
        move |error| match error {
            StoreError::NotFound { .. } => CliError::not_found(error.to_string()),
            StoreError::Conflict { message } => CliError::refused(message),
            StoreError::InvalidInput { .. } => CliError::usage(error.to_string()),
            other => CliError::runtime(format!("{what} failed"), other),
        }
    }

    /// Why the command failed.
    #[cfg(test)]
    pub(crate) fn failure(&self) -> Failure {
        self.failure
    }

    /// The exit code for this failure.
    pub(crate) fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self.failure {
            Failure::Runtime => exit::RUNTIME,
            Failure::Usage => exit::USAGE,
            Failure::NotFound => exit::NOT_FOUND,
            Failure::Refused => exit::REFUSED,
        })
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_keep_their_meaning() {
        let map = |e| CliError::store("cancelling")(e).failure();
        assert_eq!(map(StoreError::not_found("task x")), Failure::NotFound);
        assert_eq!(map(StoreError::conflict("task is done")), Failure::Refused);
        assert_eq!(map(StoreError::invalid("bad")), Failure::Usage);
        assert_eq!(map(StoreError::backend("t", "down")), Failure::Runtime);
    }

    #[test]
    fn runtime_errors_keep_their_cause() {
        let error = CliError::store("cancelling")(StoreError::backend("t", "down"));
        assert_eq!(error.to_string(), "cancelling failed");
        let cause = std::error::Error::source(&error).map(ToString::to_string);
        assert_eq!(cause.as_deref(), Some("t store failed: down"));
    }
}
