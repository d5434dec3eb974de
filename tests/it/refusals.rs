//! What Elasticsearch refuses, on the real server: a write-blocked index is waited for (never
//! acknowledged), while a malformed document is skipped only because the connector says so; a
//! worker stopped while Elasticsearch is unreachable waits `flush.timeout.ms` once; a partition
//! whose writes are all stale is warned about.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::kafka::{self, Rec};
use crate::support::proxy::{Faults, Proxy};
use crate::support::{es, servers, start_es_worker, unique, wait_converged};

fn record(id: i64, name: Value, pos: u64) -> Rec {
    let source = json!({"connector": "mysql", "name": "it", "ts_ms": 1_700_000_000_000i64, "db": "d",
        "table": "t", "file": "mysql-bin.000001", "pos": pos, "row": 0});
    Rec {
        partition: 0,
        key: Some(json!({"id": id}).to_string()),
        value: Some(
            json!({"before": null, "after": {"id": id, "name": name}, "source": source, "op": "c"})
                .to_string(),
        ),
    }
}

/// Rows 0..`n`, each `{"id": i, "name": i}` at position 100 + i.
fn rows(n: i64) -> Vec<Rec> {
    (0..n)
        .map(|i| record(i, json!(i), 100 + i as u64))
        .collect()
}

/// A new one-partition topic, and a proxy in front of Elasticsearch.
fn topic_behind_proxy(prefix: &str) -> (String, Proxy) {
    let topic = unique(prefix);
    kafka::create_topic(&topic, 1);
    (topic, Proxy::start(&servers().es))
}

fn es_request(method: reqwest::Method, path: &str, body: Value) -> Value {
    // The servers first: they set up TLS for the tests' clients.
    let url = format!("{}/{path}", servers().es);
    let c = reqwest::blocking::Client::new();
    let r = c.request(method, url).json(&body).send().unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().unwrap()
}

#[test]
fn a_write_blocked_index_is_waited_for_and_only_malformed_documents_are_skipped() {
    let topic = unique("it-refused");
    kafka::create_topic(&topic, 1);
    // `name` is an integer in the index: a text name is a malformed document.
    es_request(
        reqwest::Method::PUT,
        &topic,
        json!({"settings": {"index.blocks.write": true},
               "mappings": {"properties": {"id": {"type": "long"}, "name": {"type": "integer"}}}}),
    );
    let mut recs = rows(10);
    recs[4] = record(4, json!("not a number"), 104);
    kafka::produce(&topic, &recs);
    let (mut w, group) = start_es_worker(
        "it-refused",
        &topic,
        &servers().es,
        &[
            ("behavior.on.malformed.documents", "warn"),
            ("retry.backoff.ms", "50"),
            ("max.retry.backoff.ms", "500"),
            // A write block (a rebuild's lasts until its alias moves) is not counted against it.
            ("max.retries", "1"),
        ],
    );
    // Blocked: retried, never acknowledged, whatever behavior.on.malformed.documents says.
    w.wait_log("cluster_block_exception", Duration::from_secs(60));
    thread::sleep(Duration::from_secs(3));
    assert_eq!(
        kafka::committed(&group, &topic, 1),
        BTreeMap::new(),
        "writes refused by a blocked index were acknowledged"
    );
    es_request(
        reqwest::Method::PUT,
        &format!("{topic}/_settings"),
        json!({"index.blocks.write": false}),
    );
    // Unblocked: everything is written but the malformed document, which is skipped.
    let expected: BTreeMap<String, Value> = (0..10)
        .filter(|i| *i != 4)
        .map(|i| (i.to_string(), json!({"id": i, "name": i})))
        .collect();
    wait_converged(&topic, &expected, &group, 1, Duration::from_secs(60));
    let line = w.wait_log(
        "skipped: behavior.on.malformed.documents",
        Duration::from_secs(5),
    );
    assert!(
        line.contains("document `4`") && line.contains("offset 4"),
        "{line}"
    );
    assert!(w.stop().success());
}

