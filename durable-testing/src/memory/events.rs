//! Events: remembered per queue, the first emit wins, and an emit wakes the tasks awaiting it.

use chrono::{DateTime, Utc};
use durable_core::TaskStatus;
use serde_json::Value;
use uuid::Uuid;

use super::state::State;

impl State {
    /// `Store::emit_event`: stores the event unless one of that name was emitted before, and
    /// makes the tasks asleep on it claimable now. Returns whether this emit was the first.
    pub(super) fn emit(
        &mut self,
        queue: &str,
        name: &str,
        payload: Value,
        now: DateTime<Utc>,
    ) -> bool {
        let key = (queue.to_owned(), name.to_owned());
        if self.events.contains_key(&key) {
            return false;
        }
        self.event_times.insert(key.clone(), now);
        self.events.insert(key, payload);
        let waiting: Vec<Uuid> = self
            .waits
            .iter()
            .filter(|(_, wait)| wait.queue == queue && wait.event_name == name)
            .map(|((task_id, _), _)| *task_id)
            .collect();
        for task_id in waiting {
            if let Some(row) = self.tasks.get_mut(&task_id)
                && row.state == TaskStatus::Sleeping
            {
                row.state = TaskStatus::Pending;
                row.available_at = Some(now);
            }
        }
        true
    }
}
