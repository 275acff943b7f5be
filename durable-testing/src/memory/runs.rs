//! The fenced calls of a running task: checkpoints, lease extensions, sleeps and awaits. Each
//! succeeds only while the run owns its task, and extends its lease when it does.

use std::time::Duration;

use chrono::{DateTime, Utc};
use durable_core::model::{AwaitCheckpoint, SleepCheckpoint};
use durable_core::store::{AwaitOutcome, RunRef, SleepOutcome, WakeAt};
use durable_core::{StoreError, TaskStatus};
use serde_json::Value;

use durable_core::inspect::RunOutcome;

use super::state::{State, TaskRow, Wait, after, to_value, waiting_for};

impl State {
    /// `Store::write_checkpoint`.
    pub(super) fn write_checkpoint(
        &mut self,
        run: &RunRef,
        name: &str,
        value: Value,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let lease_until = after(now, lease, "lease")?;
        self.owned(run, now)?.lease_expires_at = Some(lease_until);
        self.put_checkpoint(run, name, value, now);
        Ok(())
    }

    /// `Store::extend_lease`.
    pub(super) fn extend_lease(
        &mut self,
        run: &RunRef,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let lease_until = after(now, lease, "lease")?;
        self.owned(run, now)?.lease_expires_at = Some(lease_until);
        Ok(())
    }

    /// `Store::sleep`: the wake-up time is checkpointed on the first call, so a resumed run
    /// sleeps until the same moment.
    pub(super) fn sleep(
        &mut self,
        run: &RunRef,
        name: &str,
        wake: WakeAt,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<SleepOutcome, StoreError> {
        let lease_until = after(now, lease, "lease")?;
        self.owned(run, now)?;
        let wake_at = match self.checkpoint(run.task_id, name) {
            Some(value) => {
                serde_json::from_value::<SleepCheckpoint>(value)
                    .map_err(|e| {
                        StoreError::invalid(format!("checkpoint `{name}` is not a sleep: {e}"))
                    })?
                    .wake_at
            }
            None => {
                let wake_at = match wake {
                    WakeAt::After(d) => after(now, d, "sleep")?,
                    WakeAt::At(at) => at,
                };
                let value = to_value(&SleepCheckpoint { wake_at })?;
                self.put_checkpoint(run, name, value, now);
                wake_at
            }
        };
        let row = self.owned(run, now)?;
        if wake_at <= now {
            row.lease_expires_at = Some(lease_until);
            return Ok(SleepOutcome::Elapsed);
        }
        suspend(row, Some(wake_at), None, now);
        Ok(SleepOutcome::Suspended { wake_at })
    }

    /// `Store::await_event`: the event if emitted (or the recorded outcome of an earlier
    /// call), a timeout if due, else the task sleeps on a [`Wait`] until an emit or its
    /// timeout.
    pub(super) fn await_event(
        &mut self,
        run: &RunRef,
        name: &str,
        event_name: &str,
        timeout: Option<Duration>,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<AwaitOutcome, StoreError> {
        let lease_until = after(now, lease, "lease")?;
        self.owned(run, now)?;
        let resolved = |state: &mut State, checkpoint: AwaitCheckpoint| {
            let value = to_value(&checkpoint)?;
            state.put_checkpoint(run, name, value, now);
            state.waits.remove(&(run.task_id, name.to_owned()));
            state.owned(run, now)?.lease_expires_at = Some(lease_until);
            Ok::<_, StoreError>(match checkpoint {
                AwaitCheckpoint::Received { payload } => AwaitOutcome::Received(payload),
                AwaitCheckpoint::TimedOut => AwaitOutcome::TimedOut,
            })
        };
        if let Some(value) = self.checkpoint(run.task_id, name) {
            let checkpoint: AwaitCheckpoint = serde_json::from_value(value).map_err(|e| {
                StoreError::invalid(format!("checkpoint `{name}` is not an await: {e}"))
            })?;
            return resolved(self, checkpoint);
        }
        if let Some(payload) = self
            .events
            .get(&(run.queue.clone(), event_name.to_owned()))
            .cloned()
        {
            return resolved(self, AwaitCheckpoint::Received { payload });
        }
        let key = (run.task_id, name.to_owned());
        let timeout_at = match self.waits.get(&key) {
            Some(wait) => wait.timeout_at,
            None => {
                let timeout_at = timeout
                    .map(|t| after(now, t, "event timeout"))
                    .transpose()?;
                self.waits.insert(
                    key,
                    Wait {
                        queue: run.queue.clone(),
                        event_name: event_name.to_owned(),
                        timeout_at,
                    },
                );
                timeout_at
            }
        };
        if timeout_at.is_some_and(|at| at <= now) {
            return resolved(self, AwaitCheckpoint::TimedOut);
        }
        suspend(self.owned(run, now)?, timeout_at, Some(event_name), now);
        Ok(AwaitOutcome::Suspended)
    }
}

/// Puts a running task to sleep until `until` (or until woken, if `None`, by `event`),
/// releasing its lease.
fn suspend(
    row: &mut TaskRow,
    until: Option<DateTime<Utc>>,
    event: Option<&str>,
    now: DateTime<Utc>,
) {
    row.end_run(RunOutcome::Suspended, now, waiting_for(event, until));
    row.state = TaskStatus::Sleeping;
    row.available_at = until;
    row.claimed_by = None;
    row.lease_expires_at = None;
}
