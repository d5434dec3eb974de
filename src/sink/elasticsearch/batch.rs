//! A bulk request being filled: actions encoded straight into the NDJSON body, the last write
//! per document kept, and the acks of every record the batch answers for.

use std::hash::{BuildHasher, Hash, Hasher};
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::mapping::{ActionKind, BulkAction};
use crate::sink::Ack;

/// Where a record came from (for error messages) and when (for freshness). Its topic is kept
/// with the batch's names ([`Sealed::topic`]).
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    pub partition: i32,
    pub offset: i64,
    /// `source.ts_ms`: when the change was committed in the source database.
    pub source_ts_ms: Option<i64>,
    /// The Kafka record's timestamp.
    pub kafka_ts_ms: Option<i64>,
    /// When the sink was handed the record (ms since the epoch).
    pub received_ms: i64,
}

/// One action in a batch.
#[derive(Debug, Clone)]
pub struct Item {
    /// Its bytes in the body (action line and document line).
    pub range: Range<usize>,
    /// Its document id, in the batch's [`Names::ids`].
    id: Range<usize>,
    /// Its index and its record's topic, in the batch's [`Names::names`].
    index: u32,
    topic: u32,
    pub version: Option<u64>,
    pub is_delete: bool,
    pub origin: Origin,
    /// The ack of the record this write is of.
    pub ack: Ack,
    live: bool,
}

/// The ids, indices and topics of a batch's items, held once per batch. An id string and two
/// shared names per item were an allocation and two reference counts per record that the
/// request's task then freed and dropped on the I/O thread: frees from another thread take
/// mimalloc's slow path, and the counts moved between cores (docs/performance-log.md).
#[derive(Debug, Clone, Default)]
pub struct Names {
    ids: String,
    names: Vec<Arc<str>>,
}

impl Names {
    /// The position of `name`. A lane's batch holds the names of few indices and topics (the
    /// tables of one connector), so only the last sixteen are compared; beyond them another
    /// name is added (as each item once held its own).
    fn intern(&mut self, name: &Arc<str>) -> u32 {
        let n = self.names.len();
        for i in (n.saturating_sub(16)..n).rev() {
            if Arc::ptr_eq(&self.names[i], name) || self.names[i] == *name {
                return i as u32;
            }
        }
        self.names.push(name.clone());
        n as u32
    }
}

/// A batch being filled.
pub struct Batch {
    body: Vec<u8>,
    items: Vec<Item>,
    names: Names,
    /// Hash of (index, id) → the item holding that document's current write.
    latest: crate::FastMap<u64, usize>,
    hasher: foldhash::fast::RandomState,
    acks: Vec<Ack>,
    live: usize,
    pub opened: Instant,
    /// What this batch was sized for when it was opened ([`Batch::take`]).
    sized: Sizes,
    /// Every write is sent, none superseded by a later one of its document: when a document
    /// Elasticsearch rejects as malformed may be skipped (`behavior.on.malformed.documents`),
    /// the write before it must still reach the index, in order.
    keep_every_write: bool,
}

/// The lengths a batch is given room for as it opens.
#[derive(Debug, Clone, Copy, Default)]
struct Sizes {
    body: usize,
    items: usize,
    acks: usize,
    ids: usize,
}

/// A batch ready to send: only live items, body compacted.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub body: Bytes,
    pub items: Vec<Item>,
    pub acks: Vec<Ack>,
    names: Names,
}

impl Batch {
    /// An empty batch; `keep_every_write`: see the field.
    pub fn new(keep_every_write: bool) -> Batch {
        Batch {
            body: Vec::new(),
            items: Vec::new(),
            names: Names::default(),
            latest: Default::default(),
            hasher: Default::default(),
            acks: Vec::new(),
            live: 0,
            opened: Instant::now(),
            sized: Sizes::default(),
            keep_every_write,
        }
    }

