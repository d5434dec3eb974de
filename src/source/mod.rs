//! The Kafka side of a task: its consumer (group `connect-<connector>`), rebalance callbacks,
//! and offset commits of contiguous watermarks.
//!
//! Offsets are never auto-committed nor auto-stored: the task commits exactly the watermarks
//! of [`offsets::Offsets`], periodically, on revocation and on shutdown.

pub mod barriers;
pub mod close;
pub mod headers;
pub mod offsets;
pub mod pause;
pub mod subscription;

pub use subscription::Subscribed;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tracing::{info, warn};

use crate::connector::{
    ConnectorSpec, HEARTBEAT_INTERVAL_MS, MAX_POLL_INTERVAL_MS, Subscription, poll_interval_error,
};
use crate::settings::Settings;

/// What a task does when partitions come and go. Called on the task's own thread, from inside
/// `poll`, before librdkafka applies the change.
pub trait RebalanceHandler: Send + Sync + Sized + 'static {
    fn assigned(&self, consumer: &Consumer<Self>, partitions: &[(String, i32)]);
    /// `lost`: the assignment was lost (session timeout); nothing may be committed for it.
    fn revoking(&self, consumer: &Consumer<Self>, partitions: &[(String, i32)], lost: bool);
    /// The consumer's statistics (every `statistics.interval.ms`): each partition's end offset
    /// as last fetched (the last stable offset under `read_committed`, else the high watermark)
    /// and the offset librdkafka knows to be committed (`None` when it knows none).
    fn partition_ends(&self, ends: &[PartitionEnd]) {
        let _ = ends;
    }
    /// librdkafka moved a partition's fetch position for an error (an offset out of range: the
    /// log was truncated, deleted and created again, or lost records to retention) and says so
    /// in `message`; `at` is the offset whose fetch failed, when the line gives one (records
    /// below it, fetched before the reset, may still come).
    fn offset_reset(&self, topic: &str, partition: i32, at: Option<i64>, message: &str) {
        let _ = (topic, partition, at, message);
    }
    /// An asynchronous commit of these (topic, partition, offset) failed.
    fn commit_failed(&self, offsets: &[(String, i32, i64)]) {
        let _ = offsets;
    }
    /// Kafka confirmed an asynchronous commit of these (topic, partition, offset) (a synchronous
    /// commit's answer is what `commit` returns).
    fn commit_confirmed(&self, offsets: &[(String, i32, i64)]) {
        let _ = offsets;
    }
}

/// The partition a librdkafka `OFFSET` log line names (`[thrd:main]: topic [3]: offset reset
/// (at offset 10 (leader epoch 0), broker 1) to …`), when it is an offset reset, and the offset
/// whose fetch failed when it gives one. (Kafka's topic names hold no space nor bracket.)
fn reset_of(message: &str) -> Option<(&str, i32, Option<i64>)> {
    let (head, rest) = message.split_once("]: offset reset")?;
    let at = rest
        .strip_prefix(" (at offset ")
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|d| d.parse().ok());
    let head = match head.strip_prefix("[thrd:") {
        Some(h) => h.split_once("]: ")?.1,
        None => head,
    };
    let (topic, partition) = head.rsplit_once(" [")?;
    Some((topic, partition.parse().ok()?, at))
}

/// One partition's end as the consumer's statistics report it.
#[derive(Debug, Clone)]
pub struct PartitionEnd {
    pub topic: String,
    pub partition: i32,
    pub end: i64,
    pub committed: Option<i64>,
}

/// The consumer's context: forwards rebalances to the task's handler.
pub struct SourceContext<H> {
    pub handler: H,
    label: String,
    /// Events served inside a poll (rebalances, commits' results, statistics, logs): rust-rdkafka's
    /// poll returns after each (at once when it waits for nothing), leaving what was queued behind
    /// it for the next poll.
    served: AtomicU64,
}

impl<H> SourceContext<H> {
    /// Events served by polls so far (see [`went_through`]).
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    fn serving(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
    }
}

