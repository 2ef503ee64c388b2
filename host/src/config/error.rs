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
    pub(crate) fn from_yaml(file: &Path, error: &serde_saphyr::Error) -> Self {
        let (line, column) = error
            .location()
            .map(|l| (clamp(l.line()), clamp(l.column())))
            .unwrap_or((0, 0));
        let message = strip_location_suffix(&error.to_string());
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

/// serde-saphyr appends " at line L column C" to its messages; we print the
/// position up front instead, so drop the repeat.
fn strip_location_suffix(message: &str) -> String {
    let first_line = message.lines().next().unwrap_or(message);
    match first_line.rfind(" at line ") {
        Some(index) => first_line[..index].to_string(),
        None => first_line.to_string(),
    }
}

fn clamp(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
