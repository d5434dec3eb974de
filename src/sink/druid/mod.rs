//! The Druid connector's sink: each change becomes one JSON row (`row.rs`) produced to a Druid
//! ingestion topic, which Druid's Kafka indexing service ingests. An idempotent producer keeps
//! each partition's rows in order and written once per send; a record's ack comes back when
//! the broker has acknowledged its row, so the task commits offsets only past rows written.
//! (Delivery is at least once: a crash between the acknowledgement and the commit sends those
//! rows again. Queries that take the latest row per key by `__version` are not affected.)
//!
//! With `exactly.once=true` (the default) the producer is transactional: the task hands the
//! sink the offsets to commit (`Sink::commit_offsets`) once every row is acknowledged, and the
//! sink sends them in the open transaction and commits it, then opens the next — at every offset
//! commit, and sooner when the transaction reaches `transaction.max.records` rows or
//! `transaction.max.ms` of age (`Sink::commit_due`). A crash leaves the open transaction to be
//! aborted, invisible to `read_committed` readers; its records are read again from the
//! committed offsets. A task that lost its partitions (a zombie) cannot commit: the broker
//! refuses offsets from an older generation of the group (KIP-447), and a restarted worker's
//! producer fences the old one by its transactional id.
//!
//! Errors follow librdkafka's transactional API: a retriable one retries the same call; any
//! other aborts the transaction, and the task starts over from the committed offsets with a
//! new producer (`SinkError::Rewind`) — also when the producer was fenced, as Kafka Streams
//! does: the broker fences a producer whose transaction outlived `transaction.timeout.ms` (a
//! worker frozen, a long GC pause) the same way as one replaced by a newer instance. Only an
//! authorization error stops the task: starting over cannot help it.

pub mod config;
pub mod row;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::sink::{Ack, Outcome, Sink, SinkError, SinkRecord};
use config::DruidConfig;
use row::{Mapped, Rows};

/// Rows held by the producer before the consumer pauses.
const CAPACITY: usize = 50_000;
/// How long a transaction call may take.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a transaction call that failed with a retriable error is tried again.
const TXN_RETRIES: u32 = 5;
/// How long each call of `init_transactions` waits before the task's stop is looked at again.
/// A call cuts short librdkafka's wait before it asks for a producer id again (500 ms) when no
/// request is out (`rd_kafka_idemp_start`), so not much shorter than that.
const INIT_SLICE: Duration = Duration::from_secs(1);

/// Why a row was not written, and whether the broker refused it for good.
type Undelivered = (String, bool);

/// The producer's delivery reports: each row's ack, and why it was not written if it was not.
#[derive(Default)]
struct Deliveries {
    done: Mutex<Vec<(Ack, Option<Undelivered>)>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<Ack>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Box<Ack>) {
        let error = result.as_ref().err().map(|(e, m)| {
            use rdkafka::Message as _;
            let permanent = unauthorized(e)
                || matches!(
                    e.rdkafka_error_code(),
                    Some(
                        RDKafkaErrorCode::MessageSizeTooLarge
                            | RDKafkaErrorCode::InvalidMessage
                            | RDKafkaErrorCode::InvalidMessageSize
                            | RDKafkaErrorCode::InvalidRecord
                            | RDKafkaErrorCode::PolicyViolation
                    )
                );
            let why = if m.partition() >= 0 {
                format!("topic {} partition {}: {e}", m.topic(), m.partition())
            } else {
                // A row never given a partition: librdkafka never learnt the topic's partitions.
                let hint = match e.rdkafka_error_code() {
                    _ if missing_topic(e) => {
                        " (no partition of it is known: does the topic exist, or may the cluster create it?)"
                    }
                    Some(RDKafkaErrorCode::MessageTimedOut) => {
                        " (no partition of it is known: does the topic exist, may the cluster create it, and does a broker answer?)"
                    }
                    _ => "",
                };
                format!("topic {}: {e}{hint}", m.topic())
            };
            (why, permanent)
        });
        if let Ok(mut done) = self.done.lock() {
            done.push((*ack, error));
        }
    }
}

