//! The statements by which adapters call the stored functions, one per operation of the
//! storage port. Each is one round trip; adapters prepare them once per connection.
//!
//! Parameter types are spelled out in casts so that every driver infers the same types.
//! Durations are whole microseconds (`bigint`, rounded up), `NULL` where the port has `None`.
//! Functions that refuse raise a SQLSTATE of [`sqlstate`](crate::sqlstate).

/// Creates a queue if missing.
///
/// Parameters: `$1 text` queue. No result to read.
pub const ENSURE_QUEUE: &str = "SELECT durable.ensure_queue($1::text)";

/// Spawns a task (or returns the existing one with the same idempotency key in the queue).
///
/// Parameters: `$1 text` queue, `$2 text` task name, `$3 jsonb` params, `$4 jsonb` headers
/// (object), `$5 integer` max attempts (>= 1), `$6 jsonb` retry strategy, `$7 jsonb`
/// cancellation policy, `$8 text` idempotency key or `NULL`, `$9 uuid` parent task or `NULL`,
/// `$10 bigint` delay in microseconds or `NULL`.
///
/// One row: `task_id uuid, run_id uuid, attempt integer, created boolean`.
pub const SPAWN_TASK: &str = "SELECT task_id, run_id, attempt, created FROM durable.spawn_task(\
$1::text, $2::text, $3::jsonb, $4::jsonb, $5::integer, $6::jsonb, $7::jsonb, $8::text, $9::uuid, $10::bigint)";

/// Claims due runs, with the checkpoints of their tasks.
///
/// Parameters: `$1 text` queue, `$2 text` worker id, `$3 text[]` task names, `$4 integer`
/// limit, `$5 bigint` lease in microseconds.
///
/// Rows, by `kind text`:
/// - `run`, one per claimed run: `task_id uuid, run_id uuid, task_name text, params jsonb,
///   headers jsonb, attempt integer, max_attempts integer, retry_strategy jsonb,
///   cancellation jsonb, parent_task_id uuid, created_at timestamptz, first_started_at
///   timestamptz` (as it was before the claim);
/// - `checkpoint`, one per checkpoint of a claimed task: `task_id uuid, checkpoint_name text,
///   checkpoint_value jsonb`;
/// - `summary`, always last and exactly one: `store_now timestamptz` (the store time of the
///   claim), `next_wake_at timestamptz` (the next moment a task becomes claimable, or `NULL`).
///
/// No value gathers the data of several checkpoints or tasks, so no task's size can make the
/// claim fail.
pub const CLAIM_TASKS: &str = "SELECT kind, task_id, run_id, task_name, params, headers, attempt, \
max_attempts, retry_strategy, cancellation, parent_task_id, created_at, first_started_at, \
checkpoint_name, checkpoint_value, store_now, next_wake_at \
FROM durable.claim_tasks($1::text, $2::text, $3::text[], $4::integer, $5::bigint)";

/// Recovers tasks whose run's lease expired.
///
/// Parameters: `$1 text` queue.
///
/// One row: `recovered bigint, more boolean`. While `more` is true, call again (each call
/// handles at most one final failure and a bounded number of retries).
pub const EXPIRE_LEASES: &str = "SELECT recovered, more FROM durable.expire_leases($1::text)";

/// Fenced: writes a checkpoint and extends the lease.
///
/// Parameters: `$1 text` queue, `$2 uuid` task, `$3 uuid` run, `$4 text` checkpoint name,
/// `$5 jsonb` value, `$6 bigint` lease in microseconds. No result to read.
pub const WRITE_CHECKPOINT: &str = "SELECT durable.write_checkpoint(\
$1::text, $2::uuid, $3::uuid, $4::text, $5::jsonb, $6::bigint)";

/// Fenced: extends the lease.
///
/// Parameters: `$1 text` queue, `$2 uuid` task, `$3 uuid` run, `$4 bigint` lease in
/// microseconds. No result to read.
pub const EXTEND_LEASE: &str =
    "SELECT durable.extend_lease($1::text, $2::uuid, $3::uuid, $4::bigint)";

/// Fenced: a durable sleep.
///
/// Parameters: `$1 text` queue, `$2 uuid` task, `$3 uuid` run, `$4 text` checkpoint name,
/// `$5 bigint` duration in microseconds or `NULL`, `$6 timestamptz` wake-up time or `NULL`
/// (exactly one of `$5`, `$6` is set), `$7 bigint` lease in microseconds.
///
/// One row: `outcome text` (`elapsed` or `suspended`), `wake_at timestamptz`.
pub const SLEEP_RUN: &str = "SELECT outcome, wake_at FROM durable.sleep_run(\
$1::text, $2::uuid, $3::uuid, $4::text, $5::bigint, $6::timestamptz, $7::bigint)";

