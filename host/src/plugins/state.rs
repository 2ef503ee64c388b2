//! The data of one plugin Store: what the capabilities hold for the call
//! ([`CapabilityState`], with the plugin's grant policy) and the call's
//! limits (memory cap, own-time budget). A Store lives for exactly one call.

use crate::capabilities::state::CapabilityState;
use std::time::{Duration, Instant};
use wasmtime::CallHook;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::{WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpView};

/// Text of the trap raised when a plugin's memory cap is reached; the
/// runtime recognises it to report the cap.
pub const MEMORY_CAP_MARKER: &str = "plugin memory cap reached";

/// Store data of one plugin call. It reads as its [`CapabilityState`]
/// (`Deref`), which the host functions get.
pub struct PluginState {
    /// What the capabilities hold for the call.
    pub(crate) caps: CapabilityState,
    pub(crate) limiter: MemoryCap,
    /// The call's own-time budget and what it has used; see [`OwnTime`].
    pub(crate) own_time: OwnTime,
}

impl std::ops::Deref for PluginState {
    type Target = CapabilityState;
    fn deref(&self) -> &CapabilityState {
        &self.caps
    }
}

impl std::ops::DerefMut for PluginState {
    fn deref_mut(&mut self) -> &mut CapabilityState {
        &mut self.caps
    }
}

/// How long a call's own code has run: its wall-clock time less the time
/// spent waiting in host functions the plugin calls (a Docker build, a
/// registry lookup, a `wasi:http` wait). A log line is not a wait: its time
/// is the plugin's. The call's deadline is on this.
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
    /// `charged` says the host function returning did the plugin's own
    /// work (a log line): its time is not given back.
    pub fn switch(&mut self, hook: CallHook, charged: bool) {
        match hook {
            CallHook::CallingHost => {
                self.host_since.get_or_insert_with(Instant::now);
            }
            CallHook::ReturningFromHost => {
                if let Some(since) = self.host_since.take()
                    && !charged
                {
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
        self.caps.ctx()
    }
}

impl WasiHttpView for PluginState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        self.caps.http()
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
