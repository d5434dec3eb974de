//! Writes held after the process stood still. A worker stopped (SIGSTOP, a paused virtual
//! machine, heavy swapping) longer than its consumer's session timeout has lost its partitions
//! to another member, but learns it only once it runs again: librdkafka then finds its session
//! expired (at once, or from the group coordinator's answer to its next heartbeat) and the task
//! gives up its sink's writes (`Sink::abandon`). A write retrying behind Elasticsearch, whose
//! backoff ran out while the process stood still, would otherwise be sent first, and land after
//! the next owner's newer writes. So a clock ticks every [`TICK`] on the sink's runtime; a gap
//! over [`STALL`] between two ticks (or seen by a write before the clock has ticked again) holds
//! every write for [`HOLD`], time for librdkafka to say whether the partitions are still ours.
//! Only a stall sets it off: a worker that merely runs slowly is not held.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::warn;

pub const TICK: Duration = Duration::from_millis(100);
/// Ten ticks missed: the runtime's threads did not run for a second.
pub const STALL: Duration = Duration::from_secs(1);
/// librdkafka's main thread serves its group at least every second, and a session already
/// expired is seen there without a request; an expiry the coordinator reports takes one round
/// trip more. Three seconds cover both with room on a loaded machine.
pub const HOLD: Duration = Duration::from_secs(3);

/// The clock: milliseconds since `born`, shared by the sink's writes and its ticker.
#[derive(Debug)]
pub struct StallClock {
    born: Instant,
    ticked: AtomicU64,
    held_until: AtomicU64,
    /// Stalls seen so far, each counted (and logged) once.
    stalls: AtomicU64,
}

impl Default for StallClock {
    fn default() -> Self {
        StallClock {
            born: Instant::now(),
            ticked: AtomicU64::new(0),
            held_until: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
        }
    }
}

impl StallClock {
    fn now(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    /// A tick of the clock, every [`TICK`].
    pub fn tick(&self) {
        self.tick_at(self.now());
    }

    /// How long writes must still wait, if they must.
    pub fn held(&self) -> Option<Duration> {
        self.held_at(self.now())
    }

    fn tick_at(&self, now: u64) {
        let last = self.ticked.swap(now, Ordering::SeqCst);
        self.stalled(now, last);
    }

    fn held_at(&self, now: u64) -> Option<Duration> {
        // A write may run before the ticker after a stall: it checks the gap itself.
        self.stalled(now, self.ticked.load(Ordering::SeqCst));
        let until = self.held_until.load(Ordering::SeqCst);
        (now < until).then(|| Duration::from_millis(until - now))
    }

    /// Holds writes until [`HOLD`] after `now` if `last` to `now` is a stall.
    fn stalled(&self, now: u64, last: u64) {
        let gap = now.saturating_sub(last);
        if gap <= STALL.as_millis() as u64 {
            return;
        }
        let before = self
            .held_until
            .fetch_max(now + HOLD.as_millis() as u64, Ordering::SeqCst);
        // Seen a second time (by a write, then the ticker): the hold in place was set since
        // `last`, after the stall began.
        if before.saturating_sub(HOLD.as_millis() as u64) <= last {
            self.stalls.fetch_add(1, Ordering::Relaxed);
            warn!(
                "the process did not run for {gap} ms (stopped, a paused machine, swapping): \
                 bulk requests wait {} ms for the consumer to learn whether its partitions \
                 went to another member meanwhile",
                HOLD.as_millis()
            );
        }
    }

    #[cfg(test)]
    fn stalls(&self) -> u64 {
        self.stalls.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_holds_writes_for_a_while_and_a_late_tick_does_not() {
        let c = StallClock::default();
        let run = |from: u64, to: u64| (from..=to).step_by(100).for_each(|t| c.tick_at(t));
        let ms = Duration::from_millis;
        run(0, 1_000);
        assert_eq!(c.held_at(1_050), None);
        // A tick late by most of a second: not a stall.
        c.tick_at(1_950);
        assert_eq!(c.held_at(1_960), None);
        // Stopped for 10 s: a write that runs before the ticker sees it and waits; the
        // ticker, next, sees the same stall.
        assert_eq!(c.held_at(11_950), Some(HOLD));
        c.tick_at(11_960);
        assert_eq!(c.stalls(), 1);
        run(12_060, 12_960);
        assert_eq!(c.held_at(12_965), Some(ms(14_960 - 12_965)));
        run(13_060, 14_860);
        assert_eq!(c.held_at(14_950), Some(ms(10)));
        assert_eq!(c.held_at(14_960), None);
        // The next stall, seen by the ticker first.
        c.tick_at(25_000);
        assert_eq!(c.stalls(), 2);
        assert_eq!(c.held_at(25_000), Some(HOLD));
    }
}
