//! [`TaskContext`]: the durable calls available to task code.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use tracing::{Instrument, Span};
use uuid::Uuid;

use crate::defaults::ClientDefaults;
use crate::error::{ControlFlow, TaskError, TaskResult};
use crate::model::{AwaitCheckpoint, ChildOutcome, SleepCheckpoint, TaskStatus};
use crate::options::SpawnOptions;
use crate::policy;
use crate::store::{
    AwaitOutcome, ClaimedRun, RunRef, SleepOutcome, Store, WakeAt, child_event_name,
};
use crate::task::{Task, TaskHandle, params_value};
use crate::telemetry::{self, Stopwatch, TaskLabel};

/// The context of one run of a task: its identity and the durable calls.
///
/// Every durable call takes a name. Its result is checkpointed under that name, so when the task
/// runs again (a retry, or a resume after a sleep or an event) the call returns the recorded
/// result instead of doing the work again. Names must be deterministic: the same code path must
/// use the same names in the same order.
///
/// **Repeated names.** Using a name a second time in one run is allowed and means a new call: the
/// second use is checkpointed as `name#2`, the third as `name#3`, and so on, counted per kind of
/// call. A loop `for item in items { ctx.step("process", ..) }` therefore checkpoints each
/// iteration, as long as the loop runs in the same order every time. Names may not contain `#`
/// or start with `$`, and are at most 255 bytes.
///
/// Every method takes `&self`, so a step closure may read the context (for example `ctx.task_id`
/// as an idempotency key).
///
/// Each durable call runs in a `durable.step` [`tracing`] span (see [`crate::telemetry`]).
pub struct TaskContext {
    /// The task's id: stable across retries and resumes. Use it to build idempotency keys for
    /// side effects.
    pub task_id: Uuid,
    run: RunRef,
    attempt: u32,
    task_name: String,
    headers: BTreeMap<String, Value>,
    store: Arc<dyn Store>,
    defaults: Arc<ClientDefaults>,
    lease: Duration,
    claimed_now: DateTime<Utc>,
    running_deadline: Option<Instant>,
    /// When this run's lease has surely expired at the store, by the local clock: the end of
    /// the last successful fenced call plus the lease it asked for (the store started the lease
    /// before the answer came back, so this is never early). See [`TaskContext::lease_watch`].
    lease_deadline: Arc<Mutex<Instant>>,
    state: Mutex<ContextState>,
}

#[derive(Default)]
struct ContextState {
    checkpoints: HashMap<String, Value>,
    uses: HashMap<String, u32>,
    /// The checkpoints recorded by earlier runs that this run has not read yet: while any is
    /// left, the run replays history recorded by older code (see [`TaskContext::patched`]).
    unread: HashSet<String>,
}

impl std::fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskContext")
            .field("task_id", &self.task_id)
            .field("run_id", &self.run.run_id)
            .field("attempt", &self.attempt)
            .field("task_name", &self.task_name)
            .field("queue", &self.run.queue)
            .finish_non_exhaustive()
    }
}

impl TaskContext {
    pub(crate) fn new(
        claimed: ClaimedRun,
        store: Arc<dyn Store>,
        defaults: Arc<ClientDefaults>,
        lease: Duration,
    ) -> Self {
        let started = claimed.first_started_at.unwrap_or(claimed.now);
        let running_deadline = claimed.cancellation.max_running_time.map(|limit| {
            let spent = (claimed.now - started).to_std().unwrap_or_default();
            Instant::now() + limit.saturating_sub(spent)
        });
        TaskContext {
            task_id: claimed.run.task_id,
            run: claimed.run,
            attempt: claimed.attempt,
            task_name: claimed.task_name,
            headers: claimed.headers,
            store,
            defaults,
            lease,
            claimed_now: claimed.now,
            running_deadline,
            lease_deadline: Arc::new(Mutex::new(Instant::now() + lease)),
            state: Mutex::new(ContextState {
                unread: claimed.checkpoints.keys().cloned().collect(),
                checkpoints: claimed.checkpoints,
                uses: HashMap::new(),
            }),
        }
    }

    /// The client defaults this run applies (payload limit, subtask defaults).
    pub(crate) fn defaults(&self) -> Arc<ClientDefaults> {
        Arc::clone(&self.defaults)
    }

