//! The guest SDK stands alone: its copy of the contract is the contract,
//! and a plugin builds against `plugins/sdk` copied out of the repository.
//!
//! `plugins/sdk/wit/` is a copy of `wit/*.wit` (the published contract)
//! so that the SDK builds as a git or crates.io dependency;
//! `scripts/sync-sdk-wit.sh` refreshes it.
//!
//! The build test copies `plugins/sdk` alone into a temp dir, runs
//! `launch-agent plugins new` for each kind against that copy, builds the
//! three crates (one shared target dir under the test target dir, kept
//! between runs, so a rerun builds only the plugins; `--offline` with the
//! workspace's `Cargo.lock`, whose crates a built workspace has fetched),
//! loads each into the host, and runs a job in the environment plugin.

mod common;
use common::Scratch;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

fn wit_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wit"))
        .map(|path| {
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&path).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn the_sdk_carries_the_contract_byte_for_byte() {
    let root = repo_root();
    let contract = wit_files(&root.join("wit"));
    let copy = wit_files(&root.join("plugins/sdk/wit"));
    assert!(!contract.is_empty());
    let names =
        |files: &[(String, Vec<u8>)]| files.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&copy),
        names(&contract),
        "plugins/sdk/wit/ has other files than wit/: run scripts/sync-sdk-wit.sh"
    );
    for ((name, theirs), (_, ours)) in contract.iter().zip(&copy) {
        assert!(
            theirs == ours,
            "plugins/sdk/wit/{name} differs from wit/{name}: run scripts/sync-sdk-wit.sh"
        );
    }
}

#[test]
fn the_sdk_manifest_inherits_nothing_from_the_workspace() {
    let manifest = std::fs::read_to_string(repo_root().join("plugins/sdk/Cargo.toml")).unwrap();
    assert!(
        !manifest.contains("workspace = true") && !manifest.contains(".workspace"),
        "plugins/sdk/Cargo.toml inherits from the workspace, so it cannot build outside it:\n{manifest}"
    );
    let lib = std::fs::read_to_string(repo_root().join("plugins/sdk/src/lib.rs")).unwrap();
    assert!(
        !lib.contains("../"),
        "plugins/sdk/src/lib.rs reads a path outside the crate"
    );
}

