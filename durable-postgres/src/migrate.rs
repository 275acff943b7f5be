//! The migration protocol of `durable-postgres-sql`, run once for every driver on one
//! [`Connection`] of it.
//!
//! 1. **Up to date?** If `durable.schema_migrations` exists and records every version of
//!    [`MIGRATIONS`], nothing more happens: no lock, no DDL, so a role without the right to
//!    create anything can start a client with migrations on.
//! 2. **One transaction per migration**, under a *transaction-level* advisory lock
//!    ([`MIGRATION_LOCK_KEY`]): the lock ends with the transaction, whatever happens to the
//!    connection, so it cannot leak into a connection pooler's server connection. The wait for
//!    the lock is bounded (`lock_timeout`), and a wait past it fails with a clear error instead
//!    of hanging the process at start.
//! 3. In each transaction: create the schema and the migrations table if missing, read the
//!    applied versions, apply the first missing migration with its record, commit. Versions the
//!    database has but this release does not know (a newer release migrated it) are left alone.
//!
//! Migrations run on a direct connection to PostgreSQL, never through a pooler in transaction
//! mode: DDL and the lock belong to one server session for a whole transaction, which such a
//! pooler keeps, but a migration's statements are many (see docs/operations.md).

use std::time::Duration;

use durable_core::StoreError;
use durable_postgres_sql::{MIGRATION_LOCK_KEY, MIGRATIONS, Migration, migrate as protocol};

use crate::decode::read;
use crate::driver::{Connection, Driver, DriverError, Param};
use crate::error::{Ctx, store_error};

/// How long a migration waits by default for another process that is migrating the same
/// database: see [`run_with`].
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(60);

/// PostgreSQL's `lock_not_available`: the lock wait passed `lock_timeout`.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// Applies the migrations the database lacks ([`run`]) on a connection of `driver`'s pool,
/// closing that connection rather than pooling it if this fails.
pub async fn on_pool<D: Driver>(driver: &D) -> Result<(), StoreError> {
    let mut connection = driver
        .acquire()
        .await
        .map_err(|e| StoreError::backend(D::NAME, e))?;
    let result = run::<D, _>(&mut connection).await;
    if result.is_err() {
        connection.discard();
    }
    result
}

/// Applies the migrations of `durable` that the database lacks, on `connection`, waiting at
/// most [`DEFAULT_LOCK_WAIT`] for another migrating process.
///
/// Safe when several processes start at once: they take turns on the lock, and each migration
/// is applied in its own transaction together with its row in `durable.schema_migrations`.
/// Applying them again changes nothing.
pub async fn run<D, C>(connection: &mut C) -> Result<(), StoreError>
where
    D: Driver,
    C: Connection<Row = D::Row>,
{
    run_with::<D, C>(connection, DEFAULT_LOCK_WAIT).await
}

/// [`run`], waiting at most `lock_wait` for the migration lock before it fails with
/// [`StoreError::Conflict`].
pub async fn run_with<D, C>(connection: &mut C, lock_wait: Duration) -> Result<(), StoreError>
where
    D: Driver,
    C: Connection<Row = D::Row>,
{
    let error = |e| store_error(D::NAME, e, Ctx::None);
    if missing::<D, C>(connection).await.map_err(error)?.is_empty() {
        return Ok(());
    }
    loop {
        match apply_next::<D, C>(connection, lock_wait).await {
            Ok(Some(migration)) => tracing::info!(
                version = migration.version,
                name = migration.name,
                "applied durable migration"
            ),
            Ok(None) => return Ok(()),
            Err(failed) => {
                if let Err(rollback) = connection.batch("ROLLBACK").await {
                    tracing::debug!(error = %rollback, "rolling back a failed migration failed");
                }
                return Err(if failed.code() == Some(LOCK_NOT_AVAILABLE) {
                    StoreError::conflict(format!(
                        "another process has held the migration lock of this database for more \
                         than {lock_wait:?} (a migration in progress, or a session that never \
                         released the lock); nothing was applied: {failed}"
                    ))
                } else {
                    error(failed)
                });
            }
        }
    }
}

/// The migrations of this release the database has not applied, read without a lock or DDL.
async fn missing<D, C>(connection: &mut C) -> Result<Vec<&'static Migration>, DriverError>
where
    D: Driver,
    C: Connection<Row = D::Row>,
{
    let present = connection.query(protocol::TABLE_EXISTS, &[]).await?;
    let present = present
        .first()
        .map(|row| read::<D>(row).get::<bool>("present"))
        .transpose()
        .map_err(|e| DriverError::Other(Box::new(e)))?
        .unwrap_or(false);
    if !present {
        return Ok(MIGRATIONS.iter().collect());
    }
    let applied = applied_versions::<D, C>(connection).await?;
    Ok(MIGRATIONS
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .collect())
}

async fn applied_versions<D, C>(connection: &mut C) -> Result<Vec<i64>, DriverError>
where
    D: Driver,
    C: Connection<Row = D::Row>,
{
    connection
        .query(protocol::APPLIED_VERSIONS, &[])
        .await?
        .iter()
        .map(|row| read::<D>(row).get::<i64>("version"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| DriverError::Other(Box::new(e)))
}

/// In one transaction under the lock: applies the first migration the database lacks and
/// records it, or finds none missing. The caller rolls back on error.
async fn apply_next<D, C>(
    connection: &mut C,
    lock_wait: Duration,
) -> Result<Option<&'static Migration>, DriverError>
where
    D: Driver,
    C: Connection<Row = D::Row>,
{
    let wait_ms = lock_wait.as_millis().clamp(1, i32::MAX as u128);
    connection
        .batch(&format!("BEGIN; SET LOCAL lock_timeout = {wait_ms}"))
        .await?;
    connection
        .query(
            protocol::LOCK_XACT,
            &[Param::Int8(Some(MIGRATION_LOCK_KEY))],
        )
        .await?;
    connection.batch(protocol::BOOTSTRAP).await?;
    let applied = applied_versions::<D, C>(connection).await?;
    let Some(next) = MIGRATIONS.iter().find(|m| !applied.contains(&m.version)) else {
        connection.batch("COMMIT").await?;
        return Ok(None);
    };
    connection.batch(next.sql).await?;
    connection
        .query(
            protocol::RECORD,
            &[
                Param::Int8(Some(next.version)),
                Param::Text(Some(next.name)),
            ],
        )
        .await?;
    connection.batch("COMMIT").await?;
    Ok(Some(next))
}
