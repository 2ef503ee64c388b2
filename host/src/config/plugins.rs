//! The `plugins:` and `secrets:` maps: which plugins exist, what each may
//! do, and where secret values come from.
//!
//! Everything is denied unless granted here. A plugin of the default bundle
//! gets the grants its job needs by default (`capabilities/defaults.rs`);
//! more come from this map too: an entry named like the bundled plugin
//! (`docker`, `oci`, ...) adds grants and settings to it without a `path`.

use super::ConfigError;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Default deadline of one plugin call: how long its own code may run.
pub const DEFAULT_DEADLINE_MS: u64 = 30_000;
/// Default timeout of one plugin call: its wall-clock time, waits on the
/// host included.
pub const DEFAULT_TIMEOUT_MS: u64 = 600_000;
/// Default memory cap of one plugin instance.
pub const DEFAULT_MEMORY_MB: u64 = 128;
/// The largest memory cap a config may set.
pub const MAX_MEMORY_MB: u64 = 4096;

/// One plugin in the config.
///
/// ```yaml
/// plugins:
///   my-builder:
///     path: ./my-builder.wasm
///     sha256: 9c56...        # optional: refuse to load any other bytes
///     grants: { hosts: ["https://registry.example.com"], env: [HOME] }
///     limits: { deadline_ms: 60000, timeout_ms: 600000, memory_mb: 256 }
///     config: { any: value }
///   vendor-registry:              # pulled from an OCI registry instead of a file
///     oci: registry.example.com/plugins/vendor-registry:1.4.0   # or ...@sha256:<digest>
///     pull: { username: bot, password-secret: plugins-password }
///     verify: { key: /etc/launch-agent/cosign.pub }   # refuse it unless signed by this key
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginEntry {
    /// The component file (`.wasm`). Omitted: the bundled plugin of this name.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// The component as an OCI artifact, `REGISTRY/REPOSITORY:TAG` or
    /// `REGISTRY/REPOSITORY@sha256:DIGEST`, instead of a `path`
    /// ([`crate::plugins::oci_source`]).
    #[serde(default)]
    pub oci: Option<Spanned<String>>,
    /// How to pull `oci`: credentials and plain HTTP.
    #[serde(default)]
    pub pull: Option<OciPull>,
    /// A signature the component must carry before it is loaded.
    #[serde(default)]
    pub verify: Option<SignaturePolicy>,
    /// The expected sha256 of the file, hex (an optional `sha256:` prefix).
    #[serde(default)]
    pub sha256: Option<Spanned<String>>,
    /// What the plugin may reach.
    #[serde(default)]
    pub grants: Grants,
    /// Per-call limits.
    #[serde(default)]
    pub limits: Limits,
    /// Plugin settings, merged into the block settings it is called with.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
}

/// How the agent pulls a plugin's `oci` reference.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OciPull {
    /// The registry user; without one the pull is anonymous.
    #[serde(default)]
    pub username: Option<String>,
    /// The secret (of the `secrets:` map) holding the password or token.
    #[serde(default)]
    pub password_secret: Option<String>,
    /// Plain HTTP instead of HTTPS (a registry on this machine or a test
    /// network; never over the internet).
    #[serde(default)]
    pub insecure: bool,
}

/// The signature a plugin must carry: a cosign signature (simple-signing
/// payload over the component artifact's manifest digest) by this key.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignaturePolicy {
    /// The public key, a PEM file (`cosign.pub`: ECDSA P-256).
    pub key: PathBuf,
}

