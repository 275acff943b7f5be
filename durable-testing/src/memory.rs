//! [`MemoryStore`]: the whole [`Store`] contract in memory, with a virtual clock.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use durable_core::model::{AwaitCheckpoint, ChildOutcome, SleepCheckpoint};
use durable_core::policy;
use durable_core::store::{
    AwaitOutcome, ClaimBatch, ClaimRequest, ClaimedRun, DueSchedules, NewTask, PurgeOutcome,
    QueueDepth, RunCompletion, RunRef, ScheduleAdvance, ScheduleRecord, ScheduleSpec, SleepOutcome,
    UnservedName, WakeAt, WorkSignals, child_event_name,
};
use durable_core::{
    CancellationPolicy, FailureKind, RetryStrategy, SpawnResult, Store, StoreError, TaskErrorInfo,
    TaskPollResult, TaskStatus,
};
use serde_json::Value;
use tokio::sync::watch;
use uuid::Uuid;

mod batch;
mod ops;

/// The store's clock: virtual (moved only by [`Clock::advance`]) or the system clock.
#[derive(Debug)]
pub struct Clock {
    virtual_now: Option<Mutex<DateTime<Utc>>>,
}

impl Clock {
    /// The moment a virtual clock starts at: 2025-01-01T00:00:00Z.
    pub fn epoch() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
    }

    fn virtual_at(start: DateTime<Utc>) -> Self {
        Clock {
            virtual_now: Some(Mutex::new(start)),
        }
    }

    fn system() -> Self {
        Clock { virtual_now: None }
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        match &self.virtual_now {
            Some(now) => *now.lock().unwrap_or_else(PoisonError::into_inner),
            None => Utc::now(),
        }
    }

    /// Whether this is a virtual clock.
    pub fn is_virtual(&self) -> bool {
        self.virtual_now.is_some()
    }

    /// Moves a virtual clock forward (a system clock cannot be moved: this does nothing).
    pub fn advance(&self, by: Duration) {
        if let Some(now) = &self.virtual_now {
            let mut now = now.lock().unwrap_or_else(PoisonError::into_inner);
            let by = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
            *now = now
                .checked_add_signed(by)
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
        }
    }
}

/// An in-memory [`Store`] for unit tests: deterministic, instant, and held to the same
/// conformance suite as the PostgreSQL stores.
///
/// Its clock is virtual by default: time moves only when a test calls [`MemoryStore::advance`],
/// so a task that sleeps for a week is resumed by advancing the clock a week, in microseconds of
/// real time. Clones share the same state.
#[derive(Clone, Debug)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    clock: Clock,
    state: Mutex<State>,
    signals: Mutex<HashMap<String, watch::Sender<u64>>>,
}

#[derive(Debug, Default)]
struct State {
    /// The end-of-task signals handed out by `watch_finish`, keyed by task id.
    finish: Arc<WorkSignals>,
    /// When each event was emitted (retention).
    event_times: HashMap<(String, String), DateTime<Utc>>,
    schedules: std::collections::BTreeMap<(String, String), ScheduleRecord>,
    queues: BTreeSet<String>,
    tasks: HashMap<Uuid, TaskRow>,
    checkpoints: HashMap<Uuid, HashMap<String, Value>>,
    events: HashMap<(String, String), Value>,
    waits: HashMap<(Uuid, String), Wait>,
    idempotency: HashMap<(String, String), Uuid>,
    next_seq: u64,
}

#[derive(Debug, Clone)]
struct Wait {
    queue: String,
    event_name: String,
    timeout_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
struct TaskRow {
    seq: u64,
    queue: String,
    task_name: String,
    params: Value,
    headers: std::collections::BTreeMap<String, Value>,
    max_attempts: u32,
    retry_strategy: RetryStrategy,
    cancellation: CancellationPolicy,
    parent_task_id: Option<Uuid>,
    state: TaskStatus,
    attempt: u32,
    run_id: Uuid,
    available_at: Option<DateTime<Utc>>,
    claimed_by: Option<String>,
    lease_expires_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    first_started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    output: Option<Value>,
    last_error: Option<TaskErrorInfo>,
}

/// A read-only view of a stored task, for assertions in tests.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSnapshot {
    /// The task.
    pub task_id: Uuid,
    /// Its queue.
    pub queue: String,
    /// Its registered name.
    pub task_name: String,
    /// Its state.
    pub status: TaskStatus,
    /// The current attempt.
    pub attempt: u32,
    /// The current run.
    pub run_id: Uuid,
    /// Its parent, for subtasks.
    pub parent_task_id: Option<Uuid>,
    /// When it becomes claimable, if pending or sleeping on a time.
    pub available_at: Option<DateTime<Utc>>,
    /// Its output once completed.
    pub output: Option<Value>,
    /// The error of its last failed attempt.
    pub last_error: Option<TaskErrorInfo>,
    /// Its checkpoints, by name.
    pub checkpoints: HashMap<String, Value>,
}

