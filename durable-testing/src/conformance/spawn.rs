//! Spawning and claiming.

use std::collections::HashSet;

use durable_core::store::{ClaimRequest, RunCompletion};
use durable_core::{DurableBuilder, DurableError, SpawnOptions, Store, StoreError, TaskStatus};
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

pub async fn spawn_many_creates_every_task_in_one_call<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let scripts: Vec<_> = (0..5)
        .map(|i| case.script(vec![step("a", json!(i))]))
        .collect();
    let spawned = case
        .client
        .spawn_many::<ScriptTask>(scripts, SpawnOptions::default())
        .await
        .unwrap();
    assert_eq!(spawned.len(), 5);
    let ids: HashSet<Uuid> = spawned.iter().map(|s| s.task_id).collect();
    assert_eq!(ids.len(), 5, "five distinct tasks");
    for result in &spawned {
        assert!(result.created);
        assert_eq!(result.attempt, 1);
        assert_eq!(case.status(result.task_id).await, TaskStatus::Pending);
    }
    assert_eq!(case.run().await, 5);
    for (i, result) in spawned.iter().enumerate() {
        assert_eq!(
            case.output(result.task_id).await,
            vec![json!(i)],
            "in order"
        );
    }
    let none = case
        .client
        .spawn_many::<ScriptTask>(vec![], SpawnOptions::default())
        .await
        .unwrap();
    assert!(none.is_empty());
    let keyed = case
        .client
        .spawn_many::<ScriptTask>(
            vec![case.script(vec![])],
            SpawnOptions {
                idempotency_key: Some("k".into()),
                ..Default::default()
            },
        )
        .await;
    assert!(
        matches!(keyed, Err(DurableError::InvalidInput { .. })),
        "{keyed:?}"
    );

    // Through the port: idempotency keys within the batch and against the queue.
    let task = |key: &str| {
        case.client
            .defaults()
            .new_task(
                QUEUE,
                "conformance.script",
                serde_json::to_value(case.script(vec![])).unwrap(),
                SpawnOptions {
                    idempotency_key: Some(key.to_owned()),
                    ..Default::default()
                },
            )
            .unwrap()
    };
    let existing = case.store.spawn(task("old")).await.unwrap();
    let batch = case
        .store
        .spawn_many(vec![task("new"), task("old"), task("new")])
        .await
        .unwrap();
    assert!(batch[0].created);
    assert!(!batch[1].created);
    assert_eq!(batch[1].task_id, existing.task_id);
    assert!(
        !batch[2].created,
        "the first use of a key in the batch wins"
    );
    assert_eq!(batch[2].task_id, batch[0].task_id);

    // All or nothing: a bad task refuses the whole batch.
    let mut bad = task("bad");
    bad.queue = "no spaces allowed".into();
    let refused = case.store.spawn_many(vec![task("atomic"), bad]).await;
    assert!(
        matches!(refused, Err(StoreError::InvalidInput { .. })),
        "{refused:?}"
    );
    let again = case.store.spawn(task("atomic")).await.unwrap();
    assert!(again.created, "nothing of the refused batch was created");
}

pub async fn complete_runs_answers_for_each_run<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let parent = case.spawn(vec![]).await;
    let lost = case.spawn(vec![]).await;
    let cancelled = case.spawn(vec![]).await;
    let mut child = case
        .client
        .defaults()
        .new_task(
            QUEUE,
            "conformance.script",
            serde_json::to_value(case.script(vec![])).unwrap(),
            SpawnOptions::default(),
        )
        .unwrap();
    child.parent_task_id = Some(parent);
    let child = case.store.spawn(child).await.unwrap().task_id;
    let claimed = case
        .store
        .claim(ClaimRequest {
            queue: QUEUE.into(),
            worker_id: "w".into(),
            task_names: vec!["conformance.script".into()],
            limit: 10,
            lease: ms(60_000),
        })
        .await
        .unwrap();
    assert_eq!(claimed.runs.len(), 4);
    let run_of = |task_id: Uuid| {
        claimed
            .runs
            .iter()
            .find(|run| run.run.task_id == task_id)
            .map(|run| run.run.clone())
            .unwrap()
    };
    assert!(case.store.cancel_task(QUEUE, cancelled).await.unwrap());
    let mut stale = run_of(lost);
    stale.run_id = Uuid::new_v4();
    let results = case
        .store
        .complete_runs(vec![
            RunCompletion {
                run: run_of(parent),
                output: json!("parent"),
            },
            RunCompletion {
                run: stale.clone(),
                output: json!("stale"),
            },
            RunCompletion {
                run: run_of(cancelled),
                output: json!("cancelled"),
            },
            RunCompletion {
                run: run_of(child),
                output: json!("child"),
            },
        ])
        .await
        .unwrap();
    assert_eq!(results.len(), 4);
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert!(
        matches!(results[1], Err(StoreError::LeaseLost { .. })),
        "{:?}",
        results[1]
    );
    assert!(
        matches!(results[2], Err(StoreError::Cancelled { .. })),
        "{:?}",
        results[2]
    );
    assert!(
        results[3].is_ok(),
        "a subtask completes too: {:?}",
        results[3]
    );
    let parent_poll = case.poll(parent).await;
    assert_eq!(parent_poll.status, TaskStatus::Completed);
    assert_eq!(parent_poll.output, Some(json!("parent")));
    assert_eq!(
        case.status(lost).await,
        TaskStatus::Running,
        "refused: unchanged"
    );
    assert_eq!(case.status(cancelled).await, TaskStatus::Cancelled);
    assert_eq!(case.poll(child).await.output, Some(json!("child")));
    assert!(
        case.store.complete_runs(vec![]).await.unwrap().is_empty(),
        "an empty batch answers nothing"
    );
}
