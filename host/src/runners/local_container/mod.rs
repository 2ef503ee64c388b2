//! The `local-container` runner: runs the job's image as a container on the
//! Docker Engine of this machine, with the W&B environment, through the
//! engine's API (no `docker` CLI needed).
//!
//! What W&B's agent does with `docker run --rm -e ... IMAGE`, this does over
//! the API: the container is named `launch-<item id>` and labelled
//! `launch-agent.item=<item id>`; its stdout and stderr are streamed into the
//! run's `output.log` as they arrive, capped at `max_log_mb` like every log
//! of a run (the cut is said in the log, and the rest of the stream is read
//! and dropped, so the container never blocks on it); exit code 0 ends the run `finished`,
//! any other `failed` with that code. A stop request (or the agent's
//! shutdown) stops the container (SIGTERM, then SIGKILL after
//! `stopped_run_timeout`). The container is always removed at the end, after
//! its exit code is read. Its run handle is the container id; an agent that
//! reclaims the job of an agent that died removes what that one left
//! ([`remove_leftover`]), found by that id and by the container's name.
//!
//! | part | module |
//! |---|---|
//! | the container's life: create, attach, start, stream, wait, stop, remove | this one |
//! | the image: used when the engine has it, else pulled with the agent's credentials | `pull` |
//! | `resource_args["local-container"]`: the allowlist of `docker run` flags, with its table | [`resource_args`] |
//! | what the operator lets a queue's jobs ask for: host paths, host namespaces, GPUs | [`policy`] |
//!
//! The engine is [`crate::clients::docker`]'s: the one `DOCKER_HOST` names,
//! else `unix:///var/run/docker.sock`, connected once per agent.
//!
//! The command, when the spec gives one, replaces the image's: its first
//! word becomes the entrypoint and the rest its arguments (W&B's
//! `--entrypoint` + arguments); with none, the image's own entrypoint and
//! command run.

pub mod policy;
pub mod pull;
pub mod resource_args;

use super::policy::PerQueue;
use super::{Control, RegistryLogin, RunHandle, RunHooks, RunOutcome, RunRequest, Runner};
use crate::capped_log::{CappedLog, LogState};
use crate::clients::Clients;
use crate::clients::docker::DockerEngine;
use anyhow::{Context as _, anyhow, bail};
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, InspectContainerOptions,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures_util::StreamExt as _;
use policy::ContainerPolicy;
use resource_args::ResourceArgs;
use serde_json::Value;
use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The `resource` it serves.
const NAME: &str = "local-container";

/// The `local-container` runner, on the agent's Docker Engine.
#[derive(Clone, Debug)]
pub struct LocalContainer {
    docker: Arc<DockerEngine>,
    policies: Arc<PerQueue<ContainerPolicy>>,
}

impl LocalContainer {
    /// The runner, on `clients`' engine, under the operator's `policies`
    /// (per queue).
    pub fn new(clients: &Clients, policies: Arc<PerQueue<ContainerPolicy>>) -> Self {
        LocalContainer {
            docker: clients.docker.clone(),
            policies,
        }
    }
}

#[async_trait::async_trait]
impl Runner for LocalContainer {
    fn name(&self) -> &'static str {
        NAME
    }

    fn needs_image(&self) -> bool {
        true
    }

    fn check_args(&self, queue: &str, resource_args: &Value) -> anyhow::Result<()> {
        let policy = self.policies.for_queue(queue);
        policy.check_enabled(queue).map_err(anyhow::Error::msg)?;
        ResourceArgs::parse(resource_args, policy, queue).map(|_| ())
    }

    async fn run(
        &self,
        request: RunRequest,
        control: watch::Receiver<Control>,
        hooks: &dyn RunHooks,
    ) -> anyhow::Result<RunOutcome> {
        let Some(image) = request.image else {
            bail!(
                "the job needs an image: name one (`docker.docker_image`) or give it source to build"
            );
        };
        let policy = self.policies.for_queue(&request.queue).clone();
        let docker = self.docker.client().await?;
        hooks.log(&format!("run: starting local-container from {image}"));
        let request = ContainerRunRequest {
            item_id: request.item_id,
            queue: request.queue,
            policy,
            image,
            command: request.command,
            env: request.env,
            log_path: request.log_path,
            log_limit: request.log_limit,
            resource_args: request.resource_args,
            stop_grace: request.stop_grace,
        };
        let pull_login = async || hooks.pull_credentials(&request.image).await;
        run(&docker, &request, control, pull_login, |container| {
            let short: String = container.chars().take(12).collect();
            hooks.log(&format!("run: container {short} started"));
            hooks.started(RunHandle {
                runner: NAME.to_string(),
                id: container.to_string(),
            });
        })
        .await
    }

    async fn clean_up(&self, item_id: &str, handle: Option<&RunHandle>) {
        let docker = match self.docker.client().await {
            Ok(docker) => docker,
            Err(error) => {
                tracing::warn!(item = %item_id, "cannot remove the containers of a run whose agent died: {error:#}");
                return;
            }
        };
        if let Some(handle) = handle.filter(|h| h.runner == NAME) {
            remove_leftover(&docker, &handle.id).await;
        }
        remove_leftover(&docker, &container_name(item_id)).await;
    }
}

