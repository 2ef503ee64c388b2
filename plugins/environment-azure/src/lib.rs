//! `environment-azure`: the Azure environment of the default bundle
//! (`environment: {type: azure}`, as W&B configures it; W&B's agent calls
//! `DefaultAzureCredential()` and checks nothing at start-up).
//!
//! # What it does
//!
//! | call | what |
//! |---|---|
//! | `verify` (start-up, each job) | obtains an AAD token for Azure Resource Manager (see [`token`]); at start-up logs which source it used; on failure names each source tried and why, or AAD's error (`invalid_client: AADSTS7000215: ...`), never the secret or a token. A kept token spares later calls the round trip |
//! | `run-env` | `AZURE_REGION` when the block has a `region` |
//! | `authorizer.authorize` | `Authorization: Bearer <AAD token>` for another plugin's request to a host its grant marks `auth: environment`: only Azure's hosts, each with the token of its own scope ([`scope`]), or the origins of `authorize-urls` |
//!
//! The secret and the federated token never leave this plugin; AAD's
//! tokens are kept in the host (`secrets.keep`), one per scope, until five
//! minutes before they expire, never fetched per job.
//!
//! # Settings (`environment:` block plus `plugins.azure.config`)
//!
//! | key | meaning |
//! |---|---|
//! | `region` | W&B's key (may be null); passed to runs as `AZURE_REGION` when set |
//! | `authority-host` | AAD's authority (default `AZURE_AUTHORITY_HOST`, else `https://login.microsoftonline.com`): `https://login.microsoftonline.us` (US Government), `https://login.chinacloudapi.cn` (China), a stand-in |
//! | `imds-endpoint` | the instance metadata service of managed identity (default `http://169.254.169.254`) |
//! | `authorize-urls` | more origins (`scheme://host[:port]`) this environment adds a token to (a private registry mirror, a stand-in): a string (the token for Azure Resource Manager, as ACR's `/oauth2/exchange` takes) or `{url, scope}` |
//! | `blob-endpoints` | `{ACCOUNT: URL}`: where the host's blob capability reaches a storage account's Blob Storage instead of the store URL's own host (a stand-in: Azurite's `https://127.0.0.1:10000/devstoreaccount1`); read by the host, not here. Such an origin gets the token only if listed in `authorize-urls` with the storage scope too |

mod scope;
mod token;

use launch_plugin_sdk::authorizer::{Authorizer, HttpRequest, LentToken};
use launch_plugin_sdk::environment::Environment;
use launch_plugin_sdk::{Job, Plugin, PluginError, PluginInfo, Stage};
use serde::Deserialize;

/// AAD's authority in Azure's public cloud.
pub(crate) const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
/// The instance metadata service (managed identity).
const DEFAULT_IMDS: &str = "http://169.254.169.254";

/// The plugin.
struct AzureEnvironment;

/// An origin of `authorize-urls`: alone (Resource Manager's scope) or with
/// the scope its token is for.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub(crate) enum AuthorizeUrl {
    /// `scheme://host[:port]`.
    Origin(String),
    /// `{url: scheme://host[:port], scope: https://.../.default}`.
    WithScope {
        /// The origin.
        url: String,
        /// The scope of the token it gets.
        scope: String,
    },
}

impl AuthorizeUrl {
    fn url(&self) -> &str {
        match self {
            AuthorizeUrl::Origin(url) | AuthorizeUrl::WithScope { url, .. } => url,
        }
    }
}

/// The settings, as they arrive.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Settings {
    /// `azure` (or the name the config gave this plugin).
    #[serde(rename = "type")]
    _kind: String,
    /// The region (W&B's key).
    pub region: Option<String>,
    /// AAD's authority host.
    pub authority_host: Option<String>,
    /// The instance metadata service.
    pub imds_endpoint: Option<String>,
    /// More origins the token is added to.
    #[serde(default)]
    pub authorize_urls: Vec<AuthorizeUrl>,
    /// Where the host's blob capability reaches an account's Blob Storage
    /// (account → URL): read by the host, not here.
    #[serde(default, rename = "blob-endpoints")]
    _blob_endpoints: std::collections::BTreeMap<String, String>,
}

