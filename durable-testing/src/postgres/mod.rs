//! PostgreSQL fixtures for tests (feature `postgres`, Unix only).
//!
//! Each test gets a database of its own, so tests run in parallel:
//! [`TestDatabase::create`] clones a fresh `durable_test_<uuid>` database from a template
//! that a migration hook built once per server, and drops it when the value drops.
//!
//! The server ([`PgServer::shared`], one per test process) is, in this order:
//! 1. the one at `DURABLE_TEST_DATABASE_URL` if that is set (its user must be allowed
//!    to create databases);
//! 2. else a container started through testcontainers when a Docker engine answers
//!    (skipped with `DURABLE_TEST_NO_DOCKER=1`), from the image
//!    `DURABLE_TEST_POSTGRES_IMAGE` (default: the official `postgres:15`; without
//!    registry access, build `durable-postgres:15-local` from the machine's own
//!    PostgreSQL with `scripts/build-postgres-image.sh`);
//! 3. else a throwaway cluster from local PostgreSQL binaries (`DURABLE_TEST_PG_BIN`,
//!    else `pg_config --bindir`, else the newest `/usr/lib/postgresql/*/bin`, else
//!    `PATH`), run as the `postgres` OS user when the tests run as root;
//! 4. else a [`FixtureError`] saying how to provide one of them.
//!
//! A container or cluster started here runs with durability off (`fsync=off`, ...) and
//! is removed when the test process exits, by a watchdog child process.
//!
//! ```no_run
//! use durable_testing::postgres::TestDatabase;
//!
//! #[tokio::test]
//! async fn my_test() -> Result<(), Box<dyn std::error::Error>> {
//!     let db = TestDatabase::empty().await?;
//!     let (client, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls).await?;
//!     tokio::spawn(connection);
//!     client.batch_execute("CREATE TABLE t (x int)").await?;
//!     Ok(())
//! }
//! ```

mod cluster;
mod container;
mod database;
mod error;
mod server;
mod util;
mod watchdog;

pub use database::{TestDatabase, template_key};
pub use error::FixtureError;
pub use server::{
    ENV_DATABASE_URL, ENV_NO_DOCKER, ENV_PG_BIN, ENV_POSTGRES_IMAGE, ENV_REQUIRE_DOCKER, PgServer,
    ServerOptions, ServerSource,
};
