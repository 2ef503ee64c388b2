//! One job, from claim to outcome: environment → registry → builder →
//! runner, each step logged with tracing, written to the job's log and
//! recorded on the queue item.
//!
//! Until its run starts, a job ends as soon as it is stopped or handed back
//! (a plugin call or a read of its source in progress is dropped), so
//! `queue stop` and a shutdown never wait on a slow preparation.
//!
//! What the run executes:
//!
//! | the spec gives | command |
//! |---|---|
//! | `overrides.entry_point` | the entry point, then `overrides.args` |
//! | no entry point, a W&B job with one | the job's entry point, then `overrides.args` |
//! | no entry point, a runner that runs an image | the image's own entry point, given `overrides.args` as its arguments (as `docker run image args...`) |
//! | no entry point, `local-process` | none: the job fails at stage `agent`, saying it has no entry point |
//!
//! Where a `local-process` run runs: the `uri` directory (a path or a
//! `file://` URL; other URLs are refused), else a clone of `git.repo`, else
//! a W&B job's code; a job that names only an image is refused (the
//! runner cannot run images). Every refusal is at stage `agent`.

use super::JobContext;
use super::build;
use crate::capabilities::docker::ImageRef;
use crate::capabilities::log::{JobLog, LogSink};
use crate::capped_log::CappedLog;
use crate::plugins::CallError;
use crate::plugins::bindings::{Job, Stage as PluginStage};
use crate::plugins::loaded::RegistryCredentials;
use crate::queue::{QueueItem, Stage};
use crate::runners::{Control, RegistryLogin, RunHandle, RunHooks, RunOutcome, RunRequest, Runner};
use crate::sources::{self, FetchedJob};
use crate::spec::LaunchSpec;
use crate::state_dir::StorageProblem;
use std::io::Write as _;
use std::path::PathBuf;
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
    /// Not started: the agent's own storage failed it (the run dir could
    /// not be made). The job is handed back; the problem is the agent's.
    Unstarted(StorageProblem),
}

impl JobEnd {
    /// A one-word name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            JobEnd::Finished => "finished",
            JobEnd::Failed { .. } => "failed",
            JobEnd::Stopped => "stopped",
            JobEnd::HandedBack => "handed back",
            JobEnd::Unstarted(_) => "handed back unstarted",
        }
    }
}

/// How long a finished job waits for its warnings to reach the queue.
const WARNINGS_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// The job's log file, shared by the agent's steps and the plugins' log lines.
/// Warnings go to the queue as `updateRunQueueItemWarning` does for W&B, in
/// order, through one task; the returned handle ends once every warning was
/// sent and the log is dropped.
///
/// The log is capped at the context's `log_limit` (the cut is said in
/// it), and a write that fails (a full disk) ends the logging, not the job.
fn job_log(
    path: std::path::PathBuf,
    ctx: &Arc<JobContext>,
    item_id: &str,
    stage: Arc<Mutex<Stage>>,
) -> (LogSink, tokio::task::JoinHandle<()>) {
    let file = CappedLog::append(&path, ctx.log_limit).ok().map(Mutex::new);
    let (sender, mut warnings) = tokio::sync::mpsc::unbounded_channel::<(Stage, String)>();
    let (queue, id) = (ctx.queue.clone(), item_id.to_string());
    let reporter = tokio::spawn(async move {
        while let Some((stage, line)) = warnings.recv().await {
            if let Err(error) = queue.warn(&id, stage, &line).await {
                tracing::warn!(item = %id, %error, "cannot report a warning to the queue");
            }
        }
    });
    let log = Arc::new(JobLog::with_redactor(
        Box::new(move |line: &str| {
            if let Some(file) = &file
                && let Ok(mut f) = file.lock()
            {
                let _ = writeln!(f, "{} {line}", chrono::Utc::now().format("%H:%M:%S%.3f"));
            }
        }),
        Box::new(move |line: &str| {
            let stage = stage.lock().map(|s| *s).unwrap_or(Stage::Agent);
            // The reporter ends only after every sender is gone.
            let _ = sender.send((stage, line.to_string()));
        }),
        ctx.redactor.clone(),
    ));
    (log, reporter)
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
pub(super) fn plugin_failure(error: CallError, step: Stage) -> JobEnd {
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

pub(super) fn failed(stage: Stage, message: impl Into<String>) -> JobEnd {
    JobEnd::Failed {
        stage,
        message: message.into(),
        exit_code: None,
    }
}

/// One job in progress: what every step needs.
pub(super) struct JobRun<'a> {
    pub(super) ctx: &'a Arc<JobContext>,
    pub(super) item: &'a QueueItem,
    pub(super) run_dir: PathBuf,
    pub(super) log: LogSink,
    stage: Arc<Mutex<Stage>>,
}

impl JobRun<'_> {
    /// Logs one step to tracing and to the job's log (each scrubbed of the
    /// secrets the agent knows: a step may quote a plugin's answer).
    pub(super) fn step(&self, message: &str) {
        let shown = self.ctx.redactor.scrub(message);
        tracing::info!(item = %self.item.id, queue = %self.item.queue, "{shown}");
        self.log.line(message);
    }

    /// The stage warnings are reported under from now on.
    fn enter(&self, stage: Stage) {
        if let Ok(mut current) = self.stage.lock() {
            *current = stage;
        }
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
        // The agent's storage, not the job, is at fault.
        return JobEnd::Unstarted(StorageProblem::from_io(
            &e,
            &run_dir,
            "cannot create the run dir",
        ));
    }
    let stage = Arc::new(Mutex::new(Stage::Agent));
    let (log, warnings) = job_log(run_dir.join("agent.log"), &ctx, &item.id, stage.clone());
    let run = JobRun {
        ctx: &ctx,
        item: &item,
        run_dir,
        log,
        stage,
    };
    let end = match run.steps(control).await {
        Ok(end) | Err(end) => end,
    };
    // What the queue records passes the agent's redactor too.
    let end = match end {
        JobEnd::Failed {
            stage,
            message,
            exit_code,
        } => JobEnd::Failed {
            stage,
            message: ctx.redactor.scrub(&message),
            exit_code,
        },
        other => other,
    };
    // Every warning reaches the queue before the outcome does.
    drop(run);
    if tokio::time::timeout(WARNINGS_DRAIN, warnings)
        .await
        .is_err()
    {
        tracing::warn!(item = %item.id, "the job's warnings did not all reach the queue in time");
    }
    end
}

