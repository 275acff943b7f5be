//! The migration protocol of `durable-postgres` on one tokio-postgres connection.

use deadpool_postgres::{Object, Pool};
use durable_core::StoreError;
use durable_postgres::{Driver, DriverError, MigrationConnection, Param};
use tokio_postgres::{Client, NoTls};

use crate::driver::{NativeDriver, NativeRow, pg_error, pool_error, rows};
use crate::executor::private::Sealed;

fn backend(error: DriverError) -> StoreError {
    StoreError::backend(NativeDriver::NAME, error)
}

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
    let mut client = pool.get().await.map_err(|e| backend(pool_error(e)))?;
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
        .map_err(|e| backend(pg_error(e)))?;
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
    durable_postgres::migrate::run(&mut Migrating(client)).await
}

/// A connection the migration protocol runs on.
struct Migrating<'c>(&'c mut Client);

impl MigrationConnection for Migrating<'_> {
    type Driver = NativeDriver;

    async fn query(
        &mut self,
        statement: &str,
        params: &[Param<'_>],
    ) -> Result<Vec<NativeRow>, DriverError> {
        let found = self.0.run(statement, params).await.map_err(pg_error)?;
        Ok(rows(found))
    }

    async fn batch(&mut self, script: &str) -> Result<(), DriverError> {
        // `batch_execute` uses the simple query protocol: several statements in one text.
        self.0.batch_execute(script).await.map_err(pg_error)
    }
}
