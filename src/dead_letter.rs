//! The dead-letter queue (`errors.deadletterqueue.topic.name`): records a task tolerates
//! (`errors.tolerance=all`) are copied to a Kafka topic unchanged — key, value, headers and
//! timestamp — with Kafka Connect's `__connect.errors.*` headers appended when
//! `errors.deadletterqueue.context.headers.enable=true`.
//!
//! A record's ack is handed back only once Kafka has acknowledged its copy, so its offset is
//! never committed before: a copy that cannot be written (the topic unavailable) is sent again,
//! with backoff, for as long as it takes; the partition's committed offset waits for it. The
//! producer is idempotent with `acks=all`. Delivery is at least once: a crash between the
//! copy's acknowledgement and the offset commit copies the record again.
//!
//! A record Elasticsearch rejects is no longer in memory when the rejection comes back; it is
//! read again from Kafka by its offset (which is not committed yet, so it is still there).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, warn};

use crate::connector::errors::{DeadLetterConfig, Stage};
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::sink::{Ack, Rejected};
use crate::source::headers::{self, Record};

/// How long topic creation and a re-read may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);
/// First and longest wait before a copy that failed is sent again.
const RESEND_BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));
/// Sends refused for a full producer queue (10 ms apart) before the copies wait a backoff.
const QUEUE_FULL_TRIES: u32 = 10;
/// A copy unacknowledged for this long makes the queue show as trouble in task status.
const SLOW: Duration = Duration::from_secs(10);

/// Why a record failed, as the context headers carry it.
pub struct Failure<'a> {
    pub stage: Stage,
    /// The class whose operation failed: the converter's, or the connector's for `TASK_PUT`.
    pub class_name: &'a str,
    /// Kafka Connect's exception class for this kind of failure.
    pub exception_class: &'static str,
    pub message: &'a str,
}

/// The exception classes Kafka Connect reports for a record that cannot be converted or mapped
/// (`DataException`) and for one the sink system refused (`ConnectException`).
pub const DATA_EXCEPTION: &str = "org.apache.kafka.connect.errors.DataException";
pub const CONNECT_EXCEPTION: &str = "org.apache.kafka.connect.errors.ConnectException";

/// One copy, kept until Kafka acknowledges it (the producer's opaque is its id).
struct Letter {
    ack: Ack,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: OwnedHeaders,
    timestamp: Option<i64>,
    /// When it was first sent, and how many times it was.
    since: Instant,
    attempts: u32,
}

/// The producer's delivery reports: the copy's id, and why it was not written if it was not.
#[derive(Default)]
struct Reports {
    done: Mutex<Vec<(usize, Option<String>)>>,
}

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, id: usize) {
        let error = result.as_ref().err().map(|(e, _)| e.to_string());
        if let Ok(mut done) = self.done.lock() {
            done.push((id, error));
        }
    }
}

pub struct DeadLetterQueue {
    producer: BaseProducer<Reports>,
    cfg: DeadLetterConfig,
    connector: String,
    task: String,
    metrics: Arc<Metrics>,
    /// Copies not yet acknowledged, by id.
    letters: BTreeMap<usize, Letter>,
    next_id: usize,
    /// Copies whose write failed, each with when to send it again, the soonest first.
    resend: VecDeque<(Instant, usize)>,
    /// Why the last write failed, until one succeeds.
    failing: Option<String>,
    /// The producer's queue stayed full at the last send: copies wait until the next `poll`.
    full: bool,
    /// Reads rejected records again; made on first use.
    fetcher: Option<BaseConsumer>,
    fetch_config: ClientConfig,
}

/// The largest copy the producer sends (`message.max.bytes`), unless `[kafka.properties]` sets it.
const COPY_MAX_BYTES: &str = "67108864";

