//! The [`Store`] implementation of [`MemoryStore`]: each method reads the clock, takes the
//! lock, calls one transition of [`State`](super::state::State), and wakes the queues that
//! have new work once the lock is released.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use durable_core::inspect::{TaskDetail, TaskPage, TaskQuery};
use durable_core::policy;
use durable_core::store::{
    AwaitOutcome, ClaimBatch, ClaimRequest, DueSchedules, NewTask, PurgeOutcome, QueueDepth,
    RunCompletion, RunRef, ScheduleAdvance, ScheduleRecord, ScheduleSpec, SleepOutcome,
    UnservedName, WakeAt,
};
use durable_core::{SpawnResult, Store, StoreError, TaskErrorInfo, TaskPollResult, TaskStatus};
use serde_json::Value;
use tokio::sync::watch;
use uuid::Uuid;

use super::MemoryStore;
use super::spawn::check_spawn;
use super::state::after;

#[async_trait]
impl Store for MemoryStore {
    async fn ensure_queue(&self, queue: &str) -> Result<(), StoreError> {
        policy::validate_queue_name(queue).map_err(StoreError::invalid)?;
        self.lock().queues.insert(queue.to_owned());
        Ok(())
    }

    async fn spawn(&self, task: NewTask) -> Result<SpawnResult, StoreError> {
        let now = self.now();
        let spawn = check_spawn(task, now)?;
        let queue = spawn.queue().to_owned();
        let result = self.lock().spawn(spawn, now)?;
        if result.created {
            self.notify(&queue);
        }
        Ok(result)
    }

    async fn spawn_many(&self, tasks: Vec<NewTask>) -> Result<Vec<SpawnResult>, StoreError> {
        let now = self.now();
        let spawns = tasks
            .into_iter()
            .map(|task| check_spawn(task, now))
            .collect::<Result<Vec<_>, _>>()?;
        let (results, queues) = self.lock().spawn_many(spawns, now)?;
        for queue in queues {
            self.notify(&queue);
        }
        Ok(results)
    }

    async fn claim(&self, request: ClaimRequest) -> Result<ClaimBatch, StoreError> {
        let now = self.now();
        self.lock().claim(request, now)
    }

    async fn expire_leases(&self, queue: &str) -> Result<u64, StoreError> {
        let now = self.now();
        let recovered = self.lock().expire_leases(queue, now);
        if recovered > 0 {
            self.notify(queue);
        }
        Ok(recovered)
    }

    async fn write_checkpoint(
        &self,
        run: &RunRef,
        name: &str,
        value: Value,
        lease: Duration,
    ) -> Result<(), StoreError> {
        let now = self.now();
        self.lock().write_checkpoint(run, name, value, lease, now)
    }

    async fn extend_lease(&self, run: &RunRef, lease: Duration) -> Result<(), StoreError> {
        let now = self.now();
        self.lock().extend_lease(run, lease, now)
    }

    async fn sleep(
        &self,
        run: &RunRef,
        name: &str,
        wake: WakeAt,
        lease: Duration,
    ) -> Result<SleepOutcome, StoreError> {
        let now = self.now();
        self.lock().sleep(run, name, wake, lease, now)
    }

    async fn await_event(
        &self,
        run: &RunRef,
        name: &str,
        event_name: &str,
        timeout: Option<Duration>,
        lease: Duration,
    ) -> Result<AwaitOutcome, StoreError> {
        let now = self.now();
        self.lock()
            .await_event(run, name, event_name, timeout, lease, now)
    }

    async fn emit_event(
        &self,
        queue: &str,
        name: &str,
        payload: Value,
    ) -> Result<bool, StoreError> {
        policy::validate_queue_name(queue).map_err(StoreError::invalid)?;
        let now = self.now();
        let first = self.lock().emit(queue, name, payload, now);
        if first {
            self.notify(queue);
        }
        Ok(first)
    }

    async fn complete_run(&self, run: &RunRef, output: Value) -> Result<(), StoreError> {
        let now = self.now();
        let told_parent = self.lock().complete(run, output, now)?;
        if told_parent {
            self.notify(&run.queue);
        }
        Ok(())
    }

