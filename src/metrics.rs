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
    /// Records with nothing to write, by reason (`tombstone`, `schema_change`, `truncate`…).
    skipped: Mutex<BTreeMap<&'static str, u64>>,
    /// Retries, by reason (`transport`, `http_429`, `http_5xx`, `item_429`, `item_5xx`…).
    retries: Mutex<BTreeMap<&'static str, u64>>,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Snapshot {
    pub consumed: u64,
    pub written: u64,
    pub stale: u64,
    pub failed: u64,
    pub requests: u64,
    pub skipped: BTreeMap<String, u64>,
    pub retries: BTreeMap<String, u64>,
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
            skipped: copy(&self.skipped),
            retries: copy(&self.retries),
        }
    }
}