/// `behavior.on.malformed.documents=ignore` skips a malformed document at debug level, but
/// `errors.log.enable=true` logs it at ERROR level, as every record the task drops: with error
/// logging on, nothing is skipped without a line naming where it is.
#[test]
fn a_document_skipped_under_ignore_is_logged_when_errors_are_logged() {
    let topic = unique("it-ignored");
    kafka::create_topic(&topic, 1);
    es_request(
        reqwest::Method::PUT,
        &topic,
        json!({"mappings": {"properties": {"id": {"type": "long"}, "name": {"type": "integer"}}}}),
    );
    let mut recs = rows(5);
    recs[2] = record(2, json!("not a number"), 102);
    kafka::produce(&topic, &recs);
    let (mut w, group) = start_es_worker(
        "it-ignored",
        &topic,
        &servers().es,
        &[
            ("behavior.on.malformed.documents", "ignore"),
            ("errors.log.enable", "true"),
        ],
    );
    let expected: BTreeMap<String, Value> = [0, 1, 3, 4]
        .into_iter()
        .map(|i| (i.to_string(), json!({"id": i, "name": i})))
        .collect();
    wait_converged(&topic, &expected, &group, 1, Duration::from_secs(60));
    let line = w.wait_log("error tolerated (dropped)", Duration::from_secs(5));
    assert!(
        line.contains("offset=2") && line.contains("document `2`"),
        "{line}"
    );
    assert!(w.stop().success());
}

/// A task fails at a document Elasticsearch refuses, with everything before it written and
/// committed: acknowledgements the sink took in the same poll as the refusal, of writes done
/// before it, are handed out by the next poll (the one the failing task's drain makes), not
/// dropped with the failure.
#[test]
fn writes_done_before_a_refused_document_are_acknowledged_after_the_failure() {
    use std::collections::BTreeSet;

    use cdc_sink::decode::Decoder;
    use cdc_sink::sink::{Sink as _, SinkError};

    use crate::support::sink::{self as direct, ack};
    let (index, proxy) = topic_behind_proxy("it-refused-acks");
    // `name` is an integer in the index: a text name is refused. The request holding it is
    // answered a second after the other.
    es_request(
        reqwest::Method::PUT,
        &index,
        json!({"mappings": {"properties": {"id": {"type": "long"}, "name": {"type": "integer"}}}}),
    );
    proxy.set_faults(Faults {
        slow_when: Some("not a number"),
        slow_ms: 1000,
        ..Faults::default()
    });
    // Two lanes: documents 0-19 spread over both, and document 20 in one of them.
    let spec = direct::spec(
        &index,
        json!({"connector.class": "elasticsearch", "connection.url": proxy.url, "topics": index,
            "version.source": "none", "max.in.flight.requests": "2"}),
    );
    let (mut sink, _rt) = direct::elasticsearch(&spec);
    let mut decoder = Decoder::new(&spec).unwrap();
    for offset in 0..=20 {
        let name = if offset == 20 {
            json!("not a number")
        } else {
            json!(offset)
        };
        let (key, value) = direct::created(&mut decoder, &index, offset, name);
        sink.put(direct::record(&index, offset, &key, &value), ack(offset))
            .unwrap();
    }
    // Sent (a poll sends what is due), and not polled for again until both are answered.
    sink.flush();
    let mut acks = sink.poll(Duration::ZERO).unwrap();
    let answered = || proxy.stats().answered.load(Ordering::SeqCst);
    crate::support::wait_until(Duration::from_secs(60), "both requests answered", || {
        (answered() >= 2).then_some(())
    });
    // Time for the sink's runtime to read the last answer, so that the next poll takes both:
    // the case this test is for.
    thread::sleep(Duration::from_secs(2));
    let Err(failure) = sink.poll(Duration::ZERO) else {
        panic!("the refusal was not read within 2 s of its answer: the case was not reached")
    };
    assert!(
        matches!(&failure, SinkError::Record(why) if why.contains("document `20`")),
        "{failure:?}"
    );
    acks.extend(
        sink.poll(Duration::ZERO)
            .expect("the acks taken with the failure"),
    );
    // The lane without document 20 wrote its documents, and each is acknowledged once; the
    // other lane's request failed as a whole, and none of its documents is.
    let acked: BTreeSet<i64> = acks.iter().map(|a| a.offset).collect();
    assert_eq!(acked.len(), acks.len(), "acknowledged twice: {acks:?}");
    assert!(
        !acked.is_empty() && acked.iter().all(|o| *o < 20),
        "acknowledged: {acked:?}"
    );
    let written = es::sources(&index);
    for o in &acked {
        assert!(
            written.contains_key(&o.to_string()),
            "{o} acknowledged, not written"
        );
    }
}

