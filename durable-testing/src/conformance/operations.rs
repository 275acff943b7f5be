//! Operations: retention, schedules, waiting for a result.

use std::time::Duration;

use durable_core::store::ScheduleAdvance;
use durable_core::{DurableError, SpawnOptions, Store, StoreError, Task, TaskStatus};
use serde_json::{Value, json};

use super::script::{Op, ScriptTask};
use super::{Case, QUEUE, StoreBuilder, ms, step};

fn await_event(event: &str) -> Op {
    Op::Await {
        event: event.to_owned(),
        timeout_ms: None,
        catch_timeout: false,
    }
}

pub async fn retention_deletes_old_finished_tasks_only<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let mut old = Vec::new();
    for i in 0..3 {
        old.push(case.spawn(vec![step("s", json!(i))]).await);
    }
    let failed = case
        .spawn_with(
            vec![Op::Fail {
                on: vec![],
                retryable: false,
            }],
            SpawnOptions {
                max_attempts: Some(1),
                ..SpawnOptions::default()
            },
        )
        .await;
    let asleep = case.spawn(vec![await_event("later")]).await;
    case.run().await;
    case.client
        .emit_event("old-event", &json!(1), None)
        .await
        .unwrap();
    assert_eq!(case.status(failed).await, TaskStatus::Failed);
    assert_eq!(case.status(asleep).await, TaskStatus::Sleeping);
    case.advance(ms(400)).await;
    let fresh = case.spawn(vec![step("s", json!("fresh"))]).await;
    case.run().await;
    case.client
        .emit_event("fresh-event", &json!(2), None)
        .await
        .unwrap();

    // Batches of two: the old tasks go two by two, and `more` says when to go on.
    let first = case.store.purge_finished(QUEUE, ms(300), 2).await.unwrap();
    assert_eq!((first.tasks, first.more), (2, true), "{first:?}");
    let rest = case.client.purge_finished(ms(300), None).await.unwrap();
    assert_eq!(rest.tasks, 2, "{rest:?}");
    assert_eq!(first.events + rest.events, 1, "only the old event goes");
    assert!(!rest.more);
    for id in old.iter().chain([&failed]) {
        assert!(
            case.client.get_task_result(*id).await.unwrap().is_none(),
            "old finished task {id} deleted"
        );
    }
    assert_eq!(
        case.status(asleep).await,
        TaskStatus::Sleeping,
        "running work stays"
    );
    assert_eq!(
        case.output(fresh).await,
        vec![json!("fresh")],
        "recent tasks stay"
    );
    // The old event is gone: a new await no longer sees it; the fresh one stays.
    assert!(
        case.client
            .emit_event("old-event", &json!(3), None)
            .await
            .unwrap()
    );
    assert!(
        !case
            .client
            .emit_event("fresh-event", &json!(4), None)
            .await
            .unwrap()
    );
    let again = case.client.purge_finished(ms(300), None).await.unwrap();
    assert_eq!(
        (again.tasks, again.more),
        (0, false),
        "nothing left to delete"
    );
}

