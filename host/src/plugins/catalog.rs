//! Which plugins a config uses and where their files are.
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
//! | registry | `oci` | `registry-oci.wasm` |
//! | environment | `local` | `environment-local.wasm` |
//!
//! Bundled plugins get the grants their job needs and no more
//! ([`default_grants`], listed in
//! [`capabilities::defaults`](crate::capabilities::defaults)):
//! `builder-docker` the Docker engine and the configured registry's host,
//! `registry-oci` that host. A `plugins:` entry of the same name adds to
//! them.
//!
//! The plugin dir is, first found: `--plugin-dir`, `LAUNCH_AGENT_PLUGIN_DIR`,
//! the config's `plugin_dir`, `bundle/` beside the binary, `../bundle/`
//! from the binary (a cargo target dir after `scripts/build-plugins.sh`).

use super::contract::PluginKind;
use crate::config::{LaunchConfig, PluginEntry};
use std::path::{Path, PathBuf};

/// The default bundle: (kind, type name, file).
pub const BUNDLE: &[(PluginKind, &str, &str)] = &[
    (PluginKind::Builder, "noop", "builder-noop.wasm"),
    (PluginKind::Builder, "docker", "builder-docker.wasm"),
    (PluginKind::Registry, "oci", "registry-oci.wasm"),
    (PluginKind::Environment, "local", "environment-local.wasm"),
];

/// One plugin the config needs, and where its file is.
#[derive(Clone, Debug)]
pub struct PluginRef {
    /// The name the config uses.
    pub name: String,
    /// The component file.
    pub path: PathBuf,
    /// The kind the config expects (`None` for a `plugins:` entry no block uses).
    pub expected_kind: Option<PluginKind>,
}

/// Finds the plugin dir (see the module doc); `None` when none exists.
pub fn plugin_dir(cli: Option<&Path>, config: &LaunchConfig) -> Option<PathBuf> {
    if let Some(dir) = cli {
        return Some(dir.to_path_buf());
    }
    if let Some(dir) = std::env::var_os("LAUNCH_AGENT_PLUGIN_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = &config.plugin_dir {
        return Some(config.resolve_path(dir));
    }
    let exe = std::env::current_exe().ok()?;
    let exe_dir = exe.parent()?;
    [exe_dir.join("bundle"), exe_dir.join("../bundle")]
        .into_iter()
        .find(|d| d.is_dir())
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
/// entry with a `path`. Errors name the key and what was expected.
pub fn resolve(config: &LaunchConfig, dir: Option<&Path>) -> Result<Vec<PluginRef>, String> {
    let mut refs: Vec<PluginRef> = Vec::new();
    for (kind, name, key) in block_types(config) {
        let path = file_of(config, dir, kind, &name, key)?;
        refs.push(PluginRef {
            name,
            path,
            expected_kind: Some(kind),
        });
    }
    for (name, entry) in &config.plugins {
        if let Some(path) = &entry.path
            && !refs.iter().any(|r| &r.name == name)
        {
            refs.push(PluginRef {
                name: name.clone(),
                path: config.resolve_path(path),
                expected_kind: None,
            });
        }
    }
    Ok(refs)
}

fn file_of(
    config: &LaunchConfig,
    dir: Option<&Path>,
    kind: PluginKind,
    name: &str,
    key: &str,
) -> Result<PathBuf, String> {
    if let Some(PluginEntry {
        path: Some(path), ..
    }) = config.plugins.get(name)
    {
        return Ok(config.resolve_path(path));
    }
    let bundled = BUNDLE.iter().find(|(k, n, _)| *k == kind && *n == name);
    match (bundled, dir) {
        (Some((_, _, file)), Some(dir)) => Ok(dir.join(file)),
        (Some((_, _, file)), None) => Err(format!(
            "{key} `{name}` is a bundled plugin, but no plugin dir was found to load {file} from: \
             pass --plugin-dir, set LAUNCH_AGENT_PLUGIN_DIR or `plugin_dir`, or run scripts/build-plugins.sh"
        )),
        (None, _) => {
            let known: Vec<&str> = BUNDLE
                .iter()
                .filter(|(k, _, _)| *k == kind)
                .map(|(_, n, _)| *n)
                .collect();
            Err(format!(
                "{key} `{name}` is neither a bundled {kind} plugin ({}) nor a `plugins:` entry with a `path`",
                known.join(", ")
            ))
        }
    }
}

/// A bundled plugin's call timeout when the config leaves it at the
/// default: the timeout is wall-clock time, so a build's covers the whole
/// `docker build` and push it waits on; the docker builder gets an hour, as
/// W&B's Kaniko builds do (30 minutes) with room for the push. (Its
/// deadline, the time its own code runs, stays at the default.)
pub fn default_timeout_ms(kind: PluginKind, name: &str) -> Option<u64> {
    match (kind, name) {
        (PluginKind::Builder, "docker") => Some(3_600_000),
        (PluginKind::Registry, "oci") => Some(120_000),
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
