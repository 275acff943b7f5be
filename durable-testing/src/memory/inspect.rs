//! What tests and operators read: snapshots of tasks, a task's result, the depth of a queue and
//! the names its workers do not serve.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use durable_core::inspect::{
    CheckpointRecord, MAX_RUNS, MAX_SUBTASKS, RunOutcome, RunRecord, TaskDetail, TaskPage,
    TaskQuery, TaskSummary, WaitRecord, json_size,
};
use durable_core::store::{QueueDepth, UnservedName};
use durable_core::{StoreError, TaskErrorInfo, TaskPollResult, TaskStatus};
use serde_json::Value;
use uuid::Uuid;

use super::state::{State, TaskRow};

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

impl State {
    /// A task in a list.
    fn summary(&self, task_id: Uuid, row: &TaskRow) -> TaskSummary {
        TaskSummary {
            task_id,
            queue: row.queue.clone(),
            task_name: row.task_name.clone(),
            state: row.state,
            attempt: row.attempt,
            max_attempts: row.max_attempts,
            parent_task_id: row.parent_task_id,
            idempotency_key: row.idempotency_key.clone(),
            created_at: row.created_at,
            finished_at: row.finished_at,
            last_error: row.last_error.clone(),
        }
    }

    /// `Store::list_tasks`, as the PostgreSQL stores answer it.
    pub(super) fn list_tasks(
        &self,
        query: &TaskQuery,
        now: DateTime<Utc>,
    ) -> Result<TaskPage, StoreError> {
        let before_now = |d: Option<std::time::Duration>, what: &str| {
            d.map(|d| {
                let d =
                    durable_core::policy::checked_duration(what, d).map_err(StoreError::invalid)?;
                Ok::<_, StoreError>(
                    now.checked_sub_signed(d)
                        .unwrap_or(DateTime::<Utc>::MIN_UTC),
                )
            })
            .transpose()
        };
        let oldest_allowed = before_now(query.newer_than, "newer_than")?;
        let newest_allowed = before_now(query.older_than, "older_than")?;
        let patch = query
            .old_path_of_patch
            .as_ref()
            .map(|id| format!("{}patch:{id}", durable_core::policy::RESERVED_PREFIX));
        let mut ids: Vec<Uuid> = self
            .tasks
            .iter()
            .filter(|(id, row)| {
                query.queue.as_ref().is_none_or(|q| &row.queue == q)
                    && (query.states.is_empty() || query.states.contains(&row.state))
                    && query.task_name.as_ref().is_none_or(|n| &row.task_name == n)
                    && newest_allowed.is_none_or(|at| row.created_at <= at)
                    && oldest_allowed.is_none_or(|at| row.created_at > at)
                    && query
                        .parent_task_id
                        .is_none_or(|p| row.parent_task_id == Some(p))
                    && query
                        .idempotency_key
                        .as_ref()
                        .is_none_or(|k| row.idempotency_key.as_ref() == Some(k))
                    && patch.as_ref().is_none_or(|name| {
                        !row.state.is_terminal()
                            && self.checkpoint(**id, name) == Some(Value::Bool(false))
                    })
                    && query.after.is_none_or(|after| **id < after)
            })
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        let size = query.page_size();
        let more = ids.len() > size;
        ids.truncate(size);
        let tasks: Vec<TaskSummary> = ids
            .iter()
            .filter_map(|id| self.tasks.get(id).map(|row| self.summary(*id, row)))
            .collect();
        let next = if more {
            tasks.last().map(|t| t.task_id)
        } else {
            None
        };
        Ok(TaskPage { tasks, next, now })
    }

    /// `Store::inspect_task`, as the PostgreSQL stores answer it.
    pub(super) fn inspect_task(&self, task_id: Uuid, now: DateTime<Utc>) -> Option<TaskDetail> {
        let row = self.tasks.get(&task_id)?;
        let mut runs = row.runs.clone();
        if row.state == TaskStatus::Running {
            runs.push(RunRecord {
                attempt: row.attempt,
                run_id: row.run_id,
                worker_id: row.claimed_by.clone(),
                claimed_at: row.claimed_at,
                ended_at: None,
                outcome: RunOutcome::Running,
                error: None,
                waiting_for: None,
            });
        }
        let excess = runs.len().saturating_sub(MAX_RUNS);
        runs.drain(..excess);
        let mut checkpoints: Vec<(u64, CheckpointRecord)> = self
            .checkpoints
            .get(&task_id)
            .into_iter()
            .flatten()
            .map(|(name, value)| {
                let meta = self.checkpoint_meta.get(&(task_id, name.clone()));
                (
                    meta.map_or(0, |m| m.seq),
                    CheckpointRecord {
                        name: name.clone(),
                        value: value.clone(),
                        size_bytes: json_size(value),
                        run_id: meta.map_or(row.run_id, |m| m.run_id),
                        updated_at: meta.map_or(row.created_at, |m| m.updated_at),
                    },
                )
            })
            .collect();
        // In the order written (the virtual clock may not have moved between two writes).
        checkpoints.sort_by_key(|(seq, _)| *seq);
        let mut waits: Vec<WaitRecord> = self
            .waits
            .iter()
            .filter(|((id, _), _)| *id == task_id)
            .map(|((_, name), wait)| WaitRecord {
                name: name.clone(),
                event_name: wait.event_name.clone(),
                timeout_at: wait.timeout_at,
            })
            .collect();
        waits.sort_by(|a, b| a.name.cmp(&b.name));
        let mut subtasks = Vec::new();
        let mut frontier = vec![task_id];
        while let Some(parent) = frontier.pop() {
            for (id, child) in self
                .tasks
                .iter()
                .filter(|(_, r)| r.parent_task_id == Some(parent))
            {
                subtasks.push(self.summary(*id, child));
                frontier.push(*id);
            }
        }
        subtasks.sort_by_key(|s| s.task_id);
        subtasks.truncate(MAX_SUBTASKS);
        Some(TaskDetail {
            summary: self.summary(task_id, row),
            run_id: row.run_id,
            params: row.params.clone(),
            headers: row.headers.clone(),
            retry_strategy: row.retry_strategy.clone(),
            cancellation: row.cancellation.clone(),
            available_at: row.available_at,
            first_started_at: row.first_started_at,
            lease_expires_at: row.lease_expires_at,
            output: row.output.clone(),
            runs,
            checkpoints: checkpoints.into_iter().map(|(_, c)| c).collect(),
            waits,
            subtasks,
            now,
        })
    }
}
