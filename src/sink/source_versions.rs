//! The version of a change under `version.source=source`: its position in the source database's
//! log (docs/versions.md), raised above its partition's snapshot reads where PostgreSQL needs it
//! (`snapshot_floors`), or its Kafka offset when the source gives no position.
//!
//! Positions and Kafka offsets are two scales that do not compare: a binlog position is past
//! 2^40, a PostgreSQL version four times an LSN, an offset anywhere. When one partition's changes
//! come on both (SQL Server snapshot reads taken before its log had an LSN, then streamed
//! changes; a tool that writes Debezium's envelope with an empty binlog file name for some rows),
//! a change whose version is not above every version the other scale gave in its partition could
//! be refused by Elasticsearch as older than a document written on that scale: lost without a
//! word. The Elasticsearch connector ([`SourceVersions::checked`]) refuses such a change with an
//! error that says so; one above them (positions after a few offsets) is written. The Druid
//! connector keeps every row and orders nothing by it: nothing is checked.
//!
//! What the check knows is the task's memory since it started, kept when a rebalance gives a
//! partition back to the same task (docs/versions.md): a task started again (a restart) learns
//! each partition afresh from the changes it reads.

use crate::decode::ChangeEvent;
use crate::sink::SinkRecord;
use crate::sink::snapshot_floors::SnapshotFloors;

/// The highest version each scale gave in one partition.
#[derive(Debug, Default, Clone, Copy)]
struct Highest {
    position: Option<u64>,
    offset: Option<u64>,
}

/// Versions of the changes one task writes.
#[derive(Debug, Default)]
pub struct SourceVersions {
    floors: SnapshotFloors,
    /// Whether a change on one scale must be above the other scale's versions.
    checked: bool,
    /// Per Kafka topic (before routing), per partition by its number: a change's lookup costs
    /// one comparison of its topic's name with the last one's. Callgrind over the `hot` run
    /// without schema, whose records' partitions alternate: 8 instructions a record more than
    /// without the check (0.08%); a map per (topic, partition) with the last entry cached had
    /// cost 290.
    highest: Vec<(Box<str>, Vec<Highest>)>,
    /// Each topic's place in `highest`.
    topics: crate::FastMap<Box<str>, usize>,
    /// The last topic's place.
    last: usize,
}

impl SourceVersions {
    /// Versions whose two scales are checked against each other (Elasticsearch).
    pub fn checked() -> SourceVersions {
        SourceVersions {
            checked: true,
            ..SourceVersions::default()
        }
    }

    /// The version of `ev`, read as `rec`.
    pub fn version(&mut self, rec: &SinkRecord<'_>, ev: &ChangeEvent) -> Result<u64, String> {
        let (topic, partition) = (rec.kafka_topic, rec.partition);
        let Some(s) = ev.source.as_ref() else {
            return self.offset(rec);
        };
        match &s.position {
            Ok(Some(v)) => {
                // Checked before the floors remember a snapshot read: a refused change leaves
                // nothing behind. The floors only raise a version, so a position above the
                // offsets stays above them.
                if self.checked {
                    let h = self.entry(topic, partition);
                    if let Some(o) = h.offset.filter(|o| v <= o) {
                        return Err(format!(
                            "cannot version the change: its source position ({v}) is not above Kafka offset {o}, \
                             by which earlier changes of topic {topic} partition {partition} without a position \
                             were versioned; Elasticsearch could refuse it as older than they are. If this topic's \
                             source gives no position for some changes, set version.source=offset (docs/versions.md)"
                        ));
                    }
                    h.position = h.position.max(Some(*v));
                }
                Ok(self.floors.version(topic, partition, *v, s.ordering))
            }
            Err(e) => Err(format!("cannot version the change: {e}")),
            Ok(None) => self.offset(rec),
        }
    }