/// What a job needs once it is prepared: where it runs and what.
struct Prepared {
    runner: Arc<dyn Runner>,
    request: RunRequest,
}

/// Waits until `control` asks for anything but running; the agent gone
/// counts as a hand-back.
async fn stop_wanted(mut control: watch::Receiver<Control>) -> Control {
    loop {
        let wanted = *control.borrow_and_update();
        if wanted != Control::Run {
            return wanted;
        }
        if control.changed().await.is_err() {
            return Control::HandBack;
        }
    }
}

impl JobRun<'_> {
    /// Environment, registry, job source, build, run: the first failure
    /// ends the job; a stop or hand-back before the run ends it at once.
    async fn steps(&self, control: watch::Receiver<Control>) -> Result<JobEnd, JobEnd> {
        let prepared = tokio::select! {
            biased;
            wanted = stop_wanted(control.clone()) => return Ok(self.ended_before_run(wanted)),
            prepared = self.prepare() => prepared?,
        };
        let (ctx, item) = (self.ctx, self.item);
        self.enter(Stage::Run);
        ctx.queue
            .mark_running(&item.id, &ctx.agent_id)
            .await
            .map_err(|e| failed(Stage::Agent, e.to_string()))?;
        let outcome = prepared
            .runner
            .run(prepared.request, control.clone(), self)
            .await;
        Ok(self.report(outcome, &control))
    }

    /// How a job stopped or handed back before its run is recorded.
    fn ended_before_run(&self, wanted: Control) -> JobEnd {
        if wanted == Control::HandBack {
            self.step("job: handed back to the queue before its run started");
            JobEnd::HandedBack
        } else {
            self.step("job: stopped on request before its run started");
            JobEnd::Stopped
        }
    }

    /// Everything before the run: the environment, the job's source, the
    /// runner's checks, the build, the command.
    async fn prepare(&self) -> Result<Prepared, JobEnd> {
        let (ctx, item) = (self.ctx, self.item);
        self.step(&format!(
            "job claimed from queue {} (attempt {})",
            item.queue, item.attempts
        ));
        let spec = LaunchSpec::from_value(item.spec.clone())
            .map_err(|e| failed(Stage::Agent, e.to_string()))?;
        let job = Job {
            id: item.id.clone(),
            queue: item.queue.clone(),
            spec_json: spec.redacted().to_string(),
        };
        let mut run_env = self.prepare_environment(&job).await?;
        let fetched = self.fetch_job_artifact(&spec).await?;

        let runner = ctx
            .runners
            .get(spec.resource())
            .map_err(|e| failed(Stage::Run, e.to_string()))?;
        // The error names the key (`resource_args.<runner>.<key>`, or the
        // config key that keeps the queue's jobs off the runner).
        runner
            .check_args(&item.queue, &spec.resource_args())
            .map_err(|e| failed(Stage::Agent, format!("{e:#}")))?;
        let command = command(&spec, fetched.as_ref(), &*runner)?;

        // Build: only when the runner needs an image the job does not name.
        let mut image = spec
            .image()
            .map(str::to_string)
            .or_else(|| fetched.as_ref().and_then(|f| f.image.clone()));
        if runner.needs_image() && image.is_none() {
            self.enter(Stage::Build);
            image = Some(build::build_image(self, &job, &spec, fetched.as_ref()).await?);
        }

        run_env.extend(spec.wandb_env(&item.id, &item.queue));
        let mut request = RunRequest {
            item_id: item.id.clone(),
            queue: item.queue.clone(),
            image: None,
            command,
            env: run_env,
            env_remove: ctx.secret_env_vars.clone(),
            workdir: None,
            log_path: self.output_log(),
            log_limit: ctx.log_limit,
            resource_args: spec.resource_args(),
            stop_grace: ctx.stop_grace,
        };
        if runner.needs_image() {
            if image.is_none() {
                return Err(failed(
                    Stage::Build,
                    "the job needs an image: name one (`docker.docker_image`) or give it source to build",
                ));
            }
            request.image = image;
        } else {
            request.workdir = self.code_dir(&spec, fetched.as_ref()).await?;
        }
        Ok(Prepared { runner, request })
    }

    /// Verifies the environment and collects the variables it adds to the run.
    async fn prepare_environment(&self, job: &Job) -> Result<Vec<(String, String)>, JobEnd> {
        let environment = &self.ctx.environment;
        let settings = environment.settings_for(self.ctx.environment_block.clone());
        self.step(&format!(
            "environment: verifying with {}",
            environment.label()
        ));
        environment
            .verify_environment(&settings, Some(self.log.clone()))
            .await
            .map_err(|e| plugin_failure(e, Stage::Agent))?;
        let variables = environment
            .run_env(&settings, job, Some(self.log.clone()))
            .await
            .map_err(|e| plugin_failure(e, Stage::Agent))?;
        Ok(self.without_secrets(variables, environment.label()))
    }

    /// `variables` with every secret value the agent knows redacted: an
    /// environment plugin's secret is its own, not the run's (a run gets a
    /// secret only through `secrets:` the config maps to its variables).
    fn without_secrets(
        &self,
        variables: Vec<(String, String)>,
        plugin: &str,
    ) -> Vec<(String, String)> {
        let redactor = &self.ctx.redactor;
        variables
            .into_iter()
            .map(|(name, value)| {
                if !redactor.finds_secret_in(&value) {
                    return (name, value);
                }
                self.log.warning(&format!(
                    "environment: {plugin} returned variable {name} carrying a secret value; the run gets it redacted"
                ));
                let value = redactor.scrub(&value);
                (name, value)
            })
            .collect()
    }

    /// A W&B job artifact: its code, repo or image, fetched over the W&B API.
    async fn fetch_job_artifact(&self, spec: &LaunchSpec) -> Result<Option<FetchedJob>, JobEnd> {
        let Some(name) = spec.job() else {
            return Ok(None);
        };
        self.step(&format!("job: fetching W&B job artifact {name}"));
        let fetched = self
            .ctx
            .job_artifacts
            .fetch(name, &self.run_dir.join("job"))
            .await
            .map_err(|e| failed(Stage::Agent, format!("fetching job artifact {name}: {e}")))?;
        self.step(&format!(
            "job: {} ({} job)",
            fetched.source_id, fetched.source_type
        ));
        Ok(Some(fetched))
    }

    fn output_log(&self) -> PathBuf {
        self.run_dir.join("output.log")
    }

    /// Where a run that needs no image runs (see the module doc): the
    /// job's code directory, fetched when it is a git repository or a W&B
    /// job; `None` (the agent's working directory) for a job with no source
    /// at all.
    async fn code_dir(
        &self,
        spec: &LaunchSpec,
        fetched: Option<&FetchedJob>,
    ) -> Result<Option<PathBuf>, JobEnd> {
        let refuse = |e: anyhow::Error| failed(Stage::Agent, format!("{e:#}"));
        if let Some(dir) = sources::code_dir(spec).map_err(refuse)? {
            sources::local_dir::check_dir(&dir).map_err(refuse)?;
            return Ok(Some(dir));
        }
        if spec.git().is_some() || fetched.is_some() {
            self.step("job: fetching its code");
            let source = sources::fetch(spec, fetched, &self.run_dir)
                .await
                .map_err(|e| failed(Stage::Agent, format!("fetching the job's code: {e:#}")))?;
            return match source.dir {
                Some(dir) => Ok(Some(dir)),
                None => Err(failed(
                    Stage::Agent,
                    format!(
                        "the job's source {} is an image, which the {} runner cannot run: use `resource: local-container`",
                        source.id,
                        spec.resource()
                    ),
                )),
            };
        }
        if let Some(image) = spec.image() {
            return Err(failed(
                Stage::Agent,
                format!(
                    "the job names only an image ({}), which the {} runner cannot run: use `resource: local-container`, or give the job's code (`uri`, `git.repo`)",
                    crate::text::for_log(image),
                    spec.resource()
                ),
            ));
        }
        Ok(None)
    }

    /// The credentials to pull `image` with: the configured registry's login
    /// when the image lives in that registry (same host), else none.
    async fn registry_login(&self, image: &str) -> anyhow::Result<Option<RegistryCredentials>> {
        let Some(registry) = &self.ctx.registry else {
            return Ok(None);
        };
        let settings = registry.settings_for(self.ctx.registry_block.clone());
        let repository = registry
            .repository_uri(&settings, Some(self.log.clone()))
            .await?;
        let host = |reference: &str| ImageRef::parse(reference).ok().map(|r| r.registry);
        let image_host = host(image);
        if image_host.is_none() || image_host != host(&repository) {
            return Ok(None);
        }
        self.step(&format!(
            "run: logging in to {} with {} to pull the image",
            image_host.flatten().unwrap_or_default(),
            registry.label()
        ));
        Ok(registry.login(&settings, Some(self.log.clone())).await?)
    }

    /// How the run ended, as the queue records it.
    fn report(
        &self,
        outcome: anyhow::Result<RunOutcome>,
        control: &watch::Receiver<Control>,
    ) -> JobEnd {
        match outcome {
            Ok(RunOutcome::Finished) => {
                self.step("run: finished (exit code 0)");
                JobEnd::Finished
            }
            Ok(RunOutcome::Failed { exit_code, message }) => {
                self.step(&format!("run: failed: {message}"));
                JobEnd::Failed {
                    stage: Stage::Run,
                    message: format!("{message} (output: {})", self.output_log().display()),
                    exit_code,
                }
            }
            Ok(RunOutcome::Stopped) if *control.borrow() == Control::HandBack => {
                self.step("run: stopped, job handed back to the queue");
                JobEnd::HandedBack
            }
            Ok(RunOutcome::Stopped) => {
                self.step("run: stopped on request");
                JobEnd::Stopped
            }
            Err(e) => failed(Stage::Run, format!("{e:#}")),
        }
    }
}

