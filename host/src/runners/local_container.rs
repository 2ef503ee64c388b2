//! The `local-container` runner: runs the job's image as a container on the
//! Docker Engine of this machine, with the W&B environment, through the
//! engine's API (no `docker` CLI needed).
//!
//! What W&B's agent does with `docker run --rm -e ... IMAGE`, this does over
//! the API: the container is named `launch-<item id>` and labelled
//! `launch-agent.item=<item id>`; its stdout and stderr are streamed into the
//! run's `output.log` as they arrive; exit code 0 ends the run `finished`,
//! any other `failed` with that code. A stop request (or the agent's
//! shutdown) stops the container (SIGTERM, then SIGKILL after 10 s). The
//! container is always removed at the end, after its exit code is read, and
//! an agent that reclaims the job of an agent that died removes what that
//! one left ([`remove_leftover`]).
//!
//! The image is used as it is when the engine has it; otherwise it is
//! pulled, with the credentials `pull_login` gives (the agent asks the
//! configured registry plugin to log in when the image lives in that
//! registry; anonymously otherwise), and a failed pull is an error naming the
//! image and how it was pulled. The password never appears in an error.
//!
//! The engine is the one `DOCKER_HOST` names (`unix://...` or `tcp://...`),
//! else `unix:///var/run/docker.sock`. The API version is negotiated, so
//! older engines (Debian's 20.10 speaks API 1.41) work.
//!
//! # `resource_args["local-container"]`
//!
//! W&B passes every key of `resource_args.local-container` to `docker run`
//! as a flag (`key: value` becomes `--key value`, a list repeats the flag).
//! This runner takes the same spelling, but only the flags below: anything
//! else is an error that names the key and lists these. Flags that would
//! give a run power over this machine or other containers (`privileged`,
//! `cap-add`, `security-opt`, `pid`, `ipc: host`, `device`, `volumes-from`,
//! `runtime`, ...) are refused, and the error says why.
//!
//! | key (aliases) | value | engine setting |
//! |---|---|---|
//! | `env` (`e`) | `["K=V", ...]` or `{K: V}` | added to the environment; may not set a variable the agent sets (`WANDB_*` of the run) |
//! | `volume` (`volumes`, `v`) | `"SRC:DST[:ro]"` or a list | bind mounts / named volumes (`HostConfig.Binds`); the engine's socket is refused |
//! | `gpus` | `all`, a count (`2`), `device=0,1`, or `count=N,driver=D,capabilities=C` | a GPU device request (`HostConfig.DeviceRequests`) |
//! | `memory` (`m`) | a size: `512m`, `2g`, or bytes | memory limit |
//! | `cpus` | a number (`1.5`) | CPU limit (`HostConfig.NanoCpus`) |
//! | `shm-size` | a size | `/dev/shm` size (what PyTorch data loaders want instead of `ipc: host`) |
//! | `network` (`net`) | `bridge`, `host`, `none` or a network name | network mode; `container:...` is refused |
//! | `ipc` | `private`, `shareable` or `none` | IPC mode; `host` and `container:...` are refused |
//! | `user` (`u`) | `uid[:gid]` or a name | the user the command runs as |
//! | `workdir` (`w`) | an absolute path | working directory |
//! | `label` (`l`, `labels`) | `["k=v", ...]` or `{k: v}` | container labels; `launch-agent.item` is the agent's |
//! | `add-host` | `"name:ip"` or a list | extra `/etc/hosts` entries |
//! | `init` | `true` or `false` | run the engine's init (tini) as PID 1, which passes the stop signal on to the command |
//!
//! A spec using it:
//!
//! ```yaml
//! resource: local-container
//! docker: { docker_image: "registry.example.com/team/train:v3" }
//! overrides: { entry_point: ["python", "train.py"], args: ["--epochs", "3"] }
//! resource_args:
//!   local-container:
//!     gpus: all
//!     memory: 16g
//!     shm-size: 2g
//!     env: ["HF_HOME=/cache/hf"]
//!     volume: ["/srv/cache:/cache"]
//! ```
//!
//! The command, when the spec gives one, replaces the image's: its first
//! word becomes the entrypoint and the rest its arguments (W&B's
//! `--entrypoint` + arguments); with none, the image's own entrypoint and
//! command run.

