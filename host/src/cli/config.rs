//! `launch-agent config check`: validate a launch-config.yaml.

use launch_agent::config::LaunchConfig;
use std::path::PathBuf;
use std::process::ExitCode;

/// `config`'s subcommands.
#[derive(clap::Subcommand)]
pub(super) enum ConfigCommand {
    /// Validate a config file; exits non-zero with the error's file, line and column.
    Check {
        /// The file.
        file: PathBuf,
    },
}

/// Runs one `config` subcommand.
pub(super) fn config(command: ConfigCommand) -> anyhow::Result<ExitCode> {
    let ConfigCommand::Check { file } = command;
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
