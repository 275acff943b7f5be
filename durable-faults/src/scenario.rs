//! One fault-injection scenario: start workers, spawn the workload, inject the fault while it
//! runs, wait until every task is terminal, check the invariants, measure recovery, report.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use durable_testing::postgres::PgServer;

use crate::backend::{Backend, Client, ClientConfig};
use crate::harness::{
    Admin, Progress, WorkerConfig, WorkerProcess, connect, database, own_server, url_port,
    wait_all_terminal, with_port,
};
use crate::invariants::{Findings, check};
use crate::proxy::Proxy;
use crate::workload::{Planned, expected_tasks, go_event, go_payload, plan};

/// The faults, one scenario each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// No fault: the baseline.
    None,
    /// Worker processes killed with SIGKILL, one every 1.5 s, and replaced.
    Sigkill,
    /// The PostgreSQL server restarted (`pg_ctl restart -m fast`) twice.
    ServerRestart,
    /// Every connection of the workers terminated with `pg_terminate_backend`, every 0.5 s.
    TerminateBackends,
    /// Each worker's pool of 2 connections held by the process itself, 3 s out of every 4.
    PoolExhaustion,
    /// A worker paused with SIGSTOP past its lease (4 s against 2 s), then resumed; three times.
    Sigstop,
    /// A transaction held open (REPEATABLE READ, with a snapshot) for the whole run.
    XminHorizon,
    /// Every step body fails for 4 s: every task fails and retries at once.
    RetryStorm,
    /// A TCP proxy between workers and database: a cut (connections closed, new ones refused)
    /// for 2 s, a stall of every connection for 3 s, then every open connection black-holed
    /// for good.
    NetworkCut,
}

impl Fault {
    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Fault::None => "baseline",
            Fault::Sigkill => "sigkill",
            Fault::ServerRestart => "server_restart",
            Fault::TerminateBackends => "terminate_backends",
            Fault::PoolExhaustion => "pool_exhaustion",
            Fault::Sigstop => "sigstop",
            Fault::XminHorizon => "xmin_horizon",
            Fault::RetryStorm => "retry_storm",
            Fault::NetworkCut => "network_cut",
        }
    }
}

/// The environment variable that scales the workload (a positive number; default 1 = 2,000
/// tasks).
pub const SCALE_ENV: &str = "DURABLE_FAULTS_SCALE";

/// Tasks per scenario at scale 1.
pub const BASE_TASKS: usize = 2_000;

/// What a scenario measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// The adapter.
    pub backend: Backend,
    /// The fault.
    pub fault: Fault,
    /// Worker processes at once.
    pub workers: usize,
    /// What the invariant checks found.
    pub findings: Findings,
    /// From the first spawn until every task was terminal.
    pub total: Duration,
    /// Fault events (start, end), from the first spawn.
    pub events: Vec<(Duration, Duration)>,
    /// The longest time from the end of a fault event until a task next became terminal.
    pub max_resume: Option<Duration>,
    /// From the end of the last fault event until every task was terminal.
    pub drain: Option<Duration>,
    /// Worker processes that died on their own, or did not stop cleanly, with their logs.
    pub worker_problems: Vec<String>,
    /// With a held xmin horizon: dead row versions of `durable.tasks` and `durable.checkpoints`
    /// that a VACUUM could not remove while the snapshot was held, then after it ended.
    pub held_dead_tuples: Option<(i64, i64)>,
}

impl Report {
    /// One line for the test output.
    pub fn line(&self) -> String {
        let ms =
            |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{} ms", d.as_millis()));
        format!(
            "[faults] {backend}/{fault}: {tasks} tasks, {workers} workers, done in {total:.1} s; \
             {events} fault events; resume after fault ≤ {resume}; drained {drain} after the last; \
             {recov} lease recoveries, {extra} extra attempts (max attempt {max}), \
             {reruns} step re-runs before commit, {dead} dead tuples{held}; violations: {v}",
            backend = self.backend.name(),
            fault = self.fault.name(),
            tasks = self.findings.tasks,
            workers = self.workers,
            total = self.total.as_secs_f64(),
            events = self.events.len(),
            resume = ms(self.max_resume),
            drain = ms(self.drain),
            recov = self.findings.lease_recoveries,
            extra = self.findings.extra_attempts,
            max = self.findings.max_attempt,
            reruns = self.findings.body_reruns,
            dead = self.findings.dead_tuples,
            held = self.held_dead_tuples.map_or(String::new(), |(held, after)| format!(
                " (VACUUM under the held snapshot left {held} dead row versions, {after} once it ended)"
            )),
            v = if self.findings.violations.is_empty() && self.worker_problems.is_empty() {
                "none".to_owned()
            } else {
                format!("{:?} {:?}", self.findings.violations, self.worker_problems)
            },
        )
    }

