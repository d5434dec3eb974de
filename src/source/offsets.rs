//! Per-partition contiguous watermarks: the offset that may be committed is one past the last
//! record such that it and every record before it has been written (or needed no write).
//!
//! Each assignment of a partition gets a new epoch; acks from an earlier assignment (writes that
//! finished after a revocation) are ignored, so they can never move a later watermark.
//!
//! A record may be *held*: the watermark then stops at it (it is read again after a restart)
//! until the record after it in the partition is written too. A delete event is held so that a
//! restart never starts between it and its tombstone (see `sink::elasticsearch::deletes`).

use std::collections::VecDeque;
use std::sync::Arc;

use tracing::warn;

use crate::sink::Ack;

/// The epoch of acks that must never count (a record delivered twice).
const NO_EPOCH: u32 = u32::MAX;

#[derive(Debug)]
struct Partition {
    topic: Arc<str>,
    partition: i32,
    epoch: u32,
    /// Offsets read and not yet contiguous-acked, in read order.
    pending: VecDeque<Entry>,
    /// One past the last offset read.
    next: Option<i64>,
    /// Whether an offset delivered again was logged since the last new one.
    again: bool,
    /// librdkafka's account of a reset of the fetch position for an error, and the offset
    /// whose fetch failed, until a record at that offset comes (records below it were fetched
    /// before the reset; one past it is a [`Partition::gap`]): offsets read again meanwhile are
    /// other records (see [`Offsets::reset_of`]).
    reset: Option<(String, Option<i64>)>,
    /// After a reset, the offset whose fetch failed when a record past it came: the log now
    /// starts above it, and the records between were removed before the task read them.
    gap: Option<i64>,
    /// The highest leader epoch of the records read (written in each batch by the leader that
    /// appended it; epochs only grow along a log).
    leader_epoch: Option<i32>,
    /// A record read again whose leader epoch is above every one read: not the record first
    /// read at that offset but one a later leader wrote there (the log was cut and written
    /// again, as in an unclean leader election). (offset, its epoch, the highest read before.)
    rewritten: Option<(i64, i32, i32)>,
    /// The offset to commit: every record below it is written.
    watermark: Option<i64>,
    committed: Option<i64>,
}

