//! The migration protocol of `durable-postgres` on one tokio-postgres connection.

use deadpool_postgres::Pool;
use durable_core::StoreError;
use durable_postgres::Driver;
use tokio_postgres::{Client, NoTls};

use crate::driver::{NativeConnection, NativeDriver};
use crate::values::pg_error;

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
    durable_postgres::migrate::on_pool(&NativeDriver::from(pool.clone())).await
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
        .map_err(|e| StoreError::backend(NativeDriver::NAME, pg_error(e)))?;
    let driver = tokio::spawn(connection);
    let result = migrate_connection(&mut client).await;
    drop(client);
    match driver.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "closing the migration connection failed"),
        Err(error) => return Err(StoreError::backend(NativeDriver::NAME, error)),
    }
    result
}

/// [`migrate`] on one connection: locks, applies what is missing, unlocks. A
/// [`deadpool_postgres::Object`] dereferences to the [`Client`] this takes.
pub async fn migrate_connection(client: &mut Client) -> Result<(), StoreError> {
    let mut connection = NativeConnection::borrowed(client);
    durable_postgres::migrate::run::<NativeDriver, _>(&mut connection).await
}
