//! `registry-ecr`: the Amazon ECR registry of the default bundle
//! (`registry: {type: ecr, uri: ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO}`,
//! as W&B configures it), with the `aws` environment.
//!
//! It never holds the AWS key: its calls to ECR's API go to a host its
//! grant marks `auth: environment` (`https://api.ecr.REGION.amazonaws.com`
//! by default), and the host has the environment sign them (SigV4) on the
//! way out.
//!
//! | call | what |
//! |---|---|
//! | `verify` (start-up) | `DescribeRepositories` for the repository: it exists and the credentials reach it |
//! | `repository-uri` | `ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO` (or `registry-address/REPO`) |
//! | `login` | user `AWS` and the password of `GetAuthorizationToken`, kept in the host until 5 minutes before its expiry (12 h), so it is fetched once for many jobs |
//! | `image-exists` | a manifest lookup (`HEAD /v2/REPO/manifests/TAG`) through the `oci` capability with that token: the registry that `docker push` wrote to is the one asked |
//!
//! # Settings (`registry:` block plus `plugins.ecr.config`)
//!
//! | key | meaning |
//! |---|---|
//! | `uri` | `ACCOUNT.dkr.ecr.REGION.amazonaws.com[.cn]/REPO`; a leading `https://` is dropped, a tag refused |
//! | `endpoint-url` | ECR's API endpoint (default `https://api.ecr.REGION.amazonaws.com`): a VPC endpoint, a stand-in such as moto |
//! | `registry-address` | where images are pushed and looked up, instead of the `uri`'s host (a PrivateLink name, a test stand-in) |
//! | `insecure` | plain HTTP to `registry-address` (default: only for 127.0.0.1 / localhost) |

use base64::Engine as _;
use launch_plugin_sdk::registry::oci::{self, OciLogin};
use launch_plugin_sdk::registry::{Registry, RegistryLogin};
use launch_plugin_sdk::{Plugin, PluginError, PluginInfo, Stage};
use serde::Deserialize;

/// Key of the kept authorization token.
const TOKEN_KEY: &str = "ecr/authorization-token";
/// How long before its expiry the token is fetched again.
const EXPIRY_MARGIN_SECONDS: i64 = 300;
/// The user name of every ECR login.
const USER: &str = "AWS";

/// The plugin.
struct EcrRegistry;

/// The settings, as they arrive.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSettings {
    #[serde(rename = "type")]
    _kind: String,
    uri: Option<String>,
    /// W&B's `repository` (the name, with `uri` naming the registry).
    repository: Option<String>,
    region: Option<String>,
    #[serde(rename = "image-name")]
    _image_name: Option<String>,
    #[serde(rename = "project")]
    _project: Option<String>,
    endpoint_url: Option<String>,
    registry_address: Option<String>,
    insecure: Option<bool>,
}

/// The settings, checked.
#[derive(Debug, PartialEq, Eq)]
struct Settings {
    account: String,
    region: String,
    /// `ACCOUNT.dkr.ecr.REGION.amazonaws.com` or `registry-address`.
    registry: String,
    repository: String,
    api: String,
    insecure: bool,
}

impl Settings {
    fn parse(settings: &str) -> Result<Settings, PluginError> {
        let raw: RawSettings = launch_plugin_sdk::parse_settings(settings, Stage::Agent)?;
        let uri = raw.uri.ok_or_else(|| {
            PluginError::agent(
                "set `registry.uri` (ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPOSITORY) in launch-config.yaml",
            )
        })?;
        let bare = uri
            .trim()
            .trim_start_matches("https://")
            .trim_end_matches('/');
        let bad = || {
            PluginError::agent(format!(
                "`registry.uri` {uri:?} must look like ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPOSITORY, \
                 e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com/launch"
            ))
        };
        let (host, path) = bare.split_once('/').unwrap_or((bare, ""));
        let labels: Vec<&str> = host.splitn(5, '.').collect();
        let [account, "dkr", "ecr", region, domain] = labels.as_slice() else {
            return Err(bad());
        };
        if !matches!(*domain, "amazonaws.com" | "amazonaws.com.cn")
            || account.is_empty()
            || !account.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let repository = match (path, raw.repository.as_deref()) {
            ("", Some(name)) => name.to_string(),
            ("", None) => return Err(bad()),
            (path, _) => path.to_string(),
        };
        if repository.contains(':') || repository.contains('@') {
            return Err(PluginError::agent(format!(
                "`registry.uri` {uri:?} must not have a tag or digest: it names the repository, \
                 each job's image gets its own tag"
            )));
        }
        if let Some(r) = &raw.region
            && r != region
        {
            return Err(PluginError::agent(format!(
                "`registry.region` {r:?} is not the region of `registry.uri` ({region})"
            )));
        }
        let api = raw
            .endpoint_url
            .map(|u| u.trim_end_matches('/').to_string() + "/")
            .unwrap_or_else(|| format!("https://api.ecr.{region}.{domain}/"));
        let registry = raw.registry_address.unwrap_or_else(|| host.to_string());
        let local = registry.starts_with("127.0.0.1") || registry.starts_with("localhost");
        Ok(Settings {
            account: account.to_string(),
            region: region.to_string(),
            registry,
            repository,
            api,
            insecure: raw.insecure.unwrap_or(local),
        })
    }

