//! Shared set-up of the PostgreSQL tests: a fresh, migrated database per test.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use durable_postgres_sqlx::{Durable, migrate_url};
use durable_testing::postgres::{TestDatabase, template_key};

/// Every migration's text, so that a schema change makes a new template database.
fn fingerprint() -> Vec<u8> {
    durable_postgres_sql::MIGRATIONS
        .iter()
        .flat_map(|m| m.sql.as_bytes().iter().copied())
        .collect()
}

/// A fresh database with the schema of `durable`, dropped when the value drops.
pub async fn database() -> TestDatabase {
    TestDatabase::create(
        &template_key("durable_sqlx", &fingerprint()),
        |url| async move { migrate_url(&url).await.map_err(Into::into) },
    )
    .await
    .unwrap_or_else(|e| panic!("no test database: {e}"))
}

/// A client of `queue` on `db`, retrying failed attempts at once.
pub async fn client(db: &TestDatabase, queue: &str) -> Durable {
    Durable::builder()
        .database_url(db.url())
        .queue_name(queue)
        .max_connections(20)
        .default_retry_strategy(durable_core::RetryStrategy::Fixed {
            base_delay: Duration::ZERO,
        })
        .build()
        .await
        .expect("client")
}

/// Waits (at most `limit`) until `check` holds.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
