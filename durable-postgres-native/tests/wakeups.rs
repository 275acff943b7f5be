//! The listener on a real PostgreSQL: it reconnects when its connection is killed, stops with
//! the last clone of the store, and is absent in poll-only mode. (Latency and throughput figures:
//! `tests/performance.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use durable_core::{Task, TaskContext, TaskResult, WorkerOptions, async_trait};
use durable_postgres_native::Durable;
use durable_postgres_native::tokio_postgres::{self, NoTls};
use tokio::sync::mpsc;

/// Where started `Ping`s report, by test name.
static PINGS: Mutex<Option<HashMap<String, mpsc::UnboundedSender<u32>>>> = Mutex::new(None);

/// Reports that it started to the test named in its params.
struct Ping;

#[async_trait]
impl Task for Ping {
    const NAME: &'static str = "ping";
    type Params = (String, u32);
    type Output = ();

    async fn run((test, n): (String, u32), _ctx: TaskContext) -> TaskResult<()> {
        if let Some(sender) = PINGS.lock().unwrap().get_or_insert_default().get(&test) {
            let _ = sender.send(n);
        }
        Ok(())
    }
}

/// The pings of test `test`.
fn pings(test: &str) -> mpsc::UnboundedReceiver<u32> {
    let (tx, rx) = mpsc::unbounded_channel();
    PINGS
        .lock()
        .unwrap()
        .get_or_insert_default()
        .insert(test.to_owned(), tx);
    rx
}

/// Spawns ping `n` of `test` and returns how long it took to start.
async fn ping(
    client: &Durable,
    rx: &mut mpsc::UnboundedReceiver<u32>,
    test: &str,
    n: u32,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    client.spawn::<Ping>((test.to_owned(), n)).await.unwrap();
    let got = tokio::time::timeout(limit, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("ping {n} of {test} did not start within {limit:?}"));
    assert_eq!(got, Some(n));
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_reconnects_after_its_connection_is_killed() {
    let db = common::database().await;
    let client = common::client(&db, "reconnect").await;
    client.register::<Ping>().await;
    let mut rx = pings("reconnect");
    let worker = client
        .start_worker(WorkerOptions::default().poll_interval(Duration::from_secs(30)))
        .await;
    ping(&client, &mut rx, "reconnect", 0, Duration::from_secs(15)).await;

    let (admin, connection) = tokio_postgres::connect(db.url(), NoTls).await.unwrap();
    tokio::spawn(connection);
    let killed = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE 'LISTEN %'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(killed, 1, "one listener connection");
    // Past the reconnection (100 ms backoff) and its catch-up wake-up: only NOTIFY can wake
    // the worker now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let latency = ping(&client, &mut rx, "reconnect", 1, Duration::from_secs(5)).await;
    assert!(latency < Duration::from_secs(2), "{latency:?}");

    // The listener stops with the last clone of the store.
    worker.shutdown().await;
    drop(client);
    let listeners = || async {
        admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND query LIKE 'LISTEN %'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while listeners().await > 0 {
        assert!(Instant::now() < deadline, "the listener outlived the store");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_only_client_finds_work_by_polling() {
    let db = common::database().await;
    let client = Durable::builder()
        .database_url(db.url())
        .queue_name("polling")
        .listen(false)
        .build()
        .await
        .unwrap();
    assert!(!client.store().is_listening());
    client.register::<Ping>().await;
    let mut rx = pings("polling");
    let worker = client
        .start_worker(WorkerOptions::default().poll_interval(Duration::from_millis(100)))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    ping(&client, &mut rx, "polling", 1, Duration::from_secs(5)).await;
    worker.shutdown().await;
}
