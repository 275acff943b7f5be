//! Durable sleep.

use durable_core::{TaskStatus, WorkerOptions};
use serde_json::json;

use super::script::Op;
use super::{Case, StoreBuilder, ms, step};

fn sleep(name: &str, ms: u64) -> Op {
    Op::Sleep {
        name: name.to_owned(),
        ms,
    }
}

pub async fn sleep_suspends_and_resumes_after_the_duration<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let id = case
        .spawn(vec![
            step("a", json!(1)),
            sleep("nap", 1500),
            step("b", json!(2)),
        ])
        .await;
    assert_eq!(case.run().await, 1);
    assert_eq!(case.status(id).await, TaskStatus::Sleeping);
    case.advance(ms(1000)).await;
    assert_eq!(case.run().await, 0, "a 1.5 s sleep is not cut to 1 s");
    assert_eq!(case.status(id).await, TaskStatus::Sleeping);
    case.advance(ms(600)).await;
    assert_eq!(case.run().await, 1);
    assert_eq!(case.output(id).await, vec![json!(1), json!(2)]);
    assert_eq!(case.hits("step:a"), 1);
    assert_eq!(case.hits("woke:nap"), 1);
    assert_eq!(case.hits("run"), 2);
}

pub async fn sleep_frees_the_worker_slot<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let sleeper = case.spawn(vec![sleep("long", 3_600_000)]).await;
    let other = case.spawn(vec![step("x", json!(1))]).await;
    let ran = case
        .client
        .work_until_idle(WorkerOptions::default().concurrency(1))
        .await
        .unwrap();
    assert_eq!(ran, 2);
    assert_eq!(case.status(sleeper).await, TaskStatus::Sleeping);
    assert_eq!(case.status(other).await, TaskStatus::Completed);
}

pub async fn running_worker_wakes_a_sleeping_task_when_due<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let worker = case
        .client
        .start_worker(
            WorkerOptions::default()
                .concurrency(2)
                .poll_interval(ms(20)),
        )
        .await;
    let id = case
        .spawn(vec![sleep("nap", 300), step("b", json!(2))])
        .await;
    case.eventually("the task sleeps", || async {
        case.status(id).await == TaskStatus::Sleeping
    })
    .await;
    case.advance(ms(400)).await;
    case.eventually("the task completes", || async {
        case.status(id).await == TaskStatus::Completed
    })
    .await;
    worker.shutdown().await;
    assert_eq!(case.output(id).await, vec![json!(2)]);
}