use super::{Control, RunOutcome};
use crate::capabilities::docker::{ImageRef, redact};
use crate::json_kind;
use crate::plugins::loaded::RegistryCredentials;
use anyhow::{Context as _, anyhow, bail};
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    InspectContainerOptions, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use futures_util::StreamExt as _;
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::watch;

/// The engine used when `DOCKER_HOST` is unset.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// The label every container of this runner carries, with the item id.
pub const ITEM_LABEL: &str = "launch-agent.item";

/// How long a removal waits for another removal of the same container.
const REMOVAL_WAIT: Duration = Duration::from_secs(30);

/// How long the output of a container that exited or was stopped may take
/// to drain into the log.
const DRAIN_AFTER_OUTPUT: Duration = Duration::from_secs(5);

/// Connects to the engine (`DOCKER_HOST` honoured, unix socket default) and
/// negotiates the API version (Debian's engine speaks 1.41, older than
/// bollard's default).
pub async fn connect() -> anyhow::Result<Docker> {
    let host = std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_DOCKER_HOST.to_string());
    let unreachable = |e: DockerError| {
        anyhow!(
            "cannot reach the Docker Engine at {host} (is it running? DOCKER_HOST selects another): {e}"
        )
    };
    let docker = Docker::connect_with_host(&host).map_err(unreachable)?;
    docker.negotiate_version().await.map_err(unreachable)
}

/// What the agent asks the `local-container` runner to run.
#[derive(Clone, Debug)]
pub struct ContainerRunRequest {
    /// The queue item id; names the container `launch-<item_id>`.
    pub item_id: String,
    /// The image reference (`name[:tag]` or `name@digest`).
    pub image: String,
    /// The command and its arguments; empty runs the image's own.
    pub command: Vec<String>,
    /// Environment variables of the run (the W&B ones).
    pub env: Vec<(String, String)>,
    /// The run's output log (stdout and stderr of the container).
    pub log_path: PathBuf,
    /// How long a stopped container gets between SIGTERM and SIGKILL
    /// (W&B's `stopped_run_timeout`).
    pub stop_grace: Duration,
    /// The spec's `resource_args["local-container"]`; `Null` when absent.
    /// See the module doc for the accepted keys.
    pub resource_args: Value,
}