    /// The version of a change whose source gives no position: its Kafka offset.
    fn offset(&mut self, rec: &SinkRecord<'_>) -> Result<u64, String> {
        let (topic, partition, v) = (rec.kafka_topic, rec.partition, rec.offset as u64);
        if self.checked {
            let h = self.entry(topic, partition);
            if let Some(p) = h.position.filter(|p| v <= *p) {
                return Err(format!(
                    "cannot version the change: it carries no source position, and its Kafka offset ({v}) is \
                     not above version {p}, given by the source position of an earlier change of topic \
                     {topic} partition {partition}; Elasticsearch could refuse it as older than that one. If \
                     this topic's source gives no position for some changes, set version.source=offset \
                     (docs/versions.md). A task started again without that forgets the earlier change, and \
                     then writes this one at its offset, where it may be refused as stale"
                ));
            }
            h.offset = h.offset.max(Some(v));
        }
        Ok(v)
    }

    /// The highest versions of (`topic`, `partition`).
    fn entry(&mut self, topic: &str, partition: i32) -> &mut Highest {
        let i = match self.highest.get(self.last) {
            Some((t, _)) if **t == *topic => self.last,
            _ => match self.topics.get(topic) {
                Some(i) => *i,
                None => {
                    self.highest.push((topic.into(), Vec::new()));
                    self.topics.insert(topic.into(), self.highest.len() - 1);
                    self.highest.len() - 1
                }
            },
        };
        self.last = i;
        let parts = &mut self.highest[i].1;
        // Kafka's partitions are numbered from 0.
        let p = usize::try_from(partition).unwrap_or_default();
        if parts.len() <= p {
            parts.resize(p + 1, Highest::default());
        }
        &mut parts[p]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::source::Source;
    use crate::decode::{Op, Value};

    fn change(source: &str) -> Value {
        Value::Change(ChangeEvent {
            op: Op::Update,
            before: None,
            after: None,
            source: Some(Source::parse(source, false, false).unwrap()),
            ts_ms: None,
        })
    }

    fn version(
        v: &mut SourceVersions,
        (topic, partition): (&str, i32),
        offset: i64,
        value: &Value,
    ) -> Result<u64, String> {
        let Value::Change(ev) = value else {
            unreachable!()
        };
        let rec = SinkRecord {
            topic,
            kafka_topic: topic,
            partition,
            offset,
            timestamp_ms: None,
            key: None,
            value,
            received_ms: 0,
        };
        v.version(&rec, ev)
    }

    #[test]
    fn a_change_below_the_other_scales_versions_is_refused() {
        let binlog = change(r#"{"connector":"mysql","file":"bin.000003","pos":154,"row":0}"#);
        let without = change(r#"{"connector":"mysql","file":"","pos":0,"row":0}"#);
        let lsn = |l: u64| change(&format!(r#"{{"connector":"postgresql","lsn":{l}}}"#));
        let mut v = SourceVersions::checked();
        let (a0, a1, b0) = (("a", 0), ("a", 1), ("b", 0));
        // Offsets, then a position above them (SQL Server's snapshot before its first LSN,
        // then its stream): written.
        assert_eq!(version(&mut v, a0, 7, &without), Ok(7));
        assert_eq!(version(&mut v, a0, 8, &binlog), Ok(3 << 40 | 154));
        // An offset below that position: refused, naming it; so is a position below an offset.
        let e = version(&mut v, a0, 9, &without).unwrap_err();
        assert!(
            e.contains("no source position") && e.contains("topic a partition 0"),
            "{e}"
        );
        assert_eq!(version(&mut v, b0, 500, &without), Ok(500));
        let e = version(&mut v, b0, 501, &lsn(100)).unwrap_err();
        assert!(
            e.contains("not above Kafka offset 500") && e.contains("topic b partition 0"),
            "{e}"
        );
        // The refused change left nothing behind: a position above the offsets is taken, and
        // an offset above the positions too.
        assert_eq!(version(&mut v, b0, 502, &lsn(600)), Ok(600));
        assert_eq!(version(&mut v, b0, 601, &without), Ok(601));
        // Each partition on its own, also after others came between.
        assert_eq!(version(&mut v, a1, 3, &without), Ok(3));
        assert!(version(&mut v, a0, 10, &without).is_err());
        assert_eq!(version(&mut v, a1, 4, &without), Ok(4));
        assert!(version(&mut v, b0, 602, &lsn(601)).is_err());

        // Unchecked (Druid): every change gets its version.
        let mut v = SourceVersions::default();
        assert_eq!(version(&mut v, a0, 8, &binlog), Ok(3 << 40 | 154));
        assert_eq!(version(&mut v, a0, 9, &without), Ok(9));
    }
}
