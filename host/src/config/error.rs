//! Config errors that name the file, the key, the line and the column.
//!
//! Every message is in our words (the YAML parser's are translated by
//! [`crate::input::yaml`]), and whatever the file wrote that a message
//! quotes is escaped and cut ([`crate::text::for_log`]), so a config cannot
//! forge log lines or flood the terminal through its own error.

use crate::input::Problem;
use crate::text::{for_log, for_log_max};
use serde_saphyr::Location;
use std::path::{Path, PathBuf};

/// The longest message a config error carries, in characters.
pub const MAX_MESSAGE_CHARS: usize = 1024;

/// A config file that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {reason}", shown(file))]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// The YAML is malformed, or a key is unknown or of the wrong type.
    #[error("{}{}: {message}", shown(file), place(*line, *column))]
    Syntax {
        /// The file.
        file: PathBuf,
        /// 1-based line (0 when the parser gave no position).
        line: u32,
        /// 1-based column (0 when the parser gave no position).
        column: u32,
        /// What is wrong, naming the key where there is one.
        message: String,
    },
    /// A key has a value of the right type that is still not acceptable.
    #[error("{}:{line}:{column}: `{key}` {message}", shown(file))]
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
    #[error("{}: `{key}` {message}", shown(file))]
    Invalid {
        /// The file.
        file: PathBuf,
        /// The key, as a dotted path.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

/// A file path as an error shows it: escaped and cut.
fn shown(file: &Path) -> String {
    for_log(&file.to_string_lossy()).into_owned()
}

/// `:line:column`, or nothing when the position is unknown (0).
fn place(line: u32, column: u32) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(":{line}:{column}")
    }
}

/// A message as an error carries it: escaped and cut. Escaping twice
/// changes nothing, so parts escaped before pass through unchanged.
fn bounded(message: impl Into<String>) -> String {
    let message = message.into();
    match for_log_max(&message, MAX_MESSAGE_CHARS) {
        std::borrow::Cow::Borrowed(_) => message,
        std::borrow::Cow::Owned(shown) => shown,
    }
}

impl ConfigError {
    /// A problem the reader or the YAML parser found in `file`.
    pub(crate) fn syntax(file: &Path, problem: Problem) -> Self {
        ConfigError::Syntax {
            file: file.to_path_buf(),
            line: problem.line,
            column: problem.column,
            message: bounded(problem.message),
        }
    }

    /// The file could not be read, for `reason`.
    pub(crate) fn read(file: &Path, reason: impl Into<String>) -> Self {
        ConfigError::Read {
            file: file.to_path_buf(),
            reason: bounded(reason),
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
            key: for_log(key).into_owned(),
            line: clamp(location.line()),
            column: clamp(location.column()),
            message: bounded(message),
        }
    }

    /// An error about `key` without a position.
    pub(crate) fn invalid(file: &Path, key: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            file: file.to_path_buf(),
            key: for_log(key).into_owned(),
            message: bounded(message),
        }
    }
}

fn clamp(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
