//! How a run ends: completed, or failed with a retry or for good. A task that reaches a
//! terminal state releases whoever watches it, cancels its subtasks unless it completed, and
//! tells its parent by an event.

use chrono::{DateTime, Utc};
use durable_core::inspect::RunOutcome;
use durable_core::model::ChildOutcome;
use durable_core::store::{RunCompletion, RunRef, child_event_name};
use durable_core::{StoreError, TaskErrorInfo, TaskStatus};
use serde_json::Value;
use tokio::sync::watch;
use uuid::Uuid;

use super::state::State;

impl State {
    /// `Store::complete_run`, fenced: completes the task of `run` and tells its parent.
    /// Returns whether a parent was told (its queue then has work to announce).
    pub(super) fn complete(
        &mut self,
        run: &RunRef,
        output: Value,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let row = self.owned(run, now)?;
        row.end_run(RunOutcome::Completed, now, None);
        row.state = TaskStatus::Completed;
        row.claimed_by = None;
        row.lease_expires_at = None;
        if row.parent_task_id.is_none() {
            row.output = Some(output);
            row.finished_at = Some(now);
            self.finish.bump_and_forget(&run.task_id.to_string());
            return Ok(false);
        }
        row.output = Some(output.clone());
        self.on_terminal(run.task_id, ChildOutcome::Completed { output }, now);
        Ok(true)
    }

    /// `Store::complete_runs`: one result per run, in order. Also returns the queues of the
    /// parents told, each once.
    pub(super) fn complete_runs(
        &mut self,
        runs: Vec<RunCompletion>,
        now: DateTime<Utc>,
    ) -> (Vec<Result<(), StoreError>>, Vec<String>) {
        let mut woken: Vec<String> = Vec::new();
        let results = runs
            .into_iter()
            .map(|completion| {
                let told = self.complete(&completion.run, completion.output, now)?;
                if told && !woken.contains(&completion.run.queue) {
                    woken.push(completion.run.queue);
                }
                Ok(())
            })
            .collect();
        (results, woken)
    }

    /// `Store::fail_run`, fenced: records the error, then retries at `retry_at` as a new
    /// attempt, or fails the task for good if `None`.
    pub(super) fn fail(
        &mut self,
        run: &RunRef,
        error: TaskErrorInfo,
        retry_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let row = self.owned(run, now)?;
        row.last_error = Some(error.clone());
        let outcome = match retry_at {
            Some(_) => RunOutcome::Retried,
            None => RunOutcome::Failed,
        };
        row.end_run(outcome, now, None);
        row.claimed_by = None;
        row.lease_expires_at = None;
        match retry_at {
            Some(at) => {
                row.attempt += 1;
                row.run_id = Uuid::now_v7();
                row.state = TaskStatus::Pending;
                row.available_at = Some(at);
            }
            None => {
                row.state = TaskStatus::Failed;
                self.on_terminal(run.task_id, ChildOutcome::Failed { error }, now);
            }
        }
        Ok(())
    }

    /// `Store::watch_finish`: the signal bumped when the task ends, and its state now.
    pub(super) fn watch_finish(&self, task_id: Uuid) -> (watch::Receiver<u64>, Option<TaskStatus>) {
        let signal = self.finish.subscribe_pruning(&task_id.to_string());
        (signal, self.tasks.get(&task_id).map(|row| row.state))
    }

    /// What happens when a task reaches a terminal state: its subtasks are cancelled (unless it
    /// completed) and its parent hears of it.
    pub(super) fn on_terminal(&mut self, task_id: Uuid, outcome: ChildOutcome, now: DateTime<Utc>) {
        if let Some(row) = self.tasks.get_mut(&task_id) {
            row.finished_at = Some(now);
        }
        self.finish.bump_and_forget(&task_id.to_string());
        if !matches!(outcome, ChildOutcome::Completed { .. }) {
            self.cancel_descendants(task_id, now);
        }
        let Some(row) = self.tasks.get(&task_id) else {
            return;
        };
        if row.parent_task_id.is_some() {
            let queue = row.queue.clone();
            if let Ok(payload) = serde_json::to_value(&outcome) {
                self.emit(&queue, &child_event_name(task_id), payload, now);
            }
        }
    }
}