    /// Calls ECR's JSON API `operation` with `body`; an error names the
    /// operation and ECR's `__type: message`.
    fn call(&self, operation: &str, body: &str) -> Result<serde_json::Value, (u16, String)> {
        let target = format!("AmazonEC2ContainerRegistry_V20150921.{operation}");
        let response = launch_plugin_sdk::http::send(
            "POST",
            &self.api,
            &[
                ("content-type", "application/x-amz-json-1.1"),
                ("x-amz-target", &target),
            ],
            body.as_bytes(),
        )
        .map_err(|e| {
            (
                0,
                format!("ECR {operation} at {} could not be asked: {e}", self.api),
            )
        })?;
        let json: serde_json::Value = serde_json::from_slice(&response.body).unwrap_or_default();
        if response.status != 200 {
            let kind = json
                .get("__type")
                .and_then(|t| t.as_str())
                .map(|t| t.rsplit('#').next().unwrap_or(t).to_string());
            let message = json
                .get("message")
                .or_else(|| json.get("Message"))
                .and_then(|m| m.as_str())
                .map(str::to_string)
                .or_else(|| sts_style_error(&response.text()));
            let what = match (kind, message) {
                (Some(k), Some(m)) => format!("{k}: {m}"),
                (Some(k), None) => k,
                (None, Some(m)) => m,
                (None, None) => "no details".into(),
            };
            return Err((
                response.status,
                format!("ECR {operation} answered {}: {what}", response.status),
            ));
        }
        Ok(json)
    }

    /// The token: kept, else fetched and kept until shortly before it expires.
    fn login(&self) -> Result<RegistryLogin, PluginError> {
        if let Some(password) = launch_plugin_sdk::recall(TOKEN_KEY) {
            return Ok(RegistryLogin {
                username: USER.into(),
                password,
            });
        }
        let answer = self
            .call("GetAuthorizationToken", "{}")
            .map_err(|(_, e)| PluginError::agent(format!("registry-ecr: {e}{}", hint(&e))))?;
        let data = answer
            .get("authorizationData")
            .and_then(|d| d.get(0))
            .ok_or_else(|| {
                PluginError::agent(
                    "registry-ecr: GetAuthorizationToken returned no authorizationData",
                )
            })?;
        let token = data
            .get("authorizationToken")
            .and_then(|t| t.as_str())
            .ok_or_else(|| {
                PluginError::agent("registry-ecr: GetAuthorizationToken returned no token")
            })?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token)
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or_else(|| {
                PluginError::agent(
                    "registry-ecr: the authorization token is not base64 of USER:PASSWORD",
                )
            })?;
        let (user, password) = decoded.split_once(':').ok_or_else(|| {
            PluginError::agent("registry-ecr: the authorization token is not USER:PASSWORD")
        })?;
        if user != USER {
            return Err(PluginError::agent(format!(
                "registry-ecr: the authorization token is for user {user:?}, not {USER}"
            )));
        }
        let password = launch_plugin_sdk::mint("ecr-authorization-token", password);
        let expires_at = data
            .get("expiresAt")
            .and_then(|e| e.as_f64())
            .map(|e| e as i64);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        match expires_at.map(|at| at - now - EXPIRY_MARGIN_SECONDS) {
            Some(ttl) if ttl > 0 => {
                let _ = launch_plugin_sdk::keep(TOKEN_KEY, &password, ttl as u64);
                launch_plugin_sdk::info!(
                    "registry-ecr: fetched an authorization token for {}, kept for {} min",
                    self.registry,
                    ttl / 60
                );
            }
            _ => launch_plugin_sdk::warn!(
                "registry-ecr: the authorization token expires within {EXPIRY_MARGIN_SECONDS} s (or says no expiry); it is not kept"
            ),
        }
        Ok(RegistryLogin {
            username: USER.into(),
            password,
        })
    }
}

/// `Code: Message` of an STS-style XML error (moto and some endpoints
/// answer an unsigned or badly signed JSON call in XML).
fn sts_style_error(text: &str) -> Option<String> {
    let tag = |t: &str| {
        let open = format!("<{t}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&format!("</{t}>"))? + start;
        Some(text[start..end].trim().to_string())
    };
    match (tag("Code"), tag("Message")) {
        (Some(c), Some(m)) => Some(format!("{c}: {m}")),
        (Some(c), None) => Some(c),
        _ => None,
    }
}

/// What to do about an unsigned request refused.
fn hint(error: &str) -> &'static str {
    if error.contains("MissingAuthenticationToken") || error.contains("could not be asked") {
        " (is the ECR API endpoint in this plugin's grants.environment_auth, and is the environment `aws`?)"
    } else {
        ""
    }
}

