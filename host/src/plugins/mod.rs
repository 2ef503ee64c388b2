//! The plugin runtime: loads WebAssembly components, checks them, caches
//! their compiled code and calls them in a sandbox.
//!
//! Lifecycle of a plugin:
//!
//! 1. **Resolve** its file: a `plugins:` entry's `path`, or the default
//!    bundle's file for a bundled name ([`catalog`]).
//! 2. **Verify** the bytes: the sha256 a config pins must match.
//! 3. **Compile** once, or load the precompiled code we cached ([`cache`]).
//! 4. **Check the contract**: the WIT version it was built against must be
//!    one this host accepts, and it must export one plugin kind ([`contract`]).
//! 5. **Link** against the host's imports and keep the `InstancePre`.
//! 6. **Call**: each call gets a fresh Store with the plugin's grant policy
//!    (compiled once at load: [`GrantPolicy`]), a deadline that traps and a
//!    memory cap ([`loaded`]). A trap is the plugin's failure, named with its
//!    version; the agent goes on.

pub mod bindings;
pub mod cache;
pub mod catalog;
pub mod contract;
pub mod engine;
pub mod epoch;
pub mod exports;
pub mod loaded;
pub mod panic_record;
pub mod state;

pub use contract::PluginKind;
pub use loaded::{CallError, LoadedPlugin, PluginDescription};

use crate::capabilities::policy::GrantPolicy;
use crate::capabilities::state::CapabilityState;
use crate::config::{PluginEntry, SecretSource};
use cache::{CacheOutcome, CompiledCache};
use engine::PluginEngine;
use exports::Exports;
use state::PluginState;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use wasmtime::component::{HasSelf, Linker};

