//! The records the queue stores: items, their states and the stage a
//! failure belongs to.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The stage of a job a failure belongs to (the stages W&B Launch reports).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// The agent itself failed to handle the job (bad spec, the agent died, ...).
    Agent,
    /// Building the job's image or environment failed.
    Build,
    /// The job ran and failed.
    Run,
}

impl Stage {
    /// Every stage, in the order a job goes through them.
    pub const ALL: [Stage; 3] = [Stage::Agent, Stage::Build, Stage::Run];

    /// The lowercase name used in the database, JSON and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Agent => "agent",
            Stage::Build => "build",
            Stage::Run => "run",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Stage {
    type Err = ParseNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Stage::ALL
            .into_iter()
            .find(|stage| stage.as_str() == s)
            .ok_or_else(|| ParseNameError::new("stage", s, &Stage::ALL.map(Stage::as_str)))
    }
}

/// Where a queue item is in its life.
///
/// `queued -> claimed -> running -> finished | failed | stopped`; a claimed
/// or running item can also go back to `queued` (handed back, or reclaimed
/// from an agent that died). `finished`, `failed` and `stopped` are terminal:
/// an item in one of them never changes state again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemState {
    /// Waiting for an agent.
    Queued,
    /// Taken by an agent (which holds a lease on it) but not started yet:
    /// the agent is preparing or building it.
    Claimed,
    /// The job's run has started.
    Running,
    /// The run ended successfully.
    Finished,
    /// The job failed; the item's `stage` says where.
    Failed,
    /// The job was stopped on request.
    Stopped,
}

impl ItemState {
    /// Every state, in life-cycle order.
    pub const ALL: [ItemState; 6] = [
        ItemState::Queued,
        ItemState::Claimed,
        ItemState::Running,
        ItemState::Finished,
        ItemState::Failed,
        ItemState::Stopped,
    ];

    /// The lowercase name used in the database, JSON and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemState::Queued => "queued",
            ItemState::Claimed => "claimed",
            ItemState::Running => "running",
            ItemState::Finished => "finished",
            ItemState::Failed => "failed",
            ItemState::Stopped => "stopped",
        }
    }

    /// Whether the state is final (`finished`, `failed` or `stopped`).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ItemState::Finished | ItemState::Failed | ItemState::Stopped
        )
    }

    /// Whether an agent holds the item (`claimed` or `running`).
    pub fn is_held(self) -> bool {
        matches!(self, ItemState::Claimed | ItemState::Running)
    }
}

impl fmt::Display for ItemState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ItemState {
    type Err = ParseNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ItemState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| ParseNameError::new("state", s, &ItemState::ALL.map(ItemState::as_str)))
    }
}

/// A string that is not the name of a [`Stage`] or an [`ItemState`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?} (expected one of: {expected})")]
pub struct ParseNameError {
    kind: &'static str,
    value: String,
    expected: String,
}

impl ParseNameError {
    fn new(kind: &'static str, value: &str, expected: &[&str]) -> Self {
        ParseNameError {
            kind,
            value: value.to_owned(),
            expected: expected.join(", "),
        }
    }
}

/// One job in a queue, as stored.
///
/// Timestamps are RFC 3339 in UTC with millisecond precision, e.g.
/// `2025-01-31T12:00:00.123Z`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueueItem {
    /// Unique id: a UUID v4 in its simple form (32 lowercase hex digits).
    pub id: String,
    /// The queue the item was submitted to.
    pub queue: String,
    /// Where the item is in its life.
    pub state: ItemState,
    /// The stage a failure belongs to; set when the item failed.
    pub stage: Option<Stage>,
    /// A human message: why it failed or stopped, or what happened to it last.
    pub message: Option<String>,
    /// The exit code of the run, when there was one.
    pub exit_code: Option<i32>,
    /// How many times an agent claimed the item (a hand-back does not count).
    pub attempts: u32,
    /// The launch spec: a JSON object, exactly as submitted.
    pub spec: serde_json::Value,
    /// When the item was submitted.
    pub created_at: String,
    /// When the item last changed.
    pub updated_at: String,
    /// When its run started (cleared if it goes back to the queue).
    pub started_at: Option<String>,
    /// When it reached a terminal state.
    pub finished_at: Option<String>,
    /// The id of the agent that holds it, or last held it.
    pub claimed_by: Option<String>,
    /// Until when the holder's lease runs; set while claimed or running.
    pub lease_expires_at: Option<String>,
    /// Whether someone asked for the item to be stopped.
    pub stop_requested: bool,
    /// Where the item's run is, as its runner recorded it, kept so what
    /// is left of it can be cleaned up after an agent crashed.
    pub run_handle: Option<RunHandle>,
}

/// Where a run is, as the runner that started it recorded it: enough for
/// that runner, and only it, to find the run again after its agent died.
///
/// The queue stores it and hands it back without reading `id`: a process
/// group id for `local-process`, a container id for `local-container`. It
/// never holds a secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunHandle {
    /// The runner that started the run: its `resource` name.
    pub runner: String,
    /// The runner's own id of the run, opaque to everyone else.
    pub id: String,
}

/// What [`EmbeddedQueue::reclaim_abandoned`](super::embedded::EmbeddedQueue::reclaim_abandoned)
/// did to one item whose holder was gone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reclaimed {
    /// The item's id.
    pub id: String,
    /// The agent that held the item (`"unknown"` if none was recorded).
    pub previous_holder: String,
    /// Where its run is, if one was recorded: the caller should make sure
    /// it is gone.
    pub run_handle: Option<RunHandle>,
    /// The item's state now: `queued` (another attempt), `failed` (out of
    /// attempts) or `stopped` (a stop had been requested).
    pub new_state: ItemState,
}
