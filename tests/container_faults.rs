//! A worker survives its PostgreSQL container being paused and its connections being killed:
//! it reconnects and every task finishes. Runs through testcontainers (CI sets
//! `DURABLE_TEST_REQUIRE_DOCKER`, so there it cannot be skipped).

#![cfg(all(feature = "postgres-sqlx", feature = "postgres-native"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::HashMap;
use std::process::Command;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use durable::tokio_postgres;
use durable::{Store, Task, TaskContext, TaskResult, TaskStatus, WorkerOptions, async_trait};
use durable_testing::postgres::{ENV_REQUIRE_DOCKER, PgServer, ServerSource, TestDatabase};
use uuid::Uuid;

/// The two tests pause the same container: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How often each (task, step) body ran.
static BODY_RUNS: LazyLock<Mutex<HashMap<(Uuid, u32), u32>>> = LazyLock::new(Default::default);

const TASKS: u32 = 300;
const STEPS: u32 = 3;

struct ThreeSteps;

#[async_trait]
impl Task for ThreeSteps {
    const NAME: &'static str = "three-steps";
    type Params = u32;
    type Output = u32;

    async fn run(n: u32, ctx: TaskContext) -> TaskResult<u32> {
        let mut total = 0;
        for step in 0..STEPS {
            total += ctx
                .step("work", || async {
                    *BODY_RUNS
                        .lock()
                        .unwrap()
                        .entry((ctx.task_id, step))
                        .or_insert(0) += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    Ok(n + step)
                })
                .await?;
        }
        Ok(total)
    }
}

/// The container behind the shared server, or `None` (with the reason printed) when the tests
/// do not run on Docker here.
async fn container() -> Option<String> {
    let server = PgServer::shared()
        .await
        .expect("a PostgreSQL for the tests");
    match server.source() {
        ServerSource::Container { name, .. } => Some(name.clone()),
        other => {
            assert!(
                std::env::var_os(ENV_REQUIRE_DOCKER).is_none(),
                "{ENV_REQUIRE_DOCKER} is set but the server is {other:?}"
            );
            eprintln!("skipped: the tests' PostgreSQL is not a container here ({other:?})");
            None
        }
    }
}

fn docker(args: &[&str]) {
    let status = Command::new("docker").args(args).status().expect("docker");
    assert!(status.success(), "docker {args:?} failed");
}

async fn all_done<S: Store>(client: &durable_core_client::Client<S>, ids: &[Uuid]) -> usize {
    let mut done = 0;
    for id in ids {
        // Errors while the database is away count as not done yet.
        if let Ok(Some(poll)) = client.get_task_result(*id).await
            && poll.status == TaskStatus::Completed
        {
            done += 1;
        }
    }
    done
}

/// The store-generic client both backends deref to.
mod durable_core_client {
    pub(crate) type Client<S> = durable::generic::Durable<S>;
}

async fn survive_pause_and_killed_connections<S: Store + Clone>(
    client: &durable_core_client::Client<S>,
    admin_url: &str,
    database: &str,
    container: &str,
) {
    client.register::<ThreeSteps>().await;
    let mut ids = Vec::new();
    for n in 0..TASKS {
        ids.push(client.spawn::<ThreeSteps>(n).await.unwrap().task_id);
    }
    let worker = client
        .start_worker(
            // A run whose result could not be recorded while the database was away is
            // recovered by lease expiry: keep the lease short so that takes seconds.
            WorkerOptions::default()
                .concurrency(8)
                .poll_interval(Duration::from_millis(50))
                .claim_timeout(Duration::from_secs(5)),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while all_done(client, &ids).await < ids.len() / 4 {
        assert!(Instant::now() < deadline, "no progress before the fault");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Fault 1: the database freezes for 3 s under the running worker.
    docker(&["pause", container]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    docker(&["unpause", container]);
    let resumed = Instant::now();

    // Fault 2: every connection of the test database is killed (the listener's too).
    let (admin, connection) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let killed: i64 = admin
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()) AS k",
            &[&database],
        )
        .await
        .unwrap()
        .get(0);

    while all_done(client, &ids).await < ids.len() {
        assert!(
            Instant::now() < deadline,
            "tasks left unfinished after the faults"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "all {TASKS} tasks completed {:?} after the database came back ({killed} connections killed)",
        resumed.elapsed()
    );
    worker.shutdown().await;

    let runs = BODY_RUNS.lock().unwrap().clone();
    let mut repeated = 0;
    for id in &ids {
        let poll = client.get_task_result(*id).await.unwrap().unwrap();
        assert_eq!(poll.status, TaskStatus::Completed);
        for step in 0..STEPS {
            let count = runs.get(&(*id, step)).copied().unwrap_or(0);
            assert!(count >= 1, "step {step} of {id} never ran");
            repeated += count - 1;
        }
    }
    // A body runs again only when the fault hit between its end and its checkpoint's commit.
    println!("step bodies run again after the faults: {repeated}");
    assert!(
        repeated <= 8 * 2,
        "at most the steps in flight at the two faults run again, not {repeated}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_worker_survives_a_paused_container_and_killed_connections() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(container) = container().await else {
        return;
    };
    let db = TestDatabase::empty().await.unwrap();
    let client = durable::Durable::builder()
        .database_url(db.url())
        .build()
        .await
        .unwrap();
    let admin = db.server().admin_url().to_owned();
    survive_pause_and_killed_connections(&*client, &admin, db.name(), &container).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_worker_survives_a_paused_container_and_killed_connections() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(container) = container().await else {
        return;
    };
    let db = TestDatabase::empty().await.unwrap();
    let client = durable::native::Durable::builder()
        .database_url(db.url())
        .build()
        .await
        .unwrap();
    let admin = db.server().admin_url().to_owned();
    survive_pause_and_killed_connections(&*client, &admin, db.name(), &container).await;
}
