//! The fixture's error type.

use std::error::Error as StdError;

/// What went wrong while providing a PostgreSQL server or database to a test.
///
/// Every message says what to install, set or check; the `Display` output includes
/// the underlying cause (for example the server's own error text).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FixtureError {
    /// No server could be provided: none of the three sources worked. The message lists
    /// why each source failed and how to make one of them work.
    #[error("{0}")]
    NoServer(String),
    /// [`PgServer::shared`](super::PgServer::shared) failed earlier in this process; the
    /// failure is remembered so that every test reports it without retrying.
    #[error("the shared PostgreSQL test server could not be started earlier in this process: {0}")]
    SharedUnavailable(String),
    /// `DURABLE_TEST_DATABASE_URL` (or an explicit URL) is set but the server cannot be used.
    #[error(
        "DURABLE_TEST_DATABASE_URL is set to {url} but it cannot be used: {reason}. Fix the URL \
         (postgres://USER:PASSWORD@HOST:PORT/DB, a user allowed to CREATE DATABASE; TLS is not \
         supported) or unset it to let the fixture start its own server"
    )]
    EnvUrl {
        /// The URL with its password hidden.
        url: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A template key passed to [`TestDatabase::create`](super::TestDatabase::create) is not
    /// made of `[a-z0-9_]` or is longer than 40 characters.
    #[error(
        "invalid template key {key:?}: {reason} (use 1 to 40 characters from [a-z0-9_], for \
         example `durable_` followed by a hash of the migrations)"
    )]
    InvalidTemplateKey {
        /// The key as given.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Connecting to the server failed.
    #[error("could not connect to PostgreSQL at {url}: {source}")]
    Connect {
        /// The URL with its password hidden.
        url: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// Connecting to the server did not finish in time.
    #[error("connecting to PostgreSQL at {url} timed out after {seconds} s")]
    ConnectTimeout {
        /// The URL with its password hidden.
        url: String,
        /// The time allowed.
        seconds: u64,
    },
    /// An administrative statement (create/drop database, advisory lock, ...) failed.
    #[error("{context}: {source}")]
    Admin {
        /// What the fixture was doing.
        context: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The migration hook given to [`TestDatabase::create`](super::TestDatabase::create)
    /// failed; the half-made template was dropped.
    #[error("the migration hook for template database {template} failed: {source}")]
    Migrate {
        /// The template database's name.
        template: String,
        /// The hook's error.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The fixture was used outside of a Tokio runtime.
    #[error(
        "the PostgreSQL test fixture must be used from within a Tokio runtime (for example in a \
         #[tokio::test] with the runtime's I/O and time drivers enabled)"
    )]
    NoRuntime,
    /// [`PgServer::restart`](super::PgServer::restart) failed, or the server is not a local
    /// cluster started by this fixture (only those can be restarted).
    #[error("could not restart the PostgreSQL server: {0}")]
    Restart(String),
}

/// Hides the password of a `postgres://user:password@host/db` URL, for messages.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        // key=value form: hide a password=... pair.
        return url
            .split_whitespace()
            .map(|kv| {
                if kv.starts_with("password=") {
                    "password=***"
                } else {
                    kv
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &authority[..colon],
            &url[scheme_end + 3 + at..]
        ),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@127.0.0.1:5432/db?x=1"),
            "postgres://u:***@127.0.0.1:5432/db?x=1"
        );
        assert_eq!(
            redact_url("postgres://u@127.0.0.1/db"),
            "postgres://u@127.0.0.1/db"
        );
        assert_eq!(
            redact_url("host=127.0.0.1 password=secret user=u"),
            "host=127.0.0.1 password=*** user=u"
        );
    }
}
