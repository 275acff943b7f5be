//! The PostgreSQL schema of `durable`, written once for every PostgreSQL adapter.
//!
//! This crate holds text only, and depends on nothing: the migration files ([`MIGRATIONS`]), the
//! [migration protocol](#migration-protocol) that applies them, and the statement texts
//! ([`statements`]) by which an adapter calls the stored functions. `durable-postgres-sqlx` and
//! `durable-postgres-native` run exactly these texts; each is thin glue (parameters in, rows out,
//! errors mapped to meaning). The operators' queries (listing tasks, counting, dropping a queue)
//! are in [`admin`].
//!
//! # Design
//!
//! Everything lives in the schema `durable`; every queue shares the tables `durable.tasks`,
//! `durable.checkpoints`, `durable.events`, `durable.waits` and `durable.queues`, whose rows
//! carry their queue name. Each operation of the storage port is one PL/pgSQL function
//! (`durable.spawn_task`, `durable.claim_runs`, `durable.complete_run`, ...), so each call is one
//! round trip, one atomic transaction step, and a statement that the driver prepares once per
//! connection. Nothing user-supplied is ever part of SQL text: every input is a bind parameter.
//!
//! - **Time** is the database clock (`clock_timestamp()`). Durations are passed as whole
//!   microseconds (`bigint`), timestamps as `timestamptz`.
//! - **Refusals** raise the SQLSTATEs in [`sqlstate`]; adapters map them to `StoreError`.
//! - **Lock order**, the same in every function so that concurrent operations never deadlock:
//!   at most one advisory lock on an event (queue, event name) first, then task rows locked in
//!   ascending `task_id` order by a single statement; later statements touch only rows locked
//!   that way, or lock with `SKIP LOCKED`. Adapters still retry a call that fails with
//!   [`sqlstate::DEADLOCK_DETECTED`] or [`sqlstate::SERIALIZATION_FAILURE`]: every call is
//!   atomic, so retrying it is safe.
//! - **Wake-ups**: a function that makes work available runs `pg_notify('durable', queue)`
//!   ([`NOTIFY_CHANNEL`]); the notification is delivered when the transaction commits, so a
//!   spawn inside an application's transaction wakes workers only once that commits.
//! - **Ids** are UUID v7, made in SQL by `durable.uuid_v7()`.
//!
//! # Migration protocol
//!
//! Every adapter applies [`MIGRATIONS`] the same way (`durable-postgres` runs it for every
//! driver), which is safe when several processes start at once and needs no DDL right when the
//! schema is up to date:
//!
//! 1. Run [`migrate::TABLE_EXISTS`], then [`migrate::APPLIED_VERSIONS`] if the table exists: if
//!    every version of [`MIGRATIONS`] is applied, stop.
//! 2. For each missing migration, in one transaction: `SET LOCAL lock_timeout` to the longest
//!    wait allowed, [`migrate::LOCK_XACT`] with [`MIGRATION_LOCK_KEY`] (a transaction-level
//!    advisory lock, released at commit or rollback whatever happens to the connection),
//!    [`migrate::BOOTSTRAP`] (simple query protocol: it holds two statements), read the applied
//!    versions again, run the first missing [`Migration::sql`] (simple query protocol) and
//!    [`migrate::RECORD`] with its version and name; commit. When none is missing, commit and
//!    stop.
//!
//! Migrations run on a direct connection, not through a connection pooler in transaction mode.
//! Versions recorded in the database but unknown to [`MIGRATIONS`] (a newer release migrated
//! it) are left alone. The session-level [`migrate::LOCK`] and [`migrate::UNLOCK`] of earlier
//! releases are kept for tools that still use them.
//!
//! ```
//! use durable_postgres_sql::MIGRATIONS;
//!
//! // Versions are strictly increasing.
//! assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
//! ```

/// One migration: a versioned SQL script, applied once per database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// The version, recorded in `durable.schema_migrations` once applied. Strictly increasing.
    pub version: i64,
    /// A short name, recorded with the version.
    pub name: &'static str,
    /// The script: several statements, to run with the simple query protocol inside one
    /// transaction. It contains no transaction control.
    pub sql: &'static str,
}

/// Every migration, in the order to apply them.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "schema",
        sql: include_str!("../migrations/0001_schema.sql"),
    },
    Migration {
        version: 2,
        name: "task_functions",
        sql: include_str!("../migrations/0002_task_functions.sql"),
    },
    Migration {
        version: 3,
        name: "run_functions",
        sql: include_str!("../migrations/0003_run_functions.sql"),
    },
    Migration {
        version: 4,
        name: "batch",
        sql: include_str!("../migrations/0004_batch.sql"),
    },
    Migration {
        version: 5,
        name: "operations",
        sql: include_str!("../migrations/0005_operations.sql"),
    },
    Migration {
        version: 6,
        name: "claim_rows",
        sql: include_str!("../migrations/0006_claim_rows.sql"),
    },
    Migration {
        version: 8,
        name: "history",
        sql: include_str!("../migrations/0008_history.sql"),
    },
];

/// The key of the advisory lock held while migrating (`pg_advisory_xact_lock(bigint)`): the
/// bytes of `durable!`.
pub const MIGRATION_LOCK_KEY: i64 = 0x6475_7261_626c_6521;

/// The channel of the notifications that announce work; the payload is the queue name.
pub const NOTIFY_CHANNEL: &str = "durable";

/// The channel of the notifications that announce the end of a task someone waits for
/// (`statements::WATCH_FINISH`); the payload is the task id.
pub const FINISH_CHANNEL: &str = "durable_finish";

