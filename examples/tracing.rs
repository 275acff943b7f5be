//! One trace across spawner and worker: a workflow spawned inside a `spawner` span runs its
//! steps and a subtask on a worker, and every span of it lands in the spawner's trace.
//!
//! Run it with `cargo run --example tracing --features telemetry`. It uses the database at
//! `DURABLE_DATABASE_URL`, or a throwaway PostgreSQL when that is not set (see the quickstart
//! example). Spans go to an in-memory exporter and are printed as a tree at the end; a real
//! application installs an exporter to its collector instead, the rest is the same.

use std::collections::HashMap;
use std::time::Duration;

use durable::{
    Durable, SpawnOptions, Task, TaskContext, TaskResult, TaskStatus, WorkerOptions, async_trait,
};
use durable_testing::postgres::TestDatabase;
use opentelemetry::global;
use opentelemetry::trace::{SpanId, TraceContextExt, TracerProvider};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

/// Fetches a page (a subtask), then counts its words.
struct WordCount;

#[async_trait]
impl Task for WordCount {
    const NAME: &'static str = "word-count";
    type Params = String;
    type Output = usize;

    async fn run(url: String, ctx: TaskContext) -> TaskResult<usize> {
        let url: String = ctx
            .step("normalize", || async move { Ok(url.to_lowercase()) })
            .await?;
        let fetch = ctx
            .spawn::<Fetch>("fetch", url, SpawnOptions::default())
            .await?;
        let page = ctx.join("fetch", fetch).await?;
        ctx.step(
            "count",
            || async move { Ok(page.split_whitespace().count()) },
        )
        .await
    }
}

/// Pretends to fetch a page.
struct Fetch;

#[async_trait]
impl Task for Fetch {
    const NAME: &'static str = "fetch";
    type Params = String;
    type Output = String;

    async fn run(url: String, ctx: TaskContext) -> TaskResult<String> {
        ctx.step("download", || async move {
            Ok(format!("the page at {url} has seven words"))
        })
        .await
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // What an application installs once at start: a tracer provider behind a
    // tracing-opentelemetry layer, the W3C propagator, a meter provider.
    let spans = InMemorySpanExporter::default();
    let tracer_provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(tracer_provider.tracer("example"))),
    )?;
    global::set_text_map_propagator(TraceContextPropagator::new());
    let metrics = InMemoryMetricExporter::default();
    let meter_provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(metrics.clone()).build())
        .build();
    global::set_meter_provider(meter_provider.clone());

    let (database_url, _throwaway) = match std::env::var("DURABLE_DATABASE_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let db = TestDatabase::empty().await?;
            (db.url().to_owned(), Some(db))
        }
    };
    let client = Durable::builder()
        .database_url(database_url)
        .queue_name("tracing-example")
        .build()
        .await?;
    client.register::<WordCount>().await;
    client.register::<Fetch>().await;

    // The spawner: say, an HTTP handler with its own span.
    let spawner = tracing::info_span!("spawner");
    let spawned = client
        .spawn::<WordCount>("https://Example.com/".to_owned())
        .instrument(spawner.clone())
        .await?;
    let trace_id = spawner.context().span().span_context().trace_id();
    drop(spawner);

    // A worker, as if in another process.
    let worker = client.start_worker(WorkerOptions::default()).await;
    let poll = loop {
        let poll = client
            .get_task_result(spawned.task_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("task {} vanished", spawned.task_id))?;
        if poll.status.is_terminal() {
            break poll;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    worker.shutdown().await;
    anyhow::ensure!(poll.status == TaskStatus::Completed, "{poll:?}");
    println!("word-count returned {}", poll.output.unwrap_or_default());

    tracer_provider.force_flush()?;
    let finished = spans.get_finished_spans()?;
    let (in_trace, elsewhere): (Vec<&SpanData>, Vec<&SpanData>) = finished
        .iter()
        .partition(|span| span.span_context.trace_id() == trace_id);
    println!("\ntrace {trace_id}: {} spans", in_trace.len());
    println!("{:<52} {:<16}  {:<16}", "span", "span id", "parent id");
    print_tree(&in_trace);
    println!(
        "({} spans in other traces: the worker's own loop)",
        elsewhere.len()
    );

    meter_provider.force_flush()?;
    println!("\nmetrics:");
    if let Some(last) = metrics.get_finished_metrics()?.last() {
        for metric in last.scope_metrics().flat_map(|scope| scope.metrics()) {
            let value = match metric.data() {
                AggregatedMetrics::U64(MetricData::Sum(sum)) => {
                    sum.data_points().map(|point| point.value()).sum::<u64>()
                }
                AggregatedMetrics::F64(MetricData::Histogram(histogram)) => {
                    histogram.data_points().map(|point| point.count()).sum()
                }
                _ => continue,
            };
            println!("  {:<24} {value}", metric.name());
        }
    }
    Ok(())
}

/// Prints spans as a tree: children under their parent, in the order they started.
fn print_tree(spans: &[&SpanData]) {
    let ids: Vec<SpanId> = spans.iter().map(|s| s.span_context.span_id()).collect();
    let mut children: HashMap<SpanId, Vec<&SpanData>> = HashMap::new();
    let mut roots = Vec::new();
    for span in spans {
        if ids.contains(&span.parent_span_id) {
            children.entry(span.parent_span_id).or_default().push(span);
        } else {
            roots.push(*span);
        }
    }
    for list in children.values_mut() {
        list.sort_by_key(|span| span.start_time);
    }
    roots.sort_by_key(|span| span.start_time);
    let mut stack: Vec<(&SpanData, usize)> = roots.into_iter().rev().map(|s| (s, 0)).collect();
    while let Some((span, depth)) = stack.pop() {
        let label = format!("{}{} {}", "  ".repeat(depth), span.name, describe(span));
        println!(
            "{label:<52} {}  {}",
            span.span_context.span_id(),
            span.parent_span_id
        );
        if let Some(list) = children.get(&span.span_context.span_id()) {
            stack.extend(list.iter().rev().map(|child| (*child, depth + 1)));
        }
    }
}

/// The fields that tell the spans apart.
fn describe(span: &SpanData) -> String {
    let field = |key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.as_str().into_owned())
    };
    match span.name.as_ref() {
        "durable.task" => format!(
            "{} attempt {}",
            field("task").unwrap_or_default(),
            field("attempt").unwrap_or_default()
        ),
        "durable.step" => format!(
            "{} {}{}",
            field("kind").unwrap_or_default(),
            field("name").unwrap_or_default(),
            if field("replayed").as_deref() == Some("true") {
                " (replayed)"
            } else {
                ""
            }
        ),
        _ => String::new(),
    }
}