/// Whether a poll went through every event librdkafka had queued when it began, given what it
/// returned and the context's [`SourceContext::served`] counts before and after it: it returned a
/// record (no rebalance queued before a record is left behind it: librdkafka pauses the
/// partitions when it queues a rebalance, and their records queued before are dropped), or
/// nothing without serving an event on the way. One that returned an error, or nothing after
/// serving a rebalance, a commit's result, statistics or a log, may have stopped short of an
/// event behind those: a partition loss queued behind an error when `max.poll.interval.ms` ran
/// out, or behind the log of the session's expiry.
pub fn went_through<T, E>(polled: &Option<Result<T, E>>, served: (u64, u64)) -> bool {
    match polled {
        Some(Ok(_)) => true,
        Some(Err(_)) => false,
        None => served.0 == served.1,
    }
}

pub type Consumer<H> = BaseConsumer<SourceContext<H>>;

impl<H: RebalanceHandler> ClientContext for SourceContext<H> {
    /// librdkafka's logs come through the consumer's queue (rust-rdkafka sets `log.queue`), ahead
    /// of a rebalance (a log's priority is higher): the one logged as the session expires is
    /// served first, and a poll that waits for nothing returns after it. Forwarded as
    /// rust-rdkafka's own `log` does.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        self.serving();
        // Logged (not debug-logged) only for a reset an error caused (librdkafka's
        // `rd_kafka_offset_reset`); the task must know of it before the records read after it.
        if fac == "OFFSET"
            && matches!(level, L::Warning)
            && let Some((topic, partition, at)) = reset_of(message)
        {
            self.handler.offset_reset(topic, partition, at, message);
        }
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                tracing::error!(target: "librdkafka", "librdkafka: {fac} {message}")
            }
            L::Warning => warn!(target: "librdkafka", "librdkafka: {fac} {message}"),
            L::Notice | L::Info => info!(target: "librdkafka", "librdkafka: {fac} {message}"),
            L::Debug => tracing::debug!(target: "librdkafka", "librdkafka: {fac} {message}"),
        }
    }

    fn stats_raw(&self, statistics: &[u8]) {
        // Counted whether or not it can be read.
        self.serving();
        match serde_json::from_slice(statistics) {
            Ok(stats) => self.stats(stats),
            Err(e) => warn!(task = %self.label, "unreadable statistics from librdkafka: {e}"),
        }
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut ends = Vec::new();
        for (topic, t) in statistics.topics {
            // Partition -1 is librdkafka's internal "unassigned" partition.
            for (partition, p) in t.partitions.into_iter().filter(|(n, _)| *n >= 0) {
                let end = if p.ls_offset >= 0 {
                    p.ls_offset
                } else {
                    p.hi_offset
                };
                if end >= 0 {
                    ends.push(PartitionEnd {
                        topic: topic.clone(),
                        partition,
                        end,
                        committed: (p.committed_offset >= 0).then_some(p.committed_offset),
                    });
                }
            }
        }
        self.handler.partition_ends(&ends);
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl<H: RebalanceHandler> ConsumerContext for SourceContext<H> {
    fn pre_rebalance(&self, consumer: &Consumer<H>, rebalance: &Rebalance<'_>) {
        self.serving();
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let parts = partitions(tpl);
                let lost = consumer.assignment_lost();
                info!(task = %self.label, partitions = ?parts, lost, "partitions revoked");
                self.handler.revoking(consumer, &parts, lost);
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => warn!(task = %self.label, "rebalance error: {e}"),
        }
    }

    fn post_rebalance(&self, consumer: &Consumer<H>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let parts = partitions(tpl);
            info!(task = %self.label, partitions = ?parts, "partitions assigned");
            self.handler.assigned(consumer, &parts);
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        self.serving();
        // Each partition by its own answer when librdkafka gives one, else by the commit's (a
        // request that failed as a whole). librdkafka may give every partition of a request
        // one partition's refusal: those Kafka took are then committed again, which is harmless.
        let elements = offsets.elements();
        let answered = elements.iter().any(|e| e.error().is_err());
        let (mut confirmed, mut failed, mut why) = (Vec::new(), Vec::new(), None);
        for e in elements {
            let Offset::Offset(o) = e.offset() else {
                continue;
            };
            let mark = (e.topic().to_string(), e.partition(), o);
            match if answered { e.error() } else { result.clone() } {
                Ok(()) => confirmed.push(mark),
                Err(refused) => {
                    why.get_or_insert(refused);
                    failed.push(mark);
                }
            }
        }
        if !confirmed.is_empty() {
            self.handler.commit_confirmed(&confirmed);
        }
        if let Some(why) = why {
            warn!(task = %self.label, "offset commit failed, committed again later: {why} ({failed:?})");
            self.handler.commit_failed(&failed);
        }
    }
}

