//! The storage port: one atomic, fenced operation per state transition of a task.
//!
//! # Contract
//!
//! Every implementation (the in-memory store in `durable-testing`, the PostgreSQL adapters) must
//! pass the conformance suite in `durable-testing`. In words:
//!
//! - **Time belongs to the store.** Every deadline (lease, sleep, event timeout, retry delay,
//!   spawn delay) is computed from the store's clock, never the worker's.
//! - **Each method is atomic.** It applies completely or not at all.
//! - **Writes of a run are fenced.** Methods taking a [`RunRef`] succeed only while that run owns
//!   the task: the task is `running`, its current run is `run.run_id` and the lease has not
//!   expired at store time. Otherwise they change nothing and return
//!   [`StoreError::Cancelled`] if the task was cancelled, else [`StoreError::LeaseLost`].
//!   A fenced write that succeeds also extends the lease by the `lease` it is given, so a run
//!   that makes progress keeps its task and a run that stops making progress loses it.
//! - **Checkpoints are per task**, keyed by name, and survive retries: a new attempt sees every
//!   checkpoint that earlier attempts committed ([`ClaimedRun::checkpoints`]).
//! - **Events are remembered per queue; the first emit wins.** Later emits of the same name
//!   change nothing. An await that starts after the emit sees it; an emit racing an await
//!   never leaves the awaiting task asleep (no lost wake-up).
//! - **Subtask outcomes travel as events.** When a task with a parent reaches a terminal state,
//!   the store emits, in the same operation, the event [`child_event_name`]`(task_id)` in the
//!   task's queue with a [`ChildOutcome`](crate::model::ChildOutcome) payload.
//! - **Cancellation cascades** to every non-terminal descendant, and a cancelled task never
//!   completes afterwards.
//! - **Multi-row operations lock rows in one order** (tasks by id, parents before children), so
//!   concurrent cancels, completions, failures and emits never deadlock.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::watch;
use uuid::Uuid;

use crate::error::StoreError;
use crate::inspect::{TaskDetail, TaskPage, TaskQuery};
use crate::model::{SpawnResult, TaskErrorInfo, TaskPollResult, TaskStatus};
use crate::options::{CancellationPolicy, RetryStrategy};

/// The prefix of the events a store emits when a subtask ends ([`child_event_name`]).
pub const CHILD_EVENT_PREFIX: &str = "$child:";

/// The name of the event a store emits when the subtask `task_id` ends.
pub fn child_event_name(task_id: Uuid) -> String {
    format!("{CHILD_EVENT_PREFIX}{task_id}")
}

/// Identifies one run of one task: the fencing token of every write the run makes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RunRef {
    /// The task's queue.
    pub queue: String,
    /// The task.
    pub task_id: Uuid,
    /// The run (one per attempt).
    pub run_id: Uuid,
}

/// A task to create. Every default has been applied by the client.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    /// The queue (validated).
    pub queue: String,
    /// The registered name of the task type.
    pub task_name: String,
    /// The task's params as JSON.
    pub params: Value,
    /// Metadata readable by the task.
    pub headers: BTreeMap<String, Value>,
    /// Attempts in all (at least 1).
    pub max_attempts: u32,
    /// Retry strategy, stored for the worker that handles a failure.
    pub retry_strategy: RetryStrategy,
    /// Automatic cancellation, evaluated by the worker.
    pub cancellation: CancellationPolicy,
    /// Deduplication key within the queue: an existing task with the same key is returned.
    pub idempotency_key: Option<String>,
    /// The parent task, for subtasks.
    pub parent_task_id: Option<Uuid>,
    /// Do not start before this delay has passed (store time).
    pub delay: Option<Duration>,
}

/// What a worker asks for when it claims work.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimRequest {
    /// The queue to claim from.
    pub queue: String,
    /// Recorded on the claimed runs.
    pub worker_id: String,
    /// Only tasks with one of these names are claimed: workers may specialise.
    pub task_names: Vec<String>,
    /// The most runs to claim.
    pub limit: usize,
    /// The lease each claimed run gets.
    pub lease: Duration,
}

