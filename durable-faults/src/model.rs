//! Model-based testing of the task state machine: random sequences of [`Store`] operations
//! (spawn, claim, checkpoint, heartbeat, sleep, await, emit, complete, fail with and without
//! retry, cancel, retry, lease expiry, time passing, reads) applied in lockstep to the
//! [`MemoryStore`] (the model) and to a PostgreSQL store must give the same observable results:
//! which calls were refused and why, statuses, attempts, outputs, errors, checkpoints.
//!
//! Sequences come from a seeded generator, so a failure is reproduced by its seed and case
//! number. Ids differ between stores, so tasks and runs are compared by the order in which
//! they were first seen.
//!
//! Time: the memory store's clock is virtual; PostgreSQL's is real. Every duration in a
//! sequence is zero, one time unit (`UNIT`) or an hour, and time moves only in steps of two
//! units (`Advance`: the memory clock is moved, the PostgreSQL test sleeps), with the memory
//! clock also ticking 1 ms per operation. As long as the operations between two steps take
//! well under a unit of real time, every deadline is on the same side of "now" in both stores.
//! Claims always take every due task, since the order among tasks that became due at the same
//! instant is not specified.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use durable_core::store::{AwaitOutcome, ClaimRequest, NewTask, RunRef, SleepOutcome, WakeAt};
use durable_core::{
    CancellationPolicy, FailureKind, RetryStrategy, Store, StoreError, TaskErrorInfo,
};
use durable_testing::MemoryStore;
use serde_json::{Value, json};
use uuid::Uuid;

/// One unit of time of a sequence.
pub const UNIT: Duration = Duration::from_millis(1000);
const LONG: Duration = Duration::from_secs(3600);

/// A small, seeded, reproducible random generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// A duration of a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dur {
    /// Zero.
    Zero,
    /// One [`UNIT`].
    Unit,
    /// An hour.
    Long,
}

impl Dur {
    fn get(self) -> Duration {
        match self {
            Dur::Zero => Duration::ZERO,
            Dur::Unit => UNIT,
            Dur::Long => LONG,
        }
    }

    fn pick(rng: &mut Rng, choices: &[Dur]) -> Dur {
        choices[rng.below(choices.len())]
    }
}

/// One operation; `run` and `task` are indexes into the runs and tasks seen so far.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Spawns a task named `model.a` or `model.b`.
    Spawn {
        /// Which name.
        b: bool,
        /// An idempotency key from a small set.
        key: Option<u8>,
        /// Attempts.
        max_attempts: u32,
        /// A start delay.
        delay: Option<Dur>,
        /// A parent task.
        parent: Option<usize>,
    },
    /// Claims every due task (of both names, or of `model.a` only).
    Claim {
        /// Only `model.a`.
        only_a: bool,
        /// The lease.
        lease: Dur,
    },
    /// Writes checkpoint `k<name>`.
    Checkpoint {
        /// The run.
        run: usize,
        /// Which name.
        name: u8,
        /// The value.
        value: i64,
        /// The lease.
        lease: Dur,
    },
    /// Extends a lease.
    Extend {
        /// The run.
        run: usize,
        /// The lease.
        lease: Dur,
    },
    /// A durable sleep named `k<name>`.
    Sleep {
        /// The run.
        run: usize,
        /// Which name.
        name: u8,
        /// How long.
        dur: Dur,
        /// The lease.
        lease: Dur,
    },
    /// An await named `k<name>` on event `e<event>`.
    Await {
        /// The run.
        run: usize,
        /// Which name.
        name: u8,
        /// Which event.
        event: u8,
        /// The timeout.
        timeout: Option<Dur>,
        /// The lease.
        lease: Dur,
    },
    /// Emits event `e<event>`.
    Emit {
        /// Which event.
        event: u8,
        /// Its payload.
        payload: i64,
    },
    /// Completes a run.
    Complete {
        /// The run.
        run: usize,
        /// The output.
        output: i64,
    },
    /// Fails a run, with a retry or for good.
    Fail {
        /// The run.
        run: usize,
        /// The retry delay, or `None` for a final failure.
        retry: Option<Dur>,
    },
    /// Cancels a task.
    Cancel {
        /// The task.
        task: usize,
    },
    /// Retries a failed task.
    Retry {
        /// The task.
        task: usize,
    },
    /// Recovers expired leases.
    Expire,
    /// Two units of time pass.
    Advance,
    /// Reads a task's result.
    Result {
        /// The task.
        task: usize,
    },
}

