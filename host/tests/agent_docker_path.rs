//! The Docker path end to end, against the real engine and a real registry
//! with htpasswd auth (both started by `scripts/services.sh start`): build
//! with builder-docker, push through registry-oci, run with local-container.

mod common;
use common::Scratch;
use common::docker::services;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// A config for the Docker path; `password_var` names the env var that
/// holds the registry password.
fn config(agent: &Scratch, repo: &str) -> std::path::PathBuf {
    let s = services();
    agent.write_config(&format!(
        "queues: [default]\nmax_jobs: 2\nstopped_run_timeout: 5\nbuilder:\n  type: docker\nregistry:\n  type: oci\n  uri: {}/{repo}\n\
         secrets:\n  registry-password: {{ env: TEST_REGISTRY_PASSWORD }}\n\
         plugins:\n  oci:\n    config: {{ username: {}, password-secret: registry-password }}\n    grants:\n      secrets: [registry-password]\n",
        s.registry, s.registry_user
    ))
}

/// A code directory whose `Dockerfile.wandb` runs `script`.
fn code_dir(
    agent: &Scratch,
    name: &str,
    dockerfile_extra: &str,
    script: &str,
) -> std::path::PathBuf {
    let dir = agent.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Dockerfile.wandb"),
        format!(
            "FROM {}\nCOPY job.sh /job.sh\n{dockerfile_extra}\nENTRYPOINT [\"sh\", \"/job.sh\"]\n",
            services().base_image
        ),
    )
    .unwrap();
    std::fs::write(dir.join("job.sh"), script).unwrap();
    dir
}

fn container_job(dir: &Path) -> serde_json::Value {
    json!({"resource": "local-container", "project": "docker-path", "uri": dir.display().to_string()})
}

fn run_agent(agent: &Scratch, config: &Path, password: &str) -> String {
    let out = agent
        .cmd()
        .args([
            "run",
            "--config",
            config.to_str().unwrap(),
            "--exit-when-idle",
            "-v",
        ])
        .env("TEST_REGISTRY_PASSWORD", password)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    log
}

fn job_log(agent: &Scratch, id: &str) -> String {
    std::fs::read_to_string(agent.state_dir().join("runs").join(id).join("agent.log"))
        .unwrap_or_default()
}

fn output(agent: &Scratch, id: &str) -> String {
    std::fs::read_to_string(agent.state_dir().join("runs").join(id).join("output.log"))
        .unwrap_or_default()
}

#[test]
fn a_code_job_is_built_pushed_and_run_then_the_second_build_is_skipped() {
    let agent = Scratch::new();
    let repo = format!("launch-e2e-{}", std::process::id());
    let config = config(&agent, &repo);
    let dir = code_dir(
        &agent,
        "hello",
        "RUN echo built > /built.txt",
        "echo hello from run $WANDB_RUN_ID; cat /built.txt",
    );
    let first = agent.submit("default", &container_job(&dir));
    run_agent(&agent, &config, &services().registry_password);
    let item = agent.item(&first);
    assert_eq!(
        item["state"],
        "finished",
        "{item:#}\n{}",
        job_log(&agent, &first)
    );
    let out = output(&agent, &first);
    assert!(
        out.contains("hello from run") && out.contains("built"),
        "{out}"
    );
    let log = job_log(&agent, &first);
    assert!(log.contains("build: built"), "{log}");
    assert!(log.contains("Dockerfile.wandb"), "{log}");

    // The same code again: the registry has the tag, so nothing is built.
    let second = agent.submit("default", &container_job(&dir));
    run_agent(&agent, &config, &services().registry_password);
    assert_eq!(agent.item(&second)["state"], "finished");
    let log = job_log(&agent, &second);
    assert!(
        log.contains("build: skipped") && log.contains("already exists"),
        "{log}"
    );
    assert!(output(&agent, &second).contains("hello from run"));
}

#[test]
fn a_broken_dockerfile_fails_at_build_with_the_daemons_error() {
    let agent = Scratch::new();
    let config = config(&agent, &format!("launch-broken-{}", std::process::id()));
    let dir = code_dir(&agent, "broken", "RUN exit 7", "true");
    let id = agent.submit("default", &container_job(&dir));
    run_agent(&agent, &config, &services().registry_password);
    let item = agent.item(&id);
    assert_eq!(item["state"], "failed", "{item:#}");
    assert_eq!(item["stage"], "build");
    let message = item["message"].as_str().unwrap();
    assert!(message.contains("non-zero code: 7"), "{message}");
}