    /// This batch, leaving an empty one of the same kind in its place, sized for the larger of
    /// this one and what this one was sized for, less an eighth, with a quarter more room (see
    /// below): a lane's batches are alike, and a body grown by doubling was copied about once
    /// over and written into fresh pages the kernel had to fault in (reallocation and page
    /// faults: 9% of the JSON hot path's profile, 3% after). End to end, batches vary from a
    /// few records to thousands; sized by the last batch alone, every batch larger than the one
    /// before grew again (its body, its items and its map of documents: 1.4% of the worker's
    /// instructions on JSON without schema, docs/performance-log.md). A size not reached again
    /// fades by an eighth a batch.
    ///
    /// At most `bulk.size.bytes`' default is reserved for the body, room for 4 096 items (twice
    /// `batch.size`'s default) and 512 KiB of ids: a batch made big by one huge document, or by
    /// thousands of tiny deletes, does not make its lane hold as much while idle. A batch
    /// larger than that grows as it fills.
    pub fn take(&mut self) -> Batch {
        const MOST: usize = 5 * 1024 * 1024;
        const MOST_ITEMS: usize = 4096;
        const MOST_IDS: usize = 512 * 1024;
        let fade = |now: usize, was: usize| now.max(was - was.div_ceil(8));
        let was = self.sized;
        let sized = Sizes {
            body: fade(self.body.len(), was.body).min(MOST),
            items: fade(self.items.len(), was.items).min(MOST_ITEMS),
            acks: fade(self.acks.len(), was.acks).min(MOST_ITEMS),
            ids: fade(self.names.ids.len(), was.ids).min(MOST_IDS),
        };
        // A quarter more than that: batches sealed when a request slot frees up vary by a third
        // from one to the next, and reserved exactly, every batch larger than that size grew
        // its body and its items once each, a copy of the whole (162 of 346 batches of an
        // end-to-end run without schema; 20 of them would have with a quarter more:
        // docs/performance-log.md). The room a batch does not fill is reserved, not written
        // (the backlog's peak RSS did not move).
        let room = |n: usize, most: usize| (n + n / 4).min(most);
        let mut next = Batch::new(self.keep_every_write);
        next.body.reserve(room(sized.body, MOST));
        next.items.reserve(room(sized.items, MOST_ITEMS));
        next.names.ids.reserve(room(sized.ids, MOST_IDS));
        next.acks.reserve(room(sized.acks, MOST_ITEMS));
        next.latest.reserve(room(sized.items, MOST_ITEMS));
        next.sized = sized;
        std::mem::replace(self, next)
    }

    /// Records the batch answers for (live writes, superseded writes, and dropped ones).
    pub fn records(&self) -> usize {
        self.acks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.acks.is_empty()
    }

    /// Live actions (what the request will carry).
    pub fn actions(&self) -> usize {
        self.live
    }

    pub fn body_len(&self) -> usize {
        self.body.len()
    }

    /// Adds `action`. A later write of the same document supersedes an earlier one in the batch
    /// unless both are versioned and its version is lower (a replayed older change), in which
    /// case it is dropped: the batch then sends exactly what sending both in order would leave
    /// in the index. (An unversioned write always applies, so it always supersedes.)
    pub fn push(&mut self, action: BulkAction<'_>, topic: &Arc<str>, origin: Origin, ack: Ack) {
        if self.acks.is_empty() {
            self.opened = Instant::now();
        }
        self.acks.push(ack);
        let mut h = self.hasher.build_hasher();
        action.index.hash(&mut h);
        action.id.hash(&mut h);
        let h = h.finish();
        if let Some(&j) = self.latest.get(&h).filter(|_| !self.keep_every_write) {
            let prev = &mut self.items[j];
            if prev.live
                && *self.names.names[prev.index as usize] == *action.index
                && self.names.ids[prev.id.clone()] == action.id
            {
                if let (Some(new), Some(old)) = (action.version, prev.version)
                    && new < old
                {
                    return;
                }
                prev.live = false;
                self.live -= 1;
            }
        }
        let start = self.body.len();
        action.encode(&mut self.body);
        self.latest.insert(h, self.items.len());
        let id_start = self.names.ids.len();
        self.names.ids.push_str(&action.id);
        self.items.push(Item {
            range: start..self.body.len(),
            is_delete: matches!(action.kind, ActionKind::Delete),
            id: id_start..self.names.ids.len(),
            index: self.names.intern(&action.index),
            topic: self.names.intern(topic),
            version: action.version,
            origin,
            ack,
            live: true,
        });
        self.live += 1;
    }

    /// The request to send. Superseded writes are cut out of the body.
    pub fn seal(self) -> Sealed {
        if self.live == self.items.len() {
            return Sealed {
                body: Bytes::from(self.body),
                items: self.items,
                acks: self.acks,
                names: self.names,
            };
        }
        // Compacted in place: live items keep their order, so each moves towards the front.
        let (mut body, mut items) = (self.body, self.items);
        items.retain(|i| i.live);
        let mut end = 0;
        for it in &mut items {
            let len = it.range.len();
            body.copy_within(it.range.clone(), end);
            it.range = end..end + len;
            end += len;
        }
        body.truncate(end);
        Sealed {
            body: Bytes::from(body),
            items,
            acks: self.acks,
            names: self.names,
        }
    }
}

impl Sealed {
    /// The document id `item` writes.
    pub fn id(&self, item: &Item) -> &str {
        &self.names.ids[item.id.clone()]
    }

    /// The index `item` writes to.
    pub fn index_of(&self, item: &Item) -> &Arc<str> {
        &self.names.names[item.index as usize]
    }

    /// The topic of `item`'s record.
    pub fn topic(&self, item: &Item) -> &Arc<str> {
        &self.names.names[item.topic as usize]
    }

