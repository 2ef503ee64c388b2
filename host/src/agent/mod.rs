//! The agent loop: claim work round robin across queues, run up to
//! `max_jobs` jobs at once, report every outcome, and shut down cleanly.
//!
//! - **No fixed polling.** The loop sleeps until a submit wakes it (a Unix
//!   socket in the state dir), a job ends, or [`IDLE_RECHECK`] passes.
//! - **One bad job never kills the loop.** Each job is its own task; a
//!   failure is recorded on its item, and even a panic in a job task only
//!   fails that item.
//! - **Nothing queued is lost.** Claims are leases renewed while jobs run;
//!   at start-up the agent takes back items whose holder died, and the
//!   runner of each cleans up what its run left (a process group, a
//!   container), found through the run handle the queue kept. On
//!   SIGINT/SIGTERM it stops claiming, lets running jobs finish for
//!   `shutdown_grace_seconds` (a second signal cuts that short), then stops
//!   the rest and hands them back to the queue.

mod build;
pub mod identity;
pub mod job;
pub mod wake;

use crate::clients::Clients;
use crate::config::LaunchConfig;
use crate::plugins::{LoadedPlugin, PluginHost};
use crate::queue::{QueueBackend, QueueItem, Reclaimed, Stage};
use crate::runners::{Control, Runner, Runners};
use crate::sources::JobArtifacts;
use crate::state_dir::StateDir;
use crate::timeouts::{IDLE_RECHECK, LEASE_RENEW_DIVISOR, STOP_POLL};
use job::JobEnd;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

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
    })
}

/// How long reclaiming waits for the runners to clean up after the agents
/// that died (kill a process group, remove a container).
const CLEAN_UP_WAIT: Duration = Duration::from_secs(30);

/// A running job as the loop tracks it.
struct Running {
    item_id: String,
    control: watch::Sender<Control>,
}

/// Runs the agent until it is idle (with `exit_when_idle`) or `shutdown`
/// fires. `shutdown` is a counter of signals received.
pub async fn run(
    ctx: Arc<JobContext>,
    options: AgentOptions,
    mut shutdown: watch::Receiver<u32>,
) -> anyhow::Result<RunSummary> {
    let queue = ctx.queue.clone();
    let mut summary = RunSummary {
        reclaimed: reclaim(&ctx, options.max_attempts).await?,
        ..RunSummary::default()
    };
    let mut empty_polls: u32 = 0;
    let notify = Arc::new(Notify::new());
    let _wake = match wake::WakeSocket::listen(&ctx.state.wake_dir(), notify.clone()) {
        Ok(socket) => Some(socket),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for submits; new work is noticed within {IDLE_RECHECK:?}");
            None
        }
    };
    let renewer = spawn_lease_renewer(ctx.clone(), options.lease);
    let mut queues = options.queues.clone();
    let mut jobs: JoinSet<(String, JobEnd)> = JoinSet::new();
    let mut running: HashMap<tokio::task::Id, Running> = HashMap::new();
    tracing::info!(agent = %ctx.agent_id, queues = ?queues, max_jobs = ?options.max_jobs, "agent polling");

    loop {
        if *shutdown.borrow() > 0 {
            break;
        }
        if queue.should_stop().await {
            tracing::info!(
                backend = queue.name(),
                "the queue server asked this agent to stop polling"
            );
            break;
        }
        // Claim while there is room.
        while options.max_jobs.is_none_or(|max| running.len() < max) {
            let item = match queue
                .claim_next(&queues, &ctx.agent_id, options.lease)
                .await
            {
                Ok(Some(item)) => {
                    empty_polls = 0;
                    item
                }
                Ok(None) => {
                    empty_polls = empty_polls.saturating_add(1);
                    break;
                }
                Err(error) => {
                    tracing::error!(%error, "cannot claim from the queue; retrying shortly");
                    break;
                }
            };
            // Round robin: the queue that yielded goes to the end.
            if let Some(pos) = queues.iter().position(|q| *q == item.queue) {
                let q = queues.remove(pos);
                queues.push(q);
            }
            let (tx, rx) = watch::channel(Control::Run);
            let item_id = item.id.clone();
            let handle = jobs.spawn(job_task(ctx.clone(), item, rx));
            running.insert(
                handle.id(),
                Running {
                    item_id,
                    control: tx,
                },
            );
        }
        if running.is_empty()
            && options.exit_when_idle
            && !queue.has_queued(&queues).await.unwrap_or(true)
        {
            tracing::info!("queues empty and no job running: exiting");
            break;
        }
        tokio::select! {
            _ = notify.notified() => {}
            Some(done) = jobs.join_next_with_id(), if !jobs.is_empty() => {
                record(&ctx, &mut running, &mut summary, done).await;
            }
            _ = tokio::time::sleep(queue.idle_wait(empty_polls)) => {
                match reclaim(&ctx, options.max_attempts).await {
                    Ok(n) => summary.reclaimed += n,
                    Err(error) => tracing::error!(%error, "cannot reclaim abandoned items"),
                }
            }
            _ = shutdown.changed() => {}
        }
    }

    if !running.is_empty() {
        tracing::info!(
            running = running.len(),
            grace = ?options.shutdown_grace,
            "shutting down: no new work; waiting for running jobs (signal again to hand them back now)"
        );
        let seen = *shutdown.borrow();
        let deadline = tokio::time::sleep(options.shutdown_grace);
        tokio::pin!(deadline);
        let mut handing_back = false;
        while !jobs.is_empty() {
            tokio::select! {
                Some(done) = jobs.join_next_with_id() => record(&ctx, &mut running, &mut summary, done).await,
                _ = &mut deadline, if !handing_back => {
                    handing_back = true;
                    hand_back_all(&running);
                }
                _ = shutdown.changed(), if !handing_back => {
                    if *shutdown.borrow() > seen {
                        handing_back = true;
                        hand_back_all(&running);
                    }
                }
            }
        }
    }
    renewer.abort();
    queue.close().await;
    Ok(summary)
}

