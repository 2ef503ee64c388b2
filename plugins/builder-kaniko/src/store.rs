//! Where a build context goes and how Kaniko reads it back.
//!
//! The host tars the job's source and the planned Dockerfile into
//! `<run_id>.tgz` and puts it where [`ContextStore::upload_target`] says; the
//! Kaniko Job is given [`ContextStore::kaniko_context`] as `--context`.
//!
//! | setting | store | upload target | Kaniko's `--context` |
//! |---|---|---|---|
//! | `pvc-name` (or `WANDB_LAUNCH_KANIKO_PVC_NAME`) | a PersistentVolumeClaim the agent has mounted at `pvc-mount-path` (default `/kaniko`), mounted in the build pod at `/context` (CoreWeave's way) | `<mount path>/<run_id>.tgz` | `tar:///context/<run_id>.tgz` |
//! | `build-context-store: s3://BUCKET[/PREFIX]` | Amazon S3 | `s3://BUCKET/PREFIX/<run_id>.tgz` | the same |
//! | `build-context-store: gs://BUCKET[/PREFIX]` | Google Cloud Storage | `gs://BUCKET/PREFIX/<run_id>.tgz` | the same |
//! | `build-context-store: https://ACCOUNT.blob.core.windows.net/CONTAINER[/PREFIX]` | Azure Blob Storage | `https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX/<run_id>.tgz` | the same |
//!
//! The PVC wins over `build-context-store` when both are set, as in W&B's
//! agent. A trailing `/` is ignored (W&B strips it). Query strings are
//! refused: a SAS token in the config would be a secret in plain text.

use launch_plugin_sdk::PluginError;

/// The key the errors name.
const KEY: &str = "builder.build-context-store";

/// Where W&B's helm chart mounts the build-context PVC in the agent's pod,
/// unless `WANDB_LAUNCH_KANIKO_PVC_MOUNT_PATH` says otherwise.
pub const DEFAULT_PVC_MOUNT_PATH: &str = "/kaniko";

/// Where the build pod mounts the PVC.
pub const POD_CONTEXT_DIR: &str = "/context";

/// A build-context store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextStore {
    /// An S3 bucket and key prefix (no leading or trailing `/`; may be empty).
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix.
        prefix: String,
    },
    /// A GCS bucket and object prefix.
    Gcs {
        /// The bucket.
        bucket: String,
        /// The object prefix.
        prefix: String,
    },
    /// An Azure storage account's blob container and blob prefix.
    Azure {
        /// The storage account (`ACCOUNT` of `ACCOUNT.blob.core.windows.net`).
        account: String,
        /// The container.
        container: String,
        /// The blob prefix.
        prefix: String,
    },
    /// A PersistentVolumeClaim shared by the agent and the build pod.
    Pvc {
        /// The claim's name.
        claim: String,
        /// Where the agent's pod has it mounted.
        mount_path: String,
    },
}

impl ContextStore {
    /// The store of `build-context-store`, or of the PVC settings, which
    /// win when set. Errors have stage `build` and name the key.
    pub fn from_settings(
        store: Option<&str>,
        pvc_name: Option<&str>,
        pvc_mount_path: Option<&str>,
    ) -> Result<ContextStore, PluginError> {
        if let Some(claim) = pvc_name {
            if !crate::names::is_dns_subdomain(claim) {
                return Err(PluginError::build(format!(
                    "the build-context PVC name `{claim}` (`pvc-name` or \
                     WANDB_LAUNCH_KANIKO_PVC_NAME) is not a Kubernetes object name \
                     (lower case letters, digits, `-` and `.`)"
                )));
            }
            let mount_path = pvc_mount_path
                .unwrap_or(DEFAULT_PVC_MOUNT_PATH)
                .trim_end_matches('/');
            if !mount_path.starts_with('/') || mount_path.split('/').any(|p| p == "..") {
                return Err(PluginError::build(format!(
                    "the build-context PVC mount path `{mount_path}` (`pvc-mount-path` or \
                     WANDB_LAUNCH_KANIKO_PVC_MOUNT_PATH) must be an absolute path without `..`"
                )));
            }
            return Ok(ContextStore::Pvc {
                claim: claim.to_string(),
                mount_path: mount_path.to_string(),
            });
        }
        match store {
            None => Err(PluginError::build(format!(
                "the kaniko builder needs a place for build contexts: set `{KEY}` to an \
                 `s3://BUCKET/PREFIX`, `gs://BUCKET/PREFIX` or \
                 `https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX` URI, or give a \
                 PersistentVolumeClaim (`pvc-name`, W&B's WANDB_LAUNCH_KANIKO_PVC_NAME)"
            ))),
            Some(uri) => parse_uri(uri),
        }
    }