/// Why a consumer error means Kafka refuses this client for good (wrong credentials, no
/// permission, a fatal error): retrying cannot help, the task fails saying so. `None` for the
/// errors librdkafka recovers from by itself.
pub fn refused(e: &rdkafka::error::KafkaError) -> Option<String> {
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode as C;
    let advice = "check security.protocol, sasl.* and ssl.* in [kafka.properties], and the ACLs";
    match e {
        KafkaError::MessageConsumptionFatal(_) => Some(format!("{e} (fatal)")),
        _ => match e.rdkafka_error_code()? {
            C::Authentication
            | C::SaslAuthenticationFailed
            | C::TopicAuthorizationFailed
            | C::GroupAuthorizationFailed
            | C::ClusterAuthorizationFailed => Some(format!("{e}; {advice}")),
            _ => None,
        },
    }
}

/// Why `e`, a consumer error, means Kafka handed over records the task cannot read, if it does:
/// a batch that failed its CRC check (with `check.crcs=true`), could not be decompressed, or is
/// in a format or codec librdkafka does not know. librdkafka skips a corrupt batch and reads on
/// (the task would commit past records it never saw) or fetches an undecodable one again and
/// again (the partition stands still): the task stops instead, naming the problem, as a Kafka
/// Connect task fails on the Java consumer's `CorruptRecordException`.
///
/// librdkafka raises `BadCompression` and `NotImplemented` to a consumer only for a batch it
/// reads. `BadMessage` also names a broker connection's failure (a reply of an impossible size,
/// as from a TLS port spoken to in plain text), which librdkafka recovers from: it counts as a
/// corrupt batch only when the consumer checks CRCs (`crcs_checked`, `check.crcs=true`), the
/// only way librdkafka skips a batch with it.
pub fn unreadable(e: &rdkafka::error::KafkaError, crcs_checked: bool) -> Option<&'static str> {
    use rdkafka::types::RDKafkaErrorCode as C;
    match e.rdkafka_error_code()? {
        C::BadMessage if crcs_checked => Some(
            "a batch failing its CRC check, or another message librdkafka could not parse (its error just before this names it)",
        ),
        C::BadCompression => Some("a batch that could not be decompressed"),
        C::NotImplemented => {
            Some("a batch in a format or compression codec this build of librdkafka does not read")
        }
        _ => None,
    }
}

/// Whether `e` is librdkafka's answer to `auto.offset.reset=error`: a partition has no committed
/// offset, or its committed offset is out of range. librdkafka then fetches that partition no
/// more, and the task would stand still on it while showing RUNNING: it fails instead, as a
/// Kafka Connect task does under the Java consumer's `auto.offset.reset=none`.
pub fn no_offset_to_start_from(e: &rdkafka::error::KafkaError) -> bool {
    e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::AutoOffsetReset)
}

/// The leader epoch `m` was written with (each batch carries the epoch of the leader that
/// appended it), or `None` when unknown (a log of the message format before Kafka 0.11's).
/// rust-rdkafka does not give it.
pub fn leader_epoch(m: &rdkafka::message::BorrowedMessage<'_>) -> Option<i32> {
    // SAFETY: `m.ptr()` is the live message `m` borrows; librdkafka only reads a field of it.
    let epoch = unsafe { rdkafka::bindings::rd_kafka_message_leader_epoch(m.ptr()) };
    (epoch >= 0).then_some(epoch)
}

/// Whether a consumer of `config` checks each batch's CRC (`check.crcs`, off by default).
pub fn crcs_checked(config: &ClientConfig) -> bool {
    config.get("check.crcs") == Some("true")
}

/// The worker's Kafka client settings: `kafka.bootstrap_servers` and `[kafka.properties]`.
pub fn client_config(settings: &Settings) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &settings.kafka.bootstrap_servers);
    for (k, v) in &settings.kafka.properties {
        c.set(k, v);
    }
    c
}

/// How much a task's consumer prefetches, unless overridden.
pub const PREFETCH_KBYTES: &str = "8192";

/// The largest fetch response a task's consumer asks for, unless overridden (see
/// `fetch_max_bytes`).
pub const FETCH_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// How long a partition's fetch waits when the prefetch queue is full, unless overridden.
pub const FETCH_QUEUE_BACKOFF_MS: &str = "20";

