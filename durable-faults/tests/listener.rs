//! The wake-up listener behind a connection that turns into a black hole (a network cut that
//! drops packets without a reset): it notices within about two call timeouts and listens again
//! on a new connection, so wake-ups resume without waiting for TCP to give up.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use durable_core::store::NewTask;
use durable_core::{CancellationPolicy, RetryStrategy, Store};
use durable_faults::harness::{database, url_port, with_port};
use durable_faults::proxy::Proxy;
use serde_json::json;
use tokio::sync::watch;

const QUEUE: &str = "listener";

fn task() -> NewTask {
    NewTask {
        queue: QUEUE.into(),
        task_name: "wake".into(),
        params: json!(null),
        headers: BTreeMap::new(),
        max_attempts: 1,
        retry_strategy: RetryStrategy::None,
        cancellation: CancellationPolicy::default(),
        idempotency_key: None,
        parent_task_id: None,
        delay: None,
    }
}

/// Spawns through `direct` until `signal` changes; returns how long that took.
async fn woken(
    direct: &impl Store,
    signal: &mut watch::Receiver<u64>,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    signal.borrow_and_update();
    loop {
        direct.spawn(task()).await.unwrap();
        match tokio::time::timeout(Duration::from_millis(200), signal.changed()).await {
            Ok(changed) => {
                changed.unwrap();
                return started.elapsed();
            }
            Err(_) => assert!(
                started.elapsed() < limit,
                "no wake-up within {limit:?}: the listener is wedged"
            ),
        }
    }
}

async fn blackholed_listener_comes_back<S: Store>(listening: S, direct: impl Store, proxy: &Proxy) {
    let mut signal = listening.work_signal(QUEUE);
    let first = woken(&direct, &mut signal, Duration::from_secs(20)).await;
    proxy.blackhole_open_connections();
    let cut = Instant::now();
    let back = woken(&direct, &mut signal, Duration::from_secs(20)).await;
    println!(
        "first wake-up {:.0} ms; after the black hole, wake-ups again after {:.1} s",
        first.as_secs_f64() * 1e3,
        back.as_secs_f64().max(cut.elapsed().as_secs_f64())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_listener_replaces_a_blackholed_connection() {
    let db = database(None).await.unwrap();
    let proxy = Proxy::start(([127, 0, 0, 1], url_port(db.url()).unwrap()).into())
        .await
        .unwrap();
    let via_proxy = with_port(db.url(), proxy.port()).unwrap();
    let listening = durable_postgres_sqlx::SqlxStore::connect(&via_proxy)
        .await
        .unwrap();
    listening.set_call_timeout(Duration::from_secs(1));
    let direct = durable_postgres_sqlx::SqlxStore::connect(db.url())
        .await
        .unwrap();
    blackholed_listener_comes_back(listening, direct, &proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_listener_replaces_a_blackholed_connection() {
    let db = database(None).await.unwrap();
    let proxy = Proxy::start(([127, 0, 0, 1], url_port(db.url()).unwrap()).into())
        .await
        .unwrap();
    let via_proxy = with_port(db.url(), proxy.port()).unwrap();
    let listening = durable_postgres_native::NativeStore::connect(&via_proxy)
        .await
        .unwrap();
    listening.set_call_timeout(Duration::from_secs(1));
    let direct = durable_postgres_native::NativeStore::connect(db.url())
        .await
        .unwrap();
    blackholed_listener_comes_back(listening, direct, &proxy).await;
}
