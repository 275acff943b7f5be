//! Operations on a real PostgreSQL: result notifications, schedules under several workers, and
//! retention holding a 100,000-task table at a steady size.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use durable_core::{Task, TaskContext, TaskResult, WorkerOptions, async_trait};
use durable_postgres::{Decodes, Driver, Listener, Param};
use serde_json::{Value, json};

use crate::common::{self, TestDriver, client, database, eventually};

struct Echo;

#[async_trait]
impl Task for Echo {
    const NAME: &'static str = "echo";
    type Params = Value;
    type Output = Value;

    async fn run(params: Value, ctx: TaskContext) -> TaskResult<Value> {
        let value = params.clone();
        ctx.step("echo", || async move { Ok(value) }).await
    }
}

/// Only tasks someone waits for notify their end: the completion of any other task sends
/// nothing on the channel.
pub(crate) async fn only_watched_tasks_notify_their_end<D: TestDriver>() {
    let db = database::<D>().await;
    let client = client::<D>(&db, "notify").await;
    client.register::<Echo>().await;
    let driver = client.store().driver().clone();
    let mut listener = driver
        .listen(
            &[durable_postgres_sql::FINISH_CHANNEL],
            Duration::from_secs(10),
        )
        .await
        .unwrap();

    let unwatched = client.spawn::<Echo>(json!(1)).await.unwrap().task_id;
    let watched = client.spawn::<Echo>(json!(2)).await.unwrap().task_id;
    let waiter = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .wait_for_result::<Value>(watched, Duration::from_secs(30))
                .await
        })
    };
    let notify_finish = |task_id| {
        let driver = driver.clone();
        async move {
            common::boolean(
                &driver,
                "SELECT notify_finish AS value FROM durable.tasks WHERE task_id = $1::uuid",
                &[Param::Uuid(Some(task_id))],
            )
            .await
        }
    };
    eventually(
        "the waiter asked for a notification",
        Duration::from_secs(10),
        || notify_finish(watched),
    )
    .await;
    let flag = notify_finish(unwatched).await;
    assert!(!flag);

    assert_eq!(
        client
            .work_until_idle(WorkerOptions::default())
            .await
            .unwrap(),
        2
    );
    assert_eq!(waiter.await.unwrap().unwrap(), json!(2));
    let first = tokio::time::timeout(Duration::from_secs(10), listener.next())
        .await
        .expect("a notification")
        .unwrap();
    assert_eq!(first.channel, durable_postgres_sql::FINISH_CHANNEL);
    assert_eq!(first.payload, watched.to_string());
    // The unwatched task completed in the same batch and sent nothing.
    let next = tokio::time::timeout(Duration::from_millis(500), listener.next()).await;
    assert!(next.is_err(), "no other notification: {next:?}");
}

/// Three workers firing one every-second schedule for a few seconds: one task per tick, every
/// tick in the window fired.
pub(crate) async fn three_workers_fire_each_tick_once<D: TestDriver>() {
    let db = database::<D>().await;
    let client = client::<D>(&db, "cron").await;
    client.register::<Echo>().await;
    client
        .create_schedule::<Echo>("every-second", "* * * * * *", json!("tick"))
        .await
        .unwrap();
    let options = WorkerOptions::default()
        .concurrency(4)
        .schedule_interval(Some(Duration::from_millis(20)));
    let mut workers = Vec::new();
    for i in 0..3 {
        workers.push(
            client
                .start_worker(options.clone().worker_id(format!("w{i}")))
                .await,
        );
    }
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    for worker in workers {
        worker.shutdown().await;
    }
    let rows = common::query(
        client.store().driver(),
        "SELECT headers->>'durable.scheduled_at' AS tick FROM durable.tasks \
         WHERE headers->>'durable.schedule' = 'every-second' ORDER BY 1",
        &[],
    )
    .await;
    let ticks: Vec<String> = rows
        .iter()
        .map(|row| {
            Decodes::<'_, String>::decode(row, "tick")
                .unwrap()
                .expect("a tick")
        })
        .collect();
    let distinct: BTreeSet<&String> = ticks.iter().collect();
    assert_eq!(distinct.len(), ticks.len(), "a tick fired twice: {ticks:?}");
    assert!(ticks.len() >= 3, "ticks fired in 4.5 s: {ticks:?}");
    // Ticks are whole seconds apart (one second unless a loaded machine starved every worker
    // past a tick, which then collapses into the next).
    let times: Vec<chrono::DateTime<chrono::Utc>> =
        ticks.iter().map(|t| t.parse().unwrap()).collect();
    for pair in times.windows(2) {
        let gap = (pair[1] - pair[0]).num_milliseconds();
        assert!(gap >= 1_000 && gap % 1_000 == 0, "{ticks:?}");
    }
    println!("3 workers, 4.5 s: {} ticks fired, each once", ticks.len());
}

