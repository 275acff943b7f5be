//! Choosing and starting the PostgreSQL server that test databases are created on.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use super::error::{FixtureError, redact_url};
use super::util::{UrlBase, connect, env_flag, env_nonempty, wait_until_connectable};
use super::watchdog::Watchdog;
use super::{cluster, container};

/// Env var: URL of an existing server to use (a user allowed to `CREATE DATABASE`).
pub const ENV_DATABASE_URL: &str = "DURABLE_TEST_DATABASE_URL";
/// Env var: Docker image to start when no URL is given (default `postgres:15`).
pub const ENV_POSTGRES_IMAGE: &str = "DURABLE_TEST_POSTGRES_IMAGE";
/// Env var: set to `1` to skip Docker and go straight to local PostgreSQL binaries.
pub const ENV_NO_DOCKER: &str = "DURABLE_TEST_NO_DOCKER";
/// Env var: directory of the local PostgreSQL server binaries (`initdb`, `pg_ctl`).
pub const ENV_PG_BIN: &str = "DURABLE_TEST_PG_BIN";
/// Env var: when set to a true value, the tests must get their server from Docker (no
/// fallback to local binaries), so a CI run proves that the testcontainers path ran.
pub const ENV_REQUIRE_DOCKER: &str = "DURABLE_TEST_REQUIRE_DOCKER";

/// How long a freshly started server may take to accept a connection after it said it
/// was ready (port mapping, init scripts).
const CONNECTABLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the server came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerSource {
    /// An existing server named by `DURABLE_TEST_DATABASE_URL` (or
    /// [`ServerOptions::database_url`]).
    EnvUrl,
    /// A container started through testcontainers, removed when the process exits.
    Container {
        /// The image it was started from.
        image: String,
        /// The container's name, for tests that pause or stop it (`docker pause NAME`).
        name: String,
    },
    /// A throwaway cluster from local PostgreSQL binaries, stopped and deleted when the
    /// process exits.
    LocalCluster {
        /// The cluster's data directory (inside a temporary directory).
        data_dir: PathBuf,
    },
}

/// Which server sources [`PgServer::start`] may use, in the order it tries them.
///
/// [`ServerOptions::from_env`] gives what [`PgServer::shared`] uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// 1. Use this existing server if set (and fail if it cannot be used).
    pub database_url: Option<String>,
    /// 2. Try a container through testcontainers when a Docker engine answers.
    pub docker: bool,
    /// The image for 2 (`name:tag`).
    pub image: String,
    /// 3. Try a throwaway cluster from local PostgreSQL binaries.
    pub local_cluster: bool,
    /// The directory of the binaries for 3; found automatically when `None`.
    pub pg_bin: Option<PathBuf>,
    /// Start the container or cluster (2, 3) with PostgreSQL's default durability
    /// (`fsync`, `synchronous_commit` and `full_page_writes` on, data on disk rather than
    /// in memory), for benchmarks. Default `false`: a test server trades durability for
    /// speed. Has no effect on an existing server (1).
    pub durable: bool,
}

impl Default for ServerOptions {
    /// Every source enabled, no URL, the official `postgres:15` image, binaries found
    /// automatically. Ignores the environment.
    fn default() -> Self {
        ServerOptions {
            database_url: None,
            docker: true,
            image: container::DEFAULT_IMAGE.to_owned(),
            local_cluster: true,
            pg_bin: None,
            durable: false,
        }
    }
}

impl ServerOptions {
    /// The options from the environment: `DURABLE_TEST_DATABASE_URL`,
    /// `DURABLE_TEST_NO_DOCKER`, `DURABLE_TEST_POSTGRES_IMAGE`, `DURABLE_TEST_PG_BIN`,
    /// `DURABLE_TEST_REQUIRE_DOCKER` (disables the local-cluster fallback).
    pub fn from_env() -> Self {
        let defaults = ServerOptions::default();
        ServerOptions {
            database_url: env_nonempty(ENV_DATABASE_URL),
            docker: !env_flag(ENV_NO_DOCKER),
            image: env_nonempty(ENV_POSTGRES_IMAGE).unwrap_or(defaults.image),
            local_cluster: !env_flag(ENV_REQUIRE_DOCKER),
            pg_bin: env_nonempty(ENV_PG_BIN).map(PathBuf::from),
            durable: false,
        }
    }
}

