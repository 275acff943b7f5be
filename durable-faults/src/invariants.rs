//! The invariants checked after every scenario, from the database (`durable.*` and the test's
//! instrumentation in `faults.*`).
//!
//! - **terminal**: every task of the workload reached a terminal state, and completed.
//! - **steps**: no step whose checkpoint committed ran again. A step body runs before its
//!   checkpoint commits, so a body may run more than once, but only in runs that started before
//!   the checkpoint committed: every recorded execution of a step's body (task, step, run,
//!   attempt) belongs to an attempt no later than the attempt of the run whose checkpoint
//!   committed, and no step checkpoint is ever overwritten.
//! - **once**: no task completed twice, and no task left a terminal state (audit trigger).
//! - **events**: no emitted event was lost: every event the driver and the tasks emitted is
//!   stored, and every task that awaited one received its payload.
//! - **subtasks**: every parent received its subtask's output through `join`.
//! - **tidy**: no await is left registered and no terminal task holds a lease.

use std::collections::HashMap;

use serde_json::Value;
use uuid::Uuid;

use crate::workload::{Kind, Planned, QUEUE, STEP_NAMES, go_event, go_payload};

/// What the invariant checks found.
#[derive(Debug, Default, Clone)]
pub struct Findings {
    /// Violations, one line each (empty: every invariant holds).
    pub violations: Vec<String>,
    /// Tasks in the queue.
    pub tasks: i64,
    /// Attempts beyond the first, over every task.
    pub extra_attempts: i64,
    /// The highest attempt number.
    pub max_attempt: i64,
    /// Runs recovered from an expired lease.
    pub lease_recoveries: i64,
    /// Step-body executions beyond one per (task, step): re-runs of steps whose checkpoint had
    /// not committed (allowed: steps are at-least-once).
    pub body_reruns: i64,
    /// Dead tuples in `durable.tasks` when checked.
    pub dead_tuples: i64,
}

impl Findings {
    fn violation(&mut self, what: impl Into<String>) {
        self.violations.push(what.into());
    }
}

