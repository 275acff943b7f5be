//! Leases and fencing: expiry, heartbeats, refused writes of runs that lost their task.

use durable_core::store::{ClaimRequest, ClaimedRun};
use durable_core::{FailureKind, SpawnOptions, Store, StoreError, TaskStatus, WorkerOptions};
use serde_json::json;

use super::script::Op;
use super::{Case, QUEUE, StoreBuilder, ms, step};

async fn claim_one<B: StoreBuilder>(case: &Case<'_, B>, lease_ms: u64) -> ClaimedRun {
    let mut batch = case
        .store
        .claim(ClaimRequest {
            queue: QUEUE.into(),
            worker_id: "test-worker".into(),
            task_names: vec!["conformance.script".into()],
            limit: 1,
            lease: ms(lease_ms),
        })
        .await
        .unwrap();
    assert_eq!(batch.runs.len(), 1, "one claimable task expected");
    batch.runs.remove(0)
}

fn lease_lost(result: &Result<(), StoreError>) -> bool {
    matches!(result, Err(StoreError::LeaseLost { .. }))
}

pub async fn expired_lease_makes_task_claimable_as_new_attempt<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let id = case.spawn(vec![]).await;
    let first = claim_one(&case, 1000).await;
    assert_eq!(
        case.store.expire_leases(QUEUE).await.unwrap(),
        0,
        "lease still valid"
    );
    case.advance(ms(1100)).await;
    assert_eq!(case.store.expire_leases(QUEUE).await.unwrap(), 1);
    assert_eq!(case.status(id).await, TaskStatus::Pending);
    let second = claim_one(&case, 60_000).await;
    assert_eq!(second.attempt, 2);
    assert_ne!(second.run.run_id, first.run.run_id);
    assert!(second.first_started_at.is_some());
    let stale = case
        .store
        .write_checkpoint(&first.run, "x", json!("stale"), ms(60_000))
        .await;
    assert!(lease_lost(&stale), "{stale:?}");
    let stale = case.store.complete_run(&first.run, json!("stale")).await;
    assert!(lease_lost(&stale), "{stale:?}");
    case.store
        .complete_run(&second.run, json!("fresh"))
        .await
        .unwrap();
    let poll = case.poll(id).await;
    assert_eq!(poll.status, TaskStatus::Completed);
    assert_eq!(
        poll.output,
        Some(json!("fresh")),
        "the new owner's result stands"
    );
    assert_eq!(poll.error.unwrap().kind, FailureKind::LeaseExpired);
}

pub async fn write_after_lease_expiry_is_refused<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    case.spawn(vec![]).await;
    let run = claim_one(&case, 1000).await;
    case.store
        .write_checkpoint(&run.run, "early", json!(1), ms(1000))
        .await
        .unwrap();
    case.advance(ms(1100)).await;
    let late = case
        .store
        .write_checkpoint(&run.run, "late", json!(2), ms(1000))
        .await;
    assert!(
        lease_lost(&late),
        "refused even before any recovery ran: {late:?}"
    );
    let late = case
        .store
        .fail_run(
            &run.run,
            durable_core::TaskErrorInfo::new(FailureKind::Failed, "late"),
            None,
        )
        .await;
    assert!(lease_lost(&late), "{late:?}");
}

pub async fn heartbeat_extends_the_lease<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let id = case.spawn(vec![]).await;
    let run = claim_one(&case, 1000).await;
    case.advance(ms(600)).await;
    case.store.extend_lease(&run.run, ms(2000)).await.unwrap();
    case.advance(ms(600)).await;
    assert_eq!(case.store.expire_leases(QUEUE).await.unwrap(), 0);
    case.store
        .write_checkpoint(&run.run, "still-mine", json!(1), ms(1000))
        .await
        .unwrap();
    case.store
        .complete_run(&run.run, json!(null))
        .await
        .unwrap();
    assert_eq!(case.status(id).await, TaskStatus::Completed);
}

pub async fn lease_expiry_without_attempts_left_fails_the_task<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let id = case
        .spawn_with(
            vec![],
            SpawnOptions {
                max_attempts: Some(1),
                ..Default::default()
            },
        )
        .await;
    claim_one(&case, 1000).await;
    case.advance(ms(1100)).await;
    assert_eq!(case.store.expire_leases(QUEUE).await.unwrap(), 1);
    let poll = case.poll(id).await;
    assert_eq!(poll.status, TaskStatus::Failed);
    assert_eq!(poll.error.unwrap().kind, FailureKind::LeaseExpired);
}

pub async fn writes_after_cancel_are_refused<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let id = case.spawn(vec![]).await;
    let run = claim_one(&case, 60_000).await;
    assert!(case.client.cancel_task(id, None).await.unwrap());
    let cancelled = |r: &Result<(), StoreError>| matches!(r, Err(StoreError::Cancelled { .. }));
    let write = case
        .store
        .write_checkpoint(&run.run, "x", json!(1), ms(1000))
        .await;
    assert!(cancelled(&write), "{write:?}");
    let heartbeat = case.store.extend_lease(&run.run, ms(1000)).await;
    assert!(cancelled(&heartbeat), "{heartbeat:?}");
    let complete = case.store.complete_run(&run.run, json!(1)).await;
    assert!(cancelled(&complete), "{complete:?}");
    let poll = case.poll(id).await;
    assert_eq!(poll.status, TaskStatus::Cancelled);
    assert_eq!(poll.output, None);
}