const HISTORY: i64 = 100_000;

/// Adds `HISTORY` tasks that finished two hours ago, each with one checkpoint: the history a
/// steady load leaves behind.
async fn add_history<D: Driver>(driver: &D, queue: &str) {
    common::query(
        driver,
        "WITH t AS (
             INSERT INTO durable.tasks (task_id, queue_name, task_name, params, max_attempts,
                                        retry_strategy, cancellation, state, attempt, run_id,
                                        created_at, finished_at, output)
             SELECT durable.uuid_v7(), $1::text, 'echo', jsonb_build_object('n', g), 1,
                    '{\"kind\": \"none\"}', '{}', 'completed', 1, durable.uuid_v7(),
                    now() - interval '3 hours', now() - interval '2 hours', '\"done\"'
               FROM generate_series(1, $2::bigint) g
             RETURNING task_id, run_id)
         INSERT INTO durable.checkpoints (task_id, name, value, run_id, updated_at)
         SELECT task_id, 'echo', '\"done\"', run_id, now() - interval '2 hours' FROM t",
        &[Param::Text(Some(queue)), Param::Int8(Some(HISTORY))],
    )
    .await;
}

async fn size<D: Driver>(driver: &D) -> i64 {
    common::query(driver, "VACUUM durable.tasks, durable.checkpoints", &[]).await;
    common::int8(
        driver,
        "SELECT pg_total_relation_size('durable.tasks') \
                + pg_total_relation_size('durable.checkpoints') AS value",
        &[],
    )
    .await
}

async fn finished<D: Driver>(driver: &D) -> i64 {
    common::int8(
        driver,
        "SELECT count(*) AS value FROM durable.tasks WHERE state = 'completed'",
        &[],
    )
    .await
}

/// A worker with a one-hour retention deletes each new 100,000-task history in bounded
/// batches while it goes on running new tasks, and (with the regular VACUUM that autovacuum
/// does) the tables level off instead of growing by one history per round.
pub(crate) async fn retention_keeps_a_100k_task_table_at_its_steady_size<D: TestDriver>() {
    let _alone = common::one_heavy_case_at_a_time().await;
    let db = database::<D>().await;
    let client = client::<D>(&db, "history").await;
    client.register::<Echo>().await;
    let driver = client.store().driver().clone();
    add_history(&driver, "history").await;
    let steady = size(&driver).await;
    println!(
        "one history of {HISTORY} finished tasks: {} kB",
        steady / 1024
    );

    let worker = client
        .start_worker(
            WorkerOptions::default()
                .concurrency(8)
                .retention(Duration::from_secs(3600))
                .retention_interval(Duration::from_millis(100))
                .retention_batch_size(1_000),
        )
        .await;
    let mut sizes = Vec::new();
    for round in 1..=3 {
        let started = Instant::now();
        let live = client
            .spawn_many::<Echo>((0..200).map(|i| json!(i)).collect(), Default::default())
            .await
            .unwrap();
        eventually("the history is deleted", Duration::from_secs(180), || {
            let driver = driver.clone();
            async move { finished(&driver).await <= 200 * round }
        })
        .await;
        let purge_time = started.elapsed();
        for task in &live {
            let result = client.get_task_result(task.task_id).await.unwrap();
            assert!(result.is_some(), "recent tasks are kept");
        }
        eventually("the live tasks ran", Duration::from_secs(60), || {
            let driver = driver.clone();
            async move { finished(&driver).await >= 200 * round }
        })
        .await;
        let orphans = common::int8(
            &driver,
            "SELECT count(*) AS value FROM durable.checkpoints c \
             WHERE NOT EXISTS (SELECT 1 FROM durable.tasks t WHERE t.task_id = c.task_id)",
            &[],
        )
        .await;
        assert_eq!(orphans, 0);
        add_history(&driver, "history").await;
        let now = size(&driver).await;
        println!(
            "round {round}: history deleted in {:.1} s; after the next history: {} kB",
            purge_time.as_secs_f64(),
            now / 1024
        );
        sizes.push(now);
    }
    worker.shutdown().await;
    // Without retention the tables would grow by one history per round (4 histories by now).
    // With it they level off at the live history plus the space the last deleted one freed,
    // which the next inserts reuse (give or take what VACUUM could not free at once): from
    // round 1 to round 3 they grow by less than half a history, not by two.
    let (first, third) = (sizes[0], sizes[2]);
    assert!(
        third <= first + steady / 2,
        "tables still growing: {sizes:?} bytes after rounds 1-3, one history {steady}"
    );
    assert!(
        third * 10 <= steady * 25,
        "tables at {third} bytes for one history of {steady}: {sizes:?}"
    );
}
