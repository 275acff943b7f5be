-- durable: internal helpers, and the operations a client makes (spawn, emit, cancel, retry, read).
--
-- Conventions of every function in this schema:
-- * Time is the database clock (clock_timestamp()); durations arrive as microseconds (bigint).
-- * Refusals raise these SQLSTATEs, which adapters map to meanings:
--     UD001 the run no longer owns its task (lease lost)    UD002 the task was cancelled
--     UD003 not found                                        UD004 conflict with the task's state
--     UD005 invalid input
-- * Lock order, the same everywhere so that concurrent operations never deadlock: at most one
--   event advisory lock first (durable._lock_event), then task rows, locked in ascending
--   task_id order by a single statement (durable._lock_tasks). Later statements only touch
--   rows locked that way, or lock with SKIP LOCKED (never waiting).
-- * Work for workers is announced with pg_notify('durable', queue_name), delivered at commit.

-- A UUID v7 (48-bit Unix milliseconds, then random bits) from gen_random_uuid() (PostgreSQL 13+).
CREATE OR REPLACE FUNCTION durable.uuid_v7() RETURNS uuid
LANGUAGE sql VOLATILE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;

-- A duration in microseconds as an interval (NULL stays NULL).
CREATE OR REPLACE FUNCTION durable._micros(p_us bigint) RETURNS interval
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_us * interval '1 microsecond'
$$;

