//! `environment-gcp`: the Google Cloud environment of the default bundle
//! (`environment: {type: gcp, region, project}`, as W&B configures it).
//!
//! # What it does
//!
//! | call | what |
//! |---|---|
//! | `verify` (start-up, each job) | obtains an OAuth2 access token (see [`token`]) and resolves the project; at start-up logs which source it used and the project; on failure names each source tried and why, or the token endpoint's error (`invalid_grant`, `invalid_client`), never the key or a token. A kept token spares later calls the round trip |
//! | `run-env` | `GOOGLE_CLOUD_PROJECT` and `GOOGLE_CLOUD_REGION` when set |
//! | `authorizer.bearer-token` | the same token, lent (as an opaque handle the requester cannot read) to a registry plugin whose grant marks the origin `auth: environment`: Artifact Registry's docker password (`registry-gcr`); same hosts as `authorize`, and its remaining lifetime |
//! | `authorizer.authorize` | `Authorization: Bearer <token>` for another plugin's request to a host its grant marks `auth: environment`: only Google's hosts (`*.googleapis.com`, `*.pkg.dev`, `gcr.io`, `*.gcr.io`) or the origins of `authorize-urls` |
//!
//! The RS256 JWT of the service-account flow is signed inside this plugin
//! ([`jwt`]); the key never leaves it, and the token is kept in the host
//! (`secrets.keep`) until five minutes before it expires, never fetched
//! per job.
//!
//! # Settings (`environment:` block plus `plugins.gcp.config`)
//!
//! | key | meaning |
//! |---|---|
//! | `project` | the project (else the key file's `project_id`, the metadata server's, `GOOGLE_CLOUD_PROJECT`) |
//! | `region` | the region (passed to runs as `GOOGLE_CLOUD_REGION`) |
//! | `token-uri` | the OAuth2 token endpoint (default: the key's `token_uri`, else `https://oauth2.googleapis.com/token`): a private endpoint, a stand-in |
//! | `metadata-endpoint` | the metadata server (default `http://169.254.169.254`) |
//! | `authorize-urls` | more origins (`scheme://host[:port]`) this environment adds its token to (a private registry mirror, a stand-in) |

mod jwt;
mod token;

use launch_plugin_sdk::authorizer::{Authorizer, HttpRequest, LentToken};
use launch_plugin_sdk::environment::Environment;
use launch_plugin_sdk::{Job, Plugin, PluginError, PluginInfo, Stage};
use serde::Deserialize;

/// Google's OAuth2 token endpoint.
pub(crate) const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// The metadata server (GCE, GKE workload identity).
const DEFAULT_METADATA: &str = "http://169.254.169.254";

/// The plugin.
struct GcpEnvironment;

/// The settings, as they arrive.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Settings {
    /// `gcp` (or the name the config gave this plugin).
    #[serde(rename = "type")]
    _kind: String,
    /// The region.
    pub region: Option<String>,
    /// The project.
    pub project: Option<String>,
    /// The token endpoint.
    pub token_uri: Option<String>,
    /// The metadata server.
    pub metadata_endpoint: Option<String>,
    /// More origins the token is added to.
    #[serde(default)]
    pub authorize_urls: Vec<String>,
    /// Where the host's blob capability reaches Cloud Storage (its JSON
    /// and XML APIs' base; default `https://storage.googleapis.com`):
    /// read by the host, not here. Another origin gets the token only if
    /// listed in `authorize-urls` too.
    #[serde(default, rename = "storage-url")]
    _storage_url: Option<String>,
}

impl Settings {
    fn parse(settings: &str) -> Result<Settings, PluginError> {
        let s: Settings = launch_plugin_sdk::parse_settings(settings, Stage::Agent)?;
        for (key, url) in s
            .token_uri
            .iter()
            .map(|u| ("token-uri", u))
            .chain(s.metadata_endpoint.iter().map(|u| ("metadata-endpoint", u)))
            .chain(s.authorize_urls.iter().map(|u| ("authorize-urls", u)))
        {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(PluginError::agent(format!(
                    "gcp: `{key}` {url:?} must be an http:// or https:// URL"
                )));
            }
        }
        Ok(s)
    }

    /// The metadata server, without a trailing `/`.
    pub(crate) fn metadata_endpoint(&self) -> String {
        self.metadata_endpoint
            .as_deref()
            .unwrap_or(DEFAULT_METADATA)
            .trim_end_matches('/')
            .to_string()
    }

    /// Whether the token may be added to a request for `url`.
    fn may_authorize(&self, url: &str) -> bool {
        let Some((scheme, rest)) = url.split_once("://") else {
            return false;
        };
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let origin = format!("{scheme}://{authority}");
        if self
            .authorize_urls
            .iter()
            .any(|u| u.trim_end_matches('/') == origin)
        {
            return true;
        }
        let host = authority.split(':').next().unwrap_or("");
        scheme == "https"
            && (host.ends_with(".googleapis.com")
                || host.ends_with(".pkg.dev")
                || host == "gcr.io"
                || host.ends_with(".gcr.io"))
    }
}