    /// One JSON line for the report file.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "backend": self.backend.name(),
            "fault": self.fault.name(),
            "tasks": self.findings.tasks,
            "workers": self.workers,
            "total_ms": self.total.as_millis() as u64,
            "events": self.events.len(),
            "max_resume_ms": self.max_resume.map(|d| d.as_millis() as u64),
            "drain_ms": self.drain.map(|d| d.as_millis() as u64),
            "lease_recoveries": self.findings.lease_recoveries,
            "extra_attempts": self.findings.extra_attempts,
            "max_attempt": self.findings.max_attempt,
            "body_reruns": self.findings.body_reruns,
            "dead_tuples": self.findings.dead_tuples,
            "held_dead_tuples": self.held_dead_tuples.map(|(held, _)| held),
            "dead_tuples_after_release": self.held_dead_tuples.map(|(_, after)| after),
            "violations": self.findings.violations,
            "worker_problems": self.worker_problems,
        })
    }
}

/// The workload size from [`SCALE_ENV`].
pub fn scaled_tasks() -> usize {
    let scale: f64 = std::env::var(SCALE_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|s: &f64| s.is_finite() && *s > 0.0)
        .unwrap_or(1.0);
    ((BASE_TASKS as f64) * scale).round().max(25.0) as usize
}

const WORKERS: usize = 3;
const LEASE: Duration = Duration::from_secs(2);

