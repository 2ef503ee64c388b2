//! The PostgreSQL queue backend: many agents on many machines share one
//! queue in a database the team already runs, with no W&B server.
//!
//! `queue_backend: postgres` selects it; the URL comes from a secret
//! (`postgres: {url-secret: NAME}`) or `DATABASE_URL`, never from the
//! config file. It keeps the embedded queue's semantics item for item
//! (leases, holder checks, `max_attempts`, stop requests; round robin and
//! `max_jobs` are the agent loop's), with the differences its
//! [backend](PostgresBackend) names: only leases free a dead agent's items.
//!
//! | file | job |
//! |---|---|
//! | `backend.rs` | [`PostgresBackend`]: the queue as a [`QueueBackend`](super::QueueBackend); claims with `FOR UPDATE SKIP LOCKED`, calls retried while the server cannot be reached |
//! | `schema.rs` | the tables and their versioned [`MIGRATIONS`], applied at start-up under an advisory lock |
//! | `listen.rs` | `LISTEN`/`NOTIFY`: a submit wakes idle agents at once; the connection made again with backoff |
//! | `settings.rs` | [`PostgresSettings`]: where the URL comes from; `sslmode` as libpq reads it |
//! | `tls.rs` | rustls connectors per `sslmode` |
//! | `runtime.rs` | the backend's own runtime thread, where its connections live |
//! | `sql.rs` | driver errors as [`QueueError`](super::QueueError)s by cause |

mod backend;
mod listen;
mod runtime;
mod schema;
mod settings;
mod sql;
mod tls;

pub use backend::{IDLE_FALLBACK, PostgresBackend, RECONNECT_PATIENCE};
pub use schema::{MIGRATIONS, Migration, SCHEMA_VERSION};
pub use settings::{PostgresSettings, UrlSource};
