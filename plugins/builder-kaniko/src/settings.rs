//! The kaniko builder's settings: the W&B `builder:` keys, the plugin's own
//! config keys, and W&B's environment variables for what its helm chart
//! sets on the agent's pod.
//!
//! ```yaml
//! builder:
//!   type: kaniko
//!   build-context-store: s3://my-bucket/build-contexts/
//!   build-job-name: wandb-image-build
//!   secret-name: aws-secret
//!   secret-key: credentials
//!   kaniko-image: gcr.io/kaniko-project/executor:v1.11.0
//!   kaniko-config:
//!     spec:
//!       template:
//!         spec:
//!           containers:
//!           - args: ["--cache=false"]
//! ```
//!
//! | key | meaning | default |
//! |---|---|---|
//! | `build-context-store` | where contexts go (see [`crate::store`]) | none: needs a PVC |
//! | `build-job-name` | prefix of the build Job's name, `<prefix>-<run id>` | `wandb-launch-container-build` (W&B's) |
//! | `secret-name`, `secret-key` | a Secret with the cloud's credentials, mounted as W&B does (both or neither) | none |
//! | `kaniko-image` | the executor image | `gcr.io/kaniko-project/executor:v1.11.0` |
//! | `kaniko-config` | a batch/v1 Job the build Job is made from (see [`crate::manifest`]) | `{}` |
//! | `destination` | the image repository (the host passes it as the request's destination) | the registry's |
//! | `platform` | Kaniko's `--custom-platform` | none |
//! | plugin config `base-image` | the Python image of generated Dockerfiles, as builder-docker's | `python:3.11-slim` |
//! | plugin config `namespace` | where the build's objects go | `wandb` (W&B's, outside a pod) |
//! | plugin config `service-account` | the build pod's service account; else `WANDB_LAUNCH_SERVICE_ACCOUNT_NAME` | `default` |
//! | plugin config `pvc-name`, `pvc-mount-path`; else `WANDB_LAUNCH_KANIKO_PVC_NAME`, `_MOUNT_PATH` | a PVC as the context store | none, `/kaniko` |
//! | plugin config `auth-secret`; else `WANDB_LAUNCH_KANIKO_AUTH_SECRET` | a user's `kubernetes.io/dockerconfigjson` Secret for the push, instead of the registry's login | none |
//!
//! The environment variables are read only where the plugin's config
//! grants them (`grants.env`); the config keys win.

use crate::names::{is_dns_label, is_dns_subdomain};
use crate::store::ContextStore;
use launch_plugin_sdk::{PluginError, Stage};
use serde::Deserialize;
use serde_json::Value;

/// W&B's default prefix of build Job names.
pub const DEFAULT_BUILD_JOB_NAME: &str = "wandb-launch-container-build";

/// W&B's default executor image.
pub const DEFAULT_KANIKO_IMAGE: &str = "gcr.io/kaniko-project/executor:v1.11.0";

/// W&B's namespace when the agent does not run in a pod.
pub const DEFAULT_NAMESPACE: &str = "wandb";

/// W&B's service account of the build pod.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// The settings JSON the host passes: the config's `builder:` block merged
/// with the plugin's `config:` block. Unknown keys are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `builder.type` (`kaniko`, or the plugin's name).
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// `builder.destination` (the host passes it as the request's).
    #[serde(default)]
    pub destination: Option<String>,
    /// `builder.platform`.
    #[serde(default)]
    pub platform: Option<String>,
    /// `builder.build-context-store`.
    #[serde(rename = "build-context-store", default)]
    pub build_context_store: Option<String>,
    /// `builder.build-job-name`.
    #[serde(rename = "build-job-name", default)]
    pub build_job_name: Option<String>,
    /// `builder.secret-name`.
    #[serde(rename = "secret-name", default)]
    pub secret_name: Option<String>,
    /// `builder.secret-key`.
    #[serde(rename = "secret-key", default)]
    pub secret_key: Option<String>,
    /// `builder.kaniko-image`.
    #[serde(rename = "kaniko-image", default)]
    pub kaniko_image: Option<String>,
    /// `builder.kaniko-config`.
    #[serde(rename = "kaniko-config", default)]
    pub kaniko_config: Option<Value>,
    /// Plugin config `base-image`.
    #[serde(rename = "base-image", default)]
    pub base_image: Option<String>,
    /// Plugin config `namespace`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Plugin config `service-account`.
    #[serde(rename = "service-account", default)]
    pub service_account: Option<String>,
    /// Plugin config `pvc-name`.
    #[serde(rename = "pvc-name", default)]
    pub pvc_name: Option<String>,
    /// Plugin config `pvc-mount-path`.
    #[serde(rename = "pvc-mount-path", default)]
    pub pvc_mount_path: Option<String>,
    /// Plugin config `auth-secret`.
    #[serde(rename = "auth-secret", default)]
    pub auth_secret: Option<String>,
}

