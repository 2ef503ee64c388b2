//! `registry-gcr`: Google Artifact Registry, the registry of the default
//! bundle for `registry: {type: gcr, uri: REGION-docker.pkg.dev/PROJECT/REPO/IMAGE}`
//! (as W&B configures it), with the `gcp` environment.
//!
//! Artifact Registry's docker login is user `oauth2accesstoken` with the
//! environment's OAuth2 access token as the password. This plugin never
//! holds that token, let alone the service-account key: it asks the host
//! for it (`lent.bearer-token` for the registry's origin, which its grant
//! marks `auth: environment`) and gets an opaque handle it cannot read,
//! which it returns as its login's password and passes to the `oci`
//! lookups. The environment keeps the token until five minutes before it
//! expires, so one token serves many jobs.
//!
//! | call | what |
//! |---|---|
//! | `verify` (start-up) | the environment lends a token for the registry, and the registry takes it: a manifest lookup in the repository (`HEAD /v2/PROJECT/REPO/IMAGE/manifests/launch-agent-verify`) must not be refused (401/403); then the repository exists: Artifact Registry's API (`GET https://artifactregistry.googleapis.com/v1/projects/PROJECT/locations/REGION/repositories/REPO`, authorized by the environment through `auth: environment`) answers it, in the Docker format (a missing one is named with the command that creates it) |
//! | `repository-uri` | `REGION-docker.pkg.dev/PROJECT/REPO/IMAGE` (or `registry-address/PROJECT/REPO/IMAGE`) |
//! | `login` | user `oauth2accesstoken`, the lent token as the password |
//! | `image-exists` | `HEAD /v2/PROJECT/REPO/IMAGE/manifests/TAG` through the `oci` capability with that login |
//!
//! Built for `wasm32-wasip2`: `verify`'s API call goes out through
//! `wasi:http` (the rest needs only the contract's `lent`, `oci`,
//! `secrets` and `log`).
//!
//! # Settings (`registry:` block plus `plugins.gcr.config`)
//!
//! | key | meaning |
//! |---|---|
//! | `uri` | `REGION-docker.pkg.dev/PROJECT/REPO/IMAGE`; a leading `https://` is dropped, a tag refused, the image name required |
//! | `repository`, `image-name`, `region`, `project` | W&B's alternative to `uri`: `REGION-docker.pkg.dev/PROJECT/REPOSITORY/IMAGE-NAME` |
//! | `registry-address` | where images are pushed and looked up, instead of the `uri`'s host (a private endpoint, a test stand-in) |
//! | `insecure` | plain HTTP to `registry-address` (default: only for 127.0.0.1 / localhost) |
//! | `api-endpoint` | Artifact Registry's API instead of `https://artifactregistry.googleapis.com` (a private endpoint, a test stand-in) |

use launch_plugin_sdk::registry::oci::{self, OciLogin};
use launch_plugin_sdk::registry::{Registry, RegistryLogin, lent};
use launch_plugin_sdk::{Plugin, PluginError, PluginInfo, Secret, SecretError, Stage};
use serde::Deserialize;

/// The user name of every Artifact Registry login with an access token.
const USER: &str = "oauth2accesstoken";
/// The tag `verify` looks up (its absence is fine; a refusal is not).
const VERIFY_TAG: &str = "launch-agent-verify";
/// Artifact Registry's API.
const DEFAULT_API: &str = "https://artifactregistry.googleapis.com";

/// The plugin.
struct GcrRegistry;

/// The settings, as they arrive.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSettings {
    #[serde(rename = "type")]
    _kind: String,
    uri: Option<String>,
    repository: Option<String>,
    image_name: Option<String>,
    region: Option<String>,
    project: Option<String>,
    registry_address: Option<String>,
    insecure: Option<bool>,
    api_endpoint: Option<String>,
}

/// The settings, checked.
#[derive(Debug, PartialEq, Eq)]
struct Settings {
    /// `REGION-docker.pkg.dev` or `registry-address`.
    registry: String,
    /// `PROJECT/REPO/IMAGE`.
    repository: String,
    insecure: bool,
    /// The region (`REGION` of `REGION-docker.pkg.dev`): the repository's
    /// location.
    location: String,
    /// Artifact Registry's API, without a trailing `/`.
    api: String,
}

