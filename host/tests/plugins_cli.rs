//! `launch-agent plugins list` and `plugins inspect`: what a user checks
//! before trusting a plugin.

mod common;
use common::Scratch;
use sha2::Digest;

fn sha256_of(path: &std::path::Path) -> String {
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn plugins_list_shows_name_kind_versions_digest_and_grants() {
    let agent = Scratch::new();
    let hostile = common::test_plugin("hostile");
    let config = agent.write_config(&format!(
        "environment:\n  type: hostile\nsecrets:\n  token: {{ env: SOME_VAR }}\nplugins:\n  hostile:\n    path: {}\n    grants:\n      hosts: [\"https://*.example.com\"]\n      env: [HOME]\n      secrets: [token]\n      dirs: [/tmp, {{ path: /var/tmp, write: true }}]\n    limits: {{ deadline_ms: 1234, memory_mb: 64 }}\n",
        hostile.display()
    ));
    let out = agent.run(&[
        "plugins",
        "list",
        "--config",
        config.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plugins: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = plugins
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["hostile", "noop"],
        "the environment and the default builder"
    );

    let p = &plugins[0];
    assert_eq!(p["kind"], "environment");
    assert_eq!(p["plugin_name"], "hostile");
    assert_eq!(p["version"], "0.1.0");
    assert_eq!(p["wit_version"], "0.2.0");
    assert_eq!(p["sha256"], sha256_of(&hostile));
    assert_eq!(p["hosts"], serde_json::json!(["https://*.example.com"]));
    assert_eq!(p["env"], serde_json::json!(["HOME"]));
    assert_eq!(p["secrets"], serde_json::json!(["token"]));
    assert_eq!(p["dirs"], serde_json::json!(["/tmp", "/var/tmp (rw)"]));
    assert_eq!(p["deadline_ms"], 1234);
    assert_eq!(p["timeout_ms"], 600_000, "the default timeout");
    assert_eq!(p["memory_mb"], 64);

    let noop = &plugins[1];
    assert_eq!(noop["kind"], "builder");
    assert_eq!(noop["plugin_name"], "builder-noop");
    assert_eq!(
        noop["hosts"],
        serde_json::json!([]),
        "bundled plugins get nothing by default"
    );

    let table = agent.run(&["plugins", "list", "--config", config.to_str().unwrap()]);
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(
        text.contains("hostile (environment plugin)") && text.contains("launch:plugin@0.2.0"),
        "{text}"
    );
}

#[test]
fn plugins_inspect_describes_a_file_and_refuses_a_bad_one() {
    let agent = Scratch::new();
    let noop = common::bundle_dir().join("builder-noop.wasm");
    let out = agent.run(&["plugins", "inspect", noop.to_str().unwrap(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plugins: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plugins[0]["kind"], "builder");
    assert_eq!(plugins[0]["sha256"], sha256_of(&noop));

    let future = common::test_plugin("future-wit");
    let out = agent.run(&["plugins", "inspect", future.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("launch:plugin@0.3.0") && stderr.contains("launch:plugin@0.2.0"),
        "{stderr}"
    );

    let not_wasm = agent.write("notes.wasm", "hello");
    let out = agent.run(&["plugins", "inspect", not_wasm.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid WebAssembly component"));
}

#[test]
fn the_noop_builder_fails_a_job_that_needs_a_build_at_stage_build() {
    let agent = Scratch::new();
    let config = agent.write_config("queues: [default]\nbuilder:\n  type: noop\n");
    let id = agent.submit(
        "default",
        &serde_json::json!({"resource": "local-container", "overrides": {"entry_point": ["true"]}}),
    );
    let out = agent.run(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--exit-when-idle",
    ]);
    assert!(out.status.success());
    let item = agent.item(&id);
    assert_eq!(item["state"], "failed", "{item:#}");
    assert_eq!(item["stage"], "build");
    let message = item["message"].as_str().unwrap();
    assert!(
        message.contains("builder-noop 0.1.0") && message.contains("docker_image"),
        "{message}"
    );
}

/// `plugins list --json` of an agent configured with `config_yaml`.
fn list_bundle(config_yaml: &str) -> Vec<serde_json::Value> {
    let agent = Scratch::new();
    let config = agent.write_config(config_yaml);
    let out = agent.run(&[
        "plugins",
        "list",
        "--config",
        config.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_bundled_docker_builder_gets_the_engine_the_registry_host_and_a_build_sized_deadline() {
    let plugins = list_bundle(
        "builder:\n  type: docker\nregistry:\n  type: oci\n  uri: 127.0.0.1:5000/team/launch\n",
    );
    let docker = plugins
        .iter()
        .find(|p| p["name"] == "docker")
        .expect("docker builder listed");
    assert_eq!(docker["kind"], "builder");
    assert_eq!(docker["docker"], true);
    assert_eq!(
        docker["deadline_ms"], 30_000,
        "its own code's running time keeps the default"
    );
    assert_eq!(
        docker["timeout_ms"], 3_600_000,
        "the wall-clock time of a build call covers the build and push"
    );
    assert_eq!(
        docker["hosts"],
        serde_json::json!([
            "https://127.0.0.1:5000",
            "http://127.0.0.1:5000",
            "https://pypi.org:443",
            "https://files.pythonhosted.org:443",
            "https://registry-1.docker.io:443",
            "https://auth.docker.io:443"
        ]),
        "the registry's, and what its generated Dockerfiles fetch (PyPI, Docker Hub)"
    );
    let oci = plugins
        .iter()
        .find(|p| p["name"] == "oci")
        .expect("oci registry listed");
    assert_eq!(
        oci["hosts"],
        serde_json::json!(["https://127.0.0.1:5000", "http://127.0.0.1:5000"])
    );
    assert_eq!(
        oci["secrets"],
        serde_json::json!([]),
        "no secret unless granted"
    );
}

#[test]
fn plugins_list_shows_what_each_bundled_plugin_imports_and_the_lean_ones_import_no_wasi_nor_an_unused_log()
 {
    let plugins = list_bundle(
        "environment:\n  type: local\nbuilder:\n  type: docker\nregistry:\n  type: oci\n  uri: 127.0.0.1:5000/team/launch\n",
    );
    let imports = |name: &str| -> (bool, Vec<String>) {
        let p = plugins
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} listed"));
        let list = p["imports"]
            .as_array()
            .expect("imports listed")
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        (p["uses_wasi"].as_bool().unwrap(), list)
    };
    for lean in ["local", "oci"] {
        let (uses_wasi, list) = imports(lean);
        assert!(!uses_wasi, "{lean}: {list:?}");
        assert!(
            list.iter().all(|i| i.starts_with("launch:plugin/")),
            "{lean}: {list:?}"
        );
    }
    // Neither lean plugin logs, so neither imports the log (a panic reaches
    // the host through the plugin's memory): environment-local is one core
    // module, the cheapest call there is.
    for lean in ["local", "oci"] {
        let list = imports(lean).1;
        assert!(
            !list.iter().any(|i| i.starts_with("launch:plugin/log@")),
            "{lean}: {list:?}"
        );
    }
    assert!(
        imports("oci")
            .1
            .iter()
            .any(|i| i.starts_with("launch:plugin/oci@"))
    );
    let (uses_wasi, list) = imports("docker");
    assert!(uses_wasi, "{list:?}");
    assert!(
        list.iter().any(|i| i.starts_with("wasi:filesystem/")),
        "{list:?}"
    );
    assert!(
        list.iter().any(|i| i.starts_with("launch:plugin/docker@")),
        "{list:?}"
    );
}

#[test]
fn without_room_for_the_instance_pool_plugins_still_load_and_run() {
    // A 16 GB address-space limit: the pool (many 4 GiB slots) cannot be
    // reserved, one instance at a time can.
    let agent = Scratch::new();
    let config = agent.write_config("queues: [default]\n");
    let id = agent.submit(
        "default",
        &common::shell_job("echo ran with on-demand allocation"),
    );
    let script = format!(
        "ulimit -v 16000000 && exec {} run --config {} --exit-when-idle",
        common::agent_bin().display(),
        config.display()
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .env("LAUNCH_AGENT_STATE_DIR", agent.state_dir())
        .env("LAUNCH_AGENT_PLUGIN_DIR", common::bundle_dir())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("using on-demand allocation"),
        "the fallback is logged: {log}"
    );
    assert_eq!(agent.item(&id)["state"], "finished");
}
