//! The version of a change under `version.source=source`: its position in the source database's
//! log (docs/versions.md), raised above its partition's snapshot reads where PostgreSQL needs it
//! (`snapshot_floors`), or its Kafka offset when the source gives no position.
//!
//! Positions and Kafka offsets are two scales that do not compare: a binlog position is in the
//! trillions, an LSN in the tens of millions, an offset anywhere. Should one topic's changes come
//! on both (a tool that writes Debezium's envelope with an empty binlog file name for some rows
//! only), a change versioned by one scale could be refused as older than a document written on
//! the other, and be lost silently. So each topic keeps the scale its first change had, and a
//! change on the other one is an error naming the problem.

use crate::decode::ChangeEvent;
use crate::sink::SinkRecord;
use crate::sink::snapshot_floors::SnapshotFloors;

/// Which scale a topic's changes were versioned on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scale {
    Position,
    Offset,
}

/// Versions of the changes one task writes.
#[derive(Debug, Default)]
pub struct SourceVersions {
    floors: SnapshotFloors,
    /// Per topic read (before routing), the scale of its first versioned change.
    scales: crate::FastMap<Box<str>, Scale>,
    /// The last topic looked up (its buffer reused) and its scale: records come in runs of one
    /// partition.
    last: (String, Option<Scale>),
}

impl SourceVersions {
    /// The version of `ev`, read as `rec`.
    pub fn version(&mut self, rec: &SinkRecord<'_>, ev: &ChangeEvent) -> Result<u64, String> {
        let (version, scale) = match ev.source.as_ref() {
            Some(s) => match &s.position {
                Ok(Some(v)) => {
                    let v = self
                        .floors
                        .version(rec.kafka_topic, rec.partition, *v, s.ordering);
                    (v, Scale::Position)
                }
                Err(e) => return Err(format!("cannot version the change: {e}")),
                Ok(None) => (rec.offset as u64, Scale::Offset),
            },
            None => (rec.offset as u64, Scale::Offset),
        };
        self.check(rec.kafka_topic, scale)?;
        Ok(version)
    }

    /// Remembers `topic`'s scale, or says why `scale` cannot be mixed with it.
    fn check(&mut self, topic: &str, scale: Scale) -> Result<(), String> {
        let first = match self.last {
            (ref t, Some(s)) if t == topic => s,
            _ => {
                let s = match self.scales.get(topic) {
                    Some(s) => *s,
                    None => *self.scales.entry(topic.into()).or_insert(scale),
                };
                self.last.0.clear();
                self.last.0.push_str(topic);
                self.last.1 = Some(s);
                s
            }
        };
        match (first, scale) {
            (a, b) if a == b => Ok(()),
            (Scale::Position, _) => Err(format!(
                "cannot version the change: it carries no source position, while earlier changes of topic \
                 {topic} did; by its Kafka offset it could be refused as older than they are, or win over \
                 newer ones. If this topic's source gives no positions for some changes, set \
                 version.source=offset (docs/versions.md)"
            )),
            (Scale::Offset, _) => Err(format!(
                "cannot version the change: it carries a source position, while earlier changes of topic \
                 {topic} carried none and were versioned by their Kafka offset; the two do not compare. \
                 If this topic's source gives no positions for some changes, set version.source=offset \
                 (docs/versions.md)"
            )),
        }
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
        topic: &str,
        offset: i64,
        value: &Value,
    ) -> Result<u64, String> {
        let Value::Change(ev) = value else {
            unreachable!()
        };
        let rec = SinkRecord {
            topic,
            kafka_topic: topic,
            partition: 0,
            offset,
            timestamp_ms: None,
            key: None,
            value,
            received_ms: 0,
        };
        v.version(&rec, ev)
    }

    #[test]
    fn a_topic_keeps_the_scale_of_its_first_change() {
        let positioned = change(r#"{"connector":"mysql","file":"bin.000003","pos":154,"row":0}"#);
        let without = change(r#"{"connector":"mysql","file":"","pos":0,"row":0}"#);
        let unknown = change(r#"{"connector":"db2","change_lsn":"x"}"#);
        let mut v = SourceVersions::default();
        assert_eq!(version(&mut v, "a", 7, &positioned), Ok(3 << 40 | 154));
        // Offsets on another topic are their own scale.
        assert_eq!(version(&mut v, "b", 8, &without), Ok(8));
        assert_eq!(version(&mut v, "b", 9, &unknown), Ok(9));
        // Mixing on one topic, either way, is an error that names it; nothing is remembered
        // from the refused change.
        let e = version(&mut v, "a", 10, &without).unwrap_err();
        assert!(
            e.contains("no source position") && e.contains("topic a"),
            "{e}"
        );
        let e = version(&mut v, "b", 11, &positioned).unwrap_err();
        assert!(e.contains("carried none") && e.contains("topic b"), "{e}");
        assert_eq!(version(&mut v, "a", 12, &positioned), Ok(3 << 40 | 154));
        assert_eq!(version(&mut v, "b", 13, &unknown), Ok(13));
    }
}
