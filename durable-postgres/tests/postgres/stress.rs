//! Concurrency and scale on a real PostgreSQL: racing multi-row operations never deadlock, and
//! claims stay fast with a million finished tasks in the table.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use durable_core::store::{AwaitOutcome, ClaimRequest, ClaimedRun, NewTask, child_event_name};
use durable_core::{
    CancellationPolicy, FailureKind, RetryStrategy, Store, StoreError, TaskErrorInfo, TaskStatus,
};
use durable_postgres::{Driver, Param, PgStore};
use serde_json::json;
use uuid::Uuid;

use crate::common::{self, TestDriver};

const Q: &str = "stress";

fn new_task(parent: Option<Uuid>) -> NewTask {
    NewTask {
        queue: Q.into(),
        task_name: "job".into(),
        params: json!(null),
        headers: BTreeMap::new(),
        max_attempts: 1,
        retry_strategy: RetryStrategy::None,
        cancellation: CancellationPolicy::default(),
        idempotency_key: None,
        parent_task_id: parent,
        delay: None,
    }
}

async fn claim_exact<D: Driver>(store: &PgStore<D>, task_id: Uuid) -> ClaimedRun {
    // Claims everything due; the tests spawn one task at a time, so that is the one.
    let batch = store
        .claim(ClaimRequest {
            queue: Q.into(),
            worker_id: "stress".into(),
            task_names: vec!["job".into()],
            limit: 1,
            lease: Duration::from_secs(60),
        })
        .await
        .unwrap();
    let run = batch.runs.into_iter().next().expect("a run");
    assert_eq!(run.run.task_id, task_id);
    run
}

fn acceptable<T: std::fmt::Debug>(what: &str, result: Result<T, StoreError>) {
    match result {
        Ok(_) | Err(StoreError::LeaseLost { .. } | StoreError::Cancelled { .. }) => {}
        Err(error) => panic!("{what} failed: {error}"),
    }
}

