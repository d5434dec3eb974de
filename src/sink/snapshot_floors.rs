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
            Ordering::Plain | Ordering::OwnPosition => position,
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
                    // A streamed change (4n + 1) above the snapshot reads (4n).
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
        // Snapshot reads at 4 × 5000; a change of a transaction open during the snapshot, at
        // its own position 4 × 4000 + 3.
        assert_eq!(f.version("t", 0, 20_000, Ordering::SnapshotRead), 20_000);
        assert_eq!(f.version("t", 0, 16_003, Ordering::AfterSnapshot), 20_001);
        // Another partition saw no snapshot read: its own position.
        assert_eq!(f.version("t", 1, 16_003, Ordering::AfterSnapshot), 16_003);
        // A change past the snapshot keeps its position; plain ones are untouched.
        assert_eq!(f.version("t", 0, 24_003, Ordering::AfterSnapshot), 24_003);
        assert_eq!(f.version("t", 0, 7, Ordering::Plain), 7);
    }
}
