//! The `telemetry` feature on PostgreSQL: one trace from the spawner through a task, its steps and
//! its subtask; the spawner's own trace header kept; the task metrics counted exactly.
//!
//! One test in this file: the OpenTelemetry globals (propagator, meter provider, the tracing
//! subscriber) are per process, and so are the counters they collect.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    unreachable_pub
)]

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use durable::telemetry::{
    CLAIM_DURATION, QUEUE_DEPTH, STEP_DURATION, TASKS_COMPLETED, TASKS_FAILED, TASKS_RETRIED,
    TASKS_SPAWNED, TASKS_STARTED, TRACE_HEADER,
};
use durable::{
    Durable, NonRetryable, RetryStrategy, SpawnOptions, Task, TaskContext, TaskResult, TaskStatus,
    WorkerOptions, async_trait,
};
use durable_testing::postgres::TestDatabase;
use opentelemetry::trace::{SpanId, Status, TraceContextExt, TraceId, TracerProvider};
use opentelemetry::{Value, global};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::json;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use uuid::Uuid;

const QUEUE: &str = "telemetry";

struct Child;

#[async_trait]
impl Task for Child {
    const NAME: &'static str = "child";
    type Params = u32;
    type Output = u32;

    async fn run(n: u32, ctx: TaskContext) -> TaskResult<u32> {
        ctx.step("square", || async move { Ok(n * n) }).await
    }
}

/// Two steps around a subtask it spawns and joins: the join suspends it, so it usually runs
/// twice, the second time replaying `prepare` and the spawn.
struct Parent;

#[async_trait]
impl Task for Parent {
    const NAME: &'static str = "parent";
    type Params = u32;
    type Output = u32;

    async fn run(n: u32, ctx: TaskContext) -> TaskResult<u32> {
        let m: u32 = ctx.step("prepare", || async move { Ok(n + 1) }).await?;
        let child = ctx
            .spawn::<Child>("square", m, SpawnOptions::default())
            .await?;
        let squared = ctx.join("square", child).await?;
        ctx.step("finish", || async move { Ok(squared + 1) }).await
    }
}

/// Returns the headers it was spawned with.
struct EchoHeaders;

#[async_trait]
impl Task for EchoHeaders {
    const NAME: &'static str = "echo-headers";
    type Params = ();
    type Output = BTreeMap<String, serde_json::Value>;

    async fn run(_: (), ctx: TaskContext) -> TaskResult<Self::Output> {
        Ok(ctx.headers().clone())
    }
}

/// Fails its first attempt, succeeds on the second.
struct Flaky;

#[async_trait]
impl Task for Flaky {
    const NAME: &'static str = "flaky";
    type Params = ();
    type Output = u32;

    async fn run(_: (), ctx: TaskContext) -> TaskResult<u32> {
        let attempt = ctx.attempt();
        ctx.step("try", || async move {
            anyhow::ensure!(attempt > 1, "first attempts always fail");
            Ok(attempt)
        })
        .await
    }
}

/// Fails for good.
struct Doomed;

#[async_trait]
impl Task for Doomed {
    const NAME: &'static str = "doomed";
    type Params = ();
    type Output = ();

    async fn run(_: (), ctx: TaskContext) -> TaskResult<()> {
        ctx.step("doom", || async {
            Err(NonRetryable::new("doomed from the start").into())
        })
        .await
    }
}

