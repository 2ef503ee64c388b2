//! Driver and pool errors as [`QueueError`]s by cause: a server that cannot
//! be reached (worth retrying: [`QueueError::Remote`]), a full disk, a
//! conflict, anything else. No message holds the password: the store is
//! named by [`StoreName`], and the driver's errors never quote the URL.

use std::fmt;

use tokio_postgres::error::SqlState;

use crate::queue::QueueError;

/// The server and database, as errors name them (no password).
#[derive(Clone, Debug)]
pub struct StoreName(pub String);

impl fmt::Display for StoreName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Adds the store and the operation to a driver error.
pub trait SqlContext<T> {
    /// The error as a [`QueueError`] naming `store` and `op`.
    fn ctx(self, store: &StoreName, op: &str) -> Result<T, QueueError>;
}

impl<T> SqlContext<T> for Result<T, tokio_postgres::Error> {
    fn ctx(self, store: &StoreName, op: &str) -> Result<T, QueueError> {
        self.map_err(|error| from_driver(error, store, op))
    }
}

impl<T> SqlContext<T> for Result<T, deadpool_postgres::PoolError> {
    fn ctx(self, store: &StoreName, op: &str) -> Result<T, QueueError> {
        self.map_err(|error| match error {
            deadpool_postgres::PoolError::Backend(error) => from_driver(error, store, op),
            other => unreachable_server(store, op, &other),
        })
    }
}

/// An error and its causes, as one line ("error connecting to server:
/// Connection refused (os error 111)").
struct Chain<'a>(&'a dyn std::error::Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(inner) = source {
            write!(f, ": {inner}")?;
            source = inner.source();
        }
        Ok(())
    }
}

/// A server that does not answer (or cannot take us now): transient.
fn unreachable_server(store: &StoreName, op: &str, why: &dyn fmt::Display) -> QueueError {
    QueueError::Remote(format!(
        "queue database {store}: {op}: cannot reach the server: {why}"
    ))
}

fn from_driver(error: tokio_postgres::Error, store: &StoreName, op: &str) -> QueueError {
    if is_connection_problem(&error) {
        return unreachable_server(store, op, &Chain(&error));
    }
    let code = error.code().cloned();
    // The server's own message ("ERROR: ..."), not the driver's "db error".
    let source: crate::queue::SourceError = if error.as_db_error().is_some() {
        error
            .into_source()
            .unwrap_or_else(|| "the server refused the request".into())
    } else {
        Chain(&error).to_string().into()
    };
    let (store, op) = (store.to_string(), op.to_owned());
    match code {
        Some(c) if c == SqlState::DISK_FULL || c == SqlState::OUT_OF_MEMORY => {
            QueueError::StorageFull { store, op, source }
        }
        Some(c)
            if c == SqlState::T_R_SERIALIZATION_FAILURE
                || c == SqlState::T_R_DEADLOCK_DETECTED
                || c == SqlState::LOCK_NOT_AVAILABLE =>
        {
            QueueError::Busy { store, op, source }
        }
        _ => QueueError::Database { store, op, source },
    }
}

/// Whether the error means the connection is gone or the server cannot
/// serve now (restarting, shutting down, out of connections): the same
/// call on a new connection may well work.
pub fn is_connection_problem(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    match error.code() {
        Some(code) => {
            let text = code.code();
            text.starts_with("08") // connection exception
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || *code == SqlState::TOO_MANY_CONNECTIONS
        }
        // No SQLSTATE: an I/O error or a timeout (worth retrying), or a
        // TLS failure such as a certificate refused (not).
        None => {
            let mut source = std::error::Error::source(error);
            while let Some(inner) = source {
                if let Some(io) = inner.downcast_ref::<std::io::Error>() {
                    return !io.get_ref().is_some_and(|e| e.is::<rustls::Error>());
                }
                source = inner.source();
            }
            false
        }
    }
}

/// Whether a queue error is one a retry on a new connection may fix.
pub fn is_unreachable(error: &QueueError) -> bool {
    matches!(error, QueueError::Remote(text) if text.contains("cannot reach the server"))
}
