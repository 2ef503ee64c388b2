//! A loaded plugin: its compiled component ready to instantiate, and the
//! calls the host makes into it. Every call gets a fresh Store (so calls
//! share no state), a CPU deadline that traps, and a memory cap.

use super::bindings::{Job, PluginError};
use super::contract::PluginKind;
use super::exports::{Export, Exports};
use super::state::{MEMORY_CAP_MARKER, MemoryCap, OwnTime, PluginState};
use super::wasm_engine::deadline_ticks;
use crate::capabilities::call_caps::{MAX_ERROR, char_floor};
use crate::capabilities::log::LogSink;
use crate::capabilities::policy::GrantPolicy;
use crate::capabilities::secrets::CredentialScope;
use crate::capabilities::state::CapabilityState;
use crate::capabilities::wasi::context_for;
use crate::config::Limits;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{ComponentNamedList, Lift, Lower};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use super::bindings::registry::exports::launch::plugin::registry::RegistryLogin;

pub use super::bindings::builder::exports::launch::plugin::builder::{
    BuildOutcome, BuildPlan, BuildRequest,
};

/// Where a job's source is shown to a builder plugin (read-scrubbed).
pub const SOURCE_GUEST_DIR: &str = "/src";

/// Registry credentials a registry plugin handed over; the password stays
/// in the host, bound to the registry and repository it was issued for
/// ([`SecretHandle::scope`](crate::capabilities::secrets::SecretHandle::scope)).
pub struct RegistryCredentials {
    /// The user name.
    pub username: String,
    /// The password or token.
    pub password: crate::capabilities::secrets::SecretHandle,
}

impl std::fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Facts about a loaded plugin, as `plugins list` shows them.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PluginDescription {
    /// The name the config uses (`noop`, `my-builder`).
    pub name: String,
    /// The plugin's kind.
    pub kind: PluginKind,
    /// The plugin's own name, from `info()`.
    pub plugin_name: String,
    /// The plugin's own version, from `info()`.
    pub version: String,
    /// One line from the plugin.
    pub description: String,
    /// The contract version it was built against.
    pub wit_version: String,
    /// The interfaces it imports, sorted: what it can ask the host for at
    /// all, before grants.
    pub imports: Vec<String>,
    /// Whether it imports any WASI interface; a lean plugin imports only
    /// the contract.
    pub uses_wasi: bool,
    /// sha256 of the component file.
    pub sha256: String,
    /// The component file (for an embedded plugin, its file name in the bundle).
    pub path: PathBuf,
    /// Where the component came from: embedded, the plugin dir, or a path.
    pub origin: super::catalog::PluginOrigin,
    /// The public key whose signature was verified before loading (an
    /// `oci` plugin with `verify:`), if any.
    pub signed_by: Option<PathBuf>,
    /// Granted hosts.
    pub hosts: Vec<String>,
    /// Hosts whose requests the environment authorizes (`auth:
    /// environment`, `grants.environment_auth`).
    pub environment_auth: Vec<String>,
    /// Granted object-store prefixes (`grants.blob.stores`).
    pub blob_stores: Vec<String>,
    /// Granted env vars.
    pub env: Vec<String>,
    /// Granted secrets (names scrubbed).
    pub secrets: Vec<String>,
    /// Granted directories, `path` or `path (rw)`.
    pub dirs: Vec<String>,
    /// Whether the Docker engine is granted.
    pub docker: bool,
    /// Granted Kubernetes namespaces (`grants.kubernetes.namespaces`).
    pub kubernetes: Vec<String>,
    /// Whether its Docker builds' steps get the network (`grants.build_network`).
    pub build_network: bool,
    /// Deadline of one call (its own code's running time), ms.
    pub deadline_ms: u64,
    /// Timeout of one call (wall-clock, host waits included), ms.
    pub timeout_ms: u64,
    /// Memory cap, MiB.
    pub memory_mb: u64,
}

