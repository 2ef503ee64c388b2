//! A local-process run's `output.log`: capped at `max_log_mb` like every
//! log of a run (issue 11, class 2), in the order the run wrote it, and
//! never holding the run's outcome back.

mod common;
use common::Scratch;
use std::time::{Duration, Instant};

#[test]
fn output_far_past_the_cap_leaves_a_log_of_the_cap_and_the_exit_code() {
    let agent = Scratch::new();
    let config = agent.write_config("queues: [default]\nmax_log_mb: 1\n");
    // 20 MiB on stdout and stderr, then exit code 3.
    let id = agent.submit(
        "default",
        &common::shell_job(
            "head -c 10485760 /dev/zero | tr '\\0' o; head -c 10485760 /dev/zero | tr '\\0' e >&2; exit 3",
        ),
    );
    agent.run_until_idle(&config);
    let item = agent.item(&id);
    assert_eq!(item["state"], "failed", "{item:#}");
    assert_eq!(item["exit_code"], 3, "{item:#}");
    let log = agent.run_file(&id, "output.log");
    let cap = 1 << 20;
    assert!(
        log.len() > cap && log[..cap].bytes().all(|b| b == b'o'),
        "the first MiB is the run's"
    );
    let rest = &log[cap..];
    assert!(
        rest.starts_with(
            "\n[launch-agent] this log was cut here: it reached its limit of 1048576 bytes"
        ),
        "{rest}"
    );
    assert!(rest.trim_end().ends_with("(the run goes on)"), "{rest}");
    assert!(log.len() < cap + 200, "{} bytes", log.len());
}

#[test]
fn stdout_and_stderr_keep_the_order_they_were_written_in() {
    let agent = Scratch::new();
    let config = agent.write_config("queues: [default]\n");
    let id = agent.submit(
        "default",
        &common::shell_job("for i in 1 2 3 4 5 6 7 8 9 10; do echo out$i; echo err$i >&2; done"),
    );
    agent.run_until_idle(&config);
    assert_eq!(agent.item(&id)["state"], "finished");
    let log = agent.run_file(&id, "output.log");
    let expected: String = (1..=10).map(|i| format!("out{i}\nerr{i}\n")).collect();
    assert_eq!(log, expected);
}

#[test]
fn a_process_left_holding_the_output_does_not_hold_the_outcome_back() {
    let agent = Scratch::new();
    let config = agent.write_config("queues: [default]\n");
    // The background sleep keeps the output open after the run exits.
    let id = agent.submit(
        "default",
        &common::shell_job("echo before; sleep 60 & echo after; exit 0"),
    );
    let started = Instant::now();
    agent.run_until_idle(&config);
    let took = started.elapsed();
    assert_eq!(agent.item(&id)["state"], "finished");
    assert!(took < Duration::from_secs(40), "took {took:?}");
    let log = agent.run_file(&id, "output.log");
    assert_eq!(log, "before\nafter\n");
}

#[test]
fn a_stopped_run_keeps_what_it_wrote_on_its_way_out() {
    let agent = Scratch::new();
    let config = agent.write_config("queues: [default]\nstopped_run_timeout: 10\n");
    let id = agent.submit(
        "default",
        &common::shell_job(
            "trap 'echo stopping; exit 0' TERM; echo started; while true; do sleep 0.1; done",
        ),
    );
    let mut child = agent.spawn_agent(&config, &[]);
    agent.wait_for_item(&id, Duration::from_secs(60), |item| {
        item["state"] == "running" && agent.run_file(&id, "output.log").starts_with("started\n")
    });
    common::assert_success(&agent.run(&["queue", "stop", &id]));
    agent.wait_for_item(&id, Duration::from_secs(60), |item| {
        item["state"] == "stopped"
    });
    // SAFETY: kill(2) on the agent we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let log = agent.run_file(&id, "output.log");
    // (The shell may also say its `sleep` was terminated.)
    assert!(
        log.starts_with("started\n") && log.ends_with("stopping\n"),
        "{log:?}"
    );
}
