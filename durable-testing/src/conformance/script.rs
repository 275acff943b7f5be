//! The tasks the conformance suite runs: a scripted task whose params list what it does, and
//! probes that count how often each piece of task code really ran.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use durable_core::{
    NonRetryable, Task, TaskContext, TaskError, TaskHandle, TaskResult, async_trait,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Notify;

static COUNTS: LazyLock<Mutex<HashMap<String, u32>>> = LazyLock::new(Default::default);
static REPORTS: LazyLock<Mutex<HashMap<String, uuid::Uuid>>> = LazyLock::new(Default::default);
static GATES: LazyLock<Mutex<HashMap<String, Arc<Notify>>>> = LazyLock::new(Default::default);

/// Counts a run of the code labelled `label` in the test `key`.
pub(crate) fn hit(key: &str, label: &str) {
    let mut counts = COUNTS.lock().unwrap_or_else(PoisonError::into_inner);
    *counts.entry(format!("{key}/{label}")).or_insert(0) += 1;
}

/// How often the code labelled `label` ran in the test `key`.
pub(crate) fn hits(key: &str, label: &str) -> u32 {
    let counts = COUNTS.lock().unwrap_or_else(PoisonError::into_inner);
    counts.get(&format!("{key}/{label}")).copied().unwrap_or(0)
}

/// The task id that the task of test `key` reported as `label`.
pub(crate) fn reported(key: &str, label: &str) -> Option<uuid::Uuid> {
    let reports = REPORTS.lock().unwrap_or_else(PoisonError::into_inner);
    reports.get(&format!("{key}/{label}")).copied()
}

fn report(key: &str, label: &str, task_id: uuid::Uuid) {
    let mut reports = REPORTS.lock().unwrap_or_else(PoisonError::into_inner);
    reports.insert(format!("{key}/{label}"), task_id);
}

fn gate(key: &str, name: &str) -> Arc<Notify> {
    let mut gates = GATES.lock().unwrap_or_else(PoisonError::into_inner);
    Arc::clone(gates.entry(format!("{key}/{name}")).or_default())
}

/// Opens gate `name` of test `key`: the task blocked on it goes on.
pub(crate) fn open_gate(key: &str, name: &str) {
    gate(key, name).notify_one();
}

/// One thing a scripted task does.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Op {
    /// A step returning `value`; its body fails (before the checkpoint) on the listed attempts.
    Step {
        name: String,
        value: Value,
        #[serde(default)]
        fail_on: Vec<u32>,
    },
    /// Fails the attempt outside any step on the listed attempts (every attempt if empty).
    Fail {
        #[serde(default)]
        on: Vec<u32>,
        retryable: bool,
    },
    /// Panics on the listed attempts (every attempt if empty).
    Panic {
        #[serde(default)]
        on: Vec<u32>,
    },
    /// A durable sleep.
    Sleep { name: String, ms: u64 },
    /// An await; with `catch_timeout` a timeout yields the string "timeout" instead of failing.
    Await {
        event: String,
        timeout_ms: Option<u64>,
        #[serde(default)]
        catch_timeout: bool,
    },
    /// Emits an event.
    Emit { event: String, payload: Value },
    /// Spawns a scripted subtask.
    Spawn { name: String, script: Script },
    /// Joins the subtask spawned as `name`; with `catch` a failure yields its message.
    Join {
        name: String,
        #[serde(default)]
        catch: bool,
    },
    /// Extends the lease.
    Heartbeat { ms: u64 },
    /// Reports the task's id under `label`, for the test to find subtasks.
    Report { label: String },
    /// Waits (in real time, outside durable state) until the test opens gate `name`.
    Gate { name: String },
}

/// What a scripted task does, and the key that separates its probes from other tests'.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Script {
    pub(crate) key: String,
    pub(crate) ops: Vec<Op>,
}

impl Script {
    pub(crate) fn new(key: &str, ops: Vec<Op>) -> Self {
        Script {
            key: key.to_owned(),
            ops,
        }
    }
}

fn on(list: &[u32], attempt: u32) -> bool {
    list.is_empty() || list.contains(&attempt)
}