/// Runs one scenario and returns what it measured. `binary` is the `faults-worker`
/// executable, `out_dir` a directory for logs and the report file.
pub async fn run(
    binary: &Path,
    out_dir: &Path,
    backend: Backend,
    fault: Fault,
) -> anyhow::Result<Report> {
    let server: Option<&'static PgServer> = match fault {
        Fault::ServerRestart => Some(own_server().await?),
        _ => None,
    };
    let db = database(server).await?;
    let direct_url = db.url().to_owned();
    let proxy = match fault {
        Fault::NetworkCut => {
            let port = url_port(&direct_url)?;
            Some(Proxy::start(([127, 0, 0, 1], port).into()).await?)
        }
        _ => None,
    };
    let store_url = match &proxy {
        Some(proxy) => with_port(&direct_url, proxy.port())?,
        None => direct_url.clone(),
    };
    let logs = out_dir.join(format!("faults-{}-{}", backend.name(), fault.name()));
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs)?;
    let config = WorkerConfig {
        backend,
        url: store_url,
        effects_url: direct_url.clone(),
        concurrency: 8,
        lease: LEASE,
        pool: if fault == Fault::PoolExhaustion { 2 } else { 4 },
        hog: (fault == Fault::PoolExhaustion).then(|| "3000,1000,9000".to_owned()),
    };
    let mut spawned = 0usize;
    let mut start_worker = |spawned: &mut usize| -> anyhow::Result<WorkerProcess> {
        *spawned += 1;
        WorkerProcess::start(binary, &config, logs.join(format!("worker-{spawned}.log")))
    };
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        workers.push(start_worker(&mut spawned)?);
    }

    // A long transaction with a snapshot, held for the whole run.
    let xmin_holder = if fault == Fault::XminHorizon {
        let holder = connect(&direct_url).await?;
        holder
            .batch_execute(
                "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM durable.tasks; \
                 SELECT txid_current();",
            )
            .await?;
        Some(holder)
    } else {
        None
    };

    let planned = plan(scaled_tasks());
    let expected = expected_tasks(&planned);
    let driver = Client::connect(
        backend,
        &ClientConfig {
            url: direct_url.clone(),
            pool: 8,
        },
    )
    .await?;
    let started = Instant::now();
    let spawner = tokio::spawn(drive(driver, planned.clone()));
    let monitor = {
        let url = direct_url.clone();
        tokio::spawn(async move {
            let mut admin = Admin::new(&url);
            let mut progress = Progress::default();
            let limit = Duration::from_secs(180);
            let done =
                wait_all_terminal(&mut admin, started, expected as i64, limit, &mut progress).await;
            (done, started.elapsed(), progress)
        })
    };

    let mut events = Vec::new();
    let injected = inject(
        fault,
        started,
        &mut events,
        &mut workers,
        &mut start_worker,
        &mut spawned,
        server,
        &direct_url,
        db.server().admin_url(),
        db.name(),
        proxy.as_ref(),
    )
    .await;
    let driven = spawner.await.context("driver panicked")?;
    injected?;
    driven?;

    let (done, total, progress) = monitor.await.context("monitor panicked")?;
    let held_dead_tuples = match xmin_holder {
        Some(holder) => {
            let held = unremovable_dead_tuples(&direct_url).await?;
            drop(holder);
            Some((held, unremovable_dead_tuples(&direct_url).await?))
        }
        None => None,
    };

    let client = connect(&direct_url).await?;
    let mut findings = check(&client, &planned, expected).await?;
    if !done {
        let states = client
            .query(
                "SELECT state, count(*) FROM durable.tasks GROUP BY state ORDER BY state",
                &[],
            )
            .await?
            .iter()
            .map(|r| format!("{}: {}", r.get::<_, String>(0), r.get::<_, i64>(1)))
            .collect::<Vec<_>>();
        findings.violations.insert(
            0,
            format!("terminal: not every task was terminal after 180 s: {states:?}"),
        );
    }

    if let Some((held, after)) = held_dead_tuples
        && (held == 0 || after >= held)
    {
        findings.violations.push(format!(
            "xmin: the held snapshot should have kept dead row versions from VACUUM and its end \
             should have freed them: {held} held, {after} after"
        ));
    }

    let mut worker_problems = Vec::new();
    for w in &mut workers {
        if w.killed {
            continue;
        }
        if let Some(status) = w.exited() {
            worker_problems.push(format!(
                "worker {} died during the run ({status}): {}",
                w.pid(),
                w.log_tail(5)
            ));
            continue;
        }
        match w.stop(Duration::from_secs(20)).await {
            Some(status) if status.success() => {}
            Some(status) => worker_problems.push(format!(
                "worker {} did not stop cleanly ({status}): {}",
                w.pid(),
                w.log_tail(5)
            )),
            None => worker_problems.push(format!("worker {} ignored SIGTERM", w.pid())),
        }
    }
    let last_end = events.iter().map(|(_, end)| *end).max();
    let max_resume = events
        .iter()
        .filter_map(|(_, end)| progress.resumed_after(*end))
        .max();
    let report = Report {
        backend,
        fault,
        workers: WORKERS,
        findings,
        total,
        drain: last_end.map(|end| total.saturating_sub(end)),
        max_resume,
        events,
        worker_problems,
        held_dead_tuples,
    };
    append_report(out_dir, &report);
    Ok(report)
}

/// Runs VACUUM on the task tables and returns the dead row versions it had to leave (what a
/// held snapshot keeps: the bloat it causes).
async fn unremovable_dead_tuples(url: &str) -> anyhow::Result<i64> {
    let client = connect(url).await?;
    client
        .batch_execute("VACUUM durable.tasks, durable.checkpoints")
        .await?;
    let row = client
        .query_one(
            "SELECT coalesce(sum(n_dead_tup), 0)::bigint FROM pg_stat_user_tables \
             WHERE schemaname = 'durable' AND relname IN ('tasks', 'checkpoints')",
            &[],
        )
        .await?;
    Ok(row.try_get(0)?)
}

fn append_report(out_dir: &Path, report: &Report) {
    let path: PathBuf = out_dir.join("faults-report.jsonl");
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(file, "{}", report.json());
    }
}

