//! The WASI context of one plugin call, built from the plugin's policy and
//! nothing else: no inherited environment, network or directories. This is
//! where `grants.env` and `grants.dirs` are enforced: a variable or
//! directory the policy does not list is not in the context at all.

use super::policy::GrantPolicy;
use anyhow::Context as _;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, filesystem::FsPerms};

/// How much of a plugin's stderr is kept (shown when it traps).
pub const STDERR_CAPTURE: usize = 16 * 1024;

/// Builds the WASI context for one call; returns it with the pipe that
/// captures the plugin's stderr.
/// `source` is an extra read-only directory for this call only (a job's
/// source shown to its builder), as (host path, guest path).
pub fn context_for(
    policy: &GrantPolicy,
    source: Option<(&std::path::Path, &str)>,
) -> anyhow::Result<(WasiCtx, MemoryOutputPipe)> {
    let mut builder = WasiCtxBuilder::new();
    builder
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    for name in policy.env() {
        if let Some(value) = crate::secret_env::var(name) {
            builder.env(name, value);
        }
    }
    for dir in policy.dirs() {
        let perms = if dir.writable() {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        builder
            .preopened_dir(dir.host_path(), dir.guest_path(), perms)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("opening granted directory {}", dir.host_path().display()))?;
    }
    if let Some((host, guest)) = source {
        builder
            .preopened_dir(host, guest, FsPerms::ReadOnly)
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!("showing the job's source {} to the plugin", host.display())
            })?;
    }
    let stderr = MemoryOutputPipe::new(STDERR_CAPTURE);
    builder.stderr(stderr.clone());
    Ok((builder.build(), stderr))
}
