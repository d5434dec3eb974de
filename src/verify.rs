//! `cdc-sink verify`: replays a connector's topics through the same decoding and mapping as its
//! tasks, into the index state they must produce (newest version per document, deletes, the
//! reconciliation after each snapshot), and compares that with what the indices hold: counts,
//! documents missing or extra, documents whose content differs, and versions behind.
//!
//! It reads the topics from their beginning to their current end with a consumer of its own that
//! never commits, and scans the indices; it writes nothing. The expected state is held in memory:
//! one id and two 64-bit numbers per document.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Message as _;
use reqwest::Method;
use serde_json::{Value as Json, json};

use crate::connector::{ConnectorSpec, Subscription};
use crate::decode::Decoder;
use crate::settings::Settings;
use crate::sink::SinkRecord;
use crate::sink::elasticsearch::client::BulkClient;
use crate::sink::elasticsearch::config::EsConfig;
use crate::sink::elasticsearch::mapping::{ActionKind, Mapped, Mapper, removable};

const TIMEOUT: Duration = Duration::from_secs(10);
/// Ids listed per kind of difference.
const SHOW: usize = 10;

/// What a replay says one document must be.
#[derive(Debug, Clone, Copy)]
struct Expected {
    version: Option<u64>,
    /// Hash of the document's JSON; `None`: deleted.
    doc: Option<u64>,
    /// Marked `__deleted: true` by reconciliation (soft deletes): its content otherwise is not
    /// compared.
    soft_deleted: bool,
}

/// The differences found in one index.
#[derive(Debug, Default, serde::Serialize)]
pub struct IndexReport {
    pub expected: usize,
    pub found: usize,
    pub missing: usize,
    pub extra: usize,
    pub differing: usize,
    pub stale: usize,
    /// A few ids of each kind.
    pub examples: BTreeMap<&'static str, Vec<String>>,
}

impl IndexReport {
    pub fn drift(&self) -> bool {
        self.missing + self.extra + self.differing + self.stale > 0
    }

    fn note(&mut self, kind: &'static str, id: &str) {
        let n = match kind {
            "missing" => &mut self.missing,
            "extra" => &mut self.extra,
            "differing" => &mut self.differing,
            _ => &mut self.stale,
        };
        *n += 1;
        let ex = self.examples.entry(kind).or_default();
        if ex.len() < SHOW {
            ex.push(id.to_string());
        }
    }
}

/// The whole report: per index, and the records read.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub records: u64,
    pub indices: BTreeMap<String, IndexReport>,
}

impl Report {
    pub fn drift(&self) -> bool {
        self.indices.values().any(IndexReport::drift)
    }
}

/// What a check needs to read an index.
struct Es {
    client: BulkClient,
    runtime: tokio::runtime::Runtime,
    hasher: foldhash::fast::FixedState,
}

impl Es {
    fn new(cfg: &EsConfig) -> Result<Es, String> {
        Ok(Es {
            client: BulkClient::new(cfg)?,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?,
            hasher: foldhash::fast::FixedState::with_seed(0),
        })
    }

    /// Compares `index` with what it must hold: documents missing, extra, differing, and at
    /// an older version.
    fn check(
        &self,
        cfg: &EsConfig,
        index: &str,
        docs: &crate::FastMap<String, Expected>,
    ) -> Result<IndexReport, String> {
        let mut r = IndexReport {
            expected: docs.values().filter(|e| e.doc.is_some()).count(),
            ..IndexReport::default()
        };
        let mut seen = crate::FastMap::default();
        self.runtime
            .block_on(scan(&self.client, cfg, index, |id, version, source| {
                r.found += 1;
                seen.insert(id.to_string(), ());
                match docs.get(id) {
                    None | Some(Expected { doc: None, .. }) => r.note("extra", id),
                    Some(e) => {
                        let same = if e.soft_deleted {
                            source["__deleted"] == Json::Bool(true)
                        } else {
                            e.doc == Some(canonical_hash(&self.hasher, source))
                        };
                        if !same {
                            r.note("differing", id);
                        }
                        if let (Some(want), Some(got)) = (e.version, version)
                            && got < want
                        {
                            r.note("stale", id);
                        }
                    }
                }
            }))?;
        for (id, e) in docs {
            if e.doc.is_some() && !seen.contains_key(id) {
                r.note("missing", id);
            }
        }
        Ok(r)
    }
}

