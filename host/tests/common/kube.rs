//! The fake Kubernetes cluster of `scripts/services-kube.sh start`
//! (tests/kube_fake/server.py), as the tests see it: its kubeconfig, a
//! client, its request log, and a namespace per test.
//!
//! The script writes `KEY=VALUE` lines to `$LAUNCH_AGENT_KUBE_ENV` (default
//! `${TMPDIR:-/tmp}/launch-agent-kube.env`); a test that needs the fake
//! fails with a message saying to start it, never skips.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

/// What `scripts/services-kube.sh start` wrote.
#[derive(Clone, Debug)]
pub struct FakeCluster {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// Its kubeconfig (context `launch-agent-fake`).
    pub kubeconfig: PathBuf,
    /// Its CA certificate (PEM).
    pub ca: PathBuf,
    /// The bearer token it wants.
    pub token: String,
}

/// The env file the script writes.
pub fn env_file() -> PathBuf {
    super::services_env::path("LAUNCH_AGENT_KUBE_ENV", "launch-agent-kube.env")
}

/// The fake, read once; panics (with what to do) when it is not up.
pub fn fake() -> &'static FakeCluster {
    static FAKE: OnceLock<FakeCluster> = OnceLock::new();
    FAKE.get_or_init(|| {
        let path = env_file();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read {} ({e}): these tests need the fake Kubernetes cluster; \
                 run `scripts/services.sh start && scripts/services-kube.sh start` first (scripts/test.sh does)",
                path.display()
            )
        });
        let values: HashMap<&str, &str> = text
            .lines()
            .filter_map(|line| line.split_once('='))
            .collect();
        let get = |key: &str| {
            values
                .get(key)
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| {
                    panic!("{} has no {key}: run `scripts/services-kube.sh start` again", path.display())
                })
                .to_string()
        };
        FakeCluster {
            url: get("LAUNCH_AGENT_KUBE_URL"),
            kubeconfig: PathBuf::from(get("LAUNCH_AGENT_KUBECONFIG")),
            ca: PathBuf::from(get("LAUNCH_AGENT_KUBE_CA")),
            token: get("LAUNCH_AGENT_KUBE_TOKEN"),
        }
    })
}

/// A client of the fake, through its kubeconfig (as the agent makes one).
pub async fn client() -> kube::Client {
    let fake = fake();
    launch_agent::clients::tls::install_crypto_provider();
    let kubeconfig = kube::config::Kubeconfig::read_from(&fake.kubeconfig)
        .unwrap_or_else(|e| panic!("{e}: run `scripts/services-kube.sh start` first"));
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("the fake's kubeconfig");
    kube::Client::try_from(config).expect("a client of the fake")
}

/// A fresh namespace for one test.
pub async fn namespace(client: &kube::Client, test: &str) -> String {
    let name = format!(
        "t-{}-{}",
        test.replace('_', "-").chars().take(30).collect::<String>(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    api.create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
    name
}

/// A blocking HTTPS request to the fake's test hooks (`/fake/...`).
pub fn hook(method: &str, path: &str) -> serde_json::Value {
    let fake = fake();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(&fake.ca)
        .args(["-X", method, &format!("{}{path}", fake.url)])
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "{method} {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the fake answers JSON")
}

/// Every request the fake received so far.
pub fn requests() -> Vec<serde_json::Value> {
    hook("GET", "/fake/requests")
        .as_array()
        .cloned()
        .unwrap_or_default()
}