/// The queue's producer's properties: the worker's Kafka settings, the connector's
/// `producer.override.*` (when they are the queue's), then cdc-sink's own.
fn producer_config(cfg: &DeadLetterConfig, settings: &Settings) -> ClientConfig {
    let mut c = crate::source::client_config(settings);
    c.set("linger.ms", "5");
    for (k, v) in &cfg.producer_overrides {
        c.set(k, v);
    }
    c.set("enable.idempotence", "true").set("acks", "all");
    if c.get("message.max.bytes").is_none() {
        // librdkafka refuses by itself a record above 1 000 000 bytes, below what Kafka's
        // topics take by default (1 048 588) and far below what Debezium users often allow:
        // such a record's copy would be refused for ever, naming a limit the topic does not
        // have. The queue topic's own `max.message.bytes` decides.
        c.set("message.max.bytes", COPY_MAX_BYTES);
    }
    c
}

/// Whether librdkafka takes the queue's producer's properties together (as
/// `druid::check_producer` checks the rows' producer's).
pub fn check_producer(cfg: &DeadLetterConfig, settings: &Settings) -> Result<(), String> {
    crate::source::probe::<BaseProducer>(
        producer_config(cfg, settings),
        "the dead-letter queue's producer's",
    )
}

impl DeadLetterQueue {
    /// Creates the topic if it is missing and opens the producer, with the worker's Kafka
    /// `settings`; `fetch`: a consumer config able to read the connector's topics.
    pub fn open(
        cfg: &DeadLetterConfig,
        settings: &Settings,
        fetch: ClientConfig,
        connector: &str,
        task: usize,
        metrics: Arc<Metrics>,
        runtime: &tokio::runtime::Handle,
    ) -> Result<DeadLetterQueue, Problem> {
        ensure_topic(cfg, settings, runtime)?;
        let producer: BaseProducer<Reports> = producer_config(cfg, settings)
            .create_with_context(Reports::default())
            .map_err(|e| {
                Problem::Config(format!(
                    "cannot create the dead-letter queue's producer: {e}"
                ))
            })?;
        Ok(DeadLetterQueue::with(
            producer,
            cfg.clone(),
            connector,
            task,
            metrics,
            fetch,
        ))
    }

    /// A queue with nothing sent yet.
    fn with(
        producer: BaseProducer<Reports>,
        cfg: DeadLetterConfig,
        connector: &str,
        task: usize,
        metrics: Arc<Metrics>,
        fetch: ClientConfig,
    ) -> DeadLetterQueue {
        DeadLetterQueue {
            producer,
            cfg,
            connector: connector.to_string(),
            task: task.to_string(),
            metrics,
            letters: BTreeMap::new(),
            next_id: 0,
            resend: VecDeque::new(),
            failing: None,
            full: false,
            fetcher: None,
            fetch_config: fetch,
        }
    }

