//! Small helpers shared by the server sources: connection URLs, connecting, running
//! external commands with a time limit.

use std::ffi::OsStr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::error::{FixtureError, redact_url};

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A server URL without its database part, able to name any database on the server.
#[derive(Debug, Clone)]
pub(crate) enum UrlBase {
    /// `scheme://authority` and the query string (with its `?`, or empty).
    Url { prefix: String, query: String },
    /// libpq key=value form; `dbname=` is appended (later keys win).
    KeyValue(String),
}

impl UrlBase {
    /// Splits a server URL (URL or key=value form) into a reusable base.
    pub(crate) fn parse(url: &str) -> UrlBase {
        let url = url.trim();
        let Some(scheme_end) = url.find("://") else {
            return UrlBase::KeyValue(url.to_owned());
        };
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let prefix = url[..scheme_end + 3 + authority_end].to_owned();
        let query = rest[authority_end..]
            .find('?')
            .map(|q| rest[authority_end + q..].to_owned())
            .unwrap_or_default();
        UrlBase::Url { prefix, query }
    }

    /// The URL of database `db` on this server.
    pub(crate) fn url_for(&self, db: &str) -> String {
        match self {
            UrlBase::Url { prefix, query } => format!("{prefix}/{}{query}", percent_encode(db)),
            UrlBase::KeyValue(kv) => {
                let quoted = db.replace('\\', "\\\\").replace('\'', "\\'");
                format!("{kv} dbname='{quoted}'")
            }
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Connects to `url` without TLS and drives the connection on a spawned task.
pub(crate) async fn connect(url: &str) -> Result<tokio_postgres::Client, FixtureError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(FixtureError::NoRuntime);
    }
    let connecting = tokio_postgres::connect(url, tokio_postgres::NoTls);
    let (client, connection) = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(source)) => {
            return Err(FixtureError::Connect {
                url: redact_url(url),
                source,
            });
        }
        Err(_) => {
            return Err(FixtureError::ConnectTimeout {
                url: redact_url(url),
                seconds: CONNECT_TIMEOUT.as_secs(),
            });
        }
    };
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "durable-testing: admin connection ended with an error");
        }
    });
    Ok(client)
}

/// Connects to `url` until it works or `within` has passed (a server that just printed
/// its readiness line may still be setting up its port mapping).
pub(crate) async fn wait_until_connectable(
    url: &str,
    within: Duration,
) -> Result<(), FixtureError> {
    let deadline = Instant::now() + within;
    loop {
        let attempt = async {
            let client = connect(url).await?;
            client
                .simple_query("SELECT 1")
                .await
                .map_err(|source| FixtureError::Admin {
                    context: format!("checking the server at {}", redact_url(url)),
                    source,
                })
        };
        match attempt.await {
            Ok(_) => return Ok(()),
            Err(FixtureError::NoRuntime) => return Err(FixtureError::NoRuntime),
            Err(error) if Instant::now() >= deadline => return Err(error),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// What an external command did.
#[derive(Debug)]
pub(crate) struct CommandOutput {
    /// Whether it exited with status 0.
    pub(crate) success: bool,
    /// Its standard output, lossily decoded.
    pub(crate) stdout: String,
    /// Its standard error, lossily decoded.
    pub(crate) stderr: String,
}

impl CommandOutput {
    /// stdout and stderr together, trimmed to the last `max` characters, for messages.
    pub(crate) fn tail(&self, max: usize) -> String {
        tail(&format!("{}{}", self.stdout, self.stderr), max).to_owned()
    }
}

/// The last `max` characters of `text`, trimmed.
pub(crate) fn tail(text: &str, max: usize) -> &str {
    let text = text.trim();
    let start = text
        .char_indices()
        .rev()
        .nth(max.saturating_sub(1))
        .map(|(i, _)| i)
        .unwrap_or(0);
    &text[start..]
}

/// Runs `program args...` (optionally as the `postgres` OS user through `runuser`), with
/// stdin closed, in its own process group, killed if it takes longer than `timeout`.
/// `Err` carries a message for a command that could not be started or timed out.
pub(crate) async fn run<S: AsRef<OsStr>>(
    program: impl AsRef<OsStr>,
    args: &[S],
    as_postgres: bool,
    timeout: Duration,
) -> Result<CommandOutput, String> {
    let program = program.as_ref();
    let mut command = if as_postgres {
        let mut c = tokio::process::Command::new("runuser");
        c.args([OsStr::new("-u"), OsStr::new("postgres"), OsStr::new("--")])
            .arg(program);
        c
    } else {
        tokio::process::Command::new(program)
    };
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let shown = if as_postgres {
        format!("runuser -u postgres -- {}", program.to_string_lossy())
    } else {
        program.to_string_lossy().into_owned()
    };
    let child = command.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!("`{shown}` was not found")
        } else {
            format!("could not run `{shown}`: {e}")
        }
    })?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) => Ok(CommandOutput {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }),
        Ok(Err(e)) => Err(format!("waiting for `{shown}` failed: {e}")),
        Err(_) => Err(format!(
            "`{shown}` did not finish within {} s",
            timeout.as_secs()
        )),
    }
}

/// Whether an environment variable is set to a true value (anything but empty, `0`,
/// `false`, `no` or `off`).
pub(crate) fn env_flag(name: &str) -> bool {
    match std::env::var(name) {
        Ok(v) => !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "" | "0" | "false" | "no" | "off"
        ),
        Err(_) => false,
    }
}

/// The value of an environment variable, if set and not blank.
pub(crate) fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// 64-bit FNV-1a: a hash that is the same in every process and every build.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::UrlBase;

    #[test]
    fn url_for_replaces_the_database() {
        let base = UrlBase::parse("postgres://u:p@127.0.0.1:5432/postgres?sslmode=disable");
        assert_eq!(
            base.url_for("db_1"),
            "postgres://u:p@127.0.0.1:5432/db_1?sslmode=disable"
        );
        let base = UrlBase::parse("postgresql://u@localhost");
        assert_eq!(base.url_for("x y"), "postgresql://u@localhost/x%20y");
        let base = UrlBase::parse("host=127.0.0.1 user=u dbname=postgres");
        assert_eq!(
            base.url_for("db"),
            "host=127.0.0.1 user=u dbname=postgres dbname='db'"
        );
    }
}
