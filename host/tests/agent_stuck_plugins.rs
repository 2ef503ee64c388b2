//! A plugin stuck in a call cannot stall the agent: leases are renewed,
//! signals are heard and the last one is final while plugin calls hold
//! every worker of the runtime the jobs run on.
//!
//! The hostile test plugin's `spin` mode loops until its deadline; its lean
//! build imports nothing that waits, so each call holds a worker thread for
//! the whole deadline. The agent runs with as many workers as there are
//! spinning jobs (`TOKIO_WORKER_THREADS`).

mod common;
use common::{Scratch, shell_job};
use serde_json::json;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Workers of the agent's main runtime, and spinning jobs to hold them.
const WORKERS: usize = 2;

/// The tests here take turns: each keeps cores busy on purpose.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn take_turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn config(agent: &Scratch, deadline_ms: u64, extra: &str) -> std::path::PathBuf {
    agent.write_config(&format!(
        "queues: [default]\nmax_jobs: 4\nlease_seconds: 3\nenvironment:\n  type: hostile\nplugins:\n  hostile:\n    path: {}\n    limits: {{ deadline_ms: {deadline_ms}, memory_mb: 32 }}\n{extra}",
        common::test_plugin("hostile-lean").display()
    ))
}

fn spin_job() -> serde_json::Value {
    let mut spec = shell_job("echo should not run");
    spec["hostile"] = json!({"mode": "spin"});
    spec
}

/// An agent, killed when the test lets go of it.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(agent: &Scratch, config: &std::path::Path) -> Agent {
    Agent(
        agent
            .cmd()
            .args(["run", "--config", config.to_str().unwrap()])
            .env("TOKIO_WORKER_THREADS", WORKERS.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn lease_of(agent: &Scratch, id: &str) -> String {
    agent.item(id)["lease_expires_at"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn plugins_spinning_on_every_worker_cannot_stop_lease_renewals() {
    let _turn = take_turn();
    let agent = Scratch::new();
    let config = config(&agent, 9000, "");
    let watched = agent.submit("default", &shell_job("sleep 15"));
    let child = spawn(&agent, &config);
    agent.wait_for_item(&watched, Duration::from_secs(20), |i| {
        i["state"] == "running"
    });
    let spinners: Vec<String> = (0..WORKERS)
        .map(|_| agent.submit("default", &spin_job()))
        .collect();
    for id in &spinners {
        agent.wait_for_item(id, Duration::from_secs(10), |i| i["state"] == "claimed");
    }
    // The spinners hold every worker for 9 s; a 3 s lease is renewed every
    // second, so in 6 s it must move several times and never lapse (go 3 s
    // without a renewal).
    let start = Instant::now();
    let mut last = lease_of(&agent, &watched);
    let mut last_change = Instant::now();
    let mut changes = 0;
    let mut longest = Duration::ZERO;
    while start.elapsed() < Duration::from_secs(6) {
        std::thread::sleep(Duration::from_millis(200));
        let now = lease_of(&agent, &watched);
        if now != last {
            changes += 1;
            longest = longest.max(last_change.elapsed());
            last_change = Instant::now();
            last = now;
        }
    }
    longest = longest.max(last_change.elapsed());
    assert!(
        changes >= 3 && longest < Duration::from_millis(2900),
        "the lease was renewed {changes} times in 6 s, at most {longest:?} apart"
    );
    for id in &spinners {
        assert_eq!(agent.item(id)["state"], "claimed", "still spinning");
    }
    assert_eq!(agent.item(&watched)["state"], "running");
    drop(child);
}

#[test]
fn signals_are_heard_and_the_last_is_final_while_plugins_spin() {
    let _turn = take_turn();
    let agent = Scratch::new();
    let config = config(
        &agent,
        20_000,
        "shutdown_grace_seconds: 30\nstopped_run_timeout: 30\n",
    );
    let stubborn = agent.submit("default", &shell_job("trap '' TERM; sleep 60"));
    let mut child = spawn(&agent, &config);
    let child = &mut child.0;
    let running = agent.wait_for_item(&stubborn, Duration::from_secs(20), |i| {
        i["state"] == "running" && !i["run_handle"].is_null()
    });
    let pgid: i32 = running["run_handle"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let spinners: Vec<String> = (0..WORKERS)
        .map(|_| agent.submit("default", &spin_job()))
        .collect();
    for id in &spinners {
        agent.wait_for_item(id, Duration::from_secs(10), |i| i["state"] == "claimed");
    }
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    for _ in 0..3 {
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        std::thread::sleep(Duration::from_millis(300));
    }
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(12) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "the third signal did not end the agent within 12 s (plugins spin for 20 s, runs get 30 s)"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    // The run was killed with its whole group, and every job handed back.
    let start = Instant::now();
    while group_alive(pgid) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the stubborn run's process group outlived the final signal"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for id in spinners.iter().chain([&stubborn]) {
        let item = agent.item(id);
        assert_eq!(item["state"], "queued", "handed back: {item:#}");
        assert_eq!(item["attempts"], 0, "a hand-back is no attempt: {item:#}");
    }
}

/// Whether a live (not zombie) process of group `pgid` is left.
fn group_alive(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // `pid (comm) state ppid pgrp ...`, counted from the last `)`.
        let Some(after) = stat.rfind(')').map(|at| &stat[at + 1..]) else {
            return false;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
    })
}
