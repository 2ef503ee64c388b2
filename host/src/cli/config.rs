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
    let file = launch_agent::text::for_log(&file.to_string_lossy()).into_owned();
    println!("{file}: ok ({})", config.summary());
    Ok(ExitCode::SUCCESS)
}
