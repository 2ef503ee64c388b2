//! The agent loop: claim work round robin across queues, run up to
//! `max_jobs` jobs at once, report every outcome, and shut down cleanly.
//!
//! - **No fixed polling.** The loop sleeps until a submit wakes it (a Unix
//!   socket in the state dir, or the queue's own wake-up: PostgreSQL's
//!   `LISTEN`), a job ends, or
//!   [`IDLE_RECHECK`](crate::timeouts::IDLE_RECHECK) passes.
//! - **The loop never waits on a job.** Claiming, lease renewal, stop
//!   requests, recording outcomes and signals run on a thread of their own
//!   with its own small runtime (`control.rs`); jobs run on the main runtime,
//!   where a plugin call may hold a worker until its deadline. A stuck plugin
//!   or a hanging read of a job's source cannot stop renewals, claims or a
//!   shutdown.
//! - **One bad job never kills the loop.** Each job is its own task; a
//!   failure is recorded on its item, and even a panic in a job task only
//!   fails that item.
//! - **Nothing queued is lost.** Claims are leases renewed while jobs run;
//!   at start-up the agent takes back items whose holder died, and the
//!   runner of each cleans up what its run left (a process group, a
//!   container), found through the run handle the queue kept. An outcome
//!   that cannot be written (a full disk) is kept and retried
//!   (`outcomes.rs`); the agent never exits 0 with one unrecorded. Delivery
//!   is at least once: a run that finished just before its agent died (its
//!   outcome not yet recorded) runs again under the next agent.
//! - **The agent's own storage comes first.** Before claiming, the agent
//!   checks that the state dir takes writes ([`StateDir::check_writable`]):
//!   while the disk is full it claims nothing (saying so once, then every
//!   [`STORAGE_FULL_REMINDER`](crate::timeouts::STORAGE_FULL_REMINDER)) and
//!   carries on when space returns; a state dir that cannot be written at
//!   all (read-only, `runs/` not a directory) stops the agent instead of
//!   failing every job.
//!
//! Signals (SIGINT or SIGTERM), each one step further:
//!
//! | signal | what the agent does |
//! |---|---|
//! | first | stops claiming; running jobs get `shutdown_grace_seconds` to finish (then as the second) |
//! | second | stops every run (SIGTERM, then SIGKILL after `stopped_run_timeout`) and hands its job back to the queue; a run that exits 0 meanwhile is recorded finished |
//! | third (or the second after the grace ran out) | final: kills every run at once, hands every job back and exits within seconds |
//!
//! | file | job |
//! |---|---|
//! | `control.rs` | the loop, on its own thread |
//! | `job.rs` | one job, from claim to outcome |
//! | `build.rs` | the build step |
//! | `outcomes.rs` | recording outcomes, keeping the ones that cannot be written yet |
//! | `storage.rs` | whether the state dir takes writes: the gate before claims |
//! | `reclaim.rs` | taking back items whose agent died, cleaning up after them |
//! | `signals.rs` | counting SIGINT/SIGTERM on a thread of their own |
//! | `wake.rs` | the wake-up socket a submit connects to |
//! | `identity.rs` | agent ids, and whether a holder is dead |

mod build;
mod control;
pub mod identity;
pub mod job;
mod outcomes;
mod reclaim;
pub mod signals;
mod storage;
pub mod wake;

use crate::clients::Clients;
use crate::config::LaunchConfig;
use crate::plugins::{LoadedPlugin, PluginHost};
use crate::queue::{QueueBackend, RunHandle};
use crate::runners::Runners;
use crate::sources::JobArtifacts;
use crate::state_dir::StateDir;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// The run handles of this agent's running jobs, by item id (for the final
/// signal, which kills runs without waiting for their jobs).
pub type RunHandles = Arc<Mutex<HashMap<String, RunHandle>>>;

/// What every job of this agent shares.
pub struct JobContext {
    /// This agent's id (the holder of its claims).
    pub agent_id: String,
    /// The queue.
    pub queue: Arc<dyn QueueBackend>,
    /// Fetches W&B job artifacts (with the W&B backend's server and key).
    pub job_artifacts: JobArtifacts,
    /// The state dir.
    pub state: StateDir,
    /// The environment plugin.
    pub environment: Arc<LoadedPlugin>,
    /// The `environment:` block, as settings.
    pub environment_block: Option<serde_json::Value>,
    /// The registry plugin, if a registry is configured.
    pub registry: Option<Arc<LoadedPlugin>>,
    /// The `registry:` block.
    pub registry_block: Option<serde_json::Value>,
    /// The builder plugin.
    pub builder: Arc<LoadedPlugin>,
    /// The `builder:` block.
    pub builder_block: Option<serde_json::Value>,
    /// Env vars behind secrets, kept from runs.
    pub secret_env_vars: Vec<String>,
    /// `builder.destination`: where built images go, overriding the registry's URI.
    pub builder_destination: Option<String>,
    /// How long a stopped run gets to exit (`stopped_run_timeout`).
    pub stop_grace: Duration,
    /// The clients of outside services (the Docker Engine), connected on
    /// first use and shared.
    pub clients: Clients,
    /// Where jobs run, by `resource`.
    pub runners: Runners,
    /// The handles of the runs going on now.
    pub run_handles: RunHandles,
    /// The cap of each log of a run (`agent.log`, and `output.log` for
    /// runners that copy a run's output), in bytes: `max_log_mb`.
    pub log_limit: u64,
    /// Every secret value a plugin of this agent held, scrubbed from every
    /// job's log, warnings and queue messages.
    pub redactor: Arc<crate::redact::Redactor>,
}