/// The transactional id of a task: `cdc-sink-<connector>-<worker>-<task>`, stable across
/// restarts of a worker and distinct between workers (each runs tasks `0..tasks.max`). A `-` or
/// `%` inside the connector's name or the worker's id is written `%2D` or `%25`, so that no two
/// (name, worker) pairs give one id: `a-b` on worker `c` and `a` on worker `b-c` would, and the
/// two tasks would fence each other's producer in turn.
pub fn transactional_id(connector: &str, worker: &str, task: usize) -> String {
    fn escaped(part: &str) -> String {
        part.replace('%', "%25").replace('-', "%2D")
    }
    format!("cdc-sink-{}-{}-{task}", escaped(connector), escaped(worker))
}

/// librdkafka's errors for a topic it does not find.
fn missing_topic(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::UnknownTopic | RDKafkaErrorCode::UnknownTopicOrPartition)
    )
}

/// The rows' producer's properties: the worker's Kafka settings, the connector's
/// `producer.override.*`, then what exactly once needs; transactional under `transactional_id`
/// (required with `exactly.once`).
fn producer_config(
    cfg: &DruidConfig,
    settings: &Settings,
    transactional_id: Option<String>,
) -> Result<ClientConfig, SinkError> {
    let mut c = ClientConfig::new();
    c.set("linger.ms", "5").set("compression.type", "lz4");
    for (k, v) in crate::source::client_config(settings).config_map() {
        c.set(k, v);
    }
    for (k, v) in &cfg.producer_overrides {
        c.set(k, v);
    }
    c.set("enable.idempotence", "true").set("acks", "all");
    let transactional = cfg.exactly_once;
    if transactional {
        // Checked at validation against producer.override.*; here with the worker's
        // [kafka.properties] too.
        let timeout: u64 = c
            .get("transaction.timeout.ms")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(60_000);
        if cfg.txn_max.as_millis() >= u128::from(timeout) {
            return Err(SinkError::Fatal(format!(
                "transaction.max.ms ({} ms) must be below the producer's transaction.timeout.ms ({timeout} ms, from the worker's [kafka.properties] or producer.override.transaction.timeout.ms), or every transaction is aborted",
                cfg.txn_max.as_millis()
            )));
        }
        let id = transactional_id
            .ok_or_else(|| SinkError::Fatal("exactly.once needs a transactional id".into()))?;
        c.set("transactional.id", id);
    }
    Ok(c)
}

/// Whether librdkafka takes the rows' producer's properties together, as it checks them only
/// when a client is created (`message.timeout.ms` against `linger.ms`, a CA file it cannot
/// read): on a producer that contacts no broker, when the config is posted rather than when a
/// task starts.
pub fn check_producer(cfg: &DruidConfig, settings: &Settings) -> Result<(), String> {
    let c =
        producer_config(cfg, settings, Some("cdc-sink-check".into())).map_err(|e| e.to_string())?;
    crate::source::probe::<BaseProducer>(c, "the producer's")
}

pub struct DruidSink {
    rows: Rows,
    producer: BaseProducer<Deliveries>,
    metrics: Arc<Metrics>,
    /// Rows sent and not yet reported.
    in_flight: usize,
    /// The connector's options (`exactly.once`, the transaction limits).
    cfg: Arc<DruidConfig>,
    /// A transaction is open (false once one failed: the sink then commits nothing more).
    txn_open: bool,
    /// Rows in the open transaction, and when its first row was sent.
    txn_rows: usize,
    txn_started: Option<Instant>,
}

