//! `launch:plugin/blob`: build contexts in object storage, for builders
//! whose build runs elsewhere (Kaniko in a cluster), since contract 0.2.0.
//!
//! Why the host does it: the context is the job's source (which no plugin
//! reads) made exactly as `docker.build` makes it ([`docker::context`],
//! gzipped); and the store's credentials stay with the environment plugin.
//! Every request [`object_store`] makes goes through [`AuthorizedHttp`],
//! object_store's own HTTP-client hook (`HttpConnector`/`HttpService`):
//! object_store is told to sign nothing (`skip_signature`), and each
//! request it builds is handed, with its body's SHA-256, to the configured
//! environment's `authorizer.authorize` (SigV4 for S3, a bearer token for
//! GCS and Azure), whose headers are added before the request leaves. The
//! host never holds a key either; the plugin sees neither.
//!
//! | URL | store | endpoint | credentials |
//! |---|---|---|---|
//! | `s3://BUCKET/KEY` | S3, path-style | the environment's `endpoint-url`, else `https://s3.REGION.amazonaws.com` (`region`, default `us-east-1`) | the aws environment's SigV4 (`x-amz-content-sha256` set by the host to the body's hash, signed) |
//! | `gs://BUCKET/KEY` | Google Cloud Storage's XML API (what object_store speaks) | the environment's `storage-url`, else `https://storage.googleapis.com` | the gcp environment's bearer token |
//! | `https://ACCOUNT.blob.core.windows.net/CONTAINER/KEY` (W&B's spelling; `.blob.core.usgovcloudapi.net`, `.blob.core.chinacloudapi.cn` for the sovereign clouds) | Azure Blob Storage | the URL's own host, unless the environment's `blob-endpoints` maps `ACCOUNT` to another (a stand-in: Azurite's `https://127.0.0.1:10000/devstoreaccount1`) | the azure environment's bearer token (AAD, storage scope) |
//! | `file:///DIR/KEY` | a directory of this machine (a PVC's mount, W&B's `WANDB_LAUNCH_KANIKO_PVC_MOUNT_PATH`) | — | none; written to a temporary name and renamed |
//!
//! `az://` is not taken: it names no account (object_store reads that from
//! its own configuration), and W&B spells Azure stores as `https://` URLs.
//!
//! Granted by store prefix (`grants.blob.stores`,
//! [`GrantPolicy::blob`](super::policy::GrantPolicy::blob)), checked first
//! in each host function; refused calls send nothing. Uploads go in
//! [`PART_SIZE`] parts (object_store's multipart upload) once the context
//! is larger than one part, a single `PUT` otherwise.
//!
//! [`BlobClient`] is the plain async Rust the host functions and the
//! start-up check ([`BlobClient::exists_store`]) use, without WebAssembly.

use super::bindings::launch::plugin::blob::{BlobError, Host, Uploaded};
use super::docker::context;
use super::environment_auth::{AuthRequest, EnvironmentAuthorizer};
use super::state::{CapabilityState, HostCall};
use http_body_util::BodyExt;
use object_store::client::{
    ClientOptions, HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse,
    HttpResponseBody, HttpService,
};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, RetryConfig};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The size of one part of a multipart upload (S3's minimum is 5 MiB).
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// Cloud Storage's API base, unless the environment's `storage-url` says
/// otherwise.
const GCS_BASE: &str = "https://storage.googleapis.com";

/// The host suffixes of Azure Blob Storage, per cloud (public, US
/// Government, China).
const AZURE_BLOB_SUFFIXES: [&str; 3] = [
    ".blob.core.windows.net",
    ".blob.core.usgovcloudapi.net",
    ".blob.core.chinacloudapi.cn",
];

/// Parts uploaded at once.
const PARTS_IN_FLIGHT: usize = 4;

/// The store a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `s3://`
    S3,
    /// `gs://`
    Gcs,
    /// `https://ACCOUNT.blob.core.windows.net/` (or a sovereign cloud's).
    Azure,
    /// `file://`: a local directory (a PVC's mount).
    File,
}

impl Scheme {
    fn prefix(self) -> &'static str {
        match self {
            Scheme::S3 => "s3://",
            Scheme::Gcs => "gs://",
            Scheme::Azure => "https://",
            Scheme::File => "file://",
        }
    }
}

