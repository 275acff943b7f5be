//! The migration protocol of `durable-postgres` on one sqlx connection.

use durable_core::StoreError;
use durable_postgres::{Driver, DriverError, MigrationConnection, Param};
use sqlx::{Connection, Executor, PgConnection, PgPool};

use crate::driver::{SqlxDriver, SqlxRow, bind, driver_error, rows};

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
    let mut connection = pool
        .acquire()
        .await
        .map_err(|e| StoreError::backend(SqlxDriver::NAME, driver_error(e)))?;
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
        .map_err(|e| StoreError::backend(SqlxDriver::NAME, driver_error(e)))?;
    let result = migrate_connection(&mut connection).await;
    if let Err(error) = connection.close().await {
        tracing::debug!(%error, "closing the migration connection failed");
    }
    result
}

/// [`migrate`] on one connection: locks, applies what is missing, unlocks.
pub async fn migrate_connection(connection: &mut PgConnection) -> Result<(), StoreError> {
    durable_postgres::migrate::run(&mut Migrating(connection)).await
}

/// A connection the migration protocol runs on.
struct Migrating<'c>(&'c mut PgConnection);

impl MigrationConnection for Migrating<'_> {
    type Driver = SqlxDriver;

    async fn query(
        &mut self,
        statement: &str,
        params: &[Param<'_>],
    ) -> Result<Vec<SqlxRow>, DriverError> {
        let found = bind(statement, params)
            .fetch_all(&mut *self.0)
            .await
            .map_err(driver_error)?;
        Ok(rows(found))
    }

    async fn batch(&mut self, script: &str) -> Result<(), DriverError> {
        // `Executor::execute` on a plain string: the simple query protocol (several
        // statements), with a future that is provably `Send` (`RawSql::execute`'s is not).
        self.0.execute(script).await.map(drop).map_err(driver_error)
    }
}