impl DruidSink {
    /// A sink producing with the worker's Kafka settings; transactional under
    /// `transactional_id` (required with `exactly.once`). `None` when `stop` was set while its
    /// producer waited to start transactions.
    pub fn new(
        cfg: Arc<DruidConfig>,
        settings: &Settings,
        metrics: Arc<Metrics>,
        transactional_id: Option<String>,
        stop: &AtomicBool,
    ) -> Result<Option<DruidSink>, SinkError> {
        let c = producer_config(&cfg, settings, transactional_id)?;
        let id = c.get("transactional.id").unwrap_or("").to_owned();
        let transactional = cfg.exactly_once;
        let producer: BaseProducer<Deliveries> =
            c.create_with_context(Deliveries::default()).map_err(|e| {
                SinkError::Fatal(format!(
                    "cannot create the Kafka producer of the druid connector: {e}"
                ))
            })?;
        if transactional {
            let started = init_transactions(&producer, &id, stop)
                .and_then(|started| started.then(|| producer.begin_transaction()).transpose())
                .map_err(|e| {
                    // An unreachable or busy broker: start over later. A cluster that cannot
                    // do transactions, or refuses this producer: fail, saying so.
                    let unsupported = matches!(
                        e.rdkafka_error_code(),
                        Some(
                            RDKafkaErrorCode::UnsupportedVersion
                                | RDKafkaErrorCode::UnsupportedFeature
                                | RDKafkaErrorCode::UnsupportedForMessageFormat
                        )
                    );
                    if e.rdkafka_error_code() == Some(RDKafkaErrorCode::InvalidTransactionTimeout)
                    {
                        SinkError::Fatal(format!(
                            "cannot start a Kafka transaction ({e}): transaction.timeout.ms is above the brokers' transaction.max.timeout.ms; lower producer.override.transaction.timeout.ms"
                        ))
                    } else if unsupported {
                        SinkError::Fatal(format!(
                            "cannot start a Kafka transaction ({e}): exactly.once needs a Kafka cluster with transactions (set exactly.once=false for at-least-once delivery)"
                        ))
                    } else if unauthorized(&e) {
                        SinkError::Fatal(format!(
                            "cannot start a Kafka transaction ({e}): the producer is not allowed to use its transactional id"
                        ))
                    } else if matches!(
                        e.rdkafka_error_code(),
                        Some(
                            RDKafkaErrorCode::OperationTimedOut
                                | RDKafkaErrorCode::RequestTimedOut
                                | RDKafkaErrorCode::CoordinatorNotAvailable
                        )
                    ) {
                        SinkError::Rewind(format!(
                            "cannot start a Kafka transaction: {e} (no transaction coordinator answered: a cluster with fewer live brokers than its transaction.state.log.replication.factor, or than transaction.state.log.min.isr, never starts one)"
                        ))
                    } else {
                        SinkError::Rewind(format!("cannot start a Kafka transaction: {e}"))
                    }
                })?;
            if started.is_none() {
                return Ok(None);
            }
        }
        Ok(Some(DruidSink {
            rows: Rows::new(cfg.clone()),
            cfg,
            producer,
            metrics,
            in_flight: 0,
            txn_open: transactional,
            txn_rows: 0,
            txn_started: None,
        }))
    }
}

/// The producer's `init_transactions`, within [`TXN_TIMEOUT`] in all, in calls of
/// [`INIT_SLICE`]: librdkafka resumes a call that timed out where it stood, so a task told to
/// stop meanwhile stops within a slice. In one call, a transaction coordinator that never
/// answered (an unreachable broker, too few brokers for the transaction log) held a clean stop
/// of the worker for the whole 30 s. A call that runs out of time returns the last error of
/// the producer id request when there was one (`CONCURRENT_TRANSACTIONS` while the broker
/// aborts a crashed producer's transaction, `COORDINATOR_LOAD_IN_PROGRESS`, `NOT_COORDINATOR`…),
/// retriable as a timeout is: every retriable error is waited out until [`TXN_TIMEOUT`], as
/// the one call did, and the last one returned then. `Ok(false)`: `stop` was set before the
/// transactions started (a call that failed meanwhile, for whatever reason, is not reported).
fn init_transactions(
    producer: &BaseProducer<Deliveries>,
    id: &str,
    stop: &AtomicBool,
) -> Result<bool, KafkaError> {
    let deadline = Instant::now() + TXN_TIMEOUT;
    let mut said = false;
    // Each call clears the request's last error: a wait that ends in a bare timeout reports
    // the last one a slice saw instead (`CONCURRENT_TRANSACTIONS` rather than "no transaction
    // coordinator answered").
    let mut seen: Option<KafkaError> = None;
    loop {
        if said && stop.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let slice = deadline
            .saturating_duration_since(Instant::now())
            .min(INIT_SLICE);
        let called = Instant::now();
        let result = producer.init_transactions(slice);
        if result.is_err() && stop.load(Ordering::Relaxed) {
            return Ok(false);
        }
        match result {
            Err(KafkaError::Transaction(e)) if e.is_retriable() && Instant::now() < deadline => {
                if !said {
                    said = true;
                    tracing::info!(
                        "waiting for a Kafka transaction coordinator to start the transactions of producer {id} (for up to {TXN_TIMEOUT:?}): {e}"
                    );
                }
                // A slice apart at least, should a call come back early.
                std::thread::sleep(slice.saturating_sub(called.elapsed()));
                if e.code() != RDKafkaErrorCode::OperationTimedOut {
                    seen = Some(KafkaError::Transaction(e));
                }
            }
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::OperationTimedOut) => {
                return Err(seen.unwrap_or(e));
            }
            done => return done.map(|()| true),
        }
    }
}

