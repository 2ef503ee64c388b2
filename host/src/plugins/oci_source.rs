//! Plugins pulled from OCI registries, by tag or by digest, kept in the
//! state dir so restarts work offline.
//!
//! A `plugins:` entry may name `oci: REGISTRY/REPOSITORY:TAG` (or
//! `@sha256:DIGEST`) instead of a `path`. The component is an OCI artifact
//! in the layout `wkg` and wasmCloud use: a manifest whose one layer has the
//! media type `application/wasm` (`plugins push` writes it; see
//! [`push`]).
//!
//! | step | what is checked |
//! |---|---|
//! | resolve | a digest reference is used as it is; a tag is resolved **once**, and the digest recorded in the state dir, so later starts load the same bytes with no network |
//! | manifest | its bytes hash to the digest (a registry cannot swap it) |
//! | component | its size is at most 64 MiB, and its bytes hash to the layer's digest |
//! | signature | with `verify: {key}`: a cosign signature by that key over this manifest digest ([`super::signature`]), **before** anything is cached or compiled |
//!
//! The cache (`<state dir>/plugins/oci/`) is content-addressed: `blobs/`
//! holds manifests and components under their sha256, `refs/` the digest a
//! tag resolved to, `signatures/` the signatures found for a manifest. Every
//! load checks the cached bytes against their digests and the signature
//! again, so a cache edited on disk is refused as a tampered registry would
//! be. To follow a tag to a newer push, `plugins pull --update` resolves it
//! again.

use super::signature::{self, SignatureRecord};
use crate::config::{OciPull, PluginEntry, SecretSource};
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The layer media type of a Wasm component artifact.
pub const WASM_LAYER: &str = "application/wasm";
/// The config media type of a Wasm component artifact.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// The OCI image manifest media type.
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The largest component the agent pulls (as for plugin files).
const MAX_COMPONENT_BYTES: u64 = 64 * 1024 * 1024;
/// The largest manifest the agent reads.
const MAX_MANIFEST_BYTES: usize = 1024 * 1024;
/// How long one pull may take in all.
const PULL_TIMEOUT: Duration = Duration::from_secs(120);

/// A component pulled (or found in the cache) and checked.
#[derive(Clone, Debug)]
pub struct Pulled {
    /// The component file in the cache.
    pub path: PathBuf,
    /// The reference as the config wrote it.
    pub reference: String,
    /// The artifact's manifest digest (`sha256:...`).
    pub manifest_digest: String,
    /// The artifact by digest: `REGISTRY/REPOSITORY@sha256:...`.
    pub pinned: String,
    /// Whether a signature was checked, and by which key.
    pub verified_by: Option<PathBuf>,
}

/// Parses an `oci:` reference; the error says what is wrong with it.
pub fn parse_reference(text: &str) -> Result<Reference, String> {
    let reference: Reference = text.parse().map_err(|e| {
        format!(
            "`{}` is not an OCI reference: {e}",
            crate::text::for_log_max(text, 200)
        )
    })?;
    if reference.tag().is_none() && reference.digest().is_none() {
        return Err(format!(
            "`{}` names no tag or digest: add `:TAG` or `@sha256:DIGEST`",
            crate::text::for_log_max(text, 200)
        ));
    }
    if let Some(digest) = reference.digest()
        && !is_sha256_digest(digest)
    {
        return Err(format!(
            "`{}`: the digest must be `sha256:` and 64 hex digits",
            crate::text::for_log_max(text, 200)
        ));
    }
    Ok(reference)
}

