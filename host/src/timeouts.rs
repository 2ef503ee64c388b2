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
