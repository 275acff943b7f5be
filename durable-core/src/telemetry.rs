//! Telemetry: the trace context carried from a spawner into its task, and metrics.
//!
//! # Spans
//!
//! Whatever the features, `durable` emits [`tracing`] spans: `durable.worker` (fields `worker`,
//! `queue`) around a worker's loop, `durable.task` (`task_id`, `run_id`, `attempt`, `task`,
//! `queue`) around each execution of a task's code, and `durable.step` (`kind`, `name`,
//! `checkpoint`, `replayed`) around each durable call of a [`TaskContext`](crate::TaskContext):
//! `kind` is `step`, `spawn`, `join`, `sleep`, `await`, `emit` or `heartbeat`, `replayed` says
//! whether the call was answered from its checkpoint without doing the work again. A failed
//! task or durable call records its message in the span's `error` field.
//!
//! # The `telemetry` feature
//!
//! With the feature on, `durable` speaks OpenTelemetry through its global API; the application
//! installs the SDK (a tracer provider with a `tracing-opentelemetry` layer, a text-map
//! propagator, a meter provider) and `durable` uses whatever is installed:
//!
//! - **Trace context.** A spawn (from the client or from a task) writes the OpenTelemetry context
//!   of the current span into the task's headers under [`TRACE_HEADER`], through the global
//!   text-map propagator (W3C `traceparent`/`tracestate` with a `TraceContextPropagator`). The
//!   worker makes that context the parent of the task's `durable.task` span, so one trace
//!   follows a workflow from its spawner across workers and subtasks. A header the spawner set
//!   under that key itself is left as it is; with no propagator installed nothing is written.
//! - **Metrics**, from the meter `durable` of the global meter provider (install the provider
//!   before the first spawn or worker: instruments are created once, on first use). Counters
//!   [`TASKS_SPAWNED`], [`TASKS_STARTED`], [`TASKS_COMPLETED`], [`TASKS_FAILED`] and
//!   [`TASKS_RETRIED`] with attributes `queue` and `task`; histograms [`STEP_DURATION`]
//!   (`queue`, `task`) and [`CLAIM_DURATION`] (`queue`), in seconds. The gauge
//!   [`QUEUE_DEPTH`] (`queue`, `state`: pending, running, sleeping), which every worker reports
//!   for its queue every 10 s.
//!
//! Without the feature, the functions of this module do nothing and nothing of OpenTelemetry
//! is linked.

use crate::model::SpawnResult;

/// The header under which a spawn records the trace context of its spawner (a JSON object of
/// strings, as written by the global text-map propagator). Reserved: task code sees it in
/// [`TaskContext::headers`](crate::TaskContext::headers), and a spawn that sets it itself
/// chooses the task's parent trace.
pub const TRACE_HEADER: &str = "durable.trace";

/// Counter: tasks created by a spawn (an idempotent spawn that returned an existing task is not
/// counted).
pub const TASKS_SPAWNED: &str = "durable.tasks.spawned";
/// Counter: tasks started by a worker for the first time (resumes and later attempts are not
/// counted again).
pub const TASKS_STARTED: &str = "durable.tasks.started";
/// Counter: tasks completed.
pub const TASKS_COMPLETED: &str = "durable.tasks.completed";
/// Counter: tasks failed for good (no attempt left, or a failure that is not retried).
pub const TASKS_FAILED: &str = "durable.tasks.failed";
/// Counter: failed attempts followed by another attempt.
pub const TASKS_RETRIED: &str = "durable.tasks.retried";
/// Histogram, seconds: steps that ran to a checkpoint (neither replayed nor failed), from the
/// call of the step's closure to the checkpoint's write.
pub const STEP_DURATION: &str = "durable.step.duration";
/// Histogram, seconds: a worker's claims, from the request to the store's answer.
pub const CLAIM_DURATION: &str = "durable.claim.duration";
/// Gauge: tasks of a queue in a state (attribute `state`). Not reported yet.
pub const QUEUE_DEPTH: &str = "durable.queue.depth";

/// Counts the tasks of `queue` named `task_name` that a spawn created ([`TASKS_SPAWNED`]): the
/// results with [`SpawnResult::created`]. For store adapters that spawn outside
/// [`Durable`](crate::Durable)'s own methods (inside a caller's transaction); `Durable`'s spawns
/// count themselves. Does nothing without the `telemetry` feature.
pub fn record_spawned(queue: &str, task_name: &str, results: &[SpawnResult]) {
    let created = results.iter().filter(|result| result.created).count();
    if created > 0 {
        imp::tasks_spawned(queue, task_name, created as u64);
    }
}

/// Records a failure on `span`: its `error` field (which the span must declare) and, with the
/// `telemetry` feature, an error status on its OpenTelemetry span.
pub(crate) fn record_error(span: &tracing::Span, error: &dyn std::fmt::Display) {
    span.record("error", tracing::field::display(error));
    imp::set_error_status(span, error);
}

