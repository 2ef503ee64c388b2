//! The build context: a tar of the job's source plus the Dockerfile,
//! produced on a blocking thread and streamed to the engine in chunks as it
//! is written, so the context is never held in memory (at most a few chunks
//! are in flight).
//!
//! What goes in:
//! - every regular file, directory and symlink under the source, with its
//!   permission bits and mtime, owned by root (as `docker build` sends it);
//! - symlinks as symlinks: none is ever followed (files are opened with
//!   `O_NOFOLLOW`), so nothing outside the source is read; the engine
//!   resolves links inside the context only;
//! - not `.git` (a directory or a submodule's file, at any depth), nor
//!   sockets, FIFOs or devices;
//! - not what the source's top-level `.dockerignore` excludes (see
//!   [`DockerIgnore`]);
//! - the Dockerfile under [`CONTEXT_DOCKERFILE`], a name the source's own
//!   files cannot take (a source file of that name is left out).

use bytes::Bytes;
use std::fs::{File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

/// The name of the Dockerfile in the context (the `dockerfile` build option).
pub const CONTEXT_DOCKERFILE: &str = ".launch-agent.Dockerfile";

/// Size of the chunks sent to the engine.
const CHUNK: usize = 64 * 1024;

/// Chunks in flight between the tar thread and the request body.
const CHUNKS_IN_FLIGHT: usize = 4;

/// One item of the context stream: a chunk, or the error that ends it.
pub type ContextChunk = Result<Bytes, io::Error>;

/// Starts writing the context of `source` (none: an empty context) and
/// `dockerfile` on a blocking thread. Returns the receiving end of the
/// chunks and the thread, which ends with the first error (the error is
/// also sent down the channel, failing the request body).
pub fn spawn(
    source: Option<PathBuf>,
    dockerfile: String,
) -> (
    mpsc::Receiver<ContextChunk>,
    tokio::task::JoinHandle<io::Result<()>>,
) {
    spawn_with(source, dockerfile, |writer, source, dockerfile| {
        write_context(writer, source, dockerfile)?.flush()
    })
}

/// As [`spawn`], but the chunks are the context gzipped (a `.tar.gz`, as
/// Kaniko reads a context from object storage or a `tar://` path): for
/// the blob capability's uploads.
pub fn spawn_gzipped(
    source: Option<PathBuf>,
    dockerfile: String,
) -> (
    mpsc::Receiver<ContextChunk>,
    tokio::task::JoinHandle<io::Result<()>>,
) {
    spawn_with(source, dockerfile, |writer, source, dockerfile| {
        let gz = flate2::write::GzEncoder::new(writer, flate2::Compression::fast());
        write_context(gz, source, dockerfile)?.finish()?.flush()
    })
}

/// Runs `write` on a blocking thread with a [`ChunkWriter`] feeding the
/// returned channel.
fn spawn_with(
    source: Option<PathBuf>,
    dockerfile: String,
    write: impl FnOnce(ChunkWriter, Option<&Path>, &str) -> io::Result<()> + Send + 'static,
) -> (
    mpsc::Receiver<ContextChunk>,
    tokio::task::JoinHandle<io::Result<()>>,
) {
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let producer = tokio::task::spawn_blocking(move || {
        let writer = ChunkWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let result = write(writer, source.as_deref(), &dockerfile);
        if let Err(e) = &result
            && e.kind() != io::ErrorKind::BrokenPipe
        {
            let _ = tx.blocking_send(Err(io::Error::new(e.kind(), e.to_string())));
        }
        result
    });
    (rx, producer)
}

/// Writes the whole tar to `writer`, and returns it.
fn write_context<W: Write>(writer: W, source: Option<&Path>, dockerfile: &str) -> io::Result<W> {
    let mut tar = tar::Builder::new(writer);
    tar.follow_symlinks(false);
    if let Some(root) = source {
        let meta = std::fs::symlink_metadata(root)
            .map_err(|e| annotate(e, "reading the job's source", root))?;
        if !meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the job's source {} is not a directory", root.display()),
            ));
        }
        let ignore = DockerIgnore::load(root)?;
        add_dir(&mut tar, root, Path::new(""), &ignore)?;
    }
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(dockerfile.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    tar.append_data(&mut header, CONTEXT_DOCKERFILE, dockerfile.as_bytes())?;
    tar.into_inner()
}

