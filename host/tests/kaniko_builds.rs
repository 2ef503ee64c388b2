//! Kaniko builds end to end, one test per build-context store: the agent
//! (`builder.type: kaniko`, `registry.type: oci` on the test registry)
//! builds a code job with builder-kaniko on the FAKE cluster of
//! `tests/kube_fake/` (whose fake Kaniko executor, `kaniko.py`, carries
//! out the executor's contract with the local engine: the context from the
//! store, the push with the docker config Secret the agent filled), then
//! runs the image with `resource: kubernetes`.
//!
//! Each test checks, for its store:
//!
//! | what | how |
//! |---|---|
//! | the build and the run | the item finishes with the job's output; the image is in the registry; the executor's log is in the job's log |
//! | the context came from the store | the executor's log (in the job's log) says it read the context from this store's URL |
//! | the second submit skips the build | `build: skipped` |
//! | a broken Dockerfile | fails at stage `build` with the build's error line (`no-such-command-xyz: not found`) |
//! | nothing left | no Job, pod, Secret or ConfigMap in the namespace but the test's own (every kind listed): the builds' objects are deleted when the build ends, the runs' Jobs and pods by the cluster at their `ttlSecondsAfterFinished` (set to 2 s by the test; 60 s by default, as W&B); no context left in the store (deleted after the build, where W&B leaves it) |
//! | the registry password | in no agent log line, queue record, state-dir file, or request the fake received, except the docker config Secret the agent filled (as `base64(user:password)`, inside the Secret's data) |
//! | every manifest valid | the fake validates each with `kubernetes-validate --strict` (1.30, 1.33); none was refused |
//!
//! And, through the test plugin `kube-user`, the docker config Secret the
//! agent fills: only with the build's own registry login, only for its
//! destination registry; each refusal named, nothing sent.
//!
//! A store is one [`Store`] case: its config keys, its grants, what it
//! needs set up, and how to list what is left in it.
//!
//! Needs `scripts/services.sh start` (engine, registry),
//! `scripts/services-kube.sh start` and, for S3, `scripts/services-moto.sh
//! start`; for GCS `scripts/services-gcs.sh start`; for Azure
//! `scripts/services-azure.sh start`.

mod common;
use common::Scratch;
use common::docker::services;
use common::kube::{client, fake, namespace, requests};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, ListParams, PostParams};
use launch_agent::plugins::{LoadedPlugin, PluginHost};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A build-context store under test.
#[derive(Clone, Copy, Debug)]
enum Store {
    /// S3 (moto, signature checking on): uploaded with the aws
    /// environment's credentials, read by the executor with the
    /// `secret-name`/`secret-key` credentials file W&B mounts.
    S3,
    /// A PersistentVolumeClaim (CoreWeave's way): the agent writes into its
    /// mount, the executor reads `tar:///context/<run id>.tgz`.
    Pvc,
    /// GCS (the stand-in of `scripts/services-gcs.sh`, taking only the
    /// bearer token of the fake token endpoint `tests/gcp_fake`): uploaded
    /// with the gcp environment's token, read by the executor with the
    /// service-account key W&B mounts from `secret-name`/`secret-key` at
    /// `GOOGLE_APPLICATION_CREDENTIALS`, exchanged at the same fake.
    Gcs,
    /// Azure Blob Storage (Azurite over HTTPS, `--oauth basic`): uploaded
    /// with the azure environment's token from the fake AAD, the account's
    /// host mapped to Azurite by its `blob-endpoints`; read by the executor
    /// with the account key of the Secret `azure-storage-access-key` the
    /// Job maps to `AZURE_STORAGE_ACCESS_KEY`.
    Azure,
}

/// What one store needs: config, grants, set-up done, and how to see what
/// is left in it.
struct Setup {
    /// Lines under `builder:` (after `type: kaniko`).
    builder_keys: String,
    /// Keys of the kaniko plugin's `config:` (a flow mapping's inside).
    plugin_config: String,
    /// Top-level config lines (an `environment:` block).
    top_yaml: String,
    /// Entries under `plugins:` (the environment's).
    plugin_entries: String,
    /// Environment variables of the agent.
    env: Vec<(String, String)>,
    /// The objects the test itself made in the namespace (`Kind/name`),
    /// which stay.
    own_objects: Vec<String>,
    /// What is left in the store.
    leftovers: Box<dyn Fn() -> Vec<String>>,
    /// The start of the executor's log line saying it read the context
    /// from this store.
    fetched: String,
}

/// The PVC's directory on this machine: the fake maps a claim to
/// `<its state dir>/pvc/<namespace>/<claim>`, which plays the agent's mount
/// of it.
fn pvc_dir(namespace: &str, claim: &str) -> PathBuf {
    let text = std::fs::read_to_string(common::kube::env_file()).unwrap();
    let dir = common::services_env::parse(&text)["LAUNCH_AGENT_KUBE_DIR"].clone();
    PathBuf::from(dir)
        .join("state/pvc")
        .join(namespace)
        .join(claim)
}

