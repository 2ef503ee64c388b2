//! A log file with a size cap that never fails the writer: what a run's
//! output and the agent's job log are written through.
//!
//! | event | what the log gets | what the writer gets |
//! |---|---|---|
//! | under the cap | the bytes | `Ok` |
//! | a write would pass the cap | the bytes up to it, then one line saying the log was cut there and why | `Ok` (the rest is dropped) |
//! | the disk is full, or any other write error | nothing more (a notice is tried) | `Ok`; logging of this run ends, the run goes on |
//!
//! A run that floods its output cannot fill the state dir, and a full disk
//! ends one run's logging, not the agent or the run.
//!
//! The cap is the config's `max_log_mb` (the agent's
//! [`JobContext::log_limit`](crate::agent::JobContext::log_limit)),
//! [`DEFAULT_RUN_LOG_LIMIT`] unless set. **For runners:** wrap the run's
//! `output.log` in a [`CappedLog`] and copy the run's output into it; a run
//! that writes straight to the file (a child process's stdout) is not
//! capped, so give it a pipe and copy.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The cap of each log of a run unless configured (`max_log_mb`): 1 GiB.
pub const DEFAULT_RUN_LOG_LIMIT: u64 = 1 << 30;

/// Where a [`CappedLog`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogState {
    /// Taking writes.
    Open,
    /// Cut at the cap: the rest is dropped.
    Cut,
    /// A write failed (a full disk): the rest is dropped.
    Failed,
}

/// A log with a size cap (see the module doc).
pub struct CappedLog<W: Write> {
    inner: W,
    name: PathBuf,
    limit: u64,
    written: u64,
    state: LogState,
}

impl CappedLog<std::fs::File> {
    /// Creates (or truncates) the log file at `path`, capped at `limit`
    /// bytes.
    pub fn create(path: &Path, limit: u64) -> io::Result<Self> {
        Ok(CappedLog::new(std::fs::File::create(path)?, path, limit))
    }

    /// Opens the log file at `path` for appending, capped at `limit` bytes
    /// in all (what it holds already counts).
    pub fn append(path: &Path, limit: u64) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let held = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut log = CappedLog::new(file, path, limit);
        log.written = held;
        Ok(log)
    }
}

impl<W: Write> CappedLog<W> {
    /// Caps `inner`, named `name` in the agent's own log, at `limit` bytes.
    pub fn new(inner: W, name: &Path, limit: u64) -> Self {
        CappedLog {
            inner,
            name: name.to_path_buf(),
            limit,
            written: 0,
            state: LogState::Open,
        }
    }

    /// Whether the log still takes writes, was cut, or failed.
    pub fn state(&self) -> LogState {
        self.state
    }

    /// Bytes written so far (what the file held when opened for appending
    /// included).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Writes what fits; never fails (see the module doc).
    fn take(&mut self, buf: &[u8]) {
        if self.state != LogState::Open {
            return;
        }
        let room = self.limit.saturating_sub(self.written);
        let fits = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        if let Err(error) = self.inner.write_all(&buf[..fits]) {
            self.fail(&error);
            return;
        }
        self.written += fits as u64;
        if fits < buf.len() {
            self.state = LogState::Cut;
            let notice = format!(
                "\n[launch-agent] this log was cut here: it reached its limit of {} bytes; the rest of the output was dropped (the run goes on)\n",
                self.limit
            );
            let _ = self.inner.write_all(notice.as_bytes());
            let _ = self.inner.flush();
            tracing::warn!(
                log = %self.name.display(),
                limit = self.limit,
                "a log reached its size limit: the rest is dropped"
            );
        }
    }

    fn fail(&mut self, error: &io::Error) {
        self.state = LogState::Failed;
        let _ = self
            .inner
            .write_all(format!("\n[launch-agent] logging stopped here: {error}\n").as_bytes());
        tracing::warn!(
            log = %self.name.display(),
            %error,
            "cannot write a log: logging to it ends here (the run goes on)"
        );
    }
}

impl<W: Write> Write for CappedLog<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.take(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.state == LogState::Open
            && let Err(error) = self.inner.flush()
        {
            self.fail(&error);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that fails with ENOSPC after `room` bytes.
    struct Disk {
        data: Vec<u8>,
        room: usize,
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.data.len() + buf.len() > self.room {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.data.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_log_is_cut_at_its_limit_and_says_so_once() {
        let mut log = CappedLog::new(Vec::new(), Path::new("out.log"), 10);
        log.write_all(b"0123456").unwrap();
        log.write_all(b"789abc").unwrap();
        log.write_all(b"more").unwrap();
        assert_eq!(log.state(), LogState::Cut);
        let text = String::from_utf8(log.inner).unwrap();
        assert!(text.starts_with("0123456789\n[launch-agent] this log was cut here"));
        assert!(text.contains("limit of 10 bytes"), "{text}");
        assert_eq!(text.matches("[launch-agent]").count(), 1, "{text}");
        assert!(!text.contains("abc") && !text.contains("more"), "{text}");
    }

    #[test]
    fn a_full_disk_ends_the_logging_not_the_writer() {
        let disk = Disk {
            data: Vec::new(),
            room: 8,
        };
        let mut log = CappedLog::new(disk, Path::new("out.log"), 1 << 20);
        log.write_all(b"12345").unwrap();
        log.write_all(b"67890").unwrap();
        log.write_all(b"never").unwrap();
        log.flush().unwrap();
        assert_eq!(log.state(), LogState::Failed);
        assert_eq!(log.inner.data, b"12345");
    }

    #[test]
    fn appending_counts_what_the_file_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.log");
        std::fs::write(&path, "12345678").unwrap();
        let mut log = CappedLog::append(&path, 10).unwrap();
        log.write_all(b"abcdef").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("12345678ab\n[launch-agent]"), "{text}");
    }
}