/// Fenced: awaits an event.
///
/// Parameters: `$1 text` queue, `$2 uuid` task, `$3 uuid` run, `$4 text` checkpoint name,
/// `$5 text` event name, `$6 bigint` timeout in microseconds or `NULL`, `$7 bigint` lease in
/// microseconds.
///
/// One row: `outcome text` (`received`, `timed_out` or `suspended`), `payload jsonb` (the
/// event's payload when `received`).
pub const AWAIT_EVENT: &str = "SELECT outcome, payload FROM durable.await_event(\
$1::text, $2::uuid, $3::uuid, $4::text, $5::text, $6::bigint, $7::bigint)";

/// Emits an event (the first emit of a name in a queue wins) and wakes the tasks awaiting it.
///
/// Parameters: `$1 text` queue, `$2 text` event name, `$3 jsonb` payload.
///
/// One row: `first boolean`, whether this emit stored the event.
pub const EMIT_EVENT: &str = "SELECT durable.emit_event($1::text, $2::text, $3::jsonb) AS first";

/// Fenced: completes the task.
///
/// Parameters: `$1 text` queue, `$2 uuid` task, `$3 uuid` run, `$4 jsonb` output. No result to
/// read.
pub const COMPLETE_RUN: &str =
    "SELECT durable.complete_run($1::text, $2::uuid, $3::uuid, $4::jsonb)";

/// Fenced: fails the run, retrying after a delay or failing the task for good.
///
/// Parameters: `$1 text` queue, `$2 uuid` task, `$3 uuid` run, `$4 jsonb` error
/// (`{"kind": ..., "message": ...}`), `$5 bigint` retry delay in microseconds, or `NULL` for a
/// final failure. No result to read.
pub const FAIL_RUN: &str =
    "SELECT durable.fail_run($1::text, $2::uuid, $3::uuid, $4::jsonb, $5::bigint)";

/// Cancels a task and its non-terminal descendants.
///
/// Parameters: `$1 text` queue, `$2 uuid` task.
///
/// One row: `cancelled boolean` (`false` if the task had already ended).
pub const CANCEL_TASK: &str = "SELECT durable.cancel_task($1::text, $2::uuid) AS cancelled";

/// Makes a failed task pending again as a new attempt.
///
/// Parameters: `$1 text` queue, `$2 uuid` task.
///
/// One row: `task_id uuid, run_id uuid, attempt integer`.
pub const RETRY_TASK: &str =
    "SELECT task_id, run_id, attempt FROM durable.retry_task($1::text, $2::uuid)";

/// Reads the state of a task.
///
/// Parameters: `$1 uuid` task.
///
/// Zero rows (no such task) or one: `state text, output jsonb, last_error jsonb`.
pub const TASK_RESULT: &str = "SELECT state, output, last_error FROM durable.task_result($1::uuid)";

/// Spawns several tasks in one statement, each as [`SPAWN_TASK`] would (all or none).
///
/// Parameters, arrays of one length (one element per task, `NULL` elements where
/// [`SPAWN_TASK`] takes `NULL`): `$1 text[]` queues, `$2 text[]` task names, `$3 jsonb[]`
/// params, `$4 jsonb[]` headers, `$5 integer[]` max attempts, `$6 jsonb[]` retry strategies,
/// `$7 jsonb[]` cancellation policies, `$8 text[]` idempotency keys, `$9 uuid[]` parent tasks,
/// `$10 bigint[]` delays in microseconds.
///
/// Rows, one per task in the order of the arrays: `ord bigint` (1-based), `task_id uuid,
/// run_id uuid, attempt integer, created boolean`.
pub const SPAWN_TASKS: &str = "SELECT ord, task_id, run_id, attempt, created FROM durable.spawn_tasks(\
$1::text[], $2::text[], $3::jsonb[], $4::jsonb[], $5::integer[], $6::jsonb[], $7::jsonb[], \
$8::text[], $9::uuid[], $10::bigint[])";

