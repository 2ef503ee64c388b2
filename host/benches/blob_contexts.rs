//! The build-context upload figures (README, "Build contexts in object
//! storage"), printed as a table: the context of a 50 MB source
//! (incompressible, 50 files) made and uploaded by the blob capability
//! ([`BlobClient::upload_context`], the host side of `upload-context`,
//! with the environment's authorization) against the store's own client
//! uploading the same-sized tar.gz to the same stand-in:
//!
//! | store | stand-in | the store's own client |
//! |---|---|---|
//! | S3 | moto (`scripts/services-moto.sh`) | `aws s3 cp` (awscli in the moto venv) |
//! | Cloud Storage | `scripts/services-gcs.sh` | google-cloud-storage (`host/benches/store_clients.py`) |
//! | Azure Blob Storage | Azurite (`scripts/services-azure.sh`) | azure-storage-blob (`host/benches/store_clients.py`) |
//! | PVC directory | a local directory | `tar -czf` of the source into it |
//!
//! Alternated, `ROUNDS` times each, medians. The clients run as processes,
//! as a user runs `aws s3 cp`: their time includes the interpreter's
//! start; the Python clients' own upload time (after imports and set-up)
//! is printed beside it.
//!
//! Run (the services started first):
//! `cargo bench -p launch-agent --bench blob_contexts --profile dev`.

#[path = "../tests/common/azure.rs"]
#[allow(dead_code)]
mod azure;
#[path = "../tests/common/gcp.rs"]
#[allow(dead_code)]
mod gcp;
#[path = "../tests/common/moto.rs"]
#[allow(dead_code)]
mod moto_env;
#[path = "../tests/common/port_server.rs"]
mod port_server;
#[path = "../tests/common/services_env.rs"]
#[allow(dead_code)]
mod services_env;

use launch_agent::capabilities::blob::{BlobClient, StoreUrl};
use launch_agent::config::LaunchConfig;
use launch_agent::plugins::{LoadedPlugin, PluginHost};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

/// Rounds per store.
const ROUNDS: usize = 5;
/// The Dockerfile every context carries.
const DOCKERFILE: &str = "FROM python:3.12-slim\nCOPY . /app\n";

fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("bench path");
    exe.ancestors().nth(3).expect("target dir").to_path_buf()
}

/// Loads bundled plugin `file` as `name` with config entry `entry`.
async fn load(host: &mut PluginHost, name: &str, file: &str, entry: &str) -> Arc<LoadedPlugin> {
    let path = target_dir().join("bundle").join(format!("{file}.wasm"));
    let yaml = format!("plugins:\n  {name}:\n    path: {}\n{entry}", path.display());
    let config = LaunchConfig::parse(&yaml, Path::new("bench.yaml")).expect("config");
    host.load(name, &path, &config.plugins[name], &config.secrets)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A host lending `environment` with `block`, and the client it gives.
fn client(
    host: &PluginHost,
    environment: &Arc<LoadedPlugin>,
    block: serde_json::Value,
) -> BlobClient {
    host.lend_environment(environment, environment.settings_for(Some(block)));
    BlobClient {
        authorizer: host.lent_environment(),
        requester: "bench".into(),
    }
}

/// A services script's env file, read.
fn services(var: &str, name: &str, script: &str) -> HashMap<String, String> {
    let path = services_env::path(var, name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}): run `{script} start` first",
            path.display()
        )
    });
    services_env::parse(&text)
}

