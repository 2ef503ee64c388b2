//! Every timeout and interval of the agent, in one place.

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