/// Replays `spec`'s topics and compares the result with its indices.
pub fn run(settings: &Settings, spec: &ConnectorSpec) -> Result<Report, String> {
    let cfg = spec
        .sink
        .elasticsearch()
        .ok_or("this command works on Elasticsearch connectors only")?;
    let cfg: Arc<EsConfig> = Arc::new(cfg.clone());
    // A topic that does not exist would read as no records: every index would look right.
    let consumer = crate::source::reading_consumer(settings, spec, "verify")?;
    let found = crate::source::partitions_of(&consumer, &spec.subscription, TIMEOUT)?;
    match &spec.subscription {
        Subscription::Topics(topics) => {
            if let Some(t) = topics.iter().find(|t| !found.iter().any(|f| &f.0 == *t)) {
                return Err(format!("topic `{t}` does not exist"));
            }
        }
        Subscription::Regex(r) if found.is_empty() => {
            return Err(format!("no topic matches topics.regex `{r}`"));
        }
        Subscription::Regex(_) => {}
    }
    let reading = crate::source::assign_from(consumer, &found, |low, _| low)?;
    let (mut expected, records) = replay(spec, cfg.clone(), reading)?;
    // The index of a topic with no records left (emptied by retention) holds nothing it should.
    if spec.transforms.routers.is_empty() {
        for (topic, ..) in &found {
            if let Ok(index) = cfg.index_of_topic(topic) {
                expected.entry(index.as_str().into()).or_default();
            }
        }
    }
    let es = Es::new(&cfg)?;
    let mut report = Report {
        records,
        ..Report::default()
    };
    for (index, docs) in expected {
        let r = es.check(&cfg, &index, &docs)?;
        report.indices.insert(index.to_string(), r);
    }
    Ok(report)
}

/// Compares index `b` with index `a` (on the connector's Elasticsearch): documents of `a`
/// missing from `b`, extra in `b`, differing, and at an older version in `b`.
pub fn compare(spec: &ConnectorSpec, a: &str, b: &str) -> Result<Report, String> {
    let cfg = spec
        .sink
        .elasticsearch()
        .ok_or("this command works on Elasticsearch connectors only")?;
    let es = Es::new(cfg)?;
    let mut left: crate::FastMap<String, Expected> = Default::default();
    es.runtime
        .block_on(scan(&es.client, cfg, a, |id, version, source| {
            left.insert(
                id.to_string(),
                Expected {
                    version,
                    doc: Some(canonical_hash(&es.hasher, source)),
                    soft_deleted: false,
                },
            );
        }))?;
    let mut report = Report::default();
    report
        .indices
        .insert(format!("{b} (against {a})"), es.check(cfg, b, &left)?);
    Ok(report)
}

type Model = BTreeMap<Arc<str>, crate::FastMap<String, Expected>>;

