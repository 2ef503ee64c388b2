//! Build contexts in object storage (`launch:plugin/blob`), end to end: a
//! builder plugin (the hostile test builder's `blob` mode) uploads the
//! job's context to S3 (moto, signature checking on, signed by the aws
//! environment plugin: neither the builder nor the host holds the key), to
//! GCS (gcp-storage-emulator with the XML API of tests/gcs_fake, taking
//! only the gcp environment's bearer token), to Azure Blob Storage (Azurite
//! over HTTPS with `--oauth basic`, taking the AAD token environment-azure
//! gets from the fake AAD of tests/azure_fake; the account's host mapped
//! to Azurite by the environment's `blob-endpoints`) and to a PVC's
//! directory; each upload is downloaded and compared, entry by entry, with
//! the job's source plus the Dockerfile (the clouds' with a file larger
//! than one part, so a multipart upload). A store outside the
//! builder's `grants.blob.stores` is refused before anything is sent, and
//! so is an Azure store when the environment cannot authorize Azure; a
//! missing bucket or container fails the start-up check naming it and the
//! store's error (and, through `launch-agent run` with the kaniko builder,
//! stops the agent before it claims a job); no key or token appears in what the plugin was told.

mod common;
use common::auth_routing::load;
use launch_agent::plugins::bindings::Job;
use launch_agent::plugins::loaded::{BuildPlan, BuildRequest};
use launch_agent::plugins::{LoadedPlugin, PluginHost};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

/// The Dockerfile every upload carries.
const DOCKERFILE: &str = "FROM python:3.12-slim\nCOPY . /app\n";

/// A job source with a file, a nested binary file, a symlink, an ignored
/// file and a `.git` directory (which a context never carries).
fn job_source(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::create_dir_all(dir.join("src/nested")).unwrap();
    std::fs::create_dir_all(dir.join(".git")).unwrap();
    std::fs::write(dir.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    std::fs::write(dir.join(".dockerignore"), "*.log\n").unwrap();
    std::fs::write(dir.join("debug.log"), "not in the context").unwrap();
    std::fs::write(dir.join("train.py"), "print('hello')\n").unwrap();
    let binary: Vec<u8> = (0..200_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(dir.join("src/nested/weights.bin"), &binary).unwrap();
    std::os::unix::fs::symlink("train.py", dir.join("main.py")).unwrap();
    BTreeMap::from([
        (".dockerignore".to_string(), b"*.log\n".to_vec()),
        (
            ".launch-agent.Dockerfile".to_string(),
            DOCKERFILE.as_bytes().to_vec(),
        ),
        ("main.py".to_string(), b"-> train.py".to_vec()),
        ("src/".to_string(), Vec::new()),
        ("src/nested/".to_string(), Vec::new()),
        ("src/nested/weights.bin".to_string(), binary),
        ("train.py".to_string(), b"print('hello')\n".to_vec()),
    ])
}

/// Adds an incompressible file larger than one part
/// ([`PART_SIZE`](launch_agent::capabilities::blob::PART_SIZE)) to the
/// source in `dir` and to its `expected` entries, so that the upload is a
/// multipart one.
fn add_large_file(dir: &Path, expected: &mut BTreeMap<String, Vec<u8>>) {
    let size = launch_agent::capabilities::blob::PART_SIZE + 1_500_000;
    let mut state = 0x2545f4914f6cdd1du64;
    let data: Vec<u8> = (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("data/large.bin"), &data).unwrap();
    expected.insert("data/".into(), Vec::new());
    expected.insert("data/large.bin".into(), data);
}

/// The entries of a tar.gz: path (directories with a trailing `/`) →
/// contents (a symlink's as `-> target`).
fn entries(tgz: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
    let mut found = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().to_string();
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            found.insert(format!("{}/", path.trim_end_matches('/')), Vec::new());
        } else if kind.is_symlink() {
            let target = entry.link_name().unwrap().unwrap();
            found.insert(path, format!("-> {}", target.display()).into_bytes());
        } else {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            found.insert(path, data);
        }
    }
    found
}