/// A random sequence of `len` operations.
pub fn generate(rng: &mut Rng, len: usize) -> Vec<Op> {
    let mut ops = Vec::with_capacity(len);
    let (mut tasks, mut runs) = (0usize, 0usize);
    let lease = |rng: &mut Rng| Dur::pick(rng, &[Dur::Unit, Dur::Long, Dur::Long]);
    let pick_run = |rng: &mut Rng, runs: usize| {
        // Mostly one of the latest runs, sometimes any (stale ones included).
        if rng.chance(70) {
            runs.saturating_sub(1 + rng.below(3))
        } else {
            rng.below(runs)
        }
    };
    while ops.len() < len {
        let roll = rng.below(100);
        let op = if tasks == 0 || roll < 14 {
            tasks += 1;
            Op::Spawn {
                b: rng.chance(25),
                key: rng.chance(20).then(|| rng.below(3) as u8),
                max_attempts: 1 + rng.below(3) as u32,
                delay: rng.chance(15).then_some(Dur::Unit),
                parent: (tasks > 1 && rng.chance(25)).then(|| rng.below(tasks - 1)),
            }
        } else if runs == 0 || roll < 28 {
            // A claim may see new runs; assume so for picking later.
            runs += 2;
            Op::Claim {
                only_a: rng.chance(20),
                lease: lease(rng),
            }
        } else if roll < 40 {
            Op::Checkpoint {
                run: pick_run(rng, runs),
                name: rng.below(3) as u8,
                value: rng.below(100) as i64,
                lease: lease(rng),
            }
        } else if roll < 44 {
            Op::Extend {
                run: pick_run(rng, runs),
                lease: lease(rng),
            }
        } else if roll < 51 {
            Op::Sleep {
                run: pick_run(rng, runs),
                name: rng.below(3) as u8,
                dur: Dur::pick(rng, &[Dur::Zero, Dur::Unit, Dur::Long]),
                lease: lease(rng),
            }
        } else if roll < 58 {
            Op::Await {
                run: pick_run(rng, runs),
                name: rng.below(3) as u8,
                event: rng.below(3) as u8,
                timeout: rng
                    .chance(60)
                    .then(|| Dur::pick(rng, &[Dur::Zero, Dur::Unit, Dur::Long])),
                lease: lease(rng),
            }
        } else if roll < 64 {
            Op::Emit {
                event: rng.below(3) as u8,
                payload: rng.below(100) as i64,
            }
        } else if roll < 71 {
            Op::Complete {
                run: pick_run(rng, runs),
                output: rng.below(100) as i64,
            }
        } else if roll < 78 {
            Op::Fail {
                run: pick_run(rng, runs),
                retry: rng
                    .chance(60)
                    .then(|| Dur::pick(rng, &[Dur::Zero, Dur::Unit])),
            }
        } else if roll < 82 {
            Op::Cancel {
                task: rng.below(tasks),
            }
        } else if roll < 85 {
            runs += 1;
            Op::Retry {
                task: rng.below(tasks),
            }
        } else if roll < 89 {
            Op::Expire
        } else if roll < 97 {
            Op::Advance
        } else {
            Op::Result {
                task: rng.below(tasks),
            }
        };
        ops.push(op);
    }
    ops
}

/// A claimed run as compared: task, run, attempt, whether it had started before, checkpoints.
pub type ClaimedSeen = (usize, usize, u32, bool, BTreeMap<String, Value>);

