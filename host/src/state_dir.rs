//! The agent's state dir: the embedded queue, run logs, the compiled-plugin
//! cache and the wake-up sockets.
//!
//! Chosen in this order: `--state-dir`, `LAUNCH_AGENT_STATE_DIR` (clap reads
//! both), the config's `state_dir`, the user's data dir
//! (`~/.local/share/launch-agent` on Linux).
//!
//! The agent checks that the state dir can take writes before it claims
//! work ([`StateDir::check_writable`]): a job whose outcome or logs cannot
//! be written should not be started. The answer is one of:
//!
//! | finding | [`StorageProblem`] | what the agent does |
//! |---|---|---|
//! | a probe file of [`PROBE_BYTES`] is written and removed | — | claims |
//! | the disk is full or over quota (`ENOSPC`, `EDQUOT`) | [`StorageProblem::Full`] | claims nothing until space returns; says so once, then every few minutes |
//! | anything else: read-only, no permission, `runs/` is not a directory, I/O errors | [`StorageProblem::Unwritable`] | stops: the agent's own storage needs a person |

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// How much the write probe writes: room for a job's first log lines and
/// its outcome.
pub const PROBE_BYTES: usize = 256 * 1024;

/// The paths inside a state dir.
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

/// Why the state dir cannot take writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageProblem {
    /// The disk is full or over quota: passes once space is freed.
    Full(String),
    /// The state dir cannot be written at all, or is damaged (read-only,
    /// no permission, a file where a directory belongs): needs a person.
    Unwritable(String),
}

impl fmt::Display for StorageProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageProblem::Full(message) | StorageProblem::Unwritable(message) => {
                f.write_str(message)
            }
        }
    }
}

impl StorageProblem {
    /// The problem an I/O error on `path` while `doing` something shows.
    pub fn from_io(error: &std::io::Error, path: &Path, doing: &str) -> Self {
        let message = format!("{doing} {}: {error}", path.display());
        match error.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT) => StorageProblem::Full(message),
            _ => StorageProblem::Unwritable(message),
        }
    }
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
        self.runs_dir().join(item_id)
    }
    /// The parent of every run dir.
    pub fn runs_dir(&self) -> PathBuf {
        self.root.join("runs")
    }
    /// The compiled-plugin cache.
    pub fn plugin_cache(&self) -> PathBuf {
        self.root.join("cache").join("plugins")
    }
    /// Plugins pulled from OCI registries, by digest
    /// ([`crate::plugins::oci_source`]).
    pub fn oci_plugins(&self) -> PathBuf {
        self.root.join("plugins").join("oci")
    }
    /// The agents' wake-up sockets.
    pub fn wake_dir(&self) -> PathBuf {
        self.root.join("wake")
    }

    /// Checks that the state dir can take the writes a job needs: `runs/`
    /// is (or can be made) a directory, and a probe file of [`PROBE_BYTES`]
    /// can be written there and removed. Blocks for as long as those file
    /// operations take.
    pub fn check_writable(&self) -> Result<(), StorageProblem> {
        let runs = self.runs_dir();
        if let Ok(meta) = std::fs::metadata(&runs)
            && !meta.is_dir()
        {
            return Err(StorageProblem::Unwritable(format!(
                "{} is not a directory: the state dir is damaged (move it aside and the agent makes a new one)",
                runs.display()
            )));
        }
        std::fs::create_dir_all(&runs)
            .map_err(|e| StorageProblem::from_io(&e, &runs, "cannot create"))?;
        let probe = runs.join(format!(".write-probe-{}", std::process::id()));
        let written = std::fs::File::create(&probe).and_then(|mut file| {
            file.write_all(&[0u8; PROBE_BYTES])?;
            file.flush()
        });
        let _ = std::fs::remove_file(&probe);
        written.map_err(|e| StorageProblem::from_io(&e, &probe, "cannot write"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_where_runs_belongs_makes_the_state_dir_unwritable() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::resolve(Some(dir.path()), None);
        assert_eq!(state.check_writable(), Ok(()));
        std::fs::remove_dir_all(state.runs_dir()).unwrap();
        std::fs::write(state.runs_dir(), "not a dir").unwrap();
        let problem = state.check_writable().unwrap_err();
        assert!(
            matches!(&problem, StorageProblem::Unwritable(m) if m.contains("runs") && m.contains("not a directory")),
            "{problem:?}"
        );
    }

    #[test]
    fn no_space_is_a_full_disk_and_other_errors_are_not() {
        let path = Path::new("/state/runs");
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(matches!(
            StorageProblem::from_io(&full, path, "cannot write"),
            StorageProblem::Full(_)
        ));
        let quota = std::io::Error::from_raw_os_error(libc::EDQUOT);
        assert!(matches!(
            StorageProblem::from_io(&quota, path, "cannot write"),
            StorageProblem::Full(_)
        ));
        let read_only = std::io::Error::from_raw_os_error(libc::EROFS);
        let problem = StorageProblem::from_io(&read_only, path, "cannot write");
        assert!(
            matches!(&problem, StorageProblem::Unwritable(m) if m.contains("/state/runs")),
            "{problem:?}"
        );
    }
}
