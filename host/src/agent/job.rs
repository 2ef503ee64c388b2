//! One job, from claim to outcome: environment → registry → builder →
//! runner, each step logged with tracing, written to the job's log and
//! recorded on the queue item.

use super::JobContext;
use crate::capabilities::log::{JobLog, LogSink};
use crate::plugins::CallError;
use crate::plugins::bindings::{Job, Stage as PluginStage};
use crate::plugins::loaded::{BuildRequest, SOURCE_GUEST_DIR};
use crate::queue::{QueueItem, Stage};
use crate::runners::local_container::{self, ContainerRunRequest};
use crate::runners::{Control, RunOutcome, RunRequest, local_process};
use crate::sources;
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
/// Warnings go to the queue as `updateRunQueueItemWarning` does for W&B.
fn job_log(
    path: std::path::PathBuf,
    ctx: &Arc<JobContext>,
    item_id: &str,
    stage: Arc<Mutex<Stage>>,
) -> LogSink {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .ok()
        .map(Mutex::new);
    let queue = ctx.queue.clone();
    let item_id = item_id.to_string();
    Arc::new(JobLog {
        line: Box::new(move |line: &str| {
            if let Some(file) = &file
                && let Ok(mut f) = file.lock()
            {
                let _ = writeln!(f, "{} {line}", chrono::Utc::now().format("%H:%M:%S%.3f"));
            }
        }),
        warning: Box::new(move |line: &str| {
            let (queue, id, line) = (queue.clone(), item_id.clone(), line.to_string());
            let stage = stage.lock().map(|s| *s).unwrap_or(Stage::Agent);
            tokio::spawn(async move {
                if let Err(error) = queue.warn(&id, stage, &line).await {
                    tracing::warn!(item = %id, %error, "cannot report a warning to the queue");
                }
            });
        }),
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
    let stage = Arc::new(Mutex::new(Stage::Agent));
    let set_stage = |now: Stage| {
        if let Ok(mut s) = stage.lock() {
            *s = now;
        }
    };
    let log = job_log(run_dir.join("agent.log"), &ctx, &item.id, stage.clone());
    let step = |message: &str| {
        tracing::info!(item = %item.id, queue = %item.queue, "{message}");
        log.line(message);
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
    let mut destination = ctx.builder_destination.clone().unwrap_or_default();
    let registry_settings = ctx
        .registry
        .as_ref()
        .map(|r| r.settings_for(ctx.registry_block.clone()));
    if let (Some(registry), Some(settings)) = (&ctx.registry, &registry_settings)
        && destination.is_empty()
    {
        match registry.repository_uri(settings, Some(log.clone())).await {
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

    // A W&B job artifact: its code, repo or image, fetched by the backend.
    let fetched = match spec.job() {
        Some(name) => {
            step(&format!("job: fetching W&B job artifact {name}"));
            match ctx.queue.fetch_job(name, &run_dir.join("job")).await {
                Ok(fetched) => {
                    step(&format!(
                        "job: {} ({} job)",
                        fetched.source_id, fetched.source_type
                    ));
                    Some(fetched)
                }
                Err(e) => {
                    return failed(Stage::Agent, format!("fetching job artifact {name}: {e}"));
                }
            }
        }
        None => None,
    };

    let resource = spec.resource().to_string();
    if !matches!(resource.as_str(), "local-process" | "local-container") {
        return failed(
            Stage::Run,
            format!(
                "resource `{resource}` is not supported by this agent yet; use `local-process` or `local-container`"
            ),
        );
    }
    if resource == "local-container"
        && let Err(e) = local_container::check_resource_args(&spec.resource_args())
    {
        return failed(
            Stage::Agent,
            format!("resource_args.local-container: {e:#}"),
        );
    }

    // Build: only when the runner needs an image the job does not name.
    let mut image = spec
        .image()
        .map(str::to_string)
        .or_else(|| fetched.as_ref().and_then(|f| f.image.clone()));
    if resource == "local-container" && image.is_none() {
        set_stage(Stage::Build);
        let source = match sources::fetch(&spec, fetched.as_ref(), &run_dir).await {
            Ok(source) => source,
            Err(e) => return failed(Stage::Build, format!("fetching the job's source: {e:#}")),
        };
        let builder = &ctx.builder;
        let request = BuildRequest {
            job: job.clone(),
            settings: builder.settings_for(ctx.builder_block.clone()),
            destination: destination.clone(),
            source_dir: source.dir.as_ref().map(|_| SOURCE_GUEST_DIR.to_string()),
            source_id: source.id.clone(),
        };
        let plan = match builder
            .plan(&request, source.dir.as_deref(), Some(log.clone()))
            .await
        {
            Ok(plan) => plan,
            Err(e) => return plugin_failure(e, Stage::Build),
        };
        step(&format!(
            "build: {} plans image {} (Dockerfile: {})",
            builder.label(),
            plan.image_uri,
            plan.dockerfile_origin
        ));
        let exists = match (&ctx.registry, &registry_settings) {
            (Some(registry), Some(settings)) => {
                registry
                    .image_exists(settings, &plan.image_uri, Some(log.clone()))
                    .await
            }
            _ => Ok(ctx.local_image_exists(&plan.image_uri).await),
        };
        match exists {
            Ok(true) => {
                step(&format!(
                    "build: skipped, {} already exists",
                    plan.image_uri
                ));
                image = Some(plan.image_uri.clone());
            }
            Ok(false) => {
                let credentials = match (&ctx.registry, &registry_settings) {
                    (Some(registry), Some(settings)) => {
                        match registry.login(settings, Some(log.clone())).await {
                            Ok(credentials) => credentials,
                            Err(e) => return plugin_failure(e, Stage::Build),
                        }
                    }
                    _ => None,
                };
                match builder
                    .build(
                        &request,
                        &plan,
                        credentials.as_ref(),
                        source.dir.as_deref(),
                        Some(log.clone()),
                    )
                    .await
                {
                    Ok(outcome) => {
                        step(&format!("build: built {}", outcome.image_uri));
                        image = Some(outcome.image_uri);
                    }
                    Err(e) => return plugin_failure(e, Stage::Build),
                }
            }
            Err(e) => return plugin_failure(e, Stage::Build),
        }
    }

    // Run.
    set_stage(Stage::Run);
    let command = match spec.entry_point() {
        Ok(command) if command.is_empty() => fetched
            .as_ref()
            .map(|f| f.entrypoint.clone())
            .unwrap_or_default(),
        Ok(command) => command,
        Err(e) => return failed(Stage::Agent, e.to_string()),
    };
    run_env.extend(spec.wandb_env(&item.id, &item.queue));
    if let Err(e) = ctx.queue.mark_running(&item.id, &ctx.agent_id).await {
        return failed(Stage::Agent, e.to_string());
    }
    let log_path = run_dir.join("output.log");
    let queue = ctx.queue.clone();
    let id = item.id.clone();
    let outcome = if resource == "local-container" {
        let Some(image) = image else {
            return failed(
                Stage::Build,
                "the job needs an image: name one (`docker.docker_image`) or give it source to build",
            );
        };
        let docker = match ctx.docker().await {
            Ok(docker) => docker,
            Err(e) => return failed(Stage::Run, format!("{e:#}")),
        };
        step(&format!("run: starting local-container from {image}"));
        let request = ContainerRunRequest {
            item_id: item.id.clone(),
            image,
            command,
            env: run_env,
            log_path: log_path.clone(),
            resource_args: spec.resource_args(),
            stop_grace: ctx.stop_grace,
        };
        let started_log = log.clone();
        local_container::run(&docker, &request, control.clone(), move |container| {
            let short: String = container.chars().take(12).collect();
            tracing::info!(item = %id, "run: container {short} started");
            started_log.line(&format!("run: container {short} started"));
            drop(queue);
        })
        .await
    } else {
        // A W&B job's code (or repo) is where a local process runs.
        let workdir = match (spec.code_dir(), &fetched) {
            (Some(dir), _) => Some(std::path::PathBuf::from(dir)),
            (None, Some(job)) => match sources::fetch(&spec, Some(job), &run_dir).await {
                Ok(source) => source.dir,
                Err(e) => return failed(Stage::Agent, format!("fetching the job's code: {e:#}")),
            },
            (None, None) => None,
        };
        let request = RunRequest {
            item_id: item.id.clone(),
            command,
            env: run_env,
            env_remove: ctx.secret_env_vars.clone(),
            stop_grace: ctx.stop_grace,
            workdir,
            log_path: log_path.clone(),
        };
        step(&format!(
            "run: starting local-process {:?}",
            request.command.first().map(String::as_str).unwrap_or("")
        ));
        local_process::run(&request, control.clone(), move |pid| {
            tokio::spawn(async move {
                if let Err(e) = queue.set_run_pid(&id, Some(pid)).await {
                    tracing::warn!(item = %id, error = %e, "cannot record the run's pid");
                }
            });
        })
        .await
    };
    match outcome {
        Ok(RunOutcome::Finished) => {
            step("run: finished (exit code 0)");
            JobEnd::Finished
        }
        Ok(RunOutcome::Failed { exit_code, message }) => {
            step(&format!("run: failed: {message}"));
            JobEnd::Failed {
                stage: Stage::Run,
                message: format!("{message} (output: {})", log_path.display()),
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
