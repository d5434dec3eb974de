//! Every metric the worker keeps, defined once, with the `prometheus` crate: the families are
//! registered in one registry per process ([`Registry`]), each task writes through its own
//! label children ([`Metrics`]), `GET /metrics` encodes the registry, and the 30-second status
//! line and `cdc-sink status` read per-connector totals out of it ([`Summary`]).
//!
//! Names follow Prometheus conventions (`cdc_sink_…_total`, base units, `_seconds`); the README
//! "Operations" section lists them with what to alert on.

use std::collections::BTreeMap;
use std::sync::Arc;

use prometheus::core::Collector;
use prometheus::local::LocalHistogram;
use prometheus::proto::MetricFamily;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
};

/// Freshness buckets (seconds): 5 ms to 10 min, finer between 50 ms and 1 s, where a healthy
/// pipeline sits.
const FRESHNESS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.12, 0.15, 0.2, 0.25, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0,
    10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// Bulk request latency buckets (seconds).
const REQUEST_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Bulk batch size buckets (records).
const BATCH_BUCKETS: &[f64] = &[
    1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];

const TASK_STATE: &str = "cdc_sink_task_state";

/// The task states Kafka Connect reports, each a series of `cdc_sink_task_state`.
pub const TASK_STATES: &[&str] = &[
    "UNASSIGNED",
    "RUNNING",
    "PAUSED",
    "FAILED",
    "STOPPED",
    "RESTARTING",
];

/// The metric families of one process.
struct Families {
    consumed: IntCounterVec,
    written: IntCounterVec,
    stale: IntCounterVec,
    skipped: IntCounterVec,
    failed: IntCounterVec,
    dead_lettered: IntCounterVec,
    retries: IntCounterVec,
    rebalances: IntCounterVec,
    stalls: IntCounterVec,
    reconciled: IntCounterVec,
    rows_produced: IntCounterVec,
    transactions: IntCounterVec,
    bulk_seconds: HistogramVec,
    bulk_records: HistogramVec,
    source_to_kafka: HistogramVec,
    kafka_to_ack: HistogramVec,
    received_to_ack: HistogramVec,
    source_to_ack: HistogramVec,
    committed: IntGaugeVec,
    end: IntGaugeVec,
    lag: IntGaugeVec,
}

const TASK: &[&str] = &["connector", "task"];
const PARTITION: &[&str] = &["connector", "task", "topic", "partition"];

/// The process's metrics registry (cheap to clone).
#[derive(Clone)]
pub struct Registry {
    registry: prometheus::Registry,
    f: Arc<Families>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

/// `collector`, registered in `registry`.
fn registered<C: Collector + Clone + 'static>(registry: &prometheus::Registry, collector: C) -> C {
    registry
        .register(Box::new(collector.clone()))
        .expect("each family registered once");
    collector
}