/// How often a task's consumer reports its partitions' end offsets, unless overridden.
pub const STATISTICS_MS: &str = "5000";

/// How often a `topics.regex` connector looks for new matching topics, unless overridden.
pub const REGEX_REFRESH_MS: &str = "5000";

/// The librdkafka settings of a task's consumer: the worker's `[kafka.properties]`, then the
/// connector's `consumer.override.*`, then what delivery guarantees require.
/// How long after the last heartbeat it could have sent the consumer's group session may end:
/// `session.timeout.ms` less `heartbeat.interval.ms` (librdkafka's defaults, 45 s and 3 s, when
/// not set).
pub fn session_gap(config: &ClientConfig) -> Duration {
    let heartbeat = ms(config, "heartbeat.interval.ms", HEARTBEAT_INTERVAL_MS);
    Duration::from_millis(ms(config, "session.timeout.ms", 45_000).saturating_sub(heartbeat))
}

/// A number of milliseconds the consumer's config sets, or librdkafka's `default`.
fn ms(config: &ClientConfig, key: &str, default: u64) -> u64 {
    config
        .get(key)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

pub fn consumer_config(settings: &Settings, spec: &ConnectorSpec, task: usize) -> ClientConfig {
    let mut c = ClientConfig::new();
    // librdkafka logs at least its warnings, whatever `RUST_LOG` says (rust-rdkafka takes the
    // level from the `log` crate's): the task reads its offset resets from them
    // (`RebalanceHandler::offset_reset`). What is printed is still `RUST_LOG`'s to say.
    if (c.log_level as i32) < (RDKafkaLogLevel::Warning as i32) {
        c.set_log_level(RDKafkaLogLevel::Warning);
    }
    c.set("bootstrap.servers", &settings.kafka.bootstrap_servers);
    c.set("auto.offset.reset", "earliest");
    // End offsets for the lag metrics (`RebalanceHandler::partition_ends`).
    c.set("statistics.interval.ms", STATISTICS_MS);
    // librdkafka prefetches up to this much per consumer (its default: 64 MiB); 8 MiB keeps a
    // catching-up worker's memory low and still holds tens of thousands of Debezium records
    // (docs/performance-log.md).
    c.set("queued.max.messages.kbytes", PREFETCH_KBYTES);

    // A full prefetch queue postpones the partition's next fetch by this much (librdkafka's
    // default: 1 s, which left a worker with a small queue idle most of the time).
    c.set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS);
    c.set(
        "client.id",
        format!("connector-consumer-{}-{task}", spec.name),
    );
    if matches!(spec.subscription, Subscription::Regex(_)) {
        // New topics matching the pattern (Debezium creates one per table as it meets it) are
        // found at each metadata refresh; librdkafka's default is five minutes.
        c.set("topic.metadata.refresh.interval.ms", REGEX_REFRESH_MS);
    }
    let overlay = |c: &mut ClientConfig, props: &BTreeMap<String, String>| {
        for (k, v) in props {
            c.set(k, v);
        }
    };
    overlay(&mut c, &settings.kafka.properties);
    overlay(&mut c, &spec.consumer_overrides);
    // Rows of aborted transactions must never reach Druid. The connector's own override is
    // refused at validation; a worker-wide `isolation.level` is meant for other connectors.
    if spec.sink.commits_offsets_in_transactions() {
        c.set("isolation.level", "read_committed");
    }
    if c.get("fetch.max.bytes").is_none() {
        c.set("fetch.max.bytes", fetch_max_bytes(&c).to_string());
    }
    c.set("group.id", spec.group_id());
    c.set("enable.auto.commit", "false");
    c.set("enable.auto.offset.store", "false");
    c
}

/// Whether librdkafka creates a client `T` of `c` (`what`: whose properties, for the message):
/// some of its checks of the properties together run only then. Made on a probe that contacts no
/// broker (no `bootstrap.servers`), logs nothing (the warning that it has no broker to contact
/// among it), and has no group (whose consumer took 100 ms to close, where the probe takes under
/// a millisecond; librdkafka's checks run without one).
pub fn probe<T: rdkafka::config::FromClientConfig>(
    mut c: ClientConfig,
    what: &str,
) -> Result<(), String> {
    c.remove("bootstrap.servers");
    c.remove("group.id");
    c.set_log_level(RDKafkaLogLevel::Emerg);
    c.create::<T>().map(drop).map_err(|e| {
        format!("librdkafka refuses {what} properties together (with the worker's [kafka.properties] and cdc-sink's own): {e}")
    })
}

