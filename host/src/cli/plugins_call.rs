//! `launch-agent plugins call NAME EXPORT`: one export of one plugin, called
//! as the agent would call it, with the result or the plugin's error and
//! every host call it made: a plugin author's test harness.
//!
//! | input | where it comes from |
//! |---|---|
//! | the plugin | a `plugins:` entry with a `path`, else the bundled plugin of that name (`oci`, `docker`, `noop`, `local`; the plugin dir's file first) |
//! | its grants | the config's `plugins.NAME.grants` (and a bundled plugin's defaults), plus `--grant-host`, `--grant-env`, `--grant-secret` |
//! | its settings | `--settings JSON`, else the config's block of its kind when that block names it; the entry's `config:` keys merged in, as the agent does |
//! | the export's arguments | `--arg VALUE`, in order (`image-exists` takes the image) |
//!
//! Exit code 0 when the export answered, 1 when it failed (refused, trapped,
//! or returned the plugin's error).

use launch_agent::capabilities::state::HostCall;
use launch_agent::config::LaunchConfig;
use launch_agent::plugins::catalog::{self, BUNDLE, PluginOrigin, PluginRef, PluginSource};
use launch_agent::plugins::{LoadedPlugin, PluginHost, PluginKind, bundle};
use launch_agent::startup;
use launch_agent::state_dir::StateDir;
use serde_saphyr::{Location, Spanned};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The exports `plugins call` can call, as the WIT names them.
const CALLABLE: &str = "info, verify, repository-uri, image-exists, login";

/// What `plugins call` was asked.
pub(super) struct CallArgs {
    /// The plugin's name in the config (or the bundled plugin's).
    pub name: String,
    /// The export, as the WIT names it.
    pub export: String,
    /// The settings, JSON.
    pub settings: Option<String>,
    /// The export's arguments after the settings.
    pub args: Vec<String>,
    /// The config file.
    pub config: Option<PathBuf>,
    /// The plugin dir.
    pub plugin_dir: Option<PathBuf>,
    /// `scheme://host[:port]` patterns granted on top of the config's.
    pub grant_hosts: Vec<String>,
    /// Env vars granted on top of the config's.
    pub grant_env: Vec<String>,
    /// Secrets granted on top of the config's.
    pub grant_secrets: Vec<String>,
}

/// Runs `plugins call`.
pub(super) async fn call(state_arg: Option<&Path>, args: CallArgs) -> anyhow::Result<ExitCode> {
    let mut config = super::load_config(args.config.as_deref())?;
    add_flag_grants(&mut config, &args);
    let state = StateDir::resolve(state_arg, Some(&config));
    let dir = catalog::plugin_dir(args.plugin_dir.as_deref(), &config);
    let plugin_ref = find(&config, dir.as_deref(), &args.name)?;
    let entry = startup::entry_with_defaults(&config, &plugin_ref);
    let mut host = PluginHost::new(
        &state.plugin_cache(),
        startup::max_plugin_memory_mb(&config),
    )?;
    let plugin = host
        .load_from(
            &plugin_ref.name,
            &plugin_ref.source,
            &entry,
            &config.secrets,
        )
        .await?;
    let settings = settings(&config, &plugin, &args)?;
    let record = plugin.record_host_calls();
    let answer = call_export(&plugin, &args.export, &settings, &args.args).await;
    let code = match &answer {
        Ok(text) => {
            println!("{} {}: {text}", args.name, args.export);
            ExitCode::SUCCESS
        }
        Err(error) => {
            println!("{} {} failed: {error}", args.name, args.export);
            ExitCode::FAILURE
        }
    };
    let calls = record.calls();
    if calls.is_empty() {
        println!("host calls: none");
    } else {
        println!("host calls:");
        for call in &calls {
            let mark = match call {
                HostCall::Refused { .. } => "REFUSED",
                _ => "-",
            };
            println!("  {mark} {call}");
        }
    }
    Ok(code)
}

/// The flags' grants, added to the plugin's `plugins:` entry (made when
/// missing: an entry without a path configures the bundled plugin).
fn add_flag_grants(config: &mut LaunchConfig, args: &CallArgs) {
    if args.grant_hosts.is_empty() && args.grant_env.is_empty() && args.grant_secrets.is_empty() {
        return;
    }
    let entry = config.plugins.entry(args.name.clone()).or_default();
    for host in &args.grant_hosts {
        entry.grants.hosts.push(Spanned::new(
            host.clone(),
            Location::UNKNOWN,
            Location::UNKNOWN,
        ));
    }
    entry.grants.env.extend(args.grant_env.iter().cloned());
    entry
        .grants
        .secrets
        .extend(args.grant_secrets.iter().cloned());
}