/// The label every container of this runner carries, with the item id.
pub const ITEM_LABEL: &str = "launch-agent.item";

/// How long a removal waits for another removal of the same container.
const REMOVAL_WAIT: Duration = Duration::from_secs(30);

/// How long the output of a container that exited or was stopped may take
/// to drain into the log.
const DRAIN_AFTER_OUTPUT: Duration = Duration::from_secs(5);

/// What the agent asks the `local-container` runner to run.
#[derive(Clone, Debug)]
pub struct ContainerRunRequest {
    /// The queue item id; names the container `launch-<item_id>`.
    pub item_id: String,
    /// The queue the job came from, whose `policy` it runs under.
    pub queue: String,
    /// What the operator lets the queue's jobs ask for (host paths, host
    /// namespaces, GPUs).
    pub policy: ContainerPolicy,
    /// The image reference (`name[:tag]` or `name@digest`).
    pub image: String,
    /// The command and its arguments; empty runs the image's own.
    pub command: Vec<String>,
    /// Environment variables of the run (the W&B ones).
    pub env: Vec<(String, String)>,
    /// The run's output log (stdout and stderr of the container).
    pub log_path: PathBuf,
    /// The cap of `log_path` in bytes (`max_log_mb`): past it the log says
    /// it was cut, and the rest of the output is dropped.
    pub log_limit: u64,
    /// How long a stopped container gets between SIGTERM and SIGKILL
    /// (W&B's `stopped_run_timeout`).
    pub stop_grace: Duration,
    /// The spec's `resource_args["local-container"]`; `Null` when absent.
    /// See [`resource_args`] for the accepted keys; checked against
    /// `policy` before anything else, and again just before the container
    /// is created.
    pub resource_args: Value,
}

/// Runs `request` in a container under its queue's policy (checked first,
/// and again just before the container is created), calling
/// `started(container_id)` once it runs; stops it when `control` says so.
/// The container is removed in every case. `pull_login` is called only when the engine lacks the image, for
/// the credentials to pull it with (`None`: anonymously).
pub async fn run(
    docker: &Docker,
    request: &ContainerRunRequest,
    mut control: watch::Receiver<Control>,
    pull_login: impl AsyncFnOnce() -> anyhow::Result<Option<RegistryLogin>>,
    started: impl FnOnce(&str),
) -> anyhow::Result<RunOutcome> {
    request
        .policy
        .check_enabled(&request.queue)
        .map_err(anyhow::Error::msg)?;
    let args = ResourceArgs::parse(&request.resource_args, &request.policy, &request.queue)?;
    container_body(request, &args)?;
    if let Some(parent) = request.log_path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let log = tokio::fs::File::create(&request.log_path)
        .await
        .with_context(|| format!("creating run log {}", request.log_path.display()))?
        .into_std()
        .await;
    let log = CappedLog::new(log, &request.log_path, request.log_limit);
    // A pull can take minutes: a stop request ends the wait for it.
    tokio::select! {
        ready = pull::ensure_image(docker, &request.image, pull_login) => ready?,
        () = stop_requested(&mut control) => return Ok(RunOutcome::Stopped),
    }
    // Checked again: what a writable grant holds may have changed while the
    // image was pulled, and the host paths are resolved anew.
    let args = ResourceArgs::parse(&request.resource_args, &request.policy, &request.queue)?;
    let body = container_body(request, &args)?;
    let name = container_name(&request.item_id);
    let id = create_container(docker, &name, &request.item_id, &request.image, body).await?;
    let mut cleanup = RemoveOnDrop {
        docker: docker.clone(),
        id: Some(id.clone()),
    };
    let outcome = drive(docker, &id, request, log, &mut control, started).await;
    cleanup.id = None;
    remove_container(docker, &id)
        .await
        .unwrap_or_else(|e| tracing::warn!("{e:#}"));
    outcome
}

