-- durable: batch operations, one statement (one round trip, one commit) for many tasks.
-- The conventions (SQLSTATEs, lock order, notifications) are described at the top of 0002.

-- Spawns one task per element of the arrays (all of the same length), each as spawn_task
-- would, in one transaction. Returns one row per element, in the order of the arrays (ord is
-- 1-based). An idempotency key that exists in the queue, or appears earlier in the arrays,
-- returns that task with created = false; a subtask whose parent has ended (or does not
-- exist) refuses the batch with UD004. Tasks are inserted in (queue, idempotency key)
-- order, so that concurrent batches sharing keys wait on each other in one order and never
-- deadlock. One notification per queue that received a task.
CREATE OR REPLACE FUNCTION durable.spawn_tasks(
    p_queues text[], p_task_names text[], p_params jsonb[], p_headers jsonb[],
    p_max_attempts integer[], p_retry_strategies jsonb[], p_cancellations jsonb[],
    p_idempotency_keys text[], p_parent_task_ids uuid[], p_delays_us bigint[])
RETURNS TABLE (ord bigint, task_id uuid, run_id uuid, attempt integer, created boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now      timestamptz := clock_timestamp();
    v_count    integer := coalesce(cardinality(p_queues), 0);
    v_task_ids uuid[];
    v_run_ids  uuid[];
    v_parent   uuid;
BEGIN
    IF coalesce(cardinality(p_task_names), 0) <> v_count
       OR coalesce(cardinality(p_params), 0) <> v_count
       OR coalesce(cardinality(p_headers), 0) <> v_count
       OR coalesce(cardinality(p_max_attempts), 0) <> v_count
       OR coalesce(cardinality(p_retry_strategies), 0) <> v_count
       OR coalesce(cardinality(p_cancellations), 0) <> v_count
       OR coalesce(cardinality(p_idempotency_keys), 0) <> v_count
       OR coalesce(cardinality(p_parent_task_ids), 0) <> v_count
       OR coalesce(cardinality(p_delays_us), 0) <> v_count THEN
        RAISE EXCEPTION 'spawn_tasks needs arrays of one length' USING ERRCODE = 'UD005';
    END IF;
    IF v_count = 0 THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(p_max_attempts) m WHERE m IS NULL OR m < 1) THEN
        RAISE EXCEPTION 'max_attempts must be at least 1' USING ERRCODE = 'UD005';
    END IF;
    -- Subtasks: each parent must exist and not have ended. The parents are locked (shared,
    -- in ascending task_id order, in one statement) so that a parent that ends concurrently
    -- either is seen ended here or, once this commits, cancels the new subtasks with it.
    IF EXISTS (SELECT 1 FROM unnest(p_parent_task_ids) p WHERE p IS NOT NULL) THEN
        PERFORM 1 FROM durable.tasks t
         WHERE t.task_id = ANY (p_parent_task_ids)
         ORDER BY t.task_id
           FOR SHARE;
        SELECT p INTO v_parent
          FROM unnest(p_parent_task_ids) p
         WHERE p IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM durable.tasks t
                            WHERE t.task_id = p
                              AND t.state NOT IN ('completed', 'failed', 'cancelled'))
         LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'parent task % has ended or does not exist: it cannot spawn subtasks',
                v_parent USING ERRCODE = 'UD004';
        END IF;
    END IF;
    SELECT array_agg(durable.uuid_v7()), array_agg(durable.uuid_v7())
      INTO v_task_ids, v_run_ids
      FROM generate_series(1, v_count);
    INSERT INTO durable.queues (queue_name)
    SELECT DISTINCT q FROM unnest(p_queues) q ORDER BY q
    ON CONFLICT DO NOTHING;
    INSERT INTO durable.tasks (task_id, queue_name, task_name, params, headers, max_attempts,
                               retry_strategy, cancellation, idempotency_key, parent_task_id,
                               state, attempt, run_id, available_at, created_at)
    SELECT v_task_ids[i.ord], i.queue, i.task_name, i.params, coalesce(i.headers, '{}'::jsonb),
           i.max_attempts, i.retry_strategy, i.cancellation, i.idempotency_key, i.parent_task_id,
           'pending', 1, v_run_ids[i.ord],
           v_now + coalesce(durable._micros(i.delay_us), interval '0'), v_now
      FROM unnest(p_queues, p_task_names, p_params, p_headers, p_max_attempts,
                  p_retry_strategies, p_cancellations, p_idempotency_keys, p_parent_task_ids,
                  p_delays_us)
           WITH ORDINALITY
           AS i(queue, task_name, params, headers, max_attempts, retry_strategy, cancellation,
                idempotency_key, parent_task_id, delay_us, ord)
     ORDER BY i.queue, i.idempotency_key, i.ord
    ON CONFLICT (queue_name, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING;
    -- Also for delayed tasks: idle workers then learn when to wake.
    PERFORM pg_notify('durable', q.queue_name)
       FROM (SELECT DISTINCT t.queue_name FROM durable.tasks t
              WHERE t.task_id = ANY (v_task_ids) ORDER BY t.queue_name) q;
    RETURN QUERY
        SELECT i.ord,
               coalesce(mine.task_id, other.task_id),
               coalesce(mine.run_id, other.run_id),
               coalesce(mine.attempt, other.attempt),
               mine.task_id IS NOT NULL
          FROM unnest(p_queues, p_idempotency_keys) WITH ORDINALITY AS i(queue, idempotency_key, ord)
          LEFT JOIN durable.tasks mine ON mine.task_id = v_task_ids[i.ord]
          LEFT JOIN durable.tasks other
                 ON mine.task_id IS NULL
                AND other.queue_name = i.queue AND other.idempotency_key = i.idempotency_key
         ORDER BY i.ord;
    IF EXISTS (SELECT 1
                 FROM unnest(p_queues, p_idempotency_keys) WITH ORDINALITY AS i(queue, idempotency_key, ord)
                WHERE NOT EXISTS (SELECT 1 FROM durable.tasks t WHERE t.task_id = v_task_ids[i.ord])
                  AND NOT EXISTS (SELECT 1 FROM durable.tasks t
                                   WHERE t.queue_name = i.queue
                                     AND t.idempotency_key = i.idempotency_key)) THEN
        -- A conflicting task is invisible to this snapshot (repeatable read): retry the call.
        RAISE EXCEPTION 'a task with one of the idempotency keys was created concurrently'
            USING ERRCODE = '40001';
    END IF;
END
$$;

-- Fenced: completes the runs given by the arrays (all of the same length), each as
-- complete_run would, in one transaction. Returns one row per element, in the order of the
-- arrays: outcome 'completed'; 'lease_lost' or 'cancelled' (that run was refused and nothing
-- changed for it); or 'deferred' for a task with a parent, which this function leaves alone:
-- its completion takes its child event's lock first, so the caller completes it with
-- complete_run. The tasks without a parent are locked in one statement in ascending task_id
-- order, as everywhere; no notification (completing a task without a parent wakes no one).
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
                   available_at = NULL, claimed_by = NULL, lease_expires_at = NULL
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