/// What a task's consumer would be refused for as it starts (each a `key: message` error): the
/// checks of the worker's `[kafka.properties]` a task makes ([`check_no_static_membership`],
/// [`check_poll_interval`]), and librdkafka's of the properties together, some of which run
/// only when a client is created (`fetch.max.bytes` against `message.max.bytes`,
/// `session.timeout.ms` against `max.poll.interval.ms`, a CA file it cannot read), made on a
/// probe ([`probe`]).
pub fn check_consumer(settings: &Settings, spec: &ConnectorSpec) -> Vec<String> {
    let c = consumer_config(settings, spec, 0);
    let mut errors = Vec::new();
    if let Err(e) = check_no_static_membership(&c) {
        errors.push(format!("consumer.override.<property>: {e}"));
    }
    // (Its message begins with the key it is about, flush.timeout.ms.)
    if let Err(e) = check_poll_interval(&c, spec.sink.flush_timeout()) {
        errors.push(e);
    }
    if let Err(e) = probe::<BaseConsumer>(c, "the consumer's") {
        errors.push(format!("consumer.override.<property>: {e}"));
    }
    errors
}

/// A `group.instance.id` in the worker's `[kafka.properties]`, which validation does not see
/// (`consumer.override.group.instance.id` is refused there): one static member id for every
/// task, and Kafka fences all but one of them.
pub fn check_no_static_membership(c: &ClientConfig) -> Result<(), String> {
    match c.get("group.instance.id") {
        None => Ok(()),
        Some(_) => Err(
            "group.instance.id in [kafka.properties] would be one static member id for every \
             task: Kafka fences all but one of them (static membership is not supported)"
                .into(),
        ),
    }
}

/// A revocation waits up to `flush` for in-flight writes inside the rebalance, and the group
/// expels a member that takes longer than `max.poll.interval.ms`. Checked at validation against
/// the connector's own override; here against what the consumer gets, the worker's
/// `[kafka.properties]` included.
pub fn check_poll_interval(c: &ClientConfig, flush: std::time::Duration) -> Result<(), String> {
    let max_poll = ms(c, "max.poll.interval.ms", MAX_POLL_INTERVAL_MS);
    let heartbeat = ms(c, "heartbeat.interval.ms", HEARTBEAT_INTERVAL_MS);
    match poll_interval_error(flush, max_poll, heartbeat) {
        Some(e) => Err(format!(
            "flush.timeout.ms: {e} (from the worker's [kafka.properties] or the connector's consumer.override.*)"
        )),
        None => Ok(()),
    }
}

/// The largest fetch response to ask for when the user did not say. One response is held in
/// memory while any of its records waits in the queue: at librdkafka's 50 MiB a catching-up
/// worker peaked near 150 MiB, at 4 MiB near 110 MiB (docs/performance-log.md). librdkafka refuses
/// a `fetch.max.bytes` below `message.max.bytes` or above `receive.message.max.bytes` − 512
/// (both may be set in `[kafka.properties]` for the producers), so it stays within them.
fn fetch_max_bytes(c: &ClientConfig) -> u64 {
    let get = |k: &str| c.get(k).and_then(|v| v.trim().parse::<u64>().ok());
    let mut bytes = FETCH_MAX_BYTES.max(get("message.max.bytes").unwrap_or(0));
    if let Some(receive) = get("receive.message.max.bytes") {
        bytes = bytes.min(receive.saturating_sub(512));
    }
    bytes
}

/// Creates the consumer and subscribes it (`subscription.rs`).
pub fn create<H: RebalanceHandler>(
    config: &ClientConfig,
    handler: H,
    label: String,
    subscription: &Subscription,
) -> Result<(Consumer<H>, Subscribed), String> {
    let consumer: Consumer<H> = config
        .create_with_context(SourceContext {
            handler,
            label: label.clone(),
            served: AtomicU64::new(0),
        })
        .map_err(|e| format!("cannot create the Kafka consumer: {e}"))?;
    let refresh_ms: i64 = config
        .get("topic.metadata.refresh.interval.ms")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(300_000);
    let subscribed = Subscribed::new(&consumer, subscription, refresh_ms, &label)?;
    Ok((consumer, subscribed))
}

