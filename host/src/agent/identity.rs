//! Who holds a claim: an agent id that says which host and process it is,
//! so an agent can tell at once that a local holder has died.
//!
//! Format: `<hostname>:<pid>:<start>:<random>`, where `<start>` is when the
//! process started (clock ticks since boot, field 22 of `/proc/<pid>/stat`):
//! with it, a process that was given a dead agent's pid is never taken for
//! that agent. Ids written before it was added (`<hostname>:<pid>:<random>`)
//! are still understood, by the process's command line.

/// This agent's id.
pub fn new_agent_id() -> String {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let pid = std::process::id();
    let start = start_time(pid).unwrap_or(0);
    format!("{}:{pid}:{start}:{}", hostname(), &nonce[..8])
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
/// its process is gone (or the pid now belongs to another process). A
/// holder on another host is never known dead; its lease expiring is what
/// frees its jobs.
pub fn holder_is_dead(holder: &str, me: &str) -> bool {
    if holder == me {
        return false;
    }
    let parts: Vec<&str> = holder.split(':').collect();
    let (host, pid, start) = match parts.as_slice() {
        [host, pid, start, _nonce] => (*host, *pid, Some(*start)),
        [host, pid, _nonce] => (*host, *pid, None),
        _ => return false,
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
    match start {
        Some(start) => start_time(pid).is_none_or(|now| now.to_string() != start),
        None => match std::fs::read(format!("/proc/{pid}/cmdline")) {
            Ok(cmdline) => !String::from_utf8_lossy(&cmdline).contains("launch-agent"),
            Err(_) => true,
        },
    }
}

/// When process `pid` started, in clock ticks since boot; `None` when there
/// is no such process.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`: comm may hold spaces and parentheses, so
    // the fields are counted from the last `)`; start time is field 22.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn id_of(pid: u32, start: u64) -> String {
        format!("{}:{pid}:{start}:0badcafe", hostname())
    }

    /// A live process that is not a launch-agent.
    fn sleeper() -> std::process::Child {
        Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    }

    #[test]
    fn an_id_names_this_host_process_and_its_start() {
        let me = new_agent_id();
        let parts: Vec<&str> = me.split(':').collect();
        assert_eq!(parts.len(), 4, "{me}");
        assert_eq!(parts[0], hostname());
        assert_eq!(parts[1], std::process::id().to_string());
        assert_eq!(
            Some(parts[2].parse().unwrap()),
            start_time(std::process::id())
        );
        assert!(!holder_is_dead(&me, &me));
    }

    #[test]
    fn a_live_holder_is_alive_until_it_exits_and_a_reused_pid_is_not_it() {
        let me = new_agent_id();
        let mut child = sleeper();
        let pid = child.id();
        let start = start_time(pid).expect("the child's start time");
        assert!(!holder_is_dead(&id_of(pid, start), &me));
        // The same pid with another start time: another process now.
        assert!(holder_is_dead(&id_of(pid, start + 1), &me));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(holder_is_dead(&id_of(pid, start), &me));
    }

    #[test]
    fn our_pid_under_another_id_is_a_dead_predecessor() {
        let me = new_agent_id();
        let start = start_time(std::process::id()).unwrap();
        assert!(holder_is_dead(&id_of(std::process::id(), start), &me));
    }

    #[test]
    fn holders_elsewhere_or_unreadable_are_not_known_dead() {
        let me = new_agent_id();
        assert!(!holder_is_dead("another-host:1:2:abcd", &me));
        assert!(!holder_is_dead("garbage", &me));
        assert!(!holder_is_dead(
            &format!("{}:not-a-pid:1:x", hostname()),
            &me
        ));
    }

    #[test]
    fn an_old_style_id_is_judged_by_its_command_line() {
        let me = new_agent_id();
        let mut child = sleeper();
        let old_style = format!("{}:{}:0badcafe", hostname(), child.id());
        assert!(holder_is_dead(&old_style, &me));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
