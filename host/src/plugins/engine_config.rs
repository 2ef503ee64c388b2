// The wasmtime configuration of the agent's engine, and the hash that says
// whether precompiled code fits an engine.
//
// This file is `include!`d twice: by `src/plugins/wasm_engine.rs`, which
// creates the agent's engine, and by `build.rs`, which precompiles the
// default bundle for that same configuration. One text for both means the
// precompiled code is made with the settings it will be loaded with; the
// compatibility hash checked at load time catches what still differs (the
// CPU's features, a wasmtime upgrade, a cross build). It is a plain file,
// not a module, so it has no inner doc comment and names everything it uses
// in full.

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

/// The engine configuration; `pool_memory_bytes` is the largest linear
/// memory a pool slot must hold, or `None` for on-demand allocation. The
/// compiled code does not depend on the allocator: both give the same
/// [`compatibility_hash`].
pub fn config(pool_memory_bytes: Option<u64>) -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
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
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_INSTANCES);
        pool.total_core_instances(POOL_INSTANCES * 8);
        pool.total_memories(POOL_INSTANCES * 2);
        pool.total_tables(POOL_INSTANCES * 8);
        pool.max_memory_size(usize::try_from(max_memory).unwrap_or(usize::MAX));
        // Reset memories in place instead of madvise + page faults on the
        // next call; and decommit freed slots in batches, one TLB flush per
        // batch.
        if wasmtime::PoolingAllocationConfig::is_pagemap_scan_available() {
            pool.pagemap_scan(wasmtime::Enabled::Yes);
            pool.linear_memory_keep_resident(KEEP_RESIDENT_SCANNED);
        } else {
            pool.linear_memory_keep_resident(KEEP_RESIDENT_UNSCANNED);
        }
        pool.table_keep_resident(TABLE_KEEP_RESIDENT);
        pool.decommit_batch_size(DECOMMIT_BATCH);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// A short hex digest of `engine`'s `precompile_compatibility_hash`
/// (wasmtime's version, the target and its CPU features, the compiler
/// settings and tunables): code precompiled by an engine loads into another
/// only when their digests are equal.
pub fn compatibility_hash(engine: &wasmtime::Engine) -> String {
    use sha2::Digest as _;
    use std::hash::Hash as _;
    /// A `Hasher` over sha256, so the digest is the same in every process.
    struct Sha256Hasher(sha2::Sha256);
    impl std::hash::Hasher for Sha256Hasher {
        fn finish(&self) -> u64 {
            0 // unused: the digest is `finalize`d
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut hasher = Sha256Hasher(sha2::Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.0.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
