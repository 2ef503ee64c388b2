//! The settings `deploy coreweave` passes (its flags, as JSON), read and
//! checked.
//!
//! | key | flag | default | meaning |
//! |---|---|---|---|
//! | `name` | `--name` | `launch-agent` | the name of every object (and the suffix of the per-namespace ones) |
//! | `namespace` | `--namespace` | `wandb` | where the agent runs |
//! | `image` | `--image` | required | the agent's image (`scripts/build-agent-image.sh`) |
//! | `image_pull_policy` | `--image-pull-policy` | `IfNotPresent` | `Always`, `IfNotPresent` or `Never` |
//! | `target_namespaces` | `--target-namespace` (repeatable) | the agent's namespace and `default` | where its jobs may run: each gets the job-creator Role and RoleBinding |
//! | `region` | `--region` | none | CoreWeave region (`topology.kubernetes.io/region`, e.g. `LGA1`, `ORD1`, `LAS1`) for the agent and its jobs |
//! | `gpu_classes` | `--gpu-class` (repeatable) | none | GPU classes (`gpu.nvidia.com/class`, e.g. `A100_NVLINK_80GB`, `H100_NVLINK_80GB`) for its jobs; GPU jobs also get `/dev/shm` in memory |
//! | `base_url` | `--base-url` | `https://api.wandb.ai` | the W&B server |
//! | `api_key_secret` | `--api-key-secret` | `<name>-wandb-api-key` | the Secret (key `password`) the agent reads `WANDB_API_KEY` from; the host makes it, the deployer only names it |
//! | `kaniko_pvc_size` | `--kaniko-pvc-size` | `100Gi` | the build-context PVC's size (with `builder.type: kaniko`) |
//! | `storage_class` | `--storage-class` | the cluster's default | the build-context PVC's storage class (ReadWriteMany: CoreWeave's `shared-vast`, say) |
//! | `config_path` | `--config` | — | the config file, named in errors |

use launch_plugin_sdk::{PluginError, Stage};
use serde::Deserialize;

/// The settings, as `deploy coreweave` sends them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The objects' name.
    #[serde(default = "default_name")]
    pub name: String,
    /// The agent's namespace.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The agent's image.
    pub image: String,
    /// The image's pull policy.
    #[serde(default = "default_pull_policy")]
    pub image_pull_policy: String,
    /// Namespaces the agent's jobs may run in.
    #[serde(default)]
    pub target_namespaces: Vec<String>,
    /// The CoreWeave region.
    #[serde(default)]
    pub region: Option<String>,
    /// GPU classes for the jobs.
    #[serde(default)]
    pub gpu_classes: Vec<String>,
    /// The W&B server.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// The API key's Secret.
    #[serde(default)]
    pub api_key_secret: Option<String>,
    /// The build-context PVC's size.
    #[serde(default = "default_pvc_size")]
    pub kaniko_pvc_size: String,
    /// The build-context PVC's storage class.
    #[serde(default)]
    pub storage_class: Option<String>,
    /// The config file, for errors.
    #[serde(default = "default_config_path")]
    pub config_path: String,
}

fn default_name() -> String {
    "launch-agent".into()
}
fn default_namespace() -> String {
    "wandb".into()
}
fn default_pull_policy() -> String {
    "IfNotPresent".into()
}
fn default_base_url() -> String {
    "https://api.wandb.ai".into()
}
fn default_pvc_size() -> String {
    "100Gi".into()
}
fn default_config_path() -> String {
    "launch-config.yaml".into()
}

/// Label values and the namespace-local names built from `name` must stay
/// within 63 characters: `<name>-job-creator` is the longest.
const LONGEST_SUFFIX: usize = "-job-creator".len();

