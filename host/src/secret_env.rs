//! The agent's own environment, without its secrets in it.
//!
//! The config's secrets may come from the agent's environment
//! (`secrets: {name: {env: VAR}}`), and the W&B key does
//! (`WANDB_API_KEY`). Runs never inherit the secrets' variables, but
//! another process of this machine could read them where the kernel keeps
//! the agent's environment: `/proc/<agent pid>/environ` shows the block the
//! agent was started with, and removing a variable (`unsetenv`) does not
//! change that block. A `local-process` run is such a process. So, once at
//! start-up, before any other thread exists, [`seal`]:
//!
//! 1. copies the values of those variables into this process's memory,
//!    where [`var`] finds them;
//! 2. removes them from the environment (`std::env`, and the C library's,
//!    which children inherit);
//! 3. overwrites them with zeros in the start-up block `/proc/<pid>/environ`
//!    reads (its bounds are in `/proc/self/stat`);
//! 4. makes the agent non-dumpable (`PR_SET_DUMPABLE` 0): only a process
//!    with `CAP_SYS_PTRACE` may then trace it or read its memory or
//!    `/proc` files, and no run has that capability
//!    ([`crate::runners::local_process`] drops it from runs of a root
//!    agent).
//!
//! | what a run on this machine reads | before | after |
//! |---|---|---|
//! | its own environment | no secret variables (the runner removes them) | the same |
//! | `/proc/<agent>/environ` | every variable the agent was started with | refused (not dumpable); and the block has zeros where the secrets were |
//! | `/proc/<agent>/mem`, ptrace | the agent's memory, secrets included | refused (not dumpable, no `CAP_SYS_PTRACE`) |
//!
//! Code that reads these variables asks [`var`], never `std::env::var`.
//! Secrets from files (`{file: ...}`) are not in the environment; a run as
//! the agent's user can read those files, which is why
//! `runners.local-process.user` exists.

use crate::config::{LaunchConfig, SecretSource};
use std::collections::HashMap;
use std::sync::OnceLock;

/// Variables that hold a secret whatever the config says.
const ALWAYS_SECRET: &[&str] = &["WANDB_API_KEY"];

/// The values taken out of the environment, by name.
static TAKEN: OnceLock<HashMap<String, String>> = OnceLock::new();

/// What [`seal`] could not do, reported by [`report`] once logging is up.
static PROBLEMS: OnceLock<Vec<String>> = OnceLock::new();

/// The variables that hold secrets under `config`: its `secrets:` from
/// `env`, and [`ALWAYS_SECRET`].
pub fn secret_names(config: Option<&LaunchConfig>) -> Vec<String> {
    let mut names: Vec<String> = ALWAYS_SECRET.iter().map(|n| n.to_string()).collect();
    // The PostgreSQL queue's URL holds its password.
    if config.is_some_and(|c| {
        c.queue_backend == crate::config::QueueBackend::Postgres && c.postgres.is_none()
    }) {
        names.push("DATABASE_URL".to_owned());
    }
    for source in config.iter().flat_map(|c| c.secrets.values()) {
        if let SecretSource::Env(var) = source
            && !var.is_empty()
            && !names.contains(var)
        {
            names.push(var.clone());
        }
    }
    names
}

/// Takes the secrets' variables out of this process's environment (see the
/// module doc) and makes the process non-dumpable. Call it once, first
/// thing, before any other thread exists; later calls do nothing.
/// Problems are kept for [`report`].
pub fn seal(config: Option<&LaunchConfig>) {
    if TAKEN.get().is_some() {
        return;
    }
    let names = secret_names(config);
    let mut taken = HashMap::new();
    let mut problems = Vec::new();
    for name in &names {
        if let Ok(value) = std::env::var(name) {
            taken.insert(name.clone(), value);
        }
        if std::env::var_os(name).is_some() {
            // SAFETY: no other thread exists yet (the caller's promise), so
            // nothing reads the environment while it changes.
            unsafe { std::env::remove_var(name) };
        }
    }
    if let Err(e) = wipe_startup_block(&names) {
        problems.push(format!(
            "cannot clear the secrets' variables from /proc/{}/environ: {e}",
            std::process::id()
        ));
    }
    // SAFETY: prctl on this process, no pointers.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        problems.push(format!(
            "cannot make the agent non-dumpable: {}",
            std::io::Error::last_os_error()
        ));
    }
    let _ = TAKEN.set(taken);
    let _ = PROBLEMS.set(problems);
}

/// The value of environment variable `name`: the one [`seal`] took, else
/// the environment's.
pub fn var(name: &str) -> Option<String> {
    match TAKEN.get().and_then(|taken| taken.get(name)) {
        Some(value) => Some(value.clone()),
        None => std::env::var(name).ok(),
    }
}

/// Logs what [`seal`] did and could not do (call once logging is up).
pub fn report() {
    match TAKEN.get() {
        None => tracing::warn!(
            "the agent's environment was not sealed: runs on this machine may read its secrets' variables"
        ),
        Some(taken) => {
            let mut names: Vec<&str> = taken.keys().map(String::as_str).collect();
            names.sort_unstable();
            tracing::debug!(
                variables = ?names,
                "secrets' variables taken out of the agent's environment"
            );
        }
    }
    for problem in PROBLEMS.get().into_iter().flatten() {
        tracing::warn!("{problem}");
    }
}

