//! Transactional spawning: a task spawned inside the application's own transaction with
//! `client.spawn_with(&mut *tx, ..)` exists if and only if that transaction commits. One order
//! is committed (its task runs), one is rolled back (its task never existed).
//!
//! Run it with `cargo run --example transactional_spawn`. It uses the database at
//! `DURABLE_DATABASE_URL` (where it creates the table `example_orders`), or, when that is not
//! set, a throwaway PostgreSQL that is removed when the program exits.

mod common;

use durable::sqlx;
use durable::{Durable, SpawnResult, Task, TaskContext, TaskResult, WorkerOptions, async_trait};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Serialize, Deserialize)]
struct ProcessOrderParams {
    order_id: Uuid,
}

struct ProcessOrder;

#[async_trait]
impl Task for ProcessOrder {
    const NAME: &'static str = "process-order";
    type Params = ProcessOrderParams;
    type Output = String;

    async fn run(params: Self::Params, ctx: TaskContext) -> TaskResult<Self::Output> {
        ctx.step("process", || async {
            Ok(format!("order {} processed", params.order_id))
        })
        .await
    }
}

/// Inserts an order and spawns its task in one transaction, then commits or rolls back.
async fn place_order(
    client: &Durable,
    order_id: Uuid,
    commit: bool,
) -> anyhow::Result<SpawnResult> {
    let mut tx = client.pool().begin().await?;
    sqlx::query("INSERT INTO example_orders (id, status) VALUES ($1, $2)")
        .bind(order_id)
        .bind("pending")
        .execute(&mut *tx)
        .await?;
    let spawned = client
        .spawn_with::<ProcessOrder, _>(&mut *tx, ProcessOrderParams { order_id })
        .await?;
    if commit {
        tx.commit().await?;
    } else {
        tx.rollback().await?;
    }
    Ok(spawned)
}

async fn order_exists(client: &Durable, order_id: Uuid) -> anyhow::Result<bool> {
    let row = sqlx::query("SELECT 1 FROM example_orders WHERE id = $1")
        .bind(order_id)
        .fetch_optional(client.pool())
        .await?;
    Ok(row.is_some())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (database_url, _throwaway) = common::database().await?;
    let client = Durable::builder()
        .database_url(database_url)
        .queue_name("orders")
        .build()
        .await?;
    client.register::<ProcessOrder>().await;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS example_orders (id uuid PRIMARY KEY, status text NOT NULL)",
    )
    .execute(client.pool())
    .await?;

    let (kept, dropped) = (Uuid::new_v4(), Uuid::new_v4());
    let committed = place_order(&client, kept, true).await?;
    println!(
        "order {kept}: inserted + task {} spawned, committed",
        committed.task_id
    );
    let rolled_back = place_order(&client, dropped, false).await?;
    println!(
        "order {dropped}: inserted + task {} spawned, rolled back",
        rolled_back.task_id
    );

    let worker = client.start_worker(WorkerOptions::default()).await;
    let output = common::output::<String>(&client, committed.task_id).await;
    worker.shutdown().await;
    let output = output?;
    println!(
        "committed: order row exists: {}, task completed: {output}",
        order_exists(&client, kept).await?
    );

    let ghost = client.get_task_result(rolled_back.task_id).await?;
    let ghost_row = order_exists(&client, dropped).await?;
    println!("rolled back: order row exists: {ghost_row}, get_task_result: {ghost:?}");
    anyhow::ensure!(
        order_exists(&client, kept).await?,
        "the committed order is missing"
    );
    anyhow::ensure!(
        ghost.is_none() && !ghost_row,
        "the rolled-back spawn left something behind"
    );
    Ok(())
}
