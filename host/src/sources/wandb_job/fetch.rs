//! Fetching a W&B Launch *job artifact* (`entity/project/name:alias`) over
//! the W&B API the way the W&B agent does (`LaunchProject._fetch_job`,
//! wandb 0.31.0; see `tests/wandb_fake/README.md`, "Job artifacts"):
//!
//! 1. `ArtifactMembershipByName` → the job artifact (type `job`, state
//!    `COMMITTED`) and its resolved version `vN`;
//! 2. `FetchArtifactManifest` + GET of the manifest's `directUrl` (no W&B
//!    credentials: it is a pre-signed storage URL);
//! 3. `GetArtifactMembershipFileUrls` (paged) → a `directUrl` per file;
//! 4. GET `wandb-job.json`, `requirements.frozen.txt` (and `diff.patch`),
//!    each checked against the manifest's size and base64 MD5;
//! 5. by `source_type`: `artifact` → the code artifact (`ArtifactByID`, or
//!    by name) is downloaded into the destination the same way, with the
//!    job's `requirements.frozen.txt`; `repo` → the git remote and commit;
//!    `image` → the image.
//!
//! A file whose `directUrl` is missing or fails is fetched from the
//! server's authenticated fallback path
//! `/artifactsV2/default/E/P/COLLECTION/BIRTH_ID/MD5HEX/BASENAME`, as the
//! Python client does.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::{DIFF_PATCH, FetchError, FetchedJob, REQUIREMENTS, RepoExtras};
use crate::wandb::Client;

/// Files per `GetArtifactMembershipFileUrls` page (what the client asks).
const PER_PAGE: u64 = 5000;
/// At most this many pages (25 million files) before giving up on a
/// server that keeps saying there is more.
const MAX_PAGES: usize = 5000;
/// The largest manifest accepted.
const MAX_MANIFEST_BYTES: u64 = 256 << 20;
/// The timeout of one file download (the GraphQL timeout is for small
/// answers).
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// The job's description.
const JOB_JSON: &str = "wandb-job.json";

/// `entity/project/name:alias`, split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ArtifactName {
    /// The entity.
    pub entity: String,
    /// The project.
    pub project: String,
    /// The collection name.
    pub name: String,
    /// The alias or version (`latest`, `v3`).
    pub alias: String,
}

impl ArtifactName {
    /// Parses `entity/project/name[:alias]` (exactly two `/`; the alias,
    /// after the last `:`, defaults to `latest`).
    pub(super) fn parse(text: &str) -> Result<Self, FetchError> {
        let bad = |why: &str| {
            FetchError(format!(
                "job artifact name {text:?} is not valid: {why} (expected ENTITY/PROJECT/NAME:ALIAS, \
                 e.g. team/proj/my-job:latest)"
            ))
        };
        let parts: Vec<&str> = text.split('/').collect();
        let [entity, project, rest] = parts.as_slice() else {
            return Err(bad("it needs exactly two `/`"));
        };
        let (name, alias) = match rest.rsplit_once(':') {
            Some((name, alias)) => (name, alias),
            None => (*rest, "latest"),
        };
        for (what, value) in [
            ("entity", *entity),
            ("project", *project),
            ("name", name),
            ("alias", alias),
        ] {
            if value.trim().is_empty() {
                return Err(bad(&format!("the {what} is empty")));
            }
            if value.chars().any(char::is_control) {
                return Err(bad(&format!("the {what} has control characters")));
            }
        }
        Ok(ArtifactName {
            entity: entity.to_string(),
            project: project.to_string(),
            name: name.to_string(),
            alias: alias.to_string(),
        })
    }
}

/// One artifact version, resolved on the server.
#[derive(Clone, Debug)]
struct Resolved {
    /// The artifact id.
    id: String,
    /// Canonical entity name.
    entity: String,
    /// Canonical project name.
    project: String,
    /// Canonical collection name.
    collection: String,
    /// The version index (`vN`).
    version: u64,
}

impl Resolved {
    /// `entity/project/collection:vN`.
    fn full_name(&self) -> String {
        format!(
            "{}/{}/{}:v{}",
            self.entity, self.project, self.collection, self.version
        )
    }
}

/// One manifest entry.
#[derive(Clone, Debug)]
struct Entry {
    /// base64 of the MD5 of the bytes.
    digest: String,
    /// Size in bytes.
    size: u64,
    /// The artifact that first stored it (for the fallback URL).
    birth_artifact_id: Option<String>,
}