impl Registry {
    pub fn new() -> Registry {
        let registry = prometheus::Registry::new();
        // Names, labels and buckets are constants of this file: an error here is a bug in it.
        let counter = |name: &str, help: &str, labels: &[&str]| {
            registered(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("a valid counter"),
            )
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
            registered(
                &registry,
                HistogramVec::new(opts, labels).expect("a valid histogram"),
            )
        };
        let gauge = |name: &str, help: &str| {
            registered(
                &registry,
                IntGaugeVec::new(Opts::new(name, help), PARTITION).expect("a valid gauge"),
            )
        };
        let f = Families {
            consumed: counter(
                "cdc_sink_records_consumed_total",
                "Records read from Kafka.",
                TASK,
            ),
            written: counter(
                "cdc_sink_records_written_total",
                "Writes acknowledged by the sink, by action (index, delete, row).",
                &["connector", "task", "action"],
            ),
            stale: counter(
                "cdc_sink_records_stale_total",
                "Writes Elasticsearch refused as older than the document there (409): success, counted apart.",
                PARTITION,
            ),
            skipped: counter(
                "cdc_sink_records_skipped_total",
                "Records with nothing to write, by reason (tombstone, schema_change, truncate, read_again…).",
                &["connector", "task", "reason"],
            ),
            failed: counter(
                "cdc_sink_records_failed_total",
                "Records that could not be decoded, mapped or written and were tolerated (errors.tolerance=all, behavior.on.malformed.documents, drop.invalid.message), by stage.",
                &["connector", "task", "stage"],
            ),
            dead_lettered: counter(
                "cdc_sink_records_dead_lettered_total",
                "Records written to the dead-letter queue (acknowledged by Kafka).",
                TASK,
            ),
            retries: counter(
                "cdc_sink_retries_total",
                "Writes retried, by reason (transport, timeout, bad_response, http_429, http_5xx, item_429, item_5xx).",
                &["connector", "task", "reason"],
            ),
            rebalances: counter(
                "cdc_sink_rebalances_total",
                "Partition assignment changes of a task's consumer, by kind (assigned, revoked, lost).",
                &["connector", "task", "kind"],
            ),
            stalls: counter(
                "cdc_sink_stalls_total",
                "Times the process stood still (stopped, frozen, swapping) long enough that the group may have moved on: the Elasticsearch sink held its bulk writes until the task had polled its consumer.",
                TASK,
            ),
            reconciled: counter(
                "cdc_sink_documents_reconciled_total",
                "Documents removed (or soft-deleted) by reconciliation after a snapshot.",
                TASK,
            ),
            rows_produced: counter(
                "cdc_sink_druid_rows_produced_total",
                "Rows the Druid connector produced to its ingestion topics (acknowledged).",
                TASK,
            ),
            transactions: counter(
                "cdc_sink_druid_transactions_total",
                "Kafka transactions the Druid connector committed (exactly.once).",
                TASK,
            ),
            bulk_seconds: histogram(
                "cdc_sink_bulk_request_duration_seconds",
                "Elasticsearch bulk request latency, retries included as separate requests.",
                TASK,
                REQUEST_BUCKETS,
            ),
            bulk_records: histogram(
                "cdc_sink_bulk_batch_records",
                "Records per Elasticsearch bulk request.",
                TASK,
                BATCH_BUCKETS,
            ),
            source_to_kafka: histogram(
                "cdc_sink_freshness_source_to_kafka_seconds",
                "Debezium's share of freshness: source commit (source.ts_ms) to the record's Kafka timestamp.",
                TASK,
                FRESHNESS_BUCKETS,
            ),
            kafka_to_ack: histogram(
                "cdc_sink_freshness_kafka_to_ack_seconds",
                "cdc-sink's share of freshness: the record's Kafka timestamp to the sink's acknowledgement.",
                TASK,
                FRESHNESS_BUCKETS,
            ),
            received_to_ack: histogram(
                "cdc_sink_freshness_received_to_ack_seconds",
                "The sink's own part of cdc-sink's share: the record handed to the sink (just after it is read from Kafka) to the sink's acknowledgement.",
                TASK,
                FRESHNESS_BUCKETS,
            ),
            source_to_ack: histogram(
                "cdc_sink_freshness_source_to_ack_seconds",
                "Freshness end to end: source commit (source.ts_ms) to the sink's acknowledgement.",
                TASK,
                FRESHNESS_BUCKETS,
            ),
            committed: gauge(
                "cdc_sink_committed_offset",
                "The offset committed for a partition (the next record to read after a restart).",
            ),
            end: gauge(
                "cdc_sink_end_offset",
                "The partition's end offset as last fetched (high watermark, or last stable offset for read_committed).",
            ),
            lag: gauge(
                "cdc_sink_lag_records",
                "Records of the partition not yet committed: end offset minus committed offset.",
            ),
        };
        Registry {
            registry,
            f: Arc::new(f),
        }
    }

