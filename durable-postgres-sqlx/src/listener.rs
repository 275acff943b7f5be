//! Wake-ups: a background task LISTENs on the `durable` channel and bumps a per-queue watch
//! channel for every notification, which is what [`Store::work_signal`] hands to workers.
//!
//! [`Store::work_signal`]: durable_core::Store::work_signal

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use durable_postgres_sql::{FINISH_CHANNEL, NOTIFY_CHANNEL};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The shortest quiet time after which the listener checks its connection.
const MIN_QUIET: Duration = Duration::from_millis(100);

fn default_timeout() -> Arc<AtomicU64> {
    Arc::new(AtomicU64::new(
        crate::store::DEFAULT_CALL_TIMEOUT.as_millis() as u64,
    ))
}

/// The shortest and longest pause before reconnecting a lost listener connection.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

use durable_core::store::WorkSignals as Signals;

/// The wake-up side of a store: hands out signals and, when listening, runs the listener task
/// from the first `work_signal` call until the store is dropped.
#[derive(Debug)]
pub(crate) struct Wakeups {
    signals: Arc<Signals>,
    /// End-of-task signals (`watch_finish`), by task id.
    finish: Arc<Signals>,
    /// The store's call timeout in milliseconds: a listener connection quiet for that long is
    /// asked `SELECT 1`, and replaced if it does not answer within it.
    call_timeout_ms: Arc<AtomicU64>,
    /// `None`: poll-only.
    listen: Option<ListenState>,
}

#[derive(Debug)]
struct ListenState {
    options: PgConnectOptions,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Wakeups {
    /// Listening on a connection made with the options of `pool`.
    pub(crate) fn listening(pool: &PgPool) -> Self {
        Wakeups {
            signals: Arc::default(),
            finish: Arc::default(),
            call_timeout_ms: default_timeout(),
            listen: Some(ListenState {
                options: (*pool.connect_options()).clone(),
                task: Mutex::new(None),
            }),
        }
    }

    /// No listener: signals never change and workers poll.
    pub(crate) fn poll_only() -> Self {
        Wakeups {
            signals: Arc::default(),
            finish: Arc::default(),
            call_timeout_ms: default_timeout(),
            listen: None,
        }
    }

    /// The call timeout the store and the listener share.
    pub(crate) fn call_timeout_ms(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.call_timeout_ms)
    }

    pub(crate) fn is_listening(&self) -> bool {
        self.listen.is_some()
    }

    /// The signal of `queue`, starting the listener if needed.
    pub(crate) fn signal(&self, queue: &str) -> watch::Receiver<u64> {
        let receiver = self.signals.subscribe(queue);
        if let Some(listen) = &self.listen {
            listen.ensure_started(&self.signals, &self.finish, &self.call_timeout_ms);
        }
        receiver
    }

    /// The signal of the end of `task_id`, starting the listener if needed.
    pub(crate) fn finish_signal(&self, task_id: uuid::Uuid) -> watch::Receiver<u64> {
        let receiver = self.finish.subscribe_pruning(&task_id.to_string());
        if let Some(listen) = &self.listen {
            listen.ensure_started(&self.signals, &self.finish, &self.call_timeout_ms);
        }
        receiver
    }
}

impl ListenState {
    fn ensure_started(
        &self,
        signals: &Arc<Signals>,
        finish: &Arc<Signals>,
        call_timeout_ms: &Arc<AtomicU64>,
    ) {
        let mut task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if task.as_ref().is_some_and(|handle| !handle.is_finished()) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let options = self.options.clone();
                let signals = Arc::clone(signals);
                let finish = Arc::clone(finish);
                let timeout = Arc::clone(call_timeout_ms);
                *task = Some(runtime.spawn(listen_loop(options, signals, finish, timeout)));
            }
            Err(_) => {
                tracing::warn!(
                    "work_signal called outside a Tokio runtime: no LISTEN, workers will poll"
                );
            }
        }
    }
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        if let Some(listen) = &self.listen {
            let task = listen.task.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(handle) = task.as_ref() {
                handle.abort();
            }
        }
    }
}

async fn connect(options: &PgConnectOptions) -> Result<PgListener, sqlx::Error> {
    // A pool of its own, of one connection, so the listener never takes a slot of the
    // application's pool; PgListener uses it to reconnect.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(options.clone());
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.ignore_pool_close_event(true);
    listener
        .listen_all([NOTIFY_CHANNEL, FINISH_CHANNEL])
        .await?;
    Ok(listener)
}

/// Listens until aborted; a lost connection is made again with backoff. Every (re)connection
/// bumps every queue, since notifications sent while not listening are lost.
async fn listen_loop(
    options: PgConnectOptions,
    signals: Arc<Signals>,
    finish: Arc<Signals>,
    call_timeout_ms: Arc<AtomicU64>,
) {
    let bump_all = || {
        signals.bump_all();
        finish.bump_all();
    };
    let mut backoff = MIN_BACKOFF;
    loop {
        match connect(&options).await {
            Ok(mut listener) => {
                tracing::debug!("listening for work notifications");
                backoff = MIN_BACKOFF;
                bump_all();
                loop {
                    let quiet = Duration::from_millis(call_timeout_ms.load(Ordering::Relaxed))
                        .max(MIN_QUIET);
                    let Ok(received) = tokio::time::timeout(quiet, listener.try_recv()).await
                    else {
                        // Quiet for a whole call timeout: a connection whose peer vanished
                        // without a word would stay quiet for good. Make sure it answers.
                        let ping = sqlx::query("SELECT 1").execute(&mut listener);
                        match tokio::time::timeout(quiet, ping).await {
                            Ok(Ok(_)) => continue,
                            Ok(Err(error)) => {
                                tracing::warn!(%error, "listener connection failed; reconnecting");
                            }
                            Err(_) => tracing::warn!(
                                timeout = ?quiet,
                                "listener connection did not answer; reconnecting"
                            ),
                        }
                        break;
                    };
                    match received {
                        Ok(Some(notification)) if notification.channel() == FINISH_CHANNEL => {
                            finish.bump_and_forget(notification.payload())
                        }
                        Ok(Some(notification)) => signals.bump(notification.payload()),
                        Ok(None) => {
                            tracing::info!("listener connection lost and made again");
                            bump_all();
                        }
                        Err(error) => {
                            tracing::warn!(%error, "listener connection failed; reconnecting");
                            break;
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?backoff, "could not LISTEN for work notifications");
            }
        }
        // Missed notifications are covered by the bump after reconnecting and by polling.
        bump_all();
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
