//! [`SqlxDriver`]: the primitives of [`PgStore`](durable_postgres::PgStore) on a
//! `sqlx::PgPool`.

use std::time::Duration;

use durable_core::BoxError;
use durable_postgres::{
    BoxFuture, Connect, Connection, DatabaseError, Decodes, Driver, DriverError, Listener,
    Notification, Param, PoolSettings, Row, RunsOn,
};
use sqlx::error::BoxDynError;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{
    PgArguments, PgConnectOptions, PgDatabaseError, PgListener, PgPoolOptions, PgRow, PgTypeInfo,
    PgValueFormat, PgValueRef,
};
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{
    Connection as _, Decode, Executor, PgConnection, PgPool, Postgres, Row as _, Type, ValueRef,
};

/// A connection of a pool made by the driver that has been idle at least this long is checked
/// (a ping) before it is handed out; one in steady use is not.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// The driver of `durable`'s PostgreSQL store on a [`sqlx::PgPool`]: each statement is
/// prepared once per connection (sqlx's statement cache) and runs on a connection of the pool.
///
/// Behind a connection pooler in transaction mode
/// ([`PoolSettings::transaction_pooler`](durable_postgres::PoolSettings)), no statement is
/// prepared: each is sent in one exchange with its values written in as literals (the simple
/// query protocol), since sqlx prepares and executes in two exchanges, which such a pooler may
/// send to different server connections.
///
/// Most applications never name it: [`SqlxStore`](crate::SqlxStore) is
/// `PgStore<SqlxDriver>`, and `SqlxStore::new(pool)` makes the driver from the pool.
#[derive(Debug, Clone)]
pub struct SqlxDriver {
    pool: PgPool,
    /// Where the `LISTEN` connection goes; `None`: where the pool's connections go.
    listen: Option<PgConnectOptions>,
    /// Statements with their values written in, for a pooler in transaction mode.
    inline: bool,
}

impl SqlxDriver {
    /// The driver on `pool`.
    pub fn new(pool: PgPool) -> Self {
        SqlxDriver {
            pool,
            listen: None,
            inline: false,
        }
    }

    fn with_settings(pool: PgPool, settings: &PoolSettings<PgConnectOptions>) -> Self {
        SqlxDriver {
            pool,
            listen: settings.listen.clone(),
            inline: settings.transaction_pooler,
        }
    }
}

/// Runs `statement` with `params` on `executor`: prepared (sqlx caches it per connection), or
/// with the values written in (`inline`).
fn run<'a, 'c, E>(
    executor: E,
    statement: &'a str,
    params: &'a [Param<'a>],
    inline: bool,
) -> BoxFuture<'a, Result<Vec<SqlxRow>, DriverError>>
where
    E: Executor<'c, Database = Postgres> + 'a,
{
    Box::pin(async move {
        let found = if inline {
            let sql = durable_postgres::literal::inline(statement, params)
                .map_err(DriverError::Encode)?;
            executor.fetch_all(sql.as_str()).await
        } else {
            bind(statement, params).fetch_all(executor).await
        };
        found.map(rows).map_err(driver_error)
    })
}

impl From<PgPool> for SqlxDriver {
    fn from(pool: PgPool) -> Self {
        SqlxDriver::new(pool)
    }
}

/// A row of a result.
#[derive(Debug)]
pub struct SqlxRow(PgRow);

/// Binds `params` to `statement`, each with the type its variant names.
pub(crate) fn bind<'q>(
    statement: &'q str,
    params: &'q [Param<'q>],
) -> Query<'q, Postgres, PgArguments> {
    params
        .iter()
        .fold(sqlx::query(statement), |query, param| match param {
            Param::Text(v) => query.bind(*v),
            Param::Uuid(v) => query.bind(*v),
            Param::Int4(v) => query.bind(*v),
            Param::Int8(v) => query.bind(*v),
            Param::Bool(v) => query.bind(*v),
            Param::Timestamptz(v) => query.bind(*v),
            Param::Jsonb(v) => query.bind(v.map(Json)),
            Param::TextArray(v) => query.bind(v),
            Param::UuidArray(v) => query.bind(v),
            Param::Int4Array(v) => query.bind(v),
            Param::Int8Array(v) => query.bind(v),
            Param::JsonbArray(v) => query.bind(v.iter().map(|v| v.map(Json)).collect::<Vec<_>>()),
        })
}

