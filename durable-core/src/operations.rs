//! Client operations for running `durable` in production: schedules, retention and waiting for
//! a task's result from outside it.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::time::Instant;
use uuid::Uuid;

use crate::client::Durable;
use crate::cron::CronSchedule;
use crate::error::{DurableError, DurableResult, StoreError};
use crate::inspect::{TaskDetail, TaskPage, TaskQuery};
use crate::maintenance::{self, ScheduleTick};
use crate::model::TaskStatus;
use crate::options::SpawnOptions;
use crate::policy;
use crate::store::{PurgeOutcome, ScheduleRecord, ScheduleSpec, Store};
use crate::task::{Task, params_value};

/// The batch size of [`Durable::purge_finished`].
const PURGE_BATCH: usize = 1_000;

/// The longest pause between two reads of a task's state while waiting for its result, when no
/// notification comes (a store without notifications, a listener reconnecting).
const MAX_RESULT_POLL: Duration = Duration::from_secs(1);
const MIN_RESULT_POLL: Duration = Duration::from_millis(20);

impl<S: Store> Durable<S> {
    /// Creates schedule `name` in the client's queue, or replaces the schedule of that name:
    /// a task `T` with `params` is spawned at every tick of `cron` (see
    /// [`CronSchedule`] for the syntax; times are UTC). Returns whether the schedule was
    /// created (`false`: an existing one was updated; it then starts again from its new cron).
    ///
    /// Any running worker of the queue fires it (unless started with
    /// [`WorkerOptions::schedule_interval`](crate::WorkerOptions::schedule_interval) `None`),
    /// once per tick however many workers run. Ticks missed while no worker ran collapse into
    /// one spawn. Each spawned task carries the headers `durable.schedule` (the schedule's name)
    /// and `durable.scheduled_at` (the tick, RFC 3339).
    pub async fn create_schedule<T: Task>(
        &self,
        name: &str,
        cron: &str,
        params: T::Params,
    ) -> DurableResult<bool> {
        self.create_schedule_with_options::<T>(name, cron, params, SpawnOptions::default())
            .await
    }

    /// [`Durable::create_schedule`] with spawn options for every task it spawns (attempts,
    /// retries, headers, cancellation; `queue` sets the schedule's queue). A schedule's tasks
    /// take no idempotency key (each tick has its own) and no delay.
    pub async fn create_schedule_with_options<T: Task>(
        &self,
        name: &str,
        cron: &str,
        params: T::Params,
        options: SpawnOptions,
    ) -> DurableResult<bool> {
        let params = params_value::<T>(&params)?;
        let spec = self.schedule_spec(name, cron, T::NAME, params, options)?;
        Ok(self.store().upsert_schedule(spec).await?)
    }

    /// [`Durable::create_schedule_with_options`] by task name with JSON params, for tools that
    /// do not know the task's type. If the client has the task registered, the params are
    /// checked against its `Params`; an unregistered name is taken as is (an admin tool
    /// registers nothing).
    pub async fn create_schedule_by_name(
        &self,
        name: &str,
        cron: &str,
        task_name: &str,
        params: Value,
        options: SpawnOptions,
    ) -> DurableResult<bool> {
        // An unregistered name is taken as is.
        self.inner.registry.check_params(task_name, &params)?;
        let spec = self.schedule_spec(name, cron, task_name, params, options)?;
        Ok(self.store().upsert_schedule(spec).await?)
    }

