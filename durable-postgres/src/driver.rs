//! What a PostgreSQL driver supplies to [`PgStore`](crate::PgStore): run one statement with
//! typed parameters and hand back rows with typed getters, listen for notifications, and run the
//! migration scripts on one connection. Nothing more: retries, error meanings, decoding,
//! reconnecting and the migration protocol live once, in this crate.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use durable_core::BoxError;

pub use crate::error::{DatabaseError, DriverError};
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

    /// A connection of the driver's pool.
    type Connection: Connection<Row = Self::Row>;

    /// A connection that listens for notifications.
    type Listener: Listener;

    /// A connection of the pool, once one is free. Dropping it returns it to the pool. The
    /// caller bounds the time it waits, and dropping the future gives the wait up.
    fn acquire(&self) -> impl Future<Output = Result<Self::Connection, DriverError>> + Send;

    /// Runs `statement` with `params` on a connection of the pool within `timeout` (waiting for
    /// the connection included) and reads every row. Provided: drivers do not override it.
    ///
    /// A connection whose call was given up is closed, not pooled: its state is unknown, and a
    /// peer that vanished without a word would otherwise hold a slot of the pool for good. After
    /// a database error, the connection is pinged before it goes back to the pool: PostgreSQL
    /// reports an error before it rolls the statement back, so the answer to the ping means the
    /// rollback is done, and the caller's next call never finds rows still locked by this one.
    fn query(
        &self,
        statement: &str,
        params: &[Param<'_>],
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<Self::Row>, DriverError>> + Send {
        async move {
            let mut connection = tokio::time::timeout(timeout, self.acquire())
                .await
                .map_err(|_| DriverError::TimedOut(timeout))??;
            match tokio::time::timeout(timeout, connection.query(statement, params)).await {
                Ok(Ok(rows)) => Ok(rows),
                Ok(Err(error)) => {
                    match tokio::time::timeout(timeout, connection.batch("SELECT 1")).await {
                        Ok(Ok(())) => {}
                        Ok(Err(ping)) => {
                            tracing::debug!(error = %ping, "connection unusable after an error");
                            connection.discard();
                        }
                        Err(_) => connection.discard(),
                    }
                    Err(error)
                }
                Err(_) => {
                    connection.discard();
                    Err(DriverError::TimedOut(timeout))
                }
            }
        }
    }

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

    /// A driver on a new pool made with `config` and `settings`, one connection made at once
    /// to check that the database answers.
    fn connect(
        config: Self::Config,
        options: &Self::Options,
        settings: &PoolSettings<Self::Config>,
    ) -> impl Future<Output = Result<Self, DriverError>> + Send;

    /// A driver on an existing `pool`; `config`, when given, is what the pool was made with.
    fn from_pool(
        pool: Self::Pool,
        config: Option<Self::Config>,
        options: &Self::Options,
        settings: &PoolSettings<Self::Config>,
    ) -> Self;

    /// Whether the driver has what it needs to open a listening connection ([`Driver::listen`]).
    fn can_listen(&self) -> bool;
}

/// How a driver uses its connections, beyond where they go: what a
/// [`DurableBuilder`](crate::DurableBuilder) collects for it.
#[derive(Debug, Clone)]
pub struct PoolSettings<C> {
    /// The most connections of a pool the driver makes. Default 10.
    pub max_connections: u32,
    /// The connections go through a connection pooler in transaction mode (PgBouncer's
    /// `pool_mode = transaction`): no statement is prepared on a connection, each is sent with
    /// its values in one exchange. Default `false`.
    pub transaction_pooler: bool,
    /// Where the `LISTEN` connection goes, when not where the pool's connections go (a direct
    /// connection beside a pooler that breaks `LISTEN`).
    pub listen: Option<C>,
}

impl<C> Default for PoolSettings<C> {
    fn default() -> Self {
        PoolSettings {
            max_connections: 10,
            transaction_pooler: false,
            listen: None,
        }
    }
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
    /// Statements run as the driver's [`PoolSettings`] say (prepared or not).
    fn run_on<'a>(
        &self,
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

/// A row of a result, read column by column. The driver decodes every column type `durable`
/// reads ([`Decodes`] for `text` as `&str` or `String`, `uuid`, `integer` as `i32`, `bigint` as
/// `i64`, `boolean`, `timestamptz`) and hands out `jsonb` as its text.
pub trait Row: Send + Sync + 'static
where
    Self: for<'r> Decodes<'r, &'r str>
        + for<'r> Decodes<'r, String>
        + for<'r> Decodes<'r, Uuid>
        + for<'r> Decodes<'r, i32>
        + for<'r> Decodes<'r, i64>
        + for<'r> Decodes<'r, bool>
        + for<'r> Decodes<'r, DateTime<Utc>>,
{
    /// A `jsonb` (or `json`) column as its JSON text, not parsed: the caller parses it into the
    /// type it expects, row by row. `Ok(None)` for SQL `NULL`.
    fn json(&self, column: &str) -> Result<Option<&str>, BoxError>;
}

/// A row whose columns the driver decodes into `T` (see [`Row`]).
pub trait Decodes<'r, T> {
    /// Column `column` as a `T`: `Ok(None)` for SQL `NULL`, an error when the row has no such
    /// column or its type does not read as a `T`.
    fn decode(&'r self, column: &str) -> Result<Option<T>, BoxError>;
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

/// One connection: of the driver's pool ([`Driver::acquire`]), or one the application holds
/// (the migration protocol runs on either).
pub trait Connection: Send {
    /// A row of a result.
    type Row: Row;

    /// Runs one statement with parameters (the extended query protocol) and reads every row.
    /// The caller bounds the time it waits; a call given up leaves the connection in an unknown
    /// state, and the caller then [discards](Connection::discard) it.
    fn query(
        &mut self,
        statement: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<Vec<Self::Row>, DriverError>> + Send;

    /// Runs a script of statements without parameters (the simple query protocol).
    fn batch(&mut self, script: &str) -> impl Future<Output = Result<(), DriverError>> + Send;

    /// Closes a connection of the pool instead of returning it (its state is unknown, or it
    /// holds a session lock). A connection the application holds is left to the application.
    fn discard(self);
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// What a fake connection does when asked a statement.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Answer {
        Rows,
        Refuse,
        Hang,
    }

    /// A driver whose connections answer as told and report what happened to them.
    #[derive(Debug, Clone)]
    struct Fake {
        statement: Answer,
        ping: Answer,
        log: Arc<Mutex<Vec<&'static str>>>,
    }

    impl Fake {
        fn new(statement: Answer, ping: Answer) -> Self {
            Fake {
                statement,
                ping,
                log: Arc::default(),
            }
        }

        fn log(&self) -> Vec<&'static str> {
            self.log.lock().map(|log| log.clone()).unwrap_or_default()
        }
    }

    struct FakeRow;

    impl<'r, T> Decodes<'r, T> for FakeRow {
        fn decode(&'r self, _column: &str) -> Result<Option<T>, BoxError> {
            Err("no columns".into())
        }
    }

    impl Row for FakeRow {
        fn json(&self, _column: &str) -> Result<Option<&str>, BoxError> {
            Err("no columns".into())
        }
    }

    struct FakeConnection(Fake);

    impl FakeConnection {
        async fn answer(&self, answer: Answer, what: &'static str) -> Result<(), DriverError> {
            if let Ok(mut log) = self.0.log.lock() {
                log.push(what);
            }
            match answer {
                Answer::Rows => Ok(()),
                Answer::Refuse => Err(DriverError::Database(DatabaseError {
                    code: "UD001".into(),
                    message: "refused".into(),
                    detail: None,
                    source: "fake".into(),
                })),
                Answer::Hang => std::future::pending().await,
            }
        }
    }

    impl Connection for FakeConnection {
        type Row = FakeRow;

        async fn query(
            &mut self,
            _statement: &str,
            _params: &[Param<'_>],
        ) -> Result<Vec<FakeRow>, DriverError> {
            self.answer(self.0.statement, "query").await?;
            Ok(vec![FakeRow])
        }

        async fn batch(&mut self, _script: &str) -> Result<(), DriverError> {
            self.answer(self.0.ping, "ping").await
        }

        fn discard(self) {
            if let Ok(mut log) = self.0.log.lock() {
                log.push("discard");
            }
        }
    }

    struct NoListener;

    impl Listener for NoListener {
        async fn next(&mut self) -> Result<Notification, DriverError> {
            std::future::pending().await
        }

        async fn ping(&mut self) -> Result<(), DriverError> {
            Ok(())
        }
    }

    impl Driver for Fake {
        const NAME: &'static str = "fake";
        type Row = FakeRow;
        type Connection = FakeConnection;
        type Listener = NoListener;

        async fn acquire(&self) -> Result<FakeConnection, DriverError> {
            Ok(FakeConnection(self.clone()))
        }

        async fn listen(
            &self,
            _channels: &[&str],
            _timeout: Duration,
        ) -> Result<NoListener, DriverError> {
            Ok(NoListener)
        }
    }

    const LIMIT: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn an_answered_call_returns_its_connection_untouched() {
        let fake = Fake::new(Answer::Rows, Answer::Rows);
        let rows = fake.query("SELECT", &[], LIMIT).await;
        assert_eq!(rows.map(|rows| rows.len()).ok(), Some(1));
        assert_eq!(fake.log(), ["query"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_call_waits_for_the_rollback_before_the_connection_goes_back() {
        let fake = Fake::new(Answer::Refuse, Answer::Rows);
        let error = fake.query("SELECT", &[], LIMIT).await.err();
        assert_eq!(error.as_ref().and_then(DriverError::code), Some("UD001"));
        assert_eq!(fake.log(), ["query", "ping"]);

        // A connection that does not answer the ping, or fails it, is not pooled again.
        for ping in [Answer::Hang, Answer::Refuse] {
            let fake = Fake::new(Answer::Refuse, ping);
            assert!(fake.query("SELECT", &[], LIMIT).await.is_err());
            assert_eq!(fake.log(), ["query", "ping", "discard"], "{ping:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_without_an_answer_in_time_closes_its_connection() {
        let fake = Fake::new(Answer::Hang, Answer::Rows);
        let started = tokio::time::Instant::now();
        let error = fake.query("SELECT", &[], LIMIT).await.err();
        assert!(matches!(error, Some(DriverError::TimedOut(limit)) if limit == LIMIT));
        assert_eq!(started.elapsed(), LIMIT);
        assert_eq!(fake.log(), ["query", "discard"]);
    }
}
