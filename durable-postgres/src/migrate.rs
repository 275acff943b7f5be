//! The migration protocol of `durable-postgres-sql`, run once for every driver on one
//! [`Connection`] of it.

use durable_core::StoreError;
use durable_postgres_sql::{MIGRATION_LOCK_KEY, MIGRATIONS, Migration, migrate as protocol};

use crate::decode::read;
use crate::driver::{Connection, Driver, DriverError, Param};
use crate::error::{Ctx, store_error};

/// Applies the migrations the database lacks ([`run`]) on a connection of `driver`'s pool,
/// closing that connection rather than pooling it if this fails (its session may still hold
/// the migration lock).
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

/// Applies the migrations of `durable` that the database lacks, on `connection`.
///
/// Safe when several processes start at once: they take turns on an advisory lock
/// ([`MIGRATION_LOCK_KEY`]), and each migration is applied in its own transaction together with
/// its row in `durable.schema_migrations`. Applying them again changes nothing. Versions the
/// database has but this release does not know (a newer release migrated it) are left alone.
///
/// If this fails, the lock may still be held by the connection's session: close the connection
/// rather than return it to a pool.
pub async fn run<D, C>(connection: &mut C) -> Result<(), StoreError>
where
    D: Driver,
    C: Connection<Row = D::Row>,
{
    let error = |e| store_error(D::NAME, e, Ctx::None);
    connection
        .query(protocol::LOCK, &[Param::Int8(Some(MIGRATION_LOCK_KEY))])
        .await
        .map_err(error)?;
    let applied = apply_missing::<D, C>(connection).await;
    let unlocked = connection
        .query(protocol::UNLOCK, &[Param::Int8(Some(MIGRATION_LOCK_KEY))])
        .await
        .map_err(error);
    applied?;
    unlocked?;
    Ok(())
}

async fn apply_missing<D, C>(connection: &mut C) -> Result<(), StoreError>
where
    D: Driver,
    C: Connection<Row = D::Row>,
{
    let error = |e| store_error(D::NAME, e, Ctx::None);
    connection.batch(protocol::BOOTSTRAP).await.map_err(error)?;
    let applied = connection
        .query(protocol::APPLIED_VERSIONS, &[])
        .await
        .map_err(error)?
        .iter()
        .map(|row| read::<D>(row).get::<i64>("version"))
        .collect::<Result<Vec<_>, _>>()?;
    for migration in MIGRATIONS {
        if applied.contains(&migration.version) {
            continue;
        }
        if let Err(failed) = apply(connection, migration).await {
            if let Err(error) = connection.batch("ROLLBACK").await {
                tracing::debug!(%error, "rolling back a failed migration failed");
            }
            return Err(error(failed));
        }
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applied durable migration"
        );
    }
    Ok(())
}

/// Applies one migration and records it, in one transaction.
async fn apply<C: Connection>(
    connection: &mut C,
    migration: &Migration,
) -> Result<(), DriverError> {
    connection.batch("BEGIN").await?;
    connection.batch(migration.sql).await?;
    connection
        .query(
            protocol::RECORD,
            &[
                Param::Int8(Some(migration.version)),
                Param::Text(Some(migration.name)),
            ],
        )
        .await?;
    connection.batch("COMMIT").await
}
