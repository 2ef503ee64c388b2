//! `registry-acr`: Azure Container Registry, the registry of the default
//! bundle for `registry: {type: acr, uri: REG.azurecr.io/REPO}` (as W&B
//! configures it), with the `azure` environment.
//!
//! ACR's docker login is user `00000000-0000-0000-0000-000000000000` with an
//! ACR *refresh token* as the password, which `POST
//! https://REG.azurecr.io/oauth2/exchange` gives for an AAD token
//! (`grant_type=access_token`, `service=REG`, `access_token=...`); docker
//! then trades it for an access token at the registry's token realm
//! (`/oauth2/token`) by itself. W&B's agent never implemented this (its
//! docker builder fails to push to ACR). This plugin holds neither token:
//!
//! 1. it asks the host for the environment's AAD token for the registry's
//!    origin (`lent.bearer-token`; its grant marks the origin `auth:
//!    environment`) and gets a handle it cannot read;
//! 2. it has the host post the exchange form with that handle filled in
//!    (`lent.post-form`, which sends it to that origin only) and gets the
//!    refresh token back as a handle it cannot read either, bound to the
//!    registry;
//! 3. it keeps that handle (`secrets.keep`) for [`REFRESH_TTL_SECONDS`]
//!    (ACR's refresh tokens live three hours), so one exchange serves many
//!    jobs, and returns it as its login's password and passes it to the
//!    `oci` lookups. A lookup the registry refuses (401/403) drops it and
//!    exchanges once more.
//!
//! | call | what |
//! |---|---|
//! | `verify` (start-up) | the exchange works (says so, naming the registry), and the registry takes the refresh token: a manifest lookup in the repository (`HEAD /v2/REPO/manifests/launch-agent-verify`) is not refused |
//! | `repository-uri` | `REG.azurecr.io/REPO` (or `registry-address/REPO`) |
//! | `login` | user `00000000-0000-0000-0000-000000000000`, the kept refresh token |
//! | `image-exists` | `HEAD /v2/REPO/manifests/TAG` through the `oci` capability with that login |
//!
//! Built lean (`wasm32-unknown-unknown`): it needs no WASI, only the
//! contract's `lent`, `oci`, `secrets` and `log`.
//!
//! # Settings (`registry:` block plus `plugins.acr.config`)
//!
//! | key | meaning |
//! |---|---|
//! | `uri` | `REG.azurecr.io/REPO` (`.azurecr.us`, `.azurecr.cn` for the sovereign clouds); a leading `https://` is dropped, a tag refused, the repository required |
//! | `tenant` | the AAD tenant sent with the exchange (optional, as `az acr login`'s `tenant`) |
//! | `registry-address` | where images are pushed and looked up, and the exchange is posted, instead of the `uri`'s host (a private endpoint, a test stand-in); the `service` stays the `uri`'s host |
//! | `insecure` | plain HTTP to `registry-address` (default: only for 127.0.0.1 / localhost) |

use launch_plugin_sdk::registry::lent::{self, FormValue};
use launch_plugin_sdk::registry::oci::{self, OciLogin};
use launch_plugin_sdk::registry::{Registry, RegistryLogin};
use launch_plugin_sdk::{Plugin, PluginError, PluginInfo, Secret, SecretError, Stage};
use serde::Deserialize;

/// The user name of every login with an ACR refresh token.
const USER: &str = "00000000-0000-0000-0000-000000000000";
/// The tag `verify` looks up (its absence is fine; a refusal is not).
const VERIFY_TAG: &str = "launch-agent-verify";
/// How long a refresh token is kept: ACR issues them for three hours, and
/// an hour's margin covers a long build between `login` and the push.
const REFRESH_TTL_SECONDS: u64 = 2 * 3600;
/// The exchange answer's member that is the refresh token.
const REFRESH_FIELD: &str = "refresh_token";

/// The plugin.
struct AcrRegistry;

/// The settings, as they arrive.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSettings {
    #[serde(rename = "type")]
    _kind: String,
    uri: Option<String>,
    tenant: Option<String>,
    registry_address: Option<String>,
    insecure: Option<bool>,
}

