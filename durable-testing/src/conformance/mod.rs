//! The conformance suite of the [`Store`] port: every store must pass it, the in-memory store
//! and the PostgreSQL stores alike. A case that passes on one store and fails on another is a
//! bug in one of them.
//!
//! The suite drives a store through the public client and worker (and, for fencing, through the
//! port directly). It is generic over a [`StoreBuilder`] that makes a fresh store per case and
//! lets time pass: a virtual clock jumps, a real clock is waited for. Run it with
//! [`conformance_tests!`](crate::conformance_tests), which expands to one `#[test]` per case:
//!
//! ```
//! durable_testing::conformance_tests!(durable_testing::MemoryStoreBuilder);
//! ```
//!
//! Cases are grouped by area: [`spawn`], [`checkpoints`], [`retries`], [`sleep`], [`events`],
//! [`subtasks`], [`cancellation`], [`leases`], [`bad_input`], [`hostile`], [`concurrency`],
//! [`operations`] and [`inspection`].

// A conformance case is a test: a failed expectation panics, by design.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used, missing_docs)]

pub mod bad_input;
pub mod cancellation;
pub mod checkpoints;
pub mod concurrency;
pub mod events;
pub mod hostile;
pub mod inspection;
pub mod leases;
pub mod operations;
pub mod retries;
mod script;
pub mod sleep;
pub mod spawn;
pub mod subtasks;

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use durable_core::{
    BoxError, Durable, DurableBuilder, RetryStrategy, SpawnOptions, Store, TaskPollResult,
    TaskStatus, WorkerOptions,
};
use serde_json::Value;
use uuid::Uuid;

use crate::memory::MemoryStore;
use script::{Op, Script, ScriptTask};

/// Makes a fresh store for each conformance case, and moves its time.
#[async_trait]
pub trait StoreBuilder: Send + Sync + 'static {
    /// The store under test.
    type Store: Store + Clone;
    /// Kept alive for the duration of a case (e.g. the test database, dropped afterwards).
    type Guard: Send + 'static;

    /// A fresh, empty store.
    async fn build(&self) -> Result<(Self::Guard, Self::Store), BoxError>;

    /// Lets `by` pass on the store's clock: a virtual clock is moved, a real one waited for.
    async fn advance(&self, store: &Self::Store, by: Duration);
}

/// Builds [`MemoryStore`]s with virtual clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryStoreBuilder;

#[async_trait]
impl StoreBuilder for MemoryStoreBuilder {
    type Store = MemoryStore;
    type Guard = ();

    async fn build(&self) -> Result<((), MemoryStore), BoxError> {
        Ok(((), MemoryStore::new()))
    }

    async fn advance(&self, store: &MemoryStore, by: Duration) {
        store.advance(by);
    }
}

/// Runs one case on a fresh multi-threaded runtime (used by [`conformance_tests!`](crate::conformance_tests)).
pub fn block_on<F: Future<Output = ()>>(case: F) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime for the conformance case");
    runtime.block_on(case);
}

/// The queue every case uses.
pub const QUEUE: &str = "conformance";

/// What one case works with: a fresh store, a client on it with the scripted task registered,
/// and a key that keeps its probes apart from other cases'.
pub(crate) struct Case<'b, B: StoreBuilder> {
    builder: &'b B,
    _guard: B::Guard,
    pub(crate) store: B::Store,
    pub(crate) client: Durable<B::Store>,
    pub(crate) key: String,
}

impl<'b, B: StoreBuilder> Case<'b, B> {
    /// A case whose client retries failed attempts at once (tests that study backoff say so).
    pub(crate) async fn new(builder: &'b B) -> Self {
        Case::with_builder(
            builder,
            DurableBuilder::new().default_retry_strategy(RetryStrategy::Fixed {
                base_delay: Duration::ZERO,
            }),
        )
        .await
    }

    pub(crate) async fn with_builder(builder: &'b B, client: DurableBuilder) -> Self {
        let (guard, store) = builder
            .build()
            .await
            .unwrap_or_else(|e| panic!("building the store under test failed: {e}"));
        let client = client
            .queue_name(QUEUE)
            .build_with_store(store.clone())
            .await
            .expect("client");
        client.register::<ScriptTask>().await;
        Case {
            builder,
            _guard: guard,
            store,
            client,
            key: Uuid::new_v4().to_string(),
        }
    }

    pub(crate) fn script(&self, ops: Vec<Op>) -> Script {
        Script::new(&self.key, ops)
    }

    pub(crate) async fn spawn(&self, ops: Vec<Op>) -> Uuid {
        self.spawn_with(ops, SpawnOptions::default()).await
    }

    pub(crate) async fn spawn_with(&self, ops: Vec<Op>, options: SpawnOptions) -> Uuid {
        self.client
            .spawn_with_options::<ScriptTask>(self.script(ops), options)
            .await
            .expect("spawn")
            .task_id
    }

    /// Runs everything runnable now; returns how many runs were executed.
    pub(crate) async fn run(&self) -> usize {
        self.client
            .work_until_idle(WorkerOptions::default().concurrency(8))
            .await
            .expect("work_until_idle")
    }

    pub(crate) async fn advance(&self, by: Duration) {
        self.builder.advance(&self.store, by).await;
    }

    pub(crate) async fn poll(&self, task_id: Uuid) -> TaskPollResult {
        self.client
            .get_task_result(task_id)
            .await
            .expect("get_task_result")
            .unwrap_or_else(|| panic!("task {task_id} not found"))
    }

    pub(crate) async fn status(&self, task_id: Uuid) -> TaskStatus {
        self.poll(task_id).await.status
    }