/// An environment variable the grants let the plugin see, if set and not empty.
pub(crate) fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Plugin for GcpEnvironment {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "environment-gcp".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Google Cloud: a service-account key or the metadata server; Bearer tokens for requests marked auth: environment".into(),
        }
    }
}

impl Environment for GcpEnvironment {
    fn verify(settings: String) -> Result<(), PluginError> {
        let settings = Settings::parse(&settings)?;
        let kept = launch_plugin_sdk::recall(token::TOKEN_KEY).is_some();
        let token = token::token(&settings)?;
        let project = settings
            .project
            .clone()
            .or(token.project.clone())
            .or_else(|| env("GOOGLE_CLOUD_PROJECT"))
            .ok_or_else(|| {
                PluginError::agent(format!(
                    "gcp: credentials from {} work but name no project: set `environment.project` in launch-config.yaml (or GOOGLE_CLOUD_PROJECT)",
                    token.source
                ))
            })?;
        if !kept {
            launch_plugin_sdk::info!(
                "gcp: access token obtained from {}; project {project}",
                token.source
            );
        }
        Ok(())
    }

    fn run_env(settings: String, _job: Job) -> Result<Vec<(String, String)>, PluginError> {
        let settings = Settings::parse(&settings)?;
        let mut out = Vec::new();
        if let Some(p) = settings.project {
            out.push(("GOOGLE_CLOUD_PROJECT".to_string(), p));
        }
        if let Some(r) = settings.region {
            out.push(("GOOGLE_CLOUD_REGION".to_string(), r));
        }
        Ok(out)
    }
}

impl Authorizer for GcpEnvironment {
    fn authorize(
        settings: String,
        request: HttpRequest,
    ) -> Result<Vec<(String, String)>, PluginError> {
        let settings = Settings::parse(&settings)?;
        if !settings.may_authorize(&request.url) {
            return Err(PluginError::agent(format!(
                "gcp: refusing to add a Google token to a request for {}: not a Google host \
                 (add its origin to the gcp plugin's `authorize-urls` if it should get one)",
                launch_plugin_sdk::http::shown(&request.url)
            )));
        }
        let token = token::token(&settings)?;
        let value = token
            .token
            .reveal()
            .map_err(|_| PluginError::agent("gcp: the kept access token could not be read"))?;
        Ok(vec![("authorization".into(), format!("Bearer {value}"))])
    }

    fn bearer_token(settings: String, url: String) -> Result<LentToken, PluginError> {
        let settings = Settings::parse(&settings)?;
        if !settings.may_authorize(&url) {
            return Err(PluginError::agent(format!(
                "gcp: refusing to lend a Google token for {}: not a Google host \
                 (add its origin to the gcp plugin's `authorize-urls` if it should get one)",
                launch_plugin_sdk::http::shown(&url)
            )));
        }
        let token = token::token(&settings)?;
        let value = token
            .token
            .reveal()
            .map_err(|_| PluginError::agent("gcp: the kept access token could not be read"))?;
        Ok(LentToken {
            value,
            expires_in_seconds: token.expires_in,
        })
    }
}

launch_plugin_sdk::export_authorizing_environment!(GcpEnvironment);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_google_hosts_and_listed_origins_get_the_token() {
        let s = Settings::parse(r#"{"type":"gcp","authorize-urls":["http://127.0.0.1:5000"]}"#)
            .unwrap();
        for yes in [
            "https://us-central1-docker.pkg.dev/v2/",
            "https://storage.googleapis.com/b/o",
            "https://gcr.io/v2/",
            "http://127.0.0.1:5000/v2/x",
        ] {
            assert!(s.may_authorize(yes), "{yes}");
        }
        for no in [
            "http://storage.googleapis.com/x",
            "https://evil.com/x.googleapis.com",
            "https://googleapis.com.evil.com/",
            "http://127.0.0.1:5001/v2/",
        ] {
            assert!(!s.may_authorize(no), "{no}");
        }
        let e = Settings::parse(r#"{"type":"gcp","token-uri":"ftp://x"}"#).unwrap_err();
        assert!(e.message.contains("token-uri"), "{}", e.message);
    }
}
