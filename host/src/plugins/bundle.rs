//! The default bundle, embedded in the agent's binary.
//!
//! `host/build.rs` builds the bundle's plugins when the agent is built and
//! embeds their components here, so a `launch-agent` from `cargo build` or
//! `cargo install` runs its default plugins with no plugin dir. A file of
//! the same name in a plugin dir overrides one of them ([`super::catalog`]).
//!
//! The bytes stay in the binary's read-only data: loading a plugin borrows
//! them. Each plugin also comes precompiled for the agent's engine
//! (`host/build.rs`), so a fresh state dir loads the bundle without
//! compiling: the precompiled code is used when the running engine's
//! compatibility hash is the one it was compiled for, and otherwise the
//! on-disk cache ([`super::cache`]) or the compiler serves, as for any
//! plugin. On a cache hit the component bytes are not read at all, since
//! the sha256 the cache is keyed by was computed at build time.

/// One plugin of the default bundle, as this build embeds it.
#[derive(Debug)]
pub struct EmbeddedPlugin {
    /// Its file name in a plugin dir (`builder-noop.wasm`), as
    /// [`super::catalog::BUNDLE`] names it.
    pub file: &'static str,
    /// The component.
    pub wasm: &'static [u8],
    /// sha256 of `wasm`, lowercase hex, computed when the agent was built.
    pub sha256: &'static str,
    /// `wasm` compiled to machine code when the agent was built, by an
    /// engine configured as the agent's (its hash is [`PRECOMPILED_FOR`]).
    pub precompiled: Option<&'static [u8]>,
}

use wasmtime::Engine;
use wasmtime::component::Component;

// `PRECOMPILED_FOR` and `EMBEDDED`: the table `build.rs` wrote.
include!(concat!(env!("OUT_DIR"), "/bundle.rs"));

/// The embedded plugin whose file name is `file`.
pub fn embedded(file: &str) -> Option<&'static EmbeddedPlugin> {
    EMBEDDED.iter().find(|p| p.file == file)
}

impl EmbeddedPlugin {
    /// The plugin's precompiled component for `engine`, when the build
    /// precompiled it for an engine with the same compatibility hash
    /// (`engine_hash`, from [`super::wasm_engine::compatibility_hash`]);
    /// `None` means compile it (another CPU, a cross build, a changed
    /// engine).
    pub fn precompiled_for(&self, engine: &Engine, engine_hash: &str) -> Option<Component> {
        let code = self.precompiled?;
        if PRECOMPILED_FOR != Some(engine_hash) {
            return None;
        }
        // SAFETY: the bytes are part of this binary, written by its build
        // script with `Engine::precompile_component` for an engine whose
        // compatibility hash is this engine's; wasmtime checks its own
        // header again and refuses code for another engine.
        match unsafe { Component::deserialize(engine, code) } {
            Ok(component) => Some(component),
            Err(error) => {
                tracing::warn!(plugin = self.file, %error, "cannot load the precompiled bundled plugin; compiling it");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::catalog::BUNDLE;

    #[test]
    fn every_bundled_plugin_is_embedded_and_nothing_else() {
        let mut catalog: Vec<&str> = BUNDLE.iter().map(|(_, _, file)| *file).collect();
        let mut embedded: Vec<&str> = EMBEDDED.iter().map(|p| p.file).collect();
        catalog.sort();
        embedded.sort();
        assert_eq!(catalog, embedded);
    }

    #[test]
    fn the_digest_computed_at_build_time_is_the_embedded_bytes_digest() {
        for plugin in EMBEDDED {
            assert!(
                plugin.wasm.starts_with(b"\0asm"),
                "{} is not WebAssembly",
                plugin.file
            );
            assert_eq!(
                crate::plugins::cache::sha256_hex(plugin.wasm),
                plugin.sha256,
                "{}",
                plugin.file
            );
        }
    }

    /// The agent's engine on this machine, pooled or not, is the engine the
    /// build precompiled for: a fresh state dir compiles nothing.
    #[test]
    fn the_build_precompiled_the_bundle_for_this_agents_engine() {
        use crate::plugins::wasm_engine::{PluginEngine, compatibility_hash, config};
        let agent = PluginEngine::new(64 * 1024 * 1024).unwrap();
        let hash = compatibility_hash(&agent.engine);
        assert_eq!(PRECOMPILED_FOR, Some(hash.as_str()));
        let on_demand = Engine::new(&config(None)).unwrap();
        assert_eq!(compatibility_hash(&on_demand), hash);
        for plugin in EMBEDDED {
            assert!(
                plugin.precompiled_for(&agent.engine, &hash).is_some(),
                "{} has no usable precompiled code",
                plugin.file
            );
        }
    }

    /// Precompiled code made for another engine is not used: the caller
    /// compiles instead.
    #[test]
    fn precompiled_code_for_another_engine_is_not_used() {
        let mut other = wasmtime::Config::new();
        other.wasm_component_model(true);
        let other = Engine::new(&other).unwrap();
        let other_hash = crate::plugins::wasm_engine::compatibility_hash(&other);
        assert_ne!(PRECOMPILED_FOR, Some(other_hash.as_str()));
        for plugin in EMBEDDED {
            assert!(plugin.precompiled_for(&other, &other_hash).is_none());
        }
    }
}
