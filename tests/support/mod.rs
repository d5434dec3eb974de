//! Test support: the real servers (started once per run), Kafka and Elasticsearch helpers, the
//! worker as a child process, a generated CDC history, and HTTP test doubles (fault proxy).
#![allow(dead_code)]

pub mod avro;
pub mod committed;
pub mod druid;
pub mod es;
pub mod history;
pub mod http;
pub mod kafka;
pub mod live;
pub mod proxy;
pub mod registry;
pub mod rest;
pub mod secure;
pub mod servers;
pub mod sink;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub use servers::{servers, unique};

/// Where the workers' files go (their logs, state directories and connector files):
/// `CDCSINK_SCRATCH` when set (the benchmark's own directory, removed when it ends), else the
/// temporary directory (`scripts/test` gives each run a `TMPDIR` of its own).
pub fn scratch() -> std::path::PathBuf {
    std::env::var_os("CDCSINK_SCRATCH").map_or_else(std::env::temp_dir, Into::into)
}

/// The HTTP client the helpers share (Elasticsearch, Kafka Connect, cdc-sink's REST API). One
/// for the whole run: building a client reads the system's trust store, and in this debug build
/// the helpers, which built one per call, spent about a tenth of the test binary's CPU parsing
/// it. Each request still opens a connection of its own, as it did with a client per call: a
/// connection kept idle could outlive a worker the test has killed.
pub fn http() -> &'static reqwest::blocking::Client {
    static CLIENT: OnceLock<reqwest::blocking::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        cdc_sink::tls::install_default();
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    })
}

/// A connector config for the Elasticsearch sink on the shared servers, with test-friendly
/// group timeouts; `extra` adds or overrides options.
pub fn es_connector(topics: &str, es_url: &str, extra: &[(&str, &str)]) -> Value {
    let mut c = json!({
        "connector.class": "elasticsearch",
        "topics": topics,
        "connection.url": es_url,
        "read.timeout.ms": "30000",
        "linger.ms": "20",
        "consumer.override.session.timeout.ms": "3000",
        "consumer.override.heartbeat.interval.ms": "500",
    });
    for (k, v) in extra {
        c[*k] = json!(v);
    }
    c
}

/// Asserts that a task failed at offset 5 of partition 0 of `topic`, committing exactly the
/// five records before it; returns the failure line of the log.
pub fn assert_failed_at_offset_5(w: &mut worker::Worker, topic: &str, group: &str) -> String {
    let line = w.wait_log("task failed", Duration::from_secs(60));
    assert!(
        line.contains(&format!("topic {topic} partition 0 offset 5")),
        "{line}"
    );
    assert_eq!(
        kafka::committed(group, topic, 1),
        BTreeMap::from([(0, 5)]),
        "committed offsets"
    );
    line
}

/// Starts a worker with a new Elasticsearch connector (unique name `prefix-…`) reading `topics`;
/// returns the worker and the connector's consumer group.
pub fn start_es_worker(
    prefix: &str,
    topics: &str,
    es_url: &str,
    extra: &[(&str, &str)],
) -> (worker::Worker, String) {
    let name = unique(prefix);
    let file = worker::connector_file(&name, &es_connector(topics, es_url, extra));
    (worker::Worker::start(&file), format!("connect-{name}"))
}

/// Waits until the index of `topic` (its name: the connector default) holds exactly `expected`
/// and `group` has committed the end offset of every partition. On timeout, panics with what
/// differs.
pub fn wait_converged(
    topic: &str,
    expected: &BTreeMap<String, Value>,
    group: &str,
    partitions: i32,
    timeout: Duration,
) {
    let index = topic;
    let start = Instant::now();
    let end = kafka::end_offsets(topic, partitions);
    loop {
        // The offsets first, and the whole index only once they are all committed (or time is
        // up): before that the index cannot be complete, and reading all of it every half second
        // was work for Elasticsearch and this process for nothing.
        let committed = kafka::committed(group, topic, partitions);
        let timed_out = start.elapsed() > timeout;
        if committed != end && !timed_out {
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        let docs = es::sources(index);
        if &docs == expected && committed == end {
            return;
        }
        if timed_out {
            let missing: Vec<&String> = expected
                .keys()
                .filter(|k| !docs.contains_key(*k))
                .take(5)
                .collect();
            let extra: Vec<&String> = docs
                .keys()
                .filter(|k| !expected.contains_key(*k))
                .take(5)
                .collect();
            let wrong: Vec<String> = expected
                .iter()
                .filter(|(k, v)| docs.get(*k).is_some_and(|d| d != *v))
                .take(3)
                .map(|(k, v)| format!("{k}: expected {v}, got {}", docs[k]))
                .collect();
            panic!(
                "not converged after {timeout:?}: {} docs (expected {}), missing {missing:?}, extra {extra:?}, wrong {wrong:?}; \
                 committed {committed:?}, end offsets {end:?}",
                docs.len(),
                expected.len()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Polls `f` every 200 ms until it gives a value; panics naming `what` after `timeout`.
pub fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "{what}: not after {timeout:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