fn is_sha256_digest(digest: &str) -> bool {
    digest
        .strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The state dir's cache of pulled plugins.
pub struct OciCache {
    root: PathBuf,
}

/// What `refs/` records for a tag.
#[derive(Serialize, Deserialize)]
struct RefRecord {
    reference: String,
    manifest: String,
}

impl OciCache {
    /// The cache under `root` (`<state dir>/plugins/oci`).
    pub fn new(root: PathBuf) -> Self {
        OciCache { root }
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.replacen(':', "/", 1).replace(['/', '\\'], "-"))
    }

    fn ref_path(&self, reference: &str) -> PathBuf {
        self.root
            .join("refs")
            .join(format!("{}.json", hex::encode(Sha256::digest(reference))))
    }

    fn signature_path(&self, manifest_digest: &str) -> PathBuf {
        self.root
            .join("signatures")
            .join(format!("{}.json", manifest_digest.replace(':', "-")))
    }

    /// The cached blob `digest`, if present and its bytes match it.
    fn blob(&self, digest: &str) -> Option<Vec<u8>> {
        let bytes = std::fs::read(self.blob_path(digest)).ok()?;
        (sha256_digest(&bytes) == digest).then_some(bytes)
    }

    fn put_blob(&self, digest: &str, bytes: &[u8]) -> Result<PathBuf, String> {
        let path = self.blob_path(digest);
        write_atomically(&path, bytes)?;
        Ok(path)
    }

    fn recorded(&self, reference: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.ref_path(reference)).ok()?;
        let record: RefRecord = serde_json::from_str(&text).ok()?;
        (record.reference == reference && is_sha256_digest(&record.manifest))
            .then_some(record.manifest)
    }

    fn record(&self, reference: &str, manifest: &str) -> Result<(), String> {
        let record = RefRecord {
            reference: reference.to_string(),
            manifest: manifest.to_string(),
        };
        let text = serde_json::to_vec_pretty(&record).map_err(|e| e.to_string())?;
        write_atomically(&self.ref_path(reference), &text)
    }

    fn signatures(&self, manifest_digest: &str) -> Option<Vec<SignatureRecord>> {
        let text = std::fs::read_to_string(self.signature_path(manifest_digest)).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn put_signatures(
        &self,
        manifest_digest: &str,
        records: &[SignatureRecord],
    ) -> Result<(), String> {
        let text = serde_json::to_vec_pretty(records).map_err(|e| e.to_string())?;
        write_atomically(&self.signature_path(manifest_digest), &text)
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// How to reach a registry: its client and credentials.
pub struct RegistryAccess {
    client: Client,
    auth: RegistryAuth,
}

impl RegistryAccess {
    /// Access to `reference`'s registry with `pull`'s settings; the
    /// password is read from `secrets`.
    pub fn new(
        reference: &Reference,
        pull: Option<&OciPull>,
        secrets: &BTreeMap<String, SecretSource>,
    ) -> Result<Self, String> {
        let insecure = pull.is_some_and(|p| p.insecure);
        let auth = match pull.and_then(|p| p.username.as_ref()) {
            None => RegistryAuth::Anonymous,
            Some(user) => {
                let password = match pull.and_then(|p| p.password_secret.as_ref()) {
                    None => String::new(),
                    Some(name) => secrets
                        .get(name)
                        .ok_or_else(|| format!("secret {name:?} is not in the `secrets:` map"))?
                        .read()
                        .map_err(|e| format!("secret {name:?}: {e}"))?,
                };
                RegistryAuth::Basic(user.clone(), password)
            }
        };
        Ok(Self::with_auth(reference, insecure, auth))
    }

    /// Access with explicit credentials (`plugins push`).
    pub fn with_auth(reference: &Reference, insecure: bool, auth: RegistryAuth) -> Self {
        let protocol = if insecure {
            ClientProtocol::HttpsExcept(vec![reference.resolve_registry().to_string()])
        } else {
            ClientProtocol::Https
        };
        crate::clients::tls::install_crypto_provider();
        let client = Client::new(ClientConfig {
            protocol,
            ..Default::default()
        });
        RegistryAccess { client, auth }
    }
}

/// Pulls (or finds in `cache`) the component of plugin `name`'s `oci`
/// reference, checked as the module doc says; `update` resolves a tag again
/// even when a digest is recorded for it.
pub async fn fetch(
    name: &str,
    entry: &PluginEntry,
    secrets: &BTreeMap<String, SecretSource>,
    cache: &OciCache,
    update: bool,
) -> Result<Pulled, String> {
    let Some(text) = entry.oci.as_ref().map(|r| r.value.as_str()) else {
        return Err(format!("plugin `{name}` has no `oci` reference"));
    };
    let reference = parse_reference(text)?;
    let key = match &entry.verify {
        Some(policy) => Some((policy.key.clone(), signature::PublicKey::read(&policy.key)?)),
        None => None,
    };
    let access = std::cell::OnceCell::new();
    let access = || -> Result<&RegistryAccess, String> {
        if access.get().is_none() {
            let made = RegistryAccess::new(&reference, entry.pull.as_ref(), secrets)?;
            let _ = access.set(made);
        }
        Ok(access.get().expect("set above"))
    };
    let work = async {
        // 1. The manifest digest.
        let manifest_digest = match reference.digest() {
            Some(digest) => digest.to_string(),
            None => match cache.recorded(text).filter(|_| !update) {
                Some(digest) => digest,
                None => {
                    let access = access()?;
                    let (bytes, digest) = pull_manifest(access, &reference).await?;
                    cache.put_blob(&digest, &bytes)?;
                    cache.record(text, &digest)?;
                    digest
                }
            },
        };
        let by_digest = Reference::with_digest(
            reference.registry().to_string(),
            reference.repository().to_string(),
            manifest_digest.clone(),
        );
        // 2. The manifest, checked against its digest.
        let manifest_bytes = match cache.blob(&manifest_digest) {
            Some(bytes) => bytes,
            None => {
                let (bytes, digest) = pull_manifest(access()?, &by_digest).await?;
                if digest != manifest_digest {
                    return Err(format!(
                        "the registry's manifest for {by_digest} hashes to {digest}: refusing it"
                    ));
                }
                cache.put_blob(&manifest_digest, &bytes)?;
                bytes
            }
        };
        let layer = component_layer(&manifest_bytes, &by_digest)?;
        // 3. The signature, before anything of the component is kept.
        if let Some((key_path, key)) = &key {
            let not_signed = |why: String| {
                format!(
                    "{by_digest} is not signed by the key {}: {why}; refusing to load it",
                    key_path.display()
                )
            };
            let records = match cache.signatures(&manifest_digest) {
                Some(records) if !records.is_empty() => records,
                _ => fetch_signatures(access()?, &by_digest)
                    .await
                    .map_err(not_signed)?,
            };
            signature::verify_any(&records, key, &manifest_digest).map_err(not_signed)?;
            cache.put_signatures(&manifest_digest, &records)?;
        }
        // 4. The component, checked against the layer's digest.
        let path = match cache.blob(&layer.digest) {
            Some(_) => cache.blob_path(&layer.digest),
            None => {
                let bytes = pull_blob(access()?, &by_digest, &layer).await?;
                cache.put_blob(&layer.digest, &bytes)?
            }
        };
        Ok(Pulled {
            path,
            pinned: by_digest.whole(),
            reference: text.to_string(),
            manifest_digest,
            verified_by: key.as_ref().map(|(path, _)| path.clone()),
        })
    };
    tokio::time::timeout(PULL_TIMEOUT, work)
        .await
        .map_err(|_| {
            format!(
                "pulling {text} took over {} s; gave up",
                PULL_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| format!("plugins.{name}.oci: {e}"))
}

async fn pull_manifest(
    access: &RegistryAccess,
    reference: &Reference,
) -> Result<(Vec<u8>, String), String> {
    let (bytes, _) = access
        .client
        .pull_manifest_raw(reference, &access.auth, &[OCI_MANIFEST])
        .await
        .map_err(|e| format!("cannot pull the manifest of {reference}: {e}"))?;
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(format!(
            "the manifest of {reference} is over {MAX_MANIFEST_BYTES} bytes"
        ));
    }
    // The digest is ours, of the bytes received, not the registry's header.
    let digest = sha256_digest(&bytes);
    Ok((bytes.to_vec(), digest))
}

/// The manifest's one `application/wasm` layer.
fn component_layer(manifest: &[u8], reference: &Reference) -> Result<OciDescriptor, String> {
    let manifest: OciImageManifest = serde_json::from_slice(manifest)
        .map_err(|e| format!("the manifest of {reference} is not an OCI image manifest: {e}"))?;
    let mut layers = manifest
        .layers
        .into_iter()
        .filter(|l| l.media_type == WASM_LAYER);
    let Some(layer) = layers.next() else {
        return Err(format!(
            "{reference} is not a Wasm component artifact: no layer of media type {WASM_LAYER}"
        ));
    };
    if layers.next().is_some() {
        return Err(format!(
            "{reference} has more than one {WASM_LAYER} layer: which is the plugin?"
        ));
    }
    if !is_sha256_digest(&layer.digest) {
        return Err(format!(
            "{reference}: the component layer's digest {:?} is not sha256",
            layer.digest
        ));
    }
    if layer.size < 0 || layer.size as u64 > MAX_COMPONENT_BYTES {
        return Err(format!(
            "{reference}: the component is {} bytes; plugins are at most {MAX_COMPONENT_BYTES}",
            layer.size
        ));
    }
    Ok(layer)
}

async fn pull_blob(
    access: &RegistryAccess,
    reference: &Reference,
    layer: &OciDescriptor,
) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::with_capacity(layer.size.max(0) as usize);
    let mut stream = access
        .client
        .pull_blob_stream(reference, layer)
        .await
        .map_err(|e| format!("cannot pull the component of {reference}: {e}"))?;
    use futures_util::StreamExt as _;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            let mismatch = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<oci_client::errors::DigestError>())
                .is_some_and(|d| matches!(d, oci_client::errors::DigestError::VerificationError { .. }));
            if mismatch {
                format!(
                    "the component the registry sent for {reference} does not hash to {}: refusing it (tampered or corrupt): {e}",
                    layer.digest
                )
            } else {
                format!("pulling the component of {reference}: {e}")
            }
        })?;
        if (bytes.len() + chunk.len()) as u64 > MAX_COMPONENT_BYTES.min(layer.size.max(0) as u64) {
            return Err(format!(
                "the registry sent more than the {} bytes the manifest of {reference} says: refusing it",
                layer.size
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    let digest = sha256_digest(&bytes);
    if digest != layer.digest {
        return Err(format!(
            "the component the registry sent for {reference} hashes to {digest}, not {}: refusing it (tampered or corrupt)",
            layer.digest
        ));
    }
    Ok(bytes)
}

/// The signatures cosign stores for `reference` (by digest): the manifest
/// at tag `sha256-<hex>.sig` in the same repository, one simple-signing
/// payload per layer with its signature in an annotation.
async fn fetch_signatures(
    access: &RegistryAccess,
    reference: &Reference,
) -> Result<Vec<SignatureRecord>, String> {
    let digest = reference.digest().unwrap_or_default();
    let tag = signature::signature_tag(digest);
    let sig_ref = Reference::with_tag(
        reference.registry().to_string(),
        reference.repository().to_string(),
        tag.clone(),
    );
    let (bytes, _) = match access
        .client
        .pull_manifest_raw(&sig_ref, &access.auth, &[OCI_MANIFEST])
        .await
    {
        Ok(found) => found,
        Err(e) if is_not_found(&e) => {
            return Err(format!(
                "it has no signature (no `{tag}` in its repository)"
            ));
        }
        Err(e) => return Err(format!("cannot pull its signature `{tag}`: {e}")),
    };
    let manifest: OciImageManifest = serde_json::from_slice(&bytes)
        .map_err(|e| format!("its signature `{tag}` is not an OCI manifest: {e}"))?;
    let mut records = Vec::new();
    for layer in manifest
        .layers
        .iter()
        .filter(|l| l.media_type == signature::SIMPLE_SIGNING)
    {
        let Some(sig) = layer
            .annotations
            .as_ref()
            .and_then(|a| a.get(signature::SIGNATURE_ANNOTATION))
        else {
            continue;
        };
        if layer.size < 0 || layer.size as usize > signature::MAX_PAYLOAD_BYTES {
            continue;
        }
        let payload = pull_blob(access, &sig_ref, layer).await?;
        records.push(SignatureRecord::new(&payload, sig));
    }
    if records.is_empty() {
        return Err(format!("its signature manifest `{tag}` holds no signature"));
    }
    Ok(records)
}

/// Whether the registry answered that the manifest does not exist.
fn is_not_found(error: &oci_client::errors::OciDistributionError) -> bool {
    use oci_client::errors::{OciDistributionError, OciErrorCode};
    match error {
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
            matches!(
                e.code,
                OciErrorCode::ManifestUnknown | OciErrorCode::NotFound
            )
        }),
        _ => false,
    }
}