/// What a plugin may reach. Everything not listed is refused.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Outbound HTTP destinations as `scheme://host[:port]` patterns; `*`
    /// matches one or more DNS labels in the host, or any port. Each keeps
    /// its place in the file, so a bad one is reported at its line and
    /// column (the pattern grammar is
    /// [`HostPattern`](crate::capabilities::http::HostPattern)'s).
    #[serde(default)]
    pub hosts: Vec<Spanned<String>>,
    /// The grant `auth: environment`: origins (patterns as in `hosts`, and
    /// allowed as those are) whose requests the environment plugin
    /// authorizes before they leave (a SigV4 signature, a bearer token), so
    /// the plugin uses the cloud's credentials without holding them
    /// (`capabilities/environment_auth.rs`).
    #[serde(default)]
    pub environment_auth: Vec<Spanned<String>>,
    /// Environment variables (of the agent) the plugin can read, by name.
    #[serde(default)]
    pub env: Vec<String>,
    /// Secrets (of the `secrets:` map) the plugin can open, by name.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Directories the plugin sees, read-only unless `write: true`.
    #[serde(default)]
    pub dirs: Vec<DirGrant>,
    /// Whether the plugin may use the host's Docker engine
    /// (`launch:plugin/docker`): build from the job's source, push, inspect.
    #[serde(default)]
    pub docker: bool,
    /// Whether the steps of the plugin's Docker builds (`RUN`, `ADD <url>`)
    /// may use the network; without it a build runs with network mode
    /// `none`. Only with `docker: true`.
    #[serde(default)]
    pub build_network: bool,
    /// The Kubernetes cluster (`launch:plugin/kubernetes`), by namespace:
    /// the plugin may create Jobs, ConfigMaps and Secrets in these
    /// namespaces only ([`KubernetesGrant`]).
    #[serde(default)]
    pub kubernetes: Option<KubernetesGrant>,
    /// Object storage for build contexts (`launch:plugin/blob`): the store
    /// prefixes the plugin may upload to, delete from and check.
    #[serde(default)]
    pub blob: BlobGrant,
}

/// The Kubernetes namespaces a plugin may use (`grants.kubernetes`). The
/// cluster is the agent's (`KUBECONFIG`, `~/.kube/config` or its in-cluster
/// service account); the plugin never sees its token. What it creates is
/// labelled with the plugin and the job and deleted when its call ends
/// (`capabilities/kubernetes`).
///
/// ```yaml
/// plugins:
///   kaniko:
///     grants:
///       kubernetes: { namespaces: [wandb] }   # the first is the default
/// ```
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesGrant {
    /// The namespaces, each a DNS-1123 label (`wandb`, `team-a`); a
    /// manifest without a namespace goes in the first.
    pub namespaces: Vec<String>,
}

/// The grant `blob`: store prefixes, each a URL the blob capability
/// serves (`s3://BUCKET/[PREFIX/]`, `gs://BUCKET/[PREFIX/]`,
/// `https://ACCOUNT.blob.core.windows.net/CONTAINER/[PREFIX/]`,
/// `file:///DIR/`); a call's URL must start with one of them, at a `/`
/// (the grammar is [`StorePrefix`](crate::capabilities::blob::StorePrefix)'s).
///
/// ```yaml
/// plugins:
///   builder-kaniko:
///     grants:
///       blob: { stores: ["s3://my-bucket/contexts/", "file:///mnt/kaniko/"] }
/// ```
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobGrant {
    /// The store prefixes, each kept with its place in the file so that a
    /// bad one is reported at its line and column.
    #[serde(default)]
    pub stores: Vec<Spanned<String>>,
}

/// A directory a plugin may see.
///
/// ```yaml
/// dirs:
///   - /srv/models                 # read-only, same path inside
///   - { path: /srv/cache, write: true, guest: /cache }
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum DirGrant {
    /// Just a path: read-only, at the same path inside the plugin.
    Path(PathBuf),
    /// A path with options.
    Full {
        /// The directory on this machine.
        path: PathBuf,
        /// Where the plugin sees it (default: the same path).
        #[serde(default)]
        guest: Option<String>,
        /// Whether the plugin may write in it.
        #[serde(default)]
        write: bool,
    },
}

impl DirGrant {
    /// The directory on this machine.
    pub fn host_path(&self) -> &Path {
        match self {
            DirGrant::Path(path) | DirGrant::Full { path, .. } => path,
        }
    }
    /// Where the plugin sees it.
    pub fn guest_path(&self) -> String {
        match self {
            DirGrant::Full {
                guest: Some(guest), ..
            } => guest.clone(),
            _ => self.host_path().to_string_lossy().into_owned(),
        }
    }
    /// Whether the plugin may write in it.
    pub fn writable(&self) -> bool {
        matches!(self, DirGrant::Full { write: true, .. })
    }
}

/// Limits of each plugin call.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// How long the plugin's own code may run in one call, in
    /// milliseconds; the call traps at it. Time spent in the host (a build,
    /// a push, a registry lookup, a `wasi:http` wait) does not count.
    #[serde(default = "default_deadline")]
    pub deadline_ms: u64,
    /// Wall-clock limit of one call, waits on the host included, in
    /// milliseconds; the call is abandoned at it.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Memory cap of one instance, in MiB.
    #[serde(default = "default_memory")]
    pub memory_mb: u64,
}

