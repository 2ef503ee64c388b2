//! Who holds a claim: an agent id that says which host and process it is,
//! so an agent can tell at once that a local holder has died.
//!
//! Format: `<hostname>:<pid>:<random>`.

/// This agent's id.
pub fn new_agent_id() -> String {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    format!("{}:{}:{}", hostname(), std::process::id(), &nonce[..8])
}

/// The machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Whether the agent `holder` is known to be dead: it ran on this host and
/// its process is gone (or is no longer a launch-agent). A holder on
/// another host is never known dead; its lease expiring is what frees its
/// jobs.
pub fn holder_is_dead(holder: &str, me: &str) -> bool {
    if holder == me {
        return false;
    }
    let mut parts = holder.split(':');
    let (Some(host), Some(pid)) = (parts.next(), parts.next()) else {
        return false;
    };
    if host != hostname() {
        return false;
    }
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    if pid == std::process::id() {
        // Our pid with another nonce: a previous agent whose pid we reuse.
        return true;
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => !String::from_utf8_lossy(&cmdline).contains("launch-agent"),
        Err(_) => true,
    }
}
