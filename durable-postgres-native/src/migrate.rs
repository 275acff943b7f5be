//! The migration protocol of `durable-postgres-sql`, on tokio-postgres.

use deadpool_postgres::{Object, Pool};
use durable_core::StoreError;
use durable_postgres_sql::{MIGRATION_LOCK_KEY, MIGRATIONS, migrate as protocol};
use tokio_postgres::{Client, NoTls};

use crate::error::{Ctx, STORE, map_pg, map_pool};

/// Applies the schema migrations of `durable` that the database lacks.
///
/// Safe when several processes start at once: they take turns on an advisory lock, and each
/// migration is applied in its own transaction together with its row in
/// `durable.schema_migrations`. Applying them again changes nothing.
/// [`DurableBuilder::build`](crate::DurableBuilder::build) calls this unless told not to.
///
/// ```no_run
/// # async fn example(pool: durable_postgres_native::deadpool_postgres::Pool)
/// # -> Result<(), Box<dyn std::error::Error>> {
/// durable_postgres_native::migrate(&pool).await?;
/// # Ok(()) }
/// ```
pub async fn migrate(pool: &Pool) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(map_pool)?;
    let result = migrate_connection(&mut client).await;
    if result.is_err() {
        // The session lock may still be held: close the connection instead of pooling it.
        drop(Object::take(client));
    }
    result
}

/// [`migrate`] on a database given by URL, over one connection without TLS that is closed
/// afterwards (for test fixtures that build a template database).
///
/// ```no_run
/// # async fn example() -> Result<(), durable_core::StoreError> {
/// durable_postgres_native::migrate_url("postgres://localhost/myapp").await?;
/// # Ok(()) }
/// ```
pub async fn migrate_url(url: &str) -> Result<(), StoreError> {
    let (mut client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| map_pg(e, Ctx::None))?;
    let driver = tokio::spawn(connection);
    let result = migrate_connection(&mut client).await;
    drop(client);
    match driver.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "closing the migration connection failed"),
        Err(error) => return Err(StoreError::backend(STORE, error)),
    }
    result
}

/// [`migrate`] on one connection: locks, applies what is missing, unlocks. A
/// [`deadpool_postgres::Object`] dereferences to the [`Client`] this takes.
pub async fn migrate_connection(client: &mut Client) -> Result<(), StoreError> {
    let map = |e| map_pg(e, Ctx::None);
    client
        .execute(protocol::LOCK, &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(map)?;
    let applied = apply_missing(client).await;
    let unlocked = client
        .execute(protocol::UNLOCK, &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(map);
    applied?;
    unlocked?;
    Ok(())
}

async fn apply_missing(client: &mut Client) -> Result<(), StoreError> {
    let map = |e| map_pg(e, Ctx::None);
    // `batch_execute` uses the simple query protocol: several statements in one text.
    client
        .batch_execute(protocol::BOOTSTRAP)
        .await
        .map_err(map)?;
    let applied = client
        .query(protocol::APPLIED_VERSIONS, &[])
        .await
        .map_err(map)?
        .iter()
        .map(|row| row.try_get::<_, i64>("version"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(map)?;
    for migration in MIGRATIONS {
        if applied.contains(&migration.version) {
            continue;
        }
        let tx = client.transaction().await.map_err(map)?;
        tx.batch_execute(migration.sql).await.map_err(map)?;
        tx.execute(protocol::RECORD, &[&migration.version, &migration.name])
            .await
            .map_err(map)?;
        tx.commit().await.map_err(map)?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applied durable migration"
        );
    }
    Ok(())
}