/// What a fetch needs: the GraphQL client and the job's name for errors.
struct Fetcher<'a> {
    client: &'a Client,
    job: &'a str,
}

/// Fetches job artifact `job` (see the module docs) into `dest`.
pub(super) async fn fetch_job(
    client: &Client,
    job: &str,
    dest: &Path,
) -> Result<FetchedJob, FetchError> {
    let name = ArtifactName::parse(job)?;
    let fetcher = Fetcher { client, job };
    let resolved = fetcher.by_name(&name, "job").await?;
    let manifest = fetcher.manifest(&resolved).await?;
    let urls = fetcher.file_urls(&resolved).await?;
    let Some(job_entry) = manifest.get(JOB_JSON) else {
        return Err(fetcher.error(format!(
            "{} has no {JOB_JSON}; is it a launch job?",
            resolved.full_name()
        )));
    };
    let job_json = fetcher
        .download(&resolved, JOB_JSON, job_entry, urls.get(JOB_JSON))
        .await?;
    let mut extras = BTreeMap::new();
    for extra in [REQUIREMENTS, DIFF_PATCH] {
        if let Some(entry) = manifest.get(extra) {
            let bytes = fetcher
                .download(&resolved, extra, entry, urls.get(extra))
                .await?;
            extras.insert(extra, bytes);
        }
    }
    let spec: Value = serde_json::from_slice(&job_json).map_err(|e| {
        fetcher.error(format!(
            "{JOB_JSON} of {} is not JSON: {e}",
            resolved.full_name()
        ))
    })?;
    let source_type = spec["source_type"]
        .as_str()
        .ok_or_else(|| {
            fetcher.error(format!(
                "{JOB_JSON} of {} has no source_type",
                resolved.full_name()
            ))
        })?
        .to_string();
    let source = &spec["source"];
    let entrypoint = match &source["entrypoint"] {
        Value::Null => Vec::new(),
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                fetcher.error(format!(
                    "{JOB_JSON}: source.entrypoint must be a list of strings"
                ))
            })?,
        _ => {
            return Err(fetcher.error(format!(
                "{JOB_JSON}: source.entrypoint must be a list of strings"
            )));
        }
    };
    let mut fetched = FetchedJob {
        source_id: resolved.full_name(),
        source_type: source_type.clone(),
        dir: None,
        git: None,
        repo_extras: RepoExtras::default(),
        image: None,
        entrypoint,
    };
    match source_type.as_str() {
        "artifact" => {
            let reference = source["artifact"]
                .as_str()
                .ok_or_else(|| fetcher.error(format!("{JOB_JSON}: source.artifact is missing")))?;
            let code = fetcher.code_artifact(reference).await?;
            let code_manifest = fetcher.manifest(&code).await?;
            let code_urls = fetcher.file_urls(&code).await?;
            tokio::fs::create_dir_all(dest)
                .await
                .map_err(|e| fetcher.error(format!("cannot create {}: {e}", dest.display())))?;
            for (path, entry) in &code_manifest {
                let target = safe_path(dest, path).ok_or_else(|| {
                    fetcher.error(format!(
                        "{} holds a file with an unsafe path {path:?}; refused",
                        code.full_name()
                    ))
                })?;
                let bytes = fetcher
                    .download(&code, path, entry, code_urls.get(path))
                    .await?;
                write(&fetcher, &target, &bytes).await?;
            }
            if let Some(requirements) = extras.get(REQUIREMENTS) {
                write(&fetcher, &dest.join(REQUIREMENTS), requirements).await?;
            }
            fetched.dir = Some(dest.to_path_buf());
        }
        "repo" => {
            let git = &source["git"];
            let (Some(remote), Some(commit)) = (git["remote"].as_str(), git["commit"].as_str())
            else {
                return Err(fetcher.error(format!(
                    "{JOB_JSON}: a repo job needs source.git.remote and source.git.commit"
                )));
            };
            fetched.git = Some((remote.to_string(), commit.to_string()));
            fetched.repo_extras = RepoExtras {
                diff_patch: extras.remove(DIFF_PATCH),
                requirements: extras.remove(REQUIREMENTS),
            };
        }
        "image" => {
            let image = source["image"]
                .as_str()
                .filter(|image| !image.trim().is_empty())
                .ok_or_else(|| {
                    fetcher.error(format!("{JOB_JSON}: an image job needs source.image"))
                })?;
            fetched.image = Some(image.to_string());
        }
        other => {
            return Err(fetcher.error(format!(
                "{JOB_JSON}: unknown source_type {other:?} (expected artifact, repo or image)"
            )));
        }
    }
    Ok(fetched)
}

