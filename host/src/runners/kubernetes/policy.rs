//! What the operator's `runners.kubernetes` block (and each
//! `runners.queues.<q>.kubernetes`) lets a queue's jobs do on the cluster:
//! whether they may run there at all, and how long their pod may stay
//! Pending before the job fails.

use crate::config::runners::{DEFAULT_PENDING_TIMEOUT, KubernetesSettings};
use crate::runners::policy::Origin;
use std::time::Duration;

/// The runner's name, as config keys spell it.
const RUNNER: &str = "kubernetes";

/// One queue's `kubernetes` rules, compiled.
#[derive(Clone, Debug)]
pub struct KubernetesPolicy {
    enabled: bool,
    pending_timeout: Duration,
    job_defaults: Option<serde_json::Value>,
    origin: Origin,
}

impl Default for KubernetesPolicy {
    fn default() -> Self {
        KubernetesPolicy {
            enabled: true,
            pending_timeout: Duration::from_secs(DEFAULT_PENDING_TIMEOUT),
            job_defaults: None,
            origin: Origin::EveryQueue,
        }
    }
}

impl KubernetesPolicy {
    /// The rules of `settings` (the defaults without a block); `origin` is
    /// where they come from, for errors.
    pub fn compile(settings: Option<&KubernetesSettings>, origin: Origin) -> KubernetesPolicy {
        let settings = settings.cloned().unwrap_or_default();
        KubernetesPolicy {
            enabled: settings.enabled,
            pending_timeout: Duration::from_secs(settings.pending_timeout.max(1)),
            job_defaults: settings.job_defaults.filter(|d| !d.is_null()),
            origin,
        }
    }

    /// The rules with another pending timeout (tests, benchmarks).
    pub fn with_pending_timeout(mut self, timeout: Duration) -> Self {
        self.pending_timeout = timeout;
        self
    }

    /// Whether the queue's jobs may run on the cluster.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The partial Job every job's manifest is laid over
    /// (`kubernetes.job_defaults`), if any.
    pub fn job_defaults(&self) -> Option<&serde_json::Value> {
        self.job_defaults.as_ref()
    }

    /// How long a pod may stay Pending before its job fails.
    pub fn pending_timeout(&self) -> Duration {
        self.pending_timeout
    }

    /// `Ok` when jobs from `queue` may run on the cluster; else the error
    /// names the config key that would allow them.
    pub fn check_enabled(&self, queue: &str) -> Result<(), String> {
        if self.enabled {
            return Ok(());
        }
        Err(format!(
            "jobs from queue `{queue}` may not run on Kubernetes: the agent's config turns {RUNNER} off for them; to allow them, set {} to true",
            self.origin.config_key(RUNNER, "enabled", queue)
        ))
    }
}
