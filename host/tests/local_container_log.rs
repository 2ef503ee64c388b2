//! A local-container run's `output.log`: capped at `max_log_mb` like every
//! log of a run (issue 11), with the cut said in it, while the container
//! runs on to its own end. Needs the Docker engine and base image of
//! `scripts/services.sh`.

mod common;
use common::docker::services;
use serde_json::json;

#[test]
fn a_container_printing_past_the_cap_leaves_a_log_of_the_cap_and_its_exit_code() {
    let agent = common::Scratch::new();
    let config = agent.write_config("queues: [default]\nmax_log_mb: 1\n");
    // 4 MiB on stdout and stderr, then exit code 3: the container is not
    // held up at the cap, and its exit code is recorded.
    let script = "head -c 2097152 /dev/zero | tr '\\0' o; head -c 2097152 /dev/zero | tr '\\0' e >&2; exit 3";
    let id = agent.submit(
        "default",
        &json!({
            "resource": "local-container",
            "docker": {"docker_image": services().base_image},
            "overrides": {"entry_point": ["sh", "-c", script]},
        }),
    );
    let agent_log = agent.run_until_idle(&config);
    let item = agent.item(&id);
    assert_eq!(item["state"], "failed", "{item:#}\n{agent_log}");
    assert_eq!(item["exit_code"], 3, "{item:#}");
    let log = agent.run_file(&id, "output.log");
    let cap = 1 << 20;
    assert!(
        log.len() > cap && log[..cap].bytes().all(|b| b == b'o'),
        "the first MiB is the run's ({} bytes)",
        log.len()
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
