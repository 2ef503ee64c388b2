//! The embedded queue backend: a SQLite database (`queue.sqlite3`) in the
//! agent's state directory, shared by the agent and the CLI commands
//! (`submit`, `queue list`, `queue stop`), no server needed.
//!
//! | file | job |
//! |---|---|
//! | `sqlite.rs` | [`EmbeddedQueue`]: every state change one `BEGIN IMMEDIATE` transaction |
//! | `backend.rs` | [`EmbeddedBackend`]: the queue as a [`QueueBackend`](super::QueueBackend), its calls on the blocking pool |
//! | `schema.rs` | the schema and its migrations ([`SCHEMA_VERSION`]) |
//! | `row.rs` | reading rows back into [`QueueItem`](super::QueueItem)s; a row that cannot be read becomes a damage report naming it, and is moved aside to `quarantined_items` |
//! | `sql.rs` | SQLite errors as [`QueueError`](super::QueueError)s by cause: a full disk, a busy database, a damaged file |
//! | `clock.rs` | timestamps as text and milliseconds |

mod backend;
mod clock;
mod row;
mod schema;
mod sql;
mod sqlite;

pub use backend::EmbeddedBackend;
pub use schema::SCHEMA_VERSION;
pub(crate) use sqlite::validate_queue_name;
pub use sqlite::{BUSY_TIMEOUT, DB_FILE_NAME, EmbeddedQueue};
