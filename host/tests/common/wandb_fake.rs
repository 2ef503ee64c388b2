//! The fake W&B server of `tests/wandb_fake/` (a protocol-faithful FAKE of
//! the W&B GraphQL API) and the venv with the real `wandb` client, as the
//! tests use them.
#![allow(dead_code)]

use launch_agent::queue::wandb::WandbSettings;
use launch_agent::wandb::{ApiKey, ApiSettings, RetryPolicy};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
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
        Self::start_with_queues(api_key, entity, &["default"], extra)
    }

    /// Like [`FakeWandbServer::start`], with `queues` of `entity` made
    /// (none: a project with no launch queue at all).
    pub fn start_with_queues(api_key: &str, entity: &str, queues: &[&str], extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port_file = dir.path().join("port");
        let child = Command::new("python3")
            .arg(fake_dir().join("server.py"))
            .arg("--port-file")
            .arg(&port_file)
            .args(["--host", "127.0.0.1", "--api-key", api_key])
            .args(
                queues
                    .iter()
                    .flat_map(|q| ["--queue".to_string(), format!("{entity}/{q}")]),
            )
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

    /// One HTTP/1.0 request without auth (a control endpoint under
    /// `/_fake/`, or a call meant to be refused); the status code and body.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .unwrap();
        stream.write_all(body).unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        let split = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("{method} {path}: {answer:?}"));
        let head = String::from_utf8_lossy(&answer[..split]).to_string();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, answer[split + 4..].to_vec())
    }

    /// A control endpoint's JSON answer; panics unless it is a 200.
    pub fn control(&self, method: &str, path: &str, body: &str) -> Value {
        let (status, answer) = self.request(method, path, body.as_bytes());
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(status, 200, "{method} {path}: {answer}");
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{method} {path}: {e}: {answer}"))
    }

    /// Every request the server recorded, in order.
    pub fn events(&self) -> Vec<Value> {
        match self.control("GET", "/_fake/events", "") {
            Value::Array(events) => events,
            other => panic!("events: {other}"),
        }
    }

    /// The GraphQL operations it received, in order.
    ///
    /// One request of several mutations (the agent's heartbeat riding along
    /// with a pop) counts as each of them, in order, by their root fields.
    pub fn operations(&self) -> Vec<String> {
        let mut operations = Vec::new();
        for event in self.events() {
            let fields = event["fields"].as_array().cloned().unwrap_or_default();
            if event["kind"] == "mutation" && fields.len() > 1 {
                operations.extend(fields.iter().filter_map(|f| f.as_str().map(str::to_string)));
            } else if let Some(operation) = event["operation"].as_str() {
                operations.push(operation.to_string());
            }
        }
        operations
    }

    /// Pushes `spec` to queue `entity/queue`, as the UI or `wandb launch`
    /// would; the item id.
    pub fn push(&self, entity: &str, queue: &str, spec: &Value) -> String {
        let answer = self.control(
            "POST",
            &format!("/_fake/queues/{entity}/{queue}/items"),
            &spec.to_string(),
        );
        answer["runQueueItemId"].as_str().unwrap().to_string()
    }

    /// The variables of every request of GraphQL `operation`, in order.
    pub fn variables(&self, operation: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["operation"] == operation)
            .map(|e| e["variables"].clone())
            .collect()
    }

    /// What the server holds: queues, items, runs, agents.
    pub fn state(&self) -> Value {
        self.control("GET", "/_fake/state", "")
    }

    /// The state of item `id` (`PENDING`, `CLAIMED`, `FAILED`, ...).
    pub fn item_state(&self, id: &str) -> String {
        let state = self.state();
        let item = state["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id)
            .unwrap_or_else(|| panic!("no item {id} in {state}"))
            .clone();
        item["state"].as_str().unwrap().to_string()
    }

    /// The settings of a [`WandbBackend`] client of this server, for
    /// `entity`'s queue `default`, with `api_key` and `retry`.
    ///
    /// [`WandbBackend`]: launch_agent::queue::wandb::WandbBackend
    pub fn backend_settings(
        &self,
        entity: &str,
        api_key: &str,
        retry: RetryPolicy,
    ) -> WandbSettings {
        let mut settings = WandbSettings::from_env(Some(entity.into()), vec!["default".into()]);
        settings.api = self.api_settings(api_key, retry);
        settings.hostname = "test-host".into();
        settings.agent_version = "launch-agent@test".into();
        settings.agent_config = json!({"entity": entity, "queues": ["default"]});
        settings
    }

    /// The settings of a W&B API client of this server, with `api_key` and
    /// `retry`.
    pub fn api_settings(&self, api_key: &str, retry: RetryPolicy) -> ApiSettings {
        let mut settings = ApiSettings::from_env();
        settings.base_url = self.url();
        settings.api_key = Some(ApiKey::new(api_key.to_string()));
        settings.retry = retry;
        settings.request_timeout = Duration::from_secs(10);
        settings
    }
}

impl Drop for FakeWandbServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
