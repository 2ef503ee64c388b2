//! The job queue.
//!
//! Users submit launch specs to named queues; agents claim them, run them
//! and record how they ended. Every backend is a [`QueueBackend`], the one
//! interface the agent loop and the CLI use; [`open`] builds the one the
//! config selects ([`BackendSettings`]).
//!
//! | module | job |
//! |---|---|
//! | [`backend`] | the [`QueueBackend`] trait |
//! | [`embedded`] | the default backend: SQLite (`queue.sqlite3`) in the state dir, shared by the agent and the CLI |
//! | [`postgres`] | a PostgreSQL database shared by agents on many machines |
//! | [`wandb`] | a W&B server's launch queues, served as `wandb launch-agent` does |
//! | `open.rs` | [`BackendSettings`] (from the config) and [`open`] |
//! | `item.rs` | what a queue holds: [`QueueItem`], [`ItemState`], [`Stage`] |
//! | `error.rs` | [`QueueError`], naming no backend's crate |
//! | `table.rs` | items as the table `queue list` prints |
//!
//! An item's life: `queued -> claimed -> running -> finished | failed |
//! stopped` (see [`ItemState`]). Nothing is ever lost: a terminal item never
//! changes state again, and every claimed item ends up finished, failed or
//! stopped, or goes back to `queued` — handed back by its agent
//! ([`QueueBackend::release`]) or reclaimed after its agent died
//! ([`QueueBackend::reclaim_abandoned`]).

pub mod backend;
pub mod embedded;
mod error;
mod item;
mod open;
pub mod postgres;
mod table;
pub mod wandb;

pub use backend::QueueBackend;
pub use error::{QueueError, SourceError};
pub use item::{ItemState, ParseNameError, QueueItem, Reclaimed, RunHandle, Stage};
pub use open::{BackendSettings, open, open_for_reading};
pub use table::format_table;