pub(crate) use imp::{
    Stopwatch, TaskLabel, adopt_trace_context, inject_trace_context, record_claim_duration,
    record_step_duration,
};

/// Whether metrics are exported (the `telemetry` feature): work done only to feed them, such
/// as counting a queue's tasks, is skipped otherwise.
pub(crate) const ENABLED: bool = cfg!(feature = "telemetry");

/// Reports how many tasks of `queue` are in `state` ([`QUEUE_DEPTH`]).
pub(crate) fn record_queue_depth(queue: &str, state: &str, count: u64) {
    imp::queue_depth(queue, state, count);
}

#[cfg(feature = "telemetry")]
mod imp {
    use std::collections::BTreeMap;
    use std::sync::OnceLock;
    use std::time::Instant;

    use opentelemetry::metrics::{Counter, Gauge, Histogram};
    use opentelemetry::propagation::{Extractor, Injector};
    use opentelemetry::trace::{Status, TraceContextExt};
    use opentelemetry::{Context, InstrumentationScope, KeyValue, global};
    use serde_json::{Map, Value};
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use crate::model::SpawnResult;

    /// Bucket bounds in seconds, from a millisecond to a minute.
    const SECONDS_BUCKETS: [f64; 14] = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
    ];

    struct Instruments {
        spawned: Counter<u64>,
        started: Counter<u64>,
        completed: Counter<u64>,
        failed: Counter<u64>,
        retried: Counter<u64>,
        step_duration: Histogram<f64>,
        claim_duration: Histogram<f64>,
        queue_depth: Gauge<u64>,
    }

    /// The instruments, created on first use from the global meter provider installed then.
    fn instruments() -> &'static Instruments {
        static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
        INSTRUMENTS.get_or_init(|| {
            let meter = global::meter_with_scope(
                InstrumentationScope::builder("durable")
                    .with_version(env!("CARGO_PKG_VERSION"))
                    .build(),
            );
            let counter = |name: &'static str, description: &'static str| {
                meter
                    .u64_counter(name)
                    .with_description(description)
                    .build()
            };
            let seconds = |name: &'static str, description: &'static str| {
                meter
                    .f64_histogram(name)
                    .with_description(description)
                    .with_unit("s")
                    .with_boundaries(SECONDS_BUCKETS.to_vec())
                    .build()
            };
            Instruments {
                spawned: counter(super::TASKS_SPAWNED, "Tasks created by a spawn"),
                started: counter(super::TASKS_STARTED, "Tasks started for the first time"),
                completed: counter(super::TASKS_COMPLETED, "Tasks completed"),
                failed: counter(super::TASKS_FAILED, "Tasks failed for good"),
                retried: counter(super::TASKS_RETRIED, "Failed attempts retried"),
                step_duration: seconds(super::STEP_DURATION, "Duration of the steps that ran"),
                claim_duration: seconds(super::CLAIM_DURATION, "Duration of workers' claims"),
                queue_depth: meter
                    .u64_gauge(super::QUEUE_DEPTH)
                    .with_description("Tasks of a queue in a state")
                    .build(),
            }
        })
    }

    fn task_attributes(queue: &str, task: &str) -> [KeyValue; 2] {
        [
            KeyValue::new("queue", queue.to_owned()),
            KeyValue::new("task", task.to_owned()),
        ]
    }

    pub(super) fn tasks_spawned(queue: &str, task: &str, count: u64) {
        instruments()
            .spawned
            .add(count, &task_attributes(queue, task));
    }

    /// A task's queue and name, kept for counting what happens to it.
    pub(crate) struct TaskLabel {
        queue: String,
        task: String,
    }

    impl TaskLabel {
        pub(crate) fn of(queue: &str, task: &str) -> Self {
            TaskLabel {
                queue: queue.to_owned(),
                task: task.to_owned(),
            }
        }

        fn count(&self, counter: &Counter<u64>) {
            counter.add(1, &task_attributes(&self.queue, &self.task));
        }

        /// Counts the tasks a spawn created.
        pub(crate) fn spawned(&self, results: &[SpawnResult]) {
            super::record_spawned(&self.queue, &self.task, results);
        }

        pub(crate) fn started(&self) {
            self.count(&instruments().started);
        }

        pub(crate) fn completed(&self) {
            self.count(&instruments().completed);
        }

        pub(crate) fn failed(&self) {
            self.count(&instruments().failed);
        }

        pub(crate) fn retried(&self) {
            self.count(&instruments().retried);
        }
    }

    pub(super) fn queue_depth(queue: &str, state: &str, count: u64) {
        instruments().queue_depth.record(
            count,
            &[
                KeyValue::new("queue", queue.to_owned()),
                KeyValue::new("state", state.to_owned()),
            ],
        );
    }

    /// Measures a duration for a histogram.
    pub(crate) struct Stopwatch(Instant);

    impl Stopwatch {
        pub(crate) fn start() -> Self {
            Stopwatch(Instant::now())
        }

        fn seconds(&self) -> f64 {
            self.0.elapsed().as_secs_f64()
        }
    }

    pub(crate) fn record_step_duration(queue: &str, task: &str, stopwatch: &Stopwatch) {
        instruments()
            .step_duration
            .record(stopwatch.seconds(), &task_attributes(queue, task));
    }

    pub(crate) fn record_claim_duration(queue: &str, stopwatch: &Stopwatch) {
        instruments().claim_duration.record(
            stopwatch.seconds(),
            &[KeyValue::new("queue", queue.to_owned())],
        );
    }

    pub(super) fn set_error_status(span: &tracing::Span, error: &dyn std::fmt::Display) {
        if !span.is_disabled() {
            span.set_status(Status::error(error.to_string()));
        }
    }

    /// The trace context's fields, as a JSON object of strings.
    struct Carrier<'a>(&'a mut Map<String, Value>);

    impl Injector for Carrier<'_> {
        fn set(&mut self, key: &str, value: String) {
            self.0.insert(key.to_owned(), Value::String(value));
        }
    }

    struct Fields<'a>(&'a Map<String, Value>);

    impl Extractor for Fields<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(Value::as_str)
        }

        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(String::as_str).collect()
        }
    }

    /// Writes the current trace context into `headers` under [`super::TRACE_HEADER`], unless
    /// the header is set already or the propagator writes nothing.
    pub(crate) fn inject_trace_context(headers: &mut BTreeMap<String, Value>) {
        if headers.contains_key(super::TRACE_HEADER) {
            return;
        }
        let span_context = tracing::Span::current().context();
        // Outside any span the OpenTelemetry layer knows, an application may still have made
        // an OpenTelemetry context current by itself.
        let context = if span_context.span().span_context().is_valid() {
            span_context
        } else {
            Context::current()
        };
        let mut fields = Map::new();
        global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut Carrier(&mut fields))
        });
        if !fields.is_empty() {
            headers.insert(super::TRACE_HEADER.to_owned(), Value::Object(fields));
        }
    }

    /// Makes the trace context found in `headers` the parent of `span` (a task's span, not yet
    /// entered). A missing or unreadable header leaves the span as it is.
    pub(crate) fn adopt_trace_context(span: &tracing::Span, headers: &BTreeMap<String, Value>) {
        let Some(Value::Object(fields)) = headers.get(super::TRACE_HEADER) else {
            return;
        };
        if span.is_disabled() {
            return;
        }
        let parent =
            global::get_text_map_propagator(|propagator| propagator.extract(&Fields(fields)));
        if !parent.span().span_context().is_valid() {
            return;
        }
        // Fails only without an OpenTelemetry layer, where there is no trace to join.
        if let Err(error) = span.set_parent(parent) {
            tracing::trace!(%error, "task span not attached to its spawner's trace");
        }
    }
}

