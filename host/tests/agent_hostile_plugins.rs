//! A hostile plugin fails only its own job: the agent records the failure
//! with the plugin's name and version and serves the next job. Secrets stay
//! out of logs, queue records and runs.

mod common;
use common::{Scratch, shell_job};
use serde_json::json;

fn config(agent: &Scratch, extra: &str) -> std::path::PathBuf {
    agent.write_config(&format!(
        "queues: [default]\nenvironment:\n  type: hostile\nplugins:\n  hostile:\n    path: {}\n    limits: {{ deadline_ms: 300, memory_mb: 32 }}\n{extra}",
        common::test_plugin("hostile").display()
    ))
}

fn hostile_job(mode: serde_json::Value) -> serde_json::Value {
    let mut spec = shell_job("echo should not run");
    spec["hostile"] = mode;
    spec
}

#[test]
fn a_runaway_plugin_fails_its_job_and_the_agent_serves_the_next() {
    let agent = Scratch::new();
    let config = config(&agent, "");
    let spin = agent.submit("default", &hostile_job(json!({"mode": "spin"})));
    let bomb = agent.submit("default", &hostile_job(json!({"mode": "alloc"})));
    let crash = agent.submit("default", &hostile_job(json!({"mode": "panic"})));
    let good = agent.submit("default", &shell_job("echo fine"));

    agent.run_until_idle(&config);

    let item = agent.item(&spin);
    assert_eq!(item["state"], "failed", "{item:#}");
    assert_eq!(item["stage"], "agent");
    let message = item["message"].as_str().unwrap();
    assert!(
        message.contains("hostile 0.1.0") && message.contains("300 ms deadline"),
        "{message}"
    );

    let item = agent.item(&bomb);
    assert_eq!(item["state"], "failed", "{item:#}");
    assert!(
        item["message"]
            .as_str()
            .unwrap()
            .contains("memory cap of 32 MiB"),
        "{item:#}"
    );

    let item = agent.item(&crash);
    assert_eq!(item["state"], "failed", "{item:#}");
    assert!(
        item["message"]
            .as_str()
            .unwrap()
            .contains("hostile 0.1.0 crashed"),
        "{item:#}"
    );

    assert_eq!(agent.item(&good)["state"], "finished");
}

#[test]
fn a_plugin_of_an_unsupported_contract_stops_the_agent_at_start_naming_both_versions() {
    let agent = Scratch::new();
    let config = agent.write_config(&format!(
        "builder:\n  type: future\nplugins:\n  future:\n    path: {}\n",
        common::test_plugin("future-wit").display()
    ));
    let out = agent.run(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--exit-when-idle",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("launch:plugin@0.3.0") && stderr.contains("launch:plugin@0.2.0"),
        "{stderr}"
    );
}

