//! The migration protocol of `durable-postgres-sql`, on sqlx.

use durable_core::StoreError;
use durable_postgres_sql::{MIGRATION_LOCK_KEY, MIGRATIONS, migrate as protocol};
use sqlx::{Connection, Executor, PgConnection, PgPool};

use crate::error::{Ctx, map_sqlx};

/// Applies the schema migrations of `durable` that the database lacks.
///
/// Safe when several processes start at once: they take turns on an advisory lock, and each
/// migration is applied in its own transaction together with its row in
/// `durable.schema_migrations`. Applying them again changes nothing.
/// [`DurableBuilder::build`](crate::DurableBuilder::build) calls this unless told not to.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = sqlx::PgPool::connect("postgres://localhost/myapp").await?;
/// durable_postgres_sqlx::migrate(&pool).await?;
/// # Ok(()) }
/// ```
pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let mut connection = pool.acquire().await.map_err(|e| map_sqlx(e, Ctx::None))?;
    let result = migrate_connection(&mut connection).await;
    if result.is_err() {
        // The session lock may still be held: close the connection instead of pooling it.
        if let Err(error) = connection.detach().close().await {
            tracing::debug!(%error, "closing the migration connection failed");
        }
    }
    result
}

/// [`migrate`] on a database given by URL, over one connection that is closed afterwards (for
/// test fixtures that build a template database).
///
/// ```no_run
/// # async fn example() -> Result<(), durable_core::StoreError> {
/// durable_postgres_sqlx::migrate_url("postgres://localhost/myapp").await?;
/// # Ok(()) }
/// ```
pub async fn migrate_url(url: &str) -> Result<(), StoreError> {
    let mut connection = PgConnection::connect(url)
        .await
        .map_err(|e| map_sqlx(e, Ctx::None))?;
    let result = migrate_connection(&mut connection).await;
    if let Err(error) = connection.close().await {
        tracing::debug!(%error, "closing the migration connection failed");
    }
    result
}

/// [`migrate`] on one connection: locks, applies what is missing, unlocks.
pub async fn migrate_connection(connection: &mut PgConnection) -> Result<(), StoreError> {
    let map = |e| map_sqlx(e, Ctx::None);
    sqlx::query(protocol::LOCK)
        .bind(MIGRATION_LOCK_KEY)
        .execute(&mut *connection)
        .await
        .map_err(map)?;
    let applied = apply_missing(connection).await;
    let unlocked = sqlx::query(protocol::UNLOCK)
        .bind(MIGRATION_LOCK_KEY)
        .execute(&mut *connection)
        .await
        .map_err(map);
    applied?;
    unlocked?;
    Ok(())
}

async fn apply_missing(connection: &mut PgConnection) -> Result<(), StoreError> {
    let map = |e| map_sqlx(e, Ctx::None);
    // Scripts go through `Executor::execute` on a plain string: the simple query protocol
    // (several statements), with a future that is provably `Send` (`RawSql::execute`'s is not).
    connection.execute(protocol::BOOTSTRAP).await.map_err(map)?;
    let applied: Vec<i64> = sqlx::query_scalar(protocol::APPLIED_VERSIONS)
        .fetch_all(&mut *connection)
        .await
        .map_err(map)?;
    for migration in MIGRATIONS {
        if applied.contains(&migration.version) {
            continue;
        }
        let mut tx = connection.begin().await.map_err(map)?;
        tx.execute(migration.sql).await.map_err(map)?;
        sqlx::query(protocol::RECORD)
            .bind(migration.version)
            .bind(migration.name)
            .execute(&mut *tx)
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
