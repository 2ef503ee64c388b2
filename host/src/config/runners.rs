//! The `runners:` block: what jobs from the queues may do on this machine.
//!
//! A launch spec is written by whoever can submit to a queue, and two of its
//! parts reach past the job's own sandbox: `resource: local-process` runs any
//! command on this machine as the agent's user, and
//! `resource_args.local-container` can ask the Docker Engine for host paths
//! and host namespaces, which hand a container the machine. Those are the
//! operator's decisions, so they are made here, per runner and per queue,
//! and what this block does not allow is refused (the job fails at stage
//! `agent`, naming the key that would allow it). W&B's config has no such
//! key; a W&B config without it keeps working: `local-process` stays
//! allowed, as in W&B, and the agent warns at start-up that it trusts the
//! queues' submitters with this machine.
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `local-process.enabled` | `true` | jobs may run as processes on this machine (start-up warns while it is on) |
//! | `local-process.user` | none: the agent's user | run those processes as this user (`name`, `uid` or `uid:gid`); the agent must be root to switch |
//! | `local-container.enabled` | `true` | jobs may run as containers on the Docker Engine |
//! | `local-container.volumes` | `[]`: none | host paths jobs may bind-mount (what is below them too); read-only unless `write: true` |
//! | `local-container.host_namespaces` | `[]`: none | which of this machine's namespaces a container may share: `network`, `ipc`, `pid`, `uts`, `userns`, `cgroupns` |
//! | `local-container.gpus` | `true` | jobs may ask for GPUs (`resource_args.local-container.gpus`) |
//! | `kubernetes.enabled` | `true` | jobs may run as Jobs on the Kubernetes cluster the agent's kubeconfig (or in-cluster service account) reaches |
//! | `kubernetes.pending_timeout` | `600` | seconds a job's pod may stay Pending (unschedulable, image pull back-off) before the job fails; the reason is a queue warning within seconds |
//! | `kubernetes.job_defaults` | none | a partial batch/v1 Job every job's `resource_args.kubernetes` is laid over (node affinity, tolerations, volumes: what `deploy coreweave --region/--gpu-class` writes); the job's own values win (see [`crate::runners::kubernetes::manifest::with_defaults`]) |
//! | `queues.<queue>.local-process`, `queues.<queue>.local-container`, `queues.<queue>.kubernetes` | the runner's block above | the same keys for jobs from that queue only: the queue's block replaces the runner's block for them (keys it leaves out take the defaults of this table, not the runner block's values) |
//!
//! An example:
//!
//! ```yaml
//! runners:
//!   local-process:
//!     enabled: false                 # no queue may run processes on this machine...
//!   local-container:
//!     volumes:
//!       - /data/datasets             # read-only, and what is below it
//!       - { path: /scratch, write: true }
//!     host_namespaces: [network]     # `network: host` (NCCL across machines)
//!   kubernetes:
//!     pending_timeout: 300           # a pod Pending for 5 minutes fails its job
//!   queues:
//!     trusted:                       # ...but jobs from queue `trusted` may, as user launch-jobs
//!       local-process: { enabled: true, user: launch-jobs }
//!     public:                        # jobs from queue `public`: containers without
//!       local-container: { gpus: false }   # host paths, host namespaces or GPUs
//! ```
//!
//! This module only reads and checks the block; the runners compile it once
//! at start-up (paths resolved on this machine) into the policy they check
//! every job against ([`crate::runners::policy`]).

use super::ConfigError;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// The `runners:` block.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnersConfig {
    /// The `local-process` runner, for every queue without its own block.
    #[serde(default, rename = "local-process")]
    pub local_process: Option<LocalProcessSettings>,
    /// The `local-container` runner, for every queue without its own block.
    #[serde(default, rename = "local-container")]
    pub local_container: Option<LocalContainerSettings>,
    /// The `kubernetes` runner, for every queue without its own block.
    #[serde(default)]
    pub kubernetes: Option<KubernetesSettings>,
    /// Blocks for the jobs of one queue, by queue name.
    #[serde(default)]
    pub queues: BTreeMap<String, QueueRunners>,
}

