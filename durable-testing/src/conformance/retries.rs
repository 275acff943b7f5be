//! Retries, backoff and attempt limits.

use durable_core::{
    DurableBuilder, DurableError, FailureKind, RetryStrategy, SpawnOptions, StoreError, TaskStatus,
};
use serde_json::json;

use super::script::Op;
use super::{Case, StoreBuilder, ms, step};

fn always_fail() -> Op {
    Op::Fail {
        on: vec![],
        retryable: true,
    }
}

pub async fn fixed_backoff_waits_between_attempts<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let id = case
        .spawn_with(
            vec![always_fail()],
            SpawnOptions {
                max_attempts: Some(3),
                retry_strategy: Some(RetryStrategy::Fixed {
                    base_delay: ms(1500),
                }),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(case.run().await, 1);
    assert_eq!(case.status(id).await, TaskStatus::Pending);
    case.advance(ms(1000)).await;
    assert_eq!(case.run().await, 0, "a 1.5 s backoff is not cut to 1 s");
    case.advance(ms(600)).await;
    assert_eq!(case.run().await, 1);
    case.advance(ms(1600)).await;
    assert_eq!(case.run().await, 1);
    let poll = case.poll(id).await;
    assert_eq!(poll.status, TaskStatus::Failed, "3 attempts, then final");
    assert!(poll.error.unwrap().message.contains("attempt 3"));
    case.advance(ms(1600)).await;
    assert_eq!(case.run().await, 0);
    assert_eq!(case.hits("run"), 3);
}

pub async fn exponential_backoff_grows<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let id = case
        .spawn_with(
            vec![always_fail()],
            SpawnOptions {
                max_attempts: Some(3),
                retry_strategy: Some(RetryStrategy::Exponential {
                    base_delay: ms(800),
                    factor: 2.0,
                    max_backoff: ms(10_000),
                }),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(case.run().await, 1);
    case.advance(ms(900)).await;
    assert_eq!(case.run().await, 1, "first retry after 0.8 s");
    case.advance(ms(900)).await;
    assert_eq!(case.run().await, 0, "second retry waits 1.6 s");
    case.advance(ms(800)).await;
    assert_eq!(case.run().await, 1);
    assert_eq!(case.status(id).await, TaskStatus::Failed);
}

pub async fn retry_none_means_one_attempt<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let id = case
        .spawn_with(
            vec![always_fail()],
            SpawnOptions {
                max_attempts: Some(5),
                retry_strategy: Some(RetryStrategy::None),
                ..Default::default()
            },
        )
        .await;
    case.run().await;
    case.advance(ms(5_000)).await;
    case.run().await;
    assert_eq!(case.status(id).await, TaskStatus::Failed);
    assert_eq!(case.hits("run"), 1);
}

pub async fn non_retryable_error_fails_at_once<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let id = case
        .spawn_with(
            vec![Op::Fail {
                on: vec![],
                retryable: false,
            }],
            SpawnOptions {
                max_attempts: Some(5),
                ..Default::default()
            },
        )
        .await;
    case.run().await;
    let poll = case.poll(id).await;
    assert_eq!(poll.status, TaskStatus::Failed);
    assert_eq!(poll.error.unwrap().kind, FailureKind::NonRetryable);
    assert_eq!(case.hits("run"), 1);
}

pub async fn panic_fails_the_attempt_and_the_worker_goes_on<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let id = case
        .spawn(vec![Op::Panic { on: vec![1] }, step("after", json!("ok"))])
        .await;
    let other = case.spawn(vec![step("other", json!(1))]).await;
    case.run().await;
    assert_eq!(case.output(id).await, vec![json!("ok")]);
    assert_eq!(case.output(other).await, vec![json!(1)]);
    let error = case.poll(id).await.error.expect("the panic is recorded");
    assert_eq!(error.kind, FailureKind::Panic);
    assert!(
        error.message.contains("scripted panic on attempt 1"),
        "{error:?}"
    );
    assert_eq!(case.hits("panic"), 1);
}

pub async fn default_retry_strategy_is_the_documented_one<B: StoreBuilder>(b: &B) {
    // The documented default: exponential from 1 s.
    let case = Case::with_builder(b, DurableBuilder::new()).await;
    let id = case
        .spawn(vec![Op::Fail {
            on: vec![1],
            retryable: true,
        }])
        .await;
    assert_eq!(case.run().await, 1);
    case.advance(ms(700)).await;
    assert_eq!(case.run().await, 0, "no retry before 1 s");
    case.advance(ms(400)).await;
    assert_eq!(case.run().await, 1);
    assert_eq!(case.status(id).await, TaskStatus::Completed);
}

pub async fn retry_task_reruns_a_failed_task_keeping_its_steps<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let id = case
        .spawn_with(
            vec![
                step("a", json!(1)),
                Op::Fail {
                    on: vec![1],
                    retryable: true,
                },
            ],
            SpawnOptions {
                max_attempts: Some(1),
                ..Default::default()
            },
        )
        .await;
    case.run().await;
    assert_eq!(case.status(id).await, TaskStatus::Failed);
    let retried = case.client.retry_task(id, None).await.unwrap();
    assert_eq!(retried.task_id, id);
    assert_eq!(retried.attempt, 2);
    case.run().await;
    assert_eq!(case.output(id).await, vec![json!(1)]);
    assert_eq!(case.hits("step:a"), 1);
}

pub async fn retry_task_refuses_a_task_that_did_not_fail<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let id = case.spawn(vec![]).await;
    let pending = case.client.retry_task(id, None).await;
    assert!(
        matches!(
            pending,
            Err(DurableError::Store(StoreError::Conflict { .. }))
        ),
        "{pending:?}"
    );
    case.run().await;
    let completed = case.client.retry_task(id, None).await;
    assert!(
        matches!(
            completed,
            Err(DurableError::Store(StoreError::Conflict { .. }))
        ),
        "{completed:?}"
    );
    let unknown = case.client.retry_task(uuid::Uuid::new_v4(), None).await;
    assert!(
        matches!(
            unknown,
            Err(DurableError::Store(StoreError::NotFound { .. }))
        ),
        "{unknown:?}"
    );
}