    fn schedule_spec(
        &self,
        name: &str,
        cron: &str,
        task_name: &str,
        params: Value,
        options: SpawnOptions,
    ) -> DurableResult<ScheduleSpec> {
        policy::validate_name("schedule", name)
            .map_err(|r| DurableError::invalid("schedule name", r))?;
        let parsed = CronSchedule::parse(cron)
            .map_err(|e| DurableError::invalid("cron expression", format!("`{cron}`: {e}")))?;
        if parsed.next_after(chrono::Utc::now()).is_none() {
            return Err(DurableError::invalid(
                "cron expression",
                format!("`{cron}` matches no time in the next years"),
            ));
        }
        if options.idempotency_key.is_some() {
            return Err(DurableError::invalid(
                "schedule options",
                "a schedule gives each tick's task its own idempotency key; set none",
            ));
        }
        if options.delay.is_some() {
            return Err(DurableError::invalid(
                "schedule options",
                "a schedule spawns at its ticks; a delay is not allowed",
            ));
        }
        let task = self
            .defaults()
            .new_task(self.queue_name(), task_name, params, options)?;
        Ok(ScheduleSpec {
            queue: task.queue,
            name: name.to_owned(),
            cron: parsed.to_string(),
            task_name: task.task_name,
            params: task.params,
            headers: task.headers,
            max_attempts: task.max_attempts,
            retry_strategy: task.retry_strategy,
            cancellation: task.cancellation,
        })
    }

    /// The schedules of `queue` (default: the client's queue), by name.
    pub async fn list_schedules(&self, queue: Option<&str>) -> DurableResult<Vec<ScheduleRecord>> {
        let queue = self.resolve_queue(queue)?;
        Ok(self.store().list_schedules(Some(&queue)).await?)
    }

    /// The schedules of every queue, by queue and name.
    pub async fn list_all_schedules(&self) -> DurableResult<Vec<ScheduleRecord>> {
        Ok(self.store().list_schedules(None).await?)
    }

    /// Deletes schedule `name` of `queue` (default: the client's queue). Returns whether it
    /// existed. Tasks it already spawned are left alone.
    pub async fn delete_schedule(&self, name: &str, queue: Option<&str>) -> DurableResult<bool> {
        let queue = self.resolve_queue(queue)?;
        Ok(self.store().delete_schedule(&queue, name).await?)
    }

    /// Fires the due schedules of the client's queue once, now, and arms new ones: what a
    /// worker does every [`WorkerOptions::schedule_interval`](crate::WorkerOptions::schedule_interval).
    /// For tests and for deployments that fire schedules from a job of their own.
    pub async fn run_due_schedules(&self) -> DurableResult<ScheduleTick> {
        Ok(maintenance::fire_due_schedules(self.store().as_ref(), self.queue_name()).await?)
    }

    /// Retention, on demand: deletes the finished tasks (completed, failed, cancelled) of
    /// `queue` (default: the client's queue) that ended at least `older_than` ago, in batches of
    /// 1,000 (one short transaction each, skipping rows that other work holds), until none is
    /// left. A worker does the same at an interval when started with
    /// [`WorkerOptions::retention`](crate::WorkerOptions::retention).
    ///
    /// Deleted with a task: its checkpoints, its waits, and the event that announced its end to
    /// its parent. A subtask goes only once its parent is gone (trees go from the root down),
    /// so a parent never loses the outcome of a child it may still join. Also deleted: events
    /// of the queue emitted at least `older_than` ago, so an await that starts later than that
    /// after an emit no longer sees it. Returns what was deleted.
    pub async fn purge_finished(
        &self,
        older_than: Duration,
        queue: Option<&str>,
    ) -> DurableResult<PurgeOutcome> {
        let queue = self.resolve_queue(queue)?;
        policy::checked_duration("retention age", older_than)
            .map_err(|r| DurableError::invalid("retention age", r))?;
        Ok(maintenance::purge(
            self.store().as_ref(),
            &queue,
            older_than,
            PURGE_BATCH,
            usize::MAX,
        )
        .await?)
    }