/// Overwrites every `NAME=...` entry of the start-up environment block for
/// `names` with zeros.
fn wipe_startup_block(names: &[String]) -> Result<(), String> {
    let stat = std::fs::read_to_string("/proc/self/stat").map_err(|e| e.to_string())?;
    let (start, end) = environ_bounds(&stat)
        .ok_or_else(|| "/proc/self/stat has no environment bounds".to_string())?;
    if end <= start {
        return Ok(());
    }
    // SAFETY: the kernel reports [start, end) as this process's start-up
    // environment block: mapped, writable (the initial stack), and only
    // read through the C library's `environ`, whose pointers to the
    // entries wiped here were just removed. Bytes are read and written one
    // at a time through raw pointers, so no reference aliases them.
    unsafe { wipe_entries(start as *mut u8, end - start, names) };
    Ok(())
}

/// `env_start` and `env_end` (fields 50 and 51) of a `/proc/<pid>/stat`
/// line. The command name (field 2) may hold spaces and parentheses, so
/// fields are counted after its last `)`.
fn environ_bounds(stat: &str) -> Option<(usize, usize)> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(50 - 3);
    let start = fields.next()?.parse().ok()?;
    let end = fields.next()?.parse().ok()?;
    Some((start, end))
}

/// Zeros each NUL-terminated `NAME=value` entry of the `len` bytes at
/// `area` whose name is one of `names`.
///
/// # Safety
///
/// `area` must be valid for reads and writes of `len` bytes, which no
/// reference points into.
unsafe fn wipe_entries(area: *mut u8, len: usize, names: &[String]) {
    let byte = |i: usize| {
        // SAFETY: i < len (the caller's promise covers the range).
        unsafe { std::ptr::read_volatile(area.add(i)) }
    };
    let mut start = 0;
    while start < len {
        let mut end = start;
        while end < len && byte(end) != 0 {
            end += 1;
        }
        let is_secret = names.iter().any(|name| {
            let name = name.as_bytes();
            end - start > name.len()
                && byte(start + name.len()) == b'='
                && name.iter().enumerate().all(|(k, b)| byte(start + k) == *b)
        });
        if is_secret {
            for i in start..end {
                // SAFETY: i < len.
                unsafe { std::ptr::write_volatile(area.add(i), 0) };
            }
        }
        start = end + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_bounds_are_read_after_the_command_name() {
        let fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        let stat = format!("1234 (a) b (c)) {}\n", fields.join(" "));
        assert_eq!(environ_bounds(&stat), Some((50, 51)));
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        let (start, end) = environ_bounds(&own).unwrap();
        assert!(start > 0 && end >= start, "{start} {end}");
        assert_eq!(environ_bounds("1 (x) R 1 2"), None);
    }

    #[test]
    fn only_the_named_entries_are_zeroed() {
        let mut block =
            b"PATH=/bin\0SECRET=hunter2\0SECRETS=keep\0X=SECRET=no\0SECRET=again\0".to_vec();
        let names = vec!["SECRET".to_string()];
        // SAFETY: the block is a local vector, borrowed by nothing else.
        unsafe { wipe_entries(block.as_mut_ptr(), block.len(), &names) };
        let text = String::from_utf8_lossy(&block).replace('\0', "|");
        let expected = format!(
            "PATH=/bin|{}|SECRETS=keep|X=SECRET=no|{}|",
            "|".repeat("SECRET=hunter2".len()),
            "|".repeat("SECRET=again".len())
        );
        assert_eq!(text, expected);
        assert!(!text.contains("hunter2") && !text.contains("again"));
    }

    #[test]
    fn the_names_are_the_configs_env_secrets_and_the_wandb_key() {
        let config = LaunchConfig::parse(
            "secrets:\n  a: { env: REGISTRY_PASSWORD }\n  b: { file: /etc/x }\n  c: { env: WANDB_API_KEY }\n",
            Path::new("c.yaml"),
        )
        .unwrap();
        assert_eq!(
            secret_names(Some(&config)),
            ["WANDB_API_KEY", "REGISTRY_PASSWORD"]
        );
        assert_eq!(secret_names(None), ["WANDB_API_KEY"]);
    }

    #[test]
    fn database_url_is_a_secret_when_it_is_the_postgres_queues_url() {
        let parse = |text: &str| LaunchConfig::parse(text, Path::new("c.yaml")).unwrap();
        let from_env = parse("queue_backend: postgres\n");
        assert!(secret_names(Some(&from_env)).contains(&"DATABASE_URL".to_owned()));
        let from_secret = parse(
            "queue_backend: postgres\npostgres: {url-secret: db}\nsecrets: {db: {env: QUEUE_DB}}\n",
        );
        let names = secret_names(Some(&from_secret));
        assert!(names.contains(&"QUEUE_DB".to_owned()), "{names:?}");
        assert!(!names.contains(&"DATABASE_URL".to_owned()), "{names:?}");
        assert!(!secret_names(Some(&parse("queues: [a]\n"))).contains(&"DATABASE_URL".to_owned()));
    }
}
