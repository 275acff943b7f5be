//! Worker processes: the benchmark binary started again with the hidden subcommand
//! `__worker`, driven through its stdin and stdout.
//!
//! Protocol: the worker connects, registers the no-op task and prints `ready <rss kB>`; on the
//! line `go` it starts a `Worker` and prints `rss <kB> <runs>` every `--report-ms`; on `stop`
//! (or end of input) it shuts the worker down and prints `done <rss kB>`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use durable_core::{Durable, Store, WorkerOptions};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::backends::{Maker, NativeMaker, SqlxMaker};
use crate::server::{ProcStat, rss_kb};
use crate::tasks::{Noop, noop_runs};

/// How long a worker process may take to start or to stop.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(60);

/// What a worker process is asked to do.
#[derive(Debug, Clone)]
pub(crate) struct WorkerSpec {
    pub(crate) backend: &'static str,
    pub(crate) url: String,
    pub(crate) queue: String,
    pub(crate) concurrency: usize,
    pub(crate) pool: usize,
    pub(crate) report_ms: u64,
}

/// A running worker process, seen from the benchmark.
pub(crate) struct WorkerProcess {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<(Instant, String)>,
    pid: u32,
    /// Its RSS once connected, before any work (kB).
    pub(crate) ready_rss_kb: u64,
    /// `rss` reports received so far: (when, kB).
    pub(crate) rss: Vec<(Instant, u64)>,
}

impl WorkerProcess {
    /// Starts the process and waits until it is ready.
    pub(crate) async fn start(spec: &WorkerSpec) -> anyhow::Result<WorkerProcess> {
        let exe = std::env::current_exe().context("finding the benchmark binary")?;
        let mut child = Command::new(exe)
            .arg("__worker")
            .args(["--backend", spec.backend])
            .args(["--database-url", &spec.url])
            .args(["--queue", &spec.queue])
            .args(["--concurrency", &spec.concurrency.to_string()])
            .args(["--pool", &spec.pool.to_string()])
            .args(["--report-ms", &spec.report_ms.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting a worker process")?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("the worker process exited at once"))?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let (sender, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if sender.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let mut process = WorkerProcess {
            child,
            stdin,
            lines,
            pid,
            ready_rss_kb: 0,
            rss: Vec::new(),
        };
        let ready = process.expect("ready").await?;
        process.ready_rss_kb = ready.parse().unwrap_or(0);
        Ok(process)
    }

    /// Waits for a line starting with `word` and returns the rest; `rss` lines met on the
    /// way are recorded.
    async fn expect(&mut self, word: &str) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + PROCESS_TIMEOUT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.lines.recv()).await;
            let Ok(Some((at, line))) = next else {
                bail!("worker process {} did not say `{word}` in time", self.pid);
            };
            let mut parts = line.splitn(2, ' ');
            let head = parts.next().unwrap_or_default();
            let rest = parts.next().unwrap_or_default().to_owned();
            if head == "rss" {
                self.record_rss(at, &rest);
            }
            if head == word {
                return Ok(rest);
            }
        }
    }

    fn record_rss(&mut self, at: Instant, rest: &str) {
        if let Some(kb) = rest
            .split_whitespace()
            .next()
            .and_then(|kb| kb.parse().ok())
        {
            self.rss.push((at, kb));
        }
    }

    /// Records the `rss` reports received so far.
    pub(crate) fn collect(&mut self) {
        while let Ok((at, line)) = self.lines.try_recv() {
            if let Some(rest) = line.strip_prefix("rss ") {
                self.record_rss(at, rest);
            }
        }
    }

    async fn send(&mut self, line: &str) -> anyhow::Result<()> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// Tells the process to start working.
    pub(crate) async fn go(&mut self) -> anyhow::Result<()> {
        self.send("go").await
    }

    /// CPU seconds the process has used so far.
    pub(crate) fn cpu_seconds(&self) -> f64 {
        ProcStat::read(self.pid).map_or(0.0, |stat| stat.cpu_seconds())
    }

    /// Stops the worker and the process; returns its final RSS (kB).
    pub(crate) async fn stop(mut self) -> anyhow::Result<u64> {
        self.send("stop").await?;
        let done = self.expect("done").await?;
        let _ = tokio::time::timeout(PROCESS_TIMEOUT, self.child.wait()).await;
        Ok(done.parse().unwrap_or(0))
    }
}

/// The `__worker` subcommand: `args` are its options.
pub(crate) async fn worker_main(args: &[String]) -> anyhow::Result<()> {
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .ok_or_else(|| anyhow!("__worker needs {name}"))
    };
    let backend = value("--backend")?;
    let url = value("--database-url")?;
    let queue = value("--queue")?;
    let concurrency: usize = value("--concurrency")?.parse()?;
    let pool: usize = value("--pool")?.parse()?;
    let report_ms: u64 = value("--report-ms")?.parse()?;
    match backend.as_str() {
        "sqlx" => {
            let maker = SqlxMaker { url, pool };
            serve(maker.client(&queue, true).await?, concurrency, report_ms).await
        }
        "native" => {
            let maker = NativeMaker { url, pool };
            serve(maker.client(&queue, true).await?, concurrency, report_ms).await
        }
        other => bail!("no worker processes for backend {other}"),
    }
}

async fn serve<S: Store>(
    client: Durable<S>,
    concurrency: usize,
    report_ms: u64,
) -> anyhow::Result<()> {
    client.register::<Noop>().await;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    stdout
        .write_all(format!("ready {}\n", rss_kb()).as_bytes())
        .await?;
    stdout.flush().await?;
    match stdin.next_line().await? {
        Some(line) if line == "go" => {}
        _ => return Ok(()),
    }
    let worker = client
        .start_worker(WorkerOptions::default().concurrency(concurrency))
        .await;
    let reporter = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        let mut every = tokio::time::interval(Duration::from_millis(report_ms.max(10)));
        loop {
            every.tick().await;
            let line = format!("rss {} {}\n", rss_kb(), noop_runs());
            if stdout.write_all(line.as_bytes()).await.is_err() {
                break;
            }
            let _ = stdout.flush().await;
        }
    });
    // Until `stop` or the end of input.
    while let Some(line) = stdin.next_line().await? {
        if line == "stop" {
            break;
        }
    }
    reporter.abort();
    worker.shutdown_timeout(PROCESS_TIMEOUT).await;
    stdout
        .write_all(format!("done {}\n", rss_kb()).as_bytes())
        .await?;
    stdout.flush().await?;
    Ok(())
}
