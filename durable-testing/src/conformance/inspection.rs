//! Seeing what happened: the runs of a task, lists of tasks with filters and stable pages,
//! everything about one task, and patch gates that keep old tasks on their old path.

use std::collections::HashSet;

use durable_core::inspect::{RunOutcome, TaskQuery};
use durable_core::{
    SpawnOptions, Task, TaskContext, TaskResult, TaskStatus, WorkerOptions, async_trait,
};
use serde_json::{Value, json};

use super::script::Op;
use super::{Case, QUEUE, StoreBuilder, ms, step};

/// A task that sleeps, fails once, then completes: three runs, each ended its own way, every
/// one named with its worker, its attempt, its times, and its error or what it waited for.
pub async fn history_records_every_run_of_a_task<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let id = case
        .spawn(vec![
            step("a", json!(1)),
            Op::Sleep {
                name: "nap".into(),
                ms: 50,
            },
            Op::Fail {
                on: vec![1],
                retryable: true,
            },
            step("b", json!(2)),
        ])
        .await;
    let worker = WorkerOptions::default().worker_id("inspector-1");
    case.client.work_until_idle(worker.clone()).await.unwrap();
    case.advance(ms(60)).await;
    case.client.work_until_idle(worker.clone()).await.unwrap();
    case.client.work_until_idle(worker).await.unwrap();
    assert_eq!(case.status(id).await, TaskStatus::Completed);

    let detail = case
        .client
        .inspect_task(id)
        .await
        .unwrap()
        .expect("the task");
    let outcomes: Vec<RunOutcome> = detail.runs.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        vec![
            RunOutcome::Suspended,
            RunOutcome::Retried,
            RunOutcome::Completed
        ]
    );
    let attempts: Vec<u32> = detail.runs.iter().map(|r| r.attempt).collect();
    assert_eq!(attempts, vec![1, 1, 2]);
    for run in &detail.runs {
        assert_eq!(run.worker_id.as_deref(), Some("inspector-1"), "{run:?}");
        let (claimed, ended) = (run.claimed_at.unwrap(), run.ended_at.unwrap());
        assert!(claimed <= ended, "{run:?}");
    }
    assert_eq!(
        detail.runs[0].run_id, detail.runs[1].run_id,
        "a resume keeps its run"
    );
    assert_ne!(
        detail.runs[1].run_id, detail.runs[2].run_id,
        "a retry is a new run"
    );
    let waiting = detail.runs[0].waiting_for.as_deref().unwrap_or_default();
    assert!(waiting.starts_with("until "), "{waiting}");
    assert!(detail.runs[0].error.is_none());
    let error = detail.runs[1]
        .error
        .as_ref()
        .expect("the retried run's error");
    assert!(error.message.contains("scripted failure"), "{error:?}");
    assert_eq!(detail.summary.state, TaskStatus::Completed);
    assert_eq!(detail.output, Some(json!([1, 2])));
}

