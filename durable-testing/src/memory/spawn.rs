//! Spawning tasks, one or a batch: the batch is the same steps under the one lock, so it is
//! atomic like the PostgreSQL stores' one statement.

use chrono::{DateTime, Utc};
use durable_core::policy;
use durable_core::store::NewTask;
use durable_core::{SpawnResult, StoreError, TaskStatus};
use uuid::Uuid;

use super::state::{State, TaskRow, after};

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
    /// `Store::spawn`: creates the task, or returns the task that holds its idempotency key.
    pub(super) fn spawn(
        &mut self,
        spawn: CheckedSpawn,
        now: DateTime<Utc>,
    ) -> Result<SpawnResult, StoreError> {
        self.check_parent(&spawn)?;
        Ok(self.insert_task(spawn, now))
    }

    /// `Store::spawn_many`: every spawn and every parent is checked before anything is
    /// created. Returns the results in order and the queues spawned into, each once.
    pub(super) fn spawn_many(
        &mut self,
        spawns: Vec<CheckedSpawn>,
        now: DateTime<Utc>,
    ) -> Result<(Vec<SpawnResult>, Vec<String>), StoreError> {
        for spawn in &spawns {
            self.check_parent(spawn)?;
        }
        let mut queues: Vec<String> = Vec::new();
        let results = spawns
            .into_iter()
            .map(|spawn| {
                if !queues.contains(&spawn.task.queue) {
                    queues.push(spawn.task.queue.clone());
                }
                self.insert_task(spawn, now)
            })
            .collect();
        Ok((results, queues))
    }

    /// Refuses a subtask whose parent does not exist or has ended: it would never be
    /// cancelled with its parent, nor joined.
    fn check_parent(&self, spawn: &CheckedSpawn) -> Result<(), StoreError> {
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
        if let Some(key) = &task.idempotency_key {
            self.idempotency
                .insert((task.queue.clone(), key.clone()), task_id);
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
                idempotency_key: task.idempotency_key,
                claimed_at: None,
                runs: Vec::new(),
            },
        );
        SpawnResult {
            task_id,
            run_id,
            attempt: 1,
            created: true,
        }
    }
}
