//! The embedded queue as a [`QueueBackend`].
//!
//! The SQLite calls are short but may wait on another process's write for
//! up to the busy timeout, so they run on the blocking pool instead of
//! stalling the agent's async tasks.

use std::sync::Arc;
use std::time::Duration;

use super::EmbeddedQueue;
use crate::queue::{ItemState, QueueBackend, QueueError, QueueItem, Reclaimed, RunHandle, Stage};
use crate::timeouts::IDLE_RECHECK;

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
    async fn submit(&self, queue: &str, spec: serde_json::Value) -> Result<String, QueueError> {
        let queue = queue.to_string();
        self.blocking(move |q| q.submit(&queue, spec)).await
    }
    async fn list(&self, queue: Option<&str>) -> Result<Vec<QueueItem>, QueueError> {
        let queue = queue.map(str::to_string);
        self.blocking(move |q| q.list(queue.as_deref())).await
    }
    async fn request_stop(&self, id: &str) -> Result<ItemState, QueueError> {
        let id = id.to_string();
        self.blocking(move |q| q.request_stop(&id)).await
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
    async fn check_and_repair(&self) -> Result<(), QueueError> {
        self.blocking(|q| q.check_and_repair().map(drop)).await
    }
    fn idle_wait(&self, _empty_polls: u32) -> Duration {
        IDLE_RECHECK
    }
}
