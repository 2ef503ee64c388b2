//! The gate before claims: whether the state dir takes writes.
//!
//! A job whose outcome and logs cannot be written should not start. While
//! the disk is full the gate stays shut: the agent claims nothing, says why
//! at once and then every [`STORAGE_FULL_REMINDER`], checks again every
//! [`STORAGE_RECHECK`], and opens when space returns. A state dir that
//! cannot be written at all is the agent's problem, not its jobs': the gate
//! reports it, and the agent stops.

use crate::queue::QueueError;
use crate::state_dir::{StateDir, StorageProblem};
use crate::timeouts::{STORAGE_FULL_REMINDER, STORAGE_RECHECK};
use std::time::{Duration, Instant};

/// The gate (see the module doc).
pub(super) struct StorageGate {
    state: StateDir,
    /// Since when the disk is full, and when that was last said.
    full: Option<Full>,
}

struct Full {
    since: Instant,
    said: Instant,
    next_check: Instant,
}

impl StorageGate {
    pub(super) fn new(state: StateDir) -> Self {
        StorageGate { state, full: None }
    }

    /// Whether claims may go ahead: `Ok(false)` while the disk is full, an
    /// error (what is wrong, for a person) when the state dir cannot be
    /// written at all.
    pub(super) async fn open(&mut self) -> Result<bool, String> {
        if let Some(full) = &self.full
            && Instant::now() < full.next_check
        {
            return Ok(false);
        }
        let state = self.state.clone();
        let checked = tokio::task::spawn_blocking(move || state.check_writable())
            .await
            .unwrap_or_else(|join| Err(StorageProblem::Unwritable(join.to_string())));
        match checked {
            Ok(()) => {
                if let Some(full) = self.full.take() {
                    tracing::info!(
                        state_dir = %self.state.root().display(),
                        "the state dir takes writes again (it was full for {}): claiming work again",
                        seconds(full.since.elapsed())
                    );
                }
                Ok(true)
            }
            Err(StorageProblem::Full(why)) => {
                self.full_now(&why);
                Ok(false)
            }
            Err(StorageProblem::Unwritable(why)) => Err(format!(
                "the state dir {} cannot be written ({why}): the agent stops rather than fail jobs for it",
                self.state.root().display()
            )),
        }
    }

    /// The queue said its disk is full: the gate shuts until the next check.
    pub(super) fn queue_full(&mut self, error: &QueueError) {
        self.full_now(&error.to_string());
    }

    /// A job found the disk full: the gate shuts until the next check.
    pub(super) fn disk_full(&mut self, why: &str) {
        self.full_now(why);
    }

    /// Whether the gate is shut for a full disk.
    pub(super) fn is_full(&self) -> bool {
        self.full.is_some()
    }

    /// When to look again, while the disk is full.
    pub(super) fn recheck_in(&self) -> Option<Duration> {
        self.full
            .as_ref()
            .map(|f| f.next_check.saturating_duration_since(Instant::now()))
    }

    fn full_now(&mut self, why: &str) {
        let now = Instant::now();
        match &mut self.full {
            None => {
                tracing::error!(
                    state_dir = %self.state.root().display(),
                    "the disk of the state dir is full ({why}): claiming no new work until it takes writes again; outcomes that cannot be recorded are kept and retried"
                );
                self.full = Some(Full {
                    since: now,
                    said: now,
                    next_check: now + STORAGE_RECHECK,
                });
            }
            Some(full) => {
                if now.duration_since(full.said) >= STORAGE_FULL_REMINDER {
                    tracing::error!(
                        state_dir = %self.state.root().display(),
                        "the disk of the state dir is still full, for {} now ({why}): claiming no new work",
                        seconds(full.since.elapsed())
                    );
                    full.said = now;
                }
                full.next_check = now + STORAGE_RECHECK;
            }
        }
    }
}

fn seconds(d: Duration) -> String {
    format!("{} s", d.as_secs())
}
