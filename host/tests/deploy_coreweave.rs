//! `launch-agent deploy coreweave`: what it renders, checked with
//! `kubernetes-validate --strict` for Kubernetes 1.30 and 1.33; applied to
//! the FAKE cluster of `tests/kube_fake/` (its Deployment controller in
//! `deployments.py`) and removed by `--delete`, exactly; and, end to end,
//! the agent's own image (`scripts/build-agent-image.sh --profile dev`)
//! started there by the Deployment, serving the fake W&B server's queue and
//! running a `resource: kubernetes` job in a target namespace.
//!
//! The end-to-end test starts a fake cluster of its own whose pods run on
//! the host's network (`KUBE_FAKE_POD_NETWORK=host`), so that the agent's
//! pod reaches the fake API server (in-cluster config: the service-account
//! token the fake mounts, `KUBERNETES_SERVICE_HOST/PORT`) and the fake W&B
//! server, both on 127.0.0.1.

mod common;
use common::Scratch;
use common::docker::services;
use common::kube::namespace;
use common::wandb_fake::FakeWandbServer;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The ownership labels' selector of deployment `name` in `namespace`.
fn selector(name: &str, namespace: &str) -> String {
    format!(
        "app.kubernetes.io/managed-by=launch-agent,launch-agent.deploy/name={name},launch-agent.deploy/namespace={namespace}"
    )
}

/// Every kind a deployment holds, and the ones its agent makes.
const KINDS: &[(&str, &str, &str, &str)] = &[
    ("", "v1", "Namespace", "namespaces"),
    ("", "v1", "ServiceAccount", "serviceaccounts"),
    ("", "v1", "ConfigMap", "configmaps"),
    ("", "v1", "Secret", "secrets"),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
    ("", "v1", "Pod", "pods"),
    ("rbac.authorization.k8s.io", "v1", "Role", "roles"),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
    ),
    ("apps", "v1", "Deployment", "deployments"),
    (
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
    ),
    ("batch", "v1", "Job", "jobs"),
];

fn api(client: &kube::Client, kind: &(&str, &str, &str, &str)) -> Api<DynamicObject> {
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(kind.0, kind.1, kind.2), kind.3);
    Api::all_with(client.clone(), &resource)
}

/// `Kind namespace/name` of every object of every kind matching `labels`.
async fn labelled(client: &kube::Client, labels: &str) -> Vec<String> {
    let mut found = Vec::new();
    for kind in KINDS {
        let list = api(client, kind)
            .list(&ListParams::default().labels(labels))
            .await
            .unwrap_or_else(|e| panic!("listing {}: {e}", kind.3));
        for o in list.items {
            if o.metadata.deletion_timestamp.is_some() {
                continue;
            }
            found.push(format!(
                "{} {}/{}",
                kind.2,
                o.metadata.namespace.unwrap_or_default(),
                o.metadata.name.unwrap_or_default()
            ));
        }
    }
    found.sort();
    found
}

/// The kube venv's files (`scripts/services-kube.sh start` wrote them).
fn kube_env() -> std::collections::HashMap<String, String> {
    let path = common::kube::env_file();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}): run `scripts/services.sh start && scripts/services-kube.sh start` first",
            path.display()
        )
    });
    common::services_env::parse(&text)
}

/// `kubernetes-validate` of the kube venv.
fn kubernetes_validate() -> PathBuf {
    let python = PathBuf::from(&kube_env()["LAUNCH_AGENT_KUBE_PYTHON"]);
    python.with_file_name("kubernetes-validate")
}

fn deploy(agent: &Scratch, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = agent.cmd();
    cmd.args(["deploy", "coreweave"]).args(args);
    cmd.env_remove("WANDB_API_KEY").env_remove("WANDB_BASE_URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run launch-agent deploy")
}

fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "deploy failed: {stderr}");
    stderr
}