fn hand_back_all(running: &HashMap<tokio::task::Id, Running>) {
    tracing::info!(
        jobs = running.len(),
        "stopping running jobs and handing them back to the queue"
    );
    for job in running.values() {
        let _ = job.control.send(Control::HandBack);
    }
}

/// Takes back items whose holder died; cleans up what is left of their runs.
async fn reclaim(ctx: &Arc<JobContext>, max_attempts: u32) -> anyhow::Result<usize> {
    let me = ctx.agent_id.clone();
    let holder_is_dead: Arc<dyn Fn(&str) -> bool + Send + Sync> =
        Arc::new(move |holder: &str| identity::holder_is_dead(holder, &me));
    let reclaimed = ctx
        .queue
        .reclaim_abandoned(holder_is_dead, max_attempts)
        .await?;
    let mut cleanups = Vec::new();
    for item in &reclaimed {
        tracing::warn!(
            item = %item.id,
            holder = %item.previous_holder,
            state = %item.new_state,
            "took back a job whose agent died"
        );
        cleanups.extend(clean_up_after(&ctx.runners, item));
    }
    // Before anything is claimed again (a retry reuses the container name),
    // and before an agent that is about to exit does; a cleanup that hangs
    // goes on in the background.
    if !cleanups.is_empty()
        && tokio::time::timeout(CLEAN_UP_WAIT, futures_util::future::join_all(cleanups))
            .await
            .is_err()
    {
        tracing::warn!(
            "cleaning up after the agents that died takes more than {CLEAN_UP_WAIT:?}: carrying on while it finishes"
        );
    }
    Ok(reclaimed.len())
}