/// `runners.queues.<queue>`: the runners' blocks for one queue's jobs.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueRunners {
    /// Replaces `runners.local-process` for this queue's jobs.
    #[serde(default, rename = "local-process")]
    pub local_process: Option<LocalProcessSettings>,
    /// Replaces `runners.local-container` for this queue's jobs.
    #[serde(default, rename = "local-container")]
    pub local_container: Option<LocalContainerSettings>,
    /// Replaces `runners.kubernetes` for this queue's jobs.
    #[serde(default)]
    pub kubernetes: Option<KubernetesSettings>,
}

/// What `kubernetes` jobs may do.
///
/// ```yaml
/// kubernetes: { enabled: true, pending_timeout: 600 }
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSettings {
    /// Whether jobs may run as Kubernetes Jobs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Seconds a job's pod may stay Pending before the job fails.
    #[serde(default = "default_pending_timeout")]
    pub pending_timeout: u64,
    /// A partial batch/v1 Job under every job's manifest.
    #[serde(default)]
    pub job_defaults: Option<serde_json::Value>,
}

impl Default for KubernetesSettings {
    fn default() -> Self {
        KubernetesSettings {
            enabled: true,
            pending_timeout: default_pending_timeout(),
            job_defaults: None,
        }
    }
}

/// `kubernetes.pending_timeout` when unset: ten minutes.
pub const DEFAULT_PENDING_TIMEOUT: u64 = 600;

fn default_pending_timeout() -> u64 {
    DEFAULT_PENDING_TIMEOUT
}

/// What `local-process` jobs may do.
///
/// ```yaml
/// local-process: { enabled: true, user: launch-jobs }
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalProcessSettings {
    /// Whether jobs may run as processes on this machine.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The user they run as (`name`, `uid` or `uid:gid`); none: the agent's.
    #[serde(default)]
    pub user: Option<Spanned<String>>,
}

impl Default for LocalProcessSettings {
    fn default() -> Self {
        LocalProcessSettings {
            enabled: true,
            user: None,
        }
    }
}

/// What `local-container` jobs may ask the engine for.
///
/// ```yaml
/// local-container:
///   volumes: [/data/datasets, { path: /scratch, write: true }]
///   host_namespaces: [network]
///   gpus: true
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalContainerSettings {
    /// Whether jobs may run as containers.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Host paths jobs may bind-mount.
    #[serde(default)]
    pub volumes: Vec<VolumeGrant>,
    /// This machine's namespaces a container may share.
    #[serde(default)]
    pub host_namespaces: Vec<HostNamespace>,
    /// Whether jobs may ask for GPUs.
    #[serde(default = "yes")]
    pub gpus: bool,
}

impl Default for LocalContainerSettings {
    fn default() -> Self {
        LocalContainerSettings {
            enabled: true,
            volumes: Vec::new(),
            host_namespaces: Vec::new(),
            gpus: true,
        }
    }
}

fn yes() -> bool {
    true
}

/// A host path jobs may bind-mount, with what is below it.
///
/// ```yaml
/// volumes:
///   - /data/datasets                  # read-only
///   - { path: /scratch, write: true }
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum VolumeGrant {
    /// Just a path: read-only.
    Path(PathBuf),
    /// A path with options.
    Full {
        /// The path on this machine.
        path: PathBuf,
        /// Whether jobs may write in it.
        #[serde(default)]
        write: bool,
    },
}

impl VolumeGrant {
    /// The path on this machine, as written.
    pub fn path(&self) -> &Path {
        match self {
            VolumeGrant::Path(path) | VolumeGrant::Full { path, .. } => path,
        }
    }

    /// Whether jobs may write in it.
    pub fn writable(&self) -> bool {
        matches!(self, VolumeGrant::Full { write: true, .. })
    }
}

