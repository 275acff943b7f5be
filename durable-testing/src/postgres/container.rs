//! A PostgreSQL container started through testcontainers.

use std::time::Duration;

use testcontainers::core::wait::LogWaitStrategy;
use testcontainers::core::{IntoContainerPort, Mount, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{GenericImage, ImageExt};

use super::cluster::settings;
use super::util::run;
use super::watchdog::Watchdog;

/// The official image, used unless `DURABLE_TEST_POSTGRES_IMAGE` names another one.
pub(crate) const DEFAULT_IMAGE: &str = "postgres:15";

/// Printed by the official image once by its temporary init server and once by the
/// final server; `scripts/build-postgres-image.sh` builds an image that does the same.
const READY_LINE: &str = "database system is ready to accept connections";

/// Where the container's data directory lives (a tmpfs).
const DATA_MOUNT: &str = "/var/lib/postgresql/data";

/// The superuser password set in the container (`POSTGRES_PASSWORD`).
const PASSWORD: &str = "postgres";

/// How long `docker version` may take to answer.
const DOCKER_CHECK_TIMEOUT: Duration = Duration::from_secs(15);
/// How long starting the container may take, image pull excluded.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long creating the container may take, a possible image pull included.
const OVERALL_TIMEOUT: Duration = Duration::from_secs(600);

/// A running container.
#[derive(Debug)]
pub(crate) struct Container {
    /// The container's name.
    pub(crate) name: String,
    /// The host the mapped port is on (loopback for a local engine).
    pub(crate) host: String,
    /// The host port mapped to the container's 5432.
    pub(crate) port: u16,
    /// Removes the container when dropped or when the process exits.
    pub(crate) watchdog: Watchdog,
}

impl Container {
    /// The admin URL without a database (superuser `postgres`).
    pub(crate) fn base_url(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("postgres://postgres:{PASSWORD}@{host}:{}", self.port)
    }
}

/// Checks quickly that the `docker` CLI is installed and that an engine answers it. The
/// CLI is needed too: the watchdog removes the container with `docker rm -f`.
pub(crate) async fn docker_answers() -> Result<(), String> {
    let out = run(
        "docker",
        &["version", "--format", "{{.Server.Version}}"],
        false,
        DOCKER_CHECK_TIMEOUT,
    )
    .await
    .map_err(|e| {
        if e.contains("was not found") {
            "the docker CLI is not installed (it is needed to check for and clean up the \
             container)"
                .to_owned()
        } else {
            e
        }
    })?;
    if out.success {
        Ok(())
    } else {
        Err(format!(
            "the Docker engine did not answer: {}",
            out.tail(500)
        ))
    }
}

/// Splits `name[:tag]` (the registry part may hold a `:port`); the tag defaults to `latest`.
fn split_image(image: &str) -> (String, String) {
    match image.rfind(':') {
        Some(colon) if !image[colon..].contains('/') => {
            (image[..colon].to_owned(), image[colon + 1..].to_owned())
        }
        _ => (image.to_owned(), "latest".to_owned()),
    }
}

/// Starts `image` and waits for its readiness line (twice: init server, then the final
/// server). The caller still has to wait for a successful connection.
///
/// `durable`: PostgreSQL's default durability and the data on the container's disk; else
/// durability off and the data in memory.
pub(crate) async fn start(image: &str, durable: bool) -> Result<Container, String> {
    docker_answers().await?;
    let name = format!(
        "durable-test-pg-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    // Registered before the container exists, so that nothing leaks even if this process
    // dies while the container starts.
    let watchdog = Watchdog::for_container(&name)?;
    let (repository, tag) = split_image(image);
    let mut command = vec!["postgres".to_owned()];
    for (setting, value) in settings(durable) {
        command.push("-c".to_owned());
        command.push(format!("{setting}={value}"));
    }
    let request = GenericImage::new(repository, tag)
        .with_exposed_port(5432.tcp())
        .with_wait_for(WaitFor::Log(
            LogWaitStrategy::stdout_or_stderr(READY_LINE).with_times(2),
        ))
        .with_env_var("POSTGRES_USER", "postgres")
        .with_env_var("POSTGRES_PASSWORD", PASSWORD)
        .with_env_var("POSTGRES_DB", "postgres")
        // Data in memory: a test server is thrown away, and cloning databases on the
        // container's overlay file system is several times slower. PGDATA is a directory
        // inside the mount, so that an image running as non-root can create it. A durable
        // server keeps its data on disk, where fsync means something.
        .with_env_var("PGDATA", format!("{DATA_MOUNT}/pgdata"))
        .with_cmd(command)
        .with_container_name(name.clone())
        .with_label("org.durable.testing", "postgres")
        .with_startup_timeout(STARTUP_TIMEOUT);
    let request = if durable {
        request
    } else {
        request.with_mount(Mount::tmpfs_mount(DATA_MOUNT))
    };
    let container = match tokio::time::timeout(OVERALL_TIMEOUT, request.start()).await {
        Ok(Ok(container)) => container,
        Ok(Err(error)) => {
            return Err(format!(
                "could not start a container from image {image}: {error} (no network access to \
                 a registry? build the image locally with scripts/build-postgres-image.sh and \
                 set DURABLE_TEST_POSTGRES_IMAGE=durable-postgres:15-local)"
            ));
        }
        Err(_) => {
            return Err(format!(
                "starting a container from image {image} took more than {} s",
                OVERALL_TIMEOUT.as_secs()
            ));
        }
    };
    let host = match container.get_host().await {
        Ok(host) => host.to_string(),
        Err(error) => return Err(format!("could not find the container's host: {error}")),
    };
    let port = match container.get_host_port_ipv4(5432.tcp()).await {
        Ok(port) => port,
        Err(error) => {
            return Err(format!(
                "could not find the container's mapped port: {error}"
            ));
        }
    };
    // The container must outlive this handle (whose drop would remove it): it belongs to
    // the watchdog from now on.
    std::mem::forget(container);
    let host = if host == "localhost" {
        "127.0.0.1".to_owned()
    } else {
        host
    };
    Ok(Container {
        name,
        host,
        port,
        watchdog,
    })
}

#[cfg(test)]
mod tests {
    use super::split_image;

    #[test]
    fn splits_image_names() {
        assert_eq!(
            split_image("postgres:15"),
            ("postgres".to_owned(), "15".to_owned())
        );
        assert_eq!(
            split_image("localhost:5000/pg"),
            ("localhost:5000/pg".to_owned(), "latest".to_owned())
        );
        assert_eq!(
            split_image("durable-postgres:15-local"),
            ("durable-postgres".to_owned(), "15-local".to_owned())
        );
    }
}