/// An object-store URL: `s3://BUCKET/KEY`, `gs://BUCKET/KEY`,
/// `https://ACCOUNT.blob.core.windows.net/CONTAINER/KEY` or `file:///PATH`
/// (for which `bucket` is empty and `key` the path without its leading
/// `/`). `key` may be empty or end with `/` (a store or a prefix, for
/// `exists-store`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreUrl {
    /// Which store.
    pub scheme: Scheme,
    /// Azure: the storage account's blob host, lowercase
    /// (`ACCOUNT.blob.core.windows.net`); empty for the others.
    pub host: String,
    /// The bucket (Azure: the container; empty for `file://`).
    pub bucket: String,
    /// The object's key, `/`-separated, no `.` or `..` segment.
    pub key: String,
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scheme {
            Scheme::File => write!(f, "file:///{}", self.key),
            Scheme::Azure => write!(f, "https://{}/{}/{}", self.host, self.bucket, self.key),
            s => write!(f, "{}{}/{}", s.prefix(), self.bucket, self.key),
        }
    }
}

impl StoreUrl {
    /// Parses `text`; the error says what is wrong, naming what is served.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut host = String::new();
        let (scheme, rest) = if let Some(rest) = text.strip_prefix("s3://") {
            (Scheme::S3, rest)
        } else if let Some(rest) = text.strip_prefix("gs://") {
            (Scheme::Gcs, rest)
        } else if let Some(rest) = text.strip_prefix("file://") {
            (Scheme::File, rest)
        } else if let Some((authority, path)) = text
            .strip_prefix("https://")
            .map(|r| r.split_once('/').unwrap_or((r, "")))
            .filter(|(authority, _)| {
                let lower = authority.to_ascii_lowercase();
                AZURE_BLOB_SUFFIXES.iter().any(|s| lower.ends_with(s))
            })
        {
            host = authority.to_ascii_lowercase();
            if azure_account(&host).is_none() {
                return Err(format!(
                    "{authority} is not a storage account's blob host (ACCOUNT.blob.core.windows.net, the account 3 to 24 of a-z and 0-9)"
                ));
            }
            (Scheme::Azure, path)
        } else {
            return Err(
                "must be s3://BUCKET/KEY, gs://BUCKET/KEY, \
                 https://ACCOUNT.blob.core.windows.net/CONTAINER/KEY or file:///DIR/KEY (a PVC's mount)"
                    .into(),
            );
        };
        if text.chars().any(|c| c.is_control() || c == '\\') || text.contains(['?', '#']) {
            return Err("must not contain control characters, `\\`, `?` or `#`".into());
        }
        let (bucket, key) = match scheme {
            Scheme::File => {
                let path = rest
                    .strip_prefix('/')
                    .ok_or("a file:// URL must be absolute: file:///DIR/KEY")?;
                (String::new(), path.to_string())
            }
            Scheme::Azure => {
                let (container, key) = rest.split_once('/').unwrap_or((rest, ""));
                let valid = (3..=63).contains(&container.len())
                    && !container.starts_with('-')
                    && !container.ends_with('-')
                    && !container.contains("--")
                    && container
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
                if !valid {
                    return Err(format!(
                        "container {container:?} is not a container name (3 to 63 of a-z, 0-9 and single `-`s inside)"
                    ));
                }
                (container.to_string(), key.to_string())
            }
            _ => {
                let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
                let valid = (3..=63).contains(&bucket.len())
                    && bucket
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-._".contains(c));
                if !valid {
                    return Err(format!(
                        "bucket {bucket:?} is not a bucket name (3 to 63 of a-z, 0-9, `-`, `.`, `_`)"
                    ));
                }
                (bucket.to_string(), key.to_string())
            }
        };
        let segments: Vec<&str> = key.split('/').collect();
        let last = segments.len() - 1;
        for (i, segment) in segments.iter().enumerate() {
            if *segment == "." || *segment == ".." || (segment.is_empty() && i != last) {
                return Err(format!(
                    "key {key:?} has an empty, `.` or `..` segment: keys are plain paths"
                ));
            }
        }
        Ok(StoreUrl {
            scheme,
            host,
            bucket,
            key,
        })
    }

    /// The Azure storage account (the first label of `host`).
    fn account(&self) -> &str {
        self.host.split('.').next().unwrap_or("")
    }

    /// Whether the URL names an object (its key neither empty nor a prefix).
    pub fn is_object(&self) -> bool {
        !self.key.is_empty() && !self.key.ends_with('/')
    }

    /// The local path of a `file://` URL.
    fn local_path(&self) -> PathBuf {
        PathBuf::from(format!("/{}", self.key))
    }
}

