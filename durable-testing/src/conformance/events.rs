//! Events: remembered, first emit wins, durable timeouts.

use durable_core::{RetryStrategy, SpawnOptions, TaskStatus};
use serde_json::json;

use super::script::Op;
use super::{Case, StoreBuilder, ms};

fn await_event(event: &str, timeout_ms: Option<u64>) -> Op {
    Op::Await {
        event: event.to_owned(),
        timeout_ms,
        catch_timeout: true,
    }
}

pub async fn event_emitted_before_the_await_is_received<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    assert!(
        case.client
            .emit_event("ready", &json!({"n": 1}), None)
            .await
            .unwrap()
    );
    let id = case.spawn(vec![await_event("ready", None)]).await;
    assert_eq!(
        case.run().await,
        1,
        "no suspension: the event was remembered"
    );
    assert_eq!(case.output(id).await, vec![json!({"n": 1})]);
}

pub async fn await_suspends_until_the_emit<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let id = case.spawn(vec![await_event("approved", None)]).await;
    assert_eq!(case.run().await, 1);
    assert_eq!(case.status(id).await, TaskStatus::Sleeping);
    assert_eq!(case.run().await, 0);
    case.client
        .emit_event("approved", &json!("by admin"), None)
        .await
        .unwrap();
    assert_eq!(case.run().await, 1);
    assert_eq!(case.output(id).await, vec![json!("by admin")]);
}

pub async fn first_emit_wins<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let id = case.spawn(vec![await_event("e", None)]).await;
    case.run().await;
    assert!(case.client.emit_event("e", &json!(1), None).await.unwrap());
    assert!(!case.client.emit_event("e", &json!(2), None).await.unwrap());
    case.run().await;
    assert_eq!(case.output(id).await, vec![json!(1)]);
    let late = case.spawn(vec![await_event("e", None)]).await;
    case.run().await;
    assert_eq!(
        case.output(late).await,
        vec![json!(1)],
        "later awaits see the first payload"
    );
}

pub async fn await_timeout_is_checkpointed<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let id = case
        .spawn_with(
            vec![
                await_event("late", Some(1000)),
                Op::Fail {
                    on: vec![1],
                    retryable: true,
                },
            ],
            SpawnOptions {
                retry_strategy: Some(RetryStrategy::Fixed {
                    base_delay: ms(1500),
                }),
                ..Default::default()
            },
        )
        .await;
    case.run().await;
    assert_eq!(case.status(id).await, TaskStatus::Sleeping);
    case.advance(ms(1100)).await;
    assert_eq!(case.run().await, 1, "the timeout wakes the task");
    assert_eq!(
        case.status(id).await,
        TaskStatus::Pending,
        "attempt 1 failed after the timeout"
    );
    // The event arrives after the timeout: the replay must still see the timeout.
    case.client
        .emit_event("late", &json!("too late"), None)
        .await
        .unwrap();
    case.advance(ms(1600)).await;
    case.run().await;
    assert_eq!(case.output(id).await, vec![json!("timeout")]);
}

pub async fn emit_from_a_task_wakes_another<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let waiter = case.spawn(vec![await_event("go", None)]).await;
    case.run().await;
    let emitter = case
        .spawn(vec![Op::Emit {
            event: "go".into(),
            payload: json!("from a task"),
        }])
        .await;
    case.run().await;
    assert_eq!(case.status(emitter).await, TaskStatus::Completed);
    assert_eq!(case.output(waiter).await, vec![json!("from a task")]);
}

pub async fn one_emit_wakes_every_awaiter<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(case.spawn(vec![await_event("broadcast", None)]).await);
    }
    case.run().await;
    case.client
        .emit_event("broadcast", &json!(7), None)
        .await
        .unwrap();
    assert_eq!(case.run().await, 5);
    for id in ids {
        assert_eq!(case.output(id).await, vec![json!(7)]);
    }
}