impl Fetcher<'_> {
    /// An error naming the job.
    fn error(&self, message: String) -> FetchError {
        FetchError(
            self.client
                .scrub(&format!("job artifact {}: {message}", self.job)),
        )
    }

    /// Wraps an error of a call with the job's name.
    fn context(&self, error: impl std::fmt::Display) -> FetchError {
        self.error(error.to_string())
    }

    /// `ArtifactMembershipByName`, checked to be of type `want_type` and
    /// committed.
    async fn by_name(&self, name: &ArtifactName, want_type: &str) -> Result<Resolved, FetchError> {
        let data = self
            .client
            .run(
                "ArtifactMembershipByName",
                json!({
                    "entity": name.entity,
                    "project": name.project,
                    "name": format!("{}:{}", name.name, name.alias),
                    "includeAliases": false,
                }),
            )
            .await
            .map_err(|e| self.context(e))?;
        let shown = format!(
            "{}/{}/{}:{}",
            name.entity, name.project, name.name, name.alias
        );
        if data["project"].is_null() {
            return Err(self.error(format!(
                "project {}/{} not found on W&B (or not visible to this API key)",
                name.entity, name.project
            )));
        }
        let membership = &data["project"]["artifactCollectionMembership"];
        if membership.is_null() {
            return Err(self.error(format!(
                "no artifact {shown} (no such collection, version or alias)"
            )));
        }
        let artifact = &membership["artifact"];
        let collection = &membership["artifactCollection"];
        let version = membership["versionIndex"]
            .as_u64()
            .or_else(|| artifact["versionIndex"].as_u64());
        self.check(&shown, artifact, want_type)?;
        let resolved = Resolved {
            id: str_at(artifact, &["id"]).unwrap_or_default(),
            entity: str_at(collection, &["project", "entity", "name"])
                .unwrap_or_else(|| name.entity.clone()),
            project: str_at(collection, &["project", "name"])
                .unwrap_or_else(|| name.project.clone()),
            collection: str_at(collection, &["name"]).unwrap_or_else(|| name.name.clone()),
            version: version.ok_or_else(|| {
                self.error(format!("the server gave no version index for {shown}"))
            })?,
        };
        if resolved.id.is_empty() {
            return Err(self.error(format!("the server gave no artifact id for {shown}")));
        }
        Ok(resolved)
    }

    /// `ArtifactByID`, checked to be of type `want_type` and committed.
    async fn by_id(&self, id: &str, want_type: &str) -> Result<Resolved, FetchError> {
        let data = self
            .client
            .run("ArtifactByID", json!({"id": id, "includeAliases": true}))
            .await
            .map_err(|e| self.context(e))?;
        let artifact = &data["artifact"];
        let shown = format!("artifact id {id}");
        if artifact.is_null() {
            return Err(self.error(format!("{shown} not found on W&B")));
        }
        self.check(&shown, artifact, want_type)?;
        let sequence = &artifact["artifactSequence"];
        let missing = |what: &str| self.error(format!("the server gave no {what} for {shown}"));
        Ok(Resolved {
            id: str_at(artifact, &["id"]).unwrap_or_else(|| id.to_string()),
            entity: str_at(sequence, &["project", "entity", "name"])
                .ok_or_else(|| missing("entity"))?,
            project: str_at(sequence, &["project", "name"]).ok_or_else(|| missing("project"))?,
            collection: str_at(sequence, &["name"]).ok_or_else(|| missing("collection"))?,
            version: artifact["versionIndex"]
                .as_u64()
                .ok_or_else(|| missing("version index"))?,
        })
    }

    /// Refuses an artifact of another type or not committed.
    fn check(&self, shown: &str, artifact: &Value, want_type: &str) -> Result<(), FetchError> {
        let kind = str_at(artifact, &["artifactType", "name"]).unwrap_or_default();
        if kind != want_type {
            return Err(self.error(format!(
                "{shown} is an artifact of type {kind:?}, not {want_type:?}"
            )));
        }
        let state = str_at(artifact, &["state"]).unwrap_or_default();
        if state != "COMMITTED" {
            return Err(self.error(format!(
                "{shown} is in state {state:?}, not COMMITTED (deleted, or still being uploaded)"
            )));
        }
        Ok(())
    }

    /// The code artifact a `source.artifact` string names.
    async fn code_artifact(&self, reference: &str) -> Result<Resolved, FetchError> {
        let Some(rest) = reference.strip_prefix("wandb-artifact://") else {
            return Err(self.error(format!(
                "{JOB_JSON}: source.artifact {reference:?} is not a wandb-artifact:// reference"
            )));
        };
        if let Some(id) = rest.strip_prefix("_id/") {
            let id = id.trim_end_matches('/');
            if id.is_empty() || id.contains('/') {
                return Err(self.error(format!(
                    "{JOB_JSON}: source.artifact {reference:?} has no valid id"
                )));
            }
            return self.by_id(id, "code").await;
        }
        // `wandb-artifact://https://host/E/P/N:A` names the server too; the
        // artifact is looked up on this one.
        let path = match rest
            .strip_prefix("https://")
            .or_else(|| rest.strip_prefix("http://"))
        {
            Some(with_host) => with_host.split_once('/').map(|(_, p)| p).unwrap_or(""),
            None => rest,
        };
        let name = ArtifactName::parse(path).map_err(|e| self.context(e))?;
        self.by_name(&name, "code").await
    }

    /// `FetchArtifactManifest` + GET of its `directUrl`: path → entry.
    async fn manifest(&self, artifact: &Resolved) -> Result<BTreeMap<String, Entry>, FetchError> {
        let data = self
            .client
            .run("FetchArtifactManifest", json!({"id": artifact.id}))
            .await
            .map_err(|e| self.context(e))?;
        let url = str_at(&data, &["artifact", "currentManifest", "file", "directUrl"]).ok_or_else(
            || {
                self.error(format!(
                    "the server has no manifest for {}",
                    artifact.full_name()
                ))
            },
        )?;
        let bytes = self
            .client
            .get_bytes(&url, false, MAX_MANIFEST_BYTES, DOWNLOAD_TIMEOUT)
            .await
            .map_err(|e| self.error(format!("manifest of {}: {e}", artifact.full_name())))?;
        let manifest = parse_manifest(&bytes).map_err(|why| {
            self.error(format!(
                "manifest of {} is not usable: {why}",
                artifact.full_name()
            ))
        })?;
        // The same bounds as a local code directory's.
        let total: u64 = manifest
            .values()
            .map(|e| e.size)
            .fold(0, u64::saturating_add);
        if total > crate::sources::MAX_SOURCE_BYTES
            || manifest.len() > crate::sources::MAX_SOURCE_FILES
        {
            return Err(self.error(format!(
                "{} holds {} files of {total} bytes in all: more than a job's source may ({} files, {} bytes)",
                artifact.full_name(),
                manifest.len(),
                crate::sources::MAX_SOURCE_FILES,
                crate::sources::MAX_SOURCE_BYTES
            )));
        }
        Ok(manifest)
    }

    /// `GetArtifactMembershipFileUrls`, all pages: path → `directUrl`.
    async fn file_urls(
        &self,
        artifact: &Resolved,
    ) -> Result<HashMap<String, Option<String>>, FetchError> {
        let mut urls = HashMap::new();
        let mut cursor = Value::Null;
        for _ in 0..MAX_PAGES {
            let data = self
                .client
                .run(
                    "GetArtifactMembershipFileUrls",
                    json!({
                        "entity": artifact.entity,
                        "project": artifact.project,
                        "collection": artifact.collection,
                        "alias": format!("v{}", artifact.version),
                        "cursor": cursor,
                        "perPage": PER_PAGE,
                    }),
                )
                .await
                .map_err(|e| self.context(e))?;
            let files = &data["project"]["artifactCollection"]["artifactMembership"]["files"];
            if files.is_null() {
                return Err(self.error(format!(
                    "{} is gone from the server (no file list)",
                    artifact.full_name()
                )));
            }
            for edge in files["edges"].as_array().into_iter().flatten() {
                let node = &edge["node"];
                if let Some(name) = node["name"].as_str() {
                    let url = node["directUrl"].as_str().map(str::to_string);
                    urls.insert(name.to_string(), url);
                }
            }
            let page = &files["pageInfo"];
            let next = page["endCursor"].as_str();
            match (page["hasNextPage"].as_bool(), next) {
                (Some(true), Some(next)) if cursor.as_str() != Some(next) => {
                    cursor = Value::from(next);
                }
                (Some(true), _) => {
                    return Err(self.error(format!(
                        "the server's file list of {} does not advance",
                        artifact.full_name()
                    )));
                }
                _ => return Ok(urls),
            }
        }
        Err(self.error(format!(
            "the file list of {} has more than {MAX_PAGES} pages",
            artifact.full_name()
        )))
    }

    /// The bytes of `path` of `artifact`, checked against its manifest
    /// entry: from `url`, else (missing or failing) from the server's
    /// authenticated `/artifactsV2/` path.
    async fn download(
        &self,
        artifact: &Resolved,
        path: &str,
        entry: &Entry,
        url: Option<&Option<String>>,
    ) -> Result<Vec<u8>, FetchError> {
        let direct = match url.and_then(Option::as_deref) {
            Some(url) => match self
                .client
                .get_bytes(url, false, entry.size, DOWNLOAD_TIMEOUT)
                .await
            {
                Ok(bytes) => Some(bytes),
                Err(e) => {
                    tracing::warn!(
                        job = self.job,
                        file = path,
                        "cannot download through the file's directUrl ({e}); trying the W&B server"
                    );
                    None
                }
            },
            None => None,
        };
        let bytes = match direct {
            Some(bytes) => bytes,
            None => {
                let url = self.fallback_url(artifact, path, entry)?;
                self.client
                    .get_bytes(&url, true, entry.size, DOWNLOAD_TIMEOUT)
                    .await
                    .map_err(|e| self.error(format!("{path} of {}: {e}", artifact.full_name())))?
            }
        };
        if bytes.len() as u64 != entry.size {
            return Err(self.error(format!(
                "{path} of {} has {} bytes, the manifest says {}; refused",
                artifact.full_name(),
                bytes.len(),
                entry.size
            )));
        }
        let digest = base64(&md5(&bytes));
        if digest != entry.digest {
            return Err(self.error(format!(
                "{path} of {} does not match the manifest (MD5 {digest}, expected {}); refused",
                artifact.full_name(),
                entry.digest
            )));
        }
        Ok(bytes)
    }

    /// `{base}/artifactsV2/default/E/P/COLLECTION/BIRTH_ID/MD5HEX/BASENAME`.
    fn fallback_url(
        &self,
        artifact: &Resolved,
        path: &str,
        entry: &Entry,
    ) -> Result<String, FetchError> {
        let raw = unbase64(&entry.digest).filter(|raw| raw.len() == 16);
        let hex = raw.map(hex::encode).ok_or_else(|| {
            self.error(format!(
                "the manifest digest of {path} in {} is not a base64 MD5",
                artifact.full_name()
            ))
        })?;
        let birth = entry.birth_artifact_id.as_deref().unwrap_or(&artifact.id);
        let basename = path.rsplit('/').next().unwrap_or(path);
        let mut url = reqwest::Url::parse(self.client.base_url())
            .map_err(|e| self.error(format!("bad W&B base URL: {e}")))?;
        url.path_segments_mut()
            .map_err(|()| self.error("bad W&B base URL".to_string()))?
            .pop_if_empty()
            .extend([
                "artifactsV2",
                "default",
                &artifact.entity,
                &artifact.project,
                &artifact.collection,
                birth,
                &hex,
                basename,
            ]);
        Ok(url.to_string())
    }
}