/// The account of a lowercase Azure Blob Storage host
/// (`ACCOUNT.blob.core.windows.net`, or a sovereign cloud's), if it is one:
/// 3 to 24 lowercase letters and digits, no port.
fn azure_account(host: &str) -> Option<&str> {
    let suffix = AZURE_BLOB_SUFFIXES.iter().find(|s| host.ends_with(*s))?;
    let account = &host[..host.len() - suffix.len()];
    ((3..=24).contains(&account.len())
        && account
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()))
    .then_some(account)
}

/// A store prefix of `grants.blob.stores`: a [`StoreUrl`] whose key is
/// empty (the whole bucket) or a prefix, read as ending with `/` (so
/// `s3://b/ctx` does not grant `s3://b/ctx-other/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorePrefix(StoreUrl);

impl StorePrefix {
    /// Parses a grant; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut url = StoreUrl::parse(text)?;
        if url.scheme == Scheme::File && url.key.is_empty() {
            return Err("granting the whole file system is not allowed: name a directory".into());
        }
        if !url.key.is_empty() && !url.key.ends_with('/') {
            url.key.push('/');
        }
        Ok(StorePrefix(url))
    }

    /// Whether `url` lies under this prefix.
    pub fn contains(&self, url: &StoreUrl) -> bool {
        let p = &self.0;
        p.scheme == url.scheme
            && p.host == url.host
            && p.bucket == url.bucket
            && (url.key.starts_with(&p.key) || format!("{}/", url.key) == p.key)
    }
}

/// A failed blob operation, as the plugin is told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobFailure {
    /// What went wrong (the store's error; never a credential).
    pub message: String,
    /// The store (bucket, directory) does not exist.
    pub missing: bool,
}

impl BlobFailure {
    fn new(message: impl Into<String>) -> Self {
        BlobFailure {
            message: message.into(),
            missing: false,
        }
    }

    fn from_store(what: &str, url: &StoreUrl, e: object_store::Error) -> Self {
        // A listing of a missing bucket is not object_store's `NotFound`
        // (that is for objects): its message carries the store's answer.
        let text = e.to_string();
        let missing = matches!(e, object_store::Error::NotFound { .. })
            || text.contains("NoSuchBucket")
            || text.contains("ContainerNotFound")
            || text.contains("404 Not Found");
        BlobFailure {
            message: format!("{what} {url}: {e}"),
            missing,
        }
    }
}

impl fmt::Display for BlobFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What an upload stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedContext {
    /// The size of the tar.gz.
    pub bytes: u64,
    /// Its lowercase hex SHA-256.
    pub sha256: String,
}

/// The host's object-store client for one requester: the stores are
/// reached with the environment's authorization.
#[derive(Clone)]
pub struct BlobClient {
    /// The environment that authorizes the requests; `None`: only
    /// `file://` works.
    pub authorizer: Option<Arc<dyn EnvironmentAuthorizer>>,
    /// `name version` of the plugin the requests are made for (what the
    /// environment is told).
    pub requester: String,
}