    /// Where `item`'s record came from, for messages: `topic t partition p offset o`.
    pub fn origin(&self, item: &Item) -> String {
        format!(
            "topic {} partition {} offset {}",
            self.topic(item),
            item.origin.partition,
            item.origin.offset
        )
    }

    /// A body with only the items at `which` (for a retry).
    pub fn body_of(&self, which: &[usize]) -> Bytes {
        let len = which.iter().map(|&i| self.items[i].range.len()).sum();
        let mut body = Vec::with_capacity(len);
        for &i in which {
            body.extend_from_slice(&self.body[self.items[i].range.clone()]);
        }
        Bytes::from(body)
    }
}

#[cfg(test)]
mod tests {
    use super::super::mapping::Document;
    use super::*;

    fn action<'a>(id: &str, version: u64, doc: &'a str) -> BulkAction<'a> {
        BulkAction {
            index: "i".into(),
            id: id.into(),
            version: Some(version),
            kind: ActionKind::Index(Document::new(doc).unwrap()),
        }
    }

    fn t() -> Arc<str> {
        "t".into()
    }

    fn origin(offset: i64) -> Origin {
        Origin {
            partition: 0,
            offset,
            source_ts_ms: None,
            kafka_ts_ms: None,
            received_ms: 0,
        }
    }

    fn ack(offset: i64) -> Ack {
        Ack {
            slot: 0,
            epoch: 0,
            offset,
        }
    }

    #[test]
    fn only_the_newest_write_per_document_is_sent() {
        let mut b = Batch::new(false);
        b.push(action("1", 5, r#"{"v":5}"#), &t(), origin(0), ack(0));
        b.push(action("2", 6, r#"{"v":6}"#), &t(), origin(1), ack(1));
        b.push(action("1", 7, r#"{"v":7}"#), &t(), origin(2), ack(2));
        // A replayed older change of document 2 is dropped, not sent over the newer one.
        b.push(action("2", 3, r#"{"v":3}"#), &t(), origin(3), ack(3));
        assert_eq!(b.records(), 4);
        assert_eq!(b.actions(), 2);
        let s = b.seal();
        assert_eq!(
            std::str::from_utf8(&s.body).unwrap(),
            "{\"index\":{\"_index\":\"i\",\"_id\":\"2\",\"version\":6,\"version_type\":\"external_gte\"}}\n{\"v\":6}\n\
             {\"index\":{\"_index\":\"i\",\"_id\":\"1\",\"version\":7,\"version_type\":\"external_gte\"}}\n{\"v\":7}\n"
        );
        assert_eq!(s.acks.len(), 4);
        assert_eq!(
            std::str::from_utf8(&s.body_of(&[1])).unwrap(),
            "{\"index\":{\"_index\":\"i\",\"_id\":\"1\",\"version\":7,\"version_type\":\"external_gte\"}}\n{\"v\":7}\n"
        );
    }

    #[test]
    fn names_are_held_once_per_batch_whatever_their_order() {
        let mut b = Batch::new(false);
        let topics: Vec<Arc<str>> = ["a", "b", "c", "d"].map(Arc::from).to_vec();
        for round in 0..3 {
            for (i, topic) in topics.iter().enumerate() {
                let offset = (round * 4 + i) as i64;
                let mut a = action(&offset.to_string(), 1, "{}");
                a.index = topic.clone();
                b.push(a, topic, origin(offset), ack(offset));
            }
        }
        // Each topic is also its index: four names for twelve items.
        assert_eq!(b.names.names.len(), 4);
        let s = b.seal();
        for (i, item) in s.items.iter().enumerate() {
            assert_eq!(&**s.topic(item), ["a", "b", "c", "d"][i % 4]);
            assert_eq!(s.index_of(item), s.topic(item));
        }
    }

    #[test]
    fn two_documents_whose_hashes_collide_are_both_sent() {
        let mut b = Batch::new(false);
        b.push(action("1", 5, r#"{"v":5}"#), &t(), origin(0), ack(0));
        // As if document 2 hashed like document 1: the batch must compare the ids themselves.
        let mut h = b.hasher.build_hasher();
        "i".hash(&mut h);
        "2".hash(&mut h);
        b.latest.insert(h.finish(), 0);
        b.push(action("2", 3, r#"{"v":3}"#), &t(), origin(1), ack(1));
        assert_eq!((b.records(), b.actions()), (2, 2));
        let s = b.seal();
        let ids: Vec<&str> = s.items.iter().map(|i| s.id(i)).collect();
        assert_eq!(ids, ["1", "2"]);
    }

    #[test]
    fn a_batch_opens_with_a_quarter_more_room_than_the_last_or_a_fading_earlier_size() {
        let fill = |b: &mut Batch, n: usize, from: usize| {
            for i in from..from + n {
                b.push(
                    action(&i.to_string(), 1, "{}"),
                    &t(),
                    origin(i as i64),
                    ack(i as i64),
                );
            }
        };
        let mut lane = Batch::new(false);
        fill(&mut lane, 400, 0);
        let (body, ids) = (lane.body_len(), lane.names.ids.len());
        lane.take();
        let room = |b: &Batch| {
            (
                b.items.capacity(),
                b.acks.capacity(),
                b.body.capacity(),
                b.latest.capacity(),
            )
        };
        let (items, acks, bytes, docs) = room(&lane);
        // With a quarter more: a batch a little larger than the last does not grow.
        assert!(
            items >= 500 && acks >= 500 && bytes >= body + body / 4 && docs >= 500,
            "{items} {acks} {bytes} {docs}"
        );
        assert!(lane.names.ids.capacity() >= ids + ids / 4);
        // A smaller batch after it: the next still has room for 7/8 of the 400.
        fill(&mut lane, 10, 1000);
        lane.take();
        assert!(lane.items.capacity() >= 350, "{}", lane.items.capacity());
        assert!(lane.latest.capacity() >= 350);
        assert!(lane.body.capacity() >= body - body.div_ceil(8));
        // Small batches from then on: the room fades to what they need.
        for round in 0..40 {
            fill(&mut lane, 10, 2000 + 10 * round);
            lane.take();
        }
        assert!(lane.items.capacity() < 40, "{}", lane.items.capacity());
        assert!(lane.body.capacity() < body / 10, "{}", lane.body.capacity());
        // Larger again: as large as the batch before it.
        fill(&mut lane, 600, 5000);
        lane.take();
        assert!(lane.items.capacity() >= 600 && lane.acks.capacity() >= 600);
        // Never more than room for 4 096 items, however large a batch was.
        fill(&mut lane, 10_000, 10_000);
        lane.take();
        let (items, acks, _, docs) = room(&lane);
        assert!(
            items < 5000 && acks < 5000 && docs < 10_000,
            "{items} {acks} {docs}"
        );
        // And a batch that keeps every write gets room in its map too.
        let mut every = Batch::new(true);
        fill(&mut every, 100, 0);
        every.take();
        assert!(every.latest.capacity() >= 100);
    }

    #[test]
    fn when_a_malformed_document_may_be_skipped_every_write_is_sent_in_order() {
        // If the newest write of document 1 is rejected and skipped, the one before it must
        // still be in the index: nothing is superseded.
        let mut open = Batch::new(true);
        open.push(action("1", 5, r#"{"v":5}"#), &t(), origin(0), ack(0));
        open.push(action("1", 7, r#"{"v":7}"#), &t(), origin(1), ack(1));
        let b = open.take();
        assert_eq!((b.records(), b.actions()), (2, 2));
        let s = b.seal();
        let ids: Vec<i64> = s.items.iter().map(|i| i.origin.offset).collect();
        assert_eq!(ids, [0, 1]);
        assert_eq!(
            (
                s.id(&s.items[1]),
                &**s.index_of(&s.items[1]),
                &**s.topic(&s.items[1])
            ),
            ("1", "i", "t")
        );
        assert_eq!(s.items[0].ack, ack(0));
        // The batch left in its place keeps every write too.
        open.push(action("2", 1, "{}"), &t(), origin(2), ack(2));
        open.push(action("2", 2, "{}"), &t(), origin(3), ack(3));
        assert_eq!(open.actions(), 2);
    }

    #[test]
    fn an_unversioned_delete_after_a_versioned_write_is_sent() {
        let mut b = Batch::new(false);
        b.push(action("1", 5, r#"{"v":5}"#), &t(), origin(0), ack(0));
        let delete = BulkAction {
            index: "i".into(),
            id: "1".into(),
            version: None,
            kind: ActionKind::Delete,
        };
        b.push(delete, &t(), origin(1), ack(1));
        let s = b.seal();
        assert_eq!(
            std::str::from_utf8(&s.body).unwrap(),
            "{\"delete\":{\"_index\":\"i\",\"_id\":\"1\"}}\n"
        );
        // And a versioned write after an unversioned one supersedes it too.
        let mut b = Batch::new(false);
        b.push(
            BulkAction {
                index: "i".into(),
                id: "1".into(),
                version: None,
                kind: ActionKind::Delete,
            },
            &t(),
            origin(0),
            ack(0),
        );
        b.push(action("1", 5, r#"{"v":5}"#), &t(), origin(1), ack(1));
        assert_eq!(
            std::str::from_utf8(&b.seal().body).unwrap(),
            "{\"index\":{\"_index\":\"i\",\"_id\":\"1\",\"version\":5,\"version_type\":\"external_gte\"}}\n{\"v\":5}\n"
        );
    }
}