/// After a refusal, the sink's later polls (those of the failing task's drain) go on handing
/// out the acks of the writes that succeed: a second refused write is logged, not returned,
/// or the drain would stop there, and the task commit short of what was written.
#[test]
fn after_a_refusal_later_refusals_are_logged_and_later_writes_acknowledged() {
    use cdc_sink::decode::Decoder;
    use cdc_sink::sink::Sink as _;

    use crate::support::sink::{self as direct, ack};
    let index = unique("it-refused-twice");
    es_request(
        reqwest::Method::PUT,
        &index,
        json!({"mappings": {"properties": {"id": {"type": "long"}, "name": {"type": "integer"}}}}),
    );
    // One lane, one document a request: offsets 0 and 1 refused, then 2 written, in turn.
    let spec = direct::spec(
        &index,
        json!({"connector.class": "elasticsearch", "connection.url": servers().es,
            "topics": index, "version.source": "none", "max.in.flight.requests": "1",
            "batch.size": "1"}),
    );
    let (mut sink, _rt) = direct::elasticsearch(&spec);
    let mut decoder = Decoder::new(&spec).unwrap();
    for (offset, name) in [(0, json!("no")), (1, json!("nor this")), (2, json!(2))] {
        let (key, value) = direct::created(&mut decoder, &index, offset, name);
        sink.put(direct::record(&index, offset, &key, &value), ack(offset))
            .unwrap();
    }
    sink.flush();
    let start = Instant::now();
    let mut poll = || {
        assert!(start.elapsed() < Duration::from_secs(60), "timed out");
        sink.poll(Duration::from_millis(100))
    };
    loop {
        match poll() {
            Ok(acks) => assert_eq!(acks, vec![], "a refused write acknowledged"),
            Err(e) => {
                assert!(format!("{e:?}").contains("document `0`"), "{e:?}");
                break;
            }
        }
    }
    let mut acks = Vec::new();
    while acks.is_empty() {
        acks = poll().expect("a second failure returned");
    }
    assert_eq!(acks, vec![ack(2)]);
    assert!(es::sources(&index).contains_key("2"));
}

#[test]
fn stopping_while_elasticsearch_is_unreachable_waits_the_flush_timeout_once() {
    let (topic, proxy) = topic_behind_proxy("it-stop-down");
    proxy.refuse();
    kafka::produce(&topic, &rows(20));
    let (mut w, group) = start_es_worker(
        "it-stop-down",
        &topic,
        &proxy.url,
        &[
            ("flush.timeout.ms", "8000"),
            ("max.retry.backoff.ms", "500"),
        ],
    );
    w.wait_log("Elasticsearch unreachable", Duration::from_secs(60));
    let start = Instant::now();
    let status = w.stop();
    let took = start.elapsed();
    assert!(status.success(), "{status}");
    // One wait of flush.timeout.ms (8 s), not one more when the consumer closes.
    assert!(
        took >= Duration::from_secs(7) && took < Duration::from_secs(14),
        "stopping took {took:?}"
    );
    assert_eq!(kafka::committed(&group, &topic, 1), BTreeMap::new());
}