/// Fenced: completes several runs in one statement, each as [`COMPLETE_RUN`] would.
///
/// Parameters, arrays of one length (one element per run): `$1 text[]` queues, `$2 uuid[]`
/// tasks, `$3 uuid[]` runs, `$4 jsonb[]` outputs.
///
/// Rows, one per run in the order of the arrays: `ord bigint` (1-based), `outcome text`:
/// `completed`; `lease_lost` or `cancelled` (refused, as [`COMPLETE_RUN`] would refuse it with
/// [`LEASE_LOST`](crate::sqlstate::LEASE_LOST) or [`CANCELLED`](crate::sqlstate::CANCELLED));
/// or `deferred`: the task has a parent and was left alone, complete it with [`COMPLETE_RUN`].
pub const COMPLETE_RUNS: &str = "SELECT ord, outcome FROM durable.complete_runs(\
$1::text[], $2::uuid[], $3::uuid[], $4::jsonb[])";

/// Retention: deletes one bounded batch of finished tasks of a queue (with their checkpoints,
/// waits and the event that announced their end to a parent) and of old events. A subtask goes
/// only once its parent's row is gone; rows other transactions hold are skipped.
///
/// Parameters: `$1 text` queue, `$2 bigint` age in microseconds (finished at least this long
/// ago), `$3 integer` batch size (>= 1).
///
/// One row: `tasks bigint` and `events bigint` deleted, `more boolean` (a batch was full: call
/// again).
pub const PURGE_FINISHED: &str =
    "SELECT tasks, events, more FROM durable.purge_finished($1::text, $2::bigint, $3::integer)";

/// The columns of a schedule row, in the order of [`LIST_SCHEDULES`] and [`DUE_SCHEDULES`].
macro_rules! schedule_columns {
    () => {
        "queue_name, schedule_name, cron, task_name, params, headers, max_attempts, \
retry_strategy, cancellation, next_run_at, last_run_at, last_task_id, created_at, updated_at"
    };
}

/// Creates or replaces a schedule (a replaced one is armed again from its new cron).
///
/// Parameters: `$1 text` queue, `$2 text` schedule name, `$3 text` cron expression, `$4 text`
/// task name, `$5 jsonb` params, `$6 jsonb` headers, `$7 integer` max attempts, `$8 jsonb`
/// retry strategy, `$9 jsonb` cancellation policy.
///
/// One row: `created boolean`.
pub const UPSERT_SCHEDULE: &str = "SELECT durable.upsert_schedule($1::text, $2::text, $3::text, \
$4::text, $5::jsonb, $6::jsonb, $7::integer, $8::jsonb, $9::jsonb) AS created";

/// Lists schedules.
///
/// Parameters: `$1 text` queue, or `NULL` for every queue.
///
/// Rows: `queue_name text, schedule_name text, cron text, task_name text, params jsonb,
/// headers jsonb, max_attempts integer, retry_strategy jsonb, cancellation jsonb,
/// next_run_at timestamptz, last_run_at timestamptz, last_task_id uuid,
/// created_at timestamptz, updated_at timestamptz`, by queue and name.
pub const LIST_SCHEDULES: &str = concat!(
    "SELECT ",
    schedule_columns!(),
    " FROM durable.list_schedules($1::text)"
);

/// Deletes a schedule.
///
/// Parameters: `$1 text` queue, `$2 text` schedule name.
///
/// One row: `deleted boolean`.
pub const DELETE_SCHEDULE: &str = "SELECT durable.delete_schedule($1::text, $2::text) AS deleted";

/// The due (or not yet armed) schedules of a queue.
///
/// Parameters: `$1 text` queue, `$2 integer` limit.
///
/// Rows as [`LIST_SCHEDULES`], one per schedule, then always one last row whose
/// `schedule_name` is `NULL`, carrying the store time in `next_run_at` and the next armed tick
/// after it (or `NULL`) in `last_run_at`.
pub const DUE_SCHEDULES: &str = concat!(
    "SELECT ",
    schedule_columns!(),
    " FROM durable.due_schedules($1::text, $2::integer)"
);

/// Moves a schedule from one tick to the next if no one did it first, spawning the task of the
/// tick in the same transaction when asked.
///
/// Parameters: `$1 text` queue, `$2 text` schedule name, `$3 timestamptz` the tick it is at
/// (`NULL`: not armed), `$4 timestamptz` the next tick (`NULL`: none), `$5 boolean` fire (spawn
/// the task of tick `$3`), `$6 text` the idempotency key of that task.
///
/// One row: `advanced boolean, task_id uuid, run_id uuid, attempt integer, created boolean`
/// (the task columns are `NULL` unless fired).
pub const ADVANCE_SCHEDULE: &str = "SELECT advanced, task_id, run_id, attempt, created FROM \
durable.advance_schedule($1::text, $2::text, $3::timestamptz, $4::timestamptz, $5::boolean, $6::text)";