/// Reads every topic of the connector from its beginning to its end now, through decoding and
/// mapping, into the expected state of each index.
/// Reads what `consumer` is assigned, each partition up to its end in `ends`, as the
/// connector would map it.
fn replay(
    spec: &ConnectorSpec,
    cfg: Arc<EsConfig>,
    (consumer, mut ends): (rdkafka::consumer::BaseConsumer, crate::source::Ends),
) -> Result<(Model, u64), String> {
    let mut decoder = Decoder::new(spec)?;
    let mapper_soft = cfg.mark_live;
    let mut mapper = Mapper::new(cfg);
    let hasher = foldhash::fast::FixedState::with_seed(0);
    let mut model = Model::new();
    let mut reconciles = Vec::new();
    let mut records = 0u64;
    let mut last_progress = Instant::now();
    while !ends.is_empty() {
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            crate::source::forget_reached(&consumer, &mut ends);
            if last_progress.elapsed() > TIMEOUT * 6 {
                return Err(format!(
                    "no records for a minute; still to read: {:?}",
                    ends.keys()
                ));
            }
            continue;
        };
        let m = msg.map_err(|e| format!("reading the topics: {e}"))?;
        last_progress = Instant::now();
        let (topic, partition, offset) = (m.topic(), m.partition(), m.offset());
        let key_end = (topic.to_string(), partition);
        match ends.get(&key_end) {
            Some(end) if offset < *end => {}
            _ => continue,
        }
        if offset + 1 >= ends[&key_end] {
            ends.remove(&key_end);
        }
        records += 1;
        let at = || format!("topic {topic} partition {partition} offset {offset}");
        let key = decoder
            .key(topic, m.key())
            .map_err(|e| format!("{}: key: {e}", at()))?;
        let value = decoder
            .value(topic, m.payload())
            .map_err(|e| format!("{}: {e}", at()))?;
        let timestamp_ms = m.timestamp().to_millis();
        let routed = spec
            .transforms
            .route(topic, timestamp_ms)
            .map_err(|e| format!("{}: {e}", at()))?;
        let rec = SinkRecord {
            topic: routed.as_deref().unwrap_or(topic),
            kafka_topic: topic,
            partition,
            offset,
            timestamp_ms,
            key: key.as_ref(),
            value: &value,
            received_ms: 0,
        };
        let action = match mapper.map(&rec).map_err(|e| format!("{}: {e}", at()))? {
            Mapped::Write(a) => a,
            Mapped::Skip(_) => continue,
        };
        if let Some(end) = mapper.snapshot_end(&rec, &action) {
            reconciles.push(end);
        }
        let docs = model.entry(action.index.clone()).or_default();
        let doc = match &action.kind {
            ActionKind::Index(d) => {
                let json: Json = serde_json::from_slice(&d.to_vec()).map_err(|e| e.to_string())?;
                Some(canonical_hash(&hasher, &json))
            }
            ActionKind::Delete => None,
        };
        // Elasticsearch's external_gte: an older version never replaces a newer one.
        let older = matches!((docs.get(&action.id), action.version),
            (Some(Expected { version: Some(have), .. }), Some(v)) if v < *have);
        if !older {
            docs.insert(
                action.id,
                Expected {
                    version: action.version,
                    doc,
                    soft_deleted: false,
                },
            );
        }
    }
    // After a snapshot, what it did not write and no later change wrote is gone (or, with soft
    // deletes, marked deleted).
    let soft = mapper_soft;
    for end in reconciles {
        if let Some(docs) = model.get_mut(&end.index) {
            for e in docs.values_mut() {
                if e.doc.is_some() && e.version.is_some_and(|v| removable(v, &end)) {
                    if soft {
                        e.soft_deleted = true;
                    } else {
                        e.doc = None;
                    }
                }
            }
        }
    }
    Ok((model, records))
}

