//! `launch-agent queue list`, `queue stop` and `queue migrate`.

use launch_agent::agent;
use launch_agent::config::LaunchConfig;
use launch_agent::queue::postgres::PostgresBackend;
use launch_agent::queue::{self as backend, BackendSettings, format_table};
use launch_agent::state_dir::StateDir;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `queue`'s subcommands.
#[derive(clap::Subcommand)]
pub(super) enum QueueCommand {
    /// List queue items.
    List {
        /// Only this queue.
        #[arg(long, short = 'q')]
        queue: Option<String>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// The config whose `queue_backend` to read (default: the embedded queue).
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
    },
    /// Ask for an item to be stopped (a queued item is stopped at once).
    Stop {
        /// The item id.
        id: String,
        /// The config whose `queue_backend` to use (default: the embedded queue).
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
    },
    /// Bring the PostgreSQL queue's schema up to date (agents also do at start-up).
    Migrate {
        /// The config naming the PostgreSQL queue (`queue_backend: postgres`).
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
        /// Only show the migrations that would be applied, and their SQL.
        #[arg(long)]
        dry_run: bool,
    },
}

/// The backend the CLI commands use: the config's when one is given, else
/// the embedded queue of the state dir (what they always did).
pub(super) fn settings(
    state_arg: Option<&Path>,
    config: Option<&Path>,
) -> anyhow::Result<(BackendSettings, StateDir)> {
    match config {
        Some(path) => {
            let config = LaunchConfig::load(path)?;
            let state = StateDir::resolve(state_arg, Some(&config));
            Ok((BackendSettings::from_config(&config, state.root()), state))
        }
        None => {
            let state = StateDir::resolve(state_arg, None);
            Ok((BackendSettings::embedded(state.root()), state))
        }
    }
}

/// Runs one `queue` subcommand.
pub(super) async fn queue(
    state_arg: Option<&Path>,
    command: QueueCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        QueueCommand::List {
            queue,
            json,
            config,
        } => {
            let (settings, _) = settings(state_arg, config.as_deref())?;
            let items = backend::open_for_reading(&settings)
                .await?
                .list(queue.as_deref())
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                println!("{}", format_table(&items).trim_end());
            }
        }
        QueueCommand::Stop { id, config } => {
            let (settings, state) = settings(state_arg, config.as_deref())?;
            let new_state = backend::open(&settings).await?.request_stop(&id).await?;
            agent::wake::wake_all(&state.wake_dir());
            println!("{id}: {new_state}");
        }
        QueueCommand::Migrate { config, dry_run } => {
            let (settings, _) = settings(state_arg, config.as_deref())?;
            let BackendSettings::Postgres(settings) = settings else {
                anyhow::bail!(
                    "`queue migrate` is for the PostgreSQL queue: give a config with `queue_backend: postgres` (--config); the {} queue migrates itself",
                    settings.name()
                );
            };
            if dry_run {
                let pending = PostgresBackend::pending_migrations(&settings).await?;
                if pending.is_empty() {
                    println!("the schema is up to date: nothing to apply");
                }
                for migration in pending {
                    println!(
                        "-- would apply version {}: {}\n{}",
                        migration.version,
                        migration.name,
                        migration.sql.trim()
                    );
                }
            } else {
                let applied = PostgresBackend::migrate(&settings).await?;
                if applied.is_empty() {
                    println!("the schema is up to date: nothing to apply");
                }
                for version in applied {
                    println!("applied version {version}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
