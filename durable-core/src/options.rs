//! Options for spawning tasks and running workers.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How long to wait before the next attempt of a failed task.
///
/// The default is `Exponential { base_delay: 1 s, factor: 2.0, max_backoff: 5 min }`: attempt 2
/// starts 1 s after attempt 1 fails, attempt 3 after 2 s, then 4 s, 8 s... capped at 5 minutes.
/// Durations keep their sub-second part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RetryStrategy {
    /// Never retry: the first failure is final, whatever `max_attempts` says.
    None,
    /// Wait the same delay before every retry.
    Fixed {
        /// The delay before each retry.
        #[serde(with = "secs_f64")]
        base_delay: Duration,
    },
    /// Wait `base_delay * factor^(attempt - 1)`, at most `max_backoff`.
    Exponential {
        /// The delay before the first retry.
        #[serde(with = "secs_f64")]
        base_delay: Duration,
        /// The growth factor between retries (at least 1.0).
        factor: f64,
        /// The longest delay.
        #[serde(with = "secs_f64")]
        max_backoff: Duration,
    },
}

impl Default for RetryStrategy {
    fn default() -> Self {
        RetryStrategy::Exponential {
            base_delay: Duration::from_secs(1),
            factor: 2.0,
            max_backoff: Duration::from_secs(300),
        }
    }
}

/// Cancels a task automatically when it waits or runs too long.
///
/// Checked when a worker claims the task and at each durable call the task makes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancellationPolicy {
    /// Cancel the task if no worker started it within this time of being spawned.
    #[serde(default, with = "opt_secs_f64")]
    pub max_pending_time: Option<Duration>,
    /// Cancel the task if it is still unfinished this long after it first started
    /// (sleeps and waits included).
    #[serde(default, with = "opt_secs_f64")]
    pub max_running_time: Option<Duration>,
}

impl CancellationPolicy {
    /// Whether the policy can ever fire.
    pub fn is_empty(&self) -> bool {
        self.max_pending_time.is_none() && self.max_running_time.is_none()
    }
}

/// Options for one spawn. Unset fields take the client's defaults.
///
/// ```
/// use durable_core::{RetryStrategy, SpawnOptions};
/// use std::time::Duration;
///
/// let options = SpawnOptions {
///     max_attempts: Some(3),
///     retry_strategy: Some(RetryStrategy::Fixed { base_delay: Duration::from_millis(250) }),
///     idempotency_key: Some("order-42".into()),
///     ..Default::default()
/// };
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpawnOptions {
    /// How many attempts the task gets in all (at least 1). Default: the client's
    /// `default_max_attempts` (5 unless configured).
    pub max_attempts: Option<u32>,
    /// How long to wait between attempts. Default: the client's `default_retry_strategy`.
    pub retry_strategy: Option<RetryStrategy>,
    /// Free-form metadata stored with the task and readable by its code
    /// ([`TaskContext::headers`](crate::TaskContext::headers)). The key
    /// [`TRACE_HEADER`](crate::telemetry::TRACE_HEADER) is reserved for the spawner's trace
    /// context.
    pub headers: BTreeMap<String, Value>,
    /// The queue to spawn into. Default: the client's queue (for subtasks: the parent's queue).
    pub queue: Option<String>,
    /// Automatic cancellation. Default: the client's `default_cancellation`.
    pub cancellation: Option<CancellationPolicy>,
    /// When set, a second spawn with the same key in the same queue returns the existing task
    /// instead of creating a new one.
    pub idempotency_key: Option<String>,
    /// Do not start the task before this delay has passed.
    pub delay: Option<Duration>,
}