    /// The name of every metric family (`GET /metrics` shows those with series).
    pub fn names(&self) -> Vec<String> {
        let f = &self.f;
        let all: [&dyn Collector; 21] = [
            &f.consumed,
            &f.written,
            &f.stale,
            &f.skipped,
            &f.failed,
            &f.dead_lettered,
            &f.retries,
            &f.rebalances,
            &f.stalls,
            &f.reconciled,
            &f.rows_produced,
            &f.transactions,
            &f.bulk_seconds,
            &f.bulk_records,
            &f.source_to_kafka,
            &f.kafka_to_ack,
            &f.received_to_ack,
            &f.source_to_ack,
            &f.committed,
            &f.end,
            &f.lag,
        ];
        all.iter()
            .flat_map(|c| c.desc())
            .map(|d| d.fq_name.clone())
            .chain([TASK_STATE.to_string()])
            .collect()
    }

    /// The handles task `task` of `connector` writes through.
    pub fn task(&self, connector: &str, task: usize) -> Metrics {
        let t = task.to_string();
        let l = [connector, t.as_str()];
        let f = &self.f;
        Metrics {
            consumed: f.consumed.with_label_values(&l),
            source_to_kafka: f.source_to_kafka.with_label_values(&l),
            kafka_to_ack: f.kafka_to_ack.with_label_values(&l),
            received_to_ack: f.received_to_ack.with_label_values(&l),
            source_to_ack: f.source_to_ack.with_label_values(&l),
            bulk_seconds: f.bulk_seconds.with_label_values(&l),
            bulk_records: f.bulk_records.with_label_values(&l),
            offsets: Default::default(),
            connector: connector.to_string(),
            task: t,
            f: self.f.clone(),
        }
    }

    /// Every family, plus `extra` (gauges built at scrape time), in the text exposition format.
    pub fn encode(&self, extra: Vec<MetricFamily>) -> String {
        let mut families = self.registry.gather();
        // The encoder refuses a family without series (no task running here).
        families.extend(extra.into_iter().filter(|f| !f.get_metric().is_empty()));
        families.sort_by(|a, b| a.name().cmp(b.name()));
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|e| format!("# cannot encode the metrics: {e}\n"))
    }

    /// `cdc_sink_task_state`: 1 for the state each task is in, 0 for the others.
    pub fn task_states<'a>(
        tasks: impl IntoIterator<Item = (&'a str, usize, &'a str)>,
    ) -> Vec<MetricFamily> {
        let g = IntGaugeVec::new(
            Opts::new(
                TASK_STATE,
                "The state of each task this worker runs: 1 for the state it is in.",
            ),
            &["connector", "task", "state"],
        )
        .expect("a valid gauge");
        for (connector, task, state) in tasks {
            let t = task.to_string();
            for s in TASK_STATES {
                g.with_label_values(&[connector, t.as_str(), s])
                    .set(i64::from(*s == state));
            }
        }
        g.collect()
    }

    /// Totals of one connector over its tasks on this worker.
    pub fn summary(&self, connector: &str) -> Summary {
        self.summaries(connector).0
    }

    /// Totals of one connector over its tasks on this worker, and of each task, read from the
    /// families a summary shows.
    pub fn summaries(&self, connector: &str) -> (Summary, BTreeMap<usize, Summary>) {
        type Add = fn(&mut Summary, &prometheus::proto::Metric, &dyn Fn(&str) -> String);

        let (mut total, mut tasks) = (Summary::default(), BTreeMap::<usize, Summary>::new());
        let mut visit = |c: &dyn Collector, add: Add| {
            for fam in c.collect() {
                for m in fam.get_metric() {
                    let labels: BTreeMap<&str, &str> = m
                        .get_label()
                        .iter()
                        .map(|l| (l.name(), l.value()))
                        .collect();
                    if labels.get("connector") != Some(&connector) {
                        continue;
                    }
                    let label = |k: &str| labels.get(k).copied().unwrap_or("").to_string();
                    add(&mut total, m, &label);
                    if let Some(t) = labels.get("task").and_then(|t| t.parse().ok()) {
                        add(tasks.entry(t).or_default(), m, &label);
                    }
                }
            }
        };
        let f = &self.f;
        visit(&f.consumed, |s, m, _| s.consumed += count(m));
        visit(&f.written, |s, m, _| s.written += count(m));
        visit(&f.stale, |s, m, _| s.stale += count(m));
        visit(&f.failed, |s, m, _| s.failed += count(m));
        visit(&f.dead_lettered, |s, m, _| s.dead_lettered += count(m));
        visit(&f.transactions, |s, m, _| s.transactions += count(m));
        visit(&f.reconciled, |s, m, _| s.reconciled += count(m));
        visit(&f.skipped, |s, m, label| {
            *s.skipped.entry(label("reason")).or_default() += count(m)
        });
        visit(&f.retries, |s, m, label| {
            *s.retries.entry(label("reason")).or_default() += count(m)
        });
        visit(&f.lag, |s, m, _| {
            s.lag += m.get_gauge().get_value().max(0.0) as u64
        });
        visit(&f.kafka_to_ack, |s, m, _| {
            s.kafka_to_ack.add(m.get_histogram())
        });
        visit(&f.received_to_ack, |s, m, _| {
            s.received_to_ack.add(m.get_histogram())
        });
        visit(&f.source_to_ack, |s, m, _| {
            s.source_to_ack.add(m.get_histogram())
        });
        (total, tasks)
    }
}

