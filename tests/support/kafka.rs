//! Kafka helpers for tests: topics, producing, end offsets and a group's committed offsets.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::servers::kafka;

const TIMEOUT: Duration = Duration::from_secs(30);

fn config() -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", kafka());
    c
}

/// An admin client of the test Kafka, and a runtime to wait for its answers on.
fn admin() -> (AdminClient<DefaultClientContext>, tokio::runtime::Runtime) {
    let admin = config().create().expect("admin client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    (admin, rt)
}

pub fn create_topic(name: &str, partitions: i32) {
    let (admin, rt) = admin();
    let res = rt
        .block_on(admin.create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
        ))
        .expect("create_topics");
    for r in res {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
}

/// Deletes topic `name`, and waits until the cluster no longer lists it.
pub fn delete_topic(name: &str) {
    let (admin, rt) = admin();
    let res = rt
        .block_on(admin.delete_topics(
            &[name],
            &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
        ))
        .expect("delete_topics");
    for r in res {
        r.unwrap_or_else(|(t, e)| panic!("deleting topic {t}: {e}"));
    }
    let start = std::time::Instant::now();
    loop {
        let listed = admin
            .inner()
            .fetch_metadata(None, TIMEOUT)
            .map(|m| m.topics().iter().any(|t| t.name() == name))
            .unwrap_or(true);
        if !listed {
            return;
        }
        assert!(
            start.elapsed() < TIMEOUT * 2,
            "topic {name} still listed after its deletion"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One record to produce: partition, key, value (`None` = tombstone); text or bytes.
#[derive(Debug, Clone)]
pub struct Rec<T = String> {
    pub partition: i32,
    pub key: Option<T>,
    pub value: Option<T>,
}

pub struct Producer_ {
    p: ThreadedProducer<DefaultProducerContext>,
}

pub fn producer() -> Producer_ {
    let p = config()
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .create()
        .expect("producer");
    Producer_ { p }
}

impl Producer_ {
    pub fn send<T: AsRef<[u8]>>(&self, topic: &str, recs: &[Rec<T>]) {
        for r in recs {
            let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).partition(r.partition);
            if let Some(k) = &r.key {
                rec = rec.key(k.as_ref());
            }
            if let Some(v) = &r.value {
                rec = rec.payload(v.as_ref());
            }
            loop {
                match self.p.send(rec) {
                    Ok(()) => break,
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull,
                        ),
                        r,
                    )) => {
                        rec = r;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err((e, _)) => panic!("producing to {topic}: {e}"),
                }
            }
        }
        self.p.flush(TIMEOUT).expect("flush");
    }
}

/// Produces `recs` to `topic` in one Kafka transaction, committed: the partitions end with its
/// commit marker, an offset no consumer is handed.
pub fn produce_in_transaction(topic: &str, recs: &[Rec]) {
    use rdkafka::producer::BaseProducer;
    let p: BaseProducer = config()
        .set("transactional.id", format!("it-{topic}"))
        .create()
        .expect("producer");
    p.init_transactions(TIMEOUT).expect("init_transactions");
    p.begin_transaction().expect("begin_transaction");
    for r in recs {
        let mut rec: BaseRecord<'_, str, str> = BaseRecord::to(topic).partition(r.partition);
        if let Some(k) = &r.key {
            rec = rec.key(k.as_str());
        }
        if let Some(v) = &r.value {
            rec = rec.payload(v.as_str());
        }
        p.send(rec).map_err(|(e, _)| e).expect("send");
    }
    p.commit_transaction(TIMEOUT).expect("commit_transaction");
}

/// Produces `recs` to `topic` and waits for them to be acknowledged.
pub fn produce(topic: &str, recs: &[Rec]) {
    producer().send(topic, recs);
}

/// Produces `records` to `topic` on a thread, `chunk` at a time, `pause` apart, so that
/// workers come and go mid-stream.
pub fn produce_slowly(
    topic: String,
    records: Vec<Rec>,
    chunk: usize,
    pause: Duration,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let p = producer();
        for c in records.chunks(chunk) {
            p.send(&topic, c);
            std::thread::sleep(pause);
        }
    })
}

