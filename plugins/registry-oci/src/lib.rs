//! `registry-oci`: the registry plugin of the default bundle, for any OCI
//! distribution (v2) registry — Docker Hub, GHCR, Harbor, `registry:2`, ...
//! It is also the model to copy for a registry plugin of your own.
//!
//! # launch-config.yaml
//!
//! ```yaml
//! secrets:
//!   registry-password: { env: REGISTRY_PASSWORD }
//!
//! registry:
//!   type: oci
//!   uri: registry.example.com/team/launch   # HOST[:PORT]/REPOSITORY, no tag
//!
//! plugins:
//!   oci:                  # settings and grants for the bundled plugin (no `path`)
//!     grants:
//!       secrets: [registry-password]
//!       # hosts: the registry's own host is granted by default
//!     config:
//!       username: launch                   # omit both for anonymous access
//!       password-secret: registry-password # a name from `secrets:`
//!       # insecure: true   # plain HTTP; the default only for 127.0.0.1 / localhost
//! ```
//!
//! A leading `https://` in `uri` is dropped, as W&B does.
//!
//! # What each call does
//!
//! | call | result |
//! |---|---|
//! | `repository-uri` | the `uri` |
//! | `image-exists` | a HEAD on the image's manifest through the host's `oci` capability, logged in |
//! | `login` | `username` and the opened `password-secret`, or none when anonymous |
//! | `verify` (start-up) | nothing: settings are checked by the first job |
//!
//! # Errors
//!
//! Settings mistakes and secrets that cannot be opened fail at stage
//! `agent`: they are the config's to fix. A registry that cannot be asked
//! (unreachable, credentials refused, host not granted) fails
//! `image-exists` at stage `build`, as W&B reports registry failures met
//! while building. No failure is marked retryable.

use launch_plugin_sdk::registry::oci::{self, OciLogin};
use launch_plugin_sdk::registry::{Registry, RegistryLogin};
use launch_plugin_sdk::{Plugin, PluginError, PluginInfo, Secret, SecretError, Stage};
use serde::Deserialize;

/// The plugin.
struct OciRegistry;

/// The settings as they arrive: the config's `registry:` block merged with
/// the plugin's `config:` block.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSettings {
    /// `oci` (or the name the config gave this plugin).
    #[serde(rename = "type")]
    _kind: String,
    /// `HOST[:PORT]/REPOSITORY`.
    uri: Option<String>,
    /// The registry user; none for anonymous access.
    username: Option<String>,
    /// The name of the secret (in the config's `secrets:`) holding the password.
    password_secret: Option<String>,
    /// Plain HTTP instead of HTTPS.
    insecure: Option<bool>,
}

/// The settings, checked.
#[derive(Debug, PartialEq, Eq)]
struct Settings {
    /// `HOST[:PORT]/REPOSITORY`, without scheme or tag.
    repository: String,
    /// User name and password secret name, or none for anonymous access.
    credentials: Option<(String, String)>,
    /// Plain HTTP instead of HTTPS.
    insecure: bool,
}

impl Settings {
    /// Parses and checks `settings`; every error is at stage `agent` and
    /// names the key to fix.
    fn parse(settings: &str) -> Result<Settings, PluginError> {
        let raw: RawSettings = launch_plugin_sdk::parse_settings(settings, Stage::Agent)?;
        let uri = raw.uri.ok_or_else(|| {
            PluginError::agent("set `registry.uri` (HOST[:PORT]/REPOSITORY) in launch-config.yaml")
        })?;
        let repository = uri
            .trim()
            .trim_start_matches("https://")
            .trim_end_matches('/');
        let (host, path) = repository.split_once('/').unwrap_or((repository, ""));
        if repository.contains("://") || host.is_empty() || path.is_empty() {
            return Err(PluginError::agent(format!(
                "`registry.uri` {uri:?} must look like HOST[:PORT]/REPOSITORY, \
                 e.g. registry.example.com/team/launch"
            )));
        }
        if path.contains(':') || path.contains('@') {
            return Err(PluginError::agent(format!(
                "`registry.uri` {uri:?} must not have a tag or digest: \
                 it names the repository, each job's image gets its own tag"
            )));
        }
        let credentials = match (raw.username, raw.password_secret) {
            (Some(user), Some(secret)) => Some((user, secret)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(PluginError::agent(
                    "`username` needs `password-secret` (the name of a secret in `secrets:`)",
                ));
            }
            (None, Some(_)) => {
                return Err(PluginError::agent("`password-secret` needs `username`"));
            }
        };
        let host_name = match host.rsplit_once(':') {
            Some((name, port)) if port.parse::<u16>().is_ok() => name,
            _ => host,
        };
        let local = matches!(host_name, "127.0.0.1" | "localhost" | "[::1]");
        Ok(Settings {
            repository: repository.to_string(),
            credentials,
            insecure: raw.insecure.unwrap_or(local),
        })
    }