/// The partitions of every topic `subscription` names that exist now, with their first and end
/// offsets.
pub fn partitions_of<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    subscription: &Subscription,
    timeout: std::time::Duration,
) -> Result<Vec<(String, i32, i64, i64)>, String> {
    let pattern = subscription.pattern()?;
    let wanted = |name: &str| match &pattern {
        Some(p) => p.reads(name),
        None => subscription.matches(name),
    };
    let meta = consumer
        .fetch_metadata(None, timeout)
        .map_err(|e| format!("cannot read the topics: {e}"))?;
    let mut out = Vec::new();
    for t in meta.topics().iter().filter(|t| wanted(t.name())) {
        for p in t.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(t.name(), p.id(), timeout)
                .map_err(|e| format!("{} partition {}: {e}", t.name(), p.id()))?;
            out.push((t.name().to_string(), p.id(), low, high));
        }
    }
    Ok(out)
}

/// The end offset of each partition a [`reader`] reads, until it gets there.
pub type Ends = BTreeMap<(String, i32), i64>;

/// A consumer of `spec`'s topics outside the connector's group (its own, `cdc-sink-<purpose>-
/// <pid>`, never committed), assigned every non-empty partition from the offset `from(low,
/// high)` gives; with each partition's end offset now.
pub fn reader(
    settings: &Settings,
    spec: &ConnectorSpec,
    purpose: &str,
    from: impl Fn(i64, i64) -> i64,
    timeout: std::time::Duration,
) -> Result<(BaseConsumer, Ends), String> {
    let consumer = reading_consumer(settings, spec, purpose)?;
    let parts = partitions_of(&consumer, &spec.subscription, timeout)?;
    assign_from(consumer, &parts, from)
}

/// The unassigned consumer of a [`reader`], for a caller that looks at the partitions first.
pub fn reading_consumer(
    settings: &Settings,
    spec: &ConnectorSpec,
    purpose: &str,
) -> Result<BaseConsumer, String> {
    let mut config = consumer_config(settings, spec, 0);
    config.set(
        "group.id",
        format!("cdc-sink-{purpose}-{}", std::process::id()),
    );
    // No lag metrics here, and rust-rdkafka's default context would log the whole statistics
    // at INFO level every time they come.
    config.set("statistics.interval.ms", "0");
    config
        .create()
        .map_err(|e| format!("cannot create the Kafka consumer: {e}"))
}

/// Assigns `consumer` the non-empty ones of `parts` (as [`partitions_of`] gives them) from the
/// offset `from(low, high)` gives; with each one's end offset.
pub fn assign_from(
    consumer: BaseConsumer,
    parts: &[(String, i32, i64, i64)],
    from: impl Fn(i64, i64) -> i64,
) -> Result<(BaseConsumer, Ends), String> {
    let mut tpl = TopicPartitionList::new();
    let mut ends = Ends::new();
    for (topic, partition, low, high) in parts {
        if high > low {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(from(*low, *high)))
                .map_err(|e| e.to_string())?;
            ends.insert((topic.clone(), *partition), *high);
        }
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    Ok((consumer, ends))
}

/// Moves each partition's watermark past records the consumer never handed out (transaction
/// markers, aborted records) once everything it handed out is written
/// ([`offsets::Offsets::skip_undelivered`]). Only when every record polled is tracked.
pub fn skip_undelivered<H: RebalanceHandler>(
    consumer: &Consumer<H>,
    offsets: &mut offsets::Offsets,
) {
    if let Ok(pos) = consumer.position() {
        for e in pos.elements() {
            if let Offset::Offset(o) = e.offset() {
                offsets.skip_undelivered(e.topic(), e.partition(), o);
            }
        }
    }
}

/// Forgets the partitions whose position reached their end: a partition may end with records
/// never handed out (transaction markers).
pub fn forget_reached(consumer: &BaseConsumer, ends: &mut Ends) {
    if let Ok(pos) = consumer.position() {
        for e in pos.elements() {
            if let Offset::Offset(o) = e.offset() {
                let k = (e.topic().to_string(), e.partition());
                if ends.get(&k).is_some_and(|end| o >= *end) {
                    ends.remove(&k);
                }
            }
        }
    }
}

