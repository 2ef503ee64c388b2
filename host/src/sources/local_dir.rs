//! A local code directory (`uri` in the launch spec): used where it is,
//! read-only, and identified by a hash of its files so that editing the
//! code changes the image tag.
//!
//! Hashing reads the directory with bounds, since a job names it and the
//! agent must not hang or fill memory on it: only regular files,
//! directories and symlinks (a FIFO, socket or device is refused before it
//! is opened, and files are opened without blocking and checked again once
//! open), at most [`MAX_SOURCE_BYTES`] in [`MAX_SOURCE_FILES`] files,
//! within [`SOURCE_READ_TIMEOUT`]; a hash whose job was stopped ends at its
//! next read.

use super::{MAX_SOURCE_BYTES, MAX_SOURCE_FILES, Source};
use crate::timeouts::SOURCE_READ_TIMEOUT;
use anyhow::Context as _;
use sha2::{Digest, Sha256};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// The source of code directory `dir`: `dir:<path>@<sha256 of its files>`.
pub async fn source(dir: &Path) -> anyhow::Result<Source> {
    let dir = dir.to_path_buf();
    check_dir(&dir)?;
    let cancel = Arc::new(AtomicBool::new(false));
    // Dropping this future (the job was stopped) ends the hashing too.
    let _stop_on_drop = StopOnDrop(cancel.clone());
    let digest = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || {
            let limits = Limits {
                deadline: Instant::now() + SOURCE_READ_TIMEOUT,
                max_bytes: MAX_SOURCE_BYTES,
                max_files: MAX_SOURCE_FILES,
                cancel,
            };
            hash_dir_within(&dir, &limits)
        }
    })
    .await??;
    Ok(Source {
        id: format!("dir:{}@{digest}", dir.display()),
        dir: Some(dir),
    })
}

/// Errs unless `dir` is a directory (checked without opening it, so a FIFO
/// cannot block).
pub fn check_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(meta) => anyhow::bail!(
            "`uri` {} is {}, not a directory: give the directory with the job's code",
            dir.display(),
            kind_of(&meta.file_type())
        ),
        Err(error) => anyhow::bail!(
            "`uri` {} is not a directory on this machine: {error}",
            dir.display()
        ),
    }
}

/// Sets a flag when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// How far hashing may go.
struct Limits {
    deadline: Instant,
    max_bytes: u64,
    max_files: usize,
    cancel: Arc<AtomicBool>,
}

impl Limits {
    /// Errs once the time is up or the job was stopped.
    fn check(&self, dir: &Path) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.cancel.load(Ordering::Relaxed),
            "reading {} was stopped",
            dir.display()
        );
        anyhow::ensure!(
            Instant::now() < self.deadline,
            "reading {} took more than {SOURCE_READ_TIMEOUT:?}",
            dir.display()
        );
        Ok(())
    }
}

/// sha256 over the sorted relative paths and contents of a directory's
/// files (`.git` skipped; symlinks are hashed by their target text), with
/// the default bounds (see the module doc).
pub fn hash_dir(dir: &Path) -> anyhow::Result<String> {
    hash_dir_within(
        dir,
        &Limits {
            deadline: Instant::now() + SOURCE_READ_TIMEOUT,
            max_bytes: MAX_SOURCE_BYTES,
            max_files: MAX_SOURCE_FILES,
            cancel: Arc::new(AtomicBool::new(false)),
        },
    )
}