#[cfg(not(feature = "telemetry"))]
mod imp {
    //! Without the `telemetry` feature: the same functions, doing nothing.

    use std::collections::BTreeMap;

    use serde_json::Value;

    use crate::model::SpawnResult;

    pub(super) fn tasks_spawned(_queue: &str, _task: &str, _count: u64) {}

    /// Holds nothing without the feature.
    pub(crate) struct TaskLabel;

    impl TaskLabel {
        pub(crate) fn of(_queue: &str, _task: &str) -> Self {
            TaskLabel
        }

        pub(crate) fn spawned(&self, _results: &[SpawnResult]) {}

        pub(crate) fn started(&self) {}

        pub(crate) fn completed(&self) {}

        pub(crate) fn failed(&self) {}

        pub(crate) fn retried(&self) {}
    }

    pub(super) fn queue_depth(_queue: &str, _state: &str, _count: u64) {}

    /// Measures nothing without the feature.
    pub(crate) struct Stopwatch;

    impl Stopwatch {
        pub(crate) fn start() -> Self {
            Stopwatch
        }
    }

    pub(crate) fn record_step_duration(_queue: &str, _task: &str, _stopwatch: &Stopwatch) {}

    pub(crate) fn record_claim_duration(_queue: &str, _stopwatch: &Stopwatch) {}

    pub(super) fn set_error_status(_span: &tracing::Span, _error: &dyn std::fmt::Display) {}

    pub(crate) fn inject_trace_context(_headers: &mut BTreeMap<String, Value>) {}

    pub(crate) fn adopt_trace_context(_span: &tracing::Span, _headers: &BTreeMap<String, Value>) {}
}