/// Why a plugin could not be loaded. The message names the plugin and file.
#[derive(Debug, thiserror::Error)]
#[error("plugin `{name}` ({path}): {reason}")]
pub struct LoadError {
    /// The plugin's name in the config.
    pub name: String,
    /// The file.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

/// The engine, the compiled-code cache, the linker and the loaded plugins.
pub struct PluginHost {
    engine: PluginEngine,
    cache: CompiledCache,
    linker: Linker<PluginState>,
    plugins: BTreeMap<String, Arc<LoadedPlugin>>,
    registry_clients: Arc<crate::capabilities::oci::RegistryClients>,
}

impl PluginHost {
    /// Creates the runtime; compiled plugins are cached in `cache_dir`;
    /// `max_memory_mb` is the largest memory cap of any plugin.
    pub fn new(cache_dir: &Path, max_memory_mb: u64) -> anyhow::Result<Self> {
        let engine = PluginEngine::new(max_memory_mb * 1024 * 1024)?;
        let cache = CompiledCache::open(cache_dir, &engine.engine)?;
        let mut linker = Linker::new(&engine.engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        bindings::imports::PluginHost::add_to_linker::<_, HasSelf<CapabilityState>>(
            &mut linker,
            |state: &mut PluginState| &mut state.caps,
        )?;
        Ok(PluginHost {
            engine,
            cache,
            linker,
            plugins: BTreeMap::new(),
            registry_clients: Default::default(),
        })
    }

    /// How plugin instances are allocated.
    pub fn allocator(&self) -> engine::Allocator {
        self.engine.allocator
    }

    /// The clock behind plugin deadlines (it ticks only while a call is in
    /// flight).
    pub fn epoch_clock(&self) -> &Arc<epoch::EpochClock> {
        &self.engine.clock
    }

    /// Loads the component at `path` as plugin `name` with the config
    /// `entry`'s pin, grants and limits; `secrets` is the config's map.
    pub async fn load(
        &mut self,
        name: &str,
        path: &Path,
        entry: &PluginEntry,
        secrets: &BTreeMap<String, SecretSource>,
    ) -> Result<Arc<LoadedPlugin>, LoadError> {
        let fail = |reason: String| LoadError {
            name: name.to_string(),
            path: path.display().to_string(),
            reason,
        };
        let wasm = std::fs::read(path).map_err(|e| fail(format!("cannot read the file: {e}")))?;
        let sha256 = cache::sha256_hex(&wasm);
        if let Some(pinned) = &entry.sha256 {
            let expected = crate::config::plugins_sha(&pinned.value);
            if expected.as_deref() != Some(sha256.as_str()) {
                return Err(fail(format!(
                    "sha256 mismatch: the config pins {}, the file is sha256:{sha256}; refusing to load it",
                    pinned.value
                )));
            }
        }
        let engine = &self.engine.engine;
        let (component, outcome) = self
            .cache
            .load_or_compile(engine, &wasm, &sha256)
            .map_err(|e| fail(format!("not a valid WebAssembly component: {e:#}")))?;
        let contract = contract::inspect(engine, &component).map_err(fail)?;
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| {
            fail(format!(
                "needs an import this host does not provide: {e:#} (this host provides {}@{} and WASI 0.2)",
                contract::PACKAGE,
                contract::HOST_VERSION
            ))
        })?;
        // The generated bindings check that the plugin matches its world;
        // calls then go through `Exports`.
        let matches_world = match contract.kind {
            PluginKind::Builder => {
                bindings::builder::BuilderPluginPre::new(instance_pre.clone()).map(drop)
            }
            PluginKind::Registry => {
                bindings::registry::RegistryPluginPre::new(instance_pre.clone()).map(drop)
            }
            PluginKind::Environment => {
                bindings::environment::EnvironmentPluginPre::new(instance_pre.clone()).map(drop)
            }
        };
        matches_world.map_err(|e| fail(format!("does not match its world: {e:#}")))?;
        let exports = Exports::new(
            instance_pre,
            contract.kind,
            &contract.version.to_string(),
            !contract.imports_can_wait(),
        );
        let policy =
            GrantPolicy::compile(&entry.grants, secrets).map_err(|e| fail(e.to_string()))?;
        let mut plugin = LoadedPlugin {
            description: PluginDescription {
                name: name.to_string(),
                kind: contract.kind,
                plugin_name: name.to_string(),
                version: String::new(),
                description: String::new(),
                wit_version: contract.version.to_string(),
                uses_wasi: contract.uses_wasi(),
                imports: contract.imports.clone(),
                sha256,
                path: path.to_path_buf(),
                hosts: policy.hosts().to_vec(),
                env: policy.env().to_vec(),
                secrets: policy.secret_names().map(str::to_string).collect(),
                dirs: policy
                    .dirs()
                    .iter()
                    .map(|d| {
                        let rw = if d.writable() { " (rw)" } else { "" };
                        format!("{}{rw}", d.host_path().display())
                    })
                    .collect(),
                docker: policy.docker_granted(),
                build_network: policy.build_network(),
                deadline_ms: entry.limits.deadline_ms,
                timeout_ms: entry.limits.timeout_ms,
                memory_mb: entry.limits.memory_mb,
            },
            exports,
            engine: engine.clone(),
            policy: Arc::new(policy),
            limits: entry.limits.clone(),
            settings: entry.config.clone(),
            label: Arc::from(name),
            registry_clients: self.registry_clients.clone(),
            clock: self.engine.clock.clone(),
        };
        let info = plugin
            .info()
            .await
            .map_err(|e| fail(format!("its `info` call failed: {e}")))?;
        plugin.label = Arc::from(format!("{} {}", info.name, info.version).as_str());
        plugin.description.plugin_name = info.name;
        plugin.description.version = info.version;
        plugin.description.description = info.description;
        tracing::debug!(
            plugin = name,
            cache = if outcome == CacheOutcome::Hit {
                "hit"
            } else {
                "compiled"
            },
            "plugin loaded"
        );
        let plugin = Arc::new(plugin);
        self.plugins.insert(name.to_string(), plugin.clone());
        Ok(plugin)
    }

    /// The loaded plugin called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.plugins.get(name).cloned()
    }

    /// All loaded plugins, by name.
    pub fn all(&self) -> impl Iterator<Item = &Arc<LoadedPlugin>> {
        self.plugins.values()
    }
}