    async fn complete_runs(
        &self,
        runs: Vec<RunCompletion>,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let now = self.now();
        let (results, woken) = self.lock().complete_runs(runs, now);
        for queue in woken {
            self.notify(&queue);
        }
        Ok(results)
    }

    async fn fail_run(
        &self,
        run: &RunRef,
        error: TaskErrorInfo,
        retry_after: Option<Duration>,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let retry_at = retry_after
            .map(|d| after(now, d, "retry delay"))
            .transpose()?;
        self.lock().fail(run, error, retry_at, now)?;
        self.notify(&run.queue);
        Ok(())
    }

    async fn cancel_task(&self, queue: &str, task_id: Uuid) -> Result<bool, StoreError> {
        let now = self.now();
        let cancelled = self.lock().cancel(queue, task_id, now)?;
        if cancelled {
            self.notify(queue);
        }
        Ok(cancelled)
    }

    async fn retry_task(&self, queue: &str, task_id: Uuid) -> Result<SpawnResult, StoreError> {
        let now = self.now();
        let result = self.lock().retry(queue, task_id, now)?;
        self.notify(queue);
        Ok(result)
    }

    async fn task_result(&self, task_id: Uuid) -> Result<Option<TaskPollResult>, StoreError> {
        Ok(self.lock().task_result(task_id))
    }

    async fn list_tasks(&self, query: &TaskQuery) -> Result<TaskPage, StoreError> {
        let now = self.now();
        self.lock().list_tasks(query, now)
    }

    async fn inspect_task(&self, task_id: Uuid) -> Result<Option<TaskDetail>, StoreError> {
        let now = self.now();
        Ok(self.lock().inspect_task(task_id, now))
    }

    fn work_signal(&self, queue: &str) -> watch::Receiver<u64> {
        self.inner.signals.subscribe(queue)
    }

    async fn purge_finished(
        &self,
        queue: &str,
        older_than: Duration,
        limit: usize,
    ) -> Result<PurgeOutcome, StoreError> {
        let now = self.now();
        self.lock().purge_finished(queue, older_than, limit, now)
    }

    async fn queue_depth(&self, queue: &str) -> Result<QueueDepth, StoreError> {
        Ok(self.lock().queue_depth(queue))
    }

    async fn unserved_names(
        &self,
        queue: &str,
        registered: &[String],
        scan: usize,
    ) -> Result<Vec<UnservedName>, StoreError> {
        let now = self.now();
        Ok(self.lock().unserved_names(queue, registered, scan, now))
    }

    async fn upsert_schedule(&self, spec: ScheduleSpec) -> Result<bool, StoreError> {
        let now = self.now();
        Ok(self.lock().upsert_schedule(spec, now))
    }

    async fn list_schedules(&self, queue: Option<&str>) -> Result<Vec<ScheduleRecord>, StoreError> {
        Ok(self.lock().list_schedules(queue))
    }

    async fn delete_schedule(&self, queue: &str, name: &str) -> Result<bool, StoreError> {
        Ok(self.lock().delete_schedule(queue, name))
    }

    async fn due_schedules(&self, queue: &str, limit: usize) -> Result<DueSchedules, StoreError> {
        let now = self.now();
        Ok(self.lock().due_schedules(queue, limit, now))
    }

    async fn advance_schedule(
        &self,
        queue: &str,
        name: &str,
        expected: Option<DateTime<Utc>>,
        next: Option<DateTime<Utc>>,
        fire: bool,
    ) -> Result<ScheduleAdvance, StoreError> {
        let now = self.now();
        let advance = self
            .lock()
            .advance_schedule(queue, name, expected, next, fire, now)?;
        if matches!(advance, ScheduleAdvance::Fired(ref spawned) if spawned.created) {
            self.notify(queue);
        }
        Ok(advance)
    }

    async fn watch_finish(
        &self,
        task_id: Uuid,
    ) -> Result<(watch::Receiver<u64>, Option<TaskStatus>), StoreError> {
        Ok(self.lock().watch_finish(task_id))
    }
}