/// One of this machine's namespaces, as `resource_args.local-container`
/// asks for it with `<key>: host`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum HostNamespace {
    /// `network: host`: this machine's interfaces and ports.
    Network,
    /// `ipc: host`: this machine's shared memory and semaphores.
    Ipc,
    /// `pid: host`: this machine's processes (seen, and signalled as root).
    Pid,
    /// `uts: host`: this machine's hostname.
    Uts,
    /// `userns: host`: no user-namespace remapping (where the engine remaps).
    Userns,
    /// `cgroupns: host`: this machine's cgroup tree.
    Cgroupns,
}

impl HostNamespace {
    /// Every namespace.
    pub const ALL: [HostNamespace; 6] = [
        HostNamespace::Network,
        HostNamespace::Ipc,
        HostNamespace::Pid,
        HostNamespace::Uts,
        HostNamespace::Userns,
        HostNamespace::Cgroupns,
    ];

    /// Its name in `host_namespaces`, which is also the
    /// `resource_args.local-container` key that asks for it.
    pub fn name(self) -> &'static str {
        match self {
            HostNamespace::Network => "network",
            HostNamespace::Ipc => "ipc",
            HostNamespace::Pid => "pid",
            HostNamespace::Uts => "uts",
            HostNamespace::Userns => "userns",
            HostNamespace::Cgroupns => "cgroupns",
        }
    }
}

impl RunnersConfig {
    /// Checks what can be checked without looking at this machine: paths
    /// are absolute and plain, and no grant is written twice or nested in a
    /// writable one. (Resolving symlinks is the runners' start-up work.)
    pub(super) fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        let blocks = std::iter::once((
            "runners".to_string(),
            self.local_process.as_ref(),
            self.local_container.as_ref(),
        ))
        .chain(self.queues.iter().map(|(queue, q)| {
            (
                format!("runners.queues.{queue}"),
                q.local_process.as_ref(),
                q.local_container.as_ref(),
            )
        }));
        for queue in self.queues.keys() {
            if queue.trim().is_empty() {
                return Err(ConfigError::invalid(
                    file,
                    "runners.queues",
                    "names a queue with an empty name",
                ));
            }
        }
        for (queue, blocks) in &self.queues {
            if let Some(kubernetes) = &blocks.kubernetes {
                check_pending_timeout(kubernetes, &format!("runners.queues.{queue}"), file)?;
            }
        }
        if let Some(kubernetes) = &self.kubernetes {
            check_pending_timeout(kubernetes, "runners", file)?;
        }
        for (at, process, container) in blocks {
            if let Some(process) = process
                && let Some(user) = &process.user
                && user.value.trim().is_empty()
            {
                return Err(ConfigError::at(
                    file,
                    &format!("{at}.local-process.user"),
                    &user.referenced,
                    "is empty: write a user name, a uid, or uid:gid (or leave the key out)",
                ));
            }
            if let Some(container) = container {
                check_volumes(&container.volumes).map_err(|message| {
                    ConfigError::invalid(file, &format!("{at}.local-container.volumes"), message)
                })?;
            }
        }
        Ok(())
    }
}

/// A pending timeout of 0 would fail every job before its pod is scheduled.
fn check_pending_timeout(
    settings: &KubernetesSettings,
    at: &str,
    file: &Path,
) -> Result<(), ConfigError> {
    if settings.pending_timeout == 0 {
        return Err(ConfigError::invalid(
            file,
            &format!("{at}.kubernetes.pending_timeout"),
            "must be at least 1 (seconds)",
        ));
    }
    Ok(())
}

/// Absolute, plain (no `.` or `..`), written once, none inside a writable
/// one: jobs can replace what is inside a writable grant with symlinks, so
/// a grant there would be theirs to point anywhere.
pub fn check_volumes(grants: &[VolumeGrant]) -> Result<(), String> {
    for grant in grants {
        let path = grant.path();
        if !path.is_absolute() {
            return Err(format!("{} must be an absolute path", path.display()));
        }
        if path
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        {
            return Err(format!(
                "{}: write the path without `.` or `..`",
                path.display()
            ));
        }
    }
    check_nesting(grants.iter().map(|g| (g.path(), g.writable())))
}

