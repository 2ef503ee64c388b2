//! The agent's state dir: the embedded queue, run logs, the compiled-plugin
//! cache and the wake-up sockets.
//!
//! Chosen in this order: `--state-dir`, `LAUNCH_AGENT_STATE_DIR` (clap reads
//! both), the config's `state_dir`, the user's data dir
//! (`~/.local/share/launch-agent` on Linux).

use std::path::{Path, PathBuf};

/// The paths inside a state dir.
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Picks the state dir (see the module doc).
    pub fn resolve(
        cli_or_env: Option<&Path>,
        config: Option<&crate::config::LaunchConfig>,
    ) -> Self {
        let root = cli_or_env
            .map(Path::to_path_buf)
            .or_else(|| config.and_then(|c| c.state_dir.as_ref().map(|d| c.resolve_path(d))))
            .or_else(|| dirs::data_dir().map(|d| d.join("launch-agent")))
            .unwrap_or_else(|| PathBuf::from(".launch-agent"));
        StateDir { root }
    }

    /// The state dir itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// Per-run files: `runs/<item id>/`.
    pub fn run_dir(&self, item_id: &str) -> PathBuf {
        self.root.join("runs").join(item_id)
    }
    /// The compiled-plugin cache.
    pub fn plugin_cache(&self) -> PathBuf {
        self.root.join("cache").join("plugins")
    }
    /// The agents' wake-up sockets.
    pub fn wake_dir(&self) -> PathBuf {
        self.root.join("wake")
    }
}
