//! `launch-config.yaml`: a superset of the W&B launch agent's config file.
//!
//! Every key the W&B agent accepts keeps its meaning (see the table below);
//! the keys this agent adds configure the plugin host and the queue. Unknown
//! keys are errors, as in W&B, and every error names the file, the key, the
//! line and the column.
//!
//! | key | type, default | meaning |
//! |---|---|---|
//! | `queues` | list of names, `[]` | queues to serve, in round-robin order |
//! | `queue` | name | one queue (W&B rejects this spelling; we accept it) |
//! | `entity` | string or null | W&B entity (the W&B backend needs it) |
//! | `max_jobs` | int, 1 | jobs run at once; -1 is unlimited |
//! | `max_schedulers` | int, 1 | accepted for compatibility (sweeps schedulers) |
//! | `secure_mode` | bool, false | accepted for compatibility |
//! | `verbosity` | int, 0 | 0 info, 1 debug, 2+ trace |
//! | `stopped_run_timeout` | seconds, 60 | how long a stopped run may take to exit |
//! | `environment` | block | `type: local\|aws\|gcp\|azure\|<plugin>`, `region`, `project` |
//! | `registry` | block | `type: ecr\|gcr\|acr\|oci\|<plugin>`, `uri`, `repository`, `image-name`, `region`, `project` |
//! | `builder` | block | `type: docker\|kaniko\|noop\|<plugin>` and the W&B builder keys |
//! | `state_dir` | path | where the embedded queue and run logs live |
//! | `queue_backend` | `embedded` (default), `wandb` or `postgres` | which queues to serve: the embedded queue, a W&B server's launch queues, or a PostgreSQL database's |
//! | `postgres` | block | `url-secret: NAME`: the secret holding the PostgreSQL queue's URL (else `DATABASE_URL`) |
//! | `plugin_dir` | path | a dir of `.wasm` files that override the default bundle's embedded ones |
//! | `plugins` | map | plugins by name: file, digest, grants, limits, settings |
//! | `secrets` | map | named secrets and where their values come from |
//! | `lease_seconds` | int, 30 | how long a claim lasts without renewal |
//! | `max_attempts` | int, 3 | claims of a job by agents that then died, before it fails |
//! | `shutdown_grace_seconds` | int, 30 | how long running jobs get to finish on SIGINT/SIGTERM |
//! | `runners` | block | what jobs may do on this machine, per runner and queue: host paths, host namespaces, `local-process` (see [`runners`]) |
//! | `max_log_mb` | int, 1024 | the most each log of a run (`agent.log`, `output.log`) may hold, in MiB; the cut is said in the log |
//!
//! A full example:
//!
//! ```yaml
//! queues: [default, gpu]
//! max_jobs: 4
//! environment:
//!   type: local
//! builder:
//!   type: noop
//! state_dir: /var/lib/launch-agent
//! secrets:
//!   registry-password: { env: REGISTRY_PASSWORD }
//! plugins:
//!   my-builder:
//!     path: /opt/plugins/my-builder.wasm
//!     sha256: 3f1c0a...           # optional pin, checked before loading
//!     grants:
//!       hosts: ["https://registry.example.com"]
//!       env: [HOME]
//!       secrets: [registry-password]
//!       dirs: [{ path: /srv/build-cache, write: true }]
//!     limits: { deadline_ms: 60000, timeout_ms: 600000, memory_mb: 256 }
//!     config: { any: settings }
//! ```

mod blocks;
mod error;
mod plugins;
pub mod runners;
#[cfg(test)]
mod tests;

pub use blocks::{BuilderConfig, EnvironmentConfig, RegistryConfig};
pub use error::ConfigError;
pub use plugins::{
    BlobGrant, DirGrant, Grants, KubernetesGrant, Limits, OciPull, PluginEntry, SecretSource,
    SignaturePolicy, parse_sha256 as plugins_sha,
};

use crate::input;
use crate::text::for_log;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// How many queue names [`LaunchConfig::summary`] lists.
pub const SUMMARY_QUEUES: usize = 20;

