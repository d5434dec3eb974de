//! Closing a task's consumer (its last offset commit answered, its group left) without holding
//! up whoever waits for the task.
//!
//! librdkafka's close waits for the answers to what the consumer asked the group's coordinator
//! before: its last offset commit, then its LeaveGroup. The coordinator answers a member's
//! requests in order, and a JoinGroup sent just before (the group started rebalancing) is
//! answered only once every other member has joined again, which a member busy elsewhere
//! (finishing its writes in a revocation, standing still) can put off until its own
//! `max.poll.interval.ms` ends, five minutes by default. librdkafka gives an offset commit
//! `socket.timeout.ms` (60 s) and a LeaveGroup 5 s. A restart or a new config waits for the
//! task's end, and so waited that long too: over a minute, twice, on a loaded CI machine, and
//! 60 s in `rest::a_restart_while_an_offset_commit_waits_behind_the_rebalance…`.
//!
//! By then the task has written or given up all its writes, dropped its sink and asked for its
//! last offset commit: a consumer still closing holds nothing a new task could trip over, and
//! reads nothing more. A commit answered late is of the generation the consumer was in, which
//! the coordinator refuses once the group has moved on; one never made means records read again
//! (at least once). So the task waits for the close only up to [`CLOSE_WAIT`] (a close takes
//! milliseconds when the group is not rebalancing); a close still under way then goes on on a
//! thread of its own, and the task ends. A member whose LeaveGroup timed out stays in the group
//! until its rebalance completes and then its `session.timeout.ms` ends, as it did when the task
//! waited for the close. What moves a group's offsets waits for its closes still under way
//! ([`closing`]) as it waits for the group's members.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::{info, warn};

/// How long a task waits for its consumer to close before it ends without it.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// A close that took at least this long is logged.
const SLOW: Duration = Duration::from_secs(2);

/// Closes under way in this process, by consumer group.
static CLOSING: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

/// How many consumers of group `group` this process is still closing.
pub fn closing(group: &str) -> usize {
    let closing = CLOSING.lock().unwrap_or_else(PoisonError::into_inner);
    closing.get(group).copied().unwrap_or(0)
}

/// One close counted in [`CLOSING`] while it lasts.
struct Counted(String);

impl Counted {
    fn new(group: &str) -> Counted {
        let mut closing = CLOSING.lock().unwrap_or_else(PoisonError::into_inner);
        *closing.entry(group.to_string()).or_default() += 1;
        Counted(group.to_string())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut closing = CLOSING.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = closing.get_mut(&self.0) {
            *n -= 1;
            if *n == 0 {
                closing.remove(&self.0);
            }
        }
    }
}

/// Closes `consumer` (drops it), a member of `group`, waiting up to `wait`: one not closed by
/// then goes on closing on a thread of its own. `label` names the task in the log.
pub fn close<C: Send + 'static>(consumer: C, group: &str, label: &str, wait: Duration) {
    let started = Instant::now();
    let (done, closed) = mpsc::channel();
    let owned = label.to_string();
    let counted = Counted::new(group);
    let closing = std::thread::Builder::new()
        .name(format!("close {label}").replace('\0', "?"))
        .spawn(move || {
            drop(consumer);
            drop(counted);
            if done.send(()).is_err() {
                info!(task = %owned, "consumer closed after {:?}, the task having ended meanwhile", started.elapsed());
            }
        });
    // No thread: the closure, with the consumer, was dropped unrun, and the consumer closed here.
    if let Err(e) = closing {
        warn!(task = %label, "no thread to close the consumer on ({e}): closed on the task's");
    } else if closed.recv_timeout(wait).is_err() {
        warn!(task = %label, "the consumer has not closed within {wait:?}: its last offset commit or its leave of the group waits for the group's coordinator, which answers a JoinGroup of a rebalancing group first, once every other member has joined again. The task ends, its writes done or given up; the consumer goes on closing on a thread of its own");
    }
    let took = started.elapsed();
    if (SLOW..wait).contains(&took) {
        warn!(task = %label, "closing the consumer (leaving the group) took {took:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Stands for a consumer whose close (drop) takes as long as its first field says.
    struct SlowToClose(Duration, Arc<AtomicBool>);

    impl Drop for SlowToClose {
        fn drop(&mut self) {
            std::thread::sleep(self.0);
            self.1.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_close_is_waited_for_up_to_the_bound_and_goes_on_after_it_counted() {
        let closed = Arc::new(AtomicBool::new(false));
        close(
            SlowToClose(Duration::from_millis(10), closed.clone()),
            "unit-quick",
            "quick",
            Duration::from_secs(10),
        );
        assert!(closed.load(Ordering::SeqCst), "a quick close is waited for");
        assert_eq!(closing("unit-quick"), 0);

        let closed = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        close(
            SlowToClose(Duration::from_secs(3), closed.clone()),
            "unit-slow",
            "slow",
            Duration::from_millis(100),
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(!closed.load(Ordering::SeqCst));
        assert_eq!(closing("unit-slow"), 1, "a close under way is counted");
        let until = Instant::now() + Duration::from_secs(30);
        while closing("unit-slow") > 0 {
            assert!(Instant::now() < until, "the close did not go on");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(closed.load(Ordering::SeqCst));
    }
}
