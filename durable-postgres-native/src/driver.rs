//! [`NativeDriver`]: the primitives of [`PgStore`](durable_postgres::PgStore) on a
//! `deadpool_postgres::Pool` of tokio-postgres connections.

use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use durable_core::BoxError;
use durable_postgres::{
    BoxFuture, Connect, Connection, Driver, DriverError, Param, PoolSettings, RunsOn, UsesTls,
};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Socket};

use crate::connect::TlsConnector;
use crate::executor::Executor;
use crate::executor::private::Sealed;
use crate::listener::{NativeListener, listen_statement};
use crate::values::{NativeRow, pg_error, pool_error, rows};

/// TCP keepalive idle time of the listener connection, so that a silently dropped connection
/// is noticed (and made again) within about a minute rather than hours.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);

/// The driver of `durable`'s PostgreSQL store on a [`deadpool_postgres::Pool`] of tokio-postgres
/// connections: each statement is prepared once per connection (the pool's statement cache).
///
/// A deadpool pool drives its connections itself and drops their notifications, and does not
/// reveal its settings: to listen for wake-ups, the driver makes a connection of its own from
/// the [`tokio_postgres::Config`] it is given ([`NativeDriver::new`], [`NativeDriver::with_tls`]).
/// A driver made from a pool alone (`From<Pool>`) serves poll-only stores
/// ([`PgStore::poll_only`](durable_postgres::PgStore::poll_only)).
#[derive(Debug, Clone)]
pub struct NativeDriver {
    pool: Pool,
    /// How to make the listening connection; `None`: the driver cannot listen.
    listen: Option<ListenSettings>,
    /// Whether statements are prepared once per connection (not behind a pooler in
    /// transaction mode: they are then sent with their types in one exchange).
    prepare: bool,
}

#[derive(Debug, Clone)]
struct ListenSettings {
    config: tokio_postgres::Config,
    connector: TlsConnector,
}

impl NativeDriver {
    /// The driver on `pool`, listening on a connection made from `config` without TLS.
    /// `config` is normally the one the pool was made from.
    pub fn new(pool: Pool, config: tokio_postgres::Config) -> Self {
        Self::with_connector(pool, config, TlsConnector::no_tls())
    }

    /// The driver on `pool`, listening on a connection made from `config` with the TLS
    /// connector `tls` (for example `postgres-native-tls`'s or `tokio-postgres-rustls`'s
    /// `MakeTlsConnector`, the one the pool's manager was given).
    pub fn with_tls<T>(pool: Pool, config: tokio_postgres::Config, tls: T) -> Self
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send + Sync,
        T::TlsConnect: Send + Sync,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        Self::with_connector(pool, config, TlsConnector::new(tls))
    }

    pub(crate) fn with_connector(
        pool: Pool,
        mut config: tokio_postgres::Config,
        connector: TlsConnector,
    ) -> Self {
        if config.get_keepalives_idle() > KEEPALIVE_IDLE {
            config.keepalives_idle(KEEPALIVE_IDLE);
        }
        NativeDriver {
            pool,
            listen: Some(ListenSettings { config, connector }),
            prepare: true,
        }
    }

    /// The driver of `pool` as `settings` say: listening where they say (else with `config`,
    /// if given), statements prepared unless behind a transaction pooler.
    fn with_settings(
        pool: Pool,
        config: Option<tokio_postgres::Config>,
        connector: &TlsConnector,
        settings: &PoolSettings<tokio_postgres::Config>,
    ) -> Self {
        let mut driver = match settings.listen.clone().or(config) {
            Some(config) => Self::with_connector(pool, config, connector.clone()),
            None => NativeDriver::from(pool),
        };
        driver.prepare = !settings.transaction_pooler;
        driver
    }
}

impl From<Pool> for NativeDriver {
    /// A driver without the settings to listen: for poll-only stores.
    fn from(pool: Pool) -> Self {
        NativeDriver {
            pool,
            listen: None,
            prepare: true,
        }
    }
}

impl Driver for NativeDriver {
    const NAME: &'static str = "postgres-native";
    type Row = NativeRow;
    type Connection = NativeConnection<'static>;
    type Listener = NativeListener;

    async fn acquire(&self) -> Result<NativeConnection<'static>, DriverError> {
        let object = self.pool.get().await.map_err(pool_error)?;
        Ok(NativeConnection {
            held: Held::Pooled(object),
            prepare: self.prepare,
        })
    }

    async fn listen(
        &self,
        channels: &[&str],
        timeout: Duration,
    ) -> Result<NativeListener, DriverError> {
        let Some(settings) = &self.listen else {
            return Err(DriverError::Other(
                "this driver was made from a pool alone and has no connection settings to \
                 LISTEN with: make it with NativeDriver::new(pool, config)"
                    .into(),
            ));
        };
        settings
            .connector
            .0
            .listen(settings.config.clone(), listen_statement(channels), timeout)
            .await
    }
}

