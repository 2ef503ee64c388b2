//! Where jobs run. The spec's `resource` picks a runner; the runner starts
//! the run, streams its output to the run's log, reports how it ended, stops
//! it early on request, and cleans up what a run left when its agent died.
//!
//! | `resource` | runner | needs an image | run handle | left over after a crash |
//! |---|---|---|---|---|
//! | `local-process` | [`local_process`]: a process group on this machine, in the job's code directory | no: it runs the job's code from disk | the process group id | the group, killed (the kernel already killed its leader with the agent) |
//! | `local-container` | [`local_container`]: a container on the Docker Engine | yes: built when the job names none | the container id | the container `launch-<item id>`, removed |
//! | `kubernetes` | [`kubernetes`]: a batch/v1 Job on the cluster of the kubeconfig (or in-cluster) | yes: built when the job names none | the context, namespace and Job name | the item's Jobs (foreground) and Secrets, deleted |
//!
//! The agent knows runners only through [`Runner`] and the [`Runners`]
//! registry, built once at start-up:
//!
//! 1. [`Runners::get`] finds the runner for `resource` (an unknown one fails
//!    the job, listing the runners there are);
//! 2. [`Runner::check_args`] checks that the job's queue may use the runner
//!    and checks `resource_args[resource]` against what the operator allows
//!    that queue, before anything is built (a refusal fails the job at
//!    stage `agent`, naming the config key that would allow it);
//! 3. when [`Runner::needs_image`] and the job names no image, the agent
//!    builds one; when not, it fetches the job's code and sets the workdir;
//! 4. [`Runner::run`] runs it. Through [`RunHooks`] the runner reports the
//!    run's [`RunHandle`] (which the queue keeps), log lines and warnings,
//!    and asks for registry credentials when it has an image to pull (the
//!    agent's registry plugin answers: runners never see plugins);
//! 5. after a crash, the next agent calls [`Runner::clean_up`] with the
//!    handle the queue kept, or without one on every runner when none was
//!    recorded (the agent may have died before the run started).
//!
//! **What a queue's jobs may do** is the operator's `runners:` block
//! ([`crate::config::runners`]), compiled once at start-up into
//! [`policy::Policies`] (one rule per queue and runner) and handed to the
//! runners by [`Runners::with_policies`]. Without the block: no host paths,
//! no host namespaces; `local-process` allowed, as in W&B, with a start-up
//! warning ([`policy::Policies::warnings`]).
//!
//! **Adding a runner** (say `sagemaker`) is one new file in this folder,
//! `sagemaker.rs` (or a folder, as `kubernetes/`), with a type implementing [`Runner`], declared with
//! `pub mod sagemaker;` below, plus one line in [`Runners::with_policies`],
//! plus its row in the table above (a unit test checks that every
//! registered runner has one); what its operator may allow or refuse per
//! queue is a block in [`crate::config::runners`] compiled in [`policy`].
//! Clients it needs (a cluster connection) go in [`crate::clients`], where
//! they are connected once and shared. Nothing in the agent changes.

pub mod kubernetes;
pub mod local_container;
pub mod local_process;
pub mod policy;

pub use crate::queue::RunHandle;

use crate::clients::Clients;
use policy::Policies;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A place jobs run: one per `resource`.
#[async_trait::async_trait]
pub trait Runner: Send + Sync {
    /// The `resource` it serves, e.g. `local-process`.
    fn name(&self) -> &'static str;

    /// Whether a run needs an image. The agent builds one when the job
    /// names none; a runner that needs none runs the job's code from this
    /// machine's disk, which the agent fetches (its directory is
    /// [`RunRequest::workdir`]).
    fn needs_image(&self) -> bool;

    /// Checks, before anything is built or started, that jobs from `queue`
    /// may use this runner, and `resource_args[resource]` (`Null` when
    /// absent) against what the operator allows them; the error names the
    /// bad key and why, and the config key that would allow what it refuses.
    fn check_args(&self, queue: &str, resource_args: &Value) -> anyhow::Result<()>;

    /// Runs `request` to its end, or until `control` asks for a stop (then
    /// the run is stopped and the outcome is [`RunOutcome::Stopped`]).
    /// Reports the run's handle through [`RunHooks::started`] as soon as
    /// the run exists. An `Err` is a failure of the runner itself (cannot
    /// start, engine unreachable), not of the job's command.
    async fn run(
        &self,
        request: RunRequest,
        control: watch::Receiver<Control>,
        hooks: &dyn RunHooks,
    ) -> anyhow::Result<RunOutcome>;

    /// Removes what a run of item `item_id` left when its agent died:
    /// `handle` is what [`RunHooks::started`] reported, when the queue kept
    /// one. Without one, it looks for the item's leftovers by name or label,
    /// and does nothing if it cannot find any. Never fails: problems are
    /// logged.
    async fn clean_up(&self, item_id: &str, handle: Option<&RunHandle>);
}

/// What the agent provides a runner during one run.
#[async_trait::async_trait]
pub trait RunHooks: Send + Sync {
    /// The run exists: the agent records `handle` on the queue item, so a
    /// later agent can clean up if this one dies. Call it once.
    fn started(&self, handle: RunHandle);

    /// A line for the job's log (`agent.log`) and the agent's own log.
    fn log(&self, line: &str);

