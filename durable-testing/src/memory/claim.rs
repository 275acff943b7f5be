//! Who runs what: claiming due tasks under a lease, and recovering the tasks whose lease expired.

use chrono::{DateTime, Utc};
use durable_core::inspect::RunOutcome;
use durable_core::model::ChildOutcome;
use durable_core::store::{ClaimBatch, ClaimRequest, ClaimedRun, RunRef};
use durable_core::{FailureKind, StoreError, TaskErrorInfo, TaskStatus};
use uuid::Uuid;

use super::state::{State, TaskRow, after};

impl State {
    /// `Store::claim`: the oldest due tasks of the request's names, oldest first, each moved to
    /// running under a new lease.
    pub(super) fn claim(
        &mut self,
        request: ClaimRequest,
        now: DateTime<Utc>,
    ) -> Result<ClaimBatch, StoreError> {
        let lease_until = after(now, request.lease, "lease")?;
        let claimable = |row: &TaskRow| {
            row.queue == request.queue
                && matches!(row.state, TaskStatus::Pending | TaskStatus::Sleeping)
                && request.task_names.contains(&row.task_name)
        };
        let mut due: Vec<(DateTime<Utc>, u64, Uuid)> = self
            .tasks
            .iter()
            .filter(|(_, row)| claimable(row))
            .filter_map(|(id, row)| {
                row.available_at
                    .filter(|at| *at <= now)
                    .map(|at| (at, row.seq, *id))
            })
            .collect();
        // The oldest `limit` in order, without sorting every due task.
        if due.len() > request.limit && request.limit > 0 {
            due.select_nth_unstable(request.limit - 1);
        }
        due.truncate(request.limit);
        due.sort_unstable();
        let next_wake_at = self
            .tasks
            .values()
            .filter(|row| claimable(row))
            .filter_map(|row| row.available_at.filter(|at| *at > now))
            .min();
        let mut runs = Vec::with_capacity(due.len());
        for (_, _, task_id) in due {
            let checkpoints = self.checkpoints.get(&task_id).cloned().unwrap_or_default();
            let Some(row) = self.tasks.get_mut(&task_id) else {
                continue;
            };
            let first_started_at = row.first_started_at;
            row.state = TaskStatus::Running;
            row.claimed_by = Some(request.worker_id.clone());
            row.claimed_at = Some(now);
            row.lease_expires_at = Some(lease_until);
            row.available_at = None;
            row.first_started_at = Some(first_started_at.unwrap_or(now));
            runs.push(ClaimedRun {
                run: RunRef {
                    queue: row.queue.clone(),
                    task_id,
                    run_id: row.run_id,
                },
                task_name: row.task_name.clone(),
                params: row.params.clone(),
                headers: row.headers.clone(),
                attempt: row.attempt,
                max_attempts: row.max_attempts,
                retry_strategy: row.retry_strategy.clone(),
                cancellation: row.cancellation.clone(),
                parent_task_id: row.parent_task_id,
                created_at: row.created_at,
                first_started_at,
                now,
                checkpoints,
            });
        }
        Ok(ClaimBatch {
            runs,
            now,
            next_wake_at,
        })
    }

    /// `Store::expire_leases`: every running task of `queue` whose lease has expired gets a
    /// new attempt, or fails if it has none left. Returns how many were recovered.
    pub(super) fn expire_leases(&mut self, queue: &str, now: DateTime<Utc>) -> u64 {
        let mut recovered = 0;
        let expired: Vec<Uuid> = self
            .tasks
            .iter()
            .filter(|(_, row)| {
                row.queue == queue
                    && row.state == TaskStatus::Running
                    && row.lease_expires_at.is_some_and(|lease| lease <= now)
            })
            .map(|(id, _)| *id)
            .collect();
        // Parents before their subtasks (as the PostgreSQL stores): a parent's final failure
        // cancels a subtask whose lease expired with it, rather than racing its retry.
        let depth = |mut id: Uuid| {
            let mut depth = 0usize;
            while let Some(parent) = self.tasks.get(&id).and_then(|row| row.parent_task_id) {
                depth += 1;
                id = parent;
                if depth > self.tasks.len() {
                    break;
                }
            }
            depth
        };
        let mut expired: Vec<(usize, u64, Uuid)> = expired
            .into_iter()
            .map(|id| (depth(id), self.tasks.get(&id).map_or(0, |row| row.seq), id))
            .collect();
        expired.sort();
        for (_, _, task_id) in expired {
            // An earlier final failure in this loop may have cancelled this task (a descendant):
            // a cancelled task stays cancelled.
            let Some(row) = self
                .tasks
                .get_mut(&task_id)
                .filter(|row| row.state == TaskStatus::Running)
            else {
                continue;
            };
            let error = TaskErrorInfo::new(
                FailureKind::LeaseExpired,
                format!(
                    "the lease of run {} (worker {}) expired before it finished",
                    row.run_id,
                    row.claimed_by.as_deref().unwrap_or("unknown")
                ),
            );
            recovered += 1;
            row.last_error = Some(error.clone());
            row.end_run(RunOutcome::LeaseExpired, now, None);
            row.claimed_by = None;
            row.lease_expires_at = None;
            if row.attempt >= row.max_attempts {
                row.state = TaskStatus::Failed;
                self.on_terminal(task_id, ChildOutcome::Failed { error }, now);
            } else {
                row.attempt += 1;
                row.run_id = Uuid::now_v7();
                row.state = TaskStatus::Pending;
                row.available_at = Some(now);
            }
        }
        recovered
    }
}
