//! Every counter a connector keeps, defined once. Shared by its tasks; read for status and,
//! later, for `/metrics`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one connector.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Records read from Kafka.
    pub consumed: AtomicU64,
    /// Writes acknowledged by the sink (bulk items 2xx, deletes of absent documents).
    pub written: AtomicU64,
    /// Writes refused as older than what is there (409): success, counted apart.
    pub stale: AtomicU64,
    /// Writes the sink refused for good and, by configuration, skipped (logged).
    pub failed: AtomicU64,
    /// Bulk requests sent (retries included).
    pub requests: AtomicU64,
    /// Documents removed (or soft-deleted) by reconciliation after a snapshot.
    pub reconciled: AtomicU64,
    /// Kafka transactions committed (the Druid connector with `exactly.once`).
    pub transactions: AtomicU64,
    /// Records with nothing to write, by reason (`tombstone`, `schema_change`, `truncate`…).
    skipped: Mutex<BTreeMap<&'static str, u64>>,
    /// Retries, by reason (`transport`, `timeout`, `bad_response`, `http_429`, `http_5xx`,
    /// `item_429`, `item_5xx`).
    retries: Mutex<BTreeMap<&'static str, u64>>,
    /// Stale writes by `topic/partition`.
    stale_by_partition: Mutex<BTreeMap<String, u64>>,
    /// Freshness of acknowledged writes: source commit (`source.ts_ms`) → sink acknowledgement.
    pub source_to_sink: Histogram,
    /// Debezium's share: source commit → the record's Kafka timestamp.
    pub source_to_kafka: Histogram,
    /// cdc-sink's share: the record's Kafka timestamp → sink acknowledgement.
    pub kafka_to_sink: Histogram,
}

/// Upper bounds of the latency buckets, in milliseconds (about ten per decade).
const BOUNDS_MS: &[u64] = &[
    1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 80, 100, 120, 150, 200, 250, 300, 400,
    500, 600, 800, 1_000, 1_200, 1_500, 2_000, 2_500, 3_000, 4_000, 5_000, 6_000, 8_000, 10_000,
    15_000, 20_000, 30_000, 60_000, 120_000, 300_000,
];

/// A latency histogram (milliseconds) with fixed log-spaced buckets.
#[derive(Debug)]
pub struct Histogram {
    counts: Vec<AtomicU64>,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: (0..=BOUNDS_MS.len()).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// Percentiles of a histogram: each is the upper bound of the bucket it falls in.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: u64,
    pub p99_ms: u64,
}

impl Histogram {
    pub fn record(&self, ms: i64) {
        let ms = ms.max(0) as u64;
        let i = BOUNDS_MS.partition_point(|b| *b < ms);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The smallest bucket bound below which a fraction `p` of the values fall.
    pub fn percentile(&self, p: f64) -> u64 {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let want = (p * total as f64).ceil() as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= want.max(1) {
                return BOUNDS_MS.get(i).copied().unwrap_or(u64::MAX);
            }
        }
        0
    }

    fn latency(&self) -> Latency {
        Latency {
            count: self.count(),
            p50_ms: self.percentile(0.5),
            p99_ms: self.percentile(0.99),
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Snapshot {
    pub consumed: u64,
    pub written: u64,
    pub stale: u64,
    pub failed: u64,
    pub requests: u64,
    pub reconciled: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub transactions: u64,
    pub skipped: BTreeMap<String, u64>,
    pub retries: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub stale_by_partition: BTreeMap<String, u64>,
    pub source_to_sink: Latency,
    pub source_to_kafka: Latency,
    pub kafka_to_sink: Latency,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn skip(&self, reason: &'static str) {
        if let Ok(mut m) = self.skipped.lock() {
            *m.entry(reason).or_default() += 1;
        }
    }

    pub fn retry(&self, reason: &'static str, n: u64) {
        if let Ok(mut m) = self.retries.lock() {
            *m.entry(reason).or_default() += n;
        }
    }

    /// Counts `n` stale writes of `topic` partition `partition`.
    pub fn stale_in(&self, topic: &str, partition: i32, n: u64) {
        Self::add(&self.stale, n);
        if let Ok(mut m) = self.stale_by_partition.lock() {
            *m.entry(format!("{topic}/{partition}")).or_default() += n;
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let copy = |m: &Mutex<BTreeMap<&'static str, u64>>| {
            m.lock()
                .map(|m| m.iter().map(|(k, v)| (k.to_string(), *v)).collect())
                .unwrap_or_default()
        };
        Snapshot {
            consumed: load(&self.consumed),
            written: load(&self.written),
            stale: load(&self.stale),
            failed: load(&self.failed),
            requests: load(&self.requests),
            reconciled: load(&self.reconciled),
            transactions: load(&self.transactions),
            skipped: copy(&self.skipped),
            retries: copy(&self.retries),
            stale_by_partition: self
                .stale_by_partition
                .lock()
                .map(|m| m.clone())
                .unwrap_or_default(),
            source_to_sink: self.source_to_sink.latency(),
            source_to_kafka: self.source_to_kafka.latency(),
            kafka_to_sink: self.kafka_to_sink.latency(),
        }
    }

    /// Records the freshness of a write acknowledged at `now_ms`.
    pub fn acknowledged(&self, now_ms: i64, source_ts_ms: Option<i64>, kafka_ts_ms: Option<i64>) {
        if let Some(s) = source_ts_ms {
            self.source_to_sink.record(now_ms - s);
        }
        if let Some(k) = kafka_ts_ms {
            self.kafka_to_sink.record(now_ms - k);
            if let Some(s) = source_ts_ms {
                self.source_to_kafka.record(k - s);
            }
        }
    }
}

impl std::fmt::Display for Snapshot {
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
    fn percentiles_are_bucket_bounds() {
        let h = Histogram::default();
        for ms in 1..=100 {
            h.record(ms);
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.percentile(0.5), 50);
        assert_eq!(h.percentile(0.99), 100);
        h.record(-5);
        h.record(1_000_000);
        assert_eq!(h.percentile(1.0), u64::MAX);
    }
}
