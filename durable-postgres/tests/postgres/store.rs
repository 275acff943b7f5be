//! The store through the port, on a real PostgreSQL: fields, idempotency, fencing, sleeps,
//! retries and lease expiry.

use std::time::Duration;

use durable_core::model::SleepCheckpoint;
use durable_core::store::{AwaitOutcome, RunRef, SleepOutcome, WakeAt, child_event_name};
use durable_core::{FailureKind, Store, StoreError, TaskErrorInfo, TaskStatus};
use serde_json::json;

use crate::common::{self, NAME, TestDriver, claim, claim_one, new_task, status};

const Q: &str = "store-tests";

/// A task spawned, claimed, checkpointed and completed: every field of the claimed run, only
/// registered names claimed, the result read back, nothing left to claim.
pub(crate) async fn spawn_claim_complete_round_trip<D: TestDriver>() {
    let db = common::database::<D>().await;
    let store = common::store::<D>(&db).await;
    store.ensure_queue(Q).await.unwrap();
    let spawned = store.spawn(new_task(Q, NAME)).await.unwrap();
    assert!(spawned.created);
    assert_eq!(spawned.attempt, 1);
    assert_eq!(spawned.task_id.get_version_num(), 7, "ids are UUID v7");

    let other = store.spawn(new_task(Q, "not-mine")).await.unwrap();
    let run = claim_one(&store, Q).await;
    assert_eq!(
        run.run.task_id, spawned.task_id,
        "only registered names are claimed"
    );
    assert_eq!(run.run.run_id, spawned.run_id);
    assert_eq!(run.run.queue, Q);
    assert_eq!(run.task_name, NAME);
    assert_eq!(run.params, json!({"n": 1}));
    assert_eq!(run.headers.get("trace"), Some(&json!("abc")));
    assert_eq!((run.attempt, run.max_attempts), (1, 3));
    assert_eq!(run.retry_strategy, new_task(Q, NAME).retry_strategy);
    assert_eq!(run.cancellation, new_task(Q, NAME).cancellation);
    assert_eq!(run.first_started_at, None, "first claim");
    assert!(run.created_at <= run.now);
    assert!(run.checkpoints.is_empty());
    assert_eq!(status(&store, spawned.task_id).await, TaskStatus::Running);

    store
        .write_checkpoint(&run.run, "a", json!([1, 2]), Duration::from_secs(60))
        .await
        .unwrap();
    store
        .write_checkpoint(&run.run, "a", json!([3]), Duration::from_secs(60))
        .await
        .unwrap();
    store
        .extend_lease(&run.run, Duration::from_secs(60))
        .await
        .unwrap();
    store
        .complete_run(&run.run, json!({"done": true}))
        .await
        .unwrap();
    let result = store.task_result(spawned.task_id).await.unwrap().unwrap();
    assert_eq!(result.status, TaskStatus::Completed);
    assert_eq!(result.output, Some(json!({"done": true})));
    assert_eq!(result.error, None);
    assert_eq!(status(&store, other.task_id).await, TaskStatus::Pending);
    assert!(
        store
            .task_result(uuid::Uuid::now_v7())
            .await
            .unwrap()
            .is_none()
    );

    let batch = claim(&store, Q, 10, Duration::from_secs(60)).await;
    assert!(batch.runs.is_empty());
    assert_eq!(batch.next_wake_at, None);
}

/// A spawn with a known idempotency key returns the existing task, also when eight spawns race
/// with one key; the same key in another queue makes another task.
pub(crate) async fn idempotency_key_returns_the_existing_task<D: TestDriver>() {
    let db = common::database::<D>().await;
    let store = common::store::<D>(&db).await;
    let mut task = new_task(Q, NAME);
    task.idempotency_key = Some("order-42".into());
    let first = store.spawn(task.clone()).await.unwrap();
    let second = store.spawn(task.clone()).await.unwrap();
    assert!(first.created);
    assert!(!second.created);
    assert_eq!(
        (second.task_id, second.run_id, second.attempt),
        (first.task_id, first.run_id, 1)
    );
    // Concurrent spawns with one key make one task.
    let mut concurrent = tokio::task::JoinSet::new();
    task.idempotency_key = Some("order-43".into());
    for _ in 0..8 {
        let (store, task) = (store.clone(), task.clone());
        concurrent.spawn(async move { store.spawn(task).await.unwrap() });
    }
    let results = concurrent.join_all().await;
    assert_eq!(results.iter().filter(|r| r.created).count(), 1);
    assert!(results.iter().all(|r| r.task_id == results[0].task_id));
    // The same key in another queue is another task.
    task.queue = "elsewhere".into();
    assert!(store.spawn(task).await.unwrap().created);
}

