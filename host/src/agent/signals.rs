//! Counting SIGINT and SIGTERM on a thread of their own, so that a signal
//! is seen at once even while every worker of the main runtime is held (a
//! plugin call that never waits runs on a worker until its deadline).
//!
//! The agent reads the count (see the [agent's signal table](super)); the
//! third signal is final whatever the agent is doing: if the agent has not
//! exited [`FINAL_EXIT_WAIT`] after it, the process exits with status 1.

use crate::timeouts::FINAL_STOP_WAIT;
use std::time::Duration;
use tokio::sync::watch;

/// The signal after which the process ends whatever happens.
pub const FINAL_SIGNAL: u32 = 3;

/// How long the agent has after the [`FINAL_SIGNAL`] to exit by itself.
pub const FINAL_EXIT_WAIT: Duration = Duration::from_secs(FINAL_STOP_WAIT.as_secs() + 10);

/// A counter of the SIGINT and SIGTERM the process receives from now on,
/// kept by a thread of its own.
pub fn count() -> watch::Receiver<u32> {
    let (tx, rx) = watch::channel(0u32);
    let spawned = std::thread::Builder::new()
        .name("agent-signals".to_string())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    tracing::error!(%error, "cannot listen for SIGINT/SIGTERM");
                    return;
                }
            };
            runtime.block_on(listen(tx));
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot listen for SIGINT/SIGTERM");
    }
    rx
}

async fn listen(tx: watch::Sender<u32>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::error!("cannot listen for SIGINT/SIGTERM");
        return;
    };
    loop {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        let mut count = 0;
        tx.send_modify(|n| {
            *n += 1;
            count = *n;
        });
        if count == FINAL_SIGNAL {
            std::thread::spawn(|| {
                std::thread::sleep(FINAL_EXIT_WAIT);
                eprintln!(
                    "error: the agent did not stop within {FINAL_EXIT_WAIT:?} of the final signal: exiting now; jobs it still held are taken back by the next agent"
                );
                std::process::exit(1);
            });
        }
    }
}
