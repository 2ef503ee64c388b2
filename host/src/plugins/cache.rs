//! The on-disk cache of precompiled plugins.
//!
//! Compiling a small component takes 50–80 ms; loading its precompiled form
//! takes well under one. Entries are keyed by the component's sha256 and the
//! engine's `precompile_compatibility_hash` (wasmtime version, target and
//! settings), so a new agent or a changed engine never loads stale code.
//!
//! Deserializing precompiled code is `unsafe`: it is machine code that will
//! run. We therefore load only bytes we wrote ourselves, for the component
//! we wrote them for: every entry carries a MAC (sha256 over a per-cache
//! random key, the entry's own key — the component's sha256 and the engine
//! hash — and the bytes), and an entry whose MAC does not match — copied in
//! from elsewhere, tampered with, truncated, or moved under another
//! component's key — is a miss: it is compiled again and rewritten. The key
//! lives in the cache directory with mode 0600 and the directory is 0700.

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The precompiled-plugin cache in one directory.
pub struct CompiledCache {
    dir: PathBuf,
    key: [u8; 32],
    engine_hash: String,
}

/// Where a compiled component came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from the cache.
    Hit,
    /// Compiled now (and written to the cache).
    Compiled,
    /// A bundled plugin's code, precompiled when the agent was built.
    Precompiled,
}

impl CompiledCache {
    /// Opens (creating) the cache in `dir` for `engine`.
    pub fn open(dir: &Path, engine: &Engine) -> anyhow::Result<Self> {
        create_private_dir(dir)?;
        let key = load_or_create_key(&dir.join("cache.key"))?;
        let engine_hash = super::wasm_engine::compatibility_hash(engine);
        Ok(CompiledCache {
            dir: dir.to_path_buf(),
            key,
            engine_hash,
        })
    }

    /// The compatibility hash of the engine the cache serves (see
    /// [`super::wasm_engine::compatibility_hash`]).
    pub fn engine_hash(&self) -> &str {
        &self.engine_hash
    }

    /// Returns the compiled component for `wasm` (whose sha256 is `digest`),
    /// from the cache when a valid entry exists, else compiling and storing it.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        wasm: &[u8],
        digest: &str,
    ) -> anyhow::Result<(Component, CacheOutcome)> {
        let id = format!("{digest}-{}", self.engine_hash);
        let entry = self.dir.join(format!("{id}.cwasm"));
        if let Some(bytes) = self.read_verified(&id, &entry) {
            // SAFETY: `read_verified` returned these bytes only because their
            // MAC matches our private key: we wrote them with `serialize` for
            // an engine with this same compatibility hash.
            match unsafe { Component::deserialize(engine, &bytes) } {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(error) => {
                    tracing::warn!(%error, entry = %entry.display(), "ignoring unusable cache entry")
                }
            }
        }
        let component = Component::new(engine, wasm)?;
        if let Err(error) = self.write(&id, &entry, &component) {
            tracing::warn!(%error, dir = %self.dir.display(), "cannot write the plugin cache; plugins will be compiled at every start");
        }
        Ok((component, CacheOutcome::Compiled))
    }

    /// The MAC of entry `id`'s `bytes`: bound to the cache's key, to the
    /// entry (so bytes moved under another component's key do not verify)
    /// and to the bytes.
    fn mac(&self, id: &str, bytes: &[u8]) -> [u8; 32] {
        let mut mac = Sha256::new();
        mac.update(self.key);
        mac.update((id.len() as u64).to_le_bytes());
        mac.update(id.as_bytes());
        mac.update(bytes);
        mac.update(self.key);
        mac.finalize().into()
    }

    fn read_verified(&self, id: &str, entry: &Path) -> Option<Vec<u8>> {
        let bytes = fs::read(entry).ok()?;
        let stored = fs::read(mac_path(entry)).ok()?;
        (stored.as_slice() == self.mac(id, &bytes).as_slice()).then_some(bytes)
    }

    fn write(&self, id: &str, entry: &Path, component: &Component) -> anyhow::Result<()> {
        let bytes = component.serialize()?;
        write_atomically(&mac_path(entry), &self.mac(id, &bytes))?;
        write_atomically(entry, &bytes)?;
        Ok(())
    }
}