fn default_deadline() -> u64 {
    DEFAULT_DEADLINE_MS
}
fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_MS
}
fn default_memory() -> u64 {
    DEFAULT_MEMORY_MB
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline_ms: DEFAULT_DEADLINE_MS,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            memory_mb: DEFAULT_MEMORY_MB,
        }
    }
}

/// Where a secret's value comes from. Values never appear in the config.
///
/// ```yaml
/// secrets:
///   registry-password: { env: REGISTRY_PASSWORD }
///   gcp-key: { file: /etc/launch/gcp.json }
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum SecretSource {
    /// An environment variable of the agent.
    Env(String),
    /// A file (its whole content, a trailing newline removed).
    File(PathBuf),
}

impl SecretSource {
    /// Reads the secret's value.
    pub fn read(&self) -> Result<String, String> {
        match self {
            SecretSource::Env(var) => crate::secret_env::var(var)
                .ok_or_else(|| format!("environment variable {var} is not set")),
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| format!("cannot read {}: {e}", path.display())),
        }
    }

    pub(super) fn validate(&self, file: &Path, name: &str) -> Result<(), ConfigError> {
        let empty = match self {
            SecretSource::Env(var) => var.is_empty(),
            SecretSource::File(path) => path.as_os_str().is_empty(),
        };
        if empty {
            return Err(ConfigError::invalid(
                file,
                &format!("secrets.{name}"),
                "needs an `env` variable name or a `file` path",
            ));
        }
        Ok(())
    }
}

impl PluginEntry {
    pub(super) fn validate(
        &self,
        file: &Path,
        name: &str,
        secrets: &BTreeMap<String, SecretSource>,
    ) -> Result<(), ConfigError> {
        let key = |k: &str| format!("plugins.{name}.{k}");
        if let Some(reference) = &self.oci {
            if self.path.is_some() {
                return Err(ConfigError::at(
                    file,
                    &key("oci"),
                    &reference.referenced,
                    "a plugin comes from a `path` or an `oci` reference, not both",
                ));
            }
            crate::plugins::oci_source::parse_reference(&reference.value).map_err(|reason| {
                ConfigError::at(file, &key("oci"), &reference.referenced, reason)
            })?;
        } else if self.pull.is_some() {
            return Err(ConfigError::invalid(
                file,
                &key("pull"),
                "only applies to a plugin with an `oci` reference",
            ));
        }
        if let Some(pull) = &self.pull {
            if let Some(secret) = &pull.password_secret
                && !secrets.contains_key(secret)
            {
                return Err(ConfigError::invalid(
                    file,
                    &key("pull.password-secret"),
                    format!("names secret {secret:?}, which the `secrets:` map does not define"),
                ));
            }
            if pull.password_secret.is_some() && pull.username.is_none() {
                return Err(ConfigError::invalid(
                    file,
                    &key("pull.username"),
                    "is needed with `password-secret`",
                ));
            }
        }
        if let Some(verify) = &self.verify {
            if self.oci.is_none() {
                return Err(ConfigError::invalid(
                    file,
                    &key("verify"),
                    "only applies to a plugin with an `oci` reference (signatures live in its registry); \
                     pin a file with `sha256` instead",
                ));
            }
            if verify.key.as_os_str().is_empty() {
                return Err(ConfigError::invalid(
                    file,
                    &key("verify.key"),
                    "needs the path of a public key (PEM)",
                ));
            }
        }
        if let Some(digest) = &self.sha256
            && parse_sha256(&digest.value).is_none()
        {
            return Err(ConfigError::at(
                file,
                &key("sha256"),
                &digest.referenced,
                "must be 64 hex digits, optionally prefixed with `sha256:`",
            ));
        }
        for pattern in &self.grants.hosts {
            crate::capabilities::http::HostPattern::parse(&pattern.value).map_err(|reason| {
                ConfigError::at(
                    file,
                    &key("grants.hosts"),
                    &pattern.referenced,
                    format!("{:?}: {reason}", pattern.value),
                )
            })?;
        }
        for pattern in &self.grants.environment_auth {
            crate::capabilities::http::HostPattern::parse(&pattern.value).map_err(|reason| {
                ConfigError::at(
                    file,
                    &key("grants.environment_auth"),
                    &pattern.referenced,
                    format!("{:?}: {reason}", pattern.value),
                )
            })?;
        }
        for store in &self.grants.blob.stores {
            crate::capabilities::blob::StorePrefix::parse(&store.value).map_err(|reason| {
                ConfigError::at(
                    file,
                    &key("grants.blob.stores"),
                    &store.referenced,
                    format!("{:?}: {reason}", store.value),
                )
            })?;
        }
        for secret in &self.grants.secrets {
            if !secrets.contains_key(secret) {
                return Err(ConfigError::invalid(
                    file,
                    &key("grants.secrets"),
                    format!("names secret {secret:?}, which the `secrets:` map does not define"),
                ));
            }
        }
        for dir in &self.grants.dirs {
            if !dir.host_path().is_absolute() {
                return Err(ConfigError::invalid(
                    file,
                    &key("grants.dirs"),
                    format!("{} must be an absolute path", dir.host_path().display()),
                ));
            }
        }
        if let Some(grant) = &self.grants.kubernetes {
            if grant.namespaces.is_empty() {
                return Err(ConfigError::invalid(
                    file,
                    &key("grants.kubernetes.namespaces"),
                    "must list at least one namespace (e.g. `{namespaces: [wandb]}`); \
                     leave `kubernetes` out to grant none",
                ));
            }
            for namespace in &grant.namespaces {
                if !is_dns_label(namespace) {
                    return Err(ConfigError::invalid(
                        file,
                        &key("grants.kubernetes.namespaces"),
                        format!(
                            "{namespace:?} is not a namespace name: at most 63 lowercase \
                             letters, digits and `-`, starting and ending with a letter or digit"
                        ),
                    ));
                }
            }
        }
        if self.limits.deadline_ms == 0 {
            return Err(ConfigError::invalid(
                file,
                &key("limits.deadline_ms"),
                "must be above 0",
            ));
        }
        if self.limits.timeout_ms == 0 {
            return Err(ConfigError::invalid(
                file,
                &key("limits.timeout_ms"),
                "must be above 0",
            ));
        }
        if self.limits.memory_mb == 0 || self.limits.memory_mb > MAX_MEMORY_MB {
            return Err(ConfigError::invalid(
                file,
                &key("limits.memory_mb"),
                format!("must be between 1 and {MAX_MEMORY_MB}"),
            ));
        }
        if let Some(config) = &self.config
            && !config.is_object()
        {
            return Err(ConfigError::invalid(
                file,
                &key("config"),
                "must be a map of settings",
            ));
        }
        Ok(())
    }
}