fn hash_dir_within(dir: &Path, limits: &Limits) -> anyhow::Result<String> {
    let mut files = collect(dir, limits)?;
    files.sort();
    let mut hasher = Sha256::new();
    let mut total: u64 = 0;
    let mut buf = vec![0u8; 64 * 1024];
    for rel in files {
        limits.check(dir)?;
        let path = dir.join(&rel);
        hasher.update(rel.to_string_lossy().as_bytes());
        hasher.update([0]);
        let meta = std::fs::symlink_metadata(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        if meta.file_type().is_symlink() {
            hasher.update(std::fs::read_link(&path)?.to_string_lossy().as_bytes());
        } else {
            let mut file = open_regular(&path)?;
            loop {
                limits.check(dir)?;
                let n = file
                    .read(&mut buf)
                    .with_context(|| format!("reading {}", path.display()))?;
                if n == 0 {
                    break;
                }
                total += n as u64;
                anyhow::ensure!(
                    total <= limits.max_bytes,
                    "{} holds more than {} bytes of files: too large for a job's source",
                    dir.display(),
                    limits.max_bytes
                );
                hasher.update(&buf[..n]);
            }
        }
        hasher.update([0]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Opens `path` for reading only if it is a regular file: without
/// following a symlink and without blocking (a FIFO put in its place after
/// the listing still cannot hang the reader), then checked again.
fn open_regular(path: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let kind = file.metadata()?.file_type();
    anyhow::ensure!(
        kind.is_file(),
        "{} is {}: a job's source may hold only regular files, directories and symlinks",
        path.display(),
        kind_of(&kind)
    );
    Ok(file)
}

/// Every file and symlink under `root`, relative to it (`.git` skipped);
/// special files are refused.
fn collect(root: &Path, limits: &Limits) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        limits.check(root)?;
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
        {
            let entry = entry?;
            let path = entry.path();
            if entry.file_name() == ".git" {
                continue;
            }
            let kind = entry.file_type()?;
            if kind.is_dir() {
                dirs.push(path);
            } else if kind.is_file() || kind.is_symlink() {
                out.push(path.strip_prefix(root)?.to_path_buf());
                anyhow::ensure!(
                    out.len() <= limits.max_files,
                    "{} holds more than {} files: too many for a job's source",
                    root.display(),
                    limits.max_files
                );
            } else {
                anyhow::bail!(
                    "{} is {}: a job's source may hold only regular files, directories and symlinks",
                    path.display(),
                    kind_of(&kind)
                );
            }
        }
    }
    Ok(out)
}

/// What kind of file this is, in words.
fn kind_of(kind: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_symlink() {
        "a symlink"
    } else if kind.is_file() {
        "a regular file"
    } else if kind.is_dir() {
        "a directory"
    } else {
        "a special file"
    }
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

    fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string; mkfifo touches no memory of ours.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn special_files_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("train.py"), "print(1)").unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        mkfifo(&dir.path().join("data").join("pipe"));
        let error = hash_dir(dir.path()).unwrap_err().to_string();
        assert!(error.contains("pipe") && error.contains("FIFO"), "{error}");
        let error = open_regular(&dir.path().join("data").join("pipe"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("FIFO"), "{error}");
        let fifo = dir.path().join("data").join("pipe");
        let error = check_dir(&fifo).unwrap_err().to_string();
        assert!(
            error.contains("FIFO") && error.contains("not a directory"),
            "{error}"
        );
    }

    #[test]
    fn sources_over_their_bounds_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..3 {
            std::fs::write(dir.path().join(format!("f{i}")), "0123456789").unwrap();
        }
        let limits = |max_bytes, max_files| Limits {
            deadline: Instant::now() + SOURCE_READ_TIMEOUT,
            max_bytes,
            max_files,
            cancel: Arc::new(AtomicBool::new(false)),
        };
        assert!(hash_dir_within(dir.path(), &limits(30, 3)).is_ok());
        let error = hash_dir_within(dir.path(), &limits(25, 3)).unwrap_err();
        assert!(error.to_string().contains("more than 25 bytes"), "{error}");
        let error = hash_dir_within(dir.path(), &limits(30, 2)).unwrap_err();
        assert!(error.to_string().contains("more than 2 files"), "{error}");
        let stopped = limits(30, 3);
        stopped.cancel.store(true, Ordering::Relaxed);
        let error = hash_dir_within(dir.path(), &stopped).unwrap_err();
        assert!(error.to_string().contains("stopped"), "{error}");
    }
}