/// Options for a [`Worker`](crate::Worker).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WorkerOptions {
    /// A name for this worker, recorded on the runs it claims. Default: host name, process id and
    /// a random suffix.
    pub worker_id: Option<String>,
    /// How many tasks run at once. Default 1.
    pub concurrency: usize,
    /// The lease a claim takes: a run that makes no durable call (step, heartbeat...) for this
    /// long loses the task, which is then retried as a new attempt. Default 120 s.
    pub claim_timeout: Duration,
    /// The most tasks one claim takes. Default: `concurrency`.
    pub batch_size: Option<usize>,
    /// How long an idle worker waits before polling again when no wake-up arrives. Default 250 ms.
    pub poll_interval: Duration,
    /// How often the worker recovers tasks whose lease expired, even when all its slots are busy.
    /// Default 1 s.
    pub lease_check_interval: Duration,
    /// How often the worker looks for due schedules of its queue (and sooner when a tick is
    /// nearer); `None`: this worker fires no schedule. Default 1 s. With several workers, each
    /// tick still fires once.
    pub schedule_interval: Option<Duration>,
    /// Retention: finished tasks of the queue (completed, failed, cancelled) are deleted this
    /// long after they ended, with their checkpoints, waits and events older than that; `None`
    /// keeps them forever. Default `None`. See [`Durable::purge_finished`] for what goes and
    /// what stays.
    ///
    /// [`Durable::purge_finished`]: crate::Durable::purge_finished
    pub retention: Option<Duration>,
    /// How often retention runs when [`WorkerOptions::retention`] is set. Default 60 s.
    pub retention_interval: Duration,
    /// The most tasks one retention batch deletes (one short transaction each). Default 1,000.
    pub retention_batch_size: usize,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            worker_id: None,
            concurrency: 1,
            claim_timeout: Duration::from_secs(120),
            batch_size: None,
            poll_interval: Duration::from_millis(250),
            lease_check_interval: Duration::from_secs(1),
            schedule_interval: Some(Duration::from_secs(1)),
            retention: None,
            retention_interval: Duration::from_secs(60),
            retention_batch_size: 1_000,
        }
    }
}

impl WorkerOptions {
    /// Sets [`WorkerOptions::concurrency`].
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Sets [`WorkerOptions::claim_timeout`].
    pub fn claim_timeout(mut self, claim_timeout: Duration) -> Self {
        self.claim_timeout = claim_timeout;
        self
    }

    /// Sets [`WorkerOptions::batch_size`].
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = Some(batch_size);
        self
    }

    /// Sets [`WorkerOptions::poll_interval`].
    pub fn poll_interval(mut self, poll_interval: Duration) -> Self {
        self.poll_interval = poll_interval;
        self
    }

    /// Sets [`WorkerOptions::worker_id`].
    pub fn worker_id(mut self, worker_id: impl Into<String>) -> Self {
        self.worker_id = Some(worker_id.into());
        self
    }

    /// Sets [`WorkerOptions::lease_check_interval`].
    pub fn lease_check_interval(mut self, interval: Duration) -> Self {
        self.lease_check_interval = interval;
        self
    }

    /// Sets [`WorkerOptions::schedule_interval`] (`None`: fire no schedule).
    pub fn schedule_interval(mut self, interval: Option<Duration>) -> Self {
        self.schedule_interval = interval;
        self
    }

    /// Sets [`WorkerOptions::retention`]: delete finished tasks this long after they ended.
    pub fn retention(mut self, older_than: Duration) -> Self {
        self.retention = Some(older_than);
        self
    }

    /// Sets [`WorkerOptions::retention_interval`].
    pub fn retention_interval(mut self, interval: Duration) -> Self {
        self.retention_interval = interval;
        self
    }

    /// Sets [`WorkerOptions::retention_batch_size`].
    pub fn retention_batch_size(mut self, batch_size: usize) -> Self {
        self.retention_batch_size = batch_size;
        self
    }
}

/// Serde for `Duration` as seconds in a float, so stored JSON stays readable and sub-second
/// precision survives.
mod secs_f64 {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(D::Error::custom)
    }
}

mod opt_secs_f64 {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(d)?
            .map(|secs| Duration::try_from_secs_f64(secs).map_err(D::Error::custom))
            .transpose()
    }
}
