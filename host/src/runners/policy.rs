//! The operator's `runners:` block ([`crate::config::runners`]), compiled
//! once at start-up into what each runner checks every job against.
//!
//! Compiling resolves what depends on this machine once, so a job's check
//! is a lookup: granted host paths are resolved (symlinks and `..`; a path
//! that does not exist stops the start), `local-process.user` is looked up
//! in the user database, and a queue's rules are found by name.
//!
//! | what | compiled into | checked by |
//! |---|---|---|
//! | `runners.local-process` and each `runners.queues.<q>.local-process` | [`ProcessPolicy`] per queue | `local-process`: may the queue's jobs run, and as whom |
//! | `runners.local-container` and each `runners.queues.<q>.local-container` | [`ContainerPolicy`] per queue | `local-container`: host paths, host namespaces, GPUs |
//! | `runners.kubernetes` and each `runners.queues.<q>.kubernetes` | [`KubernetesPolicy`] per queue | `kubernetes`: may the queue's jobs run on the cluster, how long a pod may stay Pending |
//!
//! A job is checked against its queue's block when the config has one,
//! else the runner's block, else the defaults (no host paths, no host
//! namespaces; `local-process` allowed, as in W&B, with a start-up warning
//! from [`Policies::warnings`]).

use super::kubernetes::policy::KubernetesPolicy;
use super::local_container::policy::ContainerPolicy;
use super::local_process::policy::ProcessPolicy;
use crate::config::runners::RunnersConfig;
use std::collections::HashMap;

/// Where a queue's rules come from: what an error names as the key that
/// would allow what it refused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Origin {
    /// The runner's block (or its defaults): every queue without its own.
    #[default]
    EveryQueue,
    /// `runners.queues.<queue>`.
    Queue(String),
}

impl Origin {
    /// The config key that sets `field` of `runner` for jobs from `queue`,
    /// as an error tells it: the queue's own key when the queue has a
    /// block, else the runner's key (every queue) or a new block for this
    /// queue alone.
    pub fn config_key(&self, runner: &str, field: &str, queue: &str) -> String {
        match self {
            Origin::Queue(queue) => format!("`runners.queues.{queue}.{runner}.{field}`"),
            Origin::EveryQueue => format!(
                "`runners.{runner}.{field}` (every queue) or `runners.queues.{queue}.{runner}.{field}` (this queue only)"
            ),
        }
    }
}

/// A rule per queue: the queues' own, and the one for every other queue.
#[derive(Clone, Debug, Default)]
pub struct PerQueue<T> {
    every_queue: T,
    queues: HashMap<String, T>,
}

impl<T> PerQueue<T> {
    /// The rule for jobs from `queue`.
    pub fn for_queue(&self, queue: &str) -> &T {
        self.queues.get(queue).unwrap_or(&self.every_queue)
    }

    /// The rule for every queue without its own, then each queue's own.
    pub fn all(&self) -> impl Iterator<Item = (Option<&str>, &T)> {
        std::iter::once((None, &self.every_queue))
            .chain(self.queues.iter().map(|(q, t)| (Some(q.as_str()), t)))
    }
}

/// The whole `runners:` block, compiled.
#[derive(Clone, Debug, Default)]
pub struct Policies {
    /// `local-process`, per queue.
    pub process: PerQueue<ProcessPolicy>,
    /// `local-container`, per queue.
    pub container: PerQueue<ContainerPolicy>,
    /// `kubernetes`, per queue.
    pub kubernetes: PerQueue<KubernetesPolicy>,
}

impl Policies {
    /// Compiles `config` on this machine; the error names the key and the
    /// path or user that cannot be used.
    pub fn compile(config: &RunnersConfig) -> anyhow::Result<Policies> {
        let mut policies = Policies {
            process: PerQueue {
                every_queue: ProcessPolicy::compile(
                    config.local_process.as_ref(),
                    Origin::EveryQueue,
                )?,
                queues: HashMap::new(),
            },
            container: PerQueue {
                every_queue: ContainerPolicy::compile(
                    config.local_container.as_ref(),
                    Origin::EveryQueue,
                )?,
                queues: HashMap::new(),
            },
            kubernetes: PerQueue {
                every_queue: KubernetesPolicy::compile(
                    config.kubernetes.as_ref(),
                    Origin::EveryQueue,
                ),
                queues: HashMap::new(),
            },
        };
        for (queue, blocks) in &config.queues {
            if let Some(settings) = &blocks.kubernetes {
                policies.kubernetes.queues.insert(
                    queue.clone(),
                    KubernetesPolicy::compile(Some(settings), Origin::Queue(queue.clone())),
                );
            }
            let origin = Origin::Queue(queue.clone());
            if let Some(settings) = &blocks.local_process {
                policies.process.queues.insert(
                    queue.clone(),
                    ProcessPolicy::compile(Some(settings), origin.clone())?,
                );
            }
            if let Some(settings) = &blocks.local_container {
                policies.container.queues.insert(
                    queue.clone(),
                    ContainerPolicy::compile(Some(settings), origin)?,
                );
            }
        }
        Ok(policies)
    }