/// Has `builder` run blob operation `op` on `url` in a build of the job
/// whose source is `source`: what it reported.
async fn blob(builder: &LoadedPlugin, source: &Path, op: &str, url: &str) -> String {
    let request = BuildRequest {
        job: Job {
            id: "blob".into(),
            queue: "q".into(),
            spec_json: "{}".into(),
        },
        settings: json!({"mode": "blob", "op": op, "url": url, "dockerfile": DOCKERFILE})
            .to_string(),
        destination: String::new(),
        source_dir: Some(source.display().to_string()),
        source_id: "blob".into(),
    };
    let plan = BuildPlan {
        image_uri: "127.0.0.1:5000/blob-test:latest".into(),
        dockerfile: String::new(),
        dockerfile_origin: "test".into(),
    };
    match builder
        .build(&request, &plan, None, Some(source), None)
        .await
    {
        Ok(_) => "built (unexpected)".into(),
        Err(e) => e.to_string(),
    }
}

/// An upload outside the granted prefix (`other`) and an upload by the
/// builder without the grant (`url`) are both refused, naming the grant.
async fn assert_refused(
    granted: &LoadedPlugin,
    ungranted: &LoadedPlugin,
    source: &Path,
    other: &str,
    url: &str,
) {
    let said = blob(granted, source, "upload", other).await;
    assert!(
        said.contains("denied=true") && said.contains("grants.blob.stores"),
        "{said}"
    );
    let said = blob(ungranted, source, "upload", url).await;
    assert!(said.contains("denied=true"), "{said}");
}

/// The `bytes=<n> sha256=<hex>` an upload reported.
fn reported(said: &str) -> (u64, String) {
    let bytes = said
        .split("bytes=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no size in {said}"));
    let sha = said
        .split("sha256=")
        .nth(1)
        .map(|s| s.chars().take(64).collect())
        .unwrap_or_else(|| panic!("no digest in {said}"));
    (bytes, sha)
}

/// The stored object is the context the upload reported (its size and
/// sha256, in `said`) and holds exactly the `expected` files.
fn assert_stored_as_reported(said: &str, stored: &[u8], expected: &BTreeMap<String, Vec<u8>>) {
    let (bytes, sha) = reported(said);
    assert_eq!(bytes, stored.len() as u64, "{said}");
    assert_eq!(sha, hex::encode(Sha256::digest(stored)), "{said}");
    assert_eq!(&entries(stored), expected);
}

/// A host with the hostile builder loaded twice: granted `stores`, and
/// granted nothing.
async fn builders(
    host: &mut PluginHost,
    stores: &[String],
) -> (Arc<LoadedPlugin>, Arc<LoadedPlugin>) {
    let wasm = common::test_plugin("hostile-builder");
    let granted = load(
        host,
        "granted",
        &wasm,
        &format!("    grants: {{ blob: {{ stores: {} }} }}\n", json!(stores)),
    )
    .await;
    let ungranted = load(host, "ungranted", &wasm, "    grants: {}\n").await;
    (granted, ungranted)
}