/// A plugin call that did not return normally.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The plugin ran past its deadline and was stopped.
    #[error("plugin {plugin} ran past its {deadline_ms} ms deadline and was stopped")]
    Deadline {
        /// `name version` of the plugin.
        plugin: String,
        /// The deadline.
        deadline_ms: u64,
    },
    /// The call, waits on the host included, ran past its timeout and was
    /// abandoned.
    #[error("plugin {plugin} did not finish within its {timeout_ms} ms timeout and was stopped")]
    Timeout {
        /// `name version` of the plugin.
        plugin: String,
        /// The timeout.
        timeout_ms: u64,
    },
    /// The plugin tried to grow its memory past its cap.
    #[error("plugin {plugin} hit its memory cap of {memory_mb} MiB and was stopped")]
    MemoryCap {
        /// `name version` of the plugin.
        plugin: String,
        /// The cap.
        memory_mb: u64,
    },
    /// The plugin trapped (a panic, an out-of-bounds access, ...).
    #[error("plugin {plugin} crashed: {detail}")]
    Trap {
        /// `name version` of the plugin.
        plugin: String,
        /// The trap and the end of the plugin's stderr.
        detail: String,
    },
    /// The host could not reserve the address space an instance of the
    /// plugin needs (the agent's `ulimit -v` is too low): none of the
    /// plugin's code ran.
    #[error("{}", address_space_message(plugin, *reserve_bytes, *limit_bytes))]
    AddressSpace {
        /// `name version` of the plugin.
        plugin: String,
        /// The reservation that failed.
        reserve_bytes: u64,
        /// The agent's address-space limit (`RLIMIT_AS`), `None` when unlimited.
        limit_bytes: Option<u64>,
    },
    /// The host could not set up the call (a granted directory is missing...).
    #[error("plugin {plugin} could not be called: {detail}")]
    Setup {
        /// `name version` of the plugin.
        plugin: String,
        /// Why.
        detail: String,
    },
    /// The call returned the plugin's own error.
    #[error("plugin {plugin}: {}", .error.message)]
    Plugin {
        /// `name version` of the plugin.
        plugin: String,
        /// The plugin's error.
        error: PluginError,
    },
}

/// A compiled plugin, ready to be called.
pub struct LoadedPlugin {
    pub(crate) description: PluginDescription,
    pub(crate) exports: Exports,
    pub(crate) engine: Engine,
    /// The plugin's grants, compiled once at load and shared into each Store.
    pub(crate) policy: Arc<GrantPolicy>,
    pub(crate) limits: Limits,
    pub(crate) settings: Option<serde_json::Value>,
    pub(crate) label: Arc<str>,
    /// The plugin host's registry clients.
    pub(crate) registry_clients: Arc<crate::capabilities::oci::RegistryClients>,
    /// The engine's deadline clock, kept running while a call is in flight.
    pub(crate) clock: Arc<super::epoch::EpochClock>,
    /// Where its calls' host calls are recorded, once asked for
    /// ([`LoadedPlugin::record_host_calls`]).
    pub(crate) host_calls: std::sync::OnceLock<crate::capabilities::state::HostCallRecord>,
    /// The secrets this plugin keeps between calls (`secrets.keep`).
    pub(crate) kept: Arc<crate::capabilities::kept::KeptSecrets>,
    /// The environment that authorizes this plugin's requests marked
    /// `auth: environment`.
    pub(crate) authorizer: super::authorize::SharedAuthorizer,
    /// The plugin host's Kubernetes cluster and watches.
    pub(crate) kube: Arc<crate::capabilities::kubernetes::KubeAccess>,
}

impl LoadedPlugin {
    /// What the plugin may reach.
    pub fn policy(&self) -> &GrantPolicy {
        &self.policy
    }

    /// From now on, records the host calls of every call of this plugin
    /// (hosts asked and the answer, secrets opened, refusals) into the
    /// record returned: what `plugins call` prints.
    pub fn record_host_calls(&self) -> crate::capabilities::state::HostCallRecord {
        self.host_calls.get_or_init(Default::default).clone()
    }

