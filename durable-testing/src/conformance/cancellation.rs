//! Cancellation: by the client, reaching running code, and by policy.

use durable_core::{
    CancellationPolicy, DurableError, SpawnOptions, StoreError, TaskStatus, WorkerOptions,
};
use serde_json::json;
use uuid::Uuid;

use super::script::Op;
use super::{Case, StoreBuilder, ms, step};

pub async fn cancelled_pending_task_never_runs<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let id = case.spawn(vec![step("a", json!(1))]).await;
    assert!(case.client.cancel_task(id, None).await.unwrap());
    assert_eq!(case.run().await, 0);
    assert_eq!(case.status(id).await, TaskStatus::Cancelled);
    assert!(
        !case.client.cancel_task(id, None).await.unwrap(),
        "already ended"
    );
    assert_eq!(case.hits("run"), 0);
}

pub async fn cancel_reaches_running_task_at_next_durable_call<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let worker = case
        .client
        .start_worker(WorkerOptions::default().poll_interval(ms(20)))
        .await;
    let id = case
        .spawn(vec![
            step("a", json!(1)),
            Op::Gate { name: "g".into() },
            step("b", json!(2)),
            step("c", json!(3)),
        ])
        .await;
    case.eventually("the task reaches the gate", || async {
        case.hits("gate:g") == 1
    })
    .await;
    assert_eq!(case.status(id).await, TaskStatus::Running);
    assert!(case.client.cancel_task(id, None).await.unwrap());
    case.open_gate("g");
    // The worker's run stops at its next durable call: step b's checkpoint is refused.
    worker.shutdown().await;
    assert_eq!(case.status(id).await, TaskStatus::Cancelled);
    assert_eq!(
        case.hits("step:c"),
        0,
        "nothing after the refused checkpoint runs"
    );
    assert_eq!(case.hits("done"), 0);
    assert_eq!(case.run().await, 0, "a cancelled task never runs again");
    assert_eq!(case.poll(id).await.output, None);
}

pub async fn cancel_of_unknown_task_is_not_found<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let result = case.client.cancel_task(Uuid::new_v4(), None).await;
    assert!(
        matches!(
            result,
            Err(DurableError::Store(StoreError::NotFound { .. }))
        ),
        "{result:?}"
    );
    let id = case.spawn(vec![]).await;
    let other_queue = case.client.cancel_task(id, Some("elsewhere")).await;
    assert!(
        matches!(
            other_queue,
            Err(DurableError::Store(StoreError::NotFound { .. }))
        ),
        "{other_queue:?}"
    );
}

pub async fn max_pending_time_cancels_unstarted_task<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let id = case
        .spawn_with(
            vec![step("a", json!(1))],
            SpawnOptions {
                cancellation: Some(CancellationPolicy {
                    max_pending_time: Some(ms(1000)),
                    max_running_time: None,
                }),
                ..Default::default()
            },
        )
        .await;
    case.advance(ms(1100)).await;
    case.run().await;
    assert_eq!(case.status(id).await, TaskStatus::Cancelled);
    assert_eq!(case.hits("run"), 0);
}

pub async fn max_running_time_cancels_long_task<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let id = case
        .spawn_with(
            vec![
                step("a", json!(1)),
                Op::Sleep {
                    name: "nap".into(),
                    ms: 1500,
                },
                step("b", json!(2)),
            ],
            SpawnOptions {
                cancellation: Some(CancellationPolicy {
                    max_pending_time: None,
                    max_running_time: Some(ms(1000)),
                }),
                ..Default::default()
            },
        )
        .await;
    case.run().await;
    assert_eq!(case.status(id).await, TaskStatus::Sleeping);
    case.advance(ms(1600)).await;
    case.run().await;
    assert_eq!(case.status(id).await, TaskStatus::Cancelled);
    assert_eq!(case.hits("step:b"), 0);
}
