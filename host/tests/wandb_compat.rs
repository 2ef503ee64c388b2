//! Drop-in compatibility with W&B Launch: the REAL `wandb` client submits a
//! job to a queue on the FAKE W&B server of `tests/wandb_fake/` (a
//! protocol-faithful fake: the real server cannot run here), and our agent,
//! with `queue_backend: wandb`, pops it, acks it, runs it and reports, in the
//! order the real agent does.
//!
//! Needs the venv of `tests/wandb_fake/setup.sh` (the test command runs it)
//! and the services of `scripts/services.sh` (the job runs in a container).

mod common;
use common::Scratch;
use common::docker::services;
use common::wandb_fake::{FakeWandbServer, wandb_venv};
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

const API_KEY: &str = "compatkey0compatkey1compatkey2compatkey3";

/// The fake W&B server, killed when dropped.
struct FakeWandb(FakeWandbServer);

impl std::ops::Deref for FakeWandb {
    type Target = FakeWandbServer;
    fn deref(&self) -> &FakeWandbServer {
        &self.0
    }
}

impl FakeWandb {
    fn start(extra: &[&str]) -> Self {
        FakeWandb(FakeWandbServer::start(API_KEY, "team", extra))
    }
    /// POSTs `body` (JSON) to the fake's test-control `path`.
    fn post(&self, path: &str, body: &str) {
        self.control("POST", path, body);
    }
    /// How many requests the server dropped on purpose.
    fn dropped(&self) -> usize {
        self.events()
            .iter()
            .filter(|e| e["kind"] == "dropped")
            .count()
    }
}

/// `launch-agent run --config CONFIG ARGS` pointed at the fake with `key`.
fn agent_cmd(
    agent: &Scratch,
    fake: &FakeWandb,
    config: &std::path::Path,
    key: &str,
    args: &[&str],
) -> Command {
    let mut cmd = agent.cmd();
    cmd.args(["run", "--config", config.to_str().unwrap()])
        .args(args)
        .env("WANDB_BASE_URL", fake.url())
        .env("WANDB_API_KEY", key);
    cmd
}