    /// What `plugins list` shows.
    pub fn description(&self) -> &PluginDescription {
        &self.description
    }

    /// The plugin's kind.
    pub fn kind(&self) -> PluginKind {
        self.description.kind
    }

    /// `name version`, as errors name the plugin.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The settings a block of the config gives this plugin: the block's own
    /// keys, then the plugin entry's `config:` keys.
    pub fn settings_for(&self, block: Option<serde_json::Value>) -> String {
        let mut merged = match block {
            Some(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        if let Some(serde_json::Value::Object(extra)) = &self.settings {
            for (k, v) in extra {
                merged.insert(k.clone(), v.clone());
            }
        }
        serde_json::Value::Object(merged).to_string()
    }

    fn store(
        &self,
        log: Option<LogSink>,
        source: Option<&std::path::Path>,
    ) -> Result<(Store<PluginState>, MemoryOutputPipe), CallError> {
        let (wasi, stderr) = if self.description.uses_wasi {
            let shown = source.map(|s| (s, SOURCE_GUEST_DIR));
            let (wasi, stderr) =
                context_for(&self.policy, shown).map_err(|e| CallError::Setup {
                    plugin: self.label.to_string(),
                    detail: format!("{e:#}"),
                })?;
            (Some(wasi), stderr)
        } else {
            // A lean plugin cannot reach WASI: no directory or variable is
            // worth opening for it.
            (None, MemoryOutputPipe::new(0))
        };
        let mut caps = CapabilityState::new(
            self.label.clone(),
            self.policy.clone(),
            wasi,
            self.registry_clients.clone(),
        );
        caps.log_sink = log;
        caps.job_source = source.map(std::path::Path::to_path_buf);
        if let Some(record) = self.host_calls.get() {
            caps.record_into(record.clone());
        }
        caps.kept = self.kept.clone();
        caps.hooks.authorizer = self.authorizer.get();
        caps.kube.access = self.kube.clone();
        let state = PluginState {
            caps,
            limiter: MemoryCap {
                bytes: usize::try_from(self.limits.memory_mb * 1024 * 1024).unwrap_or(usize::MAX),
            },
            own_time: OwnTime::new(Duration::from_millis(self.limits.deadline_ms)),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(deadline_ticks(Duration::from_millis(
            self.limits.deadline_ms,
        )));
        // Time in the host is not the plugin's: at each deadline check it is
        // given back, so the call traps only once its own code has run for
        // the whole deadline.
        // Except a log line's: writing it is the plugin's own work.
        store.call_hook(|mut store, hook| {
            let state = store.data_mut();
            let charged = matches!(hook, wasmtime::CallHook::ReturningFromHost)
                && std::mem::take(&mut state.caps.charge_to_plugin);
            state.own_time.switch(hook, charged);
            Ok(())
        });
        store.epoch_deadline_callback(|store| match store.data().own_time.remaining() {
            Some(left) => Ok(UpdateDeadline::Continue(deadline_ticks(left))),
            None => Err(Trap::Interrupt.into()),
        });
        Ok((store, stderr))
    }

    /// What a failed call means: its deadline or memory cap, or a trap with
    /// what the plugin said last (a lean plugin's panic record, its stderr,
    /// or its last error line in the log).
    fn classify(
        &self,
        error: wasmtime::Error,
        stderr: &MemoryOutputPipe,
        store: &Store<PluginState>,
    ) -> CallError {
        let plugin = self.label.to_string();
        if matches!(error.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            return CallError::Deadline {
                plugin,
                deadline_ms: self.limits.deadline_ms,
            };
        }
        if format!("{error:#}").contains(MEMORY_CAP_MARKER) {
            return CallError::MemoryCap {
                plugin,
                memory_mb: self.limits.memory_mb,
            };
        }
        // Not a trap: the instance was never made, so no code of it ran.
        if error.downcast_ref::<Trap>().is_none()
            && let Some(reserve_bytes) = failed_reservation(&error)
        {
            return CallError::AddressSpace {
                plugin,
                reserve_bytes,
                limit_bytes: address_space_limit(),
            };
        }
        let mut detail = match error.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            None => without_core_dump(&error),
        };
        let output = String::from_utf8_lossy(&stderr.contents())
            .trim()
            .to_string();
        if let Some(panic) = super::panic_record::from_trap(&error, store) {
            detail.push_str(&format!("; {panic}"));
        } else if !output.is_empty() {
            let tail: Vec<&str> = output.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            detail.push_str(&format!("; its stderr ended: {}", tail.join(" | ")));
        } else if let Some(line) = &store.data().last_error_line {
            detail.push_str(&format!("; its last error line: {line}"));
        }
        CallError::Trap {
            plugin,
            detail: scrubbed_and_cut(store.data(), &detail),
        }
    }

    fn wall_clock_limit(&self) -> Duration {
        Duration::from_millis(self.limits.timeout_ms)
    }

    fn wrong_kind(&self, wanted: PluginKind) -> CallError {
        CallError::Setup {
            plugin: self.label.to_string(),
            detail: format!("it is a {} plugin, not a {wanted} plugin", self.kind()),
        }
    }

    fn lift<T>(&self, result: Result<T, PluginError>) -> Result<T, CallError> {
        result.map_err(|error| CallError::Plugin {
            plugin: self.label.to_string(),
            error,
        })
    }
}

/// The size of the address-space reservation whose failure `error` is, if
/// it is one: wasmtime reserves each instance's memory (and, without the
/// instance pool, each call's) with one `mmap`, and says "mmap failed to
/// reserve 0x... bytes" when the kernel refuses it.
fn failed_reservation(error: &wasmtime::Error) -> Option<u64> {
    const SAID: &str = "failed to reserve 0x";
    error.chain().find_map(|cause| {
        let text = cause.to_string();
        let hex = &text[text.find(SAID)? + SAID.len()..];
        let end = hex
            .find(|c: char| !c.is_ascii_hexdigit())
            .unwrap_or(hex.len());
        u64::from_str_radix(&hex[..end], 16).ok()
    })
}

/// The agent's address-space limit (`RLIMIT_AS`, what `ulimit -v` sets) in
/// bytes; `None` when unlimited or unknown.
fn address_space_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the limit into the struct it is given.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) };
    (read == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// What [`CallError::AddressSpace`] says: what failed, why, and what to do.
fn address_space_message(plugin: &str, reserve_bytes: u64, limit_bytes: Option<u64>) -> String {
    let mib = |bytes: u64| bytes.div_ceil(1 << 20);
    let why = match limit_bytes {
        Some(limit) => format!(
            "the agent's address-space limit (`ulimit -v`) is {} MiB, and each plugin instance reserves {} MiB up front (its memory and guard regions, whatever its memory cap): raise the limit (`ulimit -v unlimited`, or the service's `LimitAS=`)",
            mib(limit),
            mib(reserve_bytes)
        ),
        None => "the agent has no address-space limit, so the system refused the mapping: check `vm.overcommit_memory` and `vm.max_map_count`"
            .to_string(),
    };
    format!(
        "could not reserve {} MiB of address space for plugin {plugin}, so it did not run: {why}",
        mib(reserve_bytes)
    )
}

/// `error` and its causes, as `{error:#}` shows them, less the core dump
/// the engine attaches to a trap (a list of modules and memories, of no use
/// in a job's error).
fn without_core_dump(error: &wasmtime::Error) -> String {
    error
        .chain()
        .map(ToString::to_string)
        .filter(|cause| !cause.starts_with("wasm coredump generated"))
        .collect::<Vec<_>>()
        .join(": ")
}

impl LoadedPlugin {
    /// Runs `export` against a fresh store, with the deadline, the memory
    /// cap and the wall-clock limit, and classifies any failure; `params`
    /// and `finish` are as for [`Exports::call`].
    async fn call<P, R, T>(
        &self,
        export: Export,
        log: Option<LogSink>,
        source: Option<&std::path::Path>,
        params: impl FnOnce(&mut Store<PluginState>) -> wasmtime::Result<P>,
        finish: impl FnOnce(&mut Store<PluginState>, R) -> wasmtime::Result<T>,
    ) -> Result<T, CallError>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        R: ComponentNamedList + Lift + Send + Sync + 'static,
    {
        if !self.exports.has(export) {
            return Err(self.wrong_kind(export.kind().unwrap_or(self.kind())));
        }
        // The deadline's clock runs while this call is in flight.
        let _ticking = self.clock.enter();
        let (mut store, stderr) = self.store(log, source)?;
        let call = self.exports.call(&mut store, export, params, finish);
        let result = if self.exports.is_sync() {
            // No import can wait: the call is over when its own code is,
            // and the deadline bounds that.
            Some(call.await)
        } else {
            tokio::time::timeout(self.wall_clock_limit(), call)
                .await
                .ok()
        };
        // However the call ended, what it created on a cluster and left
        // there goes now.
        store.data_mut().caps.kube.clean_up().await;
        match result {
            Some(result) => result.map_err(|error| self.classify(error, &stderr, &store)),
            None => Err(CallError::Timeout {
                plugin: self.label.to_string(),
                timeout_ms: self.limits.timeout_ms,
            }),
        }
    }

    /// Calls `plugin.info` (what `describe` returns, fresh from the plugin).
    pub async fn describe(&self) -> Result<super::bindings::PluginInfo, CallError> {
        self.info().await
    }

    /// Calls `plugin.info`.
    pub(crate) async fn info(&self) -> Result<super::bindings::PluginInfo, CallError> {
        self.call(
            Export::Info,
            None,
            None,
            |_| Ok(()),
            |_, (info,): (super::bindings::PluginInfo,)| Ok(info),
        )
        .await
    }

    /// Calls `environment.verify`.
    pub async fn verify_environment(
        &self,
        settings: &str,
        log: Option<LogSink>,
    ) -> Result<(), CallError> {
        let result = self
            .call(Export::Verify, log, None, |_| Ok((settings,)), scrubbed)
            .await?;
        self.lift(result)
    }

    /// Calls `authorizer.authorize` (an environment that lends its
    /// credentials): the headers to add to `request`.
    pub async fn authorize(
        &self,
        settings: &str,
        request: &super::bindings::HttpRequest,
    ) -> Result<Vec<(String, String)>, CallError> {
        let result = self
            .call(
                Export::Authorize,
                None,
                None,
                |_| Ok((settings, request)),
                scrubbed,
            )
            .await?;
        self.lift(result)
    }

    /// Calls `authorizer.bearer-token` (an environment that lends its
    /// token; check [`Exports::has`] for [`Export::BearerToken`] first):
    /// the token for `url`'s origin and its remaining lifetime.
    pub async fn bearer_token(
        &self,
        settings: &str,
        url: &str,
    ) -> Result<super::bindings::LentToken, CallError> {
        let result = self
            .call(
                Export::BearerToken,
                None,
                None,
                |_| Ok((settings, url)),
                scrubbed,
            )
            .await?;
        self.lift(result)
    }

    /// Whether the plugin exports `registry.verify` (a 0.2 registry).
    pub fn can_verify_registry(&self) -> bool {
        self.exports.has(Export::RegistryVerify)
    }

    /// Calls `registry.verify` (a 0.2 registry; check
    /// [`LoadedPlugin::can_verify_registry`] first).
    pub async fn verify_registry(
        &self,
        settings: &str,
        log: Option<LogSink>,
    ) -> Result<(), CallError> {
        let result = self
            .call(
                Export::RegistryVerify,
                log,
                None,
                |_| Ok((settings,)),
                scrubbed,
            )
            .await?;
        self.lift(result)
    }

    /// Calls `deployer.render`: the objects to apply, each a JSON object.
    pub async fn render(
        &self,
        request: &super::bindings::DeployRequest,
        log: Option<LogSink>,
    ) -> Result<Vec<String>, CallError> {
        let result = self
            .call(Export::Render, log, None, |_| Ok((request,)), scrubbed)
            .await?;
        self.lift(result)
    }

    /// Calls `environment.run-env`.
    pub async fn run_env(
        &self,
        settings: &str,
        job: &Job,
        log: Option<LogSink>,
    ) -> Result<Vec<(String, String)>, CallError> {
        let params = |store: &mut Store<PluginState>| {
            store.data_mut().caps.kube.item_id = Some(job.id.clone());
            Ok((settings, job))
        };
        let result = self
            .call(Export::RunEnv, log, None, params, scrubbed)
            .await?;
        self.lift(result)
    }

    /// Calls `builder.plan`, with the job's source visible at [`SOURCE_GUEST_DIR`].
    pub async fn plan(
        &self,
        request: &BuildRequest,
        source: Option<&std::path::Path>,
        log: Option<LogSink>,
    ) -> Result<BuildPlan, CallError> {
        let params = |store: &mut Store<PluginState>| {
            store.data_mut().caps.kube.item_id = Some(request.job.id.clone());
            Ok((request,))
        };
        let result = self
            .call(Export::Plan, log, source, params, scrubbed)
            .await?;
        self.lift(result)
    }

    /// Calls `builder.build`; `credentials` reach the plugin as an opaque
    /// secret handle it can pass to `docker.push` but not read, and fill a
    /// docker config Secret it creates through `kubernetes.create` (the
    /// host's [`BuildLogin`](crate::capabilities::kubernetes::BuildLogin)).
    pub async fn build(
        &self,
        request: &BuildRequest,
        plan: &BuildPlan,
        credentials: Option<&RegistryCredentials>,
        source: Option<&std::path::Path>,
        log: Option<LogSink>,
    ) -> Result<BuildOutcome, CallError> {
        let params = |store: &mut Store<PluginState>| {
            let password = match credentials {
                Some(c) => Some(store.data_mut().hold_secret(c.password.handed_on())?),
                None => None,
            };
            store.data_mut().caps.kube.item_id = Some(request.job.id.clone());
            store.data_mut().caps.kube.build_login = credentials.and_then(|c| {
                crate::capabilities::kubernetes::BuildLogin::new(
                    &c.username,
                    &c.password,
                    &request.destination,
                )
            });
            store.data_mut().build_repositories =
                crate::capabilities::docker::reference::repositories_of([
                    plan.image_uri.as_str(),
                    request.destination.as_str(),
                ]);
            let username = credentials.map(|c| c.username.as_str());
            Ok((request, plan, username, password))
        };
        let result = self
            .call(Export::Build, log, source, params, scrubbed)
            .await?;
        self.lift(result)
    }

    /// Calls `registry.login`; the password the plugin minted or opened is
    /// taken out of its Store and kept by the host, bound to the repository
    /// the plugin gives (`registry.repository-uri`, asked first): the host
    /// uses it for that registry and repository only.
    pub async fn login(
        &self,
        settings: &str,
        log: Option<LogSink>,
    ) -> Result<Option<RegistryCredentials>, CallError> {
        let repository = self.repository_uri(settings, log.clone()).await?;
        let scope = CredentialScope::parse(&repository);
        let finish =
            |store: &mut Store<PluginState>,
             (result,): (Result<Option<RegistryLogin>, PluginError>,)| {
                Ok(match result {
                    Ok(Some(login)) => {
                        let password = store.data_mut().table.delete(login.password)?;
                        match scope.and_then(|scope| password.bound(scope)) {
                            Ok(password) => Ok(Some(RegistryCredentials {
                                username: login.username,
                                password,
                            })),
                            Err(e) => Err(PluginError {
                                stage: super::bindings::Stage::Agent,
                                message: format!(
                                    "its credentials cannot be bound to its repository: {}",
                                    crate::capabilities::call_caps::cut(&e, 512)
                                ),
                                retryable: false,
                            }),
                        }
                    }
                    Ok(None) => Ok(None),
                    Err(e) => Err(scrub_error(store, e)),
                })
            };
        let result = self
            .call(Export::Login, log, None, |_| Ok((settings,)), finish)
            .await?;
        self.lift(result)
    }

    /// Calls `registry.repository-uri`.
    pub async fn repository_uri(
        &self,
        settings: &str,
        log: Option<LogSink>,
    ) -> Result<String, CallError> {
        let result = self
            .call(
                Export::RepositoryUri,
                log,
                None,
                |_| Ok((settings,)),
                scrubbed,
            )
            .await?;
        self.lift(result)
    }

    /// Calls `registry.image-exists`.
    pub async fn image_exists(
        &self,
        settings: &str,
        image_uri: &str,
        log: Option<LogSink>,
    ) -> Result<bool, CallError> {
        let result = self
            .call(
                Export::ImageExists,
                log,
                None,
                |_| Ok((settings, image_uri)),
                scrubbed,
            )
            .await?;
        self.lift(result)
    }
}

/// The one result of a call, its error scrubbed of the secrets the Store
/// held.
fn scrubbed<R>(
    store: &mut Store<PluginState>,
    (result,): (Result<R, PluginError>,),
) -> wasmtime::Result<Result<R, PluginError>> {
    Ok(result.map_err(|error| scrub_error(store, error)))
}

/// `error` with its message scrubbed of the secrets the Store held and
/// cut to [`MAX_ERROR`] bytes (it goes to the queue and the database).
fn scrub_error(store: &Store<PluginState>, error: PluginError) -> PluginError {
    PluginError {
        message: scrubbed_and_cut(store.data(), &error.message),
        ..error
    }
}

/// `text` scrubbed of the secrets `state` held and cut to [`MAX_ERROR`]
/// bytes, saying so. Only what no held secret could reach into the part
/// kept is cut before scrubbing, so a huge text costs no more to scrub
/// than a short one and no secret is cut in two.
fn scrubbed_and_cut(state: &PluginState, text: &str) -> String {
    let head = &text[..char_floor(text, MAX_ERROR.saturating_add(state.longest_secret))];
    let scrubbed = state.scrub(head);
    let end = char_floor(&scrubbed, MAX_ERROR);
    let left_out = (scrubbed.len() - end) + (text.len() - head.len());
    if left_out == 0 {
        return scrubbed;
    }
    format!("{} [cut: {left_out} more bytes]", &scrubbed[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_reservation_is_told_from_a_crash() {
        let error = wasmtime::Error::msg("Cannot allocate memory (os error 12)")
            .context("mmap failed to reserve 0x104000000 bytes");
        assert_eq!(failed_reservation(&error), Some(0x104000000));
        let trap = wasmtime::Error::msg("wasm trap: unreachable");
        assert_eq!(failed_reservation(&trap), None);
        let said = address_space_message("local 0.1.0", 0x104000000, Some(2 << 30));
        assert!(
            said.starts_with("could not reserve 4160 MiB of address space for plugin local 0.1.0")
                && said.contains("`ulimit -v`) is 2048 MiB"),
            "{said}"
        );
        let said = address_space_message("local 0.1.0", 0x104000000, None);
        assert!(said.contains("no address-space limit"), "{said}");
    }

    #[test]
    fn a_host_error_reads_without_the_core_dump_the_engine_added() {
        let error = wasmtime::Error::msg("plugin memory cap reached: asked for 64 MiB")
            .context("error while executing at wasm backtrace:\n    0: 0x1 - <unknown>!f")
            .context("wasm coredump generated while executing store_name:\nmodules:\n  <module>");
        let shown = without_core_dump(&error);
        assert!(!shown.contains("coredump"), "{shown}");
        assert!(shown.contains("plugin memory cap reached"), "{shown}");
        assert!(shown.contains("wasm backtrace"), "{shown}");
    }
}
