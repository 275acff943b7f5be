//! A throwaway cluster from the machine's PostgreSQL binaries: `initdb` into a temporary
//! directory, `pg_ctl start` on a free loopback port, stopped and deleted by a watchdog.

use std::net::TcpListener;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::util::{CommandOutput, run, tail};
use super::watchdog::Watchdog;

/// Server settings that trade durability for speed; a test server is thrown away.
pub(crate) const SPEED_SETTINGS: [(&str, &str); 4] = [
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
    ("max_connections", "500"),
];

/// The settings of a server started for benchmarks: PostgreSQL's defaults (durability on),
/// with room for many connections.
pub(crate) const DURABLE_SETTINGS: [(&str, &str); 1] = [("max_connections", "500")];

/// The settings for a server: [`DURABLE_SETTINGS`] or [`SPEED_SETTINGS`].
pub(crate) fn settings(durable: bool) -> &'static [(&'static str, &'static str)] {
    if durable {
        &DURABLE_SETTINGS
    } else {
        &SPEED_SETTINGS
    }
}

const INITDB_TIMEOUT: Duration = Duration::from_secs(180);
const START_TIMEOUT_SECS: u64 = 90;
/// How many ports to try when another process grabs the free port first.
const PORT_ATTEMPTS: usize = 5;

/// A running throwaway cluster.
#[derive(Debug)]
pub(crate) struct Cluster {
    /// The temporary directory holding the data directory, the socket and the log.
    pub(crate) dir: PathBuf,
    /// The loopback TCP port.
    pub(crate) port: u16,
    /// `pg_ctl`, and whether it runs as the `postgres` OS user: for restarts.
    pub(crate) control: ClusterControl,
    /// Stops the cluster and deletes `dir` when dropped or when the process exits.
    pub(crate) watchdog: Watchdog,
}

/// What it takes to restart a cluster: `pg_ctl restart -m fast` on its data directory.
#[derive(Debug, Clone)]
pub(crate) struct ClusterControl {
    pg_ctl: PathBuf,
    data: PathBuf,
    log: PathBuf,
    as_root: bool,
}

impl ClusterControl {
    /// Restarts the cluster (a fast shutdown: every connection is closed, nothing committed is
    /// lost), keeping its data directory and port; returns once it accepts connections again.
    pub(crate) async fn restart(&self) -> Result<(), String> {
        let timeout = START_TIMEOUT_SECS.to_string();
        let out = run(
            &self.pg_ctl,
            &[
                "restart".as_ref(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                timeout.as_ref(),
                "-D".as_ref(),
                self.data.as_os_str(),
                "-l".as_ref(),
                self.log.as_os_str(),
            ],
            self.as_root,
            Duration::from_secs(START_TIMEOUT_SECS + 30),
        )
        .await?;
        if out.success {
            Ok(())
        } else {
            Err(failure("pg_ctl restart", &out))
        }
    }
}

impl Cluster {
    /// The admin URL without a database (superuser `postgres`, trust auth on loopback).
    pub(crate) fn base_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }
}

/// Finds the directory holding `initdb` and `pg_ctl`: `explicit` (from
/// `DURABLE_TEST_PG_BIN`), else `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/*/bin`, else `PATH`.
pub(crate) async fn find_bindir(explicit: Option<&Path>) -> Result<PathBuf, String> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = explicit {
        return if has_tools(dir) {
            Ok(dir.to_path_buf())
        } else {
            Err(format!(
                "DURABLE_TEST_PG_BIN={} does not contain initdb and pg_ctl",
                dir.display()
            ))
        };
    }
    if let Ok(out) = run("pg_config", &["--bindir"], false, Duration::from_secs(10)).await {
        let dir = PathBuf::from(out.stdout.trim());
        if out.success && has_tools(&dir) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path).find(|dir| has_tools(dir))
    {
        return Ok(dir);
    }
    Err(
        "no PostgreSQL server binaries found (looked at DURABLE_TEST_PG_BIN, `pg_config \
         --bindir`, /usr/lib/postgresql/*/bin and PATH for initdb and pg_ctl)"
            .to_owned(),
    )
}

