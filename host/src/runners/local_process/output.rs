//! A run's output, copied into its capped `output.log`.
//!
//! The process's stdout and stderr are the two ends of one pipe's write
//! side, so what it writes to either keeps the order it was written in, as
//! with one shared file. A thread of the agent copies the pipe into the
//! log through a [`CappedLog`]:
//!
//! | event | the log | the run |
//! |---|---|---|
//! | output under `max_log_mb` | gets it | goes on |
//! | output past `max_log_mb` | cut there, with a line saying so | goes on; the rest is read and dropped |
//! | the disk is full | logging ends, with a line saying so when it fits | goes on; the rest is read and dropped |
//! | the run exits | gets the rest, for up to [`DRAIN_AFTER_EXIT`] | its outcome is recorded |
//!
//! The copy ends when every process holding the pipe has closed it. A
//! process the run started and left running may hold it long after the run
//! exits; the runner waits [`DRAIN_AFTER_EXIT`] at most, so such a process
//! cannot hold the run's outcome back, and the copy goes on meanwhile.

use crate::capped_log::CappedLog;
use anyhow::Context as _;
use std::io::{PipeReader, PipeWriter, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::oneshot;

/// How long a run's output may take to reach the log after the run exited
/// or was stopped.
pub const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(5);

/// Bytes read from the pipe at a time.
const CHUNK: usize = 64 * 1024;

/// The copy of a run's output into its log, under way.
pub struct RunOutput {
    copied: oneshot::Receiver<()>,
    log_path: PathBuf,
}

/// Creates the log at `log_path` (capped at `limit` bytes) and starts
/// copying into it; the writer is the run's stdout and stderr. Dropping
/// every copy of the writer ends the copy.
pub fn start(log_path: &Path, limit: u64) -> anyhow::Result<(RunOutput, PipeWriter)> {
    let log = CappedLog::create(log_path, limit)
        .with_context(|| format!("creating run log {}", log_path.display()))?;
    let (reader, writer) = std::io::pipe().context("creating the run's output pipe")?;
    let (done, copied) = oneshot::channel();
    std::thread::Builder::new()
        .name("run-output".into())
        .spawn(move || {
            copy(reader, log);
            let _ = done.send(());
        })
        .context("starting the copy of the run's output")?;
    let output = RunOutput {
        copied,
        log_path: log_path.to_path_buf(),
    };
    Ok((output, writer))
}

/// Copies `pipe` into `log` until every writer has closed it. The log
/// never fails a write (it cuts or ends itself), so the pipe is always
/// drained and the run never blocks on it.
fn copy(mut pipe: PipeReader, mut log: CappedLog<std::fs::File>) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let _ = log.write_all(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => {
                tracing::warn!(%error, "reading a run's output: the rest of it is not logged");
                break;
            }
        }
    }
    let _ = log.flush();
}

impl RunOutput {
    /// Waits for the output to reach the log, at most [`DRAIN_AFTER_EXIT`];
    /// past that, says which process may still hold it, and the copy goes on.
    pub async fn drained(self) {
        if tokio::time::timeout(DRAIN_AFTER_EXIT, self.copied)
            .await
            .is_err()
        {
            tracing::warn!(
                log = %self.log_path.display(),
                "the run ended, but a process it started still holds its output open: \
                 its outcome is recorded now, and what that process writes still goes to the log"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_past_the_cap_is_drained_and_the_log_says_where_it_was_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("output.log");
        let (output, mut writer) = start(&path, 1000).unwrap();
        // Far more than the pipe holds: the writer would block if the copy
        // stopped reading at the cap.
        let writing = std::thread::spawn(move || {
            for _ in 0..100 {
                writer.write_all(&[b'x'; 10_000]).unwrap();
            }
        });
        writing.join().unwrap();
        output.drained().await;
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(&"x".repeat(1000)), "{}", &text[..50]);
        assert!(
            text[1000..].starts_with("\n[launch-agent] this log was cut here")
                && text.trim_end().ends_with("(the run goes on)"),
            "{}",
            &text[1000..]
        );
    }

    #[tokio::test]
    async fn a_writer_left_open_does_not_hold_the_run_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("output.log");
        let (output, writer) = start(&path, 1000).unwrap();
        let started = std::time::Instant::now();
        output.drained().await;
        let waited = started.elapsed();
        assert!(
            waited >= DRAIN_AFTER_EXIT && waited < DRAIN_AFTER_EXIT * 3,
            "{waited:?}"
        );
        drop(writer);
    }
}