pub async fn retention_deletes_task_trees_from_the_root_down<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    // A parent whose child ended while the parent still waits: the child stays, so the
    // parent's join still finds its outcome after a purge.
    let child = case.script(vec![step("c", json!("child"))]);
    let parent = case
        .spawn(vec![
            Op::Spawn {
                name: "kid".into(),
                script: child,
            },
            await_event("go"),
            Op::Join {
                name: "kid".into(),
                catch: false,
            },
        ])
        .await;
    case.run().await;
    assert_eq!(case.status(parent).await, TaskStatus::Sleeping);
    case.advance(ms(300)).await;
    let kept = case.client.purge_finished(ms(200), None).await.unwrap();
    assert_eq!(kept.tasks, 0, "a child of a live parent stays: {kept:?}");
    case.client
        .emit_event("go", &json!(null), None)
        .await
        .unwrap();
    case.run().await;
    let output = case.output(parent).await;
    assert_eq!(
        output[2],
        json!(["child"]),
        "the join saw the child's outcome"
    );
    let child_id: uuid::Uuid = serde_json::from_value(output[0].clone()).unwrap();

    // Both ended: the parent goes first, the child with the next batch.
    case.advance(ms(300)).await;
    let roots = case
        .store
        .purge_finished(QUEUE, ms(200), 100)
        .await
        .unwrap();
    assert_eq!(roots.tasks, 1, "{roots:?}");
    assert!(case.client.get_task_result(parent).await.unwrap().is_none());
    assert!(
        case.client
            .get_task_result(child_id)
            .await
            .unwrap()
            .is_some()
    );
    let children = case
        .store
        .purge_finished(QUEUE, ms(200), 100)
        .await
        .unwrap();
    assert_eq!(children.tasks, 1, "{children:?}");
    assert!(
        children.events >= 1,
        "the child's outcome event goes with it"
    );
    assert!(
        case.client
            .get_task_result(child_id)
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn schedules_can_be_created_listed_updated_and_deleted<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let script = case.script(vec![step("s", json!(1))]);
    assert!(
        case.client
            .create_schedule::<ScriptTask>("nightly", "0 3 * * *", script.clone())
            .await
            .unwrap()
    );
    assert!(
        case.client
            .create_schedule::<ScriptTask>("hourly", "@hourly", script.clone())
            .await
            .unwrap()
    );
    let listed = case.client.list_schedules(None).await.unwrap();
    let names: Vec<&str> = listed.iter().map(|s| s.spec.name.as_str()).collect();
    assert_eq!(names, ["hourly", "nightly"]);
    assert_eq!(listed[1].spec.cron, "0 3 * * *");
    assert_eq!(listed[1].spec.task_name, ScriptTask::NAME);
    assert_eq!(
        listed[1].next_run_at, None,
        "armed by a worker, not at creation"
    );

    // Arm, then update: an update re-arms from the new cron.
    let tick = case.client.run_due_schedules().await.unwrap();
    assert_eq!((tick.armed, tick.fired), (2, 0));
    assert!(
        case.client.list_schedules(None).await.unwrap()[1]
            .next_run_at
            .is_some()
    );
    assert!(
        !case
            .client
            .create_schedule::<ScriptTask>("nightly", "30 4 * * *", script.clone())
            .await
            .unwrap(),
        "an existing schedule is updated"
    );
    let nightly = case.client.list_schedules(None).await.unwrap()[1].clone();
    assert_eq!(nightly.spec.cron, "30 4 * * *");
    assert_eq!(nightly.next_run_at, None);
    assert_eq!(case.client.list_all_schedules().await.unwrap().len(), 2);

    assert!(case.client.delete_schedule("nightly", None).await.unwrap());
    assert!(!case.client.delete_schedule("nightly", None).await.unwrap());
    assert_eq!(case.client.list_schedules(None).await.unwrap().len(), 1);

    for (cron, why) in [
        ("61 * * * *", "minute"),
        ("* * *", "fields"),
        ("0 0 30 2 *", "no time"),
    ] {
        let error = case
            .client
            .create_schedule::<ScriptTask>("bad", cron, script.clone())
            .await
            .unwrap_err();
        assert!(
            matches!(error, DurableError::InvalidInput { .. }) && error.to_string().contains(why),
            "{cron}: {error}"
        );
    }
    let keyed = SpawnOptions {
        idempotency_key: Some("k".into()),
        ..SpawnOptions::default()
    };
    assert!(
        case.client
            .create_schedule_with_options::<ScriptTask>("bad", "@daily", script, keyed)
            .await
            .is_err()
    );
    assert_eq!(case.client.list_schedules(None).await.unwrap().len(), 1);
}

