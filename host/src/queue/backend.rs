//! What the agent loop needs from a queue, whatever serves it.
//!
//! | backend | new work noticed | leases | stop requests |
//! |---|---|---|---|
//! | embedded (SQLite in the state dir) | at once (a submit wakes the agent) | the queue's own, renewed by the agent | `launch-agent queue stop` |
//! | W&B server | by polling, backing off when idle | the server's (an un-acked item returns) | the server's `RunStoppedStatus` |
//!
//! The embedded queue's SQLite calls are short but may wait on another
//! process's write for up to the busy timeout, so they run on the blocking
//! pool instead of stalling the agent's async tasks.

use super::{EmbeddedQueue, QueueError, QueueItem, Reclaimed, RunHandle, Stage};
use crate::timeouts::IDLE_RECHECK;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A W&B job artifact (`job: entity/project/name:alias`), fetched.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchedJob {
    /// What the image tag hashes: the job artifact with its resolved
    /// version, e.g. `team/proj/my-job:v3`.
    pub source_id: String,
    /// `wandb-job.json`'s `source_type`: `artifact` (code), `repo` or `image`.
    pub source_type: String,
    /// The code directory (for `artifact` jobs: the code artifact's files,
    /// plus the job's `requirements.frozen.txt`).
    pub dir: Option<PathBuf>,
    /// For `repo` jobs: the git remote and commit.
    pub git: Option<(String, String)>,
    /// For `repo` jobs: the job's `diff.patch` (the changes the run had on
    /// top of its commit) and `requirements.frozen.txt`; the patch is
    /// applied to the clone and the requirements are copied into it, as the
    /// W&B agent does.
    pub repo_extras: RepoExtras,
    /// For `image` jobs: the image.
    pub image: Option<String>,
    /// `source.entrypoint` of `wandb-job.json` (the command when the launch
    /// spec's `overrides.entry_point` is empty).
    pub entrypoint: Vec<String>,
}

/// What a W&B repo job adds to its clone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepoExtras {
    /// `diff.patch`, applied with `-p1` at the clone's root.
    pub diff_patch: Option<Vec<u8>>,
    /// `requirements.frozen.txt`, copied to the clone's root.
    pub requirements: Option<Vec<u8>>,
}

/// A queue the agent serves.
#[async_trait::async_trait]
pub trait QueueBackend: Send + Sync {
    /// A short name for logs: `embedded`, `wandb`.
    fn name(&self) -> &'static str;
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
    /// Fetches the W&B job artifact `job` (`entity/project/name:alias`)
    /// into `dest`. Only the W&B backend can; others say so.
    async fn fetch_job(&self, job: &str, dest: &Path) -> Result<FetchedJob, QueueError> {
        let _ = dest;
        Err(QueueError::Remote(format!(
            "job artifact {job} needs the W&B queue backend (queue_backend: wandb); \
             the {} queue runs image, directory (`uri`) and git jobs",
            self.name()
        )))
    }
    /// Reports a warning about a running job (W&B shows it on the queue
    /// item); backends without such a field keep it in the job's log only.
    async fn warn(&self, id: &str, stage: Stage, message: &str) -> Result<(), QueueError> {
        let _ = (id, stage, message);
        Ok(())
    }
    /// Whether the server asked this agent to stop polling.
    async fn should_stop(&self) -> bool {
        false
    }
    /// The agent is shutting down.
    async fn close(&self) {}
}

/// The embedded queue as a [`QueueBackend`].
#[derive(Clone)]
pub struct EmbeddedBackend {
    queue: Arc<EmbeddedQueue>,
}

impl EmbeddedBackend {
    /// Wraps an open embedded queue.
    pub fn new(queue: Arc<EmbeddedQueue>) -> Self {
        EmbeddedBackend { queue }
    }

    /// Runs a queue call on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&EmbeddedQueue) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError> {
        let queue = self.queue.clone();
        match tokio::task::spawn_blocking(move || call(&queue)).await {
            Ok(result) => result,
            Err(join) => Err(QueueError::Interrupted(join.to_string())),
        }
    }
}

#[async_trait::async_trait]
impl QueueBackend for EmbeddedBackend {
    fn name(&self) -> &'static str {
        "embedded"
    }
    async fn claim_next(
        &self,
        queues: &[String],
        agent_id: &str,
        lease: Duration,
    ) -> Result<Option<QueueItem>, QueueError> {
        let (queues, agent_id) = (queues.to_vec(), agent_id.to_string());
        self.blocking(move |q| q.claim_next(&queues, &agent_id, lease))
            .await
    }
    async fn mark_running(&self, id: &str, agent_id: &str) -> Result<(), QueueError> {
        let (id, agent_id) = (id.to_string(), agent_id.to_string());
        self.blocking(move |q| q.mark_running(&id, &agent_id)).await
    }
    async fn set_run_handle(&self, id: &str, handle: &RunHandle) -> Result<(), QueueError> {
        let (id, handle) = (id.to_string(), handle.clone());
        self.blocking(move |q| q.set_run_handle(&id, &handle)).await
    }
    async fn renew_leases(&self, agent_id: &str, lease: Duration) -> Result<(), QueueError> {
        let agent_id = agent_id.to_string();
        self.blocking(move |q| q.renew_leases(&agent_id, lease).map(|_| ()))
            .await
    }
    async fn finish(
        &self,
        id: &str,
        agent_id: &str,
        exit_code: Option<i32>,
    ) -> Result<(), QueueError> {
        let (id, agent) = (id.to_string(), agent_id.to_string());
        self.blocking(move |q| q.finish(&id, &agent, exit_code))
            .await
    }
    async fn fail(
        &self,
        id: &str,
        agent_id: &str,
        stage: Stage,
        message: &str,
        exit_code: Option<i32>,
    ) -> Result<(), QueueError> {
        let (id, agent, message) = (id.to_string(), agent_id.to_string(), message.to_string());
        self.blocking(move |q| q.fail(&id, &agent, stage, &message, exit_code))
            .await
    }
    async fn mark_stopped(
        &self,
        id: &str,
        agent_id: &str,
        message: &str,
    ) -> Result<(), QueueError> {
        let (id, agent, message) = (id.to_string(), agent_id.to_string(), message.to_string());
        self.blocking(move |q| q.mark_stopped(&id, &agent, &message))
            .await
    }
    async fn release(&self, id: &str, agent_id: &str) -> Result<(), QueueError> {
        let (id, agent) = (id.to_string(), agent_id.to_string());
        self.blocking(move |q| q.release(&id, &agent)).await
    }
    async fn stop_requested(&self, id: &str) -> Result<bool, QueueError> {
        let id = id.to_string();
        self.blocking(move |q| Ok(q.get(&id)?.is_some_and(|item| item.stop_requested)))
            .await
    }
    async fn reclaim_abandoned(
        &self,
        holder_is_dead: Arc<dyn for<'a> Fn(&'a str) -> bool + Send + Sync>,
        max_attempts: u32,
    ) -> Result<Vec<Reclaimed>, QueueError> {
        self.blocking(move |q| {
            q.reclaim_abandoned(&|holder: &str| holder_is_dead(holder), max_attempts)
        })
        .await
    }
    async fn has_queued(&self, queues: &[String]) -> Result<bool, QueueError> {
        let queues = queues.to_vec();
        self.blocking(move |q| q.has_queued(&queues)).await
    }
    fn idle_wait(&self, _empty_polls: u32) -> Duration {
        IDLE_RECHECK
    }
}