#[test]
fn a_wrong_registry_password_is_a_clear_auth_error_and_is_never_shown() {
    let agent = Scratch::new();
    let config = config(&agent, &format!("launch-auth-{}", std::process::id()));
    let dir = code_dir(&agent, "auth", "", "true");
    let id = agent.submit("default", &container_job(&dir));
    let wrong = "wr0ng-Pa55word-91c2";
    let log = run_agent(&agent, &config, wrong);
    let item = agent.item(&id);
    assert_eq!(item["state"], "failed", "{item:#}");
    let message = item["message"].as_str().unwrap().to_lowercase();
    assert!(
        message.contains("unauthorized")
            || message.contains("credentials")
            || message.contains("authentication"),
        "{message}"
    );
    let records = String::from_utf8(agent.run(&["queue", "list", "--json"]).stdout).unwrap();
    for (what, text) in [
        ("agent log", log),
        ("queue records", records),
        ("job log", job_log(&agent, &id)),
    ] {
        assert!(!text.contains(wrong), "the password leaked into the {what}");
        assert!(
            !text.contains(&services().registry_password),
            "the real password leaked into the {what}"
        );
    }
}

#[test]
fn a_container_that_exits_non_zero_fails_at_run_with_its_exit_code() {
    let agent = Scratch::new();
    let config = config(&agent, &format!("launch-exit-{}", std::process::id()));
    let id = agent.submit(
        "default",
        &json!({"resource": "local-container", "docker": {"docker_image": services().base_image}, "overrides": {"entry_point": ["sh", "-c", "echo failing; exit 3"]}}),
    );
    run_agent(&agent, &config, &services().registry_password);
    let item = agent.item(&id);
    assert_eq!(item["state"], "failed", "{item:#}");
    assert_eq!(item["stage"], "run");
    assert_eq!(item["exit_code"], 3);
    assert!(output(&agent, &id).contains("failing"));
}

#[test]
fn stopping_a_running_container_job_stops_and_removes_its_container() {
    let agent = Scratch::new();
    let config = config(&agent, &format!("launch-stop-{}", std::process::id()));
    let id = agent.submit(
        "default",
        &json!({"resource": "local-container", "docker": {"docker_image": services().base_image}, "overrides": {"entry_point": ["sleep", "60"]}}),
    );
    let mut child = agent
        .cmd()
        .args([
            "run",
            "--config",
            config.to_str().unwrap(),
            "--exit-when-idle",
        ])
        .env("TEST_REGISTRY_PASSWORD", &services().registry_password)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    agent.wait_for_item(&id, Duration::from_secs(60), |i| i["state"] == "running");
    let name = launch_agent::runners::local_container::container_name(&id);
    // The container exists while the job runs (it may take a moment to be created).
    let start = std::time::Instant::now();
    while !container_exists(&name) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "container {name} never appeared"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(agent.run(&["queue", "stop", &id]).status.success());
    agent.wait_for_item(&id, Duration::from_secs(60), |i| i["state"] == "stopped");
    assert!(child.wait().unwrap().success());
    assert!(!container_exists(&name), "container {name} was not removed");
}

#[test]
fn a_container_left_by_an_agent_that_died_is_removed_by_the_next_one() {
    let agent = Scratch::new();
    // One attempt: the next agent fails the job instead of running it again.
    let config = agent.write_config("queues: [default]\nmax_attempts: 1\n");
    let id = agent.submit(
        "default",
        &json!({"resource": "local-container", "docker": {"docker_image": services().base_image}, "overrides": {"entry_point": ["sleep", "300"]}}),
    );
    let mut first = agent.spawn_agent(&config, &[]);
    let running = agent.wait_for_item(&id, Duration::from_secs(60), |i| {
        i["state"] == "running" && i["run_handle"]["runner"] == "local-container"
    });
    let container = running["run_handle"]["id"].as_str().unwrap().to_string();
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    assert!(
        container_exists(&container),
        "the engine keeps running a container whose agent died"
    );

    let log = agent.run_until_idle(&config);

    assert!(log.contains("took back a job whose agent died"), "{log}");
    let item = agent.item(&id);
    assert_eq!(item["state"], "failed", "{item:#}");
    assert_eq!(item["stage"], "agent", "{item:#}");
    assert!(
        !container_exists(&container),
        "container {container} outlived the agent that took its job back"
    );
}