-- A timestamp as a JSON string in RFC 3339, UTC, whatever the session's time zone.
CREATE OR REPLACE FUNCTION durable._json_time(p_at timestamptz) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT to_jsonb(to_char(p_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
$$;

-- Serializes emits and awaits of one event of one queue (transaction-scoped advisory lock).
-- Queue names cannot contain '/', so the key text is unambiguous. 1685418593 = 'dura'.
CREATE OR REPLACE FUNCTION durable._lock_event(p_queue text, p_event text) RETURNS void
LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(1685418593, hashtext(p_queue || '/' || p_event))
$$;

-- Locks task rows in ascending task_id order, in one statement.
CREATE OR REPLACE FUNCTION durable._lock_tasks(p_ids uuid[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF cardinality(p_ids) > 0 THEN
        PERFORM 1 FROM durable.tasks t WHERE t.task_id = ANY (p_ids) ORDER BY t.task_id FOR UPDATE;
    END IF;
END
$$;

-- Raises the refusal of a fenced write: UD002 if the task was cancelled, else UD001.
CREATE OR REPLACE FUNCTION durable._fence_error(p_task_id uuid, p_run_id uuid) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM durable.tasks t WHERE t.task_id = p_task_id AND t.state = 'cancelled') THEN
        RAISE EXCEPTION 'task % was cancelled', p_task_id USING ERRCODE = 'UD002';
    END IF;
    RAISE EXCEPTION 'run % of task % no longer owns the task', p_run_id, p_task_id
        USING ERRCODE = 'UD001';
END
$$;

-- Locks the task of a run and checks that the run owns it (running, current run, lease not
-- expired); raises the fence error otherwise. Returns the store time taken after the lock.
CREATE OR REPLACE FUNCTION durable._lock_run(p_queue text, p_task_id uuid, p_run_id uuid)
RETURNS timestamptz
LANGUAGE plpgsql AS $$
DECLARE
    v_mine  boolean;
    v_lease timestamptz;
    v_now   timestamptz;
BEGIN
    SELECT t.queue_name = p_queue AND t.run_id = p_run_id AND t.state = 'running', t.lease_expires_at
      INTO v_mine, v_lease
      FROM durable.tasks t WHERE t.task_id = p_task_id
       FOR UPDATE;
    v_now := clock_timestamp();
    IF NOT coalesce(v_mine AND v_lease > v_now, false) THEN
        PERFORM durable._fence_error(p_task_id, p_run_id);
    END IF;
    RETURN v_now;
END
$$;

-- Every descendant of a task (children, grandchildren...), whatever their state.
CREATE OR REPLACE FUNCTION durable._descendants(p_root uuid) RETURNS TABLE (task_id uuid)
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE d (task_id) AS (
        SELECT c.task_id FROM durable.tasks c WHERE c.parent_task_id = p_root
        UNION
        SELECT c.task_id FROM durable.tasks c JOIN d ON c.parent_task_id = d.task_id
    )
    SELECT d.task_id FROM d
$$;

-- Locks what the terminal transition of a task touches, in the store's lock order: the advisory
-- lock of its child event (if it has a parent), then in one statement the task, the tasks
-- awaiting its child event, and (p_cascade) its non-terminal descendants. Returns the parent.
CREATE OR REPLACE FUNCTION durable._lock_terminal(p_queue text, p_task_id uuid, p_cascade boolean)
RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    v_parent uuid;
    v_event  text;
    v_ids    uuid[] := ARRAY[p_task_id];
BEGIN
    -- parent_task_id never changes: reading it before locking is safe.
    SELECT t.parent_task_id INTO v_parent FROM durable.tasks t WHERE t.task_id = p_task_id;
    IF v_parent IS NOT NULL THEN
        v_event := '$child:' || p_task_id::text;
        PERFORM durable._lock_event(p_queue, v_event);
        v_ids := v_ids || ARRAY(SELECT w.task_id FROM durable.waits w
                                 WHERE w.queue_name = p_queue AND w.event_name = v_event);
    END IF;
    IF p_cascade THEN
        v_ids := v_ids || ARRAY(SELECT t.task_id FROM durable.tasks t
                                 WHERE t.task_id IN (SELECT d.task_id FROM durable._descendants(p_task_id) d)
                                   AND t.state NOT IN ('completed', 'failed', 'cancelled'));
    END IF;
    PERFORM durable._lock_tasks(v_ids);
    RETURN v_parent;
END
$$;

-- Cancels every non-terminal descendant of a task and drops their waits. Rows that appeared
-- after the caller's _lock_terminal (a subtask spawned meanwhile) are locked here.
CREATE OR REPLACE FUNCTION durable._cancel_descendants(p_root uuid, p_now timestamptz) RETURNS void
LANGUAGE sql AS $$
    WITH cancelled AS (
        UPDATE durable.tasks t
           SET state = 'cancelled', finished_at = p_now, available_at = NULL,
               claimed_by = NULL, lease_expires_at = NULL
         WHERE t.task_id IN (SELECT d.task_id FROM durable._descendants(p_root) d)
           AND t.state NOT IN ('completed', 'failed', 'cancelled')
        RETURNING t.task_id
    )
    DELETE FROM durable.waits w USING cancelled c WHERE w.task_id = c.task_id
$$;

-- Stores an event if none of that name exists in the queue (first emit wins) and makes every
-- task of the queue sleeping on it claimable now. The caller holds the event's advisory lock and
-- the row locks of the waiting tasks. Returns whether this emit was the first and how many tasks
-- it woke.
CREATE OR REPLACE FUNCTION durable._emit(p_queue text, p_event text, p_payload jsonb, p_now timestamptz,
                                         OUT first boolean, OUT woken integer)
LANGUAGE plpgsql AS $$
BEGIN
    woken := 0;
    INSERT INTO durable.events (queue_name, event_name, payload, emitted_at)
    VALUES (p_queue, p_event, p_payload, p_now)
    ON CONFLICT DO NOTHING;
    first := FOUND;
    IF first THEN
        UPDATE durable.tasks t SET state = 'pending', available_at = p_now
         WHERE t.task_id IN (SELECT w.task_id FROM durable.waits w
                              WHERE w.queue_name = p_queue AND w.event_name = p_event)
           AND t.state = 'sleeping';
        GET DIAGNOSTICS woken = ROW_COUNT;
    END IF;
END
$$;

-- Emits the child event of a task that reached a terminal state, if it has a parent, and
-- announces the woken parent. The caller ran _lock_terminal.
CREATE OR REPLACE FUNCTION durable._child_outcome(p_queue text, p_task_id uuid, p_parent uuid,
                                                  p_outcome jsonb, p_now timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_woken integer;
BEGIN
    IF p_parent IS NULL THEN
        RETURN;
    END IF;
    SELECT e.woken INTO v_woken
      FROM durable._emit(p_queue, '$child:' || p_task_id::text, p_outcome, p_now) e;
    IF v_woken > 0 THEN
        PERFORM pg_notify('durable', p_queue);
    END IF;
END
$$;

-- Makes sure a queue exists.
CREATE OR REPLACE FUNCTION durable.ensure_queue(p_queue text) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO durable.queues (queue_name) VALUES (p_queue) ON CONFLICT DO NOTHING
$$;

-- Creates a pending task (claimable after p_delay_us), attempt 1, with a fresh run. With an
-- idempotency key that exists in the queue, returns that task (created = false) instead.
CREATE OR REPLACE FUNCTION durable.spawn_task(
    p_queue text, p_task_name text, p_params jsonb, p_headers jsonb, p_max_attempts integer,
    p_retry_strategy jsonb, p_cancellation jsonb, p_idempotency_key text, p_parent_task_id uuid,
    p_delay_us bigint)
RETURNS TABLE (task_id uuid, run_id uuid, attempt integer, created boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now     timestamptz := clock_timestamp();
    v_task_id uuid := durable.uuid_v7();
    v_run_id  uuid := durable.uuid_v7();
    v_parent_state text;
BEGIN
    IF p_max_attempts IS NULL OR p_max_attempts < 1 THEN
        RAISE EXCEPTION 'max_attempts must be at least 1' USING ERRCODE = 'UD005';
    END IF;
    IF p_parent_task_id IS NOT NULL THEN
        -- A subtask of a task that has ended would escape its cascade: refuse it. The shared
        -- lock makes a concurrent cancel of the parent wait for this spawn, so its cascade
        -- sees the new child (parent before child, as in every lock order here).
        SELECT t.state INTO v_parent_state FROM durable.tasks t
         WHERE t.task_id = p_parent_task_id FOR SHARE;
        IF v_parent_state IS NULL OR v_parent_state IN ('completed', 'failed', 'cancelled') THEN
            RAISE EXCEPTION 'parent task % has ended (%): it cannot spawn subtasks',
                p_parent_task_id, coalesce(v_parent_state, 'not found') USING ERRCODE = 'UD004';
        END IF;
    END IF;
    INSERT INTO durable.queues (queue_name) VALUES (p_queue) ON CONFLICT DO NOTHING;
    INSERT INTO durable.tasks (task_id, queue_name, task_name, params, headers, max_attempts,
                               retry_strategy, cancellation, idempotency_key, parent_task_id,
                               state, attempt, run_id, available_at, created_at)
    VALUES (v_task_id, p_queue, p_task_name, p_params, coalesce(p_headers, '{}'::jsonb),
            p_max_attempts, p_retry_strategy, p_cancellation, p_idempotency_key, p_parent_task_id,
            'pending', 1, v_run_id, v_now + coalesce(durable._micros(p_delay_us), interval '0'), v_now)
    ON CONFLICT (queue_name, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING;
    IF FOUND THEN
        -- Also for delayed tasks: idle workers then learn when to wake.
        PERFORM pg_notify('durable', p_queue);
        RETURN QUERY SELECT v_task_id, v_run_id, 1, true;
        RETURN;
    END IF;
    RETURN QUERY
        SELECT t.task_id, t.run_id, t.attempt, false FROM durable.tasks t
         WHERE t.queue_name = p_queue AND t.idempotency_key = p_idempotency_key;
    IF NOT FOUND THEN
        -- The conflicting task is invisible to this snapshot (repeatable read): retry the call.
        RAISE EXCEPTION 'a task with idempotency key % was created concurrently', p_idempotency_key
            USING ERRCODE = '40001';
    END IF;
END
$$;

-- Emits an event (first emit wins) and wakes the tasks of the queue sleeping on it. Returns
-- whether this emit was the first.
CREATE OR REPLACE FUNCTION durable.emit_event(p_queue text, p_event_name text, p_payload jsonb)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_first boolean;
    v_woken integer;
BEGIN
    PERFORM durable._lock_event(p_queue, p_event_name);
    PERFORM durable._lock_tasks(ARRAY(SELECT w.task_id FROM durable.waits w
                                       WHERE w.queue_name = p_queue AND w.event_name = p_event_name));
    SELECT e.first, e.woken INTO v_first, v_woken
      FROM durable._emit(p_queue, p_event_name, p_payload, clock_timestamp()) e;
    IF v_woken > 0 THEN
        PERFORM pg_notify('durable', p_queue);
    END IF;
    RETURN v_first;
END
$$;

-- Cancels a task of a queue and its non-terminal descendants. false: already terminal.
CREATE OR REPLACE FUNCTION durable.cancel_task(p_queue text, p_task_id uuid) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_state  text;
    v_parent uuid;
    v_now    timestamptz;
BEGIN
    SELECT t.state INTO v_state FROM durable.tasks t
     WHERE t.task_id = p_task_id AND t.queue_name = p_queue;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'task % in queue % not found', p_task_id, p_queue USING ERRCODE = 'UD003';
    END IF;
    IF v_state IN ('completed', 'failed', 'cancelled') THEN
        RETURN false;
    END IF;
    v_parent := durable._lock_terminal(p_queue, p_task_id, true);
    v_now := clock_timestamp();
    UPDATE durable.tasks t
       SET state = 'cancelled', finished_at = v_now, available_at = NULL,
           claimed_by = NULL, lease_expires_at = NULL
     WHERE t.task_id = p_task_id AND t.state NOT IN ('completed', 'failed', 'cancelled');
    IF NOT FOUND THEN
        RETURN false; -- it finished while we waited for the lock
    END IF;
    DELETE FROM durable.waits w WHERE w.task_id = p_task_id;
    PERFORM durable._cancel_descendants(p_task_id, v_now);
    PERFORM durable._child_outcome(p_queue, p_task_id, v_parent,
                                   jsonb_build_object('status', 'cancelled'), v_now);
    RETURN true;
END
$$;

-- Makes a failed task pending again as a new attempt with a new run, keeping its checkpoints;
-- one more attempt is allowed if it had used them all.
CREATE OR REPLACE FUNCTION durable.retry_task(p_queue text, p_task_id uuid)
RETURNS TABLE (task_id uuid, run_id uuid, attempt integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_state text;
BEGIN
    RETURN QUERY
        WITH retried AS (
            UPDATE durable.tasks t
               SET state = 'pending', attempt = t.attempt + 1, run_id = durable.uuid_v7(),
                   max_attempts = greatest(t.max_attempts, t.attempt + 1),
                   available_at = clock_timestamp(), finished_at = NULL,
                   claimed_by = NULL, lease_expires_at = NULL
             WHERE t.task_id = p_task_id AND t.queue_name = p_queue AND t.state = 'failed'
            RETURNING t.task_id, t.run_id, t.attempt
        )
        SELECT r.task_id, r.run_id, r.attempt FROM retried r;
    IF FOUND THEN
        PERFORM pg_notify('durable', p_queue);
        RETURN;
    END IF;
    SELECT t.state INTO v_state FROM durable.tasks t
     WHERE t.task_id = p_task_id AND t.queue_name = p_queue;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'task % in queue % not found', p_task_id, p_queue USING ERRCODE = 'UD003';
    END IF;
    RAISE EXCEPTION 'task % is %, only a failed task can be retried', p_task_id, v_state
        USING ERRCODE = 'UD004';
END
$$;

-- The state of a task as seen from outside: no row if there is no such task.
CREATE OR REPLACE FUNCTION durable.task_result(p_task_id uuid)
RETURNS TABLE (state text, output jsonb, last_error jsonb)
LANGUAGE sql STABLE AS $$
    SELECT t.state, t.output, t.last_error FROM durable.tasks t WHERE t.task_id = p_task_id
$$;
