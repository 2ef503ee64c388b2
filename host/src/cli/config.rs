//! `launch-agent config check`: validate a launch-config.yaml as `run`
//! would take it (see [`launch_agent::config_check`]).

use launch_agent::config::LaunchConfig;
use std::path::PathBuf;
use std::process::ExitCode;

/// `config`'s subcommands.
#[derive(clap::Subcommand)]
pub(super) enum ConfigCommand {
    /// Validate a config file and load (not run) every plugin it names;
    /// exits non-zero listing every problem with its key, file, line and
    /// column.
    Check {
        /// The file.
        file: PathBuf,
        /// A dir whose plugin files override the default bundle's embedded ones.
        #[arg(long, env = "LAUNCH_AGENT_PLUGIN_DIR")]
        plugin_dir: Option<PathBuf>,
    },
}

/// Runs one `config` subcommand.
pub(super) fn config(command: ConfigCommand) -> anyhow::Result<ExitCode> {
    let ConfigCommand::Check { file, plugin_dir } = command;
    // A file that does not parse stops at its first problem.
    let config = LaunchConfig::load(&file)?;
    let problems = launch_agent::config_check::check(&config, plugin_dir.as_deref());
    let file = launch_agent::text::for_log(&file.to_string_lossy()).into_owned();
    if problems.is_empty() {
        println!("{file}: ok ({})", config.summary());
        return Ok(ExitCode::SUCCESS);
    }
    for problem in &problems {
        eprintln!("error: {problem}");
    }
    Ok(ExitCode::FAILURE)
}
