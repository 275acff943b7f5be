//! The PostgreSQL store of `durable`, written once over a small [`Driver`] trait.
//!
//! `durable-postgres-sql` holds the schema and the statement texts; this crate holds everything
//! about running them that does not depend on the driver:
//!
//! - [`PgStore`], the one [`Store`](durable_core::Store) implementation on PostgreSQL: the
//!   parameters of every statement, the reading of every row, what each error means
//!   (the refusals of the stored functions, values PostgreSQL cannot take, backend failures),
//!   the retry of deadlocks and serialization failures, and the inputs checked at its boundary;
//! - the wake-up listener: reconnecting with backoff, checking a quiet connection, and handing
//!   out the per-queue signals;
//! - the [migration protocol](migrate::run): lock, versions, one transaction per migration,
//!   unlock;
//! - the client [`Durable`] and its [`DurableBuilder`], with the transactional methods that
//!   spawn and emit on the application's own connection or transaction ([`RunsOn`]);
//! - the [`calls`] those methods make, the same statements and readers as the store's.
//!
//! An adapter (`durable-postgres-sqlx`, `durable-postgres-native`) supplies a [`Driver`]: take a
//! [`Connection`] of its pool, run a statement there with typed [`Param`]s and hand back
//! [`Row`]s, run a script, report a database error as its SQLSTATE and message, open a
//! [`Listener`]; make a pool ([`Connect`]); and run a statement on the
//! application's connections and transactions ([`RunsOn`]). It names the client for its driver
//! (`durable_postgres_sqlx::Durable` is `Durable<SqlxDriver>`).
//!
//! A new store verb is written in SQL once (`durable-postgres-sql`) and here once, never in an
//! adapter.

mod claim;
mod client;
mod decode;
mod driver;
mod error;
mod inspect;
mod listener;
mod store;

pub mod calls;
pub mod literal;
pub mod migrate;

pub use client::{DATABASE_URL_ENV, Durable, DurableBuilder};
pub use driver::{
    BoxFuture, Connect, Connection, DatabaseError, Decodes, Driver, DriverError, Listener,
    Notification, Param, PoolSettings, Row, RunsOn, UsesTls,
};
pub use store::{DEFAULT_CALL_TIMEOUT, PgStore};