/// Families of parent, child and grandchild, plus tasks awaiting shared events; then, all at
/// once: the children complete and fail, the parents are cancelled (cascading), shared events
/// are emitted, awaiting tasks are cancelled and leases are checked. No call may fail with an
/// error, and PostgreSQL must have detected no deadlock (the store's retry would hide one).
pub(crate) async fn racing_cancel_complete_fail_and_emit_never_deadlock<D: TestDriver>() {
    const FAMILIES: usize = 120;
    const SHARED: usize = 8;
    let db = common::database::<D>().await;
    let store = PgStore::<D>::poll_only(common::driver::<D>(&db, 32).await);
    let mut families = Vec::new();
    for i in 0..FAMILIES {
        let parent = store.spawn(new_task(None)).await.unwrap();
        let parent_run = claim_exact(&store, parent.task_id).await;
        let child = store.spawn(new_task(Some(parent.task_id))).await.unwrap();
        let child_run = claim_exact(&store, child.task_id).await;
        let grandchild = store.spawn(new_task(Some(child.task_id))).await.unwrap();
        let grandchild_run = claim_exact(&store, grandchild.task_id).await;
        let joined = store
            .await_event(
                &parent_run.run,
                "$join:c",
                &child_event_name(child.task_id),
                None,
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        assert_eq!(joined, AwaitOutcome::Suspended);
        let shared = format!("shared-{}", i % SHARED);
        let waiting = store
            .await_event(
                &grandchild_run.run,
                "wait",
                &shared,
                None,
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        assert_eq!(waiting, AwaitOutcome::Suspended);
        families.push((parent.task_id, child_run, grandchild.task_id));
    }

    let started = Instant::now();
    let mut racing = tokio::task::JoinSet::new();
    for (i, (parent, child_run, grandchild)) in families.iter().cloned().enumerate() {
        let s = store.clone();
        let run = child_run.run.clone();
        racing.spawn(async move { acceptable("complete", s.complete_run(&run, json!(i)).await) });
        let s = store.clone();
        let run = child_run.run.clone();
        racing.spawn(async move {
            let error = TaskErrorInfo::new(FailureKind::Failed, "racing failure");
            acceptable("fail", s.fail_run(&run, error, None).await);
        });
        let s = store.clone();
        racing.spawn(async move { acceptable("cancel parent", s.cancel_task(Q, parent).await) });
        if i % 3 == 0 {
            let s = store.clone();
            racing.spawn(async move {
                acceptable("cancel grandchild", s.cancel_task(Q, grandchild).await);
            });
        }
        if i % 10 == 0 {
            let s = store.clone();
            racing.spawn(async move { acceptable("expire", s.expire_leases(Q).await) });
        }
        if i < SHARED {
            let s = store.clone();
            racing.spawn(async move {
                acceptable(
                    "emit",
                    s.emit_event(Q, &format!("shared-{i}"), json!(i)).await,
                );
            });
        }
    }
    racing.join_all().await;
    let elapsed = started.elapsed();

    for (parent, child_run, grandchild) in &families {
        let state = |id| {
            let s = store.clone();
            async move { s.task_result(id).await.unwrap().unwrap().status }
        };
        assert_eq!(state(*parent).await, TaskStatus::Cancelled);
        let child = state(child_run.run.task_id).await;
        assert!(child.is_terminal(), "child is {child:?}");
        assert_eq!(state(*grandchild).await, TaskStatus::Cancelled, "cascade");
    }

    // Statistics of a backend are flushed when it exits: close the pool, then read them.
    let driver = store.driver().clone();
    drop(store);
    driver.close().await;
    let admin = common::driver::<D>(&db, 1).await;
    let deadlocks = deadlocks_detected(&admin).await;
    println!(
        "{} racing operations over {FAMILIES} families in {elapsed:?}; deadlocks detected: {deadlocks}",
        FAMILIES * 3 + FAMILIES / 3 + FAMILIES / 10 + SHARED
    );
    assert_eq!(deadlocks, 0, "the lock order must prevent every deadlock");
}

/// The deadlocks PostgreSQL detected in the current database, read through `driver`.
async fn deadlocks_detected<D: Driver>(driver: &D) -> i64 {
    let mut deadlocks = 0;
    // Flushing is asynchronous: look a few times.
    for _ in 0..20 {
        deadlocks = common::int8(
            driver,
            "SELECT deadlocks AS value FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .await;
        if deadlocks > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    deadlocks
}

/// A million finished tasks in the table: claiming, recovering leases, spawning and reading a
/// result stay in the milliseconds, since the partial indexes leave finished rows out.
pub(crate) async fn claims_stay_fast_with_a_million_finished_tasks<D: TestDriver>() {
    let _alone = common::one_heavy_case_at_a_time().await;
    let db = common::database::<D>().await;
    let store = common::store::<D>(&db).await;
    let filled = Instant::now();
    common::query(
        store.driver(),
        "INSERT INTO durable.tasks (task_id, queue_name, task_name, params, max_attempts, \
         retry_strategy, cancellation, state, attempt, run_id, created_at, finished_at, output)
         SELECT gen_random_uuid(), $1::text, 'job', 'null', 1, '{\"kind\":\"none\"}', '{}', \
                'completed', 1, gen_random_uuid(), now(), now(), '1'
           FROM generate_series(1, 1000000)",
        &[Param::Text(Some(Q))],
    )
    .await;
    common::query(store.driver(), "ANALYZE durable.tasks", &[]).await;
    println!(
        "inserted a million finished tasks in {:?}",
        filled.elapsed()
    );

    let mut spawn_time = Duration::ZERO;
    let mut claim_time = Duration::ZERO;
    let mut result_time = Duration::ZERO;
    let mut expire_time = Duration::ZERO;
    const ROUNDS: u32 = 50;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let spawned = store.spawn(new_task(None)).await.unwrap();
        spawn_time += t.elapsed();
        let t = Instant::now();
        let run = claim_exact(&store, spawned.task_id).await;
        claim_time += t.elapsed();
        let t = Instant::now();
        store.expire_leases(Q).await.unwrap();
        expire_time += t.elapsed();
        store.complete_run(&run.run, json!(1)).await.unwrap();
        let t = Instant::now();
        store.task_result(spawned.task_id).await.unwrap().unwrap();
        result_time += t.elapsed();
    }
    let (spawn, claim, expire, result) = (
        spawn_time / ROUNDS,
        claim_time / ROUNDS,
        expire_time / ROUNDS,
        result_time / ROUNDS,
    );
    println!(
        "with 1,000,000 finished tasks, mean of {ROUNDS}: spawn {spawn:?}, claim {claim:?}, \
         expire_leases {expire:?}, task_result {result:?}"
    );
    for (what, mean) in [
        ("spawn", spawn),
        ("claim", claim),
        ("expire", expire),
        ("result", result),
    ] {
        assert!(mean < Duration::from_millis(50), "{what} takes {mean:?}");
    }
}