/// The bundled aws environment pointed at moto, for the test's own signed
/// requests (creating the bucket, listing it).
async fn aws_environment(dir: &Path) -> (Arc<LoadedPlugin>, String) {
    let moto = common::moto::moto();
    let mut host = PluginHost::new(&dir.join("cache"), 64).unwrap();
    let aws = common::auth_routing::load(
        &mut host,
        "aws",
        &common::bundle_dir().join("environment-aws.wasm"),
        &format!(
            "    grants: {{ env: [AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY], hosts: [\"{}\"] }}\n    config: {{ endpoint-url: \"{}\" }}\n",
            moto.url, moto.url
        ),
    )
    .await;
    let settings = aws.settings_for(Some(json!({"type": "aws", "region": moto.region})));
    (aws, settings)
}

/// An S3 request signed by the aws environment's `authorize`.
async fn s3(aws: &LoadedPlugin, settings: &str, method: &str, url: &str) -> (u16, String) {
    let empty = hex::encode(Sha256::digest(b""));
    let host = url.split('/').nth(2).unwrap().to_string();
    let request = launch_agent::plugins::bindings::HttpRequest {
        method: method.into(),
        url: url.into(),
        headers: vec![
            ("host".into(), host),
            ("x-amz-content-sha256".into(), empty.clone()),
        ],
        body_sha256: empty.clone(),
    };
    let headers = aws.authorize(settings, &request).await.expect("signed");
    let mut builder = common::http_client()
        .request(method.parse().unwrap(), url)
        .header("x-amz-content-sha256", empty);
    for (k, v) in headers {
        builder = builder.header(k, v);
    }
    let response = builder.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// Creates Secret `name` with `key` = `value` in `ns` (a user's Secret of
/// the cloud's credentials, as W&B's docs have them make it).
async fn user_secret(client: &kube::Client, ns: &str, name: &str, key: &str, value: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name},
        "stringData": {key: value},
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

/// The values of a stand-in's env file (`LAUNCH_AGENT_<name>_ENV`, else
/// `/tmp/launch-agent-<name>.env`).
fn service_env(name: &str) -> std::collections::HashMap<String, String> {
    let env = common::services_env::path(
        &format!("LAUNCH_AGENT_{}_ENV", name.to_uppercase()),
        &format!("launch-agent-{name}.env"),
    );
    let text = std::fs::read_to_string(&env).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}): run `scripts/services-{name}.sh start` first",
            env.display()
        )
    });
    common::services_env::parse(&text)
}

