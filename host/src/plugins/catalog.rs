//! Which plugins a config uses and where their components come from.
//!
//! The `type` of the `environment:`, `registry:` and `builder:` blocks names
//! a plugin: either one of the default bundle (table below) or an entry of
//! the config's `plugins:` map. An entry with the name of a bundled plugin
//! and no `path` gives that bundled plugin grants, limits or settings.
//!
//! | block | bundled types | file in the plugin dir |
//! |---|---|---|
//! | builder | `noop` | `builder-noop.wasm` |
//! | builder | `docker` | `builder-docker.wasm` |
//! | builder | `kaniko` | `builder-kaniko.wasm` |
//! | registry | `oci` | `registry-oci.wasm` |
//! | environment | `local` | `environment-local.wasm` |
//! | environment | `aws` | `environment-aws.wasm` |
//! | registry | `ecr` | `registry-ecr.wasm` |
//! | environment | `gcp` | `environment-gcp.wasm` |
//! | environment | `azure` | `environment-azure.wasm` |
//! | registry | `gcr` | `registry-gcr.wasm` |
//! | registry | `acr` | `registry-acr.wasm` |
//! | deployer (no block: `launch-agent deploy coreweave`) | `coreweave` | `deployer-coreweave.wasm` |
//!
//! Bundled plugins get the grants their job needs and no more
//! ([`default_grants`], listed in
//! [`capabilities::defaults`](crate::capabilities::defaults)):
//! `builder-docker` the Docker engine and the configured registry's host,
//! `builder-kaniko` the build's namespace and its context store,
//! `registry-oci` that host; the cloud plugins their cloud's hosts and
//! credential chain ([`capabilities::cloud_defaults`](crate::capabilities::cloud_defaults)).
//! A `plugins:` entry of the same name adds to them.
//!
//! Where a plugin's component comes from ([`PluginOrigin`]), first found:
//!
//! | origin | when |
//! |---|---|
//! | `path` | a `plugins:` entry of its name has a `path` |
//! | `plugin-dir` | a bundled plugin whose file is in the plugin dir: `--plugin-dir`, else `LAUNCH_AGENT_PLUGIN_DIR`, else the config's `plugin_dir` |
//! | `embedded` | any other bundled plugin: the agent's own copy ([`super::bundle`]) |
//!
//! So a plugin dir overrides the embedded bundle plugin by plugin, and one
//! that does not exist is an error rather than silently ignored.

use super::bundle::{self, EmbeddedPlugin};
use super::contract::PluginKind;
use crate::config::{LaunchConfig, PluginEntry};
use crate::text::for_log;
use std::path::{Path, PathBuf};

/// The default bundle: (kind, type name, file).
pub const BUNDLE: &[(PluginKind, &str, &str)] = &[
    (PluginKind::Builder, "noop", "builder-noop.wasm"),
    (PluginKind::Builder, "docker", "builder-docker.wasm"),
    (PluginKind::Builder, "kaniko", "builder-kaniko.wasm"),
    (PluginKind::Registry, "oci", "registry-oci.wasm"),
    (PluginKind::Environment, "local", "environment-local.wasm"),
    (PluginKind::Environment, "aws", "environment-aws.wasm"),
    (PluginKind::Registry, "ecr", "registry-ecr.wasm"),
    (PluginKind::Environment, "gcp", "environment-gcp.wasm"),
    (PluginKind::Environment, "azure", "environment-azure.wasm"),
    (PluginKind::Registry, "gcr", "registry-gcr.wasm"),
    (PluginKind::Registry, "acr", "registry-acr.wasm"),
    (PluginKind::Deployer, "coreweave", "deployer-coreweave.wasm"),
];

/// Where a plugin's component came from, as `plugins list` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginOrigin {
    /// The default bundle embedded in the agent's binary.
    Embedded,
    /// A bundled plugin's file in the plugin dir, overriding the embedded one.
    PluginDir,
    /// A file named by path: a `plugins:` entry's `path`, or the file
    /// `plugins inspect` was given.
    Path,
    /// An artifact in an OCI registry: a `plugins:` entry's `oci`
    /// ([`super::oci_source`]).
    Oci,
}

impl std::fmt::Display for PluginOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PluginOrigin::Embedded => "embedded in the agent",
            PluginOrigin::PluginDir => "plugin dir",
            PluginOrigin::Path => "path",
            PluginOrigin::Oci => "oci",
        })
    }
}