/// [`produce`] for binary records.
pub fn produce_bytes(topic: &str, recs: &[Rec<Vec<u8>>]) {
    producer().send(topic, recs);
}

/// A consumer of partition 0 of `topic` from its beginning, outside any group.
fn partition_0(topic: &str) -> BaseConsumer {
    let c: BaseConsumer = config()
        .set("group.id", "partition-0")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    c
}

/// Key and value of the first record with a value in partition 0 of `topic`.
pub fn first_record(topic: &str) -> (Vec<u8>, Vec<u8>) {
    use rdkafka::Message as _;
    let c = partition_0(topic);
    let start = std::time::Instant::now();
    while start.elapsed() < TIMEOUT {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200))
            && let Some(v) = m.payload()
        {
            return (m.key().unwrap_or_default().to_vec(), v.to_vec());
        }
    }
    panic!("no record in {topic}");
}

/// The end (high watermark) offset of each partition.
pub fn end_offsets(topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    try_end_offsets(topic, partitions).unwrap_or_else(|e| panic!("watermarks of {topic}: {e}"))
}

/// [`end_offsets`], or why not (the topic does not exist yet).
pub fn try_end_offsets(topic: &str, partitions: i32) -> Result<BTreeMap<i32, i64>, String> {
    let c: BaseConsumer = config().create().expect("consumer");
    (0..partitions)
        .map(|p| {
            c.fetch_watermarks(topic, p, TIMEOUT)
                .map(|w| (p, w.1))
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// The offsets group `group` has committed for `topic` (absent partitions have none).
pub fn committed(group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    Committed::new(group, topic, partitions).now()
}

/// A group's committed offsets, asked for again and again by one client: a client made per
/// question (a new connection, its threads, a metadata and coordinator lookup) cost the
/// benchmark's process and the broker a tenth of a core when asked every 50 ms.
pub struct Committed {
    client: BaseConsumer,
    group: String,
    partitions: TopicPartitionList,
}

impl Committed {
    pub fn new(group: &str, topic: &str, partitions: i32) -> Committed {
        let client = config().set("group.id", group).create().expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        Committed {
            client,
            group: group.to_string(),
            partitions: tpl,
        }
    }

    /// The committed offset of each partition that has one.
    pub fn now(&self) -> BTreeMap<i32, i64> {
        let got = with_coordinator(&format!("committed offsets of {}", self.group), || {
            self.client
                .committed_offsets(self.partitions.clone(), TIMEOUT)
        });
        got.elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect()
    }
}

/// Commits `offset` for partitions 0..`partitions` of `topic` in `group`, a group without
/// members yet: its consumers then start from committed offsets, as a running pipeline's do.
pub fn commit_offsets(group: &str, topic: &str, partitions: i32, offset: i64) {
    let c: BaseConsumer = config().set("group.id", group).create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Offset(offset))
            .expect("offset");
    }
    with_coordinator(&format!("committing offsets of {group}"), || {
        c.commit(&tpl, rdkafka::consumer::CommitMode::Sync)
    });
}

/// `call`'s result, tried again up to 20 times 250 ms apart: a group coordinator that is
/// loading or moving answers with a retriable error. Panics naming `what` after that.
fn with_coordinator<T>(what: &str, mut call: impl FnMut() -> KafkaResult<T>) -> T {
    let mut tries = 0;
    loop {
        match call() {
            Ok(got) => return got,
            Err(e) if tries < 20 => {
                tries += 1;
                eprintln!("{what} (retrying): {e}");
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// Every record of `topic` (partitions 0..`partitions`, up to their end offsets now), in offset
/// order per partition.
pub fn read_all(topic: &str, partitions: i32) -> Vec<Rec<Vec<u8>>> {
    use rdkafka::Message as _;
    let end = end_offsets(topic, partitions);
    let c: BaseConsumer = config()
        .set("group.id", "read-all")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let total: i64 = end.values().sum();
    let mut out = Vec::new();
    let start = std::time::Instant::now();
    while (out.len() as i64) < total {
        assert!(
            start.elapsed() < TIMEOUT * 2,
            "reading {topic}: {} of {total} records",
            out.len()
        );
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200))
            && m.offset() < end[&m.partition()]
        {
            out.push(Rec {
                partition: m.partition(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
            });
        }
    }
    out
}

/// Every committed row (a JSON value with a key) of `topic` as a `read_committed` reader sees
/// it: (partition, key, row), each partition in order; waits up to 3 minutes for the end.
pub fn read_committed_rows(topic: &str, partitions: i32) -> Vec<(i32, String, serde_json::Value)> {
    use rdkafka::Message as _;
    let c = read_committed_consumer(topic, partitions);
    let high: BTreeMap<i32, i64> = (0..partitions)
        .map(|p| {
            (
                p,
                c.fetch_watermarks(topic, p, Duration::from_secs(10))
                    .unwrap()
                    .1,
            )
        })
        .collect();
    let mut out = Vec::new();
    let start = Instant::now();
    loop {
        let pos = c.position().unwrap();
        let done = (0..partitions).all(|p| {
            pos.find_partition(topic, p)
                .and_then(|e| e.offset().to_raw())
                .is_some_and(|o| o >= high[&p])
        });
        if done {
            return out;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "reading {topic}: {} rows so far",
            out.len()
        );
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            out.push((
                m.partition(),
                String::from_utf8(m.key().unwrap().to_vec()).unwrap(),
                serde_json::from_slice(m.payload().unwrap()).unwrap(),
            ));
        }
    }
}

/// A `read_committed` consumer (as Druid reads) of every partition of `topic` from the start.
pub fn read_committed_consumer(topic: &str, partitions: i32) -> BaseConsumer {
    let c: BaseConsumer = config()
        .set("group.id", "read-committed")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    c
}

/// A record as read back whole: offset, key, value, headers in order, timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct Full {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// Keys as bytes: Kafka's are, and a producer may write one that is not UTF-8.
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    pub timestamp: Option<i64>,
}

/// Produces one record to partition 0 with `headers` and `timestamp_ms`.
pub fn produce_full(topic: &str, r: &Full) {
    use rdkafka::message::{Header, OwnedHeaders};
    let p: rdkafka::producer::BaseProducer = config()
        .set("message.max.bytes", "2000000")
        .create()
        .expect("producer");
    let mut headers = OwnedHeaders::new();
    for (k, v) in &r.headers {
        if let Ok(k) = std::str::from_utf8(k) {
            headers = headers.insert(Header {
                key: k,
                value: v.as_deref(),
            });
            continue;
        }
        // rdkafka takes only UTF-8 keys; librdkafka takes bytes, as Kafka does. rdkafka's
        // `&BorrowedHeaders` is librdkafka's pointer (see cdc_sink::source::headers::pairs).
        use rdkafka::bindings as rdsys;
        let native = headers.as_borrowed() as *const rdkafka::message::BorrowedHeaders
            as *mut rdsys::rd_kafka_headers_t;
        let (value, size) = v
            .as_deref()
            .map_or((std::ptr::null(), 0), |v| (v.as_ptr(), v.len() as isize));
        // SAFETY: `native` is `headers`' own; librdkafka copies the name and the value.
        let err = unsafe {
            rdsys::rd_kafka_header_add(
                native,
                k.as_ptr().cast(),
                k.len() as isize,
                value.cast(),
                size,
            )
        };
        assert_eq!(err, rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
    }
    let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).partition(0);
    rec.key = r.key.as_deref();
    rec.payload = r.value.as_deref();
    rec.timestamp = r.timestamp;
    rec.headers = Some(headers);
    p.send(rec).map_err(|(e, _)| e).expect("send");
    p.flush(TIMEOUT).expect("flush");
}

/// Every record of partition 0 of `topic` up to its end now, whole.
pub fn read_full(topic: &str) -> Vec<Full> {
    use rdkafka::Message as _;
    let end = end_offsets(topic, 1)[&0];
    let c = partition_0(topic);
    let mut out: Vec<Full> = Vec::new();
    let start = Instant::now();
    let mut error = None;
    while out.last().map_or(end > 0, |r| r.offset + 1 < end) {
        assert!(
            start.elapsed() < TIMEOUT,
            "reading {topic} up to its end, offset {end}: {} records read, the last at offset {:?}; the consumer's last error: {error:?}",
            out.len(),
            out.last().map(|r| r.offset)
        );
        match c.poll(Duration::from_millis(200)) {
            Some(Err(e)) => error = Some(e),
            Some(Ok(m)) => out.push(Full {
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
                headers: m
                    .headers()
                    .map(cdc_sink::source::headers::pairs)
                    .unwrap_or_default(),
                timestamp: m.timestamp().to_millis(),
            }),
            None => {}
        }
    }
    out
}

/// Creates `name` (1 partition) with topic-level `configs`.
pub fn create_topic_with(name: &str, configs: &[(&str, &str)]) {
    let (admin, rt) = admin();
    let mut t = NewTopic::new(name, 1, TopicReplication::Fixed(1));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    for r in rt
        .block_on(admin.create_topics(&[t], &AdminOptions::new().operation_timeout(Some(TIMEOUT))))
        .expect("create_topics")
    {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
}

/// Sets topic-level config `key` of `topic`.
pub fn set_topic_config(topic: &str, key: &str, value: &str) {
    use rdkafka::admin::{AlterConfig, ResourceSpecifier};
    let (admin, rt) = admin();
    let change = AlterConfig::new(ResourceSpecifier::Topic(topic)).set(key, value);
    for r in rt
        .block_on(admin.alter_configs(
            &[change],
            &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
        ))
        .expect("alter_configs")
    {
        r.unwrap_or_else(|(t, e)| panic!("altering {t:?}: {e}"));
    }
}

/// Deletes the records of partition `partition` of `topic` before `offset` (Kafka's
/// DeleteRecords, as retention does): the partition then starts at `offset`.
pub fn delete_records(topic: &str, partition: i32, offset: i64) {
    let (admin, rt) = admin();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, rdkafka::Offset::Offset(offset))
        .unwrap();
    let done = rt
        .block_on(admin.delete_records(&tpl, &AdminOptions::new().operation_timeout(Some(TIMEOUT))))
        .expect("delete_records");
    for e in done.elements() {
        e.error()
            .unwrap_or_else(|e| panic!("deleting records of {topic}: {e}"));
    }
}

/// Grows `topic` to `total` partitions.
pub fn add_partitions(topic: &str, total: usize) {
    let (admin, rt) = admin();
    let grow = rdkafka::admin::NewPartitions::new(topic, total);
    for r in rt
        .block_on(admin.create_partitions(
            &[grow],
            &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
        ))
        .expect("create_partitions")
    {
        r.unwrap_or_else(|(t, e)| panic!("adding partitions to {t}: {e}"));
    }
}

/// A member of consumer group `group` subscribed to `topic`, committing only when told, its
/// session ending `session_ms` after its last heartbeat.
pub fn member(group: &str, topic: &str, session_ms: u32) -> BaseConsumer {
    member_as(group, topic, session_ms, "rdkafka")
}

/// The same, with client id `client_id`: its member id starts with it, and the range assignor
/// gives partitions in the order of member ids.
pub fn member_as(group: &str, topic: &str, session_ms: u32, client_id: &str) -> BaseConsumer {
    let c: BaseConsumer = config()
        .set("group.id", group)
        .set("client.id", client_id)
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", session_ms.to_string())
        .create()
        .expect("consumer");
    c.subscribe(&[topic]).expect("subscribe");
    c
}

/// Polls `member` until the group has given it a partition (60 s at most).
pub fn wait_assigned(member: &BaseConsumer) {
    super::wait_until(
        Duration::from_secs(60),
        "a partition given to the member",
        || {
            let _ = member.poll(Duration::from_millis(200));
            (member.assignment().map_or(0, |a| a.count()) > 0).then_some(())
        },
    );
}

/// A member of consumer group `group` on `topic`, assigning partitions with `strategy`, that
/// never polls: librdkafka joins the group for it, but a rebalance that needs its application's
/// answer (cooperative assignors call it even for an empty assignment) waits for it, and the
/// group's coordinator holds every other member's next JoinGroup until librdkafka makes this
/// one leave, `max_poll_ms` after it was created (or until it is dropped).
pub fn silent_member(group: &str, topic: &str, strategy: &str, max_poll_ms: u32) -> BaseConsumer {
    let c: BaseConsumer = config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("max.poll.interval.ms", max_poll_ms.to_string())
        .set("partition.assignment.strategy", strategy)
        .create()
        .expect("consumer");
    c.subscribe(&[topic]).expect("subscribe");
    c
}

/// The state of consumer group `group` as its coordinator tells it (`Stable`,
/// `PreparingRebalance`, `CompletingRebalance`, `Empty`, `Dead`).
pub fn group_state(group: &str) -> String {
    let c: BaseConsumer = config().create().expect("consumer");
    let list = c
        .fetch_group_list(Some(group), Duration::from_secs(10))
        .expect("describing the group");
    list.groups()
        .first()
        .map_or_else(String::new, |g| g.state().to_string())
}

/// Joins consumer group `group` on `topic` until it is given a partition, then leaves it: two
/// rebalances of the group's other members. Reads and commits nothing.
pub fn join_group_briefly(group: &str, topic: &str) {
    let c = member(group, topic, 6000);
    let start = Instant::now();
    while c.assignment().map_or(0, |a| a.count()) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never given a partition of {topic} in group {group}"
        );
        // Records it is handed are ignored, and it commits nothing.
        if let Some(Err(e)) = c.poll(Duration::from_millis(100)) {
            panic!("joining {group}: {e}");
        }
    }
    drop(c);
}