/// The `postgres` OS user's uid and gid, for running the server when we are root.
async fn postgres_user_ids() -> Result<(u32, u32), String> {
    let id = |flag: &'static str| async move {
        let out = run("id", &[flag, "postgres"], false, Duration::from_secs(10)).await?;
        if !out.success {
            return Err(
                "the tests run as root, and PostgreSQL refuses to run as root, but there is no \
                 `postgres` OS user to run it as: create one (useradd --system postgres), \
                 install the distribution's PostgreSQL package (which creates it), or run the \
                 tests as a normal user"
                    .to_owned(),
            );
        }
        out.stdout
            .trim()
            .parse::<u32>()
            .map_err(|e| format!("`id {flag} postgres` printed {:?}: {e}", out.stdout.trim()))
    };
    Ok((id("-u").await?, id("-g").await?))
}

/// Picks a loopback port that is free right now.
fn free_port() -> Result<u16, String> {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("could not find a free loopback port: {e}"))
}

fn failure(what: &str, out: &CommandOutput) -> String {
    format!("{what} failed: {}", out.tail(2000))
}

/// Creates and starts a throwaway cluster.
pub(crate) async fn start(pg_bin: Option<&Path>, durable: bool) -> Result<Cluster, String> {
    let bindir = find_bindir(pg_bin).await?;
    let initdb = bindir.join("initdb");
    let pg_ctl = bindir.join("pg_ctl");

    let dir = std::env::temp_dir().join(format!(
        "durable-pg-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("could not create {}: {e}", dir.display()))?;
    let data = dir.join("data");
    // A directory is owned by the effective uid of its creator: that tells whether we
    // run as root without any libc call.
    let as_root = std::fs::metadata(&dir)
        .map(|m| m.uid() == 0)
        .map_err(|e| format!("could not inspect {}: {e}", dir.display()))?;
    // From here on the watchdog deletes `dir` (and stops the server) on any failure.
    let watchdog = Watchdog::for_cluster(&pg_ctl, &data, &dir, as_root).inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&dir);
    })?;
    if as_root {
        let (uid, gid) = postgres_user_ids().await?;
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
            .map_err(|e| format!("could not hand {} to the postgres user: {e}", dir.display()))?;
    }

    let out = run(
        &initdb,
        &[
            "-D".as_ref(),
            data.as_os_str(),
            "-U".as_ref(),
            "postgres".as_ref(),
            "-A".as_ref(),
            "trust".as_ref(),
            "-E".as_ref(),
            "UTF8".as_ref(),
            "--locale=C".as_ref(),
            "-N".as_ref(),
        ],
        as_root,
        INITDB_TIMEOUT,
    )
    .await
    .map_err(|e| hint_runuser(e, as_root))?;
    if !out.success {
        return Err(failure(
            &format!("{} -D {}", initdb.display(), data.display()),
            &out,
        ));
    }

    let log = dir.join("server.log");
    let mut last_error = String::new();
    for _ in 0..PORT_ATTEMPTS {
        let port = free_port()?;
        let mut conf = String::from("\n# durable-testing throwaway cluster\n");
        conf.push_str("listen_addresses = '127.0.0.1'\n");
        conf.push_str(&format!("port = {port}\n"));
        conf.push_str(&format!(
            "unix_socket_directories = '{}'\n",
            dir.to_string_lossy().replace('\'', "''")
        ));
        for (name, value) in settings(durable) {
            conf.push_str(&format!("{name} = {value}\n"));
        }
        append(&data.join("postgresql.conf"), &conf)?;
        let timeout = START_TIMEOUT_SECS.to_string();
        let out = run(
            &pg_ctl,
            &[
                "start".as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                timeout.as_ref(),
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
            ],
            as_root,
            Duration::from_secs(START_TIMEOUT_SECS + 30),
        )
        .await?;
        if out.success {
            return Ok(Cluster {
                control: ClusterControl {
                    pg_ctl,
                    data,
                    log,
                    as_root,
                },
                dir,
                port,
                watchdog,
            });
        }
        let log_text = std::fs::read_to_string(&log).unwrap_or_default();
        last_error = format!(
            "{}; server log: {}",
            failure("pg_ctl start", &out),
            tail(&log_text, 2000)
        );
        if !log_text.contains("could not bind") && !log_text.contains("already in use") {
            break;
        }
        // Someone took the port between our check and the server's bind: try another.
    }
    Err(last_error)
}

fn hint_runuser(error: String, as_root: bool) -> String {
    if as_root && error.contains("runuser") {
        format!(
            "{error} (running as root, the server is run as the postgres user through \
             `runuser` from util-linux: install it or run the tests as a normal user)"
        )
    } else {
        error
    }
}

fn append(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("could not write {}: {e}", path.display()))
}
