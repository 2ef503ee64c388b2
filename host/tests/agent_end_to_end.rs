//! The agent, end to end through its command line: submit, run, list.

mod common;
use common::{Scratch, shell_job};
use serde_json::json;
use std::time::Duration;

const CONFIG: &str =
    "queues: [default]\nmax_jobs: 2\nenvironment:\n  type: local\nbuilder:\n  type: noop\n";

#[test]
fn three_jobs_two_finish_one_fails_with_its_exit_code() {
    let agent = Scratch::new();
    let config = agent.write_config(CONFIG);
    let ok1 = agent.submit("default", &shell_job("echo run=$WANDB_RUN_ID queue=$WANDB_LAUNCH_QUEUE_NAME trace=$WANDB_LAUNCH_TRACE_ID project=$WANDB_PROJECT launch=$WANDB_LAUNCH"));
    let bad = agent.submit("default", &shell_job("echo about to fail >&2; exit 3"));
    let ok2 = agent.submit("default", &shell_job("true"));

    let out = agent.run(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--exit-when-idle",
    ]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "agent failed: {log}");

    let items = agent.items();
    assert_eq!(items.len(), 3, "{items:#?}");
    for id in [&ok1, &ok2] {
        let item = agent.item(id);
        assert_eq!(item["state"], "finished", "{item:#}");
        assert_eq!(item["exit_code"], 0);
    }
    let failed = agent.item(&bad);
    assert_eq!(failed["state"], "failed", "{failed:#}");
    assert_eq!(failed["stage"], "run");
    assert_eq!(failed["exit_code"], 3);
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("exited with code 3"),
        "{failed:#}"
    );

    // The run got the W&B environment and its output was kept.
    let output =
        std::fs::read_to_string(agent.state_dir().join("runs").join(&ok1).join("output.log"))
            .unwrap();
    assert!(output.contains(&format!("trace={ok1}")), "{output}");
    assert!(output.contains("queue=default"), "{output}");
    assert!(output.contains("project=tests"), "{output}");
    assert!(output.contains("launch=True"), "{output}");
    let failed_output =
        std::fs::read_to_string(agent.state_dir().join("runs").join(&bad).join("output.log"))
            .unwrap();
    assert!(failed_output.contains("about to fail"));

    // The human listing shows the same.
    let table = String::from_utf8(agent.run(&["queue", "list"]).stdout).unwrap();
    assert!(
        table.contains(&bad) && table.contains("failed") && table.contains("run"),
        "{table}"
    );
}

#[test]
fn a_bad_spec_fails_its_job_and_the_next_job_still_runs() {
    let agent = Scratch::new();
    let config = agent.write_config(CONFIG);
    let no_command = agent.submit("default", &serde_json::json!({"resource": "local-process"}));
    let missing_program = agent.submit(
        "default",
        &serde_json::json!({"overrides": {"entry_point": ["/no/such/program"]}}),
    );
    let unsupported = agent.submit("default", &serde_json::json!({"resource": "sagemaker", "docker": {"docker_image": "x:1"}, "overrides": {"entry_point": ["true"]}}));
    let good = agent.submit("default", &shell_job("true"));

    agent.run_until_idle(&config);
    let item = agent.item(&no_command);
    assert_eq!(item["state"], "failed");
    assert!(
        item["message"]
            .as_str()
            .unwrap()
            .contains("overrides.entry_point"),
        "{item:#}"
    );
    let item = agent.item(&missing_program);
    assert_eq!(item["state"], "failed");
    assert!(
        item["message"]
            .as_str()
            .unwrap()
            .contains("/no/such/program"),
        "{item:#}"
    );
    let item = agent.item(&unsupported);
    assert_eq!(item["state"], "failed");
    assert!(
        item["message"].as_str().unwrap().contains("sagemaker"),
        "{item:#}"
    );
    assert_eq!(agent.item(&good)["state"], "finished");
}