/// A plugin's component: bytes embedded in the agent, or a file.
#[derive(Clone, Debug)]
pub enum PluginSource {
    /// A plugin of the embedded default bundle.
    Embedded(&'static EmbeddedPlugin),
    /// A file.
    File {
        /// The component file.
        path: PathBuf,
        /// [`PluginOrigin::PluginDir`] or [`PluginOrigin::Path`].
        origin: PluginOrigin,
    },
    /// A `plugins:` entry's `oci` reference, not pulled yet: start-up pulls
    /// it ([`super::oci_source::fetch`]) into a [`PluginSource::Pulled`].
    Oci {
        /// The reference as the config writes it.
        reference: String,
    },
    /// An `oci` reference pulled and checked: its component in the cache.
    Pulled(super::oci_source::Pulled),
}

impl PluginSource {
    /// Where the component comes from.
    pub fn origin(&self) -> PluginOrigin {
        match self {
            PluginSource::Embedded(_) => PluginOrigin::Embedded,
            PluginSource::File { origin, .. } => *origin,
            PluginSource::Oci { .. } | PluginSource::Pulled(_) => PluginOrigin::Oci,
        }
    }

    /// The file: its path, or an embedded plugin's file name in the bundle.
    pub fn path(&self) -> PathBuf {
        match self {
            PluginSource::Embedded(plugin) => PathBuf::from(plugin.file),
            PluginSource::File { path, .. } => path.clone(),
            PluginSource::Oci { reference } => PathBuf::from(reference),
            PluginSource::Pulled(pulled) => PathBuf::from(&pulled.pinned),
        }
    }
}

/// `embedded builder-noop.wasm`, or the file's path: what errors name.
impl std::fmt::Display for PluginSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginSource::Embedded(plugin) => write!(f, "embedded {}", plugin.file),
            PluginSource::File { path, .. } => write!(f, "{}", path.display()),
            PluginSource::Oci { reference } => write!(f, "oci {reference}"),
            PluginSource::Pulled(pulled) => {
                write!(f, "oci {} ({})", pulled.reference, pulled.pinned)
            }
        }
    }
}

/// One plugin the config needs, and where its component comes from.
#[derive(Clone, Debug)]
pub struct PluginRef {
    /// The name the config uses.
    pub name: String,
    /// The component.
    pub source: PluginSource,
    /// The kind the config expects (`None` for a `plugins:` entry no block uses).
    pub expected_kind: Option<PluginKind>,
}

/// The plugin dir (see the module doc): `cli`, else
/// `LAUNCH_AGENT_PLUGIN_DIR`, else the config's `plugin_dir`; `None` when
/// none is given, and the embedded bundle is used whole.
pub fn plugin_dir(cli: Option<&Path>, config: &LaunchConfig) -> Option<PathBuf> {
    if let Some(dir) = cli {
        return Some(dir.to_path_buf());
    }
    if let Some(dir) = std::env::var_os("LAUNCH_AGENT_PLUGIN_DIR") {
        return Some(PathBuf::from(dir));
    }
    config
        .plugin_dir
        .as_ref()
        .map(|dir| config.resolve_path(dir))
}

/// The block types of the config: (kind, type, the key that names it).
pub fn block_types(config: &LaunchConfig) -> Vec<(PluginKind, String, &'static str)> {
    let mut types = vec![(
        PluginKind::Environment,
        config
            .environment
            .as_ref()
            .map(|e| e.kind.value.clone())
            .unwrap_or_else(|| "local".into()),
        "environment.type",
    )];
    let builder = config
        .builder
        .as_ref()
        .and_then(|b| b.kind().map(str::to_string))
        .unwrap_or_else(|| "noop".into());
    types.push((PluginKind::Builder, builder, "builder.type"));
    if let Some(registry) = &config.registry {
        types.push((
            PluginKind::Registry,
            registry.kind.value.clone(),
            "registry.type",
        ));
    }
    types
}

/// Every plugin the config needs: the block types, then every `plugins:`
/// entry with a `path`; `dir` is the plugin dir ([`plugin_dir`]). The
/// error is the first problem [`resolve_each`] finds: it names the key and
/// what was expected.
pub fn resolve(config: &LaunchConfig, dir: Option<&Path>) -> Result<Vec<PluginRef>, String> {
    let (refs, problems) = resolve_each(config, dir);
    match problems.into_iter().next() {
        Some(problem) => Err(problem.to_string()),
        None => Ok(refs),
    }
}

/// A key of the config that names no plugin this agent can load: a block
/// `type` that is neither bundled nor a `plugins:` entry with a `path` or `oci`, or
/// a plugin dir that is not a directory.
#[derive(Clone, Debug)]
pub struct Unresolved {
    /// The key: `builder.type`, `registry.type`, `environment.type` or
    /// `plugin_dir`.
    pub key: &'static str,
    /// What it names, escaped and cut for messages.
    pub value: String,
    /// Why it cannot be used, and what can.
    pub reason: String,
}

/// `builder.type `kaniko`: no bundled builder plugin ...`
impl std::fmt::Display for Unresolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} `{}`: {}", self.key, self.value, self.reason)
    }
}