    /// Waits until task `task_id` ends, at most `timeout`, and returns its output as `T`.
    ///
    /// Woken by the store's notification of the task's end (LISTEN/NOTIFY on PostgreSQL: only
    /// tasks someone waits for notify, so completions of other tasks cost nothing more), with a
    /// read of the task's state at least every second in case a notification is missed.
    ///
    /// Errors: [`DurableError::TaskFailed`] and [`DurableError::TaskCancelled`] when the task
    /// ended without output, [`DurableError::WaitTimedOut`] when it is still running after
    /// `timeout`, [`StoreError::NotFound`] when there is no such task, and
    /// [`DurableError::Serialization`] when the output does not read as `T`.
    pub async fn wait_for_result<T: DeserializeOwned>(
        &self,
        task_id: Uuid,
        timeout: Duration,
    ) -> DurableResult<T> {
        let deadline = Instant::now() + timeout.min(policy::MAX_DURATION);
        let (mut signal, state) = self.store().watch_finish(task_id).await?;
        let not_found = || StoreError::NotFound {
            what: format!("task {task_id}"),
        };
        let mut state = state.ok_or_else(not_found)?;
        let mut pause = MIN_RESULT_POLL;
        loop {
            if state.is_terminal() {
                let result = self
                    .store()
                    .task_result(task_id)
                    .await?
                    .ok_or_else(not_found)?;
                match result.status {
                    TaskStatus::Completed => {
                        let output = result.output.unwrap_or(Value::Null);
                        return serde_json::from_value(output).map_err(|source| {
                            DurableError::Serialization {
                                what: format!("output of task {task_id}"),
                                source,
                            }
                        });
                    }
                    TaskStatus::Failed => {
                        return Err(DurableError::TaskFailed {
                            task_id,
                            error: result.error,
                        });
                    }
                    TaskStatus::Cancelled => return Err(DurableError::TaskCancelled { task_id }),
                    // Retried between the two reads: wait again.
                    other => state = other,
                }
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(DurableError::WaitTimedOut { task_id, timeout });
            }
            let wake = deadline.min(now + pause);
            tokio::select! {
                changed = signal.changed() => {
                    if changed.is_err() {
                        // The store cannot notify: poll.
                        tokio::time::sleep_until(wake).await;
                        pause = (pause * 2).min(MAX_RESULT_POLL);
                    }
                }
                _ = tokio::time::sleep_until(wake) => pause = (pause * 2).min(MAX_RESULT_POLL),
            }
            state = self
                .store()
                .task_result(task_id)
                .await?
                .ok_or_else(not_found)?
                .status;
        }
    }
}

/// Seeing what happened: lists of tasks and everything about one task.
impl<S: Store> Durable<S> {
    /// Lists tasks as `query` says, newest first, one page at a time: filters by queue, state,
    /// task name, age, parent, idempotency key, and the old path of a patch gate (see
    /// [`TaskQuery`]). Pass a page's `next` as the next query's `after` for the page after it.
    pub async fn list_tasks(&self, query: &TaskQuery) -> DurableResult<TaskPage> {
        if let Some(queue) = &query.queue {
            policy::validate_queue_name(queue)
                .map_err(|r| DurableError::invalid("queue name", r))?;
        }
        Ok(self.inner.store.list_tasks(query).await?)
    }

    /// Everything about a task: params, headers, state, output or error, its runs (attempt,
    /// run id, worker, claimed and ended times, outcome, error, what it waited for), its
    /// checkpoints with their sizes, the events it awaits and its subtasks. `None` if there is
    /// no such task.
    pub async fn inspect_task(&self, task_id: Uuid) -> DurableResult<Option<TaskDetail>> {
        Ok(self.inner.store.inspect_task(task_id).await?)
    }

    /// A task's recorded history as JSON (its [`TaskDetail`]): what `durable tasks export`
    /// prints, and what the replay check of `durable-testing` reads back to run a task's
    /// history against new code. `None` if there is no such task.
    pub async fn export_task(&self, task_id: Uuid) -> DurableResult<Option<Value>> {
        let Some(detail) = self.inspect_task(task_id).await? else {
            return Ok(None);
        };
        serde_json::to_value(&detail)
            .map(Some)
            .map_err(|source| DurableError::Serialization {
                what: format!("the history of task {task_id}"),
                source,
            })
    }
}
