//! What the capabilities hold for one plugin call: the plugin's policy, its
//! WASI and HTTP contexts, its resources (secret handles), and where its
//! log lines go. The runtime's Store data wraps it (with the call's limits)
//! and hands it to every host function; a Store lives for exactly one call.
//!
//! A call may also keep a [`HostCallRecord`]: every host call the plugin
//! made (hosts asked and the answer, secrets opened, refusals with the
//! grant that would allow them), written where each capability checks its
//! grant. `launch-agent plugins call` prints it; the agent keeps none.

use super::call_caps::{LogUse, SecretUse};
use super::http::GrantedHttpHooks;
use super::log::LogSink;
use super::oci::RegistryClients;
use super::policy::GrantPolicy;
use super::policy::Refusal;
use crate::redact::Redactor;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// The capabilities' part of one plugin call's Store data; each capability
/// implements its WIT `Host` trait for it.
pub struct CapabilityState {
    /// The plugin's WASI context; `None` for a lean plugin, which imports no
    /// WASI (building a context costs about half a microsecond, a tenth of
    /// a lean call). Should WASI be asked for anyway, an empty context is
    /// made then.
    pub wasi: Option<WasiCtx>,
    /// The call's resources (secret handles, WASI and HTTP resources).
    pub table: ResourceTable,
    /// The `wasi:http` context.
    pub http: WasiHttpCtx,
    /// The `wasi:http` hooks that hold outbound requests to the policy.
    pub hooks: GrantedHttpHooks,
    /// `name version` of the plugin, as messages name it.
    pub plugin_name: Arc<str>,
    /// What the plugin may reach, compiled when it was loaded: every host
    /// function checks it first (the `wasi:http` hooks hold it too).
    pub policy: Arc<GrantPolicy>,
    /// The job's log, when the call is made for a job.
    pub log_sink: Option<LogSink>,
    /// The current job's source on this machine (a builder's build context).
    pub job_source: Option<PathBuf>,
    /// The repositories this call's Docker builds may tag and its
    /// `image-exists` may ask about: the planned image's and the
    /// destination's, set for a builder's build call; empty for every other
    /// call (which may then neither build nor look up).
    pub build_repositories: Vec<String>,
    /// The values of the secrets this Store held (opened, minted or handed
    /// in), scrubbed from everything the plugin says.
    pub held_secrets: Vec<String>,
    /// The redactor of a call made for no job (the job's log has the
    /// agent's): see [`CapabilityState::redactor`].
    own_redactor: Arc<Redactor>,
    /// The same values, to find one in constant time.
    pub held_index: HashSet<String>,
    /// The length of the longest value held.
    pub longest_secret: usize,
    /// What the call has written to the log, against the caps of
    /// [`call_caps`](super::call_caps).
    pub log_use: LogUse,
    /// What the call has minted and holds, against the caps of
    /// [`call_caps`](super::call_caps).
    pub secret_use: SecretUse,
    /// What the call has asked of the Docker engine, against the caps of
    /// [`docker::caps`](super::docker::caps).
    pub docker_use: super::docker::caps::DockerUse,
    /// Set by a host function whose time is the plugin's own (`log`): the
    /// runtime's call hook reads and clears it when the function returns,
    /// and does not give that time back against the deadline.
    pub charge_to_plugin: bool,
    /// The plugin host's registry clients (the OCI capability).
    pub registry_clients: Arc<RegistryClients>,
    /// The last line the plugin logged at level `error` in this call, shown
    /// if the call traps and left neither a panic record nor stderr.
    pub last_error_line: Option<String>,
    /// Where this call's host calls are recorded, when someone asked
    /// (`plugins call`); `None` for the agent's calls.
    pub host_calls: Option<HostCallRecord>,
    /// The secrets this plugin keeps between its calls (`secrets.keep`);
    /// empty, and shared with no one, unless the runtime sets the plugin's.
    pub kept: Arc<super::kept::KeptSecrets>,
    /// The call's Kubernetes state: the cluster, the job its objects are
    /// labelled with, and what it created (deleted when the call ends).
    pub kube: super::kubernetes::KubeCall,
}