/// A second SIGTERM while the first one's drain waits for an unreachable Elasticsearch exits at
/// once (143), committing nothing past the unwritten records.
/// How worker `w` exits, which it must within 10 s (after a second SIGTERM).
fn exit_within_10_s(w: &mut crate::support::worker::Worker) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = w.exited() {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still running after a second SIGTERM:\n{}",
            w.log_text()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_second_sigterm_exits_at_once() {
    let (topic, proxy) = topic_behind_proxy("it-stop-twice");
    proxy.refuse();
    kafka::produce(&topic, &rows(20));
    let (mut w, group) = start_es_worker(
        "it-stop-twice",
        &topic,
        &proxy.url,
        &[
            ("flush.timeout.ms", "60000"),
            ("max.retry.backoff.ms", "500"),
        ],
    );
    w.wait_log("Elasticsearch unreachable", Duration::from_secs(60));
    let pid = w.pid() as i32;
    let term = || unsafe { libc::kill(pid, libc::SIGTERM) };
    term();
    w.wait_log("shutting down", Duration::from_secs(10));
    thread::sleep(Duration::from_millis(500));
    assert!(
        w.exited().is_none(),
        "the first SIGTERM did not wait for the drain"
    );
    term();
    let status = exit_within_10_s(&mut w);
    assert_eq!(status.code(), Some(143), "{status}");
    assert_eq!(kafka::committed(&group, &topic, 1), BTreeMap::new());
}

/// A signal while the worker starts (here a distributed worker waiting for a Kafka that does
/// not answer, to make its cluster's topics) is taken, logged, and stops the worker once it has
/// started; a second one exits at once. Before, signals were handled only once the worker had
/// started, and a SIGTERM during the start ended the process by its default action.
#[test]
fn a_signal_while_the_worker_starts_is_taken_and_a_second_exits_at_once() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .to_string();
    let rest = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let group = unique("it-start-signal");
    let mut w = crate::support::worker::Worker::start_with(
        &[],
        &[
            ("CDC_SINK_WORKER__MODE", "distributed"),
            ("CDC_SINK_WORKER__GROUP", &group),
            ("CDC_SINK_KAFKA__BOOTSTRAP_SERVERS", &closed),
            ("CDC_SINK_REST__LISTEN", &rest.to_string()),
        ],
    );
    // Its REST port is bound (the signals are handled from before that) while it waits for
    // Kafka, up to 30 s.
    crate::support::wait_until(Duration::from_secs(30), "the REST port bound", || {
        assert!(w.exited().is_none(), "exited:\n{}", w.log_text());
        std::net::TcpStream::connect(rest).ok()
    });
    let pid = w.pid() as i32;
    let term = || unsafe { libc::kill(pid, libc::SIGTERM) };
    term();
    w.wait_log("a signal while the worker starts", Duration::from_secs(10));
    assert!(
        !w.log_text().contains("REST API listening"),
        "the worker had started:\n{}",
        w.log_text()
    );
    term();
    let status = exit_within_10_s(&mut w);
    assert_eq!(status.code(), Some(143), "{status}\n{}", w.log_text());
}

#[test]
fn a_partition_whose_writes_stay_stale_is_warned_about() {
    let topic = unique("it-stale");
    kafka::create_topic(&topic, 1);
    // 3 000 rows at high positions; then changes of them at lower positions, as after a binlog
    // reset.
    const N: i64 = 3_000;
    let high: Vec<Rec> = (0..N)
        .map(|i| record(i, json!(i), 1_000_000 + i as u64))
        .collect();
    kafka::produce(&topic, &high);
    let (mut w, _) = start_es_worker("it-stale", &topic, &servers().es, &[]);
    let start = Instant::now();
    while es::sources(&topic).len() < N as usize {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "rows not indexed"
        );
        thread::sleep(Duration::from_millis(300));
    }
    let low: Vec<Rec> = (0..N)
        .map(|i| record(i, json!(-i), 1_000 + i as u64))
        .collect();
    kafka::produce(&topic, &low);
    let line = w.wait_log("writes were stale", Duration::from_secs(60));
    assert!(
        line.contains(&format!("topic {topic} partition 0:")) && line.contains("docs/versions.md"),
        "{line}"
    );
    assert!(w.stop().success());
}

