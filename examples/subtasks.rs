//! Subtasks: a parent task spawns three subtasks with `ctx.spawn`, does local work while they
//! run, then joins them with `ctx.join` and collects their results.
//!
//! Run it with `cargo run --example subtasks`. It uses the database at `DURABLE_DATABASE_URL`,
//! or, when that is not set, a throwaway PostgreSQL that is removed when the program exits.

mod common;

use durable::{Durable, SpawnOptions, Task, TaskContext, TaskResult, WorkerOptions, async_trait};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Item {
    id: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct ItemResult {
    id: u32,
    square: u32,
}

struct ProcessItem;

#[async_trait]
impl Task for ProcessItem {
    const NAME: &'static str = "process-item";
    type Params = Item;
    type Output = ItemResult;

    async fn run(item: Self::Params, ctx: TaskContext) -> TaskResult<Self::Output> {
        println!("  subtask {} processes item {}", ctx.task_id, item.id);
        Ok(ItemResult {
            id: item.id,
            square: item.id * item.id,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct BatchOutput {
    local: String,
    children: Vec<ItemResult>,
}

struct ProcessBatch;

#[async_trait]
impl Task for ProcessBatch {
    const NAME: &'static str = "process-batch";
    type Params = Vec<u32>;
    type Output = BatchOutput;

    async fn run(ids: Self::Params, ctx: TaskContext) -> TaskResult<Self::Output> {
        // Spawns are checkpointed: when the parent resumes, it gets the same handles back.
        let mut handles = Vec::new();
        for &id in &ids {
            let options = SpawnOptions {
                max_attempts: Some(3),
                ..Default::default()
            };
            let handle = ctx
                .spawn::<ProcessItem>(&format!("item-{id}"), Item { id }, options)
                .await?;
            handles.push((id, handle));
        }

        // Local work while the subtasks run.
        let local: String = ctx
            .step("local-work", || async {
                Ok(format!("{} items dispatched", ids.len()))
            })
            .await?;

        // Each join suspends the parent (freeing its slot) until that subtask has ended.
        let mut children = Vec::new();
        for (id, handle) in handles {
            children.push(ctx.join(&format!("item-{id}"), handle).await?);
        }
        Ok(BatchOutput { local, children })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (database_url, _throwaway) = common::database().await?;
    let client = Durable::builder()
        .database_url(database_url)
        .queue_name("batches")
        .build()
        .await?;
    client.register::<ProcessBatch>().await;
    client.register::<ProcessItem>().await;

    let ids = vec![2, 3, 4];
    let parent = client.spawn::<ProcessBatch>(ids.clone()).await?.task_id;
    println!("spawned parent task {parent}");

    let worker = client
        .start_worker(WorkerOptions::default().concurrency(2))
        .await;
    let output = common::output::<BatchOutput>(&client, parent).await;
    worker.shutdown().await;
    let output = output?;

    println!("parent completed: {}", output.local);
    for child in &output.children {
        println!("  child result: item {} -> {}", child.id, child.square);
    }
    let squares: Vec<u32> = output.children.iter().map(|c| c.square).collect();
    anyhow::ensure!(
        squares == [4, 9, 16],
        "unexpected children's results: {squares:?}"
    );
    Ok(())
}