/// The writes of a run whose lease expired, or of another queue, are refused as `LeaseLost`
/// once another run took the task over, and as `Cancelled` once the task is cancelled.
pub(crate) async fn fenced_writes_are_refused_after_takeover_and_after_cancel<D: TestDriver>() {
    let db = common::database::<D>().await;
    let store = common::store::<D>(&db).await;
    let spawned = store.spawn(new_task(Q, NAME)).await.unwrap();
    let first = claim(&store, Q, 1, Duration::from_millis(200))
        .await
        .runs
        .remove(0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let late = store
        .write_checkpoint(&first.run, "x", json!(1), Duration::from_secs(60))
        .await;
    assert!(
        matches!(late, Err(StoreError::LeaseLost { .. })),
        "{late:?}"
    );
    assert_eq!(store.expire_leases(Q).await.unwrap(), 1);
    let result = store.task_result(spawned.task_id).await.unwrap().unwrap();
    assert_eq!(result.status, TaskStatus::Pending);
    assert_eq!(
        result.error.map(|e| e.kind),
        Some(FailureKind::LeaseExpired)
    );

    let second = claim_one(&store, Q).await;
    assert_eq!(second.attempt, 2);
    assert_ne!(second.run.run_id, first.run.run_id);
    assert!(second.first_started_at.is_some());
    for refused in [
        store
            .extend_lease(&first.run, Duration::from_secs(60))
            .await,
        store.complete_run(&first.run, json!("stale")).await,
        store
            .fail_run(
                &first.run,
                TaskErrorInfo::new(FailureKind::Failed, "x"),
                None,
            )
            .await,
        store
            .sleep(
                &first.run,
                "s",
                WakeAt::After(Duration::ZERO),
                Duration::from_secs(1),
            )
            .await
            .map(|_| ()),
        store
            .await_event(&first.run, "a", "e", None, Duration::from_secs(1))
            .await
            .map(|_| ()),
    ] {
        assert!(
            matches!(refused, Err(StoreError::LeaseLost { task_id, run_id })
                if task_id == spawned.task_id && run_id == first.run.run_id),
            "{refused:?}"
        );
    }
    let wrong_queue = RunRef {
        queue: "other".into(),
        ..second.run.clone()
    };
    let refused = store.complete_run(&wrong_queue, json!(1)).await;
    assert!(
        matches!(refused, Err(StoreError::LeaseLost { .. })),
        "{refused:?}"
    );

    assert!(store.cancel_task(Q, spawned.task_id).await.unwrap());
    let refused = store
        .write_checkpoint(&second.run, "x", json!(1), Duration::from_secs(60))
        .await;
    assert!(
        matches!(refused, Err(StoreError::Cancelled { task_id }) if task_id == spawned.task_id),
        "{refused:?}"
    );
    let refused = store.complete_run(&second.run, json!(1)).await;
    assert!(
        matches!(refused, Err(StoreError::Cancelled { .. })),
        "{refused:?}"
    );
    assert_eq!(status(&store, spawned.task_id).await, TaskStatus::Cancelled);
    assert!(
        !store.cancel_task(Q, spawned.task_id).await.unwrap(),
        "already terminal"
    );
    let missing = store.cancel_task("other", spawned.task_id).await;
    assert!(
        matches!(missing, Err(StoreError::NotFound { .. })),
        "{missing:?}"
    );
}

/// A sleep suspends the run until its wake-up time, which the claim reports; the task is claimed
/// again when due, as the same run, and the replay keeps the recorded time.
pub(crate) async fn sleep_suspends_until_due_then_the_task_is_claimed_again<D: TestDriver>() {
    let db = common::database::<D>().await;
    let store = common::store::<D>(&db).await;
    let spawned = store.spawn(new_task(Q, NAME)).await.unwrap();
    let run = claim_one(&store, Q).await;
    let outcome = store
        .sleep(
            &run.run,
            "nap",
            WakeAt::After(Duration::from_millis(400)),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let SleepOutcome::Suspended { wake_at } = outcome else {
        panic!("expected a suspension, got {outcome:?}");
    };
    assert_eq!(status(&store, spawned.task_id).await, TaskStatus::Sleeping);
    let early = claim(&store, Q, 1, Duration::from_secs(60)).await;
    assert!(early.runs.is_empty(), "not due yet");
    assert_eq!(early.next_wake_at, Some(wake_at));
    let remaining = (wake_at - early.now).to_std().unwrap();
    assert!(remaining > Duration::from_millis(200) && remaining <= Duration::from_millis(400));

    tokio::time::sleep(remaining + Duration::from_millis(20)).await;
    let resumed = claim_one(&store, Q).await;
    assert_eq!(
        resumed.run.run_id, run.run.run_id,
        "a resume is the same run"
    );
    let checkpoint: SleepCheckpoint =
        serde_json::from_value(resumed.checkpoints["nap"].clone()).unwrap();
    assert_eq!(
        checkpoint.wake_at, wake_at,
        "the checkpoint holds the wake-up time"
    );
    // The replay reuses the recorded time, whatever it is given now.
    let replay = store
        .sleep(
            &resumed.run,
            "nap",
            WakeAt::After(Duration::from_secs(3600)),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(replay, SleepOutcome::Elapsed);
    // A time in the past is elapsed at once, and sub-second precision survives.
    let at = resumed.now - chrono::Duration::milliseconds(1);
    let past = store
        .sleep(
            &resumed.run,
            "until",
            WakeAt::At(at),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(past, SleepOutcome::Elapsed);
    assert_eq!(status(&store, spawned.task_id).await, TaskStatus::Running);
}

/// `retry_task` refuses a task that did not fail and an unknown one; a failed task runs once more,
/// as a new run that keeps the checkpoints.
pub(crate) async fn retry_task_makes_a_failed_task_run_again<D: TestDriver>() {
    let db = common::database::<D>().await;
    let store = common::store::<D>(&db).await;
    let mut task = new_task(Q, NAME);
    task.max_attempts = 1;
    let spawned = store.spawn(task).await.unwrap();
    let refused = store.retry_task(Q, spawned.task_id).await;
    assert!(
        matches!(refused, Err(StoreError::Conflict { .. })),
        "{refused:?}"
    );
    let missing = store.retry_task(Q, uuid::Uuid::now_v7()).await;
    assert!(
        matches!(missing, Err(StoreError::NotFound { .. })),
        "{missing:?}"
    );
    let run = claim_one(&store, Q).await;
    store
        .write_checkpoint(&run.run, "kept", json!("yes"), Duration::from_secs(60))
        .await
        .unwrap();
    store
        .fail_run(
            &run.run,
            TaskErrorInfo::new(FailureKind::Failed, "boom"),
            None,
        )
        .await
        .unwrap();
    let failed = store.task_result(spawned.task_id).await.unwrap().unwrap();
    assert_eq!(failed.status, TaskStatus::Failed);
    assert_eq!(
        failed.error.as_ref().map(|e| e.message.as_str()),
        Some("boom")
    );

    let retried = store.retry_task(Q, spawned.task_id).await.unwrap();
    assert_eq!(
        (retried.task_id, retried.attempt, retried.created),
        (spawned.task_id, 2, false)
    );
    assert_ne!(retried.run_id, run.run.run_id);
    let again = claim_one(&store, Q).await;
    assert_eq!(
        (again.attempt, again.max_attempts),
        (2, 2),
        "one more attempt allowed"
    );
    assert_eq!(again.run.run_id, retried.run_id);
    assert_eq!(again.checkpoints.get("kept"), Some(&json!("yes")));
}

/// A lease that expires on the last attempt fails the task and wakes the parent joining it; the
/// late run's writes are refused.
pub(crate) async fn lease_expiry_without_attempts_left_fails_and_tells_the_parent<D: TestDriver>() {
    let db = common::database::<D>().await;
    let store = common::store::<D>(&db).await;
    let parent = store.spawn(new_task(Q, NAME)).await.unwrap();
    let parent_run = claim_one(&store, Q).await;
    let mut child = new_task(Q, NAME);
    child.parent_task_id = Some(parent.task_id);
    child.max_attempts = 1;
    let child = store.spawn(child).await.unwrap();
    let child_run = claim(&store, Q, 1, Duration::from_millis(100))
        .await
        .runs
        .remove(0);
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
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(store.expire_leases(Q).await.unwrap(), 1);
    let result = store.task_result(child.task_id).await.unwrap().unwrap();
    assert_eq!(result.status, TaskStatus::Failed);
    assert_eq!(
        result.error.map(|e| e.kind),
        Some(FailureKind::LeaseExpired)
    );
    assert_eq!(
        status(&store, parent.task_id).await,
        TaskStatus::Pending,
        "parent woken"
    );
    let refused = store.complete_run(&child_run.run, json!(1)).await;
    assert!(
        matches!(refused, Err(StoreError::LeaseLost { .. })),
        "{refused:?}"
    );
}
