//! [`Executor`]: what a transactional spawn or emit runs on, and the two calls made on it.

use std::future::Future;
use std::pin::Pin;

use durable_postgres::Param;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::values::to_sql;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A connection, or a transaction on one, that [`Durable::spawn_with`](durable_postgres::Durable::spawn_with)
/// and the other `_with` methods run on: the statement runs there, so a spawn inside a
/// transaction exists if and only if that transaction commits.
///
/// Implemented for what applications hold:
///
/// - [`tokio_postgres::Client`] and [`tokio_postgres::Transaction`]: the statement is sent with
///   its parameter types (`query_typed`), one round trip, nothing prepared on the connection;
/// - [`deadpool_postgres::Object`] (the pool's client), [`deadpool_postgres::ClientWrapper`]
///   and [`deadpool_postgres::Transaction`]: the statement is prepared once per connection
///   through the pool's statement cache;
/// - references (`&C`, `&mut C`) to any of these.
///
/// The trait is sealed: the list above is complete. A `deadpool_postgres::Transaction` is not a
/// `tokio_postgres::GenericClient` (deadpool has its own), which is why this trait exists.
pub trait Executor: private::Sealed {}

pub(crate) mod private {
    use super::*;

    /// The method behind [`Executor`](super::Executor), out of users' reach.
    #[allow(unreachable_pub)] // sealed-trait pattern: public, but not nameable outside the crate
    pub trait Sealed: Send + Sync {
        /// Runs one of the statements of `durable-postgres-sql` with `params`; prepared once
        /// per connection where the executor caches statements and `prepare` allows it, else
        /// sent with its parameter types in one exchange.
        fn run<'a>(
            &'a self,
            statement: &'a str,
            params: &'a [Param<'a>],
            prepare: bool,
        ) -> BoxFuture<'a, Result<Vec<Row>, tokio_postgres::Error>>;
    }
}

/// Sends the statement with its parameter types: one round trip, nothing left prepared.
macro_rules! typed_executor {
    ($($ty:ty),*) => {$(
        impl private::Sealed for $ty {
            fn run<'a>(
                &'a self,
                statement: &'a str,
                params: &'a [Param<'a>],
                _prepare: bool,
            ) -> BoxFuture<'a, Result<Vec<Row>, tokio_postgres::Error>> {
                Box::pin(async move {
                    let typed: Vec<_> = params.iter().map(to_sql).collect();
                    self.query_typed(statement, &typed).await
                })
            }
        }
        impl Executor for $ty {}
    )*};
}

/// Prepares the statement once per connection through deadpool's statement cache (unless told
/// not to: behind a pooler in transaction mode, a statement prepared on one server connection
/// may be executed on another).
macro_rules! cached_executor {
    ($($ty:ty),*) => {$(
        impl private::Sealed for $ty {
            fn run<'a>(
                &'a self,
                statement: &'a str,
                params: &'a [Param<'a>],
                prepare: bool,
            ) -> BoxFuture<'a, Result<Vec<Row>, tokio_postgres::Error>> {
                Box::pin(async move {
                    if !prepare {
                        let typed: Vec<_> = params.iter().map(to_sql).collect();
                        return self.query_typed(statement, &typed).await;
                    }
                    let prepared = self.prepare_cached(statement).await?;
                    let values: Vec<&(dyn ToSql + Sync)> =
                        params.iter().map(|param| to_sql(param).0).collect();
                    self.query(&prepared, &values).await
                })
            }
        }
        impl Executor for $ty {}
    )*};
}

typed_executor!(tokio_postgres::Client, tokio_postgres::Transaction<'_>);
cached_executor!(
    deadpool_postgres::Object,
    deadpool_postgres::ClientWrapper,
    deadpool_postgres::Transaction<'_>
);

impl<C: private::Sealed + ?Sized> private::Sealed for &C {
    fn run<'a>(
        &'a self,
        statement: &'a str,
        params: &'a [Param<'a>],
        prepare: bool,
    ) -> BoxFuture<'a, Result<Vec<Row>, tokio_postgres::Error>> {
        (**self).run(statement, params, prepare)
    }
}
impl<C: Executor + ?Sized> Executor for &C {}

impl<C: private::Sealed + ?Sized> private::Sealed for &mut C {
    fn run<'a>(
        &'a self,
        statement: &'a str,
        params: &'a [Param<'a>],
        prepare: bool,
    ) -> BoxFuture<'a, Result<Vec<Row>, tokio_postgres::Error>> {
        (**self).run(statement, params, prepare)
    }
}
impl<C: Executor + ?Sized> Executor for &mut C {}
