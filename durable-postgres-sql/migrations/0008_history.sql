-- durable: the runs of every task (who ran it, when, how it ended), and inspection.
--
-- A run is one claim of a task by a worker. The run of a task that is running, and the last run
-- of a completed task, are read from the task's own row (claimed_by, claimed_at), so claiming
-- and completing (the hot path) write nothing more. Every other end of a run (a suspension, a
-- failed attempt, a lost lease, a cancellation) is recorded in durable.task_runs by a trigger,
-- from the row as it was: at most the latest 100 runs per task, each error text cut at 2,048
-- characters (the task's last error keeps its text whole). Retention deletes them with their
-- task.

ALTER TABLE durable.tasks ADD COLUMN claimed_at timestamptz;

CREATE TABLE durable.task_runs (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id     uuid NOT NULL REFERENCES durable.tasks (task_id) ON DELETE CASCADE,
    attempt     integer NOT NULL,
    run_id      uuid NOT NULL,
    worker_id   text,
    claimed_at  timestamptz,
    ended_at    timestamptz NOT NULL,
    -- suspended, retried, lease_expired, failed, cancelled
    outcome     text NOT NULL,
    error       jsonb,
    -- What a suspended run waits for: 'until <RFC 3339>', 'event <name>', 'subtask <id>'.
    waiting_for text
);

CREATE INDEX task_runs_task_idx ON durable.task_runs (task_id, seq);

-- Records the end of the run a task's row held before this update (see the trigger below).
CREATE OR REPLACE FUNCTION durable._record_run() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_lease_lost boolean := NEW.last_error ->> 'kind' = 'lease_expired'
                            AND NEW.last_error IS DISTINCT FROM OLD.last_error;
    v_outcome    text;
    v_error      jsonb;
    v_event      text;
    v_waiting    text;
    v_oldest     bigint;
BEGIN
    v_outcome := CASE
        WHEN NEW.state = 'sleeping' THEN 'suspended'
        WHEN NEW.state = 'cancelled' THEN 'cancelled'
        WHEN v_lease_lost THEN 'lease_expired'
        WHEN NEW.state = 'failed' THEN 'failed'
        ELSE 'retried'
    END;
    IF v_outcome IN ('lease_expired', 'failed', 'retried') AND NEW.last_error IS NOT NULL THEN
        v_error := jsonb_build_object('kind', NEW.last_error -> 'kind',
                                      'message', left(NEW.last_error ->> 'message', 2048));
    END IF;
    IF v_outcome = 'suspended' THEN
        SELECT w.event_name INTO v_event FROM durable.waits w
         WHERE w.task_id = NEW.task_id ORDER BY w.name LIMIT 1;
        v_waiting := CASE
            WHEN v_event LIKE '$child:%' THEN 'subtask ' || substr(v_event, 8)
            WHEN v_event IS NOT NULL THEN 'event ' || v_event
            ELSE 'until ' || to_char(NEW.available_at AT TIME ZONE 'UTC',
                                     'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
        END;
    END IF;
    INSERT INTO durable.task_runs (task_id, attempt, run_id, worker_id, claimed_at, ended_at,
                                   outcome, error, waiting_for)
    VALUES (OLD.task_id, OLD.attempt, OLD.run_id, OLD.claimed_by, OLD.claimed_at,
            clock_timestamp(), v_outcome, v_error, v_waiting);
    SELECT r.seq INTO v_oldest FROM durable.task_runs r
     WHERE r.task_id = OLD.task_id ORDER BY r.seq DESC OFFSET 100 LIMIT 1;
    IF FOUND THEN
        DELETE FROM durable.task_runs r WHERE r.task_id = OLD.task_id AND r.seq <= v_oldest;
    END IF;
    RETURN NULL;
END
$$;

-- Only when a run ends otherwise than by completing: claims and completions skip it.
CREATE TRIGGER tasks_record_run
    AFTER UPDATE OF state ON durable.tasks
    FOR EACH ROW
    WHEN (OLD.state = 'running' AND NEW.state NOT IN ('running', 'completed'))
    EXECUTE FUNCTION durable._record_run();

-- As in 0006, recording when each run was claimed.
CREATE OR REPLACE FUNCTION durable.claim_tasks(
    p_queue text, p_worker_id text, p_task_names text[], p_limit integer, p_lease_us bigint)
RETURNS TABLE (kind text, task_id uuid, run_id uuid, task_name text, params jsonb,
               headers jsonb, attempt integer, max_attempts integer, retry_strategy jsonb,
               cancellation jsonb, parent_task_id uuid, created_at timestamptz,
               first_started_at timestamptz, checkpoint_name text, checkpoint_value jsonb,
               store_now timestamptz, next_wake_at timestamptz)
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
                   SET state = 'running', claimed_by = p_worker_id, claimed_at = v_now,
                       lease_expires_at = v_lease, available_at = NULL,
                       first_started_at = coalesce(t.first_started_at, v_now)
                  FROM due
                 WHERE t.task_id = due.task_id
                RETURNING t.task_id, t.run_id, t.task_name, t.params, t.headers, t.attempt,
                          t.max_attempts, t.retry_strategy, t.cancellation, t.parent_task_id,
                          t.created_at, due.previous_start
            )
            SELECT 'run'::text, c.task_id, c.run_id, c.task_name, c.params, c.headers, c.attempt,
                   c.max_attempts, c.retry_strategy, c.cancellation, c.parent_task_id,
                   c.created_at, c.previous_start, NULL::text, NULL::jsonb,
                   NULL::timestamptz, NULL::timestamptz
              FROM claimed c
            UNION ALL
            SELECT 'checkpoint'::text, cp.task_id, NULL::uuid, NULL::text, NULL::jsonb,
                   NULL::jsonb, NULL::integer, NULL::integer, NULL::jsonb, NULL::jsonb,
                   NULL::uuid, NULL::timestamptz, NULL::timestamptz, cp.name, cp.value,
                   NULL::timestamptz, NULL::timestamptz
              FROM durable.checkpoints cp
              JOIN claimed c ON cp.task_id = c.task_id;
    END IF;
    SELECT min(t.available_at) INTO v_next
      FROM durable.tasks t
     WHERE t.queue_name = p_queue
       AND t.state IN ('pending', 'sleeping')
       AND t.available_at > v_now
       AND t.task_name = ANY (p_task_names);
    RETURN QUERY SELECT 'summary'::text, NULL::uuid, NULL::uuid, NULL::text, NULL::jsonb,
                        NULL::jsonb, NULL::integer, NULL::integer, NULL::jsonb, NULL::jsonb,
                        NULL::uuid, NULL::timestamptz, NULL::timestamptz, NULL::text,
                        NULL::jsonb, v_now, v_next;
END
$$;

-- As in 0003, keeping the worker of the last run (claimed_by) on the completed task.
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
           lease_expires_at = NULL
     WHERE t.task_id = p_task_id;
    PERFORM durable._child_outcome(p_queue, p_task_id, v_parent,
        jsonb_build_object('status', 'completed', 'output', p_output), v_now);
END
$$;

-- As in 0004, keeping the worker of the last run (claimed_by) on the completed tasks.
CREATE OR REPLACE FUNCTION durable.complete_runs(
    p_queues text[], p_task_ids uuid[], p_run_ids uuid[], p_outputs jsonb[])
RETURNS TABLE (ord bigint, outcome text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz;
BEGIN
    IF coalesce(cardinality(p_task_ids), 0) <> coalesce(cardinality(p_queues), 0)
       OR coalesce(cardinality(p_run_ids), 0) <> coalesce(cardinality(p_queues), 0)
       OR coalesce(cardinality(p_outputs), 0) <> coalesce(cardinality(p_queues), 0) THEN
        RAISE EXCEPTION 'complete_runs needs arrays of one length' USING ERRCODE = 'UD005';
    END IF;
    PERFORM 1 FROM durable.tasks t
     WHERE t.task_id = ANY (p_task_ids) AND t.parent_task_id IS NULL
     ORDER BY t.task_id
       FOR UPDATE;
    v_now := clock_timestamp();
    RETURN QUERY
        WITH input AS (
            SELECT i.queue, i.task_id, i.run_id, i.output, i.ord
              FROM unnest(p_queues, p_task_ids, p_run_ids, p_outputs) WITH ORDINALITY
                   AS i(queue, task_id, run_id, output, ord)
        ), done AS (
            UPDATE durable.tasks t
               SET state = 'completed', output = i.output, finished_at = v_now,
                   available_at = NULL, lease_expires_at = NULL
              FROM input i
             WHERE t.task_id = i.task_id AND t.queue_name = i.queue AND t.run_id = i.run_id
               AND t.state = 'running' AND t.lease_expires_at > v_now
               AND t.parent_task_id IS NULL
            RETURNING t.task_id
        )
        SELECT i.ord,
               CASE
                   WHEN d.task_id IS NOT NULL THEN 'completed'
                   WHEN t.parent_task_id IS NOT NULL THEN 'deferred'
                   WHEN t.state = 'cancelled' THEN 'cancelled'
                   ELSE 'lease_lost'
               END
          FROM input i
          LEFT JOIN (SELECT DISTINCT d.task_id FROM done d) d ON d.task_id = i.task_id
          LEFT JOIN durable.tasks t ON t.task_id = i.task_id
         ORDER BY i.ord;
END
$$;

-- Everything about one task, one row per item (in no particular order), in one snapshot:
--   'task'       its row, as JSON in `data` (with store_now);
--   'run'        one per recorded run (durable.task_runs, with its seq);
--   'checkpoint' one per checkpoint, with its size in bytes;
--   'wait'       one per await in progress;
--   'subtask'    one per descendant, the oldest p_max_subtasks.
-- No row: no such task.
CREATE OR REPLACE FUNCTION durable.inspect_task(p_task_id uuid, p_max_subtasks integer)
RETURNS TABLE (kind text, data jsonb)
LANGUAGE sql STABLE AS $$
    SELECT 'task'::text,
           to_jsonb(t) - 'notify_finish' || jsonb_build_object('store_now', statement_timestamp())
      FROM durable.tasks t WHERE t.task_id = p_task_id
    UNION ALL
    SELECT 'run', to_jsonb(r)
      FROM durable.task_runs r WHERE r.task_id = p_task_id
    UNION ALL
    SELECT 'checkpoint', jsonb_build_object('name', c.name, 'value', c.value,
                                            'size_bytes', octet_length(c.value::text),
                                            'run_id', c.run_id, 'updated_at', c.updated_at)
      FROM durable.checkpoints c WHERE c.task_id = p_task_id
    UNION ALL
    SELECT 'wait', jsonb_build_object('name', w.name, 'event_name', w.event_name,
                                      'timeout_at', w.timeout_at)
      FROM durable.waits w WHERE w.task_id = p_task_id
    UNION ALL
    SELECT 'subtask', to_jsonb(s) - 'notify_finish' - 'params' - 'headers' - 'output'
                      - 'retry_strategy' - 'cancellation'
      FROM (SELECT t.* FROM durable.tasks t
             WHERE t.task_id IN (SELECT d.task_id FROM durable._descendants(p_task_id) d)
             ORDER BY t.task_id
             LIMIT p_max_subtasks) s
$$;
