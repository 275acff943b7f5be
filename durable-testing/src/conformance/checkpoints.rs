//! Checkpointed steps.

use durable_core::{FailureKind, SpawnOptions, TaskStatus};
use serde_json::json;

use super::script::Op;
use super::{Case, StoreBuilder, step};

pub async fn completed_steps_do_not_run_again_on_retry<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let id = case
        .spawn(vec![
            step("a", json!("A")),
            step("b", json!("B")),
            Op::Fail {
                on: vec![1],
                retryable: true,
            },
        ])
        .await;
    assert_eq!(case.run().await, 2, "attempt 1 fails, attempt 2 completes");
    assert_eq!(case.output(id).await, vec![json!("A"), json!("B")]);
    assert_eq!(case.hits("run"), 2);
    assert_eq!(case.hits("step:a"), 1, "a completed step never runs again");
    assert_eq!(case.hits("step:b"), 1);
}

pub async fn failed_step_runs_again_alone<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let id = case
        .spawn(vec![
            step("a", json!(1)),
            Op::Step {
                name: "b".into(),
                value: json!(2),
                fail_on: vec![1],
            },
        ])
        .await;
    case.run().await;
    assert_eq!(case.output(id).await, vec![json!(1), json!(2)]);
    assert_eq!(case.hits("step:a"), 1);
    assert_eq!(case.hits("step:b"), 2);
    let error = case
        .poll(id)
        .await
        .error
        .expect("attempt 1's error is kept");
    assert!(
        error.message.contains("step b fails on attempt 1"),
        "{error:?}"
    );
}

pub async fn repeated_step_names_are_numbered<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let id = case
        .spawn(vec![
            step("item", json!(1)),
            step("item", json!(2)),
            step("item", json!(3)),
            Op::Fail {
                on: vec![1],
                retryable: true,
            },
        ])
        .await;
    case.run().await;
    assert_eq!(
        case.output(id).await,
        vec![json!(1), json!(2), json!(3)],
        "each use of the name replays its own checkpoint"
    );
    assert_eq!(case.hits("step:item"), 3, "three bodies, each run once");
}

pub async fn reserved_step_names_fail_permanently<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    for name in ["a#2", "$spawn:x", ""] {
        let id = case
            .spawn_with(
                vec![step(name, json!(1))],
                SpawnOptions {
                    max_attempts: Some(3),
                    ..Default::default()
                },
            )
            .await;
        case.run().await;
        let poll = case.poll(id).await;
        assert_eq!(poll.status, TaskStatus::Failed, "{name:?}: {poll:?}");
        let error = poll.error.unwrap();
        assert_eq!(error.kind, FailureKind::NonRetryable, "{name:?}: {error:?}");
    }
    assert_eq!(
        case.hits("run"),
        3,
        "one attempt each: no retry of a bad name"
    );
}
