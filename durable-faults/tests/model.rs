//! Model-based testing: random operation sequences applied in lockstep to the in-memory store
//! and to each PostgreSQL store give the same observable results (see `durable_faults::model`).
//!
//! Seeded and bounded: `DURABLE_MODEL_SEED` (default below), `DURABLE_MODEL_CASES` (default 24
//! per store) and `DURABLE_MODEL_OPS` (operations per case, default 40). The cases of a store run
//! concurrently, each in a queue of its own, so the real-time waits overlap.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::Duration;

use durable_core::Store;
use durable_faults::harness::{connect, database};
use durable_faults::model::{Op, Rng, Side, UNIT, generate, memory_side};

const DEFAULT_SEED: u64 = 0x00D0_7AB1_E5EE_D001;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs case `case`; `Err` describes the first difference.
async fn run_case<S: Store>(
    store: S,
    pg: &tokio_postgres::Client,
    seed: u64,
    case: u64,
    len: usize,
) -> Result<usize, String> {
    let queue = format!("model-{case}");
    let ops = generate(&mut Rng::new(seed ^ case.wrapping_mul(0x9E37_79B9)), len);
    let mut model = memory_side(&queue);
    let mut real = Side::new(store, &queue);
    let mut compared = 0;
    let mut log: Vec<String> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        if *op == Op::Advance {
            log.push(format!("  {i}: Advance"));
            model.store.advance(2 * UNIT);
            tokio::time::sleep(2 * UNIT).await;
            continue;
        }
        model.store.advance(Duration::from_millis(1));
        let expected = model.apply(op).await;
        let got = real.apply(op).await;
        log.push(format!("  {i}: {op:?} -> {expected:?}"));
        if expected != got {
            let before = &log[..log.len() - 1];
            return Err(format!(
                "seed {seed:#x} case {case}, operation {i} {op:?}:\n  memory:   {expected:?}\n  \
                 postgres: {got:?}\n after:\n{}",
                before.join("\n")
            ));
        }
        compared += usize::from(expected.is_some());
    }
    // The end state of every task: result, attempt, checkpoint names.
    for (n, (m, r)) in model.tasks.iter().zip(&real.tasks).enumerate() {
        let (expected, got) = (model.result(*m).await, real.result(*r).await);
        let snapshot = model.store.task(*m).expect("the model knows its tasks");
        let mut names: Vec<String> = snapshot.checkpoints.keys().cloned().collect();
        names.sort();
        let row = pg
            .query_one(
                "SELECT attempt, ARRAY(SELECT name FROM durable.checkpoints c \
                   WHERE c.task_id = t.task_id ORDER BY name) FROM durable.tasks t WHERE task_id = $1",
                &[r],
            )
            .await
            .unwrap();
        let (attempt, real_names): (i32, Vec<String>) = (row.get(0), row.get(1));
        let cancelled = matches!(
            snapshot.status,
            durable_core::TaskStatus::Cancelled | durable_core::TaskStatus::Failed
        );
        let attempts_differ = snapshot.attempt as i32 != attempt && !cancelled;
        if expected != got || attempts_differ || names != real_names {
            return Err(format!(
                "seed {seed:#x} case {case}, end state of task {n}: memory {expected:?} attempt {} \
                 {names:?}, postgres {got:?} attempt {attempt} {real_names:?}; ops {ops:?}",
                snapshot.attempt
            ));
        }
    }
    if model.tasks.len() != real.tasks.len() {
        return Err(format!("seed {seed:#x} case {case}: task counts differ"));
    }
    Ok(compared)
}

async fn check_store<S, F, Fut>(connect_store: F)
where
    S: Store + Clone,
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = S>,
{
    let seed = env("DURABLE_MODEL_SEED", DEFAULT_SEED);
    let cases = env("DURABLE_MODEL_CASES", 24);
    let len = env("DURABLE_MODEL_OPS", 40) as usize;
    let db = database(None).await.unwrap();
    let store = connect_store(db.url().to_owned()).await;
    let pg = connect(db.url()).await.unwrap();
    let started = std::time::Instant::now();
    let results = futures_join_all((0..cases).map(|case| {
        let store = store.clone();
        let pg = &pg;
        async move { run_case(store, pg, seed, case, len).await }
    }))
    .await;
    let mut compared = 0;
    let mut failures = Vec::new();
    for result in results {
        match result {
            Ok(n) => compared += n,
            Err(e) => failures.push(e),
        }
    }
    println!(
        "[model] seed {seed:#x}: {cases} cases, {compared} operations compared in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Runs futures concurrently on this task (no extra dependency).
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut outputs: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if outputs[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(out) => outputs[i] = Some(out),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(|o| o.unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_store_behaves_like_the_memory_store() {
    check_store(|url| async move {
        durable_postgres_sqlx::SqlxStore::connect(&url)
            .await
            .unwrap()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_store_behaves_like_the_memory_store() {
    check_store(|url| async move {
        durable_postgres_native::NativeStore::connect(&url)
            .await
            .unwrap()
    })
    .await;
}