/// Azurite's well-known account key of `devstoreaccount1` (public: in
/// Azurite's docs), which the executor's Secret holds.
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Runs `op` (`create` or `list`) on Azurite's `container` with the Azure
/// SDK of the venv `scripts/services-azure.sh` made (the test's own way
/// in, with the account key); `list` prints one blob name a line.
fn azurite_container(op: &str, container: &str) -> Vec<String> {
    let env = service_env("azure");
    let script = "import sys\nfrom azure.storage.blob import BlobServiceClient\n\
                  op, url, ca, key, name = sys.argv[1:]\n\
                  c = BlobServiceClient(url, credential={'account_name': 'devstoreaccount1', 'account_key': key}, connection_verify=ca).get_container_client(name)\n\
                  if op == 'create':\n    c.create_container()\n\
                  else:\n    [print(b.name) for b in c.list_blobs()]\n";
    let out = std::process::Command::new(&env["LAUNCH_AGENT_AZURE_PYTHON"])
        .args(["-c", script, op])
        .arg(&env["LAUNCH_AGENT_AZURITE_BLOB_URL"])
        .arg(&env["LAUNCH_AGENT_AZURITE_CA"])
        .args([AZURITE_KEY, container])
        .output()
        .unwrap();
    assert!(out.status.success(), "azurite {op}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Sets `store` up for namespace `ns`.
async fn setup(store: Store, ns: &str, client: &kube::Client, scratch: &Path) -> Setup {
    match store {
        Store::S3 => {
            let moto = common::moto::moto();
            // The aws environment plugin reads these through its grants.
            unsafe {
                std::env::set_var("AWS_ACCESS_KEY_ID", &moto.access_key_id);
                std::env::set_var("AWS_SECRET_ACCESS_KEY", &moto.secret_access_key);
            }
            let bucket = format!(
                "kaniko-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            );
            let (aws, settings) = aws_environment(scratch).await;
            let (status, body) =
                s3(&aws, &settings, "PUT", &format!("{}/{bucket}", moto.url)).await;
            assert!(
                (200..300).contains(&status),
                "creating the bucket: {status} {body}"
            );
            // The user's Secret with the cloud's credentials, as W&B's docs
            // have them make it (`secret-name`, `secret-key`).
            let credentials = format!(
                "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
                moto.access_key_id, moto.secret_access_key
            );
            user_secret(client, ns, "aws-secret", "credentials", &credentials).await;
            let list_url = format!("{}/{bucket}?list-type=2", moto.url);
            let fetched = format!("Retrieving S3 context from s3://{bucket}/contexts/");
            Setup {
                fetched,
                builder_keys: format!(
                    "  build-context-store: s3://{bucket}/contexts/\n  secret-name: aws-secret\n  secret-key: credentials\n  \
                     kaniko-config:\n    spec:\n      template:\n        spec:\n          containers:\n          - env:\n            \
                     - {{ name: S3_ENDPOINT, value: \"{url}\" }}\n            - {{ name: S3_FORCE_PATH_STYLE, value: \"true\" }}\n",
                    url = moto.url
                ),
                plugin_config: String::new(),
                top_yaml: format!("environment:\n  type: aws\n  region: {}\n", moto.region),
                plugin_entries: format!(
                    "  aws:\n    config: {{ endpoint-url: \"{}\" }}\n",
                    moto.url
                ),
                env: vec![
                    ("AWS_ACCESS_KEY_ID".into(), moto.access_key_id.clone()),
                    (
                        "AWS_SECRET_ACCESS_KEY".into(),
                        moto.secret_access_key.clone(),
                    ),
                ],
                own_objects: vec!["Secret/aws-secret".into()],
                leftovers: Box::new(move || {
                    let (status, body) = runtime().block_on(s3(&aws, &settings, "GET", &list_url));
                    assert_eq!(status, 200, "{body}");
                    body.split("<Key>")
                        .skip(1)
                        .filter_map(|k| k.split("</Key>").next())
                        .map(str::to_string)
                        .collect()
                }),
            }
        }
        Store::Pvc => {
            let claim = "kaniko-contexts";
            let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
                "metadata": {"name": claim},
                "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}},
            }))
            .unwrap();
            Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
                .create(&PostParams::default(), &pvc)
                .await
                .unwrap();
            let mount = pvc_dir(ns, claim);
            std::fs::create_dir_all(&mount).unwrap();
            let listed = mount.clone();
            Setup {
                fetched: "Using tar context tar:///context/".into(),
                builder_keys: String::new(),
                plugin_config: format!(
                    "pvc-name: {claim}, pvc-mount-path: \"{}\"",
                    mount.display()
                ),
                top_yaml: String::new(),
                plugin_entries: String::new(),
                env: Vec::new(),
                own_objects: Vec::new(),
                leftovers: Box::new(move || {
                    std::fs::read_dir(&listed)
                        .unwrap()
                        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                        .collect()
                }),
            }
        }
        Store::Gcs => {
            use common::gcp::{TOKEN, fake, key_file, rsa_key};
            let gcs = service_env("gcs")["LAUNCH_AGENT_GCS_URL"].clone();
            let pem = rsa_key(scratch, "trusted");
            let token_fake = fake(scratch);
            let key = key_file(scratch, &token_fake, &pem);
            let bucket = format!(
                "kaniko-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            );
            let bearer = format!("Bearer {TOKEN}");
            let created = common::http_client()
                .post(format!("{gcs}/storage/v1/b?project=p"))
                .header("authorization", &bearer)
                .json(&json!({"name": bucket}))
                .send()
                .await
                .unwrap();
            assert!(created.status().is_success(), "{:?}", created.text().await);
            user_secret(
                client,
                ns,
                "gcp-secret",
                "key.json",
                &std::fs::read_to_string(&key).unwrap(),
            )
            .await;
            let list_url = format!("{gcs}/{bucket}?list-type=2");
            Setup {
                fetched: format!("Retrieving GCS context from gs://{bucket}/contexts/"),
                builder_keys: format!(
                    "  build-context-store: gs://{bucket}/contexts/\n  secret-name: gcp-secret\n  secret-key: key.json\n  \
                     kaniko-config:\n    spec:\n      template:\n        spec:\n          containers:\n          - env:\n            \
                     - {{ name: KANIKO_FAKE_GCS_URL, value: \"{gcs}\" }}\n"
                ),
                plugin_config: String::new(),
                top_yaml: "environment:\n  type: gcp\n  region: us-central1\n".into(),
                plugin_entries: format!(
                    "  gcp:\n    config: {{ token-uri: \"{}/token\", authorize-urls: [\"{gcs}\"], storage-url: \"{gcs}\" }}\n",
                    token_fake.url()
                ),
                env: vec![(
                    "GOOGLE_APPLICATION_CREDENTIALS".into(),
                    key.display().to_string(),
                )],
                own_objects: vec!["Secret/gcp-secret".into()],
                leftovers: Box::new(move || {
                    // The token endpoint lives as long as the test.
                    let _alive = &token_fake;
                    let body = runtime().block_on(async {
                        let response = common::http_client()
                            .get(&list_url)
                            .header("authorization", &bearer)
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(response.status(), 200);
                        response.text().await.unwrap()
                    });
                    body.split("<Key>")
                        .skip(1)
                        .filter_map(|k| k.split("</Key>").next())
                        .map(str::to_string)
                        .collect()
                }),
            }
        }
        Store::Azure => {
            use common::azure::{CLIENT_ID, SECRET, TENANT};
            let values = service_env("azure");
            let (blob_url, ca) = (
                values["LAUNCH_AGENT_AZURITE_BLOB_URL"].clone(),
                values["LAUNCH_AGENT_AZURITE_CA"].clone(),
            );
            let origin = blob_url.split('/').take(3).collect::<Vec<_>>().join("/");
            let aad = common::azure::fake(scratch);
            let container = format!(
                "kaniko-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            );
            azurite_container("create", &container);
            user_secret(
                client,
                ns,
                "azure-storage-access-key",
                "password",
                AZURITE_KEY,
            )
            .await;
            Setup {
                fetched: format!(
                    "Retrieving Azure blob context from https://devstoreaccount1.blob.core.windows.net/{container}/contexts/"
                ),
                builder_keys: format!(
                    "  build-context-store: https://devstoreaccount1.blob.core.windows.net/{container}/contexts/\n  \
                     kaniko-config:\n    spec:\n      template:\n        spec:\n          containers:\n          - env:\n            \
                     - {{ name: KANIKO_FAKE_AZURE_BLOB_ENDPOINTS, value: \"devstoreaccount1={blob_url}\" }}\n            \
                     - {{ name: SSL_CERT_FILE, value: \"{ca}\" }}\n"
                ),
                plugin_config: String::new(),
                top_yaml: "environment:\n  type: azure\n  region: westeurope\n".into(),
                plugin_entries: format!(
                    "  azure:\n    config: {{ authority-host: \"{aad}\", imds-endpoint: \"http://127.0.0.1:1\", \
                     authorize-urls: [{{ url: \"{origin}\", scope: \"https://storage.azure.com/.default\" }}], \
                     blob-endpoints: {{ devstoreaccount1: \"{blob_url}\" }} }}\n",
                    aad = aad.url()
                ),
                env: vec![
                    ("SSL_CERT_FILE".into(), ca.clone()),
                    ("AZURE_TENANT_ID".into(), TENANT.into()),
                    ("AZURE_CLIENT_ID".into(), CLIENT_ID.into()),
                    ("AZURE_CLIENT_SECRET".into(), SECRET.into()),
                ],
                own_objects: vec!["Secret/azure-storage-access-key".into()],
                leftovers: Box::new(move || {
                    // The fake AAD lives as long as the test.
                    let _alive = &aad;
                    azurite_container("list", &container)
                }),
            }
        }
    }
}

/// The agent's config for `setup`, building in namespace `ns` and pushing
/// to repository `repo` of the test registry. The bundled builder-kaniko
/// runs with its default grants: the namespace of its config and the
/// context store.
fn config(agent: &Scratch, setup: &Setup, ns: &str, repo: &str) -> PathBuf {
    let s = services();
    let mut plugin_config = format!("namespace: {ns}");
    if !setup.plugin_config.is_empty() {
        plugin_config.push_str(", ");
        plugin_config.push_str(&setup.plugin_config);
    }
    agent.write_config(&format!(
        "queues: [default]\nmax_jobs: 1\nstopped_run_timeout: 2\n{top}\
         builder:\n  type: kaniko\n{builder}\
         registry:\n  type: oci\n  uri: {registry}/{repo}\n\
         secrets:\n  registry-password: {{ env: TEST_REGISTRY_PASSWORD }}\n\
         plugins:\n  oci:\n    config: {{ username: {user}, password-secret: registry-password }}\n    grants:\n      secrets: [registry-password]\n\
         \x20 kaniko:\n    config: {{ {plugin_config} }}\n{entries}",
        top = setup.top_yaml,
        entries = setup.plugin_entries,
        builder = setup.builder_keys,
        registry = s.registry,
        user = s.registry_user,
    ))
}

/// Runs the agent to idle; its log.
fn run_until_idle(agent: &Scratch, config: &Path, setup: &Setup) -> String {
    let mut cmd = agent.cmd();
    cmd.args([
        "run",
        "--config",
        config.to_str().unwrap(),
        "--exit-when-idle",
        "-v",
    ])
    .env("KUBECONFIG", &fake().kubeconfig)
    .env("TEST_REGISTRY_PASSWORD", &services().registry_password)
    .env("HOME", agent.path());
    for (k, v) in &setup.env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    log
}

/// A code job whose `Dockerfile.wandb` runs `run_line` at build time, run
/// with `resource: kubernetes` in `ns`.
fn code_job(agent: &Scratch, name: &str, ns: &str, run_line: &str) -> Value {
    let dir = agent.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Dockerfile.wandb"),
        format!(
            "FROM {}\n{run_line}\nCOPY job.sh /job.sh\nENTRYPOINT [\"sh\", \"/job.sh\"]\n",
            services().base_image
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("job.sh"),
        "echo hello from the kaniko-built image $(cat /built-by)\n",
    )
    .unwrap();
    json!({
        "resource": "kubernetes", "project": "kaniko", "entity": "team",
        "uri": dir.display().to_string(),
        // The run's Job stays `ttlSecondsAfterFinished` after it ends (60 s
        // by default, as W&B's); 2 s here, so that the cluster's TTL
        // controller (the fake's) has removed it when the test looks.
        "resource_args": {"kubernetes": {"namespace": ns, "spec": {"ttlSecondsAfterFinished": 2}}}
    })
}

/// Every Job, pod, Secret and ConfigMap in `ns`: `Kind/name` and labels.
async fn objects_in(client: &kube::Client, ns: &str) -> Vec<(String, BTreeMap<String, String>)> {
    let params = ListParams::default();
    let mut found = Vec::new();
    let mut add = |kind: &str, meta: kube::api::ObjectMeta| {
        found.push((
            format!("{kind}/{}", meta.name.unwrap_or_default()),
            meta.labels.unwrap_or_default(),
        ));
    };
    for job in Api::<Job>::namespaced(client.clone(), ns)
        .list(&params)
        .await
        .unwrap()
    {
        add("Job", job.metadata);
    }
    for pod in Api::<Pod>::namespaced(client.clone(), ns)
        .list(&params)
        .await
        .unwrap()
    {
        add("Pod", pod.metadata);
    }
    for secret in Api::<Secret>::namespaced(client.clone(), ns)
        .list(&params)
        .await
        .unwrap()
    {
        add("Secret", secret.metadata);
    }
    for map in Api::<ConfigMap>::namespaced(client.clone(), ns)
        .list(&params)
        .await
        .unwrap()
    {
        add("ConfigMap", map.metadata);
    }
    found.sort();
    found
}

/// What in `objects` is left by the jobs: everything but the test's own
/// objects (`own`), whoever made it (a build's Job, pods, docker config
/// Secret, a run's Job and pods).
fn left_behind(objects: &[(String, BTreeMap<String, String>)], own: &[String]) -> Vec<String> {
    objects
        .iter()
        .map(|(name, _)| name)
        .filter(|name| !own.contains(name))
        .cloned()
        .collect()
}

/// The tags of `repo` in the test registry.
fn tags(repo: &str) -> Vec<String> {
    let s = services();
    let out = std::process::Command::new("curl")
        .args(["-sS", "-u"])
        .arg(format!("{}:{}", s.registry_user, s.registry_password))
        .arg(format!("http://{}/v2/{repo}/tags/list", s.registry))
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    listed["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect()
}

/// Every file under `dir`, as (path, bytes).
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            found.push((path, bytes));
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The whole story for one store (see the module docs).
fn builds_with(store: Store) {
    let agent = Scratch::new();
    let rt = runtime();
    let client = rt.block_on(client());
    let test = format!("kaniko-{store:?}").to_lowercase();
    let ns = rt.block_on(namespace(&client, &test));
    let setup = rt.block_on(setup(store, &ns, &client, agent.path()));
    let repo = format!("{test}-{}", std::process::id());
    let config = config(&agent, &setup, &ns, &repo);

    // Built by Kaniko on the cluster, pushed, then run there.
    let spec = code_job(&agent, "code", &ns, "RUN echo kaniko > /built-by");
    let first = agent.submit("default", &spec);
    let log = run_until_idle(&agent, &config, &setup);
    let item = agent.item(&first);
    let agent_log = agent.run_file(&first, "agent.log");
    assert_eq!(item["state"], "finished", "{item:#}\n{agent_log}\n{log}");
    let output = agent.run_file(&first, "output.log");
    assert!(
        output.contains("hello from the kaniko-built image kaniko"),
        "{output}"
    );
    assert!(agent_log.contains("build: built"), "{agent_log}");
    assert!(
        agent_log.contains("(the fake Kaniko executor of the test cluster)")
            && agent_log.contains("INFO[0003] Pushed"),
        "the executor's log is not in the job's log:\n{agent_log}"
    );
    assert!(
        agent_log.contains(&setup.fetched),
        "the executor did not read the context from the store ({}):\n{agent_log}",
        setup.fetched
    );
    assert_eq!(tags(&repo).len(), 1, "{:?}", tags(&repo));

    // The same job again: the image exists, nothing is built.
    let second = agent.submit("default", &spec);
    run_until_idle(&agent, &config, &setup);
    let item = agent.item(&second);
    let agent_log = agent.run_file(&second, "agent.log");
    assert_eq!(item["state"], "finished", "{item:#}\n{agent_log}");
    assert!(agent_log.contains("build: skipped"), "{agent_log}");

    // A broken Dockerfile fails at stage `build` with the build's error.
    let broken = agent.submit(
        "default",
        &code_job(&agent, "broken", &ns, "RUN no-such-command-xyz"),
    );
    run_until_idle(&agent, &config, &setup);
    let item = agent.item(&broken);
    assert_eq!(item["state"], "failed", "{item:#}");
    assert_eq!(item["stage"], "build", "{item:#}");
    let message = item["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("no-such-command-xyz: not found")
            && message.contains("failed (exit code 1"),
        "{message}"
    );

    // Nothing the jobs made is left: not in the cluster (every kind, the
    // runs' Jobs gone with their TTL)...
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut left = left_behind(&rt.block_on(objects_in(&client, &ns)), &setup.own_objects);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        left = left_behind(&rt.block_on(objects_in(&client, &ns)), &setup.own_objects);
    }
    assert!(left.is_empty(), "left in namespace {ns}: {left:?}");
    let objects = rt.block_on(objects_in(&client, &ns));
    for own in &setup.own_objects {
        assert!(
            objects.iter().any(|(name, _)| name == own),
            "{own} is gone: {objects:?}"
        );
    }
    // ...nor in the store.
    let stored = (setup.leftovers)();
    assert!(stored.is_empty(), "left in the store: {stored:?}");

    // The registry password: nowhere but in the Secret the agent filled.
    let s = services();
    let password = &s.registry_password;
    use base64::Engine as _;
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{password}", s.registry_user));
    for (path, bytes) in files_under(&agent.state_dir()) {
        assert!(
            !contains(&bytes, password) && !contains(&bytes, &auth),
            "the registry password is in {}",
            path.display()
        );
    }
    assert!(!log.contains(password.as_str()) && !log.contains(&auth));
    let queue = serde_json::to_string(&agent.items()).unwrap();
    assert!(!queue.contains(password.as_str()) && !queue.contains(&auth));
    let mut filled = 0;
    for request in requests() {
        let text = request.to_string();
        if !text.contains(&format!("/namespaces/{ns}/")) {
            continue;
        }
        assert!(
            request["error"]["code"] != 422,
            "the fake refused a manifest: {request:#}"
        );
        assert!(
            !text.contains(password.as_str()) && !text.contains(&auth),
            "{request:#}"
        );
        let body = &request["body"];
        if request["method"] == "POST" && body["type"] == "kubernetes.io/dockerconfigjson" {
            // A build's docker config Secret, or a run's image pull Secret
            // (the `kubernetes` runner's). The fake keeps a Secret as the
            // API server stores it: its `stringData` moved into `data`.
            let data = body["data"][".dockerconfigjson"]
                .as_str()
                .unwrap_or_default();
            let config: Value = serde_json::from_slice(
                &base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(config["auths"][&s.registry]["auth"], auth, "{request:#}");
            if body["metadata"]["annotations"]["launch-agent/registry"] == s.registry.as_str() {
                filled += 1;
            }
        }
    }
    // One build Secret for each build (the first job and the broken one).
    assert_eq!(filled, 2, "docker config Secrets filled");
}

#[test]
fn a_code_job_built_by_kaniko_from_s3_runs_on_the_cluster_and_leaves_nothing() {
    builds_with(Store::S3);
}

#[test]
fn a_code_job_built_by_kaniko_from_a_pvc_runs_on_the_cluster_and_leaves_nothing() {
    builds_with(Store::Pvc);
}

#[test]
fn a_code_job_built_by_kaniko_from_gcs_runs_on_the_cluster_and_leaves_nothing() {
    builds_with(Store::Gcs);
}

#[test]
fn a_code_job_built_by_kaniko_from_azure_blob_storage_runs_on_the_cluster_and_leaves_nothing() {
    builds_with(Store::Azure);
}

/// Has the test plugin `kube-user` create `manifest` in a build of item
/// `item` pushing to `destination`, with `credentials` as the build's
/// registry login: what it reported (`created Secret ns/name`, or its
/// error with `denied=<bool>`).
async fn create_in_a_build(
    kube_user: &LoadedPlugin,
    manifest: &Value,
    destination: &str,
    credentials: Option<&launch_agent::plugins::loaded::RegistryCredentials>,
) -> String {
    let request = launch_agent::plugins::loaded::BuildRequest {
        job: launch_agent::plugins::bindings::Job {
            id: "fill-test".into(),
            queue: "q".into(),
            spec_json: "{}".into(),
        },
        settings: json!({"mode": "create", "manifest": manifest}).to_string(),
        destination: destination.into(),
        source_dir: None,
        source_id: "fill-test".into(),
    };
    let plan = launch_agent::plugins::loaded::BuildPlan {
        image_uri: format!("{destination}:v1"),
        dockerfile: String::new(),
        dockerfile_origin: "test".into(),
    };
    match kube_user
        .build(&request, &plan, credentials, None, None)
        .await
    {
        Ok(outcome) => outcome.image_uri,
        Err(e) => e.to_string(),
    }
}

/// The agent fills a docker config Secret a plugin asks for (placeholder
/// and `launch-agent/registry`) with the build's registry login, and only
/// that: no login held, another registry than the login's, or a registry
/// the build does not push to, is refused naming why, and nothing reaches
/// the cluster.
#[test]
fn a_docker_config_secret_is_filled_only_with_the_builds_login_for_its_destination() {
    let rt = runtime();
    let client = rt.block_on(client());
    let ns = rt.block_on(namespace(&client, "kaniko-fill"));
    let s = services();
    // The capability connects as the agent does (`KUBECONFIG`); the oci
    // registry plugin's password secret is read from the environment.
    unsafe {
        std::env::set_var("KUBECONFIG", &fake().kubeconfig);
        std::env::set_var("TEST_REGISTRY_PASSWORD", &s.registry_password);
    }
    let dir = tempfile::tempdir().unwrap();
    let kube_user_wasm = common::test_plugin("kube-user");
    let oci_wasm = common::bundle_dir().join("registry-oci.wasm");
    let yaml = format!(
        "secrets:\n  registry-password: {{ env: TEST_REGISTRY_PASSWORD }}\n\
         plugins:\n  kube-user:\n    path: {}\n    grants: {{ kubernetes: {{ namespaces: [{ns}] }} }}\n\
         \x20 oci:\n    path: {}\n    config: {{ username: {}, password-secret: registry-password }}\n    grants: {{ secrets: [registry-password] }}\n",
        kube_user_wasm.display(),
        oci_wasm.display(),
        s.registry_user
    );
    let config =
        launch_agent::config::LaunchConfig::parse(&yaml, Path::new("t.yaml")).expect("config");
    let destination = format!("{}/kaniko-fill", s.registry);
    let (kube_user, credentials) = rt.block_on(async {
        let mut host = PluginHost::new(&dir.path().join("cache"), 128).unwrap();
        let kube_user = host
            .load(
                "kube-user",
                &kube_user_wasm,
                &config.plugins["kube-user"],
                &config.secrets,
            )
            .await
            .expect("load kube-user");
        let oci = host
            .load("oci", &oci_wasm, &config.plugins["oci"], &config.secrets)
            .await
            .expect("load registry-oci");
        let settings = oci.settings_for(Some(json!({"type": "oci", "uri": destination})));
        let credentials = oci
            .login(&settings, None)
            .await
            .expect("login")
            .expect("a login");
        (kube_user, credentials)
    });
    let secret = |registry: &str| {
        json!({
            "kind": "Secret",
            "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"generateName": "docker-config-", "namespace": ns,
                         "annotations": {"launch-agent/registry": registry}},
            "stringData": {".dockerconfigjson": "<launch-agent: the registry login, filled by the host>"},
        })
    };
    let password = s.registry_password.as_str();

    // No login held (a build with no registry): refused.
    let said = rt.block_on(create_in_a_build(
        &kube_user,
        &secret(&s.registry),
        &destination,
        None,
    ));
    assert!(
        said.contains("denied=true") && said.contains("this call holds none"),
        "{said}"
    );
    // Another registry than the login's: refused.
    let said = rt.block_on(create_in_a_build(
        &kube_user,
        &secret("evil.example.com:5000"),
        &destination,
        Some(&credentials),
    ));
    assert!(
        said.contains("denied=true")
            && said.contains(&format!("this build's login is for {}", s.registry)),
        "{said}"
    );
    // The login's registry, but the build pushes elsewhere: refused.
    let said = rt.block_on(create_in_a_build(
        &kube_user,
        &secret(&s.registry),
        "ghcr.io/someone/else",
        Some(&credentials),
    ));
    assert!(
        said.contains("denied=true") && said.contains("not the build's destination (ghcr.io)"),
        "{said}"
    );
    let posted = |reqs: &[Value]| {
        reqs.iter()
            .filter(|r| {
                r["method"] == "POST" && r["path"] == format!("/api/v1/namespaces/{ns}/secrets")
            })
            .count()
    };
    assert_eq!(
        posted(&requests()),
        0,
        "a refused Secret reached the cluster"
    );

    // The build's own login for its destination: filled.
    let said = rt.block_on(create_in_a_build(
        &kube_user,
        &secret(&s.registry),
        &destination,
        Some(&credentials),
    ));
    assert!(
        said.starts_with(&format!("created Secret {ns}/docker-config-")),
        "{said}"
    );
    assert!(!said.contains(password));
    let reqs = requests();
    assert_eq!(posted(&reqs), 1);
    let body = reqs
        .iter()
        .find(|r| r["method"] == "POST" && r["path"] == format!("/api/v1/namespaces/{ns}/secrets"))
        .map(|r| r["body"].clone())
        .unwrap();
    use base64::Engine as _;
    let filled: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(body["data"][".dockerconfigjson"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{password}", s.registry_user));
    assert_eq!(
        filled,
        json!({"auths": {s.registry.as_str(): {"auth": auth}}})
    );
}

/// Opt-in: a real Kaniko build on a real cluster, when
/// `LAUNCH_AGENT_LIVE_KUBECONFIG` names its kubeconfig and
/// `LAUNCH_AGENT_LIVE_KANIKO_STORE` an `s3://BUCKET/PREFIX/` the agent may
/// write (the AWS credentials of the usual variables, region
/// `LAUNCH_AGENT_LIVE_AWS_REGION`, default `us-east-1`), and
/// `LAUNCH_AGENT_LIVE_KANIKO_REGISTRY` a repository
/// (`REGISTRY/REPO`) both the cluster and this machine reach, with
/// `LAUNCH_AGENT_LIVE_REGISTRY_USER` / `_PASSWORD`. Kaniko reads the
/// context with the Secret named by `LAUNCH_AGENT_LIVE_KANIKO_SECRET`
/// (key `credentials`: an AWS credentials file, as W&B's docs have users
/// make it) in `LAUNCH_AGENT_LIVE_NAMESPACE` (default `wandb`); the base
/// image is `LAUNCH_AGENT_LIVE_IMAGE` (default `busybox:1.36`). The job is
/// built, pushed, run with `resource: kubernetes`, and submitted again
/// with its build skipped. Without the variables it returns at once.
#[test]
fn live_a_kaniko_build_on_a_real_cluster_when_one_is_configured() {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (Some(kubeconfig), Some(store), Some(repository), Some(user), Some(password), Some(secret)) = (
        var("LAUNCH_AGENT_LIVE_KUBECONFIG"),
        var("LAUNCH_AGENT_LIVE_KANIKO_STORE"),
        var("LAUNCH_AGENT_LIVE_KANIKO_REGISTRY"),
        var("LAUNCH_AGENT_LIVE_REGISTRY_USER"),
        var("LAUNCH_AGENT_LIVE_REGISTRY_PASSWORD"),
        var("LAUNCH_AGENT_LIVE_KANIKO_SECRET"),
    ) else {
        eprintln!(
            "the live Kaniko test does nothing: set LAUNCH_AGENT_LIVE_KUBECONFIG, \
             _KANIKO_STORE, _KANIKO_REGISTRY, _REGISTRY_USER, _REGISTRY_PASSWORD and \
             _KANIKO_SECRET to run it"
        );
        return;
    };
    let namespace = var("LAUNCH_AGENT_LIVE_NAMESPACE").unwrap_or_else(|| "wandb".into());
    let region = var("LAUNCH_AGENT_LIVE_AWS_REGION").unwrap_or_else(|| "us-east-1".into());
    let image = var("LAUNCH_AGENT_LIVE_IMAGE").unwrap_or_else(|| "busybox:1.36".into());
    let agent = Scratch::new();
    let config = agent.write_config(&format!(
        "queues: [default]\nmax_jobs: 1\n\
         environment:\n  type: aws\n  region: {region}\n\
         builder:\n  type: kaniko\n  build-context-store: {store}\n  secret-name: {secret}\n  secret-key: credentials\n\
         registry:\n  type: oci\n  uri: {repository}\n\
         secrets:\n  registry-password: {{ env: LIVE_REGISTRY_PASSWORD }}\n\
         plugins:\n  oci:\n    config: {{ username: {user}, password-secret: registry-password }}\n    grants:\n      secrets: [registry-password]\n\
         \x20 kaniko:\n    config: {{ namespace: {namespace} }}\n"
    ));
    let dir = agent.path().join("live");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Dockerfile.wandb"),
        format!("FROM {image}\nRUN echo kaniko > /built-by\nENTRYPOINT [\"cat\", \"/built-by\"]\n"),
    )
    .unwrap();
    let spec = json!({
        "resource": "kubernetes", "project": "live", "entity": "team",
        "uri": dir.display().to_string(),
        "resource_args": {"kubernetes": {"namespace": namespace}}
    });
    let run = || {
        let out = agent
            .run_cmd(&config)
            .env("KUBECONFIG", &kubeconfig)
            .env("LIVE_REGISTRY_PASSWORD", &password)
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{log}");
        assert!(!log.contains(&password), "the registry password leaked");
        log
    };
    let first = agent.submit("default", &spec);
    run();
    let item = agent.item(&first);
    let job_log = agent.run_file(&first, "agent.log");
    assert_eq!(item["state"], "finished", "{item:#}\n{job_log}");
    assert!(
        agent.run_file(&first, "output.log").contains("kaniko"),
        "{job_log}"
    );
    let second = agent.submit("default", &spec);
    run();
    let job_log = agent.run_file(&second, "agent.log");
    assert!(job_log.contains("build: skipped"), "{job_log}");
}
