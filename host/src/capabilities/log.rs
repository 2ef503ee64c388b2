//! `launch:plugin/log`: plugin log lines into the agent's tracing output,
//! tagged with the plugin's name, and into the job's log, within the
//! per-call caps of [`call_caps`] (lines, bytes,
//! warnings); the time a call spends here counts against its deadline.

use crate::capabilities::bindings::launch::plugin::log::{Host, Level};
use crate::capabilities::call_caps::{self, LogVerdict, MAX_LINE, MAX_WARNING};
use crate::capabilities::state::CapabilityState;
use crate::redact::{Redactor, SplitGuard};
use std::sync::{Arc, Mutex};

/// Where a job's log lines go besides tracing: the job's log file, and for
/// warnings also the queue (W&B shows them on the queue item).
///
/// Every line passes the agent's [`Redactor`] first (each secret a plugin
/// held, in its common encodings) and a [`SplitGuard`] (a secret split
/// across consecutive lines); a line that ends in the start of a secret is
/// held back until the next one, or until the log is dropped.
pub struct JobLog {
    line: Box<dyn Fn(&str) + Send + Sync>,
    warning: Box<dyn Fn(&str) + Send + Sync>,
    redactor: Arc<Redactor>,
    guard: Mutex<SplitGuard<bool>>,
}

impl JobLog {
    /// A log writing each line with `line` and reporting each warning with
    /// `warning` (after writing it with `line` too), with a redactor of its
    /// own.
    pub fn new(
        line: Box<dyn Fn(&str) + Send + Sync>,
        warning: Box<dyn Fn(&str) + Send + Sync>,
    ) -> Self {
        Self::with_redactor(line, warning, Arc::default())
    }

    /// Same as [`JobLog::new`], redacting what `redactor` knows (the
    /// agent's, shared by its jobs).
    pub fn with_redactor(
        line: Box<dyn Fn(&str) + Send + Sync>,
        warning: Box<dyn Fn(&str) + Send + Sync>,
        redactor: Arc<Redactor>,
    ) -> Self {
        JobLog {
            line,
            warning,
            redactor,
            guard: Mutex::default(),
        }
    }

    /// The redactor every line passes.
    pub fn redactor(&self) -> &Arc<Redactor> {
        &self.redactor
    }

    /// Writes one line to the job's log.
    pub fn line(&self, text: &str) {
        self.said(false, "", text)
    }

    /// Writes a warning to the job's log and reports it to the queue.
    pub fn warning(&self, text: &str) {
        self.said(true, "", text)
    }

    /// Writes the line `who` + `text` (a warning when `warning`): `who`
    /// names the speaker (`[plugin] `) and is left out when consecutive
    /// lines are checked for a secret split across them.
    pub fn said(&self, warning: bool, who: &str, text: &str) {
        let ready = match self.guard.lock() {
            Ok(mut guard) => guard.push(&self.redactor, warning, who, text),
            Err(_) => vec![(warning, format!("{who}{}", self.redactor.scrub(text)))],
        };
        self.emit(ready);
    }

    fn emit(&self, lines: Vec<(bool, String)>) {
        for (warning, text) in lines {
            (self.line)(&text);
            if warning {
                (self.warning)(&text);
            }
        }
    }
}

impl Drop for JobLog {
    fn drop(&mut self) {
        let held = match self.guard.get_mut() {
            Ok(guard) => guard.finish(&self.redactor),
            Err(_) => Vec::new(),
        };
        self.emit(held);
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
            let warning = matches!(level, Level::Warn) && self.log_use.admit_warning();
            let text = if warning {
                call_caps::cut(&message, MAX_WARNING)
            } else {
                message.clone()
            };
            sink.said(warning, &format!("[{plugin}] "), &text);
        }
        Ok(())
    }
}