/// Whether `name` is a DNS-1123 label, as a namespace's name must be.
pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// Parses a sha256 digest written as 64 hex digits, optionally `sha256:`-prefixed.
pub fn parse_sha256(text: &str) -> Option<String> {
    let hex = text
        .strip_prefix("sha256:")
        .unwrap_or(text)
        .to_ascii_lowercase();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

#[cfg(test)]
mod tests {
    use crate::config::LaunchConfig;
    use std::path::Path;

    #[test]
    fn a_kubernetes_grant_takes_namespace_names() {
        let config = |grant: &str| {
            let yaml = format!(
                "plugins:\n  mine:\n    path: x.wasm\n    grants:\n      kubernetes: {grant}\n"
            );
            LaunchConfig::parse(&yaml, Path::new("c.yaml")).map_err(|e| e.to_string())
        };
        let ok = config("{namespaces: [wandb, team-a]}").unwrap();
        let grant = ok.plugins["mine"].grants.kubernetes.as_ref().unwrap();
        assert_eq!(grant.namespaces, ["wandb", "team-a"]);
        for (bad, said) in [
            (
                "{namespaces: [Team_A]}",
                "\"Team_A\" is not a namespace name",
            ),
            ("{namespaces: []}", "must list at least one namespace"),
        ] {
            let error = config(bad).unwrap_err();
            assert!(
                error.contains("plugins.mine.grants.kubernetes") && error.contains(said),
                "{bad}: {error}"
            );
        }
        // Not the grant's shape: serde's error, naming the field.
        for bad in ["{namespace: [wandb]}", "[wandb]"] {
            let error = config(bad).unwrap_err();
            assert!(
                error.contains("namespace") || error.contains("kubernetes"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn a_bad_host_pattern_is_reported_at_its_line_and_column() {
        let yaml = "plugins:\n  mine:\n    path: x.wasm\n    grants:\n      hosts:\n        - https://ok.example.com\n        - ftp://example.com\n";
        let error = LaunchConfig::parse(yaml, Path::new("c.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("c.yaml:7:11: `plugins.mine.grants.hosts`")
                && error.contains("\"ftp://example.com\"")
                && error.contains("is not http, https or *"),
            "{error}"
        );
    }
}
