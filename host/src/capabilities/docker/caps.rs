//! What one plugin call may make the engine do and the host keep through
//! `launch:plugin/docker`: each build leaves an image on the engine's disk
//! and each tag a name, each push holds a stream, and a build's output goes
//! to the job's log. Without caps a builder in a loop could fill the
//! engine's disk, its image names or the job's log within one call.
//!
//! | what | cap per call | past the cap |
//! |---|---|---|
//! | builds | [`MAX_BUILDS`] | `denied` error naming the cap |
//! | tags of one build | [`MAX_TAGS`] | `denied` error naming the cap |
//! | build arguments of one build | [`MAX_BUILD_ARGS`], [`MAX_BUILD_ARG_BYTES`] bytes in all | `denied` error naming the cap |
//! | pushes | [`MAX_PUSHES`] | `denied` error naming the cap |
//! | `image-exists` lookups | [`MAX_LOOKUPS`] | `denied` error naming the cap |
//! | engine output lines to the job's log (builds and pushes) | [`MAX_ENGINE_LINES`] lines, [`MAX_ENGINE_BYTES`] bytes | dropped (still read from the engine); one line says so |
//!
//! A build's Dockerfile is at most
//! [`MAX_DOCKERFILE`](super::dockerfile::MAX_DOCKERFILE) bytes; a build's
//! proxy holds at most [`MAX_CONNECTIONS`](super::build_proxy::MAX_CONNECTIONS)
//! connections. One call runs one engine operation at a time (a host call
//! blocks the plugin), so no more streams than that are ever open.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The most builds one call may run.
pub const MAX_BUILDS: u32 = 8;
/// The most tags one build may write.
pub const MAX_TAGS: usize = 16;
/// The most build arguments one build may pass.
pub const MAX_BUILD_ARGS: usize = 256;
/// The most bytes of build argument names and values one build may pass.
pub const MAX_BUILD_ARG_BYTES: usize = 256 * 1024;
/// The most pushes one call may run.
pub const MAX_PUSHES: u32 = 8;
/// The most `image-exists` lookups one call may make.
pub const MAX_LOOKUPS: u32 = 1024;
/// The most engine output lines one call writes to the job's log.
pub const MAX_ENGINE_LINES: u64 = 200_000;
/// The most bytes of engine output one call writes to the job's log.
pub const MAX_ENGINE_BYTES: u64 = 32 * 1024 * 1024;

/// What one call has asked of the engine so far.
#[derive(Debug, Default)]
pub struct DockerUse {
    /// Builds run.
    pub builds: u32,
    /// Pushes run.
    pub pushes: u32,
    /// Lookups made.
    pub lookups: u32,
    /// Engine output written to the job's log, shared with the log
    /// function of each operation.
    pub output: Arc<EngineOutput>,
}

/// Engine output written for one call, against [`MAX_ENGINE_LINES`] and
/// [`MAX_ENGINE_BYTES`].
#[derive(Debug, Default)]
pub struct EngineOutput {
    lines: AtomicU64,
    bytes: AtomicU64,
}

/// What an engine output line may do under the caps.
#[derive(Debug, PartialEq, Eq)]
pub enum OutputVerdict {
    /// Write it.
    Write,
    /// Write this notice instead (the first line past the cap).
    Notice(String),
    /// Drop it.
    Drop,
}

impl EngineOutput {
    /// Counts a line of `len` bytes and says whether it may be written.
    pub fn admit(&self, len: usize) -> OutputVerdict {
        let lines = self.lines.fetch_add(1, Ordering::Relaxed) + 1;
        let bytes = self.bytes.fetch_add(len as u64, Ordering::Relaxed) + len as u64;
        if lines <= MAX_ENGINE_LINES && bytes <= MAX_ENGINE_BYTES {
            return OutputVerdict::Write;
        }
        // The first line past either cap says so; the rest are dropped.
        let first_past = (lines == MAX_ENGINE_LINES + 1 && bytes <= MAX_ENGINE_BYTES)
            || (bytes > MAX_ENGINE_BYTES && bytes - len as u64 <= MAX_ENGINE_BYTES);
        if first_past && lines <= MAX_ENGINE_LINES + 1 {
            OutputVerdict::Notice(format!(
                "engine output cap reached ({MAX_ENGINE_LINES} lines or {} MiB per call): \
                 further build and push output of this call is not logged",
                MAX_ENGINE_BYTES / (1024 * 1024)
            ))
        } else {
            OutputVerdict::Drop
        }
    }
}

/// The refusal of a call past `cap` (its name and value).
pub fn past(what: &str, cap: impl std::fmt::Display) -> String {
    format!("{what} cap reached: at most {cap} per call")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_past_the_cap_is_said_once_then_dropped() {
        let output = EngineOutput::default();
        assert_eq!(output.admit(10), OutputVerdict::Write);
        let big = MAX_ENGINE_BYTES as usize;
        assert!(matches!(output.admit(big), OutputVerdict::Notice(_)));
        assert_eq!(output.admit(1), OutputVerdict::Drop);
        assert_eq!(output.admit(1), OutputVerdict::Drop);

        let output = EngineOutput::default();
        for _ in 0..MAX_ENGINE_LINES {
            assert_eq!(output.admit(1), OutputVerdict::Write);
        }
        assert!(matches!(output.admit(1), OutputVerdict::Notice(_)));
        assert_eq!(output.admit(1), OutputVerdict::Drop);
    }
}
