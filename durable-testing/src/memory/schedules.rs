//! Schedules, with the semantics of the PostgreSQL stores' `upsert_schedule`,
//! `due_schedules` and `advance_schedule`: a fired tick spawns its task under an idempotency
//! key of the schedule and the tick, in the same step as the schedule moves on.

use chrono::{DateTime, SecondsFormat, Utc};
use durable_core::StoreError;
use durable_core::store::{
    DueSchedules, NewTask, ScheduleAdvance, ScheduleRecord, ScheduleSpec, schedule_task_key,
};
use serde_json::Value;

use super::spawn::check_spawn;
use super::state::State;

impl State {
    /// `Store::upsert_schedule`: returns whether the schedule is new. An existing schedule
    /// takes the new spec and is unarmed, so its next tick is computed again.
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

    /// `Store::list_schedules`: the schedules of `queue`, or of every queue.
    pub(super) fn list_schedules(&self, queue: Option<&str>) -> Vec<ScheduleRecord> {
        self.schedules
            .values()
            .filter(|record| queue.is_none_or(|q| record.spec.queue == q))
            .cloned()
            .collect()
    }

    /// `Store::delete_schedule`: returns whether there was one.
    pub(super) fn delete_schedule(&mut self, queue: &str, name: &str) -> bool {
        self.schedules
            .remove(&(queue.to_owned(), name.to_owned()))
            .is_some()
    }

    /// `Store::due_schedules`: unarmed and due schedules of `queue`, and when the next one is.
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

    /// `Store::advance_schedule`: moves a schedule still at `expected` to `next`, spawning the
    /// tick's task if `fire`.
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
