//! The highest snapshot-read version of each partition, so that the first transaction streamed
//! after a PostgreSQL snapshot is versioned after it (docs/versions.md).
//!
//! Debezium versions such a transaction's changes by their own WAL position (it has no
//! `lastCommitLsn` yet), which lies before the snapshot's position when the transaction was open
//! while the snapshot read. A snapshot read of a row always comes before that row's later
//! changes in the same partition, so remembering the partition's highest snapshot version and
//! versioning those changes above it keeps commit order. Every later transaction carries a
//! commit position past the snapshot and needs nothing. One number per partition.

use crate::decode::source::Ordering;

/// Per (Kafka topic, partition): the highest version of a snapshot read.
#[derive(Debug, Default)]
pub struct SnapshotFloors {
    floors: crate::FastMap<Box<str>, crate::FastMap<i32, u64>>,
}

impl SnapshotFloors {
    /// The version a change with `position` and `ordering`, read from (`topic`, `partition`),
    /// must be written at; remembers snapshot reads.
    pub fn version(
        &mut self,
        topic: &str,
        partition: i32,
        position: u64,
        ordering: Ordering,
    ) -> u64 {
        match ordering {
            Ordering::Plain => position,
            Ordering::SnapshotRead => {
                let floor = match self.floors.get_mut(topic) {
                    Some(parts) => parts.entry(partition).or_default(),
                    None => self
                        .floors
                        .entry(topic.into())
                        .or_default()
                        .entry(partition)
                        .or_default(),
                };
                *floor = (*floor).max(position);
                position
            }
            Ordering::AfterSnapshot => {
                let floor = self
                    .floors
                    .get(topic)
                    .and_then(|p| p.get(&partition))
                    .copied();
                match floor {
                    // Odd: a streamed change above the (even) snapshot reads.
                    Some(f) if f >= position => f | 1,
                    _ => position,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_transaction_after_a_snapshot_is_versioned_above_its_reads() {
        let mut f = SnapshotFloors::default();
        // Snapshot reads at 2 × 5000; a change of a transaction open during the snapshot, at
        // its own position 2 × 4000 + 1.
        assert_eq!(f.version("t", 0, 10_000, Ordering::SnapshotRead), 10_000);
        assert_eq!(f.version("t", 0, 8_001, Ordering::AfterSnapshot), 10_001);
        // Another partition saw no snapshot read: its own position.
        assert_eq!(f.version("t", 1, 8_001, Ordering::AfterSnapshot), 8_001);
        // A change past the snapshot keeps its position; plain ones are untouched.
        assert_eq!(f.version("t", 0, 12_001, Ordering::AfterSnapshot), 12_001);
        assert_eq!(f.version("t", 0, 7, Ordering::Plain), 7);
    }
}
