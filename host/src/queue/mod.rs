//! The job queue.
//!
//! Users submit launch specs to named queues; agents claim them, run them
//! and record how they ended. The default backend is [`EmbeddedQueue`], a
//! SQLite database (`queue.sqlite3`) in the agent's state directory that the
//! agent and CLI commands share.
//!
//! An item's life: `queued -> claimed -> running -> finished | failed |
//! stopped` (see [`ItemState`]). Nothing is ever lost: a terminal item never
//! changes state again, and every claimed item ends up finished, failed or
//! stopped, or goes back to `queued` — handed back by its agent
//! ([`EmbeddedQueue::release`]) or reclaimed after its agent died
//! ([`EmbeddedQueue::reclaim_abandoned`]).

pub mod backend;
mod clock;
mod embedded;
mod error;
mod item;
mod row;
mod schema;
mod table;
pub mod wandb;

pub use backend::{EmbeddedBackend, FetchedJob, QueueBackend, RepoExtras};
pub use embedded::{BUSY_TIMEOUT, DB_FILE_NAME, EmbeddedQueue};
pub use error::QueueError;
pub use item::{ItemState, ParseNameError, QueueItem, Reclaimed, RunHandle, Stage};
pub use schema::SCHEMA_VERSION;
pub use table::format_table;
