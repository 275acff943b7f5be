//! Fault-injection and model-based tests of `durable` (not published).
//!
//! - [`scenario`]: a workload of at least 2,000 multi-step tasks (steps, sleeps, events,
//!   subtasks) run by worker child processes ([`backend::worker_main`], the `faults-worker`
//!   binary) on either PostgreSQL adapter while a fault is injected: SIGKILLed workers, a
//!   restarted server, terminated backends, an exhausted pool, a worker paused past its lease,
//!   a held xmin horizon, a retry storm, a network cut through a [`proxy`]. Afterwards the
//!   [`invariants`] are checked from the database and the time to recover is measured.
//! - `tests/model.rs`: random sequences of store operations applied to the in-memory store and
//!   to a PostgreSQL store give the same observable results.
//! - `tests/hostile.rs`: hostile and bad input.
//!
//! The size of the workload scales with `DURABLE_FAULTS_SCALE` (default 1: 2,000 tasks per
//! scenario). `docs/reliability.md` reports the latest run.

// Test support: failed expectations panic, by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod backend;
pub mod harness;
pub mod invariants;
pub mod model;
pub mod proxy;
pub mod scenario;
pub mod workload;