impl Partition {
    /// Where `offset` is among the pending records. Offsets are nearly always consecutive, so
    /// its distance from the first is tried before a binary search (which took 250
    /// instructions per acknowledged record under callgrind, docs/performance-log.md).
    fn find(&self, offset: i64) -> Option<usize> {
        let first = self.pending.front()?.offset;
        let guess = offset
            .checked_sub(first)
            .and_then(|d| usize::try_from(d).ok())
            .filter(|&i| self.pending.get(i).is_some_and(|e| e.offset == offset));
        guess.or_else(|| {
            self.pending
                .binary_search_by_key(&offset, |e| e.offset)
                .ok()
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    offset: i64,
    done: bool,
    /// The watermark may pass this record only together with the next one.
    held: bool,
}

impl Partition {
    fn unwritten(&self) -> usize {
        self.pending.iter().filter(|e| !e.done).count()
    }
}

/// The watermarks of the partitions assigned to one task.
#[derive(Debug, Default)]
pub struct Offsets {
    slots: Vec<Option<Partition>>,
    /// topic → slot of each partition (indexed by partition number).
    by_name: crate::FastMap<Box<str>, Vec<Option<u32>>>,
    epochs: u32,
}

impl Offsets {
    fn slot_of(&self, topic: &str, partition: i32) -> Option<u32> {
        *self
            .by_name
            .get(topic)?
            .get(usize::try_from(partition).ok()?)?
    }

    fn partition(&self, topic: &str, partition: i32) -> Option<&Partition> {
        self.slots[self.slot_of(topic, partition)? as usize].as_ref()
    }

    fn set_slot(&mut self, topic: &str, partition: i32, slot: Option<u32>) {
        let Ok(p) = usize::try_from(partition) else {
            return;
        };
        let v = self.by_name.entry(topic.into()).or_default();
        if v.len() <= p {
            v.resize(p + 1, None);
        }
        v[p] = slot;
    }

    /// Starts tracking a newly assigned partition.
    pub fn assign(&mut self, topic: &str, partition: i32) {
        self.epochs = (self.epochs + 1) % NO_EPOCH;
        let topic: Arc<str> = topic.into();
        let state = Partition {
            topic: topic.clone(),
            partition,
            epoch: self.epochs,
            pending: VecDeque::new(),
            next: None,
            again: false,
            reset: None,
            gap: None,
            leader_epoch: None,
            rewritten: None,
            watermark: None,
            committed: None,
        };
        match self.slot_of(&topic, partition) {
            Some(slot) => self.slots[slot as usize] = Some(state),
            None => {
                let slot = match self.slots.iter().position(Option::is_none) {
                    Some(s) => {
                        self.slots[s] = Some(state);
                        s
                    }
                    None => {
                        self.slots.push(Some(state));
                        self.slots.len() - 1
                    }
                };
                self.set_slot(&topic, partition, Some(slot as u32));
            }
        }
    }

    /// Stops tracking a revoked partition.
    pub fn revoke(&mut self, topic: &str, partition: i32) {
        if let Some(slot) = self.slot_of(topic, partition) {
            self.slots[slot as usize] = None;
            self.set_slot(topic, partition, None);
        }
    }

    /// Records librdkafka's reset of the fetch position of (`topic`, `partition`) for an error
    /// (`message`, its log line).
    pub fn reset(&mut self, topic: &str, partition: i32, at: Option<i64>, message: &str) {
        if let Some(slot) = self.slot_of(topic, partition)
            && let Some(p) = self.slots[slot as usize].as_mut()
        {
            // A second reset before a record came: the first failed offset is where the
            // records read next would have begun.
            let at = match (&p.reset, at) {
                (Some((_, Some(first))), Some(at)) => Some(at.min(*first)),
                _ => at,
            };
            p.reset = Some((message.to_string(), at));
        }
    }

    /// Why offsets read again in (`topic`, `partition`) are not records delivered twice but
    /// other records: librdkafka reset the fetch position below what was read, for an error,
    /// and no new offset came since. `None` otherwise.
    pub fn reset_of(&self, topic: &str, partition: i32) -> Option<&str> {
        let slot = self.slot_of(topic, partition)?;
        self.slots[slot as usize]
            .as_ref()?
            .reset
            .as_ref()
            .map(|(why, _)| why.as_str())
    }

    /// The offset from which records of (`topic`, `partition`) were removed from the log before
    /// the task read them, with librdkafka's account of the reset (see [`Partition::gap`]).
    pub fn gap_of(&self, topic: &str, partition: i32) -> Option<(i64, &str)> {
        let slot = self.slot_of(topic, partition)?;
        let p = self.slots[slot as usize].as_ref()?;
        Some((p.gap?, p.reset.as_ref()?.0.as_str()))
    }

    /// A record at an offset read before whose leader epoch was above every one read (see
    /// [`Partition::rewritten`]): (offset, its epoch, the highest epoch read before it).
    pub fn rewritten_of(&self, topic: &str, partition: i32) -> Option<(i64, i32, i32)> {
        let slot = self.slot_of(topic, partition)?;
        self.slots[slot as usize].as_ref()?.rewritten
    }

    /// Registers a record just read, with its leader epoch when known; returns its ack. A
    /// record of a partition that is not assigned (never expected: librdkafka drops fetched
    /// records of revoked partitions) gets an ack that never counts, so nothing is ever
    /// committed for it.
    pub fn track(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        leader_epoch: Option<i32>,
    ) -> Ack {
        let Some(slot) = self.slot_of(topic, partition) else {
            return Ack {
                slot: u32::MAX,
                epoch: NO_EPOCH,
                offset,
            };
        };
        let Some(p) = self.slots[slot as usize].as_mut() else {
            return Ack {
                slot,
                epoch: NO_EPOCH,
                offset,
            };
        };
        if let Some(next) = p.next.filter(|n| offset < *n) {
            // Records read again carry the epochs they were written with; one above every epoch
            // read is another record, written at that offset by a later leader. librdkafka
            // moves the position back to where such a log was cut without a word.
            if let (Some(e), Some(read)) = (leader_epoch, p.leader_epoch)
                && e > read
                && p.rewritten.is_none()
            {
                p.rewritten = Some((offset, e, read));
            }
            // Read again (librdkafka may deliver a record twice around a pause): the first read
            // is the one that counts. Logged once until a new offset comes: the same offsets
            // given to other records (a topic deleted and created again under a running task,
            // an unclean leader election) look the same, and those records are never written.
            if !std::mem::replace(&mut p.again, true) {
                warn!(
                    "{topic} [{partition}]: offset {offset} delivered again (the task had read up \
                     to {next}): taken for a record already read, not written again (later ones \
                     below {next} are not logged). Should the topic have been deleted and created \
                     again, or Kafka have lost records in an unclean leader election, these are \
                     other records, missing from the target: move the connector's offsets back \
                     (PATCH /connectors/NAME/offsets) or rebuild the index"
                );
            }
            return Ack {
                slot,
                epoch: NO_EPOCH,
                offset,
            };
        }
        match p.reset.as_ref().map(|(why, at)| (*at, to_start(why))) {
            // The first record of this assignment, below `at`: the log starts again below it (a
            // topic created again). A record past `at` is then no sign of a gap (`at` may be a
            // transaction marker in the new log), and nothing was read before to take a record
            // for. (Records of the assignment's first fetch that come after the reset of a
            // later one are taken so too: a gap right behind them goes unseen.)
            Some((Some(at), _)) if offset < at && p.next.is_none() => p.reset = None,
            // Fetched before the reset: new records.
            Some((Some(at), _)) if offset < at => {}
            // The fetch at `at` was out of range and the log, read again from its start, now
            // starts past it: the records between are gone (retention, DeleteRecords), never
            // written. Not counted, so that nothing is committed past them (`read_again` fails
            // the task). (A reset to the log's end, `auto.offset.reset=latest`, skips records
            // as the user asked.)
            Some((Some(at), true)) if offset > at => {
                p.gap = Some(at);
                return Ack {
                    slot,
                    epoch: NO_EPOCH,
                    offset,
                };
            }
            Some(_) => p.reset = None,
            None => {}
        }
        p.next = Some(offset + 1);
        p.again = false;
        if leader_epoch > p.leader_epoch {
            p.leader_epoch = leader_epoch;
        }
        p.pending.push_back(Entry {
            offset,
            done: false,
            held: false,
        });
        Ack {
            slot,
            epoch: p.epoch,
            offset,
        }
    }

    /// Marks a record written; moves its partition's watermark when it closes a gap.
    pub fn ack(&mut self, ack: Ack) {
        let Some(p) = self.entry(ack) else {
            return;
        };
        if let Some(i) = p.find(ack.offset) {
            p.pending[i].done = true;
        }
        while let Some(&e) = p.pending.front() {
            if !e.done || (e.held && !p.pending.get(1).is_some_and(|n| n.done)) {
                break;
            }
            p.watermark = Some(e.offset + 1);
            p.pending.pop_front();
        }
    }

    /// Moves a partition's watermark up to `position`, the consumer's position in it, when
    /// every record it handed out is written: the offsets between are records it never hands
    /// out (transaction markers, aborted records), which would otherwise hold the commit short
    /// of a partition's end for good. The caller must have tracked every record polled (not
    /// after a record failed: it was polled and never tracked). Only
    /// once a record was read since the partition was assigned: librdkafka resets the position
    /// when it stops fetching a revoked partition, and until it has, a partition assigned again
    /// could show the position of its previous assignment.
    pub fn skip_undelivered(&mut self, topic: &str, partition: i32, position: i64) {
        let Some(slot) = self.slot_of(topic, partition) else {
            return;
        };
        let Some(p) = self.slots[slot as usize].as_mut() else {
            return;
        };
        // Not while a reset of the position is unresolved: the position may have moved past
        // records removed from the log (a transaction marker first at its new start).
        if p.pending.is_empty()
            && p.reset.is_none()
            && p.next.is_some_and(|n| position > n)
            && p.watermark.is_none_or(|w| position > w)
            && p.committed.is_none_or(|c| position > c)
        {
            p.watermark = Some(position);
            p.next = Some(position);
        }
    }

    /// Whether `ack` is of (`topic`, `partition`)'s current assignment.
    pub fn is_of(&self, ack: Ack, topic: &str, partition: i32) -> bool {
        self.slot_of(topic, partition) == Some(ack.slot) && self.counts(ack)
    }

    /// Whether `ack` belongs to the current assignment and is the first read of its record.
    pub fn counts(&self, ack: Ack) -> bool {
        ack.epoch != NO_EPOCH
            && matches!(self.slots.get(ack.slot as usize), Some(Some(p)) if p.epoch == ack.epoch)
    }

    /// Holds a record just read (before it is acked): its partition's watermark will not pass
    /// it until the next record read from the partition is written too.
    pub fn hold(&mut self, ack: Ack) {
        if let Some(p) = self.entry(ack)
            && let Some(i) = p.find(ack.offset)
        {
            p.pending[i].held = true;
        }
    }

    /// The partition state an ack of the current assignment belongs to.
    fn entry(&mut self, ack: Ack) -> Option<&mut Partition> {
        match self.slots.get_mut(ack.slot as usize) {
            Some(Some(p)) if p.epoch == ack.epoch => Some(p),
            _ => None,
        }
    }

    /// Partitions whose watermark moved since the last commit: (topic, partition, offset).
    pub fn committable(&self) -> Vec<(Arc<str>, i32, i64)> {
        self.slots
            .iter()
            .flatten()
            .filter_map(|p| match p.watermark {
                Some(w) if p.committed != Some(w) => Some((p.topic.clone(), p.partition, w)),
                _ => None,
            })
            .collect()
    }

    /// Every partition's watermark (for a synchronous commit, which must not rely on an
    /// earlier asynchronous one having succeeded), optionally only of `only`.
    pub fn watermarks(&self, only: Option<&[(String, i32)]>) -> Vec<(Arc<str>, i32, i64)> {
        self.slots
            .iter()
            .flatten()
            .filter(|p| {
                only.is_none_or(|o| o.iter().any(|(t, n)| **t == *p.topic && *n == p.partition))
            })
            .filter_map(|p| p.watermark.map(|w| (p.topic.clone(), p.partition, w)))
            .collect()
    }

    /// Records that offsets were committed.
    pub fn committed(&mut self, done: &[(Arc<str>, i32, i64)]) {
        for (t, part, o) in done {
            if let Some(slot) = self.slot_of(t, *part)
                && let Some(p) = self.slots[slot as usize].as_mut()
            {
                p.committed = Some(*o);
            }
        }
    }

    /// Forgets the commits of `failed` (an asynchronous commit's answer): their watermarks are
    /// committed again at the next commit, also on a partition that reads nothing more.
    pub fn commit_failed(&mut self, failed: &[(String, i32, i64)]) {
        for (t, part, o) in failed {
            if let Some(slot) = self.slot_of(t, *part)
                && let Some(p) = self.slots[slot as usize].as_mut()
                && p.committed == Some(*o)
            {
                p.committed = None;
            }
        }
    }

    /// Whether every record of a partition below `offset` has been read and written (holds
    /// aside); `None` when the partition is not assigned or nothing was read since it was.
    /// `position`: the consumer's position, which may be past the last record read (records
    /// that are never handed out, as transaction markers). Not while a reset of the position
    /// is unresolved, as for [`skip_undelivered`](crate::task): a position past a removed
    /// stretch of the log (a transaction marker first at its new start) would count records
    /// never read as written, and a snapshot's end would remove their documents. Never past
    /// a gap.
    pub fn written_below(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        position: Option<i64>,
    ) -> Option<bool> {
        let p = self.slots[self.slot_of(topic, partition)? as usize].as_ref()?;
        if p.gap.is_some_and(|g| g < offset) {
            return Some(false);
        }
        let position = position.filter(|_| p.reset.is_none());
        let next = p.next?.max(position.unwrap_or(0));
        Some(next >= offset && p.pending.iter().all(|e| e.done || e.offset >= offset))
    }

    /// The offset last committed for a partition this task holds: `None` when it is not
    /// assigned, `Some(None)` when nothing was committed since it was.
    pub fn committed_of(&self, topic: &str, partition: i32) -> Option<Option<i64>> {
        self.partition(topic, partition).map(|p| p.committed)
    }

    /// Records read and not yet written, over all partitions.
    pub fn in_flight(&self) -> usize {
        self.slots.iter().flatten().map(Partition::unwritten).sum()
    }

    /// Records remembered over every partition: read and not yet committable, or written
    /// behind one that is not (a copy for the dead-letter queue that waits).
    pub fn tracked(&self) -> usize {
        self.slots.iter().flatten().map(|p| p.pending.len()).sum()
    }

    /// The partitions to stop reading while the task remembers too many records: each that
    /// remembers more than `each` (records pile up there behind one it cannot commit yet), then,
    /// the largest first, as many more as leave at most `rest` remembered in the others. The
    /// others read on: their records are committed as soon as they are written, and a
    /// snapshot's end may be waiting for them (`super::barriers`).
    pub fn piling_up(&self, each: usize, rest: usize) -> Vec<(String, i32)> {
        let mut parts: Vec<&Partition> = self.slots.iter().flatten().collect();
        parts.sort_unstable_by_key(|p| std::cmp::Reverse(p.pending.len()));
        let mut left = self.tracked();
        let mut out = Vec::new();
        for p in parts {
            let n = p.pending.len();
            if n == 0 || (n <= each && left <= rest) {
                break;
            }
            out.push((p.topic.to_string(), p.partition));
            left -= n;
        }
        out
    }

    /// Records a partition remembers: read and not yet committable.
    pub fn remembered_of(&self, topic: &str, partition: i32) -> usize {
        self.partition(topic, partition)
            .map_or(0, |p| p.pending.len())
    }

    /// Records read and not yet written, for one partition.
    pub fn in_flight_of(&self, topic: &str, partition: i32) -> usize {
        self.partition(topic, partition)
            .map_or(0, Partition::unwritten)
    }
}

/// Whether librdkafka's reset line (`… offset reset (at offset 10 …) to offset BEGINNING …`,
/// or `to cached BEGINNING offset …`) moved the position to the log's start, as
/// `auto.offset.reset=earliest` (cdc-sink's default) does.
fn to_start(line: &str) -> bool {
    line.split_once(") to ").is_some_and(|(_, to)| {
        to.starts_with("offset BEGINNING") || to.starts_with("cached BEGINNING")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_is_of_its_partitions_current_assignment_only() {
        let mut o = Offsets::default();
        o.assign("t", 0);
        o.assign("t", 1);
        let a = o.track("t", 0, 5, None);
        assert!(o.is_of(a, "t", 0));
        assert!(!o.is_of(a, "t", 1));
        assert!(!o.is_of(a, "u", 0));
        o.revoke("t", 0);
        assert!(!o.is_of(a, "t", 0), "revoked");
        o.assign("t", 0);
        assert!(!o.is_of(a, "t", 0), "assigned again");
        let again = o.track("t", 0, 5, None);
        assert!(o.is_of(again, "t", 0));
    }

    #[test]
    fn the_watermark_passes_records_never_handed_out_once_all_handed_out_are_written() {
        let mut o = Offsets::default();
        o.assign("t", 0);
        let a = o.track("t", 0, 0, None);
        let b = o.track("t", 0, 1, None);
        assert_eq!(o.tracked(), 2);
        o.ack(a);
        // Offset 2 a marker: the position is 3, but 1 is not written yet.
        o.skip_undelivered("t", 0, 3);
        assert_eq!(o.committable(), vec![("t".into(), 0, 1)]);
        // Nothing read yet since it was assigned: its position is not to be trusted.
        o.assign("t", 1);
        o.skip_undelivered("t", 1, 7);
        assert_eq!(o.committable(), vec![("t".into(), 0, 1)]);
        o.ack(b);
        o.skip_undelivered("t", 0, 3);
        assert_eq!(o.committable(), vec![("t".into(), 0, 3)]);
        o.committed(&o.committable());
        assert_eq!(o.tracked(), 0);
        // Never backwards, and a record at the skipped offsets is one read again.
        o.skip_undelivered("t", 0, 2);
        assert!(o.committable().is_empty());
        let again = o.track("t", 0, 2, None);
        assert!(!o.counts(again));
    }

    #[test]
    fn a_failed_commit_is_committed_again() {
        let mut o = Offsets::default();
        o.assign("t", 0);
        let a = o.track("t", 0, 0, None);
        o.ack(a);
        let marks = o.committable();
        assert_eq!(marks, vec![("t".into(), 0, 1)]);
        o.committed(&marks);
        assert!(o.committable().is_empty());
        // An answer about another offset (an older commit) changes nothing.
        o.commit_failed(&[("t".into(), 0, 0)]);
        assert!(o.committable().is_empty());
        o.commit_failed(&[("t".into(), 0, 1)]);
        assert_eq!(o.committable(), marks);
    }

    /// A record read again with the epoch it was first read with is the same record; one
    /// whose leader epoch is above every epoch read was written there by a later leader.
    #[test]
    fn a_record_read_again_from_a_later_leader_is_another_record() {
        let mut o = Offsets::default();
        o.assign("t", 0);
        (0..5).for_each(|off| _ = o.track("t", 0, off, Some(2)));
        (5..10).for_each(|off| _ = o.track("t", 0, off, Some(3)));
        // Delivered again, as around a pause: old epochs, or none known.
        for (off, epoch) in [(3, Some(2)), (7, Some(3)), (8, None)] {
            let again = o.track("t", 0, off, epoch);
            assert!(!o.counts(again));
        }
        assert_eq!(o.rewritten_of("t", 0), None);
        // Epoch 4 at offset 6: the log was cut at 6 and written again.
        let other = o.track("t", 0, 6, Some(4));
        assert!(!o.counts(other));
        assert_eq!(o.rewritten_of("t", 0), Some((6, 4, 3)));
        // A new offset of a new epoch is no sign of it.
        let mut fresh = Offsets::default();
        fresh.assign("t", 0);
        (0..3).for_each(|off| _ = fresh.track("t", 0, off, Some(2)));
        let next = fresh.track("t", 0, 3, Some(5));
        assert!(fresh.counts(next));
        let again = fresh.track("t", 0, 1, Some(2));
        assert!(!fresh.counts(again));
        assert_eq!(fresh.rewritten_of("t", 0), None);
    }

    #[test]
    fn a_reset_of_the_position_is_known_until_a_new_offset_comes() {
        let mut o = Offsets::default();
        o.assign("t", 0);
        (0..10).for_each(|off| _ = o.track("t", 0, off, None));
        // A reset for an unassigned partition is not kept.
        o.reset("t", 1, Some(3), "other");
        assert_eq!(o.reset_of("t", 1), None);
        // The fetch at 12 failed: 10 and 11, fetched before it, still come and are new.
        o.reset("t", 0, Some(12), "out of range");
        for off in [10, 11] {
            let new = o.track("t", 0, off, None);
            assert!(o.counts(new));
            assert_eq!(o.reset_of("t", 0), Some("out of range"));
        }
        let again = o.track("t", 0, 0, None);
        assert!(!o.counts(again));
        assert_eq!(o.reset_of("t", 0), Some("out of range"));
        // A record at the failed offset (the log past what was read): the reset is forgotten;
        // so is one without a known offset at the first new offset.
        let new = o.track("t", 0, 12, None);
        assert!(o.counts(new));
        assert_eq!(o.reset_of("t", 0), None);
        o.reset("t", 0, None, "out of range");
        let new = o.track("t", 0, 13, None);
        assert!(o.counts(new));
        assert_eq!(o.reset_of("t", 0), None);
        assert_eq!(o.gap_of("t", 0), None);
        // A record past the failed offset, after a reset to the log's start: the log starts
        // above it now, and 14 and 15 are gone. Not counted; nothing past 14 is committable, nor
        // skipped to by the consumer's position.
        let start = "t [0]: offset reset (at offset 14 (leader epoch 0), broker 1) to offset BEGINNING (leader epoch -1): fetch failed due to requested offset not available on the broker: Broker: Offset out of range";
        o.reset("t", 0, Some(16), start);
        o.reset("t", 0, Some(14), start);
        let past = o.track("t", 0, 16, None);
        assert!(!o.counts(past));
        assert_eq!(o.gap_of("t", 0), Some((14, start)));
        assert_eq!(o.reset_of("t", 0), Some(start));
        (0..14).for_each(|off| {
            o.ack(Ack {
                slot: 0,
                epoch: o.slots[0].as_ref().unwrap().epoch,
                offset: off,
            })
        });
        o.skip_undelivered("t", 0, 17);
        assert_eq!(o.committable(), [("t".into(), 0, 14)]);
        // A reset to the log's end (`auto.offset.reset=latest`) skips as the user asked.
        o.assign("t", 0);
        _ = o.track("t", 0, 30, None);
        o.reset(
            "t",
            0,
            Some(31),
            &start.replace("offset BEGINNING", "offset END"),
        );
        let a = o.track("t", 0, 40, None);
        assert!(o.counts(a));
        assert_eq!(o.gap_of("t", 0), None);
        // Before any record of an assignment, records below the failed offset (the log starts
        // again below it: a topic created again) leave no reset behind: a record past that
        // offset then is no gap (the offset may be a transaction marker in the new log).
        o.assign("t", 0);
        o.reset("t", 0, Some(12), start);
        let a = o.track("t", 0, 0, None);
        assert!(o.counts(a));
        assert_eq!(o.reset_of("t", 0), None);
        let a = o.track("t", 0, 13, None);
        assert!(o.counts(a));
        assert_eq!(o.gap_of("t", 0), None);
        // A new assignment starts without one.
        o.reset("t", 0, Some(20), "out of range");
        o.assign("t", 0);
        assert_eq!(o.reset_of("t", 0), None);
    }

    #[test]
    fn records_piling_up_behind_one_not_written_name_their_partition() {
        let mut o = Offsets::default();
        for p in 0..3 {
            o.assign("t", p);
        }
        // Partition 0: its first record not written, 50 after it written.
        let acks: Vec<Ack> = (0..51).map(|off| o.track("t", 0, off, None)).collect();
        acks[1..].iter().for_each(|a| o.ack(*a));
        // Partition 1: 10 records in flight; partition 2: 5.
        (0..10).for_each(|off| _ = o.track("t", 1, off, None));
        (0..5).for_each(|off| _ = o.track("t", 2, off, None));
        assert_eq!(o.piling_up(20, 100), vec![("t".to_string(), 0)]);
        // None above `each`, but too many in all: the largest go first.
        assert_eq!(
            o.piling_up(60, 10),
            vec![("t".to_string(), 0), ("t".to_string(), 1)]
        );
        assert!(o.piling_up(60, 66).is_empty());
    }

    #[test]
    fn watermark_moves_only_over_contiguous_acks() {
        let mut o = Offsets::default();
        o.assign("t", 0);
        let a: Vec<Ack> = (10..15).map(|off| o.track("t", 0, off, None)).collect();
        o.ack(a[1]);
        o.ack(a[2]);
        assert!(o.committable().is_empty(), "10 is not written yet");
        o.ack(a[0]);
        assert_eq!(o.committable(), vec![("t".into(), 0, 13)]);
        o.committed(&o.committable());
        assert!(o.committable().is_empty());
        o.ack(a[4]);
        assert!(o.committable().is_empty(), "13 is not written yet");
        o.ack(a[3]);
        assert_eq!(o.watermarks(None), vec![("t".into(), 0, 15)]);
        assert!(o.watermarks(Some(&[("t".into(), 1)])).is_empty());
        assert_eq!(o.in_flight(), 0);
    }

    #[test]
    fn offsets_with_gaps_are_acked_where_they_are() {
        // Transaction markers and compaction leave gaps between a partition's offsets.
        let mut o = Offsets::default();
        o.assign("t", 0);
        let a: Vec<Ack> = [10, 12, 13, 20, 21]
            .into_iter()
            .map(|off| o.track("t", 0, off, None))
            .collect();
        // 13 sits where 12 would if the offsets were consecutive, 20 beyond the queue's end.
        o.ack(a[2]);
        o.ack(a[3]);
        o.ack(a[0]);
        assert_eq!(
            o.committable(),
            vec![("t".into(), 0, 11)],
            "12 is not written"
        );
        o.ack(a[1]);
        assert_eq!(
            o.committable(),
            vec![("t".into(), 0, 21)],
            "21 is not written"
        );
        o.ack(a[4]);
        assert_eq!(o.committable(), vec![("t".into(), 0, 22)]);
        assert_eq!(o.in_flight(), 0);
    }

    #[test]
    fn a_held_record_is_committed_only_with_the_next_one() {
        let mut o = Offsets::default();
        o.assign("t", 0);
        let d = o.track("t", 0, 10, None);
        o.hold(d);
        o.ack(d);
        assert!(o.committable().is_empty(), "10 is held until 11 is written");
        assert_eq!(o.in_flight(), 0, "a held record is written, not in flight");
        let tombstone = o.track("t", 0, 11, None);
        assert!(o.committable().is_empty());
        o.ack(tombstone);
        assert_eq!(o.committable(), vec![("t".into(), 0, 12)]);
        // A held record after written ones: the watermark stops at it.
        let a = o.track("t", 0, 12, None);
        let d = o.track("t", 0, 13, None);
        o.hold(d);
        o.ack(a);
        o.ack(d);
        assert_eq!(o.watermarks(None), vec![("t".into(), 0, 13)]);
    }

    #[test]
    fn acks_from_an_earlier_assignment_are_ignored() {
        let mut o = Offsets::default();
        o.assign("t", 1);
        let old = o.track("t", 1, 100, None);
        o.revoke("t", 1);
        o.assign("t", 1);
        let new = o.track("t", 1, 50, None);
        o.ack(old);
        assert!(o.committable().is_empty());
        o.ack(new);
        assert_eq!(o.committable(), vec![("t".into(), 1, 51)]);
    }

    #[test]
    fn records_of_unassigned_partitions_are_never_committed() {
        let mut o = Offsets::default();
        let a = o.track("t", 3, 7, None);
        o.ack(a);
        assert!(o.committable().is_empty());
        assert!(o.watermarks(None).is_empty());
    }

    #[test]
    fn a_record_read_twice_counts_once() {
        let mut o = Offsets::default();
        o.assign("t", 0);
        let first = o.track("t", 0, 5, None);
        let again = o.track("t", 0, 5, None);
        o.ack(again);
        assert!(o.committable().is_empty());
        o.ack(first);
        assert_eq!(o.committable(), vec![("t".into(), 0, 6)]);
    }

    #[test]
    fn written_below_needs_every_earlier_record_read_and_written() {
        let mut o = Offsets::default();
        assert_eq!(o.written_below("t", 0, 5, None), None, "not assigned");
        o.assign("t", 0);
        assert_eq!(o.written_below("t", 0, 5, None), None, "nothing read yet");
        let a: Vec<Ack> = (3..6).map(|off| o.track("t", 0, off, None)).collect();
        assert_eq!(o.written_below("t", 0, 5, None), Some(false));
        o.ack(a[0]);
        o.ack(a[1]);
        assert_eq!(
            o.written_below("t", 0, 5, None),
            Some(true),
            "5 itself may wait"
        );
        assert_eq!(
            o.written_below("t", 0, 7, None),
            Some(false),
            "6 not read yet"
        );
        // A held record that is written counts as written.
        o.hold(a[2]);
        o.ack(a[2]);
        assert_eq!(o.written_below("t", 0, 6, None), Some(true));
        // The consumer's position past a transaction marker at 6.
        assert_eq!(o.written_below("t", 0, 7, Some(7)), Some(true));
        // Not while a reset is unresolved: the position may be past records removed unread.
        let to_start = "t [0]: offset reset (at offset 6 (leader epoch 0), broker 1) to offset BEGINNING (leader epoch -1): fetch failed due to requested offset not available on the broker: Broker: Offset out of range";
        o.reset("t", 0, Some(6), to_start);
        assert_eq!(o.written_below("t", 0, 9, Some(9)), Some(false));
        // Nor past the gap found once a record past the failed offset comes.
        let past = o.track("t", 0, 8, None);
        o.ack(past);
        assert_eq!(o.written_below("t", 0, 9, Some(9)), Some(false));
        assert_eq!(o.written_below("t", 0, 6, Some(9)), Some(true));
    }
}
