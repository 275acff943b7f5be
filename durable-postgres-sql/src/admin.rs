//! Statements for operators: reading tasks, queues and counts, and dropping a queue. The admin
//! CLI (`durable-cli`) runs them; any adapter may.
//!
//! Unlike [`statements`](crate::statements), these read and write the tables directly, outside
//! the storage port: they observe, and change nothing a worker relies on, except
//! [`DELETE_QUEUE`], which is meant for a queue whose clients and workers are stopped.
//!
//! Conventions: parameter types are spelled out in casts, `NULL` stands for "no filter", ages
//! are measured against a `store_now` column (`statement_timestamp()`, the database clock) so
//! that the reader's clock plays no part, and the six states are those of the `state` column
//! of `durable.tasks`: `pending`, `running`, `sleeping` (the non-terminal ones), `completed`,
//! `failed`, `cancelled`.

/// The applied migrations, oldest first. Run [`MIGRATIONS_TABLE_EXISTS`] first: on a database
/// that was never migrated the table does not exist.
///
/// No parameter. Rows: `version bigint, name text, applied_at timestamptz`.
pub const SCHEMA_MIGRATIONS: &str =
    "SELECT version, name, applied_at FROM durable.schema_migrations ORDER BY version";

/// Whether `durable.schema_migrations` exists (the database was migrated at least once).
///
/// No parameter. One row: `present boolean`.
pub const MIGRATIONS_TABLE_EXISTS: &str =
    "SELECT to_regclass('durable.schema_migrations') IS NOT NULL AS present";

/// The queue and state of one task.
///
/// Parameters: `$1 uuid` task. Zero rows (no such task) or one: `queue_name text, state text`.
pub const TASK_QUEUE: &str =
    "SELECT t.queue_name, t.state FROM durable.tasks t WHERE t.task_id = $1::uuid";

/// Every queue with its tasks counted by state, by name.
///
/// No parameter. Rows: `queue_name text, created_at timestamptz, pending bigint,
/// running bigint, sleeping bigint, completed bigint, failed bigint, cancelled bigint,
/// oldest_pending_at timestamptz` (when the oldest pending task was spawned, `NULL` if none),
/// `store_now timestamptz`.
pub const LIST_QUEUES: &str = "SELECT q.queue_name, q.created_at, \
count(t.task_id) FILTER (WHERE t.state = 'pending') AS pending, \
count(t.task_id) FILTER (WHERE t.state = 'running') AS running, \
count(t.task_id) FILTER (WHERE t.state = 'sleeping') AS sleeping, \
count(t.task_id) FILTER (WHERE t.state = 'completed') AS completed, \
count(t.task_id) FILTER (WHERE t.state = 'failed') AS failed, \
count(t.task_id) FILTER (WHERE t.state = 'cancelled') AS cancelled, \
min(t.created_at) FILTER (WHERE t.state = 'pending') AS oldest_pending_at, \
statement_timestamp() AS store_now \
FROM durable.queues q LEFT JOIN durable.tasks t ON t.queue_name = q.queue_name \
GROUP BY q.queue_name, q.created_at ORDER BY q.queue_name";

/// Whether a queue exists.
///
/// Parameters: `$1 text` queue. One row: `present boolean`.
pub const QUEUE_EXISTS: &str =
    "SELECT EXISTS (SELECT 1 FROM durable.queues q WHERE q.queue_name = $1::text) AS present";

/// Creates a queue if missing (the name must have been validated, as
/// `durable_core::policy::validate_queue_name` does).
///
/// Parameters: `$1 text` queue. One row if the queue was created, none if it existed:
/// `created_at timestamptz`.
pub const CREATE_QUEUE: &str = "INSERT INTO durable.queues (queue_name) VALUES ($1::text) \
ON CONFLICT DO NOTHING RETURNING created_at";

/// Locks the row of a queue for [`DELETE_QUEUE`], in the transaction that will delete it.
///
/// Parameters: `$1 text` queue. Zero rows (no such queue) or one: `queue_name text`.
pub const LOCK_QUEUE: &str =
    "SELECT q.queue_name FROM durable.queues q WHERE q.queue_name = $1::text FOR UPDATE";

/// Locks the tasks of a queue in ascending `task_id` order (the store's lock order, so that a
/// concurrent cancel or completion waits instead of deadlocking) and counts them, before
/// [`DELETE_QUEUE`] in the same transaction.
///
/// Parameters: `$1 text` queue. One row: `tasks bigint, unfinished bigint` (pending, running
/// or sleeping).
pub const LOCK_QUEUE_TASKS: &str = "SELECT count(*) AS tasks, \
count(*) FILTER (WHERE l.state NOT IN ('completed', 'failed', 'cancelled')) AS unfinished \
FROM (SELECT t.state FROM durable.tasks t WHERE t.queue_name = $1::text \
ORDER BY t.task_id FOR UPDATE) l";

