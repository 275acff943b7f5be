//! What the examples share: where their database is, and waiting for a task.
//!
//! Each example uses part of it.
#![allow(dead_code)]

use std::time::Duration;

use durable::{Durable, TaskPollResult, TaskStatus};
use durable_testing::postgres::TestDatabase;
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// The database at `DURABLE_DATABASE_URL`, or else a throwaway PostgreSQL database (a container
/// when Docker answers, else a local cluster) that is removed when the returned guard drops.
pub(crate) async fn database() -> anyhow::Result<(String, Option<TestDatabase>)> {
    match std::env::var("DURABLE_DATABASE_URL") {
        Ok(url) => Ok((url, None)),
        Err(_) => {
            let db = TestDatabase::empty().await?;
            Ok((db.url().to_owned(), Some(db)))
        }
    }
}

/// Polls the task until `done` holds for its state; fails after `limit`.
pub(crate) async fn wait_for(
    client: &Durable,
    task_id: Uuid,
    limit: Duration,
    done: impl Fn(&TaskPollResult) -> bool,
) -> anyhow::Result<TaskPollResult> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let poll = client
            .get_task_result(task_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("task {task_id} does not exist"))?;
        if done(&poll) {
            return Ok(poll);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "task {task_id} is still `{}` after {limit:?}",
                poll.status.as_str()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (at most 30 s) for the task to end, and returns its output if it completed.
pub(crate) async fn output<T: DeserializeOwned>(
    client: &Durable,
    task_id: Uuid,
) -> anyhow::Result<T> {
    let poll = wait_for(client, task_id, Duration::from_secs(30), |p| {
        p.status.is_terminal()
    })
    .await?;
    anyhow::ensure!(
        poll.status == TaskStatus::Completed,
        "task {task_id} ended `{}`: {:?}",
        poll.status.as_str(),
        poll.error
    );
    Ok(serde_json::from_value(poll.output.unwrap_or_default())?)
}
