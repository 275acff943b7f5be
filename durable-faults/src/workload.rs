//! The workload of the fault-injection suite: multi-step tasks that mix steps, a durable sleep,
//! an awaited event, an emitted event and a subtask, and whose step bodies record every
//! execution in the database (`faults.effects`), so that the invariants can be checked
//! afterwards against the checkpoints.

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context as _;
use durable_core::{SpawnOptions, Task, TaskContext, TaskResult, async_trait};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

/// The queue of the workload.
pub const QUEUE: &str = "faults";

/// The names of the steps whose bodies record their executions.
pub const STEP_NAMES: [&str; 4] = ["a", "b", "x", "y"];

/// How long a step body waits for the effects database before it fails (and is retried).
const EFFECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Test instrumentation created in every scenario's database: side-effect records, a switch
/// for the retry storm, and an audit of every state change of a task and of every overwrite of
/// a checkpoint (both by triggers, in the transaction that makes the change).
pub const SETUP_SQL: &str = r#"
CREATE SCHEMA faults;
CREATE TABLE faults.effects (
    task_id uuid NOT NULL, step text NOT NULL, run_id uuid NOT NULL, attempt integer NOT NULL,
    pid integer NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE faults.control (storm boolean NOT NULL);
INSERT INTO faults.control VALUES (false);
CREATE TABLE faults.transitions (
    task_id uuid NOT NULL, old_state text NOT NULL, new_state text NOT NULL,
    old_run uuid NOT NULL, new_run uuid NOT NULL, error_kind text,
    at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE faults.checkpoint_updates (
    task_id uuid NOT NULL, name text NOT NULL, old_run uuid NOT NULL, new_run uuid NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE FUNCTION faults.audit_task() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO faults.transitions (task_id, old_state, new_state, old_run, new_run, error_kind)
    VALUES (NEW.task_id, OLD.state, NEW.state, OLD.run_id, NEW.run_id, NEW.last_error ->> 'kind');
    RETURN NEW;
END $$;
CREATE TRIGGER faults_audit_task AFTER UPDATE ON durable.tasks FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state OR OLD.run_id IS DISTINCT FROM NEW.run_id)
    EXECUTE FUNCTION faults.audit_task();
CREATE FUNCTION faults.audit_checkpoint() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO faults.checkpoint_updates (task_id, name, old_run, new_run)
    VALUES (NEW.task_id, NEW.name, OLD.run_id, NEW.run_id);
    RETURN NEW;
END $$;
CREATE TRIGGER faults_audit_checkpoint AFTER UPDATE ON durable.checkpoints FOR EACH ROW
    EXECUTE FUNCTION faults.audit_checkpoint();
"#;

/// What a top-level task of the workload does between its steps `a` and `b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A durable sleep.
    Sleep,
    /// Awaits the event `go:<i>`, emitted by the test driver or by an `Emit` task.
    Await,
    /// Spawns a [`Leaf`] subtask and joins it.
    Child,
    /// Emits the event `go:<target>` that an `Await` task waits for.
    Emit,
}

/// The params of a [`Flow`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FlowParams {
    /// The task's number in the workload.
    pub i: u32,
    /// What it does.
    pub kind: Kind,
    /// The sleep of a `Sleep` task.
    pub sleep_ms: u64,
    /// The task whose event an `Emit` task emits.
    pub target: Option<u32>,
}

/// The payload of the event `go:<i>`.
pub fn go_payload(i: u32, from: &str) -> Value {
    json!({ "i": i, "from": from })
}

/// The name of the event an `Await` task waits for.
pub fn go_event(i: u32) -> String {
    format!("go:{i}")
}

static EFFECTS: OnceLock<deadpool_postgres::Pool> = OnceLock::new();

/// Connects the pool the step bodies record their executions with (in worker processes).
pub fn init_effects(url: &str, size: usize) -> anyhow::Result<()> {
    let config: tokio_postgres::Config = url.parse().context("effects URL")?;
    let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(EFFECT_TIMEOUT))
        .create_timeout(Some(EFFECT_TIMEOUT))
        .build()
        .context("effects pool")?;
    EFFECTS
        .set(pool)
        .map_err(|_| anyhow::anyhow!("effects pool initialised twice"))
}

