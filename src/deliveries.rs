//! Waiting for a librdkafka producer's delivery reports, for the producers whose reports a
//! task collects itself: the Druid sink's and the dead-letter queue's.
//!
//! rust-rdkafka's `BaseProducer::poll(wait)` serves events until `wait` is over, however early
//! a report comes (a Druid transaction's commit stood still 100 ms for it), and spins through
//! the last millisecond of it: it asks librdkafka for whole milliseconds. Polled in slices of
//! 2 ms, the dead-letter queue's producer spun half the time it waited (1.9 CPU-s in 4 s). So
//! a wait is `poll(0)`, which serves one event (one produce response's rows) and returns, and
//! a sleep of 1 ms, doubling up to 16 ms (a long wait, Kafka down, wakes 60 times a second),
//! until a report comes or the wait is over; then the reports already there are served one
//! call each while they keep coming.

use std::time::{Duration, Instant};

use rdkafka::producer::{BaseProducer, ProducerContext};

/// How long a wait sleeps before it looks again whether a report came: the first time, and
/// at most.
const NAP: (Duration, Duration) = (Duration::from_millis(1), Duration::from_millis(16));

/// Serves `producer`'s delivery reports: waits up to `wait` for a new one (none at all when
/// `wait` is zero, or when `in_flight` are reported already), then serves those already there,
/// until `in_flight` are reported.
/// `reported` counts the reports the producer's context holds.
pub fn serve<C: ProducerContext>(
    producer: &BaseProducer<C>,
    wait: Duration,
    in_flight: usize,
    reported: impl Fn(&BaseProducer<C>) -> usize,
) {
    let deadline = Instant::now() + wait;
    let before = reported(producer);
    let mut nap = NAP.0;
    loop {
        producer.poll(Duration::ZERO);
        let left = deadline.saturating_duration_since(Instant::now());
        let now = reported(producer);
        if left.is_zero() || now > before || now >= in_flight {
            break;
        }
        std::thread::sleep(left.min(nap));
        nap = (nap * 2).min(NAP.1);
    }
    // Measured on the Druid sink: without this, a 230 000 record backlog's acks trickled in one
    // produce response per turn of the task loop, and took 25 s to commit instead of 6.
    loop {
        let before = reported(producer);
        if before >= in_flight {
            break;
        }
        producer.poll(Duration::ZERO);
        if reported(producer) == before {
            break;
        }
    }
}