impl BlobClient {
    /// Stores the context of `source` (none: only the Dockerfile) plus
    /// `dockerfile`, gzipped, at `url`.
    pub async fn upload_context(
        &self,
        source: Option<PathBuf>,
        dockerfile: String,
        url: &StoreUrl,
    ) -> Result<UploadedContext, BlobFailure> {
        if !url.is_object() {
            return Err(BlobFailure::new(format!(
                "{url} names no object: give the context's key (e.g. .../RUN_ID.tgz)"
            )));
        }
        let (mut chunks, producer) = context::spawn_gzipped(source, dockerfile);
        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        let result = match url.scheme {
            Scheme::File => {
                let path = url.local_path();
                let dir = path.parent().map(PathBuf::from).unwrap_or_default();
                if !tokio::fs::metadata(&dir).await.is_ok_and(|m| m.is_dir()) {
                    return Err(BlobFailure {
                        message: format!("directory {} of {url} does not exist", dir.display()),
                        missing: true,
                    });
                }
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                let partial = dir.join(format!(".{name}.partial-{}", uuid::Uuid::new_v4()));
                let written = async {
                    use tokio::io::AsyncWriteExt;
                    let mut file = tokio::fs::File::create(&partial).await?;
                    while let Some(chunk) = chunks.recv().await {
                        let chunk = chunk?;
                        hasher.update(&chunk);
                        bytes += chunk.len() as u64;
                        file.write_all(&chunk).await?;
                    }
                    file.sync_all().await?;
                    tokio::fs::rename(&partial, &path).await
                }
                .await;
                if written.is_err() {
                    let _ = tokio::fs::remove_file(&partial).await;
                }
                written.map_err(|e| BlobFailure::new(format!("writing {url}: {e}")))
            }
            _ => {
                let store = self.store(url)?;
                let mut writer = object_store::buffered::BufWriter::with_capacity(
                    store,
                    ObjectPath::from(url.key.as_str()),
                    PART_SIZE,
                )
                .with_max_concurrency(PARTS_IN_FLIGHT);
                let mut failed = None;
                while let Some(chunk) = chunks.recv().await {
                    match chunk {
                        Ok(chunk) => {
                            hasher.update(&chunk);
                            bytes += chunk.len() as u64;
                            if let Err(e) = writer.put(chunk).await {
                                failed = Some(BlobFailure::from_store("uploading", url, e));
                                break;
                            }
                        }
                        Err(e) => {
                            failed = Some(BlobFailure::new(format!(
                                "making the context for {url}: {e}"
                            )));
                            break;
                        }
                    }
                }
                match failed {
                    Some(f) => {
                        let _ = writer.abort().await;
                        Err(f)
                    }
                    None => {
                        use tokio::io::AsyncWriteExt;
                        writer
                            .shutdown()
                            .await
                            .map_err(|e| BlobFailure::new(format!("uploading {url}: {e}")))
                    }
                }
            }
        };
        drop(chunks);
        let produced = producer.await;
        result?;
        match produced {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(BlobFailure::new(format!(
                    "making the context for {url}: {e}"
                )));
            }
            Err(e) => {
                return Err(BlobFailure::new(format!(
                    "making the context for {url}: {e}"
                )));
            }
        }
        Ok(UploadedContext {
            bytes,
            sha256: hex::encode(hasher.finalize()),
        })
    }

    /// Deletes the object at `url`; what is not there is not an error.
    pub async fn delete(&self, url: &StoreUrl) -> Result<(), BlobFailure> {
        if !url.is_object() {
            return Err(BlobFailure::new(format!("{url} names no object")));
        }
        match url.scheme {
            Scheme::File => match tokio::fs::remove_file(url.local_path()).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(BlobFailure::new(format!("deleting {url}: {e}"))),
            },
            Scheme::Azure => self.delete_azure_blob(url).await,
            _ => match self
                .store(url)?
                .delete(&ObjectPath::from(url.key.as_str()))
                .await
            {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(BlobFailure::from_store("deleting", url, e)),
            },
        }
    }

    /// Checks that the store of `url` exists and can be listed: one
    /// listing of the URL's prefix (the object's directory) for a bucket,
    /// the directory for `file://`.
    pub async fn exists_store(&self, url: &StoreUrl) -> Result<(), BlobFailure> {
        let prefix = match url.key.rfind('/') {
            Some(i) => &url.key[..i],
            None => "",
        };
        match url.scheme {
            Scheme::File => {
                let dir = PathBuf::from(format!("/{prefix}"));
                match tokio::fs::metadata(&dir).await {
                    Ok(m) if m.is_dir() => Ok(()),
                    Ok(_) => Err(BlobFailure::new(format!(
                        "{} is not a directory",
                        dir.display()
                    ))),
                    Err(e) => Err(BlobFailure {
                        message: format!("directory {} of {url}: {e}", dir.display()),
                        missing: e.kind() == std::io::ErrorKind::NotFound,
                    }),
                }
            }
            _ => {
                let prefix = (!prefix.is_empty()).then(|| ObjectPath::from(prefix));
                self.store(url)?
                    .list_with_delimiter(prefix.as_ref())
                    .await
                    .map(|_| ())
                    .map_err(|e| BlobFailure::from_store("listing", url, e))
            }
        }
    }

    /// The object_store client of `url`'s bucket, every request of which
    /// goes through [`AuthorizedHttp`].
    fn store(&self, url: &StoreUrl) -> Result<Arc<dyn ObjectStore>, BlobFailure> {
        let (settings, connector) = self.connector(url)?;
        let text = |key: &str| {
            settings
                .get(key)
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let retry = RetryConfig {
            max_retries: 3,
            retry_timeout: Duration::from_secs(60),
            ..RetryConfig::default()
        };
        let allow_http = |endpoint: &str| endpoint.starts_with("http://");
        let built = match url.scheme {
            Scheme::S3 => {
                let mut builder = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(&url.bucket)
                    .with_region(text("region").unwrap_or_else(|| "us-east-1".into()))
                    .with_skip_signature(true)
                    .with_retry(retry)
                    .with_http_connector(connector);
                if let Some(endpoint) = text("endpoint-url") {
                    builder = builder
                        .with_allow_http(allow_http(&endpoint))
                        .with_endpoint(endpoint);
                }
                builder.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
            }
            Scheme::Gcs => {
                // A service-account "key" that holds no key
                // (`disable_oauth`): without one object_store would look
                // for credentials of its own (GOOGLE_APPLICATION_CREDENTIALS,
                // the metadata server), which the host must never hold;
                // and it is the only way to give it another API base.
                let base = text("storage-url").unwrap_or_else(|| GCS_BASE.to_string());
                let key = serde_json::json!({
                    "private_key": "",
                    "private_key_id": "",
                    "client_email": "",
                    "disable_oauth": true,
                    "gcs_base_url": base.trim_end_matches('/'),
                });
                object_store::gcp::GoogleCloudStorageBuilder::new()
                    .with_bucket_name(&url.bucket)
                    .with_service_account_key(key.to_string())
                    .with_skip_signature(true)
                    .with_retry(retry)
                    .with_http_connector(connector)
                    .build()
                    .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
            }
            Scheme::Azure => {
                let endpoint = azure_endpoint(&settings, url);
                // An empty bearer token, never sent (`skip_signature`): it
                // keeps object_store from setting up a credential chain of
                // its own (managed identity), which the host must never use.
                object_store::azure::MicrosoftAzureBuilder::new()
                    .with_account(url.account())
                    .with_container_name(&url.bucket)
                    .with_allow_http(allow_http(&endpoint))
                    .with_endpoint(endpoint)
                    .with_bearer_token_authorization("")
                    .with_skip_signature(true)
                    .with_retry(retry)
                    .with_http_connector(connector)
                    .build()
                    .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
            }
            Scheme::File => unreachable!("file:// is written directly"),
        };
        built.map_err(|e| BlobFailure::new(format!("{url}: {e}")))
    }

    /// Azure's Delete Blob, one request through [`AuthorizedHttp`]:
    /// object_store deletes through Blob Batch, whose sub-requests each
    /// need an authorization of their own, which the HTTP-client hook (one
    /// request, one authorization) cannot give. A blob that is not there
    /// is not an error; a container that is not there is.
    async fn delete_azure_blob(&self, url: &StoreUrl) -> Result<(), BlobFailure> {
        let (settings, connector) = self.connector(url)?;
        let failed = |why: String| BlobFailure::new(format!("deleting {url}: {why}"));
        let endpoint = azure_endpoint(&settings, url);
        let mut target: url::Url = endpoint
            .parse()
            .map_err(|e| failed(format!("endpoint {endpoint}: {e}")))?;
        target
            .path_segments_mut()
            .map_err(|()| failed(format!("endpoint {endpoint} cannot take a path")))?
            .pop_if_empty()
            .push(&url.bucket)
            .extend(url.key.split('/'));
        let request = http::Request::builder()
            .method(http::Method::DELETE)
            .uri(target.as_str())
            .header("x-ms-version", AZURE_API_VERSION)
            .header(
                "x-ms-date",
                chrono::Utc::now()
                    .format("%a, %d %b %Y %H:%M:%S GMT")
                    .to_string(),
            )
            .header("content-length", "0")
            .body(object_store::client::HttpRequestBody::empty())
            .map_err(|e| failed(e.to_string()))?;
        let client = connector
            .connect(&ClientOptions::default())
            .map_err(|e| failed(e.to_string()))?;
        let response = client
            .execute(request)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let code = response
            .headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        match code.as_str() {
            "BlobNotFound" => Ok(()),
            _ => Err(BlobFailure {
                message: format!("deleting {url}: {status} {code}"),
                missing: code == "ContainerNotFound",
            }),
        }
    }
}

