//! Bad input is refused with a clear error and disturbs nothing.

use std::time::Duration;

use durable_core::{DurableError, FailureKind, SpawnOptions, TaskStatus};
use serde_json::json;

use super::script::{Op, ScriptTask};
use super::{Case, StoreBuilder};

fn invalid<T: std::fmt::Debug>(result: Result<T, DurableError>) -> bool {
    matches!(result, Err(DurableError::InvalidInput { .. }))
}

pub async fn invalid_queue_names_are_refused<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    for queue in ["", "x'; drop table tasks; --", "has space", &"q".repeat(65)] {
        let spawn = case
            .client
            .spawn_with_options::<ScriptTask>(
                case.script(vec![]),
                SpawnOptions {
                    queue: Some(queue.to_owned()),
                    ..Default::default()
                },
            )
            .await;
        assert!(invalid(spawn), "{queue:?}");
        assert!(
            invalid(case.client.emit_event("e", &1, Some(queue)).await),
            "{queue:?}"
        );
        assert!(invalid(case.client.create_queue(queue).await), "{queue:?}");
    }
    let id = case.spawn(vec![]).await;
    case.run().await;
    assert_eq!(
        case.status(id).await,
        TaskStatus::Completed,
        "nothing else disturbed"
    );
}

pub async fn reserved_event_names_are_refused<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let fake_child = format!("$child:{}", uuid::Uuid::new_v4());
    assert!(invalid(case.client.emit_event(&fake_child, &1, None).await));
    assert!(invalid(case.client.emit_event("", &1, None).await));
    assert!(invalid(case.client.emit_event("a\u{0}b", &1, None).await));
    let quotes = "it's \"quoted\"; -- and $1";
    assert!(
        case.client
            .emit_event(quotes, &json!(1), None)
            .await
            .unwrap()
    );
    let id = case
        .spawn(vec![Op::Await {
            event: quotes.into(),
            timeout_ms: None,
            catch_timeout: false,
        }])
        .await;
    case.run().await;
    assert_eq!(case.output(id).await, vec![json!(1)]);
}

pub async fn absurd_durations_are_refused<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let spawn = case
        .client
        .spawn_with_options::<ScriptTask>(
            case.script(vec![]),
            SpawnOptions {
                delay: Some(Duration::MAX),
                ..Default::default()
            },
        )
        .await;
    assert!(invalid(spawn));
    let id = case
        .spawn(vec![Op::Sleep {
            name: "forever".into(),
            ms: u64::MAX,
        }])
        .await;
    case.run().await;
    let poll = case.poll(id).await;
    assert_eq!(poll.status, TaskStatus::Failed);
    assert_eq!(poll.error.unwrap().kind, FailureKind::NonRetryable);
}

pub async fn zero_max_attempts_is_refused<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let spawn = case
        .client
        .spawn_with_options::<ScriptTask>(
            case.script(vec![]),
            SpawnOptions {
                max_attempts: Some(0),
                ..Default::default()
            },
        )
        .await;
    assert!(invalid(spawn));
}
