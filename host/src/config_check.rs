//! `config check` past the parse: what `run` checks at start-up that needs
//! neither the queue nor a plugin's code to run, every problem at once, so
//! a config that passes is one `run` takes.
//!
//! | checked | as `run` does in | a problem names |
//! |---|---|---|
//! | the file: YAML, keys, types, values | [`LaunchConfig::load`] (the first problem; the parse stops there) | file, line, column, key |
//! | `runners:` on this machine (users, paths) | [`Policies::compile`] | `runners` |
//! | the plugin dir is a directory | [`catalog::resolve_each`] | `plugin_dir` |
//! | each block `type` names a bundled plugin or a `plugins:` entry with a `path` | [`catalog::resolve_each`] | the `type`'s line and column, the bundled plugins of that kind |
//! | each plugin loads: a regular file, its `sha256` pin, a component, a contract version, its world, imports this host has, grants | [`PluginHost::check_from`] | the key that names it, the plugin, the file |
//! | each block's plugin is of the block's kind | [`crate::startup::load_plugins`] | the `type`, the kind found |
//! | each `plugins:` entry configures something: it has a `path` or names a bundled plugin | (`run` ignores such an entry) | `plugins.<name>` |
//!
//! Left to `run` (and `plugins pull`): pulling `oci` plugins and checking
//! their digests and signatures. Left to `run`: what runs a plugin's code (its `info`, the environment's
//! `verify`) or reaches the queue (the database, W&B credentials). The
//! compiled code goes to a throwaway cache, so a check changes nothing on
//! disk.

use crate::config::{ConfigError, LaunchConfig};
use crate::plugins::catalog::{self, BUNDLE, PluginRef};
use crate::plugins::{PluginHost, PluginKind};
use crate::runners::policy::Policies;
use crate::startup::{entry_with_defaults, max_plugin_memory_mb};
use std::path::{Path, PathBuf};

/// Every problem that would stop `run` with `config` (and `plugin_dir`,
/// the `--plugin-dir` flag), or that leaves a key of it without effect;
/// empty when there is none. Warnings about what the config trusts a
/// queue's submitters with are logged, as `run` logs them.
pub fn check(config: &LaunchConfig, plugin_dir: Option<&Path>) -> Vec<ConfigError> {
    let file = config
        .source
        .clone()
        .unwrap_or_else(|| PathBuf::from("<config>"));
    let mut problems = Vec::new();
    match Policies::compile(&config.runners) {
        Ok(policies) => {
            for warning in policies.warnings(&config.queue_names()) {
                tracing::warn!("{warning}");
            }
        }
        Err(e) => problems.push(ConfigError::invalid(
            &file,
            "runners",
            format!("cannot be used on this machine: {e:#}"),
        )),
    }
    let dir = catalog::plugin_dir(plugin_dir, config);
    let (refs, unresolved) = catalog::resolve_each(config, dir.as_deref());
    for problem in unresolved {
        problems.push(at_key(
            &file,
            config,
            problem.key,
            format!("`{}`: {}", problem.value, problem.reason),
        ));
    }
    problems.extend(entries_without_effect(config, &file));
    problems.extend(load_each(config, &file, &refs));
    problems
}

/// Loads each plugin of `refs` as `run` would, without calling it.
fn load_each(config: &LaunchConfig, file: &Path, refs: &[PluginRef]) -> Vec<ConfigError> {
    if refs.is_empty() {
        return Vec::new();
    }
    let cache = ThrowawayDir::new();
    let host = match PluginHost::new(cache.path(), max_plugin_memory_mb(config)) {
        Ok(host) => host,
        Err(e) => {
            return vec![ConfigError::invalid(
                file,
                "plugins",
                format!("cannot be checked: the plugin runtime does not start here: {e:#}"),
            )];
        }
    };
    let mut problems = Vec::new();
    for plugin_ref in refs {
        // Pulled (digests, signature) and checked at start-up, or now by
        // `plugins pull`: a check does not reach registries.
        if let catalog::PluginSource::Oci { .. } = plugin_ref.source {
            continue;
        }
        let key = key_of(plugin_ref);
        let entry = entry_with_defaults(config, plugin_ref);
        match host.check_from(
            &plugin_ref.name,
            &plugin_ref.source,
            &entry,
            &config.secrets,
        ) {
            Err(error) => problems.push(at_key(
                file,
                config,
                &key,
                format!("cannot be loaded: {error}"),
            )),
            Ok(kind) => {
                if let Some(expected) = plugin_ref.expected_kind
                    && kind != expected
                {
                    problems.push(at_key(
                        file,
                        config,
                        &key,
                        format!(
                            "names plugin `{}` ({}), a {kind} plugin; the {expected} must be a {expected} plugin",
                            crate::text::for_log(&plugin_ref.name),
                            plugin_ref.source
                        ),
                    ));
                }
            }
        }
    }
    problems
}

/// The key that brings `plugin_ref` in: its block's `type`, or its
/// `plugins:` entry's `path`.
fn key_of(plugin_ref: &PluginRef) -> String {
    match plugin_ref.expected_kind {
        Some(PluginKind::Environment) => "environment.type".into(),
        Some(PluginKind::Builder) => "builder.type".into(),
        Some(PluginKind::Registry) => "registry.type".into(),
        Some(PluginKind::Deployer) => "deploy".into(),
        None => format!("plugins.{}.path", plugin_ref.name),
    }
}

/// `plugins:` entries with no `path` that name no bundled plugin: `run`
/// loads nothing for them, so what they set (grants, limits, settings) has
/// no effect, and is most likely a misspelt name.
fn entries_without_effect(config: &LaunchConfig, file: &Path) -> Vec<ConfigError> {
    let used: Vec<String> = catalog::block_types(config)
        .into_iter()
        .map(|(_, name, _)| name)
        .collect();
    let mut bundled: Vec<&str> = BUNDLE.iter().map(|(_, name, _)| *name).collect();
    bundled.sort_unstable();
    bundled.dedup();
    config
        .plugins
        .iter()
        .filter(|(name, entry)| {
            entry.path.is_none()
                && !bundled.contains(&name.as_str())
                // A block that names it is reported as that block's problem.
                && !used.contains(name)
        })
        .map(|(name, _)| {
            ConfigError::invalid(
                file,
                &format!("plugins.{name}"),
                format!(
                    "has no `path` and names no bundled plugin (bundled: {}), so it configures nothing: give it a `path`, or name it after the bundled plugin it configures",
                    bundled.join(", ")
                ),
            )
        })
        .collect()
}

/// An error about `key`, at the line and column of a block's `type` when
/// `key` is one.
fn at_key(file: &Path, config: &LaunchConfig, key: &str, message: String) -> ConfigError {
    let location = match key {
        "environment.type" => config.environment.as_ref().map(|b| b.kind.referenced),
        "registry.type" => config.registry.as_ref().map(|b| b.kind.referenced),
        "builder.type" => config
            .builder
            .as_ref()
            .and_then(|b| b.kind.as_ref())
            .map(|k| k.referenced),
        _ => None,
    };
    match location {
        Some(location) => ConfigError::at(file, key, &location, message),
        None => ConfigError::invalid(file, key, message),
    }
}

/// A private directory of its own under the system's temp dir, removed when
/// dropped: the compiled-code cache of one check.
struct ThrowawayDir(PathBuf);

impl ThrowawayDir {
    fn new() -> Self {
        ThrowawayDir(std::env::temp_dir().join(format!(
            "launch-agent-config-check-{}",
            uuid::Uuid::new_v4().simple()
        )))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ThrowawayDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
