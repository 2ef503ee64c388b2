//! Where jobs run. Each runner starts a run, streams its output to the run's
//! log, and reports how it ended; a stop request ends it early.
//!
//! | `resource` | runner |
//! |---|---|
//! | `local-process` | [`local_process`]: a process on this machine |

pub mod local_container;
pub mod local_process;

use std::path::PathBuf;

/// What the agent asks a runner to run.
#[derive(Clone, Debug)]
pub struct RunRequest {
    /// The queue item id.
    pub item_id: String,
    /// The command and its arguments.
    pub command: Vec<String>,
    /// Environment variables added to the run's environment.
    pub env: Vec<(String, String)>,
    /// Environment variables removed from the inherited environment (the
    /// ones that back the config's secrets).
    pub env_remove: Vec<String>,
    /// The working directory.
    pub workdir: Option<PathBuf>,
    /// The run's output log.
    pub log_path: PathBuf,
    /// How long a stopped run gets between SIGTERM and SIGKILL (W&B's
    /// `stopped_run_timeout`).
    pub stop_grace: std::time::Duration,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// Exit code 0.
    Finished,
    /// A non-zero exit code, or killed by a signal (`exit_code` None).
    Failed {
        /// The exit code, when it exited.
        exit_code: Option<i32>,
        /// What happened.
        message: String,
    },
    /// Stopped on request.
    Stopped,
}

/// What the agent tells a running job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Carry on.
    Run,
    /// Stop the run; the item ends `stopped`.
    Stop,
    /// Stop the run; the item goes back to the queue (agent shutdown).
    HandBack,
}
