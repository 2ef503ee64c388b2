//! The cloud plugins' figures, printed as a table (needs the services of
//! `scripts/services.sh start` and `scripts/services-moto.sh start`):
//!
//! - a cached-image job's registry lookup (`registry.image-exists`) by
//!   registry-ecr (the token kept in the host after the first lookup; the
//!   lookup a manifest HEAD with it) against the same lookup by
//!   registry-oci (basic auth) on the same registry, p50 over the calls;
//! - the same lookup by registry-gcr (the gcp environment's token lent as
//!   an opaque handle, kept by the environment; the fake token endpoint of
//!   `tests/gcp_fake` and a `docker-registry` taking only that token)
//!   against registry-oci with the same user and token as a secret, side
//!   by side on the same image;
//! - the same lookup by registry-acr (the azure environment's AAD token
//!   lent and exchanged by the host for a refresh token, kept by the
//!   plugin; the ACR stand-in of `tests/azure_fake`) against registry-oci
//!   with user `00000000-...` and a refresh token as a secret;
//! - the agent's start-up to first poll with the `aws` environment (the
//!   credential chain and STS `GetCallerIdentity`, moto standing in)
//!   against the `local` environment, warm plugin cache.
//!
//! Run: `cargo bench -p launch-agent --bench clouds`.

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

use launch_agent::config::LaunchConfig;
use launch_agent::plugins::{LoadedPlugin, PluginHost};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("bench path");
    exe.ancestors().nth(3).expect("target dir").to_path_buf()
}

async fn load(
    host: &mut PluginHost,
    name: &str,
    file: &str,
    entry: &str,
    secrets: &str,
) -> Arc<LoadedPlugin> {
    let path = target_dir().join("bundle").join(format!("{file}.wasm"));
    let yaml = format!(
        "{secrets}plugins:\n  {name}:\n    path: {}\n{entry}",
        path.display()
    );
    let config = LaunchConfig::parse(&yaml, Path::new("bench.yaml")).expect("config");
    host.load(name, &path, &config.plugins[name], &config.secrets)
        .await
        .expect("load")
}

/// An image of the registry's `launch` repository: a tag the tests pushed,
/// else one that is not there (the lookup costs the same).
fn some_image(registry: &str) -> (String, bool) {
    let out = Command::new("curl")
        .args(["-s", "-u", "AWS:123456789012-auth-token"])
        .arg(format!("http://{registry}/v2/launch/tags/list"))
        .output()
        .expect("curl");
    let tags: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    match tags["tags"].get(0).and_then(|t| t.as_str()) {
        Some(tag) => (format!("{registry}/launch:{tag}"), true),
        None => (format!("{registry}/launch:not-there"), false),
    }
}

async fn lookups(calls: usize) -> (Duration, Duration, bool) {
    let m = moto_env::moto();
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", &m.access_key_id);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", &m.secret_access_key);
        std::env::set_var("BENCH_ECR_PASSWORD", format!("{}-auth-token", m.account));
    }
    let dir = tempfile::tempdir().unwrap();
    let mut host = PluginHost::new(&dir.path().join("cache"), 256).unwrap();
    let aws = load(
        &mut host,
        "aws",
        "environment-aws",
        &format!("    grants: {{ env: [AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY], hosts: [\"{}\"] }}\n    config: {{ endpoint-url: \"{}\" }}\n", m.url, m.url),
        "",
    )
    .await;
    let aws_settings = aws.settings_for(Some(
        serde_json::json!({"type": "aws", "region": "us-east-1"}),
    ));
    host.lend_environment(&aws, aws_settings);
    let registry = &m.ecr_registry;
    let ecr = load(
        &mut host,
        "ecr",
        "registry-ecr",
        &format!("    grants: {{ hosts: [\"http://{registry}\"], environment_auth: [\"{}\"] }}\n    config: {{ endpoint-url: \"{}\", registry-address: \"{registry}\" }}\n", m.url, m.url),
        "",
    )
    .await;
    let oci = load(
        &mut host,
        "oci",
        "registry-oci",
        &format!("    grants: {{ hosts: [\"http://{registry}\"], secrets: [pw] }}\n    config: {{ username: AWS, password-secret: pw }}\n"),
        "secrets:\n  pw: { env: BENCH_ECR_PASSWORD }\n",
    )
    .await;
    let (image, exists) = some_image(registry);
    // As the agent calls them: the `registry:` block with the entry's `config:`.
    let ecr_settings =
        ecr.settings_for(Some(serde_json::json!({"type": "ecr", "uri": m.ecr_uri()})));
    let oci_settings = oci.settings_for(Some(
        serde_json::json!({"type": "oci", "uri": format!("{registry}/launch")}),
    ));
    // Warm: the first ECR lookup fetches (and keeps) the token.
    ecr.image_exists(&ecr_settings, &image, None)
        .await
        .expect("ecr lookup");
    oci.image_exists(&oci_settings, &image, None)
        .await
        .expect("oci lookup");
    let (mut e, mut o) = (Vec::new(), Vec::new());
    for _ in 0..calls {
        let t = Instant::now();
        ecr.image_exists(&ecr_settings, &image, None).await.unwrap();
        e.push(t.elapsed());
        let t = Instant::now();
        oci.image_exists(&oci_settings, &image, None).await.unwrap();
        o.push(t.elapsed());
    }
    e.sort();
    o.sort();
    (e[e.len() / 2], o[o.len() / 2], exists)
}