    /// Copies `m` (its ack `ack`) to the queue. Its ack comes back from [`Self::poll`] once
    /// Kafka has acknowledged the copy.
    pub fn send(&mut self, ack: Ack, m: &impl Record, failure: &Failure<'_>) {
        // The record's own headers byte for byte (their keys need not be UTF-8).
        let mut headers = headers::copy(m);
        if self.cfg.context_headers {
            headers = self.context_headers(headers, m, failure);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.letters.insert(
            id,
            Letter {
                ack,
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
                headers,
                timestamp: m.timestamp().to_millis(),
                since: Instant::now(),
                attempts: 0,
            },
        );
        self.produce(id);
    }

    /// Reads the records `rejected` names again from Kafka and copies each to the queue
    /// (stage `TASK_PUT`, refused by the sink system). Records of one partition are read in one
    /// pass, from the first of them forward. Reading fails after 30 s. It stops at `until`, a
    /// drain's deadline (a task finishing its writes as its partitions are revoked must be done
    /// before the group gives them to another member), and returns the records it did not copy
    /// then, unacknowledged: the task reads them again later if it keeps their partitions, and
    /// whoever reads a partition next does otherwise.
    pub fn send_again_from_kafka(
        &mut self,
        rejected: &[Rejected],
        class_name: &str,
        until: Option<Instant>,
    ) -> Result<Vec<Rejected>, String> {
        let mut by_partition: BTreeMap<(&str, i32), Vec<&Rejected>> = BTreeMap::new();
        for r in rejected {
            by_partition
                .entry((&r.topic, r.partition))
                .or_default()
                .push(r);
        }
        let mut later = Vec::new();
        for ((topic, partition), mut wanted) in by_partition {
            wanted.sort_by_key(|r| r.offset);
            let found = if until.is_some_and(|u| Instant::now() >= u) {
                None
            } else {
                self.read_again(topic, partition, &wanted, until)?
            };
            let Some(found) = found else {
                later.extend(wanted.into_iter().cloned());
                continue;
            };
            for (r, m) in wanted.iter().zip(&found) {
                let failure = Failure {
                    stage: Stage::TaskPut,
                    class_name,
                    exception_class: CONNECT_EXCEPTION,
                    message: &r.reason,
                };
                self.send(r.ack, m, &failure);
            }
        }
        Ok(later)
    }

    /// The records at the offsets of `wanted` (sorted) in `topic`/`partition`, read from Kafka;
    /// `None` when `until` came first.
    fn read_again(
        &mut self,
        topic: &str,
        partition: i32,
        wanted: &[&Rejected],
        until: Option<Instant>,
    ) -> Result<Option<Vec<OwnedMessage>>, String> {
        let first = wanted.first().map_or(0, |r| r.offset);
        let at = format!("topic {topic} partition {partition} offset {first}");
        if self.fetcher.is_none() {
            let c: BaseConsumer = self.fetch_config.create().map_err(|e| {
                format!(
                    "cannot create a consumer to read {at} again for the dead-letter queue: {e}"
                )
            })?;
            self.fetcher = Some(c);
        }
        let fetcher = self.fetcher.as_ref().expect("made above");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(first))
            .map_err(|e| e.to_string())?;
        fetcher.assign(&tpl).map_err(|e| e.to_string())?;
        let found = Self::read_from(fetcher, topic, partition, wanted, &at, until);
        // Not left fetching (and prefetching) the partition until the next rejected record.
        let _ = fetcher.unassign();
        found
    }