/// Parses and checks `settings`; every error names the flag.
pub fn parse(settings: &str) -> Result<Settings, PluginError> {
    let mut s: Settings = launch_plugin_sdk::parse_settings(settings, Stage::Agent)?;
    dns_label(&s.name, "--name", 63 - LONGEST_SUFFIX)?;
    dns_label(&s.namespace, "--namespace", 63)?;
    if s.target_namespaces.is_empty() {
        s.target_namespaces = vec![s.namespace.clone(), "default".into()];
    }
    let mut seen = Vec::new();
    for ns in &s.target_namespaces {
        dns_label(ns, "--target-namespace", 63)?;
        if !seen.contains(ns) {
            seen.push(ns.clone());
        }
    }
    s.target_namespaces = seen;
    if s.image.trim().is_empty() || s.image.chars().any(char::is_whitespace) {
        return Err(PluginError::agent(format!(
            "--image `{}` is not an image reference: give the agent's image, as scripts/build-agent-image.sh tags it and pushed where the cluster pulls from",
            s.image
        )));
    }
    if !["Always", "IfNotPresent", "Never"].contains(&s.image_pull_policy.as_str()) {
        return Err(PluginError::agent(format!(
            "--image-pull-policy `{}`: must be Always, IfNotPresent or Never",
            s.image_pull_policy
        )));
    }
    if let Some(region) = &s.region {
        label_value(region, "--region")?;
    }
    for class in &s.gpu_classes {
        label_value(class, "--gpu-class")?;
    }
    if !(s.base_url.starts_with("https://") || s.base_url.starts_with("http://")) {
        return Err(PluginError::agent(format!(
            "--base-url `{}`: must be an http:// or https:// URL (the W&B server)",
            s.base_url
        )));
    }
    if let Some(secret) = &s.api_key_secret {
        dns_subdomain(secret, "--api-key-secret")?;
    }
    if !quantity(&s.kaniko_pvc_size) {
        return Err(PluginError::agent(format!(
            "--kaniko-pvc-size `{}`: must be a Kubernetes quantity such as 100Gi or 500G",
            s.kaniko_pvc_size
        )));
    }
    if let Some(class) = &s.storage_class {
        dns_subdomain(class, "--storage-class")?;
    }
    Ok(s)
}

/// An RFC 1123 label of at most `max` characters (namespaces, names).
fn dns_label(value: &str, flag: &str, max: usize) -> Result<(), PluginError> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        return Ok(());
    }
    Err(PluginError::agent(format!(
        "{flag} `{value}`: must be at most {max} characters of a-z, 0-9 and `-`, starting and ending with a letter or digit (a Kubernetes DNS label)"
    )))
}

/// An RFC 1123 subdomain (Secret and storage-class names).
fn dns_subdomain(value: &str, flag: &str) -> Result<(), PluginError> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        });
    if ok {
        return Ok(());
    }
    Err(PluginError::agent(format!(
        "{flag} `{value}`: must be lowercase a-z, 0-9, `-` and `.` (a Kubernetes object name)"
    )))
}

/// A label value (node labels compared in the affinity).
fn label_value(value: &str, flag: &str) -> Result<(), PluginError> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && value.as_bytes()[0].is_ascii_alphanumeric()
        && value.as_bytes()[value.len() - 1].is_ascii_alphanumeric();
    if ok {
        return Ok(());
    }
    Err(PluginError::agent(format!(
        "{flag} `{value}`: must be at most 63 characters of letters, digits, `-`, `_` and `.` (a node label's value, e.g. ORD1 or A100_NVLINK_80GB)"
    )))
}

/// A Kubernetes quantity: digits (a decimal point allowed) and an optional
/// suffix.
fn quantity(value: &str) -> bool {
    let digits_end = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, suffix) = value.split_at(digits_end);
    !number.is_empty()
        && number.parse::<f64>().is_ok_and(|n| n > 0.0)
        && ["", "Ki", "Mi", "Gi", "Ti", "Pi", "k", "M", "G", "T", "P"].contains(&suffix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_w_and_b_chart() {
        let s = parse(r#"{"image":"r/launch-agent:1"}"#).unwrap();
        assert_eq!(s.name, "launch-agent");
        assert_eq!(s.namespace, "wandb");
        assert_eq!(s.target_namespaces, ["wandb", "default"]);
        assert_eq!(s.base_url, "https://api.wandb.ai");
    }

    #[test]
    fn bad_flags_are_named() {
        for (settings, flag) in [
            (
                r#"{"image":"i","namespace":"Bad_NS"}"#,
                "--namespace `Bad_NS`",
            ),
            (r#"{"image":"i","name":"x-"}"#, "--name `x-`"),
            (
                r#"{"image":"i","target_namespaces":["ok","no way"]}"#,
                "--target-namespace `no way`",
            ),
            (r#"{"image":"has space"}"#, "--image"),
            (
                r#"{"image":"i","gpu_classes":["A100 80GB"]}"#,
                "--gpu-class `A100 80GB`",
            ),
            (r#"{"image":"i","region":""}"#, "--region"),
            (
                r#"{"image":"i","kaniko_pvc_size":"lots"}"#,
                "--kaniko-pvc-size `lots`",
            ),
            (
                r#"{"image":"i","image_pull_policy":"Sometimes"}"#,
                "--image-pull-policy",
            ),
            (r#"{"image":"i","base_url":"api.wandb.ai"}"#, "--base-url"),
        ] {
            let e = parse(settings).unwrap_err();
            assert!(e.message.contains(flag), "{settings}: {}", e.message);
        }
        assert!(parse("{}").unwrap_err().message.contains("`image`"));
    }

    #[test]
    fn target_namespaces_are_deduplicated_in_order() {
        let s = parse(r#"{"image":"i","target_namespaces":["a","b","a"]}"#).unwrap();
        assert_eq!(s.target_namespaces, ["a", "b"]);
    }
}
