//! One fresh database per test, cloned from a migrated template.

use std::error::Error as StdError;
use std::future::Future;
use std::time::Duration;

use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use super::error::FixtureError;
use super::server::PgServer;
use super::util::{connect, fnv1a64};

/// Prefix of the per-test databases' names.
const DATABASE_PREFIX: &str = "durable_test_";
/// Prefix of the template databases' names.
const TEMPLATE_PREFIX: &str = "durable_tpl_";
/// Longest template key accepted.
const MAX_KEY_LEN: usize = 40;
/// First key of the two-key advisory locks taken while building a template.
const LOCK_NAMESPACE: i32 = 0x4475_7261; // "Dura"
/// How often `CREATE DATABASE` is retried while its template is briefly in use.
const CREATE_ATTEMPTS: u32 = 30;

/// A fresh database for one test, created from a migrated template; dropped
/// (`DROP DATABASE ... WITH (FORCE)`, PostgreSQL 13 or newer) when the value drops.
///
/// ```no_run
/// # async fn example() -> Result<(), durable_testing::postgres::FixtureError> {
/// use durable_testing::postgres::{TestDatabase, template_key};
/// const MIGRATION: &str = "CREATE TABLE t (id bigint PRIMARY KEY);";
/// let db = TestDatabase::create(&template_key("demo", MIGRATION.as_bytes()), |url| async move {
///     let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
///     tokio::spawn(connection);
///     client.batch_execute(MIGRATION).await?;
///     Ok(())
/// })
/// .await?;
/// println!("connect to {}", db.url());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct TestDatabase {
    server: &'static PgServer,
    name: String,
    url: String,
    dropped: bool,
}

/// A template key made of `prefix` and a hash of `migration_content`, so that a change to
/// the migrations makes a new template. `prefix` should be short (≤ 23 characters) and
/// made of `[a-z0-9_]`.
pub fn template_key(prefix: &str, migration_content: &[u8]) -> String {
    format!("{prefix}_{:016x}", fnv1a64(migration_content))
}

fn validate_key(key: &str) -> Result<(), FixtureError> {
    let invalid = |reason| FixtureError::InvalidTemplateKey {
        key: key.to_owned(),
        reason,
    };
    if key.is_empty() {
        return Err(invalid("it is empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(invalid("it is longer than 40 characters"));
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(invalid("it contains characters outside [a-z0-9_]"));
    }
    Ok(())
}

fn admin_error(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> FixtureError {
    let context = context.into();
    move |source| FixtureError::Admin { context, source }
}

impl TestDatabase {
    /// A fresh database cloned from the template `durable_tpl_<template_key>` on the
    /// [shared server](PgServer::shared).
    ///
    /// `template_key` names the template (include a hash of the migration content in it,
    /// see [`template_key`], so a schema change makes a new template); it must be 1 to 40
    /// characters from `[a-z0-9_]`. `migrate` is called once per server (across test
    /// processes too) with the template database's URL to create the schema; if it fails,
    /// the half-made template is dropped and its error returned. The migration must not
    /// leave connections open (any left are terminated).
    pub async fn create<F, Fut>(
        template_key: &str,
        migrate: F,
    ) -> Result<TestDatabase, FixtureError>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<(), Box<dyn StdError + Send + Sync>>>,
    {
        validate_key(template_key)?;
        Self::create_on(PgServer::shared().await?, template_key, migrate).await
    }

    /// Same as [`TestDatabase::create`], on a given server (for example one from
    /// [`PgServer::start`] leaked with `Box::leak`).
    pub async fn create_on<F, Fut>(
        server: &'static PgServer,
        template_key: &str,
        migrate: F,
    ) -> Result<TestDatabase, FixtureError>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<(), Box<dyn StdError + Send + Sync>>>,
    {
        validate_key(template_key)?;
        let template = format!("{TEMPLATE_PREFIX}{template_key}");
        let admin = connect(server.admin_url()).await?;
        ensure_template(server, &admin, &template, migrate).await?;
        Self::create_from(server, &admin, &template).await
    }

    /// Same, but an empty database (cloned from `template0`).
    pub async fn empty() -> Result<TestDatabase, FixtureError> {
        Self::empty_on(PgServer::shared().await?).await
    }

    /// Same as [`TestDatabase::empty`], on a given server.
    pub async fn empty_on(server: &'static PgServer) -> Result<TestDatabase, FixtureError> {
        let admin = connect(server.admin_url()).await?;
        Self::create_from(server, &admin, "template0").await
    }

    async fn create_from(
        server: &'static PgServer,
        admin: &Client,
        template: &str,
    ) -> Result<TestDatabase, FixtureError> {
        let name = format!("{DATABASE_PREFIX}{}", uuid::Uuid::new_v4().simple());
        let sql = format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\"");
        let mut attempt = 0;
        loop {
            attempt += 1;
            match admin.batch_execute(&sql).await {
                Ok(()) => break,
                // "source database is being accessed by other users": a connection to the
                // template is closing (the migration's, autovacuum's): wait and retry.
                Err(error)
                    if error.code() == Some(&SqlState::OBJECT_IN_USE)
                        && attempt < CREATE_ATTEMPTS =>
                {
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt.min(10))))
                        .await;
                }
                Err(error) => {
                    return Err(admin_error(format!(
                        "creating test database {name} from {template}"
                    ))(error));
                }
            }
        }
        Ok(TestDatabase {
            server,
            url: server.url_for(&name),
            name,
            dropped: false,
        })
    }

    /// Connection URL of this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Name of this database (`durable_test_<uuid>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server this database is on.
    pub fn server(&self) -> &'static PgServer {
        self.server
    }

    /// Drops the database now and reports a failure, instead of the best-effort drop that
    /// happens when the value is dropped.
    pub async fn drop_now(mut self) -> Result<(), FixtureError> {
        self.dropped = true;
        drop_database(self.server.admin_url(), &self.name).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // Drop may run inside a runtime (where blocking on a future is not allowed) or
        // outside any: use a thread with a runtime of its own, and wait for it so that the
        // database is gone when the test ends.
        let admin_url = self.server.admin_url().to_owned();
        let name = self.name.clone();
        let worker = std::thread::Builder::new()
            .name("durable-testing-drop-db".to_owned())
            .spawn(move || -> Result<(), String> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("could not build a runtime: {e}"))?;
                runtime
                    .block_on(drop_database(&admin_url, &name))
                    .map_err(|e| e.to_string())
            });
        let outcome = match worker {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|_| Err("the drop thread panicked".to_owned())),
            Err(e) => Err(format!("could not start a thread: {e}")),
        };
        if let Err(error) = outcome {
            tracing::warn!(database = %self.name, %error, "durable-testing: could not drop the test database");
        }
    }
}

