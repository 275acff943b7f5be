//! What a PostgreSQL driver supplies to [`PgStore`](crate::PgStore): run one statement with
//! typed parameters and hand back rows with typed getters, listen for notifications, and run the
//! migration scripts on one connection. Nothing more: retries, error meanings, decoding,
//! reconnecting and the migration protocol live once, in this crate.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use durable_core::{BoxError, StoreError};
use serde_json::Value;
use uuid::Uuid;

/// A PostgreSQL driver: the primitives [`PgStore`](crate::PgStore) is written over.
///
/// An implementation runs the statements of `durable-postgres-sql` as they are given (every
/// parameter type is spelled out in a cast, so a driver can prepare them or send them with their
/// types), and maps its own errors to [`DriverError`] without interpreting them.
///
/// Cheap to clone: clones share the connections. The wake-up listener holds a clone.
pub trait Driver: Clone + fmt::Debug + Send + Sync + 'static {
    /// The name of the store in [`StoreError::Backend`](durable_core::StoreError::Backend),
    /// e.g. `postgres-sqlx`.
    const NAME: &'static str;

    /// A row of a result.
    type Row: Row;

    /// A connection that listens for notifications.
    type Listener: Listener;

    /// Runs `statement` with `params` on a connection of the driver's pool and reads every row.
    ///
    /// The whole call (getting a connection included) must answer within `timeout`; past it,
    /// the driver gives up with [`DriverError::TimedOut`] and closes the connection instead of
    /// returning it to its pool (its state is unknown). After a database error the driver must
    /// not return a connection to its pool before PostgreSQL has rolled the statement back, so
    /// the caller's next call never finds rows still locked by this one.
    fn query(
        &self,
        statement: &str,
        params: &[Param<'_>],
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<Self::Row>, DriverError>> + Send;

    /// Opens a connection of its own (outside the pool) that `LISTEN`s on `channels`, within
    /// `timeout`.
    fn listen(
        &self,
        channels: &[&str],
        timeout: Duration,
    ) -> impl Future<Output = Result<Self::Listener, DriverError>> + Send;
}

/// A driver with a pool of its own, which a [`DurableBuilder`](crate::DurableBuilder) can
/// connect, and which can migrate the database it runs on.
pub trait Connect: Driver {
    /// The driver's connection pool, which applications share for their own queries.
    type Pool: Clone + Send + Sync + 'static;
    /// Connection settings in the driver's own form (what a URL parses into).
    type Config: Clone + Send + Sync + 'static;
    /// Other settings of the driver's own that a builder collects (e.g. a TLS connector).
    type Options: Clone + Default + Send + Sync + 'static;

    /// The pool the driver runs on.
    fn pool(&self) -> &Self::Pool;

    /// Parses a connection URL.
    fn parse_url(url: &str) -> Result<Self::Config, BoxError>;

    /// A driver on a new pool of up to `max_connections` connections made with `config`, one
    /// made at once to check that the database answers.
    fn connect(
        config: Self::Config,
        options: &Self::Options,
        max_connections: u32,
    ) -> impl Future<Output = Result<Self, DriverError>> + Send;

    /// A driver on an existing `pool`; `config`, when given, is what the pool was made with.
    fn from_pool(pool: Self::Pool, config: Option<Self::Config>, options: &Self::Options) -> Self;

    /// Whether the driver has what it needs to open a listening connection ([`Driver::listen`]).
    fn can_listen(&self) -> bool;

    /// Applies the migrations the database lacks ([`migrate::run`](crate::migrate::run)) on a
    /// connection of the pool, closing that connection rather than pooling it if this fails.
    fn migrate(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// A driver that can run a statement on `E`, a connection or transaction of the application
/// (the transactional `_with` methods of [`Durable`](crate::Durable)): the statement then
/// commits or rolls back with the application's transaction.
pub trait RunsOn<'c, E>: Driver {
    /// Runs `statement` with `params` on `executor` and reads every row.
    ///
    /// The future is boxed: callers hold it across `.await` inside futures that must be `Send`,
    /// which the compiler cannot yet prove for an opaque future of a trait with a lifetime
    /// parameter.
    fn run_on<'a>(
        executor: E,
        statement: &'a str,
        params: &'a [Param<'a>],
    ) -> BoxFuture<'a, Result<Vec<Self::Row>, DriverError>>
    where
        E: 'a;
}

/// A boxed future that is `Send`.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A driver whose connections are made with a TLS connector of type `T`
/// ([`DurableBuilder::tls`](crate::DurableBuilder::tls)).
pub trait UsesTls<T>: Connect {
    /// Records `tls` in the builder's options.
    fn use_tls(options: &mut Self::Options, tls: T);
}

/// A row of a result, read column by column. A getter returns `Ok(None)` for SQL `NULL`, and an
/// error when the column is missing or holds another type.
pub trait Row: Send + Sync + 'static {
    /// A `text` column.
    fn text(&self, column: &str) -> Result<Option<&str>, BoxError>;
    /// A `uuid` column.
    fn uuid(&self, column: &str) -> Result<Option<Uuid>, BoxError>;
    /// An `integer` column.
    fn int4(&self, column: &str) -> Result<Option<i32>, BoxError>;
    /// A `bigint` column.
    fn int8(&self, column: &str) -> Result<Option<i64>, BoxError>;
    /// A `boolean` column.
    fn boolean(&self, column: &str) -> Result<Option<bool>, BoxError>;
    /// A `timestamptz` column.
    fn timestamptz(&self, column: &str) -> Result<Option<DateTime<Utc>>, BoxError>;
    /// A `jsonb` (or `json`) column as its JSON text, not parsed: the caller parses it into the
    /// type it expects, row by row.
    fn json(&self, column: &str) -> Result<Option<&str>, BoxError>;
}