/// What [`resolve`] finds, every problem at once: the plugins that resolve
/// (the block types, then every `plugins:` entry with a `path` or `oci`) and each
/// key that names nothing loadable. With a plugin dir that is not a
/// directory, the embedded bundle stands in for it.
pub fn resolve_each(
    config: &LaunchConfig,
    dir: Option<&Path>,
) -> (Vec<PluginRef>, Vec<Unresolved>) {
    let mut problems = Vec::new();
    let dir = match dir {
        Some(dir) if !dir.is_dir() => {
            problems.push(Unresolved {
                key: "plugin_dir",
                value: for_log(&dir.to_string_lossy()).into_owned(),
                reason: "not a directory (named by --plugin-dir, LAUNCH_AGENT_PLUGIN_DIR or `plugin_dir`); \
                         without one the agent uses the default bundle it embeds"
                    .into(),
            });
            None
        }
        dir => dir,
    };
    let mut refs: Vec<PluginRef> = Vec::new();
    for (kind, name, key) in block_types(config) {
        match source_of(config, dir, kind, &name) {
            Ok(source) => refs.push(PluginRef {
                name,
                source,
                expected_kind: Some(kind),
            }),
            Err(reason) => problems.push(Unresolved {
                key,
                value: for_log(&name).into_owned(),
                reason,
            }),
        }
    }
    for (name, entry) in &config.plugins {
        if refs.iter().any(|r| &r.name == name) {
            continue;
        }
        let source = if let Some(path) = &entry.path {
            PluginSource::File {
                path: config.resolve_path(path),
                origin: PluginOrigin::Path,
            }
        } else if let Some(reference) = &entry.oci {
            PluginSource::Oci {
                reference: reference.value.clone(),
            }
        } else {
            continue;
        };
        refs.push(PluginRef {
            name: name.clone(),
            source,
            expected_kind: None,
        });
    }
    (refs, problems)
}

fn source_of(
    config: &LaunchConfig,
    dir: Option<&Path>,
    kind: PluginKind,
    name: &str,
) -> Result<PluginSource, String> {
    let entry = config.plugins.get(name);
    if let Some(PluginEntry {
        path: Some(path), ..
    }) = entry
    {
        return Ok(PluginSource::File {
            path: config.resolve_path(path),
            origin: PluginOrigin::Path,
        });
    }
    if let Some(PluginEntry {
        oci: Some(reference),
        ..
    }) = entry
    {
        return Ok(PluginSource::Oci {
            reference: reference.value.clone(),
        });
    }
    let Some((_, _, file)) = BUNDLE.iter().find(|(k, n, _)| *k == kind && *n == name) else {
        let known: Vec<&str> = BUNDLE
            .iter()
            .filter(|(k, _, _)| *k == kind)
            .map(|(_, n, _)| *n)
            .collect();
        let entry = match entry {
            Some(_) => {
                "its `plugins:` entry has no `path` or `oci` (an entry without either only configures the bundled plugin of its name)"
            }
            None => "and no `plugins:` entry of this name gives a `path`",
        };
        return Err(format!(
            "no bundled {kind} plugin has this name (bundled: {}), {entry}",
            known.join(", ")
        ));
    };
    if let Some(path) = dir.map(|d| d.join(file))
        && path.exists()
    {
        return Ok(PluginSource::File {
            path,
            origin: PluginOrigin::PluginDir,
        });
    }
    bundle::embedded(file)
        .map(PluginSource::Embedded)
        .ok_or_else(|| format!("this build of the agent does not embed {file}"))
}

/// A bundled plugin's call timeout when the config leaves it at the
/// default: the timeout is wall-clock time, so a build's covers the whole
/// `docker build` and push it waits on; the docker and kaniko builders get
/// an hour, as W&B's Kaniko builds do (30 minutes) with room for the push
/// (and the build pod's start). (Its deadline, the time its own code runs,
/// stays at the default.)
pub fn default_timeout_ms(kind: PluginKind, name: &str) -> Option<u64> {
    match (kind, name) {
        (PluginKind::Builder, "docker" | "kaniko") => Some(3_600_000),
        (PluginKind::Registry, "oci" | "ecr" | "gcr" | "acr") => Some(120_000),
        _ => None,
    }
}

/// The grants a bundled plugin gets without asking: none unless `name` is
/// the bundled plugin of `kind`, then those
/// [`capabilities::defaults`](crate::capabilities::defaults) gives its
/// component.
pub fn default_grants(
    kind: PluginKind,
    name: &str,
    config: &LaunchConfig,
) -> crate::config::Grants {
    match BUNDLE.iter().find(|(k, n, _)| *k == kind && *n == name) {
        Some((_, _, file)) => crate::capabilities::defaults::for_bundled(
            file.strip_suffix(".wasm").unwrap_or(file),
            config,
        ),
        None => crate::config::Grants::default(),
    }
}
