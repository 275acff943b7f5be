//! One task's data can never break another task's claim; migrations never wait for ever; errors
//! say what PostgreSQL said.

use std::time::Duration;

use durable_core::store::ClaimRequest;
use durable_core::{FailureKind, Store, StoreError, TaskStatus};
use durable_postgres::{Connection, Param};
use durable_postgres_sql::MIGRATION_LOCK_KEY;
use serde_json::json;

use crate::common::{
    NAME, TestDriver, database, driver, int8, new_task, one_heavy_case_at_a_time, query, store,
};

/// A task whose checkpoints add up to more than one `jsonb` value may hold (256 MB), due with a
/// small task of the same queue: one claim hands out both, the big one with every checkpoint.
/// (The claim used to gather a task's checkpoints into one value, and every claim of the queue
/// failed.)
pub(crate) async fn a_task_too_large_to_gather_does_not_stop_its_queue<D: TestDriver>() {
    let _heavy = one_heavy_case_at_a_time().await;
    let db = database::<D>().await;
    let store = store::<D>(&db).await;
    let queue = "huge";
    store.ensure_queue(queue).await.unwrap();
    let big = store.spawn(new_task(queue, NAME)).await.unwrap();
    let small = store.spawn(new_task(queue, NAME)).await.unwrap();
    // 66 checkpoints of 4.1 MB each (each under the 4 MiB-per-value limit of the client, which
    // counts characters of JSON; PostgreSQL stores them compressed).
    query(
        store.driver(),
        "INSERT INTO durable.checkpoints (task_id, name, value, run_id, updated_at) \
         SELECT $1::uuid, 'part' || g, to_jsonb(repeat('x', 4100000)), $2::uuid, clock_timestamp() \
           FROM generate_series(1, 66) g",
        &[
            Param::Uuid(Some(big.task_id)),
            Param::Uuid(Some(big.run_id)),
        ],
    )
    .await;
    let total = int8(
        store.driver(),
        "SELECT sum(octet_length(value::text))::bigint AS value FROM durable.checkpoints \
          WHERE task_id = $1::uuid",
        &[Param::Uuid(Some(big.task_id))],
    )
    .await;
    assert!(total > 268_435_455, "{total} bytes of checkpoints");

    let batch = store
        .claim(ClaimRequest {
            queue: queue.into(),
            worker_id: "tester".into(),
            task_names: vec![NAME.into()],
            limit: 10,
            lease: Duration::from_secs(60),
        })
        .await
        .expect("the claim succeeds whatever one task stored");
    assert_eq!(batch.runs.len(), 2);
    let runs: Vec<_> = batch.runs.iter().map(|r| r.run.task_id).collect();
    assert!(runs.contains(&big.task_id) && runs.contains(&small.task_id));
    let big_run = batch
        .runs
        .iter()
        .find(|r| r.run.task_id == big.task_id)
        .unwrap();
    assert_eq!(big_run.checkpoints.len(), 66);
    assert_eq!(
        big_run.checkpoints["part7"].as_str().map(str::len),
        Some(4_100_000)
    );
}

/// Two tasks claimed together, one of whose params no longer read back (nested deeper than the
/// JSON reader accepts, written behind the client's back): the other runs; the bad one fails at
/// once, for good, with an error that says why. (Claimed rows used to be read all or nothing,
/// and the whole batch failed by lease expiry, attempt after attempt.)
pub(crate) async fn a_task_whose_data_does_not_read_back_fails_alone<D: TestDriver>() {
    let db = database::<D>().await;
    let store = store::<D>(&db).await;
    let queue = "bad-rows";
    store.ensure_queue(queue).await.unwrap();
    let bad = store.spawn(new_task(queue, NAME)).await.unwrap();
    let good = store.spawn(new_task(queue, NAME)).await.unwrap();
    let deep = format!("{}1{}", "[".repeat(300), "]".repeat(300));
    query(
        store.driver(),
        "UPDATE durable.tasks SET params = $2::text::jsonb WHERE task_id = $1::uuid",
        &[Param::Uuid(Some(bad.task_id)), Param::Text(Some(&deep))],
    )
    .await;

    let batch = store
        .claim(ClaimRequest {
            queue: queue.into(),
            worker_id: "tester".into(),
            task_names: vec![NAME.into()],
            limit: 10,
            lease: Duration::from_secs(60),
        })
        .await
        .expect("the claim succeeds");
    assert_eq!(
        batch.runs.iter().map(|r| r.run.task_id).collect::<Vec<_>>(),
        vec![good.task_id],
        "the readable task is handed out"
    );
    assert_eq!(batch.runs[0].params, json!({"n": 1}));
    let failed = store.task_result(bad.task_id).await.unwrap().unwrap();
    assert_eq!(
        failed.status,
        TaskStatus::Failed,
        "failed at once, no attempt left over"
    );
    let error = failed.error.expect("its error");
    assert_eq!(error.kind, FailureKind::Unreadable);
    assert!(
        error.message.contains(&bad.task_id.to_string()) && error.message.contains("params"),
        "{}",
        error.message
    );
}