pub(crate) async fn run_script(script: Script, ctx: &TaskContext) -> TaskResult<Vec<Value>> {
    let key = script.key;
    hit(&key, "run");
    let mut out = Vec::new();
    let mut children: HashMap<String, TaskHandle<Vec<Value>>> = HashMap::new();
    for op in script.ops {
        match op {
            Op::Step {
                name,
                value,
                fail_on,
            } => {
                let label = format!("step:{name}");
                let attempt = ctx.attempt();
                let v: Value = ctx
                    .step(&name, || async {
                        hit(&key, &label);
                        if fail_on.contains(&attempt) {
                            anyhow::bail!("step {name} fails on attempt {attempt}");
                        }
                        Ok(value)
                    })
                    .await?;
                out.push(v);
            }
            Op::Fail {
                on: attempts,
                retryable,
            } => {
                if on(&attempts, ctx.attempt()) {
                    hit(&key, "fail");
                    return Err(if retryable {
                        TaskError::failed(format!("scripted failure on attempt {}", ctx.attempt()))
                    } else {
                        anyhow::Error::new(NonRetryable::new("scripted permanent failure")).into()
                    });
                }
            }
            Op::Panic { on: attempts } => {
                if on(&attempts, ctx.attempt()) {
                    hit(&key, "panic");
                    #[allow(clippy::panic)]
                    {
                        panic!("scripted panic on attempt {}", ctx.attempt());
                    }
                }
            }
            Op::Sleep { name, ms } => {
                ctx.sleep_for(&name, Duration::from_millis(ms)).await?;
                hit(&key, &format!("woke:{name}"));
            }
            Op::Await {
                event,
                timeout_ms,
                catch_timeout,
            } => {
                let timeout = timeout_ms.map(Duration::from_millis);
                match ctx.await_event::<Value>(&event, timeout).await {
                    Ok(payload) => out.push(payload),
                    Err(TaskError::Timeout { .. }) if catch_timeout => out.push(json!("timeout")),
                    Err(error) => return Err(error),
                }
            }
            Op::Emit { event, payload } => ctx.emit_event(&event, &payload).await?,
            Op::Spawn { name, script } => {
                let handle = ctx
                    .spawn::<ScriptTask>(&name, script, Default::default())
                    .await?;
                out.push(json!(handle.task_id));
                report(&key, &format!("spawned:{name}"), handle.task_id);
                children.insert(name, handle);
            }
            Op::Join { name, catch } => {
                let handle = children
                    .get(&name)
                    .copied()
                    .ok_or_else(|| TaskError::permanent(format!("no child named {name}")))?;
                match ctx.join(&name, handle).await {
                    Ok(output) => out.push(json!(output)),
                    Err(error @ TaskError::ChildFailed { .. }) if catch => {
                        out.push(json!(error.to_string()))
                    }
                    Err(error) => return Err(error),
                }
            }
            Op::Heartbeat { ms } => ctx.heartbeat(Some(Duration::from_millis(ms))).await?,
            Op::Report { label } => {
                hit(&key, &format!("report:{label}"));
                report(&key, &label, ctx.task_id);
            }
            Op::Gate { name } => {
                hit(&key, &format!("gate:{name}"));
                gate(&key, &name).notified().await;
            }
        }
    }
    hit(&key, "done");
    Ok(out)
}

/// The scripted task.
pub(crate) struct ScriptTask;

#[async_trait]
impl Task for ScriptTask {
    const NAME: &'static str = "conformance.script";
    type Params = Script;
    type Output = Vec<Value>;

    async fn run(params: Self::Params, ctx: TaskContext) -> TaskResult<Self::Output> {
        run_script(params, &ctx).await
    }
}

/// The same script under another name, for workers that specialise.
pub(crate) struct OtherScriptTask;

#[async_trait]
impl Task for OtherScriptTask {
    const NAME: &'static str = "conformance.other";
    type Params = Script;
    type Output = Vec<Value>;

    async fn run(params: Self::Params, ctx: TaskContext) -> TaskResult<Self::Output> {
        run_script(params, &ctx).await
    }
}