    /// A warning: the job's log, and the queue item (W&B shows it).
    fn warning(&self, line: &str);

    /// The credentials to pull `image` with: the configured registry's
    /// login when the image lives there, else `None` (anonymous).
    async fn pull_credentials(&self, image: &str) -> anyhow::Result<Option<RegistryLogin>>;
}

/// A registry login for a pull. The password never appears in `Debug`.
#[derive(Clone)]
pub struct RegistryLogin {
    /// The user name.
    pub username: String,
    /// The password or token.
    pub password: String,
}

impl std::fmt::Debug for RegistryLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryLogin")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What the agent asks a runner to run.
#[derive(Clone, Debug)]
pub struct RunRequest {
    /// The queue item id.
    pub item_id: String,
    /// The queue the item came from: what it may do is its queue's.
    pub queue: String,
    /// The image to run: the job's, or the one built for it. `None` only
    /// for a runner that does not [need one](Runner::needs_image).
    pub image: Option<String>,
    /// The command and its arguments; empty runs the image's own.
    pub command: Vec<String>,
    /// Environment variables added to the run's environment (the W&B ones).
    pub env: Vec<(String, String)>,
    /// Environment variables removed from what the run would inherit from
    /// the agent (the ones that back the config's secrets).
    pub env_remove: Vec<String>,
    /// The working directory on this machine: the job's code, for a runner
    /// that needs no image.
    pub workdir: Option<PathBuf>,
    /// The run's output log.
    pub log_path: PathBuf,
    /// The most the output log may hold, in bytes (`max_log_mb`); a runner
    /// copies the run's output through a [`CappedLog`](crate::capped_log::CappedLog).
    pub log_limit: u64,
    /// The spec's `resource_args[resource]`; `Null` when absent. Already
    /// accepted by [`Runner::check_args`].
    pub resource_args: Value,
    /// How long a stopped run gets between SIGTERM and SIGKILL (W&B's
    /// `stopped_run_timeout`).
    pub stop_grace: Duration,
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

/// The runners of this agent, by `resource`.
#[derive(Clone)]
pub struct Runners {
    runners: Vec<Arc<dyn Runner>>,
}

impl Runners {
    /// Every runner, sharing `clients`, under the defaults of a config
    /// without a `runners:` block.
    pub fn new(clients: &Clients) -> Self {
        Self::with_policies(clients, Policies::default())
    }

    /// Every runner, in the order errors list them, sharing `clients`,
    /// under the operator's `policies`. Adding a runner is one line here
    /// (and its module above).
    pub fn with_policies(clients: &Clients, policies: Policies) -> Self {
        Runners {
            runners: vec![
                Arc::new(local_process::LocalProcess::new(Arc::new(policies.process))),
                Arc::new(local_container::LocalContainer::new(
                    clients,
                    Arc::new(policies.container),
                )),
                Arc::new(kubernetes::Kubernetes::new(
                    clients,
                    Arc::new(policies.kubernetes),
                )),
            ],
        }
    }

    /// The runner for `resource`.
    pub fn get(&self, resource: &str) -> Result<Arc<dyn Runner>, UnsupportedResource> {
        self.runners
            .iter()
            .find(|runner| runner.name() == resource)
            .cloned()
            .ok_or_else(|| UnsupportedResource {
                resource: resource.to_string(),
                supported: self.names().collect(),
            })
    }

    /// The `resource` names there are runners for.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.runners.iter().map(|runner| runner.name())
    }

    /// Every runner.
    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn Runner>> {
        self.runners.iter()
    }
}

impl std::fmt::Debug for Runners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// A `resource` this agent has no runner for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "resource `{resource}` is not supported by this agent yet; use {}",
    one_of(supported)
)]
pub struct UnsupportedResource {
    /// The spec's `resource`.
    pub resource: String,
    /// The ones there are runners for.
    pub supported: Vec<&'static str>,
}

/// "`a`, `b` or `c`".
fn one_of(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.split_last() {
        None => "nothing (this agent has no runners)".to_string(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_runner_has_its_own_name_and_a_row_in_the_module_table() {
        let runners = Runners::new(&Clients::new());
        let names: Vec<&str> = runners.names().collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            names.len(),
            "two runners share a name: {names:?}"
        );
        let doc = include_str!("mod.rs");
        for name in names {
            let row = format!("//! | `{name}` | ");
            assert!(
                doc.contains(&row),
                "runners/mod.rs's table has no row {row}"
            );
            assert_eq!(runners.get(name).unwrap().name(), name);
        }
    }

    #[test]
    fn an_unknown_resource_lists_the_runners_there_are() {
        let runners = Runners::new(&Clients::new());
        let error = runners.get("sagemaker").err().unwrap();
        assert_eq!(
            error.to_string(),
            "resource `sagemaker` is not supported by this agent yet; \
             use `local-process`, `local-container` or `kubernetes`"
        );
    }

    #[test]
    fn lists_read_as_a_sentence() {
        assert_eq!(one_of(&["a"]), "`a`");
        assert_eq!(one_of(&["a", "b", "c"]), "`a`, `b` or `c`");
    }

    #[test]
    fn a_login_hides_its_password() {
        let login = RegistryLogin {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{login:?}").contains("hunter2"));
    }
}