/// Which queue backend the agent serves.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum QueueBackend {
    /// The on-disk SQLite queue in the state dir (no server needed).
    #[default]
    Embedded,
    /// Launch queues on a W&B server (`WANDB_BASE_URL`, `WANDB_API_KEY` or
    /// `~/.netrc`), as `wandb launch-agent` serves them.
    Wandb,
    /// A queue in a PostgreSQL database, shared by agents on many machines
    /// (the `postgres:` block or `DATABASE_URL` says where).
    Postgres,
}

/// The `postgres:` block: where the PostgreSQL queue is.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// The name of the secret (under `secrets:`) whose value is the
    /// connection URL; the URL itself never goes in the file.
    #[serde(rename = "url-secret")]
    pub url_secret: String,
}

/// The parsed `launch-config.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchConfig {
    /// Queues to serve, in order.
    #[serde(default)]
    pub queues: Vec<String>,
    /// A single queue; joins `queues`.
    #[serde(default)]
    pub queue: Option<String>,
    /// The W&B entity.
    #[serde(default)]
    pub entity: Option<String>,
    /// How many jobs run at once; -1 for unlimited.
    #[serde(default = "default_max_jobs")]
    pub max_jobs: Spanned<i64>,
    /// Accepted for W&B compatibility; this agent runs no sweep schedulers.
    #[serde(default)]
    pub max_schedulers: Option<i64>,
    /// Accepted for W&B compatibility.
    #[serde(default)]
    pub secure_mode: bool,
    /// Log verbosity: 0 info, 1 debug, 2 or more trace.
    #[serde(default)]
    pub verbosity: u8,
    /// Seconds a stopped run may take to exit before it is killed.
    #[serde(default = "default_stopped_run_timeout")]
    pub stopped_run_timeout: u64,
    /// The `environment:` block.
    #[serde(default)]
    pub environment: Option<EnvironmentConfig>,
    /// The `registry:` block.
    #[serde(default)]
    pub registry: Option<RegistryConfig>,
    /// The `builder:` block.
    #[serde(default)]
    pub builder: Option<BuilderConfig>,
    /// Where the embedded queue, run logs and compiled plugins live.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// The queue backend.
    #[serde(default)]
    pub queue_backend: QueueBackend,
    /// The `postgres:` block (with `queue_backend: postgres`).
    #[serde(default)]
    pub postgres: Option<PostgresConfig>,
    /// A dir of `.wasm` files that override the default bundle's embedded ones.
    #[serde(default)]
    pub plugin_dir: Option<PathBuf>,
    /// Plugins by name.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginEntry>,
    /// Named secrets.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSource>,
    /// Seconds a claim lasts without renewal.
    #[serde(default = "default_lease_seconds")]
    pub lease_seconds: u64,
    /// Claims by agents that then died before a job is failed.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Seconds running jobs get to finish after SIGINT/SIGTERM before they are
    /// stopped and handed back to the queue.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_seconds: u64,
    /// What jobs may do on this machine, per runner and per queue.
    #[serde(default)]
    pub runners: runners::RunnersConfig,
    /// The most each log of a run may hold, in MiB.
    #[serde(default = "default_max_log_mb")]
    pub max_log_mb: u64,
    /// The file this config was read from (not a key).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

fn default_max_jobs() -> Spanned<i64> {
    let nowhere = serde_saphyr::Location::UNKNOWN;
    Spanned::new(1, nowhere, nowhere)
}
fn default_stopped_run_timeout() -> u64 {
    60
}
fn default_lease_seconds() -> u64 {
    30
}
fn default_max_attempts() -> u32 {
    3
}
fn default_shutdown_grace() -> u64 {
    30
}
fn default_max_log_mb() -> u64 {
    1024
}

impl Default for LaunchConfig {
    fn default() -> Self {
        // An empty document is a valid config: every key has a default.
        match Self::parse("{}", Path::new("<default>")) {
            Ok(config) => config,
            Err(e) => unreachable!("the empty config is valid: {e}"),
        }
    }
}

