//! The fault-injection scenarios, each on both PostgreSQL adapters: one `#[test]` per fault and
//! adapter. See `durable_faults::scenario` for what each fault does and
//! `durable_faults::invariants` for what is checked afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::Write as _;
use std::path::Path;

use durable_faults::backend::Backend;
use durable_faults::scenario::{Fault, run};

fn scenario(backend: Backend, fault: Fault) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let binary = Path::new(env!("CARGO_BIN_EXE_faults-worker"));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let report = runtime
        .block_on(run(binary, out, backend, fault))
        .unwrap_or_else(|e| panic!("{}/{}: {e:#}", backend.name(), fault.name()));
    // Straight to stderr (not `eprintln!`, which the test harness captures): the measurements
    // show in every run's log.
    let _ = writeln!(std::io::stderr(), "{}", report.line());
    assert!(
        report.findings.violations.is_empty() && report.worker_problems.is_empty(),
        "{}",
        report.line()
    );
}

macro_rules! scenarios {
    ($($name:ident => $fault:ident),* $(,)?) => {
        mod sqlx {
            use super::*;
            $( #[test] fn $name() { scenario(Backend::Sqlx, Fault::$fault) } )*
        }
        mod native {
            use super::*;
            $( #[test] fn $name() { scenario(Backend::Native, Fault::$fault) } )*
        }
    };
}

scenarios!(
    baseline_without_fault => None,
    workers_killed_with_sigkill => Sigkill,
    server_restarted_mid_run => ServerRestart,
    backends_terminated => TerminateBackends,
    connection_pool_exhausted => PoolExhaustion,
    worker_paused_past_its_lease => Sigstop,
    xmin_horizon_held_back => XminHorizon,
    retry_storm => RetryStorm,
    network_cut_and_stalled => NetworkCut,
);