#[test]
fn round_robin_serves_every_queue() {
    let agent = Scratch::new();
    let config = agent.write_config("queues: [a, b]\nmax_jobs: 1\n");
    let marker = agent.path().join("order.txt");
    let m = marker.display().to_string();
    let a1 = agent.submit("a", &shell_job(&format!("echo a1 >> {m}")));
    let _a2 = agent.submit("a", &shell_job(&format!("echo a2 >> {m}")));
    let _b1 = agent.submit("b", &shell_job(&format!("echo b1 >> {m}")));
    agent.run_until_idle(&config);
    let order = std::fs::read_to_string(&marker).unwrap();
    // a yields first, so b goes before a's second job.
    assert_eq!(
        order.split_whitespace().collect::<Vec<_>>(),
        ["a1", "b1", "a2"],
        "{a1}"
    );
}

#[test]
fn a_submit_wakes_an_idle_agent() {
    let agent = Scratch::new();
    let config = agent.write_config(CONFIG);
    let mut child = agent.spawn_agent(&config, &[]);
    // Give the agent time to go idle, then submit.
    std::thread::sleep(Duration::from_millis(1500));
    let id = agent.submit("default", &shell_job("true"));
    let item = agent.wait_for_item(&id, Duration::from_secs(20), |i| i["state"] == "finished");
    assert_eq!(item["exit_code"], 0);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "agent exit on SIGTERM: {status}");
}

#[test]
fn sigterm_hands_a_running_job_back_after_the_grace_period() {
    let agent = Scratch::new();
    let config = agent.write_config("queues: [default]\nshutdown_grace_seconds: 1\n");
    let id = agent.submit("default", &shell_job("sleep 30"));
    let mut child = agent.spawn_agent(&config, &[]);
    agent.wait_for_item(&id, Duration::from_secs(20), |i| i["state"] == "running");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let item = agent.item(&id);
    assert_eq!(item["state"], "queued", "handed back: {item:#}");
    assert_eq!(
        item["attempts"], 0,
        "a hand-back is not an attempt: {item:#}"
    );
}

#[test]
fn queue_stop_stops_a_running_job() {
    let agent = Scratch::new();
    let config = agent.write_config(CONFIG);
    let id = agent.submit("default", &shell_job("sleep 30"));
    let mut child = agent.spawn_agent(&config, &["--exit-when-idle"]);
    agent.wait_for_item(&id, Duration::from_secs(20), |i| i["state"] == "running");
    let out = agent.run(&["queue", "stop", &id]);
    assert!(out.status.success());
    let item = agent.wait_for_item(&id, Duration::from_secs(20), |i| i["state"] == "stopped");
    assert_eq!(item["state"], "stopped");
    assert!(child.wait().unwrap().success());
}

#[test]
fn the_wandb_verbosity_key_turns_on_debug_logging() {
    let agent = Scratch::new();
    let quiet = agent.run_until_idle(&agent.write_config("queues: [default]\n"));
    assert!(!quiet.contains("DEBUG"), "{quiet}");
    let verbose = agent.run_until_idle(&agent.write_config("queues: [default]\nverbosity: 1\n"));
    assert!(verbose.contains("DEBUG"), "{verbose}");
}

#[test]
fn a_run_that_ignores_sigterm_is_killed_after_stopped_run_timeout() {
    let agent = Scratch::new();
    // W&B's default is 60 s; with 1 s the stop completes well inside the wait below.
    let config = agent.write_config("queues: [default]\nstopped_run_timeout: 1\n");
    let id = agent.submit("default", &shell_job("trap '' TERM; sleep 60"));
    let mut child = agent.spawn_agent(&config, &["--exit-when-idle"]);
    agent.wait_for_item(&id, Duration::from_secs(20), |i| i["state"] == "running");
    assert!(agent.run(&["queue", "stop", &id]).status.success());
    agent.wait_for_item(&id, Duration::from_secs(20), |i| i["state"] == "stopped");
    assert!(child.wait().unwrap().success());
}

