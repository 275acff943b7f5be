-- durable: a claim that hands out each checkpoint as a row of its own.
--
-- durable.claim_runs (0003) gathers every checkpoint of a claimed task into one jsonb value; a
-- task whose checkpoints add up to more than jsonb's limit (256 MB) made every claim of its queue
-- fail. durable.claim_tasks returns the same runs, then one row per checkpoint of the claimed
-- tasks, so no value aggregates data of several checkpoints or tasks. durable.claim_runs stays for
-- workers of earlier releases during a rolling upgrade: a function whose result changes shape
-- gets a new name.

-- Claims up to p_limit due tasks of the queue whose names are in p_task_names, oldest first,
-- skipping rows that other transactions hold. Each becomes running with a lease of p_lease_us.
--
-- Rows, by kind:
--   'run'        one per claimed task: its columns, first_started_at as it was before this claim;
--   'checkpoint' one per checkpoint of a claimed task: task_id, checkpoint_name, checkpoint_value;
--   'summary'    always last, exactly one: store_now, the store time of the claim, and
--                next_wake_at, the earliest future moment at which a task of the queue with one
--                of those names becomes claimable.
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
                   SET state = 'running', claimed_by = p_worker_id, lease_expires_at = v_lease,
                       available_at = NULL, first_started_at = coalesce(t.first_started_at, v_now)
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
