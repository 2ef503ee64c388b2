//! When the W&B backend talks to the server: how often it pops, asks
//! whether to stop polling, heartbeats and asks whether a run was stopped.
//!
//! The W&B agent polls every 10 s, always: a job waits 5 s on average
//! before it is even popped, and an idle agent sends about 10 requests per
//! 30 s (a `LaunchAgent` query and a pop per tick, a heartbeat every second
//! tick). This backend beats it on both axes:
//!
//! - **Fast when work is about.** While work was popped or a job ended in
//!   the last [`ACTIVE_WINDOW`], a pop every [`ACTIVE_POLL`]: a job
//!   submitted then waits about 1 s to be popped. Users submit in bursts
//!   (a sweep, a fix and a resubmit), so this is when it matters.
//! - **W&B's pace when long idle, never slower.** After the window the pop
//!   interval grows linearly, reaching [`IDLE_POLL`] (W&B's 10 s) after
//!   [`RELAX_OVER`] more.
//! - **`stopPolling` within 5 s.** The `LaunchAgent` query runs every
//!   [`STOP_CHECK`], whatever the pop interval.
//! - **Heartbeats ride along.** `updateLaunchAgent` goes in the same
//!   request as a pop (one mutation document with both fields) once
//!   [`HEARTBEAT_FOLD`] has passed since the last one; a heartbeat of its
//!   own is sent only when no pop carried one for [`HEARTBEAT_MAX`] (the
//!   agent runs `max_jobs` jobs and does not pop) or the status changed.
//! - **Stopped runs within [`RUN_STOP_CHECK`].** `RunStoppedStatus` per
//!   running job at most that often (the agent asks every half second).
//!
//! What that costs, with one queue:
//!
//! | agent | requests per 30 s | a job waits to be popped |
//! |---|---|---|
//! | W&B agent, always | ~10 | 5 s on average, 10 s at worst |
//! | this backend, long idle | 30/[`STOP_CHECK`] + 30/[`IDLE_POLL`] ≈ 9.7 | the same as W&B at worst |
//! | this backend, within [`ACTIVE_WINDOW`] of work | ≈ 21.7 | 1 s on average, 2 s at worst |

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Pop interval while work is about.
pub const ACTIVE_POLL: Duration = Duration::from_secs(2);
/// Pop interval when long idle: W&B's `AGENT_POLLING_INTERVAL`.
pub const IDLE_POLL: Duration = Duration::from_secs(10);
/// How long after the last work the agent keeps popping every [`ACTIVE_POLL`].
pub const ACTIVE_WINDOW: Duration = Duration::from_secs(60);
/// Over how long after [`ACTIVE_WINDOW`] the interval grows to [`IDLE_POLL`].
pub const RELAX_OVER: Duration = Duration::from_secs(180);
/// How often `stopPolling` is asked for (the goal: honoured within 5 s).
pub const STOP_CHECK: Duration = Duration::from_millis(4500);
/// A pop carries a heartbeat once this long has passed since the last one.
pub const HEARTBEAT_FOLD: Duration = Duration::from_secs(9);
/// A heartbeat of its own goes out when none went for this long.
pub const HEARTBEAT_MAX: Duration = Duration::from_secs(20);
/// How often one running job's `RunStoppedStatus` is asked for.
pub const RUN_STOP_CHECK: Duration = Duration::from_secs(5);

/// The intervals of a [`Cadence`]: [`Pace::default`] is the policy above;
/// [`Pace::every_call`] asks the server on every call (for tests that
/// drive the backend call by call).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pace {
    /// Pop interval while work is about.
    pub active_poll: Duration,
    /// Pop interval when long idle.
    pub idle_poll: Duration,
    /// How long after the last work the pace stays active.
    pub active_window: Duration,
    /// Over how long after the window the interval grows to `idle_poll`.
    pub relax_over: Duration,
    /// How often `stopPolling` is asked for.
    pub stop_check: Duration,
    /// A pop carries a heartbeat once this long has passed since the last.
    pub heartbeat_fold: Duration,
    /// A heartbeat of its own goes out when none went for this long.
    pub heartbeat_max: Duration,
    /// How often one running job's `RunStoppedStatus` is asked for.
    pub run_stop_check: Duration,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            active_poll: ACTIVE_POLL,
            idle_poll: IDLE_POLL,
            active_window: ACTIVE_WINDOW,
            relax_over: RELAX_OVER,
            stop_check: STOP_CHECK,
            heartbeat_fold: HEARTBEAT_FOLD,
            heartbeat_max: HEARTBEAT_MAX,
            run_stop_check: RUN_STOP_CHECK,
        }
    }
}

impl Pace {
    /// No interval at all: every pop, stop check and heartbeat goes to the
    /// server when the agent asks, each as a request of its own (no
    /// heartbeat rides along with a pop).
    pub fn every_call() -> Self {
        Pace {
            active_poll: Duration::ZERO,
            idle_poll: Duration::ZERO,
            active_window: Duration::ZERO,
            relax_over: Duration::ZERO,
            stop_check: Duration::ZERO,
            heartbeat_fold: Duration::MAX,
            heartbeat_max: Duration::ZERO,
            run_stop_check: Duration::ZERO,
        }
    }
}