fn container_exists(name: &str) -> bool {
    std::process::Command::new("docker")
        .args(["container", "inspect", name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn a_git_job_is_fetched_by_the_host_built_and_run() {
    let agent = Scratch::new();
    let config = config(&agent, &format!("launch-git-{}", std::process::id()));
    let repo = code_dir(
        &agent,
        "repo",
        "",
        "echo from git at $(cat /version.txt 2>/dev/null || echo v1)",
    );
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(&repo)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    git(&["init", "--quiet", "--initial-branch=main"]);
    git(&["add", "."]);
    git(&["commit", "--quiet", "-m", "v1"]);
    let v1 = git(&["rev-parse", "HEAD"]).trim().to_string();
    std::fs::write(repo.join("job.sh"), "echo from git at v2").unwrap();
    git(&["commit", "--quiet", "-am", "v2"]);

    let url = format!("file://{}", repo.display());
    let at_v1 = agent.submit(
        "default",
        &json!({"resource": "local-container", "git": {"repo": url, "version": v1}}),
    );
    let at_main = agent.submit(
        "default",
        &json!({"resource": "local-container", "git": {"repo": url, "version": "main"}}),
    );
    run_agent(&agent, &config, &services().registry_password);
    for id in [&at_v1, &at_main] {
        let item = agent.item(id);
        assert_eq!(
            item["state"],
            "finished",
            "{item:#}\n{}",
            job_log(&agent, id)
        );
    }
    assert!(
        output(&agent, &at_v1).contains("from git at v1"),
        "{}",
        output(&agent, &at_v1)
    );
    assert!(
        output(&agent, &at_main).contains("from git at v2"),
        "{}",
        output(&agent, &at_main)
    );

    let bad = agent.submit(
        "default",
        &json!({"resource": "local-container", "git": {"repo": url, "version": "no-such-branch"}}),
    );
    run_agent(&agent, &config, &services().registry_password);
    let item = agent.item(&bad);
    assert_eq!(item["state"], "failed");
    assert_eq!(item["stage"], "build");
    assert!(
        item["message"].as_str().unwrap().contains("git"),
        "{item:#}"
    );
}

/// Builds an image that prints `marker`, pushes it to the test registry as
/// `repo:v1` with the docker CLI (logged in), and removes it from the
/// engine; returns its reference.
fn push_private_image(agent: &Scratch, repo: &str, marker: &str) -> String {
    let s = services();
    let image = format!("{}/{repo}:v1", s.registry);
    let dir = code_dir(agent, repo, "", &format!("echo {marker}"));
    std::fs::rename(dir.join("Dockerfile.wandb"), dir.join("Dockerfile")).unwrap();
    let docker = |args: &[&str], stdin: Option<&str>| {
        let mut child = std::process::Command::new("docker")
            .arg("--config")
            .arg(agent.path().join("docker-config"))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        if let Some(text) = stdin {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success(), "docker {args:?}");
    };
    docker(&["build", "-q", "-t", &image, dir.to_str().unwrap()], None);
    docker(
        &[
            "login",
            "-u",
            &s.registry_user,
            "--password-stdin",
            &s.registry,
        ],
        Some(&s.registry_password),
    );
    docker(&["push", "-q", &image], None);
    assert!(common::docker::remove_images_blocking(&[&image]));
    image
}

#[test]
fn an_image_job_from_the_private_registry_is_pulled_with_its_credentials() {
    let agent = Scratch::new();
    let repo = format!("launch-private-{}", std::process::id());
    let image = push_private_image(&agent, &repo, "private-image-ran");
    let job = json!({"resource": "local-container", "docker": {"docker_image": image}});

    // Without a registry in the config the pull is anonymous and refused.
    let anonymous = agent.write("anonymous.yaml", "queues: [default]\n");
    let refused = agent.submit("default", &job);
    run_agent(&agent, &anonymous, &services().registry_password);
    let item = agent.item(&refused);
    assert_eq!(item["state"], "failed", "{item:#}");
    assert_eq!(item["stage"], "run");
    let message = item["message"].as_str().unwrap();
    assert!(
        message.contains(&image) && message.contains("anonymously"),
        "{message}"
    );

    // With the registry configured, its plugin logs in and the pull works.
    let config = config(&agent, &repo);
    let id = agent.submit("default", &job);
    let log = run_agent(&agent, &config, &services().registry_password);
    let item = agent.item(&id);
    assert_eq!(item["state"], "finished", "{item:#}\n{log}");
    assert!(output(&agent, &id).contains("private-image-ran"));
    let job_log = job_log(&agent, &id);
    assert!(job_log.contains("to pull the image"), "{job_log}");
    let records = String::from_utf8(agent.run(&["queue", "list", "--json"]).stdout).unwrap();
    for (what, text) in [
        ("agent log", log),
        ("queue records", records),
        ("job log", job_log),
    ] {
        assert!(
            !text.contains(&services().registry_password),
            "the password leaked into the {what}"
        );
    }
}
