//! `launch:plugin/log`: plugin log lines into the agent's tracing output,
//! tagged with the plugin's name, and into the job's log, within the
//! per-call caps of [`call_caps`] (lines, bytes,
//! warnings); the time a call spends here counts against its deadline.

use crate::capabilities::bindings::launch::plugin::log::{Host, Level};
use crate::capabilities::call_caps::{self, LogVerdict, MAX_LINE, MAX_WARNING};
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

impl Host for CapabilityState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        // A log call is the plugin's own time, not a wait on the host.
        self.charge_to_plugin = true;
        let notice = match self.log_use.admit(message.len().min(MAX_LINE)) {
            LogVerdict::Write => None,
            LogVerdict::Notice(notice) => Some(notice),
            LogVerdict::Drop => return Ok(()),
        };
        let plugin = &*self.plugin_name;
        if let Some(notice) = notice {
            tracing::warn!(plugin, "{notice}");
            if let Some(sink) = &self.log_sink {
                sink.line(&format!("[{plugin}] {notice}"));
            }
            return Ok(());
        }
        // Cut before scrubbing only what no held secret could reach into
        // the line that is kept.
        let mut message = message;
        message.truncate(call_caps::char_floor(
            &message,
            MAX_LINE.saturating_add(self.longest_secret),
        ));
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
                Level::Warn if self.log_use.admit_warning() => {
                    sink.warning(&call_caps::cut(&line, MAX_WARNING))
                }
                _ => sink.line(&line),
            }
        }
        Ok(())
    }
}