fn mkfifo(path: &std::path::Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string; mkfifo touches no memory of ours.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

#[test]
fn sources_a_local_process_job_cannot_honour_are_refused_at_stage_agent() {
    let agent = Scratch::new();
    let config = agent.write_config(CONFIG);
    let ran = agent.path().join("ran");
    let marker = |extra: serde_json::Value| {
        let mut spec = shell_job(&format!("echo ran >> {}", ran.display()));
        for (key, value) in extra.as_object().unwrap() {
            spec[key] = value.clone();
        }
        spec
    };
    let file = agent.write("code.py", "print(1)");
    let fifo = agent.path().join("pipe");
    mkfifo(&fifo);
    let cases = [
        (
            json!({"uri": "https://github.com/team/repo.git"}),
            "is a URL",
        ),
        (json!({"uri": "s3://bucket/code"}), "is a URL"),
        (json!({"uri": "file://elsewhere/srv/code"}), "file://"),
        (
            json!({"uri": file.display().to_string()}),
            "not a directory",
        ),
        (json!({"uri": fifo.display().to_string()}), "FIFO"),
        (json!({"uri": "/no/such/code/dir"}), "not a directory"),
        (
            json!({"docker": {"docker_image": "python:3.12"}}),
            "cannot run",
        ),
        (json!({"image_uri": "python:3.12"}), "cannot run"),
    ];
    let ids: Vec<String> = cases
        .iter()
        .map(|(extra, _)| agent.submit("default", &marker(extra.clone())))
        .collect();
    let args_only = agent.submit(
        "default",
        &json!({"overrides": {"args": ["sh", "-c", format!("echo ran >> {}", ran.display())]}}),
    );
    let empty_entry = agent.submit(
        "default",
        &json!({"overrides": {"entry_point": [], "args": ["--lr", "0.1"]}}),
    );
    let blank_program = agent.submit(
        "default",
        &json!({"overrides": {"entry_point": [" ", "train.py"]}}),
    );
    agent.run_until_idle(&config);
    for (id, (extra, says)) in ids.iter().zip(&cases) {
        let item = agent.item(id);
        assert_eq!(item["state"], "failed", "{extra}: {item:#}");
        assert_eq!(item["stage"], "agent", "{extra}: {item:#}");
        let message = item["message"].as_str().unwrap();
        assert!(message.contains(says), "{extra}: {message}");
    }
    for id in [&args_only, &empty_entry] {
        let item = agent.item(id);
        assert_eq!(item["state"], "failed", "{item:#}");
        assert_eq!(item["stage"], "agent", "{item:#}");
        let message = item["message"].as_str().unwrap();
        assert!(
            message.contains("no entry point") && message.contains("overrides.entry_point"),
            "{message}"
        );
    }
    let item = agent.item(&blank_program);
    assert_eq!(item["stage"], "agent", "{item:#}");
    assert!(
        item["message"]
            .as_str()
            .unwrap()
            .contains("empty program name"),
        "{item:#}"
    );
    assert!(!ran.exists(), "no refused job ran");
}

#[test]
fn a_local_process_job_runs_in_the_code_its_file_url_or_git_repo_names() {
    let agent = Scratch::new();
    let config = agent.write_config(CONFIG);
    let code = agent.path().join("my code");
    std::fs::create_dir(&code).unwrap();
    std::fs::write(code.join("train.sh"), "echo trained from the file url\n").unwrap();
    let url = format!("file://{}", code.display()).replace(' ', "%20");

    let repo = agent.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    std::fs::write(repo.join("train.sh"), "echo trained from git \"$@\"\n").unwrap();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .current_dir(&repo)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "--quiet"]);
    git(&["add", "train.sh"]);
    git(&["commit", "--quiet", "-m", "train"]);

    let from_url = agent.submit(
        "default",
        &json!({"uri": url, "overrides": {"entry_point": ["sh", "train.sh"]}}),
    );
    let from_git = agent.submit(
        "default",
        &json!({"git": {"repo": repo.display().to_string()}, "overrides": {"entry_point": ["sh", "train.sh"], "args": ["--epochs", "2"]}}),
    );
    let dashed = agent.submit(
        "default",
        &json!({"git": {"repo": "--upload-pack=touch /tmp/owned"}, "overrides": {"entry_point": ["true"]}}),
    );
    agent.run_until_idle(&config);
    let output = |id: &str| {
        std::fs::read_to_string(agent.state_dir().join("runs").join(id).join("output.log"))
            .unwrap_or_default()
    };
    let item = agent.item(&from_url);
    assert_eq!(item["state"], "finished", "{item:#}");
    assert!(output(&from_url).contains("trained from the file url"));
    let item = agent.item(&from_git);
    assert_eq!(item["state"], "finished", "{item:#}");
    assert!(output(&from_git).contains("trained from git --epochs 2"));
    let item = agent.item(&dashed);
    assert_eq!(item["state"], "failed", "{item:#}");
    assert_eq!(item["stage"], "agent");
    assert!(
        item["message"]
            .as_str()
            .unwrap()
            .contains("starts with `-`"),
        "{item:#}"
    );
}