/// Whether container `id` has exited already (false when the engine
/// cannot say).
async fn has_exited(docker: &Docker, id: &str) -> bool {
    docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
        .ok()
        .and_then(|info| info.state)
        .and_then(|state| state.running)
        == Some(false)
}

/// Removes a container left over by an agent that died (by id), ignoring
/// "no such container"; other failures are logged.
pub async fn remove_leftover(docker: &Docker, id: &str) {
    if let Err(e) = remove_container(docker, id).await {
        tracing::warn!("{e:#}");
    }
}

/// The container name of queue item `item_id`: `launch-<item_id>`, with
/// any character the engine refuses in a name replaced by `-`.
pub fn container_name(item_id: &str) -> String {
    let id: String = item_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("launch-{id}")
}

/// Returns once `control` asks for anything but [`Control::Run`] (or its
/// sender is gone).
async fn stop_requested(control: &mut watch::Receiver<Control>) {
    while *control.borrow_and_update() == Control::Run {
        if control.changed().await.is_err() {
            return;
        }
    }
}

/// Attaches, starts, streams the output and waits for the exit (or a stop).
async fn drive(
    docker: &Docker,
    id: &str,
    request: &ContainerRunRequest,
    mut log: CappedLog<std::fs::File>,
    control: &mut watch::Receiver<Control>,
    started: impl FnOnce(&str),
) -> anyhow::Result<RunOutcome> {
    let image = &request.image;
    // Attached before the start, so no output is missed.
    let attach = docker
        .attach_container(
            id,
            Some(
                AttachContainerOptionsBuilder::default()
                    .stdout(true)
                    .stderr(true)
                    .stream(true)
                    .logs(false)
                    .build(),
            ),
        )
        .await
        .map_err(|e| anyhow!("attaching to the output of container {id} (image {image}): {e}"))?;
    docker
        .start_container(id, None)
        .await
        .map_err(|e| anyhow!("starting container {id} (image {image}): {e}"))?;
    started(id);

    let container = id.to_string();
    let mut output = attach.output;
    // The output is copied by a task of its own, so that a stream that
    // lingers after the exit cannot hold the outcome back. The log never
    // fails a write (it cuts itself at its cap, or ends on a full disk), so
    // the stream is always drained and the container never blocks on it.
    let copy = tokio::spawn(async move {
        while let Some(chunk) = output.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk.into_bytes(),
                Err(e) => {
                    tracing::warn!("reading the output of container {container}: {e}");
                    break;
                }
            };
            if log.state() != LogState::Open {
                continue;
            }
            log = match tokio::task::spawn_blocking(move || {
                let _ = log.write_all(&chunk);
                let _ = log.flush();
                log
            })
            .await
            {
                Ok(log) => log,
                Err(e) => {
                    tracing::warn!("writing the output of container {container}: {e}");
                    return;
                }
            };
        }
    });
    let options = WaitContainerOptionsBuilder::default()
        .condition("not-running")
        .build();
    let mut wait = docker.wait_container(id, Some(options));

    let outcome = loop {
        // The container's own end first: one that exited just as a stop or
        // a hand-back came ended as it ended, and is recorded so.
        tokio::select! {
            biased;
            waited = wait.next() => {
                let code = match waited {
                    Some(Ok(response)) => response.status_code,
                    Some(Err(DockerError::DockerContainerWaitError { code, .. })) => code,
                    Some(Err(e)) => {
                        copy.abort();
                        bail!("waiting for container {id} (image {image}): {e}")
                    }
                    None => {
                        copy.abort();
                        bail!("waiting for container {id} (image {image}): the engine gave no exit code")
                    }
                };
                break outcome_of(docker, id, code).await;
            }
            changed = control.changed() => {
                let wanted = if changed.is_ok() { *control.borrow() } else { Control::HandBack };
                if wanted == Control::Run || has_exited(docker, id).await {
                    // Carry on, or let the wait report how it ended.
                    continue;
                }
                stop_container(docker, id, request.stop_grace).await;
                break RunOutcome::Stopped;
            }
        }
    };
    // The last lines it wrote (a checkpoint message on SIGTERM, say) still
    // go to the log.
    let abort = copy.abort_handle();
    if tokio::time::timeout(DRAIN_AFTER_OUTPUT, copy)
        .await
        .is_err()
    {
        abort.abort();
        tracing::warn!(
            "the output of container {id} did not end with it: the log may miss its last lines"
        );
    }
    Ok(outcome)
}