/// A counter series' value.
fn count(m: &prometheus::proto::Metric) -> u64 {
    m.get_counter().get_value() as u64
}

/// One task's metrics: the label children of the per-record families are looked up once.
pub struct Metrics {
    connector: String,
    task: String,
    f: Arc<Families>,
    consumed: IntCounter,
    source_to_kafka: Histogram,
    kafka_to_ack: Histogram,
    received_to_ack: Histogram,
    source_to_ack: Histogram,
    bulk_seconds: Histogram,
    bulk_records: Histogram,
    /// Each held partition's committed and end offsets, as far as known (for the lag).
    offsets: std::sync::Mutex<BTreeMap<(String, i32), PartitionOffsets>>,
}

/// See [`Metrics::freshness`].
pub struct Freshness {
    received_to_ack: LocalHistogram,
    source_to_ack: LocalHistogram,
    kafka_to_ack: LocalHistogram,
    source_to_kafka: LocalHistogram,
}

impl Freshness {
    /// Records the freshness of a write acknowledged at `now_ms`, of a record handed to the
    /// sink at `received_ms`.
    pub fn observe(
        &self,
        now_ms: i64,
        source_ts_ms: Option<i64>,
        kafka_ts_ms: Option<i64>,
        received_ms: i64,
    ) {
        let secs = |ms: i64| ms.max(0) as f64 / 1000.0;
        self.received_to_ack.observe(secs(now_ms - received_ms));
        if let Some(s) = source_ts_ms {
            self.source_to_ack.observe(secs(now_ms - s));
        }
        if let Some(k) = kafka_ts_ms {
            self.kafka_to_ack.observe(secs(now_ms - k));
            if let Some(s) = source_ts_ms {
                self.source_to_kafka.observe(secs(k - s));
            }
        }
    }
}

/// A partition's committed and end offsets, each once known.
type PartitionOffsets = (Option<i64>, Option<i64>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Metrics({}-{})", self.connector, self.task)
    }
}

impl Metrics {
    fn of(&self, v: &IntCounterVec, extra: &str) -> IntCounter {
        v.with_label_values(&[self.connector.as_str(), self.task.as_str(), extra])
    }

    fn task_counter(&self, v: &IntCounterVec) -> IntCounter {
        v.with_label_values(&[self.connector.as_str(), self.task.as_str()])
    }

    /// `n` records taken from the consumer (the task adds a burst's at once).
    pub fn consumed(&self, n: u64) {
        if n > 0 {
            self.consumed.inc_by(n);
        }
    }

