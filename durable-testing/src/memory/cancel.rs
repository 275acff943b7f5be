//! What a client does to a task from outside it: cancel it with its descendants, or retry it
//! after it failed.

use chrono::{DateTime, Utc};
use durable_core::inspect::RunOutcome;
use durable_core::model::ChildOutcome;
use durable_core::{SpawnResult, StoreError, TaskStatus};
use uuid::Uuid;

use super::state::{State, TaskRow};

impl State {
    /// `Store::cancel_task`: returns `false` if the task had already ended.
    pub(super) fn cancel(
        &mut self,
        queue: &str,
        task_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let row = self.task_in(queue, task_id)?;
        if row.state.is_terminal() {
            return Ok(false);
        }
        cancel_row(row, now);
        self.waits.retain(|(id, _), _| *id != task_id);
        self.on_terminal(task_id, ChildOutcome::Cancelled, now);
        Ok(true)
    }

    /// Cancels every descendant of a task that has not ended.
    pub(super) fn cancel_descendants(&mut self, task_id: Uuid, now: DateTime<Utc>) {
        let mut frontier = vec![task_id];
        while let Some(parent) = frontier.pop() {
            let children: Vec<Uuid> = self
                .tasks
                .iter()
                .filter(|(_, row)| row.parent_task_id == Some(parent))
                .map(|(id, _)| *id)
                .collect();
            for child in children {
                if let Some(row) = self.tasks.get_mut(&child)
                    && !row.state.is_terminal()
                {
                    cancel_row(row, now);
                    row.finished_at = Some(now);
                    self.finish.bump_and_forget(&child.to_string());
                    self.waits.retain(|(id, _), _| *id != child);
                }
                frontier.push(child);
            }
        }
    }

    /// `Store::retry_task`: a failed task runs again as a new attempt, now.
    pub(super) fn retry(
        &mut self,
        queue: &str,
        task_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<SpawnResult, StoreError> {
        let row = self.task_in(queue, task_id)?;
        if row.state != TaskStatus::Failed {
            return Err(StoreError::conflict(format!(
                "task {task_id} is {}, only a failed task can be retried",
                row.state.as_str()
            )));
        }
        row.attempt += 1;
        row.max_attempts = row.max_attempts.max(row.attempt);
        row.run_id = Uuid::now_v7();
        row.state = TaskStatus::Pending;
        row.available_at = Some(now);
        row.finished_at = None;
        Ok(SpawnResult {
            task_id,
            run_id: row.run_id,
            attempt: row.attempt,
            created: false,
        })
    }

    /// The row of a task of `queue`, or not found.
    fn task_in(&mut self, queue: &str, task_id: Uuid) -> Result<&mut TaskRow, StoreError> {
        self.tasks
            .get_mut(&task_id)
            .filter(|row| row.queue == queue)
            .ok_or_else(|| StoreError::not_found(format!("task {task_id} in queue `{queue}`")))
    }
}

/// Moves a task to cancelled, releasing its lease and any wake-up time.
fn cancel_row(row: &mut TaskRow, now: DateTime<Utc>) {
    row.end_run(RunOutcome::Cancelled, now, None);
    row.state = TaskStatus::Cancelled;
    row.available_at = None;
    row.claimed_by = None;
    row.lease_expires_at = None;
}
