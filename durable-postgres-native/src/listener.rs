//! Wake-ups: a background task `LISTEN`s on the `durable` channel on a connection of its own
//! and bumps a per-queue watch channel for every notification, which is what
//! [`Store::work_signal`] hands to workers.
//!
//! [`Store::work_signal`]: durable_core::Store::work_signal

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;

use durable_core::store::WorkSignals;
use durable_postgres_sql::{FINISH_CHANNEL, NOTIFY_CHANNEL};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::{AsyncMessage, Client, Connection, Socket};

use crate::connect::SharedConnector;

/// The shortest and longest pause before reconnecting a lost listener connection.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A `SELECT 1` in flight on the listener's connection.
type Ping<'c> = Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + Send + 'c>>;

/// The shortest quiet time after which the listener checks its connection.
const MIN_QUIET: Duration = Duration::from_millis(100);

/// TCP keepalive idle time of the listener connection, so that a silently dropped connection
/// is noticed (and made again) within about a minute rather than hours.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);

/// How long making the listener connection may take before it is tried again.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The signals the listener bumps: work per queue, and the end of watched tasks; and the
/// store's call timeout, which paces the listener's connection checks.
#[derive(Debug)]
pub(crate) struct Signals {
    work: WorkSignals,
    finish: WorkSignals,
    /// In milliseconds: a listener connection quiet for that long is asked `SELECT 1`, and
    /// replaced if it does not answer within it.
    call_timeout_ms: Arc<AtomicU64>,
}

impl Default for Signals {
    fn default() -> Self {
        Signals {
            work: WorkSignals::default(),
            finish: WorkSignals::default(),
            call_timeout_ms: Arc::new(AtomicU64::new(
                crate::store::DEFAULT_CALL_TIMEOUT.as_millis() as u64,
            )),
        }
    }
}

impl Signals {
    /// How long the listener's connection may stay quiet before it is checked.
    fn quiet(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms.load(Ordering::Relaxed)).max(MIN_QUIET)
    }

    /// The work signal of `queue`.
    pub(crate) fn subscribe(&self, queue: &str) -> watch::Receiver<u64> {
        self.work.subscribe(queue)
    }

    /// Wakes the workers of `queue`.
    #[cfg(test)]
    pub(crate) fn bump(&self, queue: &str) {
        self.work.bump(queue);
    }

    /// Wakes everyone: workers and result waiters (notifications may have been missed).
    pub(crate) fn bump_all(&self) {
        self.work.bump_all();
        self.finish.bump_all();
    }

    /// The signal of the end of `task_id`.
    pub(crate) fn subscribe_finish(&self, task_id: uuid::Uuid) -> watch::Receiver<u64> {
        self.finish.subscribe_pruning(&task_id.to_string())
    }

    /// Forwards one notification.
    fn notified(&self, channel: &str, payload: &str) {
        if channel == NOTIFY_CHANNEL {
            self.work.bump(payload);
        } else if channel == FINISH_CHANNEL {
            self.finish.bump_and_forget(payload);
        }
    }
}

/// The wake-up side of a store: hands out signals and, when listening, runs the listener task
/// from the first `work_signal` call until the store is dropped.
#[derive(Debug)]
pub(crate) struct Wakeups {
    signals: Arc<Signals>,
    /// `None`: poll-only.
    listen: Option<ListenState>,
}

#[derive(Debug)]
struct ListenState {
    config: tokio_postgres::Config,
    connector: SharedConnector,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Wakeups {
    /// Listening on connections made with `config` and `connector`.
    pub(crate) fn listening(
        mut config: tokio_postgres::Config,
        connector: SharedConnector,
    ) -> Self {
        if config.get_keepalives_idle() > KEEPALIVE_IDLE {
            config.keepalives_idle(KEEPALIVE_IDLE);
        }
        Wakeups {
            signals: Arc::default(),
            listen: Some(ListenState {
                config,
                connector,
                task: Mutex::new(None),
            }),
        }
    }

    /// No listener: signals never change and workers poll.
    pub(crate) fn poll_only() -> Self {
        Wakeups {
            signals: Arc::default(),
            listen: None,
        }
    }

    /// The call timeout the store and the listener share.
    pub(crate) fn call_timeout_ms(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.signals.call_timeout_ms)
    }

    pub(crate) fn is_listening(&self) -> bool {
        self.listen.is_some()
    }

    /// The signal of `queue`, starting the listener if needed.
    pub(crate) fn signal(&self, queue: &str) -> watch::Receiver<u64> {
        let receiver = self.signals.subscribe(queue);
        if let Some(listen) = &self.listen {
            listen.ensure_started(&self.signals);
        }
        receiver
    }

    /// The signal of the end of `task_id`, starting the listener if needed.
    pub(crate) fn finish_signal(&self, task_id: uuid::Uuid) -> watch::Receiver<u64> {
        let receiver = self.signals.subscribe_finish(task_id);
        if let Some(listen) = &self.listen {
            listen.ensure_started(&self.signals);
        }
        receiver
    }
}