    /// `n` writes acknowledged, of `action` (`index`, `delete`, `row`).
    pub fn written(&self, action: &str, n: u64) {
        if n > 0 {
            self.of(&self.f.written, action).inc_by(n);
        }
    }

    pub fn skip(&self, reason: &str) {
        self.of(&self.f.skipped, reason).inc();
    }

    /// A record tolerated at `stage` (`KEY_CONVERTER`, `VALUE_CONVERTER`, `TASK_PUT`).
    pub fn failed(&self, stage: &str) {
        self.of(&self.f.failed, stage).inc();
    }

    pub fn dead_lettered(&self, n: u64) {
        self.task_counter(&self.f.dead_lettered).inc_by(n);
    }

    pub fn retry(&self, reason: &str, n: u64) {
        self.of(&self.f.retries, reason).inc_by(n);
    }

    pub fn rebalance(&self, kind: &str) {
        self.of(&self.f.rebalances, kind).inc();
    }

    /// The counter of stalls seen by this task's sink (`sink/elasticsearch/stall.rs`).
    pub fn stalls(&self) -> IntCounter {
        self.task_counter(&self.f.stalls)
    }

    pub fn reconciled(&self, n: u64) {
        self.task_counter(&self.f.reconciled).inc_by(n);
    }

    pub fn rows_produced(&self, n: u64) {
        self.task_counter(&self.f.rows_produced).inc_by(n);
    }

    pub fn transaction(&self) {
        self.task_counter(&self.f.transactions).inc();
    }

    /// Counts `n` stale writes of `topic` partition `partition`.
    pub fn stale(&self, topic: &str, partition: i32, n: u64) {
        let p = partition.to_string();
        self.f
            .stale
            .with_label_values(&[self.connector.as_str(), self.task.as_str(), topic, &p])
            .inc_by(n);
    }

    /// One bulk request of `records` records that took `seconds`.
    pub fn bulk(&self, seconds: f64, records: usize) {
        self.bulk_seconds.observe(seconds);
        self.bulk_records.observe(records as f64);
    }

    /// The freshness histograms, gathered locally for the writes of one response and added
    /// to the shared ones when dropped (prometheus's `LocalHistogram`): four shared histogram
    /// updates per record, each a few atomic operations, were 8% of the I/O thread's time.
    pub fn freshness(&self) -> Freshness {
        Freshness {
            received_to_ack: self.received_to_ack.local(),
            source_to_ack: self.source_to_ack.local(),
            kafka_to_ack: self.kafka_to_ack.local(),
            source_to_kafka: self.source_to_kafka.local(),
        }
    }

    /// Sets a partition's committed offset and end offset (`None` leaves what is known), and
    /// their difference, the lag, once both are known. The committed offset never goes back
    /// while the task holds the partition: librdkafka's statistics, taken before the last
    /// commit was confirmed but read after it, name the commit before (a task's own commits only
    /// move forward, and Kafka changes a group's offsets from outside only while it is empty).
    pub fn partition(&self, topic: &str, partition: i32, committed: Option<i64>, end: Option<i64>) {
        let p = partition.to_string();
        let l = [self.connector.as_str(), self.task.as_str(), topic, &p];
        let mut known = self.offsets.lock().unwrap_or_else(|e| e.into_inner());
        let entry = known.entry((topic.to_string(), partition)).or_default();
        if let Some(c) = committed
            && entry.0.is_none_or(|was| c >= was)
        {
            entry.0 = Some(c);
            self.f.committed.with_label_values(&l).set(c);
        }
        if let Some(e) = end {
            entry.1 = Some(e);
            self.f.end.with_label_values(&l).set(e);
        }
        if let (Some(c), Some(e)) = *entry {
            self.f.lag.with_label_values(&l).set((e - c).max(0));
        }
    }

