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
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Concurrent plugin instances the pool holds.
const POOL_INSTANCES: u32 = 64;

/// Bytes of each pooled linear memory kept resident between calls when the
/// kernel can report which pages a call dirtied (`PAGEMAP_SCAN`, Linux 6.7
/// and later): only those pages are reset, in place, so the next call takes
/// no page faults on them.
const KEEP_RESIDENT_SCANNED: usize = 1024 * 1024;

/// The same without `PAGEMAP_SCAN`: the whole region is reset with `memset`
/// whether dirtied or not, so it is kept small. The bundled plugins are
/// linked with a 128 KiB stack (`.cargo/config.toml`), so a call's stack,
/// data and first heap pages fall inside this.
const KEEP_RESIDENT_UNSCANNED: usize = 256 * 1024;

/// Bytes of each pooled table kept resident (and reset in place) between
/// calls.
const TABLE_KEEP_RESIDENT: usize = 64 * 1024;

/// Freed pool slots decommitted at once.
const DECOMMIT_BATCH: usize = 32;

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

fn config(pool_memory_bytes: Option<u64>) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    // Plugin calls are synchronous (WASI 0.2): without the component model's
    // concurrency support a Store sets up no task machinery, which is most
    // of the cost of a call into a fresh instance.
    config.concurrency_support(false);
    // A trap keeps a core dump naming the Store's memories, where a lean
    // plugin leaves its panic message (see `panic_record`). It costs nothing
    // until a call traps.
    config.coredump_on_trap(true);
    if let Some(max_memory) = pool_memory_bytes {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_INSTANCES);
        pool.total_core_instances(POOL_INSTANCES * 8);
        pool.total_memories(POOL_INSTANCES * 2);
        pool.total_tables(POOL_INSTANCES * 8);
        pool.max_memory_size(usize::try_from(max_memory).unwrap_or(usize::MAX));
        // Reset memories in place instead of madvise + page faults on the
        // next call; and decommit freed slots in batches, one TLB flush per
        // batch.
        if PoolingAllocationConfig::is_pagemap_scan_available() {
            pool.pagemap_scan(Enabled::Yes);
            pool.linear_memory_keep_resident(KEEP_RESIDENT_SCANNED);
        } else {
            pool.linear_memory_keep_resident(KEEP_RESIDENT_UNSCANNED);
        }
        pool.table_keep_resident(TABLE_KEEP_RESIDENT);
        pool.decommit_batch_size(DECOMMIT_BATCH);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// The number of epoch ticks in a deadline, at least one.
pub fn deadline_ticks(deadline: std::time::Duration) -> u64 {
    (deadline.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
}
