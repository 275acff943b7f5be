//! Spawning and claiming.

use std::collections::HashSet;

use durable_core::Store;
use durable_core::store::ClaimRequest;
use durable_core::{DurableBuilder, DurableError, SpawnOptions, TaskStatus};
use serde_json::json;
use uuid::Uuid;

use super::script::{OtherScriptTask, ScriptTask};
use super::{Case, QUEUE, StoreBuilder, ms, step};

pub async fn spawn_runs_task_to_completion<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let id = case
        .spawn(vec![step("a", json!(1)), step("b", json!({"x": [2]}))])
        .await;
    assert_eq!(case.status(id).await, TaskStatus::Pending);
    assert_eq!(case.run().await, 1);
    assert_eq!(case.output(id).await, vec![json!(1), json!({"x": [2]})]);
    assert_eq!(case.hits("step:a"), 1);
    assert_eq!(case.run().await, 0, "a completed task is not claimed again");
}

pub async fn spawn_with_idempotency_key_returns_existing_task<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let options = SpawnOptions {
        idempotency_key: Some("order-42".into()),
        ..Default::default()
    };
    let first = case
        .client
        .spawn_with_options::<ScriptTask>(case.script(vec![]), options.clone())
        .await
        .unwrap();
    let second = case
        .client
        .spawn_with_options::<ScriptTask>(case.script(vec![]), options)
        .await
        .unwrap();
    assert!(first.created);
    assert!(!second.created);
    assert_eq!(first.task_id, second.task_id);
    assert_eq!(first.run_id, second.run_id);
    assert_eq!(case.run().await, 1);
    assert_eq!(case.hits("run"), 1);
}

pub async fn spawn_delay_defers_the_start<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let id = case
        .spawn_with(
            vec![],
            SpawnOptions {
                delay: Some(ms(1500)),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(case.run().await, 0);
    case.advance(ms(1000)).await;
    assert_eq!(case.run().await, 0, "a 1.5 s delay is not cut to 1 s");
    assert_eq!(case.status(id).await, TaskStatus::Pending);
    case.advance(ms(600)).await;
    assert_eq!(case.run().await, 1);
    assert_eq!(case.status(id).await, TaskStatus::Completed);
}

pub async fn claim_takes_only_registered_task_names<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let other = case
        .client
        .spawn::<OtherScriptTask>(case.script(vec![]))
        .await
        .unwrap()
        .task_id;
    assert_eq!(case.run().await, 0, "a worker without the task leaves it");
    assert_eq!(case.status(other).await, TaskStatus::Pending);
    assert_eq!(case.hits("run"), 0);

    let specialist = DurableBuilder::new()
        .queue_name(QUEUE)
        .build_with_store(case.store.clone())
        .await
        .unwrap();
    specialist.register::<OtherScriptTask>().await;
    let ran = specialist
        .work_until_idle(Default::default())
        .await
        .unwrap();
    assert_eq!(ran, 1);
    assert_eq!(case.status(other).await, TaskStatus::Completed);
    assert_eq!(case.poll(other).await.error, None, "no attempt was burnt");
}

pub async fn claim_is_bounded_and_exclusive<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let mut spawned = HashSet::new();
    for _ in 0..5 {
        spawned.insert(case.spawn(vec![]).await);
    }
    let request = |limit| ClaimRequest {
        queue: QUEUE.into(),
        worker_id: "w".into(),
        task_names: vec!["conformance.script".into()],
        limit,
        lease: ms(60_000),
    };
    let first = case.store.claim(request(2)).await.unwrap();
    let second = case.store.claim(request(10)).await.unwrap();
    let third = case.store.claim(request(10)).await.unwrap();
    assert_eq!(first.runs.len(), 2);
    assert_eq!(second.runs.len(), 3);
    assert!(third.runs.is_empty());
    let claimed: HashSet<Uuid> = first
        .runs
        .iter()
        .chain(&second.runs)
        .map(|run| run.run.task_id)
        .collect();
    assert_eq!(claimed, spawned, "every task claimed exactly once");
    for run in first.runs.iter().chain(&second.runs) {
        assert_eq!(run.attempt, 1);
        assert_eq!(run.first_started_at, None);
        assert!(run.checkpoints.is_empty());
        assert_eq!(case.status(run.run.task_id).await, TaskStatus::Running);
    }
}

pub async fn spawn_by_name_checks_name_and_params<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let unknown = case
        .client
        .spawn_by_name("nope", json!({}), Default::default())
        .await;
    assert!(
        matches!(unknown, Err(DurableError::UnknownTask { .. })),
        "{unknown:?}"
    );
    let bad = case
        .client
        .spawn_by_name("conformance.script", json!({"key": 5}), Default::default())
        .await;
    assert!(
        matches!(bad, Err(DurableError::InvalidParams { .. })),
        "{bad:?}"
    );
    let params = serde_json::to_value(case.script(vec![step("a", json!("by-name"))])).unwrap();
    let id = case
        .client
        .spawn_by_name("conformance.script", params, Default::default())
        .await
        .unwrap()
        .task_id;
    case.run().await;
    assert_eq!(case.output(id).await, vec![json!("by-name")]);
}

pub async fn result_of_unknown_task_is_none<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let result = case.client.get_task_result(Uuid::new_v4()).await.unwrap();
    assert_eq!(result, None);
}
