//! The memory a task keeps between a Debezium delete event and the tombstone that follows it.
//!
//! Debezium writes a delete as two records of the same key, one right after the other in the
//! partition: the `d` event (which carries the source position) and a tombstone (which carries
//! nothing but the key). When tombstones delete documents (`behavior.on.null.values=delete`),
//! the tombstone must delete *at the version of its `d` event*: an unversioned delete would bump
//! Elasticsearch's version past a re-created row's, and that row's replay would then be refused
//! as stale (the document lost).
//!
//! So each partition remembers its last delete event. The task also holds the partition's offset
//! commit at the delete until the record after it is handled (see `source::offsets`), so a
//! restart never begins between a delete and its tombstone: the delete is always read again
//! first. What is remembered per partition is one entry, so memory is bounded by the number of
//! assigned partitions.
//!
//! A delete is remembered within the assignment of its partition it was read in (its ack's
//! epoch). The sink outlives rebalances: a partition revoked between a delete and its tombstone
//! has both read again by its next owner (the commit held at the delete), and may come back to
//! this task much later, with its log compacted meanwhile. A tombstone read then, of a later
//! delete of the same document that compaction took away, would have deleted at the old
//! delete's version, been answered 409 below the re-created document's version and counted as
//! written, leaving a deleted row in the index. Of another assignment, it is an unversioned
//! delete, as any tombstone whose delete event this task did not read.
//!
//! Nor does a remembered delete outlast a record of its partition that the task passed over
//! without handling it (`errors.tolerance=all`; `RecentDeletes::passed_over`) when that record
//! may be a delete (its value unread, or read as one) and its key names the same document, or
//! none that can be told: it may be the delete event the next tombstone belongs to, unreadable,
//! with the document created again since the delete remembered. Any other record leaves the memory as it is: with several producers writing a
//! topic, a delete, a newer create of the same document and then the delete's tombstone must
//! still delete at the delete's version, which leaves the newer row.

use std::sync::Arc;

/// The delete event a tombstone belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    pub index: Arc<str>,
    pub version: Option<u64>,
}

#[derive(Debug)]
struct Entry {
    id: String,
    /// The assignment of the partition the delete was read in (its ack's epoch).
    assignment: u32,
    deleted: Deleted,
}

/// The last delete event of each partition, by Kafka topic, then partition (looked up by
/// `&str` without allocating: this is on every record's path).
#[derive(Debug, Default)]
pub struct RecentDeletes {
    last: crate::FastMap<Box<str>, crate::FastMap<i32, Entry>>,
}

impl RecentDeletes {
    /// A delete event of document `id` was read from (`topic`, `partition`) in `assignment`.
    pub fn deleted(
        &mut self,
        topic: &str,
        partition: i32,
        assignment: u32,
        id: String,
        deleted: Deleted,
    ) {
        let entry = Entry {
            id,
            assignment,
            deleted,
        };
        match self.last.get_mut(topic) {
            Some(parts) => {
                parts.insert(partition, entry);
            }
            None => {
                let mut parts = crate::FastMap::default();
                parts.insert(partition, entry);
                self.last.insert(topic.into(), parts);
            }
        }
    }

    /// The delete event that the tombstone of `id` read from (`topic`, `partition`) in
    /// `assignment` follows, if this task read it in the same assignment; consumed. One of the
    /// same document read in an earlier assignment is dropped.
    pub fn tombstone(
        &mut self,
        topic: &str,
        partition: i32,
        assignment: u32,
        id: &str,
    ) -> Option<Deleted> {
        let parts = self.last.get_mut(topic)?;
        match parts.get(&partition) {
            Some(e) if e.id == id => parts
                .remove(&partition)
                .filter(|e| e.assignment == assignment)
                .map(|e| e.deleted),
            _ => None,
        }
    }

    /// A record of (`topic`, `partition`) was passed over without being mapped: the delete
    /// event remembered there is forgotten, unless `id` (the record's document, when its key
    /// tells it) is another document's.
    pub fn passed_over(&mut self, topic: &str, partition: i32, id: Option<&str>) {
        if let Some(parts) = self.last.get_mut(topic)
            && parts
                .get(&partition)
                .is_some_and(|e| id.is_none_or(|id| e.id == id))
        {
            parts.remove(&partition);
        }
    }

    /// Partitions remembered (bounded by the partitions ever assigned).
    pub fn len(&self) -> usize {
        self.last.values().map(|p| p.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(v: u64) -> Deleted {
        Deleted {
            index: "i".into(),
            version: Some(v),
        }
    }

    #[test]
    fn a_tombstone_takes_the_version_of_its_delete_event() {
        let mut r = RecentDeletes::default();
        r.deleted("t", 0, 1, "7".into(), d(40));
        assert_eq!(r.tombstone("t", 1, 1, "7"), None, "another partition");
        assert_eq!(r.tombstone("t", 0, 1, "8"), None, "another document");
        assert_eq!(r.tombstone("t", 0, 1, "7"), Some(d(40)));
        assert_eq!(r.tombstone("t", 0, 1, "7"), None, "used once");
    }

    #[test]
    fn a_delete_is_forgotten_past_a_record_of_its_document_or_of_an_unknown_one() {
        let mut r = RecentDeletes::default();
        for p in 0..4 {
            r.deleted("t", p, 1, "7".into(), d(40 + p as u64));
        }
        r.passed_over("t", 0, Some("7"));
        r.passed_over("t", 1, None);
        r.passed_over("t", 2, Some("9"));
        r.passed_over("u", 3, None);
        assert_eq!(r.tombstone("t", 0, 1, "7"), None, "its own document");
        assert_eq!(r.tombstone("t", 1, 1, "7"), None, "a document not known");
        assert_eq!(r.tombstone("t", 2, 1, "7"), Some(d(42)), "another document");
        assert_eq!(r.tombstone("t", 3, 1, "7"), Some(d(43)), "another topic's");
    }

    #[test]
    fn a_delete_read_in_an_earlier_assignment_is_never_taken() {
        let mut r = RecentDeletes::default();
        r.deleted("t", 0, 1, "7".into(), d(40));
        assert_eq!(
            r.tombstone("t", 0, 2, "7"),
            None,
            "revoked, then assigned again"
        );
        assert_eq!(r.tombstone("t", 0, 1, "7"), None, "dropped");
        assert!(r.is_empty());
    }

    #[test]
    fn memory_is_one_entry_per_partition() {
        let mut r = RecentDeletes::default();
        for i in 0..1000 {
            r.deleted("t", i % 4, 1, i.to_string(), d(i as u64));
        }
        assert_eq!(r.len(), 4);
        assert_eq!(r.tombstone("t", 3, 1, "999"), Some(d(999)));
    }
}
