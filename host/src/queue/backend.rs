//! The one interface of every queue backend, for the agent loop and the
//! CLI alike.
//!
//! | backend | new work noticed | leases | stop requests | submit, list, stop |
//! |---|---|---|---|---|
//! | [embedded](super::embedded) (SQLite in the state dir) | at once (a submit wakes the agent) | the queue's own, renewed by the agent | `launch-agent queue stop` | `launch-agent submit`, `queue list`, `queue stop` |
//! | [PostgreSQL](super::postgres) | at once (`LISTEN`/`NOTIFY`), a slow timer as fallback | the queue's own, renewed by the agent; freed only by expiry | `launch-agent queue stop` | `launch-agent submit`, `queue list`, `queue stop` (with `--config`) |
//! | [W&B server](super::wandb) | by polling, backing off when idle | the server's (an un-acked item returns) | the server's `RunStoppedStatus` | refused, naming W&B's way (`wandb launch`, the W&B UI) |

use super::{ItemState, QueueError, QueueItem, Reclaimed, RunHandle, Stage};
use std::sync::Arc;
use std::time::Duration;

/// A queue: what the agent serves and the CLI submits to, lists and stops.
///
/// Methods that change an item an agent holds take that agent's id
/// (`agent_id`, the holder): an agent whose claim was taken back records
/// nothing.
#[async_trait::async_trait]
pub trait QueueBackend: Send + Sync {
    /// A short name for logs: `embedded`, `wandb`.
    fn name(&self) -> &'static str;
    /// Adds a launch spec (a JSON object) to `queue` and returns the new
    /// item's id.
    async fn submit(&self, queue: &str, spec: serde_json::Value) -> Result<String, QueueError>;
    /// Every item, or every item of `queue`, oldest first.
    async fn list(&self, queue: Option<&str>) -> Result<Vec<QueueItem>, QueueError>;
    /// Asks for item `id` to be stopped and returns its state afterwards: a
    /// queued item stops at once, a claimed or running one is stopped by
    /// its agent, an ended one stays as it is.
    async fn request_stop(&self, id: &str) -> Result<ItemState, QueueError>;
    /// Claims the next item of the first queue in `queues` that has one,
    /// for `agent_id`, leased for `lease`.
    async fn claim_next(
        &self,
        queues: &[String],
        agent_id: &str,
        lease: Duration,
    ) -> Result<Option<QueueItem>, QueueError>;
    /// The claimed item's run starts.
    async fn mark_running(&self, id: &str, agent_id: &str) -> Result<(), QueueError>;
    /// Records where the item's run is, as its runner describes it (for
    /// cleanup after a crash).
    async fn set_run_handle(&self, id: &str, handle: &RunHandle) -> Result<(), QueueError>;
    /// Keeps this agent's claims alive; called every lease / 3.
    async fn renew_leases(&self, agent_id: &str, lease: Duration) -> Result<(), QueueError>;
    /// The run finished (exit code 0). `agent_id` must hold the item (for
    /// the outcomes below too): an agent whose claim was taken back records
    /// nothing.
    async fn finish(
        &self,
        id: &str,
        agent_id: &str,
        exit_code: Option<i32>,
    ) -> Result<(), QueueError>;
    /// The job failed at `stage`.
    async fn fail(
        &self,
        id: &str,
        agent_id: &str,
        stage: Stage,
        message: &str,
        exit_code: Option<i32>,
    ) -> Result<(), QueueError>;
    /// The job was stopped on request.
    async fn mark_stopped(&self, id: &str, agent_id: &str, message: &str)
    -> Result<(), QueueError>;
    /// Hands the item back unfinished (agent shutdown).
    async fn release(&self, id: &str, agent_id: &str) -> Result<(), QueueError>;
    /// Whether someone asked for the item to be stopped.
    async fn stop_requested(&self, id: &str) -> Result<bool, QueueError>;
    /// Takes back items whose holder died (backends whose server does this
    /// itself return nothing).
    async fn reclaim_abandoned(
        &self,
        holder_is_dead: Arc<dyn for<'a> Fn(&'a str) -> bool + Send + Sync>,
        max_attempts: u32,
    ) -> Result<Vec<Reclaimed>, QueueError>;
    /// Whether any of `queues` has work waiting (for `--exit-when-idle`).
    async fn has_queued(&self, queues: &[String]) -> Result<bool, QueueError>;
    /// How long to wait before polling again after `empty_polls` polls in a
    /// row found nothing (a wake-up cuts the wait short where supported).
    fn idle_wait(&self, empty_polls: u32) -> Duration;
    /// Hands the backend the agent loop's wake-up: a backend that learns of
    /// new work by itself (PostgreSQL's `LISTEN`) wakes the loop through it
    /// instead of leaving it to [`idle_wait`](Self::idle_wait). Others
    /// ignore it.
    fn wake_on_new_work(&self, waker: Arc<tokio::sync::Notify>) {
        let _ = waker;
    }
    /// Reports a warning about a running job (W&B shows it on the queue
    /// item); backends without such a field keep it in the job's log only.
    async fn warn(&self, id: &str, stage: Stage, message: &str) -> Result<(), QueueError> {
        let _ = (id, stage, message);
        Ok(())
    }
    /// Checks the queue's own storage when an agent starts, repairing what
    /// can be repaired without losing anything (the embedded queue rebuilds
    /// indexes that do not match their rows); an error says what a person
    /// has to do.
    async fn check_and_repair(&self) -> Result<(), QueueError> {
        Ok(())
    }
    /// Whether the server asked this agent to stop polling.
    async fn should_stop(&self) -> bool {
        false
    }
    /// The agent is shutting down.
    async fn close(&self) {}
}
