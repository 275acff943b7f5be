//! Wake-ups: a background task `LISTEN`s on a connection of its own and bumps a per-queue
//! signal for every notification, which is what [`Store::work_signal`] hands to workers. The
//! driver only connects, waits for the next notification and pings; reconnecting with backoff
//! and checking a quiet connection are written here, once.
//!
//! [`Store::work_signal`]: durable_core::Store::work_signal

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use durable_core::store::WorkSignals;
use durable_postgres_sql::{FINISH_CHANNEL, NOTIFY_CHANNEL};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::driver::{Driver, Listener, Notification};

/// The shortest and longest pause before reconnecting a lost listener connection.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The shortest quiet time after which the listener checks its connection.
const MIN_QUIET: Duration = Duration::from_millis(100);

/// The signals the listener bumps: work per queue, and the end of watched tasks.
#[derive(Debug, Default)]
pub(crate) struct Signals {
    work: WorkSignals,
    finish: WorkSignals,
}

impl Signals {
    /// Wakes everyone: workers and result waiters (notifications may have been missed).
    fn bump_all(&self) {
        self.work.bump_all();
        self.finish.bump_all();
    }

    /// Forwards one notification.
    fn notified(&self, notification: &Notification) {
        if notification.channel == NOTIFY_CHANNEL {
            self.work.bump(&notification.payload);
        } else if notification.channel == FINISH_CHANNEL {
            self.finish.bump_and_forget(&notification.payload);
        }
    }
}

/// The wake-up side of a store: hands out signals and, when listening, runs the listener task
/// from the first signal asked for until the store is dropped.
#[derive(Debug)]
pub(crate) struct Wakeups<D> {
    signals: Arc<Signals>,
    /// The store's call timeout in milliseconds: a listener connection quiet for that long is
    /// pinged, and replaced if it does not answer within it.
    call_timeout_ms: Arc<AtomicU64>,
    /// `None`: poll-only.
    listen: Option<ListenState<D>>,
}

#[derive(Debug)]
struct ListenState<D> {
    driver: D,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl<D: Driver> Wakeups<D> {
    /// Listening through `driver` when given, else poll-only.
    pub(crate) fn new(driver: Option<D>, call_timeout: Duration) -> Self {
        Wakeups {
            signals: Arc::default(),
            call_timeout_ms: Arc::new(AtomicU64::new(millis(call_timeout))),
            listen: driver.map(|driver| ListenState {
                driver,
                task: Mutex::new(None),
            }),
        }
    }

    pub(crate) fn is_listening(&self) -> bool {
        self.listen.is_some()
    }

    /// The call timeout, shared with the listener task.
    pub(crate) fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms.load(Ordering::Relaxed))
    }

    pub(crate) fn set_call_timeout(&self, timeout: Duration) {
        self.call_timeout_ms
            .store(millis(timeout), Ordering::Relaxed);
    }

    /// The signal of `queue`, starting the listener if needed.
    pub(crate) fn work_signal(&self, queue: &str) -> watch::Receiver<u64> {
        let receiver = self.signals.work.subscribe(queue);
        self.ensure_listening();
        receiver
    }

    /// The signal of the end of `task_id`, starting the listener if needed.
    pub(crate) fn finish_signal(&self, task_id: Uuid) -> watch::Receiver<u64> {
        let receiver = self.signals.finish.subscribe_pruning(&task_id.to_string());
        self.ensure_listening();
        receiver
    }

    fn ensure_listening(&self) {
        let Some(listen) = &self.listen else {
            return;
        };
        let mut task = listen.task.lock().unwrap_or_else(PoisonError::into_inner);
        if task.as_ref().is_some_and(|handle| !handle.is_finished()) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                *task = Some(runtime.spawn(listen_loop(
                    listen.driver.clone(),
                    Arc::clone(&self.signals),
                    Arc::clone(&self.call_timeout_ms),
                )));
            }
            Err(_) => {
                tracing::warn!(
                    "work_signal called outside a Tokio runtime: no LISTEN, workers will poll"
                );
            }
        }
    }
}