/// The prefix of the event a task's terminal transition emits for its parent:
/// `'$child:' || task_id`, the same name as `durable_core::store::child_event_name`.
pub const CHILD_EVENT_PREFIX: &str = "$child:";

/// The highest version in [`MIGRATIONS`]: the schema version this release expects.
pub const fn latest_version() -> i64 {
    let mut latest = 0;
    let mut i = 0;
    while i < MIGRATIONS.len() {
        if MIGRATIONS[i].version > latest {
            latest = MIGRATIONS[i].version;
        }
        i += 1;
    }
    latest
}

/// Statement texts of the [migration protocol](crate#migration-protocol).
pub mod migrate {
    /// Whether `durable.schema_migrations` exists. No parameter. One row: `present boolean`.
    pub const TABLE_EXISTS: &str =
        "SELECT to_regclass('durable.schema_migrations') IS NOT NULL AS present";

    /// Takes the migration lock until the end of the transaction, waiting at most the
    /// transaction's `lock_timeout`. Parameter: `$1 bigint` =
    /// [`MIGRATION_LOCK_KEY`](crate::MIGRATION_LOCK_KEY).
    pub const LOCK_XACT: &str = "SELECT pg_advisory_xact_lock($1::bigint)";

    /// Takes the migration lock for the session (the protocol of earlier releases). Parameter:
    /// `$1 bigint` = [`MIGRATION_LOCK_KEY`](crate::MIGRATION_LOCK_KEY).
    pub const LOCK: &str = "SELECT pg_advisory_lock($1::bigint)";

    /// Releases the session's migration lock. Parameter: `$1 bigint` = [`MIGRATION_LOCK_KEY`](crate::MIGRATION_LOCK_KEY).
    /// Returns one boolean: whether the lock was held.
    pub const UNLOCK: &str = "SELECT pg_advisory_unlock($1::bigint)";

    /// Creates the schema and the migrations table if missing. Two statements, no parameter:
    /// run with the simple query protocol.
    pub const BOOTSTRAP: &str = "CREATE SCHEMA IF NOT EXISTS durable;
CREATE TABLE IF NOT EXISTS durable.schema_migrations (
    version    bigint PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
);";

    /// The applied versions: rows of one `bigint` column `version`.
    pub const APPLIED_VERSIONS: &str =
        "SELECT version FROM durable.schema_migrations ORDER BY version";

    /// Records an applied migration. Parameters: `$1 bigint` version, `$2 text` name.
    pub const RECORD: &str =
        "INSERT INTO durable.schema_migrations (version, name) VALUES ($1::bigint, $2::text)";
}

/// The SQLSTATEs the stored functions raise, and the transient ones adapters retry.
pub mod sqlstate {
    /// The run no longer owns its task (not running, another run, or lease expired):
    /// `StoreError::LeaseLost`.
    pub const LEASE_LOST: &str = "UD001";
    /// The task of the run was cancelled: `StoreError::Cancelled`.
    pub const CANCELLED: &str = "UD002";
    /// No such task in that queue: `StoreError::NotFound`.
    pub const NOT_FOUND: &str = "UD003";
    /// The operation does not fit the task's state (retrying a task that did not fail):
    /// `StoreError::Conflict`; the message says why.
    pub const CONFLICT: &str = "UD004";
    /// The input was refused (a checkpoint of the wrong shape, ...): `StoreError::InvalidInput`.
    pub const INVALID_INPUT: &str = "UD005";
    /// PostgreSQL's `deadlock_detected`: retry the call.
    pub const DEADLOCK_DETECTED: &str = "40P01";
    /// PostgreSQL's `serialization_failure`: retry the call.
    pub const SERIALIZATION_FAILURE: &str = "40001";
}

pub mod admin;
pub mod statements;

#[cfg(test)]
mod tests {
    use super::*;

    const STATEMENTS: &[&str] = &[
        statements::ENSURE_QUEUE,
        statements::SPAWN_TASK,
        statements::CLAIM_TASKS,
        statements::EXPIRE_LEASES,
        statements::WRITE_CHECKPOINT,
        statements::EXTEND_LEASE,
        statements::SLEEP_RUN,
        statements::AWAIT_EVENT,
        statements::EMIT_EVENT,
        statements::COMPLETE_RUN,
        statements::FAIL_RUN,
        statements::CANCEL_TASK,
        statements::RETRY_TASK,
        statements::TASK_RESULT,
        statements::SPAWN_TASKS,
        statements::COMPLETE_RUNS,
        statements::INSPECT_TASK,
    ];

    #[test]
    fn versions_increase_and_latest_is_the_last() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
        assert_eq!(Some(latest_version()), MIGRATIONS.last().map(|m| m.version));
    }

    #[test]
    fn every_statement_calls_a_function_the_migrations_create() {
        for statement in STATEMENTS {
            let call = statement
                .split("durable.")
                .nth(1)
                .and_then(|rest| rest.split('(').next())
                .unwrap_or_default();
            assert!(!call.is_empty(), "{statement}");
            let definition = format!("FUNCTION durable.{call}(");
            assert!(
                MIGRATIONS.iter().any(|m| m.sql.contains(&definition)),
                "no migration defines durable.{call}"
            );
        }
    }

    #[test]
    fn migrations_hold_no_transaction_control() {
        for migration in MIGRATIONS {
            for word in ["BEGIN;", "COMMIT;", "ROLLBACK;"] {
                assert!(
                    !migration.sql.contains(word),
                    "{} has {word}",
                    migration.name
                );
            }
        }
    }
}
