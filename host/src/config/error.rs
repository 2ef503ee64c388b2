//! Config errors that name the file, the key, the line and the column.

use serde_saphyr::Location;
use std::path::{Path, PathBuf};

/// A config file that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {file}: {reason}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// The YAML is malformed, or a key is unknown or of the wrong type.
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: u32,
        /// 1-based column.
        column: u32,
        /// What is wrong (the YAML parser's words, which name the key).
        message: String,
    },
    /// A key has a value of the right type that is still not acceptable.
    #[error("{file}:{line}:{column}: `{key}` {message}")]
    InvalidAt {
        /// The file.
        file: PathBuf,
        /// The key, as a dotted path.
        key: String,
        /// 1-based line.
        line: u32,
        /// 1-based column.
        column: u32,
        /// What is wrong with it.
        message: String,
    },
    /// A key's value is not acceptable (no position recorded for it).
    #[error("{file}: `{key}` {message}")]
    Invalid {
        /// The file.
        file: PathBuf,
        /// The key, as a dotted path.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

impl ConfigError {
    /// Wraps a YAML error, keeping its position.
    pub(crate) fn from_yaml(file: &Path, text: &str, error: &serde_saphyr::Error) -> Self {
        let (line, column) = error
            .location()
            .map(|l| (clamp(l.line()), clamp(l.column())))
            .unwrap_or((0, 0));
        let mut message = strip_location(&error.to_string());
        // Type errors do not name the key: find it from the position.
        if !message.contains("field `")
            && let Some(key) = key_path_at(text, line)
        {
            message = format!("`{key}`: {message}");
        }
        ConfigError::Syntax {
            file: file.to_path_buf(),
            line,
            column,
            message,
        }
    }

    /// An error about `key`, which the YAML defines at `location`.
    pub(crate) fn at(
        file: &Path,
        key: &str,
        location: &Location,
        message: impl Into<String>,
    ) -> Self {
        if location.line() == 0 {
            return Self::invalid(file, key, message);
        }
        ConfigError::InvalidAt {
            file: file.to_path_buf(),
            key: key.to_string(),
            line: clamp(location.line()),
            column: clamp(location.column()),
            message: message.into(),
        }
    }

    /// An error about `key` without a position.
    pub(crate) fn invalid(file: &Path, key: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            file: file.to_path_buf(),
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// serde-saphyr's messages carry the position as a prefix or suffix; we
/// print it up front instead, so drop the repeat.
fn strip_location(message: &str) -> String {
    let mut text = message.lines().next().unwrap_or(message).trim();
    if let Some(rest) = text.strip_prefix("error: ") {
        text = rest;
    }
    if text.starts_with("line ")
        && let Some((_, rest)) = text.split_once(": ")
    {
        text = rest;
    }
    if let Some(index) = text.rfind(" at line ") {
        text = &text[..index];
    }
    text.to_string()
}

/// The dotted key path of the block-style mapping entry on `line` (1-based),
/// found from indentation: `builder.platform` for `  platform: x` under
/// `builder:`. `None` when the line holds no `key:`.
pub(crate) fn key_path_at(text: &str, line: u32) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let index = usize::try_from(line).ok()?.checked_sub(1)?;
    let (mut indent, key) = key_of(lines.get(index)?)?;
    let mut path = vec![key];
    for candidate in lines[..index].iter().rev() {
        if let Some((i, k)) = key_of(candidate)
            && i < indent
        {
            path.push(k);
            indent = i;
            if indent == 0 {
                break;
            }
        }
    }
    path.reverse();
    Some(path.join("."))
}

/// The indentation and key of a `key: value` or `- key: value` line.
fn key_of(line: &str) -> Option<(usize, String)> {
    let trimmed = line.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return None;
    }
    let mut indent = line.len() - trimmed.len();
    let mut body = trimmed;
    while let Some(rest) = body.strip_prefix("- ") {
        indent += 2;
        body = rest.trim_start();
    }
    let (key, _) = body.split_once(':')?;
    let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
    let plain = !key.is_empty() && !key.contains(['{', '[', ' ', ',']);
    plain.then(|| (indent, key.to_string()))
}

fn clamp(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