/// A run handed to a worker by [`Store::claim`].
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedRun {
    /// The run's identity, used to fence its writes.
    pub run: RunRef,
    /// The task's registered name.
    pub task_name: String,
    /// The task's params.
    pub params: Value,
    /// The task's headers.
    pub headers: BTreeMap<String, Value>,
    /// This run's attempt number (1-based).
    pub attempt: u32,
    /// Attempts in all.
    pub max_attempts: u32,
    /// Retry strategy given at spawn.
    pub retry_strategy: RetryStrategy,
    /// Cancellation policy given at spawn.
    pub cancellation: CancellationPolicy,
    /// The parent task, for subtasks.
    pub parent_task_id: Option<Uuid>,
    /// When the task was spawned.
    pub created_at: DateTime<Utc>,
    /// When a worker first started the task, before this claim (`None` on the very first claim).
    pub first_started_at: Option<DateTime<Utc>>,
    /// Store time at the claim.
    pub now: DateTime<Utc>,
    /// Every checkpoint committed for the task, by name.
    pub checkpoints: HashMap<String, Value>,
}

/// What [`Store::claim`] returns.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClaimBatch {
    /// The claimed runs (at most the requested limit).
    pub runs: Vec<ClaimedRun>,
    /// Store time at the claim.
    pub now: DateTime<Utc>,
    /// The earliest future moment at which a task of the queue with one of the requested names
    /// becomes claimable (a sleep ending, a retry delay, an event timeout), if any. Workers sleep
    /// until then instead of polling blindly.
    pub next_wake_at: Option<DateTime<Utc>>,
}

/// What [`Store::sleep`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SleepOutcome {
    /// The wake-up time has passed: the task goes on.
    Elapsed,
    /// The run was suspended until `wake_at`; the worker must stop executing it.
    Suspended {
        /// When the task becomes claimable again.
        wake_at: DateTime<Utc>,
    },
}

/// When a sleep ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WakeAt {
    /// This long after the first time the sleep is reached (store time).
    After(Duration),
    /// At this moment.
    At(DateTime<Utc>),
}

/// A finished run to complete, for [`Store::complete_runs`].
#[derive(Debug, Clone, PartialEq)]
pub struct RunCompletion {
    /// The run that finished.
    pub run: RunRef,
    /// Its output.
    pub output: Value,
}

/// What [`Store::await_event`] decided.
#[derive(Debug, Clone, PartialEq)]
pub enum AwaitOutcome {
    /// The event had been emitted; this is its payload (also checkpointed).
    Received(Value),
    /// The timeout passed before the event arrived (also checkpointed).
    TimedOut,
    /// The run was suspended until the event or the timeout; the worker must stop executing it.
    Suspended,
}

/// What one batch of [`Store::purge_finished`] deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PurgeOutcome {
    /// Finished tasks deleted (with their checkpoints and waits).
    pub tasks: u64,
    /// Events deleted.
    pub events: u64,
    /// Whether a batch was full: there may be more to delete.
    pub more: bool,
}

/// How many unfinished tasks a queue holds, by state: see [`Store::queue_depth`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueDepth {
    /// Pending tasks (waiting to start, to be retried, or delayed).
    pub pending: u64,
    /// Running tasks.
    pub running: u64,
    /// Sleeping tasks (a durable sleep, or an await).
    pub sleeping: u64,
}

/// Tasks of one name that wait in a queue and that no worker asking serves: see
/// [`Store::unserved_names`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnservedName {
    /// The task name.
    pub task_name: String,
    /// How many of the oldest due tasks have it.
    pub waiting: u64,
}

/// A recurring spawn: the task to create at every tick of `cron`. Every default has been
/// applied and every name validated by the client.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSpec {
    /// The queue the schedule belongs to and spawns into.
    pub queue: String,
    /// The schedule's name, unique in its queue.
    pub name: String,
    /// The cron expression ([`CronSchedule`](crate::CronSchedule) syntax, validated).
    pub cron: String,
    /// The registered name of the task to spawn.
    pub task_name: String,
    /// The params of every spawned task.
    pub params: Value,
    /// The headers of every spawned task (the store adds `durable.schedule` and
    /// `durable.scheduled_at`).
    pub headers: BTreeMap<String, Value>,
    /// Attempts in all of every spawned task.
    pub max_attempts: u32,
    /// Retry strategy of every spawned task.
    pub retry_strategy: RetryStrategy,
    /// Cancellation policy of every spawned task.
    pub cancellation: CancellationPolicy,
}

/// A stored schedule and where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRecord {
    /// What it spawns, and when.
    pub spec: ScheduleSpec,
    /// The next tick; `None` until a worker arms it (new or changed schedules).
    pub next_run_at: Option<DateTime<Utc>>,
    /// The last tick that fired.
    pub last_run_at: Option<DateTime<Utc>>,
    /// The task the last tick spawned.
    pub last_task_id: Option<Uuid>,
    /// When the schedule was created.
    pub created_at: DateTime<Utc>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
}

