//! What a driver reports when a call fails ([`DriverError`]), what it means for the port
//! ([`StoreError`]), and the retry of transient failures.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use durable_core::store::RunRef;
use durable_core::{BoxError, StoreError};
use durable_postgres_sql::sqlstate;
use uuid::Uuid;

/// What a driver reports when a call fails. Drivers do not interpret errors:
/// [`PgStore`](crate::PgStore) decides what each means (a refusal of the stored functions, a
/// transient conflict to retry, a value PostgreSQL cannot take, a backend failure).
#[derive(Debug)]
pub enum DriverError {
    /// PostgreSQL answered with an error.
    Database(DatabaseError),
    /// No answer within the call timeout. The connection was closed; the statement may or may
    /// not have been applied.
    TimedOut(Duration),
    /// A parameter could not be encoded for PostgreSQL.
    Encode(BoxError),
    /// Anything else: no connection, a connection lost, a closed pool, a protocol error.
    Other(BoxError),
}

/// An error PostgreSQL answered with.
#[derive(Debug)]
pub struct DatabaseError {
    /// The SQLSTATE, e.g. `40P01`.
    pub code: String,
    /// The server's primary message.
    pub message: String,
    /// The server's detail, if any.
    pub detail: Option<String>,
    /// The driver's own error.
    pub source: BoxError,
}

impl fmt::Display for DatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (SQLSTATE {})", self.message, self.code)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for DatabaseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriverError::Database(error) => write!(f, "PostgreSQL refused: {error}"),
            DriverError::TimedOut(limit) => write!(
                f,
                "PostgreSQL did not answer within {limit:?}; the connection was closed and the \
                 call may or may not have been applied"
            ),
            DriverError::Encode(error) => {
                write!(f, "a value cannot be sent to PostgreSQL: {error}")
            }
            DriverError::Other(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for DriverError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DriverError::Database(error) => Some(error),
            DriverError::TimedOut(_) => None,
            DriverError::Encode(error) | DriverError::Other(error) => Some(&**error),
        }
    }
}

impl DriverError {
    /// The SQLSTATE, for a database error.
    pub fn code(&self) -> Option<&str> {
        match self {
            DriverError::Database(error) => Some(&error.code),
            _ => None,
        }
    }
}

/// How often a call that hit a deadlock or a serialization failure is tried in all.
const ATTEMPTS: u32 = 6;