/// Tasks listed by queue, state, name, parent and idempotency key, newest first; pages of two
/// cover every task exactly once, and tasks spawned between two pages do not shift them.
pub async fn task_lists_filter_and_page_stably<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let mut spawned = Vec::new();
    for i in 0..5 {
        spawned.push(case.spawn(vec![step("s", json!(i))]).await);
    }
    let keyed = case
        .spawn_with(
            vec![step("s", json!("k"))],
            SpawnOptions {
                idempotency_key: Some(format!("key-{}", case.key)),
                ..Default::default()
            },
        )
        .await;
    spawned.push(keyed);
    case.client
        .cancel_task(spawned[0], None)
        .await
        .expect("cancel");

    let query = |limit: usize| TaskQuery {
        queue: Some(QUEUE.into()),
        limit,
        ..TaskQuery::default()
    };
    let all = case.client.list_tasks(&query(100)).await.unwrap();
    let ids: Vec<_> = all.tasks.iter().map(|t| t.task_id).collect();
    let mut expected = spawned.clone();
    expected.sort();
    expected.reverse();
    assert_eq!(ids, expected, "newest first");
    assert_eq!(all.next, None);

    // Pages of two, with new tasks spawned between pages.
    let mut seen = Vec::new();
    let mut page_query = query(2);
    for round in 0.. {
        let page = case.client.list_tasks(&page_query).await.unwrap();
        assert!(page.tasks.len() <= 2);
        seen.extend(page.tasks.iter().map(|t| t.task_id));
        case.spawn(vec![step("late", json!(round))]).await;
        match page.next {
            Some(next) => page_query.after = Some(next),
            None => break,
        }
        assert!(round < 10, "pages never end");
    }
    assert_eq!(
        seen, expected,
        "every task once, in order, whatever was spawned meanwhile"
    );

    let cancelled = case
        .client
        .list_tasks(&TaskQuery {
            states: vec![TaskStatus::Cancelled],
            ..query(100)
        })
        .await
        .unwrap();
    assert_eq!(
        cancelled
            .tasks
            .iter()
            .map(|t| t.task_id)
            .collect::<Vec<_>>(),
        vec![spawned[0]]
    );
    let by_key = case
        .client
        .list_tasks(&TaskQuery {
            idempotency_key: Some(format!("key-{}", case.key)),
            ..query(100)
        })
        .await
        .unwrap();
    assert_eq!(by_key.tasks.len(), 1);
    assert_eq!(by_key.tasks[0].task_id, keyed);
    assert_eq!(
        by_key.tasks[0].idempotency_key.as_deref(),
        Some(format!("key-{}", case.key).as_str())
    );
    let by_name = case
        .client
        .list_tasks(&TaskQuery {
            task_name: Some("no such task".into()),
            ..query(100)
        })
        .await
        .unwrap();
    assert!(by_name.tasks.is_empty());
    let young = case
        .client
        .list_tasks(&TaskQuery {
            older_than: Some(std::time::Duration::from_secs(3600)),
            ..query(100)
        })
        .await
        .unwrap();
    assert!(young.tasks.is_empty(), "nothing is an hour old");
}

/// A parent awaiting an event after spawning a subtask: its checkpoints (with their sizes), its
/// wait, and its subtask (naming its parent) are all told; a subtask lists under its parent.
pub async fn inspection_shows_checkpoints_waits_and_subtasks<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let parent = case
        .spawn(vec![
            step("first", json!("x".repeat(100))),
            Op::Spawn {
                name: "child".into(),
                script: case.script(vec![Op::Await {
                    event: format!("never-{}", case.key),
                    timeout_ms: None,
                    catch_timeout: false,
                }]),
            },
            Op::Await {
                event: format!("go-{}", case.key),
                timeout_ms: None,
                catch_timeout: false,
            },
        ])
        .await;
    case.run().await;
    let detail = case
        .client
        .inspect_task(parent)
        .await
        .unwrap()
        .expect("the parent");
    assert_eq!(detail.summary.state, TaskStatus::Sleeping);
    let names: Vec<&str> = detail.checkpoints.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["first", "$spawn:child"], "in the order written");
    assert_eq!(detail.checkpoints[0].size_bytes, 102);
    assert!(
        detail
            .checkpoints
            .iter()
            .all(|c| c.run_id == detail.runs[0].run_id)
    );
    assert_eq!(detail.waits.len(), 1);
    assert_eq!(detail.waits[0].event_name, format!("go-{}", case.key));
    assert_eq!(detail.waits[0].timeout_at, None);
    let waiting = detail.runs[0].waiting_for.clone().unwrap_or_default();
    assert_eq!(waiting, format!("event go-{}", case.key));
    assert_eq!(detail.subtasks.len(), 1);
    let child = &detail.subtasks[0];
    assert_eq!(child.parent_task_id, Some(parent));
    let children = case
        .client
        .list_tasks(&TaskQuery {
            parent_task_id: Some(parent),
            ..TaskQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        children.tasks.iter().map(|t| t.task_id).collect::<Vec<_>>(),
        vec![child.task_id]
    );
    assert!(
        case.client
            .inspect_task(uuid::Uuid::now_v7())
            .await
            .unwrap()
            .is_none()
    );
}