/// W&B's environment variables for the Kaniko builder (what its helm chart
/// sets), as the plugin sees them.
#[derive(Debug, Default, Clone)]
pub struct WandbEnv {
    /// `WANDB_LAUNCH_KANIKO_PVC_NAME`.
    pub pvc_name: Option<String>,
    /// `WANDB_LAUNCH_KANIKO_PVC_MOUNT_PATH`.
    pub pvc_mount_path: Option<String>,
    /// `WANDB_LAUNCH_KANIKO_AUTH_SECRET`.
    pub auth_secret: Option<String>,
    /// `WANDB_LAUNCH_SERVICE_ACCOUNT_NAME`.
    pub service_account: Option<String>,
}

impl WandbEnv {
    /// The variables from the process environment (in the plugin: those
    /// its `grants.env` lets it see).
    pub fn from_process() -> WandbEnv {
        let var = |name: &str| std::env::var(name).ok();
        WandbEnv {
            pvc_name: var("WANDB_LAUNCH_KANIKO_PVC_NAME"),
            pvc_mount_path: var("WANDB_LAUNCH_KANIKO_PVC_MOUNT_PATH"),
            auth_secret: var("WANDB_LAUNCH_KANIKO_AUTH_SECRET"),
            service_account: var("WANDB_LAUNCH_SERVICE_ACCOUNT_NAME"),
        }
    }
}

/// A Secret with the cloud's credentials (`secret-name`, `secret-key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudSecret {
    /// The Secret's name.
    pub name: String,
    /// The key in it that holds the credentials file.
    pub key: String,
}

/// The validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where contexts go.
    pub store: ContextStore,
    /// The build Job name's prefix.
    pub build_job_name: String,
    /// The cloud credentials' Secret, if any.
    pub cloud_secret: Option<CloudSecret>,
    /// The executor image.
    pub kaniko_image: String,
    /// The Job manifest the build Job starts from (an object).
    pub kaniko_config: Value,
    /// `--custom-platform`, if set.
    pub platform: Option<String>,
    /// The base image of generated Dockerfiles.
    pub base_image: String,
    /// The namespace of the build's objects (unless `kaniko-config` names one).
    pub namespace: String,
    /// The build pod's service account (unless `kaniko-config` names one).
    pub service_account: String,
    /// A user's docker config Secret for the push, if any.
    pub auth_secret: Option<String>,
}

impl Settings {
    /// Parses the settings JSON; errors have stage `build` and name the key.
    pub fn parse(settings: &str) -> Result<Settings, PluginError> {
        launch_plugin_sdk::parse_settings(settings, Stage::Build)
    }
}