/// Adds the entries of `root/rel` (a directory), sorted by name, recursively.
fn add_dir<W: Write>(
    tar: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
    ignore: &DockerIgnore,
) -> io::Result<()> {
    let dir = root.join(rel);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| annotate(e, "listing", &dir))?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .map_err(|e| annotate(e, "listing", &dir))?;
    names.sort();
    for name in names {
        if name == ".git" || (rel.as_os_str().is_empty() && name == CONTEXT_DOCKERFILE) {
            continue;
        }
        let rel_path = rel.join(&name);
        let path = root.join(&rel_path);
        let meta = std::fs::symlink_metadata(&path).map_err(|e| annotate(e, "reading", &path))?;
        let excluded = ignore.excludes(&rel_path);
        if meta.is_dir() {
            if excluded && !ignore.has_exceptions() {
                continue;
            }
            if !excluded {
                let mut header = header_for(&meta, tar::EntryType::Directory);
                header.set_size(0);
                tar.append_data(&mut header, &rel_path, io::empty())?;
            }
            add_dir(tar, root, &rel_path, ignore)?;
        } else if excluded {
            continue;
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).map_err(|e| annotate(e, "reading", &path))?;
            let mut header = header_for(&meta, tar::EntryType::Symlink);
            header.set_size(0);
            tar.append_link(&mut header, &rel_path, &target)?;
        } else if meta.is_file() {
            let file = File::options()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(|e| annotate(e, "opening", &path))?;
            let mut header = header_for(&meta, tar::EntryType::Regular);
            header.set_size(meta.len());
            let reader = ExactReader {
                inner: file,
                left: meta.len(),
                path: &path,
            };
            tar.append_data(&mut header, &rel_path, reader)?;
        }
        // Sockets, FIFOs and devices are not part of a build context.
    }
    Ok(())
}

/// A header with `meta`'s permission bits and mtime, owned by root.
fn header_for(meta: &Metadata, kind: tar::EntryType) -> tar::Header {
    use std::os::unix::fs::MetadataExt;
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(meta.mode() & 0o7777);
    header.set_mtime(meta.mtime().max(0) as u64);
    header.set_uid(0);
    header.set_gid(0);
    header
}

/// `e` with what was being done to which path.
fn annotate(e: io::Error, doing: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{doing} {}: {e}", path.display()))
}

/// Reads exactly `left` bytes of a file (its size when it was listed), so a
/// file that changes while it is sent cannot corrupt the archive.
struct ExactReader<'a> {
    inner: File,
    left: u64,
    path: &'a Path,
}

impl Read for ExactReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let max = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} shrank while it was sent", self.path.display()),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Sends what is written, in chunks, down the channel to the request body.
struct ChunkWriter {
    tx: mpsc::Sender<ContextChunk>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx.blocking_send(Ok(Bytes::from(chunk))).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the engine stopped reading the build context",
            )
        })
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// The patterns of a `.dockerignore`, with Docker's meaning: one pattern a
/// line, `#` comments, a leading `!` re-includes; a pattern matches a path
/// or any of its parent directories; the last matching pattern wins.
/// Components match as Go's `filepath.Match` (`*`, `?`, `[...]`, `\`
/// escapes); a `**` component matches any number of directories.
/// Limitation: `**` inside a component (`foo**`) acts as `*`.
#[derive(Debug, Default)]
pub struct DockerIgnore {
    patterns: Vec<(Vec<String>, bool)>,
}

impl DockerIgnore {
    /// Reads `root/.dockerignore` (none: nothing is excluded).
    pub fn load(root: &Path) -> io::Result<Self> {
        let path = root.join(".dockerignore");
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(annotate(e, "reading", &path)),
        };
        if !meta.is_file() {
            return Ok(Self::default());
        }
        let text = std::fs::read_to_string(&path).map_err(|e| annotate(e, "reading", &path))?;
        Ok(Self::parse(&text))
    }

    /// Parses the text of a `.dockerignore`.
    pub fn parse(text: &str) -> Self {
        let patterns = text
            .lines()
            .filter_map(|line| {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    return None;
                }
                let (negated, pattern) = match line.strip_prefix('!') {
                    Some(rest) => (true, rest.trim()),
                    None => (false, line),
                };
                let components: Vec<String> = pattern
                    .split('/')
                    .filter(|c| !c.is_empty() && *c != ".")
                    .map(str::to_string)
                    .collect();
                (!components.is_empty()).then_some((components, negated))
            })
            .collect();
        DockerIgnore { patterns }
    }

    /// Whether any pattern re-includes (`!`), so an excluded directory must
    /// still be walked.
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|(_, negated)| *negated)
    }

    /// Whether `rel` (relative to the source) is left out of the context.
    pub fn excludes(&self, rel: &Path) -> bool {
        let components: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let mut excluded = false;
        for (pattern, negated) in &self.patterns {
            let matched =
                (1..=components.len()).any(|n| match_components(pattern, &components[..n]));
            if matched {
                excluded = !negated;
            }
        }
        excluded
    }
}

