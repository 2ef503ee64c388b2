//! What [`WandbBackend::connect`](super::WandbBackend::connect) needs: the
//! W&B API ([`ApiSettings`]: server, key, retries), the queues, and what
//! the agent tells the server about itself.

use super::cadence::Pace;
use crate::wandb::ApiSettings;

/// Everything [`WandbBackend::connect`](super::WandbBackend::connect) needs.
#[derive(Clone, Debug)]
pub struct WandbSettings {
    /// The server, the API key and how requests are retried; the W&B
    /// job-artifact source uses the same.
    pub api: ApiSettings,
    /// The entity (user or team) whose queues are served; `None` means the
    /// API key's own entity (from `Viewer`).
    pub entity: Option<String>,
    /// The queue names, in the order they are polled.
    pub queues: Vec<String>,
    /// The most jobs run at once (-1 for unlimited); sent in the agent
    /// config when that has no `max_jobs`.
    pub max_jobs: i64,
    /// The version reported to the server, e.g. `launch-agent@0.1.0`.
    pub agent_version: String,
    /// This machine's name, reported to the server.
    pub hostname: String,
    /// The agent's configuration as shown in the W&B UI, secrets already
    /// redacted (any occurrence of the API key is replaced again anyway).
    pub agent_config: serde_json::Value,
    /// How often the agent pops, asks whether to stop, heartbeats and asks
    /// whether runs were stopped ([`Pace::default`]: see [`super::cadence`]).
    pub pace: Pace,
}

impl WandbSettings {
    /// Settings for `entity` and `queues` with the API from the environment
    /// ([`ApiSettings::from_env`]) and defaults: no agent config, one job at
    /// a time, this machine's hostname, the default [`Pace`].
    pub fn from_env(entity: Option<String>, queues: Vec<String>) -> Self {
        WandbSettings {
            api: ApiSettings::from_env(),
            entity,
            queues,
            max_jobs: 1,
            agent_version: format!("launch-agent@{}", env!("CARGO_PKG_VERSION")),
            hostname: local_hostname(),
            agent_config: serde_json::Value::Object(Default::default()),
            pace: Pace::default(),
        }
    }
}

/// This machine's hostname (from `/proc`, else `HOSTNAME`, else `localhost`).
fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}
