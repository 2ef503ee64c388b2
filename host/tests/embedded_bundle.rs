//! The default bundle is embedded in the agent: a `launch-agent` runs the
//! examples with no plugin dir and nothing else built, a plugin dir
//! overrides the embedded plugins one by one, and `plugins list` says where
//! each plugin came from.

mod common;
use common::Scratch;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (the examples are there).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `bin` with `scratch`'s state dir and no plugin dir at all.
fn without_plugin_dir(bin: &Path, scratch: &Scratch) -> Command {
    let mut cmd = Command::new(bin);
    cmd.current_dir(scratch.path())
        .env("LAUNCH_AGENT_STATE_DIR", scratch.state_dir())
        .env_remove("LAUNCH_AGENT_PLUGIN_DIR")
        .env_remove("LAUNCH_AGENT_LOG");
    cmd
}

/// Submits the three example jobs with `bin`, runs `bin run --config
/// examples/launch-config.yaml --exit-when-idle` with no plugin dir, and
/// asserts the jobs ended as the quick start says (two finish, `03-fails`
/// fails at stage `run` with exit code 3) and that every plugin loaded was
/// the embedded one.
fn runs_the_examples_with_no_plugin_dir(bin: &Path) {
    let scratch = Scratch::new();
    let root = workspace_root();
    let config = root.join("examples/launch-config.yaml");
    let mut ids = Vec::new();
    for job in ["01-hello", "02-train", "03-fails"] {
        let spec = root.join(format!("examples/jobs/{job}.json"));
        let out = without_plugin_dir(bin, &scratch)
            .args(["submit", "--queue", "default"])
            .arg(&spec)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "submit {job}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ids.push(String::from_utf8(out.stdout).unwrap().trim().to_string());
    }

    let out = without_plugin_dir(bin, &scratch)
        .args(["plugins", "list", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    common::assert_success(&out);
    let plugins: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plugins.len(), 2, "{plugins:#?}");
    for p in &plugins {
        assert_eq!(p["origin"], "embedded", "{p:#}");
    }

    let out = without_plugin_dir(bin, &scratch)
        .args(["run", "--exit-when-idle", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");

    let out = without_plugin_dir(bin, &scratch)
        .args(["queue", "list", "--json"])
        .output()
        .unwrap();
    let items: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let ended = |id: &str| {
        let item = items.iter().find(|i| i["id"] == id).expect("listed");
        (
            item["state"].as_str().unwrap_or_default().to_string(),
            item["stage"].as_str().map(str::to_string),
            item["exit_code"].as_i64(),
        )
    };
    assert_eq!(ended(&ids[0]).0, "finished", "{items:#?}\n{log}");
    assert_eq!(ended(&ids[1]).0, "finished", "{items:#?}\n{log}");
    assert_eq!(
        ended(&ids[2]),
        ("failed".to_string(), Some("run".to_string()), Some(3)),
        "{items:#?}\n{log}"
    );
}

#[test]
fn with_no_plugin_dir_the_agent_runs_the_examples_on_its_embedded_bundle() {
    runs_the_examples_with_no_plugin_dir(&common::agent_bin());
}

/// `cargo install --path host` gives one self-contained agent: installed
/// into a temporary root, away from the target dir and any plugin file, it
/// runs the examples on its embedded bundle.
///
/// It installs the debug build from this test's own (warm) target dir, so
/// it costs no second build of the agent; the build it would do from a
/// clean clone is the same one `cargo build` does, `host/build.rs`
/// included. The variables `cargo test` sets for a test are removed first:
/// some build scripts (ring's) watch them, and would rebuild half the tree.
#[test]
fn cargo_install_gives_an_agent_that_runs_the_examples_by_itself() {
    let root = tempfile::tempdir().unwrap();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut install = Command::new(cargo);
    install
        .current_dir(workspace_root())
        .args([
            "install", "--debug", "--locked", "--quiet", "--path", "host",
        ])
        .arg("--root")
        .arg(root.path())
        .arg("--target-dir")
        .arg(common::target_dir());
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_by_cargo_test = name == "CARGO"
            || name == "OUT_DIR"
            || [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .iter()
            .any(|prefix| name.starts_with(prefix));
        if set_by_cargo_test {
            install.env_remove(&*name);
        }
    }
    let out = install.output().unwrap();
    assert!(
        out.status.success(),
        "cargo install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let installed = root.path().join("bin/launch-agent");
    let entries: Vec<_> = std::fs::read_dir(root.path().join("bin"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["launch-agent"], "one file is installed");
    runs_the_examples_with_no_plugin_dir(&installed);
}

#[test]
fn a_plugin_dir_overrides_the_embedded_bundle_one_plugin_at_a_time() {
    let agent = Scratch::new();
    // A plugin dir holding only `builder-noop.wasm` (here the hostile test
    // builder, so that it cannot be mistaken for the embedded one).
    let dir = agent.path().join("plugins");
    std::fs::create_dir(&dir).unwrap();
    let replacement = dir.join("builder-noop.wasm");
    std::fs::copy(common::test_plugin("hostile-builder"), &replacement).unwrap();
    let config = agent.write_config(
        "environment: { type: local }\nbuilder: { type: noop }\nplugins:\n  mine:\n    path: mine.wasm\n",
    );
    std::fs::copy(
        common::bundle_dir().join("registry-oci.wasm"),
        agent.path().join("mine.wasm"),
    )
    .unwrap();
    let out = agent
        .cmd()
        .env_remove("LAUNCH_AGENT_PLUGIN_DIR")
        .args(["plugins", "list", "--json", "--plugin-dir"])
        .arg(&dir)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    common::assert_success(&out);
    let plugins: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let by_name = |name: &str| {
        plugins
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} listed: {plugins:#?}"))
    };

    let noop = by_name("noop");
    assert_eq!(noop["origin"], "plugin-dir");
    assert_eq!(noop["path"], replacement.to_str().unwrap());
    assert_eq!(noop["sha256"], common::sha256_of(&replacement));
    assert_ne!(
        noop["plugin_name"], "builder-noop",
        "the file in the dir, not the embedded one"
    );

    let local = by_name("local");
    assert_eq!(local["origin"], "embedded");
    assert_eq!(local["path"], "environment-local.wasm");
    assert_eq!(local["plugin_name"], "environment-local");
    assert_eq!(
        local["sha256"],
        common::sha256_of(&common::bundle_dir().join("environment-local.wasm")),
        "the embedded bundle is the one scripts/build-plugins.sh builds"
    );

    let mine = by_name("mine");
    assert_eq!(mine["origin"], "path");
    assert_eq!(
        mine["sha256"],
        common::sha256_of(&agent.path().join("mine.wasm"))
    );

    // The table says the same.
    let out = agent
        .cmd()
        .env_remove("LAUNCH_AGENT_PLUGIN_DIR")
        .args(["plugins", "list", "--plugin-dir"])
        .arg(&dir)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("origin:      embedded in the agent")
            && text.contains("origin:      plugin dir")
            && text.contains("origin:      path"),
        "{text}"
    );
}

#[test]
fn a_plugin_dir_that_does_not_exist_is_an_error_naming_it() {
    let agent = Scratch::new();
    let config = agent.write_config("queues: [default]\n");
    let missing = agent.path().join("no-such-dir");
    let out = agent
        .cmd()
        .env("LAUNCH_AGENT_PLUGIN_DIR", &missing)
        .args(["plugins", "list", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = common::refused(&out);
    assert!(
        stderr.contains(missing.to_str().unwrap()) && stderr.contains("not a directory"),
        "{stderr}"
    );
}

#[test]
fn a_sha256_pin_is_checked_against_the_embedded_plugin() {
    let agent = Scratch::new();
    let config = agent.write_config(
        "builder: { type: noop }\nplugins:\n  noop:\n    sha256: 0000000000000000000000000000000000000000000000000000000000000000\n",
    );
    let out = agent
        .cmd()
        .env_remove("LAUNCH_AGENT_PLUGIN_DIR")
        .args(["plugins", "list", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = common::refused(&out);
    assert!(
        stderr.contains("embedded builder-noop.wasm") && stderr.contains("sha256 mismatch"),
        "{stderr}"
    );
}

/// The bundle ships precompiled (`host/build.rs`): a first start with a
/// fresh state dir compiles nothing, and the second loads the same way.
#[test]
fn embedded_plugins_load_their_build_time_code_from_a_fresh_state_dir() {
    let agent = Scratch::new();
    let config = agent.write_config("environment: { type: local }\nbuilder: { type: noop }\n");
    let load = || {
        let out = agent
            .cmd()
            .env_remove("LAUNCH_AGENT_PLUGIN_DIR")
            .env("LAUNCH_AGENT_LOG", "launch_agent=debug")
            .args(["plugins", "list", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success());
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        log.lines()
            .filter(|l| l.contains("plugin loaded"))
            .map(|l| {
                l.split("code=")
                    .nth(1)
                    .unwrap_or("")
                    .trim_matches('"')
                    .split('"')
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .collect::<Vec<String>>()
    };
    let precompiled = vec!["precompiled at build time".to_string(); 2];
    assert_eq!(load(), precompiled, "a fresh state dir compiles nothing");
    assert_eq!(load(), precompiled, "nor does the next start");
}
