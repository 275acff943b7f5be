-- durable: the operations a worker makes: claim, lease recovery, and the fenced writes of a run.
-- The conventions (SQLSTATEs, lock order, notifications) are described at the top of 0002.

-- The last_error of a run whose lease expired.
CREATE OR REPLACE FUNCTION durable._lease_error(p_run_id uuid, p_worker text) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'kind', 'lease_expired',
        'message', format('the lease of run %s (worker %s) expired before it finished',
                          p_run_id, coalesce(p_worker, 'unknown')))
$$;

-- Claims up to p_limit due tasks of the queue whose names are in p_task_names, oldest first,
-- skipping rows that other transactions hold. Each becomes running with a lease of p_lease_us.
--
-- Returns one row per claimed run, with first_started_at as it was before this claim and every
-- checkpoint of the task as one JSON object, then always one last row whose task_id is NULL:
-- its store_now is the store time of the claim and its next_wake_at the earliest future moment
-- at which a task of the queue with one of those names becomes claimable.
CREATE OR REPLACE FUNCTION durable.claim_runs(
    p_queue text, p_worker_id text, p_task_names text[], p_limit integer, p_lease_us bigint)
RETURNS TABLE (task_id uuid, run_id uuid, task_name text, params jsonb, headers jsonb,
               attempt integer, max_attempts integer, retry_strategy jsonb, cancellation jsonb,
               parent_task_id uuid, created_at timestamptz, first_started_at timestamptz,
               checkpoints jsonb, store_now timestamptz, next_wake_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now   timestamptz := clock_timestamp();
    v_lease timestamptz;
    v_next  timestamptz;
BEGIN
    v_lease := v_now + durable._micros(p_lease_us);
    IF p_limit > 0 THEN
        RETURN QUERY
            WITH due AS (
                SELECT t.task_id, t.first_started_at AS previous_start
                  FROM durable.tasks t
                 WHERE t.queue_name = p_queue
                   AND t.state IN ('pending', 'sleeping')
                   AND t.available_at <= v_now
                   AND t.task_name = ANY (p_task_names)
                 ORDER BY t.available_at
                 LIMIT p_limit
                   FOR UPDATE SKIP LOCKED
            ), claimed AS (
                UPDATE durable.tasks t
                   SET state = 'running', claimed_by = p_worker_id, lease_expires_at = v_lease,
                       available_at = NULL, first_started_at = coalesce(t.first_started_at, v_now)
                  FROM due
                 WHERE t.task_id = due.task_id
                RETURNING t.task_id, t.run_id, t.task_name, t.params, t.headers, t.attempt,
                          t.max_attempts, t.retry_strategy, t.cancellation, t.parent_task_id,
                          t.created_at, due.previous_start
            )
            SELECT c.task_id, c.run_id, c.task_name, c.params, c.headers, c.attempt,
                   c.max_attempts, c.retry_strategy, c.cancellation, c.parent_task_id,
                   c.created_at, c.previous_start,
                   (SELECT coalesce(jsonb_object_agg(cp.name, cp.value), '{}'::jsonb)
                      FROM durable.checkpoints cp WHERE cp.task_id = c.task_id),
                   v_now, NULL::timestamptz
              FROM claimed c;
    END IF;
    SELECT min(t.available_at) INTO v_next
      FROM durable.tasks t
     WHERE t.queue_name = p_queue
       AND t.state IN ('pending', 'sleeping')
       AND t.available_at > v_now
       AND t.task_name = ANY (p_task_names);
    RETURN QUERY SELECT NULL::uuid, NULL::uuid, NULL::text, NULL::jsonb, NULL::jsonb,
                        NULL::integer, NULL::integer, NULL::jsonb, NULL::jsonb, NULL::uuid,
                        NULL::timestamptz, NULL::timestamptz, NULL::jsonb, v_now, v_next;
END
$$;

-- Recovers the tasks of the queue whose run's lease expired: a new attempt with a new run, or a
-- final failure when no attempt is left (which cancels the task's descendants and tells its
-- parent). At most one final failure per call, since it takes locks in the ordinary order;
-- `more` asks the caller to call again.
CREATE OR REPLACE FUNCTION durable.expire_leases(p_queue text)
RETURNS TABLE (recovered bigint, more boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now     timestamptz := clock_timestamp();
    v_task_id uuid;
    v_run_id  uuid;
    v_parent  uuid;
    v_error   jsonb;
    v_failed  integer := 0;
    v_retried integer := 0;
    v_more    boolean := false;
BEGIN
    SELECT t.task_id, t.run_id INTO v_task_id, v_run_id
      FROM durable.tasks t
     WHERE t.queue_name = p_queue AND t.state = 'running' AND t.lease_expires_at <= v_now
       AND t.attempt >= t.max_attempts
     LIMIT 1;
    IF FOUND THEN
        v_more := true;
        v_parent := durable._lock_terminal(p_queue, v_task_id, true);
        v_now := clock_timestamp();
        UPDATE durable.tasks t
           SET state = 'failed', finished_at = v_now, available_at = NULL,
               claimed_by = NULL, lease_expires_at = NULL,
               last_error = durable._lease_error(t.run_id, t.claimed_by)
         WHERE t.task_id = v_task_id AND t.run_id = v_run_id
           AND t.state = 'running' AND t.lease_expires_at <= v_now
        RETURNING t.last_error INTO v_error;
        IF FOUND THEN
            v_failed := 1;
            PERFORM durable._cancel_descendants(v_task_id, v_now);
            PERFORM durable._child_outcome(p_queue, v_task_id, v_parent,
                jsonb_build_object('status', 'failed', 'error', v_error), v_now);
        END IF;
    END IF;
    -- SKIP LOCKED: a locked row is being written by its run or recovered by another worker.
    WITH expired AS (
        SELECT t.task_id FROM durable.tasks t
         WHERE t.queue_name = p_queue AND t.state = 'running' AND t.lease_expires_at <= v_now
           AND t.attempt < t.max_attempts
         LIMIT 500
           FOR UPDATE SKIP LOCKED
    )
    UPDATE durable.tasks t
       SET state = 'pending', attempt = t.attempt + 1, run_id = durable.uuid_v7(),
           available_at = v_now, claimed_by = NULL, lease_expires_at = NULL,
           last_error = durable._lease_error(t.run_id, t.claimed_by)
      FROM expired e
     WHERE t.task_id = e.task_id;
    GET DIAGNOSTICS v_retried = ROW_COUNT;
    IF v_retried >= 500 THEN
        v_more := true;
    END IF;
    IF v_failed + v_retried > 0 THEN
        PERFORM pg_notify('durable', p_queue);
    END IF;
    RETURN QUERY SELECT (v_failed + v_retried)::bigint, v_more;
END
$$;

-- Fenced: records a checkpoint (insert or replace) and extends the lease.
CREATE OR REPLACE FUNCTION durable.write_checkpoint(
    p_queue text, p_task_id uuid, p_run_id uuid, p_name text, p_value jsonb, p_lease_us bigint)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
BEGIN
    UPDATE durable.tasks t SET lease_expires_at = v_now + durable._micros(p_lease_us)
     WHERE t.task_id = p_task_id AND t.queue_name = p_queue AND t.run_id = p_run_id
       AND t.state = 'running' AND t.lease_expires_at > v_now;
    IF NOT FOUND THEN
        PERFORM durable._fence_error(p_task_id, p_run_id);
    END IF;
    INSERT INTO durable.checkpoints (task_id, name, value, run_id, updated_at)
    VALUES (p_task_id, p_name, p_value, p_run_id, v_now)
    ON CONFLICT (task_id, name) DO UPDATE
        SET value = EXCLUDED.value, run_id = EXCLUDED.run_id, updated_at = EXCLUDED.updated_at;
END
$$;

-- Fenced: extends the lease of the run to p_lease_us from now.
CREATE OR REPLACE FUNCTION durable.extend_lease(
    p_queue text, p_task_id uuid, p_run_id uuid, p_lease_us bigint)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
BEGIN
    UPDATE durable.tasks t SET lease_expires_at = v_now + durable._micros(p_lease_us)
     WHERE t.task_id = p_task_id AND t.queue_name = p_queue AND t.run_id = p_run_id
       AND t.state = 'running' AND t.lease_expires_at > v_now;
    IF NOT FOUND THEN
        PERFORM durable._fence_error(p_task_id, p_run_id);
    END IF;
END
$$;

-- Fenced: a durable sleep. The first call fixes the wake-up time (p_wake_at, else now +
-- p_wake_after_us) in checkpoint p_name as {"wake_at": "<RFC 3339>"}; replays reuse it.
-- outcome 'elapsed': the time has passed (the lease is extended); 'suspended': the task sleeps
-- until wake_at and its lease is released.
CREATE OR REPLACE FUNCTION durable.sleep_run(
    p_queue text, p_task_id uuid, p_run_id uuid, p_name text, p_wake_after_us bigint,
    p_wake_at timestamptz, p_lease_us bigint)
RETURNS TABLE (outcome text, wake_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now        timestamptz;
    v_checkpoint jsonb;
    v_wake_at    timestamptz;
BEGIN
    v_now := durable._lock_run(p_queue, p_task_id, p_run_id);
    SELECT c.value INTO v_checkpoint FROM durable.checkpoints c
     WHERE c.task_id = p_task_id AND c.name = p_name;
    IF FOUND THEN
        IF jsonb_typeof(v_checkpoint -> 'wake_at') IS DISTINCT FROM 'string' THEN
            RAISE EXCEPTION 'checkpoint % of task % is not a sleep', p_name, p_task_id
                USING ERRCODE = 'UD005';
        END IF;
        v_wake_at := (v_checkpoint ->> 'wake_at')::timestamptz;
    ELSE
        v_wake_at := coalesce(p_wake_at, v_now + durable._micros(p_wake_after_us));
        IF v_wake_at IS NULL THEN
            RAISE EXCEPTION 'a sleep needs a wake-up time or a duration' USING ERRCODE = 'UD005';
        END IF;
        INSERT INTO durable.checkpoints (task_id, name, value, run_id, updated_at)
        VALUES (p_task_id, p_name, jsonb_build_object('wake_at', durable._json_time(v_wake_at)),
                p_run_id, v_now);
    END IF;
    IF v_wake_at <= v_now THEN
        UPDATE durable.tasks t SET lease_expires_at = v_now + durable._micros(p_lease_us)
         WHERE t.task_id = p_task_id;
        RETURN QUERY SELECT 'elapsed'::text, v_wake_at;
    ELSE
        UPDATE durable.tasks t
           SET state = 'sleeping', available_at = v_wake_at, claimed_by = NULL, lease_expires_at = NULL
         WHERE t.task_id = p_task_id;
        RETURN QUERY SELECT 'suspended'::text, v_wake_at;
    END IF;
END
$$;

-- Fenced: an await named p_name on event p_event_name of the run's queue.
-- outcome 'received' (payload set) or 'timed_out': resolved now or earlier (checkpointed as
-- {"outcome": "received", "payload": ...} / {"outcome": "timed_out"}; the lease is extended);
-- 'suspended': the task sleeps until the event is emitted or the timeout, fixed durably in
-- durable.waits by the first call, passes.
CREATE OR REPLACE FUNCTION durable.await_event(
    p_queue text, p_task_id uuid, p_run_id uuid, p_name text, p_event_name text,
    p_timeout_us bigint, p_lease_us bigint)
RETURNS TABLE (outcome text, payload jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now        timestamptz;
    v_checkpoint jsonb;
    v_payload    jsonb;
    v_timeout_at timestamptz;
BEGIN
    -- The event's lock first: an emit of it either committed before (and is seen below) or
    -- waits until this await has registered its wait (and then wakes the task).
    PERFORM durable._lock_event(p_queue, p_event_name);
    v_now := durable._lock_run(p_queue, p_task_id, p_run_id);
    SELECT c.value INTO v_checkpoint FROM durable.checkpoints c
     WHERE c.task_id = p_task_id AND c.name = p_name;
    IF NOT FOUND THEN
        SELECT e.payload INTO v_payload FROM durable.events e
         WHERE e.queue_name = p_queue AND e.event_name = p_event_name;
        IF FOUND THEN
            v_checkpoint := jsonb_build_object('outcome', 'received', 'payload', v_payload);
        ELSE
            SELECT w.timeout_at INTO v_timeout_at FROM durable.waits w
             WHERE w.task_id = p_task_id AND w.name = p_name;
            IF NOT FOUND THEN
                v_timeout_at := v_now + durable._micros(p_timeout_us);
                INSERT INTO durable.waits (task_id, name, queue_name, event_name, timeout_at)
                VALUES (p_task_id, p_name, p_queue, p_event_name, v_timeout_at);
            END IF;
            IF v_timeout_at IS NULL OR v_timeout_at > v_now THEN
                UPDATE durable.tasks t
                   SET state = 'sleeping', available_at = v_timeout_at,
                       claimed_by = NULL, lease_expires_at = NULL
                 WHERE t.task_id = p_task_id;
                RETURN QUERY SELECT 'suspended'::text, NULL::jsonb;
                RETURN;
            END IF;
            v_checkpoint := jsonb_build_object('outcome', 'timed_out');
        END IF;
        INSERT INTO durable.checkpoints (task_id, name, value, run_id, updated_at)
        VALUES (p_task_id, p_name, v_checkpoint, p_run_id, v_now);
    ELSIF (v_checkpoint ->> 'outcome') IS NULL
       OR (v_checkpoint ->> 'outcome') NOT IN ('received', 'timed_out') THEN
        RAISE EXCEPTION 'checkpoint % of task % is not an await', p_name, p_task_id
            USING ERRCODE = 'UD005';
    END IF;
    DELETE FROM durable.waits w WHERE w.task_id = p_task_id AND w.name = p_name;
    UPDATE durable.tasks t SET lease_expires_at = v_now + durable._micros(p_lease_us)
     WHERE t.task_id = p_task_id;
    RETURN QUERY SELECT v_checkpoint ->> 'outcome', v_checkpoint -> 'payload';
END
$$;

-- Fenced: completes the task with p_output and tells its parent.
CREATE OR REPLACE FUNCTION durable.complete_run(
    p_queue text, p_task_id uuid, p_run_id uuid, p_output jsonb)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_parent uuid;
    v_now    timestamptz;
BEGIN
    v_parent := durable._lock_terminal(p_queue, p_task_id, false);
    v_now := durable._lock_run(p_queue, p_task_id, p_run_id);
    UPDATE durable.tasks t
       SET state = 'completed', output = p_output, finished_at = v_now, available_at = NULL,
           claimed_by = NULL, lease_expires_at = NULL
     WHERE t.task_id = p_task_id;
    PERFORM durable._child_outcome(p_queue, p_task_id, v_parent,
        jsonb_build_object('status', 'completed', 'output', p_output), v_now);
END
$$;

-- Fenced: fails the run. With p_retry_after_us, the task becomes pending again after that delay
-- as a new attempt with a new run; without it, the task fails for good, its non-terminal
-- descendants are cancelled and its parent is told.
CREATE OR REPLACE FUNCTION durable.fail_run(
    p_queue text, p_task_id uuid, p_run_id uuid, p_error jsonb, p_retry_after_us bigint)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_parent uuid;
    v_now    timestamptz;
BEGIN
    IF p_retry_after_us IS NOT NULL THEN
        v_now := durable._lock_run(p_queue, p_task_id, p_run_id);
        UPDATE durable.tasks t
           SET state = 'pending', attempt = t.attempt + 1, run_id = durable.uuid_v7(),
               available_at = v_now + durable._micros(p_retry_after_us),
               claimed_by = NULL, lease_expires_at = NULL, last_error = p_error
         WHERE t.task_id = p_task_id;
        PERFORM pg_notify('durable', p_queue);
        RETURN;
    END IF;
    v_parent := durable._lock_terminal(p_queue, p_task_id, true);
    v_now := durable._lock_run(p_queue, p_task_id, p_run_id);
    UPDATE durable.tasks t
       SET state = 'failed', last_error = p_error, finished_at = v_now, available_at = NULL,
           claimed_by = NULL, lease_expires_at = NULL
     WHERE t.task_id = p_task_id;
    PERFORM durable._cancel_descendants(p_task_id, v_now);
    PERFORM durable._child_outcome(p_queue, p_task_id, v_parent,
        jsonb_build_object('status', 'failed', 'error', p_error), v_now);
END
$$;
