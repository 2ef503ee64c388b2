//! `launch-agent run`: serve the queues until idle (`--exit-when-idle`), a
//! signal, or the queue server says stop.

use anyhow::Context as _;
use launch_agent::agent::{self, AgentOptions};
use launch_agent::startup;
use launch_agent::state_dir::StateDir;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// `run`'s flags: W&B's (`-q`, `-j`, `-e`, `-c`, `-v`) and ours.
#[derive(clap::Args)]
pub(super) struct RunArgs {
    /// The config file (default: ~/.config/wandb/launch-config.yaml when it exists).
    #[arg(long, short = 'c')]
    pub(super) config: Option<PathBuf>,
    /// A queue to serve (repeatable); adds to the config's queues.
    #[arg(long, short = 'q')]
    queue: Vec<String>,
    /// Jobs at once (-1 unlimited); overrides the config and WANDB_LAUNCH_MAX_JOBS.
    #[arg(long, short = 'j', allow_hyphen_values = true)]
    max_jobs: Option<i64>,
    /// The W&B entity; overrides the config and WANDB_ENTITY.
    #[arg(long, short = 'e')]
    entity: Option<String>,
    /// Exit once no job runs and the queues are empty.
    #[arg(long)]
    exit_when_idle: bool,
    /// A dir whose plugin files override the default bundle's embedded ones.
    #[arg(long, env = "LAUNCH_AGENT_PLUGIN_DIR")]
    plugin_dir: Option<PathBuf>,
    /// More log output (-v debug, -vv trace).
    #[arg(long, short = 'v', action = clap::ArgAction::Count)]
    pub(super) verbose: u8,
}

/// Loads the config with W&B's precedence, prepares the agent and serves.
pub(super) async fn run(state_arg: Option<&Path>, args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut config = super::load_config(args.config.as_deref())?;
    // W&B precedence: file < WANDB_ENTITY / WANDB_LAUNCH_MAX_JOBS < flags.
    if let Ok(entity) = std::env::var("WANDB_ENTITY") {
        config.entity = Some(entity);
    }
    if let Ok(max_jobs) = std::env::var("WANDB_LAUNCH_MAX_JOBS") {
        config.max_jobs.value = max_jobs
            .parse()
            .with_context(|| format!("WANDB_LAUNCH_MAX_JOBS={max_jobs:?} is not a number"))?;
    }
    if let Some(entity) = args.entity {
        config.entity = Some(entity);
    }
    if let Some(max_jobs) = args.max_jobs {
        config.max_jobs.value = max_jobs;
    }
    if config.max_jobs.value == 0 || config.max_jobs.value < -1 {
        anyhow::bail!(
            "max_jobs must be a positive number of jobs or -1 for unlimited, not {}",
            config.max_jobs.value
        );
    }
    config.queues.extend(args.queue);
    let state = StateDir::resolve(state_arg, Some(&config));
    let started = std::time::Instant::now();
    let ctx = startup::prepare(&config, args.plugin_dir.as_deref(), state.clone()).await?;
    tracing::info!(
        state_dir = %state.root().display(),
        environment = %ctx.environment.label(),
        builder = %ctx.builder.label(),
        startup_ms = started.elapsed().as_millis() as u64,
        "agent ready"
    );
    let options = AgentOptions {
        queues: config.queue_names(),
        max_jobs: config.max_jobs_limit(),
        exit_when_idle: args.exit_when_idle,
        lease: Duration::from_secs(config.lease_seconds),
        max_attempts: config.max_attempts,
        shutdown_grace: Duration::from_secs(config.shutdown_grace_seconds),
    };
    let summary = agent::run(ctx, options, agent::signals::count()).await?;
    tracing::info!(
        finished = summary.finished,
        failed = summary.failed,
        stopped = summary.stopped,
        handed_back = summary.handed_back,
        "agent stopped"
    );
    Ok(ExitCode::SUCCESS)
}
