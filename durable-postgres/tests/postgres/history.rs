//! The runs of a task as PostgreSQL keeps them: recorded by a trigger when a run ends otherwise
//! than by completing, capped at the latest 100 per task, and deleted with their task.

use std::time::Duration;

use durable_core::Store;
use durable_core::inspect::MAX_RUNS;
use durable_postgres::Param;

use crate::common::{NAME, TestDriver, database, int8, new_task, query, store};

/// 130 suspensions of one task: its last 100 runs are kept, its first 30 are gone; the
/// inspection shows them oldest first; once the task is purged, none is left.
pub(crate) async fn runs_are_capped_and_go_with_their_task<D: TestDriver>() {
    let db = database::<D>().await;
    let store = store::<D>(&db).await;
    let queue = "history";
    store.ensure_queue(queue).await.unwrap();
    let task = store.spawn(new_task(queue, NAME)).await.unwrap();
    let id = [Param::Uuid(Some(task.task_id))];
    for n in 0..130 {
        query(
            store.driver(),
            &format!(
                "UPDATE durable.tasks SET state = 'running', claimed_by = 'w{n}', \
                 claimed_at = clock_timestamp() WHERE task_id = $1::uuid"
            ),
            &id,
        )
        .await;
        query(
            store.driver(),
            "UPDATE durable.tasks SET state = 'sleeping', available_at = now() + interval '1 day' \
             WHERE task_id = $1::uuid",
            &id,
        )
        .await;
    }
    let kept = int8(
        store.driver(),
        "SELECT count(*) AS value FROM durable.task_runs WHERE task_id = $1::uuid",
        &id,
    )
    .await;
    assert_eq!(kept, MAX_RUNS as i64);
    let detail = store.inspect_task(task.task_id).await.unwrap().unwrap();
    let workers: Vec<_> = detail
        .runs
        .iter()
        .map(|r| r.worker_id.clone().unwrap_or_default())
        .collect();
    assert_eq!(workers.len(), MAX_RUNS);
    assert_eq!(workers.first().map(String::as_str), Some("w30"));
    assert_eq!(workers.last().map(String::as_str), Some("w129"));
    assert!(detail.runs.iter().all(|r| {
        r.waiting_for
            .as_deref()
            .is_some_and(|w| w.starts_with("until "))
    }));

    // Finished long ago: retention takes the task and its runs.
    store.cancel_task(queue, task.task_id).await.unwrap();
    query(
        store.driver(),
        "UPDATE durable.tasks SET finished_at = now() - interval '2 days' WHERE task_id = $1::uuid",
        &id,
    )
    .await;
    let purged = store
        .purge_finished(queue, Duration::from_secs(86_400), 100)
        .await
        .unwrap();
    assert_eq!(purged.tasks, 1);
    let left = int8(
        store.driver(),
        "SELECT count(*) AS value FROM durable.task_runs WHERE task_id = $1::uuid",
        &id,
    )
    .await;
    assert_eq!(left, 0);
}