/// What a good `uri` looks like, for errors.
const SHAPE: &str = "REGION-docker.pkg.dev/PROJECT/REPOSITORY/IMAGE, e.g. \
                     us-central1-docker.pkg.dev/my-project/launch/my-image";

impl Settings {
    fn parse(settings: &str) -> Result<Settings, PluginError> {
        let raw: RawSettings = launch_plugin_sdk::parse_settings(settings, Stage::Agent)?;
        let uri = match (&raw.uri, &raw.repository) {
            (Some(uri), _) => uri.trim().to_string(),
            (None, Some(repository)) => {
                let (Some(region), Some(project)) = (&raw.region, &raw.project) else {
                    return Err(PluginError::agent(
                        "`registry.repository` needs `registry.region` and `registry.project` \
                         (or set `registry.uri` to REGION-docker.pkg.dev/PROJECT/REPOSITORY/IMAGE)",
                    ));
                };
                format!("{region}-docker.pkg.dev/{project}/{repository}")
            }
            (None, None) => {
                return Err(PluginError::agent(format!(
                    "set `registry.uri` ({SHAPE}) in launch-config.yaml"
                )));
            }
        };
        let bare = uri.trim_start_matches("https://").trim_end_matches('/');
        let bad = || PluginError::agent(format!("`registry.uri` {uri:?} must look like {SHAPE}"));
        let (host, path) = bare.split_once('/').ok_or_else(bad)?;
        let region = host.strip_suffix("-docker.pkg.dev").ok_or_else(bad)?;
        if region.is_empty()
            || !region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(bad());
        }
        if path.contains(':') || path.contains('@') {
            return Err(PluginError::agent(format!(
                "`registry.uri` {uri:?} must not have a tag or digest: it names the image, \
                 each job's image gets its own tag"
            )));
        }
        let mut segments: Vec<&str> = path.split('/').collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Err(bad());
        }
        if segments.len() == 2
            && let Some(image) = raw.image_name.as_deref()
        {
            segments.push(image);
        }
        if segments.len() < 3 {
            return Err(PluginError::agent(format!(
                "`registry.uri` {uri:?} names no image: Artifact Registry needs \
                 PROJECT/REPOSITORY/IMAGE after the host ({SHAPE}), or set `registry.image-name`"
            )));
        }
        if let Some(r) = &raw.region
            && r != region
        {
            return Err(PluginError::agent(format!(
                "`registry.region` {r:?} is not the region of `registry.uri` ({region})"
            )));
        }
        if let Some(p) = &raw.project
            && p != segments[0]
        {
            return Err(PluginError::agent(format!(
                "`registry.project` {p:?} is not the project of `registry.uri` ({})",
                segments[0]
            )));
        }
        let api = raw
            .api_endpoint
            .unwrap_or_else(|| DEFAULT_API.to_string())
            .trim_end_matches('/')
            .to_string();
        if !(api.starts_with("https://") || api.starts_with("http://")) {
            return Err(PluginError::agent(format!(
                "`api-endpoint` {api:?} of the gcr plugin must be an http:// or https:// URL"
            )));
        }
        let registry = raw.registry_address.unwrap_or_else(|| host.to_string());
        let local = registry.starts_with("127.0.0.1") || registry.starts_with("localhost");
        Ok(Settings {
            registry,
            repository: segments.join("/"),
            insecure: raw.insecure.unwrap_or(local),
            location: region.to_string(),
            api,
        })
    }

    /// `projects/PROJECT/locations/REGION/repositories/REPO`: the
    /// repository's name in Artifact Registry's API.
    fn repository_name(&self) -> String {
        let mut parts = self.repository.split('/');
        let project = parts.next().unwrap_or_default();
        let repository = parts.next().unwrap_or_default();
        format!(
            "projects/{project}/locations/{}/repositories/{repository}",
            self.location
        )
    }

    /// Checks with Artifact Registry's API that the repository exists and
    /// holds Docker images; the request is authorized by the environment
    /// (`auth: environment` on the API's origin), this plugin sends none.
    fn repository_exists(&self) -> Result<(), PluginError> {
        let name = self.repository_name();
        let url = format!("{}/v1/{name}", self.api);
        let response = launch_plugin_sdk::http::get(&url)
            .header("accept", "application/json")
            .send()?;
        let reason = || api_error(&response.text());
        match response.status {
            200 => {
                let format = serde_json::from_slice::<serde_json::Value>(&response.body)
                    .ok()
                    .and_then(|v| v.get("format")?.as_str().map(str::to_string))
                    .unwrap_or_default();
                if !format.is_empty() && format != "DOCKER" {
                    return Err(PluginError::agent(format!(
                        "registry-gcr: Artifact Registry repository {name} holds {format} \
                         packages, not Docker images"
                    )));
                }
                Ok(())
            }
            404 => {
                let mut parts = self.repository.split('/');
                let project = parts.next().unwrap_or_default();
                let repository = parts.next().unwrap_or_default();
                Err(PluginError::agent(format!(
                    "registry-gcr: Artifact Registry has no repository {repository} in project \
                     {project}, location {} (404 {}): create it with `gcloud artifacts \
                     repositories create {repository} --repository-format=docker --location={} \
                     --project={project}`, or fix `registry.uri`",
                    self.location,
                    reason(),
                    self.location
                )))
            }
            401 | 403 => Err(PluginError::agent(format!(
                "registry-gcr: Artifact Registry refused to show repository {name} ({} {}): does \
                 the service account have Artifact Registry Reader on it?",
                response.status,
                reason()
            ))),
            status => Err(PluginError {
                retryable: status >= 500 || status == 429,
                ..PluginError::agent(format!(
                    "registry-gcr: Artifact Registry answered {status} for repository {name}: {}",
                    reason()
                ))
            }),
        }
    }

    /// `scheme://registry/`, the origin the token is lent for.
    fn origin(&self) -> String {
        let scheme = if self.insecure { "http" } else { "https" };
        format!("{scheme}://{}/", self.registry)
    }

    /// The environment's token for the registry, as a handle this plugin
    /// cannot read.
    fn token(&self) -> Result<Secret, PluginError> {
        lent::bearer_token(&self.origin()).map_err(|e| {
            let why = match &e {
                SecretError::NotGranted(m)
                | SecretError::Unavailable(m)
                | SecretError::Opaque(m) => m,
            };
            PluginError::agent(format!(
                "registry-gcr: no access token for {}: {why}",
                self.registry
            ))
        })
    }

    fn oci_login(&self) -> OciLogin {
        OciLogin {
            username: Some(USER.into()),
            insecure: self.insecure,
        }
    }
}