    /// Where the host puts `<run_id>.tgz`: a bucket URI, or a path in the
    /// agent's mount of the PVC.
    pub fn upload_target(&self, run_id: &str) -> String {
        match self {
            ContextStore::Pvc { mount_path, .. } => format!("{mount_path}/{run_id}.tgz"),
            _ => self.kaniko_context(run_id),
        }
    }

    /// Kaniko's `--context` for the run's tarball.
    pub fn kaniko_context(&self, run_id: &str) -> String {
        let object = |prefix: &str| {
            if prefix.is_empty() {
                format!("{run_id}.tgz")
            } else {
                format!("{prefix}/{run_id}.tgz")
            }
        };
        match self {
            ContextStore::S3 { bucket, prefix } => format!("s3://{bucket}/{}", object(prefix)),
            ContextStore::Gcs { bucket, prefix } => format!("gs://{bucket}/{}", object(prefix)),
            ContextStore::Azure {
                account,
                container,
                prefix,
            } => format!(
                "https://{account}.blob.core.windows.net/{container}/{}",
                object(prefix)
            ),
            ContextStore::Pvc { .. } => format!("tar://{POD_CONTEXT_DIR}/{run_id}.tgz"),
        }
    }
}

/// Parses a `build-context-store` URI.
fn parse_uri(raw: &str) -> Result<ContextStore, PluginError> {
    let uri = raw.trim();
    // Never echo a query: it may hold a SAS token.
    let shown = raw.split(['?', '#']).next().unwrap_or_default();
    let bad = |why: &str| {
        PluginError::build(format!(
            "`{KEY}` `{shown}` {why}; give `s3://BUCKET/PREFIX`, `gs://BUCKET/PREFIX` or \
             `https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX`"
        ))
    };
    if uri.contains('?') || uri.contains('#') {
        return Err(bad(
            "has a query or fragment (a SAS token does not belong in the config: the agent \
             uploads with the environment's credentials)",
        ));
    }
    let (scheme, rest) = uri.split_once("://").ok_or_else(|| bad("is not a URI"))?;
    let rest = rest.trim_end_matches('/');
    let (head, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let prefix = prefix.trim_matches('/').to_string();
    if prefix.split('/').any(|p| p == "." || p == "..") {
        return Err(bad("has `.` or `..` in its path"));
    }
    match scheme {
        "s3" | "gs" => {
            if !is_bucket_name(head) {
                return Err(bad(&format!(
                    "has no valid bucket name (`{head}`: 3 to 63 lower case letters, digits, \
                     `-` and `.`)"
                )));
            }
            let bucket = head.to_string();
            Ok(if scheme == "s3" {
                ContextStore::S3 { bucket, prefix }
            } else {
                ContextStore::Gcs { bucket, prefix }
            })
        }
        "https" => {
            let account = head
                .strip_suffix(".blob.core.windows.net")
                .filter(|a| {
                    (3..=24).contains(&a.len())
                        && a.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                })
                .ok_or_else(|| {
                    bad("is not an Azure blob URL (`ACCOUNT.blob.core.windows.net`, the account 3 to 24 lower case letters and digits)")
                })?;
            let (container, prefix) = prefix.split_once('/').unwrap_or((&prefix, ""));
            if !is_container_name(container) {
                return Err(bad(&format!(
                    "names no valid blob container (`{container}`: 3 to 63 lower case \
                     letters, digits and `-`)"
                )));
            }
            Ok(ContextStore::Azure {
                account: account.to_string(),
                container: container.to_string(),
                prefix: prefix.to_string(),
            })
        }
        other => Err(bad(&format!(
            "has the scheme `{other}`, which is not a build-context store"
        ))),
    }
}

/// S3 and GCS bucket names (the rules both accept).
fn is_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.' || c == '_'
        })
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Azure blob container names.
fn is_container_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && !name.contains("--")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(uri: &str) -> Result<ContextStore, PluginError> {
        ContextStore::from_settings(Some(uri), None, None)
    }

    #[test]
    fn bucket_stores() {
        let s3 = store("s3://my-bucket/build-contexts/").unwrap();
        assert_eq!(
            s3,
            ContextStore::S3 {
                bucket: "my-bucket".into(),
                prefix: "build-contexts".into()
            }
        );
        assert_eq!(
            s3.kaniko_context("ab12cd34"),
            "s3://my-bucket/build-contexts/ab12cd34.tgz"
        );
        assert_eq!(s3.upload_target("r"), "s3://my-bucket/build-contexts/r.tgz");
        let gs = store("gs://b.example/a/b").unwrap();
        assert_eq!(gs.kaniko_context("r"), "gs://b.example/a/b/r.tgz");
        let bare = store("gs://bkt").unwrap();
        assert_eq!(bare.kaniko_context("r"), "gs://bkt/r.tgz");
        let az = store("https://acct01.blob.core.windows.net/contexts/launch/").unwrap();
        assert_eq!(
            az,
            ContextStore::Azure {
                account: "acct01".into(),
                container: "contexts".into(),
                prefix: "launch".into()
            }
        );
        assert_eq!(
            az.kaniko_context("r"),
            "https://acct01.blob.core.windows.net/contexts/launch/r.tgz"
        );
        assert_eq!(
            store("https://acct01.blob.core.windows.net/contexts")
                .unwrap()
                .upload_target("r"),
            "https://acct01.blob.core.windows.net/contexts/r.tgz"
        );
    }

    #[test]
    fn pvc_wins_and_maps_to_a_tar_context() {
        let pvc =
            ContextStore::from_settings(Some("s3://ignored"), Some("kaniko-pvc"), None).unwrap();
        assert_eq!(
            pvc,
            ContextStore::Pvc {
                claim: "kaniko-pvc".into(),
                mount_path: "/kaniko".into()
            }
        );
        assert_eq!(pvc.kaniko_context("ab12"), "tar:///context/ab12.tgz");
        assert_eq!(pvc.upload_target("ab12"), "/kaniko/ab12.tgz");
        let custom =
            ContextStore::from_settings(None, Some("ctx"), Some("/mnt/contexts/")).unwrap();
        assert_eq!(custom.upload_target("x"), "/mnt/contexts/x.tgz");
        let e = ContextStore::from_settings(None, Some("Bad_Name"), None).unwrap_err();
        assert!(
            e.message.contains("WANDB_LAUNCH_KANIKO_PVC_NAME"),
            "{}",
            e.message
        );
        let e = ContextStore::from_settings(None, Some("ctx"), Some("rel/path")).unwrap_err();
        assert!(e.message.contains("absolute path"), "{}", e.message);
    }

    #[test]
    fn bad_stores_name_the_key() {
        let e = ContextStore::from_settings(None, None, None).unwrap_err();
        assert!(
            e.message.contains("builder.build-context-store"),
            "{}",
            e.message
        );
        assert!(e.message.contains("pvc-name"), "{}", e.message);
        for (uri, why) in [
            ("my-bucket/x", "is not a URI"),
            ("ftp://bucket/x", "scheme `ftp`"),
            ("s3://B/x", "no valid bucket name"),
            ("s3://", "no valid bucket name"),
            ("gs://bucket/../x", "`..`"),
            ("https://example.com/c/x", "not an Azure blob URL"),
            (
                "https://acct.blob.core.windows.net",
                "no valid blob container",
            ),
            (
                "https://acct.blob.core.windows.net/c/x?sv=2020&sig=abc",
                "SAS token",
            ),
        ] {
            let e = store(uri).unwrap_err();
            assert!(
                e.message.contains("`builder.build-context-store`") && e.message.contains(why),
                "{uri}: {}",
                e.message
            );
            assert_eq!(e.stage, launch_plugin_sdk::Stage::Build);
            assert!(!e.message.contains("sig=abc"), "{}", e.message);
        }
    }
}