/// The outcome of a container that exited with `code`.
async fn outcome_of(docker: &Docker, id: &str, code: i64) -> RunOutcome {
    if code == 0 {
        return RunOutcome::Finished;
    }
    let oom_killed = docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
        .ok()
        .and_then(|c| c.state)
        .and_then(|s| s.oom_killed)
        .unwrap_or(false);
    let exit_code = i32::try_from(code).unwrap_or(i32::MAX);
    let mut message = format!("the container exited with code {code}");
    if oom_killed {
        message.push_str(" (killed for going over its memory limit)");
    }
    RunOutcome::Failed {
        exit_code: Some(exit_code),
        message,
    }
}

/// SIGTERM, then SIGKILL after the grace period; a container that already
/// stopped or is gone is fine.
async fn stop_container(docker: &Docker, id: &str, grace: Duration) {
    let seconds = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
    let options = StopContainerOptionsBuilder::default().t(seconds).build();
    match docker.stop_container(id, Some(options)).await {
        Ok(()) => {}
        Err(DockerError::DockerResponseServerError {
            status_code: 304 | 404,
            ..
        }) => {}
        // The forced removal that follows kills it anyway.
        Err(e) => tracing::warn!("stopping container {id}: {e}"),
    }
}

/// Force-removes a container and its anonymous volumes; "no such container"
/// is success.
async fn remove_container(docker: &Docker, id: &str) -> anyhow::Result<()> {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => Ok(()),
        Err(DockerError::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        // Another removal raced this one: done when that one is.
        Err(DockerError::DockerResponseServerError {
            status_code: 409,
            message,
        }) if message.contains("already in progress") => {
            let options = WaitContainerOptionsBuilder::default()
                .condition("removed")
                .build();
            let mut removed = docker.wait_container(id, Some(options));
            match tokio::time::timeout(REMOVAL_WAIT, removed.next()).await {
                Ok(_) => Ok(()),
                Err(_) => Err(anyhow!(
                    "removing container {id}: another removal of it did not end within {}s",
                    REMOVAL_WAIT.as_secs()
                )),
            }
        }
        Err(e) => Err(anyhow!("removing container {id}: {e}")),
    }
}

/// Removes the container on drop unless `id` was taken: a run whose future
/// is dropped (the agent gave up on it) leaves no container behind.
struct RemoveOnDrop {
    docker: Docker,
    id: Option<String>,
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let docker = self.docker.clone();
            runtime.spawn(async move { remove_leftover(&docker, &id).await });
        }
    }
}

/// Creates the container; a container of the same name left by an earlier
/// attempt at the same item is removed first.
async fn create_container(
    docker: &Docker,
    name: &str,
    item_id: &str,
    image: &str,
    body: ContainerCreateBody,
) -> anyhow::Result<String> {
    let options = CreateContainerOptionsBuilder::default().name(name).build();
    let mut retried = false;
    loop {
        match docker
            .create_container(Some(options.clone()), body.clone())
            .await
        {
            Ok(created) => {
                for warning in created.warnings.iter().filter(|w| !w.is_empty()) {
                    tracing::warn!("container {name} (image {image}): {warning}");
                }
                return Ok(created.id);
            }
            Err(DockerError::DockerResponseServerError {
                status_code: 409, ..
            }) if !retried => {
                retried = true;
                remove_earlier_attempt(docker, name, item_id).await?;
            }
            Err(e) => bail!("creating container {name} from image {image}: {e}"),
        }
    }
}