/// Pushes a one-layer-less image (a config blob and its manifest) as
/// `repository:cached` to the registry at `address` with `user`/`password`,
/// through the distribution API, so the lookups find it.
fn push_tiny_image(address: &str, repository: &str, user: &str, password: &str) -> String {
    push_tiny_image_with(address, repository, &["-u", &format!("{user}:{password}")])
}

/// [`push_tiny_image`] with `auth`, curl's arguments that authenticate
/// (`-u user:password`, `-H "Authorization: Bearer ..."`).
fn push_tiny_image_with(address: &str, repository: &str, auth: &[&str]) -> String {
    use sha2::Digest;
    let curl = |args: &[&str], body: Option<&[u8]>| {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-f"])
            .args(auth)
            .args(["-D", "-", "-o", "/dev/null"])
            .args(args);
        if body.is_some() {
            cmd.args(["--data-binary", "@-"]).stdin(Stdio::piped());
        }
        let mut child = cmd.stdout(Stdio::piped()).spawn().expect("curl");
        if let Some(body) = body {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(body).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "curl {args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(config)));
    let started = curl(
        &[
            "-X",
            "POST",
            &format!("http://{address}/v2/{repository}/blobs/uploads/"),
        ],
        None,
    );
    let location = started
        .lines()
        .find_map(|l| {
            l.strip_prefix("Location: ")
                .or_else(|| l.strip_prefix("location: "))
        })
        .expect("an upload location")
        .trim()
        .to_string();
    let location = if location.starts_with("http") {
        location
    } else {
        format!("http://{address}{location}")
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    curl(
        &[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/octet-stream",
            &format!("{location}{sep}digest={digest}"),
        ],
        Some(config),
    );
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": config.len()},
        "layers": [],
    })
    .to_string();
    curl(
        &[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
            &format!("http://{address}/v2/{repository}/manifests/cached"),
        ],
        Some(manifest.as_bytes()),
    );
    format!("{address}/{repository}:cached")
}

/// registry-gcr's and registry-oci's `image-exists` p50 on the same cached
/// image of the Artifact Registry stand-in.
async fn gcr_lookups(calls: usize) -> (Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let pem = gcp::rsa_key(dir.path(), "trusted");
    let fake = gcp::fake(dir.path());
    let key = gcp::key_file(dir.path(), &fake, &pem);
    let registry = gcp::artifact_registry(dir.path());
    let address = registry.address.clone();
    let image = push_tiny_image(
        &address,
        "fake-project/launch/app",
        "oauth2accesstoken",
        gcp::TOKEN,
    );
    unsafe {
        std::env::set_var("GOOGLE_APPLICATION_CREDENTIALS", &key);
        std::env::set_var("BENCH_GAR_PASSWORD", gcp::TOKEN);
    }
    let mut host = PluginHost::new(&dir.path().join("cache"), 256).unwrap();
    let gcp_env = load(
        &mut host,
        "gcp",
        "environment-gcp",
        &format!(
            "    grants: {{ env: [GOOGLE_APPLICATION_CREDENTIALS], hosts: [\"{url}\"], dirs: [\"{}\"] }}\n    config: {{ token-uri: \"{url}/token\", authorize-urls: [\"http://{address}\"] }}\n",
            key.parent().unwrap().display(),
            url = fake.url(),
        ),
        "",
    )
    .await;
    let gcp_settings = gcp_env.settings_for(Some(
        serde_json::json!({"type": "gcp", "region": "us-central1"}),
    ));
    host.lend_environment(&gcp_env, gcp_settings);
    let gcr = load(
        &mut host,
        "gcr",
        "registry-gcr",
        &format!("    grants: {{ hosts: [\"http://{address}\"], environment_auth: [\"http://{address}\"] }}\n    config: {{ registry-address: \"{address}\" }}\n"),
        "",
    )
    .await;
    let oci = load(
        &mut host,
        "oci",
        "registry-oci",
        &format!("    grants: {{ hosts: [\"http://{address}\"], secrets: [pw] }}\n    config: {{ username: oauth2accesstoken, password-secret: pw }}\n"),
        "secrets:\n  pw: { env: BENCH_GAR_PASSWORD }\n",
    )
    .await;
    let gcr_settings = gcr.settings_for(Some(serde_json::json!({
        "type": "gcr", "uri": "us-central1-docker.pkg.dev/fake-project/launch/app"
    })));
    let oci_settings = oci.settings_for(Some(serde_json::json!({
        "type": "oci", "uri": format!("{address}/fake-project/launch/app")
    })));
    // Warm: the first lookup has the environment fetch (and keep) the token.
    assert!(
        gcr.image_exists(&gcr_settings, &image, None)
            .await
            .expect("gcr lookup")
    );
    assert!(
        oci.image_exists(&oci_settings, &image, None)
            .await
            .expect("oci lookup")
    );
    let (mut g, mut o) = (Vec::new(), Vec::new());
    for _ in 0..calls {
        let t = Instant::now();
        gcr.image_exists(&gcr_settings, &image, None).await.unwrap();
        g.push(t.elapsed());
        let t = Instant::now();
        oci.image_exists(&oci_settings, &image, None).await.unwrap();
        o.push(t.elapsed());
    }
    assert_eq!(fake.grants(), 1, "one token for every lookup");
    g.sort();
    o.sort();
    (g[g.len() / 2], o[o.len() / 2])
}

/// `curl -s ARGS`'s answer as JSON.
fn curl_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new("curl")
        .arg("-s")
        .args(args)
        .output()
        .expect("curl");
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// registry-acr's and registry-oci's `image-exists` p50 on the same cached
/// image of the ACR stand-in.
async fn acr_lookups(calls: usize) -> (Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let acr = azure::acr(dir.path());
    let url = acr.fake.url();
    let address = acr.registry_address.clone();
    // The bench's own refresh token (for registry-oci and the push): an
    // AAD token from the fake's IMDS, exchanged as `az acr login` does.
    let aad = curl_json(&[
        "-H",
        "Metadata: true",
        &format!(
            "{url}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com"
        ),
    ]);
    let exchanged = curl_json(&[
        "-X",
        "POST",
        "--data-urlencode",
        "grant_type=access_token",
        "--data-urlencode",
        &format!("service={}", azure::ACR_SERVICE),
        "--data-urlencode",
        &format!(
            "access_token={}",
            aad["access_token"].as_str().expect("an AAD token")
        ),
        &format!("{url}/oauth2/exchange"),
    ]);
    let refresh = exchanged["refresh_token"]
        .as_str()
        .expect("a refresh token")
        .to_string();
    let registry_token = curl_json(&[
        "-u",
        &format!("{}:{refresh}", azure::ACR_USER),
        &format!(
            "{url}/oauth2/token?service={}&scope=repository:launch:pull,push",
            azure::ACR_SERVICE
        ),
    ]);
    let bearer = format!(
        "Authorization: Bearer {}",
        registry_token["access_token"]
            .as_str()
            .expect("a registry token")
    );
    let image = push_tiny_image_with(&address, "launch", &["-H", &bearer]);
    unsafe {
        std::env::set_var("BENCH_ACR_PASSWORD", &refresh);
    }
    let mut host = PluginHost::new(&dir.path().join("cache"), 256).unwrap();
    // Managed identity (the fake's IMDS): no variable to grant.
    let azure_env = load(
        &mut host,
        "azure",
        "environment-azure",
        &format!(
            "    grants: {{ hosts: [\"{url}\"] }}\n    config: {{ imds-endpoint: \"{url}\", authorize-urls: [\"{url}\"] }}\n"
        ),
        "",
    )
    .await;
    let azure_settings = azure_env.settings_for(Some(serde_json::json!({"type": "azure"})));
    host.lend_environment(&azure_env, azure_settings);
    let acr_plugin = load(
        &mut host,
        "acr",
        "registry-acr",
        &format!("    grants: {{ hosts: [\"http://{address}\"], environment_auth: [\"http://{address}\"] }}\n    config: {{ registry-address: \"{address}\" }}\n"),
        "",
    )
    .await;
    let oci = load(
        &mut host,
        "oci",
        "registry-oci",
        &format!(
            "    grants: {{ hosts: [\"http://{address}\"], secrets: [pw] }}\n    config: {{ username: \"{}\", password-secret: pw }}\n",
            azure::ACR_USER
        ),
        "secrets:\n  pw: { env: BENCH_ACR_PASSWORD }\n",
    )
    .await;
    let acr_settings = acr_plugin.settings_for(Some(serde_json::json!({
        "type": "acr", "uri": format!("{}/launch", azure::ACR_SERVICE)
    })));
    let oci_settings = oci.settings_for(Some(serde_json::json!({
        "type": "oci", "uri": format!("{address}/launch")
    })));
    // Warm: the first lookup has the host exchange (and the plugin keep)
    // the refresh token.
    assert!(
        acr_plugin
            .image_exists(&acr_settings, &image, None)
            .await
            .expect("acr lookup")
    );
    assert!(
        oci.image_exists(&oci_settings, &image, None)
            .await
            .expect("oci lookup")
    );
    let (mut a, mut o) = (Vec::new(), Vec::new());
    for _ in 0..calls {
        let t = Instant::now();
        acr_plugin
            .image_exists(&acr_settings, &image, None)
            .await
            .unwrap();
        a.push(t.elapsed());
        let t = Instant::now();
        oci.image_exists(&oci_settings, &image, None).await.unwrap();
        o.push(t.elapsed());
    }
    assert_eq!(
        acr.exchanges(),
        2,
        "the bench's exchange and one for every lookup"
    );
    a.sort();
    o.sort();
    (a[a.len() / 2], o[o.len() / 2])
}

/// Start-up to the "agent polling" line of `launch-agent run` with `config`.
fn start_to_poll(state: &Path, config: &Path, aws: bool) -> Duration {
    let m = moto_env::moto();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_launch-agent"));
    cmd.args([
        "run",
        "--config",
        config.to_str().unwrap(),
        "--exit-when-idle",
    ])
    .env("LAUNCH_AGENT_STATE_DIR", state)
    .env_remove("LAUNCH_AGENT_PLUGIN_DIR")
    .env("HOME", state)
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    if aws {
        cmd.env("AWS_ACCESS_KEY_ID", &m.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", &m.secret_access_key);
    }
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn agent");
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut elapsed = None;
    for line in lines {
        if elapsed.is_none() && line.expect("agent output").contains("agent polling") {
            elapsed = Some(start.elapsed());
        }
    }
    child.wait().unwrap();
    elapsed.expect("the agent never reached its first poll")
}

fn startups(runs: usize) -> (Duration, Duration) {
    let m = moto_env::moto();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local.yaml");
    std::fs::write(&local, "queues: [default]\nenvironment: { type: local }\n").unwrap();
    let aws = dir.path().join("aws.yaml");
    std::fs::write(
        &aws,
        format!(
            "queues: [default]\nenvironment: {{ type: aws, region: us-east-1 }}\nplugins:\n  aws: {{ config: {{ endpoint-url: \"{}\" }} }}\n",
            m.url
        ),
    )
    .unwrap();
    let state = dir.path().join("state");
    // Warm the compiled-plugin cache.
    start_to_poll(&state, &local, false);
    start_to_poll(&state, &aws, true);
    let (mut l, mut a) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        l.push(start_to_poll(&state, &local, false));
        a.push(start_to_poll(&state, &aws, true));
    }
    l.sort();
    a.sort();
    (l[l.len() / 2], a[a.len() / 2])
}

/// The outside part of the `aws` start-up: one signed STS
/// `GetCallerIdentity` answered by moto (a Python server), made by botocore
/// from moto's own venv on a kept connection; p50 of `runs` calls.
///
/// The agent's start-up with `environment: aws` makes this round trip once,
/// so `aws - local - this` is what the project adds (the WASI component's
/// instantiation, the credential chain, the signing).
fn sts_round_trip(runs: usize) -> Duration {
    let m = moto_env::moto();
    let venv = std::env::var_os("LAUNCH_AGENT_MOTO_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                .join(".cache/launch-agent-moto-venv")
        });
    let script = r#"
import sys, time, boto3
url, key, secret, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sts = boto3.client("sts", endpoint_url=url, region_name="us-east-1",
                   aws_access_key_id=key, aws_secret_access_key=secret)
sts.get_caller_identity()
times = []
for _ in range(runs):
    t = time.perf_counter(); sts.get_caller_identity(); times.append(time.perf_counter() - t)
times.sort()
print(times[len(times) // 2])
"#;
    let out = Command::new(venv.join("bin/python"))
        .args(["-c", script, &m.url, &m.access_key_id, &m.secret_access_key])
        .arg(runs.to_string())
        .output()
        .expect("run moto's venv python");
    assert!(
        out.status.success(),
        "botocore's GetCallerIdentity: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seconds: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("seconds");
    Duration::from_secs_f64(seconds)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let (calls, runs) = if full { (200, 9) } else { (5, 1) };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (ecr, oci, exists) = runtime.block_on(lookups(calls));
    let (gcr, gcr_oci) = runtime.block_on(gcr_lookups(calls));
    let (acr, acr_oci) = runtime.block_on(acr_lookups(calls));
    let (local, aws) = startups(runs);
    let sts = sts_round_trip(if full { 50 } else { 3 });
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    if !full {
        println!("(smoke run: use `cargo bench` for the figures)");
    }
    println!("| measure | result | goal |");
    println!("|---|---|---|");
    println!(
        "| `image-exists` of a {} image, registry-ecr (token kept, manifest HEAD), p50 of {calls} | {:.2} ms | |",
        if exists { "cached" } else { "missing" },
        ms(ecr)
    );
    println!(
        "| the same lookup by registry-oci (basic auth), same registry, p50 of {calls} | {:.2} ms | |",
        ms(oci)
    );
    println!(
        "| `image-exists` of a cached image, registry-gcr (the gcp environment's token lent, manifest HEAD), p50 of {calls} | {:.2} ms | |",
        ms(gcr)
    );
    println!(
        "| the same lookup by registry-oci (user oauth2accesstoken, the token as a secret), same registry, p50 of {calls} | {:.2} ms | |",
        ms(gcr_oci)
    );
    println!(
        "| `image-exists` of a cached image, registry-acr (the azure environment's AAD token exchanged by the host, the refresh token kept, manifest HEAD), p50 of {calls} | {:.2} ms | |",
        ms(acr)
    );
    println!(
        "| the same lookup by registry-oci (user 00000000-..., a refresh token as a secret), same registry, p50 of {calls} | {:.2} ms | |",
        ms(acr_oci)
    );
    println!(
        "| start-up to first poll, `aws` environment (chain + STS on moto), p50 of {runs} | {:.0} ms | ≤ 2× local |",
        ms(aws)
    );
    println!(
        "| start-up to first poll, `local` environment, p50 of {runs} | {:.0} ms | |",
        ms(local)
    );
    println!(
        "| outside part: one signed STS `GetCallerIdentity` answered by moto (botocore, kept connection), p50 | {:.1} ms | |",
        ms(sts)
    );
    let own = aws.saturating_sub(sts);
    println!(
        "| the project's own share: `aws` start-up without the STS round trip | {:.0} ms ({:.2}× local) | ≤ 2× local |",
        ms(own),
        own.as_secs_f64() / local.as_secs_f64()
    );
}