/// The bundled aws environment pointed at moto, with the credentials'
/// variables granted; its settings as the agent hands them over.
async fn aws_environment(
    host: &mut PluginHost,
    moto: &common::moto::Moto,
) -> (Arc<LoadedPlugin>, String) {
    let aws = load(
        host,
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

#[tokio::test]
async fn a_context_goes_to_a_pvc_directory_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    let expected = job_source(&source);
    let pvc = dir.path().join("pvc");
    std::fs::create_dir_all(&pvc).unwrap();
    let prefix = format!("file://{}/", pvc.display());
    let mut host = PluginHost::new(&dir.path().join("cache"), 256).unwrap();
    let (granted, ungranted) = builders(&mut host, std::slice::from_ref(&prefix)).await;

    let url = format!("{prefix}run-1.tgz");
    let said = blob(&granted, &source, "upload", &url).await;
    assert!(said.contains(&format!("blob upload {url}: ok")), "{said}");
    let stored = std::fs::read(pvc.join("run-1.tgz")).unwrap();
    assert_stored_as_reported(&said, &stored, &expected);
    // Nothing but the context is left in the directory (no partial file).
    assert_eq!(std::fs::read_dir(&pvc).unwrap().count(), 1);

    let said = blob(&ungranted, &source, "upload", &url).await;
    assert!(said.contains("denied=true"), "{said}");
    assert!(said.contains("grants.blob.stores"), "{said}");
    let outside = format!("file://{}/elsewhere.tgz", dir.path().display());
    let said = blob(&granted, &source, "upload", &outside).await;
    assert!(said.contains("denied=true"), "{said}");
    assert!(!dir.path().join("elsewhere.tgz").exists());

    let missing = format!("{prefix}no-such-dir/run.tgz");
    let said = blob(&granted, &source, "exists", &missing).await;
    assert!(said.contains("missing=true"), "{said}");
    let said = blob(&granted, &source, "delete", &url).await;
    assert!(said.contains("ok"), "{said}");
    assert!(!pvc.join("run-1.tgz").exists());
}

/// A signed S3 request made with the aws environment's `authorize` (the
/// test's own way in to create the bucket and read the object back).
async fn s3(
    environment: &Arc<LoadedPlugin>,
    settings: &str,
    method: &str,
    url: &str,
) -> reqwest::Response {
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
    let headers = environment
        .authorize(settings, &request)
        .await
        .expect("the aws environment signs");
    let mut builder = common::http_client()
        .request(method.parse().unwrap(), url)
        .header("x-amz-content-sha256", empty);
    for (k, v) in headers {
        builder = builder.header(k, v);
    }
    builder.send().await.unwrap()
}

#[tokio::test]
async fn a_context_goes_to_s3_signed_by_the_aws_environment() {
    let moto = common::moto::moto();
    // The AWS environment reads these through its grants (the same values
    // in every test of this binary).
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", &moto.access_key_id);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", &moto.secret_access_key);
    }
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    let mut expected = job_source(&source);
    add_large_file(&source, &mut expected);
    let bucket = format!("contexts-{}", uuid::Uuid::new_v4().simple());
    let prefix = format!("s3://{bucket}/launch/");
    let missing_prefix = format!("s3://missing-{}/launch/", uuid::Uuid::new_v4().simple());
    let mut host = PluginHost::new(&dir.path().join("cache"), 256).unwrap();
    let (aws, settings) = aws_environment(&mut host, moto).await;
    let (granted, ungranted) = builders(&mut host, &[prefix.clone(), missing_prefix.clone()]).await;

    // Before an environment lends its credentials, nothing is sent.
    let url = format!("{prefix}run-1.tgz");
    let said = blob(&granted, &source, "upload", &url).await;
    assert!(said.contains("lends none"), "{said}");

    host.lend_environment(&aws, settings.clone());
    let created = s3(&aws, &settings, "PUT", &format!("{}/{bucket}", moto.url)).await;
    assert!(created.status().is_success(), "{:?}", created.text().await);

    let said = blob(&granted, &source, "exists", &prefix).await;
    assert!(said.ends_with(": ok") || said.contains(": ok"), "{said}");
    let said = blob(&granted, &source, "upload", &url).await;
    assert!(said.contains(&format!("blob upload {url}: ok")), "{said}");
    let object = s3(
        &aws,
        &settings,
        "GET",
        &format!("{}/{bucket}/launch/run-1.tgz", moto.url),
    )
    .await;
    assert!(object.status().is_success(), "{}", object.status());
    let stored = object.bytes().await.unwrap();
    assert_stored_as_reported(&said, &stored, &expected);

    // Not granted: refused, nothing uploaded.
    let other = format!("s3://{bucket}/elsewhere/run-1.tgz");
    assert_refused(&granted, &ungranted, &source, &other, &url).await;
    let absent = s3(
        &aws,
        &settings,
        "GET",
        &format!("{}/{bucket}/elsewhere/run-1.tgz", moto.url),
    )
    .await;
    assert_eq!(absent.status(), 404);

    // A missing bucket: `missing`, naming it and S3's error.
    let said = blob(&granted, &source, "exists", &missing_prefix).await;
    assert!(
        said.contains("missing=true") && said.contains("NoSuchBucket"),
        "{said}"
    );

    // The start-up check of `builder.build-context-store`.
    launch_agent::capabilities::blob::check_build_context_store(
        &format!("s3://{bucket}/launch/"),
        host.lent_environment(),
    )
    .await
    .expect("the bucket exists");
    let missing = format!("s3://missing-{}/ctx/", uuid::Uuid::new_v4().simple());
    let e = launch_agent::capabilities::blob::check_build_context_store(
        &missing,
        host.lent_environment(),
    )
    .await
    .unwrap_err();
    assert!(
        e.contains(&format!("builder.build-context-store {missing}")) && e.contains("NoSuchBucket"),
        "{e}"
    );
    assert!(!e.contains(&moto.secret_access_key));

    let said = blob(&granted, &source, "delete", &url).await;
    assert!(said.contains(": ok"), "{said}");
    let gone = s3(
        &aws,
        &settings,
        "GET",
        &format!("{}/{bucket}/launch/run-1.tgz", moto.url),
    )
    .await;
    assert_eq!(gone.status(), 404);
}

