//! Subtasks: spawn, join, failure propagation, cascade cancellation.

use durable_core::TaskStatus;
use serde_json::{Value, json};
use uuid::Uuid;

use super::script::{Op, Script};
use super::{Case, StoreBuilder, step};

fn spawn_child(name: &str, script: Script) -> Op {
    Op::Spawn {
        name: name.to_owned(),
        script,
    }
}

fn join(name: &str) -> Op {
    Op::Join {
        name: name.to_owned(),
        catch: true,
    }
}

fn never() -> Op {
    Op::Await {
        event: "never".into(),
        timeout_ms: None,
        catch_timeout: false,
    }
}

fn report(label: &str) -> Op {
    Op::Report {
        label: label.to_owned(),
    }
}

fn child_id(output: &[Value]) -> Uuid {
    serde_json::from_value(output[0].clone()).unwrap()
}

pub async fn join_returns_the_child_output<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let child = case.script(vec![step("c", json!(7))]);
    let parent = case
        .spawn(vec![spawn_child("kid", child), join("kid")])
        .await;
    case.run().await;
    let output = case.output(parent).await;
    assert_eq!(output[1], json!([7]));
    assert_eq!(case.status(child_id(&output)).await, TaskStatus::Completed);
}

pub async fn child_failure_reaches_join<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let child = case.script(vec![Op::Fail {
        on: vec![],
        retryable: false,
    }]);
    let parent = case
        .spawn(vec![spawn_child("kid", child), join("kid")])
        .await;
    case.run().await;
    let output = case.output(parent).await;
    let message = output[1].as_str().unwrap();
    assert!(message.contains("ended Failed"), "{message}");
    assert!(message.contains("scripted permanent failure"), "{message}");
}

pub async fn cancelled_child_reaches_join<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let parent = case
        .spawn(vec![
            spawn_child("kid", case.script(vec![report("kid"), never()])),
            join("kid"),
        ])
        .await;
    case.run().await;
    assert_eq!(case.status(parent).await, TaskStatus::Sleeping);
    let kid = case.reported("kid");
    assert_eq!(case.status(kid).await, TaskStatus::Sleeping);
    assert!(case.client.cancel_task(kid, None).await.unwrap());
    case.run().await;
    let output = case.output(parent).await;
    let message = output[1].as_str().unwrap();
    assert!(message.contains("ended Cancelled"), "{message}");
}

pub async fn spawn_is_checkpointed<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let child = case.script(vec![report("kid"), step("c", json!("child"))]);
    let parent = case
        .spawn(vec![
            spawn_child("kid", child),
            Op::Fail {
                on: vec![1],
                retryable: true,
            },
            join("kid"),
        ])
        .await;
    case.run().await;
    let output = case.output(parent).await;
    assert_eq!(output[1], json!(["child"]));
    assert_eq!(
        case.hits("report:kid"),
        1,
        "the retry spawned no second child"
    );
    assert_eq!(case.hits("step:c"), 1);
}

pub async fn cancelling_a_parent_cancels_its_children<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let grandchild = case.script(vec![report("grandkid"), never()]);
    let child = case.script(vec![
        report("kid"),
        spawn_child("grandkid", grandchild),
        never(),
    ]);
    let parent = case.spawn(vec![spawn_child("kid", child), never()]).await;
    case.run().await;
    let kid = case.reported("kid");
    assert_eq!(case.status(kid).await, TaskStatus::Sleeping);
    assert!(case.client.cancel_task(parent, None).await.unwrap());
    assert_eq!(case.status(parent).await, TaskStatus::Cancelled);
    assert_eq!(case.status(kid).await, TaskStatus::Cancelled);
    let grandkid = case.reported("grandkid");
    assert_eq!(case.status(grandkid).await, TaskStatus::Cancelled);
    assert_eq!(case.run().await, 0);
}

pub async fn failing_parent_cancels_its_children<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let child = case.script(vec![never()]);
    let parent = case
        .spawn(vec![
            spawn_child("kid", child),
            Op::Fail {
                on: vec![],
                retryable: false,
            },
        ])
        .await;
    case.run().await;
    assert_eq!(case.status(parent).await, TaskStatus::Failed);
    let kid = case.reported("spawned:kid");
    assert_eq!(case.status(kid).await, TaskStatus::Cancelled);
}

pub async fn subtask_of_an_ended_parent_is_refused<B: StoreBuilder>(b: &B) {
    use durable_core::{Store, StoreError};
    let case = Case::new(b).await;
    let parent = case.spawn(vec![never()]).await;
    let child_of = |parent| {
        let mut task = case
            .client
            .prepare_spawn::<super::script::ScriptTask>(case.script(vec![]), Default::default())
            .unwrap();
        task.parent_task_id = Some(parent);
        task
    };
    case.store.spawn(child_of(parent)).await.unwrap();
    assert!(case.client.cancel_task(parent, None).await.unwrap());
    let late = case.store.spawn(child_of(parent)).await;
    assert!(matches!(late, Err(StoreError::Conflict { .. })), "{late:?}");
    let orphan = case.store.spawn(child_of(Uuid::new_v4())).await;
    assert!(
        matches!(orphan, Err(StoreError::Conflict { .. })),
        "{orphan:?}"
    );
    assert_eq!(
        case.run().await,
        0,
        "the first child was cancelled with its parent"
    );
}