/// A step body: records its execution (task, step, run, attempt, process) and fails while the
/// retry storm is on. The record commits before the body returns, so a body that returned has
/// a record, whether or not its checkpoint then committed.
async fn effect(ctx: &TaskContext, step: &str) -> anyhow::Result<u32> {
    let pool = EFFECTS.get().context("effects pool not initialised")?;
    let pid = std::process::id();
    let attempt = i32::try_from(ctx.attempt()).unwrap_or(i32::MAX);
    let record = async {
        let client = pool.get().await.context("effects connection")?;
        let row = client
            .query_one(
                "INSERT INTO faults.effects (task_id, step, run_id, attempt, pid) \
                 VALUES ($1, $2, $3, $4, $5) RETURNING (SELECT storm FROM faults.control)",
                &[
                    &ctx.task_id,
                    &step,
                    &ctx.run_id(),
                    &attempt,
                    &i32::try_from(pid).unwrap_or(i32::MAX),
                ],
            )
            .await
            .context("recording the effect")?;
        anyhow::Ok(row.try_get::<_, bool>(0)?)
    };
    let storm = tokio::time::timeout(EFFECT_TIMEOUT, record)
        .await
        .context("recording the effect timed out")??;
    if storm {
        anyhow::bail!("retry storm: step {step} fails while the storm lasts");
    }
    Ok(pid)
}

/// A top-level task: step `a`, then its [`Kind`]'s durable call, then step `b`.
#[derive(Debug)]
pub struct Flow;

#[async_trait]
impl Task for Flow {
    const NAME: &'static str = "faults.flow";
    type Params = FlowParams;
    type Output = Value;

    async fn run(p: FlowParams, ctx: TaskContext) -> TaskResult<Value> {
        ctx.step("a", || effect(&ctx, "a")).await?;
        let got = match p.kind {
            Kind::Sleep => {
                ctx.sleep_for("nap", Duration::from_millis(p.sleep_ms))
                    .await?;
                Value::Null
            }
            Kind::Await => ctx.await_event::<Value>(&go_event(p.i), None).await?,
            Kind::Child => {
                let leaf = ctx
                    .spawn::<Leaf>("leaf", p.i, SpawnOptions::default())
                    .await?;
                ctx.join("leaf", leaf).await?
            }
            Kind::Emit => {
                let target = p.target.unwrap_or(p.i);
                ctx.emit_event(&go_event(target), &go_payload(target, "task"))
                    .await?;
                Value::Null
            }
        };
        ctx.step("b", || effect(&ctx, "b")).await?;
        Ok(json!({ "i": p.i, "got": got }))
    }
}

/// The subtask of a `Child` flow: two steps.
#[derive(Debug)]
pub struct Leaf;

#[async_trait]
impl Task for Leaf {
    const NAME: &'static str = "faults.leaf";
    type Params = u32;
    type Output = Value;

    async fn run(i: u32, ctx: TaskContext) -> TaskResult<Value> {
        ctx.step("x", || effect(&ctx, "x")).await?;
        ctx.step("y", || effect(&ctx, "y")).await?;
        Ok(json!({ "leaf": i }))
    }
}

/// One task of the workload to spawn, with its idempotency key (spawns are retried through
/// faults: the key makes the retry return the task instead of creating another).
#[derive(Debug, Clone)]
pub struct Planned {
    /// The params.
    pub params: FlowParams,
    /// `flow:<i>`.
    pub idempotency_key: String,
    /// Whether the test driver emits its event (an `Await` task not paired with an `Emit`).
    pub driver_emits: bool,
}

/// The workload: at least `total` tasks, subtasks included. Of every 20 top-level tasks, 6
/// sleep, 6 await an event (3 emitted by the driver, 3 by an `Emit` task), 3 emit and 5 have a
/// subtask, so 25 tasks in all. Deterministic.
pub fn plan(total: usize) -> Vec<Planned> {
    let groups = total.div_ceil(25).max(1);
    let mut planned = Vec::with_capacity(groups * 20);
    let mut next = 0u32;
    let mut push = |kind: Kind, target: Option<u32>, driver_emits: bool, sleep_ms: u64| {
        let i = next;
        next += 1;
        planned.push(Planned {
            params: FlowParams {
                i,
                kind,
                sleep_ms,
                target,
            },
            idempotency_key: format!("flow:{i}"),
            driver_emits,
        });
        i
    };
    for g in 0..groups {
        let sleep_ms = 100 + (g as u64 % 5) * 100;
        for _ in 0..6 {
            push(Kind::Sleep, None, false, sleep_ms);
        }
        for _ in 0..3 {
            push(Kind::Await, None, true, 0);
        }
        for _ in 0..3 {
            let waiter = push(Kind::Await, None, false, 0);
            push(Kind::Emit, Some(waiter), false, 0);
        }
        for _ in 0..5 {
            push(Kind::Child, None, false, 0);
        }
    }
    planned
}

/// How many tasks a plan makes in all (a `Child` flow adds its subtask).
pub fn expected_tasks(plan: &[Planned]) -> usize {
    plan.len() + plan.iter().filter(|p| p.params.kind == Kind::Child).count()
}

/// A task id as text, for messages.
pub fn short(id: Uuid) -> String {
    id.simple().to_string()[..8].to_owned()
}