impl Sink for DruidSink {
    fn put(&mut self, record: SinkRecord<'_>, ack: Ack) -> Result<Outcome, SinkError> {
        let at = || {
            format!(
                "topic {} partition {} offset {}",
                record.kafka_topic, record.partition, record.offset
            )
        };
        let (topic, key, value) = match self.rows.map(&record) {
            Ok(Mapped::Skip(why)) => return Ok(Outcome::Skipped(why)),
            Ok(Mapped::Row { topic, key, value }) => (topic, key, value),
            Err(e) => return Err(SinkError::Record(format!("{}: {e}", at()))),
        };
        let mut rec = BaseRecord::with_opaque_to(&topic, Box::new(ack))
            .key(key.as_bytes())
            .payload(&value);
        loop {
            match self.producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // The producer's queue is full: let it deliver, then try again.
                    rec = r;
                    self.producer.poll(Duration::from_millis(10));
                }
                // Refused by librdkafka before it entered the transaction, for its size: this
                // record's fault, which `errors.tolerance` may skip (to the dead-letter queue).
                Err((e, _))
                    if matches!(
                        e.rdkafka_error_code(),
                        Some(
                            RDKafkaErrorCode::MessageSizeTooLarge
                                | RDKafkaErrorCode::InvalidMessageSize
                        )
                    ) =>
                {
                    return Err(SinkError::Record(format!(
                        "{}: its row ({} bytes) cannot be produced to {topic}: {e}; raise producer.override.message.max.bytes (and the topic's max.message.bytes) to write it",
                        at(),
                        value.len() + key.len()
                    )));
                }
                // librdkafka found the topic missing (it waits `topic.metadata.propagation.max.ms`
                // for it) and now refuses its rows at once: as for the rows it failed through
                // their delivery reports, the task starts over, until the topic exists.
                Err((e, _)) if missing_topic(&e) => {
                    self.abort();
                    return Err(SinkError::Rewind(format!(
                        "{}: cannot produce to {topic}: {e} (does the topic exist, or may the cluster create it?)",
                        at()
                    )));
                }
                Err((e, _)) => {
                    let why = format!("{}: cannot produce to {topic}: {e}", at());
                    // The producer is in an error state (its transaction failed, or it was
                    // fenced): abort and start over. Anything else is about this record.
                    let state = matches!(
                        e.rdkafka_error_code(),
                        Some(RDKafkaErrorCode::State | RDKafkaErrorCode::Fatal)
                    );
                    if state {
                        self.abort();
                        return Err(SinkError::Rewind(format!(
                            "the producer's transaction failed: {why}"
                        )));
                    }
                    return Err(SinkError::Fatal(why));
                }
            }
        }
        self.in_flight += 1;
        if self.cfg.exactly_once {
            self.txn_rows += 1;
            self.txn_started.get_or_insert_with(Instant::now);
        }
        Ok(Outcome::Buffered)
    }

    fn poll(&mut self, wait: Duration) -> Result<Vec<Ack>, SinkError> {
        // With nothing in flight, `serve` waits for nothing.
        crate::deliveries::serve(&self.producer, wait, self.in_flight, |p| {
            p.context().done.lock().map(|d| d.len()).unwrap_or_default()
        });
        let done = self.take_reports();
        // Every report taken is one row less in flight, those after a failed one too: counted
        // still, they would hold a failed task's final drain for all of flush.timeout.ms.
        self.in_flight = self.in_flight.saturating_sub(done.len());
        let mut acks = Vec::with_capacity(done.len());
        for (ack, error) in done {
            if let Some((e, permanent)) = error {
                // The row is not written, nor may any row after it be counted as written.
                // With a transaction, abort it (nothing of it becomes visible). The broker
                // refusing this row for good fails the task; anything else (librdkafka gave up
                // after delivery.timeout.ms) starts over from the committed offsets.
                self.abort();
                let why = format!("a row could not be written: {e}");
                return Err(if permanent {
                    SinkError::Fatal(why)
                } else {
                    SinkError::Rewind(why)
                });
            }
            acks.push(ack);
        }
        self.metrics.written("row", acks.len() as u64);
        self.metrics.rows_produced(acks.len() as u64);
        Ok(acks)
    }

    fn flush(&mut self) {
        // librdkafka sends what it holds by itself (linger.ms); nothing is sealed here.
    }

    /// With `exactly.once`, the open transaction is aborted now: none of its rows becomes
    /// visible. Without, rows already handed to the producer are still delivered: a late row
    /// is harmless, as every row carries its change's version and Kafka offset and the latest
    /// rows are chosen by them, never by arrival.
    fn abandon(&mut self) -> &'static str {
        if !self.cfg.exactly_once {
            return "rows already handed to the producer are still delivered, each with its version";
        }
        self.abort();
        "the open transaction aborted"
    }

    fn pending(&self) -> usize {
        self.in_flight
    }

    fn capacity(&self) -> usize {
        CAPACITY
    }

    fn trouble(&self) -> Option<String> {
        None
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.txn_started.map(|t| t + self.cfg.txn_max)
    }

    fn commits_offsets(&self) -> bool {
        self.cfg.exactly_once
    }

    fn commit_due(&self) -> bool {
        self.txn_rows >= self.cfg.txn_max_records
            || self
                .txn_started
                .is_some_and(|t| t.elapsed() >= self.cfg.txn_max)
    }

    fn commit_offsets(
        &mut self,
        offsets: &[(Arc<str>, i32, i64)],
        group: &ConsumerGroupMetadata,
    ) -> Result<(), SinkError> {
        if !self.txn_open {
            return Err(SinkError::Rewind(
                "no transaction open: an earlier one failed".into(),
            ));
        }
        let mut tpl = TopicPartitionList::with_capacity(offsets.len());
        for (t, p, o) in offsets {
            tpl.add_partition_offset(t, *p, Offset::Offset(*o))
                .map_err(|e| SinkError::Fatal(e.to_string()))?;
        }
        let done = txn_call(|| {
            self.producer
                .send_offsets_to_transaction(&tpl, group, TXN_TIMEOUT)
        })
        .and_then(|()| txn_call(|| self.producer.commit_transaction(TXN_TIMEOUT)));
        if let Err(e) = done {
            // Nothing of this transaction becomes visible; its records are read again from
            // the last committed offsets.
            let rows = self.txn_rows;
            self.abort();
            let why = format!("the transaction of {rows} rows and their offsets failed: {e}");
            return Err(if unauthorized(&e) {
                SinkError::Fatal(why)
            } else {
                SinkError::Rewind(why)
            });
        }
        self.metrics.transaction();
        self.txn_rows = 0;
        self.txn_started = None;
        self.txn_open = false;
        self.producer
            .begin_transaction()
            .map_err(|e| SinkError::Rewind(format!("cannot start a Kafka transaction: {e}")))?;
        self.txn_open = true;
        Ok(())
    }
}