/// `value` trimmed, or none when it is empty.
fn set(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

impl Config {
    /// Validates `settings` (with W&B's environment variables `env` where
    /// the settings leave a value out). Every error has stage `build` and
    /// names the key.
    pub fn new(settings: &Settings, env: &WandbEnv) -> Result<Config, PluginError> {
        let pvc_name = set(&settings.pvc_name).or(set(&env.pvc_name));
        let pvc_mount_path = set(&settings.pvc_mount_path).or(set(&env.pvc_mount_path));
        let store = ContextStore::from_settings(
            set(&settings.build_context_store),
            pvc_name,
            pvc_mount_path,
        )?;

        let build_job_name = set(&settings.build_job_name)
            .unwrap_or(DEFAULT_BUILD_JOB_NAME)
            .to_string();
        // Room for `-` and an 8-character run id within a 63-character name.
        if !is_dns_label(&build_job_name) || build_job_name.len() > 54 {
            return Err(PluginError::build(format!(
                "`builder.build-job-name` `{build_job_name}` is not a Kubernetes Job name prefix: \
                 at most 54 lower case letters, digits and `-`, starting and ending with a \
                 letter or digit (the Job is named `<prefix>-<run id>`)"
            )));
        }

        let cloud_secret = match (set(&settings.secret_name), set(&settings.secret_key)) {
            (None, None) => None,
            (Some(name), Some(key)) => {
                if !is_dns_subdomain(name) {
                    return Err(PluginError::build(format!(
                        "`builder.secret-name` `{name}` is not a Kubernetes Secret name \
                         (lower case letters, digits, `-` and `.`)"
                    )));
                }
                if key.is_empty()
                    || key.len() > 253
                    || !key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                {
                    return Err(PluginError::build(format!(
                        "`builder.secret-key` `{key}` is not a key of a Kubernetes Secret \
                         (letters, digits, `-`, `_` and `.`)"
                    )));
                }
                Some(CloudSecret {
                    name: name.to_string(),
                    key: key.to_string(),
                })
            }
            (name, _) => {
                let (given, missing) = if name.is_some() {
                    ("secret-name", "secret-key")
                } else {
                    ("secret-key", "secret-name")
                };
                return Err(PluginError::build(format!(
                    "`builder.{given}` is set but `builder.{missing}` is not: give both (the \
                     Secret with the cloud's credentials and its key) or neither"
                )));
            }
        };

        let kaniko_image = set(&settings.kaniko_image)
            .unwrap_or(DEFAULT_KANIKO_IMAGE)
            .to_string();
        if kaniko_image.chars().any(char::is_whitespace) {
            return Err(PluginError::build(format!(
                "`builder.kaniko-image` `{kaniko_image}` is not an image reference (it has spaces)"
            )));
        }

        let kaniko_config = match &settings.kaniko_config {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(config @ Value::Object(_)) => config.clone(),
            Some(_) => {
                return Err(PluginError::build(
                    "`builder.kaniko-config` must be a batch/v1 Job manifest (a mapping with \
                     `metadata` and `spec`)",
                ));
            }
        };
        crate::manifest::check_kaniko_config(&kaniko_config)?;

        let namespace = set(&settings.namespace)
            .unwrap_or(DEFAULT_NAMESPACE)
            .to_string();
        if !is_dns_label(&namespace) {
            return Err(PluginError::build(format!(
                "the plugin setting `namespace` `{namespace}` is not a Kubernetes namespace name"
            )));
        }
        let service_account = set(&settings.service_account)
            .or(set(&env.service_account))
            .unwrap_or(DEFAULT_SERVICE_ACCOUNT)
            .to_string();
        if !is_dns_subdomain(&service_account) {
            return Err(PluginError::build(format!(
                "the build pod's service account `{service_account}` (`service-account` or \
                 WANDB_LAUNCH_SERVICE_ACCOUNT_NAME) is not a Kubernetes object name"
            )));
        }
        let auth_secret = set(&settings.auth_secret).or(set(&env.auth_secret));
        if let Some(name) = auth_secret
            && !is_dns_subdomain(name)
        {
            return Err(PluginError::build(format!(
                "the docker config Secret `{name}` (`auth-secret` or \
                 WANDB_LAUNCH_KANIKO_AUTH_SECRET) is not a Kubernetes Secret name"
            )));
        }

        Ok(Config {
            store,
            build_job_name,
            cloud_secret,
            kaniko_image,
            kaniko_config,
            platform: set(&settings.platform).map(str::to_string),
            base_image: set(&settings.base_image)
                .unwrap_or(builder_common::DEFAULT_BASE_IMAGE)
                .to_string(),
            namespace,
            service_account,
            auth_secret: auth_secret.map(str::to_string),
        })
    }

    /// Parses and validates the settings JSON with the process's W&B
    /// environment variables.
    pub fn from_request(settings: &str) -> Result<Config, PluginError> {
        Config::new(&Settings::parse(settings)?, &WandbEnv::from_process())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> Result<Config, PluginError> {
        Config::new(&Settings::parse(json)?, &WandbEnv::default())
    }

    #[test]
    fn defaults_are_wandbs() {
        let c = config(r#"{"type":"kaniko","build-context-store":"s3://bkt/p"}"#).unwrap();
        assert_eq!(c.build_job_name, "wandb-launch-container-build");
        assert_eq!(c.kaniko_image, "gcr.io/kaniko-project/executor:v1.11.0");
        assert_eq!(c.namespace, "wandb");
        assert_eq!(c.service_account, "default");
        assert_eq!(c.base_image, "python:3.11-slim");
        assert_eq!(c.cloud_secret, None);
        assert_eq!(c.auth_secret, None);
        assert_eq!(c.platform, None);
    }

    #[test]
    fn settings_win_over_the_environment() {
        let env = WandbEnv {
            pvc_name: Some("env-pvc".into()),
            pvc_mount_path: Some("/env".into()),
            auth_secret: Some("env-auth".into()),
            service_account: Some("env-sa".into()),
        };
        let from_env =
            Config::new(&Settings::parse(r#"{"type":"kaniko"}"#).unwrap(), &env).unwrap();
        assert_eq!(from_env.store.upload_target("r"), "/env/r.tgz");
        assert_eq!(from_env.auth_secret.as_deref(), Some("env-auth"));
        assert_eq!(from_env.service_account, "env-sa");
        let s = Settings::parse(
            r#"{"type":"kaniko","pvc-name":"mine","pvc-mount-path":"/m","auth-secret":"a","service-account":"sa"}"#,
        )
        .unwrap();
        let mine = Config::new(&s, &env).unwrap();
        assert_eq!(mine.store.upload_target("r"), "/m/r.tgz");
        assert_eq!(mine.auth_secret.as_deref(), Some("a"));
        assert_eq!(mine.service_account, "sa");
    }

    #[test]
    fn every_bad_value_names_its_key() {
        for (json, key) in [
            (r#"{"type":"kaniko"}"#, "builder.build-context-store"),
            (
                r#"{"type":"kaniko","build-context-store":"s3:/b"}"#,
                "builder.build-context-store",
            ),
            (
                r#"{"build-context-store":"s3://bkt","build-job-name":"Build_Jobs"}"#,
                "builder.build-job-name",
            ),
            (
                r#"{"build-context-store":"s3://bkt","build-job-name":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}"#,
                "builder.build-job-name",
            ),
            (
                r#"{"build-context-store":"s3://bkt","secret-name":"s"}"#,
                "`builder.secret-name` is set but `builder.secret-key` is not",
            ),
            (
                r#"{"build-context-store":"s3://bkt","secret-key":"k"}"#,
                "`builder.secret-key` is set but `builder.secret-name` is not",
            ),
            (
                r#"{"build-context-store":"s3://bkt","secret-name":"S!","secret-key":"k"}"#,
                "builder.secret-name",
            ),
            (
                r#"{"build-context-store":"s3://bkt","secret-name":"s","secret-key":"a/b"}"#,
                "builder.secret-key",
            ),
            (
                r#"{"build-context-store":"s3://bkt","kaniko-image":"a b"}"#,
                "builder.kaniko-image",
            ),
            (
                r#"{"build-context-store":"s3://bkt","kaniko-config":[1]}"#,
                "builder.kaniko-config",
            ),
            (
                r#"{"build-context-store":"s3://bkt","kaniko-config":{"spec":[]}}"#,
                "builder.kaniko-config.spec",
            ),
            (
                r#"{"build-context-store":"s3://bkt","namespace":"NS"}"#,
                "`namespace`",
            ),
            (
                r#"{"build-context-store":"s3://bkt","service-account":"S A"}"#,
                "service-account",
            ),
            (
                r#"{"build-context-store":"s3://bkt","auth-secret":"X"}"#,
                "auth-secret",
            ),
            (
                r#"{"build-context-store":"s3://bkt","kaniko_image":"x"}"#,
                "unknown field `kaniko_image`",
            ),
            (
                r#"{"build-context-store":"s3://bkt","build-job-name":3}"#,
                "key `build-job-name`",
            ),
        ] {
            let e = config(json).unwrap_err();
            assert_eq!(e.stage, Stage::Build);
            assert!(e.message.contains(key), "{json}: {}", e.message);
        }
    }
}
