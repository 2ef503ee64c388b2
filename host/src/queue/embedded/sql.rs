//! SQLite errors as [`QueueError`]s: the database file is the store, and
//! the driver's error becomes the boxed source, so `rusqlite` stays out of
//! the queue's API.

use std::path::Path;

use crate::queue::QueueError;

/// Adds the database path and the operation to SQLite errors.
pub(super) trait SqlContext<T> {
    /// Wraps an error as [`QueueError::Database`].
    fn ctx(self, path: &Path, op: &str) -> Result<T, QueueError>;
}

impl<T> SqlContext<T> for rusqlite::Result<T> {
    fn ctx(self, path: &Path, op: &str) -> Result<T, QueueError> {
        self.map_err(|source| QueueError::Database {
            store: store(path),
            op: op.to_owned(),
            source: Box::new(source),
        })
    }
}

/// How errors name the database file.
pub(super) fn store(path: &Path) -> String {
    path.display().to_string()
}
