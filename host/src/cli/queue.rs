//! `launch-agent queue list` and `queue stop`.

use launch_agent::agent;
use launch_agent::queue::{self as backend, BackendSettings, format_table};
use launch_agent::state_dir::StateDir;
use std::path::Path;
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
    },
    /// Ask for an item to be stopped (a queued item is stopped at once).
    Stop {
        /// The item id.
        id: String,
    },
}

/// Runs one `queue` subcommand.
pub(super) async fn queue(
    state_arg: Option<&Path>,
    command: QueueCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        QueueCommand::List { queue, json } => {
            let state = StateDir::resolve(state_arg, None);
            let items = backend::open_for_reading(&BackendSettings::embedded(state.root()))
                .await?
                .list(queue.as_deref())
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                println!("{}", format_table(&items).trim_end());
            }
        }
        QueueCommand::Stop { id } => {
            let state = StateDir::resolve(state_arg, None);
            let new_state = backend::open(&BackendSettings::embedded(state.root()))
                .await?
                .request_stop(&id)
                .await?;
            agent::wake::wake_all(&state.wake_dir());
            println!("{id}: {new_state}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
