//! The shared conformance suite of `durable-testing`, on [`NativeStore`] and a real PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::Duration;

use durable_core::BoxError;
use durable_postgres_native::NativeStore;
use durable_testing::StoreBuilder;
use durable_testing::postgres::TestDatabase;

/// A fresh database and store per case; time passes for real.
struct NativeStoreBuilder;

#[async_trait::async_trait]
impl StoreBuilder for NativeStoreBuilder {
    type Store = NativeStore;
    type Guard = TestDatabase;

    async fn build(&self) -> Result<(TestDatabase, NativeStore), BoxError> {
        let db = common::database().await;
        let store = NativeStore::connect(db.url()).await?;
        Ok((db, store))
    }

    async fn advance(&self, _store: &NativeStore, by: Duration) {
        tokio::time::sleep(by).await;
    }
}

durable_testing::conformance_tests!(NativeStoreBuilder);