/// A connection that listens for notifications (see [`Driver::listen`]).
pub trait Listener: Send + 'static {
    /// The next notification. An error means the connection is lost; the caller drops the
    /// listener and makes another. Cancel-safe: dropping the future loses no notification.
    fn next(&mut self) -> impl Future<Output = Result<Notification, DriverError>> + Send;

    /// Checks that the connection answers (`SELECT 1`). The caller bounds the time it waits.
    fn ping(&mut self) -> impl Future<Output = Result<(), DriverError>> + Send;
}

/// A notification received by a [`Listener`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The channel it was sent on.
    pub channel: String,
    /// Its payload.
    pub payload: String,
}

/// One connection on which the [migration protocol](crate::migrate) runs: a connection of its
/// own, not a pool that may switch connections between calls.
pub trait MigrationConnection: Send {
    /// The driver whose connection this is (its rows, its name in errors).
    type Driver: Driver;

    /// Runs one statement with parameters and reads every row.
    fn query(
        &mut self,
        statement: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<Vec<<Self::Driver as Driver>::Row>, DriverError>> + Send;

    /// Runs a script of several statements without parameters (the simple query protocol).
    fn batch(&mut self, script: &str) -> impl Future<Output = Result<(), DriverError>> + Send;
}

/// A parameter of a statement. The variant is the SQL type the statement's cast names; `None`
/// is SQL `NULL`.
#[derive(Debug, Clone, PartialEq)]
pub enum Param<'a> {
    /// `text`.
    Text(Option<&'a str>),
    /// `uuid`.
    Uuid(Option<Uuid>),
    /// `integer`.
    Int4(Option<i32>),
    /// `bigint`.
    Int8(Option<i64>),
    /// `boolean`.
    Bool(Option<bool>),
    /// `timestamptz`.
    Timestamptz(Option<DateTime<Utc>>),
    /// `jsonb`.
    Jsonb(Option<&'a Value>),
    /// `text[]`.
    TextArray(Vec<Option<&'a str>>),
    /// `uuid[]`.
    UuidArray(Vec<Option<Uuid>>),
    /// `integer[]`.
    Int4Array(Vec<Option<i32>>),
    /// `bigint[]`.
    Int8Array(Vec<Option<i64>>),
    /// `jsonb[]`.
    JsonbArray(Vec<Option<&'a Value>>),
}

/// What a driver reports when a call fails. Drivers do not interpret errors:
/// [`PgStore`](crate::PgStore) decides what each means (a refusal of the stored functions, a
/// transient conflict to retry, a value PostgreSQL cannot take, a backend failure).
#[derive(Debug)]
pub enum DriverError {
    /// PostgreSQL answered with an error.
    Database(DatabaseError),
    /// No answer within the call timeout. The connection was closed; the statement may or may
    /// not have been applied.
    TimedOut(Duration),
    /// A parameter could not be encoded for PostgreSQL.
    Encode(BoxError),
    /// Anything else: no connection, a connection lost, a closed pool, a protocol error.
    Other(BoxError),
}

/// An error PostgreSQL answered with.
#[derive(Debug)]
pub struct DatabaseError {
    /// The SQLSTATE, e.g. `40P01`.
    pub code: String,
    /// The server's primary message.
    pub message: String,
    /// The server's detail, if any.
    pub detail: Option<String>,
    /// The driver's own error.
    pub source: BoxError,
}

impl fmt::Display for DatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (SQLSTATE {})", self.message, self.code)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for DatabaseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriverError::Database(error) => write!(f, "PostgreSQL refused: {error}"),
            DriverError::TimedOut(limit) => write!(
                f,
                "PostgreSQL did not answer within {limit:?}; the connection was closed and the \
                 call may or may not have been applied"
            ),
            DriverError::Encode(error) => {
                write!(f, "a value cannot be sent to PostgreSQL: {error}")
            }
            DriverError::Other(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for DriverError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DriverError::Database(error) => Some(error),
            DriverError::TimedOut(_) => None,
            DriverError::Encode(error) | DriverError::Other(error) => Some(&**error),
        }
    }
}

impl DriverError {
    /// The SQLSTATE, for a database error.
    pub fn code(&self) -> Option<&str> {
        match self {
            DriverError::Database(error) => Some(&error.code),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_error_shows_the_server_message_code_and_detail() {
        let error = DriverError::Database(DatabaseError {
            code: "42501".into(),
            message: "permission denied for table tasks".into(),
            detail: Some("role app lacks SELECT".into()),
            source: "db error".into(),
        });
        assert_eq!(
            error.to_string(),
            "PostgreSQL refused: permission denied for table tasks (SQLSTATE 42501): role app \
             lacks SELECT"
        );
        assert_eq!(error.code(), Some("42501"));
    }
}