/// Removes container `name` when it belongs to item `item_id` (an earlier
/// attempt whose agent died); refuses to touch anyone else's.
async fn remove_earlier_attempt(docker: &Docker, name: &str, item_id: &str) -> anyhow::Result<()> {
    let existing = docker
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
        .map_err(|e| anyhow!("inspecting container {name}, which is in the way: {e}"))?;
    let owner = existing
        .config
        .as_ref()
        .and_then(|c| c.labels.as_ref())
        .and_then(|l| l.get(ITEM_LABEL))
        .map(String::as_str);
    if owner != Some(item_id) {
        bail!(
            "a container named {name} exists and is not an earlier attempt at item {item_id} (no label {ITEM_LABEL}={item_id}): remove or rename it"
        );
    }
    let id = existing.id.unwrap_or_else(|| name.to_string());
    tracing::info!("removing container {name} ({id}) left by an earlier attempt");
    remove_container(docker, &id).await
}

/// The engine's container config for `request`.
fn container_body(
    request: &ContainerRunRequest,
    args: &ResourceArgs,
) -> anyhow::Result<ContainerCreateBody> {
    let mut env: Vec<String> = request
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for (key, value) in &args.env {
        if request.env.iter().any(|(k, _)| k == key) {
            bail!(
                "resource_args.local-container.env sets {key}, which the agent sets for the run: remove it"
            );
        }
        env.push(format!("{key}={value}"));
    }
    let mut labels: HashMap<String, String> = args.labels.iter().cloned().collect();
    labels.insert(ITEM_LABEL.to_string(), request.item_id.clone());
    let (entrypoint, cmd) = match request.command.split_first() {
        Some((first, rest)) => (Some(vec![first.clone()]), Some(rest.to_vec())),
        None => (None, None),
    };
    let host_config = HostConfig {
        mounts: non_empty(args.mounts.clone()),
        device_requests: non_empty(args.device_requests.clone()),
        memory: args.memory,
        nano_cpus: args.nano_cpus,
        shm_size: args.shm_size,
        network_mode: args.network.clone(),
        ipc_mode: args.ipc.clone(),
        pid_mode: args.pid.clone(),
        uts_mode: args.uts.clone(),
        userns_mode: args.userns.clone(),
        cgroupns_mode: args.cgroupns,
        extra_hosts: non_empty(args.extra_hosts.clone()),
        init: args.init,
        ..Default::default()
    };
    Ok(ContainerCreateBody {
        image: Some(request.image.clone()),
        entrypoint,
        cmd,
        env: Some(env),
        labels: Some(labels),
        user: args.user.clone(),
        working_dir: args.workdir.clone(),
        attach_stdin: Some(false),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(false),
        tty: Some(false),
        host_config: Some(host_config),
        ..Default::default()
    })
}

fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_keep_to_what_the_engine_accepts() {
        assert_eq!(container_name("0b9f-41_x.y"), "launch-0b9f-41_x.y");
        assert_eq!(container_name("a/b c:d"), "launch-a-b-c-d");
    }

    #[test]
    fn command_becomes_entrypoint_and_arguments() {
        let request = ContainerRunRequest {
            item_id: "i1".into(),
            queue: "q".into(),
            policy: ContainerPolicy::default(),
            image: "img".into(),
            command: vec!["python".into(), "train.py".into()],
            env: vec![("WANDB_RUN_ID".into(), "r".into())],
            log_path: PathBuf::from("/tmp/x"),
            log_limit: 1 << 20,
            resource_args: Value::Null,
            stop_grace: Duration::from_secs(10),
        };
        let body = container_body(&request, &ResourceArgs::default()).unwrap();
        assert_eq!(body.entrypoint, Some(vec!["python".to_string()]));
        assert_eq!(body.cmd, Some(vec!["train.py".to_string()]));
        assert_eq!(
            body.labels.unwrap().get(ITEM_LABEL).map(String::as_str),
            Some("i1")
        );
        let clash = ResourceArgs::parse(
            &serde_json::json!({"env": {"WANDB_RUN_ID": "other"}}),
            &ContainerPolicy::default(),
            "q",
        )
        .unwrap();
        let message = format!("{:#}", container_body(&request, &clash).unwrap_err());
        assert!(message.contains("WANDB_RUN_ID"), "{message}");
    }
}
