//! The plugin runtime: loads WebAssembly components, checks them, caches
//! their compiled code and calls them in a sandbox.
//!
//! Lifecycle of a plugin:
//!
//! 1. **Resolve** its component: a `plugins:` entry's `path`, or for a
//!    bundled name its file in the plugin dir, else the copy embedded in
//!    the agent ([`catalog`], [`bundle`]).
//! 2. **Verify** the bytes: the sha256 a config pins must match.
//! 3. **Compile** once, or load the precompiled code we cached ([`cache`]).
//! 4. **Check the contract**: the WIT version it was built against must be
//!    one this host accepts, and it must export one plugin kind ([`contract`]).
//! 5. **Link** against the host's imports and keep the `InstancePre`.
//! 6. **Call**: each call gets a fresh Store with the plugin's grant policy
//!    (compiled once at load: [`GrantPolicy`]), a deadline that traps and a
//!    memory cap ([`loaded`]). A trap is the plugin's failure, named with its
//!    version; the agent goes on.

pub mod authorize;
pub mod bindings;
pub mod bundle;
pub mod cache;
pub mod catalog;
pub mod contract;
pub mod epoch;
pub mod exports;
pub mod loaded;
pub mod oci_source;
pub mod panic_record;
pub mod signature;
pub mod state;
pub mod wasm_engine;

pub use catalog::{PluginOrigin, PluginSource};
pub use contract::PluginKind;
pub use loaded::{CallError, LoadedPlugin, PluginDescription};

use crate::capabilities::policy::GrantPolicy;
use crate::capabilities::state::CapabilityState;
use crate::config::{PluginEntry, SecretSource};
use cache::{CacheOutcome, CompiledCache};
use exports::Exports;
use state::PluginState;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::Arc;
use wasm_engine::PluginEngine;
use wasmtime::component::{HasSelf, Linker};

/// The largest plugin file read: far above any real plugin (the bundle's
/// are 40–400 KiB), far below what would hurt the agent.
pub const MAX_PLUGIN_FILE_BYTES: u64 = 64 << 20;

/// Reads a plugin file: a regular file (not a FIFO, a device such as
/// `/dev/zero`, a socket or a directory, which would hang or flood the
/// agent) of at most [`MAX_PLUGIN_FILE_BYTES`].
fn read_component_file(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    // Opened without blocking, so a FIFO with no writer cannot hang the open.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot read the file: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read the file: {e}"))?;
    if !meta.file_type().is_file() {
        return Err(format!(
            "not a regular file ({}): a plugin must be a `.wasm` component file",
            file_kind(&meta.file_type())
        ));
    }
    if meta.len() > MAX_PLUGIN_FILE_BYTES {
        return Err(format!(
            "the file is {} MiB, more than the {} MiB a plugin may be",
            meta.len() >> 20,
            MAX_PLUGIN_FILE_BYTES >> 20
        ));
    }
    let mut wasm = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_PLUGIN_FILE_BYTES + 1)
        .read_to_end(&mut wasm)
        .map_err(|e| format!("cannot read the file: {e}"))?;
    if wasm.len() as u64 > MAX_PLUGIN_FILE_BYTES {
        return Err(format!(
            "the file grew past the {} MiB a plugin may be while it was read",
            MAX_PLUGIN_FILE_BYTES >> 20
        ));
    }
    Ok(wasm)
}