/// Pushes the component `wasm` to `reference` as a Wasm component artifact
/// and returns the manifest digest; with `signing_key`, also pushes a cosign
/// signature of that digest.
pub async fn push(
    wasm: Vec<u8>,
    reference: &Reference,
    access: &RegistryAccess,
    signing_key: Option<&signature::SigningKey>,
) -> Result<String, String> {
    let layer_digest = sha256_digest(&wasm);
    let config = serde_json::json!({
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer_digest],
    });
    let layers = [ImageLayer::new(wasm, WASM_LAYER.to_string(), None)];
    let config = Config::new(
        serde_json::to_vec(&config).map_err(|e| e.to_string())?,
        WASM_CONFIG.to_string(),
        None,
    );
    let manifest = OciImageManifest::build(&layers, &config, None);
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
    access
        .client
        .push(reference, &layers, config, &access.auth, Some(manifest))
        .await
        .map_err(|e| format!("cannot push to {reference}: {e}"))?;
    // The registry stores the manifest as oci-client serialised it; ask it
    // for the digest rather than trusting our own serialisation to match.
    let digest = access
        .client
        .fetch_manifest_digest(reference, &access.auth)
        .await
        .unwrap_or_else(|_| sha256_digest(&manifest_bytes));
    if let Some(key) = signing_key {
        let identity = format!("{}/{}", reference.registry(), reference.repository());
        let payload = signature::payload(&identity, &digest);
        let sig = key.sign(&payload);
        let mut annotations = BTreeMap::new();
        annotations.insert(signature::SIGNATURE_ANNOTATION.to_string(), sig);
        let layers = [ImageLayer::new(
            payload,
            signature::SIMPLE_SIGNING.to_string(),
            Some(annotations),
        )];
        let config = Config::new(
            b"{}".to_vec(),
            "application/vnd.oci.image.config.v1+json".to_string(),
            None,
        );
        let sig_ref = Reference::with_tag(
            reference.registry().to_string(),
            reference.repository().to_string(),
            signature::signature_tag(&digest),
        );
        access
            .client
            .push(&sig_ref, &layers, config, &access.auth, None)
            .await
            .map_err(|e| format!("cannot push the signature to {sig_ref}: {e}"))?;
    }
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_need_a_tag_or_a_sha256_digest() {
        assert!(parse_reference("registry.example.com/plugins/x:1.0").is_ok());
        let digest = format!("registry.example.com/plugins/x@sha256:{}", "a".repeat(64));
        assert!(parse_reference(&digest).is_ok());
        let err = parse_reference("not a reference").unwrap_err();
        assert!(err.contains("is not an OCI reference"), "{err}");
    }

    #[test]
    fn a_cached_blob_that_no_longer_matches_its_digest_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let cache = OciCache::new(dir.path().to_path_buf());
        let digest = sha256_digest(b"component");
        let path = cache.put_blob(&digest, b"component").unwrap();
        assert_eq!(cache.blob(&digest).as_deref(), Some(&b"component"[..]));
        std::fs::write(path, b"tampered").unwrap();
        assert_eq!(cache.blob(&digest), None);
    }

    #[test]
    fn a_manifest_without_a_wasm_layer_is_refused_naming_the_media_type() {
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": WASM_CONFIG, "digest": sha256_digest(b"{}"), "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256_digest(b"x"), "size": 1}],
        });
        let reference = parse_reference("r.example/p:1").unwrap();
        let err = component_layer(&serde_json::to_vec(&manifest).unwrap(), &reference).unwrap_err();
        assert!(err.contains(WASM_LAYER), "{err}");
    }
}