    /// [`Self::read_again`]'s reading, from `fetcher` assigned where it starts.
    fn read_from(
        fetcher: &BaseConsumer,
        topic: &str,
        partition: i32,
        wanted: &[&Rejected],
        at: &str,
        until: Option<Instant>,
    ) -> Result<Option<Vec<OwnedMessage>>, String> {
        let own = Instant::now() + KAFKA_TIMEOUT;
        let deadline = until.map_or(own, |u| u.min(own));
        let mut found = Vec::with_capacity(wanted.len());
        // librdkafka reports errors it recovers from by itself (a broker connection dropped):
        // they are kept for the message should the time run out, not taken as the end.
        let mut last_error = None;
        while found.len() < wanted.len() {
            let next = wanted[found.len()].offset;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                if deadline < own {
                    return Ok(None);
                }
                let last = last_error.map_or_else(String::new, |e| format!(" (last error: {e})"));
                return Err(format!(
                    "cannot read {at} again for the dead-letter queue within {KAFKA_TIMEOUT:?}{last}"
                ));
            }
            match fetcher.poll(left.min(Duration::from_millis(200))) {
                Some(Ok(m)) if m.topic() == topic && m.partition() == partition => {
                    if m.offset() == next {
                        found.push(m.detach());
                    } else if m.offset() > next {
                        return Err(format!(
                            "topic {topic} partition {partition} offset {next} is no longer in Kafka (the next record there is at offset {}): it cannot be copied to the dead-letter queue",
                            m.offset()
                        ));
                    }
                }
                Some(Err(e)) if is_permanent(&e) => {
                    return Err(format!(
                        "cannot read {at} again for the dead-letter queue: {e}"
                    ));
                }
                Some(Err(e)) => last_error = Some(e),
                _ => {}
            }
        }
        Ok(Some(found))
    }

    fn context_headers(
        &self,
        headers: OwnedHeaders,
        m: &impl Message,
        failure: &Failure<'_>,
    ) -> OwnedHeaders {
        let (partition, offset) = (m.partition().to_string(), m.offset().to_string());
        let trace = format!(
            "{}: {} (stage {}, {} in connector {} task {}; cdc-sink has no Java stack trace)",
            failure.exception_class,
            failure.message,
            failure.stage.name(),
            failure.class_name,
            self.connector,
            self.task,
        );
        let pairs: [(&str, &str); 10] = [
            ("__connect.errors.topic", m.topic()),
            ("__connect.errors.partition", &partition),
            ("__connect.errors.offset", &offset),
            ("__connect.errors.connector.name", &self.connector),
            ("__connect.errors.task.id", &self.task),
            ("__connect.errors.stage", failure.stage.name()),
            ("__connect.errors.class.name", failure.class_name),
            (
                "__connect.errors.exception.class.name",
                failure.exception_class,
            ),
            ("__connect.errors.exception.message", failure.message),
            ("__connect.errors.exception.stacktrace", &trace),
        ];
        pairs.into_iter().fold(headers, |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value),
            })
        })
    }

    /// Sends copy `id`; a send the producer refuses is tried again like a failed write.
    fn produce(&mut self, id: usize) {
        if self.full {
            schedule(&mut self.resend, Instant::now() + RESEND_BACKOFF.0, id);
            return;
        }
        let Some(l) = self.letters.get_mut(&id) else {
            return;
        };
        l.attempts += 1;
        let mut full = 0;
        let refused = loop {
            let mut rec: BaseRecord<'_, [u8], [u8], usize> =
                BaseRecord::with_opaque_to(&self.cfg.topic, id);
            rec.key = l.key.as_deref();
            rec.payload = l.value.as_deref();
            rec.timestamp = l.timestamp;
            rec.headers = Some(l.headers.clone());
            match self.producer.send(rec) {
                Ok(()) => return,
                // A short wait for room, served with the delivery reports. Waiting until there
                // is some could hold the task (inside a rebalance callback too) for up to
                // `message.timeout.ms`.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                    if full < QUEUE_FULL_TRIES =>
                {
                    if full == 0 {
                        debug!(topic = %self.cfg.topic, "the dead-letter producer's queue is full: waiting for room");
                    }
                    full += 1;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    break None;
                }
                Err((e, _)) => break Some(e.to_string()),
            }
        };
        match refused {
            Some(why) => self.failed(id, why),
            // Still full: this copy and every other one until the next `poll` wait a first
            // backoff, without a wait each, and without being taken for refused writes.
            None => {
                self.full = true;
                schedule(&mut self.resend, Instant::now() + RESEND_BACKOFF.0, id);
            }
        }
    }

    /// Forgets the copies whose records no longer count (`counts` says which): their
    /// partitions were revoked, and whoever reads them next copies them again. Without this a
    /// copy the queue refuses would be sent again for ever, and held back every commit that
    /// waits for copies (a Druid transaction's). A copy already in the producer may still be
    /// written: the queue holds each tolerated record at least once.
    pub fn forget(&mut self, counts: impl Fn(Ack) -> bool) {
        self.letters.retain(|_, l| counts(l.ack));
        let letters = &self.letters;
        self.resend.retain(|(_, id)| letters.contains_key(id));
        if self.letters.is_empty() {
            self.failing = None;
        }
    }

    /// Schedules copy `id` to be sent again after a backoff (unless it was forgotten).
    fn failed(&mut self, id: usize, why: String) {
        if !self.letters.contains_key(&id) {
            return;
        }
        let attempts = self.letters.get(&id).map_or(1, |l| l.attempts);
        let wait = crate::backoff::delay(attempts, RESEND_BACKOFF.0, RESEND_BACKOFF.1);
        warn!(topic = %self.cfg.topic, attempt = attempts, "a record could not be written to the dead-letter queue, sending it again in {wait:?}: {why}");
        self.failing = Some(why);
        schedule(&mut self.resend, Instant::now() + wait, id);
    }

    /// The acks of copies Kafka acknowledged since the last call; copies that failed are sent
    /// again once their backoff is over. An error when the producer itself failed for good
    /// (librdkafka's fatal errors, e.g. of the idempotent producer): the task starts over with
    /// a new one. With copies out, waits up to `wait` (and no later than the next resend) for
    /// Kafka's answers.
    pub fn poll(&mut self, wait: Duration) -> Result<Vec<Ack>, String> {
        let wait = match self.resend.front() {
            _ if self.pending() == 0 => Duration::ZERO,
            Some((at, _)) => wait.min(at.saturating_duration_since(Instant::now())),
            None => wait,
        };
        crate::deliveries::serve(&self.producer, wait, self.pending(), |p| {
            p.context().done.lock().map(|d| d.len()).unwrap_or_default()
        });
        self.full = false;
        if let Some((_, why)) = self.producer.client().fatal_error() {
            return Err(format!(
                "the dead-letter queue's producer failed (topic {}): {why}",
                self.cfg.topic
            ));
        }
        let done = self
            .producer
            .context()
            .done
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default();
        let mut acks = Vec::new();
        for (id, error) in done {
            match error {
                None => {
                    self.failing = None;
                    if let Some(l) = self.letters.remove(&id) {
                        acks.push(l.ack);
                    }
                }
                Some(e) => self.failed(id, e),
            }
        }
        let now = Instant::now();
        while let Some(&(at, id)) = self.resend.front() {
            if at > now {
                break;
            }
            self.resend.pop_front();
            self.produce(id);
        }
        self.metrics.dead_lettered(acks.len() as u64);
        Ok(acks)
    }

    /// Copies not yet acknowledged (in flight or waiting to be sent again).
    pub fn pending(&self) -> usize {
        self.letters.len()
    }

    /// Copies not yet acknowledged whose ack `of` picks.
    pub fn pending_of(&self, of: impl Fn(Ack) -> bool) -> usize {
        self.letters.values().filter(|l| of(l.ack)).count()
    }

    /// Why the queue holds offsets back, if it does for long.
    pub fn trouble(&self) -> Option<String> {
        let oldest = self.letters.values().map(|l| l.since).min()?;
        let waiting = format!("the offsets of {} records wait for it", self.letters.len());
        match &self.failing {
            Some(e) => Some(format!(
                "the dead-letter queue topic {} refuses writes ({e}); {waiting}",
                self.cfg.topic
            )),
            None if oldest.elapsed() >= SLOW => Some(format!(
                "the dead-letter queue topic {} has not acknowledged a write for {} s; {waiting}",
                self.cfg.topic,
                oldest.elapsed().as_secs()
            )),
            None => None,
        }
    }
}