    /// Opens the password secret; none for anonymous access.
    fn login(&self) -> Result<Option<RegistryLogin>, PluginError> {
        let Some((username, secret)) = &self.credentials else {
            return Ok(None);
        };
        let password = launch_plugin_sdk::open(secret).map_err(|e| {
            PluginError::agent(format!(
                "cannot open secret {secret:?} (`password-secret`): {}",
                secret_error(&e)
            ))
        })?;
        Ok(Some(RegistryLogin {
            username: username.clone(),
            password,
        }))
    }
}

/// The message of a [`SecretError`].
fn secret_error(error: &SecretError) -> &str {
    match error {
        SecretError::NotGranted(m) | SecretError::Unavailable(m) | SecretError::Opaque(m) => m,
    }
}

impl Plugin for OciRegistry {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "registry-oci".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description:
                "Any OCI distribution registry, anonymous or with a user name and a password secret"
                    .into(),
        }
    }
}

impl Registry for OciRegistry {
    fn repository_uri(settings: String) -> Result<String, PluginError> {
        Ok(Settings::parse(&settings)?.repository)
    }

    fn image_exists(settings: String, image_uri: String) -> Result<bool, PluginError> {
        let settings = Settings::parse(&settings)?;
        let login = settings.login()?;
        let oci_login = OciLogin {
            username: login.as_ref().map(|l| l.username.clone()),
            insecure: settings.insecure,
        };
        let password: Option<&Secret> = login.as_ref().map(|l| &l.password);
        oci::manifest_exists(&image_uri, &oci_login, password)
            .map_err(|e| PluginError::build(format!("registry-oci: {}", e.message)))
    }

    fn login(settings: String) -> Result<Option<RegistryLogin>, PluginError> {
        Settings::parse(&settings)?.login()
    }

    /// Nothing is checked at start-up (as before contract 0.2): a mistake
    /// in the settings fails the first job that uses them, naming the key.
    fn verify(_settings: String) -> Result<(), PluginError> {
        Ok(())
    }
}

launch_plugin_sdk::export_registry!(OciRegistry);

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Settings, String> {
        Settings::parse(json).map_err(|e| {
            assert_eq!(e.stage, Stage::Agent);
            e.message
        })
    }

    #[test]
    fn a_registry_with_credentials() {
        let s = parse(
            r#"{"type":"oci","uri":"https://registry.example.com/team/launch/",
                "username":"launch","password-secret":"registry-password"}"#,
        )
        .unwrap();
        assert_eq!(
            s,
            Settings {
                repository: "registry.example.com/team/launch".into(),
                credentials: Some(("launch".into(), "registry-password".into())),
                insecure: false,
            }
        );
    }

    #[test]
    fn local_registries_default_to_plain_http() {
        for uri in [
            "127.0.0.1:5000/app",
            "localhost/app",
            "[::1]:5000/app",
            "[::1]/app",
        ] {
            let s = parse(&format!(r#"{{"type":"oci","uri":"{uri}"}}"#)).unwrap();
            assert!(s.insecure, "{uri}");
            assert_eq!(s.credentials, None);
        }
        let s = parse(r#"{"type":"oci","uri":"127.0.0.1:5000/app","insecure":false}"#).unwrap();
        assert!(!s.insecure);
        let s = parse(r#"{"type":"oci","uri":"registry.lan:5000/app","insecure":true}"#).unwrap();
        assert!(s.insecure);
    }

    #[test]
    fn a_tag_or_digest_is_refused() {
        for uri in ["r.example.com/app:v1", "r.example.com:443/app@sha256:00"] {
            let e = parse(&format!(r#"{{"type":"oci","uri":"{uri}"}}"#)).unwrap_err();
            assert!(e.contains("must not have a tag"), "{e}");
        }
    }

    #[test]
    fn a_malformed_or_missing_uri_is_named() {
        for uri in [
            "registry.example.com",
            "http://r.example.com/app",
            "/app",
            "",
        ] {
            let e = parse(&format!(r#"{{"type":"oci","uri":"{uri}"}}"#)).unwrap_err();
            assert!(e.contains("HOST[:PORT]/REPOSITORY"), "{uri}: {e}");
        }
        let e = parse(r#"{"type":"oci"}"#).unwrap_err();
        assert!(e.contains("registry.uri"), "{e}");
    }

    #[test]
    fn credentials_come_in_pairs() {
        let e = parse(r#"{"type":"oci","uri":"r.io/app","username":"u"}"#).unwrap_err();
        assert!(e.contains("password-secret"), "{e}");
        let e = parse(r#"{"type":"oci","uri":"r.io/app","password-secret":"p"}"#).unwrap_err();
        assert!(e.contains("username"), "{e}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = parse(r#"{"type":"oci","uri":"r.io/app","pasword-secret":"p"}"#).unwrap_err();
        assert!(e.contains("pasword-secret"), "{e}");
    }
}
