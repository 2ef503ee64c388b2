//! The Docker path's figures, printed as a table (needs the services of
//! `scripts/services.sh start`: a Docker engine and a registry on 127.0.0.1):
//!
//! - queue pop to container start for a cached job: a code job whose image
//!   is already in the registry (plan, registry check, no build), from the
//!   agent's "job claimed" line to its "container … started" line;
//! - the engine alone starting a container of the same image, through its
//!   API (no agent) and through the CLI, and the agent's time when the job
//!   asks for `network: host`;
//! - pushing an image with a fresh 100 MB layer through the agent's Docker
//!   capability, against `docker push` of a same-sized image to the same
//!   registry.
//!
//! Run: `scripts/services.sh start && scripts/build-plugins.sh && cargo bench -p launch-agent --bench docker`.

#[path = "../tests/common/docker.rs"]
#[allow(dead_code)]
mod docker_env;
#[path = "../tests/common/services_env.rs"]
#[allow(dead_code)]
mod services_env;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("bench path");
    exe.ancestors().nth(3).expect("target dir").to_path_buf()
}

fn agent(state: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_launch-agent"));
    cmd.env("LAUNCH_AGENT_STATE_DIR", state)
        .env("LAUNCH_AGENT_PLUGIN_DIR", target_dir().join("bundle"))
        .env(
            "TEST_REGISTRY_PASSWORD",
            &docker_env::services().registry_password,
        )
        .env("LAUNCH_AGENT_LOG", "launch_agent=info");
    cmd
}