/// Google's error body (`{"error": {"code", "message", "status"}}`) as
/// `STATUS: message`, else the body itself, cut short.
fn api_error(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let error = v.get("error")?;
            Some(format!(
                "{}: {}",
                error.get("status")?.as_str()?,
                error.get("message")?.as_str()?
            ))
        })
        .unwrap_or_else(|| body.chars().take(300).collect())
}

impl Plugin for GcrRegistry {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "registry-gcr".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Google Artifact Registry: the gcp environment's access token, lent as an opaque login".into(),
        }
    }
}

impl Registry for GcrRegistry {
    fn repository_uri(settings: String) -> Result<String, PluginError> {
        let s = Settings::parse(&settings)?;
        Ok(format!("{}/{}", s.registry, s.repository))
    }

    fn image_exists(settings: String, image_uri: String) -> Result<bool, PluginError> {
        let s = Settings::parse(&settings)?;
        let token = s.token()?;
        oci::manifest_exists(&image_uri, &s.oci_login(), Some(&token))
            .map_err(|e| PluginError::build(format!("registry-gcr: {}", e.message)))
    }

    fn login(settings: String) -> Result<Option<RegistryLogin>, PluginError> {
        let s = Settings::parse(&settings)?;
        Ok(Some(RegistryLogin {
            username: USER.into(),
            password: s.token()?,
        }))
    }