/// The x-ms-version of the requests the host makes to Azure itself (the
/// one object_store 0.14 sends).
const AZURE_API_VERSION: &str = "2023-11-03";

/// Where an Azure account's Blob Storage is reached: the environment's
/// `blob-endpoints` entry for the account (a stand-in), else the URL's own
/// host (which names the cloud: public, US Government, China).
fn azure_endpoint(settings: &serde_json::Value, url: &StoreUrl) -> String {
    settings
        .get("blob-endpoints")
        .and_then(|m| m.get(url.account()))
        .and_then(|v| v.as_str())
        .map(|e| e.trim_end_matches('/').to_string())
        .unwrap_or_else(|| format!("https://{}", url.host))
}

impl BlobClient {
    /// The environment's settings and the HTTP-client hook that has it
    /// authorize each request for `url`.
    fn connector(
        &self,
        url: &StoreUrl,
    ) -> Result<(serde_json::Value, AuthorizedConnector), BlobFailure> {
        let authorizer = self.authorizer.clone().ok_or_else(|| {
            BlobFailure::new(format!(
                "{url} needs the credentials of a cloud environment (environment.type: {}), and the configured environment lends none",
                match url.scheme {
                    Scheme::S3 => "aws",
                    Scheme::Gcs => "gcp",
                    _ => "azure",
                }
            ))
        })?;
        let settings: serde_json::Value = authorizer
            .settings()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        let connector = AuthorizedConnector {
            authorizer,
            requester: self.requester.clone(),
            s3: url.scheme == Scheme::S3,
        };
        Ok((settings, connector))
    }
}