#[test]
fn secrets_and_api_keys_appear_in_no_log_queue_record_or_run() {
    let secret = "pa55w0rd-7f3e9c1d";
    let api_key = "k".repeat(20) + "0123456789abcdefghij";
    let agent = Scratch::new();
    let config = config(
        &agent,
        "    grants:\n      secrets: [token]\nsecrets:\n  token: { env: AGENT_TEST_SECRET }\n",
    );
    let wrong = agent.submit(
        "default",
        &hostile_job(json!({"mode": "secret", "name": "token", "expect": "not-it"})),
    );
    let mut leaky = shell_job("echo secret=$AGENT_TEST_SECRET; echo key=$WANDB_API_KEY");
    leaky["_wandb_api_key"] = json!(api_key);
    let spec_file = agent.write("leaky.json", &leaky.to_string());
    let out = agent
        .cmd()
        .args(["submit", spec_file.to_str().unwrap()])
        .env("AGENT_TEST_SECRET", secret)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("_wandb_api_key"),
        "submit says it dropped the key"
    );
    let leaky_id = String::from_utf8(out.stdout).unwrap().trim().to_string();

    let out = agent
        .cmd()
        .args([
            "run",
            "--config",
            config.to_str().unwrap(),
            "--exit-when-idle",
            "-vv",
        ])
        .env("AGENT_TEST_SECRET", secret)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");

    let item = agent.item(&wrong);
    assert_eq!(item["state"], "failed");
    let message = item["message"].as_str().unwrap();
    assert!(
        !message.contains("not granted"),
        "the granted secret opened (its value just differs): {message}"
    );
    assert_eq!(agent.item(&leaky_id)["state"], "finished");

    let records = String::from_utf8(agent.run(&["queue", "list", "--json"]).stdout).unwrap();
    let table = String::from_utf8(agent.run(&["queue", "list"]).stdout).unwrap();
    let output = std::fs::read_to_string(
        agent
            .state_dir()
            .join("runs")
            .join(&leaky_id)
            .join("output.log"),
    )
    .unwrap();
    let mut agent_logs = String::new();
    for id in [&wrong, &leaky_id] {
        agent_logs +=
            &std::fs::read_to_string(agent.state_dir().join("runs").join(id).join("agent.log"))
                .unwrap();
    }
    for (what, text) in [
        ("agent log", &*log),
        ("queue records", &records),
        ("queue table", &table),
        ("job logs", &agent_logs),
        ("run output", &output),
    ] {
        assert!(!text.contains(secret), "the secret leaked into the {what}");
    }
    for (what, text) in [
        ("agent log", &*log),
        ("queue records", &records),
        ("job logs", &agent_logs),
    ] {
        assert!(
            !text.contains(&api_key),
            "the API key leaked into the {what}"
        );
    }
    assert!(
        output.contains("secret=\n"),
        "runs do not inherit env vars that back secrets: {output}"
    );
}

/// Issue 10, class 4: a granted secret, disguised (encoded, split across
/// lines, returned in `run-env`, stashed in a writable directory and said by
/// a later job), reaches no job log, warning, queue record or run.
#[test]
fn a_disguised_secret_reaches_no_log_queue_record_or_run() {
    let secret = "s3cr3t/Val+ue-9b2e71";
    let agent = Scratch::new();
    let stash = agent.path().join("stash");
    std::fs::create_dir_all(&stash).unwrap();
    let stashed = stash.join("secret.txt");
    let config = config(
        &agent,
        &format!(
            "    grants:\n      secrets: [token]\n      dirs: [{{ path: {}, write: true }}]\nsecrets:\n  token: {{ env: AGENT_TEST_SECRET }}\n",
            stash.display()
        ),
    );
    let mut ids = Vec::new();
    for encoding in [
        "base64",
        "base64url",
        "base64-inner",
        "hex",
        "HEX",
        "url",
        "reversed",
        "split",
    ] {
        let mut job =
            hostile_job(json!({"mode": "leak-encoded", "name": "token", "encoding": encoding}));
        job["overrides"]["entry_point"] = json!(["sh", "-c", "echo ran"]);
        ids.push((encoding, agent.submit("default", &job)));
    }
    let env_job = agent.submit("default", &{
        let mut job = hostile_job(json!({"mode": "leak-env", "name": "token"}));
        job["overrides"]["entry_point"] = json!(["sh", "-c", "echo leaked=$LEAKED"]);
        job
    });
    let stash_job = agent.submit(
        "default",
        &hostile_job(json!({"mode": "stash", "name": "token", "path": stashed})),
    );
    let later_job = agent.submit(
        "default",
        &hostile_job(json!({"mode": "say-file", "path": stashed})),
    );

    let out = agent
        .cmd()
        .args([
            "run",
            "--config",
            config.to_str().unwrap(),
            "--exit-when-idle",
        ])
        .env("AGENT_TEST_SECRET", secret)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(stashed.exists(), "the stash job wrote its file");

    let records = String::from_utf8(agent.run(&["queue", "list", "--json"]).stdout).unwrap();
    let table = String::from_utf8(agent.run(&["queue", "list"]).stdout).unwrap();
    let mut job_logs = String::new();
    let mut outputs = String::new();
    let all_ids = ids
        .iter()
        .map(|(_, id)| id)
        .chain([&env_job, &stash_job, &later_job]);
    for id in all_ids {
        let dir = agent.state_dir().join("runs").join(id);
        job_logs += &std::fs::read_to_string(dir.join("agent.log")).unwrap();
        outputs += &std::fs::read_to_string(dir.join("output.log")).unwrap_or_default();
    }
    let b64 = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let forms = [
        secret.to_string(),
        b64(secret),
        b64(&format!("user:{secret}:tail")),
        hex::encode(secret),
        hex::encode_upper(secret),
        secret.replace('/', "%2F").replace('+', "%2B"),
        secret.chars().rev().collect(),
        secret[..secret.len() / 2].to_string(),
        secret[secret.len() / 2..].to_string(),
    ];
    for (what, text) in [
        ("queue records", &records),
        ("queue table", &table),
        ("job logs", &job_logs),
        ("run output", &outputs),
    ] {
        for form in &forms {
            assert!(
                !text.contains(form.as_str()),
                "the secret ({form}) leaked into the {what}:\n{text}"
            );
        }
    }
    // The agent's own log (tracing) gets each line scrubbed of every form;
    // only the job's records are checked for a value split across lines.
    for form in &forms[..forms.len() - 2] {
        assert!(
            !log.contains(form.as_str()),
            "the secret ({form}) leaked into the agent log"
        );
    }
    assert!(
        job_logs.contains("the secret, as base64: <redacted>"),
        "{job_logs}"
    );
    assert!(job_logs.contains("holds <redacted>"), "{job_logs}");
    assert!(
        outputs.contains("leaked=<redacted>"),
        "a run-env value carrying a secret reaches the run redacted: {outputs}"
    );
    for (encoding, id) in &ids {
        assert_eq!(agent.item(id)["state"], "finished", "{encoding}");
    }
}