/// The rows of a result, as the driver hands them out.
pub(crate) fn rows(rows: Vec<PgRow>) -> Vec<SqlxRow> {
    rows.into_iter().map(SqlxRow).collect()
}

/// A sqlx error, reported as the driver reports errors.
pub(crate) fn driver_error(error: sqlx::Error) -> DriverError {
    match error {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|code| code.into_owned()).unwrap_or_default();
            let message = db.message().to_owned();
            let detail = db
                .try_downcast_ref::<PgDatabaseError>()
                .and_then(PgDatabaseError::detail)
                .map(str::to_owned);
            DriverError::Database(DatabaseError {
                code,
                message,
                detail,
                source: Box::new(sqlx::Error::Database(db)),
            })
        }
        sqlx::Error::Encode(source) => DriverError::Encode(source),
        other => DriverError::Other(Box::new(other)),
    }
}

impl Driver for SqlxDriver {
    const NAME: &'static str = "postgres-sqlx";
    type Row = SqlxRow;
    type Connection = SqlxConnection<'static>;
    type Listener = SqlxListener;

    async fn acquire(&self) -> Result<SqlxConnection<'static>, DriverError> {
        let connection = self.pool.acquire().await.map_err(driver_error)?;
        Ok(SqlxConnection {
            held: Held::Pooled(connection),
            inline: self.inline,
        })
    }

    async fn listen(
        &self,
        channels: &[&str],
        timeout: Duration,
    ) -> Result<SqlxListener, DriverError> {
        // A pool of its own, of one connection, so the listener never takes a slot of the
        // application's pool.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(timeout)
            .connect_lazy_with(
                self.listen
                    .clone()
                    .unwrap_or_else(|| (*self.pool.connect_options()).clone()),
            );
        let connect = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.ignore_pool_close_event(true);
            listener.listen_all(channels.iter().copied()).await?;
            Ok(listener)
        };
        match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(listener)) => Ok(SqlxListener { listener }),
            Ok(Err(error)) => Err(driver_error(error)),
            Err(_) => Err(DriverError::TimedOut(timeout)),
        }
    }
}

/// A connection: of the pool, or the application's (`migrate_connection`).
#[derive(Debug)]
pub struct SqlxConnection<'c> {
    held: Held<'c>,
    inline: bool,
}

#[derive(Debug)]
enum Held<'c> {
    Pooled(PoolConnection<Postgres>),
    Borrowed(&'c mut PgConnection),
}

impl<'c> SqlxConnection<'c> {
    /// The application's connection.
    pub(crate) fn borrowed(connection: &'c mut PgConnection) -> Self {
        SqlxConnection {
            held: Held::Borrowed(connection),
            inline: false,
        }
    }

    fn connection(&mut self) -> &mut PgConnection {
        match &mut self.held {
            Held::Pooled(connection) => connection,
            Held::Borrowed(connection) => connection,
        }
    }
}

impl Connection for SqlxConnection<'_> {
    type Row = SqlxRow;

    async fn query(
        &mut self,
        statement: &str,
        params: &[Param<'_>],
    ) -> Result<Vec<SqlxRow>, DriverError> {
        let inline = self.inline;
        run(self.connection(), statement, params, inline).await
    }

    async fn batch(&mut self, script: &str) -> Result<(), DriverError> {
        // `Executor::execute` on a plain string: the simple query protocol (several
        // statements), with a future that is provably `Send` (`RawSql::execute`'s is not).
        let done = self.connection().execute(script).await;
        done.map(drop).map_err(driver_error)
    }

    fn discard(self) {
        if let Held::Pooled(mut connection) = self.held {
            connection.close_on_drop();
        }
    }
}

impl Connect for SqlxDriver {
    type Pool = PgPool;
    type Config = PgConnectOptions;
    type Options = ();

    fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn parse_url(url: &str) -> Result<PgConnectOptions, BoxError> {
        Ok(url.parse()?)
    }

    async fn connect(
        config: PgConnectOptions,
        _options: &(),
        settings: &PoolSettings<PgConnectOptions>,
    ) -> Result<Self, DriverError> {
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            // sqlx pings every connection it hands out by default: one more round trip per
            // store call. Only a connection idle for a while can have been closed behind the
            // pool's back (a server restart, a terminated backend, a network cut while idle);
            // a connection that fails while in use is closed by the store's call protocol.
            .test_before_acquire(false)
            .before_acquire(|connection, meta| {
                Box::pin(async move {
                    if meta.idle_for >= IDLE_CHECK {
                        connection.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(config)
            .await
            .map_err(driver_error)?;
        Ok(SqlxDriver::with_settings(pool, settings))
    }

    /// The listening connection is made with the pool's own settings unless `settings` say
    /// otherwise: `config` is not needed.
    fn from_pool(
        pool: PgPool,
        _config: Option<PgConnectOptions>,
        _options: &(),
        settings: &PoolSettings<PgConnectOptions>,
    ) -> Self {
        SqlxDriver::with_settings(pool, settings)
    }

    fn can_listen(&self) -> bool {
        true
    }
}

/// Any sqlx executor of PostgreSQL: `&mut *tx` for a transaction, `&pool`, `&mut connection`.
impl<'c, E> RunsOn<'c, E> for SqlxDriver
where
    E: Executor<'c, Database = Postgres>,
{
    fn run_on<'a>(
        &self,
        executor: E,
        statement: &'a str,
        params: &'a [Param<'a>],
    ) -> BoxFuture<'a, Result<Vec<SqlxRow>, DriverError>>
    where
        E: 'a,
    {
        run(executor, statement, params, self.inline)
    }
}

/// The listening connection of [`SqlxDriver::listen`].
#[derive(Debug)]
pub struct SqlxListener {
    listener: PgListener,
}

impl Listener for SqlxListener {
    async fn next(&mut self) -> Result<Notification, DriverError> {
        match self.listener.try_recv().await {
            Ok(Some(notification)) => Ok(Notification {
                channel: notification.channel().to_owned(),
                payload: notification.payload().to_owned(),
            }),
            // sqlx would connect again by itself; the caller does, with its backoff.
            Ok(None) => Err(DriverError::Other(
                "the listener connection was lost".into(),
            )),
            Err(error) => Err(driver_error(error)),
        }
    }

    async fn ping(&mut self) -> Result<(), DriverError> {
        sqlx::query("SELECT 1")
            .execute(&mut self.listener)
            .await
            .map(drop)
            .map_err(driver_error)
    }
}

/// Every type sqlx decodes.
impl<'r, T> Decodes<'r, T> for SqlxRow
where
    T: Decode<'r, Postgres> + Type<Postgres>,
{
    fn decode(&'r self, column: &str) -> Result<Option<T>, BoxError> {
        Ok(self.0.try_get::<Option<T>, _>(column)?)
    }
}

impl Row for SqlxRow {
    fn json(&self, column: &str) -> Result<Option<&str>, BoxError> {
        Ok(self.decode(column)?.map(|raw: RawJson<'_>| raw.0))
    }
}

/// The text of a `json` or `jsonb` value, not parsed.
struct RawJson<'r>(&'r str);

impl Type<Postgres> for RawJson<'_> {
    fn type_info() -> PgTypeInfo {
        <Json<()> as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <Json<()> as Type<Postgres>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Postgres> for RawJson<'r> {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        let jsonb = *value.type_info() == <Json<()> as Type<Postgres>>::type_info();
        let mut bytes = value.as_bytes()?;
        if jsonb && value.format() == PgValueFormat::Binary {
            // jsonb's binary form: a version byte, then the text.
            match bytes.split_first() {
                Some((1, text)) => bytes = text,
                _ => return Err("unknown jsonb format version".into()),
            }
        }
        Ok(RawJson(std::str::from_utf8(bytes)?))
    }
}