/// A client with the worker's Kafka settings only (no group): metadata, watermarks.
pub fn plain_client(settings: &Settings) -> Result<BaseConsumer, String> {
    client_config(settings)
        .create()
        .map_err(|e| format!("cannot create a Kafka client: {e}"))
}

/// A client of consumer group `group` that never joins it: reads and commits its offsets.
pub fn group_client(settings: &Settings, group: &str) -> Result<BaseConsumer, String> {
    client_config(settings)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| format!("cannot create a Kafka client for group {group}: {e}"))
}

/// The offsets the group of `client` (a [`group_client`]) committed for `partitions` (absent:
/// none committed).
pub fn committed_of(
    client: &BaseConsumer,
    partitions: &[(String, i32)],
    timeout: std::time::Duration,
) -> Result<BTreeMap<(String, i32), i64>, String> {
    let mut tpl = TopicPartitionList::new();
    for (t, p) in partitions {
        tpl.add_partition(t, *p);
    }
    let got = client
        .committed_offsets(tpl, timeout)
        .map_err(|e| format!("committed offsets: {e}"))?;
    let mut committed = BTreeMap::new();
    for e in got.elements() {
        // librdkafka answers for each partition apart (no permission to read the topic…), and
        // rust-rdkafka passes the answer on as a success: such a partition is not one without
        // a committed offset.
        if let Err(why) = e.error() {
            return Err(format!(
                "committed offset of topic {} partition {}: {why}",
                e.topic(),
                e.partition()
            ));
        }
        if let Offset::Offset(o) = e.offset() {
            committed.insert((e.topic().to_string(), e.partition()), o);
        }
    }
    Ok(committed)
}

/// Commits `offsets` for the group of `client` (a [`group_client`]; the group must be empty).
pub fn commit_for(
    client: &BaseConsumer,
    offsets: &BTreeMap<(String, i32), i64>,
) -> Result<(), String> {
    let mut tpl = TopicPartitionList::new();
    for ((t, p), o) in offsets {
        tpl.add_partition_offset(t, *p, Offset::Offset(*o))
            .map_err(|e| e.to_string())?;
    }
    client
        .commit(&tpl, CommitMode::Sync)
        .map_err(|e| format!("committing offsets: {e}"))
}

/// Commits `offsets` (topic, partition, next offset to read). Kafka's answer to an
/// asynchronous commit comes to the handler from a later poll (`RebalanceHandler::
/// commit_confirmed`, `commit_failed`); a synchronous commit's is what this returns.
pub fn commit<H: RebalanceHandler>(
    consumer: &Consumer<H>,
    offsets: &[(Arc<str>, i32, i64)],
    mode: CommitMode,
) -> KafkaResult<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::with_capacity(offsets.len());
    for (t, p, o) in offsets {
        tpl.add_partition_offset(t, *p, Offset::Offset(*o))?;
    }
    match mode {
        CommitMode::Sync => consumer.commit(&tpl, mode),
        CommitMode::Async => commit_async(consumer, &tpl),
    }
}

