//! Retention: deleting the tasks that ended long enough ago, and old events, with the
//! semantics of the PostgreSQL stores' `purge_finished`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use durable_core::StoreError;
use durable_core::policy;
use durable_core::store::{CHILD_EVENT_PREFIX, PurgeOutcome, child_event_name};
use uuid::Uuid;

use super::state::State;

impl State {
    /// `Store::purge_finished`: one batch of at most `limit` tasks that ended `older_than` ago
    /// or earlier, and as many events.
    pub(super) fn purge_finished(
        &mut self,
        queue: &str,
        older_than: Duration,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<PurgeOutcome, StoreError> {
        if limit == 0 {
            return Err(StoreError::invalid(
                "retention batch size must be at least 1",
            ));
        }
        let d =
            policy::checked_duration("retention age", older_than).map_err(StoreError::invalid)?;
        let cutoff = now
            .checked_sub_signed(d)
            .ok_or_else(|| StoreError::invalid("retention age reaches before the start of time"))?;
        Ok(self.purge(queue, cutoff, limit))
    }

    /// One retention batch up to `cutoff`.
    fn purge(&mut self, queue: &str, cutoff: DateTime<Utc>, limit: usize) -> PurgeOutcome {
        let mut ended: Vec<(DateTime<Utc>, Uuid)> = self
            .tasks
            .iter()
            .filter(|(_, row)| {
                row.queue == queue
                    && row.state.is_terminal()
                    && row.finished_at.is_some_and(|at| at <= cutoff)
                    && row
                        .parent_task_id
                        .is_none_or(|parent| !self.tasks.contains_key(&parent))
            })
            .filter_map(|(id, row)| row.finished_at.map(|at| (at, *id)))
            .collect();
        ended.sort();
        ended.truncate(limit);
        let mut outcome = PurgeOutcome {
            more: ended.len() >= limit,
            ..PurgeOutcome::default()
        };
        for (_, task_id) in &ended {
            self.tasks.remove(task_id);
            self.checkpoints.remove(task_id);
            outcome.tasks += 1;
            let key = (queue.to_owned(), child_event_name(*task_id));
            if self.events.remove(&key).is_some() {
                outcome.events += 1;
            }
            self.event_times.remove(&key);
        }
        if !ended.is_empty() {
            self.waits
                .retain(|(task_id, _), _| self.tasks.contains_key(task_id));
            let tasks = &self.tasks;
            self.idempotency
                .retain(|_, task_id| tasks.contains_key(task_id));
        }
        let mut old_events: Vec<(DateTime<Utc>, (String, String))> = self
            .event_times
            .iter()
            .filter(|((q, name), at)| {
                q == queue && **at <= cutoff && !name.starts_with(CHILD_EVENT_PREFIX)
            })
            .map(|(key, at)| (*at, key.clone()))
            .collect();
        old_events.sort();
        old_events.truncate(limit);
        outcome.more |= old_events.len() >= limit;
        for (_, key) in old_events {
            self.event_times.remove(&key);
            if self.events.remove(&key).is_some() {
                outcome.events += 1;
            }
        }
        outcome
    }
}