/// A file type in words, for errors.
fn file_kind(kind: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Why `wasm` is plainly not a component, in words (the parser's own
/// message for a file of some other kind is a dump of its first bytes):
/// `None` when it may be one, and the compiler decides.
fn not_a_component(wasm: &[u8]) -> Option<&'static str> {
    /// Every `.wasm` file begins with these bytes.
    const MAGIC: &[u8] = b"\0asm";
    /// What follows them in a core module: version 1, layer 0.
    const CORE_MODULE: &[u8] = &[1, 0, 0, 0];
    if !wasm.starts_with(MAGIC) {
        return Some(
            "not a valid WebAssembly component: it does not begin with the bytes `\\0asm` every `.wasm` file begins with",
        );
    }
    if wasm[MAGIC.len()..].starts_with(CORE_MODULE) {
        return Some(
            "not a valid WebAssembly component: it is a core module; build the plugin for `wasm32-wasip2` (or `wasm32-unknown-unknown` and `wasm-tools component new`)",
        );
    }
    None
}

/// Why a plugin could not be loaded. The message names the plugin and file.
#[derive(Debug, thiserror::Error)]
#[error("plugin `{name}` ({path}): {reason}")]
pub struct LoadError {
    /// The plugin's name in the config.
    pub name: String,
    /// The file, or `embedded <file>` for a plugin of the embedded bundle.
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
    /// The environment that authorizes requests marked `auth:
    /// environment`, shared by every plugin loaded here (set once the
    /// environment is known: [`PluginHost::lend_environment`]).
    authorizer: authorize::SharedAuthorizer,
    /// The Kubernetes cluster and watches of every plugin loaded here.
    kube: Arc<crate::capabilities::kubernetes::KubeAccess>,
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
        bindings::imports::HostImports::add_to_linker::<_, HasSelf<CapabilityState>>(
            &mut linker,
            |state: &mut PluginState| &mut state.caps,
        )?;
        // The frozen 0.1 contract, served by the same capabilities.
        bindings::imports::v0_1::HostImports::add_to_linker::<_, HasSelf<CapabilityState>>(
            &mut linker,
            |state: &mut PluginState| &mut state.caps,
        )?;
        Ok(PluginHost {
            engine,
            cache,
            linker,
            plugins: BTreeMap::new(),
            registry_clients: Default::default(),
            authorizer: Default::default(),
            kube: Default::default(),
        })
    }

    /// How plugin instances are allocated.
    pub fn allocator(&self) -> wasm_engine::Allocator {
        self.engine.allocator
    }

    /// The clock behind plugin deadlines (it ticks only while a call is in
    /// flight).
    pub fn epoch_clock(&self) -> &Arc<epoch::EpochClock> {
        &self.engine.clock
    }

    /// Loads the component file at `path` as plugin `name` with the config
    /// `entry`'s pin, grants and limits; `secrets` is the config's map.
    pub async fn load(
        &mut self,
        name: &str,
        path: &Path,
        entry: &PluginEntry,
        secrets: &BTreeMap<String, SecretSource>,
    ) -> Result<Arc<LoadedPlugin>, LoadError> {
        let source = PluginSource::File {
            path: path.to_path_buf(),
            origin: PluginOrigin::Path,
        };
        self.load_from(name, &source, entry, secrets).await
    }

    /// Loads the component `source` (embedded or a file) as plugin `name`,
    /// as [`load`](Self::load) does.
    pub async fn load_from(
        &mut self,
        name: &str,
        source: &PluginSource,
        entry: &PluginEntry,
        secrets: &BTreeMap<String, SecretSource>,
    ) -> Result<Arc<LoadedPlugin>, LoadError> {
        let (mut plugin, outcome) = self.prepare(name, source, entry, secrets)?;
        let info = plugin.info().await.map_err(|e| LoadError {
            name: name.to_string(),
            path: source.to_string(),
            reason: format!("its `info` call failed: {e}"),
        })?;
        plugin.label = Arc::from(format!("{} {}", info.name, info.version).as_str());
        plugin.description.plugin_name = info.name;
        plugin.description.version = info.version;
        plugin.description.description = info.description;
        tracing::debug!(
            plugin = name,
            code = match outcome {
                CacheOutcome::Hit => "cache hit",
                CacheOutcome::Compiled => "compiled",
                CacheOutcome::Precompiled => "precompiled at build time",
            },
            "plugin loaded"
        );
        let plugin = Arc::new(plugin);
        self.plugins.insert(name.to_string(), plugin.clone());
        Ok(plugin)
    }

    /// Checks the component `source` as [`load_from`](Self::load_from)
    /// would load it (the pin, the compile, the contract, the world, the
    /// grants) without running any of its code, and returns its kind: what
    /// `config check` does. Nothing is kept.
    pub fn check_from(
        &self,
        name: &str,
        source: &PluginSource,
        entry: &PluginEntry,
        secrets: &BTreeMap<String, SecretSource>,
    ) -> Result<PluginKind, LoadError> {
        self.prepare(name, source, entry, secrets)
            .map(|(plugin, _)| plugin.kind())
    }

    /// Every step of a load but the `info` call: the plugin ready to call,
    /// its description still without what `info` says.
    fn prepare(
        &self,
        name: &str,
        source: &PluginSource,
        entry: &PluginEntry,
        secrets: &BTreeMap<String, SecretSource>,
    ) -> Result<(LoadedPlugin, CacheOutcome), LoadError> {
        let fail = |reason: String| LoadError {
            name: name.to_string(),
            path: source.to_string(),
            reason,
        };
        // Embedded bytes are borrowed from the binary, with the digest the
        // build computed: on a cache hit they are never read.
        let (wasm, sha256): (Cow<'static, [u8]>, String) = match source {
            PluginSource::Embedded(plugin) => (Cow::Borrowed(plugin.wasm), plugin.sha256.into()),
            PluginSource::File { path, .. }
            | PluginSource::Pulled(oci_source::Pulled { path, .. }) => {
                let wasm = read_component_file(path).map_err(fail)?;
                let sha256 = cache::sha256_hex(&wasm);
                (Cow::Owned(wasm), sha256)
            }
            PluginSource::Oci { .. } => {
                return Err(fail(
                    "is pulled from its registry when the agent starts; it has not been pulled yet"
                        .into(),
                ));
            }
        };
        if let Some(pinned) = &entry.sha256 {
            let expected = crate::config::plugins_sha(&pinned.value);
            if expected.as_deref() != Some(sha256.as_str()) {
                return Err(fail(format!(
                    "sha256 mismatch: the config pins {}, the component is sha256:{sha256}; refusing to load it",
                    pinned.value
                )));
            }
        }
        if let Some(reason) = not_a_component(&wasm) {
            return Err(fail(reason.into()));
        }
        let engine = &self.engine.engine;
        let precompiled = match source {
            PluginSource::Embedded(plugin) => {
                plugin.precompiled_for(engine, self.cache.engine_hash())
            }
            _ => None,
        };
        let (component, outcome) = match precompiled {
            Some(component) => (component, CacheOutcome::Precompiled),
            None => self
                .cache
                .load_or_compile(engine, &wasm, &sha256)
                .map_err(|e| fail(format!("not a valid WebAssembly component: {e:#}")))?,
        };
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
        let pre = instance_pre.clone();
        let matches_world = match (contract.kind, contract.version.minor) {
            (PluginKind::Builder, 1) => {
                bindings::v0_1::builder::BuilderPluginPre::new(pre).map(drop)
            }
            (PluginKind::Registry, 1) => {
                bindings::v0_1::registry::RegistryPluginPre::new(pre).map(drop)
            }
            (PluginKind::Environment, 1) => {
                bindings::v0_1::environment::EnvironmentPluginPre::new(pre).map(drop)
            }
            (PluginKind::Deployer, 1) => Err(wasmtime::format_err!(
                "contract 0.1 has no deployer world; build it against {}@{}",
                contract::PACKAGE,
                contract::HOST_VERSION
            )),
            (PluginKind::Builder, _) => bindings::builder::BuilderPluginPre::new(pre).map(drop),
            (PluginKind::Registry, _) => bindings::registry::RegistryPluginPre::new(pre).map(drop),
            (PluginKind::Environment, _) => {
                bindings::environment::EnvironmentPluginPre::new(pre).map(drop)
            }
            (PluginKind::Deployer, _) => bindings::deployer::DeployerPluginPre::new(pre).map(drop),
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
        let plugin = LoadedPlugin {
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
                path: source.path(),
                origin: source.origin(),
                signed_by: match source {
                    PluginSource::Pulled(pulled) => pulled.verified_by.clone(),
                    _ => None,
                },
                hosts: policy.hosts().to_vec(),
                environment_auth: policy.environment_auth_hosts().to_vec(),
                blob_stores: policy.blob_stores().to_vec(),
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
                kubernetes: policy.kubernetes_namespaces().to_vec(),
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
            host_calls: Default::default(),
            kept: Arc::default(),
            authorizer: self.authorizer.clone(),
            kube: self.kube.clone(),
        };
        Ok((plugin, outcome))
    }

    /// Makes `environment` (called with `settings`) the one that authorizes
    /// every loaded plugin's requests marked `auth: environment`, when it
    /// exports `authorizer`; otherwise those requests are refused.
    pub fn lend_environment(&self, environment: &Arc<LoadedPlugin>, settings: String) {
        self.authorizer
            .set(authorize::EnvironmentLender::new(environment, settings));
    }

    /// The environment that lends its credentials (set by
    /// [`PluginHost::lend_environment`]), for the host's own clients (the
    /// blob capability's start-up check).
    pub fn lent_environment(
        &self,
    ) -> Option<Arc<dyn crate::capabilities::environment_auth::EnvironmentAuthorizer>> {
        self.authorizer.get()
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
