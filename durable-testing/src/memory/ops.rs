//! Retention and schedules of [`MemoryStore`](super::MemoryStore), with the semantics of the
//! PostgreSQL stores' `purge_finished`, `upsert_schedule`, `due_schedules` and
//! `advance_schedule`.

use chrono::{DateTime, SecondsFormat, Utc};
use durable_core::StoreError;
use durable_core::store::{
    DueSchedules, NewTask, PurgeOutcome, ScheduleAdvance, ScheduleRecord, ScheduleSpec,
    child_event_name, schedule_task_key,
};
use serde_json::Value;
use uuid::Uuid;

use super::State;
use super::batch::check_spawn;

impl State {
    /// One retention batch: see `Store::purge_finished`.
    pub(super) fn purge(
        &mut self,
        queue: &str,
        cutoff: DateTime<Utc>,
        limit: usize,
    ) -> PurgeOutcome {
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
                q == queue
                    && **at <= cutoff
                    && !name.starts_with(durable_core::store::CHILD_EVENT_PREFIX)
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

    pub(super) fn upsert_schedule(&mut self, spec: ScheduleSpec, now: DateTime<Utc>) -> bool {
        self.queues.insert(spec.queue.clone());
        let key = (spec.queue.clone(), spec.name.clone());
        match self.schedules.get_mut(&key) {
            Some(record) => {
                record.spec = spec;
                record.next_run_at = None;
                record.updated_at = now;
                false
            }
            None => {
                self.schedules.insert(
                    key,
                    ScheduleRecord {
                        spec,
                        next_run_at: None,
                        last_run_at: None,
                        last_task_id: None,
                        created_at: now,
                        updated_at: now,
                    },
                );
                true
            }
        }
    }

    pub(super) fn due_schedules(
        &self,
        queue: &str,
        limit: usize,
        now: DateTime<Utc>,
    ) -> DueSchedules {
        let mine = || self.schedules.values().filter(|r| r.spec.queue == queue);
        let mut due: Vec<&ScheduleRecord> = mine()
            .filter(|r| r.next_run_at.is_none_or(|at| at <= now))
            .collect();
        // Unarmed first, then by tick, then by name (the order of the PostgreSQL stores).
        due.sort_by(|a, b| {
            (a.next_run_at.is_some(), a.next_run_at, &a.spec.name).cmp(&(
                b.next_run_at.is_some(),
                b.next_run_at,
                &b.spec.name,
            ))
        });
        due.truncate(limit);
        DueSchedules {
            schedules: due.into_iter().cloned().collect(),
            now,
            next_due_at: mine()
                .filter_map(|r| r.next_run_at)
                .filter(|at| *at > now)
                .min(),
        }
    }

    pub(super) fn advance_schedule(
        &mut self,
        queue: &str,
        name: &str,
        expected: Option<DateTime<Utc>>,
        next: Option<DateTime<Utc>>,
        fire: bool,
        now: DateTime<Utc>,
    ) -> Result<ScheduleAdvance, StoreError> {
        let key = (queue.to_owned(), name.to_owned());
        let Some(record) = self
            .schedules
            .get(&key)
            .filter(|r| r.next_run_at == expected)
        else {
            return Ok(ScheduleAdvance::Stale);
        };
        let tick = match (fire, expected) {
            (true, Some(tick)) => tick,
            _ => {
                if let Some(record) = self.schedules.get_mut(&key) {
                    record.next_run_at = next;
                }
                return Ok(ScheduleAdvance::Moved);
            }
        };
        let spec = &record.spec;
        let mut headers = spec.headers.clone();
        headers.insert("durable.schedule".to_owned(), Value::from(name));
        headers.insert(
            "durable.scheduled_at".to_owned(),
            Value::from(tick.to_rfc3339_opts(SecondsFormat::Micros, true)),
        );
        let task = NewTask {
            queue: queue.to_owned(),
            task_name: spec.task_name.clone(),
            params: spec.params.clone(),
            headers,
            max_attempts: spec.max_attempts,
            retry_strategy: spec.retry_strategy.clone(),
            cancellation: spec.cancellation.clone(),
            idempotency_key: Some(schedule_task_key(name, tick)),
            parent_task_id: None,
            delay: None,
        };
        let spawned = self.insert_task(check_spawn(task, now)?, now);
        if let Some(record) = self.schedules.get_mut(&key) {
            record.next_run_at = next;
            record.last_run_at = Some(tick);
            record.last_task_id = Some(spawned.task_id);
        }
        Ok(ScheduleAdvance::Fired(spawned))
    }
}
