//! The three backends behind one interface: something that makes clients of a queue.

use std::time::Duration;

use durable_core::{Durable, DurableBuilder, RetryStrategy, Store, async_trait};
use durable_postgres_native::NativeStore;
use durable_postgres_sqlx::SqlxStore;
use durable_testing::MemoryStore;

/// Makes clients of one backend.
#[async_trait]
pub(crate) trait Maker: Send + Sync {
    /// The store.
    type S: Store + Clone;
    /// `memory`, `sqlx` or `native`.
    fn name(&self) -> &'static str;
    /// A client of `queue` that retries failed attempts at once; `listen: false` makes a
    /// poll-only client (ignored by the memory store, whose signals are in-process).
    async fn client(&self, queue: &str, listen: bool) -> anyhow::Result<Durable<Self::S>>;
}

fn retry_at_once() -> RetryStrategy {
    RetryStrategy::Fixed {
        base_delay: Duration::ZERO,
    }
}

/// The in-memory store, on the system clock (sleeps are timed for real).
pub(crate) struct MemoryMaker(pub(crate) MemoryStore);

#[async_trait]
impl Maker for MemoryMaker {
    type S = MemoryStore;

    fn name(&self) -> &'static str {
        "memory"
    }

    async fn client(&self, queue: &str, _listen: bool) -> anyhow::Result<Durable<MemoryStore>> {
        Ok(DurableBuilder::new()
            .queue_name(queue)
            .default_retry_strategy(retry_at_once())
            .build_with_store(self.0.clone())
            .await?)
    }
}

/// The sqlx store on its own pool.
pub(crate) struct SqlxMaker {
    pub(crate) url: String,
    pub(crate) pool: usize,
}

#[async_trait]
impl Maker for SqlxMaker {
    type S = SqlxStore;

    fn name(&self) -> &'static str {
        "sqlx"
    }

    async fn client(&self, queue: &str, listen: bool) -> anyhow::Result<Durable<SqlxStore>> {
        Ok(durable_postgres_sqlx::Durable::builder()
            .database_url(&self.url)
            .queue_name(queue)
            .max_connections(u32::try_from(self.pool).unwrap_or(u32::MAX))
            .migrate(false)
            .listen(listen)
            .default_retry_strategy(retry_at_once())
            .build()
            .await?
            .into_inner())
    }
}

/// The tokio-postgres store on its own pool.
pub(crate) struct NativeMaker {
    pub(crate) url: String,
    pub(crate) pool: usize,
}

#[async_trait]
impl Maker for NativeMaker {
    type S = NativeStore;

    fn name(&self) -> &'static str {
        "native"
    }

    async fn client(&self, queue: &str, listen: bool) -> anyhow::Result<Durable<NativeStore>> {
        Ok(durable_postgres_native::Durable::builder()
            .database_url(&self.url)
            .queue_name(queue)
            .max_connections(self.pool)
            .migrate(false)
            .listen(listen)
            .default_retry_strategy(retry_at_once())
            .build()
            .await?
            .into_inner())
    }
}

/// A queue name of its own for one measurement.
pub(crate) fn queue(scenario: &str) -> String {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("bench_{scenario}_{}", &suffix[..8])
}