/// What a runner gets from the agent during the run: the handle goes to the
/// queue, lines to the job's log, and pulls log in through the configured
/// registry plugin.
#[async_trait::async_trait]
impl RunHooks for JobRun<'_> {
    fn started(&self, handle: RunHandle) {
        if let Ok(mut handles) = self.ctx.run_handles.lock() {
            handles.insert(self.item.id.clone(), handle.clone());
        }
        let (queue, id) = (self.ctx.queue.clone(), self.item.id.clone());
        tokio::spawn(async move {
            if let Err(e) = queue.set_run_handle(&id, &handle).await {
                tracing::warn!(item = %id, error = %e, "cannot record the run's handle");
            }
        });
    }

    fn log(&self, line: &str) {
        self.step(line);
    }

    fn warning(&self, line: &str) {
        let shown = self.ctx.redactor.scrub(line);
        tracing::warn!(item = %self.item.id, queue = %self.item.queue, "{shown}");
        self.log.warning(line);
    }

    async fn pull_credentials(&self, image: &str) -> anyhow::Result<Option<RegistryLogin>> {
        Ok(self
            .registry_login(image)
            .await?
            .map(|credentials| RegistryLogin {
                username: credentials.username,
                password: credentials.password.value().to_string(),
            }))
    }
}

/// What the run executes (see the module doc).
fn command(
    spec: &LaunchSpec,
    fetched: Option<&FetchedJob>,
    runner: &dyn Runner,
) -> Result<Vec<String>, JobEnd> {
    let (entry_point, args) = spec
        .entry_point_and_args()
        .map_err(|e| failed(Stage::Agent, e.to_string()))?;
    if let Some(program) = entry_point.first() {
        if program.trim().is_empty() {
            return Err(failed(
                Stage::Agent,
                "`overrides.entry_point` starts with an empty program name: name the program to run (e.g. [\"python\", \"train.py\"])",
            ));
        }
        return Ok([entry_point, args].concat());
    }
    if let Some(job) = fetched.filter(|job| !job.entrypoint.is_empty()) {
        return Ok([job.entrypoint.clone(), args].concat());
    }
    if runner.needs_image() {
        return Ok(args);
    }
    let with_args = if args.is_empty() {
        String::new()
    } else {
        format!(
            " (`overrides.args` {} are only its arguments)",
            crate::text::for_log(&format!("{args:?}"))
        )
    };
    Err(failed(
        Stage::Agent,
        format!(
            "the job has no entry point{with_args}: set `overrides.entry_point` in the launch spec (e.g. [\"python\", \"train.py\"])"
        ),
    ))
}