/// Runs `request` in a container, calling `started(container_id)` once it
/// runs; stops it when `control` says so. The container is removed in every
/// case. `pull_login` is called only when the engine lacks the image, for
/// the credentials to pull it with (`None`: anonymously).
pub async fn run(
    docker: &Docker,
    request: &ContainerRunRequest,
    mut control: watch::Receiver<Control>,
    pull_login: impl AsyncFnOnce() -> anyhow::Result<Option<RegistryCredentials>>,
    started: impl FnOnce(&str),
) -> anyhow::Result<RunOutcome> {
    let args = ResourceArgs::parse(&request.resource_args)?;
    let body = container_body(request, &args)?;
    if let Some(parent) = request.log_path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let log = tokio::fs::File::create(&request.log_path)
        .await
        .with_context(|| format!("creating run log {}", request.log_path.display()))?;
    // A pull can take minutes: a stop request ends the wait for it.
    tokio::select! {
        ready = ensure_image(docker, &request.image, pull_login) => ready?,
        () = stop_requested(&mut control) => return Ok(RunOutcome::Stopped),
    }
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

/// Removes a container left over by an agent that died (by id), ignoring
/// "no such container"; other failures are logged.
pub async fn remove_leftover(docker: &Docker, id: &str) {
    if let Err(e) = remove_container(docker, id).await {
        tracing::warn!("{e:#}");
    }
}

/// Checks `resource_args["local-container"]` without running anything, so a
/// bad spec can be refused before its image is built.
pub fn check_resource_args(resource_args: &Value) -> anyhow::Result<()> {
    ResourceArgs::parse(resource_args).map(|_| ())
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
    mut log: tokio::fs::File,
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

    let log_path = request.log_path.display().to_string();
    let container = id.to_string();
    let mut output = attach.output;
    // The output is copied by a task of its own, so that a stream that
    // lingers after the exit cannot hold the outcome back.
    let copy = tokio::spawn(async move {
        let mut write_failed = false;
        while let Some(chunk) = output.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk.into_bytes(),
                Err(e) => {
                    tracing::warn!("reading the output of container {container}: {e}");
                    break;
                }
            };
            // A log that cannot be written is reported once, and the output
            // still drained so the container never blocks on it.
            if !write_failed && let Err(e) = write_chunk(&mut log, &chunk).await {
                tracing::warn!("writing the run log {log_path}: {e}");
                write_failed = true;
            }
        }
        let _ = log.flush().await;
    });
    let options = WaitContainerOptionsBuilder::default()
        .condition("not-running")
        .build();
    let mut wait = docker.wait_container(id, Some(options));

    let outcome = loop {
        tokio::select! {
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
                if wanted == Control::Run {
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

async fn write_chunk(log: &mut tokio::fs::File, chunk: &[u8]) -> std::io::Result<()> {
    log.write_all(chunk).await?;
    log.flush().await
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

/// Uses the image when the engine has it; pulls it otherwise.
async fn ensure_image(
    docker: &Docker,
    image: &str,
    pull_login: impl AsyncFnOnce() -> anyhow::Result<Option<RegistryCredentials>>,
) -> anyhow::Result<()> {
    match docker.inspect_image(image).await {
        Ok(_) => return Ok(()),
        Err(DockerError::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(e) => bail!("looking up image {image}: {e}"),
    }
    let credentials = pull_login()
        .await
        .with_context(|| format!("logging in to pull image {image}"))?;
    let how = match &credentials {
        Some(c) => format!("with the registry credentials of user {:?}", c.username),
        None => "anonymously".to_string(),
    };
    let password = credentials.as_ref().map(|c| c.password.value());
    let auth = credentials.as_ref().map(|c| DockerCredentials {
        username: Some(c.username.clone()),
        password: Some(c.password.value().to_string()),
        serveraddress: ImageRef::parse(image)
            .ok()
            .map(|r| r.registry_display().to_string()),
        ..Default::default()
    });
    let (from_image, tag) = split_reference(image);
    tracing::info!("image {image} is not on this engine: pulling it {how}");
    let options = CreateImageOptionsBuilder::default()
        .from_image(from_image)
        .tag(tag)
        .build();
    let mut progress = docker.create_image(Some(options), None, auth);
    while let Some(step) = progress.next().await {
        if let Err(e) = step {
            bail!(
                "image {image} is not on this machine and pulling it {how} failed: {}",
                redact(&e.to_string(), password)
            );
        }
    }
    match docker.inspect_image(image).await {
        Ok(_) => Ok(()),
        Err(e) => {
            bail!("image {image} is not on this machine and pulling it did not bring it: {e}")
        }
    }
}

/// Splits an image reference into the `fromImage` and `tag` of a pull
/// (a digest counts as the tag; no tag means `latest`, never "every tag").
fn split_reference(image: &str) -> (&str, &str) {
    if let Some((name, digest)) = image.split_once('@') {
        return (name, digest);
    }
    let last = image.rfind('/').map_or(0, |i| i + 1);
    match image[last..].rfind(':') {
        Some(i) => (&image[..last + i], &image[last + i + 1..]),
        None => (image, "latest"),
    }
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
        binds: non_empty(args.binds.clone()),
        device_requests: non_empty(args.device_requests.clone()),
        memory: args.memory,
        nano_cpus: args.nano_cpus,
        shm_size: args.shm_size,
        network_mode: args.network.clone(),
        ipc_mode: args.ipc.clone(),
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

/// The accepted keys, as listed in errors.
const ACCEPTED: &str = "env, volume, gpus, memory, cpus, shm-size, network, ipc, user, workdir, label, add-host, init (aliases: e, v, volumes, m, net, u, w, l, labels)";

/// Keys refused because they give the run power over this machine or other
/// containers, with the reason shown.
const FORBIDDEN: &[(&str, &str)] = &[
    (
        "privileged",
        "it gives the container every device and capability of this machine",
    ),
    (
        "cap-add",
        "extra capabilities let the container act on this machine",
    ),
    (
        "security-opt",
        "it can turn off the container's seccomp and AppArmor confinement",
    ),
    (
        "pid",
        "it shares the process namespace of this machine or another container",
    ),
    ("uts", "it shares this machine's hostname namespace"),
    ("userns", "it can turn off user-namespace remapping"),
    ("cgroupns", "it shares this machine's cgroup namespace"),
    (
        "cgroup-parent",
        "it moves the container out of the engine's cgroups",
    ),
    (
        "device",
        "it gives the container this machine's devices (use `gpus` for GPUs)",
    ),
    (
        "device-cgroup-rule",
        "it gives the container this machine's devices (use `gpus` for GPUs)",
    ),
    ("volumes-from", "it mounts another container's volumes"),
    (
        "runtime",
        "it picks another container runtime (`gpus` needs none)",
    ),
    ("sysctl", "it changes kernel settings"),
    (
        "group-add",
        "it adds the run's user to groups of this machine",
    ),
    (
        "oom-kill-disable",
        "a run that runs out of memory would stall this machine",
    ),
    ("mount", "use `volume` (`SRC:DST[:ro]`)"),
];

/// Keys the agent sets itself.
const AGENT_SET: &[(&str, &str)] = &[
    ("name", "the container is named launch-<item id>"),
    (
        "rm",
        "the agent removes the container after reading its exit code",
    ),
    ("entrypoint", "it comes from overrides.entry_point"),
    ("detach", "the agent waits for the run"),
    ("interactive", "runs get no input"),
    (
        "tty",
        "runs get no terminal (the log keeps stdout and stderr)",
    ),
];

/// The engine's sockets: mounting one, or a directory above one, hands the
/// run the whole engine.
const ENGINE_SOCKETS: &[&str] = &[
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/var/run/containerd/containerd.sock",
    "/run/containerd/containerd.sock",
];

/// `resource_args["local-container"]`, checked.
#[derive(Clone, Debug, Default, PartialEq)]
struct ResourceArgs {
    env: Vec<(String, String)>,
    binds: Vec<String>,
    device_requests: Vec<DeviceRequest>,
    memory: Option<i64>,
    nano_cpus: Option<i64>,
    shm_size: Option<i64>,
    network: Option<String>,
    ipc: Option<String>,
    user: Option<String>,
    workdir: Option<String>,
    labels: Vec<(String, String)>,
    extra_hosts: Vec<String>,
    init: Option<bool>,
}

impl ResourceArgs {
    fn parse(value: &Value) -> anyhow::Result<ResourceArgs> {
        let mut args = ResourceArgs::default();
        let map = match value {
            Value::Null => return Ok(args),
            Value::Object(map) => map,
            other => bail!(
                "resource_args.local-container must be a mapping of docker run flags (accepted: {ACCEPTED}), not {}",
                json_kind::of(other)
            ),
        };
        let mut seen: HashMap<Key, &str> = HashMap::new();
        for (key, value) in map {
            let canonical = canonical_key(key)?;
            if let Some(earlier) = seen.insert(canonical, key) {
                bail!(
                    "resource_args.local-container has both `{earlier}` and `{key}`, which are the same flag: keep one"
                );
            }
            let at = format!("resource_args.local-container.{key}");
            if value.is_null() {
                bail!("{at} has no value");
            }
            match canonical {
                Key::Env => {
                    for (k, v) in pairs(value, &at, "K=V")? {
                        let Some(v) = v else {
                            bail!(
                                "{at}: `{k}` has no value (a bare name would copy the agent's own variable into the run): write {k}=VALUE"
                            );
                        };
                        args.env.push((k, v));
                    }
                }
                Key::Volume => {
                    for bind in strings(value, &at)? {
                        args.binds.push(check_bind(&bind, &at)?);
                    }
                }
                Key::Gpus => args.device_requests.push(parse_gpus(value, &at)?),
                Key::Memory => args.memory = Some(parse_size(value, &at)?),
                Key::ShmSize => args.shm_size = Some(parse_size(value, &at)?),
                Key::Cpus => args.nano_cpus = Some(parse_cpus(value, &at)?),
                Key::Network => {
                    let mode = scalar(value, &at)?;
                    if mode.starts_with("container:") {
                        bail!(
                            "{at}: `{mode}` is refused: it joins another container's network namespace"
                        );
                    }
                    args.network = Some(mode);
                }
                Key::Ipc => {
                    let mode = scalar(value, &at)?;
                    if !matches!(mode.as_str(), "private" | "shareable" | "none") {
                        bail!(
                            "{at}: `{mode}` is refused: only private, shareable or none (`host` would share this machine's IPC namespace; for PyTorch's shared memory set `shm-size`, e.g. 2g)"
                        );
                    }
                    args.ipc = Some(mode);
                }
                Key::User => args.user = Some(scalar(value, &at)?),
                Key::Workdir => {
                    let dir = scalar(value, &at)?;
                    if !dir.starts_with('/') {
                        bail!("{at}: `{dir}` must be an absolute path in the container");
                    }
                    args.workdir = Some(dir);
                }
                Key::Label => {
                    for (k, v) in pairs(value, &at, "k=v")? {
                        if k == ITEM_LABEL {
                            bail!("{at}: the label {ITEM_LABEL} is the agent's own");
                        }
                        args.labels.push((k, v.unwrap_or_default()));
                    }
                }
                Key::Init => match value {
                    Value::Bool(b) => args.init = Some(*b),
                    other => bail!("{at} must be true or false, not {}", json_kind::of(other)),
                },
                Key::AddHost => {
                    for entry in strings(value, &at)? {
                        if !entry.contains(':') {
                            bail!("{at}: `{entry}` is not name:ip");
                        }
                        args.extra_hosts.push(entry);
                    }
                }
            }
        }
        Ok(args)
    }
}

/// An accepted key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    Env,
    Volume,
    Gpus,
    Memory,
    Cpus,
    ShmSize,
    Network,
    Ipc,
    User,
    Workdir,
    Label,
    AddHost,
    Init,
}

/// The accepted key `key` spells, or the error for any other.
fn canonical_key(key: &str) -> anyhow::Result<Key> {
    let stripped = key.trim_start_matches('-');
    Ok(match stripped {
        "env" | "e" => Key::Env,
        "volume" | "volumes" | "v" => Key::Volume,
        "gpus" => Key::Gpus,
        "memory" | "m" => Key::Memory,
        "cpus" => Key::Cpus,
        "shm-size" | "shm_size" => Key::ShmSize,
        "network" | "net" => Key::Network,
        "ipc" => Key::Ipc,
        "user" | "u" => Key::User,
        "workdir" | "w" => Key::Workdir,
        "label" | "labels" | "l" => Key::Label,
        "add-host" | "add_host" => Key::AddHost,
        "init" => Key::Init,
        _ => {
            if let Some((_, why)) = FORBIDDEN.iter().find(|(k, _)| *k == stripped) {
                bail!(
                    "resource_args.local-container.{key} is not allowed: {why}. Accepted keys: {ACCEPTED}"
                );
            }
            if let Some((_, why)) = AGENT_SET.iter().find(|(k, _)| *k == stripped) {
                bail!(
                    "resource_args.local-container.{key} is set by the agent: {why}. Accepted keys: {ACCEPTED}"
                );
            }
            bail!("unknown key `{key}` in resource_args.local-container. Accepted keys: {ACCEPTED}")
        }
    })
}

/// A string, number or boolean as text.
fn scalar(value: &Value, at: &str) -> anyhow::Result<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Value::String(_) => bail!("{at} is empty"),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => bail!("{at} must be a single value, not {}", json_kind::of(other)),
    }
}

/// A string or a list of strings.
fn strings(value: &Value, at: &str) -> anyhow::Result<Vec<String>> {
    match value {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| scalar(item, &format!("{at}[{i}]")))
            .collect(),
        other => Ok(vec![scalar(other, at)?]),
    }
}

/// `["k=v", ...]`, `"k=v"` or `{k: v}` as (key, value) pairs; a bare `k` has
/// no value.
fn pairs(value: &Value, at: &str, form: &str) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let pairs = match value {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| Ok((k.clone(), Some(scalar_or_empty(v, &format!("{at}.{k}"))?))))
            .collect::<anyhow::Result<Vec<_>>>()?,
        other => strings(other, at)?
            .into_iter()
            .map(|item| match item.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (item, None),
            })
            .collect(),
    };
    for (k, _) in &pairs {
        if k.is_empty() || k.contains(char::is_whitespace) {
            bail!("{at}: `{k}` is not a valid name (write {form})");
        }
    }
    Ok(pairs)
}