    /// The moment, by the local clock, after which this run has surely lost its lease; moved
    /// by every successful fenced call. The worker abandons a run whose code is still running
    /// then: it can no longer write anything, and its slot is better given to other work.
    pub(crate) fn lease_watch(&self) -> Arc<Mutex<Instant>> {
        Arc::clone(&self.lease_deadline)
    }

    /// Records that a fenced call asking for `lease` succeeded.
    fn renewed(&self, lease: Duration) {
        let mut deadline = self
            .lease_deadline
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *deadline = Instant::now() + lease;
    }

    /// The id of this run (one run per attempt).
    pub fn run_id(&self) -> Uuid {
        self.run.run_id
    }

    /// This run's attempt number, starting at 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The task's registered name.
    pub fn task_name(&self) -> &str {
        &self.task_name
    }

    /// The queue the task runs on.
    pub fn queue(&self) -> &str {
        &self.run.queue
    }

    /// The headers given at spawn.
    pub fn headers(&self) -> &BTreeMap<String, Value> {
        &self.headers
    }

    /// Runs `f` once for this task and checkpoints its result under `name`.
    ///
    /// If the step completed in an earlier run, `f` is not called and the recorded result is
    /// returned. Steps are at-least-once: if the run dies after `f` finished but before the
    /// checkpoint committed, `f` runs again on the next attempt. An error from `f` fails the
    /// attempt (retried per the task's strategy unless it is a
    /// [`NonRetryable`](crate::NonRetryable)).
    pub async fn step<T, F, Fut>(&self, name: &str, f: F) -> TaskResult<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let span = call_span("step", name);
        traced(span.clone(), self.run_step(&span, name, f)).await
    }

    async fn run_step<T, F, Fut>(&self, span: &Span, name: &str, f: F) -> TaskResult<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let key = self.checkpoint_key("", "step", name).await?;
        span.record("checkpoint", key.as_str());
        if let Some(value) = self.cached(&key) {
            span.record("replayed", true);
            return decode(&key, value);
        }
        span.record("replayed", false);
        let stopwatch = Stopwatch::start();
        let output = f().await.map_err(TaskError::from)?;
        let value = serde_json::to_value(&output).map_err(|e| {
            TaskError::permanent(format!(
                "step `{key}` returned a value that is not JSON: {e}"
            ))
        })?;
        // A replay reads the checkpoint back as a `T`: make sure it can, now (a NaN or an
        // infinite float serializes as null and would fail only on replay).
        if let Err(e) = T::deserialize(&value) {
            return Err(TaskError::permanent(format!(
                "step `{key}` returned a value that does not read back from its JSON (a NaN or \
                 infinite float becomes null): {e}"
            )));
        }
        self.defaults
            .check_payload(&format!("result of step `{key}`"), &value)
            .map_err(TaskError::permanent)?;
        self.store
            .write_checkpoint(&self.run, &key, value.clone(), self.lease)
            .await?;
        self.renewed(self.lease);
        self.remember(key, value);
        telemetry::record_step_duration(&self.run.queue, &self.task_name, &stopwatch);
        Ok(output)
    }

    /// Spawns subtask `T` on this task's queue, once: a replay returns the same handle.
    ///
    /// The subtask records this task as its parent: it is cancelled when this task fails or is
    /// cancelled, and its outcome can be awaited with [`TaskContext::join`].
    pub async fn spawn<T: Task>(
        &self,
        name: &str,
        params: T::Params,
        options: SpawnOptions,
    ) -> TaskResult<TaskHandle<T::Output>> {
        let span = call_span("spawn", name);
        traced(
            span.clone(),
            self.spawn_child::<T>(&span, name, params, options),
        )
        .await
    }

    async fn spawn_child<T: Task>(
        &self,
        span: &Span,
        name: &str,
        params: T::Params,
        options: SpawnOptions,
    ) -> TaskResult<TaskHandle<T::Output>> {
        let key = self.checkpoint_key("$spawn:", "spawn", name).await?;
        span.record("checkpoint", key.as_str());
        if let Some(value) = self.cached(&key) {
            span.record("replayed", true);
            let id: SpawnedChild = decode(&key, value)?;
            return Ok(TaskHandle::new(id.task_id));
        }
        span.record("replayed", false);
        if let Some(queue) = options.queue.as_deref()
            && queue != self.run.queue
        {
            return Err(TaskError::permanent(format!(
                "subtask `{name}` asks for queue `{queue}`, but subtasks run on their parent's queue `{}`",
                self.run.queue
            )));
        }
        let params = params_value::<T>(&params)
            .map_err(|e| TaskError::permanent(format!("subtask `{name}`: {e}")))?;
        let idempotency_key = options
            .idempotency_key
            .clone()
            .unwrap_or_else(|| format!("{}{}:{key}", policy::RESERVED_PREFIX, self.task_id));
        let mut task = self
            .defaults
            .new_task(&self.run.queue, T::NAME, params, options)?;
        task.idempotency_key = Some(idempotency_key);
        task.parent_task_id = Some(self.task_id);
        let label = TaskLabel::of(&task.queue, &task.task_name);
        let spawned = self.store.spawn(task).await?;
        label.spawned(std::slice::from_ref(&spawned));
        let value = serde_json::to_value(SpawnedChild {
            task_id: spawned.task_id,
        })
        .map_err(|e| TaskError::permanent(format!("checkpoint of `{key}`: {e}")))?;
        self.store
            .write_checkpoint(&self.run, &key, value.clone(), self.lease)
            .await?;
        self.renewed(self.lease);
        self.remember(key, value);
        Ok(TaskHandle::new(spawned.task_id))
    }

    /// Waits for a subtask and returns its output. Suspends this task (freeing the worker's slot)
    /// until the subtask ends. A subtask that failed or was cancelled yields
    /// [`TaskError::ChildFailed`].
    pub async fn join<T: DeserializeOwned>(
        &self,
        name: &str,
        handle: TaskHandle<T>,
    ) -> TaskResult<T> {
        let span = call_span("join", name);
        traced(span.clone(), self.join_child(&span, name, handle)).await
    }

    async fn join_child<T: DeserializeOwned>(
        &self,
        span: &Span,
        name: &str,
        handle: TaskHandle<T>,
    ) -> TaskResult<T> {
        let key = self.checkpoint_key("$join:", "join", name).await?;
        span.record("checkpoint", key.as_str());
        let event = child_event_name(handle.task_id);
        let payload = self.await_checkpointed(span, &key, &event, None).await?;
        let outcome: ChildOutcome = decode(&key, payload)?;
        match outcome {
            ChildOutcome::Completed { output } => decode(&key, output),
            ChildOutcome::Failed { error } => Err(TaskError::ChildFailed {
                step_name: key,
                task_id: handle.task_id,
                status: TaskStatus::Failed,
                message: Some(error.message),
            }),
            ChildOutcome::Cancelled => Err(TaskError::ChildFailed {
                step_name: key,
                task_id: handle.task_id,
                status: TaskStatus::Cancelled,
                message: None,
            }),
        }
    }

    /// Sleeps durably for `duration`, measured from the first time this sleep is reached. The
    /// run is suspended and the worker's slot freed; the task resumes on any worker once the
    /// time has passed.
    pub async fn sleep_for(&self, name: &str, duration: Duration) -> TaskResult<()> {
        let span = call_span("sleep", name);
        traced(span.clone(), async {
            policy::checked_duration("sleep", duration).map_err(TaskError::permanent)?;
            self.sleep(&span, name, WakeAt::After(duration)).await
        })
        .await
    }

    /// Sleeps durably until `wake_at` (a moment in the past returns at once; a moment more than
    /// [`MAX_DURATION`](policy::MAX_DURATION) ahead fails the task without retry).
    pub async fn sleep_until(&self, name: &str, wake_at: DateTime<Utc>) -> TaskResult<()> {
        let span = call_span("sleep", name);
        traced(span.clone(), async {
            let ahead = (wake_at - self.claimed_now).to_std().unwrap_or_default();
            policy::checked_duration("sleep", ahead).map_err(TaskError::permanent)?;
            // Far in the past is the same as now, and stays within every store's range of times.
            self.sleep(&span, name, WakeAt::At(wake_at.max(self.claimed_now)))
                .await
        })
        .await
    }

    /// Waits for the event `event_name` in this task's queue and returns its payload.
    ///
    /// Events are remembered: an event emitted before the await is seen at once. The first emit
    /// of a name wins; later emits do not change the payload. While waiting, the run is suspended
    /// and the worker's slot freed. With a timeout, the deadline is fixed the first time the
    /// await is reached; when it passes first, the await returns [`TaskError::Timeout`], and the
    /// timeout is checkpointed so a replay sees the same outcome.
    pub async fn await_event<T: DeserializeOwned>(
        &self,
        event_name: &str,
        timeout: Option<Duration>,
    ) -> TaskResult<T> {
        let span = call_span("await", event_name);
        traced(span.clone(), async {
            policy::validate_user_name("event", event_name).map_err(TaskError::permanent)?;
            if let Some(timeout) = timeout {
                policy::checked_duration("event timeout", timeout).map_err(TaskError::permanent)?;
            }
            let key = self.checkpoint_key("$await:", "await", event_name).await?;
            span.record("checkpoint", key.as_str());
            let payload = self
                .await_checkpointed(&span, &key, event_name, timeout)
                .await?;
            decode(&key, payload)
        })
        .await
    }

    /// Emits an event in this task's queue, waking the tasks that await it. The first emit of a
    /// name wins.
    pub async fn emit_event<T: Serialize + ?Sized>(
        &self,
        event_name: &str,
        payload: &T,
    ) -> TaskResult<()> {
        let span = call_span("emit", event_name);
        traced(span, async {
            self.check_deadline().await?;
            policy::validate_user_name("event", event_name).map_err(TaskError::permanent)?;
            let payload = serde_json::to_value(payload).map_err(|e| {
                TaskError::permanent(format!("payload of event `{event_name}` is not JSON: {e}"))
            })?;
            self.defaults
                .check_payload(&format!("payload of event `{event_name}`"), &payload)
                .map_err(TaskError::permanent)?;
            self.store
                .emit_event(&self.run.queue, event_name, payload)
                .await?;
            Ok(())
        })
        .await
    }

    /// A patch gate: whether this task takes the new path of the code change `change_id`.
    ///
    /// A task that started before the change was deployed keeps the old path for ever; a task
    /// that reaches the gate fresh takes the new one. The decision is made the first time the
    /// gate is reached and checkpointed (as `$patch:<change_id>`), so retries and resumes see
    /// the same answer:
    ///
    /// - `false` (old path) when this run is still replaying history recorded by earlier runs
    ///   that it has not read yet: older code went past this point and recorded what came after
    ///   it;
    /// - `true` (new path) otherwise: a new task, or an old one that had not gone past this
    ///   point (nothing it recorded depends on the old path).
    ///
    /// ```ignore
    /// if ctx.patched("bill-in-cents").await? {
    ///     ctx.step("bill", || async { bill_cents(order).await }).await?;
    /// } else {
    ///     ctx.step("bill", || async { bill_dollars(order).await }).await?;
    /// }
    /// ```
    ///
    /// Remove the gate (keep the new path only) once no unfinished task took the old path:
    /// `durable tasks list --patch <change_id>` lists those that did (see
    /// [`TaskQuery::old_path_of_patch`](crate::inspect::TaskQuery::old_path_of_patch)). A
    /// change id is at most 255 bytes, with no control character.
    pub async fn patched(&self, change_id: &str) -> TaskResult<bool> {
        let span = call_span("patch", change_id);
        traced(span.clone(), async {
            self.check_deadline().await?;
            policy::validate_name("change id", change_id).map_err(TaskError::permanent)?;
            let key = format!("{}patch:{change_id}", policy::RESERVED_PREFIX);
            span.record("checkpoint", key.as_str());
            if let Some(value) = self.cached(&key) {
                span.record("replayed", true);
                return decode(&key, value);
            }
            span.record("replayed", false);
            let new_path = {
                let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                state.unread.is_empty()
            };
            self.store
                .write_checkpoint(&self.run, &key, Value::Bool(new_path), self.lease)
                .await?;
            self.renewed(self.lease);
            self.remember(key, Value::Bool(new_path));
            Ok(new_path)
        })
        .await
    }

    /// Extends this run's lease by `duration` (default: the worker's `claim_timeout`) from now.
    /// Call it during long work between durable calls; every durable call extends the lease too.
    pub async fn heartbeat(&self, duration: Option<Duration>) -> TaskResult<()> {
        let span = tracing::info_span!(
            "durable.step",
            kind = "heartbeat",
            error = tracing::field::Empty,
        );
        traced(span, async {
            self.check_deadline().await?;
            let lease = duration.unwrap_or(self.lease);
            policy::checked_duration("heartbeat", lease).map_err(TaskError::permanent)?;
            self.store.extend_lease(&self.run, lease).await?;
            self.renewed(lease);
            Ok(())
        })
        .await
    }

    async fn sleep(&self, span: &Span, name: &str, wake: WakeAt) -> TaskResult<()> {
        let key = self.checkpoint_key("$sleep:", "sleep", name).await?;
        span.record("checkpoint", key.as_str());
        if let Some(value) = self.cached(&key) {
            let checkpoint: SleepCheckpoint = decode(&key, value)?;
            if checkpoint.wake_at <= self.claimed_now {
                span.record("replayed", true);
                return Ok(());
            }
        }
        span.record("replayed", false);
        match self.store.sleep(&self.run, &key, wake, self.lease).await? {
            SleepOutcome::Elapsed => {
                self.renewed(self.lease);
                Ok(())
            }
            SleepOutcome::Suspended { .. } => Err(ControlFlow::Suspend.into()),
        }
    }

    /// The await behind `await_event` and `join`: the payload once the event arrived.
    async fn await_checkpointed(
        &self,
        span: &Span,
        key: &str,
        event_name: &str,
        timeout: Option<Duration>,
    ) -> TaskResult<Value> {
        let cached = self.cached(key);
        span.record("replayed", cached.is_some());
        let outcome = match cached {
            Some(value) => decode::<AwaitCheckpoint>(key, value)?,
            None => match self
                .store
                .await_event(&self.run, key, event_name, timeout, self.lease)
                .await?
            {
                AwaitOutcome::Received(payload) => {
                    self.renewed(self.lease);
                    AwaitCheckpoint::Received { payload }
                }
                AwaitOutcome::TimedOut => {
                    self.renewed(self.lease);
                    AwaitCheckpoint::TimedOut
                }
                AwaitOutcome::Suspended => return Err(ControlFlow::Suspend.into()),
            },
        };
        match outcome {
            AwaitCheckpoint::Received { payload } => Ok(payload),
            AwaitCheckpoint::TimedOut => Err(TaskError::Timeout {
                step_name: key.to_owned(),
                event_name: event_name.to_owned(),
            }),
        }
    }

    /// The checkpoint key of the next use of `name` by a call of kind `prefix`, after checking
    /// the cancellation deadline and the name.
    async fn checkpoint_key(&self, prefix: &str, kind: &str, name: &str) -> TaskResult<String> {
        self.check_deadline().await?;
        policy::validate_user_name(kind, name).map_err(TaskError::permanent)?;
        if name.contains('#') {
            return Err(TaskError::permanent(format!(
                "{kind} name {name:?} contains '#', which marks repeated names"
            )));
        }
        let base = format!("{prefix}{name}");
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let uses = state.uses.entry(base.clone()).or_insert(0);
        *uses += 1;
        Ok(if *uses == 1 {
            base
        } else {
            format!("{base}#{uses}")
        })
    }

    async fn check_deadline(&self) -> TaskResult<()> {
        if self
            .running_deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            self.store
                .cancel_task(&self.run.queue, self.task_id)
                .await?;
            return Err(ControlFlow::Cancelled.into());
        }
        Ok(())
    }

    fn cached(&self, key: &str) -> Option<Value> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.unread.remove(key);
        state.checkpoints.get(key).cloned()
    }

    fn remember(&self, key: String, value: Value) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.checkpoints.insert(key, value);
    }
}

