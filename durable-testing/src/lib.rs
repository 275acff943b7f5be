//! Testing tools for `durable`.
//!
//! - [`MemoryStore`]: the whole storage contract in memory, with a virtual clock.
//! - [`TestHarness`]: unit-test your own tasks on it, instantly and deterministically.
//! - [`conformance`]: the suite every store passes, run with [`conformance_tests!`].
//! - `postgres` (feature `postgres`): a fresh PostgreSQL database per test.
//!
//! # Testing a task that sleeps for a week
//!
//! ```
//! use std::time::Duration;
//! use durable_core::{Task, TaskContext, TaskResult, TaskStatus, async_trait};
//! use durable_testing::TestHarness;
//!
//! struct Reminder;
//!
//! #[async_trait]
//! impl Task for Reminder {
//!     const NAME: &'static str = "reminder";
//!     type Params = String;
//!     type Output = String;
//!
//!     async fn run(who: String, ctx: TaskContext) -> TaskResult<String> {
//!         ctx.sleep_for("wait-a-week", Duration::from_secs(7 * 24 * 3600)).await?;
//!         let approval: String = ctx.await_event("approved", None).await?;
//!         Ok(format!("reminded {who}, approved by {approval}"))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! let started = std::time::Instant::now();
//! let h = TestHarness::new().await?;
//! h.register::<Reminder>().await;
//! let id = h.spawn::<Reminder>("ada".into()).await?;
//!
//! h.run_until_idle().await?;
//! assert_eq!(h.status(id), Some(TaskStatus::Sleeping));
//!
//! h.advance_and_run(Duration::from_secs(7 * 24 * 3600)).await?; // a week passes
//! assert_eq!(h.status(id), Some(TaskStatus::Sleeping), "now waiting for the event");
//!
//! h.emit("approved", "grace").await?;
//! h.run_until_idle().await?;
//! assert_eq!(h.output::<String>(id)?, "reminded ada, approved by grace");
//! assert!(started.elapsed() < Duration::from_secs(1));
//! # Ok(())
//! # }
//! ```

pub mod conformance;
mod harness;
mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;

pub use conformance::{MemoryStoreBuilder, StoreBuilder};
pub use harness::TestHarness;
pub use memory::{Clock, MemoryStore, TaskSnapshot};