/// The broker's first log segment of partition 0 of `topic`, on disk (`scripts/servers` keeps
/// the broker's data under its directory).
pub fn first_segment(topic: &str) -> std::path::PathBuf {
    super::servers::servers()
        .dir
        .join("kafka/data")
        .join(format!("{topic}-0"))
        .join("00000000000000000000.log")
}

/// One record batch of a log segment: where it starts in the file, its size, its first offset
/// and its attributes (the low three bits: the compression codec, 4 for zstd).
#[derive(Debug, Clone, Copy)]
pub struct Batch {
    pub at: usize,
    pub size: usize,
    pub base_offset: i64,
    pub attributes: i16,
}

/// The record batches of a segment file (Kafka's format v2: base offset, length, leader epoch,
/// magic, CRC, attributes…).
pub fn batches(segment: &[u8]) -> Vec<Batch> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 23 <= segment.len() {
        let base_offset = i64::from_be_bytes(segment[at..at + 8].try_into().unwrap());
        let length = i32::from_be_bytes(segment[at + 8..at + 12].try_into().unwrap());
        let size = 12 + usize::try_from(length).expect("a batch length");
        let attributes = i16::from_be_bytes(segment[at + 21..at + 23].try_into().unwrap());
        out.push(Batch {
            at,
            size,
            base_offset,
            attributes,
        });
        at += size;
    }
    out
}