/// What [`Store::due_schedules`] returns.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DueSchedules {
    /// Schedules whose tick has come, or that are not armed yet.
    pub schedules: Vec<ScheduleRecord>,
    /// Store time of the query.
    pub now: DateTime<Utc>,
    /// The earliest armed tick after `now`, if any.
    pub next_due_at: Option<DateTime<Utc>>,
}

/// What [`Store::advance_schedule`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum ScheduleAdvance {
    /// Nothing: the schedule was not at the expected tick (another worker moved it first, or it
    /// changed, or it was deleted).
    Stale,
    /// The schedule moved to its next tick without spawning.
    Moved,
    /// The schedule moved to its next tick and the task of the tick was spawned.
    Fired(SpawnResult),
}

/// The idempotency key of the task that tick `tick` of schedule `name` spawns: at most one task
/// per tick, even if a schedule is deleted and created again.
pub fn schedule_task_key(name: &str, tick: DateTime<Utc>) -> String {
    format!(
        "$schedule:{name}:{}",
        tick.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    )
}

/// The storage port. See the [module documentation](self) for the contract every implementation
/// honours.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Makes sure a queue exists (idempotent). The name has been validated.
    async fn ensure_queue(&self, queue: &str) -> Result<(), StoreError>;

    /// Creates a task, pending (after `delay` if set), with attempt 1 and a fresh run. With an
    /// idempotency key that already exists in the queue, returns that task (`created: false`)
    /// and creates nothing. A subtask whose parent has ended (or does not exist) is refused with
    /// [`StoreError::Conflict`], so no subtask escapes its parent's cascade.
    async fn spawn(&self, task: NewTask) -> Result<SpawnResult, StoreError>;

    /// Claims up to `limit` tasks of the queue whose names are in `task_names` and that are
    /// pending or sleeping with their wake-up time passed, oldest first, without waiting on rows
    /// that other claims hold. Each becomes `running` with a lease of `lease`. Also reports the
    /// next moment a task will become claimable ([`ClaimBatch::next_wake_at`]).
    async fn claim(&self, request: ClaimRequest) -> Result<ClaimBatch, StoreError>;

    /// Recovers every task of the queue whose run's lease expired: the run is failed with
    /// [`FailureKind::LeaseExpired`](crate::FailureKind::LeaseExpired) and the task becomes
    /// pending as a new attempt with a new run, or fails if it had no attempt left. Returns how
    /// many tasks were recovered.
    async fn expire_leases(&self, queue: &str) -> Result<u64, StoreError>;

    /// Fenced: records checkpoint `name` of the task (insert or replace) and extends the lease.
    async fn write_checkpoint(
        &self,
        run: &RunRef,
        name: &str,
        value: Value,
        lease: Duration,
    ) -> Result<(), StoreError>;

    /// Fenced: extends the lease of the run to `lease` from now.
    async fn extend_lease(&self, run: &RunRef, lease: Duration) -> Result<(), StoreError>;

    /// Fenced: a durable sleep named `name`. The first call computes the wake-up time and
    /// checkpoints it as a [`SleepCheckpoint`](crate::model::SleepCheckpoint); later calls
    /// (replays) reuse it. If the time has passed, returns [`SleepOutcome::Elapsed`]; otherwise
    /// the task becomes `sleeping` until then, its lease is released, and the run is suspended.
    async fn sleep(
        &self,
        run: &RunRef,
        name: &str,
        wake: WakeAt,
        lease: Duration,
    ) -> Result<SleepOutcome, StoreError>;

    /// Fenced: an await named `name` on event `event_name` of the run's queue.
    ///
    /// If checkpoint `name` exists, returns what it recorded. Else, if the event was emitted,
    /// checkpoints an [`AwaitCheckpoint::Received`](crate::model::AwaitCheckpoint::Received) and
    /// returns it. Else, if a timeout was given, its deadline is fixed durably by the first call;
    /// once passed, an `AwaitCheckpoint::TimedOut` is checkpointed and returned. Otherwise the
    /// task becomes `sleeping` until the event is emitted or the deadline passes.
    async fn await_event(
        &self,
        run: &RunRef,
        name: &str,
        event_name: &str,
        timeout: Option<Duration>,
        lease: Duration,
    ) -> Result<AwaitOutcome, StoreError>;

    /// Emits an event in a queue: stored if no event of that name exists yet (first emit wins),
    /// and every task of the queue sleeping on it becomes claimable at once. Returns whether this
    /// emit was the first.
    async fn emit_event(&self, queue: &str, name: &str, payload: Value)
    -> Result<bool, StoreError>;

    /// Fenced: completes the task with `output`.
    async fn complete_run(&self, run: &RunRef, output: Value) -> Result<(), StoreError>;

    /// Fenced: fails the run. With `retry_after`, the task becomes pending again as a new
    /// attempt with a new run after that delay; without it, the task fails for good and its
    /// non-terminal descendants are cancelled.
    async fn fail_run(
        &self,
        run: &RunRef,
        error: TaskErrorInfo,
        retry_after: Option<Duration>,
    ) -> Result<(), StoreError>;

    /// Cancels a task of `queue` and its non-terminal descendants. Returns `false` if the task
    /// had already reached a terminal state (nothing changes), [`StoreError::NotFound`] if the
    /// queue has no such task.
    async fn cancel_task(&self, queue: &str, task_id: Uuid) -> Result<bool, StoreError>;

    /// Makes a `failed` task of `queue` pending again as a new attempt (one more attempt is
    /// allowed if it had used them all), keeping its checkpoints.
    async fn retry_task(&self, queue: &str, task_id: Uuid) -> Result<SpawnResult, StoreError>;

    /// The state of a task, or `None` if there is no such task.
    async fn task_result(&self, task_id: Uuid) -> Result<Option<TaskPollResult>, StoreError>;

    /// Retention: deletes one batch of at most `limit` finished (completed, failed, cancelled)
    /// tasks of `queue` that ended at least `older_than` ago (store time), with their
    /// checkpoints and waits and the event that announced their end to their parent, then at
    /// most `limit` events of the queue emitted at least `older_than` ago. A subtask is deleted
    /// only once its parent is gone (a task tree goes from the root down), so no parent loses
    /// the outcome of a child it may still join. Never waits on a row another operation holds.
    async fn purge_finished(
        &self,
        queue: &str,
        older_than: Duration,
        limit: usize,
    ) -> Result<PurgeOutcome, StoreError>;

    /// How many tasks of `queue` are pending, running and sleeping.
    async fn queue_depth(&self, queue: &str) -> Result<QueueDepth, StoreError>;

    /// Among the `scan` oldest pending tasks of `queue` that are due (the head of the claim
    /// order, where tasks no worker claims pile up), the names not in `registered`, with how
    /// many tasks have each, most first. Workers log them: such tasks wait, without burning an
    /// attempt, until a worker that registers their name runs.
    async fn unserved_names(
        &self,
        queue: &str,
        registered: &[String],
        scan: usize,
    ) -> Result<Vec<UnservedName>, StoreError>;

    /// Creates the schedule `(spec.queue, spec.name)`, or replaces it (it is then armed again
    /// from its new cron). Returns whether it was created.
    async fn upsert_schedule(&self, spec: ScheduleSpec) -> Result<bool, StoreError>;

    /// The schedules of `queue` (every queue with `None`), by queue and name.
    async fn list_schedules(&self, queue: Option<&str>) -> Result<Vec<ScheduleRecord>, StoreError>;

    /// Deletes a schedule; returns whether it existed. Tasks it spawned are left alone.
    async fn delete_schedule(&self, queue: &str, name: &str) -> Result<bool, StoreError>;

    /// Up to `limit` schedules of `queue` that are not armed or whose tick has come (store
    /// time), unarmed first, then by tick.
    async fn due_schedules(&self, queue: &str, limit: usize) -> Result<DueSchedules, StoreError>;

    /// Moves schedule `(queue, name)` from tick `expected` (`None`: not armed) to `next`, only if
    /// it is still at `expected`: whoever moves it first wins, the others get
    /// [`ScheduleAdvance::Stale`]. With `fire` (and an `expected` tick), the same atomic step
    /// spawns the schedule's task for tick `expected`, with the idempotency key
    /// [`schedule_task_key`] and the headers `durable.schedule` (the name) and
    /// `durable.scheduled_at` (the tick, RFC 3339): at most one task per tick.
    async fn advance_schedule(
        &self,
        queue: &str,
        name: &str,
        expected: Option<DateTime<Utc>>,
        next: Option<DateTime<Utc>>,
        fire: bool,
    ) -> Result<ScheduleAdvance, StoreError>;

    /// Lists tasks as `query` says, newest first (by task id), one page at a time: see
    /// [`TaskQuery`]. A page's `next` is the id to pass as `after` for the page after it; tasks
    /// spawned meanwhile never shift later pages (they come before the first).
    async fn list_tasks(&self, query: &TaskQuery) -> Result<TaskPage, StoreError>;

    /// Everything the store holds about a task ([`TaskDetail`]: its runs, checkpoints, waits,
    /// subtasks), or `None` if there is no such task. Its runs are every claim of the task,
    /// oldest first: the latest [`MAX_RUNS`](crate::inspect::MAX_RUNS), the current or last
    /// one included.
    async fn inspect_task(&self, task_id: Uuid) -> Result<Option<TaskDetail>, StoreError>;

    /// Asks to be told when the task ends: returns a signal that changes once it has reached a
    /// terminal state (completed, failed, cancelled), and the task's state now (`None`: no such
    /// task). Subscribe before reading the result, so that an end between the two is not
    /// missed. Stores without notifications return a signal that may never change; callers
    /// also poll.
    async fn watch_finish(
        &self,
        task_id: Uuid,
    ) -> Result<(watch::Receiver<u64>, Option<TaskStatus>), StoreError>;

    /// A signal that changes when work may have become available in `queue` (a spawn, an emit,
    /// a retry...). Stores without notifications return a receiver that never changes; workers
    /// then rely on polling.
    fn work_signal(&self, queue: &str) -> watch::Receiver<u64>;

    /// Creates several tasks, each as [`Store::spawn`] would, and returns their results in the
    /// order of `tasks`. Stores that can do it in one round trip (the PostgreSQL stores: one
    /// statement, one transaction, all or nothing) override this; the default spawns one by
    /// one. An idempotency key used twice in the batch (or already in the queue) yields the
    /// first task for both (`created: false` for the later one).
    async fn spawn_many(&self, tasks: Vec<NewTask>) -> Result<Vec<SpawnResult>, StoreError> {
        let mut results = Vec::with_capacity(tasks.len());
        for task in tasks {
            results.push(self.spawn(task).await?);
        }
        Ok(results)
    }

    /// Completes several finished runs, each as [`Store::complete_run`] would (fenced, atomic
    /// per run), and returns one result per run in the order of `runs`: a refused run
    /// ([`StoreError::LeaseLost`], [`StoreError::Cancelled`]) does not keep the others from
    /// completing. The outer error means that nothing could be recorded (the store is
    /// unreachable...). Workers use it to complete the runs that finish together in one round
    /// trip; the default completes them one by one.
    async fn complete_runs(
        &self,
        runs: Vec<RunCompletion>,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut results = Vec::with_capacity(runs.len());
        for completion in runs {
            results.push(self.complete_run(&completion.run, completion.output).await);
        }
        Ok(results)
    }
}

