//! The PostgreSQL server under test: started by the fixture of `durable-testing` with default
//! durability (or given by URL), fresh migrated databases on it, its settings, and the CPU
//! time its processes used (read from `/proc` when it runs on this machine).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow};
use durable_testing::postgres::{
    PgServer, ServerOptions, ServerSource, TestDatabase, template_key,
};
use tokio_postgres::NoTls;

/// The server, and how to read its CPU time.
pub(crate) struct Pg {
    server: &'static PgServer,
    /// Where it came from, for the report.
    pub(crate) description: String,
    /// The postmaster's process id on this machine, if it could be found.
    postmaster: Option<u32>,
}

/// Settings reported with the results.
const SETTINGS: &[&str] = &[
    "server_version",
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_sync_method",
    "commit_delay",
    "shared_buffers",
    "max_connections",
    "max_wal_size",
    "autovacuum",
];

impl Pg {
    /// The server at `database_url`, or one started as the tests' fixture would (honouring
    /// `DURABLE_TEST_DATABASE_URL`, Docker with `DURABLE_TEST_POSTGRES_IMAGE`, else a local
    /// cluster) but with PostgreSQL's default durability.
    pub(crate) async fn start(database_url: Option<String>) -> anyhow::Result<Pg> {
        let options = match database_url {
            Some(url) => ServerOptions {
                database_url: Some(url),
                ..ServerOptions::default()
            },
            None => ServerOptions {
                durable: true,
                ..ServerOptions::from_env()
            },
        };
        let server: &'static PgServer = Box::leak(Box::new(
            PgServer::start(options)
                .await
                .context("starting a PostgreSQL server for the benchmarks")?,
        ));
        let description = match server.source() {
            ServerSource::EnvUrl => "an existing server (given by URL)".to_owned(),
            ServerSource::Container { image, name } => {
                format!("a Docker container {name} of {image}, data on the container's disk")
            }
            ServerSource::LocalCluster { data_dir } => {
                format!("a local cluster in {}", data_dir.display())
            }
            other => format!("{other:?}"),
        };
        let postmaster = find_postmaster(server).await;
        Ok(Pg {
            server,
            description,
            postmaster,
        })
    }

    /// A fresh database with the schema of `durable`, dropped with the value.
    pub(crate) async fn database(&self) -> anyhow::Result<TestDatabase> {
        let fingerprint: Vec<u8> = durable_postgres_sql::MIGRATIONS
            .iter()
            .flat_map(|m| m.sql.as_bytes().iter().copied())
            .collect();
        TestDatabase::create_on(
            self.server,
            &template_key("durable_bench", &fingerprint),
            |url| async move {
                durable_postgres_sqlx::migrate_url(&url)
                    .await
                    .map_err(Into::into)
            },
        )
        .await
        .context("creating a benchmark database")
    }

    /// The server's version and durability settings, as `name = value`.
    pub(crate) async fn settings(&self, url: &str) -> anyhow::Result<Vec<(String, String)>> {
        let client = connect(url).await?;
        let names: Vec<String> = SETTINGS.iter().map(|s| (*s).to_owned()).collect();
        let rows = client
            .query(
                "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY($1) ORDER BY name",
                &[&names],
            )
            .await?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    /// CPU seconds (user + system) used so far by the server's processes, the exited ones
    /// included; `None` when the server's processes are not visible here.
    pub(crate) fn cpu_seconds(&self) -> Option<f64> {
        let postmaster = self.postmaster?;
        let mut ticks = 0u64;
        let mut seen = false;
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Some(stat) = ProcStat::read(pid) else {
                continue;
            };
            if pid == postmaster {
                // Exited backends' time is added to the postmaster's cutime/cstime when it
                // reaps them.
                ticks += stat.utime + stat.stime + stat.cutime + stat.cstime;
                seen = true;
            } else if stat.ppid == postmaster {
                ticks += stat.utime + stat.stime;
            }
        }
        seen.then(|| ticks as f64 / clock_ticks())
    }
}

