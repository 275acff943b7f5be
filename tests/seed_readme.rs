//! The code blocks of the README, each in a program that compiles and runs against PostgreSQL
//! through the facade's default client.

#![cfg(feature = "postgres-sqlx")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use durable::{
    Durable, SpawnOptions, Task, TaskContext, TaskResult, TaskStatus, WorkerOptions, async_trait,
};
use durable_testing::postgres::TestDatabase;
use serde::{Deserialize, Serialize};

async fn client(queue: &str) -> (TestDatabase, Durable) {
    let db = TestDatabase::empty()
        .await
        .expect("a PostgreSQL for the tests");
    let client = Durable::builder()
        .database_url(db.url())
        .queue_name(queue)
        .build()
        .await
        .expect("client");
    (db, client)
}

async fn finish(client: &Durable, task_id: uuid::Uuid) -> serde_json::Value {
    let worker = client
        .start_worker(WorkerOptions::default().concurrency(4))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let poll = loop {
        let poll = client.get_task_result(task_id).await.unwrap().unwrap();
        if poll.status.is_terminal() {
            break poll;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "task did not finish: {poll:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    worker.shutdown().await;
    assert_eq!(poll.status, TaskStatus::Completed, "{poll:?}");
    poll.output.unwrap()
}

// --- Core Concepts > Tasks -------------------------------------------------------------------

#[derive(Serialize, Deserialize)]
struct MyParams {
    n: u32,
}

#[derive(Serialize, Deserialize)]
struct MyOutput {
    doubled: u32,
}

struct MyTask;

#[async_trait]
impl Task for MyTask {
    const NAME: &'static str = "my-task"; // Unique identifier
    type Params = MyParams; // Input (JSON-serializable)
    type Output = MyOutput; // Output (JSON-serializable)

    #[allow(unused_mut)] // the README writes `mut ctx`; every method takes `&self`
    async fn run(params: Self::Params, mut ctx: TaskContext) -> TaskResult<Self::Output> {
        // Your task logic here
        let doubled = ctx.step("double", || async { Ok(params.n * 2) }).await?;
        Ok(MyOutput { doubled })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_trait_block() {
    let (_db, client) = client("tasks").await;
    client.register::<MyTask>().await;
    let spawned = client.spawn::<MyTask>(MyParams { n: 21 }).await.unwrap();
    assert_eq!(finish(&client, spawned.task_id).await["doubled"], 42);
}

// --- Checkpointing: the task id as an idempotency key ---------------------------------------

mod stripe {
    use std::collections::HashSet;
    use std::sync::{LazyLock, Mutex};

    static CHARGED: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Default::default);
    pub static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

    /// A payment API that deduplicates by idempotency key, like real ones do.
    pub async fn charge(amount: u64, idempotency_key: &str) -> anyhow::Result<String> {
        CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let fresh = CHARGED.lock().unwrap().insert(idempotency_key.to_owned());
        Ok(format!("{amount} charged (new charge: {fresh})"))
    }

    pub fn charges() -> usize {
        CHARGED.lock().unwrap().len()
    }
}

static FAILED_ONCE: AtomicU32 = AtomicU32::new(0);

struct Checkout;

#[async_trait]
impl Task for Checkout {
    const NAME: &'static str = "checkout";
    type Params = u64;
    type Output = String;

    async fn run(amount: u64, ctx: TaskContext) -> TaskResult<String> {
        let receipt: String = ctx
            .step("charge-payment", || async {
                let idempotency_key = format!("{}:charge", ctx.task_id);
                let receipt = stripe::charge(amount, &idempotency_key).await?;
                // The charge went through but the worker "crashes" before the checkpoint.
                if FAILED_ONCE.fetch_add(1, Ordering::SeqCst) == 0 {
                    anyhow::bail!("connection lost after charging");
                }
                Ok(receipt)
            })
            .await?;
        Ok(receipt)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_block_charges_once() {
    let (_db, client) = client("checkout").await;
    client.register::<Checkout>().await;
    let spawned = client
        .spawn_with_options::<Checkout>(
            500,
            SpawnOptions {
                retry_strategy: Some(durable::RetryStrategy::Fixed {
                    base_delay: Duration::from_millis(10),
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let receipt = finish(&client, spawned.task_id).await;
    assert_eq!(receipt, "500 charged (new charge: false)");
    assert_eq!(
        stripe::CALLS.load(Ordering::SeqCst),
        2,
        "the step body ran twice"
    );
    assert_eq!(stripe::charges(), 1, "the customer was charged once");
}

// --- Events ----------------------------------------------------------------------------------

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct ShipmentEvent {
    tracking: String,
}

struct AwaitShipment;

#[async_trait]
impl Task for AwaitShipment {
    const NAME: &'static str = "await-shipment";
    type Params = u64;
    type Output = String;

    async fn run(order_id: u64, ctx: TaskContext) -> TaskResult<String> {
        // In one task: wait for an event
        let shipment: ShipmentEvent = ctx
            .await_event(
                &format!("packed:{}", order_id),
                Some(Duration::from_secs(7 * 24 * 3600)), // 7 day timeout
            )
            .await?;
        Ok(shipment.tracking)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_block() {
    let (_db, client) = client("events").await;
    client.register::<AwaitShipment>().await;
    let order_id = 7;
    let spawned = client.spawn::<AwaitShipment>(order_id).await.unwrap();
    // From another task or service: emit the event
    client
        .emit_event(
            &format!("packed:{}", order_id),
            &ShipmentEvent {
                tracking: "1Z999".into(),
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(finish(&client, spawned.task_id).await, "1Z999");
}

// --- Subtasks (Spawn/Join) -------------------------------------------------------------------

#[derive(Serialize, Deserialize)]
struct Item {
    id: u32,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct ItemResult {
    id: u32,
    processed: bool,
}

struct ProcessItem;

#[async_trait]
impl Task for ProcessItem {
    const NAME: &'static str = "process-item";
    type Params = Item;
    type Output = ItemResult;

    async fn run(item: Item, _ctx: TaskContext) -> TaskResult<ItemResult> {
        Ok(ItemResult {
            id: item.id,
            processed: true,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct Output {
    local: u32,
    children: Vec<ItemResult>,
}

fn compute() -> u32 {
    3
}

struct FanOut;

#[async_trait]
impl Task for FanOut {
    const NAME: &'static str = "fan-out";
    type Params = ();
    type Output = Output;

    #[allow(unused_mut)]
    async fn run(params: Self::Params, mut ctx: TaskContext) -> TaskResult<Self::Output> {
        let () = params;
        // Spawn subtasks (runs on same queue)
        let h1 = ctx
            .spawn::<ProcessItem>("item-1", Item { id: 1 }, Default::default())
            .await?;
        let h2 = ctx
            .spawn::<ProcessItem>(
                "item-2",
                Item { id: 2 },
                SpawnOptions {
                    max_attempts: Some(3),
                    ..Default::default()
                },
            )
            .await?;

        // Do local work while subtasks run...
        let local = ctx.step("local-work", || async { Ok(compute()) }).await?;

        // Wait for subtask results
        let r1: ItemResult = ctx.join("item-1", h1).await?;
        let r2: ItemResult = ctx.join("item-2", h2).await?;

        Ok(Output {
            local,
            children: vec![r1, r2],
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subtasks_block() {
    let (_db, client) = client("subtasks").await;
    client.register::<FanOut>().await;
    client.register::<ProcessItem>().await;
    let spawned = client.spawn::<FanOut>(()).await.unwrap();
    let output = finish(&client, spawned.task_id).await;
    assert_eq!(output["local"], 3);
    assert_eq!(output["children"][1]["id"], 2);
    assert_eq!(output["children"][1]["processed"], true);
}

// --- Transactional Spawning ------------------------------------------------------------------

#[derive(Serialize, Deserialize)]
struct ProcessOrderParams {
    order_id: i64,
}

struct ProcessOrder;

#[async_trait]
impl Task for ProcessOrder {
    const NAME: &'static str = "process-order";
    type Params = ProcessOrderParams;
    type Output = i64;

    async fn run(params: ProcessOrderParams, _ctx: TaskContext) -> TaskResult<i64> {
        Ok(params.order_id)
    }
}

async fn transactional_spawn(client: &Durable, order_id: i64, commit: bool) -> anyhow::Result<()> {
    let mut tx = client.pool().begin().await?;

    // Your application write
    sqlx::query("INSERT INTO orders (id, status) VALUES ($1, $2)")
        .bind(order_id)
        .bind("pending")
        .execute(&mut *tx)
        .await?;

    // Enqueue task in the same transaction
    client
        .spawn_with::<ProcessOrder, _>(&mut *tx, ProcessOrderParams { order_id })
        .await?;

    if commit {
        tx.commit().await?;
    } else {
        tx.rollback().await?;
    }
    // Both succeed or both fail - atomic
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_spawn_block() {
    let (_db, client) = client("orders").await;
    client.register::<ProcessOrder>().await;
    sqlx::query("CREATE TABLE orders (id bigint PRIMARY KEY, status text NOT NULL)")
        .execute(client.pool())
        .await
        .unwrap();
    transactional_spawn(&client, 1, false).await.unwrap();
    transactional_spawn(&client, 2, true).await.unwrap();
    let orders: Vec<i64> = sqlx::query_scalar("SELECT id FROM orders")
        .fetch_all(client.pool())
        .await
        .unwrap();
    assert_eq!(orders, vec![2]);
    let ran = client
        .work_until_idle(WorkerOptions::default())
        .await
        .unwrap();
    assert_eq!(ran, 1, "only the committed order's task exists");
}