    pub(crate) async fn output(&self, task_id: Uuid) -> Vec<Value> {
        let poll = self.poll(task_id).await;
        assert_eq!(
            poll.status,
            TaskStatus::Completed,
            "task {task_id} did not complete: {poll:?}"
        );
        serde_json::from_value(poll.output.expect("output")).expect("output shape")
    }

    pub(crate) fn hits(&self, label: &str) -> u32 {
        script::hits(&self.key, label)
    }

    /// The id the scripted task reported as `label`.
    pub(crate) fn reported(&self, label: &str) -> Uuid {
        script::reported(&self.key, label)
            .unwrap_or_else(|| panic!("no task reported itself as {label}"))
    }

    pub(crate) fn open_gate(&self, name: &str) {
        script::open_gate(&self.key, name);
    }

    /// Waits (real time, at most 20 s) until `check` holds.
    pub(crate) async fn eventually<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !check().await {
            if tokio::time::Instant::now() > deadline {
                panic!("timed out waiting until {what}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

pub(crate) fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

pub(crate) fn step(name: &str, value: Value) -> Op {
    Op::Step {
        name: name.to_owned(),
        value,
        fail_on: vec![],
    }
}

/// Expands to one `#[test]` per conformance case, each on a fresh store from `$builder`.
#[macro_export]
macro_rules! conformance_tests {
    ($builder:expr) => {
        $crate::__conformance_cases!($builder;
            spawn::spawn_runs_task_to_completion,
            spawn::spawn_with_idempotency_key_returns_existing_task,
            spawn::spawn_delay_defers_the_start,
            spawn::claim_takes_only_registered_task_names,
            spawn::claim_is_bounded_and_exclusive,
            spawn::spawn_by_name_checks_name_and_params,
            spawn::result_of_unknown_task_is_none,
            spawn::spawn_many_creates_every_task_in_one_call,
            spawn::complete_runs_answers_for_each_run,
            checkpoints::completed_steps_do_not_run_again_on_retry,
            checkpoints::failed_step_runs_again_alone,
            checkpoints::repeated_step_names_are_numbered,
            checkpoints::reserved_step_names_fail_permanently,
            retries::fixed_backoff_waits_between_attempts,
            retries::exponential_backoff_grows,
            retries::retry_none_means_one_attempt,
            retries::non_retryable_error_fails_at_once,
            retries::panic_fails_the_attempt_and_the_worker_goes_on,
            retries::default_retry_strategy_is_the_documented_one,
            retries::retry_task_reruns_a_failed_task_keeping_its_steps,
            retries::retry_task_refuses_a_task_that_did_not_fail,
            sleep::sleep_suspends_and_resumes_after_the_duration,
            sleep::sleep_frees_the_worker_slot,
            sleep::running_worker_wakes_a_sleeping_task_when_due,
            events::event_emitted_before_the_await_is_received,
            events::await_suspends_until_the_emit,
            events::first_emit_wins,
            events::await_timeout_is_checkpointed,
            events::emit_from_a_task_wakes_another,
            events::one_emit_wakes_every_awaiter,
            subtasks::join_returns_the_child_output,
            subtasks::child_failure_reaches_join,
            subtasks::cancelled_child_reaches_join,
            subtasks::spawn_is_checkpointed,
            subtasks::cancelling_a_parent_cancels_its_children,
            subtasks::failing_parent_cancels_its_children,
            subtasks::subtask_of_an_ended_parent_is_refused,
            cancellation::cancelled_pending_task_never_runs,
            cancellation::cancel_reaches_running_task_at_next_durable_call,
            cancellation::cancel_of_unknown_task_is_not_found,
            cancellation::max_pending_time_cancels_unstarted_task,
            cancellation::max_running_time_cancels_long_task,
            leases::expired_lease_makes_task_claimable_as_new_attempt,
            leases::write_after_lease_expiry_is_refused,
            leases::heartbeat_extends_the_lease,
            leases::lease_expiry_without_attempts_left_fails_the_task,
            leases::writes_after_cancel_are_refused,
            leases::expired_leases_are_recovered_while_every_slot_is_busy,
            leases::lease_expiry_never_revives_a_task_its_parent_cancelled,
            leases::lease_recovery_takes_parents_before_subtasks,
            bad_input::invalid_queue_names_are_refused,
            bad_input::reserved_event_names_are_refused,
            bad_input::absurd_durations_are_refused,
            bad_input::zero_max_attempts_is_refused,
            hostile::oversized_payloads_are_refused_with_a_clear_error,
            hostile::nul_characters_are_refused_before_reaching_the_store,
            hostile::error_texts_are_stored_whatever_they_hold,
            hostile::sql_metacharacters_are_plain_data_everywhere,
            hostile::values_that_do_not_survive_json_are_refused,
            hostile::unknown_task_names_wait_without_burning_attempts,
            hostile::absurd_times_and_worker_options_are_survived,
            hostile::a_task_that_never_returns_loses_its_lease_and_its_slot,
            concurrency::many_workers_run_each_step_once,
            operations::retention_deletes_old_finished_tasks_only,
            operations::retention_deletes_task_trees_from_the_root_down,
            operations::schedules_can_be_created_listed_updated_and_deleted,
            operations::schedules_fire_once_per_tick,
            operations::wait_for_result_returns_how_the_task_ended,
            operations::queue_depth_counts_unfinished_tasks_by_state,
            inspection::history_records_every_run_of_a_task,
            inspection::task_lists_filter_and_page_stably,
            inspection::inspection_shows_checkpoints_waits_and_subtasks,
            inspection::patch_gates_keep_old_tasks_on_the_old_path,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($builder:expr; $($area:ident :: $case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::conformance::block_on(async {
                    $crate::conformance::$area::$case(&$builder).await;
                });
            }
        )*
    };
}