/// A session that holds the migration lock for good (a migration killed half-way behind a
/// pooler used to leave it so): a migration that has something to do fails after its bounded
/// wait with a clear error, and one that has nothing to do does not wait at all.
pub(crate) async fn a_migration_lock_held_elsewhere_never_hangs_a_start<D: TestDriver>() {
    let db = database::<D>().await;
    let holder = driver::<D>(&db, 1).await;
    let mut holding = holder.acquire().await.unwrap();
    holding
        .query(
            "SELECT pg_advisory_lock($1::bigint)",
            &[Param::Int8(Some(MIGRATION_LOCK_KEY))],
        )
        .await
        .unwrap();
    let migrating = driver::<D>(&db, 2).await;

    // Up to date: no lock asked for.
    let up_to_date = tokio::time::timeout(
        Duration::from_secs(30),
        durable_postgres::migrate::on_pool(&migrating),
    )
    .await
    .expect("an up-to-date schema needs no lock");
    up_to_date.unwrap();

    // One version missing (6: it only replaces a function, so applying it again is harmless):
    // the wait for the lock is bounded.
    query(
        &migrating,
        "DELETE FROM durable.schema_migrations WHERE version = 6",
        &[],
    )
    .await;
    let mut connection = migrating.acquire().await.unwrap();
    let started = std::time::Instant::now();
    let refused = tokio::time::timeout(
        Duration::from_secs(30),
        durable_postgres::migrate::run_with::<D, _>(&mut connection, Duration::from_millis(500)),
    )
    .await
    .expect("the lock wait is bounded");
    match refused {
        Err(StoreError::Conflict { message }) => {
            assert!(message.contains("migration lock"), "{message}")
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    drop(connection);

    // Once the lock is free, the same migration applies.
    holding
        .query(
            "SELECT pg_advisory_unlock($1::bigint)",
            &[Param::Int8(Some(MIGRATION_LOCK_KEY))],
        )
        .await
        .unwrap();
    durable_postgres::migrate::on_pool(&migrating)
        .await
        .unwrap();
    let versions = int8(
        &migrating,
        "SELECT count(*) AS value FROM durable.schema_migrations",
        &[],
    )
    .await;
    assert_eq!(versions, durable_postgres_sql::MIGRATIONS.len() as i64);
}

/// A refusal of PostgreSQL reads as what the server said, with its SQLSTATE, on every driver:
/// through the driver and through the store's error. (The tokio-postgres adapter used to show
/// `db error` only.)
pub(crate) async fn database_errors_say_what_postgresql_said<D: TestDriver>() {
    let db = database::<D>().await;
    let store = store::<D>(&db).await;
    let error = store
        .driver()
        .query(
            "SELECT * FROM durable.no_such_table",
            &[],
            Duration::from_secs(30),
        )
        .await
        .err()
        .expect("an error");
    let text = error.to_string();
    assert!(
        text.contains("relation \"durable.no_such_table\" does not exist")
            && text.contains("SQLSTATE 42P01"),
        "{text}"
    );
    assert_eq!(error.code(), Some("42P01"));

    // Through the store: a role without rights on the schema.
    let role = format!("no_rights_{}", uuid::Uuid::new_v4().simple());
    query(
        store.driver(),
        &format!("CREATE ROLE {role} LOGIN PASSWORD 'secret'"),
        &[],
    )
    .await;
    let url = role_url(db.url(), &role);
    let outsider = durable_postgres::PgStore::<D>::connect(&url)
        .await
        .expect("the role connects");
    let refused = outsider.spawn(new_task("default", NAME)).await.err();
    let text = refused.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        text.contains("permission denied") && text.contains("SQLSTATE 42501"),
        "{text}"
    );
    drop(outsider);
    query(store.driver(), &format!("DROP OWNED BY {role}"), &[]).await;
    query(store.driver(), &format!("DROP ROLE {role}"), &[]).await;
}

/// `url` with the user and password of `role`.
fn role_url(url: &str, role: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{role}:secret@{host}")
}
