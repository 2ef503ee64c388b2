//! Waking the agent when work is submitted, instead of polling.
//!
//! Each running agent listens on a Unix socket `wake/<pid>.sock` in the
//! state dir; `launch-agent submit` connects to every socket there after it
//! writes the item. A connection carries no data: it only wakes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::UnixListener;
use tokio::sync::Notify;

/// A listening wake socket; removed when dropped.
pub struct WakeSocket {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl WakeSocket {
    /// Listens in `dir`, notifying `notify` at every connection.
    pub fn listen(dir: &Path, notify: Arc<Notify>) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                drop(stream);
                notify.notify_one();
            }
        });
        Ok(WakeSocket { path, task })
    }
}

impl Drop for WakeSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Wakes every agent listening in `dir`; removes sockets nobody listens on.
pub fn wake_all(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("sock") {
            continue;
        }
        if std::os::unix::net::UnixStream::connect(&path).is_err() {
            let _ = std::fs::remove_file(&path);
        }
    }
}