/// The plugin called `name`: one the config loads, else a bundled one.
fn find(config: &LaunchConfig, dir: Option<&Path>, name: &str) -> anyhow::Result<PluginRef> {
    let (refs, _) = catalog::resolve_each(config, dir);
    if let Some(found) = refs.into_iter().find(|r| r.name == name) {
        return Ok(found);
    }
    let Some((kind, _, file)) = BUNDLE.iter().find(|(_, n, _)| *n == name) else {
        let bundled: Vec<&str> = BUNDLE.iter().map(|(_, n, _)| *n).collect();
        anyhow::bail!(
            "no plugin `{}`: the config has no `plugins:` entry of this name with a `path`, and no bundled plugin has it (bundled: {})",
            launch_agent::text::for_log(name),
            bundled.join(", ")
        );
    };
    let source = match dir.map(|d| d.join(file)).filter(|p| p.exists()) {
        Some(path) => PluginSource::File {
            path,
            origin: PluginOrigin::PluginDir,
        },
        None => PluginSource::Embedded(
            bundle::embedded(file)
                .ok_or_else(|| anyhow::anyhow!("this build of the agent does not embed {file}"))?,
        ),
    };
    Ok(PluginRef {
        name: name.to_string(),
        source,
        expected_kind: Some(*kind),
    })
}

/// The settings the export gets (see the module doc).
fn settings(
    config: &LaunchConfig,
    plugin: &LoadedPlugin,
    args: &CallArgs,
) -> anyhow::Result<String> {
    let block = match &args.settings {
        Some(json) => Some(
            serde_json::from_str::<serde_json::Value>(json)
                .map_err(|e| anyhow::anyhow!("--settings is not JSON: {e}"))?,
        ),
        None => {
            let (kind, block) = match plugin.kind() {
                PluginKind::Registry => (
                    config.registry.as_ref().map(|b| b.kind.value.clone()),
                    config
                        .registry
                        .as_ref()
                        .and_then(|b| serde_json::to_value(b).ok()),
                ),
                PluginKind::Builder => (
                    config
                        .builder
                        .as_ref()
                        .and_then(|b| b.kind.as_ref())
                        .map(|k| k.value.clone()),
                    config
                        .builder
                        .as_ref()
                        .and_then(|b| serde_json::to_value(b).ok()),
                ),
                PluginKind::Environment => (
                    config.environment.as_ref().map(|b| b.kind.value.clone()),
                    config
                        .environment
                        .as_ref()
                        .and_then(|b| serde_json::to_value(b).ok()),
                ),
                // A deployer has no block: `deploy` gives it its settings.
                PluginKind::Deployer => (None, None),
            };
            block.filter(|_| kind.as_deref() == Some(args.name.as_str()))
        }
    };
    Ok(plugin.settings_for(block))
}

/// Calls `export` and says what it answered.
async fn call_export(
    plugin: &LoadedPlugin,
    export: &str,
    settings: &str,
    args: &[String],
) -> Result<String, String> {
    let arg = |i: usize, what: &str| {
        args.get(i)
            .cloned()
            .ok_or_else(|| format!("`{export}` takes {what}: give it with --arg"))
    };
    let shown = |e: launch_agent::plugins::CallError| e.to_string();
    match export {
        "info" => plugin
            .describe()
            .await
            .map(|info| format!("{} {}: {}", info.name, info.version, info.description))
            .map_err(shown),
        "verify" => plugin
            .verify_environment(settings, None)
            .await
            .map(|()| "verified".to_string())
            .map_err(shown),
        "repository-uri" => plugin.repository_uri(settings, None).await.map_err(shown),
        "image-exists" => {
            let image = arg(0, "the image reference")?;
            plugin
                .image_exists(settings, &image, None)
                .await
                .map(|exists| {
                    if exists {
                        format!("{image} exists")
                    } else {
                        format!("{image} does not exist")
                    }
                })
                .map_err(shown)
        }
        "login" => plugin
            .login(settings, None)
            .await
            .map(|login| match login {
                Some(c) => format!(
                    "user {:?} (the password is held by the host, not shown)",
                    c.username
                ),
                None => "no login (anonymous)".to_string(),
            })
            .map_err(shown),
        other => Err(format!(
            "`plugins call` cannot call `{}`: it calls {CALLABLE}",
            launch_agent::text::for_log(other)
        )),
    }
}
