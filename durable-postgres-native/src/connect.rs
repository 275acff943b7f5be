//! Connections: the TLS connector chosen by the application, type-erased, which makes both the
//! pool's connections and the listener's.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::Socket;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};

use crate::listener::{Signals, listen_loop};

/// How long getting a connection from a pool made here may take.
const POOL_TIMEOUT: Duration = Duration::from_secs(30);

/// A TLS connector of tokio-postgres, without its type: what the store needs from it.
pub(crate) trait Connector: Send + Sync + 'static {
    /// A pool manager that connects with this connector.
    fn manager(&self, config: tokio_postgres::Config) -> Manager;

    /// The listener loop (see [`listen_loop`]) on connections made with this connector.
    fn listen(
        &self,
        config: tokio_postgres::Config,
        signals: Arc<Signals>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>;
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
        signals: Arc<Signals>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(listen_loop(config, self.0.clone(), signals))
    }
}

/// A connector shared by the builder and the store.
#[derive(Clone)]
pub(crate) struct SharedConnector(pub(crate) Arc<dyn Connector>);

impl SharedConnector {
    pub(crate) fn new<T>(tls: T) -> Self
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send + Sync,
        T::TlsConnect: Send + Sync,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        SharedConnector(Arc::new(Tls(tls)))
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

impl fmt::Debug for SharedConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsConnector")
    }
}
