//! Recording how jobs ended, keeping what cannot be written yet.
//!
//! An outcome the queue refuses for good (the item was taken back by
//! another agent, or changed meanwhile) is dropped with a warning: the
//! item is someone else's now. Any other failure (a full disk, a busy
//! database, a server that does not answer) keeps the outcome in memory and
//! tries it again every [`OUTCOME_RETRY`]; the item stays held by this
//! agent, its lease renewed, so no other agent runs it meanwhile. An agent
//! never exits 0 with an outcome unrecorded ([`Outcomes::unrecorded`]).

use super::JobContext;
use super::job::JobEnd;
use crate::queue::QueueError;
use crate::timeouts::OUTCOME_RETRY;
use std::time::Instant;

/// An outcome not recorded yet.
struct Pending {
    item_id: String,
    end: JobEnd,
    tries: u32,
}

/// The outcomes waiting to be recorded.
#[derive(Default)]
pub(super) struct Outcomes {
    pending: Vec<Pending>,
    next_try: Option<Instant>,
}

/// What became of one try to record an outcome.
pub(super) enum Recorded {
    /// It is in the queue.
    Done,
    /// Kept, to try again; the error said why.
    Kept(QueueError),
    /// Dropped: the item changed meanwhile.
    Dropped,
}

impl Outcomes {
    /// Records `end` for `item_id`, or keeps it to try again.
    pub(super) async fn record(
        &mut self,
        ctx: &JobContext,
        item_id: String,
        end: JobEnd,
    ) -> Recorded {
        match write(ctx, &item_id, &end).await {
            Ok(()) => {
                tracing::info!(item = %item_id, outcome = end.name(), "job done");
                Recorded::Done
            }
            Err(error) if error.is_moot() => {
                tracing::warn!(
                    item = %item_id,
                    outcome = end.name(),
                    "the job's outcome was not recorded: the item changed meanwhile (another agent may have taken it back): {error}"
                );
                Recorded::Dropped
            }
            Err(error) => {
                tracing::error!(
                    item = %item_id,
                    outcome = end.name(),
                    "cannot record the job's outcome now: {error}; keeping it and trying again every {OUTCOME_RETRY:?}"
                );
                self.pending.push(Pending {
                    item_id,
                    end,
                    tries: 1,
                });
                self.next_try = Some(Instant::now() + OUTCOME_RETRY);
                Recorded::Kept(error)
            }
        }
    }

    /// Tries every kept outcome again once it is time; returns the error of
    /// the last that still failed, if any.
    pub(super) async fn retry(&mut self, ctx: &JobContext) -> Option<QueueError> {
        if self.pending.is_empty() || self.next_try.is_some_and(|at| Instant::now() < at) {
            return None;
        }
        let mut last_error = None;
        let mut kept = Vec::new();
        for mut pending in std::mem::take(&mut self.pending) {
            match write(ctx, &pending.item_id, &pending.end).await {
                Ok(()) => tracing::info!(
                    item = %pending.item_id,
                    outcome = pending.end.name(),
                    tries = pending.tries + 1,
                    "job done: its outcome is recorded at last"
                ),
                Err(error) if error.is_moot() => tracing::warn!(
                    item = %pending.item_id,
                    outcome = pending.end.name(),
                    "the job's outcome was not recorded: the item changed meanwhile: {error}"
                ),
                Err(error) => {
                    tracing::debug!(item = %pending.item_id, %error, "still cannot record the job's outcome");
                    pending.tries += 1;
                    kept.push(pending);
                    last_error = Some(error);
                }
            }
        }
        self.pending = kept;
        self.next_try = (!self.pending.is_empty()).then(|| Instant::now() + OUTCOME_RETRY);
        last_error
    }

    /// Whether every outcome is recorded.
    pub(super) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// When the next retry is due, if any is waiting.
    pub(super) fn next_try(&self) -> Option<Instant> {
        self.next_try.filter(|_| !self.pending.is_empty())
    }

    /// The outcomes still unrecorded, for a person: `item (outcome)`, ...
    pub(super) fn unrecorded(&self) -> Vec<String> {
        self.pending
            .iter()
            .map(|p| format!("{} ({})", p.item_id, p.end.name()))
            .collect()
    }
}

/// The queue call that records `end`.
async fn write(ctx: &JobContext, item_id: &str, end: &JobEnd) -> Result<(), QueueError> {
    let (queue, agent) = (&ctx.queue, ctx.agent_id.as_str());
    match end {
        JobEnd::Finished => queue.finish(item_id, agent, Some(0)).await,
        JobEnd::Failed {
            stage,
            message,
            exit_code,
        } => {
            queue
                .fail(item_id, agent, *stage, message, *exit_code)
                .await
        }
        JobEnd::Stopped => {
            queue
                .mark_stopped(item_id, agent, "stopped on request")
                .await
        }
        JobEnd::HandedBack | JobEnd::Unstarted(_) => queue.release(item_id, agent).await,
    }
}
