//! The clock behind plugin deadlines: a thread that advances the engine's
//! epoch every [`EPOCH_TICK`] — but only while a plugin call is in flight.
//!
//! Why not a plain ticker: an agent is idle most of its life, and a thread
//! waking every 10 ms for nothing was almost all of an idle agent's CPU.
//! Here every plugin call holds a [`CallGuard`] for its Store's life; the
//! thread ticks while any call is in flight, goes on for [`LINGER`] after
//! the last one (so a burst of calls does not wake it once per call), then
//! parks until the next call. A deadline is counted in ticks from the
//! call's start, so a parked clock costs a call nothing but the first
//! tick's wait.
//!
//! | state | what the thread does | what a new call costs |
//! |---|---|---|
//! | ticking (a call in flight, or one ended within [`LINGER`]) | `increment_epoch` every [`EPOCH_TICK`] | two atomic adds |
//! | parked (no call for [`LINGER`]) | nothing: no timer, no wake-ups | the adds plus one `unpark` |

use crate::timeouts::EPOCH_TICK;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::Thread;
use std::time::{Duration, Instant};
use wasmtime::{Engine, EngineWeak};

/// How long the clock keeps ticking after the last call ended.
pub const LINGER: Duration = Duration::from_secs(1);

/// The epoch clock of one engine; share it with every plugin of the engine.
pub struct EpochClock {
    /// Calls in flight.
    in_flight: AtomicUsize,
    /// Calls ever started (tells the thread a call came and went between
    /// two of its looks).
    started: AtomicU64,
    /// Epoch increments so far.
    ticks: AtomicU64,
    /// Whether the thread is parked (or about to park).
    parked: AtomicBool,
    /// The ticking thread, to unpark; unset if it could not be started.
    thread: OnceLock<Thread>,
}

impl EpochClock {
    /// Starts the clock's thread for `engine`; it ends once the clock is
    /// dropped.
    pub fn start(engine: &Engine) -> Arc<EpochClock> {
        let clock = Arc::new(EpochClock {
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            ticks: AtomicU64::new(0),
            parked: AtomicBool::new(false),
            thread: OnceLock::new(),
        });
        // The thread gets a weak reference only once the clock exists (a
        // reference taken while it is being built would not upgrade).
        let (weak, engine) = (Arc::downgrade(&clock), engine.weak());
        let spawned = std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || tick_while_busy(weak, engine));
        match spawned {
            Ok(handle) => {
                let _ = clock.thread.set(handle.thread().clone());
            }
            Err(error) => {
                tracing::error!(%error, "cannot start the plugin deadline thread: plugin deadlines will not fire");
            }
        }
        clock
    }

    /// A call begins: the clock ticks until the guard is dropped (and
    /// [`LINGER`] after).
    pub fn enter(self: &Arc<Self>) -> CallGuard {
        self.started.fetch_add(1, SeqCst);
        self.in_flight.fetch_add(1, SeqCst);
        // The thread sets `parked` before it looks at `in_flight` one last
        // time, so either it sees this call or this sees it parked.
        // Cleared here, not only by the woken thread, so that the clock
        // never reads as parked once a call has begun.
        if self.parked.swap(false, SeqCst)
            && let Some(thread) = self.thread.get()
        {
            thread.unpark();
        }
        CallGuard {
            clock: self.clone(),
        }
    }

    /// How many times the epoch has advanced: a counter that stands still
    /// while the agent is idle.
    pub fn ticks(&self) -> u64 {
        self.ticks.load(SeqCst)
    }

    /// Whether the thread is parked (no timer running).
    pub fn is_parked(&self) -> bool {
        self.parked.load(SeqCst)
    }
}

impl Drop for EpochClock {
    fn drop(&mut self) {
        // Wake the thread so it sees the clock is gone and ends.
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }
}

/// Held by one plugin call (in its Store) while it may run.
pub struct CallGuard {
    clock: Arc<EpochClock>,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.clock.in_flight.fetch_sub(1, SeqCst);
    }
}

/// The thread: tick while calls are in flight or ended within [`LINGER`],
/// else park. Holds no strong reference while parked or sleeping, so the
/// clock can be dropped at any time.
fn tick_while_busy(clock: Weak<EpochClock>, engine: EngineWeak) {
    let mut seen_started = 0;
    let mut last_busy = Instant::now();
    loop {
        let park = {
            let (Some(clock), Some(engine)) = (clock.upgrade(), engine.upgrade()) else {
                return;
            };
            let started = clock.started.load(SeqCst);
            if clock.in_flight.load(SeqCst) > 0 || started != seen_started {
                seen_started = started;
                last_busy = Instant::now();
            }
            let mut park = false;
            if last_busy.elapsed() >= LINGER {
                // Say so first, then look once more: a call that begins
                // now either is seen here or sees `parked` and unparks.
                clock.parked.store(true, SeqCst);
                park = clock.in_flight.load(SeqCst) == 0;
                if !park {
                    clock.parked.store(false, SeqCst);
                }
            }
            if !park {
                engine.increment_epoch();
                clock.ticks.fetch_add(1, SeqCst);
            }
            park
        };
        if park {
            std::thread::park();
            if let Some(clock) = clock.upgrade() {
                clock.parked.store(false, SeqCst);
            }
            continue;
        }
        std::thread::sleep(EPOCH_TICK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits (bounded) until `done` holds.
    fn eventually(done: impl Fn() -> bool) -> bool {
        let until = Instant::now() + LINGER * 5;
        while Instant::now() < until {
            if done() {
                return true;
            }
            std::thread::sleep(EPOCH_TICK);
        }
        done()
    }

    #[test]
    fn the_clock_stands_still_while_no_call_is_in_flight() {
        let engine = Engine::default();
        let clock = EpochClock::start(&engine);
        assert!(eventually(|| clock.is_parked()), "the clock never parked");
        let parked_at = clock.ticks();
        std::thread::sleep(EPOCH_TICK * 20);
        assert_eq!(clock.ticks(), parked_at, "a parked clock ticked");
    }

    #[test]
    fn a_call_in_flight_makes_the_clock_tick_until_it_ends() {
        let engine = Engine::default();
        let clock = EpochClock::start(&engine);
        assert!(eventually(|| clock.is_parked()), "the clock never parked");
        let before = clock.ticks();
        let guard = clock.enter();
        assert!(
            eventually(|| clock.ticks() >= before + 3),
            "no ticks during a call"
        );
        drop(guard);
        assert!(
            eventually(|| clock.is_parked()),
            "the clock did not park after the call"
        );
        let parked_at = clock.ticks();
        std::thread::sleep(EPOCH_TICK * 20);
        assert_eq!(clock.ticks(), parked_at);
    }
}
