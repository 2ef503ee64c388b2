//! The commands: `run`, `submit`, `queue`, `config`, `plugins`.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use launch_agent::agent::{self, AgentOptions};
use launch_agent::config::LaunchConfig;
use launch_agent::plugins::PluginHost;
use launch_agent::queue::{EmbeddedQueue, format_table};
use launch_agent::state_dir::StateDir;
use launch_agent::{spec, startup};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Stack size of the async runtime's worker threads (see `main`).
const WORKER_STACK_BYTES: usize = 8 << 20;

/// A launch agent for ML jobs whose builders, registries and environments
/// are sandboxed WebAssembly plugins.
#[derive(Parser)]
#[command(name = "launch-agent", version, about)]
struct Cli {
    /// The state dir (embedded queue, run logs, plugin cache).
    #[arg(long, global = true, env = "LAUNCH_AGENT_STATE_DIR")]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the queues: claim jobs, build, run and report them.
    Run(RunArgs),
    /// Put a launch spec (JSON or YAML file, or - for stdin) on a queue; prints the item id.
    Submit {
        /// The queue.
        #[arg(long, short = 'q', default_value = "default")]
        queue: String,
        /// The launch spec file, or - for standard input.
        spec: PathBuf,
    },
    /// Look at the queue.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Check a launch-config.yaml.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// List or inspect plugins.
    #[command(subcommand)]
    Plugins(PluginsCommand),
}

#[derive(clap::Args)]
struct RunArgs {
    /// The config file (default: ~/.config/wandb/launch-config.yaml when it exists).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
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
    verbose: u8,
}

