//! The spawn and completion steps shared by the single and batch operations of
//! [`MemoryStore`]: a batch is the same steps under one lock, so it is atomic like the
//! PostgreSQL stores' one statement.

use chrono::{DateTime, Utc};
use durable_core::model::ChildOutcome;
use durable_core::policy;
use durable_core::store::{NewTask, RunCompletion, RunRef};
use durable_core::{SpawnResult, StoreError, TaskStatus};
use serde_json::Value;
use uuid::Uuid;

use super::{MemoryStore, State, TaskRow, after};

/// A spawn whose input has been checked: it cannot fail any more.
pub(super) struct CheckedSpawn {
    task: NewTask,
    available_at: DateTime<Utc>,
}

impl CheckedSpawn {
    /// The queue the task goes to.
    pub(super) fn queue(&self) -> &str {
        &self.task.queue
    }
}

/// Checks a spawn's input against the store's clock.
pub(super) fn check_spawn(task: NewTask, now: DateTime<Utc>) -> Result<CheckedSpawn, StoreError> {
    policy::validate_queue_name(&task.queue).map_err(StoreError::invalid)?;
    let available_at = match task.delay {
        Some(delay) => after(now, delay, "spawn delay")?,
        None => now,
    };
    Ok(CheckedSpawn { task, available_at })
}

impl State {
    /// Refuses a subtask whose parent does not exist or has ended: it would never be
    /// cancelled with its parent, nor joined.
    pub(super) fn check_parent(&self, spawn: &CheckedSpawn) -> Result<(), StoreError> {
        if let Some(parent) = spawn.task.parent_task_id {
            let parent_state = self.tasks.get(&parent).map(|row| row.state);
            if parent_state.is_none_or(TaskStatus::is_terminal) {
                return Err(StoreError::conflict(format!(
                    "parent task {parent} has ended ({}): it cannot spawn subtasks",
                    parent_state.map_or("not found", TaskStatus::as_str)
                )));
            }
        }
        Ok(())
    }

    /// Creates a checked task (its parent checked too), or returns the task that holds its
    /// idempotency key.
    pub(super) fn insert_task(&mut self, spawn: CheckedSpawn, now: DateTime<Utc>) -> SpawnResult {
        let CheckedSpawn { task, available_at } = spawn;
        if let Some(key) = &task.idempotency_key
            && let Some(existing) = self.idempotency.get(&(task.queue.clone(), key.clone()))
            && let Some(row) = self.tasks.get(existing)
        {
            return SpawnResult {
                task_id: *existing,
                run_id: row.run_id,
                attempt: row.attempt,
                created: false,
            };
        }
        let task_id = Uuid::now_v7();
        let run_id = Uuid::now_v7();
        self.next_seq += 1;
        let seq = self.next_seq;
        if let Some(key) = task.idempotency_key {
            self.idempotency.insert((task.queue.clone(), key), task_id);
        }
        if !self.queues.contains(&task.queue) {
            self.queues.insert(task.queue.clone());
        }
        self.tasks.insert(
            task_id,
            TaskRow {
                seq,
                queue: task.queue,
                task_name: task.task_name,
                params: task.params,
                headers: task.headers,
                max_attempts: task.max_attempts.max(1),
                retry_strategy: task.retry_strategy,
                cancellation: task.cancellation,
                parent_task_id: task.parent_task_id,
                state: TaskStatus::Pending,
                attempt: 1,
                run_id,
                available_at: Some(available_at),
                claimed_by: None,
                lease_expires_at: None,
                created_at: now,
                first_started_at: None,
                finished_at: None,
                output: None,
                last_error: None,
            },
        );
        SpawnResult {
            task_id,
            run_id,
            attempt: 1,
            created: true,
        }
    }

    /// Fenced: completes the task of `run` and tells its parent. Returns whether a parent
    /// was told (its queue then has work to announce).
    pub(super) fn complete(
        &mut self,
        run: &RunRef,
        output: Value,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let row = self.owned(run, now)?;
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
}

impl MemoryStore {
    /// [`Store::spawn_many`](durable_core::Store::spawn_many): every input is checked before
    /// anything is created, then all are created under one lock.
    pub(super) fn spawn_batch(&self, tasks: Vec<NewTask>) -> Result<Vec<SpawnResult>, StoreError> {
        let now = self.now();
        let checked = tasks
            .into_iter()
            .map(|task| check_spawn(task, now))
            .collect::<Result<Vec<_>, _>>()?;
        let mut queues: Vec<String> = Vec::new();
        let results = {
            let mut state = self.lock();
            for spawn in &checked {
                state.check_parent(spawn)?;
            }
            checked
                .into_iter()
                .map(|spawn| {
                    if !queues.contains(&spawn.task.queue) {
                        queues.push(spawn.task.queue.clone());
                    }
                    state.insert_task(spawn, now)
                })
                .collect()
        };
        for queue in queues {
            self.notify(&queue);
        }
        Ok(results)
    }

    /// [`Store::complete_runs`](durable_core::Store::complete_runs): one result per run, all
    /// under one lock.
    pub(super) fn complete_batch(&self, runs: Vec<RunCompletion>) -> Vec<Result<(), StoreError>> {
        let now = self.now();
        let mut woken: Vec<String> = Vec::new();
        let results = {
            let mut state = self.lock();
            runs.into_iter()
                .map(|completion| {
                    let told = state.complete(&completion.run, completion.output, now)?;
                    if told && !woken.contains(&completion.run.queue) {
                        woken.push(completion.run.queue);
                    }
                    Ok(())
                })
                .collect()
        };
        for queue in woken {
            self.notify(&queue);
        }
        results
    }
}