/// The shortest sleep [`Cadence::next_wake`] gives.
pub const MIN_WAKE: Duration = Duration::from_millis(50);

/// The backend's clocks; all methods take `now` so tests can drive time.
#[derive(Debug)]
pub struct Cadence {
    pace: Pace,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Last time work was popped or a job ended (`None`: not since start).
    last_work: Option<Instant>,
    /// When the agent started (idle counts from here before any work).
    started: Instant,
    last_pop: Option<Instant>,
    last_stop_check: Option<Instant>,
    last_heartbeat: Option<(Instant, &'static str)>,
    run_checks: HashMap<String, Instant>,
}

impl Cadence {
    /// A cadence with `pace` starting at `now`, as if work had just been
    /// seen (an agent is usually started because work is coming).
    pub fn new(pace: Pace, now: Instant) -> Self {
        Cadence {
            pace,
            state: Mutex::new(State {
                last_work: Some(now),
                started: now,
                last_pop: None,
                last_stop_check: None,
                last_heartbeat: None,
                run_checks: HashMap::new(),
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// The pop interval at `now`: [`ACTIVE_POLL`] within [`ACTIVE_WINDOW`]
    /// of the last work, then growing linearly to [`IDLE_POLL`] over
    /// [`RELAX_OVER`].
    pub fn pop_interval(&self, now: Instant) -> Duration {
        let p = self.pace;
        self.with(|s| {
            let since = now.saturating_duration_since(s.last_work.unwrap_or(s.started));
            if since < p.active_window || p.idle_poll <= p.active_poll {
                return p.active_poll;
            }
            let relaxing = since - p.active_window;
            if relaxing >= p.relax_over {
                return p.idle_poll;
            }
            let share = relaxing.as_secs_f64() / p.relax_over.as_secs_f64();
            p.active_poll + (p.idle_poll - p.active_poll).mul_f64(share)
        })
    }

    /// Whether a pop is due at `now`.
    pub fn pop_due(&self, now: Instant) -> bool {
        let interval = self.pop_interval(now);
        self.with(|s| {
            s.last_pop
                .is_none_or(|t| now.saturating_duration_since(t) >= interval)
        })
    }

    /// A pop was made at `now`; `found` says whether it yielded work. After
    /// work the next pop is due at once, so a burst drains without waits.
    pub fn popped(&self, now: Instant, found: bool) {
        self.with(|s| {
            if found {
                s.last_work = Some(now);
                s.last_pop = None;
            } else {
                s.last_pop = Some(now);
            }
        })
    }

    /// A job ended at `now` (its user may well submit the next one).
    pub fn job_ended(&self, now: Instant) {
        self.with(|s| s.last_work = Some(now))
    }

    /// Whether `stopPolling` should be asked for at `now`; if so, the ask
    /// is counted as made.
    pub fn take_stop_check(&self, now: Instant) -> bool {
        let every = self.pace.stop_check;
        self.with(|s| {
            let due = s
                .last_stop_check
                .is_none_or(|t| now.saturating_duration_since(t) >= every);
            if due {
                s.last_stop_check = Some(now);
            }
            due
        })
    }

    /// Whether a pop at `now` should carry a heartbeat with `status`.
    pub fn heartbeat_rides_along(&self, now: Instant, status: &'static str) -> bool {
        let fold = self.pace.heartbeat_fold;
        if fold == Duration::MAX {
            return false;
        }
        self.with(|s| match s.last_heartbeat {
            None => true,
            Some((at, sent)) => sent != status || now.saturating_duration_since(at) >= fold,
        })
    }

    /// Whether a heartbeat of its own is needed at `now` with `status`.
    pub fn heartbeat_needed(&self, now: Instant, status: &'static str) -> bool {
        let max = self.pace.heartbeat_max;
        self.with(|s| match s.last_heartbeat {
            None => true,
            Some((at, sent)) => sent != status || now.saturating_duration_since(at) >= max,
        })
    }

    /// A heartbeat with `status` reached the server at `now`.
    pub fn heartbeat_sent(&self, now: Instant, status: &'static str) {
        self.with(|s| s.last_heartbeat = Some((now, status)))
    }

    /// Whether run `id`'s stop status should be asked for at `now`; if so,
    /// the ask is counted as made.
    pub fn take_run_stop_check(&self, id: &str, now: Instant) -> bool {
        let every = self.pace.run_stop_check;
        self.with(|s| {
            let due = s
                .run_checks
                .get(id)
                .is_none_or(|t| now.saturating_duration_since(*t) >= every);
            if due {
                s.run_checks.insert(id.to_string(), now);
            }
            due
        })
    }

    /// Forgets run `id` (it ended).
    pub fn forget_run(&self, id: &str) {
        self.with(|s| {
            s.run_checks.remove(id);
        })
    }

    /// How long the agent may sleep at `now` before a pop or a stop check
    /// is due (at least [`MIN_WAKE`], so a late clock never spins).
    pub fn next_wake(&self, now: Instant) -> Duration {
        let interval = self.pop_interval(now);
        self.with(|s| {
            let until = |last: Option<Instant>, every: Duration| {
                last.map_or(Duration::ZERO, |t| {
                    every.saturating_sub(now.saturating_duration_since(t))
                })
            };
            until(s.last_pop, interval)
                .min(until(s.last_stop_check, self.pace.stop_check))
                .max(MIN_WAKE)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// Plays an idle agent for `span` from `start`, waking when the cadence
    /// says, and counts the requests it would send.
    fn idle_requests(c: &Cadence, start: Instant, span: Duration) -> usize {
        let mut now = start;
        let mut requests = 0;
        while now < start + span {
            if c.take_stop_check(now) {
                requests += 1;
            }
            if c.pop_due(now) {
                // One request: the pop, with a heartbeat when one rides along.
                if c.heartbeat_rides_along(now, "POLLING") {
                    c.heartbeat_sent(now, "POLLING");
                }
                c.popped(now, false);
                requests += 1;
            }
            if c.heartbeat_needed(now, "POLLING") {
                c.heartbeat_sent(now, "POLLING");
                requests += 1;
            }
            now += c.next_wake(now);
        }
        requests
    }

    #[test]
    fn work_keeps_the_pace_fast_then_it_relaxes_to_w_and_b_s() {
        let t0 = Instant::now();
        let c = Cadence::new(Pace::default(), t0);
        c.popped(t0, true);
        assert_eq!(c.pop_interval(t0 + secs(30.0)), ACTIVE_POLL);
        let mid = c.pop_interval(t0 + ACTIVE_WINDOW + RELAX_OVER / 2);
        assert!(mid > ACTIVE_POLL && mid < IDLE_POLL, "{mid:?}");
        assert_eq!(c.pop_interval(t0 + ACTIVE_WINDOW + RELAX_OVER), IDLE_POLL);
        assert_eq!(c.pop_interval(t0 + secs(3600.0)), IDLE_POLL);
        c.job_ended(t0 + secs(3600.0));
        assert_eq!(c.pop_interval(t0 + secs(3601.0)), ACTIVE_POLL);
    }

    #[test]
    fn a_long_idle_agent_sends_at_most_ten_requests_per_30_s() {
        let t0 = Instant::now();
        let c = Cadence::new(Pace::default(), t0);
        // Long idle: past the window and the relaxation.
        let settled = t0 + ACTIVE_WINDOW + RELAX_OVER;
        idle_requests(&c, t0, settled - t0);
        let n = idle_requests(&c, settled, secs(300.0));
        let per_30s = n as f64 / 10.0;
        assert!(per_30s <= 10.0, "{per_30s} requests per 30 s");
        // And it still pops at W&B's pace: ~3 pops per 30 s, plus stop checks.
        assert!(per_30s >= 9.0, "{per_30s} requests per 30 s");
    }

    #[test]
    fn stop_polling_is_asked_for_within_5_s_whatever_the_pop_interval() {
        let t0 = Instant::now();
        let c = Cadence::new(Pace::default(), t0);
        let mut now = t0 + secs(3600.0);
        let mut last = None;
        for _ in 0..50 {
            if c.take_stop_check(now) {
                if let Some(prev) = last {
                    assert!(
                        now - prev <= secs(5.0),
                        "{:?} between stop checks",
                        now - prev
                    );
                }
                last = Some(now);
            }
            if c.pop_due(now) {
                c.popped(now, false);
            }
            now += c.next_wake(now);
        }
        assert!(last.is_some());
    }

    #[test]
    fn a_heartbeat_of_its_own_only_when_none_rode_along_or_the_status_changed() {
        let t0 = Instant::now();
        let c = Cadence::new(Pace::default(), t0);
        assert!(c.heartbeat_needed(t0, "POLLING"));
        c.heartbeat_sent(t0, "POLLING");
        assert!(!c.heartbeat_needed(t0 + secs(10.0), "POLLING"));
        assert!(c.heartbeat_rides_along(t0 + secs(10.0), "POLLING"));
        assert!(c.heartbeat_needed(t0 + secs(1.0), "RUNNING"));
        assert!(c.heartbeat_needed(t0 + HEARTBEAT_MAX, "POLLING"));
    }

    #[test]
    fn a_run_s_stop_status_is_asked_for_at_most_every_run_stop_check() {
        let t0 = Instant::now();
        let c = Cadence::new(Pace::default(), t0);
        assert!(c.take_run_stop_check("a", t0));
        assert!(!c.take_run_stop_check("a", t0 + secs(0.5)));
        assert!(c.take_run_stop_check("b", t0 + secs(0.5)));
        assert!(c.take_run_stop_check("a", t0 + RUN_STOP_CHECK));
        c.forget_run("a");
        assert!(c.take_run_stop_check("a", t0 + RUN_STOP_CHECK + secs(0.1)));
    }
}