pub async fn expired_leases_are_recovered_while_every_slot_is_busy<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    // A task claimed by a worker that then died.
    let orphan = case.spawn(vec![step("o", json!("orphan"))]).await;
    claim_one(&case, 500).await;
    // A live worker whose only slot is busy.
    let busy = case.spawn(vec![Op::Gate { name: "g".into() }]).await;
    let worker = case
        .client
        .start_worker(
            WorkerOptions::default()
                .concurrency(1)
                .poll_interval(ms(20))
                .lease_check_interval(ms(20)),
        )
        .await;
    case.eventually("the worker is busy", || async { case.hits("gate:g") == 1 })
        .await;
    case.advance(ms(600)).await;
    case.eventually("the orphan is recovered", || async {
        let poll = case.poll(orphan).await;
        poll.status == TaskStatus::Pending
            && poll
                .error
                .is_some_and(|e| e.kind == FailureKind::LeaseExpired)
    })
    .await;
    case.open_gate("g");
    case.eventually("both complete", || async {
        case.status(orphan).await == TaskStatus::Completed
            && case.status(busy).await == TaskStatus::Completed
    })
    .await;
    worker.shutdown().await;
}

pub async fn lease_expiry_never_revives_a_task_its_parent_cancelled<B: StoreBuilder>(b: &B) {
    // A parent with no attempt left and its child (attempts left) both lose their leases: the
    // parent fails for good, which cancels the child, whatever order recovery takes them in.
    for _ in 0..4 {
        let case = Case::new(b).await;
        let parent = case
            .spawn_with(
                vec![],
                SpawnOptions {
                    max_attempts: Some(1),
                    ..Default::default()
                },
            )
            .await;
        let parent_run = claim_one(&case, 1000).await;
        let child = case
            .client
            .defaults()
            .new_task(
                QUEUE,
                "conformance.script",
                serde_json::to_value(case.script(vec![])).unwrap(),
                SpawnOptions {
                    max_attempts: Some(3),
                    ..Default::default()
                },
            )
            .unwrap();
        let child = durable_core::store::NewTask {
            parent_task_id: Some(parent_run.run.task_id),
            ..child
        };
        let child = case.store.spawn(child).await.unwrap().task_id;
        claim_one(&case, 1000).await;
        case.advance(ms(1100)).await;
        case.store.expire_leases(QUEUE).await.unwrap();
        assert_eq!(case.status(parent).await, TaskStatus::Failed);
        assert_eq!(case.status(child).await, TaskStatus::Cancelled);
        let batch = case
            .store
            .claim(ClaimRequest {
                queue: QUEUE.into(),
                worker_id: "test-worker".into(),
                task_names: vec!["conformance.script".into()],
                limit: 10,
                lease: ms(60_000),
            })
            .await
            .unwrap();
        assert!(
            batch.runs.is_empty(),
            "the cancelled child is never claimed again"
        );
    }
}

pub async fn lease_recovery_takes_parents_before_subtasks<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    // A parent and its subtask, neither with an attempt left, lose their leases together: the
    // parent fails for good first and its failure cancels the subtask, which therefore does
    // not fail on its own (nor, with attempts left, would it be retried first).
    let parent = case
        .spawn_with(
            vec![],
            SpawnOptions {
                max_attempts: Some(1),
                ..SpawnOptions::default()
            },
        )
        .await;
    let parent_run = claim_one(&case, 500).await;
    assert_eq!(parent_run.run.task_id, parent);
    let mut child = case
        .client
        .defaults()
        .new_task(
            QUEUE,
            "conformance.script",
            serde_json::to_value(case.script(vec![])).unwrap(),
            SpawnOptions {
                max_attempts: Some(1),
                ..SpawnOptions::default()
            },
        )
        .unwrap();
    child.parent_task_id = Some(parent);
    let child = case.store.spawn(child).await.unwrap().task_id;
    let child_run = claim_one(&case, 500).await;
    assert_eq!(child_run.run.task_id, child);
    case.advance(ms(600)).await;
    assert_eq!(
        case.store.expire_leases(QUEUE).await.unwrap(),
        1,
        "the parent only"
    );
    let parent_poll = case.poll(parent).await;
    assert_eq!(parent_poll.status, TaskStatus::Failed);
    assert_eq!(
        parent_poll.error.map(|e| e.kind),
        Some(FailureKind::LeaseExpired)
    );
    let child_poll = case.poll(child).await;
    assert_eq!(child_poll.status, TaskStatus::Cancelled);
    assert_eq!(
        child_poll.error, None,
        "cancelled before any recovery of its own"
    );
}
