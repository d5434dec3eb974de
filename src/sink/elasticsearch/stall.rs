//! Writes held after the process stood still. A worker stopped (SIGSTOP, a cgroup frozen,
//! heavy swapping) longer than its consumer's session timeout has lost its partitions to another
//! member, but learns it only once it runs again: librdkafka then finds its session expired (at
//! once, or from the group coordinator's answer to its next heartbeat), and the task, at its
//! next poll of the consumer, gives up its sink's writes (`Sink::abandon`). A write retrying
//! behind Elasticsearch, whose backoff ran out while the process stood still, would otherwise
//! be sent first, and land after the next owner's newer writes.
//!
//! So a clock ticks every [`TICK`] on the sink's runtime. A gap between two ticks (or seen by a
//! write before the clock has ticked again) long enough that the group may have moved on
//! ([`threshold`]) holds every bulk write for [`HOLD`], time for librdkafka to find out, and
//! then until a poll of the task's consumer begun since has gone through its queue
//! (`source::went_through`), so that a loss found is acted on (a task thread busy elsewhere, fetching a schema, holds them longer: a poll that
//! returned a record before the time was up does not count, however long the record kept the
//! task busy after it). Whoever drains the sink without polling (a revocation, inside its poll;
//! a stopping task) gives held writes up rather than wait for them (`task.rs`).
//! A virtual machine paused by its host is not seen: its monotonic clock stands still too. Nor
//! is a request the process stopped in the middle of sending, its last check passed: it goes
//! out as soon as the process runs again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use tracing::warn;

pub const TICK: Duration = Duration::from_millis(100);
/// The shortest stall that holds writes, whatever the session allows.
pub const MIN_STALL: Duration = Duration::from_secs(1);
/// librdkafka's main thread serves its group at least every second, and a session already
/// expired is seen there without a request; an expiry the coordinator reports takes one round
/// trip more.
pub const HOLD: Duration = Duration::from_secs(3);

/// The stall after which writes are held, for a consumer whose session ends `session_gap`
/// after its last heartbeat could have been sent (`session.timeout.ms` less
/// `heartbeat.interval.ms`): the group cannot have moved on after a shorter stall, and half of
/// it leaves room for a heartbeat answered late. Shorter stalls (a busy runtime) hold nothing.
pub fn threshold(session_gap: Duration) -> Duration {
    (session_gap / 2).max(MIN_STALL)
}

/// The clock: milliseconds since `born`, shared by the sink's writes and its ticker.
#[derive(Debug)]
pub struct StallClock {
    born: Instant,
    /// A gap longer than this is a stall (ms).
    stall: u64,
    ticked: AtomicU64,
    held_until: AtomicU64,
    /// When the latest poll of the task's consumer known to have returned began.
    polled: AtomicU64,
    /// Stalls seen so far, each counted (and logged) once: `cdc_sink_stalls_total`.
    stalls: IntCounter,
}

impl StallClock {
    /// A clock that counts the stalls it sees in `stalls`.
    pub fn new(stall: Duration, stalls: IntCounter) -> StallClock {
        StallClock {
            born: Instant::now(),
            stall: stall.as_millis() as u64,
            ticked: AtomicU64::new(0),
            held_until: AtomicU64::new(0),
            polled: AtomicU64::new(0),
            stalls,
        }
    }

    /// The task has polled its consumer, serving the rebalance callbacks librdkafka had queued
    /// when the poll `began` (`Sink::consumer_polled`; once per burst of records).
    pub fn polled(&self, began: Instant) {
        self.polled_at(began.saturating_duration_since(self.born).as_millis() as u64);
    }

    fn polled_at(&self, now: u64) {
        self.polled.fetch_max(now, Ordering::SeqCst);
    }

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
        // The hold first, then the tick: a write that sees the new tick (and so no gap of its
        // own) must see the hold too. The other order let a write woken with the ticker pass
        // between the two.
        let last = self.ticked.load(Ordering::SeqCst);
        self.stalled(now, last);
        self.ticked.fetch_max(now, Ordering::SeqCst);
    }

    fn held_at(&self, now: u64) -> Option<Duration> {
        // A write may run before the ticker after a stall: it checks the gap itself.
        self.stalled(now, self.ticked.load(Ordering::SeqCst));
        let until = self.held_until.load(Ordering::SeqCst);
        if now < until {
            return Some(Duration::from_millis(until - now));
        }
        // The time is up, but no poll of the task's consumer begun since has gone through: a loss
        // librdkafka found meanwhile is not acted on yet. Asked again a tick later.
        (self.polled.load(Ordering::SeqCst) < until).then_some(TICK)
    }

    /// Holds writes until [`HOLD`] after `now` if `last` to `now` is a stall.
    fn stalled(&self, now: u64, last: u64) {
        let gap = now.saturating_sub(last);
        if gap <= self.stall {
            return;
        }
        let before = self
            .held_until
            .fetch_max(now + HOLD.as_millis() as u64, Ordering::SeqCst);
        // Seen a second time (by a write, then the ticker): the hold in place was set since
        // `last`, after the stall began.
        if before.saturating_sub(HOLD.as_millis() as u64) <= last {
            self.stalls.inc();
            warn!(
                "the process did not run for {gap} ms (stopped, frozen, swapping): bulk writes \
                 wait {} ms and a poll of the consumer after that, for the task to learn \
                 whether its partitions went to another member meanwhile",
                HOLD.as_millis()
            );
        }
    }

    #[cfg(test)]
    fn stalls(&self) -> u64 {
        self.stalls.get()
    }

    #[cfg(test)]
    fn counted(stall: Duration) -> StallClock {
        StallClock::new(stall, IntCounter::new("stalls", "stalls").unwrap())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_holds_writes_for_a_while_and_a_late_tick_does_not() {
        let c = StallClock::counted(MIN_STALL);
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
        // The time is up; no poll begun since has returned (a poll begun before the time was
        // up may not have served the loss, whenever it returned).
        c.polled_at(14_000);
        assert_eq!(c.held_at(14_960), Some(TICK));
        assert_eq!(c.held_at(15_500), Some(TICK));
        c.polled_at(15_500);
        assert_eq!(c.held_at(15_500), None);
        // The next stall, seen by the ticker first.
        c.tick_at(25_000);
        assert_eq!(c.stalls(), 2);
        assert_eq!(c.held_at(25_000), Some(HOLD));
    }
}

#[cfg(test)]
mod threshold_tests {
    use super::*;

    #[test]
    fn only_a_stall_the_group_may_have_moved_on_in_holds_writes() {
        // librdkafka's defaults: a 45 s session, a heartbeat every 3 s.
        assert_eq!(threshold(Duration::from_secs(42)), Duration::from_secs(21));
        assert_eq!(threshold(Duration::ZERO), MIN_STALL);
        let c = StallClock::counted(threshold(Duration::from_secs(42)));
        (0..=1_000).step_by(100).for_each(|t| c.tick_at(t));
        // A runtime busy for 5 s: not held.
        assert_eq!(c.held_at(6_000), None);
        c.tick_at(6_000);
        c.polled_at(6_000);
        assert_eq!(c.held_at(28_000), Some(HOLD));
        assert_eq!(c.stalls(), 1);
    }
}
