//! Closing a task's consumer (leaving its group) without holding up whoever waits for the task.
//!
//! librdkafka's close waits for the answers to what the consumer asked the group's coordinator
//! before: its last offset commit, then its LeaveGroup. The coordinator answers a member's
//! requests in order, and a JoinGroup sent just before (the group started rebalancing) is
//! answered only once every other member has joined again, which a member busy elsewhere
//! (finishing its writes in a revocation, standing still) can put off until its own
//! `max.poll.interval.ms` ends, five minutes by default. librdkafka gives a LeaveGroup 5 s, an
//! offset commit `socket.timeout.ms` (60 s). A restart or a new config waits for the task's end,
//! and so waited that long too: over a minute, twice, on a loaded CI machine.
//!
//! By then the task has written or given up all its writes, dropped its sink and asked for its
//! last offset commit: a consumer still closing holds nothing a new task could trip over. Its
//! partitions go to whoever the group gives them once it has left, and they are read from the
//! committed offsets; a commit answered late is read again from the one before (at least once),
//! and one of a generation the group has left is refused. So the task waits for the close only
//! up to [`CLOSE_WAIT`] (a close takes milliseconds when the group is not rebalancing); a close
//! still under way then goes on on a thread of its own, and the task ends. Kafka Connect's
//! consumers likewise give their close 30 s and then leave the rest behind.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

/// How long a task waits for its consumer to close before it ends without it.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// A close that took at least this long is logged.
const SLOW: Duration = Duration::from_secs(2);

/// Closes `consumer` (drops it), waiting up to `wait`: one not closed by then goes on closing on
/// a thread of its own. `label` names the task in the log.
pub fn close<C: Send + 'static>(consumer: C, label: &str, wait: Duration) {
    let started = Instant::now();
    let (done, closed) = mpsc::channel();
    let owned = label.to_string();
    let closing = std::thread::Builder::new()
        .name(format!("close {label}").replace('\0', "?"))
        .spawn(move || {
            drop(consumer);
            if done.send(()).is_err() {
                info!(task = %owned, "consumer closed after {:?}, the task having ended meanwhile", started.elapsed());
            }
        });
    // No thread: the consumer, moved into the closure that was not run, was dropped (closed) here.
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
    fn a_close_is_waited_for_up_to_the_bound_and_goes_on_after_it() {
        let closed = Arc::new(AtomicBool::new(false));
        close(
            SlowToClose(Duration::from_millis(10), closed.clone()),
            "quick",
            Duration::from_secs(5),
        );
        assert!(closed.load(Ordering::SeqCst), "a quick close is waited for");

        let closed = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        close(
            SlowToClose(Duration::from_millis(600), closed.clone()),
            "slow",
            Duration::from_millis(100),
        );
        assert!(started.elapsed() < Duration::from_millis(500));
        assert!(!closed.load(Ordering::SeqCst));
        let until = Instant::now() + Duration::from_secs(5);
        while !closed.load(Ordering::SeqCst) {
            assert!(Instant::now() < until, "the close did not go on");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
