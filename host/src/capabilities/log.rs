//! `launch:plugin/log`: plugin log lines into the agent's tracing output,
//! tagged with the plugin's name, and into the job's log.

use crate::capabilities::bindings::launch::plugin::log::{Host, Level};
use crate::capabilities::state::CapabilityState;
use std::sync::Arc;

/// Where a job's log lines go besides tracing: the job's log file, and for
/// warnings also the queue (W&B shows them on the queue item).
pub struct JobLog {
    /// Writes one line to the job's log.
    pub line: Box<dyn Fn(&str) + Send + Sync>,
    /// Reports a warning (a plugin's `warn` line) to the queue.
    pub warning: Box<dyn Fn(&str) + Send + Sync>,
}

impl JobLog {
    /// Writes one line to the job's log.
    pub fn line(&self, text: &str) {
        (self.line)(text)
    }
    /// Writes a warning to the job's log and reports it to the queue.
    pub fn warning(&self, text: &str) {
        (self.line)(text);
        (self.warning)(text)
    }
}

/// A job's log, shared by the agent's steps and the plugin calls of the job.
pub type LogSink = Arc<JobLog>;

/// The longest log line a plugin may write; longer ones are cut.
const MAX_LINE: usize = 8 * 1024;

impl Host for CapabilityState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let mut message = self.scrub(&message);
        if message.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" [cut]");
        }
        if matches!(level, Level::Error) {
            self.last_error_line = Some(message.clone());
        }
        let plugin = &*self.plugin_name;
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
        if let Some(sink) = &self.log_sink {
            let line = format!("[{plugin}] {message}");
            match level {
                Level::Warn => sink.warning(&line),
                _ => sink.line(&line),
            }
        }
        Ok(())
    }
}