fn refused(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "deploy should have failed: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

const KEY: &str = "deploy-test-key-0123456789abcdef0123456789abcdef";

fn kaniko_config(agent: &Scratch) -> PathBuf {
    agent.write_config(
        "entity: team\nqueues: [gpu]\nbuilder:\n  type: kaniko\n  build-context-store: s3://bucket/contexts\n",
    )
}

#[test]
fn dry_run_output_passes_strict_schema_validation_for_1_30_and_1_33_and_holds_no_key() {
    let agent = Scratch::new();
    let config = kaniko_config(&agent);
    let out = deploy(
        &agent,
        &[
            "--config",
            config.to_str().unwrap(),
            "--image",
            "registry.example/launch-agent:1",
            "--dry-run",
            "--region",
            "ORD1",
            "--gpu-class",
            "A100_NVLINK_80GB",
            "--gpu-class",
            "H100_NVLINK_80GB",
            "--target-namespace",
            "team-a",
            "--storage-class",
            "shared-vast",
        ],
        &[("WANDB_API_KEY", KEY)],
    );
    ok(&out);
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert!(!yaml.contains(KEY), "the key was printed:\n{yaml}");
    let file = agent.write("rendered.yaml", &yaml);
    for version in ["1.30.0", "1.33.0"] {
        let check = Command::new(kubernetes_validate())
            .args(["--strict", "--kubernetes-version", version])
            .arg(&file)
            .output()
            .expect("run kubernetes-validate");
        assert!(
            check.status.success(),
            "kubernetes-validate {version}: {}{}\n{yaml}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let docs: Vec<Value> = serde_saphyr::from_multiple(&yaml).expect("YAML documents");
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "PersistentVolumeClaim",
        "Deployment",
        "PodDisruptionBudget",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing: {kinds:?}");
    }
    assert!(!kinds.contains(&"Secret"), "{kinds:?}");
    assert!(
        yaml.contains("kubectl -n wandb create secret generic launch-agent-wandb-api-key"),
        "the header says how to make the key's Secret:\n{yaml}"
    );
    for doc in &docs {
        assert_eq!(
            doc["metadata"]["labels"]["app.kubernetes.io/managed-by"], "launch-agent",
            "{doc}"
        );
    }
    let creator = docs
        .iter()
        .find(|d| d["kind"] == "Role" && d["metadata"]["namespace"] == "team-a")
        .expect("the job-creator Role in the target namespace");
    assert_eq!(creator["metadata"]["name"], "launch-agent-job-creator");
    // The jobs' defaults are in the config the agent reads.
    let config_map = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    let deployed: Value =
        serde_saphyr::from_str(config_map["data"]["launch-config.yaml"].as_str().unwrap()).unwrap();
    let pod = &deployed["runners"]["kubernetes"]["job_defaults"]["spec"]["template"]["spec"];
    let terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"][0]["matchExpressions"]
        .to_string();
    assert!(
        terms.contains("topology.kubernetes.io/region") && terms.contains("ORD1"),
        "{terms}"
    );
    assert!(
        terms.contains("gpu.nvidia.com/class") && terms.contains("H100_NVLINK_80GB"),
        "{terms}"
    );
    assert_eq!(pod["volumes"][0]["emptyDir"]["medium"], "Memory");
    assert_eq!(deployed["queue_backend"], "wandb");
    // The deployed config is one the agent reads.
    let text = config_map["data"]["launch-config.yaml"].as_str().unwrap();
    let parsed = launch_agent::config::LaunchConfig::parse(text, Path::new("deployed.yaml"))
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(parsed.queues, ["gpu"]);
}

#[test]
fn bad_flags_and_configs_are_refused_naming_what_and_where() {
    let agent = Scratch::new();
    let config = agent.write_config("queues: [q]\n");
    let c = config.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--config", c, "--dry-run"], "--image is required"),
        (
            &[
                "--config",
                c,
                "--image",
                "i",
                "--dry-run",
                "--namespace",
                "Bad_NS",
            ],
            "--namespace `Bad_NS`",
        ),
        (
            &[
                "--config",
                c,
                "--image",
                "i",
                "--dry-run",
                "--gpu-class",
                "A100 80GB",
            ],
            "--gpu-class `A100 80GB`",
        ),
        (
            &[
                "--config",
                c,
                "--image",
                "i",
                "--dry-run",
                "--target-namespace",
                "Team_A",
            ],
            "--target-namespace `Team_A`",
        ),
        (&["--config", c, "--image", "i"], "no W&B API key"),
    ];
    for (args, said) in cases {
        let err = refused(&deploy(&agent, args, &[]));
        assert!(err.contains(said), "{args:?}: {err}");
    }
    let embedded = agent.write("embedded.yaml", "queue_backend: embedded\nqueues: [q]\n");
    let err = refused(&deploy(
        &agent,
        &[
            "--config",
            embedded.to_str().unwrap(),
            "--image",
            "i",
            "--dry-run",
        ],
        &[],
    ));
    assert!(
        err.contains("embedded.yaml") && err.contains("`queue_backend: embedded`"),
        "{err}"
    );
    let typo = agent.write("typo.yaml", "queues: [q]\nmax_jbos: 3\n");
    let err = refused(&deploy(
        &agent,
        &[
            "--config",
            typo.to_str().unwrap(),
            "--image",
            "i",
            "--dry-run",
        ],
        &[],
    ));
    assert!(
        err.contains("typo.yaml") && err.contains("max_jbos"),
        "{err}"
    );
    let local = agent.write("local.yaml", "queues: [q]\nstate_dir: /var/tmp/x\n");
    let err = refused(&deploy(
        &agent,
        &[
            "--config",
            local.to_str().unwrap(),
            "--image",
            "i",
            "--dry-run",
        ],
        &[],
    ));
    assert!(err.contains("`state_dir`"), "{err}");
}

/// Applied to the fake cluster (one of this test's own, of this checkout's
/// `tests/kube_fake/`), the objects are there with
/// their labels; `--delete` removes exactly them, never an unrelated object
/// in the same namespace (which keeps the namespace); a second `--delete`,
/// once the namespace holds nothing else, removes it too.
#[test]
fn apply_then_delete_removes_exactly_what_it_made() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let agent = Scratch::new();
    let cluster = OwnCluster::start(agent.path(), false);
    let client = rt.block_on(cluster.client());
    let target = rt.block_on(namespace(&client, "deploy-target"));
    let ns = format!("{target}-agent");
    let config = kaniko_config(&agent);
    let kubeconfig = cluster.kubeconfig.to_str().unwrap().to_string();
    let kubeconfig = kubeconfig.as_str();
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--image",
        "launch-agent-test/not-pulled:1",
        "--namespace",
        &ns,
        "--target-namespace",
        &target,
        "--region",
        "LGA1",
    ];
    // A target namespace that does not exist is named.
    let err = refused(&deploy(
        &agent,
        &[&args[..], &["--target-namespace", "no-such-namespace-here"]].concat(),
        &[("KUBECONFIG", kubeconfig), ("WANDB_API_KEY", KEY)],
    ));
    assert!(
        err.contains("`no-such-namespace-here`") && err.contains("does not exist"),
        "{err}"
    );

    ok(&deploy(
        &agent,
        &args,
        &[("KUBECONFIG", kubeconfig), ("WANDB_API_KEY", KEY)],
    ));
    // Applying again changes nothing and fails nothing.
    ok(&deploy(
        &agent,
        &args,
        &[("KUBECONFIG", kubeconfig), ("WANDB_API_KEY", KEY)],
    ));
    let mine = rt.block_on(labelled(&client, &selector("launch-agent", &ns)));
    let expected: Vec<String> = {
        let mut e = vec![
            format!("Namespace /{ns}"),
            format!("ServiceAccount {ns}/launch-agent"),
            format!("Role {ns}/launch-agent"),
            format!("RoleBinding {ns}/launch-agent"),
            format!("Role {target}/launch-agent-job-creator"),
            format!("RoleBinding {target}/launch-agent-job-creator"),
            format!("ConfigMap {ns}/launch-agent-config"),
            format!("Secret {ns}/launch-agent-wandb-api-key"),
            format!("PersistentVolumeClaim {ns}/launch-agent-kaniko"),
            format!("Deployment {ns}/launch-agent"),
            format!("PodDisruptionBudget {ns}/launch-agent"),
        ];
        e.sort();
        e
    };
    assert_eq!(mine, expected);
    // The key went into the Secret, and only there.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
    let secret = rt
        .block_on(secrets.get("launch-agent-wandb-api-key"))
        .unwrap();
    let data = secret.data.unwrap_or_default();
    assert_eq!(
        data.get("password").map(|b| b.0.as_slice()),
        Some(KEY.as_bytes())
    );
    // The Deployment's controller made its pod (whose image is not there).
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns);
    wait_until("the Deployment's pod", Duration::from_secs(30), || {
        !rt.block_on(pods.list(&ListParams::default()))
            .unwrap()
            .items
            .is_empty()
    });
    // `--wait` says what the pod waits for.
    let err = refused(&deploy(
        &agent,
        &[&args[..], &["--wait", "--timeout", "3"]].concat(),
        &[("KUBECONFIG", kubeconfig), ("WANDB_API_KEY", KEY)],
    ));
    assert!(
        err.contains("no available replica") && err.contains("pod launch-agent-"),
        "{err}"
    );

    // An object that is not the deployment's, in its namespace.
    let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), &ns);
    let unrelated: k8s_openapi::api::core::v1::ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "not-ours"}, "data": {"a": "b"}}))
            .unwrap();
    rt.block_on(config_maps.create(&PostParams::default(), &unrelated))
        .unwrap();

    let said = ok(&deploy(
        &agent,
        &["--delete", "--namespace", &ns],
        &[("KUBECONFIG", kubeconfig)],
    ));
    assert!(said.contains("kept, it holds objects"), "{said}");
    wait_until(
        "everything labelled gone but the namespace",
        Duration::from_secs(30),
        || {
            rt.block_on(labelled(&client, &selector("launch-agent", &ns)))
                == [format!("Namespace /{ns}")]
        },
    );
    wait_until(
        "the Deployment's pods gone",
        Duration::from_secs(30),
        || {
            rt.block_on(pods.list(&ListParams::default()))
                .unwrap()
                .items
                .iter()
                .all(|p| p.metadata.deletion_timestamp.is_some())
        },
    );
    assert!(
        rt.block_on(config_maps.get_opt("not-ours"))
            .unwrap()
            .is_some()
    );
    let roles = api(&client, &KINDS[6]);
    assert!(
        rt.block_on(roles.list(&ListParams::default()))
            .unwrap()
            .items
            .iter()
            .all(|r| r.metadata.namespace.as_deref() != Some(target.as_str())),
        "the target namespace's Role is gone"
    );

    rt.block_on(config_maps.delete("not-ours", &Default::default()))
        .unwrap();
    let said = ok(&deploy(
        &agent,
        &["--delete", "--namespace", &ns],
        &[("KUBECONFIG", kubeconfig)],
    ));
    assert!(said.contains(&format!("Namespace {ns}: deleted")), "{said}");
    wait_until("the namespace gone", Duration::from_secs(30), || {
        rt.block_on(labelled(&client, &selector("launch-agent", &ns)))
            .is_empty()
    });
}

fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A fake cluster of this test's own (`scripts/services-kube.sh` with its
/// own env file), its pods on the host's network when asked, stopped when
/// dropped.
struct OwnCluster {
    env_file: PathBuf,
    kubeconfig: PathBuf,
    url: String,
    ca: PathBuf,
}

impl OwnCluster {
    fn start(dir: &Path, host_network: bool) -> OwnCluster {
        let env_file = dir.join("kube.env");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/services-kube.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg("start")
            .env("LAUNCH_AGENT_KUBE_ENV", &env_file)
            .env(
                "KUBE_FAKE_POD_NETWORK",
                if host_network { "host" } else { "bridge" },
            )
            .output()
            .expect("run scripts/services-kube.sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = common::services_env::parse(&std::fs::read_to_string(&env_file).unwrap());
        OwnCluster {
            kubeconfig: PathBuf::from(&env["LAUNCH_AGENT_KUBECONFIG"]),
            url: env["LAUNCH_AGENT_KUBE_URL"].clone(),
            ca: PathBuf::from(&env["LAUNCH_AGENT_KUBE_CA"]),
            env_file,
        }
    }

    /// Every request it received (its `/fake/requests` hook).
    fn requests(&self) -> Vec<Value> {
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--cacert"])
            .arg(&self.ca)
            .arg(format!("{}/fake/requests", self.url))
            .output()
            .expect("run curl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout)
            .expect("JSON")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    async fn client(&self) -> kube::Client {
        launch_agent::clients::tls::install_crypto_provider();
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/services-kube.sh");
        let _ = Command::new("bash")
            .arg(&script)
            .arg("stop")
            .env("LAUNCH_AGENT_KUBE_ENV", &self.env_file)
            .output();
    }
}

/// The agent's image, built once by `scripts/build-agent-image.sh --profile
/// dev` (static musl binary, `FROM scratch`), into a target dir of its own.
fn agent_image() -> String {
    let tag = "launch-agent-test/agent:dev";
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-agent-image.sh");
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(&script)
        .args(["--profile", "dev", "--tag", tag])
        .env(
            "LAUNCH_AGENT_IMAGE_TARGET_DIR",
            common::target_dir().join("agent-image"),
        )
        .output()
        .expect("run scripts/build-agent-image.sh");
    assert!(
        out.status.success(),
        "scripts/build-agent-image.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("agent image built in {:?}", started.elapsed());
    tag.to_string()
}

/// The agent's own image, started by the Deployment on the fake cluster,
/// serves the fake W&B server's queue and runs a `resource: kubernetes`
/// job in a target namespace; `--delete` leaves nothing it made.
///
/// The image is built by the test (a no-op when the binary is current; a
/// first build of the musl dependencies takes minutes, in the README's test
/// command too).
#[test]
fn the_agent_s_image_deployed_on_the_fake_cluster_runs_a_queued_job_in_a_target_namespace() {
    let image = agent_image();
    let agent = Scratch::new();
    let cluster = OwnCluster::start(agent.path(), true);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = rt.block_on(cluster.client());
    let target = rt.block_on(namespace(&client, "deploy-jobs"));
    let ns = format!("{target}-agent");
    let fake = FakeWandbServer::start(KEY, "team", &[]);
    let config = agent.write_config(
        "entity: team\nqueues: [default]\nmax_jobs: 1\nrunners:\n  kubernetes:\n    pending_timeout: 60\n",
    );
    let kubeconfig = cluster.kubeconfig.to_str().unwrap().to_string();
    let env = [("KUBECONFIG", kubeconfig.as_str()), ("WANDB_API_KEY", KEY)];
    let base_url = fake.url();
    ok(&deploy(
        &agent,
        &[
            "--config",
            config.to_str().unwrap(),
            "--image",
            &image,
            "--image-pull-policy",
            "Never",
            "--namespace",
            &ns,
            "--target-namespace",
            &target,
            "--base-url",
            &base_url,
            "--wait",
            "--timeout",
            "120",
        ],
        &env,
    ));

    let marker = format!("deployed agent ran {}", uuid::Uuid::new_v4().simple());
    let spec = json!({
        "resource": "kubernetes",
        "project": "deploy-tests",
        "entity": "team",
        "docker": {"docker_image": services().base_image},
        "overrides": {"entry_point": ["sh", "-c", format!("echo {marker}")]},
        "resource_args": {"kubernetes": {"namespace": target, "spec": {"template": {"spec": {
            "containers": [{"name": "main", "imagePullPolicy": "IfNotPresent"}]
        }}}}}
    });
    let id = fake.push("team", "default", &spec);
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), &target);
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &target);
    let agent_pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns);
    let agent_log = || {
        let listed = rt
            .block_on(agent_pods.list(&ListParams::default()))
            .unwrap();
        listed
            .items
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .map(|name| {
                rt.block_on(agent_pods.logs(&name, &Default::default()))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    // The agent finishes the item: exit code 0 of a job that never called
    // wandb.init is a warning on W&B, a failure would be failRunQueueItem.
    let start = Instant::now();
    let mut pod_log = None;
    loop {
        let finished = fake
            .variables("updateRunQueueItemWarning")
            .iter()
            .any(|w| w["runQueueItemId"] == id.as_str());
        let failed = fake.operations().iter().any(|op| op == "failRunQueueItem");
        assert!(
            !failed,
            "the job failed: {:?}\n{}",
            fake.state(),
            agent_log()
        );
        if pod_log.is_none()
            && let Some(pod) = rt
                .block_on(pods.list(&ListParams::default().labels("wandb.ai/agent=launch-agent")))
                .unwrap()
                .items
                .into_iter()
                .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"))
        {
            pod_log = rt
                .block_on(pods.logs(&pod.metadata.name.unwrap(), &Default::default()))
                .ok();
        }
        if finished {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "item {id} did not finish: {}; the agent's log:\n{}",
            fake.item_state(&id),
            agent_log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // The Job the deployed agent made, in the target namespace, runs the
    // queued command.
    let posted: Vec<Value> = cluster
        .requests()
        .into_iter()
        .filter(|r| {
            r["method"] == "POST" && r["path"] == format!("/apis/batch/v1/namespaces/{target}/jobs")
        })
        .collect();
    assert_eq!(posted.len(), 1, "{posted:?}");
    assert!(
        posted[0]["body"].to_string().contains(&marker),
        "{}",
        posted[0]
    );
    if let Some(log) = pod_log {
        assert!(log.contains(&marker), "{log}");
    }
    let _ = jobs;

    ok(&deploy(
        &agent,
        &["--delete", "--namespace", &ns],
        &[("KUBECONFIG", kubeconfig.as_str())],
    ));
    wait_until(
        "nothing of the deployment left",
        Duration::from_secs(60),
        || {
            rt.block_on(labelled(&client, &selector("launch-agent", &ns)))
                .is_empty()
        },
    );
    wait_until("the agent's pod gone", Duration::from_secs(60), || {
        rt.block_on(agent_pods.list(&ListParams::default()))
            .map(|l| l.items.is_empty())
            .unwrap_or(true)
    });
}