#[test]
fn a_bulk_answer_without_items_acknowledges_nothing() {
    let (topic, proxy) = topic_behind_proxy("it-no-items");
    // Every bulk answered `200 {"took":1,"errors":false}`, not forwarded.
    proxy.set_faults(Faults {
        empty_200: 100,
        ..Faults::default()
    });
    kafka::produce(&topic, &rows(20));
    let (mut w, group) = start_es_worker(
        "it-no-items",
        &topic,
        &proxy.url,
        &[("retry.backoff.ms", "50"), ("max.retry.backoff.ms", "500")],
    );
    let start = Instant::now();
    while proxy.stats().failed_requests.load(Ordering::Relaxed) == 0 {
        assert!(start.elapsed() < Duration::from_secs(60), "no bulk request");
        thread::sleep(Duration::from_millis(100));
    }
    // Past the next periodic commit (500 ms).
    thread::sleep(Duration::from_secs(2));
    assert_eq!(
        kafka::committed(&group, &topic, 1),
        BTreeMap::new(),
        "a response without items was taken for a write"
    );
    w.wait_log("bulk response without `items`", Duration::from_secs(5));
    proxy.set_faults(Faults::default());
    let expected: BTreeMap<String, Value> = (0..20)
        .map(|i| (i.to_string(), json!({"id": i, "name": i})))
        .collect();
    wait_converged(&topic, &expected, &group, 1, Duration::from_secs(60));
    assert!(w.stop().success());
}

/// Writes five rows to `topic` (whose index `setup` has made refuse them) under
/// `behavior.on.malformed.documents=ignore`: the task fails with Elasticsearch's reason, which
/// holds `reason`, and commits nothing.
fn refused_whatever_malformed_says(prefix: &str, topic: &str, reason: &str) {
    kafka::produce(topic, &rows(5));
    let (mut w, group) = start_es_worker(
        prefix,
        topic,
        &servers().es,
        &[("behavior.on.malformed.documents", "ignore")],
    );
    let line = w.wait_log("task failed", Duration::from_secs(60));
    assert!(line.contains(reason), "{line}");
    assert_eq!(
        kafka::committed(&group, topic, 1),
        BTreeMap::new(),
        "writes refused for their target were acknowledged"
    );
    assert!(!w.stop().success());
}

#[test]
fn a_missing_index_fails_the_task_whatever_behavior_on_malformed_documents_says() {
    // Elasticsearch creates indices on first write, except these.
    es_request(
        reqwest::Method::PUT,
        "_cluster/settings",
        json!({"persistent": {"action.auto_create_index": "-it-noindex-*,+*"}}),
    );
    let topic = unique("it-noindex");
    kafka::create_topic(&topic, 1);
    refused_whatever_malformed_says("it-noindex", &topic, "index_not_found_exception");
}

#[test]
fn an_alias_without_a_write_index_fails_the_task_whatever_behavior_on_malformed_documents_says() {
    // The topic's index name is an alias over two indices, neither its write index: every
    // write is refused 400 illegal_argument_exception, a type that otherwise marks a malformed
    // document, which `ignore` would skip and commit past.
    let topic = unique("it-alias");
    kafka::create_topic(&topic, 1);
    for half in ["a", "b"] {
        es_request(
            reqwest::Method::PUT,
            &format!("{topic}-{half}"),
            json!({"aliases": {&topic: {}}}),
        );
    }
    refused_whatever_malformed_says("it-alias", &topic, "no write index is defined for alias");
}

#[test]
fn a_missing_ingest_pipeline_fails_the_task_whatever_behavior_on_malformed_documents_says() {
    // The index names a default ingest pipeline that does not exist: every write is refused 400
    // illegal_argument_exception, a type that otherwise marks a malformed document, which
    // `ignore` would skip and commit past, the whole stream missing from the index once the
    // pipeline is mended.
    let topic = unique("it-nopipeline");
    kafka::create_topic(&topic, 1);
    es_request(
        reqwest::Method::PUT,
        &topic,
        json!({"settings": {"index.default_pipeline": unique("it-no-such-pipeline")}}),
    );
    refused_whatever_malformed_says("it-nopipeline", &topic, "pipeline with id [");
}
