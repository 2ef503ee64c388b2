//! Shared helpers of the host's integration tests: where the built plugins
//! are, a scratch agent (state dir + config) and the CLI.
#![allow(dead_code)]

pub mod auth_routing;
pub mod azure;
pub mod docker;
pub mod gcp;
pub mod http_fake;
pub mod kube;
pub mod moto;
pub mod port_server;
pub mod postgres;
pub mod services_env;
pub mod wandb_fake;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Appends every file under `dir` (recursively) to `out`, as lossy text.
pub fn push_all_text(dir: &Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            push_all_text(&path, out);
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
}

/// The cargo target dir the tests were built in (tests live in `<target>/debug/deps/`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors().nth(3).expect("target dir").to_path_buf()
}

/// The default bundle built by `scripts/build-plugins.sh`.
pub fn bundle_dir() -> PathBuf {
    let dir = target_dir().join("bundle");
    assert!(
        dir.join("environment-local.wasm").is_file(),
        "{} has no plugins: run scripts/build-plugins.sh first (the README's test command does)",
        dir.display()
    );
    dir
}

/// A test plugin built by `scripts/build-plugins.sh`.
pub fn test_plugin(name: &str) -> PathBuf {
    let path = target_dir()
        .join("test-plugins")
        .join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} missing: run scripts/build-plugins.sh first",
        path.display()
    );
    path
}

/// An HTTP client for a test's own requests. The host's TLS crypto
/// provider is installed first, as the agent does before its first client:
/// reqwest is built without one of its own, and panics without it.
pub fn http_client() -> reqwest::Client {
    launch_agent::clients::tls::install_crypto_provider();
    reqwest::Client::new()
}

/// The agent binary.
pub fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_launch-agent"))
}

/// A scratch agent: a temp dir holding its state dir and config.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    /// Everything the agent wrote that a user or another process can read:
    /// its output `out`, the queue's records (`queue list --json`) and every
    /// file of the state dir, as (lossy) text, for the tests that grep it
    /// for secrets.
    pub fn everything_written(&self, out: &Output) -> String {
        let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        text.push_str(&String::from_utf8_lossy(
            &self.run(&["queue", "list", "--json"]).stdout,
        ));
        push_all_text(&self.state_dir(), &mut text);
        text
    }
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("launch-config.yaml")
    }
    pub fn write_config(&self, yaml: &str) -> PathBuf {
        std::fs::write(self.config_path(), yaml).expect("write config");
        self.config_path()
    }
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write file");
        path
    }
    /// A `launch-agent` command with this state dir and the bundle.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(agent_bin());
        cmd.env("LAUNCH_AGENT_STATE_DIR", self.state_dir())
            .env("LAUNCH_AGENT_PLUGIN_DIR", bundle_dir())
            .env_remove("LAUNCH_AGENT_LOG");
        cmd
    }
    /// Runs the CLI with `args`, returning its output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run launch-agent")
    }
    /// The command `launch-agent run --config CONFIG --exit-when-idle`, to
    /// add flags, variables or a log file to.
    pub fn run_cmd(&self, config: &Path) -> Command {
        let mut cmd = self.cmd();
        cmd.args([
            "run",
            "--config",
            config.to_str().unwrap(),
            "--exit-when-idle",
        ]);
        cmd
    }
    /// Runs `launch-agent run --config CONFIG --exit-when-idle` to the end,
    /// however it ends.
    pub fn run_once(&self, config: &Path) -> Output {
        self.run_cmd(config).output().expect("run launch-agent")
    }
    /// Runs `launch-agent run --config CONFIG --exit-when-idle`; asserts it
    /// fails and returns its log (stderr).
    pub fn run_refused(&self, config: &Path) -> String {
        refused(&self.run_once(config))
    }
    /// The text of file `name` (`output.log`, `agent.log`) of item `id`'s
    /// run dir; empty when there is none (yet).
    pub fn run_file(&self, id: &str, name: &str) -> String {
        std::fs::read_to_string(self.state_dir().join("runs").join(id).join(name))
            .unwrap_or_default()
    }
    /// Runs `launch-agent run --config CONFIG --exit-when-idle` to the end;
    /// asserts it exits 0 and returns its log (stderr).
    pub fn run_until_idle(&self, config: &Path) -> String {
        let out = self.run_once(config);
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "agent failed: {log}");
        log
    }
    /// Starts `launch-agent run --config CONFIG` (plus `extra` args) in the
    /// background, its log discarded.
    pub fn spawn_agent(&self, config: &Path, extra: &[&str]) -> std::process::Child {
        self.cmd()
            .args(["run", "--config", config.to_str().unwrap()])
            .args(extra)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the agent")
    }
    /// Submits a JSON spec to `queue`; returns the item id.
    pub fn submit(&self, queue: &str, spec: &serde_json::Value) -> String {
        let file = self.path().join(format!("spec-{}.json", uuid_like()));
        std::fs::write(&file, spec.to_string()).expect("write spec");
        let out = self.run(&["submit", "--queue", queue, file.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "submit failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
    /// `queue list --json`, parsed.
    pub fn items(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["queue", "list", "--json"]);
        assert!(
            out.status.success(),
            "queue list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("queue list --json is JSON")
    }
    /// The item with `id`.
    pub fn item(&self, id: &str) -> serde_json::Value {
        self.items()
            .into_iter()
            .find(|i| i["id"] == id)
            .unwrap_or_else(|| panic!("item {id} is not listed"))
    }
    /// Waits (bounded) until `pred` holds for item `id`.
    pub fn wait_for_item(
        &self,
        id: &str,
        limit: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let item = self.item(id);
            if pred(&item) {
                return item;
            }
            assert!(
                start.elapsed() < limit,
                "item {id} never got there; last seen: {item:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Asserts a command exited 0, showing its stderr when it did not.
pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts a command failed; returns its stderr.
pub fn refused(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "it succeeded: {stderr}");
    stderr
}

/// The sha256 of the file at `path`, in hex.
pub fn sha256_of(path: &Path) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(
        std::fs::read(path).expect("read file"),
    ))
}

/// A local-process spec running `sh -c script`.
pub fn shell_job(script: &str) -> serde_json::Value {
    serde_json::json!({
        "resource": "local-process",
        "project": "tests",
        "entity": "team",
        "overrides": { "entry_point": ["sh", "-c", script] }
    })
}