/// Whether `e` says the producer is not allowed to do what it tried.
fn unauthorized(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::TransactionalIdAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed
                | RDKafkaErrorCode::TopicAuthorizationFailed
        )
    )
}

/// Whether retrying a transactional call after `e` cannot help.
fn gives_up(e: &KafkaError) -> bool {
    unauthorized(e) || matches!(e, KafkaError::Transaction(t) if t.is_fatal())
}

/// Runs a transactional call again while librdkafka says its error is retriable.
fn txn_call(mut call: impl FnMut() -> Result<(), KafkaError>) -> Result<(), KafkaError> {
    let mut attempt = 0;
    loop {
        match call() {
            Err(KafkaError::Transaction(e)) if e.is_retriable() && attempt < TXN_RETRIES => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(100 << attempt));
            }
            done => return done,
        }
    }
}

impl DruidSink {
    /// The delivery reports served since the last call.
    fn take_reports(&self) -> Vec<(Ack, Option<Undelivered>)> {
        std::mem::take(
            &mut *self
                .producer
                .context()
                .done
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    /// Aborts the open transaction, if any: nothing of it becomes visible, and the sink
    /// commits nothing more. librdkafka's abort waits until the delivery reports of the purged
    /// rows are served, which only this thread does: it is called in short steps, serving the
    /// reports between them (their acks are dropped: those rows are not written).
    fn abort(&mut self) {
        if !self.txn_open {
            return;
        }
        self.txn_open = false;
        let deadline = Instant::now() + TXN_TIMEOUT;
        loop {
            match self.producer.abort_transaction(Duration::from_millis(200)) {
                Ok(()) => break,
                Err(e) if Instant::now() < deadline && !gives_up(&e) => {
                    // An error that comes back at once (not a timeout) would otherwise make
                    // this a busy loop until the deadline.
                    self.producer.poll(Duration::from_millis(20));
                    let served = self.take_reports().len();
                    self.in_flight = self.in_flight.saturating_sub(served);
                }
                Err(e) => {
                    // The broker aborts it after transaction.timeout.ms, or the next
                    // producer with this transactional id fences it.
                    tracing::warn!("could not abort the Kafka transaction: {e}");
                    break;
                }
            }
        }
    }
}

impl Drop for DruidSink {
    fn drop(&mut self) {
        // What was not committed must not become visible.
        self.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactional_ids_of_distinct_names_and_workers_are_distinct() {
        assert_eq!(
            transactional_id("orders", "db:8083", 1),
            "cdc-sink-orders-db:8083-1"
        );
        assert_eq!(
            transactional_id("a-b", "c", 0),
            "cdc-sink-a%2Db-c-0",
            "a hyphen is escaped"
        );
        let pairs = [("a-b", "c"), ("a", "b-c"), ("a%2Db", "c"), ("a", "%2Db-c")];
        for (i, x) in pairs.iter().enumerate() {
            for y in &pairs[i + 1..] {
                assert_ne!(
                    transactional_id(x.0, x.1, 0),
                    transactional_id(y.0, y.1, 0),
                    "{x:?} and {y:?}"
                );
            }
        }
    }

    #[test]
    fn a_transaction_longer_than_the_workers_transaction_timeout_is_refused_at_start() {
        let config = crate::connector::ConnectorConfig::from_json(
            r#"{"name":"d","config":{"connector.class":"druid","topics":"t","transaction.max.ms":"1000"}}"#,
        )
        .unwrap();
        let spec = crate::connector::ConnectorSpec::validate(&config).unwrap();
        let crate::connector::SinkSpec::Druid(cfg) = spec.sink else {
            panic!("not a druid connector")
        };
        let mut settings = Settings::default();
        settings
            .kafka
            .properties
            .insert("transaction.timeout.ms".into(), "900".into());
        let metrics = Arc::new(crate::metrics::Registry::new().task("d", 0));
        let Err(SinkError::Fatal(why)) = DruidSink::new(
            Arc::new(*cfg),
            &settings,
            metrics,
            Some("cdc-sink-d-test-0".into()),
            &AtomicBool::new(false),
        ) else {
            panic!("accepted")
        };
        assert!(
            why.starts_with("transaction.max.ms (1000 ms) must be below the producer's transaction.timeout.ms (900 ms"),
            "{why}"
        );
    }
}