/// How the agent run should behave.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// Queues in round-robin order.
    pub queues: Vec<String>,
    /// Jobs at once; `None` for unlimited.
    pub max_jobs: Option<usize>,
    /// Exit when no job runs and the queues are empty.
    pub exit_when_idle: bool,
    /// How long a claim lasts without renewal.
    pub lease: Duration,
    /// Claims by dead agents before a job fails.
    pub max_attempts: u32,
    /// How long running jobs get to finish on shutdown.
    pub shutdown_grace: Duration,
}

/// What an agent run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Jobs that finished.
    pub finished: usize,
    /// Jobs that failed.
    pub failed: usize,
    /// Jobs stopped on request.
    pub stopped: usize,
    /// Jobs handed back at shutdown.
    pub handed_back: usize,
    /// Items taken back from dead agents at start-up.
    pub reclaimed: usize,
}

/// Builds the job context from a config and the loaded plugins.
pub fn job_context(
    config: &LaunchConfig,
    plugins: &PluginHost,
    queue: Arc<dyn QueueBackend>,
    job_artifacts: JobArtifacts,
    state: StateDir,
    agent_id: String,
) -> anyhow::Result<JobContext> {
    let types = crate::plugins::catalog::block_types(config);
    let find = |kind: crate::plugins::PluginKind| {
        types
            .iter()
            .find(|(k, _, _)| *k == kind)
            .and_then(|(_, name, _)| plugins.get(name))
    };
    // A block the config leaves out is still described to its plugin by type.
    let block = |value: Option<serde_json::Value>, kind: crate::plugins::PluginKind| {
        value.filter(|v| v.is_object()).or_else(|| {
            types
                .iter()
                .find(|(k, _, _)| *k == kind)
                .map(|(_, name, _)| serde_json::json!({ "type": name }))
        })
    };
    use crate::plugins::PluginKind;
    let environment = find(crate::plugins::PluginKind::Environment)
        .ok_or_else(|| anyhow::anyhow!("no environment plugin is loaded"))?;
    let builder = find(crate::plugins::PluginKind::Builder)
        .ok_or_else(|| anyhow::anyhow!("no builder plugin is loaded"))?;
    let registry = find(crate::plugins::PluginKind::Registry);
    let secret_env_vars = config
        .secrets
        .values()
        .filter_map(|s| match s {
            crate::config::SecretSource::Env(var) => Some(var.clone()),
            crate::config::SecretSource::File(_) => None,
        })
        .collect();
    let clients = Clients::new();
    Ok(JobContext {
        agent_id,
        queue,
        job_artifacts,
        state,
        environment,
        environment_block: block(
            config
                .environment
                .as_ref()
                .and_then(|b| serde_json::to_value(b).ok()),
            PluginKind::Environment,
        ),
        registry,
        registry_block: block(
            config
                .registry
                .as_ref()
                .and_then(|b| serde_json::to_value(b).ok()),
            PluginKind::Registry,
        ),
        builder,
        builder_block: block(
            config
                .builder
                .as_ref()
                .and_then(|b| serde_json::to_value(b).ok()),
            PluginKind::Builder,
        ),
        secret_env_vars,
        builder_destination: config
            .builder
            .as_ref()
            .and_then(|b| b.destination.clone())
            .filter(|d| !d.is_empty()),
        stop_grace: Duration::from_secs(config.stopped_run_timeout),
        runners: Runners::new(&clients),
        redactor: Arc::new(crate::redact::Redactor::knowing(&config.secrets)),
        clients,
        run_handles: RunHandles::default(),
        log_limit: config.max_log_mb << 20,
    })
}

/// Runs the agent until it is idle (with `exit_when_idle`), `shutdown`
/// fires (a counter of signals received; see the module doc), the queue
/// server says stop, or its state dir fails it.
///
/// The loop runs on a thread of its own (see the module doc); jobs run on
/// the runtime this is called on. Errs when an outcome could not be
/// recorded, or when the agent stopped because of its queue or state dir;
/// the error says which items and what to do.
pub async fn run(
    ctx: Arc<JobContext>,
    options: AgentOptions,
    shutdown: watch::Receiver<u32>,
) -> anyhow::Result<RunSummary> {
    let jobs = tokio::runtime::Handle::current();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("agent-control".to_string())
        .spawn(move || {
            let result = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => {
                    let result = runtime.block_on(control::serve(ctx, options, shutdown, jobs));
                    // Queue calls still on its blocking pool are not waited for.
                    runtime.shutdown_timeout(Duration::from_secs(1));
                    result
                }
                Err(error) => Err(anyhow::anyhow!(
                    "cannot start the agent's control runtime: {error}"
                )),
            };
            let _ = done_tx.send(result);
        })?;
    done_rx
        .await
        .map_err(|_| anyhow::anyhow!("the agent's control thread died"))?
}
