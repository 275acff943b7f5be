//! Connections: the TLS connector chosen by the application, type-erased, which makes both the
//! pool's connections and the listener's.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use durable_postgres::DriverError;
use tokio_postgres::Socket;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};

use crate::listener::NativeListener;

/// How long getting a connection from a pool made here may take.
const POOL_TIMEOUT: Duration = Duration::from_secs(30);

/// A TLS connector of tokio-postgres, without its type: what the store needs from it.
pub(crate) trait Connector: Send + Sync + 'static {
    /// A pool manager that connects with this connector.
    fn manager(&self, config: tokio_postgres::Config) -> Manager;

    /// A connection made with this connector that ran `listen` (the `LISTEN` statements),
    /// within `timeout`.
    fn listen(
        &self,
        config: tokio_postgres::Config,
        listen: String,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<NativeListener, DriverError>> + Send>>;
}

/// A connector of type `T` (`NoTls`, or a TLS connector such as `postgres-native-tls`'s or
/// `tokio-postgres-rustls`'s `MakeTlsConnector`).
pub(crate) struct Tls<T>(pub(crate) T);

impl<T> Connector for Tls<T>
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + Sync,
    T::TlsConnect: Send + Sync,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    fn manager(&self, config: tokio_postgres::Config) -> Manager {
        let manager = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        Manager::from_config(config, self.0.clone(), manager)
    }

    fn listen(
        &self,
        config: tokio_postgres::Config,
        listen: String,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<NativeListener, DriverError>> + Send>> {
        Box::pin(crate::listener::connect(
            config,
            self.0.clone(),
            listen,
            timeout,
        ))
    }
}

/// The TLS connector the [`NativeDriver`](crate::NativeDriver) makes its connections with, its
/// type erased: none by default, or the one given to
/// [`DurableBuilder::tls`](durable_postgres::DurableBuilder::tls).
#[derive(Clone)]
pub struct TlsConnector(pub(crate) Arc<dyn Connector>);

impl TlsConnector {
    pub(crate) fn new<T>(tls: T) -> Self
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send + Sync,
        T::TlsConnect: Send + Sync,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        TlsConnector(Arc::new(Tls(tls)))
    }

    pub(crate) fn no_tls() -> Self {
        Self::new(tokio_postgres::NoTls)
    }

    /// A pool of up to `max_size` connections made with `config`, lazily connected.
    pub(crate) fn pool(
        &self,
        config: tokio_postgres::Config,
        max_size: usize,
    ) -> Result<Pool, deadpool_postgres::BuildError> {
        Pool::builder(self.0.manager(config))
            .max_size(max_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .recycle_timeout(Some(POOL_TIMEOUT))
            .build()
    }
}

impl Default for TlsConnector {
    /// No TLS.
    fn default() -> Self {
        Self::no_tls()
    }
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsConnector")
    }
}
