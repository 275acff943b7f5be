//! Events and subtask outcomes through the port, on a real PostgreSQL: awaits and emits in both
//! orders, the emit/await race, cascading cancellation.

use std::time::Duration;

use durable_core::model::{AwaitCheckpoint, ChildOutcome};
use durable_core::store::{AwaitOutcome, child_event_name};
use durable_core::{FailureKind, Store, StoreError, TaskErrorInfo, TaskStatus};
use serde_json::json;

use crate::common::{self, NAME, TestDriver, claim, claim_one, new_task, status};

const Q: &str = "event-tests";

/// An emit before the await is received at once (the first emit wins); an await before the emit
/// suspends the task until the emit wakes it; the outcome is checkpointed for later attempts; a
/// timeout is fixed by the first call and its outcome stands.
pub(crate) async fn await_and_emit_in_both_orders<D: TestDriver>() {
    let db = common::database::<D>().await;
    let store = common::store::<D>(&db).await;
    // Emit first: the await sees it at once.
    assert!(store.emit_event(Q, "early", json!({"v": 1})).await.unwrap());
    assert!(
        !store.emit_event(Q, "early", json!({"v": 2})).await.unwrap(),
        "first emit wins"
    );
    let a = store.spawn(new_task(Q, NAME)).await.unwrap();
    let run = claim_one(&store, Q).await;
    let got = store
        .await_event(
            &run.run,
            "wait-early",
            "early",
            None,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(got, AwaitOutcome::Received(json!({"v": 1})));

    // Await first: the task sleeps, the emit wakes it, the replay receives the payload.
    let run2 = {
        store.complete_run(&run.run, json!(null)).await.unwrap();
        store.spawn(new_task(Q, NAME)).await.unwrap();
        claim_one(&store, Q).await
    };
    let suspended = store
        .await_event(
            &run2.run,
            "wait-late",
            "late",
            None,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(suspended, AwaitOutcome::Suspended);
    assert_eq!(status(&store, run2.run.task_id).await, TaskStatus::Sleeping);
    let idle = claim(&store, Q, 1, Duration::from_secs(60)).await;
    assert!(idle.runs.is_empty());
    assert_eq!(
        idle.next_wake_at, None,
        "an await without timeout has no wake-up time"
    );
    assert!(store.emit_event(Q, "late", json!("payload")).await.unwrap());
    let resumed = claim_one(&store, Q).await;
    assert_eq!(resumed.run, run2.run);
    let got = store
        .await_event(
            &resumed.run,
            "wait-late",
            "late",
            None,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(got, AwaitOutcome::Received(json!("payload")));
    let next = claim(&store, Q, 1, Duration::from_secs(60)).await;
    assert!(next.runs.is_empty());
    // Checkpointed: a later attempt sees the same outcome.
    store
        .fail_run(
            &resumed.run,
            TaskErrorInfo::new(FailureKind::Failed, "boom"),
            Some(Duration::ZERO),
        )
        .await
        .unwrap();
    let retried = claim_one(&store, Q).await;
    let checkpoint: AwaitCheckpoint =
        serde_json::from_value(retried.checkpoints["wait-late"].clone()).unwrap();
    assert_eq!(
        checkpoint,
        AwaitCheckpoint::Received {
            payload: json!("payload")
        }
    );

    // A timeout is fixed by the first call and checkpointed once passed.
    let timed = store
        .await_event(
            &retried.run,
            "wait-never",
            "never",
            Some(Duration::from_millis(200)),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(timed, AwaitOutcome::Suspended);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let woken = claim_one(&store, Q).await;
    let got = store
        .await_event(
            &woken.run,
            "wait-never",
            "never",
            Some(Duration::from_secs(3600)),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(got, AwaitOutcome::TimedOut);
    assert!(store.emit_event(Q, "never", json!(1)).await.unwrap());
    let replay = store
        .await_event(
            &woken.run,
            "wait-never",
            "never",
            None,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(
        replay,
        AwaitOutcome::TimedOut,
        "the checkpointed outcome stands"
    );
    let _ = a;
}

/// 1,000 times: an await and an emit of the same event at the same moment, on two connections.
/// Either the await sees the event, or it suspends and the emit wakes the task: never a task
/// left asleep.
pub(crate) async fn emit_racing_await_never_loses_the_wake_up<D: TestDriver>() {
    let db = common::database::<D>().await;
    let store = common::store::<D>(&db).await;
    let (mut received, mut woken) = (0, 0);
    for round in 0..1000 {
        store.spawn(new_task(Q, NAME)).await.unwrap();
        let run = claim_one(&store, Q).await;
        let event = format!("race-{round}");
        let (awaited, emitted) = tokio::join!(
            store.await_event(&run.run, "wait", &event, None, Duration::from_secs(60)),
            store.emit_event(Q, &event, json!(round)),
        );
        assert!(emitted.unwrap());
        match awaited.unwrap() {
            AwaitOutcome::Received(payload) => {
                assert_eq!(payload, json!(round));
                received += 1;
                store.complete_run(&run.run, json!(null)).await.unwrap();
            }
            AwaitOutcome::Suspended => {
                assert_eq!(
                    status(&store, run.run.task_id).await,
                    TaskStatus::Pending,
                    "round {round}: the emit must wake the suspended task"
                );
                let again = claim_one(&store, Q).await;
                let got = store
                    .await_event(&again.run, "wait", &event, None, Duration::from_secs(60))
                    .await
                    .unwrap();
                assert_eq!(got, AwaitOutcome::Received(json!(round)));
                store.complete_run(&again.run, json!(null)).await.unwrap();
                woken += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    println!("emit/await race: {received} awaits saw the event, {woken} were woken by it");
}

/// Cancelling a child cancels its descendants and hands `Cancelled` to the parent joining it; a
/// final failure cascades too and hands the parent the error.
pub(crate) async fn cancel_cascades_and_tells_the_parent<D: TestDriver>() {
    let db = common::database::<D>().await;
    let store = common::store::<D>(&db).await;
    let root = store.spawn(new_task(Q, NAME)).await.unwrap();
    let root_run = claim_one(&store, Q).await;
    let mut child = new_task(Q, NAME);
    child.parent_task_id = Some(root.task_id);
    let child = store.spawn(child).await.unwrap();
    let mut grandchild = new_task(Q, NAME);
    grandchild.parent_task_id = Some(child.task_id);
    let grandchild = store.spawn(grandchild).await.unwrap();
    let child_run = claim_one(&store, Q).await;
    assert_eq!(child_run.parent_task_id, Some(root.task_id));
    // The root joins the child: it sleeps on the child's event.
    let joined = store
        .await_event(
            &root_run.run,
            "$join:c",
            &child_event_name(child.task_id),
            None,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(joined, AwaitOutcome::Suspended);

    assert!(store.cancel_task(Q, child.task_id).await.unwrap());
    assert_eq!(status(&store, child.task_id).await, TaskStatus::Cancelled);
    assert_eq!(
        status(&store, grandchild.task_id).await,
        TaskStatus::Cancelled,
        "cascade"
    );
    assert_eq!(
        status(&store, root.task_id).await,
        TaskStatus::Pending,
        "the parent woke"
    );
    let refused = store.complete_run(&child_run.run, json!(1)).await;
    assert!(
        matches!(refused, Err(StoreError::Cancelled { .. })),
        "{refused:?}"
    );
    let root_again = claim_one(&store, Q).await;
    let outcome = store
        .await_event(
            &root_again.run,
            "$join:c",
            &child_event_name(child.task_id),
            None,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let AwaitOutcome::Received(payload) = outcome else {
        panic!("expected the child's outcome, got {outcome:?}");
    };
    assert_eq!(
        serde_json::from_value::<ChildOutcome>(payload).unwrap(),
        ChildOutcome::Cancelled
    );

    // A final failure cascades too and carries the error to the parent.
    let mut second = new_task(Q, NAME);
    second.parent_task_id = Some(root.task_id);
    let second = store.spawn(second).await.unwrap();
    let mut leaf = new_task(Q, NAME);
    leaf.parent_task_id = Some(second.task_id);
    let leaf = store.spawn(leaf).await.unwrap();
    let second_run = claim_one(&store, Q).await;
    assert_eq!(second_run.run.task_id, second.task_id);
    let error = TaskErrorInfo::new(FailureKind::NonRetryable, "declined");
    store
        .fail_run(&second_run.run, error.clone(), None)
        .await
        .unwrap();
    assert_eq!(status(&store, leaf.task_id).await, TaskStatus::Cancelled);
    let got = store
        .await_event(
            &root_again.run,
            "$join:d",
            &child_event_name(second.task_id),
            None,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let AwaitOutcome::Received(payload) = got else {
        panic!("expected the child's outcome, got {got:?}");
    };
    assert_eq!(
        serde_json::from_value::<ChildOutcome>(payload).unwrap(),
        ChildOutcome::Failed { error }
    );
}
