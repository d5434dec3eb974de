//! Sinks: where decoded changes are written. Each sink buffers records, writes them, and hands
//! back the [`Ack`] of every record once it is durably written, so the task can commit offsets
//! (docs/design.md). Two implement the trait: Elasticsearch (documents by id) and Druid (one
//! row per change on an ingestion topic).

pub mod druid;
pub mod elasticsearch;
pub mod identity;
pub mod snapshot_floors;
pub mod source_versions;

use std::time::Duration;

use crate::decode::{Row, Value};

/// The receipt of one record: handed to the sink with the record, returned when it is written.
/// `slot` and `epoch` identify the partition assignment it was read under (see `source::offsets`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub slot: u32,
    pub epoch: u32,
    pub offset: i64,
}

/// One decoded record as the sink sees it.
#[derive(Debug, Clone, Copy)]
pub struct SinkRecord<'a> {
    /// The topic, after any router transform.
    pub topic: &'a str,
    /// The Kafka topic the record was read from (before routing).
    pub kafka_topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// The Kafka record timestamp.
    pub timestamp_ms: Option<i64>,
    /// The decoded key; `None` for a record without key.
    pub key: Option<&'a Row>,
    pub value: &'a Value,
    /// When the sink is handed the record (ms since the epoch): read once per burst of records,
    /// after the first is decoded (see `task::put`).
    pub received_ms: i64,
}

/// A record the sink did not write for a reason of its own (a document Elasticsearch rejected
/// as malformed), handed back instead of its ack for the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub ack: Ack,
    pub topic: std::sync::Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub reason: String,
}

/// What the sink did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Buffered; its ack comes back from [`Sink::poll`] once written.
    Buffered,
    /// Nothing to write (the name says why, e.g. `tombstone`); the caller acks it at once.
    Skipped(&'static str),
}

/// A failure that stops the task. The message names the record when one is to blame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// A record that cannot be written as it is (bad key, document rejected…).
    #[error("{0}")]
    Record(String),
    /// The sink gave up (retries exhausted, or an unexpected response).
    #[error("{0}")]
    Fatal(String),
    /// The sink discarded everything it took since the last offset commit (an aborted
    /// transaction, a row the producer could not deliver): the task starts over from the
    /// committed offsets, with a new sink.
    #[error("{0}")]
    Rewind(String),
}

/// What a task holds in place of its sink once it has ended: the sink itself is dropped on the
/// task's thread, while the consumer's close, which serves a last revocation, may go on after
/// the task (`source::close`). It takes nothing and holds nothing.
pub struct Ended;

impl Sink for Ended {
    fn put(&mut self, _: SinkRecord<'_>, _: Ack) -> Result<Outcome, SinkError> {
        Err(SinkError::Fatal("the task has ended".into()))
    }

    fn poll(&mut self, _: Duration) -> Result<Vec<Ack>, SinkError> {
        Ok(Vec::new())
    }

    fn flush(&mut self) {}

    fn abandon(&mut self) -> &'static str {
        "nothing to give up: the task had ended"
    }

    fn pending(&self) -> usize {
        0
    }

    fn capacity(&self) -> usize {
        0
    }

    fn trouble(&self) -> Option<String> {
        None
    }

    fn next_deadline(&self) -> Option<std::time::Instant> {
        None
    }
}

/// How a record's wait for its whole topic ([`Sink::awaits_topic`]) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicWait {
    /// Every partition is written up to the record's point.
    CaughtUp,
    /// The record's partition was revoked: the work is left to whoever reads the record again.
    Revoked,
    /// Whether every partition is written up to the record's point cannot be known, or never
    /// will be (records removed from the log before the group wrote them): the work must not
    /// be done, and the record is done without it. Why, for the log.
    Never(String),
}

/// The key of a record the task passed over ([`Sink::passed_over`]), as far as it was read.
#[derive(Debug, Clone, Copy)]
pub enum PassedKey<'a> {
    /// It could not be decoded.
    Unread,
    /// Decoded; `None` for a record without key.
    Read(Option<&'a Row>),
}

