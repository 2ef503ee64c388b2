//! SQLite errors as [`QueueError`]s: the database file is the store, and
//! the driver's error becomes the boxed source, so `rusqlite` stays out of
//! the queue's API.

use std::path::Path;

use rusqlite::ErrorCode;

use crate::queue::{QueueError, SourceError};

/// Adds the database path and the operation to SQLite errors.
pub(super) trait SqlContext<T> {
    /// Wraps an error as a [`QueueError`] (see [`classify`]).
    fn ctx(self, path: &Path, op: &str) -> Result<T, QueueError>;
}

impl<T> SqlContext<T> for rusqlite::Result<T> {
    fn ctx(self, path: &Path, op: &str) -> Result<T, QueueError> {
        self.map_err(|source| classify(source, path, op))
    }
}

/// A SQLite error as the [`QueueError`] its cause calls for: a full disk
/// and a busy database pass, a damaged file needs a person, the rest is a
/// plain database error.
pub(super) fn classify(source: rusqlite::Error, path: &Path, op: &str) -> QueueError {
    let (store, op) = (store(path), op.to_owned());
    let code = source.sqlite_error_code();
    let source: SourceError = Box::new(source);
    match code {
        Some(ErrorCode::DiskFull) => QueueError::StorageFull { store, op, source },
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            QueueError::Busy { store, op, source }
        }
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            QueueError::Damaged { store, op, source }
        }
        _ if is_enospc(source.as_ref()) => QueueError::StorageFull { store, op, source },
        _ => QueueError::Database { store, op, source },
    }
}

/// Whether an error says "no space left on device" in SQLite's I/O words.
fn is_enospc(error: &(dyn std::error::Error + 'static)) -> bool {
    let text = error.to_string();
    text.contains("No space left on device") || text.contains("database or disk is full")
}

/// How errors name the database file.
pub(super) fn store(path: &Path) -> String {
    path.display().to_string()
}
