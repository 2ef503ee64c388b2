//! The command line, one module per command:
//!
//! | command | module |
//! |---|---|
//! | `run` | [`run`]: serve the queues |
//! | `submit` | [`submit`]: put a launch spec on a queue |
//! | `queue list`, `queue stop`, `queue migrate` | [`queue`] |
//! | `config check` | [`config`] |
//! | `plugins list`, `plugins inspect` | [`plugins`] |
//! | `plugins call` | [`plugins_call`] |
//! | `deploy coreweave` | [`deploy`]: run this agent on a cluster |
//!
//! This module parses the arguments, sets up logging and the async
//! runtime, and hands each command to its module.

mod config;
mod deploy;
mod plugins;
mod plugins_call;
mod queue;
mod run;
mod submit;

use clap::{Parser, Subcommand};
use launch_agent::config::LaunchConfig;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
    Run(run::RunArgs),
    /// Put a launch spec (JSON or YAML file, or - for stdin) on a queue; prints the item id.
    Submit(submit::SubmitArgs),
    /// Look at the queue.
    #[command(subcommand)]
    Queue(queue::QueueCommand),
    /// Check a launch-config.yaml.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// List or inspect plugins.
    #[command(subcommand)]
    Plugins(plugins::PluginsCommand),
    /// Deploy this agent on a cluster (or print what would be applied).
    #[command(subcommand)]
    Deploy(deploy::DeployCommand),
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
            let config = load_config(args.config.as_deref()).ok();
            // While no other thread exists: the secrets' variables leave the
            // environment, and the agent becomes non-dumpable.
            launch_agent::secret_env::seal(config.as_ref());
            args.verbose.max(config.map(|c| c.verbosity).unwrap_or(0))
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
    let result = runtime.block_on(dispatch(cli));
    // Work left behind (a job task in a plugin call after the final signal,
    // a read that hangs) is not waited for.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
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
    let state_arg = cli.state_dir.as_deref();
    match cli.command {
        Command::Run(args) => run::run(state_arg, args).await,
        Command::Submit(args) => submit::submit(state_arg, &args).await,
        Command::Queue(command) => queue::queue(state_arg, command).await,
        Command::Config(command) => config::config(command),
        Command::Plugins(command) => plugins::plugins(state_arg, command).await,
        Command::Deploy(command) => deploy::deploy(state_arg, command).await,
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