/// Runs `cmd`, timed; panics with its output when it fails.
fn timed(cmd: &mut Command) -> (f64, String) {
    let t = Instant::now();
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let seconds = t.elapsed().as_secs_f64();
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    (
        seconds,
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Writes the 50 MB source (50 files of xorshift bytes) under `dir`.
fn source(dir: &Path) {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let mut state = 0x9e3779b97f4a7c15u64;
    for i in 0..50 {
        let chunk: Vec<u8> = (0..1_000_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        std::fs::write(dir.join(format!("data/part-{i:02}.bin")), chunk).unwrap();
    }
}

/// One store's figures: the agent's upload and the client's (process,
/// and the client's own upload time when it prints one).
#[derive(Default)]
struct Figures {
    ours: Vec<f64>,
    theirs: Vec<f64>,
    theirs_inside: Vec<f64>,
}

impl Figures {
    fn row(&self, store: &str, client: &str) -> String {
        let (a, b) = (median(self.ours.clone()), median(self.theirs.clone()));
        let (inside, inside_ratio) = if self.theirs_inside.is_empty() {
            (String::new(), "—".to_string())
        } else {
            let c = median(self.theirs_inside.clone());
            (format!(" (upload alone {c:.2} s)"), format!("{:.2}", a / c))
        };
        format!(
            "| {store} | {a:.2} s | {client} {b:.2} s{inside} | {:.2} | {inside_ratio} |",
            a / b
        )
    }
}

/// Uploads the context of `source` to `url` with `client`, timed.
async fn ours(client: &BlobClient, source: &Path, url: &str) -> f64 {
    let url = StoreUrl::parse(url).unwrap();
    let t = Instant::now();
    client
        .upload_context(Some(source.to_path_buf()), DOCKERFILE.into(), &url)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    t.elapsed().as_secs_f64()
}

async fn delete(client: &BlobClient, url: &str) {
    client
        .delete(&StoreUrl::parse(url).unwrap())
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
}

/// A storage-scoped AAD token from the fake at `aad` (for the Python client).
async fn aad_storage_token(http: &reqwest::Client, aad: &str) -> String {
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", azure::CLIENT_ID)
        .append_pair("client_secret", azure::SECRET)
        .append_pair("scope", "https://storage.azure.com/.default")
        .append_pair("grant_type", "client_credentials")
        .finish();
    let answer: serde_json::Value = http
        .post(format!("{aad}/{}/oauth2/v2.0/token", azure::TENANT))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["access_token"]
        .as_str()
        .expect("a token")
        .to_string()
}

#[tokio::main]
async fn main() {
    launch_agent::clients::tls::install_crypto_provider();
    let home = std::env::var("HOME").unwrap();
    let moto = moto_env::moto();
    let gcs = services(
        "LAUNCH_AGENT_GCS_ENV",
        "launch-agent-gcs.env",
        "scripts/services-gcs.sh",
    );
    let azurite = services(
        "LAUNCH_AGENT_AZURE_ENV",
        "launch-agent-azure.env",
        "scripts/services-azure.sh",
    );
    let gcs_url = gcs["LAUNCH_AGENT_GCS_URL"].clone();
    let gcs_python = gcs["LAUNCH_AGENT_GCS_PYTHON"].clone();
    let blob_url = azurite["LAUNCH_AGENT_AZURITE_BLOB_URL"].clone();
    let ca = azurite["LAUNCH_AGENT_AZURITE_CA"].clone();
    let azure_python = azurite
        .get("LAUNCH_AGENT_AZURE_PYTHON")
        .cloned()
        .unwrap_or_else(|| format!("{home}/.cache/launch-agent-azure-venv/bin/python"));
    let aws_cli = std::env::var("LAUNCH_AGENT_AWS_CLI")
        .unwrap_or_else(|_| format!("{home}/.cache/launch-agent-moto-venv/bin/aws"));
    let clients_py = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/store_clients.py");

    let dir = tempfile::tempdir().unwrap();
    let aad = azure::fake(dir.path());
    let gcp_pem = gcp::rsa_key(dir.path(), "trusted");
    let gcp_fake = gcp::fake(dir.path());
    let gcp_key = gcp::key_file(dir.path(), &gcp_fake, &gcp_pem);
    // Read by the environments through their grants; Azurite's CA trusted
    // as a user trusts a private CA.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", &moto.access_key_id);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", &moto.secret_access_key);
        std::env::set_var("GOOGLE_APPLICATION_CREDENTIALS", &gcp_key);
        std::env::set_var("AZURE_TENANT_ID", azure::TENANT);
        std::env::set_var("AZURE_CLIENT_ID", azure::CLIENT_ID);
        std::env::set_var("AZURE_CLIENT_SECRET", azure::SECRET);
        std::env::set_var("SSL_CERT_FILE", &ca);
    }
    let src = dir.path().join("source");
    source(&src);
    let pvc = dir.path().join("pvc");
    std::fs::create_dir_all(&pvc).unwrap();

    let mut aws_host = PluginHost::new(&dir.path().join("cache-aws"), 256).unwrap();
    let mut gcp_host = PluginHost::new(&dir.path().join("cache-gcp"), 256).unwrap();
    let mut azure_host = PluginHost::new(&dir.path().join("cache-azure"), 256).unwrap();
    let aws = load(
        &mut aws_host,
        "aws",
        "environment-aws",
        &format!(
            "    grants: {{ env: [AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY], hosts: [\"{u}\"] }}\n    config: {{ endpoint-url: \"{u}\" }}\n",
            u = moto.url
        ),
    )
    .await;
    let gcp_env = load(
        &mut gcp_host,
        "gcp",
        "environment-gcp",
        &format!(
            "    grants: {{ env: [GOOGLE_APPLICATION_CREDENTIALS], hosts: [\"{t}\"], dirs: [\"{d}\"] }}\n    config: {{ token-uri: \"{t}/token\", authorize-urls: [\"{gcs_url}\"], storage-url: \"{gcs_url}\" }}\n",
            t = gcp_fake.url(),
            d = gcp_key.parent().unwrap().display()
        ),
    )
    .await;
    let azurite_origin = blob_url.split('/').take(3).collect::<Vec<_>>().join("/");
    let azure_env = load(
        &mut azure_host,
        "azure",
        "environment-azure",
        &format!(
            "    grants: {{ env: [AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET], hosts: [\"{a}\"] }}\n    \
             config: {{ authority-host: \"{a}\", imds-endpoint: \"http://127.0.0.1:1\", \
             authorize-urls: [{{ url: \"{azurite_origin}\", scope: \"https://storage.azure.com/.default\" }}], \
             blob-endpoints: {{ devstoreaccount1: \"{blob_url}\" }} }}\n",
            a = aad.url()
        ),
    )
    .await;
    let s3_client = client(
        &aws_host,
        &aws,
        serde_json::json!({"type": "aws", "region": moto.region}),
    );
    let gcs_client = client(
        &gcp_host,
        &gcp_env,
        serde_json::json!({"type": "gcp", "project": "bench"}),
    );
    let azure_client = client(
        &azure_host,
        &azure_env,
        serde_json::json!({"type": "azure"}),
    );
    let local = BlobClient {
        authorizer: None,
        requester: "bench".into(),
    };

    // The stores, and the file the clients upload: the same context, made once.
    let name = format!("bench-{}", uuid::Uuid::new_v4().simple());
    timed(
        Command::new(&aws_cli)
            .args([
                "s3api",
                "create-bucket",
                "--bucket",
                &name,
                "--endpoint-url",
                &moto.url,
            ])
            .env("AWS_DEFAULT_REGION", &moto.region),
    );
    let http = reqwest::Client::builder()
        .tls_certs_merge([reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap()])
        .build()
        .unwrap();
    let created = http
        .post(format!("{gcs_url}/storage/v1/b?project=bench"))
        .bearer_auth(gcp::TOKEN)
        .json(&serde_json::json!({"name": name}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{:?}", created.text().await);
    let azure_token = aad_storage_token(&http, &aad.url()).await;
    let created = http
        .put(format!("{blob_url}/{name}?restype=container"))
        .bearer_auth(&azure_token)
        .header("x-ms-version", "2023-11-03")
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{:?}", created.text().await);
    let reference = pvc.join("ref.tgz");
    ours(&local, &src, &format!("file://{}", reference.display())).await;
    let size = std::fs::metadata(&reference).unwrap().len();

    let s3_url = |what: &str, round: usize| format!("s3://{name}/{what}-{round}.tgz");
    let gs_url = |what: &str, round: usize| format!("gs://{name}/{what}-{round}.tgz");
    let az_url = |what: &str, round: usize| {
        format!("https://devstoreaccount1.blob.core.windows.net/{name}/{what}-{round}.tgz")
    };
    let (mut s3, mut gs, mut az, mut dir_) = (
        Figures::default(),
        Figures::default(),
        Figures::default(),
        Figures::default(),
    );
    for round in 0..ROUNDS {
        s3.ours
            .push(ours(&s3_client, &src, &s3_url("ours", round)).await);
        let (t, _) = timed(
            Command::new(&aws_cli)
                .args([
                    "s3",
                    "cp",
                    "--only-show-errors",
                    "--endpoint-url",
                    &moto.url,
                ])
                .arg(&reference)
                .arg(s3_url("cli", round))
                .env("AWS_DEFAULT_REGION", &moto.region),
        );
        s3.theirs.push(t);

        gs.ours
            .push(ours(&gcs_client, &src, &gs_url("ours", round)).await);
        let (t, inside) = timed(
            Command::new(&gcs_python)
                .arg(&clients_py)
                .args([
                    "gcs",
                    &gcs_url,
                    gcp::TOKEN,
                    &name,
                    &format!("cli-{round}.tgz"),
                ])
                .arg(&reference),
        );
        gs.theirs.push(t);
        gs.theirs_inside.push(inside.parse().unwrap());

        az.ours
            .push(ours(&azure_client, &src, &az_url("ours", round)).await);
        let (t, inside) = timed(
            Command::new(&azure_python)
                .arg(&clients_py)
                .args([
                    "azure",
                    &blob_url,
                    &azure_token,
                    &ca,
                    &name,
                    &format!("cli-{round}.tgz"),
                ])
                .arg(&reference),
        );
        az.theirs.push(t);
        az.theirs_inside.push(inside.parse().unwrap());

        let ours_file = pvc.join(format!("ours-{round}.tgz"));
        dir_.ours
            .push(ours(&local, &src, &format!("file://{}", ours_file.display())).await);
        let (t, _) = timed(
            Command::new("tar")
                .arg("-czf")
                .arg(pvc.join(format!("tar-{round}.tgz")))
                .arg("-C")
                .arg(&src)
                .arg("."),
        );
        dir_.theirs.push(t);

        // The stand-ins keep objects in memory: each round's go.
        for what in ["ours", "cli"] {
            delete(&s3_client, &s3_url(what, round)).await;
            delete(&gcs_client, &gs_url(what, round)).await;
            delete(&azure_client, &az_url(what, round)).await;
        }
        std::fs::remove_file(ours_file).unwrap();
        std::fs::remove_file(pvc.join(format!("tar-{round}.tgz"))).unwrap();
    }
    println!(
        "context: {:.1} MB tar.gz of a 50 MB source (incompressible); medians of {ROUNDS}\n",
        size as f64 / 1e6
    );
    println!(
        "| store (stand-in) | blob upload-context (makes the context too) | the store's own client (process) | ratio | ratio to the client's upload alone |"
    );
    println!("|---|---|---|---|---|");
    println!("{}", s3.row("S3 (moto)", "aws s3 cp"));
    println!(
        "{}",
        gs.row("Cloud Storage (gcs_fake)", "google-cloud-storage")
    );
    println!("{}", az.row("Azure Blob (Azurite)", "azure-storage-blob"));
    println!("{}", dir_.row("PVC directory", "tar -czf"));
}
