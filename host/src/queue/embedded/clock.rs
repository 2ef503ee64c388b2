//! Timestamps as the queue stores them.

use std::time::Duration;

use chrono::{SecondsFormat, TimeZone, Utc};

/// The longest lease taken into account; longer ones are cut to this.
const MAX_LEASE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The current time, as stored.
pub(super) struct Now {
    /// Unix milliseconds, for comparisons.
    pub(super) ms: i64,
    /// RFC 3339 in UTC with milliseconds, for people.
    pub(super) text: String,
}

impl Now {
    /// Now.
    pub(super) fn get() -> Self {
        let now = Utc::now();
        Now {
            ms: now.timestamp_millis(),
            text: now.to_rfc3339_opts(SecondsFormat::Millis, true),
        }
    }

    /// The end of a lease of length `lease` starting now, in milliseconds
    /// (rounded up) and as text.
    pub(super) fn plus(&self, lease: Duration) -> (i64, String) {
        let lease_ms = lease.min(MAX_LEASE).as_micros().div_ceil(1000);
        let ms = self
            .ms
            .saturating_add(i64::try_from(lease_ms).unwrap_or(i64::MAX));
        let text = Utc
            .timestamp_millis_opt(ms)
            .single()
            .map(|at| at.to_rfc3339_opts(SecondsFormat::Millis, true))
            .unwrap_or_default();
        (ms, text)
    }
}