/// The span of one durable call named `name` (`kind`: `step`, `spawn`, `join`, `sleep`,
/// `await`, `emit`). Costs nothing beyond `tracing`'s own check when no subscriber wants it.
fn call_span(kind: &'static str, name: &str) -> Span {
    tracing::info_span!(
        "durable.step",
        kind,
        name,
        checkpoint = tracing::field::Empty,
        replayed = tracing::field::Empty,
        error = tracing::field::Empty,
    )
}

/// Runs a durable call inside its span and records its failure there. A suspension or a stop
/// (cancellation, lost lease) is no failure of the call.
async fn traced<T>(span: Span, call: impl Future<Output = TaskResult<T>>) -> TaskResult<T> {
    let result = call.instrument(span.clone()).await;
    if let Err(error) = &result
        && !matches!(error, TaskError::Control(_))
    {
        telemetry::record_error(&span, error);
    }
    result
}

#[derive(Serialize, serde::Deserialize)]
struct SpawnedChild {
    task_id: Uuid,
}

/// Reads a checkpointed value back; a mismatch means the task's code changed shape under a
/// running task, which retrying cannot fix.
fn decode<T: DeserializeOwned>(key: &str, value: Value) -> TaskResult<T> {
    serde_json::from_value(value).map_err(|e| {
        TaskError::permanent(format!(
            "checkpoint `{key}` does not match the type asked for: {e}"
        ))
    })
}