impl Plugin for EcrRegistry {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "registry-ecr".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Amazon ECR: GetAuthorizationToken kept until it expires, repositories verified at start-up".into(),
        }
    }
}

impl Registry for EcrRegistry {
    fn repository_uri(settings: String) -> Result<String, PluginError> {
        let s = Settings::parse(&settings)?;
        Ok(format!("{}/{}", s.registry, s.repository))
    }

    fn image_exists(settings: String, image_uri: String) -> Result<bool, PluginError> {
        let s = Settings::parse(&settings)?;
        let login = s.login()?;
        let oci_login = OciLogin {
            username: Some(login.username.clone()),
            insecure: s.insecure,
        };
        match oci::manifest_exists(&image_uri, &oci_login, Some(&login.password)) {
            Ok(found) => Ok(found),
            Err(e) => {
                if e.unauthorized {
                    // A token the registry no longer takes: fetch a new one next time.
                    launch_plugin_sdk::forget(TOKEN_KEY);
                }
                Err(PluginError::build(format!("registry-ecr: {}", e.message)))
            }
        }
    }

    fn login(settings: String) -> Result<Option<RegistryLogin>, PluginError> {
        Settings::parse(&settings)?.login().map(Some)
    }

    fn verify(settings: String) -> Result<(), PluginError> {
        let s = Settings::parse(&settings)?;
        let body = serde_json::json!({
            "registryId": s.account,
            "repositoryNames": [s.repository],
        })
        .to_string();
        match s.call("DescribeRepositories", &body) {
            Ok(_) => {
                launch_plugin_sdk::info!(
                    "registry-ecr: repository {} exists in account {} ({})",
                    s.repository,
                    s.account,
                    s.region
                );
                Ok(())
            }
            Err((_, e)) if e.contains("RepositoryNotFoundException") => {
                Err(PluginError::agent(format!(
                    "registry-ecr: repository {:?} does not exist in account {} ({}): create it \
                 (`aws ecr create-repository --repository-name {}`) or fix `registry.uri`",
                    s.repository, s.account, s.region, s.repository
                )))
            }
            Err((_, e)) => Err(PluginError::agent(format!("registry-ecr: {e}{}", hint(&e)))),
        }
    }
}

launch_plugin_sdk::export_registry!(EcrRegistry);

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Settings, String> {
        Settings::parse(json).map_err(|e| e.message)
    }

    #[test]
    fn wandb_uris_are_read() {
        let s = parse(r#"{"type":"ecr","uri":"https://123456789012.dkr.ecr.us-east-1.amazonaws.com/launch/"}"#).unwrap();
        assert_eq!(s.account, "123456789012");
        assert_eq!(s.region, "us-east-1");
        assert_eq!(s.registry, "123456789012.dkr.ecr.us-east-1.amazonaws.com");
        assert_eq!(s.repository, "launch");
        assert_eq!(s.api, "https://api.ecr.us-east-1.amazonaws.com/");
        assert!(!s.insecure);
        let s = parse(
            r#"{"type":"ecr","uri":"1.dkr.ecr.cn-north-1.amazonaws.com.cn","repository":"r"}"#,
        )
        .unwrap();
        assert_eq!(s.api, "https://api.ecr.cn-north-1.amazonaws.com.cn/");
        let s = parse(r#"{"type":"ecr","uri":"1.dkr.ecr.us-east-1.amazonaws.com/r","registry-address":"127.0.0.1:5000","endpoint-url":"http://127.0.0.1:9"}"#).unwrap();
        assert_eq!(
            (s.registry.as_str(), s.insecure, s.api.as_str()),
            ("127.0.0.1:5000", true, "http://127.0.0.1:9/")
        );
    }

    #[test]
    fn bad_uris_name_the_key() {
        for uri in [
            "registry.example.com/app",
            "x.dkr.ecr.us-east-1.amazonaws.com/a",
            "1.dkr.ecr.us-east-1.amazonaws.com",
            "1.dkr.ecr.us-east-1.evil.com/a",
        ] {
            let e = parse(&format!(r#"{{"type":"ecr","uri":"{uri}"}}"#)).unwrap_err();
            assert!(e.contains("registry.uri"), "{uri}: {e}");
        }
        let e =
            parse(r#"{"type":"ecr","uri":"1.dkr.ecr.us-east-1.amazonaws.com/a:v1"}"#).unwrap_err();
        assert!(e.contains("must not have a tag"), "{e}");
        let e = parse(
            r#"{"type":"ecr","uri":"1.dkr.ecr.us-east-1.amazonaws.com/a","region":"eu-west-1"}"#,
        )
        .unwrap_err();
        assert!(e.contains("registry.region"), "{e}");
        let e = parse(r#"{"type":"ecr"}"#).unwrap_err();
        assert!(e.contains("registry.uri"), "{e}");
    }
}