#[tokio::test]
async fn a_context_goes_to_gcs_with_the_gcp_environments_token() {
    use common::gcp::{TOKEN, fake, key_file, rsa_key};
    let env = common::services_env::path("LAUNCH_AGENT_GCS_ENV", "launch-agent-gcs.env");
    let text = std::fs::read_to_string(&env).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}): this test needs the GCS stand-in; run \
             `scripts/services-gcs.sh start` first (scripts/test.sh does)",
            env.display()
        )
    });
    let gcs = text
        .lines()
        .find_map(|l| l.strip_prefix("LAUNCH_AGENT_GCS_URL="))
        .expect("LAUNCH_AGENT_GCS_URL")
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let pem = rsa_key(dir.path(), "trusted");
    let token_fake = fake(dir.path());
    let key = key_file(dir.path(), &token_fake, &pem);
    // Read by the GCP environment through its grants (one test sets it).
    unsafe { std::env::set_var("GOOGLE_APPLICATION_CREDENTIALS", &key) };
    let source = dir.path().join("source");
    let mut expected = job_source(&source);
    add_large_file(&source, &mut expected);
    let bucket = format!("contexts-{}", uuid::Uuid::new_v4().simple());
    let prefix = format!("gs://{bucket}/launch/");
    let missing_prefix = format!("gs://missing-{}/launch/", uuid::Uuid::new_v4().simple());
    let mut host = PluginHost::new(&dir.path().join("cache"), 256).unwrap();
    let gcp = load(
        &mut host,
        "gcp",
        &common::bundle_dir().join("environment-gcp.wasm"),
        &format!(
            "    grants: {{ env: [GOOGLE_APPLICATION_CREDENTIALS], hosts: [\"{}\"], dirs: [\"{}\"] }}\n    config: {{ token-uri: \"{}/token\", authorize-urls: [\"{gcs}\"], storage-url: \"{gcs}\" }}\n",
            token_fake.url(),
            key.parent().unwrap().display(),
            token_fake.url()
        ),
    )
    .await;
    let settings = gcp.settings_for(Some(json!({"type": "gcp", "project": "p"})));
    host.lend_environment(&gcp, settings);
    let (granted, ungranted) = builders(&mut host, &[prefix.clone(), missing_prefix.clone()]).await;
    let client = common::http_client();
    let bearer = format!("Bearer {TOKEN}");
    let created = client
        .post(format!("{gcs}/storage/v1/b?project=p"))
        .header("authorization", &bearer)
        .json(&json!({"name": bucket}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{:?}", created.text().await);

    let said = blob(&granted, &source, "exists", &prefix).await;
    assert!(said.contains(": ok"), "{said}");
    let url = format!("{prefix}run-1.tgz");
    let said = blob(&granted, &source, "upload", &url).await;
    assert!(said.contains(&format!("blob upload {url}: ok")), "{said}");
    assert!(!said.contains(TOKEN), "{said}");
    let get = |object: &str| {
        client
            .get(format!("{gcs}/{bucket}/{object}"))
            .header("authorization", &bearer)
            .send()
    };
    // The stand-in takes nothing without the token.
    let anonymous = client
        .get(format!("{gcs}/{bucket}/launch/run-1.tgz"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let object = get("launch/run-1.tgz").await.unwrap();
    assert!(object.status().is_success(), "{}", object.status());
    let stored = object.bytes().await.unwrap();
    assert_stored_as_reported(&said, &stored, &expected);

    let said = blob(&ungranted, &source, "upload", &url).await;
    assert!(said.contains("denied=true"), "{said}");
    let said = blob(&granted, &source, "exists", &missing_prefix).await;
    assert!(said.contains("missing=true"), "{said}");
    let e = launch_agent::capabilities::blob::check_build_context_store(
        &missing_prefix,
        host.lent_environment(),
    )
    .await
    .unwrap_err();
    assert!(
        e.contains(&format!("builder.build-context-store {missing_prefix}"))
            && e.contains("NoSuchBucket"),
        "{e}"
    );
    assert!(!e.contains(TOKEN), "{e}");

    let said = blob(&granted, &source, "delete", &url).await;
    assert!(said.contains(": ok"), "{said}");
    assert_eq!(get("launch/run-1.tgz").await.unwrap().status(), 404);
}

/// Azurite as `scripts/services-azure.sh` started it: its blob URL
/// (`https://127.0.0.1:PORT/devstoreaccount1`) and the certificate to trust.
fn azurite() -> (String, String) {
    let env = common::services_env::path("LAUNCH_AGENT_AZURE_ENV", "launch-agent-azure.env");
    let text = std::fs::read_to_string(&env).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}): this test needs Azurite; run \
             `scripts/services-azure.sh start` first (scripts/test.sh does)",
            env.display()
        )
    });
    let values = common::services_env::parse(&text);
    (
        values["LAUNCH_AGENT_AZURITE_BLOB_URL"].clone(),
        values["LAUNCH_AGENT_AZURITE_CA"].clone(),
    )
}