fn mac_path(entry: &Path) -> PathBuf {
    entry.with_extension("cwasm.mac")
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating cache dir {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting cache dir {}", dir.display()))?;
    }
    Ok(())
}

fn load_or_create_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    if let Ok(bytes) = fs::read(path)
        && let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice())
    {
        return Ok(key);
    }
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("creating cache key {}", path.display()))?;
    file.write_all(&key)?;
    Ok(key)
}

/// The lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::bundle::embedded;

    fn entries(dir: &Path, digest: &str) -> (PathBuf, PathBuf) {
        let entry = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name().unwrap().to_string_lossy().starts_with(digest)
                    && p.extension().is_some_and(|e| e == "cwasm")
            })
            .expect("an entry");
        let mac = mac_path(&entry);
        (entry, mac)
    }

    #[test]
    fn entries_swapped_between_keys_are_misses_that_rebuild_not_the_other_plugin() {
        let engine = Engine::default();
        let dir = tempfile::tempdir().unwrap();
        let cache = CompiledCache::open(dir.path(), &engine).unwrap();
        let a = embedded("builder-noop.wasm").unwrap();
        let b = embedded("environment-local.wasm").unwrap();
        for p in [a, b] {
            let (_, outcome) = cache.load_or_compile(&engine, p.wasm, p.sha256).unwrap();
            assert_eq!(outcome, CacheOutcome::Compiled);
            let (_, outcome) = cache.load_or_compile(&engine, p.wasm, p.sha256).unwrap();
            assert_eq!(outcome, CacheOutcome::Hit);
        }
        // Swap the two entries, MACs and all.
        let (a_entry, a_mac) = entries(dir.path(), a.sha256);
        let (b_entry, b_mac) = entries(dir.path(), b.sha256);
        let tmp = dir.path().join("swap");
        for (x, y) in [(&a_entry, &b_entry), (&a_mac, &b_mac)] {
            fs::rename(x, &tmp).unwrap();
            fs::rename(y, x).unwrap();
            fs::rename(&tmp, y).unwrap();
        }
        let cache = CompiledCache::open(dir.path(), &engine).unwrap();
        for p in [a, b] {
            let (component, outcome) = cache.load_or_compile(&engine, p.wasm, p.sha256).unwrap();
            assert_eq!(
                outcome,
                CacheOutcome::Compiled,
                "{} loaded another's code",
                p.file
            );
            // What was compiled is this plugin: its exports are its kind's.
            let exports: Vec<String> = component
                .component_type()
                .exports(&engine)
                .map(|(name, _)| name.to_string())
                .collect();
            let wanted = if p.file.starts_with("builder") {
                "builder"
            } else {
                "environment"
            };
            assert!(
                exports.iter().any(|e| e.contains(wanted)),
                "{}: {exports:?}",
                p.file
            );
            // And the rebuilt entry is a hit again.
            let (_, outcome) = cache.load_or_compile(&engine, p.wasm, p.sha256).unwrap();
            assert_eq!(outcome, CacheOutcome::Hit);
        }
    }

    #[test]
    fn a_tampered_entry_is_a_miss() {
        let engine = Engine::default();
        let dir = tempfile::tempdir().unwrap();
        let cache = CompiledCache::open(dir.path(), &engine).unwrap();
        let a = embedded("builder-noop.wasm").unwrap();
        cache.load_or_compile(&engine, a.wasm, a.sha256).unwrap();
        let (entry, _) = entries(dir.path(), a.sha256);
        let mut bytes = fs::read(&entry).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&entry, bytes).unwrap();
        let (_, outcome) = cache.load_or_compile(&engine, a.wasm, a.sha256).unwrap();
        assert_eq!(outcome, CacheOutcome::Compiled);
    }
}
