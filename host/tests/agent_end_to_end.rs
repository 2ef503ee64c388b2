//! The agent, end to end through its command line: submit, run, list.

mod common;
use common::{Scratch, shell_job};
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
