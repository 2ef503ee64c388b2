//! `registry-computed`: a test registry plugin whose repository is computed
//! from its own settings, not taken from `registry.uri` (as ECR's is
//! computed from the account and the region). The host's tests use it to
//! check that the builder's push grant follows the repository the registry
//! plugin gives (`repository-uri`), whatever key it came from.
//!
//! | setting (its `plugins:` entry's `config:`) | meaning |
//! |---|---|
//! | `registry` | `HOST:PORT` of the registry |
//! | `repository` | the repository's name in it |
//! | `username`, `password-secret` | the login (a secret name from `secrets:`) |
//!
//! `registry.uri` is accepted and ignored. The registry is asked over plain
//! HTTP (the tests' registry is on 127.0.0.1).

use launch_plugin_sdk::registry::oci::{self, OciLogin};
use launch_plugin_sdk::registry::{Registry, RegistryLogin};
use launch_plugin_sdk::{Plugin, PluginError, PluginInfo, Secret, Stage};
use serde::Deserialize;

/// The plugin.
struct ComputedRegistry;

/// The settings: the config's `registry:` block merged with the plugin's
/// `config:` block.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Settings {
    /// The block's type.
    #[serde(rename = "type")]
    _kind: String,
    /// `registry.uri`: ignored.
    #[serde(rename = "uri")]
    _uri: Option<String>,
    /// `HOST:PORT`.
    registry: String,
    /// The repository's name.
    repository: String,
    /// The registry user.
    username: String,
    /// The secret holding the password.
    password_secret: String,
}

impl Settings {
    fn parse(settings: &str) -> Result<Settings, PluginError> {
        launch_plugin_sdk::parse_settings(settings, Stage::Agent)
    }

    fn repository(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    fn login(&self) -> Result<RegistryLogin, PluginError> {
        let password = launch_plugin_sdk::open(&self.password_secret).map_err(|_| {
            PluginError::agent(format!("cannot open secret {:?}", self.password_secret))
        })?;
        Ok(RegistryLogin {
            username: self.username.clone(),
            password,
        })
    }
}

impl Plugin for ComputedRegistry {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "registry-computed".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Test registry whose repository is computed from its own settings".into(),
        }
    }
}

impl Registry for ComputedRegistry {
    /// Its settings are checked when a job uses them.
    fn verify(_settings: String) -> Result<(), PluginError> {
        Ok(())
    }

    fn repository_uri(settings: String) -> Result<String, PluginError> {
        Ok(Settings::parse(&settings)?.repository())
    }

    fn image_exists(settings: String, image_uri: String) -> Result<bool, PluginError> {
        let settings = Settings::parse(&settings)?;
        let login = settings.login()?;
        let oci_login = OciLogin {
            username: Some(login.username.clone()),
            insecure: true,
        };
        let password: Option<&Secret> = Some(&login.password);
        oci::manifest_exists(&image_uri, &oci_login, password)
            .map_err(|e| PluginError::build(format!("registry-computed: {}", e.message)))
    }

    fn login(settings: String) -> Result<Option<RegistryLogin>, PluginError> {
        Settings::parse(&settings)?.login().map(Some)
    }
}

launch_plugin_sdk::export_registry!(ComputedRegistry);