/// A PostgreSQL server that tests create their databases on.
///
/// Get the process-wide one with [`PgServer::shared`]. A server started by this fixture
/// (container or local cluster) is removed when the value is dropped or, for the shared
/// one which is never dropped, when the test process exits: a watchdog child process
/// notices the exit and cleans up.
#[derive(Debug)]
pub struct PgServer {
    source: ServerSource,
    base: UrlBase,
    admin_url: String,
    /// Set for a local cluster started here: what [`PgServer::restart`] needs.
    control: Option<cluster::ClusterControl>,
    _watchdog: Option<Watchdog>,
}

static SHARED: OnceCell<Result<PgServer, String>> = OnceCell::const_new();

impl PgServer {
    /// One server per test process, started on first use and shared by all tests of the
    /// process (each test usually gets its own database on it, see
    /// [`TestDatabase`](super::TestDatabase)).
    ///
    /// The server is chosen by [`ServerOptions::from_env`], see [`PgServer::start`]. A
    /// failure is remembered: later calls return it at once.
    pub async fn shared() -> Result<&'static PgServer, FixtureError> {
        let server = SHARED
            .get_or_init(|| async {
                PgServer::start(ServerOptions::from_env())
                    .await
                    .map_err(|error| error.to_string())
            })
            .await;
        server
            .as_ref()
            .map_err(|message| FixtureError::SharedUnavailable(message.clone()))
    }

    /// Starts (or, for a URL, checks) a server as `options` say, trying in order:
    /// 1. `options.database_url` if set (an error if it cannot be used);
    /// 2. a container of `options.image` through testcontainers when `options.docker` and
    ///    a Docker engine answers; a failure (e.g. an image that is neither present nor
    ///    pullable) is logged and the next source is tried;
    /// 3. a throwaway cluster from local binaries when `options.local_cluster`;
    /// 4. otherwise [`FixtureError::NoServer`], saying why each source failed.
    ///
    /// The returned server is removed when it is dropped. Must be called within a Tokio
    /// runtime.
    pub async fn start(options: ServerOptions) -> Result<PgServer, FixtureError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(FixtureError::NoRuntime);
        }
        if let Some(url) = options.database_url {
            return Self::from_url(url).await;
        }
        let docker_reason = if options.docker {
            match Self::start_container(&options.image, options.durable).await {
                Ok(server) => return Ok(server),
                Err(reason) => {
                    tracing::warn!(
                        image = %options.image,
                        %reason,
                        "durable-testing: no PostgreSQL container, trying local binaries next"
                    );
                    reason
                }
            }
        } else {
            format!("skipped ({ENV_NO_DOCKER} is set or Docker is disabled in the options)")
        };
        let local_reason = if options.local_cluster {
            match Self::start_cluster(options.pg_bin, options.durable).await {
                Ok(server) => return Ok(server),
                Err(reason) => reason,
            }
        } else {
            "skipped (disabled in the options)".to_owned()
        };
        Err(FixtureError::NoServer(format!(
            "no PostgreSQL server available for the tests.\n\
             - {ENV_DATABASE_URL}: not set.\n\
             - Docker (image {image}): {docker_reason}.\n\
             - local PostgreSQL binaries: {local_reason}.\n\
             Do one of: set {ENV_DATABASE_URL}=postgres://USER:PASSWORD@127.0.0.1:5432/postgres \
             (a user allowed to CREATE DATABASE); or install and start Docker (the image comes \
             from {ENV_POSTGRES_IMAGE}, default {default_image}; without registry access build \
             one with scripts/build-postgres-image.sh and set \
             {ENV_POSTGRES_IMAGE}=durable-postgres:15-local); or install the PostgreSQL server \
             (e.g. `apt-get install postgresql`) or point {ENV_PG_BIN} at its bin directory.",
            image = options.image,
            default_image = container::DEFAULT_IMAGE,
        )))
    }

    async fn from_url(url: String) -> Result<PgServer, FixtureError> {
        let env_error = |reason: String| FixtureError::EnvUrl {
            url: redact_url(&url),
            reason,
        };
        let client = connect(&url).await.map_err(|e| env_error(e.to_string()))?;
        let row = client
            .query_one(
                "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user",
                &[],
            )
            .await
            .map_err(|e| env_error(format!("checking the user's rights failed: {e}")))?;
        let can_create: bool = row
            .try_get(0)
            .map_err(|e| env_error(format!("checking the user's rights failed: {e}")))?;
        if !can_create {
            return Err(env_error(
                "its user may not create databases (ALTER ROLE ... CREATEDB)".to_owned(),
            ));
        }
        tracing::info!(url = %redact_url(&url), "durable-testing: using the PostgreSQL server from {ENV_DATABASE_URL}");
        Ok(PgServer {
            source: ServerSource::EnvUrl,
            base: UrlBase::parse(&url),
            admin_url: url,
            control: None,
            _watchdog: None,
        })
    }

    async fn start_container(image: &str, durable: bool) -> Result<PgServer, String> {
        let started = Instant::now();
        let container = container::start(image, durable).await?;
        let base = UrlBase::parse(&container.base_url());
        let admin_url = base.url_for("postgres");
        let server = PgServer {
            source: ServerSource::Container {
                image: image.to_owned(),
                name: container.name.clone(),
            },
            base,
            admin_url,
            control: None,
            _watchdog: Some(container.watchdog),
        };
        // On failure `server` drops, and its watchdog removes the container.
        wait_until_connectable(&server.admin_url, CONNECTABLE_TIMEOUT)
            .await
            .map_err(|e| format!("the container started but does not accept connections: {e}"))?;
        tracing::info!(
            image,
            url = %redact_url(&server.admin_url),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "durable-testing: started a PostgreSQL container"
        );
        Ok(server)
    }

    async fn start_cluster(pg_bin: Option<PathBuf>, durable: bool) -> Result<PgServer, String> {
        let started = Instant::now();
        let cluster = cluster::start(pg_bin.as_deref(), durable).await?;
        let base = UrlBase::parse(&cluster.base_url());
        let admin_url = base.url_for("postgres");
        let server = PgServer {
            source: ServerSource::LocalCluster {
                data_dir: cluster.dir.join("data"),
            },
            base,
            admin_url,
            control: Some(cluster.control),
            _watchdog: Some(cluster.watchdog),
        };
        wait_until_connectable(&server.admin_url, CONNECTABLE_TIMEOUT)
            .await
            .map_err(|e| {
                format!("the local cluster started but does not accept connections: {e}")
            })?;
        tracing::info!(
            dir = %cluster.dir.display(),
            url = %server.admin_url,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "durable-testing: started a throwaway local PostgreSQL cluster"
        );
        Ok(server)
    }

    /// Where the server came from.
    pub fn source(&self) -> &ServerSource {
        &self.source
    }

    /// Connection URL for database `db` on this server (user with CREATEDB rights).
    pub fn url_for(&self, db: &str) -> String {
        self.base.url_for(db)
    }

    /// Restarts the server with `pg_ctl restart -m fast`, for fault-injection tests: every
    /// connection is closed, nothing committed is lost, the port and data stay. Returns once the
    /// server accepts connections again. Only a local cluster started by this fixture can be
    /// restarted (start one with [`PgServer::start`] and `ServerOptions { docker: false, .. }`);
    /// any other server gives [`FixtureError::Restart`]. Do not restart the
    /// [shared](PgServer::shared) server: other tests use it.
    pub async fn restart(&self) -> Result<(), FixtureError> {
        let control = self.control.as_ref().ok_or_else(|| {
            FixtureError::Restart(format!(
                "only a local cluster started by the fixture can be restarted, this server is {:?}",
                self.source
            ))
        })?;
        control.restart().await.map_err(FixtureError::Restart)?;
        wait_until_connectable(&self.admin_url, CONNECTABLE_TIMEOUT).await
    }

    /// The URL the fixture uses for administration (creating and dropping databases):
    /// the `postgres` database of a server it started, or the URL as given.
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }
}
