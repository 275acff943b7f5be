//! The Quick Start of the README: a three-step research task, spawned and run by a worker.
//!
//! Run it with `cargo run --example quickstart`. It uses the database at `DURABLE_DATABASE_URL`,
//! or, when that is not set, a throwaway PostgreSQL (a container when Docker answers, else a
//! local cluster from the PostgreSQL binaries) that is removed when the program exits.

use std::time::Duration;

use durable::{Durable, Task, TaskContext, TaskResult, TaskStatus, WorkerOptions, async_trait};
use durable_testing::postgres::TestDatabase;
use serde::{Deserialize, Serialize};

// Define your task parameters and output
#[derive(Serialize, Deserialize)]
struct ResearchParams {
    query: String,
}

#[derive(Serialize, Deserialize)]
struct ResearchResult {
    summary: String,
    sources: Vec<String>,
}

// Implement the Task trait
struct ResearchTask;

#[async_trait]
impl Task for ResearchTask {
    const NAME: &'static str = "research";
    type Params = ResearchParams;
    type Output = ResearchResult;

    async fn run(params: Self::Params, ctx: TaskContext) -> TaskResult<Self::Output> {
        // Phase 1: Find relevant sources (checkpointed)
        // If the task crashes after this step, it won't re-run on retry
        let sources: Vec<String> = ctx
            .step("find-sources", || async {
                // Search logic here...
                Ok(vec![
                    "https://example.com/article1".into(),
                    "https://example.com/article2".into(),
                ])
            })
            .await?;

        // Phase 2: Analyze the sources (checkpointed)
        let analysis: String = ctx
            .step("analyze", || async {
                // Analysis logic here...
                Ok("Key findings from sources...".into())
            })
            .await?;

        // Phase 3: Generate summary (checkpointed)
        let summary: String = ctx
            .step("summarize", || async {
                // Summarization logic here...
                Ok(format!(
                    "Research summary for '{}': {}",
                    params.query, analysis
                ))
            })
            .await?;

        Ok(ResearchResult { summary, sources })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Without DURABLE_DATABASE_URL, run against a throwaway database (kept until main returns).
    let (database_url, _throwaway) = match std::env::var("DURABLE_DATABASE_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let db = TestDatabase::empty().await?;
            (db.url().to_owned(), Some(db))
        }
    };

    // Create the client
    let client = Durable::builder()
        .database_url(database_url)
        .queue_name("research")
        .build()
        .await?;

    // Register your task
    client.register::<ResearchTask>().await;

    // Spawn a task
    let result = client
        .spawn::<ResearchTask>(ResearchParams {
            query: "distributed systems consensus algorithms".into(),
        })
        .await?;

    println!("Spawned task: {}", result.task_id);

    // Start a worker to process tasks
    let worker = client.start_worker(WorkerOptions::default()).await;

    // Wait for the result (or for Ctrl-C)
    tokio::select! {
        outcome = wait_for_result(&client, result.task_id) => {
            let research = outcome?;
            println!("{}", research.summary);
            for source in research.sources {
                println!("  source: {source}");
            }
        }
        _ = tokio::signal::ctrl_c() => println!("interrupted"),
    }
    worker.shutdown().await;

    Ok(())
}

async fn wait_for_result(client: &Durable, task_id: uuid::Uuid) -> anyhow::Result<ResearchResult> {
    loop {
        let poll = client
            .get_task_result(task_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("task {task_id} vanished"))?;
        match poll.status {
            TaskStatus::Completed => {
                let output = poll.output.unwrap_or_default();
                return Ok(serde_json::from_value(output)?);
            }
            TaskStatus::Failed | TaskStatus::Cancelled => {
                anyhow::bail!("task ended {:?}: {:?}", poll.status, poll.error)
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}