const STORE: &str = "memory";

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// A store with a virtual clock starting at [`Clock::epoch`].
    pub fn new() -> Self {
        MemoryStore::with_clock(Clock::virtual_at(Clock::epoch()))
    }

    /// A store on the system clock, for tests that run workers in real time.
    pub fn with_system_clock() -> Self {
        MemoryStore::with_clock(Clock::system())
    }

    fn with_clock(clock: Clock) -> Self {
        MemoryStore {
            inner: Arc::new(Inner {
                clock,
                state: Mutex::new(State::default()),
                signals: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The store's clock.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// The store's current time.
    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    /// Moves the virtual clock forward and wakes workers, so sleeps, timeouts, retry delays and
    /// leases that became due are seen.
    pub fn advance(&self, by: Duration) {
        self.inner.clock.advance(by);
        let queues: Vec<String> = self.lock().queues.iter().cloned().collect();
        for queue in queues {
            self.notify(&queue);
        }
    }

    /// A snapshot of one task, with its checkpoints.
    pub fn task(&self, task_id: Uuid) -> Option<TaskSnapshot> {
        let state = self.lock();
        let row = state.tasks.get(&task_id)?;
        Some(TaskSnapshot {
            task_id,
            queue: row.queue.clone(),
            task_name: row.task_name.clone(),
            status: row.state,
            attempt: row.attempt,
            run_id: row.run_id,
            parent_task_id: row.parent_task_id,
            available_at: row.available_at,
            output: row.output.clone(),
            last_error: row.last_error.clone(),
            checkpoints: state.checkpoints.get(&task_id).cloned().unwrap_or_default(),
        })
    }

    /// Snapshots of every task, oldest first.
    pub fn tasks(&self) -> Vec<TaskSnapshot> {
        let ids: Vec<Uuid> = {
            let state = self.lock();
            let mut rows: Vec<(&Uuid, &TaskRow)> = state.tasks.iter().collect();
            rows.sort_by_key(|(_, row)| row.seq);
            rows.into_iter().map(|(id, _)| *id).collect()
        };
        ids.into_iter().filter_map(|id| self.task(id)).collect()
    }

    /// The payload of an emitted event, if any.
    pub fn event(&self, queue: &str, name: &str) -> Option<Value> {
        self.lock()
            .events
            .get(&(queue.to_owned(), name.to_owned()))
            .cloned()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn sender(&self, queue: &str) -> watch::Receiver<u64> {
        let mut signals = self
            .inner
            .signals
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        signals
            .entry(queue.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    fn notify(&self, queue: &str) {
        let signals = self
            .inner
            .signals
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = signals.get(queue) {
            sender.send_modify(|generation| *generation = generation.wrapping_add(1));
        }
    }
}

fn after(now: DateTime<Utc>, d: Duration, what: &str) -> Result<DateTime<Utc>, StoreError> {
    let d = policy::checked_duration(what, d).map_err(StoreError::invalid)?;
    now.checked_add_signed(d)
        .ok_or_else(|| StoreError::invalid(format!("{what} ends past the end of time")))
}

fn to_value<T: serde::Serialize>(value: &T) -> Result<Value, StoreError> {
    serde_json::to_value(value).map_err(|e| StoreError::backend(STORE, e))
}

impl State {
    fn owned(&mut self, run: &RunRef, now: DateTime<Utc>) -> Result<&mut TaskRow, StoreError> {
        let row = self
            .tasks
            .get_mut(&run.task_id)
            .ok_or_else(|| StoreError::LeaseLost {
                task_id: run.task_id,
                run_id: run.run_id,
            })?;
        if row.state == TaskStatus::Cancelled {
            return Err(StoreError::Cancelled {
                task_id: run.task_id,
            });
        }
        let owns = row.state == TaskStatus::Running
            && row.run_id == run.run_id
            && row.lease_expires_at.is_some_and(|lease| lease > now);
        if owns {
            Ok(row)
        } else {
            Err(StoreError::LeaseLost {
                task_id: run.task_id,
                run_id: run.run_id,
            })
        }
    }

    fn suspend(row: &mut TaskRow, until: Option<DateTime<Utc>>) {
        row.state = TaskStatus::Sleeping;
        row.available_at = until;
        row.claimed_by = None;
        row.lease_expires_at = None;
    }

    /// Stores an event (first wins) and wakes its waiters. Returns (first?, queues to notify).
    fn emit(&mut self, queue: &str, name: &str, payload: Value, now: DateTime<Utc>) -> bool {
        let key = (queue.to_owned(), name.to_owned());
        if self.events.contains_key(&key) {
            return false;
        }
        self.event_times.insert(key.clone(), now);
        self.events.insert(key, payload);
        let waiting: Vec<Uuid> = self
            .waits
            .iter()
            .filter(|(_, wait)| wait.queue == queue && wait.event_name == name)
            .map(|((task_id, _), _)| *task_id)
            .collect();
        for task_id in waiting {
            if let Some(row) = self.tasks.get_mut(&task_id)
                && row.state == TaskStatus::Sleeping
            {
                row.state = TaskStatus::Pending;
                row.available_at = Some(now);
            }
        }
        true
    }

    /// What happens when a task reaches a terminal state: its subtasks are cancelled (unless it
    /// completed) and its parent hears of it.
    fn on_terminal(&mut self, task_id: Uuid, outcome: ChildOutcome, now: DateTime<Utc>) {
        if let Some(row) = self.tasks.get_mut(&task_id) {
            row.finished_at = Some(now);
        }
        self.finish.bump_and_forget(&task_id.to_string());
        if !matches!(outcome, ChildOutcome::Completed { .. }) {
            self.cancel_descendants(task_id, now);
        }
        let Some(row) = self.tasks.get(&task_id) else {
            return;
        };
        if row.parent_task_id.is_some() {
            let queue = row.queue.clone();
            if let Ok(payload) = serde_json::to_value(&outcome) {
                self.emit(&queue, &child_event_name(task_id), payload, now);
            }
        }
    }

    fn cancel_descendants(&mut self, task_id: Uuid, now: DateTime<Utc>) {
        let mut frontier = vec![task_id];
        while let Some(parent) = frontier.pop() {
            let children: Vec<Uuid> = self
                .tasks
                .iter()
                .filter(|(_, row)| row.parent_task_id == Some(parent))
                .map(|(id, _)| *id)
                .collect();
            for child in children {
                if let Some(row) = self.tasks.get_mut(&child)
                    && !row.state.is_terminal()
                {
                    Self::cancel_row(row, now);
                    row.finished_at = Some(now);
                    self.finish.bump_and_forget(&child.to_string());
                    self.waits.retain(|(id, _), _| *id != child);
                }
                frontier.push(child);
            }
        }
    }

    fn cancel_row(row: &mut TaskRow, _now: DateTime<Utc>) {
        row.state = TaskStatus::Cancelled;
        row.available_at = None;
        row.claimed_by = None;
        row.lease_expires_at = None;
    }

    fn write_checkpoint(&mut self, task_id: Uuid, name: &str, value: Value) {
        self.checkpoints
            .entry(task_id)
            .or_default()
            .insert(name.to_owned(), value);
    }

    fn checkpoint(&self, task_id: Uuid, name: &str) -> Option<Value> {
        self.checkpoints.get(&task_id)?.get(name).cloned()
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn ensure_queue(&self, queue: &str) -> Result<(), StoreError> {
        policy::validate_queue_name(queue).map_err(StoreError::invalid)?;
        self.lock().queues.insert(queue.to_owned());
        Ok(())
    }

    async fn spawn(&self, task: NewTask) -> Result<SpawnResult, StoreError> {
        let now = self.now();
        let spawn = batch::check_spawn(task, now)?;
        let queue = spawn.queue().to_owned();
        let result = {
            let mut state = self.lock();
            state.check_parent(&spawn)?;
            state.insert_task(spawn, now)
        };
        if result.created {
            self.notify(&queue);
        }
        Ok(result)
    }

    async fn claim(&self, request: ClaimRequest) -> Result<ClaimBatch, StoreError> {
        let now = self.now();
        let lease_until = after(now, request.lease, "lease")?;
        let mut state = self.lock();
        let claimable = |row: &TaskRow| {
            row.queue == request.queue
                && matches!(row.state, TaskStatus::Pending | TaskStatus::Sleeping)
                && request.task_names.contains(&row.task_name)
        };
        let mut due: Vec<(DateTime<Utc>, u64, Uuid)> = state
            .tasks
            .iter()
            .filter(|(_, row)| claimable(row))
            .filter_map(|(id, row)| {
                row.available_at
                    .filter(|at| *at <= now)
                    .map(|at| (at, row.seq, *id))
            })
            .collect();
        // The oldest `limit` in order, without sorting every due task.
        if due.len() > request.limit && request.limit > 0 {
            due.select_nth_unstable(request.limit - 1);
        }
        due.truncate(request.limit);
        due.sort_unstable();
        let next_wake_at = state
            .tasks
            .values()
            .filter(|row| claimable(row))
            .filter_map(|row| row.available_at.filter(|at| *at > now))
            .min();
        let mut runs = Vec::with_capacity(due.len());
        for (_, _, task_id) in due {
            let checkpoints = state.checkpoints.get(&task_id).cloned().unwrap_or_default();
            let Some(row) = state.tasks.get_mut(&task_id) else {
                continue;
            };
            let first_started_at = row.first_started_at;
            row.state = TaskStatus::Running;
            row.claimed_by = Some(request.worker_id.clone());
            row.lease_expires_at = Some(lease_until);
            row.available_at = None;
            row.first_started_at = Some(first_started_at.unwrap_or(now));
            runs.push(ClaimedRun {
                run: RunRef {
                    queue: row.queue.clone(),
                    task_id,
                    run_id: row.run_id,
                },
                task_name: row.task_name.clone(),
                params: row.params.clone(),
                headers: row.headers.clone(),
                attempt: row.attempt,
                max_attempts: row.max_attempts,
                retry_strategy: row.retry_strategy.clone(),
                cancellation: row.cancellation.clone(),
                parent_task_id: row.parent_task_id,
                created_at: row.created_at,
                first_started_at,
                now,
                checkpoints,
            });
        }
        Ok(ClaimBatch {
            runs,
            now,
            next_wake_at,
        })
    }

    async fn expire_leases(&self, queue: &str) -> Result<u64, StoreError> {
        let now = self.now();
        let mut recovered = 0;
        let mut state = self.lock();
        let expired: Vec<Uuid> = state
            .tasks
            .iter()
            .filter(|(_, row)| {
                row.queue == queue
                    && row.state == TaskStatus::Running
                    && row.lease_expires_at.is_some_and(|lease| lease <= now)
            })
            .map(|(id, _)| *id)
            .collect();
        // Parents before their subtasks (as the PostgreSQL stores): a parent's final failure
        // cancels a subtask whose lease expired with it, rather than racing its retry.
        let depth = |mut id: Uuid| {
            let mut depth = 0usize;
            while let Some(parent) = state.tasks.get(&id).and_then(|row| row.parent_task_id) {
                depth += 1;
                id = parent;
                if depth > state.tasks.len() {
                    break;
                }
            }
            depth
        };
        let mut expired: Vec<(usize, u64, Uuid)> = expired
            .into_iter()
            .map(|id| (depth(id), state.tasks.get(&id).map_or(0, |row| row.seq), id))
            .collect();
        expired.sort();
        for (_, _, task_id) in expired {
            // An earlier final failure in this loop may have cancelled this task (a descendant):
            // a cancelled task stays cancelled.
            let Some(row) = state
                .tasks
                .get_mut(&task_id)
                .filter(|row| row.state == TaskStatus::Running)
            else {
                continue;
            };
            let error = TaskErrorInfo::new(
                FailureKind::LeaseExpired,
                format!(
                    "the lease of run {} (worker {}) expired before it finished",
                    row.run_id,
                    row.claimed_by.as_deref().unwrap_or("unknown")
                ),
            );
            recovered += 1;
            row.claimed_by = None;
            row.lease_expires_at = None;
            row.last_error = Some(error.clone());
            if row.attempt >= row.max_attempts {
                row.state = TaskStatus::Failed;
                state.on_terminal(task_id, ChildOutcome::Failed { error }, now);
            } else {
                row.attempt += 1;
                row.run_id = Uuid::now_v7();
                row.state = TaskStatus::Pending;
                row.available_at = Some(now);
            }
        }
        drop(state);
        if recovered > 0 {
            self.notify(queue);
        }
        Ok(recovered)
    }

    async fn write_checkpoint(
        &self,
        run: &RunRef,
        name: &str,
        value: Value,
        lease: Duration,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let lease_until = after(now, lease, "lease")?;
        let mut state = self.lock();
        state.owned(run, now)?.lease_expires_at = Some(lease_until);
        state.write_checkpoint(run.task_id, name, value);
        Ok(())
    }

    async fn extend_lease(&self, run: &RunRef, lease: Duration) -> Result<(), StoreError> {
        let now = self.now();
        let lease_until = after(now, lease, "lease")?;
        self.lock().owned(run, now)?.lease_expires_at = Some(lease_until);
        Ok(())
    }

    async fn sleep(
        &self,
        run: &RunRef,
        name: &str,
        wake: WakeAt,
        lease: Duration,
    ) -> Result<SleepOutcome, StoreError> {
        let now = self.now();
        let lease_until = after(now, lease, "lease")?;
        let mut state = self.lock();
        state.owned(run, now)?;
        let wake_at = match state.checkpoint(run.task_id, name) {
            Some(value) => {
                serde_json::from_value::<SleepCheckpoint>(value)
                    .map_err(|e| {
                        StoreError::invalid(format!("checkpoint `{name}` is not a sleep: {e}"))
                    })?
                    .wake_at
            }
            None => {
                let wake_at = match wake {
                    WakeAt::After(d) => after(now, d, "sleep")?,
                    WakeAt::At(at) => at,
                };
                let value = to_value(&SleepCheckpoint { wake_at })?;
                state.write_checkpoint(run.task_id, name, value);
                wake_at
            }
        };
        let row = state.owned(run, now)?;
        if wake_at <= now {
            row.lease_expires_at = Some(lease_until);
            return Ok(SleepOutcome::Elapsed);
        }
        State::suspend(row, Some(wake_at));
        Ok(SleepOutcome::Suspended { wake_at })
    }

    async fn await_event(
        &self,
        run: &RunRef,
        name: &str,
        event_name: &str,
        timeout: Option<Duration>,
        lease: Duration,
    ) -> Result<AwaitOutcome, StoreError> {
        let now = self.now();
        let lease_until = after(now, lease, "lease")?;
        let mut state = self.lock();
        state.owned(run, now)?;
        let resolved = |state: &mut State, checkpoint: AwaitCheckpoint| {
            let value = to_value(&checkpoint)?;
            state.write_checkpoint(run.task_id, name, value);
            state.waits.remove(&(run.task_id, name.to_owned()));
            state.owned(run, now)?.lease_expires_at = Some(lease_until);
            Ok::<_, StoreError>(match checkpoint {
                AwaitCheckpoint::Received { payload } => AwaitOutcome::Received(payload),
                AwaitCheckpoint::TimedOut => AwaitOutcome::TimedOut,
            })
        };
        if let Some(value) = state.checkpoint(run.task_id, name) {
            let checkpoint: AwaitCheckpoint = serde_json::from_value(value).map_err(|e| {
                StoreError::invalid(format!("checkpoint `{name}` is not an await: {e}"))
            })?;
            return resolved(&mut state, checkpoint);
        }
        if let Some(payload) = state
            .events
            .get(&(run.queue.clone(), event_name.to_owned()))
            .cloned()
        {
            return resolved(&mut state, AwaitCheckpoint::Received { payload });
        }
        let key = (run.task_id, name.to_owned());
        let timeout_at = match state.waits.get(&key) {
            Some(wait) => wait.timeout_at,
            None => {
                let timeout_at = timeout
                    .map(|t| after(now, t, "event timeout"))
                    .transpose()?;
                state.waits.insert(
                    key,
                    Wait {
                        queue: run.queue.clone(),
                        event_name: event_name.to_owned(),
                        timeout_at,
                    },
                );
                timeout_at
            }
        };
        if timeout_at.is_some_and(|at| at <= now) {
            return resolved(&mut state, AwaitCheckpoint::TimedOut);
        }
        State::suspend(state.owned(run, now)?, timeout_at);
        Ok(AwaitOutcome::Suspended)
    }

    async fn emit_event(
        &self,
        queue: &str,
        name: &str,
        payload: Value,
    ) -> Result<bool, StoreError> {
        policy::validate_queue_name(queue).map_err(StoreError::invalid)?;
        let now = self.now();
        let first = self.lock().emit(queue, name, payload, now);
        if first {
            self.notify(queue);
        }
        Ok(first)
    }

    async fn complete_run(&self, run: &RunRef, output: Value) -> Result<(), StoreError> {
        let now = self.now();
        let told_parent = self.lock().complete(run, output, now)?;
        if told_parent {
            self.notify(&run.queue);
        }
        Ok(())
    }

    async fn fail_run(
        &self,
        run: &RunRef,
        error: TaskErrorInfo,
        retry_after: Option<Duration>,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let retry_at = retry_after
            .map(|d| after(now, d, "retry delay"))
            .transpose()?;
        {
            let mut state = self.lock();
            let row = state.owned(run, now)?;
            row.last_error = Some(error.clone());
            row.claimed_by = None;
            row.lease_expires_at = None;
            match retry_at {
                Some(at) => {
                    row.attempt += 1;
                    row.run_id = Uuid::now_v7();
                    row.state = TaskStatus::Pending;
                    row.available_at = Some(at);
                }
                None => {
                    row.state = TaskStatus::Failed;
                    state.on_terminal(run.task_id, ChildOutcome::Failed { error }, now);
                }
            }
        }
        self.notify(&run.queue);
        Ok(())
    }

    async fn cancel_task(&self, queue: &str, task_id: Uuid) -> Result<bool, StoreError> {
        let now = self.now();
        {
            let mut state = self.lock();
            let row = state
                .tasks
                .get_mut(&task_id)
                .filter(|row| row.queue == queue)
                .ok_or_else(|| {
                    StoreError::not_found(format!("task {task_id} in queue `{queue}`"))
                })?;
            if row.state.is_terminal() {
                return Ok(false);
            }
            State::cancel_row(row, now);
            state.waits.retain(|(id, _), _| *id != task_id);
            state.on_terminal(task_id, ChildOutcome::Cancelled, now);
        }
        self.notify(queue);
        Ok(true)
    }

    async fn retry_task(&self, queue: &str, task_id: Uuid) -> Result<SpawnResult, StoreError> {
        let now = self.now();
        let result = {
            let mut state = self.lock();
            let row = state
                .tasks
                .get_mut(&task_id)
                .filter(|row| row.queue == queue)
                .ok_or_else(|| {
                    StoreError::not_found(format!("task {task_id} in queue `{queue}`"))
                })?;
            if row.state != TaskStatus::Failed {
                return Err(StoreError::conflict(format!(
                    "task {task_id} is {}, only a failed task can be retried",
                    row.state.as_str()
                )));
            }
            row.attempt += 1;
            row.max_attempts = row.max_attempts.max(row.attempt);
            row.run_id = Uuid::now_v7();
            row.state = TaskStatus::Pending;
            row.available_at = Some(now);
            row.finished_at = None;
            SpawnResult {
                task_id,
                run_id: row.run_id,
                attempt: row.attempt,
                created: false,
            }
        };
        self.notify(queue);
        Ok(result)
    }

    async fn task_result(&self, task_id: Uuid) -> Result<Option<TaskPollResult>, StoreError> {
        Ok(self.lock().tasks.get(&task_id).map(|row| TaskPollResult {
            task_id,
            status: row.state,
            output: row.output.clone(),
            error: row.last_error.clone(),
        }))
    }

    fn work_signal(&self, queue: &str) -> watch::Receiver<u64> {
        self.sender(queue)
    }

    async fn spawn_many(&self, tasks: Vec<NewTask>) -> Result<Vec<SpawnResult>, StoreError> {
        self.spawn_batch(tasks)
    }

    async fn complete_runs(
        &self,
        runs: Vec<RunCompletion>,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        Ok(self.complete_batch(runs))
    }

    async fn purge_finished(
        &self,
        queue: &str,
        older_than: Duration,
        limit: usize,
    ) -> Result<PurgeOutcome, StoreError> {
        if limit == 0 {
            return Err(StoreError::invalid(
                "retention batch size must be at least 1",
            ));
        }
        let d =
            policy::checked_duration("retention age", older_than).map_err(StoreError::invalid)?;
        let cutoff = self
            .now()
            .checked_sub_signed(d)
            .ok_or_else(|| StoreError::invalid("retention age reaches before the start of time"))?;
        Ok(self.lock().purge(queue, cutoff, limit))
    }

    async fn queue_depth(&self, queue: &str) -> Result<QueueDepth, StoreError> {
        let mut depth = QueueDepth::default();
        for row in self.lock().tasks.values().filter(|row| row.queue == queue) {
            match row.state {
                TaskStatus::Pending => depth.pending += 1,
                TaskStatus::Running => depth.running += 1,
                TaskStatus::Sleeping => depth.sleeping += 1,
                _ => {}
            }
        }
        Ok(depth)
    }

    async fn unserved_names(
        &self,
        queue: &str,
        registered: &[String],
        scan: usize,
    ) -> Result<Vec<UnservedName>, StoreError> {
        let now = self.now();
        let state = self.lock();
        let mut due: Vec<(DateTime<Utc>, u64, &str)> = state
            .tasks
            .values()
            .filter(|row| row.queue == queue && row.state == TaskStatus::Pending)
            .filter_map(|row| {
                let at = row.available_at.filter(|at| *at <= now)?;
                Some((at, row.seq, row.task_name.as_str()))
            })
            .collect();
        due.sort();
        due.truncate(scan);
        let mut counts: std::collections::BTreeMap<&str, u64> = Default::default();
        for (_, _, name) in due {
            if !registered.iter().any(|r| r == name) {
                *counts.entry(name).or_default() += 1;
            }
        }
        let mut names: Vec<UnservedName> = counts
            .into_iter()
            .map(|(name, waiting)| UnservedName {
                task_name: name.to_owned(),
                waiting,
            })
            .collect();
        names.sort_by(|a, b| {
            b.waiting
                .cmp(&a.waiting)
                .then(a.task_name.cmp(&b.task_name))
        });
        Ok(names)
    }

    async fn upsert_schedule(&self, spec: ScheduleSpec) -> Result<bool, StoreError> {
        let now = self.now();
        Ok(self.lock().upsert_schedule(spec, now))
    }

    async fn list_schedules(&self, queue: Option<&str>) -> Result<Vec<ScheduleRecord>, StoreError> {
        Ok(self
            .lock()
            .schedules
            .values()
            .filter(|record| queue.is_none_or(|q| record.spec.queue == q))
            .cloned()
            .collect())
    }

    async fn delete_schedule(&self, queue: &str, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .lock()
            .schedules
            .remove(&(queue.to_owned(), name.to_owned()))
            .is_some())
    }

    async fn due_schedules(&self, queue: &str, limit: usize) -> Result<DueSchedules, StoreError> {
        let now = self.now();
        Ok(self.lock().due_schedules(queue, limit, now))
    }

    async fn advance_schedule(
        &self,
        queue: &str,
        name: &str,
        expected: Option<DateTime<Utc>>,
        next: Option<DateTime<Utc>>,
        fire: bool,
    ) -> Result<ScheduleAdvance, StoreError> {
        let now = self.now();
        let advance = self
            .lock()
            .advance_schedule(queue, name, expected, next, fire, now)?;
        if matches!(advance, ScheduleAdvance::Fired(ref spawned) if spawned.created) {
            self.notify(queue);
        }
        Ok(advance)
    }

    async fn watch_finish(
        &self,
        task_id: Uuid,
    ) -> Result<(watch::Receiver<u64>, Option<TaskStatus>), StoreError> {
        let state = self.lock();
        let signal = state.finish.subscribe_pruning(&task_id.to_string());
        Ok((signal, state.tasks.get(&task_id).map(|row| row.state)))
    }
}
