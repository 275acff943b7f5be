//! The PostgreSQL suite: what the conformance suite of `durable-testing` cannot say about every
//! store, because it is about PostgreSQL (locks, notifications, table sizes, raw SQL), checked on
//! each driver of `PgStore`.
//!
//! Every case is written once, as a function generic over the driver, in the module of its
//! area: `store`, `events`, `stress`, `operations`, `hardening`, `history`.
//! `postgres_suite!` makes a `#[test]` of each for one driver (`sqlx::<case>`,
//! `native::<case>`), and every case runs on a fresh database. The raw SQL of a case (counting
//! rows, filling tables, `VACUUM`, reading statistics) and its `LISTEN` run through the driver
//! under test too.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;
mod events;
mod hardening;
mod history;
mod operations;
mod store;
mod stress;

/// A `#[test]` per case of the suite, on the driver `$driver`: `<module>::<case>`, each on a
/// runtime of its own.
macro_rules! postgres_suite {
    ($driver:ty) => {
        postgres_cases!($driver;
            store::spawn_claim_complete_round_trip,
            store::idempotency_key_returns_the_existing_task,
            store::fenced_writes_are_refused_after_takeover_and_after_cancel,
            store::sleep_suspends_until_due_then_the_task_is_claimed_again,
            store::retry_task_makes_a_failed_task_run_again,
            store::lease_expiry_without_attempts_left_fails_and_tells_the_parent,
            events::await_and_emit_in_both_orders,
            events::emit_racing_await_never_loses_the_wake_up,
            events::cancel_cascades_and_tells_the_parent,
            stress::racing_cancel_complete_fail_and_emit_never_deadlock,
            stress::claims_stay_fast_with_a_million_finished_tasks,
            operations::only_watched_tasks_notify_their_end,
            operations::three_workers_fire_each_tick_once,
            operations::retention_keeps_a_100k_task_table_at_its_steady_size,
            hardening::a_task_too_large_to_gather_does_not_stop_its_queue,
            hardening::a_task_whose_data_does_not_read_back_fails_alone,
            hardening::a_migration_lock_held_elsewhere_never_hangs_a_start,
            hardening::database_errors_say_what_postgresql_said,
            history::runs_are_capped_and_go_with_their_task,
        );
    };
}

macro_rules! postgres_cases {
    ($driver:ty; $($area:ident :: $case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::common::run($crate::$area::$case::<$driver>());
            }
        )*
    };
}

/// The suite on sqlx.
mod sqlx {
    postgres_suite!(durable_postgres_sqlx::SqlxDriver);
}

/// The suite on tokio-postgres and deadpool-postgres.
mod native {
    postgres_suite!(durable_postgres_native::NativeDriver);
}
