//! Many workers on one store.

use durable_core::{TaskStatus, WorkerOptions};
use serde_json::json;

use super::{Case, StoreBuilder, ms, step};

pub async fn many_workers_run_each_step_once<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let mut ids = Vec::new();
    for _ in 0..200 {
        ids.push(
            case.spawn(vec![step("s", json!(1)), step("t", json!(2))])
                .await,
        );
    }
    let mut workers = Vec::new();
    for _ in 0..4 {
        workers.push(
            case.client
                .start_worker(
                    WorkerOptions::default()
                        .concurrency(8)
                        .poll_interval(ms(20)),
                )
                .await,
        );
    }
    case.eventually("every task completes", || async {
        for id in &ids {
            if case.status(*id).await != TaskStatus::Completed {
                return false;
            }
        }
        true
    })
    .await;
    for worker in workers {
        worker.shutdown().await;
    }
    assert_eq!(case.hits("step:s"), 200, "each step body ran exactly once");
    assert_eq!(case.hits("step:t"), 200);
    assert_eq!(case.hits("run"), 200);
}