    /// What the operator should know at start-up: where the queues'
    /// submitters are trusted with this machine, and `runners.queues`
    /// entries for queues this agent does not serve. `served` are the
    /// queues this agent serves.
    pub fn warnings(&self, served: &[String]) -> Vec<String> {
        let mut warnings = Vec::new();
        let named = |queue: Option<&str>| match queue {
            Some(queue) => format!("jobs from queue `{queue}`"),
            None => "jobs from every queue without its own `runners.queues` block".to_string(),
        };
        for (queue, policy) in self.process.all() {
            if let Some(warning) = policy.warning() {
                warnings.push(format!("{}: {warning}", named(queue)));
            }
        }
        for (queue, policy) in self.container.all() {
            for warning in policy.warnings() {
                warnings.push(format!("{}: {warning}", named(queue)));
            }
        }
        let mut unserved: Vec<&str> = self
            .process
            .queues
            .keys()
            .chain(self.container.queues.keys())
            .chain(self.kubernetes.queues.keys())
            .map(String::as_str)
            .filter(|q| !served.iter().any(|s| s == q))
            .collect();
        unserved.sort_unstable();
        unserved.dedup();
        for queue in unserved {
            warnings.push(format!(
                "`runners.queues.{queue}` is for a queue this agent does not serve (it serves {}): check the name",
                served.join(", ")
            ));
        }
        warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LaunchConfig;
    use std::path::Path;

    fn compile(yaml: &str) -> Policies {
        let config = LaunchConfig::parse(yaml, Path::new("c.yaml")).unwrap();
        Policies::compile(&config.runners).unwrap()
    }

    #[test]
    fn a_queue_block_replaces_the_runner_block_for_that_queue_only() {
        let policies = compile(
            "runners:\n  local-process: { enabled: false }\n  queues:\n    trusted:\n      local-process: {}\n",
        );
        assert!(!policies.process.for_queue("default").enabled());
        assert!(policies.process.for_queue("trusted").enabled());
        assert!(
            policies
                .process
                .for_queue("default")
                .check_enabled("default")
                .unwrap_err()
                .contains("`runners.local-process.enabled` (every queue) or `runners.queues.default.local-process.enabled`")
        );
    }

    #[test]
    fn nothing_said_means_local_process_with_a_warning_and_no_host_access() {
        let policies = compile("queues: [a]\n");
        assert!(policies.process.for_queue("a").enabled());
        let warnings = policies.warnings(&["a".to_string()]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("runs any command on this machine"),
            "{warnings:?}"
        );
        assert!(
            warnings[0].contains("runners.local-process.enabled: false"),
            "{warnings:?}"
        );
        let container = policies.container.for_queue("a");
        assert!(container.check_namespace("network", "host", "a").is_err());
    }

    #[test]
    fn a_block_for_a_queue_not_served_is_pointed_out() {
        let policies = compile(
            "runners:\n  local-process: { enabled: false }\n  queues:\n    tpyo:\n      local-process: { enabled: false }\n",
        );
        let warnings = policies.warnings(&["default".to_string()]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("runners.queues.tpyo"), "{warnings:?}");
    }

    #[test]
    fn config_keys_name_the_block_that_would_allow_it() {
        assert_eq!(
            Origin::Queue("q".into()).config_key("local-container", "volumes", "q"),
            "`runners.queues.q.local-container.volumes`"
        );
        assert!(
            Origin::EveryQueue
                .config_key("local-container", "volumes", "q")
                .starts_with("`runners.local-container.volumes` (every queue)")
        );
    }
}