/// The same task name, first registered without a patch gate, then with one (a deploy): a
/// task that went past the gate's place under the old code takes the old path, now and after
/// a retry; a task that reaches the gate fresh takes the new one, now and after a retry. The
/// old tasks are listed by the gate's change id until they end.
pub async fn patch_gates_keep_old_tasks_on_the_old_path<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let gate = format!("gate-{}", case.key);
    case.client.register::<Billing<false>>().await;
    let old = case
        .client
        .spawn::<Billing<false>>(gate.clone())
        .await
        .unwrap()
        .task_id;
    case.run().await; // `charge`, then asleep
    assert_eq!(case.status(old).await, TaskStatus::Sleeping);

    // The deploy: the gate appears before `charge`.
    case.client.register::<Billing<true>>().await;
    let new = case
        .client
        .spawn::<Billing<true>>(gate.clone())
        .await
        .unwrap()
        .task_id;
    case.run().await; // the new task: the gate, `charge-v2`, then asleep
    assert_eq!(case.status(new).await, TaskStatus::Sleeping);
    case.advance(ms(60)).await;
    // Both wake, decide at the gate, fail their first attempt, are retried at once, and sleep
    // again before they end: the old one is on the gate's list, the new one is not.
    case.run().await;
    let listed = || async {
        case.client
            .list_tasks(&TaskQuery {
                old_path_of_patch: Some(gate.clone()),
                ..TaskQuery::default()
            })
            .await
            .unwrap()
            .tasks
            .into_iter()
            .map(|t| t.task_id)
            .collect::<HashSet<_>>()
    };
    assert_eq!(listed().await, HashSet::from([old]));
    case.advance(ms(1100)).await;
    case.run().await;
    assert_eq!(case.output(old).await, vec![json!("old path"), json!(2)]);
    assert_eq!(case.output(new).await, vec![json!("new path"), json!(2)]);
    for (id, path) in [(old, false), (new, true)] {
        let detail = case.client.inspect_task(id).await.unwrap().unwrap();
        let decision = detail
            .checkpoints
            .iter()
            .find(|c| c.name == format!("$patch:{gate}"))
            .map(|c| c.value.clone());
        assert_eq!(decision, Some(json!(path)));
        assert_eq!(detail.summary.attempt, 2, "decided again after a retry");
    }
    assert!(
        listed().await.is_empty(),
        "no old task left: the gate can go"
    );
}

/// A billing task. `GATED` is the code after the deploy: a patch gate before `charge`.
/// Params: the gate's change id. It sleeps 50 ms after charging, fails its first attempt, and
/// sleeps a second before it ends (long enough for a real clock not to end it under a test's
/// feet).
struct Billing<const GATED: bool>;

#[async_trait]
impl<const GATED: bool> Task for Billing<GATED> {
    const NAME: &'static str = "conformance.billing";
    type Params = String;
    type Output = Vec<Value>;

    async fn run(change: String, ctx: TaskContext) -> TaskResult<Vec<Value>> {
        let new_path = GATED && ctx.patched(&change).await?;
        let charged: Value = if new_path {
            ctx.step("charge-v2", || async { Ok(json!("new path")) })
                .await?
        } else {
            ctx.step("charge", || async { Ok(json!("old path")) })
                .await?
        };
        ctx.sleep_for("settle", ms(50)).await?;
        if ctx.attempt() == 1 {
            return Err(durable_core::TaskError::failed("first attempt fails"));
        }
        let total: Value = ctx.step("total", || async { Ok(json!(2)) }).await?;
        ctx.sleep_for("confirm", ms(1000)).await?;
        Ok(vec![charged, total])
    }
}
