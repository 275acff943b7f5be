//! Events: tasks await an approval event, one without a timeout and one with a 1 s timeout; the
//! program emits the first one's event from outside with `client.emit_event`, the payload is
//! delivered to it, and the other one times out.
//!
//! Run it with `cargo run --example events`. It uses the database at `DURABLE_DATABASE_URL`, or,
//! when that is not set, a throwaway PostgreSQL that is removed when the program exits.

mod common;

use std::time::Duration;

use durable::{
    Durable, Task, TaskContext, TaskError, TaskResult, TaskStatus, WorkerOptions, async_trait,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Serialize, Deserialize)]
struct ApprovalRequest {
    request_id: Uuid,
    /// How long to wait for the approval; `None`: as long as it takes.
    timeout_ms: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct ApprovalPayload {
    approved_by: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Decision {
    Approved { by: String },
    TimedOut,
}

struct ApprovalTask;

#[async_trait]
impl Task for ApprovalTask {
    const NAME: &'static str = "approval";
    type Params = ApprovalRequest;
    type Output = Decision;

    async fn run(request: Self::Params, ctx: TaskContext) -> TaskResult<Self::Output> {
        let event = format!("approved:{}", request.request_id);
        let timeout = request.timeout_ms.map(Duration::from_millis);
        match ctx.await_event::<ApprovalPayload>(&event, timeout).await {
            Ok(approval) => Ok(Decision::Approved {
                by: approval.approved_by,
            }),
            // The timeout is checkpointed: a replay of this task sees it again.
            Err(TaskError::Timeout { .. }) => Ok(Decision::TimedOut),
            Err(other) => Err(other),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (database_url, _throwaway) = common::database().await?;
    let client = Durable::builder()
        .database_url(database_url)
        .queue_name("approvals")
        .build()
        .await?;
    client.register::<ApprovalTask>().await;

    let worker = client
        .start_worker(WorkerOptions::default().concurrency(2))
        .await;
    let outcome = demo(&client).await;
    worker.shutdown().await;
    outcome
}

async fn demo(client: &Durable) -> anyhow::Result<()> {
    let patient = Uuid::new_v4();
    let hasty = Uuid::new_v4();
    let request = |request_id, timeout_ms| ApprovalRequest {
        request_id,
        timeout_ms,
    };
    let waiting = client
        .spawn::<ApprovalTask>(request(patient, None))
        .await?
        .task_id;
    let timing_out = client
        .spawn::<ApprovalTask>(request(hasty, Some(1000)))
        .await?
        .task_id;

    let limit = Duration::from_secs(10);
    common::wait_for(client, waiting, limit, |p| p.status == TaskStatus::Sleeping).await?;
    println!("task {waiting} is `sleeping`, awaiting `approved:{patient}` (no timeout)");
    println!("task {timing_out} awaits `approved:{hasty}` with a 1 s timeout");

    let first = client
        .emit_event(
            &format!("approved:{patient}"),
            &ApprovalPayload {
                approved_by: "admin".into(),
            },
            None,
        )
        .await?;
    println!("emitted `approved:{patient}` from outside (first emit of that name: {first})");

    let approved: Decision = common::output(client, waiting).await?;
    println!("task {waiting}: {approved:?}");
    let timed_out: Decision = common::output(client, timing_out).await?;
    println!("task {timing_out}: {timed_out:?}");

    anyhow::ensure!(
        approved == Decision::Approved { by: "admin".into() },
        "payload not delivered"
    );
    anyhow::ensure!(
        timed_out == Decision::TimedOut,
        "the await with a timeout did not time out"
    );
    Ok(())
}