pub async fn schedules_fire_once_per_tick<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let script = case.script(vec![step("s", json!("tick"))]);
    case.client
        .create_schedule::<ScriptTask>("every-second", "* * * * * *", script)
        .await
        .unwrap();
    let armed = case.client.run_due_schedules().await.unwrap();
    assert_eq!((armed.armed, armed.fired), (1, 0));
    let tick = case.client.list_schedules(None).await.unwrap()[0]
        .next_run_at
        .unwrap();
    // Two workers racing for one tick: one spawn.
    case.advance(ms(1_100)).await;
    let (a, b2) = tokio::join!(
        case.client.run_due_schedules(),
        case.client.run_due_schedules()
    );
    assert_eq!(a.unwrap().fired + b2.unwrap().fired, 1);
    // A stale worker that saw the same tick cannot fire it again.
    let stale = case
        .store
        .advance_schedule(QUEUE, "every-second", Some(tick), None, true)
        .await
        .unwrap();
    assert_eq!(stale, ScheduleAdvance::Stale);
    let record = case.client.list_schedules(None).await.unwrap()[0].clone();
    assert_eq!(record.last_run_at, Some(tick));
    let task = record.last_task_id.unwrap();
    assert!(record.next_run_at.unwrap() > tick);
    case.run().await;
    assert_eq!(case.output(task).await, vec![json!("tick")]);

    // Missed ticks collapse into one spawn.
    case.advance(ms(3_200)).await;
    let late = case.client.run_due_schedules().await.unwrap();
    assert_eq!(late.fired, 1);
    assert!(late.next_due_at.unwrap() > late.now);
    let record = case.client.list_schedules(None).await.unwrap()[0].clone();
    assert!(record.next_run_at.unwrap() > late.now);
    assert_ne!(record.last_task_id, Some(task));
}

pub async fn wait_for_result_returns_how_the_task_ended<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let id = case.spawn(vec![await_event("go")]).await;
    case.run().await;
    let client = case.client.clone();
    let waiter = tokio::spawn(async move {
        client
            .wait_for_result::<Vec<Value>>(id, Duration::from_secs(20))
            .await
    });
    // Still sleeping: a short wait times out.
    let error = case
        .client
        .wait_for_result::<Vec<Value>>(id, ms(50))
        .await
        .unwrap_err();
    assert!(
        matches!(error, DurableError::WaitTimedOut { .. }),
        "{error}"
    );
    case.client
        .emit_event("go", &json!("went"), None)
        .await
        .unwrap();
    case.run().await;
    assert_eq!(waiter.await.unwrap().unwrap(), vec![json!("went")]);
    // Already ended: returns at once.
    assert_eq!(
        case.client
            .wait_for_result::<Vec<Value>>(id, ms(1))
            .await
            .unwrap(),
        vec![json!("went")]
    );

    let failing = case
        .spawn_with(
            vec![Op::Fail {
                on: vec![],
                retryable: false,
            }],
            SpawnOptions {
                max_attempts: Some(1),
                ..SpawnOptions::default()
            },
        )
        .await;
    case.run().await;
    let error = case
        .client
        .wait_for_result::<Value>(failing, ms(100))
        .await
        .unwrap_err();
    assert!(
        matches!(error, DurableError::TaskFailed { error: Some(_), .. }),
        "{error}"
    );

    let cancelled = case.spawn(vec![await_event("never")]).await;
    let client = case.client.clone();
    let waiter = tokio::spawn(async move {
        client
            .wait_for_result::<Value>(cancelled, Duration::from_secs(20))
            .await
    });
    tokio::time::sleep(ms(20)).await;
    case.client.cancel_task(cancelled, None).await.unwrap();
    let error = waiter.await.unwrap().unwrap_err();
    assert!(
        matches!(error, DurableError::TaskCancelled { .. }),
        "{error}"
    );

    let error = case
        .client
        .wait_for_result::<Value>(uuid::Uuid::now_v7(), ms(100))
        .await
        .unwrap_err();
    assert!(
        matches!(error, DurableError::Store(StoreError::NotFound { .. })),
        "{error}"
    );
    // The wrong type: a clear error, not a panic.
    let error = case
        .client
        .wait_for_result::<u64>(id, ms(100))
        .await
        .unwrap_err();
    assert!(
        matches!(error, DurableError::Serialization { .. }),
        "{error}"
    );
}

pub async fn queue_depth_counts_unfinished_tasks_by_state<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let asleep = case.spawn(vec![await_event("never")]).await;
    let done = case.spawn(vec![step("s", json!(1))]).await;
    case.run().await;
    assert_eq!(case.status(asleep).await, TaskStatus::Sleeping);
    assert_eq!(case.status(done).await, TaskStatus::Completed);
    for i in 0..2 {
        case.spawn(vec![step("s", json!(i))]).await;
    }
    let depth = case.store.queue_depth(QUEUE).await.unwrap();
    assert_eq!(
        (depth.pending, depth.running, depth.sleeping),
        (2, 0, 1),
        "{depth:?}"
    );
    let other = case.store.queue_depth("elsewhere").await.unwrap();
    assert_eq!(other, durable_core::store::QueueDepth::default());
}