impl<D> Drop for Wakeups<D> {
    fn drop(&mut self) {
        if let Some(listen) = &self.listen {
            let task = listen.task.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(handle) = task.as_ref() {
                handle.abort();
            }
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Listens until aborted. A lost connection is made again with backoff; a connection quiet
/// for a whole call timeout is pinged and given up if the answer takes as long again (its peer
/// vanished without a word). Every (re)connection bumps every signal, since notifications sent
/// while not listening are lost.
async fn listen_loop<D: Driver>(driver: D, signals: Arc<Signals>, call_timeout_ms: Arc<AtomicU64>) {
    let quiet = || Duration::from_millis(call_timeout_ms.load(Ordering::Relaxed)).max(MIN_QUIET);
    let mut backoff = MIN_BACKOFF;
    loop {
        match driver
            .listen(&[NOTIFY_CHANNEL, FINISH_CHANNEL], quiet())
            .await
        {
            Ok(mut listener) => {
                tracing::debug!("listening for work notifications");
                backoff = MIN_BACKOFF;
                signals.bump_all();
                let why = listen_until_lost(&mut listener, &signals, quiet).await;
                tracing::warn!(%why, "listener connection lost; reconnecting");
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?backoff, "could not LISTEN for work notifications");
            }
        }
        // Missed notifications are covered by the bump after reconnecting and by polling.
        signals.bump_all();
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Forwards the notifications of `listener` until its connection is lost; returns why.
async fn listen_until_lost<L: Listener>(
    listener: &mut L,
    signals: &Signals,
    quiet: impl Fn() -> Duration,
) -> String {
    loop {
        let limit = quiet();
        match tokio::time::timeout(limit, listener.next()).await {
            Ok(Ok(notification)) => signals.notified(&notification),
            Ok(Err(error)) => return error.to_string(),
            Err(_) => match tokio::time::timeout(limit, listener.ping()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return error.to_string(),
                Err(_) => return format!("the connection did not answer within {limit:?}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::DriverError;

    #[test]
    fn notifications_reach_the_subscribers_of_their_channel_and_queue() {
        let signals = Signals::default();
        let a = signals.work.subscribe("a");
        let b = signals.work.subscribe("b");
        let task = Uuid::now_v7();
        let finish = signals.finish.subscribe_pruning(&task.to_string());
        signals.notified(&Notification {
            channel: NOTIFY_CHANNEL.into(),
            payload: "a".into(),
        });
        assert!(a.has_changed().unwrap_or(false));
        assert!(!b.has_changed().unwrap_or(true));
        assert!(!finish.has_changed().unwrap_or(true));
        signals.notified(&Notification {
            channel: FINISH_CHANNEL.into(),
            payload: task.to_string(),
        });
        // Bumped and forgotten: a waiter wakes (changed, or closed with its last value).
        assert!(!matches!(finish.has_changed(), Ok(false)));
        signals.bump_all();
        assert!(b.has_changed().unwrap_or(false));
    }

    /// A listener that plays a script: notifications, then silence with pings answered or not.
    struct Scripted {
        notifications: Vec<Notification>,
        pings_answered: usize,
    }

    impl Listener for Scripted {
        async fn next(&mut self) -> Result<Notification, DriverError> {
            match self.notifications.pop() {
                Some(notification) => Ok(notification),
                None => std::future::pending().await,
            }
        }

        async fn ping(&mut self) -> Result<(), DriverError> {
            if self.pings_answered == 0 {
                return std::future::pending().await;
            }
            self.pings_answered -= 1;
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_connection_that_stops_answering_is_given_up() {
        let signals = Signals::default();
        let work = signals.work.subscribe("q");
        let mut listener = Scripted {
            notifications: vec![Notification {
                channel: NOTIFY_CHANNEL.into(),
                payload: "q".into(),
            }],
            pings_answered: 2,
        };
        let started = tokio::time::Instant::now();
        let why = listen_until_lost(&mut listener, &signals, || Duration::from_secs(1)).await;
        assert!(why.contains("did not answer"), "{why}");
        assert!(work.has_changed().unwrap_or(false));
        // Two answered pings after a quiet second each, then a quiet second and a ping that
        // waits a second in vain.
        assert_eq!(started.elapsed(), Duration::from_secs(4));
    }
}