fn scalar_or_empty(value: &Value, at: &str) -> anyhow::Result<String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        other => scalar(other, at),
    }
}

/// Checks a bind (`SRC:DST[:OPTS]`); the engine's socket is refused.
fn check_bind(bind: &str, at: &str) -> anyhow::Result<String> {
    let mut parts = bind.splitn(3, ':');
    let source = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    if source.is_empty() || target.is_empty() {
        bail!("{at}: `{bind}` is not SRC:DST[:ro]");
    }
    if !target.starts_with('/') {
        bail!("{at}: `{bind}`: the target {target} must be an absolute path in the container");
    }
    if source.starts_with('/') && exposes_engine(source) {
        bail!(
            "{at}: mounting {source} is refused: it would hand the run this machine's container engine"
        );
    }
    Ok(bind.to_string())
}

/// True when host path `source` (as written, and resolved when it exists
/// here) is an engine socket or a directory above one.
fn exposes_engine(source: &str) -> bool {
    let written = std::path::Path::new(source).to_path_buf();
    let resolved = std::fs::canonicalize(&written).ok();
    [Some(written), resolved].into_iter().flatten().any(|path| {
        ENGINE_SOCKETS
            .iter()
            .any(|socket| std::path::Path::new(socket).starts_with(&path))
    })
}

