//! The timeouts and intervals of the agent loop, and an index of every
//! other one: each of those sits beside the code it bounds, where its
//! reason is, and is listed here so there is one place to look.
//!
//! | what | where | value |
//! |---|---|---|
//! | a plugin call's own running time / whole call | `limits.deadline_ms` / `timeout_ms` of the config ([`crate::config::Limits`]) | 30 s / 10 min (1 h for the docker builder) |
//! | the deadline clock's tick, and how long it runs after a call | [`EPOCH_TICK`]; [`crate::plugins::epoch::LINGER`] | 10 ms; 1 s |
//! | W&B: pops, `stopPolling`, heartbeats, `RunStoppedStatus` | [`crate::queue::wandb::cadence`] | 2–10 s, 4.5 s, 9–20 s, 5 s |
//! | W&B: one API request; a job artifact's download | `request_timeout` of [`crate::wandb::ApiSettings`]; `DOWNLOAD_TIMEOUT` in `sources/wandb_job/fetch.rs` | 30 s; 30 min |
//! | the embedded queue waiting on another writer | [`crate::queue::embedded::BUSY_TIMEOUT`] | 5 s |
//! | Docker: a build or push request; draining a build context | `LONG_REQUEST`, `CONTEXT_DRAIN` in `capabilities/docker/engine.rs` | 1 h; 5 s |
//! | an OCI registry: connecting; one call | `CONNECT_TIMEOUT`, `CALL_TIMEOUT` in `capabilities/oci.rs` | 10 s; 60 s |
//! | a container's removal; its output draining after exit | `REMOVAL_WAIT`, `DRAIN_AFTER_OUTPUT` in `runners/local_container/mod.rs` | 30 s; 5 s |
//! | a local process's output draining into its log after it ended | `DRAIN_AFTER_EXIT` in `runners/local_process/output.rs` | 5 s |
//! | a dead agent's leftovers being cleaned up | `CLEAN_UP_WAIT` in `agent/reclaim.rs` | 30 s |
//! | a stopped run between SIGTERM and SIGKILL | `stopped_run_timeout` of the config | 60 s |
//! | running jobs on shutdown | `shutdown_grace_seconds` of the config | 30 s |
//! | a claim without renewal | `lease_seconds` of the config | 30 s |
//! | everything below | this module | |

use std::time::Duration;

/// How often the plugin engine's epoch advances; plugin deadlines are
/// counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// How long the agent sleeps when no queue has work and nothing wakes it
/// (a submit wakes it at once; this only bounds how late it notices expired
/// leases of other agents).
pub const IDLE_RECHECK: Duration = Duration::from_secs(5);

/// How often a running job's lease is renewed, as a fraction of the lease.
pub const LEASE_RENEW_DIVISOR: u32 = 3;

/// How often a running job's stop request is checked.
pub const STOP_POLL: Duration = Duration::from_millis(500);

/// How often outcomes that could not be recorded (a full disk, a busy
/// database) are tried again.
pub const OUTCOME_RETRY: Duration = Duration::from_secs(1);

/// How long an agent that was asked to stop keeps trying to record the
/// outcomes it could not record yet, before it exits with an error that
/// names them (a further signal cuts this short).
pub const OUTCOME_FLUSH_LIMIT: Duration = Duration::from_secs(30);

/// How often a state dir that was full is checked again.
pub const STORAGE_RECHECK: Duration = Duration::from_secs(2);

/// How often the agent repeats that the state dir is full while it lasts
/// (it says so at once the first time).
pub const STORAGE_FULL_REMINDER: Duration = Duration::from_secs(60);

/// How long the last signal gives the runners to kill what runs (a process
/// group, a container) before the agent exits regardless.
pub const FINAL_STOP_WAIT: Duration = Duration::from_secs(5);

/// How long reading a job's source (hashing a code directory) may take.
pub const SOURCE_READ_TIMEOUT: Duration = Duration::from_secs(600);

/// How long one `git` command fetching a job's source may take.
pub const GIT_TIMEOUT: Duration = Duration::from_secs(600);