impl LaunchConfig {
    /// Reads and validates the config file at `path` (at most
    /// [`crate::input::MAX_INPUT_BYTES`], UTF-8).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let bytes = input::read_capped(path).map_err(|reason| ConfigError::read(path, reason))?;
        let text = input::utf8(&bytes).map_err(|problem| ConfigError::syntax(path, problem))?;
        Self::parse(text, path)
    }

    /// Parses and validates config text; `file` names it in errors. Text
    /// that is only whitespace and comments is the empty config.
    pub fn parse(text: &str, file: &Path) -> Result<Self, ConfigError> {
        let text = if input::is_blank(text) { "{}" } else { text };
        let mut config: LaunchConfig =
            input::yaml::from_str(text).map_err(|problem| ConfigError::syntax(file, problem))?;
        config.source = Some(file.to_path_buf());
        config.validate(file)?;
        Ok(config)
    }

    fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        let max_jobs = &self.max_jobs;
        if max_jobs.value == 0 || max_jobs.value < -1 {
            return Err(ConfigError::at(
                file,
                "max_jobs",
                &max_jobs.referenced,
                format!(
                    "must be a positive number of jobs or -1 for unlimited, not {}",
                    max_jobs.value
                ),
            ));
        }
        for (name, entry) in &self.plugins {
            entry.validate(file, name, &self.secrets)?;
        }
        for (name, source) in &self.secrets {
            source.validate(file, name)?;
        }
        self.runners.validate(file)?;
        if let Some(postgres) = &self.postgres {
            if self.queue_backend != QueueBackend::Postgres {
                return Err(ConfigError::invalid(
                    file,
                    "postgres",
                    "is only read with `queue_backend: postgres`",
                ));
            }
            if !self.secrets.contains_key(&postgres.url_secret) {
                return Err(ConfigError::invalid(
                    file,
                    "postgres.url-secret",
                    format!(
                        "names secret {:?}, which `secrets:` does not define",
                        for_log(&postgres.url_secret)
                    ),
                ));
            }
        }
        if self.max_attempts == 0 {
            return Err(ConfigError::invalid(
                file,
                "max_attempts",
                "must be at least 1",
            ));
        }
        if self.max_log_mb == 0 || self.max_log_mb > 1 << 30 {
            return Err(ConfigError::invalid(
                file,
                "max_log_mb",
                "must be at least 1 (MiB) and at most 1073741824",
            ));
        }
        if self.lease_seconds < 3 {
            return Err(ConfigError::invalid(
                file,
                "lease_seconds",
                "must be at least 3 seconds",
            ));
        }
        Ok(())
    }

    /// The queues to serve: `queue` and `queues` together, without repeats,
    /// or `default` when neither names one.
    pub fn queue_names(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        let mut names: Vec<String> = self
            .queue
            .iter()
            .chain(self.queues.iter())
            .filter(|name| seen.insert(name.as_str()))
            .cloned()
            .collect();
        if names.is_empty() {
            names.push("default".to_string());
        }
        names
    }

    /// One line for `config check`: the queues (the first
    /// [`SUMMARY_QUEUES`], then how many more), the environment and builder
    /// types and the number of plugins, every value escaped and cut.
    pub fn summary(&self) -> String {
        let names = self.queue_names();
        let mut queues: Vec<String> = names
            .iter()
            .take(SUMMARY_QUEUES)
            .map(|name| for_log(name).into_owned())
            .collect();
        if names.len() > SUMMARY_QUEUES {
            queues.push(format!("and {} more", names.len() - SUMMARY_QUEUES));
        }
        let environment = self.environment.as_ref().map(|e| e.kind.value.as_str());
        let builder = self.builder.as_ref().and_then(|b| b.kind());
        format!(
            "queues: {}, environment: {}, builder: {}, plugins: {}",
            queues.join(", "),
            for_log(environment.unwrap_or("local")),
            for_log(builder.unwrap_or("noop")),
            self.plugins.len()
        )
    }

    /// `max_jobs` as a limit: `None` for unlimited.
    pub fn max_jobs_limit(&self) -> Option<usize> {
        usize::try_from(self.max_jobs.value).ok()
    }

    /// The directory the config file is in, against which relative paths in
    /// it are resolved.
    pub fn base_dir(&self) -> PathBuf {
        self.source
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    }

    /// Resolves a path written in the config against the config's directory.
    pub fn resolve_path(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir().join(path)
        }
    }
}