/// `all`, a count, `device=0,1` or `count=N,driver=D,capabilities=C[,C]`.
fn parse_gpus(value: &Value, at: &str) -> anyhow::Result<DeviceRequest> {
    let text = scalar(value, at)?;
    let mut request = DeviceRequest {
        driver: Some(String::new()),
        capabilities: Some(vec![vec!["gpu".to_string()]]),
        ..Default::default()
    };
    let invalid =
        || anyhow!("{at}: cannot read `{text}` (write all, a count such as 2, or device=0,1)");
    if text == "all" {
        request.count = Some(-1);
        return Ok(request);
    }
    if let Ok(count) = text.parse::<i64>() {
        if count < 1 {
            return Err(invalid());
        }
        request.count = Some(count);
        return Ok(request);
    }
    let text = text.trim_matches('"');
    // `device=` takes the rest of the value: its ids are comma-separated too.
    let (options, devices) = match text.find("device=") {
        Some(i) => (&text[..i], Some(&text[i + "device=".len()..])),
        None => (text, None),
    };
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option.split_once('=') {
            Some(("count", "all")) => request.count = Some(-1),
            Some(("count", n)) => {
                request.count = Some(
                    n.parse::<i64>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(invalid)?,
                )
            }
            Some(("driver", d)) => request.driver = Some(d.to_string()),
            Some(("capabilities", c)) => {
                request.capabilities = Some(vec![c.split(',').map(str::to_string).collect()])
            }
            _ => return Err(invalid()),
        }
    }
    if let Some(devices) = devices {
        let ids: Vec<String> = devices
            .split(',')
            .filter(|d| !d.is_empty())
            .map(str::to_string)
            .collect();
        if ids.is_empty() {
            return Err(invalid());
        }
        request.device_ids = Some(ids);
    }
    if request.count.is_none() && request.device_ids.is_none() {
        return Err(invalid());
    }
    Ok(request)
}