async fn drop_database(admin_url: &str, name: &str) -> Result<(), FixtureError> {
    let admin = connect(admin_url).await?;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await
        .map_err(admin_error(format!("dropping test database {name}")))
}

/// Whether `template` exists, and if so whether it is complete (marked as a template).
async fn template_state(admin: &Client, template: &str) -> Result<Option<bool>, FixtureError> {
    let row = admin
        .query_opt(
            "SELECT datistemplate FROM pg_database WHERE datname = $1",
            &[&template],
        )
        .await
        .map_err(admin_error(format!(
            "looking up template database {template}"
        )))?;
    row.map(|r| r.try_get::<_, bool>(0))
        .transpose()
        .map_err(admin_error(format!(
            "looking up template database {template}"
        )))
}

/// Makes sure the complete template exists, building it under an advisory lock (so only
/// one test, of any process, runs the migration).
async fn ensure_template<F, Fut>(
    server: &PgServer,
    admin: &Client,
    template: &str,
    migrate: F,
) -> Result<(), FixtureError>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<(), Box<dyn StdError + Send + Sync>>>,
{
    if template_state(admin, template).await? == Some(true) {
        return Ok(());
    }
    // Keys are int4 pairs; fold the name's hash into the second one.
    let key = fnv1a64(template.as_bytes());
    let lock_key = (key ^ (key >> 32)) as u32 as i32;
    admin
        .execute(
            "SELECT pg_advisory_lock($1, $2)",
            &[&LOCK_NAMESPACE, &lock_key],
        )
        .await
        .map_err(admin_error(format!("locking template database {template}")))?;
    let built = build_template_locked(server, admin, template, migrate).await;
    // Closing the connection would release the lock too; unlock now for the next test.
    let unlocked = admin
        .execute(
            "SELECT pg_advisory_unlock($1, $2)",
            &[&LOCK_NAMESPACE, &lock_key],
        )
        .await
        .map_err(admin_error(format!(
            "unlocking template database {template}"
        )));
    built?;
    unlocked.map(|_| ())
}

async fn build_template_locked<F, Fut>(
    server: &PgServer,
    admin: &Client,
    template: &str,
    migrate: F,
) -> Result<(), FixtureError>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<(), Box<dyn StdError + Send + Sync>>>,
{
    match template_state(admin, template).await? {
        Some(true) => return Ok(()),
        // Left half-made by a process that died while migrating (we hold the lock, so
        // nobody is building it now).
        Some(false) => drop_template(admin, template).await?,
        None => {}
    }
    tracing::debug!(template, "durable-testing: building template database");
    admin
        .batch_execute(&format!(
            "CREATE DATABASE \"{template}\" TEMPLATE template0"
        ))
        .await
        .map_err(admin_error(format!(
            "creating template database {template}"
        )))?;
    if let Err(source) = migrate(server.url_for(template)).await {
        if let Err(error) = drop_template(admin, template).await {
            tracing::warn!(template, %error, "durable-testing: could not drop the half-made template");
        }
        return Err(FixtureError::Migrate {
            template: template.to_owned(),
            source,
        });
    }
    // No new connections, none left over: `CREATE DATABASE .. TEMPLATE` fails while
    // anyone is connected to the template.
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{template}\" WITH ALLOW_CONNECTIONS false IS_TEMPLATE true"
        ))
        .await
        .map_err(admin_error(format!("marking {template} as a template")))?;
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&template],
        )
        .await
        .map_err(admin_error(format!("closing connections to {template}")))?;
    Ok(())
}

async fn drop_template(admin: &Client, template: &str) -> Result<(), FixtureError> {
    admin
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS \"{template}\" WITH (FORCE)"
        ))
        .await
        .map_err(admin_error(format!(
            "dropping template database {template}"
        )))
}

#[cfg(test)]
mod tests {
    use super::{template_key, validate_key};

    #[test]
    fn keys_are_validated() {
        assert!(validate_key("durable_0123abc").is_ok());
        assert!(validate_key("").is_err());
        assert!(validate_key("Durable").is_err());
        assert!(validate_key("a-b").is_err());
        assert!(validate_key(&"a".repeat(41)).is_err());
        assert!(validate_key(&"a".repeat(40)).is_ok());
        let key = template_key("durable", b"CREATE TABLE t ()");
        assert!(validate_key(&key).is_ok());
        assert_ne!(key, template_key("durable", b"CREATE TABLE u ()"));
    }
}