impl ListenState {
    fn ensure_started(&self, signals: &Arc<Signals>) {
        let mut task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if task.as_ref().is_some_and(|handle| !handle.is_finished()) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let listen = self
                    .connector
                    .0
                    .listen(self.config.clone(), Arc::clone(signals));
                *task = Some(runtime.spawn(listen));
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

/// Listens until aborted; a lost connection is made again with backoff. Every (re)connection
/// bumps every queue, since notifications sent while not listening are lost.
pub(crate) async fn listen_loop<T>(config: tokio_postgres::Config, tls: T, signals: Arc<Signals>)
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + Sync,
    T::TlsConnect: Send + Sync,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let mut backoff = MIN_BACKOFF;
    loop {
        match tokio::time::timeout(CONNECT_TIMEOUT, config.connect(tls.clone())).await {
            Ok(Ok((client, connection))) => {
                let (listened, result) = drive(&client, connection, &signals).await;
                if listened {
                    backoff = MIN_BACKOFF;
                }
                match result {
                    Ok(()) => tracing::info!("listener connection closed; reconnecting"),
                    Err(error) => {
                        tracing::warn!(%error, "listener connection failed; reconnecting");
                    }
                }
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, retry_in = ?backoff, "could not LISTEN for work notifications");
            }
            Err(_) => {
                tracing::warn!(retry_in = ?backoff, "connecting to LISTEN for work notifications timed out");
            }
        }
        // Missed notifications are covered by the bump after reconnecting and by polling.
        signals.bump_all();
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Sends `LISTEN` on `client` and drives its connection, forwarding notifications, until the
/// connection ends or stops answering: every call timeout it is asked `SELECT 1`, and a
/// connection that does not answer within another call timeout (its peer vanished without a
/// word) is given up. Returns whether `LISTEN` succeeded, and how the connection ended.
async fn drive<S, T>(
    client: &Client,
    mut connection: Connection<S, T>,
    signals: &Signals,
) -> (bool, Result<(), BoxError>)
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: TlsStream + Unpin,
{
    let statement = listen_statement();
    let mut listen = pin!(client.batch_execute(&statement));
    let mut listening = false;
    let mut ping: Option<Ping<'_>> = None;
    let mut check = pin!(tokio::time::sleep(signals.quiet()));
    let result = poll_fn(|cx| {
        if !listening && let Poll::Ready(result) = listen.as_mut().poll(cx) {
            result?;
            listening = true;
            tracing::debug!("listening for work notifications");
            signals.bump_all();
        }
        loop {
            match connection.poll_message(cx) {
                Poll::Ready(Some(Ok(AsyncMessage::Notification(notification)))) => {
                    signals.notified(notification.channel(), notification.payload());
                }
                Poll::Ready(Some(Ok(_))) => {} // a notice
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(error.into())),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => break,
            }
        }
        loop {
            if let Some(answer) = ping.as_mut()
                && let Poll::Ready(result) = answer.as_mut().poll(cx)
            {
                result?;
                ping = None;
                check
                    .as_mut()
                    .reset(tokio::time::Instant::now() + signals.quiet());
            }
            if check.as_mut().poll(cx).is_pending() {
                break;
            }
            if ping.is_some() {
                let quiet = signals.quiet();
                return Poll::Ready(Err(format!(
                    "the listener connection did not answer within {quiet:?}"
                )
                .into()));
            }
            // Quiet for a whole call timeout: ask, and give the answer as long again. The
            // next turn polls the query once, which sends it; the connection carries it.
            let answer = client.simple_query("SELECT 1");
            ping = Some(Box::pin(async move { answer.await.map(drop) }));
            check
                .as_mut()
                .reset(tokio::time::Instant::now() + signals.quiet());
        }
        Poll::Pending
    })
    .await;
    (listening, result)
}

/// `LISTEN "durable"; LISTEN "durable_finish"`: the channels are constants of
/// `durable-postgres-sql`, quoted as identifiers (sqlx's `PgListener::listen` sends the same).
fn listen_statement() -> String {
    [NOTIFY_CHANNEL, FINISH_CHANNEL]
        .iter()
        .map(|channel| format!("LISTEN \"{}\";", channel.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bumps_reach_subscribers_of_their_queue_only() {
        let signals = Signals::default();
        let a = signals.subscribe("a");
        let b = signals.subscribe("b");
        signals.bump("a");
        signals.bump("unknown");
        assert!(a.has_changed().unwrap_or(false));
        assert!(!b.has_changed().unwrap_or(true));
        signals.bump_all();
        assert!(b.has_changed().unwrap_or(false));
    }

    #[test]
    fn listen_statement_quotes_the_channel() {
        assert_eq!(
            listen_statement(),
            "LISTEN \"durable\"; LISTEN \"durable_finish\";"
        );
    }
}
