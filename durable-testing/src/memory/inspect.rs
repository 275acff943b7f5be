//! What tests and operators read: snapshots of tasks, a task's result, the depth of a queue and
//! the names its workers do not serve.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use durable_core::store::{QueueDepth, UnservedName};
use durable_core::{TaskErrorInfo, TaskPollResult, TaskStatus};
use serde_json::Value;
use uuid::Uuid;

use super::state::State;

/// A read-only view of a stored task, for assertions in tests.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSnapshot {
    /// The task.
    pub task_id: Uuid,
    /// Its queue.
    pub queue: String,
    /// Its registered name.
    pub task_name: String,
    /// Its state.
    pub status: TaskStatus,
    /// The current attempt.
    pub attempt: u32,
    /// The current run.
    pub run_id: Uuid,
    /// Its parent, for subtasks.
    pub parent_task_id: Option<Uuid>,
    /// When it becomes claimable, if pending or sleeping on a time.
    pub available_at: Option<DateTime<Utc>>,
    /// Its output once completed.
    pub output: Option<Value>,
    /// The error of its last failed attempt.
    pub last_error: Option<TaskErrorInfo>,
    /// Its checkpoints, by name.
    pub checkpoints: HashMap<String, Value>,
}

impl State {
    /// A snapshot of one task, with its checkpoints.
    pub(super) fn snapshot(&self, task_id: Uuid) -> Option<TaskSnapshot> {
        let row = self.tasks.get(&task_id)?;
        Some(TaskSnapshot {
            task_id,
            queue: row.queue.clone(),
            task_name: row.task_name.clone(),
            status: row.state,
            attempt: row.attempt,
            run_id: row.run_id,
            parent_task_id: row.parent_task_id,
            available_at: row.available_at,
            output: row.output.clone(),
            last_error: row.last_error.clone(),
            checkpoints: self.checkpoints.get(&task_id).cloned().unwrap_or_default(),
        })
    }

    /// Snapshots of every task, oldest first.
    pub(super) fn snapshots(&self) -> Vec<TaskSnapshot> {
        let mut ids: Vec<(u64, Uuid)> = self.tasks.iter().map(|(id, row)| (row.seq, *id)).collect();
        ids.sort_unstable();
        ids.into_iter()
            .filter_map(|(_, id)| self.snapshot(id))
            .collect()
    }

    /// `Store::task_result`.
    pub(super) fn task_result(&self, task_id: Uuid) -> Option<TaskPollResult> {
        self.tasks.get(&task_id).map(|row| TaskPollResult {
            task_id,
            status: row.state,
            output: row.output.clone(),
            error: row.last_error.clone(),
        })
    }

    /// `Store::queue_depth`: the tasks of `queue` that have not ended, by state.
    pub(super) fn queue_depth(&self, queue: &str) -> QueueDepth {
        let mut depth = QueueDepth::default();
        for row in self.tasks.values().filter(|row| row.queue == queue) {
            match row.state {
                TaskStatus::Pending => depth.pending += 1,
                TaskStatus::Running => depth.running += 1,
                TaskStatus::Sleeping => depth.sleeping += 1,
                _ => {}
            }
        }
        depth
    }

    /// `Store::unserved_names`: among the `scan` oldest due tasks of `queue`, the names not in
    /// `registered`, most waiting first.
    pub(super) fn unserved_names(
        &self,
        queue: &str,
        registered: &[String],
        scan: usize,
        now: DateTime<Utc>,
    ) -> Vec<UnservedName> {
        let mut due: Vec<(DateTime<Utc>, u64, &str)> = self
            .tasks
            .values()
            .filter(|row| row.queue == queue && row.state == TaskStatus::Pending)
            .filter_map(|row| {
                let at = row.available_at.filter(|at| *at <= now)?;
                Some((at, row.seq, row.task_name.as_str()))
            })
            .collect();
        due.sort();
        due.truncate(scan);
        let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
        for (_, _, name) in due {
            if !registered.iter().any(|r| r == name) {
                *counts.entry(name).or_default() += 1;
            }
        }
        let mut names: Vec<UnservedName> = counts
            .into_iter()
            .map(|(name, waiting)| UnservedName {
                task_name: name.to_owned(),
                waiting,
            })
            .collect();
        names.sort_by(|a, b| {
            b.waiting
                .cmp(&a.waiting)
                .then(a.task_name.cmp(&b.task_name))
        });
        names
    }
}
