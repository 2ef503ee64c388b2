//! Errors of the queue.

use std::path::{Path, PathBuf};

use super::item::ItemState;

/// Anything that can go wrong using a queue. Every message names the
/// database file and, where there is one, the item.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// A queue call was cut short (its task panicked or was cancelled).
    #[error("queue call interrupted: {0}")]
    Interrupted(String),
    /// A remote queue (a W&B server) failed or refused a request.
    #[error("{0}")]
    Remote(String),
    /// The state directory could not be created, or the database file could
    /// not be created in it.
    #[error("cannot create {path}: {source}")]
    Create {
        /// The directory or file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// SQLite failed (including "database is locked" once the busy timeout
    /// ran out).
    #[error("queue database {path}: {op}: {source}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// What was being done, e.g. `finish item <id>`.
        op: String,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// The database could not be put in write-ahead-log mode, which the
    /// queue needs so the agent and CLI commands can use it at the same time.
    #[error(
        "queue database {path}: cannot switch to WAL journal mode (got {mode:?}); \
         is the state directory on a network file system?"
    )]
    NoWal {
        /// The database file.
        path: PathBuf,
        /// The journal mode SQLite kept.
        mode: String,
    },
    /// The database was written by a newer launch-agent.
    #[error(
        "queue database {path} has schema version {found}, but this launch-agent \
         only knows up to {supported}; upgrade launch-agent"
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// The database's `user_version`.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// There is no item with that id.
    #[error("queue database {path}: no queue item {id}")]
    NotFound {
        /// The database file.
        path: PathBuf,
        /// The id asked for.
        id: String,
    },
    /// The item is not in a state the requested change can start from.
    #[error(
        "queue database {path}: cannot {action} item {id}: it is {from}, \
         and only {allowed} items can move to {to}"
    )]
    WrongState {
        /// The database file.
        path: PathBuf,
        /// The item.
        id: String,
        /// What was asked, e.g. `finish`.
        action: &'static str,
        /// The item's current state.
        from: ItemState,
        /// The state it would have moved to.
        to: ItemState,
        /// The states it could have moved from, e.g. `claimed or running`.
        allowed: String,
    },
    /// An agent tried to act on an item another agent holds.
    #[error(
        "queue database {path}: cannot {action} item {id}: it is held by agent \
         {holder}, not {agent}"
    )]
    NotHolder {
        /// The database file.
        path: PathBuf,
        /// The item.
        id: String,
        /// What was asked.
        action: &'static str,
        /// The agent that holds it (`none` if no one does).
        holder: String,
        /// The agent that asked.
        agent: String,
    },
    /// A queue name that cannot be used.
    #[error("invalid queue name {name:?}: {reason}")]
    InvalidQueueName {
        /// The name given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A launch spec that is not a JSON object.
    #[error("a launch spec must be a JSON object, got {kind}")]
    InvalidSpec {
        /// What it was instead (`array`, `string`, ...).
        kind: &'static str,
    },
    /// A stored row the queue cannot read back.
    #[error("queue database {path}: item {id} is corrupt: {detail}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// The item.
        id: String,
        /// What is wrong with it.
        detail: String,
    },
}

/// Adds the database path and the operation to SQLite errors.
pub(super) trait SqlContext<T> {
    /// Wraps an error as [`QueueError::Database`].
    fn ctx(self, path: &Path, op: &str) -> Result<T, QueueError>;
}

impl<T> SqlContext<T> for rusqlite::Result<T> {
    fn ctx(self, path: &Path, op: &str) -> Result<T, QueueError> {
        self.map_err(|source| QueueError::Database {
            path: path.to_owned(),
            op: op.to_owned(),
            source,
        })
    }
}