/// An asynchronous commit whose answer librdkafka puts on the consumer's queue, where
/// rust-rdkafka's poll hands it to `ConsumerContext::commit_callback`. rust-rdkafka's own
/// `commit(…, CommitMode::Async)` asks for no answer (`rd_kafka_commit` with neither a queue
/// nor a callback; rust-rdkafka issue #856), so a commit Kafka refused went unnoticed and its
/// offsets were taken as committed.
fn commit_async<H: RebalanceHandler>(
    consumer: &Consumer<H>,
    tpl: &TopicPartitionList,
) -> KafkaResult<()> {
    use rdkafka::bindings as rdsys;
    use rdkafka::error::KafkaError;
    let rk = consumer.client().native_ptr();
    // SAFETY: `rk` is the live consumer's handle. `rd_kafka_queue_get_consumer` returns a new
    // reference to its queue (null when it has none), released below; `rd_kafka_commit_queue`
    // copies `tpl` and, given a queue, only enqueues the request (no callback: the answer
    // comes as an `RD_KAFKA_EVENT_OFFSET_COMMIT` event, which rust-rdkafka enables).
    let err = unsafe {
        let queue = rdsys::rd_kafka_queue_get_consumer(rk);
        if queue.is_null() {
            return consumer.commit(tpl, CommitMode::Async);
        }
        let err = rdsys::rd_kafka_commit_queue(rk, tpl.ptr(), queue, None, std::ptr::null_mut());
        rdsys::rd_kafka_queue_destroy(queue);
        err
    };
    if err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        Ok(())
    } else {
        Err(KafkaError::ConsumerCommit(err.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_resets_are_read_from_librdkafka_s_log_lines() {
        let line = "[thrd:main]: orders.v2 [3]: offset reset (at offset 10 (leader epoch 0), broker 1) to offset BEGINNING (leader epoch -1): fetch failed due to requested offset not available on the broker: Broker: Offset out of range";
        assert_eq!(reset_of(line), Some(("orders.v2", 3, Some(10))));
        assert_eq!(
            reset_of("t [0]: offset reset (at offset 5, broker 1) to END: x: y"),
            Some(("t", 0, Some(5)))
        );
        assert_eq!(
            reset_of("t [0]: offset reset (at offset INVALID, broker 1) to END: x: y"),
            Some(("t", 0, None))
        );
        assert_eq!(reset_of("[thrd:main]: t [0]: fetch backoff"), None);
        assert_eq!(reset_of("[thrd:main]: t [x]: offset reset (at"), None);
    }

    #[test]
    fn only_a_record_or_nothing_without_an_event_served_is_a_poll_gone_through() {
        let record: Option<Result<(), ()>> = Some(Ok(()));
        let error: Option<Result<(), ()>> = Some(Err(()));
        let nothing: Option<Result<(), ()>> = None;
        assert!(went_through(&record, (3, 4)));
        assert!(went_through(&nothing, (3, 3)));
        // An error may stand before a loss (max.poll.interval.ms ran out); a rebalance, a
        // commit's result, statistics or a log end the poll early.
        assert!(!went_through(&error, (3, 3)));
        assert!(!went_through(&nothing, (3, 4)));
    }

    #[test]
    fn fetch_max_bytes_stays_within_what_librdkafka_accepts() {
        let with = |props: &[(&str, &str)]| {
            let mut c = ClientConfig::new();
            for (k, v) in props {
                c.set(*k, *v);
            }
            fetch_max_bytes(&c)
        };
        assert_eq!(with(&[]), 4 * 1024 * 1024);
        // Raised for the producers' large rows: fetches must hold one.
        assert_eq!(with(&[("message.max.bytes", "10000000")]), 10_000_000);
        assert_eq!(
            with(&[("receive.message.max.bytes", "1000000")]),
            1_000_000 - 512
        );
    }

    #[test]
    fn the_worker_properties_count_in_the_checks_a_task_makes_at_start() {
        let spec = |json: &str| {
            let config = crate::connector::ConnectorConfig::from_json(json).unwrap();
            ConnectorSpec::validate(&config).unwrap()
        };
        let mut settings = Settings::default();
        settings
            .kafka
            .properties
            .insert("max.poll.interval.ms".into(), "60000".into());
        settings
            .kafka
            .properties
            .insert("isolation.level".into(), "read_uncommitted".into());
        // Elasticsearch's default flush.timeout.ms (180 s) does not fit in the worker's 60 s.
        let es = spec(
            r#"{"name":"e","config":{"connector.class":"elasticsearch","topics":"t","connection.url":"http://es:9200"}}"#,
        );
        let c = consumer_config(&settings, &es, 0);
        let err = check_poll_interval(&c, es.sink.flush_timeout()).unwrap_err();
        assert!(err.contains("max.poll.interval.ms (60000 ms"), "{err}");
        assert_eq!(c.get("isolation.level"), Some("read_uncommitted"));
        // Druid's exactly-once reads committed records whatever the worker says.
        let druid = spec(r#"{"name":"d","config":{"connector.class":"druid","topics":"t"}}"#);
        let c = consumer_config(&settings, &druid, 0);
        assert!(check_poll_interval(&c, druid.sink.flush_timeout()).is_ok());
        assert_eq!(c.get("isolation.level"), Some("read_committed"));
        // A static member id for every task.
        assert!(check_no_static_membership(&c).is_ok());
        settings
            .kafka
            .properties
            .insert("group.instance.id".into(), "w1".into());
        let c = consumer_config(&settings, &druid, 0);
        let err = check_no_static_membership(&c).unwrap_err();
        assert!(
            err.contains("group.instance.id in [kafka.properties]"),
            "{err}"
        );
    }
}