fn timestamp(line: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let first = line.split_whitespace().next()?;
    chrono::DateTime::parse_from_rfc3339(first)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// For `jobs` cached container jobs: claim to container started, and claim
/// to the agent asking the engine for the container (the agent's own share).
/// `resource_args` is the spec's `resource_args["local-container"]` (JSON).
fn pop_to_start(jobs: usize, resource_args: &str) -> (Vec<Duration>, Vec<Duration>) {
    let s = docker_env::services();
    let scratch = tempfile::tempdir().unwrap();
    let state = scratch.path().join("state");
    let code = scratch.path().join("code");
    std::fs::create_dir_all(&code).unwrap();
    std::fs::write(
        code.join("Dockerfile.wandb"),
        format!("FROM {}\nENTRYPOINT [\"true\"]\n", s.base_image),
    )
    .unwrap();
    let config = scratch.path().join("launch-config.yaml");
    std::fs::write(
        &config,
        format!(
            "queues: [default]\nmax_jobs: 1\nbuilder:\n  type: docker\nregistry:\n  type: oci\n  uri: {}/bench-cached\n\
             runners:\n  local-container:\n    host_namespaces: [network]\n\
             secrets:\n  registry-password: {{ env: TEST_REGISTRY_PASSWORD }}\n\
             plugins:\n  oci:\n    config: {{ username: {}, password-secret: registry-password }}\n    grants:\n      secrets: [registry-password]\n",
            s.registry, s.registry_user
        ),
    )
    .unwrap();
    let spec = scratch.path().join("job.json");
    std::fs::write(
        &spec,
        format!(
            "{{\"resource\": \"local-container\", \"uri\": \"{}\", \"resource_args\": {{\"local-container\": {resource_args}}}}}",
            code.display()
        ),
    )
    .unwrap();
    let submit = |n: usize| {
        for _ in 0..n {
            let out = agent(&state)
                .args(["submit", spec.to_str().unwrap()])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    let run = || {
        let out = agent(&state)
            .args([
                "run",
                "--config",
                config.to_str().unwrap(),
                "--exit-when-idle",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // The first job builds and pushes; every later one is cached.
    submit(1);
    run();
    submit(jobs);
    let log = run();
    let mut claimed = std::collections::HashMap::new();
    let mut durations = Vec::new();
    let mut agent_share = Vec::new();
    for line in log.lines() {
        let Some(item) = line
            .split("item=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
        else {
            continue;
        };
        if line.contains("job claimed") {
            claimed.insert(item.to_string(), timestamp(line));
        } else if line.contains("run: starting local-container")
            && let (Some(Some(start)), Some(end)) = (claimed.get(item), timestamp(line))
        {
            agent_share.push((end - *start).to_std().unwrap_or_default());
        } else if line.contains("run: container")
            && line.contains("started")
            && let (Some(Some(start)), Some(end)) = (claimed.get(item), timestamp(line))
        {
            durations.push((end - *start).to_std().unwrap_or_default());
        }
    }
    assert_eq!(
        durations.len(),
        jobs,
        "every cached job started a container:\n{log}"
    );
    durations.sort();
    agent_share.sort();
    (durations, agent_share)
}

/// Create + start of the base image through the engine's API (bollard, as
/// the runner does, without the agent): the engine's own cost.
fn api_start(n: usize) -> Vec<Duration> {
    use bollard::models::ContainerCreateBody;
    use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
    let image = docker_env::services().base_image.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let docker = launch_agent::clients::docker::connect().await.unwrap();
        let mut times = Vec::new();
        for i in 0..n {
            let name = format!("launch-bench-api-{}-{i}", std::process::id());
            let body = ContainerCreateBody {
                image: Some(image.clone()),
                cmd: Some(vec!["true".into()]),
                ..Default::default()
            };
            let start = Instant::now();
            let created = docker
                .create_container(
                    Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                    body,
                )
                .await
                .unwrap();
            docker.start_container(&created.id, None).await.unwrap();
            times.push(start.elapsed());
            docker
                .remove_container(
                    &created.id,
                    Some(RemoveContainerOptionsBuilder::default().force(true).build()),
                )
                .await
                .unwrap();
        }
        times.sort();
        times
    })
}

/// `docker create` + `docker start` of the base image by the CLI: the
/// engine's own cost of starting a container, for comparison.
fn cli_start(n: usize) -> Vec<Duration> {
    let image = &docker_env::services().base_image;
    let mut times = Vec::new();
    for i in 0..n {
        let name = format!("launch-bench-start-{}-{i}", std::process::id());
        let start = Instant::now();
        let created = Command::new("docker")
            .args(["create", "--name", &name, image, "true"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        let started = Command::new("docker")
            .args(["start", &name])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        times.push(start.elapsed());
        let _ = Command::new("docker")
            .args(["rm", "-f", &name])
            .stdout(Stdio::null())
            .status();
        assert!(
            created.success() && started.success(),
            "docker create/start"
        );
    }
    times.sort();
    times
}

/// Builds an image whose top layer is `mib` MiB of fresh random bytes.
fn image_with_fresh_layer(tag: &str, mib: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut blob = std::fs::File::create(dir.path().join("blob")).unwrap();
    let mut chunk = vec![0u8; 1024 * 1024];
    for _ in 0..mib {
        for b in chunk.chunks_mut(16) {
            b.copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        }
        blob.write_all(&chunk).unwrap();
    }
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM {}\nCOPY blob /blob\n",
            docker_env::services().base_image
        ),
    )
    .unwrap();
    let status = Command::new("docker")
        .args(["build", "-q", "-t", tag, "."])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "building {tag}");
}

fn push_times(rounds: usize, mib: usize) -> (Vec<Duration>, Vec<Duration>) {
    let s = docker_env::services();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let docker = runtime
        .block_on(launch_agent::clients::docker::connect())
        .unwrap();
    let docker_config = tempfile::tempdir().unwrap();
    let mut login = Command::new("docker")
        .args([
            "--config",
            docker_config.path().to_str().unwrap(),
            "login",
            "-u",
            &s.registry_user,
            "--password-stdin",
            &s.registry,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    login
        .stdin
        .take()
        .unwrap()
        .write_all(s.registry_password.as_bytes())
        .unwrap();
    assert!(login.wait().unwrap().success(), "docker login");
    let (mut ours, mut cli) = (Vec::new(), Vec::new());
    let nonce = std::process::id();
    for round in 0..rounds {
        let ours_tag = format!("{}/bench-push-ours-{nonce}-{round}:v1", s.registry);
        let cli_tag = format!("{}/bench-push-cli-{nonce}-{round}:v1", s.registry);
        image_with_fresh_layer(&ours_tag, mib);
        image_with_fresh_layer(&cli_tag, mib);
        let start = Instant::now();
        runtime
            .block_on(launch_agent::capabilities::docker::push_image(
                &docker,
                &ours_tag,
                Some((&s.registry_user, &s.registry_password)),
                &|_: &str| {},
            ))
            .unwrap();
        ours.push(start.elapsed());
        let start = Instant::now();
        let status = Command::new("docker")
            .args([
                "--config",
                docker_config.path().to_str().unwrap(),
                "push",
                "-q",
                &cli_tag,
            ])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "docker push");
        cli.push(start.elapsed());
        for tag in [&ours_tag, &cli_tag] {
            let _ = Command::new("docker")
                .args(["rmi", "-f", "--no-prune", tag])
                .stdout(Stdio::null())
                .status();
        }
    }
    ours.sort();
    cli.sort();
    (ours, cli)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let (jobs, rounds, mib) = if full { (20, 5, 100) } else { (2, 1, 4) };
    let (starts, agent_share) = pop_to_start(jobs, "{}");
    let (host_starts, _) = pop_to_start(jobs, r#"{"network": "host"}"#);
    let api = api_start(jobs);
    let engine = cli_start(jobs.min(10));
    let (ours, cli) = push_times(rounds, mib);
    let median = |v: &[Duration]| v[v.len() / 2];
    if !full {
        println!("(smoke run: use `cargo bench` for the figures)");
    }
    println!("| measure | result | goal |");
    println!("|---|---|---|");
    println!(
        "| queue pop to container start, cached job ({jobs} jobs) | p50 {:.0} ms, max {:.0} ms | ≤ 150 ms |",
        median(&starts).as_secs_f64() * 1e3,
        starts.last().unwrap().as_secs_f64() * 1e3
    );
    println!(
        "| of which the agent's own share (claim to asking the engine for the container) | p50 {:.0} ms | |",
        median(&agent_share).as_secs_f64() * 1e3
    );
    println!(
        "| the engine alone: create + start of the same image through its API, no agent ({jobs} containers) | p50 {:.0} ms | |",
        median(&api).as_secs_f64() * 1e3
    );
    println!(
        "| the engine alone by the CLI: `docker create` + `docker start` | p50 {:.0} ms | |",
        median(&engine).as_secs_f64() * 1e3
    );
    println!(
        "| queue pop to container start with `resource_args.local-container.network: host` (no network namespace to set up) | p50 {:.0} ms, max {:.0} ms | |",
        median(&host_starts).as_secs_f64() * 1e3,
        host_starts.last().unwrap().as_secs_f64() * 1e3
    );
    println!(
        "| push of a fresh {mib} MB layer ({rounds} rounds, median) | agent {:.2} s, docker push {:.2} s: {:.2}× docker's speed | ≥ 1.0× |",
        median(&ours).as_secs_f64(),
        median(&cli).as_secs_f64(),
        median(&cli).as_secs_f64() / median(&ours).as_secs_f64()
    );
}
