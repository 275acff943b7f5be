//! Durable sleep: a task sleeps 3 seconds with `ctx.sleep_for`. Meanwhile it is `sleeping`, its
//! run has ended and the worker's only slot is free for other tasks; then it resumes and
//! completes.
//!
//! Run it with `cargo run --example sleep`. It uses the database at `DURABLE_DATABASE_URL`, or,
//! when that is not set, a throwaway PostgreSQL that is removed when the program exits.

mod common;

use std::time::{Duration, Instant};

use durable::{Durable, Task, TaskContext, TaskResult, TaskStatus, WorkerOptions, async_trait};

const NAP: Duration = Duration::from_secs(3);

struct ReminderTask;

#[async_trait]
impl Task for ReminderTask {
    const NAME: &'static str = "reminder";
    type Params = String;
    type Output = String;

    async fn run(who: Self::Params, ctx: TaskContext) -> TaskResult<Self::Output> {
        ctx.step("schedule", || async {
            println!("  reminder: scheduled for {who}, sleeping {NAP:?}");
            Ok(())
        })
        .await?;
        // Suspends the task: this run ends here, and the task is claimed again once NAP passed.
        ctx.sleep_for("wait", NAP).await?;
        ctx.step("send", || async {
            println!("  reminder: awake, sending");
            Ok(format!("reminded {who}"))
        })
        .await
    }
}

struct PingTask;

#[async_trait]
impl Task for PingTask {
    const NAME: &'static str = "ping";
    type Params = ();
    type Output = String;

    async fn run(_: (), _ctx: TaskContext) -> TaskResult<Self::Output> {
        Ok("pong".into())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (database_url, _throwaway) = common::database().await?;
    let client = Durable::builder()
        .database_url(database_url)
        .queue_name("reminders")
        .build()
        .await?;
    client.register::<ReminderTask>().await;
    client.register::<PingTask>().await;

    let started = Instant::now();
    let reminder = client.spawn::<ReminderTask>("ada".into()).await?.task_id;
    // One slot: the ping below can only run if the sleeping reminder does not hold it.
    let worker = client
        .start_worker(WorkerOptions::default().concurrency(1))
        .await;
    let outcome = demo(&client, reminder).await;
    worker.shutdown().await;
    let output = outcome?;

    let elapsed = started.elapsed();
    println!("reminder completed after {elapsed:.1?}: {output}");
    anyhow::ensure!(
        elapsed >= NAP,
        "the reminder completed before its sleep was over"
    );
    Ok(())
}

async fn demo(client: &Durable, reminder: uuid::Uuid) -> anyhow::Result<String> {
    let limit = Duration::from_secs(10);
    common::wait_for(client, reminder, limit, |p| {
        p.status == TaskStatus::Sleeping
    })
    .await?;
    println!("reminder is `sleeping`: it holds no worker slot");

    let ping = client.spawn::<PingTask>(()).await?.task_id;
    let pong: String = common::output(client, ping).await?;
    let state = client
        .get_task_result(reminder)
        .await?
        .map(|p| p.status)
        .ok_or_else(|| anyhow::anyhow!("the reminder task vanished"))?;
    println!(
        "ping answered `{pong}` on the only slot while the reminder is `{}`",
        state.as_str()
    );
    anyhow::ensure!(
        state == TaskStatus::Sleeping,
        "the reminder was not asleep while ping ran"
    );

    common::output(client, reminder).await
}