#[test]
fn a_source_holding_a_fifo_fails_its_build_at_once_instead_of_hanging() {
    let agent = Scratch::new();
    let config = agent.write_config(CONFIG);
    let code = agent.path().join("code");
    std::fs::create_dir_all(code.join("data")).unwrap();
    std::fs::write(code.join("train.py"), "print(1)").unwrap();
    mkfifo(&code.join("data").join("stream"));
    let id = agent.submit(
        "default",
        &json!({"resource": "local-container", "uri": code.display().to_string(), "overrides": {"entry_point": ["python", "train.py"]}}),
    );
    let good = agent.submit("default", &shell_job("true"));
    let mut child = agent.spawn_agent(&config, &["--exit-when-idle"]);
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the agent hung on the FIFO in the job's source");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let item = agent.item(&id);
    assert_eq!(item["state"], "failed", "{item:#}");
    let message = item["message"].as_str().unwrap();
    assert!(
        message.contains("stream") && message.contains("FIFO"),
        "{message}"
    );
    assert_eq!(agent.item(&good)["state"], "finished");
}

#[test]
fn a_job_stuck_fetching_its_source_is_stopped_at_once() {
    let agent = Scratch::new();
    let config = agent.write_config(CONFIG);
    // A git server on loopback that accepts and never answers.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in server.incoming().flatten() {
            held.push(stream);
        }
    });
    let repo = format!("http://127.0.0.1:{port}/team/repo.git");
    let spec = json!({"resource": "local-container", "git": {"repo": repo}, "overrides": {"entry_point": ["true"]}});
    let stuck = agent.submit("default", &spec);
    let mut child = Reaped(agent.spawn_agent(&config, &[]));
    agent.wait_for_item(&stuck, Duration::from_secs(20), |i| i["state"] == "claimed");
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(agent.item(&stuck)["state"], "claimed", "still fetching");
    assert!(agent.run(&["queue", "stop", &stuck]).status.success());
    agent.wait_for_item(&stuck, Duration::from_secs(5), |i| i["state"] == "stopped");

    // A second stuck job is handed back by the shutdown, not waited for.
    let handed = agent.submit("default", &spec);
    agent.wait_for_item(&handed, Duration::from_secs(20), |i| {
        i["state"] == "claimed"
    });
    let start = std::time::Instant::now();
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(300));
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    let item = agent.item(&handed);
    assert_eq!(item["state"], "queued", "{item:#}");
    assert_eq!(item["attempts"], 0, "{item:#}");
}

/// A child process killed when the test lets go of it (a failing test
/// leaves no agent behind).
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
