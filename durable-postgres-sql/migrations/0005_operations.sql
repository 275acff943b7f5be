-- durable: retention, schedules and notification of finished tasks.
--
-- Same conventions as 0002: database clock, durations in microseconds, SQLSTATEs UD001-UD005,
-- task rows locked in ascending task_id order or with SKIP LOCKED.

---------------------------------------------------------------------------------------------
-- Retention
---------------------------------------------------------------------------------------------

-- Events by age, for retention.
CREATE INDEX events_emitted_idx ON durable.events (queue_name, emitted_at);

-- Deletes, in one bounded batch, up to p_limit finished tasks of a queue whose end is at least
-- p_older_than_us old (with their checkpoints and waits, by cascade, and the event that
-- announced their end to their parent), then up to p_limit events of the queue emitted at least
-- that long ago. A task tree goes from the root down: a subtask is deleted only once its parent
-- row is gone, so a parent never loses the outcome of a child it may still join, and a retried
-- parent finds its children. Rows that another transaction holds are skipped, never waited for:
-- retention never blocks a worker. `more`: a batch was full, call again.
CREATE OR REPLACE FUNCTION durable.purge_finished(p_queue text, p_older_than_us bigint,
                                                  p_limit integer)
RETURNS TABLE (tasks bigint, events bigint, more boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_cutoff timestamptz;
    v_ids    uuid[];
    v_tasks  bigint := 0;
    v_events bigint := 0;
    v_n      bigint;
BEGIN
    IF p_older_than_us IS NULL OR p_older_than_us < 0 THEN
        RAISE EXCEPTION 'retention age must be zero or more' USING ERRCODE = 'UD005';
    END IF;
    IF p_limit IS NULL OR p_limit < 1 THEN
        RAISE EXCEPTION 'retention batch size must be at least 1' USING ERRCODE = 'UD005';
    END IF;
    v_cutoff := clock_timestamp() - durable._micros(p_older_than_us);
    v_ids := ARRAY(
        SELECT t.task_id FROM durable.tasks t
         WHERE t.queue_name = p_queue
           AND t.finished_at IS NOT NULL AND t.finished_at <= v_cutoff
           AND t.state IN ('completed', 'failed', 'cancelled')
           AND (t.parent_task_id IS NULL
                OR NOT EXISTS (SELECT 1 FROM durable.tasks p WHERE p.task_id = t.parent_task_id))
         ORDER BY t.finished_at
         LIMIT p_limit
         FOR UPDATE OF t SKIP LOCKED);
    IF cardinality(v_ids) > 0 THEN
        DELETE FROM durable.tasks t WHERE t.task_id = ANY (v_ids);
        GET DIAGNOSTICS v_tasks = ROW_COUNT;
        DELETE FROM durable.events e
         WHERE e.queue_name = p_queue
           AND e.event_name = ANY (ARRAY(SELECT '$child:' || id::text FROM unnest(v_ids) id));
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_events := v_n;
    END IF;
    -- Events a child emitted stay until their task goes (above); every other event by age.
    DELETE FROM durable.events e
     WHERE e.ctid = ANY (ARRAY(
        SELECT x.ctid FROM durable.events x
         WHERE x.queue_name = p_queue AND x.emitted_at <= v_cutoff
           AND left(x.event_name, 7) <> '$child:'
         ORDER BY x.emitted_at
         LIMIT p_limit
         FOR UPDATE SKIP LOCKED));
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_events := v_events + v_n;
    RETURN QUERY SELECT v_tasks, v_events, (cardinality(v_ids) >= p_limit OR v_n >= p_limit);
END
$$;

---------------------------------------------------------------------------------------------
-- Schedules
---------------------------------------------------------------------------------------------

-- Recurring spawns. Workers compute cron times; the database only fences them: a schedule
-- advances from next_run_at to the next time once, whoever tries, and the spawn of that tick
-- happens in the same transaction (at most one task per tick).
CREATE TABLE durable.schedules (
    queue_name     text NOT NULL,
    schedule_name  text NOT NULL,
    cron           text NOT NULL,
    task_name      text NOT NULL,
    params         jsonb NOT NULL,
    headers        jsonb NOT NULL DEFAULT '{}'::jsonb,
    max_attempts   integer NOT NULL CHECK (max_attempts >= 1),
    retry_strategy jsonb NOT NULL,
    cancellation   jsonb NOT NULL,
    -- The next tick; NULL: not armed yet (new or changed), a worker computes it.
    next_run_at    timestamptz,
    last_run_at    timestamptz,
    last_task_id   uuid,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    PRIMARY KEY (queue_name, schedule_name)
);

CREATE INDEX schedules_due_idx ON durable.schedules (queue_name, next_run_at);

-- Creates or replaces a schedule; a replaced schedule is armed again from its new cron.
-- Returns whether it was created.
CREATE OR REPLACE FUNCTION durable.upsert_schedule(
    p_queue text, p_name text, p_cron text, p_task_name text, p_params jsonb, p_headers jsonb,
    p_max_attempts integer, p_retry_strategy jsonb, p_cancellation jsonb)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_now     timestamptz := clock_timestamp();
    v_created boolean;
BEGIN
    IF p_max_attempts IS NULL OR p_max_attempts < 1 THEN
        RAISE EXCEPTION 'max_attempts must be at least 1' USING ERRCODE = 'UD005';
    END IF;
    INSERT INTO durable.queues (queue_name) VALUES (p_queue) ON CONFLICT DO NOTHING;
    INSERT INTO durable.schedules AS s (queue_name, schedule_name, cron, task_name, params, headers,
                                        max_attempts, retry_strategy, cancellation, created_at,
                                        updated_at)
    VALUES (p_queue, p_name, p_cron, p_task_name, p_params, coalesce(p_headers, '{}'::jsonb),
            p_max_attempts, p_retry_strategy, p_cancellation, v_now, v_now)
    ON CONFLICT (queue_name, schedule_name) DO UPDATE
       SET cron = EXCLUDED.cron, task_name = EXCLUDED.task_name, params = EXCLUDED.params,
           headers = EXCLUDED.headers, max_attempts = EXCLUDED.max_attempts,
           retry_strategy = EXCLUDED.retry_strategy, cancellation = EXCLUDED.cancellation,
           next_run_at = NULL, updated_at = v_now
    RETURNING (s.xmax = 0) INTO v_created;
    RETURN v_created;
END
$$;

-- The schedules of a queue (every queue when p_queue is NULL), by queue and name.
CREATE OR REPLACE FUNCTION durable.list_schedules(p_queue text)
RETURNS TABLE (queue_name text, schedule_name text, cron text, task_name text, params jsonb,
               headers jsonb, max_attempts integer, retry_strategy jsonb, cancellation jsonb,
               next_run_at timestamptz, last_run_at timestamptz, last_task_id uuid,
               created_at timestamptz, updated_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT s.queue_name, s.schedule_name, s.cron, s.task_name, s.params, s.headers,
           s.max_attempts, s.retry_strategy, s.cancellation, s.next_run_at, s.last_run_at,
           s.last_task_id, s.created_at, s.updated_at
      FROM durable.schedules s
     WHERE p_queue IS NULL OR s.queue_name = p_queue
     ORDER BY s.queue_name, s.schedule_name
$$;

-- Deletes a schedule; returns whether it existed. Tasks it spawned are left alone.
CREATE OR REPLACE FUNCTION durable.delete_schedule(p_queue text, p_name text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM durable.schedules s WHERE s.queue_name = p_queue AND s.schedule_name = p_name;
    RETURN FOUND;
END
$$;

-- Up to p_limit schedules of a queue that are due (next_run_at passed) or not armed, as
-- list_schedules rows, then always one last row whose schedule_name is NULL, carrying the
-- store time in next_run_at and the next armed tick after it in last_run_at.
CREATE OR REPLACE FUNCTION durable.due_schedules(p_queue text, p_limit integer)
RETURNS TABLE (queue_name text, schedule_name text, cron text, task_name text, params jsonb,
               headers jsonb, max_attempts integer, retry_strategy jsonb, cancellation jsonb,
               next_run_at timestamptz, last_run_at timestamptz, last_task_id uuid,
               created_at timestamptz, updated_at timestamptz)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := clock_timestamp();
BEGIN
    RETURN QUERY
        SELECT s.queue_name, s.schedule_name, s.cron, s.task_name, s.params, s.headers,
               s.max_attempts, s.retry_strategy, s.cancellation, s.next_run_at, s.last_run_at,
               s.last_task_id, s.created_at, s.updated_at
          FROM durable.schedules s
         WHERE s.queue_name = p_queue AND (s.next_run_at IS NULL OR s.next_run_at <= v_now)
         ORDER BY s.next_run_at NULLS FIRST, s.schedule_name
         LIMIT greatest(p_limit, 0);
    RETURN QUERY
        SELECT p_queue, NULL::text, NULL::text, NULL::text, NULL::jsonb, NULL::jsonb,
               NULL::integer, NULL::jsonb, NULL::jsonb, v_now,
               (SELECT min(s.next_run_at) FROM durable.schedules s
                 WHERE s.queue_name = p_queue AND s.next_run_at > v_now),
               NULL::uuid, NULL::timestamptz, NULL::timestamptz;
END
$$;

-- Moves a schedule from the tick p_expected (NULL: not armed) to p_next, if it is still at
-- p_expected; with p_fire, also spawns the task of tick p_expected in the same transaction,
-- with the idempotency key p_key and the headers durable.schedule and durable.scheduled_at.
-- One row: advanced (false: another worker moved it first, or it changed or went away), and
-- the spawned task when fired.
CREATE OR REPLACE FUNCTION durable.advance_schedule(
    p_queue text, p_name text, p_expected timestamptz, p_next timestamptz, p_fire boolean,
    p_key text)
RETURNS TABLE (advanced boolean, task_id uuid, run_id uuid, attempt integer, created boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_s     durable.schedules%ROWTYPE;
    v_spawn record;
BEGIN
    UPDATE durable.schedules s
       SET next_run_at = p_next,
           last_run_at = CASE WHEN p_fire THEN p_expected ELSE s.last_run_at END
     WHERE s.queue_name = p_queue AND s.schedule_name = p_name
       AND s.next_run_at IS NOT DISTINCT FROM p_expected
    RETURNING s.* INTO v_s;
    IF NOT FOUND THEN
        RETURN QUERY SELECT false, NULL::uuid, NULL::uuid, NULL::integer, NULL::boolean;
        RETURN;
    END IF;
    IF NOT p_fire OR p_expected IS NULL THEN
        RETURN QUERY SELECT true, NULL::uuid, NULL::uuid, NULL::integer, NULL::boolean;
        RETURN;
    END IF;
    SELECT sp.task_id, sp.run_id, sp.attempt, sp.created INTO v_spawn
      FROM durable.spawn_task(
        p_queue, v_s.task_name, v_s.params,
        v_s.headers || jsonb_build_object('durable.schedule', p_name,
                                          'durable.scheduled_at', durable._json_time(p_expected)),
        v_s.max_attempts, v_s.retry_strategy, v_s.cancellation, p_key, NULL, NULL) sp;
    UPDATE durable.schedules s SET last_task_id = v_spawn.task_id
     WHERE s.queue_name = p_queue AND s.schedule_name = p_name;
    RETURN QUERY SELECT true, v_spawn.task_id, v_spawn.run_id, v_spawn.attempt, v_spawn.created;
END
$$;

---------------------------------------------------------------------------------------------
-- Finished-task notifications
---------------------------------------------------------------------------------------------

-- Set by durable.watch_finish when someone waits for the task's result: only such tasks
-- notify when they end, so the completion of an unwatched task costs nothing more.
ALTER TABLE durable.tasks ADD COLUMN notify_finish boolean NOT NULL DEFAULT false;

CREATE OR REPLACE FUNCTION durable._notify_finish() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('durable_finish', NEW.task_id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_notify_finish
    AFTER UPDATE OF state ON durable.tasks
    FOR EACH ROW
    WHEN (NEW.notify_finish AND NEW.state IN ('completed', 'failed', 'cancelled')
          AND OLD.state NOT IN ('completed', 'failed', 'cancelled'))
    EXECUTE FUNCTION durable._notify_finish();

-- Asks for a notification on the channel durable_finish (payload: the task id) when the task
-- ends. Returns the task's state (NULL: no such task). If it has already ended, no notification
-- follows: the caller reads the result at once.
CREATE OR REPLACE FUNCTION durable.watch_finish(p_task_id uuid) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_state text;
BEGIN
    UPDATE durable.tasks t SET notify_finish = true
     WHERE t.task_id = p_task_id AND NOT t.notify_finish
       AND t.state NOT IN ('completed', 'failed', 'cancelled');
    SELECT t.state INTO v_state FROM durable.tasks t WHERE t.task_id = p_task_id;
    RETURN v_state;
END
$$;

---------------------------------------------------------------------------------------------
-- Lease recovery, parents first
---------------------------------------------------------------------------------------------

-- As in 0003, with a fixed order when a task and its parent lost their leases together: the
-- parent is recovered first (a call defers the subtask, and says `more`), so its final failure
-- cancels the subtask rather than racing a retry of it, and a retried parent leaves its subtask
-- to be recovered on its own.
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
       AND NOT EXISTS (SELECT 1 FROM durable.tasks p
                        WHERE p.task_id = t.parent_task_id AND p.state = 'running'
                          AND p.lease_expires_at <= v_now)
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
           AND NOT EXISTS (SELECT 1 FROM durable.tasks p
                            WHERE p.task_id = t.parent_task_id AND p.state = 'running'
                              AND p.lease_expires_at <= v_now)
         LIMIT 500
           FOR UPDATE OF t SKIP LOCKED
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
        -- Subtasks deferred behind a parent recovered now: call again.
        v_more := v_more OR EXISTS (
            SELECT 1 FROM durable.tasks t
             WHERE t.queue_name = p_queue AND t.state = 'running'
               AND t.lease_expires_at <= v_now);
    END IF;
    RETURN QUERY SELECT (v_failed + v_retried)::bigint, v_more;
END
$$;
