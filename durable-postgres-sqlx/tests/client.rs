//! The client users meet, on a real PostgreSQL: building, migrating, transactional spawn and
//! emit, wake-ups through NOTIFY, the poll-only mode.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use durable_core::{
    SpawnOptions, Store, Task, TaskContext, TaskResult, TaskStatus, WorkerOptions, async_trait,
};
use durable_postgres_sqlx::{Durable, SqlxStore, migrate};
use durable_testing::postgres::TestDatabase;
use serde_json::json;
use uuid::Uuid;

struct Echo;

#[async_trait]
impl Task for Echo {
    const NAME: &'static str = "echo";
    type Params = String;
    type Output = String;

    async fn run(text: String, ctx: TaskContext) -> TaskResult<String> {
        Ok(ctx.step("echo", || async { Ok(text) }).await?)
    }
}

struct Parent;

#[async_trait]
impl Task for Parent {
    const NAME: &'static str = "parent";
    type Params = u32;
    type Output = u32;

    async fn run(n: u32, ctx: TaskContext) -> TaskResult<u32> {
        let child = ctx
            .spawn::<Double>("child", n, SpawnOptions::default())
            .await?;
        let doubled = ctx.join("child", child).await?;
        Ok(doubled + 1)
    }
}

struct Double;

#[async_trait]
impl Task for Double {
    const NAME: &'static str = "double";
    type Params = u32;
    type Output = u32;

    async fn run(n: u32, _ctx: TaskContext) -> TaskResult<u32> {
        Ok(n * 2)
    }
}

struct AwaitSignal;

#[async_trait]
impl Task for AwaitSignal {
    const NAME: &'static str = "await-signal";
    type Params = String;
    type Output = serde_json::Value;

    async fn run(event: String, ctx: TaskContext) -> TaskResult<serde_json::Value> {
        ctx.await_event(&event, None).await
    }
}

async fn wait_status(client: &Durable, id: Uuid, want: TaskStatus, limit: Duration) {
    common::eventually(&format!("task {id} is {want:?}"), limit, || async {
        client.get_task_result(id).await.unwrap().map(|r| r.status) == Some(want)
    })
    .await;
}

