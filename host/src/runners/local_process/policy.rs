//! Whether a queue's jobs may run as processes on this machine, and as
//! whom: the operator's `runners.local-process` block (or the queue's own),
//! compiled once at start-up.

use super::super::policy::Origin;
use super::user::JobUser;
use crate::config::runners::LocalProcessSettings;
use anyhow::anyhow;

/// The `resource` this policy is for, as config keys name it.
const RUNNER: &str = "local-process";

/// What the jobs of one queue may do with `local-process`.
#[derive(Clone, Debug)]
pub struct ProcessPolicy {
    enabled: bool,
    user: Option<JobUser>,
    origin: Origin,
    /// Whether the config says anything about it (else start-up warns).
    configured: bool,
}

impl Default for ProcessPolicy {
    /// What a config that says nothing allows: W&B's behaviour, processes
    /// as the agent's user.
    fn default() -> Self {
        ProcessPolicy {
            enabled: true,
            user: None,
            origin: Origin::EveryQueue,
            configured: false,
        }
    }
}

impl ProcessPolicy {
    /// Compiles a `local-process` block (`None`: the defaults); a `user`
    /// is looked up now, and switching to it needs the agent to be root.
    pub fn compile(
        settings: Option<&LocalProcessSettings>,
        origin: Origin,
    ) -> anyhow::Result<ProcessPolicy> {
        let Some(settings) = settings else {
            return Ok(ProcessPolicy {
                origin,
                ..ProcessPolicy::default()
            });
        };
        let key = match &origin {
            Origin::EveryQueue => format!("runners.{RUNNER}.user"),
            Origin::Queue(queue) => format!("runners.queues.{queue}.{RUNNER}.user"),
        };
        let user = match &settings.user {
            None => None,
            Some(written) => {
                let user = JobUser::resolve(&written.value).map_err(|e| anyhow!("`{key}`: {e}"))?;
                // SAFETY: geteuid has no preconditions.
                let agent = unsafe { libc::geteuid() };
                if agent != 0 && agent != user.uid {
                    anyhow::bail!(
                        "`{key}`: running jobs as {} needs the agent to run as root (it runs as uid {agent}); or run the agent as that user and leave the key out",
                        user.describe()
                    );
                }
                Some(user)
            }
        };
        Ok(ProcessPolicy {
            enabled: settings.enabled,
            user,
            origin,
            configured: true,
        })
    }

    /// Whether the queue's jobs may run as processes.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The user the queue's jobs run as; `None`: the agent's.
    pub fn user(&self) -> Option<&JobUser> {
        self.user.as_ref()
    }

    /// `Err` with the reason and the key that would allow it when the
    /// queue's jobs may not run as processes.
    pub fn check_enabled(&self, queue: &str) -> Result<(), String> {
        if self.enabled {
            return Ok(());
        }
        Err(format!(
            "jobs from queue `{queue}` may not run as processes on this machine: the agent's config turns {RUNNER} off for them; to allow them, set {} to true",
            self.origin.config_key(RUNNER, "enabled", queue)
        ))
    }

    /// The start-up warning, when the queue's submitters can run any
    /// command as the agent's user without the config saying so, or as
    /// root.
    pub fn warning(&self) -> Option<String> {
        if !self.enabled || self.user.is_some() {
            return None;
        }
        // SAFETY: geteuid has no preconditions.
        let agent = unsafe { libc::geteuid() };
        if self.configured && agent != 0 {
            return None;
        }
        let who = if agent == 0 {
            "root (the agent's user), which is all of this machine".to_string()
        } else {
            format!(
                "the agent's user (uid {agent}), with that user's files, and the Docker engine if that user can reach it"
            )
        };
        Some(format!(
            "{RUNNER} is on, so whoever can submit to the queue runs any command on this machine as {who}. \
             To refuse such jobs set `runners.{RUNNER}.enabled: false` (or `runners.queues.<queue>.{RUNNER}.enabled: false` for one queue); \
             to run them as an unprivileged user, set `runners.{RUNNER}.user`"
        ))
    }
}
