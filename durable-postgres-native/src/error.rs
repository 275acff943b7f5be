//! tokio-postgres and pool errors mapped to the meanings of [`StoreError`], and the retry of
//! transient failures.

use std::future::Future;
use std::time::Duration;

use durable_core::StoreError;
use durable_core::store::RunRef;
use durable_postgres_sql::sqlstate;
use uuid::Uuid;

/// The name this store gives in [`StoreError::Backend`].
pub(crate) const STORE: &str = "postgres-native";

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

/// Maps a tokio-postgres error to its meaning.
pub(crate) fn map_pg(error: tokio_postgres::Error, ctx: Ctx<'_>) -> StoreError {
    if let Some(db) = error.as_db_error() {
        match (db.code().code(), ctx) {
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
            (sqlstate::NOT_FOUND, _) => return StoreError::not_found(db.message().to_owned()),
            (sqlstate::CONFLICT, _) => return StoreError::conflict(db.message().to_owned()),
            (sqlstate::INVALID_INPUT, _) => return StoreError::invalid(db.message().to_owned()),
            // Data exceptions and program limits: a value PostgreSQL cannot take (a time out
            // of its range, a string it cannot store, a value too large); retrying cannot help.
            (code, _) if code.starts_with("22") || code.starts_with("54") => {
                return StoreError::invalid(format!(
                    "PostgreSQL refused a value: {}",
                    db.message()
                ));
            }
            _ => {}
        }
    }
    StoreError::backend(STORE, error)
}

/// Maps a failure to get a connection from the pool.
pub(crate) fn map_pool(error: deadpool_postgres::PoolError) -> StoreError {
    StoreError::backend(STORE, error)
}

/// The backend error of a call that got no answer within `limit` (its connection was dropped).
pub(crate) fn timed_out(limit: Duration) -> StoreError {
    StoreError::backend(
        STORE,
        format!(
            "PostgreSQL did not answer within {limit:?}; the connection was dropped and the call \
             may or may not have been applied"
        ),
    )
}

/// A backend error for a row that does not have the expected shape.
pub(crate) fn unexpected(message: impl Into<String>) -> StoreError {
    StoreError::backend(STORE, message.into())
}

/// Whether the error is a deadlock or a serialization failure: the call changed nothing and can
/// be made again.
pub(crate) fn is_transient(error: &StoreError) -> bool {
    let StoreError::Backend { source, .. } = error else {
        return false;
    };
    source
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(tokio_postgres::Error::code)
        .is_some_and(|code| {
            matches!(
                code.code(),
                sqlstate::DEADLOCK_DETECTED | sqlstate::SERIALIZATION_FAILURE
            )
        })
}

/// Runs `op`, again after a short random pause when it fails transiently (every store call is
/// one atomic statement, so a failed call changed nothing).
pub(crate) async fn retrying<T, F, Fut>(mut op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
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

/// 2 ms and up, doubling, with jitter so that the colliding calls do not collide again.
fn backoff(attempt: u32) -> Duration {
    let base = 1u64 << attempt.min(6);
    let jitter = (Uuid::new_v4().as_u128() % 1000) as u64;
    Duration::from_micros(base * 1000 + jitter * base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_backend_errors_from_postgres_are_transient() {
        assert!(!is_transient(&StoreError::conflict("x")));
        assert!(!is_transient(&unexpected("no row")));
    }

    #[test]
    fn backoff_grows_and_stays_bounded() {
        assert!(backoff(1) >= Duration::from_millis(2));
        assert!(backoff(1) < Duration::from_millis(4));
        assert!(backoff(30) < Duration::from_millis(130));
    }
}
