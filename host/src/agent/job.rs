//! One job, from claim to outcome: environment → registry → builder →
//! runner, each step logged with tracing, written to the job's log and
//! recorded on the queue item.

use super::JobContext;
use crate::capabilities::log::LogSink;
use crate::plugins::CallError;
use crate::plugins::bindings::{Job, Stage as PluginStage};
use crate::plugins::loaded::BuildRequest;
use crate::queue::{QueueItem, Stage};
use crate::runners::{Control, RunOutcome, RunRequest, local_process};
use crate::spec::LaunchSpec;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// How a job ended, as the agent reports it to the queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobEnd {
    /// The run exited 0.
    Finished,
    /// A step failed.
    Failed {
        /// Which stage.
        stage: Stage,
        /// Why; names the plugin and its version when a plugin failed.
        message: String,
        /// The run's exit code, when it ran and exited.
        exit_code: Option<i32>,
    },
    /// Stopped on request.
    Stopped,
    /// Handed back to the queue (agent shutdown).
    HandedBack,
}

/// The job's log file, shared by the agent's steps and the plugins' log lines.
fn job_log(path: std::path::PathBuf) -> LogSink {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .ok()
        .map(Mutex::new);
    Arc::new(move |line: &str| {
        if let Some(file) = &file
            && let Ok(mut f) = file.lock()
        {
            let _ = writeln!(f, "{} {line}", chrono::Utc::now().format("%H:%M:%S%.3f"));
        }
    })
}

fn stage_of(stage: PluginStage) -> Stage {
    match stage {
        PluginStage::Agent => Stage::Agent,
        PluginStage::Build => Stage::Build,
        PluginStage::Run => Stage::Run,
    }
}

/// A failed plugin call as a job failure: the plugin's own stage for its own
/// errors, the step's stage for traps and deadlines.
fn plugin_failure(error: CallError, step: Stage) -> JobEnd {
    let stage = match &error {
        CallError::Plugin { error, .. } => stage_of(error.stage),
        _ => step,
    };
    JobEnd::Failed {
        stage,
        message: error.to_string(),
        exit_code: None,
    }
}

fn failed(stage: Stage, message: impl Into<String>) -> JobEnd {
    JobEnd::Failed {
        stage,
        message: message.into(),
        exit_code: None,
    }
}

/// Runs one claimed item through every step; never panics on bad input.
pub async fn run_job(
    ctx: Arc<JobContext>,
    item: QueueItem,
    control: watch::Receiver<Control>,
) -> JobEnd {
    let run_dir = ctx.state.run_dir(&item.id);
    if let Err(e) = std::fs::create_dir_all(&run_dir) {
        return failed(
            Stage::Agent,
            format!("cannot create the run dir {}: {e}", run_dir.display()),
        );
    }
    let log = job_log(run_dir.join("agent.log"));
    let step = |message: &str| {
        tracing::info!(item = %item.id, queue = %item.queue, "{message}");
        log(message);
    };
    step(&format!(
        "job claimed from queue {} (attempt {})",
        item.queue, item.attempts
    ));

    let spec = match LaunchSpec::from_value(item.spec.clone()) {
        Ok(spec) => spec,
        Err(e) => return failed(Stage::Agent, e.to_string()),
    };
    let job = Job {
        id: item.id.clone(),
        queue: item.queue.clone(),
        spec_json: spec.redacted().to_string(),
    };

    // Environment.
    let environment = &ctx.environment;
    let env_settings = environment.settings_for(ctx.environment_block.clone());
    step(&format!(
        "environment: verifying with {}",
        environment.label()
    ));
    if let Err(e) = environment
        .verify_environment(&env_settings, Some(log.clone()))
        .await
    {
        return plugin_failure(e, Stage::Agent);
    }
    let mut run_env = match environment
        .run_env(&env_settings, &job, Some(log.clone()))
        .await
    {
        Ok(env) => env,
        Err(e) => return plugin_failure(e, Stage::Agent),
    };

    // Registry: where a build would go.
    let mut destination = String::new();
    if let Some(registry) = &ctx.registry {
        let settings = registry.settings_for(ctx.registry_block.clone());
        match registry.repository_uri(&settings, Some(log.clone())).await {
            Ok(uri) => {
                step(&format!(
                    "registry: {} gives repository {uri}",
                    registry.label()
                ));
                destination = uri;
            }
            Err(e) => return plugin_failure(e, Stage::Agent),
        }
    }

    // Builder: only when the runner needs an image the job does not name.
    let resource = spec.resource().to_string();
    let needs_image = resource != "local-process";
    let mut image = spec.image().map(str::to_string);
    if needs_image && image.is_none() {
        let builder = &ctx.builder;
        step(&format!("build: planning with {}", builder.label()));
        let request = BuildRequest {
            job: job.clone(),
            settings: builder.settings_for(ctx.builder_block.clone()),
            destination: destination.clone(),
            source_dir: None,
            source_id: String::new(),
        };
        let plan = match builder.plan(&request, None, Some(log.clone())).await {
            Ok(plan) => plan,
            Err(e) => return plugin_failure(e, Stage::Build),
        };
        match builder.build(&request, &plan, None, None, Some(log.clone())).await {
            Ok(outcome) => {
                step(&format!(
                    "build: image {} ({})",
                    outcome.image_uri,
                    if outcome.built { "built" } else { "already in the registry, build skipped" }
                ));
                image = Some(outcome.image_uri);
            }
            Err(e) => return plugin_failure(e, Stage::Build),
        }
    }

    // Run.
    if resource != "local-process" {
        return failed(
            Stage::Run,
            format!(
                "resource `{resource}` is not supported by this agent yet (image {}); use `local-process`",
                image.as_deref().unwrap_or("none")
            ),
        );
    }
    let command = match spec.entry_point() {
        Ok(command) => command,
        Err(e) => return failed(Stage::Agent, e.to_string()),
    };
    run_env.extend(spec.wandb_env(&item.id, &item.queue));
    let request = RunRequest {
        item_id: item.id.clone(),
        command,
        env: run_env,
        env_remove: ctx.secret_env_vars.clone(),
        workdir: spec.code_dir().map(std::path::PathBuf::from),
        log_path: run_dir.join("output.log"),
    };
    if let Err(e) = ctx.queue.mark_running(&item.id, &ctx.agent_id) {
        return failed(Stage::Agent, e.to_string());
    }
    step(&format!(
        "run: starting local-process {:?}",
        request.command.first().map(String::as_str).unwrap_or("")
    ));
    let queue = ctx.queue.clone();
    let id = item.id.clone();
    let outcome = local_process::run(&request, control.clone(), move |pid| {
        if let Err(e) = queue.set_run_pid(&id, Some(pid)) {
            tracing::warn!(item = %id, error = %e, "cannot record the run's pid");
        }
    })
    .await;
    match outcome {
        Ok(RunOutcome::Finished) => {
            step("run: finished (exit code 0)");
            JobEnd::Finished
        }
        Ok(RunOutcome::Failed { exit_code, message }) => {
            step(&format!("run: failed: {message}"));
            JobEnd::Failed {
                stage: Stage::Run,
                message: format!("{message} (output: {})", request.log_path.display()),
                exit_code,
            }
        }
        Ok(RunOutcome::Stopped) => {
            if *control.borrow() == Control::HandBack {
                step("run: stopped, job handed back to the queue");
                JobEnd::HandedBack
            } else {
                step("run: stopped on request");
                JobEnd::Stopped
            }
        }
        Err(e) => failed(Stage::Run, format!("{e:#}")),
    }
}
