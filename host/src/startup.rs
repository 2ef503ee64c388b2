//! Start-up: load every plugin the config needs, verify the environment,
//! compile what the operator lets each queue's jobs do (`runners:`), and
//! assemble what the agent loop runs with. Every failure here stops the
//! agent with a message that says what to fix, before any job is taken;
//! where the config trusts a queue's submitters with this machine, the
//! agent says so in a warning.

use crate::agent::{self, JobContext};
use crate::config::{LaunchConfig, PluginEntry};
use crate::plugins::{LoadedPlugin, PluginHost, PluginKind, catalog};
use crate::queue::{self, BackendSettings};
use crate::runners::Runners;
use crate::runners::policy::Policies;
use crate::sources::JobArtifacts;
use crate::state_dir::StateDir;
use anyhow::Context as _;
use std::path::Path;
use std::sync::Arc;

/// Loads the plugins `config` uses (and every `plugins:` entry with a path).
pub async fn load_plugins(
    config: &LaunchConfig,
    plugin_dir: Option<&Path>,
    state: &StateDir,
) -> anyhow::Result<PluginHost> {
    let dir = catalog::plugin_dir(plugin_dir, config);
    let refs = catalog::resolve(config, dir.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut host = PluginHost::new(&state.plugin_cache(), max_plugin_memory_mb(config))
        .with_context(|| {
            format!(
                "starting the plugin runtime (cache in {})",
                state.plugin_cache().display()
            )
        })?;
    // The registry first: the bundled docker builder's push grant follows
    // the repository it gives.
    let mut refs = refs;
    refs.sort_by_key(|r| r.expected_kind != Some(PluginKind::Registry));
    let mut repository: Option<String> = None;
    let builder_pushes = refs.iter().any(|r| is_bundled_docker_builder(config, r));
    let oci_cache = crate::plugins::oci_source::OciCache::new(state.oci_plugins());
    for mut plugin_ref in refs {
        if let catalog::PluginSource::Oci { .. } = plugin_ref.source {
            plugin_ref.source = pull(config, &plugin_ref.name, &oci_cache, false).await?;
        }
        let mut entry = entry_with_defaults(config, &plugin_ref);
        if let Some(repository) = &repository
            && is_bundled_docker_builder(config, &plugin_ref)
        {
            push_to(config, &plugin_ref.name, &mut entry, repository);
        }
        let loaded = host
            .load_from(
                &plugin_ref.name,
                &plugin_ref.source,
                &entry,
                &config.secrets,
            )
            .await?;
        if let Some(expected) = plugin_ref.expected_kind
            && loaded.kind() != expected
        {
            anyhow::bail!(
                "plugin `{}` ({}) is a {} plugin, but the config uses it as the {expected}",
                plugin_ref.name,
                plugin_ref.source,
                loaded.kind()
            );
        }
        if builder_pushes && plugin_ref.expected_kind == Some(PluginKind::Registry) {
            repository = registry_repository(config, &loaded).await;
        }
    }
    Ok(host)
}

/// The repository the registry plugin gives (`repository-uri`), asked once
/// here; `None`, with a warning, when it cannot say (the builder's push
/// grant then comes from `registry.uri`, and each job asks again).
async fn registry_repository(config: &LaunchConfig, registry: &LoadedPlugin) -> Option<String> {
    let block = config
        .registry
        .as_ref()
        .and_then(|b| serde_json::to_value(b).ok());
    match registry
        .repository_uri(&registry.settings_for(block), None)
        .await
    {
        Ok(repository) => Some(repository),
        Err(error) => {
            tracing::warn!(
                "{error}: the docker builder's push grant comes from `registry.uri` instead of the registry's repository"
            );
            None
        }
    }
}

/// Whether `plugin_ref` is the bundled docker builder, whose default
/// grants include the registry's host.
fn is_bundled_docker_builder(config: &LaunchConfig, plugin_ref: &catalog::PluginRef) -> bool {
    plugin_ref.expected_kind == Some(PluginKind::Builder)
        && catalog::BUNDLE.iter().any(|(kind, name, file)| {
            *kind == PluginKind::Builder
                && *name == plugin_ref.name
                && *file == "builder-docker.wasm"
        })
        && config
            .plugins
            .get(&plugin_ref.name)
            .is_none_or(|e| e.path.is_none() && e.oci.is_none())
}

/// Gives the bundled docker builder `entry` the hosts of `repository` (and
/// `builder.destination`) in place of `registry.uri`'s, keeping the hosts
/// its `plugins:` entry grants by hand.
fn push_to(config: &LaunchConfig, name: &str, entry: &mut PluginEntry, repository: &str) {
    let mut grants = crate::config::Grants {
        hosts: config
            .plugins
            .get(name)
            .map(|e| e.grants.hosts.clone())
            .unwrap_or_default(),
        ..Default::default()
    };
    crate::capabilities::defaults::add(
        &mut grants,
        crate::config::Grants {
            hosts: crate::capabilities::defaults::push_host_grants(config, repository),
            ..Default::default()
        },
    );
    entry.grants.hosts = grants.hosts;
}

/// Pulls plugin `name`'s `oci` reference (or finds it in `cache`), checked
/// and, when its entry says so, its signature verified; `update` resolves a
/// tag again.
pub async fn pull(
    config: &LaunchConfig,
    name: &str,
    cache: &crate::plugins::oci_source::OciCache,
    update: bool,
) -> anyhow::Result<catalog::PluginSource> {
    let Some(entry) = config.plugins.get(name) else {
        anyhow::bail!("plugin `{name}` has no `plugins:` entry");
    };
    let pulled = crate::plugins::oci_source::fetch(name, entry, &config.secrets, cache, update)
        .await
        .map_err(|e| anyhow::anyhow!("plugin `{name}`: {e}"))?;
    tracing::info!(
        plugin = name,
        reference = %pulled.reference,
        digest = %pulled.manifest_digest,
        signed_by = ?pulled.verified_by,
        "plugin pulled"
    );
    Ok(catalog::PluginSource::Pulled(pulled))
}

/// The largest memory cap of any plugin `config` loads, in MiB: what the
/// plugin engine's instance slots must hold.
pub fn max_plugin_memory_mb(config: &LaunchConfig) -> u64 {
    config
        .plugins
        .values()
        .map(|p| p.limits.memory_mb)
        .chain(std::iter::once(crate::config::Limits::default().memory_mb))
        .max()
        .unwrap_or(128)
}

/// The plugin's config entry, with a bundled plugin's default grants (and
/// call timeout) added: what it is loaded with.
pub fn entry_with_defaults(config: &LaunchConfig, plugin_ref: &catalog::PluginRef) -> PluginEntry {
    let configured = config.plugins.get(&plugin_ref.name);
    let mut entry = PluginEntry {
        sha256: configured.and_then(|e| e.sha256.clone()),
        grants: configured.map(|e| e.grants.clone()).unwrap_or_default(),
        limits: configured.map(|e| e.limits.clone()).unwrap_or_default(),
        config: configured.and_then(|e| e.config.clone()),
        ..Default::default()
    };
    let uses_bundle = configured.is_none_or(|e| e.path.is_none() && e.oci.is_none());
    if let (Some(kind), true) = (plugin_ref.expected_kind, uses_bundle) {
        if entry.limits.timeout_ms == crate::config::Limits::default().timeout_ms
            && let Some(timeout_ms) = catalog::default_timeout_ms(kind, &plugin_ref.name)
        {
            entry.limits.timeout_ms = timeout_ms;
        }
        let defaults = catalog::default_grants(kind, &plugin_ref.name, config);
        crate::capabilities::defaults::add(&mut entry.grants, defaults);
    }
    entry
}

/// Loads plugins, opens the queue and verifies the environment: what
/// `launch-agent run` does before its first poll.
pub async fn prepare(
    config: &LaunchConfig,
    plugin_dir: Option<&Path>,
    state: StateDir,
) -> anyhow::Result<Arc<JobContext>> {
    crate::secret_env::report();
    let policies = runner_policies(config)?;
    let plugins = load_plugins(config, plugin_dir, &state).await?;
    let backend = BackendSettings::from_config(config, state.root());
    let queue = queue::open(&backend).await?;
    let job_artifacts = JobArtifacts::from_api(backend.wandb_api(), backend.name())?;
    let mut ctx = agent::job_context(
        config,
        &plugins,
        queue,
        job_artifacts,
        state,
        agent::identity::new_agent_id(),
    )?;
    ctx.runners = Runners::with_policies(&ctx.clients, policies);
    let settings = ctx.environment.settings_for(ctx.environment_block.clone());
    plugins.lend_environment(&ctx.environment, settings.clone());
    ctx.environment
        .verify_environment(&settings, None)
        .await
        .map_err(|e| anyhow::anyhow!("the environment is not usable: {e}"))?;
    if let Some(registry) = ctx.registry.as_ref().filter(|r| r.can_verify_registry()) {
        let settings = registry.settings_for(ctx.registry_block.clone());
        registry
            .verify_registry(&settings, None)
            .await
            .map_err(|e| anyhow::anyhow!("the registry is not usable: {e}"))?;
    }
    if let Some(store) = kaniko_context_store(config) {
        crate::capabilities::blob::check_build_context_store(store, plugins.lent_environment())
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
    }
    Ok(Arc::new(ctx))
}

/// The Kaniko builder's `build-context-store`, which start-up checks
/// exists (as W&B's `verify_storage_uri` does, but before the first job).
fn kaniko_context_store(config: &LaunchConfig) -> Option<&str> {
    let builder = config.builder.as_ref()?;
    let kaniko = builder.kind.as_ref().is_some_and(|k| k.value == "kaniko");
    builder
        .build_context_store
        .as_deref()
        .filter(|s| kaniko && !s.is_empty())
}

/// The config's `runners:` block compiled on this machine, with a warning
/// logged for each place it trusts a queue's submitters with the machine.
pub fn runner_policies(config: &LaunchConfig) -> anyhow::Result<Policies> {
    let policies = Policies::compile(&config.runners)
        .map_err(|e| anyhow::anyhow!("the config's `runners:` block cannot be used: {e:#}"))?;
    for warning in policies.warnings(&config.queue_names()) {
        tracing::warn!("{warning}");
    }
    Ok(policies)
}