/// Has the runner that recorded the item's run handle remove what the run
/// left (a process group, a container that may hold GPUs); with no handle
/// recorded (the agent died before the run started, or before the handle
/// reached the queue), every runner looks for the item's leftovers.
fn clean_up_after(runners: &Runners, item: &Reclaimed) -> Option<tokio::task::JoinHandle<()>> {
    let cleaners: Vec<Arc<dyn Runner>> = match &item.run_handle {
        Some(handle) => match runners.get(&handle.runner) {
            Ok(runner) => vec![runner],
            Err(_) => {
                tracing::warn!(
                    item = %item.id,
                    runner = %handle.runner,
                    "the run of a job whose agent died was started by a runner this agent does not have: it cannot clean it up"
                );
                return None;
            }
        },
        None => runners.all().cloned().collect(),
    };
    let (id, handle) = (item.id.clone(), item.run_handle.clone());
    Some(tokio::spawn(async move {
        for runner in cleaners {
            runner.clean_up(&id, handle.as_ref()).await;
        }
    }))
}

async fn record(
    ctx: &JobContext,
    running: &mut HashMap<tokio::task::Id, Running>,
    summary: &mut RunSummary,
    done: Result<(tokio::task::Id, (String, JobEnd)), tokio::task::JoinError>,
) {
    let (item_id, end) = match done {
        Ok((id, (item_id, end))) => {
            running.remove(&id);
            (item_id, end)
        }
        Err(join_error) => {
            let Some(job) = running.remove(&join_error.id()) else {
                return;
            };
            (
                job.item_id,
                JobEnd::Failed {
                    stage: Stage::Agent,
                    message: format!("the agent's job task failed: {join_error}"),
                    exit_code: None,
                },
            )
        }
    };
    let result = match &end {
        JobEnd::Finished => {
            summary.finished += 1;
            ctx.queue.finish(&item_id, &ctx.agent_id, Some(0)).await
        }
        JobEnd::Failed {
            stage,
            message,
            exit_code,
        } => {
            summary.failed += 1;
            tracing::warn!(item = %item_id, %stage, "job failed: {message}");
            ctx.queue
                .fail(&item_id, &ctx.agent_id, *stage, message, *exit_code)
                .await
        }
        JobEnd::Stopped => {
            summary.stopped += 1;
            ctx.queue
                .mark_stopped(&item_id, &ctx.agent_id, "stopped on request")
                .await
        }
        JobEnd::HandedBack => {
            summary.handed_back += 1;
            ctx.queue.release(&item_id, &ctx.agent_id).await
        }
    };
    match result {
        Ok(()) => tracing::info!(item = %item_id, outcome = ?end_name(&end), "job done"),
        Err(error) => tracing::error!(item = %item_id, %error, "cannot record the job's outcome"),
    }
}

fn end_name(end: &JobEnd) -> &'static str {
    match end {
        JobEnd::Finished => "finished",
        JobEnd::Failed { .. } => "failed",
        JobEnd::Stopped => "stopped",
        JobEnd::HandedBack => "handed back",
    }
}

/// One job plus a watcher that turns a stop request on the item into a stop.
async fn job_task(
    ctx: Arc<JobContext>,
    item: QueueItem,
    control: watch::Receiver<Control>,
) -> (String, JobEnd) {
    let item_id = item.id.clone();
    let (stop_tx, stop_rx) = watch::channel(Control::Run);
    let mut outer = control;
    let queue = ctx.queue.clone();
    let id = item_id.clone();
    let watcher = tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = outer.changed() => {
                    let wanted = if changed.is_ok() { *outer.borrow() } else { Control::HandBack };
                    if wanted != Control::Run {
                        let _ = stop_tx.send(wanted);
                        return;
                    }
                }
                _ = tokio::time::sleep(STOP_POLL) => {
                    if let Ok(true) = queue.stop_requested(&id).await {
                        let _ = stop_tx.send(Control::Stop);
                        return;
                    }
                }
            }
        }
    });
    let end = job::run_job(ctx, item, stop_rx).await;
    watcher.abort();
    (item_id, end)
}

fn spawn_lease_renewer(ctx: Arc<JobContext>, lease: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = lease / LEASE_RENEW_DIVISOR;
        loop {
            tokio::time::sleep(every).await;
            if let Err(error) = ctx.queue.renew_leases(&ctx.agent_id, lease).await {
                tracing::error!(%error, "cannot renew job leases");
            }
        }
    })
}