fn slow_poll() -> WorkerOptions {
    // Only a wake-up can start work quickly: the poll interval is far longer than the tests wait.
    WorkerOptions::default()
        .concurrency(4)
        .poll_interval(Duration::from_secs(30))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_twice_and_concurrently() {
    let db = TestDatabase::empty().await.unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect(db.url())
        .await
        .unwrap();
    let mut migrators = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let pool = pool.clone();
        // tokio::spawn also proves that the migration future is Send.
        migrators.spawn(async move { migrate(&pool).await });
    }
    for result in migrators.join_all().await {
        result.unwrap();
    }
    migrate(&pool).await.unwrap();
    durable_postgres_sqlx::migrate_url(db.url()).await.unwrap();
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM durable.schema_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    let expected: Vec<i64> = durable_postgres_sql::MIGRATIONS
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(versions, expected);
    let locks: i64 =
        // pg_locks spans the server: count only this database's single-key advisory locks
        // (the migration lock; event locks take two keys).
        sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(locks, 0, "the migration lock is released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_on_an_empty_database_migrates_and_creates_the_queue() {
    let db = TestDatabase::empty().await.unwrap();
    let client = Durable::builder()
        .database_url(db.url())
        .queue_name("research")
        .build()
        .await
        .unwrap();
    let queues: Vec<String> = sqlx::query_scalar("SELECT queue_name FROM durable.queues")
        .fetch_all(client.pool())
        .await
        .unwrap();
    assert_eq!(queues, vec!["research".to_owned()]);
    assert!(client.store().is_listening());
    client.register::<Echo>().await;
    let spawned = client.spawn::<Echo>("hi".into()).await.unwrap();
    let worker = client.start_worker(slow_poll()).await;
    wait_status(
        &client,
        spawned.task_id,
        TaskStatus::Completed,
        Duration::from_secs(5),
    )
    .await;
    worker.shutdown().await;
    let result = client
        .get_task_result(spawned.task_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(result.output, Some(json!("hi")));

    // Without migrations on an empty database, the first operation reports a backend error.
    let empty = TestDatabase::empty().await.unwrap();
    let unmigrated = Durable::builder()
        .database_url(empty.url())
        .migrate(false)
        .build()
        .await;
    assert!(unmigrated.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builder_reports_a_missing_or_bad_database_url_as_config_errors() {
    if std::env::var_os(durable_postgres_sqlx::DATABASE_URL_ENV).is_none() {
        let error = Durable::builder().build().await.unwrap_err();
        assert!(
            matches!(&error, durable_core::DurableError::Config { message, .. }
                if message.contains("DURABLE_DATABASE_URL")),
            "{error}"
        );
    }
    let error = Durable::builder()
        .database_url("not a database url")
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(error, durable_core::DurableError::Config { .. }),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_spawn_and_emit_follow_the_transaction() {
    let db = common::database().await;
    let client = common::client(&db, "orders").await;
    client.register::<Echo>().await;
    client.register::<AwaitSignal>().await;
    sqlx::query("CREATE TABLE orders (id bigint PRIMARY KEY, status text)")
        .execute(client.pool())
        .await
        .unwrap();

    // Rolled back: neither the order nor the task exists.
    let mut tx = client.pool().begin().await.unwrap();
    sqlx::query("INSERT INTO orders VALUES (1, 'pending')")
        .execute(&mut *tx)
        .await
        .unwrap();
    let lost = client
        .spawn_with::<Echo, _>(&mut *tx, "rolled back".into())
        .await
        .unwrap();
    let lost_event = client
        .emit_event_with(&mut *tx, "never-committed", &json!(1), None)
        .await
        .unwrap();
    assert!(lost_event);
    tx.rollback().await.unwrap();
    assert!(
        client
            .get_task_result(lost.task_id)
            .await
            .unwrap()
            .is_none()
    );

    // Committed: the task runs, woken by the notification sent at commit.
    let worker = client.start_worker(slow_poll()).await;
    let waiter = client
        .spawn::<AwaitSignal>("never-committed".into())
        .await
        .unwrap();
    wait_status(
        &client,
        waiter.task_id,
        TaskStatus::Sleeping,
        Duration::from_secs(5),
    )
    .await;
    let mut tx = client.pool().begin().await.unwrap();
    sqlx::query("INSERT INTO orders VALUES (2, 'pending')")
        .execute(&mut *tx)
        .await
        .unwrap();
    let kept = client
        .spawn_with::<Echo, _>(&mut *tx, "committed".into())
        .await
        .unwrap();
    let by_name = client
        .spawn_by_name_with(&mut *tx, "echo", json!("by name"), SpawnOptions::default())
        .await
        .unwrap();
    let with_options = client
        .spawn_with_options_with::<Echo, _>(
            &mut *tx,
            "keyed".into(),
            SpawnOptions {
                idempotency_key: Some("order-2".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(
        client
            .emit_event_with(&mut *tx, "never-committed", &json!("now committed"), None)
            .await
            .unwrap()
    );
    // Not visible, and not started, before the commit.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        client
            .get_task_result(kept.task_id)
            .await
            .unwrap()
            .is_none()
    );
    tx.commit().await.unwrap();
    for id in [
        kept.task_id,
        by_name.task_id,
        with_options.task_id,
        waiter.task_id,
    ] {
        wait_status(&client, id, TaskStatus::Completed, Duration::from_secs(5)).await;
    }
    let waited = client
        .get_task_result(waiter.task_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(waited.output, Some(json!("now committed")));
    let unknown = client
        .spawn_by_name_with(client.pool(), "nope", json!(1), SpawnOptions::default())
        .await;
    assert!(matches!(
        unknown,
        Err(durable_core::DurableError::UnknownTask { .. })
    ));
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_completion_wakes_the_parent_join() {
    let db = common::database().await;
    let client = common::client(&db, "family").await;
    client.register::<Parent>().await;
    client.register::<Double>().await;
    let worker = client.start_worker(slow_poll()).await;
    let started = Instant::now();
    let spawned = client.spawn::<Parent>(20).await.unwrap();
    wait_status(
        &client,
        spawned.task_id,
        TaskStatus::Completed,
        Duration::from_secs(5),
    )
    .await;
    let elapsed = started.elapsed();
    let result = client
        .get_task_result(spawned.task_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(result.output, Some(json!(41)));
    println!("parent -> child -> join -> parent done in {elapsed:?}");
    assert!(elapsed < Duration::from_secs(5));
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_listener_connection_reconnects() {
    let db = common::database().await;
    let client = common::client(&db, "reconnect").await;
    client.register::<Echo>().await;
    let worker = client.start_worker(slow_poll()).await;
    let first = client.spawn::<Echo>("before".into()).await.unwrap();
    wait_status(
        &client,
        first.task_id,
        TaskStatus::Completed,
        Duration::from_secs(5),
    )
    .await;

    let listeners = || async {
        sqlx::query_scalar::<_, i32>(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        )
        .fetch_all(client.pool())
        .await
        .unwrap()
    };
    let pids = listeners().await;
    assert_eq!(pids.len(), 1, "one listener connection");
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pids[0])
        .execute(client.pool())
        .await
        .unwrap();
    common::eventually(
        "the listener reconnects",
        Duration::from_secs(10),
        || async {
            let now = listeners().await;
            now.len() == 1 && now[0] != pids[0]
        },
    )
    .await;
    let started = Instant::now();
    let second = client.spawn::<Echo>("after".into()).await.unwrap();
    wait_status(
        &client,
        second.task_id,
        TaskStatus::Completed,
        Duration::from_secs(5),
    )
    .await;
    println!(
        "after reconnecting, spawn to completion took {:?}",
        started.elapsed()
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_only_mode_never_listens_and_still_runs_tasks() {
    let db = common::database().await;
    let client = Durable::builder()
        .database_url(db.url())
        .queue_name("polling")
        .listen(false)
        .build()
        .await
        .unwrap();
    assert!(!client.store().is_listening());
    client.register::<Echo>().await;
    let signal = client.store().work_signal("polling");
    let spawned = client.spawn::<Echo>("polled".into()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !signal.has_changed().unwrap(),
        "a poll-only signal never changes"
    );
    let listeners: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .fetch_one(client.pool())
    .await
    .unwrap();
    assert_eq!(listeners, 0);
    let worker = client
        .start_worker(WorkerOptions::default().poll_interval(Duration::from_millis(50)))
        .await;
    wait_status(
        &client,
        spawned.task_id,
        TaskStatus::Completed,
        Duration::from_secs(5),
    )
    .await;
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_stops_when_the_last_store_clone_drops() {
    let db = common::database().await;
    let store = SqlxStore::connect(db.url()).await.unwrap();
    let pool = store.pool().clone();
    let count = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let clone = store.clone();
    let _signal = clone.work_signal("q");
    common::eventually("the listener connects", Duration::from_secs(5), || async {
        count().await == 1
    })
    .await;
    drop(store);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(count().await, 1, "a clone keeps it alive");
    drop(clone);
    common::eventually(
        "the listener disconnects",
        Duration::from_secs(5),
        || async { count().await == 0 },
    )
    .await;
}

/// 1,000 tasks await distinct events while four emitters send them: every task completes, though
/// the poll interval is far longer than the test (a lost wake-up would leave a task asleep).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_awaits_racing_their_emits_all_complete() {
    const TASKS: usize = 1000;
    let db = common::database().await;
    let client = common::client(&db, "race").await;
    client.register::<AwaitSignal>().await;
    for i in 0..TASKS {
        client
            .spawn::<AwaitSignal>(format!("go-{i}"))
            .await
            .unwrap();
    }
    let worker = client
        .start_worker(
            WorkerOptions::default()
                .concurrency(16)
                .poll_interval(Duration::from_secs(300)),
        )
        .await;
    let mut emitters = tokio::task::JoinSet::new();
    for part in 0..4 {
        let client = client.clone();
        emitters.spawn(async move {
            for i in (part..TASKS).step_by(4) {
                assert!(
                    client
                        .emit_event(&format!("go-{i}"), &i, None)
                        .await
                        .unwrap()
                );
            }
        });
    }
    emitters.join_all().await;
    common::eventually("every task completes", Duration::from_secs(60), || async {
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM durable.tasks WHERE state = 'completed'")
                .fetch_one(client.pool())
                .await
                .unwrap();
        done == TASKS as i64
    })
    .await;
    worker.shutdown().await;
    let wrong: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM durable.tasks WHERE output <> to_jsonb(substr(params #>> '{}', 4)::int)",
    )
    .fetch_one(client.pool())
    .await
    .unwrap();
    assert_eq!(wrong, 0, "each task received its own event's payload");
}

/// Compiles only if the futures users await are `Send`, so they run inside `tokio::spawn`.
#[allow(dead_code)]
fn public_futures_are_send(client: Durable) {
    fn send<T: Send>(_: T) {}
    send(Durable::builder().build());
    send(migrate(client.pool()));
    send(durable_postgres_sqlx::migrate_url("postgres://localhost/x"));
    send(SqlxStore::connect("postgres://localhost/x"));
    send(async move {
        let mut tx = client.pool().begin().await.unwrap();
        client
            .spawn_with::<Echo, _>(&mut *tx, "a".into())
            .await
            .unwrap();
        client
            .spawn_with_options_with::<Echo, _>(&mut *tx, "b".into(), SpawnOptions::default())
            .await
            .unwrap();
        client
            .spawn_by_name_with(&mut *tx, "echo", json!("c"), SpawnOptions::default())
            .await
            .unwrap();
        client
            .emit_event_with(&mut *tx, "e", &1, None)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        client
            .spawn_with::<Echo, _>(client.pool(), "d".into())
            .await
            .unwrap();
        let mut connection = client.pool().acquire().await.unwrap();
        client
            .spawn_with::<Echo, _>(&mut *connection, "e".into())
            .await
            .unwrap();
    });
}