/// The test driver: spawns every task (retrying through faults: idempotency keys make a
/// retried spawn return the task it created), then emits the driver's events, spread over a
/// few seconds so that some arrive before their await and some after.
async fn drive(client: Client, planned: Vec<Planned>) -> anyhow::Result<()> {
    for p in &planned {
        retry(|| client.spawn_flow(p.params.clone(), &p.idempotency_key)).await?;
    }
    let emits: Vec<u32> = planned
        .iter()
        .filter(|p| p.driver_emits)
        .map(|p| p.params.i)
        .collect();
    let pause = Duration::from_millis(4_000 / emits.len().max(1) as u64);
    for i in emits {
        let (event, payload) = (go_event(i), go_payload(i, "driver"));
        retry(|| client.emit(&event, &payload)).await?;
        tokio::time::sleep(pause).await;
    }
    Ok(())
}

async fn retry<T, F, Fut>(mut op: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = durable_core::DurableResult<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout(Duration::from_secs(10), op()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) if Instant::now() >= deadline => return Err(error.into()),
            Err(_) if Instant::now() >= deadline => anyhow::bail!("driver call timed out"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn inject<F>(
    fault: Fault,
    started: Instant,
    events: &mut Vec<(Duration, Duration)>,
    workers: &mut Vec<WorkerProcess>,
    start_worker: &mut F,
    spawned: &mut usize,
    server: Option<&'static PgServer>,
    db_url: &str,
    admin_url: &str,
    db_name: &str,
    proxy: Option<&Proxy>,
) -> anyhow::Result<()>
where
    F: FnMut(&mut usize) -> anyhow::Result<WorkerProcess>,
{
    let sleep = |ms: u64| tokio::time::sleep(Duration::from_millis(ms));
    let now = || started.elapsed();
    sleep(1_000).await;
    match fault {
        Fault::None => {}
        Fault::XminHorizon => events.push((Duration::ZERO, Duration::ZERO)),
        Fault::Sigkill => {
            for round in 0..5 {
                let victim = round % WORKERS;
                let at = now();
                // Kill the one in this slot, start its replacement at once.
                let mut dead = std::mem::replace(&mut workers[victim], start_worker(spawned)?);
                dead.kill()?;
                workers.push(dead);
                events.push((at, now()));
                sleep(1_500).await;
            }
        }
        Fault::ServerRestart => {
            let server = server.context("the restart scenario runs on its own server")?;
            for _ in 0..2 {
                sleep(1_500).await;
                let at = now();
                server.restart().await?;
                events.push((at, now()));
            }
        }
        Fault::TerminateBackends => {
            let admin = connect(admin_url).await?;
            for _ in 0..12 {
                let at = now();
                admin
                    .execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE datname = $1 AND pid <> pg_backend_pid()",
                        &[&db_name],
                    )
                    .await?;
                events.push((at, now()));
                sleep(500).await;
            }
        }
        Fault::PoolExhaustion => {
            // The hogging is done by the workers themselves (FAULTS_HOG), from their start.
            events.push((Duration::ZERO, now() + Duration::from_secs(8)));
            sleep(8_000).await;
        }
        Fault::Sigstop => {
            for round in 0..3 {
                let victim = &workers[round % WORKERS];
                let at = now();
                victim.signal("STOP")?;
                sleep(4_000).await;
                victim.signal("CONT")?;
                events.push((at, now()));
                sleep(1_000).await;
            }
        }
        Fault::RetryStorm => {
            let admin = connect(db_url).await?;
            let at = now();
            admin
                .batch_execute("UPDATE faults.control SET storm = true")
                .await?;
            sleep(4_000).await;
            admin
                .batch_execute("UPDATE faults.control SET storm = false")
                .await?;
            events.push((at, now()));
        }
        Fault::NetworkCut => {
            let proxy = proxy.context("the network scenario runs through the proxy")?;
            let at = now();
            proxy.cut();
            sleep(2_000).await;
            proxy.heal();
            events.push((at, now()));
            sleep(2_000).await;
            let at = now();
            proxy.stall();
            sleep(3_000).await;
            proxy.heal();
            events.push((at, now()));
            sleep(1_000).await;
            let at = now();
            proxy.blackhole_open_connections();
            events.push((at, now()));
        }
    }
    Ok(())
}