/// The start-up check of the Kaniko builder's `builder.build-context-store`:
/// its store must exist and be listable with the environment's
/// credentials. The error names the key, the URL and the store's error.
pub async fn check_build_context_store(
    url: &str,
    authorizer: Option<Arc<dyn EnvironmentAuthorizer>>,
) -> Result<(), String> {
    let failed = |why: String| format!("builder.build-context-store {url}: {why}");
    let parsed = StoreUrl::parse(url).map_err(failed)?;
    let client = BlobClient {
        authorizer,
        requester: "launch-agent (start-up check of builder.build-context-store)".into(),
    };
    client
        .exists_store(&parsed)
        .await
        .map_err(|f| failed(f.message))?;
    tracing::info!(url, "the build-context store exists");
    Ok(())
}

/// object_store's HTTP-client hook: makes an [`AuthorizedHttp`] per store.
#[derive(Clone)]
struct AuthorizedConnector {
    authorizer: Arc<dyn EnvironmentAuthorizer>,
    requester: String,
    s3: bool,
}

impl fmt::Debug for AuthorizedConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizedConnector")
            .field("environment", &self.authorizer.label())
            .finish()
    }
}

impl HttpConnector for AuthorizedConnector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        crate::clients::tls::install_crypto_provider();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| object_store::Error::Generic {
                store: "blob",
                source: Box::new(e),
            })?;
        Ok(HttpClient::new(AuthorizedHttp {
            client,
            connector: self.clone(),
        }))
    }
}

/// Sends each request object_store makes, after the environment has
/// authorized it (see the module's documentation).
#[derive(Debug)]
pub struct AuthorizedHttp {
    client: reqwest::Client,
    connector: AuthorizedConnector,
}

/// An [`HttpError`] of `kind` with `message`.
fn http_error(kind: HttpErrorKind, message: String) -> HttpError {
    HttpError::new(kind, std::io::Error::other(message))
}

