//! The backend's own small runtime, on a thread of its own.
//!
//! The driver keeps each connection alive with a task spawned on the
//! runtime that opened it. The agent calls its queue from its control
//! thread's runtime, the CLI from the main one, and the main runtime's
//! workers may all be busy in plugin calls; so every connection (pool and
//! listener alike) lives here, where nothing else runs, and every call is
//! handed to this runtime and its result awaited from wherever it came.

use std::future::Future;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::queue::QueueError;

/// A current-thread runtime on a thread named `queue-postgres`; it ends
/// (and its connections close) when this is dropped.
pub struct IoRuntime {
    handle: Handle,
    _stop: oneshot::Sender<()>,
}

impl IoRuntime {
    /// Starts the thread and its runtime.
    pub fn start() -> Result<Self, QueueError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                QueueError::Interrupted(format!("cannot start the PostgreSQL queue's runtime: {e}"))
            })?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("queue-postgres".to_owned())
            .spawn(move || {
                // Runs the spawned tasks until the backend is dropped.
                let _ = runtime.block_on(stopped);
                runtime.shutdown_background();
            })
            .map_err(|e| {
                QueueError::Interrupted(format!("cannot start the PostgreSQL queue's thread: {e}"))
            })?;
        Ok(IoRuntime {
            handle,
            _stop: stop,
        })
    }

    /// Runs `work` on this runtime and waits for it from the caller's.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, QueueError>> + Send + 'static,
    ) -> Result<T, QueueError> {
        match self.handle.spawn(work).await {
            Ok(result) => result,
            Err(join) => Err(QueueError::Interrupted(join.to_string())),
        }
    }

    /// Starts `work` on this runtime without waiting for it.
    pub fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        self.handle.spawn(work);
    }
}