impl Settings {
    fn parse(settings: &str) -> Result<Settings, PluginError> {
        let s: Settings = launch_plugin_sdk::parse_settings(settings, Stage::Agent)?;
        for (key, url) in s
            .authority_host
            .iter()
            .map(|u| ("authority-host", u.as_str()))
            .chain(
                s.imds_endpoint
                    .iter()
                    .map(|u| ("imds-endpoint", u.as_str())),
            )
            .chain(s.authorize_urls.iter().map(|u| ("authorize-urls", u.url())))
        {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(PluginError::agent(format!(
                    "azure: `{key}` {url:?} must be an http:// or https:// URL"
                )));
            }
        }
        for u in &s.authorize_urls {
            if let AuthorizeUrl::WithScope { url, scope } = u
                && !scope.starts_with("https://")
            {
                return Err(PluginError::agent(format!(
                    "azure: the scope {scope:?} of `authorize-urls` entry {url} must be an https:// scope (`https://management.azure.com/.default`)"
                )));
            }
        }
        Ok(s)
    }

    /// AAD's authority, without a trailing `/`: the setting, else
    /// `AZURE_AUTHORITY_HOST`, else Azure's public cloud.
    pub(crate) fn authority(&self) -> String {
        self.authority_host
            .clone()
            .or_else(|| env("AZURE_AUTHORITY_HOST"))
            .unwrap_or_else(|| DEFAULT_AUTHORITY.to_string())
            .trim_end_matches('/')
            .to_string()
    }

    /// The instance metadata service, without a trailing `/`.
    pub(crate) fn imds_endpoint(&self) -> String {
        self.imds_endpoint
            .as_deref()
            .unwrap_or(DEFAULT_IMDS)
            .trim_end_matches('/')
            .to_string()
    }
}

/// An environment variable the grants let the plugin see, if set and not empty.
pub(crate) fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The AAD token for a request to `url`: of the scope `url`'s host takes
/// ([`scope::for_url`]); refused for a host that is not Azure's nor
/// listed. The one place that turns a URL into a token, for both
/// `authorize` and `bearer-token`.
fn bearer_for(settings: &Settings, url: &str) -> Result<token::Token, PluginError> {
    let Some(scope) = scope::for_url(settings, url) else {
        return Err(PluginError::agent(format!(
            "azure: refusing to add an AAD token to a request for {}: not an Azure host \
             (add its origin to the azure plugin's `authorize-urls` if it should get one)",
            launch_plugin_sdk::http::shown(url)
        )));
    };
    token::token_for(settings, &scope)
}

/// The value of a token the plugin minted or recalled.
fn revealed(token: &token::Token) -> Result<String, PluginError> {
    token
        .token
        .reveal()
        .map_err(|_| PluginError::agent("azure: the kept AAD token could not be read"))
}

impl Plugin for AzureEnvironment {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "environment-azure".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Azure: a client secret, workload identity or managed identity; Bearer tokens for requests marked auth: environment".into(),
        }
    }
}

impl Environment for AzureEnvironment {
    fn verify(settings: String) -> Result<(), PluginError> {
        let settings = Settings::parse(&settings)?;
        let kept = launch_plugin_sdk::recall(&token::key_of(scope::MANAGEMENT)).is_some();
        let token = token::token_for(&settings, scope::MANAGEMENT)?;
        if !kept {
            launch_plugin_sdk::info!("azure: AAD token obtained from {}", token.source);
        }
        Ok(())
    }

    fn run_env(settings: String, _job: Job) -> Result<Vec<(String, String)>, PluginError> {
        let settings = Settings::parse(&settings)?;
        Ok(settings
            .region
            .map(|r| ("AZURE_REGION".to_string(), r))
            .into_iter()
            .collect())
    }
}

impl Authorizer for AzureEnvironment {
    fn authorize(
        settings: String,
        request: HttpRequest,
    ) -> Result<Vec<(String, String)>, PluginError> {
        let settings = Settings::parse(&settings)?;
        let value = revealed(&bearer_for(&settings, &request.url)?)?;
        Ok(vec![("authorization".into(), format!("Bearer {value}"))])
    }

    fn bearer_token(settings: String, url: String) -> Result<LentToken, PluginError> {
        let settings = Settings::parse(&settings)?;
        let token = bearer_for(&settings, &url)?;
        Ok(LentToken {
            value: revealed(&token)?,
            expires_in_seconds: token.expires_in,
        })
    }
}

launch_plugin_sdk::export_authorizing_environment!(AzureEnvironment);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_name_the_key_that_is_wrong() {
        let e =
            Settings::parse(r#"{"type":"azure","authority-host":"login.example"}"#).unwrap_err();
        assert!(e.message.contains("authority-host"), "{}", e.message);
        let e = Settings::parse(
            r#"{"type":"azure","authorize-urls":[{"url":"http://x:1","scope":"storage"}]}"#,
        )
        .unwrap_err();
        assert!(e.message.contains("authorize-urls"), "{}", e.message);
        let e = Settings::parse(r#"{"type":"azure","project":"p"}"#).unwrap_err();
        assert!(e.message.contains("project"), "{}", e.message);
        let s = Settings::parse(
            r#"{"type":"azure","region":null,"authority-host":"https://login.microsoftonline.us/"}"#,
        )
        .unwrap();
        assert_eq!(s.authority(), "https://login.microsoftonline.us");
        assert_eq!(s.imds_endpoint(), DEFAULT_IMDS);
    }
}
