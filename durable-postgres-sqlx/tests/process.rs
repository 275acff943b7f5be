//! Worker processes that die or freeze, on a real PostgreSQL: a worker killed with SIGKILL in the
//! middle of a step, after two completed steps, and a worker paused with SIGSTOP past its lease
//! then resumed. The worker is this test binary run again as a child process.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use durable_core::{Task, TaskContext, TaskResult, TaskStatus, WorkerOptions, async_trait};
use durable_postgres_sqlx::Durable;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// Set in the child process: the database to work on.
const CHILD_URL: &str = "DURABLE_PROCESS_TEST_URL";
const QUEUE: &str = "processes";

#[derive(Serialize, Deserialize)]
struct Params {
    url: String,
    /// How long the third step's body takes in the child process.
    third_step_secs: u64,
}

/// Three steps; each body logs itself in `step_log` (outside the checkpoint's transaction, so
/// the log shows every execution of a body).
struct ThreeSteps;

async fn log_step(url: &str, task_id: Uuid, step: &str) -> anyhow::Result<String> {
    let mut connection = PgConnection::connect(url).await?;
    let by = format!("pid {}", std::process::id());
    sqlx::query("INSERT INTO step_log (task_id, step, done_by) VALUES ($1, $2, $3)")
        .bind(task_id)
        .bind(step)
        .bind(&by)
        .execute(&mut connection)
        .await?;
    connection.close().await?;
    Ok(by)
}

#[async_trait]
impl Task for ThreeSteps {
    const NAME: &'static str = "three-steps";
    type Params = Params;
    type Output = String;

    async fn run(params: Params, ctx: TaskContext) -> TaskResult<String> {
        let id = ctx.task_id;
        let url = params.url.as_str();
        ctx.step("one", || log_step(url, id, "one")).await?;
        ctx.step("two", || log_step(url, id, "two")).await?;
        let third: String = ctx
            .step("three", || async {
                let by = log_step(url, id, "three").await?;
                if std::env::var_os(CHILD_URL).is_some() {
                    tokio::time::sleep(Duration::from_secs(params.third_step_secs)).await;
                }
                Ok(by)
            })
            .await?;
        Ok(format!("finished by {third}"))
    }
}

async fn worker_client(url: &str) -> Durable {
    let client = Durable::builder()
        .database_url(url)
        .queue_name(QUEUE)
        .build()
        .await
        .unwrap();
    client.register::<ThreeSteps>().await;
    client
}

/// The child worker process (run by the tests below, not on its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child worker of the process tests"]
async fn child_worker_process() {
    let url = std::env::var(CHILD_URL).expect("run by the process tests");
    let client = worker_client(&url).await;
    let _worker = client
        .start_worker(
            WorkerOptions::default()
                .worker_id("child")
                .claim_timeout(Duration::from_secs(2)),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(120)).await;
}

/// The child worker process, killed when dropped (also when a test fails).
struct ChildWorker(Child);

impl Drop for ChildWorker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_child(url: &str) -> ChildWorker {
    ChildWorker(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "child_worker_process",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD_URL, url)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn signal(child: &ChildWorker, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.0.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name}");
}

async fn runs_of(pool: &sqlx::PgPool, task_id: Uuid, step: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT done_by FROM step_log WHERE task_id = $1 AND step = $2 ORDER BY at")
        .bind(task_id)
        .bind(step)
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn setup(third_step_secs: u64) -> (durable_testing::postgres::TestDatabase, Durable, Uuid) {
    let db = common::database().await;
    let client = worker_client(db.url()).await;
    sqlx::query(
        "CREATE TABLE step_log (task_id uuid, step text, done_by text, at timestamptz DEFAULT clock_timestamp())",
    )
    .execute(client.pool())
    .await
    .unwrap();
    let params = Params {
        url: db.url().to_owned(),
        third_step_secs,
    };
    let id = client.spawn::<ThreeSteps>(params).await.unwrap().task_id;
    (db, client, id)
}

/// A recovering worker in this process: it takes the task over once the child's lease expires.
async fn take_over(client: &Durable, id: Uuid) -> durable_core::Worker {
    let worker = client
        .start_worker(
            WorkerOptions::default()
                .worker_id("survivor")
                .lease_check_interval(Duration::from_millis(100)),
        )
        .await;
    common::eventually("the task completes", Duration::from_secs(30), || async {
        client.get_task_result(id).await.unwrap().unwrap().status == TaskStatus::Completed
    })
    .await;
    worker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_step_loses_nothing_and_completed_steps_do_not_run_again() {
    let (db, client, id) = setup(3600).await;
    let mut child = start_child(db.url());
    common::eventually(
        "the child is in step three",
        Duration::from_secs(30),
        || async { !runs_of(client.pool(), id, "three").await.is_empty() },
    )
    .await;
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();

    let worker = take_over(&client, id).await;
    worker.shutdown().await;
    let me = format!("pid {}", std::process::id());
    assert_eq!(
        runs_of(client.pool(), id, "one").await.len(),
        1,
        "step one ran once"
    );
    assert_eq!(
        runs_of(client.pool(), id, "two").await.len(),
        1,
        "step two ran once"
    );
    let third = runs_of(client.pool(), id, "three").await;
    assert_eq!(third.len(), 2, "the interrupted step ran again");
    assert_ne!(third[0], me);
    assert_eq!(third[1], me);
    let result = client.get_task_result(id).await.unwrap().unwrap();
    assert_eq!(result.output, Some(json!(format!("finished by {me}"))));
    let attempt: i32 = sqlx::query_scalar("SELECT attempt FROM durable.tasks WHERE task_id = $1")
        .bind(id)
        .fetch_one(client.pool())
        .await
        .unwrap();
    assert_eq!(attempt, 2, "the lease expired once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_paused_past_its_lease_has_its_late_writes_refused() {
    let (db, client, id) = setup(2).await;
    let child = start_child(db.url());
    common::eventually(
        "the child is in step three",
        Duration::from_secs(30),
        || async { !runs_of(client.pool(), id, "three").await.is_empty() },
    )
    .await;
    signal(&child, "STOP");
    let worker = take_over(&client, id).await;
    worker.shutdown().await;
    let me = format!("pid {}", std::process::id());
    let expected = Some(json!(format!("finished by {me}")));
    assert_eq!(
        client.get_task_result(id).await.unwrap().unwrap().output,
        expected
    );

    // Resumed, the child finishes its step body and tries to checkpoint it: refused.
    signal(&child, "CONT");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let checkpoint: serde_json::Value = sqlx::query_scalar(
        "SELECT value FROM durable.checkpoints WHERE task_id = $1 AND name = 'three'",
    )
    .bind(id)
    .fetch_one(client.pool())
    .await
    .unwrap();
    assert_eq!(checkpoint, json!(me), "the new owner's checkpoint stands");
    let result = client.get_task_result(id).await.unwrap().unwrap();
    assert_eq!(result.status, TaskStatus::Completed);
    assert_eq!(result.output, expected, "the new owner's result stands");
    drop(child);
}