/// No path twice, none inside a writable one (`paths`: path, writable).
pub fn check_nesting<'a>(
    paths: impl Iterator<Item = (&'a Path, bool)> + Clone,
) -> Result<(), String> {
    for (i, (path, _)) in paths.clone().enumerate() {
        for (j, (other, other_writable)) in paths.clone().enumerate() {
            if i == j {
                continue;
            }
            if path == other {
                return Err(format!("{} is granted twice: keep one", path.display()));
            }
            if other_writable && path.starts_with(other) {
                return Err(format!(
                    "{} lies inside the writable grant {}: jobs can replace what is inside a writable grant with symlinks, so grant only {} (jobs mount it whole)",
                    path.display(),
                    other.display(),
                    other.display()
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::LaunchConfig;
    use crate::config::runners::HostNamespace;
    use std::path::Path;

    fn error(yaml: &str) -> String {
        LaunchConfig::parse(yaml, Path::new("c.yaml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_documented_example_is_valid() {
        let doc = include_str!("runners.rs");
        let example: String = doc
            .split("//! ```yaml\n")
            .nth(1)
            .unwrap()
            .split("//! ```")
            .next()
            .unwrap()
            .lines()
            .map(|line| {
                line.strip_prefix("//! ")
                    .unwrap_or(line.trim_start_matches("//!"))
            })
            .collect::<Vec<_>>()
            .join("\n");
        let config = LaunchConfig::parse(&example, Path::new("c.yaml")).unwrap();
        let runners = &config.runners;
        assert!(!runners.local_process.as_ref().unwrap().enabled);
        let container = runners.local_container.as_ref().unwrap();
        assert_eq!(container.volumes.len(), 2);
        assert!(!container.volumes[0].writable() && container.volumes[1].writable());
        assert_eq!(container.host_namespaces, [HostNamespace::Network]);
        let kubernetes = runners.kubernetes.as_ref().unwrap();
        assert!(kubernetes.enabled);
        assert_eq!(kubernetes.pending_timeout, 300);
        let trusted = runners.queues["trusted"].local_process.as_ref().unwrap();
        assert_eq!(trusted.user.as_ref().unwrap().value, "launch-jobs");
        assert!(
            !runners.queues["public"]
                .local_container
                .as_ref()
                .unwrap()
                .gpus
        );
    }

    #[test]
    fn a_config_without_the_block_allows_what_wandb_does_and_no_host_access() {
        let config = LaunchConfig::default();
        assert!(config.runners.local_process.is_none());
        assert!(config.runners.local_container.is_none());
        assert!(config.runners.queues.is_empty());
    }

    #[test]
    fn mistakes_name_the_key() {
        for (yaml, says) in [
            (
                "runners:\n  local-container:\n    volumes: [data]\n",
                "`runners.local-container.volumes` data must be an absolute path",
            ),
            (
                "runners:\n  local-container:\n    volumes: [/data/../etc]\n",
                "without `.` or `..`",
            ),
            (
                "runners:\n  queues:\n    q:\n      local-container:\n        volumes: [{ path: /s, write: true }, /s/in]\n",
                "`runners.queues.q.local-container.volumes` /s/in lies inside the writable grant /s",
            ),
            (
                "runners:\n  local-container:\n    volumes: [/a, /a]\n",
                "granted twice",
            ),
            (
                "runners:\n  local-container:\n    host_namespaces: [everything]\n",
                "runners.local-container.host_namespaces",
            ),
            (
                "runners:\n  local-container:\n    volumes: [{ where: /x }]\n",
                "a path, or a map with `path`",
            ),
            (
                "runners:\n  local-process:\n    user: ''\n",
                "`runners.local-process.user` is empty",
            ),
            ("runners:\n  sagemaker: {}\n", "sagemaker"),
            (
                "runners:\n  kubernetes: { pending_timeout: 0 }\n",
                "`runners.kubernetes.pending_timeout` must be at least 1",
            ),
            (
                "runners:\n  kubernetes: { hostNetwork: true }\n",
                "hostNetwork",
            ),
            (
                "runners:\n  local-process:\n    privileged: true\n",
                "privileged",
            ),
        ] {
            let message = error(yaml);
            assert!(message.contains(says), "{yaml}: {message}");
        }
    }
}