/// The settings, checked.
#[derive(Debug, PartialEq, Eq)]
struct Settings {
    /// `REG.azurecr.io`: the `service` of the exchange and of the tokens.
    service: String,
    /// `REG.azurecr.io` or `registry-address`: where requests go.
    registry: String,
    /// `REPO` (may have `/`).
    repository: String,
    tenant: Option<String>,
    insecure: bool,
}

/// What a good `uri` looks like, for errors.
const SHAPE: &str = "REGISTRY.azurecr.io/REPOSITORY, e.g. myregistry.azurecr.io/launch";

/// The login-server suffixes of ACR in Azure's clouds.
const SUFFIXES: &[&str] = &[".azurecr.io", ".azurecr.us", ".azurecr.cn"];

impl Settings {
    fn parse(settings: &str) -> Result<Settings, PluginError> {
        let raw: RawSettings = launch_plugin_sdk::parse_settings(settings, Stage::Agent)?;
        let Some(uri) = raw.uri.as_deref().map(str::trim) else {
            return Err(PluginError::agent(format!(
                "set `registry.uri` ({SHAPE}) in launch-config.yaml"
            )));
        };
        let bare = uri.trim_start_matches("https://").trim_end_matches('/');
        let bad = || PluginError::agent(format!("`registry.uri` {uri:?} must look like {SHAPE}"));
        let (host, path) = bare.split_once('/').ok_or_else(|| {
            PluginError::agent(format!(
                "`registry.uri` {uri:?} names no repository: ACR needs REPOSITORY after the \
                 registry ({SHAPE})"
            ))
        })?;
        let host = host.to_ascii_lowercase();
        let name = SUFFIXES
            .iter()
            .find_map(|suffix| host.strip_suffix(suffix))
            .ok_or_else(bad)?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(bad());
        }
        if path.contains(':') || path.contains('@') {
            return Err(PluginError::agent(format!(
                "`registry.uri` {uri:?} must not have a tag or digest: it names the repository, \
                 each job's image gets its own tag"
            )));
        }
        if path.split('/').any(str::is_empty) {
            return Err(bad());
        }
        if let Some(tenant) = &raw.tenant
            && (tenant.is_empty()
                || !tenant
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
        {
            return Err(PluginError::agent(format!(
                "`tenant` {tenant:?} of the acr plugin is not a tenant id or domain"
            )));
        }
        let registry = raw.registry_address.unwrap_or_else(|| host.clone());
        let local = registry.starts_with("127.0.0.1") || registry.starts_with("localhost");
        Ok(Settings {
            service: host,
            registry,
            repository: path.to_string(),
            tenant: raw.tenant,
            insecure: raw.insecure.unwrap_or(local),
        })
    }

    /// `scheme://registry/`, the origin of the registry and its token server.
    fn origin(&self) -> String {
        let scheme = if self.insecure { "http" } else { "https" };
        format!("{scheme}://{}/", self.registry)
    }

    /// The key the refresh token is kept under.
    fn kept_key(&self) -> String {
        format!("acr-refresh-token {} {}", self.registry, self.service)
    }

    /// The kept refresh token, else a fresh one (kept); `fresh` forces the
    /// exchange (the registry refused the kept one).
    fn refresh_token(&self, fresh: bool) -> Result<Secret, PluginError> {
        let key = self.kept_key();
        if fresh {
            launch_plugin_sdk::forget(&key);
        } else if let Some(kept) = launch_plugin_sdk::recall(&key) {
            return Ok(kept);
        }
        let token = self.exchange()?;
        if let Err(e) = launch_plugin_sdk::keep(&key, &token, REFRESH_TTL_SECONDS) {
            launch_plugin_sdk::warn!(
                "registry-acr: the refresh token for {} could not be kept, the next call \
                 exchanges again: {}",
                self.registry,
                why(&e)
            );
        }
        Ok(token)
    }