/// The Azure account Azurite serves: store URLs name
/// `https://devstoreaccount1.blob.core.windows.net/...`, which the azure
/// environment's `blob-endpoints` maps to Azurite.
const AZURITE_ACCOUNT: &str = "devstoreaccount1";

/// The bundled azure environment with a client secret against the fake
/// AAD at `aad`, its `blob-endpoints` mapping the account to Azurite
/// (`blob_url`), whose origin gets the storage token; its settings as the
/// agent hands them over.
async fn azure_environment(
    host: &mut PluginHost,
    aad: &str,
    blob_url: &str,
) -> (Arc<LoadedPlugin>, String) {
    let origin = blob_url.split('/').take(3).collect::<Vec<_>>().join("/");
    let azure = load(
        host,
        "azure",
        &common::bundle_dir().join("environment-azure.wasm"),
        &format!(
            "    grants: {{ env: [AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET], hosts: [\"{aad}\"] }}\n    \
             config: {{ authority-host: \"{aad}\", imds-endpoint: \"http://127.0.0.1:1\", \
             authorize-urls: [{{ url: \"{origin}\", scope: \"https://storage.azure.com/.default\" }}], \
             blob-endpoints: {{ {AZURITE_ACCOUNT}: \"{blob_url}\" }} }}\n"
        ),
    )
    .await;
    let settings = azure.settings_for(Some(json!({"type": "azure"})));
    (azure, settings)
}