/// Puts copy `id` in `resend` to be sent again `at`, behind those due no later: backoffs grow
/// with each copy's attempts, and a copy due soon must not wait behind one that failed often.
fn schedule(resend: &mut VecDeque<(Instant, usize)>, at: Instant, id: usize) {
    let i = resend.partition_point(|(due, _)| *due <= at);
    resend.insert(i, (at, id));
}

/// An error reading a partition that waiting will not mend: no permission to read it.
fn is_permanent(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::SaslAuthenticationFailed
        )
    )
}

/// Why the queue could not be opened.
#[derive(Debug)]
pub enum Problem {
    /// A setting or permission: starting over will not help.
    Config(String),
    /// Kafka unreachable or busy: try again later.
    Unavailable(String),
}

/// Creates the queue's topic (1 partition, the configured replication factor) if it is missing.
fn ensure_topic(
    cfg: &DeadLetterConfig,
    settings: &Settings,
    runtime: &tokio::runtime::Handle,
) -> Result<(), Problem> {
    let topic = &cfg.topic;
    // A consumer: looking the topic up does not create it.
    let probe = crate::source::plain_client(settings).map_err(Problem::Config)?;
    let meta = probe
        .fetch_metadata(Some(topic), KAFKA_TIMEOUT)
        .map_err(|e| {
            Problem::Unavailable(format!(
                "cannot look up the dead-letter queue topic {topic}: {e}"
            ))
        })?;
    let exists = meta
        .topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
    if exists {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = crate::source::client_config(settings)
        .create()
        .map_err(|e| Problem::Config(format!("cannot create a Kafka admin client: {e}")))?;
    let replication = TopicReplication::Fixed(cfg.replication_factor);
    let new = NewTopic::new(topic, 1, replication);
    let opts = AdminOptions::new().operation_timeout(Some(KAFKA_TIMEOUT));
    let results = runtime
        .block_on(admin.create_topics([&new], &opts))
        .map_err(|e| {
            Problem::Unavailable(format!(
                "cannot create the dead-letter queue topic {topic}: {e}"
            ))
        })?;
    for r in results {
        match r {
            Ok(_) => warn!(topic = %topic, "created the dead-letter queue topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, e)) => {
                let msg = format!(
                    "cannot create the dead-letter queue topic {topic} (1 partition, errors.deadletterqueue.topic.replication.factor={}): {e}",
                    cfg.replication_factor
                );
                let transient = matches!(
                    e,
                    RDKafkaErrorCode::RequestTimedOut
                        | RDKafkaErrorCode::NotController
                        | RDKafkaErrorCode::BrokerNotAvailable
                        | RDKafkaErrorCode::OperationTimedOut
                );
                return Err(if transient {
                    Problem::Unavailable(msg)
                } else {
                    Problem::Config(msg)
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
impl DeadLetterQueue {
    /// A queue whose Kafka is a loopback port nobody listens on (nothing there to check or
    /// create): what it reads again is never found.
    pub(crate) fn nowhere() -> DeadLetterQueue {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let mut kafka = ClientConfig::new();
        kafka
            .set("bootstrap.servers", format!("127.0.0.1:{port}"))
            .set("group.id", "cdc-sink-dead-letter-unit-test")
            .set("enable.auto.commit", "false")
            .set("log_level", "0");
        DeadLetterQueue::with(
            kafka
                .create_with_context(Reports::default())
                .expect("a producer"),
            DeadLetterConfig {
                topic: "dlq".into(),
                replication_factor: 1,
                context_headers: true,
                producer_overrides: BTreeMap::new(),
            },
            "c",
            0,
            Arc::new(crate::metrics::Registry::new().task("c", 0)),
            kafka,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rejected record read again inside a drain (a revocation's, bounded by
    /// `flush.timeout.ms`) stops at the drain's deadline, not 30 s later (the group would give
    /// the partition to another member meanwhile), and is handed back uncopied. Here Kafka is a
    /// loopback port nobody listens on, so the reading never finds the record.
    #[test]
    fn a_record_read_again_is_handed_back_at_the_deadline_it_is_given() {
        let mut queue = DeadLetterQueue::nowhere();
        let rejected = Rejected {
            ack: Ack {
                slot: 0,
                epoch: 1,
                offset: 7,
            },
            topic: "t".into(),
            partition: 0,
            offset: 7,
            reason: "mapper_parsing_exception".into(),
        };
        let began = Instant::now();
        let until = began + Duration::from_millis(300);
        let later = queue
            .send_again_from_kafka(std::slice::from_ref(&rejected), "c.Sink", Some(until))
            .unwrap();
        let took = began.elapsed();
        // Handed back, not copied: for the task to read again later, or its next owner.
        assert_eq!(later, std::slice::from_ref(&rejected));
        assert!(queue.letters.is_empty() && queue.pending() == 0);
        // Not the 30 s of a reading without a deadline (a poll's 200 ms of slack, and a slow
        // machine's).
        assert!(took < Duration::from_secs(5), "gave up after {took:?}");
        // A deadline already passed (a drain of no time: writes held after a stall) reads
        // nothing.
        let later = queue
            .send_again_from_kafka(
                std::slice::from_ref(&rejected),
                "c.Sink",
                Some(Instant::now()),
            )
            .unwrap();
        assert_eq!(later, [rejected]);
    }

    #[test]
    fn a_copy_due_sooner_is_sent_again_before_one_due_later() {
        let now = Instant::now();
        let mut resend = VecDeque::new();
        schedule(&mut resend, now + Duration::from_secs(30), 1);
        schedule(&mut resend, now + Duration::from_millis(500), 2);
        schedule(&mut resend, now + Duration::from_secs(30), 3);
        schedule(&mut resend, now + Duration::from_secs(2), 4);
        let order: Vec<usize> = resend.iter().map(|(_, id)| *id).collect();
        assert_eq!(order, [2, 4, 1, 3]);
    }
}
