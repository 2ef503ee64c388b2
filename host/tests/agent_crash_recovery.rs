//! An agent killed with SIGKILL mid-job loses nothing: the next agent takes
//! the job back and brings it to a terminal state.

mod common;
use common::{Scratch, shell_job};
use std::time::Duration;

fn process_alive(pid: i32) -> bool {
    // Zombies count as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.split_whitespace().nth(2).is_none_or(|s| s != "Z"),
        Err(_) => false,
    }
}

#[test]
fn sigkill_mid_job_then_restart_finishes_the_job() {
    let agent = Scratch::new();
    let config = agent.write_config("queues: [default]\n");
    let marker = agent.path().join("runs.txt");
    let script = format!("echo started >> {}; sleep 2; echo done", marker.display());
    let id = agent.submit("default", &shell_job(&script));
    let other = agent.submit("default", &shell_job("true"));

    let mut first = agent.spawn_agent(&config, &[]);
    let running = agent.wait_for_item(&id, Duration::from_secs(20), |i| {
        i["state"] == "running" && !i["run_handle"].is_null()
    });
    assert_eq!(running["run_handle"]["runner"], "local-process");
    let run_pid: i32 = running["run_handle"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();

    // The run dies with its agent instead of going on unaccounted for.
    let start = std::time::Instant::now();
    while process_alive(run_pid) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "run {run_pid} outlived its agent"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        agent.item(&id)["state"],
        "running",
        "the dead agent could not record anything"
    );

    let out = agent.run(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--exit-when-idle",
    ]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("took back a job whose agent died"), "{log}");

    let item = agent.item(&id);
    assert_eq!(item["state"], "finished", "{item:#}");
    assert_eq!(item["attempts"], 2, "{item:#}");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap().lines().count(),
        2,
        "run again from the start"
    );
    assert_eq!(agent.item(&other)["state"], "finished");
    assert_eq!(agent.items().len(), 2, "nothing lost, nothing duplicated");
}

#[test]
fn a_job_whose_agents_keep_dying_fails_after_max_attempts() {
    let agent = Scratch::new();
    let config = agent.write_config("queues: [default]\nmax_attempts: 1\n");
    let id = agent.submit("default", &shell_job("sleep 30"));
    let mut first = agent.spawn_agent(&config, &[]);
    agent.wait_for_item(&id, Duration::from_secs(20), |i| i["state"] == "running");
    first.kill().unwrap();
    first.wait().unwrap();
    agent.run_until_idle(&config);
    let item = agent.item(&id);
    assert_eq!(item["state"], "failed", "{item:#}");
    assert_eq!(item["stage"], "agent");
    assert!(
        item["message"].as_str().unwrap().contains("abandoned"),
        "{item:#}"
    );
}