/// Writes `bytes` to `target`, creating its directory.
async fn write(fetcher: &Fetcher<'_>, target: &Path, bytes: &[u8]) -> Result<(), FetchError> {
    if let Some(parent) = target.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| fetcher.error(format!("cannot create {}: {e}", parent.display())))?;
    }
    tokio::fs::write(target, bytes)
        .await
        .map_err(|e| fetcher.error(format!("cannot write {}: {e}", target.display())))
}

/// The string at `path` in `value`.
fn str_at(value: &Value, path: &[&str]) -> Option<String> {
    let mut value = value;
    for key in path {
        value = value.get(key)?;
    }
    value.as_str().map(str::to_string)
}

/// `dest/path` if `path` is relative with only normal components (no
/// `..`, no root, no `.`-only or empty path).
pub(super) fn safe_path(dest: &Path, path: &str) -> Option<PathBuf> {
    if path.is_empty() || path.contains('\0') || path.contains('\\') {
        return None;
    }
    let relative = Path::new(path);
    let mut out = dest.to_path_buf();
    let mut any = false;
    for component in relative.components() {
        match component {
            Component::Normal(part) => {
                out.push(part);
                any = true;
            }
            Component::CurDir => {}
            _ => return None,
        }
    }
    any.then_some(out)
}