/// A size as `docker run` reads it: bytes, or a number with a binary unit
/// (`b`, `k`, `m`, `g`, `t`, `p`, optionally followed by `b`/`ib`).
fn parse_size(value: &Value, at: &str) -> anyhow::Result<i64> {
    let text = scalar(value, at)?;
    let invalid = || anyhow!("{at}: cannot read `{text}` as a size (e.g. 512m, 2g, or bytes)");
    let lower = text.to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let number: f64 = lower[..digits_end].parse().map_err(|_| invalid())?;
    let unit = lower[digits_end..].trim_start();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b').filter(|u| !u.is_empty()))
        .unwrap_or(unit);
    let multiplier: f64 = match unit {
        "" | "b" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024.0_f64.powi(4),
        "p" => 1024.0_f64.powi(5),
        _ => return Err(invalid()),
    };
    let bytes = number * multiplier;
    if !(bytes >= 1.0 && bytes < i64::MAX as f64) {
        return Err(invalid());
    }
    Ok(bytes as i64)
}

/// CPUs as nano-CPUs (`1.5` → 1.5e9).
fn parse_cpus(value: &Value, at: &str) -> anyhow::Result<i64> {
    let text = scalar(value, at)?;
    let cpus: f64 = text
        .parse()
        .ok()
        .filter(|c: &f64| c.is_finite() && *c > 0.0 && *c < 1e6)
        .ok_or_else(|| anyhow!("{at}: cannot read `{text}` as a number of CPUs (e.g. 2 or 0.5)"))?;
    Ok((cpus * 1e9).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> anyhow::Result<ResourceArgs> {
        ResourceArgs::parse(&value)
    }

    fn error(value: Value) -> String {
        match parse(value) {
            Ok(args) => panic!("accepted: {args:?}"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn null_and_empty_mean_nothing() {
        assert_eq!(parse(Value::Null).unwrap(), ResourceArgs::default());
        assert_eq!(parse(json!({})).unwrap(), ResourceArgs::default());
    }

    #[test]
    fn reads_the_docker_run_spelling() {
        let args = parse(json!({
            "env": ["A=1", "B=x=y"],
            "v": "/srv/data:/data:ro",
            "gpus": "all",
            "memory": "512m",
            "cpus": 1.5,
            "shm-size": "2g",
            "network": "host",
            "user": 1000,
            "workdir": "/work",
            "label": {"team": "ml"},
            "add-host": ["db:10.0.0.2"],
        }))
        .unwrap();
        assert_eq!(
            args.env,
            vec![("A".into(), "1".into()), ("B".into(), "x=y".into())]
        );
        assert_eq!(args.binds, vec!["/srv/data:/data:ro".to_string()]);
        assert_eq!(args.device_requests[0].count, Some(-1));
        assert_eq!(args.memory, Some(512 * 1024 * 1024));
        assert_eq!(args.nano_cpus, Some(1_500_000_000));
        assert_eq!(args.shm_size, Some(2 * 1024 * 1024 * 1024));
        assert_eq!(args.network.as_deref(), Some("host"));
        assert_eq!(args.user.as_deref(), Some("1000"));
        assert_eq!(args.workdir.as_deref(), Some("/work"));
        assert_eq!(args.labels, vec![("team".into(), "ml".into())]);
        assert_eq!(args.extra_hosts, vec!["db:10.0.0.2".to_string()]);
    }

    #[test]
    fn sizes_read_like_docker() {
        let at = "x";
        assert_eq!(parse_size(&json!(1048576), at).unwrap(), 1 << 20);
        assert_eq!(parse_size(&json!("1k"), at).unwrap(), 1024);
        assert_eq!(parse_size(&json!("1.5G"), at).unwrap(), 3 << 29);
        assert_eq!(parse_size(&json!("64mb"), at).unwrap(), 64 << 20);
        assert_eq!(parse_size(&json!("64MiB"), at).unwrap(), 64 << 20);
        for bad in ["", "12q", "m", "-1g", "0"] {
            assert!(parse_size(&json!(bad), at).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn gpus_forms() {
        let at = "x";
        let two = parse_gpus(&json!(2), at).unwrap();
        assert_eq!(two.count, Some(2));
        let ids = parse_gpus(&json!("device=0,2"), at).unwrap();
        assert_eq!(ids.device_ids, Some(vec!["0".to_string(), "2".to_string()]));
        assert_eq!(ids.capabilities, Some(vec![vec!["gpu".to_string()]]));
        let driver = parse_gpus(&json!("driver=nvidia,count=1"), at).unwrap();
        assert_eq!(driver.driver.as_deref(), Some("nvidia"));
        assert_eq!(driver.count, Some(1));
        assert!(parse_gpus(&json!("some"), at).is_err());
        assert!(parse_gpus(&json!(0), at).is_err());
    }

    #[test]
    fn forbidden_keys_are_refused_with_the_reason() {
        for key in ["privileged", "cap-add", "--pid", "device", "security-opt"] {
            let message = error(json!({ key: true }));
            assert!(message.contains(key), "{message}");
            assert!(message.contains("not allowed"), "{message}");
            assert!(message.contains("Accepted keys: env"), "{message}");
        }
        let message = error(json!({"ipc": "host"}));
        assert!(
            message.contains("ipc") && message.contains("shm-size"),
            "{message}"
        );
        assert!(error(json!({"network": "container:abc"})).contains("refused"));
        assert!(error(json!({"volume": "/var/run/docker.sock:/sock"})).contains("engine"));
        assert!(error(json!({"volume": ["/:/host"]})).contains("refused"));
        assert!(error(json!({"name": "x"})).contains("set by the agent"));
        assert!(error(json!({"label": ["launch-agent.item=x"]})).contains("agent's own"));
    }

    #[test]
    fn unknown_and_malformed_values_name_the_key() {
        let message = error(json!({"frobnicate": 1}));
        assert!(message.contains("unknown key `frobnicate`"), "{message}");
        assert!(message.contains("memory"), "{message}");
        assert!(error(json!({"env": ["NOVALUE"]})).contains("NOVALUE"));
        assert!(error(json!({"memory": [1, 2]})).contains("memory"));
        assert!(error(json!({"workdir": "rel"})).contains("absolute"));
        assert!(error(json!({"e": ["A=1"], "env": ["B=2"]})).contains("same flag"));
        assert!(error(json!(["env"])).contains("mapping"));
        assert!(error(json!({"cpus": "lots"})).contains("cpus"));
    }

    #[test]
    fn references_split_for_a_pull() {
        assert_eq!(split_reference("busybox"), ("busybox", "latest"));
        assert_eq!(split_reference("a/b:1.2"), ("a/b", "1.2"));
        assert_eq!(
            split_reference("127.0.0.1:5000/a/b"),
            ("127.0.0.1:5000/a/b", "latest")
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/a:v1"),
            ("127.0.0.1:5000/a", "v1")
        );
        assert_eq!(split_reference("a/b@sha256:abc"), ("a/b", "sha256:abc"));
    }

    #[test]
    fn container_names_keep_to_what_the_engine_accepts() {
        assert_eq!(container_name("0b9f-41_x.y"), "launch-0b9f-41_x.y");
        assert_eq!(container_name("a/b c:d"), "launch-a-b-c-d");
    }

    #[test]
    fn command_becomes_entrypoint_and_arguments() {
        let request = ContainerRunRequest {
            item_id: "i1".into(),
            image: "img".into(),
            command: vec!["python".into(), "train.py".into()],
            env: vec![("WANDB_RUN_ID".into(), "r".into())],
            log_path: PathBuf::from("/tmp/x"),
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
        let clash = parse(json!({"env": {"WANDB_RUN_ID": "other"}})).unwrap();
        let message = format!("{:#}", container_body(&request, &clash).unwrap_err());
        assert!(message.contains("WANDB_RUN_ID"), "{message}");
    }
}