    fn verify(settings: String) -> Result<(), PluginError> {
        let s = Settings::parse(&settings)?;
        let token = s.token()?;
        let probe = format!("{}/{}:{VERIFY_TAG}", s.registry, s.repository);
        match oci::manifest_exists(&probe, &s.oci_login(), Some(&token)) {
            Ok(_) => {
                launch_plugin_sdk::info!(
                    "registry-gcr: {} takes the environment's access token for {}",
                    s.registry,
                    s.repository
                );
                s.repository_exists()?;
                launch_plugin_sdk::info!(
                    "registry-gcr: Artifact Registry has repository {}",
                    s.repository_name()
                );
                Ok(())
            }
            Err(e) if e.unauthorized => Err(PluginError::agent(format!(
                "registry-gcr: {} refused the environment's access token for {}: does the \
                 service account have Artifact Registry Writer on the repository? ({})",
                s.registry, s.repository, e.message
            ))),
            Err(e) => Err(PluginError::agent(format!("registry-gcr: {}", e.message))),
        }
    }
}

launch_plugin_sdk::export_registry!(GcrRegistry);

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Settings, String> {
        Settings::parse(json).map_err(|e| e.message)
    }

    #[test]
    fn wandb_uris_are_read() {
        let s =
            parse(r#"{"type":"gcr","uri":"https://us-central1-docker.pkg.dev/proj/launch/app/"}"#)
                .unwrap();
        assert_eq!(
            s,
            Settings {
                registry: "us-central1-docker.pkg.dev".into(),
                repository: "proj/launch/app".into(),
                insecure: false,
                location: "us-central1".into(),
                api: DEFAULT_API.into(),
            }
        );
        assert_eq!(
            s.repository_name(),
            "projects/proj/locations/us-central1/repositories/launch"
        );
        assert_eq!(s.origin(), "https://us-central1-docker.pkg.dev/");
        let s = parse(
            r#"{"type":"gcr","repository":"launch","image-name":"app","region":"europe-west4","project":"p"}"#,
        )
        .unwrap();
        assert_eq!(s.registry, "europe-west4-docker.pkg.dev");
        assert_eq!(s.repository, "p/launch/app");
        let s = parse(
            r#"{"type":"gcr","uri":"us-docker.pkg.dev/p/r/i","registry-address":"127.0.0.1:5000"}"#,
        )
        .unwrap();
        assert_eq!((s.registry.as_str(), s.insecure), ("127.0.0.1:5000", true));
        assert_eq!(s.origin(), "http://127.0.0.1:5000/");
    }

    #[test]
    fn bad_uris_name_the_key() {
        for uri in [
            "registry.example.com/p/r/i",
            "gcr.io/p/r/i",
            "us-central1-docker.pkg.dev",
            "us-central1-docker.pkg.dev/p//i",
        ] {
            let e = parse(&format!(r#"{{"type":"gcr","uri":"{uri}"}}"#)).unwrap_err();
            assert!(e.contains("registry.uri"), "{uri}: {e}");
        }
        let e = parse(r#"{"type":"gcr","uri":"us-central1-docker.pkg.dev/p/r"}"#).unwrap_err();
        assert!(
            e.contains("names no image") && e.contains("registry.uri"),
            "{e}"
        );
        let e = parse(r#"{"type":"gcr","uri":"us-central1-docker.pkg.dev/p/r/i:v1"}"#).unwrap_err();
        assert!(e.contains("must not have a tag"), "{e}");
        let e = parse(r#"{"type":"gcr","uri":"us-central1-docker.pkg.dev/p/r/i","region":"eu"}"#)
            .unwrap_err();
        assert!(e.contains("registry.region"), "{e}");
        let e = parse(r#"{"type":"gcr","repository":"r"}"#).unwrap_err();
        assert!(e.contains("registry.region"), "{e}");
        let e = parse(r#"{"type":"gcr"}"#).unwrap_err();
        assert!(e.contains("registry.uri"), "{e}");
        let e =
            parse(r#"{"type":"gcr","uri":"us-docker.pkg.dev/p/r/i","api-endpoint":"ar.example"}"#)
                .unwrap_err();
        assert!(e.contains("api-endpoint"), "{e}");
    }

    #[test]
    fn googles_errors_are_shown_by_status() {
        assert_eq!(
            api_error(
                r#"{"error":{"code":404,"message":"Requested entity was not found.","status":"NOT_FOUND"}}"#
            ),
            "NOT_FOUND: Requested entity was not found."
        );
        assert_eq!(api_error("plain"), "plain");
    }
}
