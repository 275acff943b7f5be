//! The load scenarios: PostgreSQL's own one-row INSERT commit rate (the reference), the
//! burn-down of pre-inserted no-op tasks by worker processes, and the long run that watches a
//! worker's memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use durable_core::{SpawnOptions, WorkerOptions};
use durable_testing::MemoryStore;

use crate::backends::{Maker, MemoryMaker, NativeMaker, queue};
use crate::procs::{WorkerProcess, WorkerSpec};
use crate::report::Measurement;
use crate::server::{Pg, connect, poll_until};
use crate::tasks::{Noop, noop_runs};

/// The concurrency of each worker in the burn-down and the long run.
pub(crate) const CONCURRENCY: usize = 64;
/// The pool of each worker process.
pub(crate) const WORKER_POOL: usize = 8;
/// The most one-row INSERTs one reference measurement makes.
const MAX_INSERTS: u64 = 50_000_000;

/// One-row INSERT transactions per second on `url` from `clients` connections during
/// `duration` (autocommit, prepared statement): the physical limit our figures compare to.
pub(crate) async fn insert_rate(
    url: &str,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    let admin = connect(url).await?;
    admin
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS bench_insert (
                 id bigserial PRIMARY KEY, client integer NOT NULL, n bigint NOT NULL,
                 at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let mut connections = Vec::with_capacity(clients);
    for _ in 0..clients {
        let client = connect(url).await?;
        let statement = client
            .prepare("INSERT INTO bench_insert (client, n) VALUES ($1, $2)")
            .await?;
        connections.push((client, statement));
    }
    let total = Arc::new(AtomicU64::new(0));
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let deadline = start + duration;
    let mut handles = Vec::with_capacity(clients);
    for (index, (client, statement)) in connections.into_iter().enumerate() {
        let total = Arc::clone(&total);
        let index = i32::try_from(index).unwrap_or(i32::MAX);
        handles.push(tokio::spawn(async move {
            tokio::time::sleep_until(start).await;
            let mut n: i64 = 0;
            while tokio::time::Instant::now() < deadline
                && total.load(Ordering::Relaxed) < MAX_INSERTS
            {
                client.execute(&statement, &[&index, &n]).await?;
                n += 1;
                total.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, tokio_postgres::Error>(())
        }));
    }
    for handle in handles {
        handle.await??;
    }
    let elapsed = tokio::time::Instant::now().saturating_duration_since(start);
    Ok(total.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64())
}

/// The result of one burn-down.
pub(crate) struct BurnDown {
    pub(crate) tasks_per_second: f64,
    pub(crate) db_cpu_per_1000: Option<f64>,
    pub(crate) worker_cpu_per_1000: Option<f64>,
}

/// Spawns `tasks` no-op tasks into `queue` in batches of 1,000.
async fn fill<M: Maker>(maker: &M, queue: &str, tasks: usize) -> anyhow::Result<()> {
    let client = maker.client(queue, false).await?;
    let mut left = tasks;
    while left > 0 {
        let n = left.min(1000);
        client
            .spawn_many::<Noop>(vec![(); n], SpawnOptions::default())
            .await?;
        left -= n;
    }
    Ok(())
}

/// The in-memory burn-down: `workers` workers of concurrency 64 in this process.
pub(crate) async fn burn_down_memory(tasks: usize, workers: usize) -> anyhow::Result<BurnDown> {
    let maker = MemoryMaker(MemoryStore::with_system_clock());
    let queue = queue("burn");
    fill(&maker, &queue, tasks).await?;
    let mut clients = Vec::new();
    for _ in 0..workers {
        let client = maker.client(&queue, true).await?;
        client.register::<Noop>().await;
        clients.push(client);
    }
    let before = noop_runs();
    let started = Instant::now();
    let mut running = Vec::new();
    for client in &clients {
        running.push(
            client
                .start_worker(WorkerOptions::default().concurrency(CONCURRENCY))
                .await,
        );
    }
    let limit = Duration::from_secs(60 + tasks as u64 / 1000);
    poll_until(
        "every task ran",
        Duration::from_millis(1),
        limit,
        || async { Ok(noop_runs() - before >= tasks as u64) },
    )
    .await?;
    for worker in running {
        worker.shutdown().await;
    }
    Ok(BurnDown {
        tasks_per_second: tasks as f64 / started.elapsed().as_secs_f64(),
        db_cpu_per_1000: None,
        worker_cpu_per_1000: None,
    })
}

/// Whether the queue still has tasks that are not completed.
async fn unfinished(client: &tokio_postgres::Client, queue: &str) -> anyhow::Result<bool> {
    // Each EXISTS matches one partial index exactly: the probe stays cheap as the table grows.
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM durable.tasks WHERE queue_name = $1
                             AND state IN ('pending', 'sleeping'))
                 OR EXISTS (SELECT 1 FROM durable.tasks WHERE queue_name = $1
                             AND state = 'running')",
            &[&queue],
        )
        .await?;
    Ok(row.get(0))
}

/// [`burn_down_pg`] `repeats` times; the run with the median throughput.
pub(crate) async fn burn_down_pg_median(
    pg: &Pg,
    backend: &'static str,
    tasks: usize,
    processes: usize,
    repeats: usize,
) -> anyhow::Result<BurnDown> {
    let mut runs = Vec::with_capacity(repeats.max(1));
    for _ in 0..repeats.max(1) {
        runs.push(burn_down_pg(pg, backend, tasks, processes).await?);
    }
    runs.sort_by(|a, b| a.tasks_per_second.total_cmp(&b.tasks_per_second));
    let median = runs.len() / 2;
    Ok(runs.swap_remove(median))
}