/// Runs the agent against the fake with `config` until its queues are
/// empty; asserts that it exited cleanly and returns its log.
fn run_until_idle(agent: &Scratch, fake: &FakeWandb, config: &std::path::Path) -> String {
    let out = agent_cmd(agent, fake, config, API_KEY, &["--exit-when-idle"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    log
}

/// Starts the agent in the background against the fake with `config` and
/// waits until the fake has received `operation` from it.
fn spawn_until(
    agent: &Scratch,
    fake: &FakeWandb,
    config: &std::path::Path,
    operation: &str,
) -> std::process::Child {
    let child = agent_cmd(agent, fake, config, API_KEY, &[])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_operation(fake, operation);
    child
}

/// Waits (bounded) until the fake has received `operation`.
fn wait_for_operation(fake: &FakeWandb, operation: &str) {
    let start = std::time::Instant::now();
    while !fake.operations().iter().any(|op| op == operation) {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "{operation} never sent"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn config(agent: &Scratch) -> PathBuf {
    agent.write_config("queue_backend: wandb\nentity: team\nqueues: [default]\nmax_jobs: 1\n")
}

#[test]
fn a_job_submitted_by_the_real_wandb_client_is_popped_acked_and_run() {
    let venv = wandb_venv();
    let agent = Scratch::new();
    let fake = FakeWandb::start(&[]);
    let submitted = Command::new("bash")
        .arg(repo_root().join("tests/wandb_fake/submit_with_wandb.sh"))
        .args([
            "--port",
            &fake.port.to_string(),
            "--api-key",
            API_KEY,
            "--queue",
            "default",
            "--entity",
            "team",
            "--project",
            "compat",
        ])
        .args([
            "--image",
            &services().base_image,
            "--",
            "--resource",
            "local-container",
            "--entry-point",
            "sh -c 'echo hello from a wandb job $WANDB_PROJECT'",
        ])
        .env("LAUNCH_AGENT_WANDB_VENV", &venv)
        .output()
        .unwrap();
    assert!(
        submitted.status.success(),
        "wandb launch failed: {}",
        String::from_utf8_lossy(&submitted.stderr)
    );

    let log = run_until_idle(&agent, &fake, &config(&agent));
    assert!(
        !log.contains(API_KEY),
        "the API key leaked into the agent's log"
    );

    let ops = fake.operations();
    let agent_ops: Vec<&str> = ops
        .iter()
        .map(String::as_str)
        .filter(|op| {
            [
                "ProjectRunQueues",
                "createLaunchAgent",
                "popFromRunQueue",
                "ackRunQueueItem",
                "failRunQueueItem",
                "updateLaunchAgent",
            ]
            .contains(op)
        })
        .collect();
    let first = |name: &str| {
        agent_ops
            .iter()
            .position(|op| *op == name)
            .unwrap_or_else(|| panic!("{name} never sent: {ops:?}"))
    };
    assert!(
        first("ProjectRunQueues") < first("createLaunchAgent"),
        "{ops:?}"
    );
    assert!(
        first("createLaunchAgent") < first("popFromRunQueue"),
        "{ops:?}"
    );
    assert!(
        first("popFromRunQueue") < first("ackRunQueueItem"),
        "{ops:?}"
    );
    assert!(
        !agent_ops.contains(&"failRunQueueItem"),
        "the job must not fail: {ops:?}\n{log}"
    );
    assert_eq!(
        agent_ops.last(),
        Some(&"updateLaunchAgent"),
        "the agent says KILLED on its way out: {ops:?}"
    );

    // The run happened, with the W&B environment.
    let runs = agent.state_dir().join("runs");
    let outputs: Vec<String> = std::fs::read_dir(&runs)
        .unwrap()
        .flatten()
        .filter_map(|d| std::fs::read_to_string(d.path().join("output.log")).ok())
        .collect();
    assert!(
        outputs
            .iter()
            .any(|o| o.contains("hello from a wandb job compat")),
        "{outputs:?}\n{log}"
    );
}

#[test]
fn a_server_that_refuses_the_key_stops_the_agent_at_start_with_a_clear_message() {
    let agent = Scratch::new();
    let fake = FakeWandb::start(&[]);
    let wrong = "wrongkey0wrongkey1wrongkey2wrongkey3wrong";
    let out = agent_cmd(&agent, &fake, &config(&agent), wrong, &["--exit-when-idle"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("401"), "{stderr}");
    assert!(
        !stderr.contains(wrong),
        "the key must not be shown: {stderr}"
    );
}

#[test]
fn a_server_that_drops_connections_is_retried_and_nothing_is_lost() {
    let agent = Scratch::new();
    let fake = FakeWandb::start(&[]);
    let mut child = spawn_until(&agent, &fake, &config(&agent), "popFromRunQueue");
    // The server goes away for 3 s; a job arrives meanwhile.
    fake.post("/_fake/drop-connections?seconds=3", "{}");
    fake.post(
        "/_fake/queues/team/default/items",
        r#"{"resource": "local-process", "project": "p", "overrides": {"entry_point": ["sh", "-c", "echo survived the outage"]}}"#,
    );
    let start = std::time::Instant::now();
    let output = loop {
        let found = std::fs::read_dir(agent.state_dir().join("runs"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|d| std::fs::read_to_string(d.path().join("output.log")).ok())
            .find(|o| o.contains("survived"));
        if let Some(output) = found {
            break output;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "the job never ran after the outage: {:?}",
            fake.operations()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(output.contains("survived the outage"));
    assert!(
        fake.dropped() > 0,
        "the agent polled during the outage (so it retried)"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(
        child.wait().unwrap().success(),
        "the agent survived the outage and stopped cleanly"
    );
    let ops = fake.operations();
    assert!(ops.iter().any(|op| op == "ackRunQueueItem"), "{ops:?}");
    assert!(!ops.iter().any(|op| op == "failRunQueueItem"), "{ops:?}");
}

#[test]
fn a_job_cut_short_by_shutdown_is_failed_visibly_not_left_claimed() {
    let agent = Scratch::new();
    let fake = FakeWandb::start(&[]);
    let config = agent.write_config(
        "queue_backend: wandb\nentity: team\nqueues: [default]\nshutdown_grace_seconds: 1\n",
    );
    fake.post(
        "/_fake/queues/team/default/items",
        r#"{"resource": "local-process", "project": "p", "overrides": {"entry_point": ["sleep", "30"]}}"#,
    );
    let mut child = spawn_until(&agent, &fake, &config, "ackRunQueueItem");
    std::thread::sleep(std::time::Duration::from_millis(500));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let ops = fake.operations();
    let fail = ops
        .iter()
        .position(|op| op == "failRunQueueItem")
        .unwrap_or_else(|| panic!("{ops:?}"));
    let killed = ops
        .iter()
        .rposition(|op| op == "updateLaunchAgent")
        .unwrap();
    assert!(
        fail < killed,
        "the item is failed before the agent says KILLED: {ops:?}"
    );
}

#[test]
fn a_job_artifact_created_by_the_real_client_is_fetched_and_run() {
    let venv = wandb_venv();
    let agent = Scratch::new();
    let fake = FakeWandb::start(&[]);
    let code = agent.path().join("code");
    std::fs::create_dir_all(code.join("lib")).unwrap();
    std::fs::write(
        code.join("train.py"),
        "import lib.util\nprint('trained from the job artifact', lib.util.VALUE)\n",
    )
    .unwrap();
    std::fs::write(code.join("lib/__init__.py"), "").unwrap();
    std::fs::write(code.join("lib/util.py"), "VALUE = 42\n").unwrap();
    let script = |name: &str, args: &[&str]| {
        let out = Command::new("bash")
            .arg(repo_root().join("tests/wandb_fake").join(name))
            .args([
                "--port",
                &fake.port.to_string(),
                "--api-key",
                API_KEY,
                "--entity",
                "team",
                "--project",
                "proj",
            ])
            .args(args)
            .env("LAUNCH_AGENT_WANDB_VENV", &venv)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    script(
        "create_job_with_wandb.sh",
        &[
            "--name",
            "trainer",
            "--code-dir",
            code.to_str().unwrap(),
            "--entry-point",
            "python train.py",
        ],
    );
    script(
        "submit_with_wandb.sh",
        &[
            "--queue",
            "default",
            "--job",
            "team/proj/trainer:latest",
            "--",
            "--resource",
            "local-process",
        ],
    );

    let log = run_until_idle(&agent, &fake, &config(&agent));
    let ops = fake.operations();
    assert!(
        !ops.iter().any(|op| op == "failRunQueueItem"),
        "{ops:?}\n{log}"
    );
    let outputs: Vec<String> = std::fs::read_dir(agent.state_dir().join("runs"))
        .unwrap()
        .flatten()
        .filter_map(|d| std::fs::read_to_string(d.path().join("output.log")).ok())
        .collect();
    assert!(
        outputs
            .iter()
            .any(|o| o.contains("trained from the job artifact 42")),
        "{outputs:?}\n{log}"
    );
    assert!(
        log.contains("trainer:v0"),
        "the log names the resolved version: {log}"
    );
}

#[test]
fn a_job_artifact_on_the_embedded_queue_fails_saying_it_needs_the_wandb_backend() {
    let agent = Scratch::new();
    let config = agent.write_config("queues: [default]\n");
    let id = agent.submit(
        "default",
        &serde_json::json!({"job": "team/proj/trainer:latest", "resource": "local-process"}),
    );
    agent.run_until_idle(&config);
    let item = agent.item(&id);
    assert_eq!(item["state"], "failed");
    assert_eq!(item["stage"], "agent");
    assert!(
        item["message"]
            .as_str()
            .unwrap()
            .contains("queue_backend: wandb"),
        "{item:#}"
    );
}

#[test]
fn a_plugin_warning_reaches_the_queue_item_as_a_wandb_warning() {
    let agent = Scratch::new();
    let fake = FakeWandb::start(&[]);
    let config = agent.write_config(&format!(
        "queue_backend: wandb\nentity: team\nqueues: [default]\nenvironment:\n  type: hostile\nplugins:\n  hostile:\n    path: {}\n",
        common::test_plugin("hostile").display()
    ));
    fake.post(
        "/_fake/queues/team/default/items",
        r#"{"resource": "local-process", "project": "p", "hostile": {"mode": "warn", "text": "quota nearly used up"}, "overrides": {"entry_point": ["true"]}}"#,
    );
    run_until_idle(&agent, &fake, &config);
    // The plugin's warning; the job (`true`) never reports a run to W&B,
    // which gets a warning of its own.
    let warnings: Vec<serde_json::Value> = fake
        .events()
        .into_iter()
        .filter(|e| e["operation"] == "updateRunQueueItemWarning")
        .map(|e| e["variables"].clone())
        .filter(|v| !v["message"].as_str().unwrap_or("").contains("wandb.init"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0]["message"]
            .as_str()
            .unwrap()
            .contains("quota nearly used up"),
        "{warnings:?}"
    );
    assert_eq!(warnings[0]["stage"], "agent");
}

#[test]
fn stop_polling_set_on_the_server_stops_the_agent() {
    let agent = Scratch::new();
    let fake = FakeWandb::start(&[]);
    let mut child = spawn_until(&agent, &fake, &config(&agent), "popFromRunQueue");
    let state = fake.control("GET", "/_fake/state", "");
    let id = state["agents"][0]["id"].as_str().unwrap_or_default();
    assert!(!id.is_empty(), "the agent registered");
    let quoted = id.replace('=', "%3D");
    fake.post(&format!("/_fake/agents/{quoted}/stop"), "{}");
    // The agent checks between polls; its idle wait is at most 30 s.
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "the agent did not stop polling"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(status.success());
    assert_eq!(
        fake.operations().last().map(String::as_str),
        Some("updateLaunchAgent"),
        "KILLED on the way out"
    );
}