#[test]
fn a_flooding_plugin_fails_its_job_within_the_caps_and_the_agent_serves_the_next() {
    let agent = Scratch::new();
    // deadline 300 ms (the config above): logging is the plugin's own time.
    let config = config(&agent, "");
    let logs = agent.submit("default", &hostile_job(json!({"mode": "log-flood"})));
    let warns = agent.submit(
        "default",
        &hostile_job(json!({"mode": "log-flood", "level": "warn", "bytes": 100000})),
    );
    let mints = agent.submit("default", &hostile_job(json!({"mode": "mint-flood"})));
    let huge = agent.submit(
        "default",
        &hostile_job(json!({"mode": "huge-error", "bytes": 4 << 20})),
    );
    let good = agent.submit("default", &shell_job("echo fine"));
    let started = std::time::Instant::now();

    agent.run_until_idle(&config);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );

    let job_log = |id: &str| {
        std::fs::metadata(agent.state_dir().join("runs").join(id).join("agent.log"))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    for id in [&logs, &warns] {
        let item = agent.item(id);
        assert_eq!(item["state"], "failed", "{item:#}");
        assert!(
            item["message"]
                .as_str()
                .unwrap()
                .contains("300 ms deadline"),
            "{item:#}"
        );
        assert!(
            job_log(id) < 8 << 20,
            "job log of {id}: {} bytes",
            job_log(id)
        );
    }
    let item = agent.item(&mints);
    assert_eq!(item["state"], "failed", "{item:#}");
    assert!(
        item["message"]
            .as_str()
            .unwrap()
            .contains("minted more than"),
        "{item:#}"
    );
    let item = agent.item(&huge);
    assert_eq!(item["state"], "failed", "{item:#}");
    let message = item["message"].as_str().unwrap();
    assert!(message.len() < 16 * 1024, "{} bytes", message.len());
    assert!(message.contains("[cut: "), "{message:.200}");
    let records = agent.run(&["queue", "list", "--json"]).stdout;
    assert!(
        records.len() < 1 << 20,
        "queue list: {} bytes",
        records.len()
    );

    assert_eq!(agent.item(&good)["state"], "finished");
}
