//! Shared set-up of the PostgreSQL tests: a fresh, migrated database per test.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use durable_postgres_native::{Durable, migrate_url};
use durable_testing::postgres::{TestDatabase, template_key};

/// A fresh database with the schema of `durable`, dropped when the value drops. The template's
/// key hashes every migration, so a schema change makes a new template.
pub async fn database() -> TestDatabase {
    let migrations: Vec<u8> = durable_postgres_sql::MIGRATIONS
        .iter()
        .flat_map(|m| m.sql.bytes())
        .collect();
    TestDatabase::create(&template_key("native", &migrations), |url| async move {
        migrate_url(&url).await.map_err(Into::into)
    })
    .await
    .unwrap_or_else(|e| panic!("no test database: {e}"))
}

/// A client of `queue` on `db` that retries failed attempts at once.
pub async fn client(db: &TestDatabase, queue: &str) -> Durable {
    Durable::builder()
        .database_url(db.url())
        .queue_name(queue)
        .default_retry_strategy(durable_core::RetryStrategy::Fixed {
            base_delay: Duration::ZERO,
        })
        .build()
        .await
        .expect("client")
}
