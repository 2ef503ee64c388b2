//! The `local-container` runner against a real Docker Engine (started by
//! `scripts/services.sh start`), with the busybox base image it builds.

mod common;

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use common::docker::{container_exists, docker, services, unique_item_id};
use launch_agent::config::LaunchConfig;
use launch_agent::runners::local_container::policy::ContainerPolicy;
use launch_agent::runners::local_container::{
    self, ContainerRunRequest, ITEM_LABEL, container_name,
};
use launch_agent::runners::policy::Policies;
use launch_agent::runners::{Control, RunOutcome};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// A request running `sh -c script` in the base image, logging under `dir`.
fn shell_request(test: &str, dir: &Path, script: &str) -> ContainerRunRequest {
    ContainerRunRequest {
        item_id: unique_item_id(test),
        queue: "default".into(),
        policy: ContainerPolicy::default(),
        image: services().base_image.clone(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        env: vec![
            ("WANDB_LAUNCH".into(), "True".into()),
            ("WANDB_RUN_ID".into(), "run-42".into()),
            ("WANDB_PROJECT".into(), "tests".into()),
            (
                "WANDB_CONFIG".into(),
                r#"{"lr": 0.1, "note": "a b"}"#.into(),
            ),
        ],
        log_path: dir.join("runs").join(test).join("output.log"),
        log_limit: launch_agent::capped_log::DEFAULT_RUN_LOG_LIMIT,
        resource_args: Value::Null,
        stop_grace: std::time::Duration::from_secs(10),
    }
}

/// Pulls without credentials (these tests use images the engine has).
async fn anonymous() -> anyhow::Result<Option<launch_agent::runners::RegistryLogin>> {
    Ok(None)
}

/// Runs `request` to its end with nobody asking it to stop; returns the
/// outcome and the container id `started` was given.
async fn run_to_end(
    docker: &Docker,
    request: &ContainerRunRequest,
) -> (anyhow::Result<RunOutcome>, Option<String>) {
    let (_control, receiver) = watch::channel(Control::Run);
    let mut started_id = None;
    let outcome = local_container::run(docker, request, receiver, anonymous, |id| {
        started_id = Some(id.to_string())
    })
    .await;
    (outcome, started_id)
}

fn read_log(request: &ContainerRunRequest) -> String {
    std::fs::read_to_string(&request.log_path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", request.log_path.display()))
}

fn error_text(outcome: anyhow::Result<RunOutcome>) -> String {
    match outcome {
        Ok(outcome) => panic!("expected an error, got {outcome:?}"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test]
async fn output_of_both_streams_and_the_wandb_env_reach_the_log() {
    let docker = docker().await;
    let dir = tempfile::tempdir().unwrap();
    let request = shell_request(
        "streams",
        dir.path(),
        "echo to-stdout; echo to-stderr >&2; env | sort",
    );

    let (outcome, started) = run_to_end(&docker, &request).await;

    assert_eq!(outcome.unwrap(), RunOutcome::Finished);
    let log = read_log(&request);
    assert!(log.contains("to-stdout\n"), "{log}");
    assert!(log.contains("to-stderr\n"), "{log}");
    assert!(log.contains("WANDB_LAUNCH=True\n"), "{log}");
    assert!(log.contains("WANDB_RUN_ID=run-42\n"), "{log}");
    assert!(log.contains("WANDB_PROJECT=tests\n"), "{log}");
    assert!(
        log.contains(r#"WANDB_CONFIG={"lr": 0.1, "note": "a b"}"#),
        "{log}"
    );
    let id = started.expect("started was called with the container id");
    assert!(
        !container_exists(&docker, &id).await,
        "container {id} is left after the run"
    );
    assert!(!container_exists(&docker, &container_name(&request.item_id)).await);
}

#[tokio::test]
async fn an_exit_code_other_than_zero_fails_the_run_with_it() {
    let docker = docker().await;
    let dir = tempfile::tempdir().unwrap();
    let request = shell_request("exit3", dir.path(), "echo about to fail >&2; exit 3");

    let (outcome, started) = run_to_end(&docker, &request).await;

    match outcome.unwrap() {
        RunOutcome::Failed { exit_code, message } => {
            assert_eq!(exit_code, Some(3));
            assert!(message.contains("exited with code 3"), "{message}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(read_log(&request).contains("about to fail"));
    assert!(!container_exists(&docker, &started.unwrap()).await);
}

/// Starts `request`, waits until its container runs, asks it to stop and
/// returns the outcome, the container id and how long the stop took.
async fn run_then_stop(
    docker: &Docker,
    request: &ContainerRunRequest,
    how: Control,
) -> (RunOutcome, String, Duration) {
    let (control, receiver) = watch::channel(Control::Run);
    let (started_tx, started_rx) = oneshot::channel::<String>();
    let stopper = async move {
        let id = tokio::time::timeout(Duration::from_secs(60), started_rx)
            .await
            .expect("the container started within 60 s")
            .expect("started was called");
        let asked = Instant::now();
        control.send(how).unwrap();
        (id, asked, control)
    };
    let runner = local_container::run(docker, request, receiver, anonymous, move |id| {
        let _ = started_tx.send(id.to_string());
    });
    let (outcome, (id, asked, _control)) = tokio::join!(runner, stopper);
    (outcome.unwrap(), id, asked.elapsed())
}

#[tokio::test]
async fn a_stopped_sleep_ends_stopped_and_its_container_is_gone() {
    let docker = docker().await;
    let dir = tempfile::tempdir().unwrap();
    let mut request = shell_request("stop", dir.path(), "");
    // `sleep` as PID 1 ignores SIGTERM: the stop has to end with SIGKILL.
    request.command = vec!["sleep".into(), "300".into()];

    let (outcome, id, took) = run_then_stop(&docker, &request, Control::Stop).await;

    assert_eq!(outcome, RunOutcome::Stopped);
    assert!(
        took < Duration::from_secs(60),
        "stopping took {took:?}, far past the 10 s grace"
    );
    assert!(
        !container_exists(&docker, &id).await,
        "container {id} is left after the stop"
    );
}

#[tokio::test]
async fn a_handed_back_job_hears_sigterm_and_its_last_words_are_logged() {
    let docker = docker().await;
    let dir = tempfile::tempdir().unwrap();
    let request = shell_request(
        "handback",
        dir.path(),
        "trap 'echo got SIGTERM, saving; exit 143' TERM; echo working; while true; do sleep 1; done",
    );

    let (outcome, id, took) = run_then_stop(&docker, &request, Control::HandBack).await;

    assert_eq!(outcome, RunOutcome::Stopped);
    assert!(
        took < Duration::from_secs(9),
        "a job that exits on SIGTERM took {took:?} to stop"
    );
    let log = read_log(&request);
    assert!(log.contains("working\n"), "{log}");
    assert!(log.contains("got SIGTERM, saving\n"), "{log}");
    assert!(!container_exists(&docker, &id).await);
}

#[tokio::test]
async fn accepted_resource_args_reach_the_container() {
    let docker = docker().await;
    let dir = tempfile::tempdir().unwrap();
    let mut request = shell_request(
        "resource-args",
        dir.path(),
        "echo extra=$EXTRA; echo uid=$(id -u); echo pwd=$(pwd); \
         echo memory=$(cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes)",
    );
    request.resource_args = json!({
        "env": ["EXTRA=from resource_args"],
        "memory": "64m",
        "user": "65534",
        "workdir": "/tmp",
        "label": {"team": "ml"},
    });

    let (outcome, _) = run_to_end(&docker, &request).await;

    assert_eq!(outcome.unwrap(), RunOutcome::Finished);
    let log = read_log(&request);
    assert!(log.contains("extra=from resource_args\n"), "{log}");
    assert!(log.contains("uid=65534\n"), "{log}");
    assert!(log.contains("pwd=/tmp\n"), "{log}");
    assert!(
        log.contains(&format!("memory={}\n", 64 * 1024 * 1024)),
        "{log}"
    );
}

#[tokio::test]
async fn forbidden_and_unknown_resource_args_are_refused_by_name() {
    let docker = docker().await;
    let dir = tempfile::tempdir().unwrap();
    // (resource_args, the key the error names, what it says, whether it
    // lists the accepted keys)
    for (args, key, says, lists_keys) in [
        (
            json!({"privileged": true}),
            "privileged",
            "not allowed",
            true,
        ),
        (
            json!({"cap-add": ["SYS_ADMIN"]}),
            "cap-add",
            "not allowed",
            true,
        ),
        (json!({"frobnicate": 1}), "frobnicate", "unknown key", true),
        (json!({"ipc": "host"}), "ipc", "shm-size", false),
        (json!({"memory": "lots"}), "memory", "cannot read", false),
    ] {
        let mut request = shell_request("refused", dir.path(), "echo should not run");
        request.resource_args = args;

        let (outcome, started) = run_to_end(&docker, &request).await;

        let message = error_text(outcome);
        assert!(message.contains(key), "{message}");
        assert!(message.contains(says), "{message}");
        if lists_keys {
            assert!(message.contains("Accepted keys: env, volume"), "{message}");
        }
        assert!(started.is_none(), "a container started for {key}");
        assert!(!container_exists(&docker, &container_name(&request.item_id)).await);
    }
}

#[tokio::test]
async fn a_missing_image_that_cannot_be_pulled_is_an_error_naming_it() {
    let docker = docker().await;
    let dir = tempfile::tempdir().unwrap();
    let mut request = shell_request("missing-image", dir.path(), "true");
    request.image = format!(
        "{}/launch-agent-test/does-not-exist:v1",
        services().registry
    );

    let (outcome, started) = run_to_end(&docker, &request).await;

    let message = error_text(outcome);
    assert!(message.contains(&request.image), "{message}");
    assert!(
        message.contains("pulling it anonymously failed"),
        "{message}"
    );
    assert!(started.is_none());
}

/// Creates a container named like the runner's for `item_id`, labelled as
/// belonging to `owner` (None: no label).
async fn park_container(docker: &Docker, item_id: &str, owner: Option<&str>) -> String {
    let labels = owner.map(|o| HashMap::from([(ITEM_LABEL.to_string(), o.to_string())]));
    let body = ContainerCreateBody {
        image: Some(services().base_image.clone()),
        cmd: Some(vec!["sleep".into(), "300".into()]),
        labels,
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::default()
        .name(&container_name(item_id))
        .build();
    docker
        .create_container(Some(options), body)
        .await
        .expect("creating a parked container")
        .id
}

#[tokio::test]
async fn a_container_left_by_an_earlier_attempt_is_replaced() {
    let docker = docker().await;
    let dir = tempfile::tempdir().unwrap();
    let request = shell_request("earlier", dir.path(), "echo second attempt");
    let earlier = park_container(&docker, &request.item_id, Some(&request.item_id)).await;

    let (outcome, started) = run_to_end(&docker, &request).await;

    assert_eq!(outcome.unwrap(), RunOutcome::Finished);
    assert!(read_log(&request).contains("second attempt"));
    assert_ne!(started.as_deref(), Some(earlier.as_str()));
    assert!(!container_exists(&docker, &earlier).await);
}

#[tokio::test]
async fn a_foreign_container_with_the_same_name_is_left_alone() {
    let docker = docker().await;
    let dir = tempfile::tempdir().unwrap();
    let request = shell_request("foreign", dir.path(), "true");
    let foreign = park_container(&docker, &request.item_id, None).await;

    let (outcome, started) = run_to_end(&docker, &request).await;

    let message = error_text(outcome);
    assert!(
        message.contains(&container_name(&request.item_id)),
        "{message}"
    );
    assert!(message.contains("not an earlier attempt"), "{message}");
    assert!(started.is_none());
    assert!(container_exists(&docker, &foreign).await);
    docker
        .remove_container(
            &foreign,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn remove_leftover_removes_a_running_container_and_ignores_a_gone_one() {
    let docker = docker().await;
    let dir = tempfile::tempdir().unwrap();
    let request = shell_request("leftover", dir.path(), "sleep 300");
    // An agent that dies mid-run: its run future is dropped, here by aborting
    // the task that drives it.
    let (started_tx, started_rx) = oneshot::channel::<String>();
    let (_control, receiver) = watch::channel(Control::Run);
    let task = {
        let docker = docker.clone();
        let request = request.clone();
        tokio::spawn(async move {
            local_container::run(&docker, &request, receiver, anonymous, move |id| {
                let _ = started_tx.send(id.to_string());
            })
            .await
        })
    };
    let id = tokio::time::timeout(Duration::from_secs(60), started_rx)
        .await
        .expect("the container started within 60 s")
        .expect("started was called");
    task.abort();
    let _ = task.await;

    local_container::remove_leftover(&docker, &id).await;

    assert!(!container_exists(&docker, &id).await);
    // Again, on a container that no longer exists: nothing to do, no panic.
    local_container::remove_leftover(&docker, &id).await;
}

#[tokio::test]
async fn connect_names_the_engine_it_cannot_reach() {
    // A separate process: DOCKER_HOST must not change under the other tests.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "connect_probe", "--nocapture", "--ignored"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("cannot reach the Docker Engine at unix:///nonexistent/docker.sock"),
        "{stdout}"
    );
    assert!(stdout.contains("is it running?"), "{stdout}");
}

/// Run by `connect_names_the_engine_it_cannot_reach` with a bad DOCKER_HOST.
#[tokio::test]
#[ignore = "run by connect_names_the_engine_it_cannot_reach"]
async fn connect_probe() {
    match launch_agent::clients::docker::connect().await {
        Ok(_) => println!("connected"),
        Err(e) => println!("{e:#}"),
    }
}

// --- What the operator's `runners:` block lets a queue's jobs reach ---

/// The `local-container` rule for jobs from `queue` under a config whose
/// `runners:` block is `runners` (YAML, indented under `runners:`).
fn policy_for(runners: &str, queue: &str) -> ContainerPolicy {
    let yaml = format!("runners:\n{runners}");
    let config = LaunchConfig::parse(&yaml, Path::new("test-config.yaml"))
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    Policies::compile(&config.runners)
        .unwrap_or_else(|e| panic!("{e:#}\n{yaml}"))
        .container
        .for_queue(queue)
        .clone()
}

/// Runs `request` expecting a refusal before any container exists;
/// returns the message.
async fn refused_before_start(docker: &Docker, request: &ContainerRunRequest) -> String {
    let (outcome, started) = run_to_end(docker, request).await;
    let message = error_text(outcome);
    assert!(started.is_none(), "a container started: {message}");
    assert!(!container_exists(docker, &container_name(&request.item_id)).await);
    message
}

#[tokio::test]
async fn host_paths_that_hand_over_this_machine_are_refused_without_a_grant() {
    let docker = docker().await;
    let dir = tempfile::tempdir().unwrap();
    let own = dir.path().canonicalize().unwrap();
    let own = own.display();
    // The attack's paths, and more of the same kind.
    for (key, bind) in [
        ("volume", "/etc:/host-etc".to_string()),
        ("volume", "/:/host".to_string()),
        ("v", "/var/lib/docker:/docker".to_string()),
        (
            "volumes",
            "/run/containerd/containerd.sock:/c.sock".to_string(),
        ),
        ("volume", "/var/run/docker.sock:/d.sock".to_string()),
        ("volume", "/run:/run-host".to_string()),
        ("volume", "/proc/self/root:/host".to_string()),
        ("volume", "/proc/1/root/etc:/host-etc".to_string()),
        ("volume", "/root:/r:ro".to_string()),
        ("volume", "/sys/fs/cgroup:/cg".to_string()),
        ("volume", "/dev:/dev-host".to_string()),
        ("volume", format!("{own}/../../etc:/e")),
        ("volume", format!("{own}:/scratch")),
        ("--volume", format!("{own}:/scratch:rw")),
    ] {
        let mut request = shell_request("host-path", dir.path(), "echo should not run");
        request.resource_args = json!({ key: [bind.clone()] });

        let message = refused_before_start(&docker, &request).await;

        let source = bind.split(':').next().unwrap();
        assert!(
            message.contains(&format!("host path {source}")),
            "{bind}: {message}"
        );
        assert!(
            message.contains(&format!("resource_args.local-container.{key}")),
            "{message}"
        );
        assert!(
            message.contains("`runners.local-container.volumes` (every queue) or `runners.queues.default.local-container.volumes`"),
            "{message}"
        );
    }
}

#[tokio::test]
async fn a_granted_path_is_mounted_read_only_unless_granted_writable() {
    let docker = docker().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let (data, scratch) = (root.join("data"), root.join("scratch"));
    std::fs::create_dir_all(data.join("set")).unwrap();
    std::fs::create_dir_all(&scratch).unwrap();
    std::fs::write(data.join("set/hello.txt"), "hello from the host\n").unwrap();
    let policy = policy_for(
        &format!(
            "  local-container:\n    volumes: [{}, {{ path: {}, write: true }}]\n",
            data.display(),
            scratch.display()
        ),
        "default",
    );
    let mut request = shell_request(
        "granted",
        dir.path(),
        "cat /data/hello.txt; \
         (echo x > /data/new) 2>/dev/null && echo data=written || echo data=read-only; \
         echo out > /scratch/out && echo scratch=written; \
         (echo x > /scratch-ro/new) 2>/dev/null && echo scratch-ro=written || echo scratch-ro=read-only",
    );
    request.policy = policy;
    request.resource_args = json!({"volume": [
        format!("{}:/data", data.join("set/../set").display()),
        format!("{}:/scratch", scratch.display()),
        format!("{}:/scratch-ro:ro", scratch.display()),
    ]});

    let (outcome, _) = run_to_end(&docker, &request).await;

    assert_eq!(outcome.unwrap(), RunOutcome::Finished);
    let log = read_log(&request);
    assert!(log.contains("hello from the host\n"), "{log}");
    assert!(log.contains("data=read-only\n"), "{log}");
    assert!(log.contains("scratch=written\n"), "{log}");
    assert!(log.contains("scratch-ro=read-only\n"), "{log}");
    assert!(!data.join("set/new").exists());
    assert_eq!(
        std::fs::read_to_string(scratch.join("out")).unwrap(),
        "out\n"
    );
    // Asking to write where the grant is read-only is refused outright.
    let mut rw = shell_request("granted-rw", dir.path(), "echo should not run");
    rw.policy = request.policy.clone();
    rw.resource_args = json!({"volume": format!("{}:/data:rw", data.display())});
    let message = refused_before_start(&docker, &rw).await;
    assert!(message.contains("granted read-only"), "{message}");
}

#[tokio::test]
async fn symlinks_a_job_plants_in_a_grant_lead_nowhere() {
    let docker = docker().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let (data, scratch) = (root.join("data"), root.join("scratch"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&scratch).unwrap();
    std::os::unix::fs::symlink("/etc", data.join("etc")).unwrap();
    let policy = policy_for(
        &format!(
            "  local-container:\n    volumes: [{}, {{ path: {}, write: true }}]\n",
            data.display(),
            scratch.display()
        ),
        "default",
    );
    // A first job, with the writable grant, plants links to this machine.
    let mut planter = shell_request(
        "planter",
        dir.path(),
        "ln -s / /scratch/host && ln -s /etc /scratch/etc && mkdir /scratch/dir && echo planted",
    );
    planter.policy = policy.clone();
    planter.resource_args = json!({"volume": format!("{}:/scratch", scratch.display())});
    let (outcome, _) = run_to_end(&docker, &planter).await;
    assert_eq!(
        outcome.unwrap(),
        RunOutcome::Finished,
        "{}",
        read_log(&planter)
    );

    // Later jobs cannot mount through them, nor below the writable grant at
    // all (a link could replace a directory between check and mount).
    for (bind, says) in [
        (
            format!("{}/host:/h", scratch.display()),
            "inside the writable grant",
        ),
        (
            format!("{}/etc:/h", scratch.display()),
            "inside the writable grant",
        ),
        (
            format!("{}/dir:/h", scratch.display()),
            "inside the writable grant",
        ),
        (
            format!("{}/etc:/h", data.display()),
            "which resolves to /etc",
        ),
        (
            format!("{}/etc/../../etc:/h", data.display()),
            "not allowed",
        ),
        (format!("{}/missing:/h", data.display()), "does not exist"),
    ] {
        let mut request = shell_request("through-link", dir.path(), "echo should not run");
        request.policy = policy.clone();
        request.resource_args = json!({ "volume": bind });
        let message = refused_before_start(&docker, &request).await;
        assert!(message.contains(says), "{bind}: {message}");
    }
    assert!(
        !data.join("missing").exists(),
        "the engine created a host path"
    );
}

#[tokio::test]
async fn host_namespaces_follow_the_operators_allowlist() {
    let docker = docker().await;
    let dir = tempfile::tempdir().unwrap();
    let script = "echo pid=$$; echo net=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ,)";
    for (key, value) in [
        ("network", "host"),
        ("net", "host"),
        ("ipc", "host"),
        ("pid", "host"),
        ("uts", "host"),
        ("userns", "host"),
        ("cgroupns", "host"),
        ("network", "container:launch-other"),
        ("pid", "container:launch-other"),
    ] {
        let mut request = shell_request("namespace", dir.path(), script);
        request.resource_args = json!({ key: value });
        let message = refused_before_start(&docker, &request).await;
        assert!(
            message.contains(&format!("resource_args.local-container.{key}")),
            "{message}"
        );
        if value == "host" {
            assert!(
                message.contains("`runners.local-container.host_namespaces`"),
                "{message}"
            );
        }
    }

    // Granted: the container shares this machine's network and processes.
    let mut request = shell_request("host-namespaces", dir.path(), script);
    request.policy = policy_for(
        "  local-container:\n    host_namespaces: [network, pid]\n",
        "default",
    );
    request.resource_args = json!({"network": "host", "pid": "host"});
    let (outcome, _) = run_to_end(&docker, &request).await;
    assert_eq!(outcome.unwrap(), RunOutcome::Finished);
    let log = read_log(&request);
    let mut ours: Vec<String> = std::fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .skip(2)
        .map(|l| l.split(':').next().unwrap().trim().to_string())
        .collect();
    ours.sort();
    assert!(log.contains(&format!("net={},\n", ours.join(","))), "{log}");
    assert!(!log.contains("pid=1\n"), "{log}");
    // Granting one is not granting another.
    let mut ipc = shell_request("host-ipc", dir.path(), script);
    ipc.policy = request.policy.clone();
    ipc.resource_args = json!({"ipc": "host"});
    assert!(
        refused_before_start(&docker, &ipc)
            .await
            .contains("add `ipc`")
    );
}

#[tokio::test]
async fn a_queue_without_containers_or_gpus_is_refused_them() {
    let docker = docker().await;
    let dir = tempfile::tempdir().unwrap();
    let runners = "  queues:\n    public:\n      local-container: { gpus: false }\n    off:\n      local-container: { enabled: false }\n";
    let mut gpus = shell_request("no-gpus", dir.path(), "echo should not run");
    gpus.queue = "public".into();
    gpus.policy = policy_for(runners, "public");
    gpus.resource_args = json!({"gpus": "all"});
    let message = refused_before_start(&docker, &gpus).await;
    assert!(
        message.contains("`runners.queues.public.local-container.gpus`"),
        "{message}"
    );

    let mut off = shell_request("no-containers", dir.path(), "echo should not run");
    off.queue = "off".into();
    off.policy = policy_for(runners, "off");
    let message = refused_before_start(&docker, &off).await;
    assert!(message.contains("may not run as containers"), "{message}");
    assert!(
        message.contains("`runners.queues.off.local-container.enabled`"),
        "{message}"
    );
}

/// An agent whose config grants `grant` to queue `trusted` only.
fn agent_with_grant(grant: &Path) -> (common::Scratch, std::path::PathBuf) {
    let agent = common::Scratch::new();
    let config = agent.write_config(&format!(
        "queues: [default, trusted]\nrunners:\n  local-process: {{ enabled: false }}\n  queues:\n    trusted:\n      local-container:\n        volumes: [{}]\n",
        grant.display()
    ));
    (agent, config)
}

/// Submits to queue `default` a container job with `resource_args` that
/// echoes `marker`; its id.
fn submit_echo(agent: &common::Scratch, resource_args: Value, marker: &str) -> String {
    agent.submit(
        "default",
        &container_spec(resource_args, &format!("echo {marker}")),
    )
}

fn container_spec(resource_args: Value, script: &str) -> Value {
    json!({
        "resource": "local-container",
        "docker": {"docker_image": services().base_image},
        "overrides": {"entry_point": ["sh", "-c", script]},
        "resource_args": {"local-container": resource_args},
    })
}

#[test]
fn the_agent_fails_a_job_asking_for_the_host_at_stage_agent_and_runs_the_granted_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().canonicalize().unwrap().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("hello.txt"), "granted content\n").unwrap();
    let (agent, config) = agent_with_grant(&data);
    let marker = "this must not run";
    let refused: Vec<(String, &str)> = [
        (json!({"volume": ["/etc:/host-etc"]}), "host path /etc"),
        (json!({"volume": ["/:/host"]}), "host path /"),
        (
            json!({"v": "/var/lib/docker:/d"}),
            "host path /var/lib/docker",
        ),
        (
            json!({"volume": [format!("{}:/data", data.display())]}),
            "queue `default`",
        ),
        (json!({"network": "host"}), "host_namespaces"),
        (json!({"pid": "host"}), "host_namespaces"),
        (json!({"privileged": true}), "not allowed"),
    ]
    .into_iter()
    .map(|(args, says)| (submit_echo(&agent, args, marker), says))
    .collect();
    let granted = agent.submit(
        "trusted",
        &container_spec(
            json!({"volume": [format!("{}:/data", data.display())]}),
            "cat /data/hello.txt",
        ),
    );
    let process = agent.submit("trusted", &common::shell_job(&format!("echo {marker}")));

    let log = agent.run_until_idle(&config);

    for (id, says) in refused {
        let item = agent.item(&id);
        assert_eq!(item["state"], "failed", "{item:#}");
        assert_eq!(item["stage"], "agent", "{item:#}");
        let message = item["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
        assert!(
            !agent.run_file(&id, "output.log").contains(marker),
            "{id} ran"
        );
    }
    let item = agent.item(&granted);
    assert_eq!(item["state"], "finished", "{item:#}\n{log}");
    let output = agent.run_file(&granted, "output.log");
    assert!(output.contains("granted content"), "{output}");
    // local-process is off for every queue: the trusted queue's grant is for containers only.
    let item = agent.item(&process);
    assert_eq!(item["stage"], "agent", "{item:#}");
    assert!(
        item["message"]
            .as_str()
            .unwrap()
            .contains("runners.local-process.enabled"),
        "{item:#}"
    );
}

#[test]
fn an_agent_whose_grant_does_not_exist_does_not_start() {
    let agent = common::Scratch::new();
    let config = agent.write_config(
        "queues: [default]\nrunners:\n  local-container:\n    volumes: [/no/such/grant]\n",
    );
    let log = agent.run_refused(&config);
    assert!(log.contains("`runners.local-container.volumes`"), "{log}");
    assert!(log.contains("/no/such/grant does not exist"), "{log}");
}

#[test]
fn a_wandb_config_without_runners_refuses_host_paths_and_host_namespaces() {
    let agent = common::Scratch::new();
    let config = agent.write_config("queues: [default]\nmax_jobs: 2\n");
    let marker = "this must not run";
    let jobs: Vec<(String, &str)> = [
        (json!({"volume": ["/etc:/host-etc:ro"]}), "host path /etc"),
        (
            json!({"volume": ["/var/lib/docker:/d"]}),
            "host path /var/lib/docker",
        ),
        (json!({"volume": ["/run:/r"]}), "host path /run"),
        (
            json!({"network": "host"}),
            "`runners.local-container.host_namespaces`",
        ),
        (
            json!({"ipc": "host"}),
            "`runners.local-container.host_namespaces`",
        ),
    ]
    .into_iter()
    .map(|(args, says)| (submit_echo(&agent, args, marker), says))
    .collect();
    let plain = agent.submit(
        "default",
        &container_spec(json!({"memory": "64m"}), "echo plain ran"),
    );

    agent.run_until_idle(&config);

    for (id, says) in jobs {
        let item = agent.item(&id);
        assert_eq!(
            (&item["state"], &item["stage"]),
            (&json!("failed"), &json!("agent")),
            "{item:#}"
        );
        assert!(item["message"].as_str().unwrap().contains(says), "{item:#}");
    }
    assert_eq!(agent.item(&plain)["state"], "finished");
}
