//! `launch-agent submit`: check a launch spec and put it on a queue.

use anyhow::Context as _;
use launch_agent::agent;
use launch_agent::queue;
use launch_agent::spec;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `submit`'s arguments.
#[derive(clap::Args)]
pub(super) struct SubmitArgs {
    /// The queue.
    #[arg(long, short = 'q', default_value = "default")]
    queue: String,
    /// The launch spec file, or - for standard input.
    spec: PathBuf,
    /// The config whose `queue_backend` to submit to (default: the embedded queue).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
}

/// Reads, checks and queues the spec; prints the new item's id.
pub(super) async fn submit(
    state_arg: Option<&Path>,
    args: &SubmitArgs,
) -> anyhow::Result<ExitCode> {
    let spec_path = args.spec.as_path();
    let (text, source) = if spec_path == Path::new("-") {
        let source = "standard input".to_string();
        (spec::read_from(std::io::stdin(), &source)?, source)
    } else {
        (spec::read_file(spec_path)?, spec_path.display().to_string())
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
        let resolved = std::fs::canonicalize(base.join(&uri)).with_context(|| {
            let shown = launch_agent::text::for_log;
            format!("`uri` \"{}\" in {}", shown(&uri), shown(&source))
        })?;
        value["uri"] = serde_json::Value::String(resolved.display().to_string());
    }
    spec::LaunchSpec::from_value(value.clone())?;
    let (settings, state) = super::queue::settings(state_arg, args.config.as_deref())?;
    let id = queue::open(&settings)
        .await?
        .submit(&args.queue, value)
        .await?;
    agent::wake::wake_all(&state.wake_dir());
    println!("{id}");
    Ok(ExitCode::SUCCESS)
}
