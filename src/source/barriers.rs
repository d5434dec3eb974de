//! Waiting for a whole topic. Some records need, before their sink may finish with them, every
//! partition of their Kafka topic written up to where the topic ended when they were read (the
//! last read of a table's snapshot: the other partitions hold the rest of the snapshot; see
//! [`crate::sink::Sink::awaits_topic`]).
//!
//! A partition this task reads counts as written by the task's own [`Offsets`]; any other (read
//! by another task or worker of the group) by the group's committed offset, which only ever
//! covers written records.

use std::time::{Duration, Instant};

use rdkafka::Timestamp;
use rdkafka::consumer::Consumer as _;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tracing::{info, warn};

use super::offsets::Offsets;
use super::{Consumer, RebalanceHandler};
use crate::sink::{Ack, TopicWait};

/// How often waiting barriers are looked at.
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// How long a metadata, watermark or committed-offset request may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// A barrier waiting longer than this is reported (and again each time as long).
const REPORT_AFTER: Duration = Duration::from_secs(60);

/// One partition's end when the barrier was set.
#[derive(Debug, Clone, Copy)]
struct Target {
    partition: i32,
    /// The partition's first offset. A target at or below it has nothing left to read: its
    /// records were written long ago, or removed before the group wrote them.
    low: i64,
    /// Every record below this offset must be written.
    end: i64,
}

#[derive(Debug)]
struct Barrier {
    ack: Ack,
    topic: String,
    partition: i32,
    offset: i64,
    /// The record's Kafka timestamp: what was produced before it is what it waits for.
    timestamp: Timestamp,
    /// Taken at the first check after the record was read.
    targets: Option<Vec<Target>>,
    since: Instant,
    reported: Instant,
}

/// The barriers of one task.
#[derive(Debug, Default)]
pub struct Barriers {
    waiting: Vec<Barrier>,
    /// Barriers passed whose record's partition still has records in flight: the sink may be
    /// working on the record still (a snapshot's clean-up running), and a revocation of its
    /// partition must reach it as a barrier still waiting would.
    passed: Vec<(Ack, String, i32)>,
    next_check: Option<Instant>,
}

impl Barriers {
    /// Waits for topic `topic` on behalf of the record (`partition`, `offset`, Kafka
    /// `timestamp`) acked by `ack`.
    pub fn add(
        &mut self,
        ack: Ack,
        topic: &str,
        partition: i32,
        offset: i64,
        timestamp: Timestamp,
    ) {
        let now = Instant::now();
        self.waiting.push(Barrier {
            ack,
            topic: topic.to_string(),
            partition,
            offset,
            timestamp,
            targets: None,
            since: now,
            reported: now,
        });
    }

    /// Forgets the barriers of records of revoked `partitions`, waiting or passed; returns
    /// their acks.
    pub fn revoke(&mut self, partitions: &[(String, i32)]) -> Vec<Ack> {
        let revoked = |topic: &str, partition: i32| {
            partitions
                .iter()
                .any(|(t, p)| t == topic && *p == partition)
        };
        let mut gone = Vec::new();
        self.waiting.retain(|b| {
            let r = revoked(&b.topic, b.partition);
            if r {
                gone.push(b.ack);
            }
            !r
        });
        self.passed.retain(|(ack, topic, partition)| {
            let r = revoked(topic, *partition);
            if r {
                gone.push(*ack);
            }
            !r
        });
        gone
    }

    /// Looks (at most every [`CHECK_EVERY`]) whether the topics waited for have caught up;
    /// returns the acks of the records whose topic has, each with how its wait ended.
    pub fn check<H: RebalanceHandler>(
        &mut self,
        consumer: &Consumer<H>,
        offsets: &Offsets,
        label: &str,
    ) -> Vec<(Ack, TopicWait)> {
        let now = Instant::now();
        // A record's work is over once nothing of its partition is in flight.
        self.passed
            .retain(|(_, topic, partition)| offsets.in_flight_of(topic, *partition) > 0);
        if self.waiting.is_empty() || self.next_check.is_some_and(|n| now < n) {
            return Vec::new();
        }
        self.next_check = Some(now + CHECK_EVERY);
        let mut passed = Vec::new();
        self.waiting.retain_mut(|b| {
            if let Timestamp::LogAppendTime(_) = b.timestamp {
                let why = format!(
                    "topic {} has broker-set timestamps (message.timestamp.type=LogAppendTime): each partition's leader stamps its records by its own clock, so which records of the other partitions were produced before the snapshot's end cannot be told by time",
                    b.topic
                );
                passed.push((b.ack, TopicWait::Never(why)));
                self.passed.push((b.ack, b.topic.clone(), b.partition));
                return false;
            }
            if b.targets.is_none() {
                let ts = b.timestamp.to_millis();
                match targets(consumer, &b.topic, b.partition, b.offset, ts) {
                    Ok(t) => b.targets = Some(t),
                    Err(e) => {
                        warn!(task = %label, topic = %b.topic, "cannot read where the topic ends: {e}");
                        return true;
                    }
                }
            }
            let targets = b.targets.as_deref().unwrap_or_default();
            match behind(consumer, offsets, &b.topic, targets) {
                Ok(Behind { lost, .. }) if !lost.is_empty() => {
                    let why = format!(
                        "partition(s) {lost:?} of topic {} lost records below where the snapshot ends there before the group wrote them (the log starts above them now: retention.ms or DeleteRecords); some of the snapshot's reads may have been among them, and their rows' documents would be deleted",
                        b.topic
                    );
                    passed.push((b.ack, TopicWait::Never(why)));
                    self.passed.push((b.ack, b.topic.clone(), b.partition));
                    false
                }
                Ok(Behind { lagging, .. }) if lagging.is_empty() => {
                    if b.since.elapsed() >= REPORT_AFTER {
                        info!(task = %label, topic = %b.topic, "every partition caught up");
                    }
                    passed.push((b.ack, TopicWait::CaughtUp));
                    self.passed.push((b.ack, b.topic.clone(), b.partition));
                    false
                }
                Ok(Behind { lagging, .. }) => {
                    if b.reported.elapsed() >= REPORT_AFTER {
                        b.reported = Instant::now();
                        warn!(task = %label, topic = %b.topic, waiting_s = b.since.elapsed().as_secs(),
                            "waiting for partitions {lagging:?} to be written up to the end of a snapshot");
                    }
                    true
                }
                Err(e) => {
                    warn!(task = %label, topic = %b.topic, "cannot read the group's committed offsets: {e}");
                    true
                }
            }
        });
        passed
    }
}