/// What a failed call was about, to build meaningful errors.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ctx<'a> {
    /// Nothing in particular.
    None,
    /// A fenced write of this run.
    Run(&'a RunRef),
    /// An operation on a task of a queue.
    Task { queue: &'a str, task_id: Uuid },
}

/// Maps a driver error to its meaning; `store` names the store in a backend error.
pub(crate) fn store_error(store: &'static str, error: DriverError, ctx: Ctx<'_>) -> StoreError {
    if let DriverError::Database(db) = &error {
        match (db.code.as_str(), ctx) {
            (sqlstate::LEASE_LOST, Ctx::Run(run)) => {
                return StoreError::LeaseLost {
                    task_id: run.task_id,
                    run_id: run.run_id,
                };
            }
            (sqlstate::CANCELLED, Ctx::Run(run)) => {
                return StoreError::Cancelled {
                    task_id: run.task_id,
                };
            }
            (sqlstate::NOT_FOUND, Ctx::Task { queue, task_id }) => {
                return StoreError::not_found(format!("task {task_id} in queue `{queue}`"));
            }
            (sqlstate::NOT_FOUND, _) => return StoreError::not_found(db.message.clone()),
            (sqlstate::CONFLICT, _) => return StoreError::conflict(db.message.clone()),
            (sqlstate::INVALID_INPUT, _) => return StoreError::invalid(db.message.clone()),
            // Data exceptions and program limits: a value PostgreSQL cannot take (a time out
            // of its range, a string it cannot store, a value too large); retrying cannot help.
            (code, _) if code.starts_with("22") || code.starts_with("54") => {
                return StoreError::invalid(format!("PostgreSQL refused a value: {}", db.message));
            }
            _ => {}
        }
    }
    if let DriverError::Encode(source) = &error {
        return StoreError::invalid(format!("a value cannot be sent to PostgreSQL: {source}"));
    }
    StoreError::backend(store, error)
}

/// Whether the call failed on a deadlock or a serialization failure: it changed nothing and
/// can be made again.
pub(crate) fn is_transient(error: &DriverError) -> bool {
    matches!(
        error.code(),
        Some(sqlstate::DEADLOCK_DETECTED | sqlstate::SERIALIZATION_FAILURE)
    )
}

/// Runs `op`, again after a short random pause when it fails transiently (every store call is
/// one atomic statement, so a failed call changed nothing).
pub(crate) async fn retrying<T, F, Fut>(mut op: F) -> Result<T, DriverError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, DriverError>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Err(error) if attempt < ATTEMPTS && is_transient(&error) => {
                tracing::debug!(%error, attempt, "transient failure; trying again");
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// The pause before try `attempt + 1`: 2 ms after the first failure, doubling up to 64 ms, plus
/// up to as much again at random, so that the calls that collided do not collide again.
fn backoff(attempt: u32) -> Duration {
    let base = 1u64 << attempt.min(6);
    let jitter = (Uuid::new_v4().as_u128() % 1000) as u64;
    Duration::from_micros(base * 1000 + jitter * base)
}

/// A backend error for a result that does not have the expected shape.
pub(crate) fn unexpected(store: &'static str, message: impl Into<String>) -> StoreError {
    StoreError::backend(store, message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_error_shows_the_server_message_code_and_detail() {
        let error = DriverError::Database(DatabaseError {
            code: "42501".into(),
            message: "permission denied for table tasks".into(),
            detail: Some("role app lacks SELECT".into()),
            source: "db error".into(),
        });
        assert_eq!(
            error.to_string(),
            "PostgreSQL refused: permission denied for table tasks (SQLSTATE 42501): role app \
             lacks SELECT"
        );
        assert_eq!(error.code(), Some("42501"));
    }

    fn db(code: &str) -> DriverError {
        DriverError::Database(DatabaseError {
            code: code.into(),
            message: format!("message of {code}"),
            detail: None,
            source: "driver".into(),
        })
    }

    fn run() -> RunRef {
        RunRef {
            queue: "q".into(),
            task_id: Uuid::nil(),
            run_id: Uuid::max(),
        }
    }

    #[test]
    fn refusals_of_the_stored_functions_map_to_their_meaning() {
        let run = run();
        assert!(matches!(
            store_error("s", db(sqlstate::LEASE_LOST), Ctx::Run(&run)),
            StoreError::LeaseLost { task_id, run_id } if task_id == run.task_id && run_id == run.run_id
        ));
        assert!(matches!(
            store_error("s", db(sqlstate::CANCELLED), Ctx::Run(&run)),
            StoreError::Cancelled { task_id } if task_id == run.task_id
        ));
        let task = Ctx::Task {
            queue: "q",
            task_id: Uuid::nil(),
        };
        assert!(matches!(
            store_error("s", db(sqlstate::NOT_FOUND), task),
            StoreError::NotFound { what } if what.contains("queue `q`")
        ));
        assert!(matches!(
            store_error("s", db(sqlstate::NOT_FOUND), Ctx::None),
            StoreError::NotFound { what } if what == "message of UD003"
        ));
        assert!(matches!(
            store_error("s", db(sqlstate::CONFLICT), Ctx::None),
            StoreError::Conflict { .. }
        ));
        assert!(matches!(
            store_error("s", db(sqlstate::INVALID_INPUT), Ctx::None),
            StoreError::InvalidInput { .. }
        ));
    }

    #[test]
    fn data_exceptions_and_limits_are_invalid_input_and_the_rest_backend_errors() {
        for code in ["22008", "22P05", "54000"] {
            assert!(
                matches!(
                    store_error("s", db(code), Ctx::None),
                    StoreError::InvalidInput { .. }
                ),
                "{code}"
            );
        }
        assert!(matches!(
            store_error("s", DriverError::Encode("too big".into()), Ctx::None),
            StoreError::InvalidInput { .. }
        ));
        // A fencing code outside a fenced write means nothing special.
        let backend = store_error("pg", db(sqlstate::LEASE_LOST), Ctx::None);
        assert!(matches!(backend, StoreError::Backend { store: "pg", .. }));
        let backend = store_error("pg", db("42501"), Ctx::None);
        assert!(
            backend
                .to_string()
                .contains("message of 42501 (SQLSTATE 42501)"),
            "{backend}"
        );
        assert!(matches!(
            store_error(
                "pg",
                DriverError::TimedOut(Duration::from_secs(1)),
                Ctx::None
            ),
            StoreError::Backend { .. }
        ));
    }

    #[test]
    fn only_deadlocks_and_serialization_failures_are_transient() {
        assert!(is_transient(&db(sqlstate::DEADLOCK_DETECTED)));
        assert!(is_transient(&db(sqlstate::SERIALIZATION_FAILURE)));
        assert!(!is_transient(&db(sqlstate::LEASE_LOST)));
        assert!(!is_transient(&DriverError::Other("lost".into())));
        assert!(!is_transient(&DriverError::TimedOut(Duration::ZERO)));
    }

    #[test]
    fn backoff_grows_and_stays_bounded() {
        assert!(backoff(1) >= Duration::from_millis(2));
        assert!(backoff(1) < Duration::from_millis(4));
        assert!(backoff(30) >= Duration::from_millis(64));
        assert!(backoff(30) < Duration::from_millis(128));
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_and_others_returned_at_once() {
        let mut calls = 0;
        let result = retrying(|| {
            calls += 1;
            let fail = calls < 3;
            async move {
                if fail {
                    Err(db(sqlstate::DEADLOCK_DETECTED))
                } else {
                    Ok(calls)
                }
            }
        })
        .await;
        assert_eq!(result.ok(), Some(3));

        let mut calls = 0;
        let result: Result<(), _> = retrying(|| {
            calls += 1;
            async { Err(db("42501")) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls, 1);

        let mut calls = 0;
        let result: Result<(), _> = retrying(|| {
            calls += 1;
            async { Err(db(sqlstate::SERIALIZATION_FAILURE)) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls, ATTEMPTS);
    }
}