/// One host call a plugin made, as [`HostCallRecord`] keeps it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum HostCall {
    /// The host asked something for the plugin (a registry, an HTTP
    /// destination, the Docker engine), and what came back.
    Asked {
        /// What was asked, and of whom (`registry http://127.0.0.1:5000: manifest of app:v1`).
        what: String,
        /// The answer (`exists`, `absent`, an error).
        answer: String,
    },
    /// A secret the plugin opened, by name (never its value).
    SecretOpened {
        /// The secret's name.
        name: String,
    },
    /// A call the plugin's grants refused.
    Refused {
        /// The refusal, as the plugin was told it.
        message: String,
        /// The grant that would allow it (`grants.hosts`).
        grant: String,
    },
}

impl std::fmt::Display for HostCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostCall::Asked { what, answer } => write!(f, "asked {what}: {answer}"),
            HostCall::SecretOpened { name } => write!(f, "opened secret {name:?}"),
            HostCall::Refused { message, grant } => {
                write!(f, "refused ({grant} would allow it): {message}")
            }
        }
    }
}

/// The host calls of one plugin call, in the order they were made; shared
/// by the call's state and the `wasi:http` hooks, and read after the call.
#[derive(Clone, Debug, Default)]
pub struct HostCallRecord(Arc<Mutex<Vec<HostCall>>>);

impl HostCallRecord {
    /// Adds `call`.
    pub fn push(&self, call: HostCall) {
        if let Ok(mut calls) = self.0.lock() {
            calls.push(call);
        }
    }

    /// The calls recorded so far.
    pub fn calls(&self) -> Vec<HostCall> {
        self.0.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

impl CapabilityState {
    /// The state of a call of plugin `plugin_name` under `policy`, with
    /// `wasi` (`None` for a lean plugin).
    pub fn new(
        plugin_name: Arc<str>,
        policy: Arc<GrantPolicy>,
        wasi: Option<WasiCtx>,
        registry_clients: Arc<RegistryClients>,
    ) -> Self {
        CapabilityState {
            wasi,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            hooks: GrantedHttpHooks {
                policy: policy.clone(),
                plugin: plugin_name.clone(),
                in_flight: Arc::default(),
                host_calls: None,
                authorizer: None,
            },
            plugin_name,
            policy,
            log_sink: None,
            job_source: None,
            build_repositories: Vec::new(),
            held_secrets: Vec::new(),
            own_redactor: Arc::default(),
            held_index: HashSet::new(),
            longest_secret: 0,
            log_use: LogUse::default(),
            secret_use: SecretUse::default(),
            docker_use: Default::default(),
            charge_to_plugin: false,
            registry_clients,
            last_error_line: None,
            host_calls: None,
            kept: Arc::default(),
            kube: Default::default(),
        }
    }

    /// Records this call's host calls into `record` (the `wasi:http` hooks'
    /// too).
    pub fn record_into(&mut self, record: HostCallRecord) {
        self.hooks.host_calls = Some(record.clone());
        self.host_calls = Some(record);
    }

    /// Records `call` when this call is recorded.
    pub fn record(&self, call: impl FnOnce() -> HostCall) {
        if let Some(record) = &self.host_calls {
            record.push(call());
        }
    }

    /// Logs `refusal` (see [`Refusal::report`]), records it, and returns
    /// the message the plugin gets.
    pub fn refused(&self, refusal: &Refusal) -> String {
        let message = refusal.report(&self.plugin_name);
        self.record(|| HostCall::Refused {
            message: message.clone(),
            grant: refusal.grant().to_string(),
        });
        message
    }
}

impl CapabilityState {
    /// What scrubs everything this call's plugin says and the engine says
    /// for it: the agent's redactor when the call is made for a job (so a
    /// secret held here is also scrubbed from the job's later lines and
    /// calls), else the call's own. Every secret the Store holds is learnt
    /// by it.
    pub fn redactor(&self) -> &Arc<Redactor> {
        match &self.log_sink {
            Some(sink) => sink.redactor(),
            None => &self.own_redactor,
        }
    }
}

impl WasiView for CapabilityState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: self.wasi.get_or_insert_with(|| WasiCtx::builder().build()),
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for CapabilityState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}