/// A request to Azurite with the azure environment's token (the test's
/// own way in to create a container and read a blob back).
async fn azure_blob(
    environment: &Arc<LoadedPlugin>,
    settings: &str,
    method: &str,
    url: &str,
) -> reqwest::Response {
    let request = launch_agent::plugins::bindings::HttpRequest {
        method: method.into(),
        url: url.into(),
        headers: vec![],
        body_sha256: hex::encode(Sha256::digest(b"")),
    };
    let headers = environment
        .authorize(settings, &request)
        .await
        .expect("the azure environment lends its token");
    let mut builder = common::http_client()
        .request(method.parse().unwrap(), url)
        .header("x-ms-version", "2023-11-03")
        .header("content-length", "0");
    for (k, v) in headers {
        builder = builder.header(k, v);
    }
    builder.send().await.unwrap()
}

#[tokio::test]
async fn a_context_goes_to_azure_blob_storage_with_the_azure_environments_token() {
    use common::azure::{CLIENT_ID, SECRET, TENANT};
    let (blob_url, ca) = azurite();
    // Azurite's certificate is trusted as a user trusts a private CA: the
    // host's HTTP clients read SSL_CERT_FILE (rustls-native-certs). The
    // environment reads the client secret through its grants. (The same
    // values in every test of this binary.)
    unsafe {
        std::env::set_var("SSL_CERT_FILE", &ca);
        std::env::set_var("AZURE_TENANT_ID", TENANT);
        std::env::set_var("AZURE_CLIENT_ID", CLIENT_ID);
        std::env::set_var("AZURE_CLIENT_SECRET", SECRET);
    }
    let dir = tempfile::tempdir().unwrap();
    let aad = common::azure::fake(dir.path());
    let source = dir.path().join("source");
    let mut expected = job_source(&source);
    add_large_file(&source, &mut expected);
    let container = format!("contexts-{}", uuid::Uuid::new_v4().simple());
    let store = format!("https://{AZURITE_ACCOUNT}.blob.core.windows.net");
    let prefix = format!("{store}/{container}/launch/");
    let missing_prefix = format!("{store}/missing-{}/launch/", uuid::Uuid::new_v4().simple());
    let mut host = PluginHost::new(&dir.path().join("cache"), 256).unwrap();
    let (azure, settings) = azure_environment(&mut host, &aad.url(), &blob_url).await;
    let (granted, ungranted) = builders(&mut host, &[prefix.clone(), missing_prefix.clone()]).await;

    // Before an environment lends its token, nothing is sent.
    let url = format!("{prefix}run-1.tgz");
    let said = blob(&granted, &source, "upload", &url).await;
    assert!(
        said.contains("lends none") && said.contains("environment.type: azure"),
        "{said}"
    );

    host.lend_environment(&azure, settings.clone());
    let created = azure_blob(
        &azure,
        &settings,
        "PUT",
        &format!("{blob_url}/{container}?restype=container"),
    )
    .await;
    assert_eq!(created.status(), 201, "{:?}", created.text().await);

    let said = blob(&granted, &source, "exists", &prefix).await;
    assert!(said.contains(": ok"), "{said}");
    let said = blob(&granted, &source, "upload", &url).await;
    assert!(said.contains(&format!("blob upload {url}: ok")), "{said}");
    let object = azure_blob(
        &azure,
        &settings,
        "GET",
        &format!("{blob_url}/{container}/launch/run-1.tgz"),
    )
    .await;
    assert!(object.status().is_success(), "{}", object.status());
    let stored = object.bytes().await.unwrap();
    assert_stored_as_reported(&said, &stored, &expected);
    // Azurite takes nothing without a token.
    let anonymous = common::http_client()
        .get(format!("{blob_url}/{container}/launch/run-1.tgz"))
        .header("x-ms-version", "2023-11-03")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 403);
    // The token came from the fake AAD, for Azure Storage, and was never
    // shown to the plugin.
    let grants = aad.grants();
    assert!(
        grants
            .iter()
            .any(|(_, scope, _)| scope == "https://storage.azure.com/.default"),
        "{grants:?}"
    );
    for (_, _, token) in &grants {
        assert!(!said.contains(token.as_str()));
    }

    // Not granted: refused, nothing uploaded.
    let other = format!("{store}/{container}/elsewhere/run-1.tgz");
    assert_refused(&granted, &ungranted, &source, &other, &url).await;
    let absent = azure_blob(
        &azure,
        &settings,
        "GET",
        &format!("{blob_url}/{container}/elsewhere/run-1.tgz"),
    )
    .await;
    assert_eq!(absent.status(), 404);

    // A missing container: `missing`, naming it and Azure's error; and the
    // start-up check of `builder.build-context-store`.
    let said = blob(&granted, &source, "exists", &missing_prefix).await;
    assert!(
        said.contains("missing=true") && said.contains("ContainerNotFound"),
        "{said}"
    );
    launch_agent::capabilities::blob::check_build_context_store(&prefix, host.lent_environment())
        .await
        .expect("the container exists");
    let e = launch_agent::capabilities::blob::check_build_context_store(
        &missing_prefix,
        host.lent_environment(),
    )
    .await
    .unwrap_err();
    assert!(
        e.contains(&format!("builder.build-context-store {missing_prefix}"))
            && e.contains("ContainerNotFound"),
        "{e}"
    );
    for (_, _, token) in &aad.grants() {
        assert!(!e.contains(token.as_str()), "{e}");
    }
    assert!(!e.contains(SECRET));

    let said = blob(&granted, &source, "delete", &url).await;
    assert!(said.contains(": ok"), "{said}");
    let gone = azure_blob(
        &azure,
        &settings,
        "GET",
        &format!("{blob_url}/{container}/launch/run-1.tgz"),
    )
    .await;
    assert_eq!(gone.status(), 404);
}

