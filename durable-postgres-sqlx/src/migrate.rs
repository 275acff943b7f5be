//! The migration protocol of `durable-postgres` on one sqlx connection.

use durable_core::StoreError;
use durable_postgres::Driver;
use sqlx::{Connection, PgConnection, PgPool};

use crate::driver::{SqlxConnection, SqlxDriver, driver_error};

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
    durable_postgres::migrate::on_pool(&SqlxDriver::new(pool.clone())).await
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
        .map_err(|e| StoreError::backend(SqlxDriver::NAME, driver_error(e)))?;
    let result = migrate_connection(&mut connection).await;
    if let Err(error) = connection.close().await {
        tracing::debug!(%error, "closing the migration connection failed");
    }
    result
}

/// [`migrate`] on one connection: locks, applies what is missing, unlocks.
pub async fn migrate_connection(connection: &mut PgConnection) -> Result<(), StoreError> {
    let mut connection = SqlxConnection::borrowed(connection);
    durable_postgres::migrate::run::<SqlxDriver, _>(&mut connection).await
}