/// Copies `from` (a directory) into `to`, recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// `cargo build --release` in `dir`, into the shared plugin target dir,
/// without the caller's build settings (a `RUSTFLAGS` would replace the
/// crate's stack-size flag); the `.wasm` file it made.
fn build_plugin(dir: &Path, crate_name: &str) -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-authoring");
    std::fs::copy(repo_root().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .args(["build", "--release", "--offline", "--quiet"])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", &target);
    for (key, _) in std::env::vars() {
        if key == "RUSTFLAGS"
            || key == "CARGO_ENCODED_RUSTFLAGS"
            || key.starts_with("CARGO_BUILD_")
            || key.starts_with("CARGO_TARGET_") && key != "CARGO_TARGET_DIR"
            || key.starts_with("CARGO_PROFILE_")
        {
            cargo.env_remove(key);
        }
    }
    let out = cargo.output().expect("run cargo");
    assert!(
        out.status.success(),
        "cargo build in {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let wasm = target
        .join("wasm32-wasip2/release")
        .join(format!("{crate_name}.wasm"));
    assert!(wasm.is_file(), "{} was not built", wasm.display());
    wasm
}

#[test]
fn plugins_new_builds_against_the_sdk_alone_loads_and_runs_a_job() {
    let agent = Scratch::new();
    // The SDK alone, out of the repository.
    let sdk = agent.path().join("sdk-alone/launch-plugin-sdk");
    copy_dir(&repo_root().join("plugins/sdk"), &sdk);

    let mut built = Vec::new();
    for kind in ["registry", "builder", "environment"] {
        let name = format!("my-{kind}");
        let dir = agent.path().join("plugins").join(&name);
        let out = agent
            .cmd()
            .args(["plugins", "new", "--kind", kind, &name, "--dir"])
            .arg(&dir)
            .arg("--sdk")
            .arg(&sdk)
            .output()
            .unwrap();
        common::assert_success(&out);
        let config = std::fs::read_to_string(dir.join(".cargo/config.toml")).unwrap();
        assert!(config.contains("target = \"wasm32-wasip2\""), "{config}");
        assert!(config.contains("-zstack-size=131072"), "{config}");
        let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
        for needle in [
            "cargo build --release",
            "grants",
            "plugins call",
            "cargo test",
        ] {
            assert!(readme.contains(needle), "{needle} missing from {readme}");
        }
        assert!(!readme.contains("{{"), "a placeholder is left: {readme}");
        let wasm = build_plugin(&dir, &format!("my_{kind}"));

        // Loaded by the host as its kind, under its own name.
        let out = agent
            .cmd()
            .args(["plugins", "inspect", "--json"])
            .arg(&wasm)
            .output()
            .unwrap();
        common::assert_success(&out);
        let described: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(described[0]["kind"], kind, "{described:#}");
        assert_eq!(described[0]["plugin_name"], name.as_str(), "{described:#}");
        assert_eq!(described[0]["wit_version"], "0.2.0", "{described:#}");
        built.push(wasm);
    }

    // A second `plugins new` into a non-empty dir is refused.
    let out = agent
        .cmd()
        .args(["plugins", "new", "--kind", "builder", "my-builder", "--dir"])
        .arg(agent.path().join("plugins/my-builder"))
        .arg("--sdk")
        .arg(&sdk)
        .output()
        .unwrap();
    assert!(
        common::refused(&out).contains("is not empty"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The environment plugin, as generated, in a job.
    let config = agent.write_config(&format!(
        "queues: [default]\nenvironment:\n  type: my-environment\n\
         plugins:\n  my-environment:\n    path: {}\n    config: {{ region: eu-west-1 }}\n",
        built[2].display()
    ));
    let out = agent
        .cmd()
        .args(["config", "check"])
        .arg(&config)
        .output()
        .unwrap();
    common::assert_success(&out);
    let out = agent
        .cmd()
        .args(["plugins", "call", "my-environment", "verify", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    common::assert_success(&out);
    let id = agent.submit(
        "default",
        &common::shell_job("echo \"job=$MY_ENVIRONMENT_JOB region=$MY_ENVIRONMENT_REGION\""),
    );
    agent.run_until_idle(&config);
    let item = agent.item(&id);
    assert_eq!(item["state"], "finished", "{item:#}");
    assert_eq!(
        agent.run_file(&id, "output.log"),
        format!("job={id} region=eu-west-1\n")
    );

    // All three, as generated, in one job: the builder builds the job's
    // code FROM the test base image and pushes it with the registry
    // plugin's login; the registry plugin then says the image exists, so
    // the same job submitted again skips its build.
    let s = common::docker::services();
    let registry_host = format!("\"http://{}\"", s.registry);
    let config = agent.write_config(&format!(
        "queues: [default]\nenvironment:\n  type: my-environment\n\
         builder:\n  type: my-builder\nregistry:\n  type: my-registry\n  uri: {registry}/sdk-template-job\n\
         secrets:\n  registry-password: {{ env: TEST_REGISTRY_PASSWORD }}\n\
         plugins:\n  my-environment:\n    path: {env}\n    config: {{ region: eu-west-1 }}\n\
         \x20 my-builder:\n    path: {builder}\n    config: {{ base: {base} }}\n\
         \x20   grants: {{ docker: true, hosts: [{registry_host}] }}\n\
         \x20 my-registry:\n    path: {reg}\n\
         \x20   config: {{ username: {user}, password-secret: registry-password, insecure: true }}\n\
         \x20   grants: {{ hosts: [{registry_host}], secrets: [registry-password] }}\n",
        registry = s.registry,
        env = built[2].display(),
        builder = built[1].display(),
        reg = built[0].display(),
        base = s.base_image,
        user = s.registry_user,
    ));
    let code = agent.path().join("code");
    std::fs::create_dir_all(&code).unwrap();
    std::fs::write(code.join("hello.txt"), "hello from the generated plugins\n").unwrap();
    let spec = serde_json::json!({
        "resource": "local-container",
        "project": "sdk-template",
        "uri": code.display().to_string(),
        "overrides": {"entry_point": ["sh", "-c", "cat /app/hello.txt"]},
    });
    let mut logs = Vec::new();
    for _ in 0..2 {
        let id = agent.submit("default", &spec);
        let out = agent
            .run_cmd(&config)
            .env("TEST_REGISTRY_PASSWORD", &s.registry_password)
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{log}");
        let item = agent.item(&id);
        let job_log = agent.run_file(&id, "agent.log");
        assert_eq!(item["state"], "finished", "{item:#}\n{job_log}\n{log}");
        assert_eq!(
            agent.run_file(&id, "output.log"),
            "hello from the generated plugins\n",
            "{job_log}"
        );
        assert!(!job_log.contains(&s.registry_password), "{job_log}");
        logs.push(job_log);
    }
    assert!(logs[0].contains("build: built"), "{}", logs[0]);
    assert!(logs[1].contains("build: skipped"), "{}", logs[1]);
}

/// The registry template, as generated, asks the test registry of
/// `scripts/services.sh` (basic auth, plain HTTP) through the SDK's
/// `http` module: a pushed image exists, another tag does not, and
/// without the `grants.hosts` entry the request is refused, naming it.
#[tokio::test]
async fn the_registry_template_asks_a_registry_over_http() {
    use common::docker::{push_base_image, services};
    let image = push_base_image("sdk-template", "v1").await;
    let s = services();
    let agent = Scratch::new();
    let sdk = agent.path().join("sdk-alone/launch-plugin-sdk");
    copy_dir(&repo_root().join("plugins/sdk"), &sdk);
    let dir = agent.path().join("my-registry");
    let out = agent
        .cmd()
        .args([
            "plugins",
            "new",
            "--kind",
            "registry",
            "my-registry",
            "--dir",
        ])
        .arg(&dir)
        .arg("--sdk")
        .arg(&sdk)
        .output()
        .unwrap();
    common::assert_success(&out);
    let wasm = build_plugin(&dir, "my_registry");

    let config = |hosts: &str| {
        agent.write_config(&format!(
            "registry:\n  type: my-registry\n  uri: {registry}/sdk-template\n\
             secrets:\n  registry-password: {{ env: TEST_REGISTRY_PASSWORD }}\n\
             plugins:\n  my-registry:\n    path: {wasm}\n\
             \x20   config: {{ username: {user}, password-secret: registry-password, insecure: true }}\n\
             \x20   grants:\n      hosts: [{hosts}]\n      secrets: [registry-password]\n",
            registry = s.registry,
            wasm = wasm.display(),
            user = s.registry_user,
        ))
    };
    let call = |config: &Path, image: &str| {
        let out = agent
            .cmd()
            .args([
                "plugins",
                "call",
                "my-registry",
                "image-exists",
                "--arg",
                image,
                "-c",
            ])
            .arg(config)
            .env("TEST_REGISTRY_PASSWORD", &s.registry_password)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success(), stdout)
    };

    let granted = config(&format!("\"http://{}\"", s.registry));
    let (ok, stdout) = call(&granted, &image);
    assert!(ok, "{stdout}");
    assert!(
        stdout.starts_with(&format!("my-registry image-exists: {image} exists\n")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "HTTP HEAD http://{}/v2/sdk-template/manifests/v1",
            s.registry
        )),
        "{stdout}"
    );
    let missing = image.replace(":v1", ":not-pushed");
    let (ok, stdout) = call(&granted, &missing);
    assert!(ok, "{stdout}");
    assert!(
        stdout.contains(&format!("{missing} does not exist")),
        "{stdout}"
    );

    let ungranted = config("");
    let (ok, stdout) = call(&ungranted, &image);
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains("my-registry image-exists failed"),
        "{stdout}"
    );
    assert!(stdout.contains("grants.hosts"), "{stdout}");
    assert!(!stdout.contains(&s.registry_password), "{stdout}");
}