/// What an operation returned, with ids replaced by the order they were first seen in.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// Spawned (or found by key) task number `task`.
    Spawned {
        /// The task.
        task: usize,
        /// Whether it was created.
        created: bool,
    },
    /// The claimed runs, by task; and whether a later wake-up is known.
    Claimed(Vec<ClaimedSeen>, bool),
    /// Done.
    Done,
    /// A sleep's outcome.
    Slept(&'static str),
    /// An await's outcome.
    Awaited(Option<Value>, &'static str),
    /// Whether an emit or a cancel took effect.
    Flag(bool),
    /// A retried task's new run and attempt.
    Retried(usize, u32),
    /// Whether tasks were recovered from expired leases (1) or not (0).
    Expired(u64),
    /// A task's result: status, output, error kind (and message for ordinary failures).
    Result(Option<(String, Option<Value>, Option<String>)>),
    /// A refusal.
    Refused(String),
}

fn refusal(error: &StoreError) -> Seen {
    Seen::Refused(match error {
        StoreError::LeaseLost { .. } => "lease_lost".into(),
        StoreError::Cancelled { .. } => "cancelled".into(),
        StoreError::NotFound { .. } => "not_found".into(),
        StoreError::Conflict { .. } => "conflict".into(),
        StoreError::InvalidInput { .. } => "invalid_input".into(),
        other => format!("other: {other}"),
    })
}

/// A store under test with its id maps.
pub struct Side<S: Store> {
    /// The store.
    pub store: S,
    queue: String,
    /// Task ids by number.
    pub tasks: Vec<Uuid>,
    runs: Vec<RunRef>,
    run_index: HashMap<Uuid, usize>,
}

impl<S: Store> Side<S> {
    /// A side on `store`, working in `queue`.
    pub fn new(store: S, queue: &str) -> Side<S> {
        Side {
            store,
            queue: queue.to_owned(),
            tasks: Vec::new(),
            runs: Vec::new(),
            run_index: HashMap::new(),
        }
    }

    fn task_number(&mut self, id: Uuid) -> usize {
        match self.tasks.iter().position(|t| *t == id) {
            Some(n) => n,
            None => {
                self.tasks.push(id);
                self.tasks.len() - 1
            }
        }
    }

    fn run_number(&mut self, run: RunRef) -> usize {
        if let Some(n) = self.run_index.get(&run.run_id) {
            return *n;
        }
        self.run_index.insert(run.run_id, self.runs.len());
        self.runs.push(run);
        self.runs.len() - 1
    }

    fn run(&self, n: usize) -> Option<RunRef> {
        self.runs.get(n).cloned()
    }

    /// Applies one operation (`Advance` is the caller's) and returns what was seen; `None`
    /// when the operation refers to a run or task that does not exist yet (skipped alike).
    pub async fn apply(&mut self, op: &Op) -> Option<Seen> {
        let q = self.queue.clone();
        let seen = match op {
            Op::Spawn {
                b,
                key,
                max_attempts,
                delay,
                parent,
            } => {
                let parent_task_id = match parent {
                    Some(p) => Some(*self.tasks.get(*p)?),
                    None => None,
                };
                let task = NewTask {
                    queue: q.clone(),
                    task_name: if *b { "model.b" } else { "model.a" }.into(),
                    params: json!(null),
                    headers: BTreeMap::new(),
                    max_attempts: *max_attempts,
                    retry_strategy: RetryStrategy::None,
                    cancellation: CancellationPolicy::default(),
                    idempotency_key: key.map(|k| format!("key{k}")),
                    parent_task_id,
                    delay: delay.map(Dur::get),
                };
                match self.store.spawn(task).await {
                    Ok(r) => Seen::Spawned {
                        task: self.task_number(r.task_id),
                        created: r.created,
                    },
                    Err(e) => refusal(&e),
                }
            }
            Op::Claim { only_a, lease } => {
                let mut names = vec!["model.a".to_owned()];
                if !only_a {
                    names.push("model.b".into());
                }
                let request = ClaimRequest {
                    queue: q.clone(),
                    worker_id: "model".into(),
                    task_names: names,
                    limit: 1000,
                    lease: lease.get(),
                };
                match self.store.claim(request).await {
                    Ok(batch) => {
                        let mut runs: Vec<_> = batch
                            .runs
                            .into_iter()
                            .map(|r| (self.task_number(r.run.task_id), r))
                            .collect();
                        runs.sort_by_key(|(t, _)| *t);
                        let mut claimed = Vec::new();
                        for (task, r) in runs {
                            let checkpoints = r
                                .checkpoints
                                .into_iter()
                                .map(|(k, v)| (k, normalize(v)))
                                .collect();
                            let started = r.first_started_at.is_some();
                            let run = self.run_number(r.run);
                            claimed.push((task, run, r.attempt, started, checkpoints));
                        }
                        Seen::Claimed(claimed, batch.next_wake_at.is_some())
                    }
                    Err(e) => refusal(&e),
                }
            }
            Op::Checkpoint {
                run,
                name,
                value,
                lease,
            } => {
                let run = self.run(*run)?;
                let done = self
                    .store
                    .write_checkpoint(&run, &format!("k{name}"), json!(value), lease.get())
                    .await;
                unit(done)
            }
            Op::Extend { run, lease } => {
                let run = self.run(*run)?;
                unit(self.store.extend_lease(&run, lease.get()).await)
            }
            Op::Sleep {
                run,
                name,
                dur,
                lease,
            } => {
                let run = self.run(*run)?;
                let wake = WakeAt::After(dur.get());
                match self
                    .store
                    .sleep(&run, &format!("k{name}"), wake, lease.get())
                    .await
                {
                    Ok(SleepOutcome::Elapsed) => Seen::Slept("elapsed"),
                    Ok(SleepOutcome::Suspended { .. }) => Seen::Slept("suspended"),
                    Err(e) => refusal(&e),
                }
            }
            Op::Await {
                run,
                name,
                event,
                timeout,
                lease,
            } => {
                let run = self.run(*run)?;
                let outcome = self
                    .store
                    .await_event(
                        &run,
                        &format!("k{name}"),
                        &format!("e{event}"),
                        timeout.map(Dur::get),
                        lease.get(),
                    )
                    .await;
                match outcome {
                    Ok(AwaitOutcome::Received(v)) => Seen::Awaited(Some(v), "received"),
                    Ok(AwaitOutcome::TimedOut) => Seen::Awaited(None, "timed_out"),
                    Ok(AwaitOutcome::Suspended) => Seen::Awaited(None, "suspended"),
                    Err(e) => refusal(&e),
                }
            }
            Op::Emit { event, payload } => {
                match self
                    .store
                    .emit_event(&q, &format!("e{event}"), json!(payload))
                    .await
                {
                    Ok(first) => Seen::Flag(first),
                    Err(e) => refusal(&e),
                }
            }
            Op::Complete { run, output } => {
                let run = self.run(*run)?;
                unit(self.store.complete_run(&run, json!(output)).await)
            }
            Op::Fail { run, retry } => {
                let run = self.run(*run)?;
                let error = TaskErrorInfo::new(FailureKind::Failed, "model failure");
                unit(self.store.fail_run(&run, error, retry.map(Dur::get)).await)
            }
            Op::Cancel { task } => {
                let id = *self.tasks.get(*task)?;
                match self.store.cancel_task(&q, id).await {
                    Ok(flag) => Seen::Flag(flag),
                    Err(e) => refusal(&e),
                }
            }
            Op::Retry { task } => {
                let id = *self.tasks.get(*task)?;
                match self.store.retry_task(&q, id).await {
                    Ok(r) => {
                        let run = self.run_number(RunRef {
                            queue: q.clone(),
                            task_id: r.task_id,
                            run_id: r.run_id,
                        });
                        Seen::Retried(run, r.attempt)
                    }
                    Err(e) => refusal(&e),
                }
            }
            // Recovery takes parents before their subtasks on every store, so the counts agree.
            Op::Expire => match self.store.expire_leases(&q).await {
                Ok(n) => Seen::Expired(n),
                Err(e) => refusal(&e),
            },
            Op::Advance => Seen::Done,
            Op::Result { task } => {
                let id = *self.tasks.get(*task)?;
                self.result(id).await
            }
        };
        Some(seen)
    }

    /// A task's result as compared.
    pub async fn result(&self, id: Uuid) -> Seen {
        match self.store.task_result(id).await {
            Ok(poll) => Seen::Result(poll.map(|p| {
                let error = p.error.map(|e| match e.kind {
                    FailureKind::Failed => format!("failed: {}", e.message),
                    kind => format!("{kind:?}"),
                });
                (p.status.as_str().to_owned(), p.output, error)
            })),
            Err(e) => refusal(&e),
        }
    }
}

fn unit(result: Result<(), StoreError>) -> Seen {
    match result {
        Ok(()) => Seen::Done,
        Err(e) => refusal(&e),
    }
}

/// A checkpoint value without the moments that differ between clocks.
fn normalize(value: Value) -> Value {
    match value {
        Value::Object(mut map) if map.contains_key("wake_at") => {
            map.insert("wake_at".into(), json!("<time>"));
            Value::Object(map)
        }
        other => other,
    }
}

/// The memory store of a case, with its clock moved by the caller.
pub fn memory_side(queue: &str) -> Side<MemoryStore> {
    Side::new(MemoryStore::new(), queue)
}
