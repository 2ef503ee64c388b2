//! A local code directory (`uri` in the launch spec): used where it is,
//! read-only, and identified by a hash of its files so that editing the
//! code changes the image tag.

use super::Source;
use anyhow::Context as _;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The source of code directory `dir`: `dir:<path>@<sha256 of its files>`.
pub async fn source(dir: &Path) -> anyhow::Result<Source> {
    let dir = dir.to_path_buf();
    anyhow::ensure!(
        dir.is_dir(),
        "`uri` {} is not a directory on this machine",
        dir.display()
    );
    let digest = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || hash_dir(&dir)
    })
    .await??;
    Ok(Source {
        id: format!("dir:{}@{digest}", dir.display()),
        dir: Some(dir),
    })
}

/// sha256 over the sorted relative paths and contents of a directory's
/// files (`.git` skipped; symlinks are hashed by their target text).
pub fn hash_dir(dir: &Path) -> anyhow::Result<String> {
    let mut files = Vec::new();
    collect(dir, dir, &mut files)?;
    files.sort();
    let mut hasher = Sha256::new();
    for rel in files {
        let path = dir.join(&rel);
        hasher.update(rel.to_string_lossy().as_bytes());
        hasher.update([0]);
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            hasher.update(std::fs::read_link(&path)?.to_string_lossy().as_bytes());
        } else {
            let mut file = std::fs::File::open(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            std::io::copy(&mut file, &mut hasher)?;
        }
        hasher.update([0]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_name() == ".git" {
            continue;
        }
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect(root, &path, out)?;
        } else {
            out.push(path.strip_prefix(root)?.to_path_buf());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_hash_follows_its_content() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("train.py"), "print(1)").unwrap();
        let first = hash_dir(dir.path()).unwrap();
        assert_eq!(first, hash_dir(dir.path()).unwrap());
        std::fs::write(dir.path().join("train.py"), "print(2)").unwrap();
        assert_ne!(first, hash_dir(dir.path()).unwrap());
    }
}