/// Checks every invariant of a run of `plan`.
pub async fn check(
    client: &tokio_postgres::Client,
    plan: &[Planned],
    expected_tasks: usize,
) -> anyhow::Result<Findings> {
    let mut f = Findings::default();

    // terminal
    let rows = client
        .query(
            "SELECT task_id, task_name, state, params, output, attempt, last_error, \
                    lease_expires_at IS NOT NULL AS leased \
               FROM durable.tasks WHERE queue_name = $1",
            &[&QUEUE],
        )
        .await?;
    f.tasks = rows.len() as i64;
    if rows.len() != expected_tasks {
        f.violation(format!(
            "terminal: {} tasks in the queue, {expected_tasks} expected",
            rows.len()
        ));
    }
    let mut by_i: HashMap<u32, Value> = HashMap::new();
    let mut leaves: HashMap<u32, Value> = HashMap::new();
    let mut not_completed = Vec::new();
    for row in &rows {
        let task_id: Uuid = row.try_get("task_id")?;
        let name: String = row.try_get("task_name")?;
        let state: String = row.try_get("state")?;
        let params: Value = row.try_get("params")?;
        let output: Option<Value> = row.try_get("output")?;
        let attempt: i32 = row.try_get("attempt")?;
        let leased: bool = row.try_get("leased")?;
        f.extra_attempts += i64::from(attempt - 1);
        f.max_attempt = f.max_attempt.max(i64::from(attempt));
        if state != "completed" {
            let error: Option<Value> = row.try_get("last_error")?;
            not_completed.push(format!(
                "{task_id} {name} {state} attempt {attempt} {error:?}"
            ));
            continue;
        }
        if leased {
            f.violation(format!(
                "tidy: completed task {task_id} still holds a lease"
            ));
        }
        let output = output.unwrap_or(Value::Null);
        match name.as_str() {
            "faults.flow" => {
                let i = params["i"].as_u64().unwrap_or(u64::MAX) as u32;
                by_i.insert(i, output);
            }
            _ => {
                let i = params.as_u64().unwrap_or(u64::MAX) as u32;
                leaves.insert(i, output);
            }
        }
    }
    if !not_completed.is_empty() {
        f.violation(format!(
            "terminal: {} tasks did not complete, e.g. {}",
            not_completed.len(),
            not_completed
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }

    // events and subtasks, from the outputs
    let events: Vec<String> = client
        .query(
            "SELECT event_name FROM durable.events WHERE queue_name = $1 AND event_name LIKE 'go:%'",
            &[&QUEUE],
        )
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    let events: std::collections::HashSet<String> = events.into_iter().collect();
    let mut lost = Vec::new();
    let mut wrong = Vec::new();
    for p in plan {
        let i = p.params.i;
        let Some(output) = by_i.get(&i) else {
            continue; // reported above
        };
        match p.params.kind {
            Kind::Await => {
                if !events.contains(&go_event(i)) {
                    lost.push(go_event(i));
                }
                let from = if p.driver_emits { "driver" } else { "task" };
                if output["got"] != go_payload(i, from) {
                    wrong.push(format!("{i}: got {}", output["got"]));
                }
            }
            Kind::Child => {
                if output["got"] != serde_json::json!({ "leaf": i }) {
                    f.violation(format!(
                        "subtasks: flow {i} joined {} instead of its leaf's output",
                        output["got"]
                    ));
                }
                if !leaves.contains_key(&i) {
                    f.violation(format!("subtasks: the leaf of flow {i} did not complete"));
                }
            }
            Kind::Sleep | Kind::Emit => {}
        }
        if output["i"] != serde_json::json!(i) {
            f.violation(format!("terminal: flow {i} has output {output}"));
        }
    }
    if !lost.is_empty() {
        f.violation(format!(
            "events: {} emitted events are not stored, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(3)]
        ));
    }
    if !wrong.is_empty() {
        f.violation(format!(
            "events: {} awaiting tasks did not receive their payload, e.g. {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(3)]
        ));
    }

    // steps: no execution of a body after its checkpoint committed
    let steps: Vec<&str> = STEP_NAMES.to_vec();
    let row = client
        .query_one(
            "WITH committing AS ( \
                SELECT c.task_id, c.name, c.run_id, \
                       (SELECT min(e.attempt) FROM faults.effects e WHERE e.run_id = c.run_id) AS attempt \
                  FROM durable.checkpoints c WHERE c.name = ANY ($1)) \
             SELECT \
               (SELECT count(*) FROM committing WHERE attempt IS NULL), \
               (SELECT count(*) FROM faults.effects e JOIN committing k \
                   ON k.task_id = e.task_id AND k.name = e.step WHERE e.attempt > k.attempt), \
               (SELECT count(*) FROM faults.checkpoint_updates), \
               (SELECT count(*) - count(DISTINCT (task_id, step)) FROM faults.effects)",
            &[&steps],
        )
        .await?;
    let (no_body, after_commit, overwrites, reruns): (i64, i64, i64, i64) = (
        row.try_get(0)?,
        row.try_get(1)?,
        row.try_get(2)?,
        row.try_get(3)?,
    );
    f.body_reruns = reruns;
    if no_body > 0 {
        f.violation(format!(
            "steps: {no_body} step checkpoints were committed by a run that never ran the step's body"
        ));
    }
    if after_commit > 0 {
        let examples = client
            .query(
                "SELECT e.task_id::text, e.step, e.attempt, \
                        (SELECT min(x.attempt) FROM faults.effects x WHERE x.run_id = c.run_id) \
                   FROM faults.effects e JOIN durable.checkpoints c \
                     ON c.task_id = e.task_id AND c.name = e.step \
                  WHERE e.attempt > (SELECT min(x.attempt) FROM faults.effects x WHERE x.run_id = c.run_id) \
                  LIMIT 3",
                &[],
            )
            .await?;
        let examples: Vec<String> = examples
            .iter()
            .map(|r| {
                format!(
                    "task {} step {} ran in attempt {} after attempt {:?} committed it",
                    r.get::<_, String>(0),
                    r.get::<_, String>(1),
                    r.get::<_, i32>(2),
                    r.get::<_, Option<i32>>(3)
                )
            })
            .collect();
        f.violation(format!(
            "steps: {after_commit} step bodies ran after their checkpoint committed: {}",
            examples.join("; ")
        ));
    }
    if overwrites > 0 {
        f.violation(format!("steps: {overwrites} checkpoints were overwritten"));
    }

    // once
    let row = client
        .query_one(
            "SELECT \
               (SELECT count(*) FROM (SELECT task_id FROM faults.transitions \
                   WHERE new_state = 'completed' GROUP BY task_id HAVING count(*) > 1) twice), \
               (SELECT count(*) FROM faults.transitions \
                   WHERE old_state IN ('completed', 'failed', 'cancelled')), \
               (SELECT count(*) FROM faults.transitions \
                   WHERE old_state = 'running' AND error_kind = 'lease_expired' \
                     AND new_state IN ('pending', 'failed') AND old_run <> new_run)",
            &[],
        )
        .await?;
    let (twice, left_terminal, recoveries): (i64, i64, i64) =
        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    f.lease_recoveries = recoveries;
    if twice > 0 {
        f.violation(format!("once: {twice} tasks completed more than once"));
    }
    if left_terminal > 0 {
        f.violation(format!(
            "once: {left_terminal} transitions out of a terminal state"
        ));
    }

    // tidy
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM durable.waits), \
                    (SELECT coalesce(sum(n_dead_tup), 0)::bigint FROM pg_stat_user_tables \
                      WHERE schemaname = 'durable' AND relname = 'tasks')",
            &[],
        )
        .await?;
    let (waits, dead): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    f.dead_tuples = dead;
    if waits > 0 {
        f.violation(format!("tidy: {waits} awaits are still registered"));
    }
    Ok(f)
}