fn attribute(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

fn text(span: &SpanData, key: &str) -> Option<String> {
    attribute(span, key).map(|value| value.as_str().into_owned())
}

fn is_error(span: &SpanData) -> bool {
    matches!(span.status, Status::Error { .. })
}

/// The cumulative value of a counter for one task name (0 when never counted).
fn counter(metrics: &ResourceMetrics, name: &str, task: &str) -> u64 {
    let mut total = 0;
    for metric in metrics
        .scope_metrics()
        .flat_map(|scope| scope.metrics())
        .filter(|metric| metric.name() == name)
    {
        let AggregatedMetrics::U64(MetricData::Sum(sum)) = metric.data() else {
            panic!("{name} is not a u64 counter");
        };
        for point in sum.data_points() {
            let attributes: HashMap<&str, String> = point
                .attributes()
                .map(|kv| (kv.key.as_str(), kv.value.as_str().into_owned()))
                .collect();
            assert_eq!(attributes.get("queue").map(String::as_str), Some(QUEUE));
            if attributes.get("task").map(String::as_str) == Some(task) {
                total += point.value();
            }
        }
    }
    total
}

/// The `state` attributes of a u64 gauge's data points, all of queue `QUEUE`.
fn gauge_states(metrics: &ResourceMetrics, name: &str) -> Vec<String> {
    let mut states = Vec::new();
    for metric in metrics
        .scope_metrics()
        .flat_map(|scope| scope.metrics())
        .filter(|metric| metric.name() == name)
    {
        let AggregatedMetrics::U64(MetricData::Gauge(gauge)) = metric.data() else {
            panic!("{name} is not a u64 gauge");
        };
        for point in gauge.data_points() {
            let attributes: HashMap<&str, String> = point
                .attributes()
                .map(|kv| (kv.key.as_str(), kv.value.as_str().into_owned()))
                .collect();
            assert_eq!(attributes.get("queue").map(String::as_str), Some(QUEUE));
            states.extend(attributes.get("state").cloned());
        }
    }
    states.sort();
    states
}

/// How many values a histogram recorded, over every attribute set.
fn histogram_count(metrics: &ResourceMetrics, name: &str) -> u64 {
    metrics
        .scope_metrics()
        .flat_map(|scope| scope.metrics())
        .filter(|metric| metric.name() == name)
        .map(|metric| {
            let AggregatedMetrics::F64(MetricData::Histogram(histogram)) = metric.data() else {
                panic!("{name} is not an f64 histogram");
            };
            histogram
                .data_points()
                .map(|point| point.count())
                .sum::<u64>()
        })
        .sum()
}

async fn wait_terminal(client: &Durable, task_id: Uuid) -> durable::TaskPollResult {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let poll = client.get_task_result(task_id).await.unwrap().unwrap();
        if poll.status.is_terminal() {
            return poll;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "task did not finish: {poll:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_spawner_through_task_steps_and_subtask() {
    // OpenTelemetry as an application installs it, with in-memory exporters.
    let spans = InMemorySpanExporter::default();
    let tracer_provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(tracer_provider.tracer("telemetry-test")));
    tracing::subscriber::set_global_default(subscriber).unwrap();
    global::set_text_map_propagator(TraceContextPropagator::new());
    let metrics = InMemoryMetricExporter::default();
    let meter_provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(metrics.clone()).build())
        .build();
    global::set_meter_provider(meter_provider.clone());

    let db = TestDatabase::empty()
        .await
        .expect("a PostgreSQL for the tests");
    let client = Durable::builder()
        .database_url(db.url())
        .queue_name(QUEUE)
        .build()
        .await
        .unwrap();
    client.register::<Parent>().await;
    client.register::<Child>().await;
    client.register::<EchoHeaders>().await;
    client.register::<Flaky>().await;
    client.register::<Doomed>().await;

    // A trace context the spawner sets itself, which durable must keep.
    let own_trace = json!({
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    });
    let spawner = tracing::info_span!("spawner");
    let (parent, flaky, doomed, echo_own) = async {
        let parent = client.spawn::<Parent>(6).await.unwrap();
        let flaky = client
            .spawn_with_options::<Flaky>(
                (),
                SpawnOptions {
                    max_attempts: Some(2),
                    retry_strategy: Some(RetryStrategy::Fixed {
                        base_delay: Duration::from_millis(10),
                    }),
                    ..SpawnOptions::default()
                },
            )
            .await
            .unwrap();
        let doomed = client.spawn::<Doomed>(()).await.unwrap();
        let echo_own = client
            .spawn_with_options::<EchoHeaders>(
                (),
                SpawnOptions {
                    headers: BTreeMap::from([(TRACE_HEADER.to_owned(), own_trace.clone())]),
                    ..SpawnOptions::default()
                },
            )
            .await
            .unwrap();
        (parent, flaky, doomed, echo_own)
    }
    .instrument(spawner.clone())
    .await;
    let spawner_context = spawner.context().span().span_context().clone();
    assert!(spawner_context.is_valid(), "the spawner span has a trace");
    drop(spawner);
    // Outside any span: no trace context to carry.
    let echo_none = client.spawn::<EchoHeaders>(()).await.unwrap();

    let worker = client
        .start_worker(WorkerOptions::default().concurrency(4))
        .await;
    let parent_poll = wait_terminal(&client, parent.task_id).await;
    let flaky_poll = wait_terminal(&client, flaky.task_id).await;
    let doomed_poll = wait_terminal(&client, doomed.task_id).await;
    let echo_own_poll = wait_terminal(&client, echo_own.task_id).await;
    let echo_none_poll = wait_terminal(&client, echo_none.task_id).await;
    worker.shutdown().await;

    assert_eq!(parent_poll.status, TaskStatus::Completed, "{parent_poll:?}");
    assert_eq!(parent_poll.output, Some(json!(50)));
    assert_eq!(flaky_poll.status, TaskStatus::Completed, "{flaky_poll:?}");
    assert_eq!(flaky_poll.output, Some(json!(2)));
    assert_eq!(doomed_poll.status, TaskStatus::Failed, "{doomed_poll:?}");
    assert_eq!(echo_own_poll.status, TaskStatus::Completed);
    assert_eq!(echo_none_poll.status, TaskStatus::Completed);
    // The spawner's own trace header is kept as it was; without a trace none is added.
    assert_eq!(
        echo_own_poll.output,
        Some(json!({ TRACE_HEADER: own_trace })),
        "the spawner's header is not overwritten"
    );
    assert_eq!(echo_none_poll.output, Some(json!({})));

    // --- Spans --------------------------------------------------------------------------------
    tracer_provider.force_flush().unwrap();
    let finished = spans.get_finished_spans().unwrap();
    let by_id: HashMap<SpanId, &SpanData> = finished
        .iter()
        .map(|span| (span.span_context.span_id(), span))
        .collect();
    let trace = spawner_context.trace_id();
    let task_spans = |task_id: Uuid| -> Vec<&SpanData> {
        finished
            .iter()
            .filter(|span| span.name == "durable.task")
            .filter(|span| text(span, "task_id") == Some(task_id.to_string()))
            .collect()
    };
    let parent_of = |span: &SpanData| by_id.get(&span.parent_span_id).copied();

    // Every run of the tasks spawned in the spawner span is a child of the spawner span,
    // through the header: same trace, remote parent.
    for task_id in [parent.task_id, flaky.task_id, doomed.task_id] {
        let runs = task_spans(task_id);
        assert!(!runs.is_empty(), "task {task_id} has a span");
        for run in runs {
            assert_eq!(run.span_context.trace_id(), trace, "{run:?}");
            assert_eq!(run.parent_span_id, spawner_context.span_id(), "{run:?}");
            assert!(run.parent_span_is_remote);
        }
    }

    // The subtask's run is a child of the parent's `spawn` call, in the same trace.
    let child_runs: Vec<&SpanData> = finished
        .iter()
        .filter(|span| {
            span.name == "durable.task" && text(span, "task").as_deref() == Some("child")
        })
        .collect();
    assert_eq!(child_runs.len(), 1, "the subtask ran once");
    let spawn_call = parent_of(child_runs[0]).expect("the subtask's parent span is exported");
    assert_eq!(spawn_call.name, "durable.step");
    assert_eq!(text(spawn_call, "kind").as_deref(), Some("spawn"));
    assert_eq!(text(spawn_call, "name").as_deref(), Some("square"));
    assert_eq!(
        text(spawn_call, "checkpoint").as_deref(),
        Some("$spawn:square")
    );
    assert_eq!(attribute(spawn_call, "replayed"), Some(Value::Bool(false)));
    assert_eq!(child_runs[0].span_context.trace_id(), trace);
    let spawning_run = parent_of(spawn_call).expect("the spawn call's run is exported");
    assert_eq!(
        text(spawning_run, "task_id"),
        Some(parent.task_id.to_string())
    );

    // Every durable call of those tasks is a child of its run, in the same trace.
    let steps: Vec<&SpanData> = finished
        .iter()
        .filter(|span| span.name == "durable.step")
        .collect();
    for step in &steps {
        let run = parent_of(step).expect("a step's run is exported");
        assert_eq!(run.name, "durable.task", "{step:?}");
        let task = text(run, "task").unwrap();
        if task != "echo-headers" {
            assert_eq!(step.span_context.trace_id(), trace, "{step:?}");
        }
    }
    let executed = |task: &str, kind: &str, name: &str| -> Vec<bool> {
        steps
            .iter()
            .filter(|step| {
                text(parent_of(step).unwrap(), "task").as_deref() == Some(task)
                    && text(step, "kind").as_deref() == Some(kind)
                    && text(step, "name").as_deref() == Some(name)
            })
            .map(|step| attribute(step, "replayed") == Some(Value::Bool(true)))
            .collect()
    };
    // Each call ran once for real; a resumed run replays what came before the join.
    for (task, kind, name) in [
        ("parent", "step", "prepare"),
        ("parent", "spawn", "square"),
        ("parent", "step", "finish"),
        ("child", "step", "square"),
    ] {
        let replayed = executed(task, kind, name);
        assert_eq!(
            replayed.iter().filter(|replayed| !**replayed).count(),
            1,
            "{task} {kind} {name}: {replayed:?}"
        );
    }
    let parent_runs = task_spans(parent.task_id).len();
    assert_eq!(
        executed("parent", "step", "prepare").len(),
        parent_runs,
        "`prepare` is replayed by every later run"
    );
    // Every run reaches the join and asks the store: the first one suspends unless the subtask
    // was already done, the last one gets the outcome.
    assert_eq!(
        executed("parent", "join", "square"),
        vec![false; parent_runs]
    );

    // Failures are recorded on their spans; successes are not.
    let flaky_runs = task_spans(flaky.task_id);
    assert_eq!(flaky_runs.len(), 2, "two attempts");
    let failed_attempts: Vec<&&SpanData> = flaky_runs.iter().filter(|run| is_error(run)).collect();
    assert_eq!(failed_attempts.len(), 1);
    assert_eq!(text(failed_attempts[0], "attempt").as_deref(), Some("1"));
    assert!(
        text(failed_attempts[0], "error")
            .unwrap()
            .contains("first attempts always fail")
    );
    let failed_steps: Vec<&&SpanData> = steps
        .iter()
        .filter(|step| text(step, "name").as_deref() == Some("try") && is_error(step))
        .collect();
    assert_eq!(failed_steps.len(), 1);
    assert!(
        text(failed_steps[0], "error")
            .unwrap()
            .contains("first attempts always fail")
    );
    let doomed_runs = task_spans(doomed.task_id);
    assert_eq!(doomed_runs.len(), 1);
    assert!(is_error(doomed_runs[0]));
    assert!(!task_spans(parent.task_id).iter().any(|run| is_error(run)));

    // The spawner's own header decides the trace; no header, no shared trace.
    let own_run = task_spans(echo_own.task_id);
    assert_eq!(own_run.len(), 1);
    assert_eq!(
        own_run[0].span_context.trace_id(),
        TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap()
    );
    assert_eq!(
        own_run[0].parent_span_id,
        SpanId::from_hex("b7ad6b7169203331").unwrap()
    );
    let lone_run = task_spans(echo_none.task_id);
    assert_eq!(lone_run.len(), 1);
    assert_ne!(lone_run[0].span_context.trace_id(), trace);
    assert_eq!(lone_run[0].parent_span_id, SpanId::INVALID);

    // --- Metrics ------------------------------------------------------------------------------
    meter_provider.force_flush().unwrap();
    let exported = metrics.get_finished_metrics().unwrap();
    let last = exported.last().expect("metrics were exported");
    let expected: [(&str, [u64; 5]); 5] = [
        //                  spawned, started, completed, failed, retried
        ("parent", [1, 1, 1, 0, 0]),
        ("child", [1, 1, 1, 0, 0]),
        ("echo-headers", [2, 2, 2, 0, 0]),
        ("flaky", [1, 1, 1, 0, 1]),
        ("doomed", [1, 1, 0, 1, 0]),
    ];
    for (task, counts) in expected {
        let names = [
            TASKS_SPAWNED,
            TASKS_STARTED,
            TASKS_COMPLETED,
            TASKS_FAILED,
            TASKS_RETRIED,
        ];
        for (name, count) in names.into_iter().zip(counts) {
            assert_eq!(counter(last, name, task), count, "{name} of {task}");
        }
    }
    // Steps that ran to a checkpoint: parent `prepare` and `finish`, child `square`, and the
    // second attempt of flaky's `try`.
    assert_eq!(histogram_count(last, STEP_DURATION), 4);
    assert!(histogram_count(last, CLAIM_DURATION) >= 1);
    // The worker reported its queue's depth when it started.
    assert_eq!(
        gauge_states(last, QUEUE_DEPTH),
        ["pending", "running", "sleeping"]
    );

    drop(client);
    db.drop_now().await.unwrap();
}