/// The per-queue signals a store hands out from [`Store::work_signal`]: one watch channel per
/// queue whose value is a generation counter, bumped when work may have become available.
/// Shared by the stores so each only decides *when* to bump.
#[derive(Debug, Default)]
pub struct WorkSignals {
    senders: std::sync::Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl WorkSignals {
    fn senders(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<u64>>> {
        self.senders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The signal of `queue`, created on first use.
    pub fn subscribe(&self, queue: &str) -> watch::Receiver<u64> {
        self.senders()
            .entry(queue.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Wakes the subscribers of `queue`.
    pub fn bump(&self, queue: &str) {
        if let Some(sender) = self.senders().get(queue) {
            sender.send_modify(|generation| *generation = generation.wrapping_add(1));
        }
    }

    /// Wakes the subscribers of `key` and forgets it: for one-shot signals such as the end of a
    /// task. Later subscribers get a fresh signal.
    pub fn bump_and_forget(&self, key: &str) {
        if let Some(sender) = self.senders().remove(key) {
            sender.send_modify(|generation| *generation = generation.wrapping_add(1));
        }
    }

    /// The signal of `key`, after forgetting every signal that no one holds any more: for keys
    /// that come and go (task ids), so the registry holds only live subscriptions.
    pub fn subscribe_pruning(&self, key: &str) -> watch::Receiver<u64> {
        let mut senders = self.senders();
        senders.retain(|_, sender| sender.receiver_count() > 0);
        senders
            .entry(key.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Wakes every subscriber (e.g. after notifications may have been missed).
    pub fn bump_all(&self) {
        for sender in self.senders().values() {
            sender.send_modify(|generation| *generation = generation.wrapping_add(1));
        }
    }
}
