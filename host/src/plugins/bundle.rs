//! The default bundle, embedded in the agent's binary.
//!
//! `host/build.rs` builds the bundle's plugins when the agent is built and
//! embeds their components here, so a `launch-agent` from `cargo build` or
//! `cargo install` runs its default plugins with no plugin dir. A file of
//! the same name in a plugin dir overrides one of them ([`super::catalog`]).
//!
//! The bytes stay in the binary's read-only data: loading a plugin borrows
//! them, and when the precompiled-code cache ([`super::cache`]) has the
//! plugin they are not read at all, since the sha256 the cache is keyed by
//! was computed at build time.

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
}

// `EMBEDDED`: the table `build.rs` wrote.
include!(concat!(env!("OUT_DIR"), "/bundle.rs"));

/// The embedded plugin whose file name is `file`.
pub fn embedded(file: &str) -> Option<&'static EmbeddedPlugin> {
    EMBEDDED.iter().find(|p| p.file == file)
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
}