/// Every partition of `topic` and where the record's wait ends in it: the first record produced
/// after it (by Kafka timestamp), else the partition's end now; the record's own partition ends
/// at the record. Ending at the record's time, not at "now", keeps a later snapshot's end (in
/// another partition) out of this one's wait, so two never wait for each other.
fn targets<H: RebalanceHandler>(
    consumer: &Consumer<H>,
    topic: &str,
    partition: i32,
    offset: i64,
    timestamp_ms: Option<i64>,
) -> Result<Vec<Target>, String> {
    let meta = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .map_err(|e| e.to_string())?;
    let t = meta
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or("topic missing from the metadata")?;
    if let Some(e) = t.error() {
        return Err(format!("{e:?}"));
    }
    let mut after: crate::FastMap<i32, i64> = Default::default();
    if let Some(ts) = timestamp_ms.filter(|ts| *ts >= 0) {
        let mut tpl = TopicPartitionList::new();
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(ts + 1))
                .map_err(|e| e.to_string())?;
        }
        let found = consumer
            .offsets_for_times(tpl, TIMEOUT)
            .map_err(|e| format!("offsets by time: {e}"))?;
        for e in found.elements() {
            if let Offset::Offset(o) = e.offset() {
                after.insert(e.partition(), o);
            }
        }
    }
    let mut out = Vec::with_capacity(t.partitions().len());
    for p in t.partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), TIMEOUT)
            .map_err(|e| format!("partition {}: {e}", p.id()))?;
        let end = if p.id() == partition {
            offset
        } else {
            after.get(&p.id()).copied().unwrap_or(high)
        };
        out.push(Target {
            partition: p.id(),
            low,
            end,
        });
    }
    Ok(out)
}

/// The partitions of a barrier's topic not written up to their targets.
#[derive(Debug, Default, PartialEq, Eq)]
struct Behind {
    /// Not yet.
    lagging: Vec<i32>,
    /// Never: records below the target were removed from the log before the group wrote them.
    lost: Vec<i32>,
}

/// The partitions of `targets` not yet written up to their end.
fn behind<H: RebalanceHandler>(
    consumer: &Consumer<H>,
    offsets: &Offsets,
    topic: &str,
    targets: &[Target],
) -> Result<Behind, String> {
    let mut lagging = Vec::new();
    let mut lost = Vec::new();
    let mut ask = TopicPartitionList::new();
    // The consumer's position passes records it never hands out (transaction markers).
    let positions: crate::FastMap<i32, i64> = consumer
        .position()
        .map(|tpl| {
            tpl.elements_for_topic(topic)
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some((e.partition(), o)),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    for t in targets {
        // Nothing was ever there to write.
        if t.end <= 0 {
            continue;
        }
        let position = positions.get(&t.partition).copied();
        match offsets.written_below(topic, t.partition, t.end, position) {
            Some(true) => {}
            Some(false) => lagging.push(t.partition),
            None => {
                ask.add_partition(topic, t.partition);
            }
        }
    }
    if ask.count() > 0 {
        let committed = consumer
            .committed_offsets(ask, TIMEOUT)
            .map_err(|e| e.to_string())?;
        for e in committed.elements() {
            let target = targets.iter().find(|t| t.partition == e.partition());
            let (low, end) = target.map_or((0, i64::MAX), |t| (t.low, t.end));
            match e.offset() {
                Offset::Offset(c) if c >= end => {}
                // What the group had not written up to the target is gone.
                _ if end <= low => lost.push(e.partition()),
                _ => lagging.push(e.partition()),
            }
        }
    }
    lagging.sort_unstable();
    lost.sort_unstable();
    Ok(Behind { lagging, lost })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(slot: u32) -> Ack {
        Ack {
            slot,
            epoch: 0,
            offset: i64::from(slot),
        }
    }

    #[test]
    fn a_revocation_reaches_barriers_waiting_and_passed() {
        let mut b = Barriers::default();
        b.add(ack(1), "t", 0, 1, Timestamp::NotAvailable);
        b.add(ack(2), "t", 1, 2, Timestamp::NotAvailable);
        b.passed.push((ack(3), "t".into(), 0));
        b.passed.push((ack(4), "u".into(), 0));
        let mut gone = b.revoke(&[("t".into(), 0)]);
        gone.sort_by_key(|a| a.slot);
        assert_eq!(gone, [ack(1), ack(3)]);
        assert_eq!(b.revoke(&[("t".into(), 0)]), []);
        assert_eq!(b.revoke(&[("u".into(), 0), ("t".into(), 1)]).len(), 2);
    }
}