#[async_trait::async_trait]
impl HttpService for AuthorizedHttp {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let (mut parts, body) = request.into_parts();
        // The body is in memory (a part at most): hash it frame by frame.
        let mut hasher = Sha256::new();
        let mut frames = body.clone();
        while let Some(frame) = frames.frame().await {
            if let Ok(data) = frame?.into_data() {
                hasher.update(&data);
            }
        }
        let body_sha256 = hex::encode(hasher.finalize());
        if self.connector.s3 {
            // What object_store would have set had it signed: S3 wants the
            // payload's hash in this header, signed.
            let value = http::HeaderValue::from_str(&body_sha256)
                .map_err(|e| http_error(HttpErrorKind::Unknown, e.to_string()))?;
            parts.headers.insert("x-amz-content-sha256", value);
        }
        let url = parts.uri.to_string();
        let mut headers: Vec<(String, String)> = parts
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        if let Some(authority) = parts.uri.authority() {
            let host = match (parts.uri.scheme_str(), authority.port_u16()) {
                (Some("https"), Some(443)) | (Some("http"), Some(80)) => authority.host(),
                _ => authority.as_str(),
            };
            headers.push(("host".into(), host.to_string()));
        }
        let added = self
            .connector
            .authorizer
            .authorize(
                &self.connector.requester,
                AuthRequest {
                    method: parts.method.to_string(),
                    url: url.clone(),
                    headers,
                    body_sha256,
                },
            )
            .await
            .map_err(|why| {
                http_error(
                    HttpErrorKind::Unknown,
                    format!(
                        "environment {} did not authorize the request: {why}",
                        self.connector.authorizer.label()
                    ),
                )
            })?;
        for (name, value) in added {
            let name = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| http_error(HttpErrorKind::Unknown, e.to_string()))?;
            let value = http::HeaderValue::from_str(&value)
                .map_err(|e| http_error(HttpErrorKind::Unknown, e.to_string()))?;
            parts.headers.insert(name, value);
        }
        let url: reqwest::Url = url
            .parse()
            .map_err(|e: url::ParseError| http_error(HttpErrorKind::Unknown, e.to_string()))?;
        let mut outgoing = reqwest::Request::new(parts.method, url);
        *outgoing.headers_mut() = parts.headers;
        *outgoing.body_mut() = Some(reqwest::Body::wrap(body));
        let response = self.client.execute(outgoing).await.map_err(|e| {
            let kind = if e.is_connect() {
                HttpErrorKind::Connect
            } else if e.is_timeout() {
                HttpErrorKind::Timeout
            } else {
                HttpErrorKind::Request
            };
            HttpError::new(kind, e)
        })?;
        let response: http::Response<reqwest::Body> = response.into();
        Ok(response.map(|body| {
            HttpResponseBody::new(body.map_err(|e| HttpError::new(HttpErrorKind::Interrupted, e)))
        }))
    }
}

/// The `blob-error` of `operation` on `url`.
fn blob_error(operation: &str, url: &str, failure: BlobFailure, denied: bool) -> BlobError {
    BlobError {
        operation: operation.to_string(),
        url: url.to_string(),
        message: failure.message,
        denied,
        missing: failure.missing,
    }
}

impl CapabilityState {
    /// Parses `url` and checks it against `grants.blob.stores`; logs and
    /// records a refusal.
    fn blob_granted(&self, operation: &str, url: &str) -> Result<StoreUrl, BlobError> {
        let parsed = StoreUrl::parse(url).map_err(|why| {
            blob_error(
                operation,
                url,
                BlobFailure::new(format!("{url:?}: {why}")),
                false,
            )
        })?;
        self.policy.blob(&parsed).map_err(|refusal| {
            blob_error(
                operation,
                url,
                BlobFailure::new(self.refused(&refusal)),
                true,
            )
        })?;
        Ok(parsed)
    }

    /// The client for this call's plugin.
    fn blob_client(&self) -> BlobClient {
        BlobClient {
            authorizer: self.hooks.authorizer.clone(),
            requester: self.plugin_name.to_string(),
        }
    }

    /// Records `what` and its outcome.
    fn record_blob<T>(&self, what: String, result: &Result<T, BlobError>) {
        self.record(|| HostCall::Asked {
            what,
            answer: match result {
                Ok(_) => "ok".into(),
                Err(e) => e.message.clone(),
            },
        });
    }
}

impl Host for CapabilityState {
    async fn upload_context(
        &mut self,
        dockerfile: String,
        url: String,
    ) -> wasmtime::Result<Result<Uploaded, BlobError>> {
        const OP: &str = "upload-context";
        let parsed = match self.blob_granted(OP, &url) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        if self.build_repositories.is_empty() {
            let e = blob_error(
                OP,
                &url,
                BlobFailure::new("a build context is uploaded only during a builder's build call"),
                false,
            );
            self.record_blob(
                format!("blob upload-context {url}"),
                &Err::<(), _>(e.clone()),
            );
            return Ok(Err(e));
        }
        let result = self
            .blob_client()
            .upload_context(self.job_source.clone(), dockerfile, &parsed)
            .await
            .map(|u| Uploaded {
                url: url.clone(),
                bytes: u.bytes,
                sha256: u.sha256,
            })
            .map_err(|f| blob_error(OP, &url, f, false));
        self.record_blob(format!("blob upload-context {url}"), &result);
        Ok(result)
    }