/// Whether the pattern components match the path components exactly.
fn match_components(pattern: &[String], path: &[String]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| match_components(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((name, path_rest)) => {
                let p: Vec<char> = first.chars().collect();
                let n: Vec<char> = name.chars().collect();
                glob_match(&p, &n) && match_components(rest, path_rest)
            }
            None => false,
        },
    }
}

/// Go's `filepath.Match` on one component: `*`, `?`, `[...]` (with `^`/`!`
/// negation and ranges) and `\` escapes.
fn glob_match(pattern: &[char], name: &[char]) -> bool {
    match pattern.first() {
        None => name.is_empty(),
        Some('*') => {
            let rest = &pattern[1..];
            (0..=name.len()).any(|skip| glob_match(rest, &name[skip..]))
        }
        Some('?') => !name.is_empty() && glob_match(&pattern[1..], &name[1..]),
        Some('[') => {
            let Some((&c, name_rest)) = name.split_first() else {
                return false;
            };
            let mut i = 1;
            let negate = matches!(pattern.get(i), Some('^') | Some('!'));
            if negate {
                i += 1;
            }
            let mut matched = false;
            let mut first = true;
            loop {
                let Some(&lo) = pattern.get(i) else {
                    return false; // unterminated class: matches nothing
                };
                if lo == ']' && !first {
                    i += 1;
                    break;
                }
                first = false;
                let (lo, next) = if lo == '\\' {
                    match pattern.get(i + 1) {
                        Some(&e) => (e, i + 2),
                        None => return false,
                    }
                } else {
                    (lo, i + 1)
                };
                i = next;
                let hi = if pattern.get(i) == Some(&'-') && pattern.get(i + 1) != Some(&']') {
                    let Some(&hi) = pattern.get(i + 1) else {
                        return false;
                    };
                    i += 2;
                    hi
                } else {
                    lo
                };
                if lo <= c && c <= hi {
                    matched = true;
                }
            }
            matched != negate && glob_match(&pattern[i..], name_rest)
        }
        Some('\\') if pattern.len() > 1 => {
            name.first() == Some(&pattern[1]) && glob_match(&pattern[2..], &name[1..])
        }
        Some(&p) => name.first() == Some(&p) && glob_match(&pattern[1..], &name[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_follows_docker_rules() {
        let ignore = DockerIgnore::parse(
            "# comment\n*.log\nbuild\n!build/keep.txt\n**/secret-*\n/docs/[a-c]*.md\n",
        );
        assert!(ignore.excludes(Path::new("x.log")));
        assert!(!ignore.excludes(Path::new("sub/x.log")));
        assert!(ignore.excludes(Path::new("build")));
        assert!(ignore.excludes(Path::new("build/out.bin")));
        assert!(!ignore.excludes(Path::new("build/keep.txt")));
        assert!(ignore.excludes(Path::new("a/b/secret-key")));
        assert!(ignore.excludes(Path::new("secret-key")));
        assert!(ignore.excludes(Path::new("docs/api.md")));
        assert!(!ignore.excludes(Path::new("docs/zeta.md")));
        assert!(!ignore.excludes(Path::new("main.py")));
        assert!(ignore.has_exceptions());
    }

    #[test]
    fn glob_classes_and_escapes() {
        let m = |p: &str, n: &str| {
            glob_match(
                &p.chars().collect::<Vec<_>>(),
                &n.chars().collect::<Vec<_>>(),
            )
        };
        assert!(m("[!a]x", "bx"));
        assert!(!m("[^a]x", "ax"));
        assert!(m("\\*", "*"));
        assert!(!m("\\*", "a"));
        assert!(m("a?c", "abc"));
        assert!(m("*.py", "main.py"));
        assert!(!m("[a-", "a"));
    }
}