/// Deletes a queue: its tasks (with their checkpoints and waits, by cascade), its events, its
/// schedules and its row. Run it after [`LOCK_QUEUE`] and [`LOCK_QUEUE_TASKS`] in one transaction, and roll
/// back if `unfinished` is not acceptable: it counts what this statement deleted, including
/// tasks spawned since [`LOCK_QUEUE_TASKS`] ran.
///
/// Parameters: `$1 text` queue. One row: `tasks bigint, unfinished bigint, events bigint,
/// schedules bigint, queues bigint` (rows deleted; `queues` is 0 or 1).
pub const DELETE_QUEUE: &str = "WITH deleted_tasks AS (\
DELETE FROM durable.tasks t WHERE t.queue_name = $1::text RETURNING t.state), \
deleted_events AS (DELETE FROM durable.events e WHERE e.queue_name = $1::text RETURNING 1), \
deleted_schedules AS (DELETE FROM durable.schedules s WHERE s.queue_name = $1::text RETURNING 1), \
deleted_queues AS (DELETE FROM durable.queues q WHERE q.queue_name = $1::text RETURNING 1) \
SELECT (SELECT count(*) FROM deleted_tasks) AS tasks, \
(SELECT count(*) FROM deleted_tasks d WHERE d.state NOT IN ('completed', 'failed', 'cancelled')) AS unfinished, \
(SELECT count(*) FROM deleted_events) AS events, \
(SELECT count(*) FROM deleted_schedules) AS schedules, \
(SELECT count(*) FROM deleted_queues) AS queues";

/// Counts of the tasks of one queue or of all, and the throughput of the last minute.
///
/// Parameters: `$1 text` queue, or `NULL` for every queue.
///
/// One row: `pending bigint, running bigint, sleeping bigint, completed bigint, failed bigint,
/// cancelled bigint, oldest_pending_at timestamptz` (when the oldest pending task was spawned,
/// `NULL` if none), `completed_last_minute bigint, failed_last_minute bigint` (tasks that
/// reached that state within the minute before `store_now`; a failed attempt that was retried
/// leaves no trace, so only final failures count), `store_now timestamptz`.
pub const STATS: &str = "SELECT \
count(*) FILTER (WHERE t.state = 'pending') AS pending, \
count(*) FILTER (WHERE t.state = 'running') AS running, \
count(*) FILTER (WHERE t.state = 'sleeping') AS sleeping, \
count(*) FILTER (WHERE t.state = 'completed') AS completed, \
count(*) FILTER (WHERE t.state = 'failed') AS failed, \
count(*) FILTER (WHERE t.state = 'cancelled') AS cancelled, \
min(t.created_at) FILTER (WHERE t.state = 'pending') AS oldest_pending_at, \
count(*) FILTER (WHERE t.state = 'completed' \
AND t.finished_at > statement_timestamp() - interval '1 minute') AS completed_last_minute, \
count(*) FILTER (WHERE t.state = 'failed' \
AND t.finished_at > statement_timestamp() - interval '1 minute') AS failed_last_minute, \
statement_timestamp() AS store_now \
FROM durable.tasks t WHERE ($1::text IS NULL OR t.queue_name = $1::text)";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MIGRATIONS, migrate};

    const ALL: &[&str] = &[
        SCHEMA_MIGRATIONS,
        MIGRATIONS_TABLE_EXISTS,
        TASK_QUEUE,
        LIST_QUEUES,
        QUEUE_EXISTS,
        CREATE_QUEUE,
        LOCK_QUEUE,
        LOCK_QUEUE_TASKS,
        DELETE_QUEUE,
        STATS,
    ];

    /// Every `durable.<name>` a statement mentions is a table the schema creates.
    #[test]
    fn statements_name_only_tables_of_the_schema() {
        for statement in ALL {
            for mention in statement.split("durable.").skip(1) {
                let name: String = mention
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let table = format!("TABLE durable.{name} (");
                let known = MIGRATIONS.iter().any(|m| m.sql.contains(&table))
                    || migrate::BOOTSTRAP.contains(&format!("EXISTS durable.{name} ("));
                assert!(known, "no migration creates durable.{name}: {statement}");
            }
        }
    }

    /// Parameters are numbered from 1 without gaps, and each carries a cast.
    #[test]
    fn parameters_are_numbered_and_typed() {
        for statement in ALL {
            let mut numbers: Vec<u32> = statement
                .split('$')
                .skip(1)
                .filter_map(|rest| {
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    let cast = rest[digits.len()..].starts_with("::");
                    assert!(
                        digits.is_empty() || cast,
                        "${digits} without a cast: {statement}"
                    );
                    digits.parse().ok()
                })
                .collect();
            numbers.sort_unstable();
            numbers.dedup();
            let expected: Vec<u32> = (1..=numbers.len() as u32).collect();
            assert_eq!(numbers, expected, "{statement}");
        }
    }
}