    async fn delete(&mut self, url: String) -> wasmtime::Result<Result<(), BlobError>> {
        const OP: &str = "delete";
        let parsed = match self.blob_granted(OP, &url) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        let result = self
            .blob_client()
            .delete(&parsed)
            .await
            .map_err(|f| blob_error(OP, &url, f, false));
        self.record_blob(format!("blob delete {url}"), &result);
        Ok(result)
    }

    async fn exists_store(&mut self, url: String) -> wasmtime::Result<Result<(), BlobError>> {
        const OP: &str = "exists-store";
        let parsed = match self.blob_granted(OP, &url) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        let result = self
            .blob_client()
            .exists_store(&parsed)
            .await
            .map_err(|f| blob_error(OP, &url, f, false));
        self.record_blob(format!("blob exists-store {url}"), &result);
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_print_back() {
        for text in [
            "s3://my-bucket/contexts/run1.tgz",
            "gs://my-bucket/a/b.tgz",
            "file:///mnt/kaniko/run1.tgz",
            "s3://my-bucket/",
            "https://acct1.blob.core.windows.net/contexts/launch/run1.tgz",
            "https://gov.blob.core.usgovcloudapi.net/ctx/",
        ] {
            assert_eq!(StoreUrl::parse(text).unwrap().to_string(), text);
        }
        assert!(
            StoreUrl::parse("s3://my-bucket/run1.tgz")
                .unwrap()
                .is_object()
        );
        assert!(!StoreUrl::parse("s3://my-bucket/ctx/").unwrap().is_object());
        // Host names are case-insensitive: kept lowercase.
        let upper = StoreUrl::parse("https://Acct1.BLOB.core.windows.net/ctx/k.tgz").unwrap();
        assert_eq!(upper.host, "acct1.blob.core.windows.net");
        assert_eq!(upper.account(), "acct1");
    }

    #[test]
    fn bad_urls_say_why() {
        for (text, why) in [
            ("https://acct.blob.core.windows.net/c/k", "container"),
            ("https://acct.blob.core.windows.net/Ctx/k", "container"),
            (
                "https://acct-1.blob.core.windows.net/ctx/k",
                "storage account",
            ),
            ("https://a.blob.core.windows.net/ctx/k", "storage account"),
            (
                "https://acct.blob.core.windows.net:8443/ctx/k",
                "must be s3://",
            ),
            ("https://example.com/ctx/k", "must be s3://"),
            ("ftp://x/y", "must be s3://"),
            ("s3://B/k", "bucket"),
            ("s3://ab/k", "bucket"),
            ("s3://bucket/a/../b", "segment"),
            ("s3://bucket/a//b", "segment"),
            ("file://relative/x", "absolute"),
            ("s3://bucket/k?x=1", "`?`"),
        ] {
            let e = StoreUrl::parse(text).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
        assert!(
            StorePrefix::parse("file:///")
                .unwrap_err()
                .contains("whole file system")
        );
    }

    #[test]
    fn a_prefix_grants_only_what_lies_under_it() {
        let p = StorePrefix::parse("s3://bucket/ctx").unwrap();
        let url = |t: &str| StoreUrl::parse(t).unwrap();
        assert!(p.contains(&url("s3://bucket/ctx/run.tgz")));
        assert!(p.contains(&url("s3://bucket/ctx/")));
        assert!(p.contains(&url("s3://bucket/ctx")));
        assert!(!p.contains(&url("s3://bucket/ctx-other/run.tgz")));
        assert!(!p.contains(&url("s3://bucket/run.tgz")));
        assert!(!p.contains(&url("s3://other-bucket/ctx/run.tgz")));
        assert!(!p.contains(&url("gs://bucket/ctx/run.tgz")));
        let whole = StorePrefix::parse("gs://bucket").unwrap();
        assert!(whole.contains(&url("gs://bucket/any/run.tgz")));
        let azure = StorePrefix::parse("https://acct.blob.core.windows.net/ctx/launch").unwrap();
        assert!(azure.contains(&url(
            "https://acct.blob.core.windows.net/ctx/launch/run.tgz"
        )));
        assert!(!azure.contains(&url(
            "https://other.blob.core.windows.net/ctx/launch/run.tgz"
        )));
        assert!(!azure.contains(&url("https://acct.blob.core.windows.net/ctx/run.tgz")));
        let dir = StorePrefix::parse("file:///mnt/kaniko/").unwrap();
        assert!(dir.contains(&url("file:///mnt/kaniko/run.tgz")));
        assert!(!dir.contains(&url("file:///mnt/other/run.tgz")));
    }
}
