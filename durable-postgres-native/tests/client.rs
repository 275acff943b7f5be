//! The client on a real PostgreSQL: transactional spawn and emit on what applications hold,
//! the builder's configuration, and migrations racing each other.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::Duration;

use durable_core::{
    DurableError, SpawnOptions, Task, TaskContext, TaskResult, TaskStatus, WorkerOptions,
    async_trait,
};
use durable_postgres_native::tokio_postgres::{self, NoTls};
use durable_postgres_native::{DATABASE_URL_ENV, Durable, migrate, migrate_url};
use durable_testing::postgres::TestDatabase;
use serde_json::json;
use uuid::Uuid;

struct Noop;

#[async_trait]
impl Task for Noop {
    const NAME: &'static str = "noop";
    type Params = u32;
    type Output = u32;

    async fn run(n: u32, _ctx: TaskContext) -> TaskResult<u32> {
        Ok(n)
    }
}

async fn status(client: &Durable, task_id: Uuid) -> Option<TaskStatus> {
    client
        .get_task_result(task_id)
        .await
        .unwrap()
        .map(|r| r.status)
}

async fn raw_client(db: &TestDatabase) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(db.url(), NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_on_a_tokio_postgres_transaction_follows_commit_and_rollback() {
    let db = common::database().await;
    let client = common::client(&db, "tx").await;
    client.register::<Noop>().await;
    let mut raw = raw_client(&db).await;
    raw.batch_execute("CREATE TABLE orders (id bigint PRIMARY KEY)")
        .await
        .unwrap();

    let tx = raw.transaction().await.unwrap();
    tx.execute("INSERT INTO orders VALUES (1)", &[])
        .await
        .unwrap();
    let rolled_back = client.spawn_with::<Noop, _>(&tx, 1).await.unwrap();
    assert!(rolled_back.created);
    assert_eq!(
        status(&client, rolled_back.task_id).await,
        None,
        "not visible before commit"
    );
    let by_name = client
        .spawn_by_name_with(&tx, Noop::NAME, json!(2), SpawnOptions::default())
        .await
        .unwrap();
    assert!(
        client
            .emit_event_with(&tx, "paid:1", &json!(1), None)
            .await
            .unwrap()
    );
    tx.rollback().await.unwrap();
    assert_eq!(
        status(&client, rolled_back.task_id).await,
        None,
        "rollback leaves nothing"
    );
    assert_eq!(status(&client, by_name.task_id).await, None);
    let orders = raw.query("SELECT id FROM orders", &[]).await.unwrap();
    assert!(orders.is_empty());
    assert!(
        client
            .emit_event("paid:1", &json!("again"), None)
            .await
            .unwrap(),
        "the emit was undone"
    );

    let tx = raw.transaction().await.unwrap();
    tx.execute("INSERT INTO orders VALUES (1)", &[])
        .await
        .unwrap();
    let committed = client
        .spawn_with_options_with::<Noop, _>(&tx, 3, SpawnOptions::default())
        .await
        .unwrap();
    assert!(
        !client
            .emit_event_with(&tx, "paid:1", &json!(3), None)
            .await
            .unwrap(),
        "first emit wins"
    );
    tx.commit().await.unwrap();
    assert_eq!(
        status(&client, committed.task_id).await,
        Some(TaskStatus::Pending)
    );

    // Outside a transaction, the client itself: autocommit.
    let direct = client.spawn_with::<Noop, _>(&raw, 4).await.unwrap();
    assert_eq!(
        status(&client, direct.task_id).await,
        Some(TaskStatus::Pending)
    );
    // Bad input is refused before anything is sent.
    let unknown = client
        .spawn_by_name_with(&raw, "unknown", json!(1), SpawnOptions::default())
        .await;
    assert!(
        matches!(unknown, Err(DurableError::UnknownTask { .. })),
        "{unknown:?}"
    );
    assert_eq!(
        client
            .work_until_idle(WorkerOptions::default())
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        status(&client, committed.task_id).await,
        Some(TaskStatus::Completed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_on_deadpool_objects_and_transactions() {
    let db = common::database().await;
    let client = common::client(&db, "pooled").await;
    client.register::<Noop>().await;

    let mut object = client.pool().get().await.unwrap();
    let direct = client.spawn_with::<Noop, _>(&object, 1).await.unwrap();
    assert_eq!(
        status(&client, direct.task_id).await,
        Some(TaskStatus::Pending)
    );

    let tx = object.transaction().await.unwrap();
    let rolled_back = client.spawn_with::<Noop, _>(&tx, 2).await.unwrap();
    client
        .emit_event_with(&tx, "e", &json!(1), None)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(status(&client, rolled_back.task_id).await, None);

    let tx = object.transaction().await.unwrap();
    let committed = client.spawn_with::<Noop, _>(&tx, 3).await.unwrap();
    // The same statement again on this connection comes from the statement cache.
    let again = client.spawn_with::<Noop, _>(&tx, 4).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        status(&client, committed.task_id).await,
        Some(TaskStatus::Pending)
    );
    assert_eq!(
        status(&client, again.task_id).await,
        Some(TaskStatus::Pending)
    );
}

/// A spawn committed by the application wakes an idle worker at once, through NOTIFY: its
/// poll interval is far longer than the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_wakes_an_idle_worker() {
    let db = common::database().await;
    let client = common::client(&db, "wake").await;
    client.register::<Noop>().await;
    let worker = client
        .start_worker(WorkerOptions::default().poll_interval(Duration::from_secs(30)))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await; // the worker is idle, listening
    let mut object = client.pool().get().await.unwrap();
    let tx = object.transaction().await.unwrap();
    let spawned = client.spawn_with::<Noop, _>(&tx, 7).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status(&client, spawned.task_id).await, None);
    tx.commit().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while status(&client, spawned.task_id).await != Some(TaskStatus::Completed) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the commit did not wake the worker"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builder_needs_a_database_and_listen_settings() {
    let db = common::database().await;
    let config: tokio_postgres::Config = db.url().parse().unwrap();
    // A config instead of a URL, no migration (the database has the schema).
    let client = Durable::builder()
        .pg_config(config.clone())
        .migrate(false)
        .max_connections(2)
        .build()
        .await
        .unwrap();
    assert!(client.store().is_listening());
    assert_eq!(client.queue_name(), "default");

    // A pool of the application's: poll-only needs nothing more; listening needs settings.
    let pool = client.pool().clone();
    let polling = Durable::builder()
        .pool(pool.clone())
        .listen(false)
        .build()
        .await
        .unwrap();
    assert!(!polling.store().is_listening());
    let listening = Durable::builder()
        .pool(pool.clone())
        .database_url(db.url())
        .build()
        .await
        .unwrap();
    assert!(listening.store().is_listening());
    if std::env::var_os(DATABASE_URL_ENV).is_none() {
        let refused = Durable::builder().pool(pool).build().await;
        let Err(DurableError::Config { message, .. }) = refused else {
            panic!("expected a configuration error, got {refused:?}");
        };
        assert!(
            message.contains("database_url") && message.contains("listen(false)"),
            "{message}"
        );
        let refused = Durable::builder().build().await;
        let Err(DurableError::Config { message, .. }) = refused else {
            panic!("expected a configuration error, got {refused:?}");
        };
        assert!(message.contains(DATABASE_URL_ENV), "{message}");
    }
    let bad = Durable::builder()
        .database_url("postgres://[::1")
        .build()
        .await;
    assert!(matches!(bad, Err(DurableError::Config { .. })), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_apply_each_version_once() {
    let db = TestDatabase::empty().await.unwrap();
    let pool = Durable::builder()
        .database_url(db.url())
        .migrate(false)
        .listen(false)
        .build()
        .await;
    assert!(pool.is_err(), "no schema yet: creating the queue fails");

    // Four at once: a builder (which migrates by default), a pool and two URLs.
    let mut racers = tokio::task::JoinSet::new();
    for i in 0..4 {
        let url = db.url().to_owned();
        racers.spawn(async move {
            match i {
                0 => Durable::builder()
                    .database_url(url)
                    .build()
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string()),
                1 => {
                    let store = durable_postgres_native::NativeStore::connect(&url)
                        .await
                        .map_err(|e| e.to_string())?;
                    migrate(store.pool()).await.map_err(|e| e.to_string())
                }
                _ => migrate_url(&url).await.map_err(|e| e.to_string()),
            }
        });
    }
    for result in racers.join_all().await {
        result.unwrap();
    }
    let raw = raw_client(&db).await;
    let applied = |rows: Vec<tokio_postgres::Row>| {
        rows.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>()
    };
    let expected: Vec<i64> = durable_postgres_sql::MIGRATIONS
        .iter()
        .map(|m| m.version)
        .collect();
    let versions = raw
        .query(durable_postgres_sql::migrate::APPLIED_VERSIONS, &[])
        .await
        .unwrap();
    assert_eq!(applied(versions), expected);

    // Again: nothing to do, and the schema works.
    migrate_url(db.url()).await.unwrap();
    let versions = raw
        .query(durable_postgres_sql::migrate::APPLIED_VERSIONS, &[])
        .await
        .unwrap();
    assert_eq!(applied(versions), expected);
    let client = common::client(&db, "after-migrations").await;
    client.register::<Noop>().await;
    client.spawn::<Noop>(1).await.unwrap();
    assert_eq!(
        client
            .work_until_idle(WorkerOptions::default())
            .await
            .unwrap(),
        1
    );
}

/// Compiles only if the futures users await are `Send`, so they run inside `tokio::spawn`.
#[allow(dead_code)]
fn public_futures_are_send(client: Durable) {
    fn send<T: Send>(_: T) {}
    send(Durable::builder().build());
    send(migrate(client.pool()));
    send(migrate_url("postgres://localhost/x"));
    send(durable_postgres_native::NativeStore::connect(
        "postgres://localhost/x",
    ));
    send(async move {
        let mut object = client.pool().get().await.unwrap();
        let tx = object.transaction().await.unwrap();
        client.spawn_with::<Noop, _>(&tx, 1).await.unwrap();
        client
            .spawn_with_options_with::<Noop, _>(&tx, 2, SpawnOptions::default())
            .await
            .unwrap();
        client
            .spawn_by_name_with(&tx, Noop::NAME, json!(3), SpawnOptions::default())
            .await
            .unwrap();
        client.emit_event_with(&tx, "e", &1, None).await.unwrap();
        tx.commit().await.unwrap();
        let (mut raw, _connection) = tokio_postgres::connect("", NoTls).await.unwrap();
        let tx = raw.transaction().await.unwrap();
        client.spawn_with::<Noop, _>(&tx, 4).await.unwrap();
        tx.commit().await.unwrap();
    });
}
