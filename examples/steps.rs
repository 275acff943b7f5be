//! Checkpointed steps: once a step's checkpoint committed, its body never runs again for that
//! task, even when the task fails after it and is retried. And the task id as an idempotency key
//! for a side effect, as in the README's "Checkpointing and exactly-once side effects".
//!
//! Run it with `cargo run --example steps`. It uses the database at `DURABLE_DATABASE_URL`, or,
//! when that is not set, a throwaway PostgreSQL that is removed when the program exits.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use durable::{
    Durable, RetryStrategy, SpawnOptions, Task, TaskContext, TaskError, TaskResult, WorkerOptions,
    async_trait,
};
use serde::{Deserialize, Serialize};

// How many times each step body ran: the side effects the checkpoints protect.
static RESERVE_RUNS: AtomicU32 = AtomicU32::new(0);
static CHARGE_RUNS: AtomicU32 = AtomicU32::new(0);
static SHIP_RUNS: AtomicU32 = AtomicU32::new(0);

#[derive(Serialize, Deserialize)]
struct Order {
    id: u32,
    amount_cents: u64,
}

#[derive(Serialize, Deserialize)]
struct Receipt {
    reservation: String,
    charge: String,
    shipment: String,
    attempts: u32,
}

struct CheckoutTask;

#[async_trait]
impl Task for CheckoutTask {
    const NAME: &'static str = "checkout";
    type Params = Order;
    type Output = Receipt;

    async fn run(order: Self::Params, ctx: TaskContext) -> TaskResult<Self::Output> {
        println!("attempt {} starts", ctx.attempt());
        let reservation: String = ctx
            .step("reserve-stock", || async {
                RESERVE_RUNS.fetch_add(1, Ordering::SeqCst);
                println!("  step `reserve-stock` runs");
                Ok(format!("stock reserved for order {}", order.id))
            })
            .await?;

        // The task id is the same in every attempt, so the payment provider sees the same key
        // even if this body ran twice (a crash between the charge and its checkpoint).
        let charge: String = ctx
            .step("charge-payment", || async {
                CHARGE_RUNS.fetch_add(1, Ordering::SeqCst);
                let idempotency_key = format!("{}:charge", ctx.task_id);
                println!("  step `charge-payment` runs, idempotency key {idempotency_key}");
                Ok(format!(
                    "charged {} cents ({idempotency_key})",
                    order.amount_cents
                ))
            })
            .await?;

        if ctx.attempt() == 1 {
            println!("  attempt 1 fails: the carrier's API timed out");
            return Err(TaskError::failed("carrier API timed out"));
        }

        let shipment: String = ctx
            .step("ship", || async {
                SHIP_RUNS.fetch_add(1, Ordering::SeqCst);
                println!("  step `ship` runs");
                Ok(format!("order {} shipped", order.id))
            })
            .await?;

        Ok(Receipt {
            reservation,
            charge,
            shipment,
            attempts: ctx.attempt(),
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (database_url, _throwaway) = common::database().await?;
    let client = Durable::builder()
        .database_url(database_url)
        .queue_name("checkout")
        .build()
        .await?;
    client.register::<CheckoutTask>().await;

    // Retry quickly, so the demo does not wait for the default backoff (1 s, 2 s, ...).
    let options = SpawnOptions {
        retry_strategy: Some(RetryStrategy::Fixed {
            base_delay: Duration::from_millis(200),
        }),
        ..Default::default()
    };
    let order = Order {
        id: 42,
        amount_cents: 1999,
    };
    let spawned = client
        .spawn_with_options::<CheckoutTask>(order, options)
        .await?;
    println!("spawned task {}", spawned.task_id);

    let worker = client.start_worker(WorkerOptions::default()).await;
    let receipt = common::output::<Receipt>(&client, spawned.task_id).await;
    worker.shutdown().await;
    let receipt = receipt?;

    println!("completed after {} attempts:", receipt.attempts);
    println!(
        "  {}\n  {}\n  {}",
        receipt.reservation, receipt.charge, receipt.shipment
    );
    let runs = [
        ("reserve-stock", RESERVE_RUNS.load(Ordering::SeqCst)),
        ("charge-payment", CHARGE_RUNS.load(Ordering::SeqCst)),
        ("ship", SHIP_RUNS.load(Ordering::SeqCst)),
    ];
    for (step, n) in runs {
        println!("step `{step}` body ran {n} time(s)");
    }
    anyhow::ensure!(
        receipt.attempts == 2,
        "expected 2 attempts, got {}",
        receipt.attempts
    );
    anyhow::ensure!(
        runs.iter().all(|&(_, n)| n == 1),
        "a checkpointed step ran again on the retry"
    );
    println!("attempt 2 reused the checkpoints of attempt 1: no step body ran twice");
    Ok(())
}