    /// Forgets every partition this task has series of (the task has ended).
    pub fn forget_all(&self) {
        let known: Vec<(String, i32)> = self
            .offsets
            .lock()
            .map(|k| k.keys().cloned().collect())
            .unwrap_or_default();
        for (topic, partition) in known {
            self.forget_partition(&topic, partition);
        }
    }

    /// Forgets a partition that left this task (revoked).
    pub fn forget_partition(&self, topic: &str, partition: i32) {
        let p = partition.to_string();
        let l = [self.connector.as_str(), self.task.as_str(), topic, &p];
        for g in [&self.f.committed, &self.f.end, &self.f.lag] {
            let _ = g.remove_label_values(&l);
        }
        if let Ok(mut known) = self.offsets.lock() {
            known.remove(&(topic.to_string(), partition));
        }
    }
}

/// Percentiles of a freshness histogram, merged over tasks.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Latency {
    pub count: u64,
    /// The upper bound (seconds) of the bucket the median falls in; `None` without samples
    /// or beyond the largest bucket.
    pub p50_seconds: Option<f64>,
    pub p99_seconds: Option<f64>,
    #[serde(skip)]
    buckets: Vec<(f64, u64)>,
}

impl Latency {
    fn add(&mut self, h: &prometheus::proto::Histogram) {
        self.count += h.get_sample_count();
        for b in h.get_bucket() {
            match self.buckets.iter_mut().find(|(u, _)| *u == b.upper_bound()) {
                Some((_, c)) => *c += b.cumulative_count(),
                None => self.buckets.push((b.upper_bound(), b.cumulative_count())),
            }
        }
        self.p50_seconds = self.quantile(0.5);
        self.p99_seconds = self.quantile(0.99);
    }

    /// The samples taken since `earlier` (the same histograms read before): their count and
    /// percentiles. Histograms are cumulative since the worker started, so percentiles of the
    /// whole would keep the backlog of a start (records that waited minutes in Kafka) for as
    /// long as it is more than a hundredth of everything written since. A count below
    /// `earlier`'s (a task's series forgotten meanwhile) gives the whole.
    pub fn since(&self, earlier: &Latency) -> Latency {
        if self.count < earlier.count {
            return self.clone();
        }
        let mut d = Latency {
            count: self.count - earlier.count,
            buckets: self
                .buckets
                .iter()
                .map(|&(u, c)| {
                    let before = earlier.buckets.iter().find(|(v, _)| *v == u);
                    (u, c.saturating_sub(before.map_or(0, |b| b.1)))
                })
                .collect(),
            ..Latency::default()
        };
        d.p50_seconds = d.quantile(0.5);
        d.p99_seconds = d.quantile(0.99);
        d
    }

    /// The smallest bucket bound below which a fraction `q` of the samples fall.
    fn quantile(&self, q: f64) -> Option<f64> {
        let want = ((q * self.count as f64).ceil() as u64).max(1);
        self.buckets
            .iter()
            .find(|(_, c)| *c >= want)
            .map(|(u, _)| *u)
    }
}