    /// `POST /oauth2/exchange` (made by the host) with the environment's
    /// AAD token: the refresh token, as a handle this plugin cannot read.
    fn exchange(&self) -> Result<Secret, PluginError> {
        let origin = self.origin();
        let aad = lent::bearer_token(&origin).map_err(|e| {
            PluginError::agent(format!(
                "registry-acr: no AAD token for {}: {}",
                self.registry,
                why(&e)
            ))
        })?;
        let mut fields = vec![
            (
                "grant_type".to_string(),
                FormValue::Text("access_token".into()),
            ),
            ("service".to_string(), FormValue::Text(self.service.clone())),
        ];
        if let Some(tenant) = &self.tenant {
            fields.push(("tenant".to_string(), FormValue::Text(tenant.clone())));
        }
        fields.push(("access_token".to_string(), FormValue::Secret(aad)));
        let url = format!("{origin}oauth2/exchange");
        let answer = lent::post_form(&url, fields, &[REFRESH_FIELD.to_string()]).map_err(|e| {
            PluginError::agent(format!(
                "registry-acr: the exchange of the AAD token at {} failed: {}",
                self.registry,
                why(&e)
            ))
        })?;
        if answer.status != 200 {
            return Err(PluginError::agent(format!(
                "registry-acr: {} refused to exchange the environment's AAD token for a \
                 refresh token ({} {}): does the identity have AcrPush on the registry?",
                self.registry,
                answer.status,
                acr_error(&answer.body)
            )));
        }
        answer
            .secrets
            .into_iter()
            .find(|(field, _)| field == REFRESH_FIELD)
            .map(|(_, token)| token)
            .ok_or_else(|| {
                PluginError::agent(format!(
                    "registry-acr: {} answered the exchange without a refresh_token",
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

    /// Whether `image` has a manifest, with the kept refresh token; once
    /// more with a fresh one if the registry refuses it.
    fn manifest_exists(&self, image: &str) -> Result<bool, oci::OciError> {
        let asked = |token: Result<Secret, PluginError>| {
            let token = token.map_err(|e| oci::OciError {
                message: e.message,
                unauthorized: false,
                denied: false,
            })?;
            oci::manifest_exists(image, &self.oci_login(), Some(&token))
        };
        match asked(self.refresh_token(false)) {
            Err(e) if e.unauthorized => asked(self.refresh_token(true)),
            other => other,
        }
    }
}

/// A secret error's message.
fn why(e: &SecretError) -> &str {
    match e {
        SecretError::NotGranted(m) | SecretError::Unavailable(m) | SecretError::Opaque(m) => m,
    }
}

/// ACR's error body (`{"errors": [{"code", "message"}]}`) as
/// `CODE: message`, else the body itself, cut short.
fn acr_error(body: &str) -> String {
    let parsed: Option<String> = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let errors = v.get("errors")?.as_array()?;
            let shown: Vec<String> = errors
                .iter()
                .map(|e| {
                    format!(
                        "{}: {}",
                        e.get("code").and_then(|c| c.as_str()).unwrap_or("?"),
                        e.get("message").and_then(|m| m.as_str()).unwrap_or("")
                    )
                })
                .collect();
            (!shown.is_empty()).then(|| shown.join("; "))
        });
    parsed.unwrap_or_else(|| body.chars().take(300).collect())
}

impl Plugin for AcrRegistry {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "registry-acr".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Azure Container Registry: the azure environment's AAD token exchanged for a refresh token by the host, kept as an opaque login".into(),
        }
    }
}

impl Registry for AcrRegistry {
    fn repository_uri(settings: String) -> Result<String, PluginError> {
        let s = Settings::parse(&settings)?;
        Ok(format!("{}/{}", s.registry, s.repository))
    }

    fn image_exists(settings: String, image_uri: String) -> Result<bool, PluginError> {
        let s = Settings::parse(&settings)?;
        s.manifest_exists(&image_uri)
            .map_err(|e| PluginError::build(format!("registry-acr: {}", e.message)))
    }

