//! Where the services scripts write their `KEY=VALUE` env files, and how
//! they are read: one rule for every script (`scripts/services*.sh`).

use std::collections::HashMap;
use std::path::PathBuf;

/// The env file of a services script: the path in variable `var` when it
/// is set and not empty, else `name` in `$TMPDIR` (`/tmp` by default), as
/// the scripts themselves decide.
pub fn path(var: &str, name: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => {
            let tmp = std::env::var_os("TMPDIR")
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| "/tmp".into());
            PathBuf::from(tmp).join(name)
        }
    }
}

/// An env file's `KEY=VALUE` lines.
pub fn parse(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}