/// A connection: of the pool (statements prepared once per connection, unless behind a pooler
/// in transaction mode), or the application's (`migrate_connection`; statements sent with their
/// types).
#[derive(Debug)]
pub struct NativeConnection<'c> {
    held: Held<'c>,
    prepare: bool,
}

// A connection of the pool is the common case, taken for every call: not boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Held<'c> {
    Pooled(Object),
    Borrowed(&'c Client),
}

impl<'c> NativeConnection<'c> {
    /// The application's connection.
    pub(crate) fn borrowed(client: &'c Client) -> Self {
        NativeConnection {
            held: Held::Borrowed(client),
            prepare: false,
        }
    }

    fn client(&self) -> &Client {
        match &self.held {
            Held::Pooled(object) => object,
            Held::Borrowed(client) => client,
        }
    }
}

impl Connection for NativeConnection<'_> {
    type Row = NativeRow;

    async fn query(
        &mut self,
        statement: &str,
        params: &[Param<'_>],
    ) -> Result<Vec<NativeRow>, DriverError> {
        let found = match &self.held {
            Held::Pooled(object) => object.run(statement, params, self.prepare).await,
            Held::Borrowed(client) => client.run(statement, params, self.prepare).await,
        };
        found.map(rows).map_err(pg_error)
    }

    async fn batch(&mut self, script: &str) -> Result<(), DriverError> {
        self.client().batch_execute(script).await.map_err(pg_error)
    }

    fn discard(self) {
        if let Held::Pooled(object) = self.held {
            drop(Object::take(object));
        }
    }
}

impl Connect for NativeDriver {
    type Pool = Pool;
    type Config = tokio_postgres::Config;
    /// The TLS connector: none unless [`DurableBuilder::tls`](crate::DurableBuilder) gives one.
    type Options = TlsConnector;

    fn pool(&self) -> &Pool {
        &self.pool
    }

    fn parse_url(url: &str) -> Result<tokio_postgres::Config, BoxError> {
        Ok(url.parse()?)
    }

    async fn connect(
        config: tokio_postgres::Config,
        connector: &TlsConnector,
        settings: &PoolSettings<tokio_postgres::Config>,
    ) -> Result<Self, DriverError> {
        let max = usize::try_from(settings.max_connections).unwrap_or(usize::MAX);
        let pool = connector
            .pool(config.clone(), max)
            .map_err(|e| DriverError::Other(Box::new(e)))?;
        // Fail here when the database does not answer.
        drop(pool.get().await.map_err(pool_error)?);
        Ok(Self::with_settings(pool, Some(config), connector, settings))
    }

    /// Without `config` (or a `LISTEN` connection of the `settings`), the driver cannot listen:
    /// a pool does not reveal its settings.
    fn from_pool(
        pool: Pool,
        config: Option<tokio_postgres::Config>,
        connector: &TlsConnector,
        settings: &PoolSettings<tokio_postgres::Config>,
    ) -> Self {
        Self::with_settings(pool, config, connector, settings)
    }

    fn can_listen(&self) -> bool {
        self.listen.is_some()
    }
}

/// Any TLS connector of tokio-postgres (`postgres-native-tls`'s or `tokio-postgres-rustls`'s
/// `MakeTlsConnector`...), for the pool the builder makes and for the `LISTEN` connection.
impl<T> UsesTls<T> for NativeDriver
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + Sync,
    T::TlsConnect: Send + Sync,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    fn use_tls(connector: &mut TlsConnector, tls: T) {
        *connector = TlsConnector::new(tls);
    }
}

/// A tokio-postgres or deadpool client or transaction ([`Executor`]), by reference.
impl<'c, C: Executor + ?Sized> RunsOn<'c, &'c C> for NativeDriver {
    fn run_on<'a>(
        &self,
        executor: &'c C,
        statement: &'a str,
        params: &'a [Param<'a>],
    ) -> BoxFuture<'a, Result<Vec<NativeRow>, DriverError>>
    where
        'c: 'a,
    {
        let prepare = self.prepare;
        Box::pin(async move {
            let found = executor.run(statement, params, prepare).await;
            found.map(rows).map_err(pg_error)
        })
    }
}
