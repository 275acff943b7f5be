//! What a scenario runs on: a migrated database with the test instrumentation, worker child
//! processes, an admin connection that survives faults, and a progress monitor.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use durable_testing::postgres::{PgServer, ServerOptions, TestDatabase, template_key};

use crate::backend::{Backend, env};
use crate::workload::{QUEUE, SETUP_SQL};

/// Connects with tokio-postgres, driving the connection on a spawned task.
pub async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_postgres::connect(url, tokio_postgres::NoTls),
    )
    .await
    .context("connecting timed out")??;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// A connection that reconnects after a fault: the test's own view of the database.
pub struct Admin {
    url: String,
    client: Option<tokio_postgres::Client>,
}

impl Admin {
    /// An admin connection to `url` (made on first use).
    pub fn new(url: &str) -> Admin {
        Admin {
            url: url.to_owned(),
            client: None,
        }
    }

    /// The connection, made again if it was lost.
    pub async fn get(&mut self) -> anyhow::Result<&tokio_postgres::Client> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = Some(connect(&self.url).await?);
        }
        self.client.as_ref().context("no connection")
    }

    /// Runs `f` on the connection, retrying (with a fresh connection) for up to `within`.
    pub async fn retrying<T, F>(&mut self, within: Duration, mut f: F) -> anyhow::Result<T>
    where
        F: for<'c> FnMut(
            &'c tokio_postgres::Client,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, tokio_postgres::Error>> + Send + 'c>,
        >,
    {
        let deadline = Instant::now() + within;
        loop {
            let attempt = match self.get().await {
                Ok(client) => f(client).await.map_err(anyhow::Error::from),
                Err(error) => Err(error),
            };
            match attempt {
                Ok(value) => return Ok(value),
                Err(error) if Instant::now() >= deadline => return Err(error),
                Err(_) => {
                    self.client = None;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

fn fingerprint() -> Vec<u8> {
    durable_postgres_sql::MIGRATIONS
        .iter()
        .flat_map(|m| m.sql.bytes())
        .collect()
}

/// A fresh migrated database with the test instrumentation ([`SETUP_SQL`]), on the shared test
/// server or on `server`.
pub async fn database(server: Option<&'static PgServer>) -> anyhow::Result<TestDatabase> {
    let key = template_key("faults", &fingerprint());
    let migrate = |url: String| async move {
        durable_postgres_sqlx::migrate_url(&url)
            .await
            .map_err(Into::into)
    };
    let db = match server {
        Some(server) => TestDatabase::create_on(server, &key, migrate).await?,
        None => TestDatabase::create(&key, migrate).await?,
    };
    let admin = connect(db.url()).await?;
    admin.batch_execute(SETUP_SQL).await.context("setup SQL")?;
    Ok(db)
}

/// A local PostgreSQL cluster of this scenario's own (one that may be restarted), leaked for
/// the rest of the test process (its watchdog removes it when the process exits).
pub async fn own_server() -> anyhow::Result<&'static PgServer> {
    let options = ServerOptions {
        database_url: None,
        docker: false,
        ..ServerOptions::from_env()
    };
    let server = PgServer::start(ServerOptions {
        local_cluster: true,
        ..options
    })
    .await
    .context("a local cluster of the scenario's own (needs the PostgreSQL server binaries)")?;
    Ok(Box::leak(Box::new(server)))
}

/// The host and port of a `postgres://` URL.
pub fn url_port(url: &str) -> anyhow::Result<u16> {
    let config: tokio_postgres::Config = url.parse().context("database URL")?;
    Ok(config.get_ports().first().copied().unwrap_or(5432))
}

/// `url` with its port replaced (for the proxy, on 127.0.0.1).
pub fn with_port(url: &str, port: u16) -> anyhow::Result<String> {
    let scheme_end = url.find("://").context("a postgres:// URL")? + 3;
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let host_start = authority.rfind('@').map_or(0, |at| at + 1);
    let userinfo = &authority[..host_start];
    Ok(format!(
        "{}{userinfo}127.0.0.1:{port}{}",
        &url[..scheme_end],
        &rest[authority_end..]
    ))
}

/// How worker processes are configured.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The adapter.
    pub backend: Backend,
    /// The store's URL (possibly through the proxy).
    pub url: String,
    /// The URL for side-effect records.
    pub effects_url: String,
    /// Tasks at once per process.
    pub concurrency: usize,
    /// The lease.
    pub lease: Duration,
    /// The store's pool size.
    pub pool: usize,
    /// Pool hogging (see [`env::HOG`]).
    pub hog: Option<String>,
}

/// A worker child process; killed when dropped.
pub struct WorkerProcess {
    child: Child,
    /// Its stderr log.
    pub log: PathBuf,
    /// Killed on purpose by the scenario.
    pub killed: bool,
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl WorkerProcess {
    /// Starts `binary` as a worker.
    pub fn start(binary: &Path, config: &WorkerConfig, log: PathBuf) -> anyhow::Result<Self> {
        let stderr = std::fs::File::create(&log).context("worker log")?;
        let mut command = Command::new(binary);
        command
            .env(env::BACKEND, config.backend.name())
            .env(env::URL, &config.url)
            .env(env::EFFECTS_URL, &config.effects_url)
            .env(env::CONCURRENCY, config.concurrency.to_string())
            .env(env::LEASE_MS, config.lease.as_millis().to_string())
            .env(env::POOL, config.pool.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if let Some(hog) = &config.hog {
            command.env(env::HOG, hog);
        }
        let child = command.spawn().context("starting a worker process")?;
        Ok(WorkerProcess {
            child,
            log,
            killed: false,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`KILL`, `STOP`, `CONT`, `TERM`).
    pub fn signal(&self, name: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .context("kill")?;
        anyhow::ensure!(status.success(), "kill -{name} {} failed", self.pid());
        Ok(())
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.signal("KILL")?;
        self.child.wait()?;
        self.killed = true;
        Ok(())
    }

    /// Whether it exited on its own, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, then waits up to `within` for the exit status (`None`: still running).
    pub async fn stop(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let _ = self.signal("CONT");
        let _ = self.signal("TERM");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// Samples of how many tasks of the queue are terminal, over time.
#[derive(Debug, Default, Clone)]
pub struct Progress {
    /// (time since the start, terminal tasks, all tasks).
    pub samples: Vec<(Duration, i64, i64)>,
}

impl Progress {
    /// Terminal tasks at `at` (the last sample at or before it).
    pub fn terminal_at(&self, at: Duration) -> i64 {
        self.samples
            .iter()
            .take_while(|(t, _, _)| *t <= at)
            .last()
            .map_or(0, |(_, n, _)| *n)
    }

    /// How long after `at` the first task became terminal (progress resumed).
    pub fn resumed_after(&self, at: Duration) -> Option<Duration> {
        let before = self.terminal_at(at);
        self.samples
            .iter()
            .find(|(t, n, _)| *t > at && *n > before)
            .map(|(t, _, _)| *t - at)
    }
}

/// Polls the queue every 100 ms until `expected` tasks are terminal or `limit` passes;
/// returns when done (`true`) or not.
pub async fn wait_all_terminal(
    admin: &mut Admin,
    started: Instant,
    expected: i64,
    limit: Duration,
    progress: &mut Progress,
) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok((terminal, all)) = counts(admin).await {
            progress.samples.push((started.elapsed(), terminal, all));
            if terminal >= expected {
                return true;
            }
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// (terminal tasks, all tasks) of the workload's queue.
pub async fn counts(admin: &mut Admin) -> anyhow::Result<(i64, i64)> {
    let client = admin.get().await?;
    let row = tokio::time::timeout(
        Duration::from_secs(5),
        client.query_one(
            "SELECT count(*) FILTER (WHERE state IN ('completed', 'failed', 'cancelled')), count(*) \
             FROM durable.tasks WHERE queue_name = $1",
            &[&QUEUE],
        ),
    )
    .await;
    match row {
        Ok(Ok(row)) => Ok((row.try_get(0)?, row.try_get(1)?)),
        Ok(Err(error)) => {
            admin.client = None;
            Err(error.into())
        }
        Err(_) => {
            admin.client = None;
            anyhow::bail!("counting timed out")
        }
    }
}
