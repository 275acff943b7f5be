//! The test harness and what the in-memory store records.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use durable_core::{Task, TaskContext, TaskError, TaskResult, TaskStatus, async_trait};
use durable_testing::TestHarness;

struct Loop;

#[async_trait]
impl Task for Loop {
    const NAME: &'static str = "loop";
    type Params = Vec<u32>;
    type Output = u32;

    async fn run(items: Vec<u32>, ctx: TaskContext) -> TaskResult<u32> {
        let mut total = 0;
        for item in items {
            total += ctx.step("item", || async move { Ok(item * 10) }).await?;
        }
        ctx.sleep_for("nap", Duration::from_millis(1)).await?;
        Ok(total)
    }
}

#[tokio::test]
async fn repeated_names_are_checkpointed_with_numbered_suffixes() {
    let h = TestHarness::new().await.unwrap();
    h.register::<Loop>().await;
    let id = h.spawn::<Loop>(vec![1, 2, 3]).await.unwrap();
    h.run_until_idle().await.unwrap();
    let mut names: Vec<String> = h.checkpoints(id).into_keys().collect();
    names.sort();
    assert_eq!(names, ["$sleep:nap", "item", "item#2", "item#3"]);
    assert_eq!(h.checkpoints(id)["item#3"], serde_json::json!(30));
    h.advance_and_run(Duration::from_millis(1)).await.unwrap();
    assert_eq!(h.output::<u32>(id).unwrap(), 60);
    assert_eq!(
        h.attempts(id),
        Some(1),
        "a resume after a sleep is not a new attempt"
    );
}

struct Timeout;

#[async_trait]
impl Task for Timeout {
    const NAME: &'static str = "timeout";
    type Params = ();
    type Output = String;

    async fn run(_: (), ctx: TaskContext) -> TaskResult<String> {
        let day = Duration::from_secs(24 * 3600);
        match ctx.await_event::<String>("answer", Some(7 * day)).await {
            Ok(answer) => Ok(answer),
            Err(TaskError::Timeout { event_name, .. }) => Ok(format!("no {event_name} in a week")),
            Err(other) => Err(other),
        }
    }
}

#[tokio::test]
async fn a_week_long_event_timeout_passes_in_virtual_time() {
    let h = TestHarness::new().await.unwrap();
    h.register::<Timeout>().await;
    let id = h.spawn::<Timeout>(()).await.unwrap();
    h.run_until_idle().await.unwrap();
    h.advance_and_run(Duration::from_secs(6 * 24 * 3600))
        .await
        .unwrap();
    assert_eq!(h.status(id), Some(TaskStatus::Sleeping));
    h.advance_and_run(Duration::from_secs(24 * 3600))
        .await
        .unwrap();
    assert_eq!(h.output::<String>(id).unwrap(), "no answer in a week");
}
