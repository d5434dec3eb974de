//! A bulk request being filled: actions encoded straight into the NDJSON body, the last write
//! per document kept, and the acks of every record the batch answers for.

use std::hash::{BuildHasher, Hash, Hasher};
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::mapping::{ActionKind, BulkAction};
use crate::sink::Ack;

/// Where a record came from (for error messages) and when (for freshness).
#[derive(Debug, Clone)]
pub struct Origin {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// `source.ts_ms`: when the change was committed in the source database.
    pub source_ts_ms: Option<i64>,
    /// The Kafka record's timestamp.
    pub kafka_ts_ms: Option<i64>,
    /// When the sink was handed the record (ms since the epoch).
    pub received_ms: i64,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "topic {} partition {} offset {}",
            self.topic, self.partition, self.offset
        )
    }
}

/// One action in a batch.
#[derive(Debug, Clone)]
pub struct Item {
    /// Its bytes in the body (action line and document line).
    pub range: Range<usize>,
    pub index: Arc<str>,
    pub id: String,
    pub version: Option<u64>,
    pub is_delete: bool,
    pub origin: Origin,
    /// The ack of the record this write is of.
    pub ack: Ack,
    live: bool,
}

/// A batch being filled.
pub struct Batch {
    body: Vec<u8>,
    items: Vec<Item>,
    /// Hash of (index, id) → the item holding that document's current write.
    latest: crate::FastMap<u64, usize>,
    hasher: foldhash::fast::RandomState,
    acks: Vec<Ack>,
    live: usize,
    pub opened: Instant,
    /// Every write is sent, none superseded by a later one of its document: when a document
    /// Elasticsearch rejects as malformed may be skipped (`behavior.on.malformed.documents`),
    /// the write before it must still reach the index, in order.
    keep_every_write: bool,
}

/// A batch ready to send: only live items, body compacted.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub body: Bytes,
    pub items: Vec<Item>,
    pub acks: Vec<Ack>,
}

impl Batch {
    /// An empty batch; `keep_every_write`: see the field.
    pub fn new(keep_every_write: bool) -> Batch {
        Batch {
            body: Vec::new(),
            items: Vec::new(),
            latest: Default::default(),
            hasher: Default::default(),
            acks: Vec::new(),
            live: 0,
            opened: Instant::now(),
            keep_every_write,
        }
    }

    /// This batch, leaving an empty one of the same kind in its place, sized like this one: a
    /// lane's batches are alike, and a body grown by doubling was copied about once over and
    /// written into fresh pages the kernel had to fault in (reallocation and page faults: 9% of
    /// the JSON hot path's profile, 3% after).
    ///
    /// At most `bulk.size.bytes`' default is reserved: a batch made big by one huge document
    /// does not make its lane hold as much while idle.
    pub fn take(&mut self) -> Batch {
        const MOST: usize = 5 * 1024 * 1024;
        let mut next = Batch::new(self.keep_every_write);
        next.body.reserve(self.body.len().min(MOST));
        next.items.reserve(self.items.len());
        next.acks.reserve(self.acks.len());
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
    pub fn push(&mut self, action: BulkAction, origin: Origin, ack: Ack) {
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
            if prev.live && prev.index == action.index && prev.id == action.id {
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
        self.items.push(Item {
            range: start..self.body.len(),
            is_delete: matches!(action.kind, ActionKind::Delete),
            index: action.index,
            id: action.id,
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
        }
    }
}

impl Sealed {
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
    use super::*;

    fn action(id: &str, version: u64, doc: &str) -> BulkAction {
        BulkAction {
            index: "i".into(),
            id: id.into(),
            version: Some(version),
            kind: ActionKind::Index(doc.as_bytes().to_vec()),
        }
    }

    fn origin(offset: i64) -> Origin {
        Origin {
            topic: "t".into(),
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
        b.push(action("1", 5, r#"{"v":5}"#), origin(0), ack(0));
        b.push(action("2", 6, r#"{"v":6}"#), origin(1), ack(1));
        b.push(action("1", 7, r#"{"v":7}"#), origin(2), ack(2));
        // A replayed older change of document 2 is dropped, not sent over the newer one.
        b.push(action("2", 3, r#"{"v":3}"#), origin(3), ack(3));
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
    fn when_a_malformed_document_may_be_skipped_every_write_is_sent_in_order() {
        // If the newest write of document 1 is rejected and skipped, the one before it must
        // still be in the index: nothing is superseded.
        let mut open = Batch::new(true);
        open.push(action("1", 5, r#"{"v":5}"#), origin(0), ack(0));
        open.push(action("1", 7, r#"{"v":7}"#), origin(1), ack(1));
        let b = open.take();
        assert_eq!((b.records(), b.actions()), (2, 2));
        let s = b.seal();
        let ids: Vec<i64> = s.items.iter().map(|i| i.origin.offset).collect();
        assert_eq!(ids, [0, 1]);
        assert_eq!(s.items[0].ack, ack(0));
        // The batch left in its place keeps every write too.
        open.push(action("2", 1, "{}"), origin(2), ack(2));
        open.push(action("2", 2, "{}"), origin(3), ack(3));
        assert_eq!(open.actions(), 2);
    }

    #[test]
    fn an_unversioned_delete_after_a_versioned_write_is_sent() {
        let mut b = Batch::new(false);
        b.push(action("1", 5, r#"{"v":5}"#), origin(0), ack(0));
        let delete = BulkAction {
            index: "i".into(),
            id: "1".into(),
            version: None,
            kind: ActionKind::Delete,
        };
        b.push(delete, origin(1), ack(1));
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
            origin(0),
            ack(0),
        );
        b.push(action("1", 5, r#"{"v":5}"#), origin(1), ack(1));
        assert_eq!(
            std::str::from_utf8(&b.seal().body).unwrap(),
            "{\"index\":{\"_index\":\"i\",\"_id\":\"1\",\"version\":5,\"version_type\":\"external_gte\"}}\n{\"v\":5}\n"
        );
    }
}
