//! [`Clock`]: the time of a [`MemoryStore`](super::MemoryStore), virtual or the system's.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

/// The store's clock: virtual (moved only by [`Clock::advance`]) or the system clock.
#[derive(Debug)]
pub struct Clock {
    virtual_now: Option<Mutex<DateTime<Utc>>>,
}

impl Clock {
    /// The moment a virtual clock starts at: 2025-01-01T00:00:00Z.
    pub fn epoch() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
    }

    pub(super) fn virtual_at(start: DateTime<Utc>) -> Self {
        Clock {
            virtual_now: Some(Mutex::new(start)),
        }
    }

    pub(super) fn system() -> Self {
        Clock { virtual_now: None }
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        match &self.virtual_now {
            Some(now) => *now.lock().unwrap_or_else(PoisonError::into_inner),
            None => Utc::now(),
        }
    }

    /// Whether this is a virtual clock.
    pub fn is_virtual(&self) -> bool {
        self.virtual_now.is_some()
    }

    /// Moves a virtual clock forward (a system clock cannot be moved: this does nothing).
    pub fn advance(&self, by: Duration) {
        if let Some(now) = &self.virtual_now {
            let mut now = now.lock().unwrap_or_else(PoisonError::into_inner);
            let by = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
            *now = now
                .checked_add_signed(by)
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
        }
    }
}
