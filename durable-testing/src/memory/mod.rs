//! [`MemoryStore`]: the whole [`Store`](durable_core::Store) contract in memory, with a virtual
//! clock.
//!
//! The store is a [`State`] behind one lock. Each state transition is a method of `State`, in
//! the module of its area; the `Store` implementation (`store.rs`) takes the lock, calls one
//! of them, and wakes the workers of the queues that have new work.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use durable_core::store::WorkSignals;
use serde_json::Value;
use uuid::Uuid;

mod cancel;
mod claim;
mod clock;
mod events;
mod finish;
mod inspect;
mod retention;
mod runs;
mod schedules;
mod spawn;
mod state;
mod store;

pub use clock::Clock;
pub use inspect::TaskSnapshot;
use state::State;

/// An in-memory [`Store`](durable_core::Store) for unit tests: deterministic, instant, and held
/// to the same conformance suite as the PostgreSQL stores.
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
    /// The per-queue wake-up signals of `Store::work_signal`.
    signals: WorkSignals,
}

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
                signals: WorkSignals::default(),
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
        self.lock().snapshot(task_id)
    }

    /// Snapshots of every task, oldest first.
    pub fn tasks(&self) -> Vec<TaskSnapshot> {
        self.lock().snapshots()
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

    /// Wakes the workers of `queue`: it may have work now.
    fn notify(&self, queue: &str) {
        self.inner.signals.bump(queue);
    }
}
