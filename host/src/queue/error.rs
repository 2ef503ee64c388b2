//! Errors of the queue, whatever backend serves it.
//!
//! The variants carry plain data (the store, the item, the operation, a
//! message) and at most a boxed source error, so no backend's crate shows in
//! the API: the embedded backend names its database file as the store, a
//! server backend its server.

use std::path::PathBuf;

use super::item::ItemState;

/// A backend's own error (e.g. the database driver's), boxed.
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// Anything that can go wrong using a queue. Every message names the store
/// (the database file, or the server) and, where there is one, the item.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// A queue call was cut short (its task panicked or was cancelled).
    #[error("queue call interrupted: {0}")]
    Interrupted(String),
    /// A remote queue (a W&B server) failed or refused a request; the
    /// message names the server and the operation.
    #[error("{0}")]
    Remote(String),
    /// The backend cannot do this; the message says what to use instead.
    #[error("the {backend} queue cannot {action}: {instead}")]
    Unsupported {
        /// The backend's name, e.g. `wandb`.
        backend: &'static str,
        /// What was asked, e.g. `list items`.
        action: &'static str,
        /// What to use instead.
        instead: &'static str,
    },
    /// The state directory could not be created, or the database file could
    /// not be created in it.
    #[error("cannot create {path}: {source}")]
    Create {
        /// The directory or file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The queue's database failed (including "database is locked" once the
    /// busy timeout ran out).
    #[error("queue database {store}: {op}: {source}")]
    Database {
        /// The database: its file, or where its server is.
        store: String,
        /// What was being done, e.g. `finish item <id>`.
        op: String,
        /// The database driver's error.
        source: SourceError,
    },
    /// The database could not be put in write-ahead-log mode, which the
    /// embedded queue needs so the agent and CLI commands can use it at the
    /// same time.
    #[error(
        "queue database {store}: cannot switch to WAL journal mode (got {mode:?}); \
         is the state directory on a network file system?"
    )]
    NoWal {
        /// The database file.
        store: String,
        /// The journal mode the database kept.
        mode: String,
    },
    /// The database was written by a newer launch-agent.
    #[error(
        "queue database {store} has schema version {found}, but this launch-agent \
         only knows up to {supported}; upgrade launch-agent"
    )]
    SchemaTooNew {
        /// The database.
        store: String,
        /// The database's schema version.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// There is no item with that id.
    #[error("queue database {store}: no queue item {id}")]
    NotFound {
        /// The database.
        store: String,
        /// The id asked for.
        id: String,
    },
    /// The item is not in a state the requested change can start from.
    #[error(
        "queue database {store}: cannot {action} item {id}: it is {from}, \
         and only {allowed} items can move to {to}"
    )]
    WrongState {
        /// The database.
        store: String,
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
        "queue database {store}: cannot {action} item {id}: it is held by agent \
         {holder}, not {agent}"
    )]
    NotHolder {
        /// The database.
        store: String,
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
        /// What it was instead (`a list`, `a string`, ...; see
        /// [`json_kind::of`](crate::json_kind::of)).
        kind: &'static str,
    },
    /// The disk under the queue is full (or over its quota): nothing can be
    /// written until space is freed. Reading still works.
    #[error("queue database {store}: {op}: the disk is full: {source}")]
    StorageFull {
        /// The database.
        store: String,
        /// What was being done.
        op: String,
        /// The database driver's error.
        source: SourceError,
    },
    /// Another process holds the database's write lock past the busy
    /// timeout: worth retrying as it is.
    #[error("queue database {store}: {op}: {source}")]
    Busy {
        /// The database.
        store: String,
        /// What was being done.
        op: String,
        /// The database driver's error.
        source: SourceError,
    },
    /// The database file itself is damaged (or is not a database): no
    /// retry can help, a person has to repair or replace it.
    #[error(
        "queue database {store}: {op}: the database is damaged: {source}. Stop every agent \
         using it, copy the state dir aside, then repair the file (`sqlite3 {store} .recover`) \
         or move it aside to start an empty queue"
    )]
    Damaged {
        /// The database.
        store: String,
        /// What was being done.
        op: String,
        /// The database driver's error.
        source: SourceError,
    },
    /// The database file exists but is empty: it was truncated or replaced,
    /// and the items it held are gone. It is not taken for a new queue.
    #[error(
        "queue database {store} is empty (0 bytes) although it exists: it was truncated or \
         replaced, and the items it held are gone. Move it aside (or delete it) to start a new \
         queue{wal_note}"
    )]
    EmptyDatabase {
        /// The database.
        store: String,
        /// What to know about a write-ahead log beside it, if one is there.
        wal_note: String,
    },
    /// A stored item the queue cannot read back.
    #[error("queue database {store}: item {id} is corrupt: {detail}")]
    Corrupt {
        /// The database.
        store: String,
        /// The item.
        id: String,
        /// What is wrong with it.
        detail: String,
    },
}

impl QueueError {
    /// Whether the disk under the queue is full: writes fail until space is
    /// freed, then work again.
    pub fn is_storage_full(&self) -> bool {
        matches!(self, QueueError::StorageFull { .. })
    }

    /// Whether the item changed under the caller (another agent took it
    /// back, it ended, it is gone): retrying the same change cannot help,
    /// and nothing is lost by dropping it.
    pub fn is_moot(&self) -> bool {
        matches!(
            self,
            QueueError::NotHolder { .. }
                | QueueError::WrongState { .. }
                | QueueError::NotFound { .. }
        )
    }

    /// Whether the same call may well work if tried again later as it is:
    /// a busy database, an interrupted call, a server's failure, a full disk.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            QueueError::Busy { .. }
                | QueueError::Interrupted(_)
                | QueueError::Remote(_)
                | QueueError::StorageFull { .. }
        )
    }
}