/// Scrolls through `index`, calling `each(id, version, source)` per document.
async fn scan(
    client: &BulkClient,
    cfg: &EsConfig,
    index: &str,
    mut each: impl FnMut(&str, Option<u64>, &Json),
) -> Result<(), String> {
    let wait = cfg.read_timeout * 10;
    let call = |method: Method, path: String, body: Option<Json>| async move {
        let (status, bytes) = client
            .json(method, &path, body.as_ref(), wait)
            .await
            .map_err(|e| e.message)?;
        let v: Json = serde_json::from_slice(&bytes).unwrap_or(Json::Null);
        // A search some shards failed answers only the other shards' hits; a lost scroll, no
        // more: either would leave part of the index unread.
        let failed = v["_shards"]["failed"].as_u64().unwrap_or(0);
        match status {
            200 if failed > 0 => Err(format!(
                "{path}: {failed} of {} shards failed: {}",
                v["_shards"]["total"], v["_shards"]["failures"]
            )),
            200 => Ok(Some(v)),
            404 if path.starts_with("_search/scroll") => Err(format!(
                "the scroll was lost ({path} answered 404: {v}): run verify again"
            )),
            404 => Ok(None),
            s => Err(format!("{path} answered {s}: {v}")),
        }
    };
    if call(Method::POST, format!("{index}/_refresh"), None)
        .await?
        .is_none()
    {
        return Ok(());
    }
    let mut page = call(
        Method::POST,
        format!("{index}/_search?scroll=2m"),
        Some(json!({"size": 1000, "version": true, "sort": ["_doc"], "query": {"match_all": {}}})),
    )
    .await?
    .unwrap_or(Json::Null);
    loop {
        let hits = page["hits"]["hits"].as_array().cloned().unwrap_or_default();
        if hits.is_empty() {
            break;
        }
        for h in &hits {
            each(
                h["_id"].as_str().unwrap_or_default(),
                h["_version"].as_u64(),
                &h["_source"],
            );
        }
        let id = page["_scroll_id"].clone();
        page = call(
            Method::POST,
            "_search/scroll".into(),
            Some(json!({"scroll": "2m", "scroll_id": id})),
        )
        .await?
        .unwrap_or(Json::Null);
    }
    if let Some(id) = page["_scroll_id"].as_str() {
        let _ = call(
            Method::DELETE,
            "_search/scroll".into(),
            Some(json!({"scroll_id": id})),
        )
        .await;
    }
    Ok(())
}

/// A hash of a JSON value that does not depend on the order of object keys.
fn canonical_hash(state: &impl BuildHasher, v: &Json) -> u64 {
    fn feed(h: &mut impl Hasher, v: &Json) {
        match v {
            Json::Null => h.write_u8(0),
            Json::Bool(b) => {
                h.write_u8(1);
                h.write_u8(u8::from(*b));
            }
            Json::Number(n) => {
                h.write_u8(2);
                h.write(n.to_string().as_bytes());
            }
            Json::String(s) => {
                h.write_u8(3);
                h.write(s.as_bytes());
                h.write_u8(0xff);
            }
            Json::Array(a) => {
                h.write_u8(4);
                h.write_usize(a.len());
                a.iter().for_each(|x| feed(h, x));
            }
            Json::Object(o) => {
                h.write_u8(5);
                h.write_usize(o.len());
                let mut keys: Vec<&String> = o.keys().collect();
                keys.sort();
                for k in keys {
                    h.write(k.as_bytes());
                    h.write_u8(0xff);
                    feed(h, &o[k]);
                }
            }
        }
    }
    let mut h = state.build_hasher();
    feed(&mut h, v);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_of_a_document_ignores_key_order_and_sees_values() {
        let s = foldhash::fast::FixedState::with_seed(0);
        let a: Json = serde_json::from_str(r#"{"a":1,"b":{"x":[1,"2"],"y":null}}"#).unwrap();
        let b: Json = serde_json::from_str(r#"{"b":{"y":null,"x":[1,"2"]},"a":1}"#).unwrap();
        let c: Json = serde_json::from_str(r#"{"a":1,"b":{"x":[1,"3"],"y":null}}"#).unwrap();
        assert_eq!(canonical_hash(&s, &a), canonical_hash(&s, &b));
        assert_ne!(canonical_hash(&s, &a), canonical_hash(&s, &c));
    }

    #[test]
    fn a_report_drifts_on_any_difference() {
        let mut r = IndexReport::default();
        assert!(!r.drift());
        r.note("stale", "7");
        assert!(r.drift());
        assert_eq!(r.examples["stale"], vec!["7".to_string()]);
    }
}