/// The PostgreSQL burn-down: `tasks` no-op tasks pre-inserted in a fresh database, drained
/// by `processes` worker processes of concurrency 64.
pub(crate) async fn burn_down_pg(
    pg: &Pg,
    backend: &'static str,
    tasks: usize,
    processes: usize,
) -> anyhow::Result<BurnDown> {
    let db = pg.database().await?;
    let queue = queue("burn");
    fill(
        &NativeMaker {
            url: db.url().to_owned(),
            pool: 2,
        },
        &queue,
        tasks,
    )
    .await?;
    let admin = connect(db.url()).await?;
    admin.batch_execute("ANALYZE durable.tasks").await?;
    let spec = WorkerSpec {
        backend,
        url: db.url().to_owned(),
        queue: queue.clone(),
        concurrency: CONCURRENCY,
        pool: WORKER_POOL,
        report_ms: 1000,
    };
    let mut workers = Vec::new();
    for _ in 0..processes {
        workers.push(WorkerProcess::start(&spec).await?);
    }
    let db_cpu_before = pg.cpu_seconds();
    let worker_cpu_before: f64 = workers.iter().map(WorkerProcess::cpu_seconds).sum();
    let started = Instant::now();
    for worker in &mut workers {
        worker.go().await?;
    }
    let limit = Duration::from_secs(60 + tasks as u64 / 200);
    poll_until(
        "the queue is drained",
        Duration::from_millis(10),
        limit,
        || {
            let admin = &admin;
            let queue = &queue;
            async move { Ok(!unfinished(admin, queue).await?) }
        },
    )
    .await
    .with_context(|| format!("{backend} burn-down by {processes} processes"))?;
    let elapsed = started.elapsed();
    let db_cpu = pg
        .cpu_seconds()
        .zip(db_cpu_before)
        .map(|(after, before)| after - before);
    let worker_cpu: f64 =
        workers.iter().map(WorkerProcess::cpu_seconds).sum::<f64>() - worker_cpu_before;
    for worker in workers {
        worker.stop().await?;
    }
    drop(admin);
    db.drop_now().await?;
    let thousands = tasks as f64 / 1000.0;
    Ok(BurnDown {
        tasks_per_second: tasks as f64 / elapsed.as_secs_f64(),
        db_cpu_per_1000: db_cpu.map(|cpu| cpu / thousands),
        worker_cpu_per_1000: Some(worker_cpu / thousands),
    })
}

/// The long run: `tasks` no-op tasks drained by one worker process of concurrency 64,
/// reporting its RSS when ready, after a tenth of the run, and at the end.
pub(crate) async fn long_run(
    pg: &Pg,
    backend: &'static str,
    tasks: usize,
    out: &mut Vec<Measurement>,
) -> anyhow::Result<()> {
    let db = pg.database().await?;
    let queue = queue("long");
    fill(
        &NativeMaker {
            url: db.url().to_owned(),
            pool: 2,
        },
        &queue,
        tasks,
    )
    .await?;
    let admin = connect(db.url()).await?;
    admin.batch_execute("ANALYZE durable.tasks").await?;
    let spec = WorkerSpec {
        backend,
        url: db.url().to_owned(),
        queue: queue.clone(),
        concurrency: CONCURRENCY,
        pool: WORKER_POOL,
        report_ms: 500,
    };
    let mut worker = WorkerProcess::start(&spec).await?;
    let started = Instant::now();
    worker.go().await?;
    let limit = Duration::from_secs(120 + tasks as u64 / 200);
    poll_until(
        "the long run is drained",
        Duration::from_millis(100),
        limit,
        || {
            let admin = &admin;
            let queue = &queue;
            async move { Ok(!unfinished(admin, queue).await?) }
        },
    )
    .await
    .with_context(|| format!("{backend} long run"))?;
    let elapsed = started.elapsed();
    worker.collect();
    let warm_at = started + elapsed / 10;
    let warm = worker
        .rss
        .iter()
        .find(|(at, _)| *at >= warm_at)
        .map(|(_, kb)| *kb);
    let last = worker.rss.last().map(|(_, kb)| *kb);
    let ready = worker.ready_rss_kb;
    let end = worker.stop().await?;
    let mb = |kb: u64| kb as f64 / 1024.0;
    out.push(Measurement::new(
        "long_run_tasks",
        backend,
        tasks as f64,
        "tasks",
    ));
    out.push(Measurement::new(
        "long_run_throughput",
        backend,
        tasks as f64 / elapsed.as_secs_f64(),
        "tasks/s",
    ));
    out.push(Measurement::new(
        "worker_rss_ready",
        backend,
        mb(ready),
        "MB",
    ));
    if let Some(warm) = warm {
        out.push(Measurement::new("worker_rss_warm", backend, mb(warm), "MB"));
    }
    out.push(Measurement::new(
        "worker_rss_end",
        backend,
        mb(last.unwrap_or(end)),
        "MB",
    ));
    drop(admin);
    db.drop_now().await?;
    Ok(())
}
