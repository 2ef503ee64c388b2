//! The one wasmtime [`Engine`] of the agent: async, component model, epoch
//! interruption (its clock runs only while a call is in flight: see
//! [`super::epoch`]), and the pooling allocator when the address space
//! allows it.
//!
//! Why pooling: a fresh Store and instance per call is what keeps plugin
//! calls independent, and with the pooling allocator instantiation costs
//! well under a microsecond of allocator time instead of several mmaps
//! (wasmtime PR #6981). The pool reserves virtual address space up front;
//! where that reservation fails (a `ulimit -v`, a small address space) the
//! engine falls back to on-demand allocation, as Spin does, and says so.

use super::epoch::EpochClock;
use crate::timeouts::EPOCH_TICK;
use anyhow::Context as _;
use std::sync::Arc;
use wasmtime::Engine;

// `config` and `compatibility_hash`, shared with `host/build.rs`, which
// precompiles the default bundle with this same configuration.
include!("engine_config.rs");

/// How instances are allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allocator {
    /// Slots reserved up front and reused.
    Pooling,
    /// mmap per instance.
    OnDemand,
}

/// The engine, how it allocates, and the clock of its deadlines.
pub struct PluginEngine {
    /// The wasmtime engine.
    pub engine: Engine,
    /// Which allocator the engine got.
    pub allocator: Allocator,
    /// Advances the epoch while calls are in flight (see [`EpochClock`]).
    pub clock: Arc<EpochClock>,
}

impl PluginEngine {
    /// Creates the engine; `max_memory_bytes` is the largest memory cap of
    /// any configured plugin (pool slots must fit it).
    pub fn new(max_memory_bytes: u64) -> anyhow::Result<Self> {
        let pooled = Engine::new(&config(Some(max_memory_bytes)));
        let (engine, allocator) = match pooled {
            Ok(engine) => (engine, Allocator::Pooling),
            Err(error) => {
                tracing::warn!(
                    %error,
                    "cannot reserve the plugin instance pool; using on-demand allocation (slower plugin calls)"
                );
                let engine = Engine::new(&config(None))
                    .map_err(anyhow::Error::from)
                    .context("creating the plugin engine")?;
                (engine, Allocator::OnDemand)
            }
        };
        let clock = EpochClock::start(&engine);
        Ok(PluginEngine {
            engine,
            allocator,
            clock,
        })
    }
}

/// The number of epoch ticks in a deadline, at least one.
pub fn deadline_ticks(deadline: std::time::Duration) -> u64 {
    (deadline.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
}
