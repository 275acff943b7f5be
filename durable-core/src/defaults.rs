//! [`ClientDefaults`]: what a client applies to every spawn, its own and its tasks' subtasks,
//! and the checks a spawn passes before it reaches the store.

use serde_json::Value;

use crate::error::{DurableError, DurableResult};
use crate::options::{CancellationPolicy, RetryStrategy, SpawnOptions};
use crate::policy;
use crate::store::NewTask;
use crate::telemetry;

/// The defaults a client applies to every spawn, its own and its tasks' subtasks.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientDefaults {
    /// The client's queue.
    pub queue: String,
    /// Attempts a task gets when its spawn does not say. Default 5.
    pub max_attempts: u32,
    /// Retry strategy when a spawn does not say. Default: [`RetryStrategy::default`].
    pub retry_strategy: RetryStrategy,
    /// Cancellation policy when a spawn does not say. Default: none.
    pub cancellation: CancellationPolicy,
    /// The largest JSON value stored for a task, in bytes of serialized JSON: its params, its
    /// headers, each step's result, its output, and every event payload it or the client emits.
    /// A larger value is refused with a clear error (an invalid-input error for the client; a
    /// failure without retry for a task). Strings holding the NUL character, which
    /// PostgreSQL cannot store, are refused the same way. Default
    /// [`policy::DEFAULT_MAX_PAYLOAD_BYTES`] (4 MiB).
    pub max_payload_bytes: usize,
}

impl Default for ClientDefaults {
    fn default() -> Self {
        ClientDefaults {
            queue: "default".to_owned(),
            max_attempts: 5,
            retry_strategy: RetryStrategy::default(),
            cancellation: CancellationPolicy::default(),
            max_payload_bytes: policy::DEFAULT_MAX_PAYLOAD_BYTES,
        }
    }
}

impl ClientDefaults {
    /// Checks a value about to be stored against [`ClientDefaults::max_payload_bytes`] (and for
    /// NUL characters); `what` names it in the message.
    pub fn check_payload(&self, what: &str, value: &Value) -> Result<(), String> {
        policy::check_payload(what, value, self.max_payload_bytes)
    }

    /// Builds the store's view of a spawn: validates names and options and applies defaults.
    /// With the `telemetry` feature, also writes the current trace context into the headers
    /// (see [`telemetry::TRACE_HEADER`]).
    pub fn new_task(
        &self,
        default_queue: &str,
        task_name: &str,
        params: Value,
        options: SpawnOptions,
    ) -> DurableResult<NewTask> {
        let queue = options.queue.unwrap_or_else(|| default_queue.to_owned());
        policy::validate_queue_name(&queue).map_err(|r| DurableError::invalid("queue name", r))?;
        policy::validate_name("task", task_name)
            .map_err(|r| DurableError::invalid("task name", r))?;
        let max_attempts = options.max_attempts.unwrap_or(self.max_attempts);
        if max_attempts == 0 {
            return Err(DurableError::invalid("max_attempts", "must be at least 1"));
        }
        let retry_strategy = options
            .retry_strategy
            .unwrap_or_else(|| self.retry_strategy.clone());
        validate_retry_strategy(&retry_strategy)?;
        let cancellation = options
            .cancellation
            .unwrap_or_else(|| self.cancellation.clone());
        for limit in [cancellation.max_pending_time, cancellation.max_running_time]
            .into_iter()
            .flatten()
        {
            policy::checked_duration("cancellation limit", limit)
                .map_err(|r| DurableError::invalid("cancellation policy", r))?;
        }
        if let Some(delay) = options.delay {
            policy::checked_duration("spawn delay", delay)
                .map_err(|r| DurableError::invalid("delay", r))?;
        }
        if let Some(key) = &options.idempotency_key {
            policy::validate_name("idempotency key", key)
                .map_err(|r| DurableError::invalid("idempotency key", r))?;
        }
        self.check_payload(&format!("params of task `{task_name}`"), &params)
            .map_err(|r| DurableError::invalid("params", r))?;
        let mut headers = options.headers;
        telemetry::inject_trace_context(&mut headers);
        if !headers.is_empty() {
            let headers =
                serde_json::to_value(&headers).map_err(|source| DurableError::Serialization {
                    what: format!("headers of task `{task_name}`"),
                    source,
                })?;
            self.check_payload(&format!("headers of task `{task_name}`"), &headers)
                .map_err(|r| DurableError::invalid("headers", r))?;
        }
        Ok(NewTask {
            queue,
            task_name: task_name.to_owned(),
            params,
            headers,
            max_attempts,
            retry_strategy,
            cancellation,
            idempotency_key: options.idempotency_key,
            parent_task_id: None,
            delay: options.delay,
        })
    }

    /// Checks the defaults themselves, as a client is built: its queue name, at least one
    /// attempt, a retry strategy whose delays fit.
    pub(crate) fn validate(&self) -> DurableResult<()> {
        policy::validate_queue_name(&self.queue)
            .map_err(|r| DurableError::invalid("queue name", r))?;
        if self.max_attempts == 0 {
            return Err(DurableError::invalid(
                "default_max_attempts",
                "must be at least 1",
            ));
        }
        validate_retry_strategy(&self.retry_strategy)
    }
}

fn validate_retry_strategy(strategy: &RetryStrategy) -> DurableResult<()> {
    let bad = |r: String| DurableError::invalid("retry strategy", r);
    match strategy {
        RetryStrategy::None => Ok(()),
        RetryStrategy::Fixed { base_delay } => {
            policy::checked_duration("base_delay", *base_delay).map_err(bad)?;
            Ok(())
        }
        RetryStrategy::Exponential {
            base_delay,
            factor,
            max_backoff,
        } => {
            policy::checked_duration("base_delay", *base_delay).map_err(bad)?;
            policy::checked_duration("max_backoff", *max_backoff).map_err(bad)?;
            if !factor.is_finite() || *factor < 1.0 {
                return Err(bad(format!(
                    "factor {factor} must be a finite number >= 1.0"
                )));
            }
            Ok(())
        }
    }
}
