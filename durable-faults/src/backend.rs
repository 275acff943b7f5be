//! The two PostgreSQL adapters behind one face, so that every scenario runs on both without
//! being written twice, and the worker process that the scenarios start, kill and pause.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use durable_core::{DurableResult, RetryStrategy, SpawnOptions, SpawnResult, Store, WorkerOptions};
use serde_json::Value;

use crate::workload::{Flow, FlowParams, Leaf, QUEUE, init_effects};

/// A PostgreSQL adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `durable-postgres-sqlx` (`durable::Durable`).
    Sqlx,
    /// `durable-postgres-native` (`durable::native::Durable`).
    Native,
}

impl Backend {
    /// `sqlx` or `native`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlx => "sqlx",
            Backend::Native => "native",
        }
    }

    /// The inverse of [`Backend::name`].
    pub fn parse(name: &str) -> Option<Backend> {
        match name {
            "sqlx" => Some(Backend::Sqlx),
            "native" => Some(Backend::Native),
            _ => None,
        }
    }
}

/// How the workload's clients are configured.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The database URL (possibly through the test's proxy).
    pub url: String,
    /// The most pooled connections.
    pub pool: usize,
}

/// The retry policy of the workload: quick retries, enough attempts to ride out every fault.
pub fn workload_retry() -> RetryStrategy {
    RetryStrategy::Exponential {
        base_delay: Duration::from_millis(100),
        factor: 2.0,
        max_backoff: Duration::from_secs(2),
    }
}

/// How long a store call of the workload may take (shorter than the adapters' default, so
/// that the network scenario's black-holed connections are given up quickly).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Attempts each workload task gets.
pub const MAX_ATTEMPTS: u32 = 25;

/// A client of either adapter.
#[derive(Debug, Clone)]
pub enum Client {
    /// On sqlx.
    Sqlx(durable_postgres_sqlx::Durable),
    /// On tokio-postgres.
    Native(durable_postgres_native::Durable),
}

impl Client {
    /// Connects (without migrating: the test database is migrated) and registers the workload.
    pub async fn connect(backend: Backend, config: &ClientConfig) -> DurableResult<Client> {
        let client = match backend {
            Backend::Sqlx => Client::Sqlx(
                durable_postgres_sqlx::Durable::builder()
                    .database_url(&config.url)
                    .queue_name(QUEUE)
                    .max_connections(u32::try_from(config.pool).unwrap_or(u32::MAX))
                    .migrate(false)
                    .call_timeout(CALL_TIMEOUT)
                    .default_max_attempts(MAX_ATTEMPTS)
                    .default_retry_strategy(workload_retry())
                    .build()
                    .await?,
            ),
            Backend::Native => Client::Native(
                durable_postgres_native::Durable::builder()
                    .database_url(&config.url)
                    .queue_name(QUEUE)
                    .max_connections(config.pool)
                    .migrate(false)
                    .call_timeout(CALL_TIMEOUT)
                    .default_max_attempts(MAX_ATTEMPTS)
                    .default_retry_strategy(workload_retry())
                    .build()
                    .await?,
            ),
        };
        match &client {
            Client::Sqlx(c) => register(c).await,
            Client::Native(c) => register(c).await,
        }
        Ok(client)
    }

    /// Spawns a flow.
    pub async fn spawn_flow(
        &self,
        params: FlowParams,
        idempotency_key: &str,
    ) -> DurableResult<SpawnResult> {
        let options = SpawnOptions {
            idempotency_key: Some(idempotency_key.to_owned()),
            ..SpawnOptions::default()
        };
        match self {
            Client::Sqlx(c) => c.spawn_with_options::<Flow>(params, options).await,
            Client::Native(c) => c.spawn_with_options::<Flow>(params, options).await,
        }
    }

    /// Emits an event in the workload's queue.
    pub async fn emit(&self, name: &str, payload: &Value) -> DurableResult<bool> {
        match self {
            Client::Sqlx(c) => c.emit_event(name, payload, None).await,
            Client::Native(c) => c.emit_event(name, payload, None).await,
        }
    }

    /// Starts a worker.
    pub async fn start_worker(&self, options: WorkerOptions) -> durable_core::Worker {
        match self {
            Client::Sqlx(c) => c.start_worker(options).await,
            Client::Native(c) => c.start_worker(options).await,
        }
    }
}