/// A destination for decoded changes, driven by one task's thread.
pub trait Sink: Send {
    /// Takes one record; never blocks on I/O.
    fn put(&mut self, record: SinkRecord<'_>, ack: Ack) -> Result<Outcome, SinkError>;

    /// Sends what is ready (full or lingered batches) and returns the acks of records written
    /// since the last call, waiting up to `wait` for one when there are none yet.
    fn poll(&mut self, wait: Duration) -> Result<Vec<Ack>, SinkError>;

    /// Records rejected since the last call (see [`Rejected`]); their acks never come back from
    /// [`Sink::poll`]. Only a sink told to hand them back returns any.
    fn take_rejected(&mut self) -> Vec<Rejected> {
        Vec::new()
    }

    /// Seals every partly filled batch so that the next polls send it (shutdown, revocation).
    fn flush(&mut self);

    /// The task has polled its consumer, which serves its rebalance callbacks (called once per
    /// burst of records, after it, when its last poll went through: `source::went_through`):
    /// `began` is when the burst's first poll began, and every rebalance librdkafka had queued
    /// by then has been served. The Elasticsearch sink holds its writes after the process stood still until the
    /// task has polled since (`elasticsearch::stall`): not from when a poll returned, since a
    /// record handled after it may keep the task busy for seconds (a slow schema registry).
    fn consumer_polled(&self, _began: std::time::Instant) {}

    /// Whether writes are held now, waiting for a poll of the consumer (the Elasticsearch
    /// sink's hold after a stall): a rebalance callback, itself inside a poll, does not wait
    /// for them.
    fn held(&self) -> bool {
        false
    }

    /// Gives up every write not finished: none of them is committed, and none is sent or
    /// retried after this returns (a request already sent cannot be called back). The task
    /// calls it as soon as it knows that writes of partitions it no longer owns are unfinished
    /// (lost to another member, or still retrying when they were revoked), and before it closes
    /// its consumer and drops the sink, which can take seconds: a write retrying meanwhile could
    /// land after the next owner's newer ones. The task gives the sink nothing more after this.
    /// Returns what became of those writes, for the log.
    fn abandon(&mut self) -> &'static str;

    /// Records taken and not yet acked: the task pauses consumption above a limit.
    fn pending(&self) -> usize;

    /// The most records this sink wants to hold before the consumer pauses.
    fn capacity(&self) -> usize;

    /// Why the sink is not making progress, if it is not (shown in task status).
    fn trouble(&self) -> Option<String>;

    /// When the sink next has something to send (a lingering batch), if it has.
    fn next_deadline(&self) -> Option<std::time::Instant>;

    /// Whether the partition's committed offset must not pass `record` until the record after
    /// it in the partition has been handled too: the sink needs `record` to handle the next one
    /// correctly after a restart (a delete event and its tombstone). Asked before [`Sink::put`].
    fn holds(&self, record: &SinkRecord<'_>) -> bool {
        let _ = record;
        false
    }

    /// A record of (`topic`, `partition`) (its Kafka topic) failed before it reached the sink,
    /// or [`Sink::put`] refused it, and the task tolerated it (`errors.tolerance=all`,
    /// `drop.invalid.message`); it may be a delete event (its value unread, or read as a delete
    /// or a tombstone). What the sink remembers of the records before it for the ones after
    /// must not carry across a record it never handled that may have changed it (a delete
    /// event the tombstone after it belongs to). `key`: the record's, as far as it was read.
    fn passed_over(&mut self, topic: &str, partition: i32, key: PassedKey<'_>) {
        let _ = (topic, partition, key);
    }

    /// Whether the sink must finish something once every partition of `record`'s Kafka topic
    /// is written up to where the topic ended when `record` was read (after a table's
    /// snapshot: remove what the snapshot did not contain). The task then watches those
    /// partitions and calls [`Sink::topic_caught_up`]; the record's ack comes back only after
    /// that work is done. Asked before [`Sink::put`].
    fn awaits_topic(&self, record: &SinkRecord<'_>) -> bool {
        let _ = record;
        false
    }

    /// The task's answer for a record [`Sink::awaits_topic`] asked about.
    fn topic_caught_up(&mut self, ack: Ack, wait: TopicWait) {
        let _ = (ack, wait);
    }

    /// Whether this sink commits the consumed offsets itself, in one transaction with its
    /// writes (the Druid connector with `exactly.once=true`). The task then hands it the offsets
    /// to commit, once every write in flight is acknowledged, instead of committing them.
    fn commits_offsets(&self) -> bool {
        false
    }

    /// Whether the sink wants its writes committed now, before the next periodic commit (its
    /// open transaction reached its size or age limit).
    fn commit_due(&self) -> bool {
        false
    }

    /// Commits everything written since the last call together with `offsets` (topic,
    /// partition, next offset) for the consumer group `group`, atomically. On failure none of
    /// it becomes visible: `Rewind` when the task can start over from the committed offsets,
    /// `Fatal` when it must stop.
    fn commit_offsets(
        &mut self,
        offsets: &[(std::sync::Arc<str>, i32, i64)],
        group: &rdkafka::consumer::ConsumerGroupMetadata,
    ) -> Result<(), SinkError> {
        let _ = (offsets, group);
        Err(SinkError::Fatal(
            "this sink does not commit offsets itself".into(),
        ))
    }
}
