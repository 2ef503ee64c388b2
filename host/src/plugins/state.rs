//! The data of one plugin Store: WASI, HTTP, resources, limits and the
//! plugin's grants. A Store lives for exactly one call.

use crate::capabilities::http::GrantedHttpHooks;
use crate::capabilities::log::LogSink;
use crate::config::SecretSource;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::CallHook;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Text of the trap raised when a plugin's memory cap is reached; the
/// runtime recognises it to report the cap.
pub const MEMORY_CAP_MARKER: &str = "plugin memory cap reached";

/// Store data of one plugin call.
pub struct PluginState {
    /// The plugin's WASI context; `None` for a lean plugin, which imports no
    /// WASI (building a context costs about half a microsecond, a tenth of
    /// a lean call). Should WASI be asked for anyway, an empty context is
    /// made then.
    pub(crate) wasi: Option<WasiCtx>,
    pub(crate) table: ResourceTable,
    pub(crate) http: WasiHttpCtx,
    pub(crate) hooks: GrantedHttpHooks,
    pub(crate) limiter: MemoryCap,
    pub(crate) plugin_name: Arc<str>,
    pub(crate) secrets: Arc<BTreeMap<String, SecretSource>>,
    pub(crate) log_sink: Option<LogSink>,
    /// The current job's source on this machine (a builder's build context).
    pub(crate) job_source: Option<std::path::PathBuf>,
    /// The plugin's grants (docker, hosts).
    pub(crate) grants: Arc<crate::config::Grants>,
    /// The values of the secrets this Store held (opened, minted or handed
    /// in), scrubbed from everything the plugin says.
    pub(crate) held_secrets: Vec<String>,
    /// The plugin host's registry clients (the OCI capability).
    pub(crate) registry_clients: Arc<crate::capabilities::oci::RegistryClients>,
    /// The last line the plugin logged at level `error` in this call, shown
    /// if the call traps and left neither a panic record nor stderr.
    pub(crate) last_error_line: Option<String>,
    /// The call's own-time budget and what it has used; see [`OwnTime`].
    pub(crate) own_time: OwnTime,
}

/// How long a call's own code has run: its wall-clock time less the time
/// spent in host functions the plugin calls (a Docker build, a registry
/// lookup, a `wasi:http` wait, a log line). The call's deadline is on this.
///
/// Only the plugin's calls into the host read the clock; entering and
/// leaving the plugin does not, so a call that makes no host call reads it
/// once, when the Store is made. The few microseconds of instantiation
/// before the plugin runs count as its own.
pub struct OwnTime {
    /// When the call began.
    started: Instant,
    /// Time spent in host functions, up to the last return from one.
    in_host: Duration,
    /// Since when a host function has had control, while one has.
    host_since: Option<Instant>,
    /// The deadline.
    budget: Duration,
}

impl OwnTime {
    /// A budget of `budget`, starting now.
    pub fn new(budget: Duration) -> Self {
        OwnTime {
            started: Instant::now(),
            in_host: Duration::ZERO,
            host_since: None,
            budget,
        }
    }

    /// Notes a switch between the plugin and the host (a call hook).
    pub fn switch(&mut self, hook: CallHook) {
        match hook {
            CallHook::CallingHost => {
                self.host_since.get_or_insert_with(Instant::now);
            }
            CallHook::ReturningFromHost => {
                if let Some(since) = self.host_since.take() {
                    self.in_host += since.elapsed();
                }
            }
            CallHook::CallingWasm | CallHook::ReturningFromWasm => {}
        }
    }

    /// The plugin's own running time so far.
    pub fn used(&self) -> Duration {
        let in_host = self.in_host + self.host_since.map_or(Duration::ZERO, |s| s.elapsed());
        self.started.elapsed().saturating_sub(in_host)
    }

    /// The budget left, `None` once it is used up.
    pub fn remaining(&self) -> Option<Duration> {
        self.budget
            .checked_sub(self.used())
            .filter(|left| !left.is_zero())
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: self.wasi.get_or_insert_with(|| WasiCtx::builder().build()),
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for PluginState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Caps the memory of one instance; growing past the cap traps with
/// [`MEMORY_CAP_MARKER`] (rather than letting `memory.grow` return -1, which
/// Rust guests turn into an opaque abort).
pub struct MemoryCap {
    /// The cap in bytes.
    pub bytes: usize,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.bytes {
            wasmtime::bail!(
                "{MEMORY_CAP_MARKER}: asked for {} MiB, cap is {} MiB",
                desired / (1024 * 1024),
                self.bytes / (1024 * 1024)
            );
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}
