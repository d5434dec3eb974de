//! Elasticsearch helpers for tests: read a whole index back, with document versions.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::http as client;
use super::servers::servers;

/// Every document of `index`: id → (`_version`, `_source`). Empty when the index is absent.
pub fn documents(index: &str) -> BTreeMap<String, (u64, Value)> {
    scan(index, true)
}

/// Every document's `_version` only: id → version, without `_source`, for the watchers and
/// version checks that poll whole indices every few hundred milliseconds and had fetched and
/// parsed each source only to drop it (the crash tests and one fault test, together: the test
/// process 47.6 -> 41.9 CPU-s; the machine's total within the noise).
pub fn versions(index: &str) -> BTreeMap<String, u64> {
    scan(index, false)
        .into_iter()
        .map(|(id, (v, _))| (id, v))
        .collect()
}

/// One scroll over `index` (refreshed first), with each document's source or `null`.
fn scan(index: &str, with_source: bool) -> BTreeMap<String, (u64, Value)> {
    let c = client();
    let base = &servers().es;
    let r = c.post(format!("{base}/{index}/_refresh")).send().unwrap();
    if r.status() == 404 {
        return BTreeMap::new();
    }
    let mut out = BTreeMap::new();
    let mut resp: Value = c
        .post(format!("{base}/{index}/_search?scroll=1m"))
        .json(
            &json!({"size": 5000, "version": true, "_source": with_source,
            "query": {"match_all": {}}}),
        )
        .send()
        .unwrap()
        .json()
        .unwrap();
    loop {
        let Value::Array(hits) = resp["hits"]["hits"].take() else {
            panic!("search failed: {resp}");
        };
        if hits.is_empty() {
            break;
        }
        for mut h in hits {
            out.insert(
                h["_id"].as_str().unwrap().to_string(),
                (h["_version"].as_u64().unwrap_or(0), h["_source"].take()),
            );
        }
        let scroll_id = resp["_scroll_id"].clone();
        resp = c
            .post(format!("{base}/_search/scroll"))
            .json(&json!({"scroll": "1m", "scroll_id": scroll_id}))
            .send()
            .unwrap()
            .json()
            .unwrap();
    }
    if let Some(id) = resp["_scroll_id"].as_str() {
        let _ = c
            .delete(format!("{base}/_search/scroll"))
            .json(&json!({"scroll_id": id}))
            .send();
    }
    out
}

/// The sources only.
pub fn sources(index: &str) -> BTreeMap<String, Value> {
    documents(index)
        .into_iter()
        .map(|(k, (_, v))| (k, v))
        .collect()
}

/// Waits until `index` holds exactly `expected` (id → version and source), or panics with both
/// and `what`.
pub fn wait_documents(
    index: &str,
    expected: &BTreeMap<String, (u64, Value)>,
    timeout: Duration,
    what: &str,
) {
    let start = std::time::Instant::now();
    loop {
        let docs = documents(index);
        if &docs == expected {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "{index} {what}: expected {expected:?}\n got {docs:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Writes document `id` of `index` (unversioned), as another writer would.
pub fn put_document(index: &str, id: &str, doc: &Value) {
    put(index, id, doc, "refresh=true");
}

/// Writes document `id` of `index` at `version` (`version_type=external_gte`), as the sink
/// writes one.
pub fn put_versioned(index: &str, id: &str, doc: &Value, version: u64) {
    put(
        index,
        id,
        doc,
        &format!("refresh=true&version={version}&version_type=external_gte"),
    );
}

fn put(index: &str, id: &str, doc: &Value, query: &str) {
    let resp = client()
        .put(format!("{}/{index}/_doc/{id}?{query}", servers().es))
        .json(doc)
        .send()
        .expect("PUT document");
    assert!(
        resp.status().is_success(),
        "writing {index}/{id} ({query}): {}",
        resp.text().unwrap_or_default()
    );
}

/// Creates `index` with `body` (settings, mappings).
pub fn create_index(index: &str, body: &Value) {
    let resp = client()
        .put(format!("{}/{index}", servers().es))
        .json(body)
        .send()
        .expect("PUT index");
    assert!(
        resp.status().is_success(),
        "creating {index}: {}",
        resp.text().unwrap_or_default()
    );
}
