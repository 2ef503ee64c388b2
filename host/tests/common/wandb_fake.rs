//! The fake W&B server of `tests/wandb_fake/` (a protocol-faithful FAKE of
//! the W&B GraphQL API) and the venv with the real `wandb` client, as the
//! tests use them.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `tests/wandb_fake/` in the repository.
pub fn fake_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/wandb_fake")
}

/// The venv of `tests/wandb_fake/setup.sh` (`LAUNCH_AGENT_WANDB_VENV`, else
/// `~/.cache/launch-agent-wandb-venv`); panics when it has no `wandb`.
pub fn wandb_venv() -> PathBuf {
    let venv = std::env::var_os("LAUNCH_AGENT_WANDB_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            dirs::home_dir()
                .unwrap_or_default()
                .join(".cache/launch-agent-wandb-venv")
        });
    assert!(
        venv.join("bin/wandb").is_file(),
        "no wandb client in {}: run tests/wandb_fake/setup.sh (the test command does)",
        venv.display()
    );
    venv
}

/// A running fake W&B server on 127.0.0.1, killed (by its PID) when dropped.
pub struct FakeWandbServer {
    child: Child,
    /// Its port.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl FakeWandbServer {
    /// Starts `server.py` accepting `api_key`, with queue `entity/default`
    /// and the `extra` options.
    pub fn start(api_key: &str, entity: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port_file = dir.path().join("port");
        let child = Command::new("python3")
            .arg(fake_dir().join("server.py"))
            .arg("--port-file")
            .arg(&port_file)
            .args(["--host", "127.0.0.1", "--api-key", api_key])
            .args(["--queue", &format!("{entity}/default")])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs tests/wandb_fake/server.py");
        let mut server = FakeWandbServer {
            child,
            port: 0,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(text) = std::fs::read_to_string(&port_file)
                && let Ok(port) = text.trim().parse()
            {
                server.port = port;
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("the fake W&B server exited: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "the fake W&B server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its base URL (`WANDB_BASE_URL`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for FakeWandbServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