    fn login(settings: String) -> Result<Option<RegistryLogin>, PluginError> {
        let s = Settings::parse(&settings)?;
        Ok(Some(RegistryLogin {
            username: USER.into(),
            password: s.refresh_token(false)?,
        }))
    }

    fn verify(settings: String) -> Result<(), PluginError> {
        let s = Settings::parse(&settings)?;
        s.refresh_token(true)?;
        launch_plugin_sdk::info!(
            "registry-acr: {} exchanged the environment's AAD token for a refresh token (kept)",
            s.service
        );
        let probe = format!("{}/{}:{VERIFY_TAG}", s.registry, s.repository);
        match s.manifest_exists(&probe) {
            Ok(_) => {
                launch_plugin_sdk::info!(
                    "registry-acr: {} takes the refresh token for {}",
                    s.registry,
                    s.repository
                );
                Ok(())
            }
            Err(e) if e.unauthorized => Err(PluginError::agent(format!(
                "registry-acr: {} refused the refresh token for {}: does the identity have \
                 AcrPush on the registry? ({})",
                s.registry, s.repository, e.message
            ))),
            Err(e) => Err(PluginError::agent(format!("registry-acr: {}", e.message))),
        }
    }
}

launch_plugin_sdk::export_registry!(AcrRegistry);

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Settings, String> {
        Settings::parse(json).map_err(|e| e.message)
    }

    #[test]
    fn wandb_uris_are_read() {
        let s = parse(r#"{"type":"acr","uri":"https://MyReg.azurecr.io/team/launch/"}"#).unwrap();
        assert_eq!(
            s,
            Settings {
                service: "myreg.azurecr.io".into(),
                registry: "myreg.azurecr.io".into(),
                repository: "team/launch".into(),
                tenant: None,
                insecure: false,
            }
        );
        assert_eq!(s.origin(), "https://myreg.azurecr.io/");
        let s = parse(
            r#"{"type":"acr","uri":"reg.azurecr.us/launch","tenant":"contoso.onmicrosoft.com","registry-address":"127.0.0.1:5000"}"#,
        )
        .unwrap();
        assert_eq!(
            (s.service.as_str(), s.registry.as_str(), s.insecure),
            ("reg.azurecr.us", "127.0.0.1:5000", true)
        );
        assert_eq!(s.origin(), "http://127.0.0.1:5000/");
        assert_eq!(s.tenant.as_deref(), Some("contoso.onmicrosoft.com"));
    }

    #[test]
    fn bad_uris_name_the_key() {
        for uri in [
            "registry.example.com/launch",
            "azurecr.io/launch",
            ".azurecr.io/launch",
            "my_reg.azurecr.io/launch",
            "reg.azurecr.io/a//b",
        ] {
            let e = parse(&format!(r#"{{"type":"acr","uri":"{uri}"}}"#)).unwrap_err();
            assert!(e.contains("registry.uri"), "{uri}: {e}");
        }
        let e = parse(r#"{"type":"acr","uri":"reg.azurecr.io"}"#).unwrap_err();
        assert!(
            e.contains("names no repository") && e.contains("registry.uri"),
            "{e}"
        );
        let e = parse(r#"{"type":"acr","uri":"reg.azurecr.io/launch:v1"}"#).unwrap_err();
        assert!(e.contains("must not have a tag"), "{e}");
        let e = parse(r#"{"type":"acr"}"#).unwrap_err();
        assert!(e.contains("registry.uri"), "{e}");
        let e = parse(r#"{"type":"acr","uri":"reg.azurecr.io/l","tenant":"a b"}"#).unwrap_err();
        assert!(e.contains("tenant"), "{e}");
        let e = parse(r#"{"type":"acr","uri":"reg.azurecr.io/l","region":"x"}"#).unwrap_err();
        assert!(e.contains("region"), "{e}");
    }

    #[test]
    fn acr_errors_are_shown_by_code() {
        assert_eq!(
            acr_error(r#"{"errors":[{"code":"UNAUTHORIZED","message":"no"}]}"#),
            "UNAUTHORIZED: no"
        );
        assert_eq!(acr_error("plain"), "plain");
    }
}
