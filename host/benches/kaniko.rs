//! The Kaniko path's figure, printed as a table: queue pop to the build Job
//! created, for code jobs built by the bundled builder-kaniko on the fake
//! cluster (a PVC build-context store, so no bucket is needed): from the
//! agent's "job claimed" line to the fake API server receiving the build
//! Job's `POST` (its request log's time; both clocks are this machine's).
//! What it covers: the plan, the registry check, the context's tar.gz into
//! the PVC, the docker config Secret filled by the agent, and the Job's
//! create through the Kubernetes capability.
//!
//! Each job has its own source, so each builds (the fake Kaniko executor
//! of `tests/kube_fake/kaniko.py` then builds it with the local engine,
//! which is not timed).
//!
//! Run: `scripts/services.sh start && scripts/services-kube.sh start &&
//! scripts/build-plugins.sh && cargo bench -p launch-agent --bench kaniko`
//! (`LAUNCH_AGENT_BENCH_JOBS`, default 5, jobs).

#[path = "../tests/common/docker.rs"]
#[allow(dead_code)]
mod docker_env;
#[path = "../tests/common/services_env.rs"]
#[allow(dead_code)]
mod services_env;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("bench path");
    exe.ancestors().nth(3).expect("target dir").to_path_buf()
}

/// What `scripts/services-kube.sh start` wrote.
fn kube_env() -> HashMap<String, String> {
    let path = services_env::path("LAUNCH_AGENT_KUBE_ENV", "launch-agent-kube.env");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}): run `scripts/services-kube.sh start` first",
            path.display()
        )
    });
    services_env::parse(&text)
}

/// A request to the fake API server (its CA and token from `kube`).
fn fake(kube: &HashMap<String, String>, method: &str, path: &str, body: &str) -> serde_json::Value {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--cacert", &kube["LAUNCH_AGENT_KUBE_CA"]])
        .args([
            "-H",
            &format!("Authorization: Bearer {}", kube["LAUNCH_AGENT_KUBE_TOKEN"]),
        ])
        .args(["-H", "Content-Type: application/json", "-X", method])
        .args(["--data", body])
        .arg(format!("{}{path}", kube["LAUNCH_AGENT_KUBE_URL"]))
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "{method} {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

fn timestamp(line: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let first = line.split_whitespace().next()?;
    chrono::DateTime::parse_from_rfc3339(first)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// Claim to build Job created, for `jobs` jobs.
fn pop_to_build_job(jobs: usize) -> Vec<Duration> {
    let s = docker_env::services();
    let kube = kube_env();
    let ns = format!("bench-kaniko-{}", std::process::id());
    fake(
        &kube,
        "POST",
        "/api/v1/namespaces",
        &format!("{{\"metadata\":{{\"name\":\"{ns}\"}}}}"),
    );
    let claim = "contexts";
    fake(
        &kube,
        "POST",
        &format!("/api/v1/namespaces/{ns}/persistentvolumeclaims"),
        &format!(
            "{{\"metadata\":{{\"name\":\"{claim}\"}},\"spec\":{{\"accessModes\":[\"ReadWriteMany\"],\"resources\":{{\"requests\":{{\"storage\":\"1Gi\"}}}}}}}}"
        ),
    );
    let mount = Path::new(&kube["LAUNCH_AGENT_KUBE_DIR"])
        .join("state/pvc")
        .join(&ns)
        .join(claim);
    std::fs::create_dir_all(&mount).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let state = scratch.path().join("state");
    let config = scratch.path().join("launch-config.yaml");
    std::fs::write(
        &config,
        format!(
            "queues: [default]\nmax_jobs: 1\nbuilder:\n  type: kaniko\nregistry:\n  type: oci\n  uri: {registry}/bench-kaniko-{pid}\n\
             secrets:\n  registry-password: {{ env: TEST_REGISTRY_PASSWORD }}\n\
             plugins:\n  oci:\n    config: {{ username: {user}, password-secret: registry-password }}\n    grants:\n      secrets: [registry-password]\n\
             \x20 kaniko:\n    config: {{ namespace: {ns}, pvc-name: {claim}, pvc-mount-path: \"{mount}\" }}\n",
            registry = s.registry,
            user = s.registry_user,
            pid = std::process::id(),
            mount = mount.display(),
        ),
    )
    .unwrap();
    let agent = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_launch-agent"));
        cmd.env("LAUNCH_AGENT_STATE_DIR", &state)
            .env("LAUNCH_AGENT_PLUGIN_DIR", target_dir().join("bundle"))
            .env("TEST_REGISTRY_PASSWORD", &s.registry_password)
            .env("KUBECONFIG", &kube["LAUNCH_AGENT_KUBECONFIG"])
            .env("LAUNCH_AGENT_LOG", "launch_agent=info");
        cmd
    };
    for i in 0..jobs {
        let code = scratch.path().join(format!("code-{i}"));
        std::fs::create_dir_all(&code).unwrap();
        std::fs::write(
            code.join("Dockerfile.wandb"),
            format!(
                "FROM {}\nRUN echo {i} > /n\nENTRYPOINT [\"true\"]\n",
                s.base_image
            ),
        )
        .unwrap();
        let spec = scratch.path().join(format!("job-{i}.json"));
        std::fs::write(
            &spec,
            format!(
                "{{\"resource\": \"kubernetes\", \"uri\": \"{}\", \"resource_args\": {{\"kubernetes\": {{\"namespace\": \"{ns}\"}}}}}}",
                code.display()
            ),
        )
        .unwrap();
        let out = agent()
            .args(["submit", spec.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = agent()
        .args([
            "run",
            "--config",
            config.to_str().unwrap(),
            "--exit-when-idle",
        ])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    let mut claimed = HashMap::new();
    for line in log.lines().filter(|l| l.contains("job claimed")) {
        if let (Some(item), Some(at)) = (
            line.split("item=")
                .nth(1)
                .and_then(|r| r.split_whitespace().next()),
            timestamp(line),
        ) {
            claimed.insert(item.trim_matches('"').to_string(), at);
        }
    }
    let requests = fake(&kube, "GET", "/fake/requests", "");
    let mut durations = Vec::new();
    for request in requests.as_array().into_iter().flatten() {
        let body = &request["body"];
        if request["method"] != "POST"
            || request["path"] != format!("/apis/batch/v1/namespaces/{ns}/jobs")
            || body["metadata"]["labels"]["launch-agent.build"].is_null()
        {
            continue;
        }
        let item = body["metadata"]["labels"]["launch-agent.item"]
            .as_str()
            .unwrap_or_default();
        let (Some(start), Some(at)) = (claimed.get(item), request["time"].as_f64()) else {
            continue;
        };
        let created = chrono::DateTime::from_timestamp_micros((at * 1e6) as i64).unwrap();
        durations.push((created - *start).to_std().unwrap_or_default());
    }
    assert_eq!(durations.len(), jobs, "one build Job per job:\n{log}");
    durations.sort();
    durations
}

fn main() {
    let jobs = std::env::var("LAUNCH_AGENT_BENCH_JOBS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5);
    let times = pop_to_build_job(jobs);
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    println!("| measure | p50 | max | jobs |");
    println!("|---|---|---|---|");
    println!(
        "| queue pop → Kaniko build Job created (PVC store, fake cluster) | {:.1} ms | {:.1} ms | {jobs} |",
        ms(&times[times.len() / 2]),
        ms(times.last().unwrap()),
    );
}