/// A connection for the benchmark's own queries.
pub(crate) async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| "connecting to the benchmark database")?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            eprintln!("benchmark connection: {error}");
        }
    });
    Ok(client)
}

/// The fields of `/proc/<pid>/stat` used here.
pub(crate) struct ProcStat {
    pub(crate) ppid: u32,
    pub(crate) comm: String,
    pub(crate) utime: u64,
    pub(crate) stime: u64,
    pub(crate) cutime: u64,
    pub(crate) cstime: u64,
}

impl ProcStat {
    pub(crate) fn read(pid: u32) -> Option<ProcStat> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let open = text.find('(')?;
        let close = text.rfind(')')?;
        let comm = text.get(open + 1..close)?.to_owned();
        // After the command: state, ppid, ... utime is field 14, counting pid as field 1.
        let fields: Vec<&str> = text.get(close + 2..)?.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        Some(ProcStat {
            ppid: u32::try_from(field(4)?).ok()?,
            comm,
            utime: field(14)?,
            stime: field(15)?,
            cutime: field(16)?,
            cstime: field(17)?,
        })
    }

    /// User + system CPU seconds of the process itself.
    pub(crate) fn cpu_seconds(&self) -> f64 {
        (self.utime + self.stime) as f64 / clock_ticks()
    }
}

/// Kernel clock ticks per second (`getconf CLK_TCK`, 100 when unknown).
pub(crate) fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse::<f64>().ok())
            .filter(|ticks| *ticks > 0.0)
            .unwrap_or(100.0)
    })
}

/// The resident set size of this process, in kB.
pub(crate) fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kb| kb.parse().ok())
        })
        .unwrap_or(0)
}

fn is_postgres(pid: u32) -> bool {
    ProcStat::read(pid).is_some_and(|stat| stat.comm == "postgres")
}

/// The postmaster of `server` as a process of this machine.
async fn find_postmaster(server: &PgServer) -> Option<u32> {
    match server.source() {
        ServerSource::LocalCluster { data_dir } => postmaster_of_data_dir(data_dir),
        ServerSource::Container { name, .. } => {
            let out = tokio::process::Command::new("docker")
                .args(["inspect", "-f", "{{.State.Pid}}", name])
                .output()
                .await
                .ok()?;
            let pid: u32 = String::from_utf8(out.stdout).ok()?.trim().parse().ok()?;
            if is_postgres(pid) {
                return Some(pid);
            }
            // An entrypoint that did not exec: the postmaster is its child.
            children_of(pid)
                .into_iter()
                .find(|child| is_postgres(*child))
        }
        _ => {
            // A server named by URL: if it runs here, our backend's parent is the postmaster.
            let client = connect(server.admin_url()).await.ok()?;
            let row = client
                .query_one("SELECT pg_backend_pid()", &[])
                .await
                .ok()?;
            let backend = u32::try_from(row.get::<_, i32>(0)).ok()?;
            let parent = ProcStat::read(backend)
                .filter(|s| s.comm == "postgres")?
                .ppid;
            is_postgres(parent).then_some(parent)
        }
    }
}

fn postmaster_of_data_dir(data_dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    is_postgres(pid).then_some(pid)
}

fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| ProcStat::read(*pid).is_some_and(|stat| stat.ppid == parent))
        .collect()
}

/// A short description of this machine: cores, CPU model, memory, kernel.
pub(crate) fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split(':').nth(1))
        .map_or("unknown CPU", str::trim)
        .to_owned();
    let memory_gb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores ({model}), {memory_gb:.0} GB RAM, Linux {}",
        kernel.trim()
    )
}

/// The load averages (1, 5, 15 min).
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Waits until `check` holds, polling every `every`, at most `limit`.
pub(crate) async fn poll_until<F, Fut>(
    what: &str,
    every: Duration,
    limit: Duration,
    mut check: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await? {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(anyhow!("timed out after {limit:?} waiting until {what}"));
        }
        tokio::time::sleep(every).await;
    }
}