async fn register<S: Store>(client: &durable_core::Durable<S>) {
    client.register::<Flow>().await;
    client.register::<Leaf>().await;
}

/// Environment variables that configure a worker process.
pub mod env {
    /// `sqlx` or `native`.
    pub const BACKEND: &str = "FAULTS_BACKEND";
    /// The database URL of the store (possibly through the proxy).
    pub const URL: &str = "FAULTS_URL";
    /// The database URL for side-effect records (direct).
    pub const EFFECTS_URL: &str = "FAULTS_EFFECTS_URL";
    /// Tasks run at once.
    pub const CONCURRENCY: &str = "FAULTS_CONCURRENCY";
    /// The lease (claim timeout) in milliseconds.
    pub const LEASE_MS: &str = "FAULTS_LEASE_MS";
    /// The store's pool size.
    pub const POOL: &str = "FAULTS_POOL";
    /// Pool hogging: `hold_ms,gap_ms,total_ms`: the process holds every connection of its
    /// pool for `hold_ms`, lets go for `gap_ms`, again and again for `total_ms`.
    pub const HOG: &str = "FAULTS_HOG";
}

fn var<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v} does not parse")),
        Err(_) => Ok(default),
    }
}

/// The main of the worker process (`faults-worker`): connects (retrying while the database is
/// unreachable), runs a worker until SIGTERM, shuts down and exits 0 (3 if tasks were still in
/// flight after the shutdown's grace time).
pub async fn worker_main() -> anyhow::Result<i32> {
    let backend = std::env::var(env::BACKEND).context(env::BACKEND)?;
    let backend = Backend::parse(&backend).context("unknown backend")?;
    let url = std::env::var(env::URL).context(env::URL)?;
    let effects_url = std::env::var(env::EFFECTS_URL).context(env::EFFECTS_URL)?;
    let concurrency: usize = var(env::CONCURRENCY, 8)?;
    let lease = Duration::from_millis(var(env::LEASE_MS, 2_000)?);
    let pool: usize = var(env::POOL, 4)?;
    init_effects(&effects_url, 4)?;
    let config = ClientConfig { url, pool };
    let started = Instant::now();
    let client = loop {
        match Client::connect(backend, &config).await {
            Ok(client) => break client,
            Err(error) if started.elapsed() < Duration::from_secs(60) => {
                eprintln!("faults-worker: connecting failed, retrying: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => return Err(error).context("connecting"),
        }
    };
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    let worker = client
        .start_worker(
            WorkerOptions::default()
                .concurrency(concurrency)
                .claim_timeout(lease)
                .poll_interval(Duration::from_millis(100))
                .lease_check_interval(Duration::from_millis(250)),
        )
        .await;
    if let Ok(hog) = std::env::var(env::HOG) {
        let client = client.clone();
        tokio::spawn(async move { hog_pool(&client, &hog, pool).await });
    }
    eprintln!("faults-worker {}: ready", std::process::id());
    terminate.recv().await;
    let clean = worker.shutdown_timeout(Duration::from_secs(10)).await;
    eprintln!(
        "faults-worker {}: stopped (clean: {clean})",
        std::process::id()
    );
    Ok(if clean { 0 } else { 3 })
}

/// Holds every connection of the client's pool, again and again (see [`env::HOG`]).
async fn hog_pool(client: &Client, spec: &str, size: usize) {
    let parts: Vec<u64> = spec.split(',').filter_map(|p| p.parse().ok()).collect();
    let [hold, gap, total] = parts[..] else {
        eprintln!("faults-worker: bad {} {spec:?}", env::HOG);
        return;
    };
    let until = Instant::now() + Duration::from_millis(total);
    while Instant::now() < until {
        match client {
            Client::Sqlx(c) => {
                let mut held = Vec::new();
                for _ in 0..size {
                    if let Ok(connection) = c.pool().acquire().await {
                        held.push(connection);
                    }
                }
                tokio::time::sleep(Duration::from_millis(hold)).await;
            }
            Client::Native(c) => {
                let mut held = Vec::new();
                for _ in 0..size {
                    if let Ok(connection) = c.pool().get().await {
                        held.push(connection);
                    }
                }
                tokio::time::sleep(Duration::from_millis(hold)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(gap)).await;
    }
}
