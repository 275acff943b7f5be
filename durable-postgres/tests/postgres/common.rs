//! What the cases share: the drivers they run on, a fresh migrated database per case, the raw
//! SQL they run through the driver under test, and the store's calls they make by hand.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use durable_core::store::{ClaimBatch, ClaimRequest, ClaimedRun, NewTask};
use durable_core::{CancellationPolicy, RetryStrategy, Store, TaskStatus};
use durable_postgres::{Connect, Decodes, Driver, Durable, Param, PgStore, PoolSettings};
use durable_postgres_native::NativeDriver;
use durable_postgres_sqlx::SqlxDriver;
use durable_testing::postgres::{TestDatabase, template_key};
use serde_json::json;
use uuid::Uuid;

/// A driver the suite runs on: one that makes its own pool and migrates, and whose pool the
/// suite can close.
pub(crate) trait TestDriver: Connect {
    /// Closes the driver's pool: its connections end, and their server processes exit.
    fn close(&self) -> impl Future<Output = ()> + Send;
}

impl TestDriver for SqlxDriver {
    async fn close(&self) {
        self.pool().close().await;
    }
}

impl TestDriver for NativeDriver {
    async fn close(&self) {
        self.pool().close();
    }
}

/// Runs one case on a runtime of its own with two worker threads.
pub(crate) fn run(case: impl Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(case);
}

/// Taken by the cases that fill a table with a hundred thousand rows or more, so that they run
/// one at a time, as they did when each area was a test binary of its own: beside a concurrent
/// million-row insert, `VACUUM` frees less at once, and the retention case's tables end up at
/// the edge of its size bound (on either driver).
pub(crate) async fn one_heavy_case_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    HEAVY.lock().await
}

/// A fresh database with the schema of `durable`, dropped when the value drops. Its template is
/// migrated by the driver under test; the template's key hashes every migration, so a schema
/// change makes a new template.
pub(crate) async fn database<D: TestDriver>() -> TestDatabase {
    let migrations: Vec<u8> = durable_postgres_sql::MIGRATIONS
        .iter()
        .flat_map(|m| m.sql.bytes())
        .collect();
    let key = template_key(&D::NAME.replace('-', "_"), &migrations);
    TestDatabase::create(&key, |url| async move {
        let settings = PoolSettings {
            max_connections: 1,
            ..PoolSettings::default()
        };
        let driver = D::connect(D::parse_url(&url)?, &D::Options::default(), &settings).await?;
        durable_postgres::migrate::on_pool(&driver).await?;
        driver.close().await;
        Ok(())
    })
    .await
    .unwrap_or_else(|e| panic!("no test database: {e}"))
}

/// A listening store on `db`, on a pool of the default size.
pub(crate) async fn store<D: Connect>(db: &TestDatabase) -> PgStore<D> {
    PgStore::connect(db.url()).await.expect("store")
}

/// A driver on a pool of its own of up to `max_connections` connections to `db`.
pub(crate) async fn driver<D: Connect>(db: &TestDatabase, max_connections: u32) -> D {
    let config = D::parse_url(db.url()).expect("a valid database URL");
    let settings = PoolSettings {
        max_connections,
        ..PoolSettings::default()
    };
    D::connect(config, &D::Options::default(), &settings)
        .await
        .expect("a pool")
}

/// A client of `queue` on `db`, retrying failed attempts at once.
pub(crate) async fn client<D: Connect>(db: &TestDatabase, queue: &str) -> Durable<D> {
    Durable::builder()
        .database_url(db.url())
        .queue_name(queue)
        .max_connections(20)
        .default_retry_strategy(RetryStrategy::Fixed {
            base_delay: Duration::ZERO,
        })
        .build()
        .await
        .expect("client")
}

/// How long a statement of the suite's own may take (filling a table, `VACUUM`).
const SQL_TIMEOUT: Duration = Duration::from_secs(600);

/// Runs `statement` through `driver`, the driver under test, and reads every row.
pub(crate) async fn query<D: Driver>(
    driver: &D,
    statement: &str,
    params: &[Param<'_>],
) -> Vec<D::Row> {
    driver
        .query(statement, params, SQL_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"))
}

/// Runs `statement` through `driver`; it answers one row, whose `bigint` column `value` is read.
pub(crate) async fn int8<D: Driver>(driver: &D, statement: &str, params: &[Param<'_>]) -> i64 {
    let rows = query(driver, statement, params).await;
    let [row] = rows.as_slice() else {
        panic!("{statement}: {} rows, one expected", rows.len());
    };
    Decodes::<'_, i64>::decode(row, "value")
        .unwrap_or_else(|e| panic!("{statement}: {e}"))
        .unwrap_or_else(|| panic!("{statement}: NULL"))
}

/// Runs `statement` through `driver`; it answers one row, whose `boolean` column `value` is
/// read.
pub(crate) async fn boolean<D: Driver>(driver: &D, statement: &str, params: &[Param<'_>]) -> bool {
    let rows = query(driver, statement, params).await;
    let [row] = rows.as_slice() else {
        panic!("{statement}: {} rows, one expected", rows.len());
    };
    Decodes::<'_, bool>::decode(row, "value")
        .unwrap_or_else(|e| panic!("{statement}: {e}"))
        .unwrap_or_else(|| panic!("{statement}: NULL"))
}

/// The task name the port-level cases claim.
pub(crate) const NAME: &str = "job";

/// A task of `queue` named `name`, with a header, three attempts, a fixed backoff and a pending
/// time limit.
pub(crate) fn new_task(queue: &str, name: &str) -> NewTask {
    NewTask {
        queue: queue.into(),
        task_name: name.into(),
        params: json!({"n": 1}),
        headers: BTreeMap::from([("trace".to_owned(), json!("abc"))]),
        max_attempts: 3,
        retry_strategy: RetryStrategy::Fixed {
            base_delay: Duration::from_millis(250),
        },
        cancellation: CancellationPolicy {
            max_pending_time: Some(Duration::from_millis(1500)),
            max_running_time: None,
        },
        idempotency_key: None,
        parent_task_id: None,
        delay: None,
    }
}

/// Claims up to `limit` runs of tasks named [`NAME`] in `queue`.
pub(crate) async fn claim<D: Driver>(
    store: &PgStore<D>,
    queue: &str,
    limit: usize,
    lease: Duration,
) -> ClaimBatch {
    store
        .claim(ClaimRequest {
            queue: queue.into(),
            worker_id: "tester".into(),
            task_names: vec![NAME.into()],
            limit,
            lease,
        })
        .await
        .unwrap()
}

/// Claims exactly one run in `queue`, with a lease of a minute.
pub(crate) async fn claim_one<D: Driver>(store: &PgStore<D>, queue: &str) -> ClaimedRun {
    let mut batch = claim(store, queue, 1, Duration::from_secs(60)).await;
    assert_eq!(batch.runs.len(), 1, "one run expected");
    batch.runs.remove(0)
}

/// The status of a task that exists.
pub(crate) async fn status<D: Driver>(store: &PgStore<D>, task_id: Uuid) -> TaskStatus {
    store.task_result(task_id).await.unwrap().unwrap().status
}

/// Waits (at most `limit`) until `check` holds.
pub(crate) async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
