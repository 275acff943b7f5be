//! Crash recovery: a worker process is killed (SIGKILL) in the middle of a four-step task; a new
//! worker takes the task over once the killed run's lease has expired, and the two steps whose
//! checkpoints had committed do not run again.
//!
//! Run it with `cargo run --example crash_recovery`. The program starts itself a second time as
//! the worker to kill (`crash_recovery worker <queue>`, the database URL in
//! `DURABLE_DATABASE_URL`). It uses the database at `DURABLE_DATABASE_URL`, or, when that is not
//! set, a throwaway PostgreSQL that is removed when the program exits.

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use durable::{Durable, Task, TaskContext, TaskResult, WorkerOptions, async_trait};
use serde::{Deserialize, Serialize};

const STEPS: [&str; 4] = ["fetch", "transform", "load", "report"];
/// The workers' `claim_timeout`: a run that stops making durable calls loses its task this long
/// after its last one, and the task is retried from its checkpoints.
const LEASE: Duration = Duration::from_secs(2);

#[derive(Serialize, Deserialize)]
struct PipelineParams {
    /// A file that gets one line (`<step> <pid>`) each time a step body runs.
    journal: PathBuf,
}

struct Pipeline;

#[async_trait]
impl Task for Pipeline {
    const NAME: &'static str = "pipeline";
    type Params = PipelineParams;
    type Output = Vec<String>;

    async fn run(params: Self::Params, ctx: TaskContext) -> TaskResult<Self::Output> {
        let mut done = Vec::new();
        for step in STEPS {
            let pid = std::process::id();
            let result: String = ctx
                .step(step, || async {
                    println!("  [pid {pid}] step `{step}` runs");
                    let mut journal = OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&params.journal)?;
                    writeln!(journal, "{step} {pid}")?;
                    tokio::time::sleep(Duration::from_millis(800)).await; // slow work
                    Ok(format!("{step} done by process {pid}"))
                })
                .await?;
            done.push(result);
        }
        Ok(done)
    }
}

/// The journal's lines (`<step> <pid>`), in the order the step bodies ran.
fn read_journal(path: &Path) -> std::io::Result<Vec<String>> {
    Ok(std::fs::read_to_string(path)?
        .lines()
        .map(str::to_owned)
        .collect())
}

/// Kills the child worker if the demo fails before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn client(database_url: String, queue: &str) -> anyhow::Result<Durable> {
    let client = Durable::builder()
        .database_url(database_url)
        .queue_name(queue)
        .build()
        .await?;
    client.register::<Pipeline>().await;
    Ok(client)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [mode, queue] = args.as_slice()
        && mode == "worker"
    {
        // The child: a worker that runs until it is killed (or gives up after a minute).
        let client = client(std::env::var("DURABLE_DATABASE_URL")?, queue).await?;
        let worker = client
            .start_worker(WorkerOptions::default().claim_timeout(LEASE))
            .await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        worker.shutdown().await;
        anyhow::bail!("this worker process was not killed within 60 s");
    }

    let (database_url, _throwaway) = common::database().await?;
    let queue = format!("crash-demo-{}", uuid::Uuid::new_v4().simple());
    let client = client(database_url.clone(), &queue).await?;
    let journal = std::env::temp_dir().join(format!("durable-{queue}.journal"));
    std::fs::write(&journal, "")?;
    let task = client
        .spawn::<Pipeline>(PipelineParams {
            journal: journal.clone(),
        })
        .await?
        .task_id;
    println!("spawned task {task}: steps {STEPS:?}, each 0.8 s");

    let outcome = demo(&client, &database_url, &queue, task, &journal).await;
    let _ = std::fs::remove_file(&journal);
    outcome
}

async fn demo(
    client: &Durable,
    url: &str,
    queue: &str,
    task: uuid::Uuid,
    journal: &Path,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let child = Command::new(exe)
        .args(["worker", queue])
        .env("DURABLE_DATABASE_URL", url)
        .spawn()?;
    let mut child = KillOnDrop(child);
    let killed = child.0.id();
    println!("started worker process {killed}");

    // Step 3's body starts only once the checkpoints of steps 1 and 2 have committed.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !read_journal(journal)?
        .iter()
        .any(|line| line.starts_with("load "))
    {
        if let Some(status) = child.0.try_wait()? {
            anyhow::bail!("worker process {killed} exited by itself: {status}");
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the worker did not reach `load` in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.0.kill()?; // SIGKILL: no shutdown, nothing more is written
    child.0.wait()?;
    println!("killed worker process {killed} (SIGKILL) during step `load`");

    let restarted = Instant::now();
    let worker = client
        .start_worker(WorkerOptions::default().claim_timeout(LEASE))
        .await;
    let me = std::process::id();
    println!("started a new worker in process {me}; it waits for the lease ({LEASE:?}) to expire");
    let output = common::output::<Vec<String>>(client, task).await;
    worker.shutdown().await;
    println!(
        "task completed {:.1?} after the restart: {:?}",
        restarted.elapsed(),
        output?
    );

    let runs = read_journal(journal)?;
    println!("step bodies run, in order (step, process): {runs:?}");
    let expected = [
        ("fetch", killed),
        ("transform", killed),
        ("load", killed),
        ("load", me),
        ("report", me),
    ]
    .map(|(step, pid)| format!("{step} {pid}"));
    anyhow::ensure!(
        runs == expected,
        "expected the step bodies to run as {expected:?}"
    );
    println!("`fetch` and `transform` had committed their checkpoints: they did not run again");
    println!("`load` was killed before its checkpoint: it ran again (steps are at-least-once)");
    Ok(())
}