#[tokio::test]
async fn an_azure_store_is_refused_by_an_environment_that_cannot_authorize_it() {
    // The aws environment lends its signatures, which Azure does not take:
    // it refuses to authorize an Azure host, and nothing is sent.
    let moto = common::moto::moto();
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", &moto.access_key_id);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", &moto.secret_access_key);
    }
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    job_source(&source);
    let prefix = format!("https://{AZURITE_ACCOUNT}.blob.core.windows.net/contexts/");
    let mut host = PluginHost::new(&dir.path().join("cache"), 256).unwrap();
    let (aws, settings) = aws_environment(&mut host, moto).await;
    host.lend_environment(&aws, settings);
    let (granted, _) = builders(&mut host, std::slice::from_ref(&prefix)).await;
    let url = format!("{prefix}run-1.tgz");
    let said = blob(&granted, &source, "upload", &url).await;
    assert!(
        said.contains("did not authorize") && said.contains("aws"),
        "{said}"
    );
    let e = launch_agent::capabilities::blob::check_build_context_store(
        &prefix,
        host.lent_environment(),
    )
    .await
    .unwrap_err();
    assert!(
        e.contains(&format!("builder.build-context-store {prefix}"))
            && e.contains("did not authorize"),
        "{e}"
    );
}

/// Through the agent itself: `builder: {type: kaniko}` with a
/// `build-context-store` whose bucket does not exist stops `launch-agent
/// run` at start-up, before any job is claimed, naming the key, the URL and
/// S3's error (W&B finds out at the first build); the job stays queued.
#[test]
fn the_agent_stops_at_start_up_when_the_kaniko_store_s_bucket_is_missing() {
    let moto = common::moto::moto();
    let agent = common::Scratch::new();
    let id = agent.submit("default", &common::shell_job("echo never"));
    let missing = format!(
        "s3://no-such-bucket-{}/contexts/",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let config = agent.write_config(&format!(
        "queues: [default]\nenvironment:\n  type: aws\n  region: {region}\n\
         builder:\n  type: kaniko\n  build-context-store: {missing}\n\
         plugins:\n  aws:\n    config: {{ endpoint-url: \"{url}\" }}\n",
        region = moto.region,
        url = moto.url,
    ));
    let out = agent
        .run_cmd(&config)
        .env("AWS_ACCESS_KEY_ID", &moto.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &moto.secret_access_key)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains(&format!("builder.build-context-store {missing}"))
            && log.contains("NoSuchBucket"),
        "{log}"
    );
    assert!(!log.contains(&moto.secret_access_key), "{log}");
    assert_eq!(agent.item(&id)["state"], "queued", "{log}");
}