/// Asks for a notification on [`FINISH_CHANNEL`](crate::FINISH_CHANNEL) when a task ends.
///
/// Parameters: `$1 uuid` task.
///
/// One row: `state text`, the task's state now (`NULL`: no such task).
pub const WATCH_FINISH: &str = "SELECT durable.watch_finish($1::uuid) AS state";

/// Counts the unfinished tasks of a queue by state (through the claim and lease indexes).
///
/// Parameters: `$1 text` queue.
///
/// One row: `pending bigint, running bigint, sleeping bigint`.
pub const QUEUE_DEPTH: &str = "SELECT \
count(*) FILTER (WHERE state = 'pending') AS pending, \
count(*) FILTER (WHERE state = 'running') AS running, \
count(*) FILTER (WHERE state = 'sleeping') AS sleeping \
FROM durable.tasks WHERE queue_name = $1::text AND state IN ('pending', 'running', 'sleeping')";

/// The names of due pending tasks that no worker asking serves, among the oldest ones.
///
/// Parameters: `$1 text` queue, `$2 text[]` the names the worker serves, `$3 integer` how many of
/// the oldest due pending tasks to look at.
///
/// Rows: `task_name text, waiting bigint`, most waiting first.
pub const UNSERVED_NAMES: &str = "SELECT task_name, count(*) AS waiting FROM (\
SELECT t.task_name FROM durable.tasks t \
WHERE t.queue_name = $1::text AND t.state = 'pending' AND t.available_at <= clock_timestamp() \
ORDER BY t.available_at LIMIT $3::integer) oldest \
WHERE NOT (task_name = ANY ($2::text[])) \
GROUP BY task_name ORDER BY waiting DESC, task_name";

/// Lists tasks, newest first (by task id, which grows with creation time), filtered.
///
/// Parameters, each `NULL` (an empty array for `$2`) for no filter: `$1 text` queue,
/// `$2 text[]` states (a task in any of them), `$3 text` task name, `$4 bigint` minimum age in
/// microseconds (created at least that long ago), `$5 bigint` maximum age in microseconds
/// (created less than that long ago), `$6 uuid` parent task, `$7 text` idempotency key, `$8 text` the checkpoint name of a patch
/// gate (`$patch:<id>`: only unfinished tasks that recorded `false` there), `$9 uuid` the last
/// task id of the page before (only older tasks); then `$10 integer` the most rows.
///
/// Rows: `task_id uuid, queue_name text, task_name text, state text, attempt integer,
/// max_attempts integer, parent_task_id uuid, idempotency_key text, created_at timestamptz,
/// finished_at timestamptz, last_error jsonb, store_now timestamptz`.
pub const LIST_TASKS: &str = "SELECT t.task_id, t.queue_name, t.task_name, t.state, t.attempt, \
t.max_attempts, t.parent_task_id, t.idempotency_key, t.created_at, t.finished_at, t.last_error, \
statement_timestamp() AS store_now \
FROM durable.tasks t \
WHERE ($1::text IS NULL OR t.queue_name = $1::text) \
AND (cardinality($2::text[]) = 0 OR t.state = ANY ($2::text[])) \
AND ($3::text IS NULL OR t.task_name = $3::text) \
AND ($4::bigint IS NULL OR t.created_at <= statement_timestamp() - $4::bigint * interval '1 microsecond') \
AND ($5::bigint IS NULL OR t.created_at > statement_timestamp() - $5::bigint * interval '1 microsecond') \
AND ($6::uuid IS NULL OR t.parent_task_id = $6::uuid) \
AND ($7::text IS NULL OR t.idempotency_key = $7::text) \
AND ($8::text IS NULL OR (t.state IN ('pending', 'running', 'sleeping') AND EXISTS (\
SELECT 1 FROM durable.checkpoints c WHERE c.task_id = t.task_id AND c.name = $8::text \
AND c.value = 'false'::jsonb))) \
AND ($9::uuid IS NULL OR t.task_id < $9::uuid) \
ORDER BY t.task_id DESC \
LIMIT $10::integer";

/// Everything about one task (see `durable.inspect_task` in the migrations).
///
/// Parameters: `$1 uuid` task, `$2 integer` the most subtasks.
///
/// Rows: `kind text` (`task`, `run`, `checkpoint`, `wait`, `subtask`), `data jsonb`; none when
/// there is no such task.
pub const INSPECT_TASK: &str = "SELECT kind, data FROM durable.inspect_task($1::uuid, $2::integer)";
