-- durable: tables and indexes.
--
-- Every queue shares these tables; rows carry their queue in `queue_name`. All times come from
-- the database clock. Ids are UUID v7 made by durable.uuid_v7() (see 0002).

CREATE SCHEMA IF NOT EXISTS durable;

-- Queues that a client created. Spawning into a queue also records it here.
CREATE TABLE durable.queues (
    queue_name text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- One row per task. The current run is (run_id, attempt); earlier runs leave no row.
CREATE TABLE durable.tasks (
    task_id          uuid PRIMARY KEY,
    queue_name       text NOT NULL,
    task_name        text NOT NULL,
    params           jsonb NOT NULL,
    headers          jsonb NOT NULL DEFAULT '{}'::jsonb,
    max_attempts     integer NOT NULL CHECK (max_attempts >= 1),
    retry_strategy   jsonb NOT NULL,
    cancellation     jsonb NOT NULL,
    idempotency_key  text,
    parent_task_id   uuid,
    state            text NOT NULL CHECK (state IN
                         ('pending', 'running', 'sleeping', 'completed', 'failed', 'cancelled')),
    attempt          integer NOT NULL CHECK (attempt >= 1),
    run_id           uuid NOT NULL,
    -- When a pending or sleeping task becomes claimable; NULL: not by time (an await without
    -- timeout), or not claimable at all (running, terminal).
    available_at     timestamptz,
    claimed_by       text,
    lease_expires_at timestamptz,
    created_at       timestamptz NOT NULL,
    first_started_at timestamptz,
    finished_at      timestamptz,
    output           jsonb,
    -- TaskErrorInfo: {"kind": "...", "message": "..."}
    last_error       jsonb
);

-- Claims: the due pending/sleeping tasks of a queue, oldest first. Finished tasks stay out of it.
CREATE INDEX tasks_claim_idx ON durable.tasks (queue_name, available_at)
    WHERE state IN ('pending', 'sleeping');

-- Lease recovery: the running tasks of a queue by lease deadline.
CREATE INDEX tasks_lease_idx ON durable.tasks (queue_name, lease_expires_at)
    WHERE state = 'running';

-- Idempotent spawns: one task per key and queue.
CREATE UNIQUE INDEX tasks_idempotency_idx ON durable.tasks (queue_name, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Subtasks of a task (cascading cancellation).
CREATE INDEX tasks_parent_idx ON durable.tasks (parent_task_id)
    WHERE parent_task_id IS NOT NULL;

-- Retention: finished tasks by age.
CREATE INDEX tasks_finished_idx ON durable.tasks (queue_name, finished_at)
    WHERE finished_at IS NOT NULL;

-- Checkpoints of a task, by name; they survive retries.
CREATE TABLE durable.checkpoints (
    task_id    uuid NOT NULL REFERENCES durable.tasks (task_id) ON DELETE CASCADE,
    name       text NOT NULL,
    value      jsonb NOT NULL,
    run_id     uuid NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (task_id, name)
);

-- Emitted events, remembered per queue. The first emit of a name wins.
CREATE TABLE durable.events (
    queue_name text NOT NULL,
    event_name text NOT NULL,
    payload    jsonb NOT NULL,
    emitted_at timestamptz NOT NULL,
    PRIMARY KEY (queue_name, event_name)
);

-- Awaits in progress: fixes the timeout deadline of an await durably (a replay reuses it) and
-- lets an emit find the tasks sleeping on its event. Deleted when the await resolves.
CREATE TABLE durable.waits (
    task_id    uuid NOT NULL REFERENCES durable.tasks (task_id) ON DELETE CASCADE,
    name       text NOT NULL,
    queue_name text NOT NULL,
    event_name text NOT NULL,
    timeout_at timestamptz,
    PRIMARY KEY (task_id, name)
);

CREATE INDEX waits_event_idx ON durable.waits (queue_name, event_name);