/// The manifest's `contents`: path → entry. Reference entries (`ref`)
/// are refused.
fn parse_manifest(bytes: &[u8]) -> Result<BTreeMap<String, Entry>, String> {
    let manifest: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let contents = manifest["contents"]
        .as_object()
        .ok_or("it has no `contents` object")?;
    let mut entries = BTreeMap::new();
    for (path, entry) in contents {
        if entry.get("ref").is_some_and(|r| !r.is_null()) {
            return Err(format!(
                "{path:?} is a reference entry, which is not supported"
            ));
        }
        let digest = entry["digest"]
            .as_str()
            .ok_or_else(|| format!("{path:?} has no digest"))?;
        let size = entry["size"]
            .as_u64()
            .ok_or_else(|| format!("{path:?} has no size"))?;
        entries.insert(
            path.clone(),
            Entry {
                digest: digest.to_string(),
                size,
                birth_artifact_id: entry["birthArtifactID"].as_str().map(str::to_string),
            },
        );
    }
    Ok(entries)
}

/// Standard base64 (with padding) of `bytes`.
pub(super) fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes standard base64 (padding optional); `None` if malformed.
fn unbase64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(text.trim_end_matches('='))
        .ok()
}

/// The MD5 digest of `data`; W&B manifests use it as a content checksum.
pub(super) fn md5(data: &[u8]) -> [u8; 16] {
    use md5::Digest as _;
    md5::Md5::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_and_base64_match_known_values() {
        assert_eq!(hex::encode(md5(b"")), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(
            hex::encode(md5(b"The quick brown fox jumps over the lazy dog")),
            "9e107d9d372bb6826bd81d3542a419d6"
        );
        let long = vec![b'a'; 1000];
        assert_eq!(hex::encode(md5(&long)), "cabe45dcc9ae5b66ba86600cca6b8ba8");
        assert_eq!(base64(&md5(b"")), "1B2M2Y8AsgTpgAmY7PhCfg==");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(unbase64("1B2M2Y8AsgTpgAmY7PhCfg==").unwrap(), md5(b""));
        assert!(unbase64("not base64!").is_none());
    }

    #[test]
    fn names_parse_with_a_default_alias() {
        let name = ArtifactName::parse("team/proj/my-job:v3").unwrap();
        assert_eq!(
            (name.entity.as_str(), name.project.as_str()),
            ("team", "proj")
        );
        assert_eq!((name.name.as_str(), name.alias.as_str()), ("my-job", "v3"));
        assert_eq!(
            ArtifactName::parse("team/proj/my-job").unwrap().alias,
            "latest"
        );
        assert_eq!(ArtifactName::parse("a/b/c:d:e").unwrap().name, "c:d");
        for bad in [
            "",
            "proj/job:latest",
            "a/b/c/d:latest",
            "a//c:latest",
            "a/b/:x",
            "a/b/c:",
        ] {
            let error = ArtifactName::parse(bad).unwrap_err().to_string();
            assert!(error.contains(&format!("{bad:?}")), "{error}");
        }
    }

    #[test]
    fn unsafe_paths_are_refused() {
        let dest = Path::new("/tmp/d");
        assert_eq!(safe_path(dest, "a/b.py"), Some(dest.join("a/b.py")));
        assert_eq!(safe_path(dest, "./a.py"), Some(dest.join("a.py")));
        for bad in [
            "",
            ".",
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a\\..\\x",
            "a\0b",
        ] {
            assert_eq!(safe_path(dest, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn manifests_parse_and_refuse_references() {
        let ok = br#"{"version":1,"contents":{"a.py":{"digest":"1B2M2Y8AsgTpgAmY7PhCfg==","size":0,"birthArtifactID":"X"}}}"#;
        let entries = parse_manifest(ok).unwrap();
        assert_eq!(entries["a.py"].size, 0);
        assert!(
            parse_manifest(br#"{"contents":{"a":{"ref":"s3://x","digest":"d","size":1}}}"#)
                .is_err()
        );
        assert!(parse_manifest(b"[]").is_err());
        assert!(parse_manifest(br#"{"contents":{"a":{"digest":"d"}}}"#).is_err());
    }
}
