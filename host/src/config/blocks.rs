//! The W&B blocks of launch-config.yaml: `environment`, `registry`, `builder`.
//!
//! Each block's `type` names the plugin that serves it: one of the default
//! bundle (today `local`, `aws`, `gcp`, `azure`; `noop`, `docker`, `kaniko`; `oci`, `ecr`, `gcr` — see
//! [`crate::plugins::catalog`]) or a plugin of the config's `plugins:` map
//! (`my-env`). W&B's other cloud type (`acr`) is accepted by the parser
//! but has no bundled plugin yet: naming it is an error at start-up that
//! lists the bundled ones. The whole block is handed to the plugin as its
//! settings (a JSON object), so a plugin reads the W&B keys it needs.

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

/// The `environment:` block.
///
/// ```yaml
/// environment:
///   type: aws
///   region: us-east-1
/// ```
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentConfig {
    /// `local`, `aws`, `gcp`, `azure` (bundled), or the name of a
    /// configured plugin.
    #[serde(rename = "type", serialize_with = "spanned_string")]
    pub kind: Spanned<String>,
    /// The cloud region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The GCP project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

/// The `registry:` block.
///
/// ```yaml
/// registry:
///   type: ecr
///   uri: 123456789012.dkr.ecr.us-east-1.amazonaws.com/launch
/// ```
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// `ecr`, `gcr`, `acr`, `oci`, or the name of a configured plugin.
    #[serde(rename = "type", serialize_with = "spanned_string")]
    pub kind: Spanned<String>,
    /// The repository URI (no tag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// The repository name, instead of a full `uri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// The image name (Artifact Registry).
    #[serde(
        default,
        rename = "image-name",
        skip_serializing_if = "Option::is_none"
    )]
    pub image_name: Option<String>,
    /// The region (ECR, Artifact Registry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The GCP project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

/// The `builder:` block.
///
/// ```yaml
/// builder:
///   type: kaniko
///   build-context-store: s3://my-bucket/build-contexts/
///   build-job-name: wandb-image-build
/// ```
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BuilderConfig {
    /// `docker`, `kaniko`, `noop`, or the name of a configured plugin.
    /// Omitted: `docker` where a Docker engine is configured, else `noop`.
    #[serde(
        rename = "type",
        default,
        serialize_with = "spanned_opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub kind: Option<Spanned<String>>,
    /// Where built images go (overrides the registry's URI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// `linux/amd64` or `linux/arm64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Where Kaniko build contexts are uploaded (`s3://`, `gs://`, Azure blob URL).
    #[serde(
        default,
        rename = "build-context-store",
        skip_serializing_if = "Option::is_none"
    )]
    pub build_context_store: Option<String>,
    /// Prefix of Kaniko build Job names.
    #[serde(
        default,
        rename = "build-job-name",
        skip_serializing_if = "Option::is_none"
    )]
    pub build_job_name: Option<String>,
    /// Kubernetes secret with cloud credentials for Kaniko.
    #[serde(
        default,
        rename = "secret-name",
        skip_serializing_if = "Option::is_none"
    )]
    pub secret_name: Option<String>,
    /// Key of that secret.
    #[serde(
        default,
        rename = "secret-key",
        skip_serializing_if = "Option::is_none"
    )]
    pub secret_key: Option<String>,
    /// The Kaniko executor image.
    #[serde(
        default,
        rename = "kaniko-image",
        skip_serializing_if = "Option::is_none"
    )]
    pub kaniko_image: Option<String>,
    /// A batch Job manifest fragment for Kaniko builds.
    #[serde(
        default,
        rename = "kaniko-config",
        skip_serializing_if = "Option::is_none"
    )]
    pub kaniko_config: Option<serde_json::Value>,
}

impl BuilderConfig {
    /// The builder's type, or `None` when the block leaves it out.
    pub fn kind(&self) -> Option<&str> {
        self.kind.as_ref().map(|k| k.value.as_str())
    }
}

fn spanned_string<S: serde::Serializer>(value: &Spanned<String>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&value.value)
}

fn spanned_opt_string<S: serde::Serializer>(
    value: &Option<Spanned<String>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.serialize_str(&v.value),
        None => s.serialize_none(),
    }
}