#[derive(Subcommand)]
enum QueueCommand {
    /// List queue items.
    List {
        /// Only this queue.
        #[arg(long, short = 'q')]
        queue: Option<String>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Ask for an item to be stopped (a queued item is stopped at once).
    Stop {
        /// The item id.
        id: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file; exits non-zero with the error's file, line and column.
    Check {
        /// The file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// The plugins a config loads: name, kind, version, WIT version, origin, sha256, grants.
    List {
        /// The config file.
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
        /// A dir whose plugin files override the default bundle's embedded ones.
        #[arg(long, env = "LAUNCH_AGENT_PLUGIN_DIR")]
        plugin_dir: Option<PathBuf>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Load one component file and describe it.
    Inspect {
        /// The `.wasm` file.
        file: PathBuf,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the command line; errors print as one `error:` block and exit 1.
pub fn main() -> ExitCode {
    // Library backtraces (wasmtime captures one for every error it creates,
    // some on the plugin-call path) are expensive; panics still get theirs
    // under RUST_BACKTRACE. Set before any thread starts.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    let cli = Cli::parse();
    // `run -v` or the config's W&B `verbosity` key, whichever says more.
    let verbosity = match &cli.command {
        Command::Run(args) => {
            let configured = load_config(args.config.as_deref())
                .map(|c| c.verbosity)
                .unwrap_or(0);
            args.verbose.max(configured)
        }
        _ => 0,
    };
    init_tracing(verbosity);
    // A plugin whose imports never wait is called on the worker's own
    // stack (no fiber), where its code may use up to wasmtime's 512 KiB
    // wasm stack limit: workers get the main thread's 8 MiB rather than
    // tokio's 2 MiB, so the host's frames below always have room. Only the
    // pages used become resident.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(WORKER_STACK_BYTES)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(verbosity: u8) {
    let default = match verbosity {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("LAUNCH_AGENT_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!("launch_agent={default},warn"))
        });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let state_arg = cli.state_dir.clone();
    match cli.command {
        Command::Run(args) => run(state_arg.as_deref(), args).await,
        Command::Submit { queue, spec } => submit(state_arg.as_deref(), &queue, &spec),
        Command::Queue(QueueCommand::List { queue, json }) => {
            let state = StateDir::resolve(state_arg.as_deref(), None);
            let items = EmbeddedQueue::open(state.root())?.list(queue.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                println!("{}", format_table(&items).trim_end());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Queue(QueueCommand::Stop { id }) => {
            let state = StateDir::resolve(state_arg.as_deref(), None);
            let new_state = EmbeddedQueue::open(state.root())?.request_stop(&id)?;
            agent::wake::wake_all(&state.wake_dir());
            println!("{id}: {new_state}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Check { file }) => {
            let config = LaunchConfig::load(&file)?;
            println!(
                "{}: ok (queues: {}, environment: {}, builder: {}, plugins: {})",
                file.display(),
                config.queue_names().join(", "),
                config
                    .environment
                    .as_ref()
                    .map(|e| e.kind.value.as_str())
                    .unwrap_or("local"),
                config
                    .builder
                    .as_ref()
                    .and_then(|b| b.kind())
                    .unwrap_or("noop"),
                config.plugins.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugins(PluginsCommand::List {
            config,
            plugin_dir,
            json,
        }) => {
            let config = load_config(config.as_deref())?;
            let state = StateDir::resolve(state_arg.as_deref(), Some(&config));
            let host = startup::load_plugins(&config, plugin_dir.as_deref(), &state).await?;
            print_plugins(&host, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugins(PluginsCommand::Inspect { file, json }) => {
            let state = StateDir::resolve(state_arg.as_deref(), None);
            let mut host = PluginHost::new(
                &state.plugin_cache(),
                launch_agent::config::Limits::default().memory_mb,
            )?;
            let name = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            host.load(&name, &file, &Default::default(), &Default::default())
                .await?;
            print_plugins(&host, json)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The config at `path`, or W&B's default path when it exists, or defaults.
fn load_config(path: Option<&Path>) -> anyhow::Result<LaunchConfig> {
    if let Some(path) = path {
        return Ok(LaunchConfig::load(path)?);
    }
    let default = dirs::home_dir().map(|h| h.join(".config/wandb/launch-config.yaml"));
    match default {
        Some(path) if path.is_file() => Ok(LaunchConfig::load(&path)?),
        _ => Ok(LaunchConfig::default()),
    }
}

async fn run(state_arg: Option<&Path>, args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut config = load_config(args.config.as_deref())?;
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
    let (signal_tx, signal_rx) = tokio::sync::watch::channel(0u32);
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            tracing::error!("cannot listen for SIGINT/SIGTERM");
            return;
        };
        loop {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            signal_tx.send_modify(|n| *n += 1);
        }
    });
    let summary = agent::run(ctx, options, signal_rx).await?;
    tracing::info!(
        finished = summary.finished,
        failed = summary.failed,
        stopped = summary.stopped,
        handed_back = summary.handed_back,
        "agent stopped"
    );
    Ok(ExitCode::SUCCESS)
}

fn submit(
    state_arg: Option<&Path>,
    queue_name: &str,
    spec_path: &Path,
) -> anyhow::Result<ExitCode> {
    let (text, source) = if spec_path == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
        (text, "standard input".to_string())
    } else {
        (
            std::fs::read_to_string(spec_path)
                .with_context(|| format!("cannot read launch spec {}", spec_path.display()))?,
            spec_path.display().to_string(),
        )
    };
    let mut value = spec::parse_text(&text, &source)?;
    if spec::strip_api_key(&mut value) {
        eprintln!(
            "note: `_wandb_api_key` removed: the embedded queue never stores API keys; runs get WANDB_API_KEY from the agent's environment"
        );
    }
    // Resolve a relative code dir against the spec file's directory.
    if let Some(uri) = value
        .get("uri")
        .and_then(|u| u.as_str())
        .map(str::to_string)
        && !uri.contains("://")
        && !Path::new(&uri).is_absolute()
    {
        let base = if spec_path == Path::new("-") {
            std::env::current_dir()?
        } else {
            spec_path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default()
        };
        let resolved = std::fs::canonicalize(base.join(&uri))
            .with_context(|| format!("`uri` {uri:?} in {source}"))?;
        value["uri"] = serde_json::Value::String(resolved.display().to_string());
    }
    spec::LaunchSpec::from_value(value.clone())?;
    let state = StateDir::resolve(state_arg, None);
    let queue = EmbeddedQueue::open(state.root())?;
    let id = queue.submit(queue_name, value)?;
    agent::wake::wake_all(&state.wake_dir());
    println!("{id}");
    Ok(ExitCode::SUCCESS)
}

fn print_plugins(host: &PluginHost, json: bool) -> anyhow::Result<()> {
    let plugins: Vec<_> = host.all().map(|p| p.description().clone()).collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&plugins)?);
        return Ok(());
    }
    for p in plugins {
        println!("{} ({} plugin)", p.name, p.kind);
        println!(
            "  plugin:      {} {}  {}",
            p.plugin_name, p.version, p.description
        );
        println!("  wit:         launch:plugin@{}", p.wit_version);
        let kind = if p.uses_wasi {
            "WASI 0.2"
        } else {
            "lean, no WASI"
        };
        println!("  imports:     ({kind}) {}", p.imports.join(", "));
        println!("  origin:      {}", p.origin);
        println!("  file:        {}", p.path.display());
        println!("  sha256:      {}", p.sha256);
        let list = |v: &[String]| {
            if v.is_empty() {
                "(none)".to_string()
            } else {
                v.join(", ")
            }
        };
        println!("  hosts:       {}", list(&p.hosts));
        println!("  env:         {}", list(&p.env));
        println!("  secrets:     {}", list(&p.secrets));
        println!("  dirs:        {}", list(&p.dirs));
        println!(
            "  docker:      {}",
            if p.docker { "granted" } else { "(none)" }
        );
        println!(
            "  limits:      {} ms of its own running time per call, {} ms in all, {} MiB",
            p.deadline_ms, p.timeout_ms, p.memory_mb
        );
    }
    Ok(())
}