/// A connector's totals at one moment (status lines, `cdc-sink status`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Summary {
    pub consumed: u64,
    pub written: u64,
    pub stale: u64,
    pub failed: u64,
    pub dead_lettered: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub reconciled: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub transactions: u64,
    /// Records not yet committed, over the connector's partitions on this worker.
    pub lag: u64,
    pub skipped: BTreeMap<String, u64>,
    pub retries: BTreeMap<String, u64>,
    pub kafka_to_ack: Latency,
    pub received_to_ack: Latency,
    pub source_to_ack: Latency,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl std::fmt::Display for Summary {
    /// One line of JSON (for logs).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&serde_json::to_string(self).map_err(|_| std::fmt::Error)?)
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_committed_offset_never_steps_back_while_its_partition_is_held() {
        let r = Registry::new();
        let t = r.task("c", 0);
        let committed = |r: &Registry| {
            let text = r.encode(Registry::task_states([]));
            text.lines()
                .find(|l| l.starts_with("cdc_sink_committed_offset{"))
                .and_then(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
        };
        t.partition("t", 0, Some(10), Some(25));
        // Statistics taken before the commit of 10 was confirmed, read after it.
        t.partition("t", 0, Some(7), Some(30));
        assert_eq!(committed(&r), Some(10));
        assert_eq!(r.summary("c").lag, 20);
        t.partition("t", 0, Some(12), None);
        assert_eq!((committed(&r), r.summary("c").lag), (Some(12), 18));
        // Revoked, then held again: what Kafka says now.
        t.forget_partition("t", 0);
        t.partition("t", 0, Some(7), Some(30));
        assert_eq!((committed(&r), r.summary("c").lag), (Some(7), 23));
    }

    #[test]
    fn summary_sums_tasks_and_reads_percentiles_from_buckets() {
        let r = Registry::new();
        let (a, b) = (r.task("c", 0), r.task("c", 1));
        let other = r.task("other", 0);
        a.consumed(3);
        b.consumed(1);
        other.consumed(1);
        a.written("index", 2);
        b.written("delete", 1);
        a.skip("tombstone");
        b.skip("tombstone");
        for ms in 1..=100 {
            a.freshness()
                .observe(10_000, None, Some(10_000 - ms * 10), 10_000);
        }
        let fresh = r.summary("c").kafka_to_ack;
        assert_eq!(
            (fresh.p50_seconds, fresh.p99_seconds),
            (Some(0.5), Some(1.0))
        );
        // Each write acknowledged as it was handed to the sink: the smallest bucket.
        let own = r.summary("c").received_to_ack;
        assert_eq!(
            (own.count, own.p99_seconds),
            (100, Some(FRESHNESS_BUCKETS[0]))
        );
        // Beyond the largest bucket: no bound to name.
        b.freshness().observe(10_000_000, None, Some(0), 10_000_000);
        a.partition("t", 0, Some(10), Some(25));
        b.partition("t", 1, Some(5), Some(5));
        let (s, tasks) = r.summaries("c");
        assert_eq!(tasks[&1].consumed, 1);
        assert_eq!((s.consumed, s.written, s.lag), (4, 3, 15));
        assert_eq!(s.skipped["tombstone"], 2);
        assert_eq!(s.kafka_to_ack.count, 101);
        assert_eq!(s.kafka_to_ack.p99_seconds, Some(1.0));
        b.freshness().observe(10_000_000, None, Some(0), 10_000_000);
        b.freshness().observe(10_000_000, None, Some(0), 10_000_000);
        assert_eq!(r.summary("c").kafka_to_ack.p99_seconds, None);
        // Since a reading: only what came after it, not the three beyond the largest bucket.
        let earlier = r.summary("c").kafka_to_ack;
        for _ in 0..10 {
            a.freshness().observe(10_000, None, Some(9_990), 10_000);
        }
        let recent = r.summary("c").kafka_to_ack.since(&earlier);
        assert_eq!((recent.count, recent.p99_seconds), (10, Some(0.01)));
        assert_eq!(recent.since(&recent).p99_seconds, None);
        // A partition whose committed offset is not known yet has no lag (not its end).
        b.partition("t", 2, None, Some(1_000));
        assert_eq!(r.summary("c").lag, 15);
        a.forget_partition("t", 0);
        assert_eq!(r.summary("c").lag, 0);
        // No task here: an empty family is left out, not an encoding error.

        assert!(
            !Registry::new()
                .encode(Registry::task_states([]))
                .contains("cannot encode")
        );
        let text = r.encode(Registry::task_states([("c", 0, "RUNNING")]));
        assert!(text.contains(r#"cdc_sink_records_consumed_total{connector="c",task="0"} 3"#));
        assert!(text.contains(r#"cdc_sink_task_state{connector="c",state="RUNNING",task="0"} 1"#));
        assert!(text.contains(r#"cdc_sink_task_state{connector="c",state="FAILED",task="0"} 0"#));
    }
}
