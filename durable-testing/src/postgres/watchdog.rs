//! A child process that cleans up a server when this process goes away.
//!
//! The shared server lives in a `static`, which Rust never drops, so the container or
//! cluster would outlive the test process. The watchdog is a small `sh` script whose
//! stdin is a pipe from this process: it blocks reading it, and the kernel closes the
//! pipe when this process exits, however it exits (normal end, panic, `SIGKILL`). The
//! script then removes the container or stops the cluster and deletes its directory.
//! It runs in its own process group so that a Ctrl-C aimed at `cargo test` does not kill
//! it before it did its job. Dropping a [`Watchdog`] (an owned `PgServer`, or a failed
//! start) closes the pipe too, which triggers the same clean-up right away.

use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

use std::os::unix::process::CommandExt;

/// The clean-up script; `$1` selects the action, the other arguments are its inputs.
const SCRIPT: &str = r#"
trap '' INT HUP PIPE
read -r _ignored || :
case "$1" in
docker)
    docker rm -f -v "$2" >/dev/null 2>&1
    ;;
cluster)
    # $2: run as postgres (1/0), $3: pg_ctl, $4: data dir, $5: dir to delete
    if [ "$2" = 1 ]; then
        runuser -u postgres -- "$3" stop -D "$4" -m immediate -w -t 30 >/dev/null 2>&1
    else
        "$3" stop -D "$4" -m immediate -w -t 30 >/dev/null 2>&1
    fi
    if [ -f "$4/postmaster.pid" ] && read -r pid < "$4/postmaster.pid"; then
        kill -QUIT "$pid" >/dev/null 2>&1
    fi
    rm -rf -- "$5"
    ;;
esac
"#;

/// Runs the clean-up of a server when dropped or when this process exits.
#[derive(Debug)]
pub(crate) struct Watchdog {
    /// Write end of the watchdog's stdin; closing it triggers the clean-up.
    stdin: Option<ChildStdin>,
    /// The watchdog process, reaped on drop.
    child: Option<Child>,
}

impl Watchdog {
    /// A watchdog that runs `docker rm -f -v <container>` (a name or an id).
    pub(crate) fn for_container(container: &str) -> Result<Watchdog, String> {
        Self::spawn(&["docker", container])
    }

    /// A watchdog that stops the cluster in `data_dir` with `pg_ctl stop -m immediate`
    /// (through `runuser -u postgres` if `as_postgres`) and deletes `dir`.
    pub(crate) fn for_cluster(
        pg_ctl: &Path,
        data_dir: &Path,
        dir: &Path,
        as_postgres: bool,
    ) -> Result<Watchdog, String> {
        let as_postgres = if as_postgres { "1" } else { "0" };
        Self::spawn(&[
            "cluster",
            as_postgres,
            &pg_ctl.to_string_lossy(),
            &data_dir.to_string_lossy(),
            &dir.to_string_lossy(),
        ])
    }

    fn spawn(args: &[&str]) -> Result<Watchdog, String> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("durable-testing-watchdog")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| {
                format!(
                    "could not start the clean-up watchdog (`sh -c ...`): {e}; is `sh` installed?"
                )
            })?;
        let stdin = child.stdin.take();
        Ok(Watchdog {
            stdin,
            child: Some(child),
        })
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Closing the pipe makes the script run its clean-up now.
        drop(self.stdin.take());
        if let Some(mut child) = self.child.take() {
            // Reap it in the background so that it does not linger as a zombie, without
            // blocking the caller (which may be an async task).
            let reaper = std::thread::Builder::new()
                .name("durable-testing-watchdog-reaper".to_owned())
                .spawn(move || {
                    let _ = child.wait();
                });
            if let Err(error) = reaper {
                tracing::debug!(%error, "durable-testing: could not reap the watchdog process");
            }
        }
    }
}
