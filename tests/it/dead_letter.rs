//! The dead-letter queue: a record that cannot be decoded, or that Elasticsearch rejects as
//! malformed, is copied to the queue unchanged with Kafka Connect's context headers, and the
//! stream goes on; its offset is committed only once the copy is acknowledged.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use crate::support::kafka::{self, Full, Rec};
use crate::support::rest::{self, metric};
use crate::support::worker::{Worker, connector_file};
use crate::support::{assert_failed_at_offset_5, es, es_connector, servers, unique, wait_until};

fn good(id: i64, extra: Option<&str>) -> Full {
    change(id, id, extra)
}

/// A create of document `id` at `offset`, with a field `extra` when given.
fn change(offset: i64, id: i64, extra: Option<&str>) -> Full {
    let mut after = json!({"id": id, "name": format!("n{id}")});
    if let Some(e) = extra {
        after[e] = json!("not in the mapping");
    }
    Full {
        offset,
        key: Some(json!({"id": id}).to_string().into_bytes()),
        value: Some(
            json!({"before": null, "after": after, "op": "c",
                "source": {"connector": "postgresql", "lsn": 1000 + offset, "db": "d", "schema": "s", "table": "t"}})
            .to_string()
            .into_bytes(),
        ),
        headers: vec![("trace-id".into(), Some(format!("t{id}").into_bytes()))],
        timestamp: Some(1_700_000_000_000 + id),
    }
}

/// A value that is not JSON, with a header, a null-valued header and a header whose key is
/// not UTF-8 (Kafka's keys are bytes) of its own.
fn poison(id: i64) -> Full {
    Full {
        value: Some(br#"{"op":"c","after":{"id":"#.to_vec()),
        headers: vec![
            ("trace-id".into(), Some(b"poison".to_vec())),
            ("empty".into(), None),
            (b"\xffbin".to_vec(), Some(b"\x00\x01".to_vec())),
        ],
        ..good(id, None)
    }
}

fn produce(topic: &str, recs: &[Full]) {
    for r in recs {
        kafka::produce_full(topic, r);
    }
}

fn header<'a>(r: &'a Full, key: &str) -> &'a str {
    let v = r
        .headers
        .iter()
        .find(|(k, _)| k == key.as_bytes())
        .and_then(|(_, v)| v.as_deref())
        .unwrap_or_else(|| panic!("no header {key} in {:?}", r.headers));
    std::str::from_utf8(v).unwrap()
}

/// Asserts that `copy` is `original` unchanged, its own headers first, then the context.
fn assert_copy(copy: &Full, original: &Full, topic: &str, connector: &str) {
    assert_eq!(copy.key, original.key);
    assert_eq!(copy.value, original.value);
    assert_eq!(copy.timestamp, original.timestamp);
    assert_eq!(
        copy.headers[..original.headers.len()],
        original.headers[..],
        "the record's own headers come first, unchanged"
    );
    let names: Vec<&str> = copy.headers[original.headers.len()..]
        .iter()
        .map(|(k, _)| std::str::from_utf8(k).unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "__connect.errors.topic",
            "__connect.errors.partition",
            "__connect.errors.offset",
            "__connect.errors.connector.name",
            "__connect.errors.task.id",
            "__connect.errors.stage",
            "__connect.errors.class.name",
            "__connect.errors.exception.class.name",
            "__connect.errors.exception.message",
            "__connect.errors.exception.stacktrace",
        ]
    );
    assert_eq!(header(copy, "__connect.errors.topic"), topic);
    assert_eq!(header(copy, "__connect.errors.partition"), "0");
    assert_eq!(
        header(copy, "__connect.errors.offset"),
        original.offset.to_string()
    );
    assert_eq!(header(copy, "__connect.errors.connector.name"), connector);
    assert_eq!(header(copy, "__connect.errors.task.id"), "0");
    assert!(
        header(copy, "__connect.errors.exception.message")
            .contains(&format!("offset {}", original.offset)),
        "{copy:?}"
    );
}

/// A topic holding 3 changes, a record that is not JSON at offset 3, then 4 changes; and its
/// dead-letter queue's topic, which refuses records over 64 bytes (MESSAGE_TOO_LARGE) until its
/// limit is raised: every copy fails, and is sent again. (topic, queue, records)
fn refusing_queue(prefix: &str) -> (String, String, Vec<Full>) {
    let (topic, dlq) = refusing_topics(prefix, 1);
    let mut recs: Vec<Full> = (0..3).map(|id| good(id, None)).collect();
    recs.push(poison(3));
    recs.extend((4..8).map(|id| good(id, None)));
    produce(&topic, &recs);
    (topic, dlq, recs)
}

/// A topic of `partitions` partitions and its dead-letter queue's topic, which refuses every
/// copy (records over 64 bytes: MESSAGE_TOO_LARGE). (topic, queue)
fn refusing_topics(prefix: &str, partitions: i32) -> (String, String) {
    let topic = unique(prefix);
    let dlq = format!("{topic}-dlq");
    kafka::create_topic(&topic, partitions);
    kafka::create_topic_with(&dlq, &[("max.message.bytes", "64")]);
    (topic, dlq)
}

/// An Elasticsearch connector of `topic` tolerating every bad record, copied to `dlq` (made
/// with one replica when missing), with `extra` options.
fn queue_connector(topic: &str, dlq: &str, extra: &[(&str, &str)]) -> serde_json::Value {
    let mut options = vec![
        ("errors.tolerance", "all"),
        ("errors.deadletterqueue.topic.name", dlq),
        ("errors.deadletterqueue.topic.replication.factor", "1"),
    ];
    options.extend_from_slice(extra);
    es_connector(topic, &servers().es, &options)
}

/// A started worker running one connector: (worker, connector name, REST URL, group).
fn run(prefix: &str, config: &serde_json::Value) -> (Worker, String, String, String) {
    let name = unique(prefix);
    let mut w = Worker::start(&connector_file(&name, config));
    let url = w.rest_url();
    let group = format!("connect-{name}");
    (w, name, url, group)
}

/// Waits until `group` has committed offset `offset` of partition 0 of `topic`.
fn wait_committed(group: &str, topic: &str, offset: i64) {
    wait_until(Duration::from_secs(120), "the offset committed", || {
        (kafka::committed(group, topic, 1) == BTreeMap::from([(0, offset)])).then_some(())
    });
}

/// Waits until task 0 of `name` says it waits for the dead-letter queue `dlq`.
fn wait_queue_trouble(url: &str, name: &str, dlq: &str) -> serde_json::Value {
    rest::wait_for(
        url,
        &format!("/connectors/{name}/status"),
        Duration::from_secs(60),
        |s| {
            s["tasks"][0]["trouble"]
                .as_str()
                .is_some_and(|t| t.contains(&format!("dead-letter queue topic {dlq}")))
        },
    )
}

#[test]
fn a_poison_record_and_a_rejected_document_go_to_the_queue_unchanged_and_the_stream_goes_on() {
    let topic = unique("it-dlq");
    let dlq = format!("{topic}-dlq");
    kafka::create_topic(&topic, 1);
    // The index refuses fields it does not know: the document with `extra` is malformed.
    es::create_index(
        &topic,
        &json!({"mappings": {"dynamic": "strict", "properties": {
            "id": {"type": "long"}, "name": {"type": "keyword"}}}}),
    );
    let mut recs: Vec<Full> = (0..5).map(|id| good(id, None)).collect();
    recs.push(poison(5));
    recs.extend((6..10).map(|id| good(id, None)));
    // A newer change of document 9 that the mapping refuses, likely in the same batch as the
    // one before it: that one must still be written.
    recs.push(change(10, 9, Some("extra")));
    recs.push(good(11, None));
    produce(&topic, &recs);

    let config = queue_connector(
        &topic,
        &dlq,
        &[
            ("errors.deadletterqueue.context.headers.enable", "true"),
            ("errors.log.enable", "true"),
            // The log shows the poison record's headers too, its byte key among them.
            ("errors.log.include.messages", "true"),
            ("behavior.on.malformed.documents", "warn"),
        ],
    );
    let (w, name, url, group) = run("it-dlq", &config);
    wait_committed(&group, &topic, 12);
    let docs = es::sources(&topic);
    let ids: Vec<&String> = docs.keys().collect();
    let mut expected: Vec<String> = [0, 1, 2, 3, 4, 6, 7, 8, 9, 11]
        .iter()
        .map(i64::to_string)
        .collect();
    expected.sort();
    assert_eq!(ids, expected.iter().collect::<Vec<_>>());
    assert_eq!(docs["9"], json!({"id": 9, "name": "n9"}));

    let copies = kafka::read_full(&dlq);
    assert_eq!(copies.len(), 2, "{copies:?}");
    let (decode, rejected) = (&copies[0], &copies[1]);
    assert_copy(decode, &recs[5], &topic, &name);
    assert_eq!(header(decode, "__connect.errors.stage"), "VALUE_CONVERTER");
    assert_eq!(
        header(decode, "__connect.errors.class.name"),
        "org.apache.kafka.connect.json.JsonConverter"
    );
    assert_eq!(
        header(decode, "__connect.errors.exception.class.name"),
        "org.apache.kafka.connect.errors.DataException"
    );
    assert!(header(decode, "__connect.errors.exception.message").contains("not valid JSON"));
    assert_copy(rejected, &recs[10], &topic, &name);
    assert_eq!(header(rejected, "__connect.errors.stage"), "TASK_PUT");
    assert_eq!(
        header(rejected, "__connect.errors.class.name"),
        "org.apache.kafka.connect.sink.SinkTask"
    );
    assert!(
        header(rejected, "__connect.errors.exception.message")
            .contains("strict_dynamic_mapping_exception"),
        "{rejected:?}"
    );

    let text = rest::metrics(&url);
    let c = ("connector", name.as_str());
    assert_eq!(
        metric(&text, "cdc_sink_records_dead_lettered_total", &[c]),
        Some(2.0)
    );
    for stage in ["VALUE_CONVERTER", "TASK_PUT"] {
        assert_eq!(
            metric(
                &text,
                "cdc_sink_records_failed_total",
                &[c, ("stage", stage)]
            ),
            Some(1.0),
            "{stage}"
        );
    }
    let log = w.log_text();
    assert!(
        log.contains("error tolerated (sent to the dead-letter queue)") && log.contains("offset=5"),
        "errors.log.enable logs each"
    );
    assert!(w.stop().success());
}

/// A record above librdkafka's own default limit (1 000 000 bytes), which Kafka's topics take
/// by default, is copied to the queue like any other.
#[test]
fn a_record_above_librdkafkas_default_size_is_copied_too() {
    let topic = unique("it-dlq-big");
    let dlq = format!("{topic}-dlq");
    kafka::create_topic(&topic, 1);
    let big = Full {
        value: Some(vec![b'x'; 1_020_000]),
        ..good(0, None)
    };
    produce(&topic, &[big.clone(), change(1, 1, None)]);
    let config = queue_connector(&topic, &dlq, &[]);
    let (w, _, _, group) = run("dlq-big", &config);
    wait_committed(&group, &topic, 2);
    let copies = kafka::read_full(&dlq);
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0].value, big.value);
    assert_eq!(copies[0].key, big.key);
    assert!(w.stop().success());
}

#[test]
fn with_errors_tolerance_none_the_task_fails_and_nothing_is_copied() {
    let topic = unique("it-dlq-none");
    let dlq = format!("{topic}-dlq");
    kafka::create_topic(&topic, 1);
    let mut recs: Vec<Full> = (0..5).map(|id| good(id, None)).collect();
    recs.push(poison(5));
    recs.extend((6..8).map(|id| good(id, None)));
    produce(&topic, &recs);
    let name = unique("it-dlq-none");
    let config = es_connector(
        &topic,
        &servers().es,
        &[
            ("errors.deadletterqueue.topic.name", &dlq),
            ("errors.deadletterqueue.topic.replication.factor", "1"),
        ],
    );
    let mut w = Worker::start(&connector_file(&name, &config));
    assert_failed_at_offset_5(&mut w, &topic, &format!("connect-{name}"));
    assert!(
        kafka::try_end_offsets(&dlq, 1).map_or(true, |e| e[&0] == 0),
        "nothing copied"
    );
    assert!(!w.stop().success());
}

#[test]
fn while_the_queue_refuses_writes_the_offset_waits_at_the_failed_record() {
    let (topic, dlq, recs) = refusing_queue("it-dlq-down");
    let config = queue_connector(&topic, &dlq, &[]);
    let (w, name, url, group) = run("it-dlq-down", &config);
    // The records after it are written, and the task says what it waits for...
    wait_until(
        Duration::from_secs(60),
        "documents after the poison",
        || (es::sources(&topic).len() == 7).then_some(()),
    );
    let status = wait_queue_trouble(&url, &name, &dlq);
    assert_eq!(status["tasks"][0]["state"], json!("RUNNING"));
    // ...but the committed offset goes up to the record whose copy is not written, and stays.
    wait_committed(&group, &topic, 3);
    wait_queue_trouble(&url, &name, &dlq);
    assert_eq!(
        kafka::committed(&group, &topic, 1),
        BTreeMap::from([(0, 3)]),
        "{}",
        w.log_text()
    );
    assert_eq!(kafka::end_offsets(&dlq, 1)[&0], 0);

    kafka::set_topic_config(&dlq, "max.message.bytes", "1048588");
    wait_committed(&group, &topic, 8);
    let copies = kafka::read_full(&dlq);
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(copies[0].value, recs[3].value);

    assert!(w.stop().success());
}

/// A task stopped while its one unfinished record is a copy the queue refuses waits
/// `flush.timeout.ms` for it without spinning: it waits on the queue's producer, not in a loop.
#[test]
fn stopping_while_the_queue_refuses_waits_without_spinning() {
    let (topic, dlq, _) = refusing_queue("it-dlq-stop");
    let config = queue_connector(&topic, &dlq, &[("flush.timeout.ms", "4000")]);
    let (mut w, name, url, group) = run("it-dlq-stop", &config);
    wait_committed(&group, &topic, 3);
    wait_queue_trouble(&url, &name, &dlq);
    let (cpu, start) = (w.cpu_seconds(), std::time::Instant::now());
    assert_eq!(
        rest::call(&url, "PUT", &format!("/connectors/{name}/stop"), None).0,
        204
    );
    // Answered at once; the task ends once it has waited for the copy.
    w.wait_log("connector stopped", Duration::from_secs(60));
    let (busy, waited) = (w.cpu_seconds() - cpu, start.elapsed());
    eprintln!("the worker spent {busy:.2} CPU-seconds in {waited:?} waiting for the copy");
    assert!(
        waited >= Duration::from_secs(3),
        "the stop did not wait for the copy: {waited:?}"
    );
    assert!(
        busy < 1.0,
        "the worker spent {busy:.2} CPU-seconds in {waited:?} waiting for the copy"
    );
    assert_eq!(
        kafka::committed(&group, &topic, 1),
        BTreeMap::from([(0, 3)])
    );
    assert!(w.stop().success());
}

/// The rows a `read_committed` reader of `topic` (1 partition) sees now: read until 2 s pass
/// without one.
fn visible_rows(topic: &str) -> Vec<serde_json::Value> {
    use rdkafka::Message as _;
    let c = kafka::read_committed_consumer(topic, 1);
    let mut rows = Vec::new();
    let mut quiet = std::time::Instant::now();
    while quiet.elapsed() < Duration::from_secs(2) {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            rows.push(serde_json::from_slice(m.payload().unwrap_or_default()).unwrap());
            quiet = std::time::Instant::now();
        }
    }
    rows
}

#[test]
fn a_druid_transaction_waits_for_the_dead_letter_copies_before_it() {
    let (topic, dlq, recs) = refusing_queue("it-dlq-druid");
    let out = format!("druid.{topic}");
    kafka::create_topic(&out, 1);
    let config = json!({"connector.class": "druid", "topics": topic,
        "errors.tolerance": "all", "errors.deadletterqueue.topic.name": dlq});
    let (w, name, url, group) = run("it-dlq-druid", &config);
    wait_queue_trouble(&url, &name, &dlq);
    // Several transaction.max.ms later: whatever rows are visible belong to records below the
    // committed offset, which stays at the record whose copy is not written.
    for _ in 0..3 {
        let committed = kafka::committed(&group, &topic, 1)
            .get(&0)
            .copied()
            .unwrap_or(0);
        let rows = visible_rows(&out);
        assert!(committed <= 3, "committed {committed}");
        assert!(
            rows.len() as i64 <= committed,
            "{} rows visible, {committed} records committed: rows after the failed copy were committed before it",
            rows.len()
        );
    }
    kafka::set_topic_config(&dlq, "max.message.bytes", "1048588");
    wait_committed(&group, &topic, 8);
    let mut ids: Vec<i64> = visible_rows(&out)
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, [0, 1, 2, 4, 5, 6, 7], "each change once");
    let copies = kafka::read_full(&dlq);
    assert!(!copies.is_empty() && copies.iter().all(|c| c.value == recs[3].value));
    assert!(w.stop().success());
}

/// A copy the queue refuses in a partition that goes on: the records read after it cannot be
/// committed and pile up. Past the task's bound (64 × `max.buffered.records`) the task stops
/// reading that partition only: the other is read, written and committed to its end while the
/// copy is still refused, and the first is committed no further than the refused record. Once
/// the queue takes the copy, both end committed. Pausing every partition at the bound stopped
/// the second partition too.
#[test]
fn a_refused_copy_past_the_tasks_bound_stops_reading_only_its_own_partition() {
    let (topic, dlq) = refusing_topics("it-dlq-bound", 2);
    let rec = |partition: i32, id: i64, value: String| Rec {
        partition,
        key: Some(json!({"id": id}).to_string()),
        value: Some(value),
    };
    let doc = |id: i64| {
        json!({"before": null, "after": {"id": id, "name": format!("n{id}")}, "op": "c",
            "source": {"connector": "postgresql", "lsn": 1000 + id, "db": "d", "schema": "s", "table": "t"}})
        .to_string()
    };
    let mut first = vec![rec(0, 0, r#"{"op":"c","after":{"id":"#.into())];
    first.extend((1..=1500).map(|id| rec(0, id, doc(id))));
    let second: Vec<Rec> = (10_001..=13_000).map(|id| rec(1, id, doc(id))).collect();
    let producer = kafka::producer();
    first.chunks(50).for_each(|c| producer.send(&topic, c));
    second.chunks(50).for_each(|c| producer.send(&topic, c));
    let end = kafka::end_offsets(&topic, 2);
    let config = queue_connector(
        &topic,
        &dlq,
        &[
            // A bound of 640 records, reached well before partition 0's end.
            ("max.buffered.records", "10"),
            ("consumer.override.max.partition.fetch.bytes", "8192"),
            ("consumer.override.queued.max.messages.kbytes", "64"),
            ("consumer.override.queued.min.messages", "50"),
        ],
    );
    let (mut w, name, url, group) = run("it-dlq-bound", &config);
    let line = w.wait_log(
        "not reading the partitions they pile up in",
        Duration::from_secs(60),
    );
    assert!(line.contains(&format!("(\"{topic}\", 0)")), "{line}");
    let t0 = std::time::Instant::now();
    while kafka::committed(&group, &topic, 2).get(&1) != end.get(&1) {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "partition 1 not committed to its end while the copy is refused: {:?} of {end:?}",
            kafka::committed(&group, &topic, 2)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = wait_queue_trouble(&url, &name, &dlq);
    assert_eq!(status["tasks"][0]["state"], json!("RUNNING"));
    assert_eq!(
        kafka::committed(&group, &topic, 2)
            .get(&0)
            .copied()
            .unwrap_or(0),
        0,
        "committed past the refused copy"
    );
    assert_eq!(kafka::end_offsets(&dlq, 1)[&0], 0);

    kafka::set_topic_config(&dlq, "max.message.bytes", "1048588");
    wait_until(
        Duration::from_secs(180),
        "both partitions committed to their ends",
        || (kafka::committed(&group, &topic, 2) == end).then_some(()),
    );
    let copies = kafka::read_full(&dlq);
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(
        copies[0].value,
        first[0].value.as_ref().map(|v| v.as_bytes().to_vec())
    );
    let docs = es::sources(&topic);
    assert_eq!(docs.len(), 4500);
    assert_eq!(docs["1500"]["name"], json!("n1500"));
    assert_eq!(docs["13000"]["name"], json!("n13000"));
    assert!(w.stop().success());
}

/// Copies the queue refuses, one of each of two partitions; then another member joins the
/// group and takes a partition from the task. The copy of the partition it lost is forgotten
/// (the new owner copies that record again), so the task waits for one copy, not for two: it
/// would otherwise send the lost partition's copy again for ever, and hold back every commit
/// that waits for copies.
#[test]
fn a_refused_copy_of_a_partition_moved_away_is_forgotten() {
    let (topic, dlq) = refusing_topics("it-dlq-moved", 2);
    let poison = |partition| kafka::Rec {
        partition,
        key: Some(json!({"id": partition}).to_string()),
        value: Some(r#"{"op":"c","after":{"id":"#.to_string()),
    };
    kafka::produce(&topic, &[poison(0), poison(1)]);
    let config = queue_connector(&topic, &dlq, &[("flush.timeout.ms", "2000")]);
    let (w, name, url, group) = run("it-dlq-moved", &config);
    let waiting_for = |copies: usize| {
        rest::wait_for(
            &url,
            &format!("/connectors/{name}/status"),
            Duration::from_secs(60),
            |s| {
                s["tasks"][0]["trouble"].as_str().is_some_and(|t| {
                    t.contains(&format!("the offsets of {copies} records wait for it"))
                })
            },
        )
    };
    waiting_for(2);
    let member = kafka::member(&group, &topic, 6000);
    wait_until(
        Duration::from_secs(60),
        "the member given a partition",
        || {
            let _ = member.poll(Duration::from_millis(100));
            (rdkafka::consumer::Consumer::assignment(&member).map_or(0, |a| a.count()) == 1)
                .then_some(())
        },
    );
    waiting_for(1);
    drop(member);
    assert!(w.stop().success());
}

/// The queue's producer holds one copy at a time (`producer.override.queue.buffering.max.messages=1`,
/// the connector's overrides applied to it as Kafka Connect applies them to a sink's
/// dead-letter producer), and 40 poison records in a row fill it again and again: each copy
/// waits for room (a short wait, then a backoff), none is lost, and every offset is committed
/// once its copy is written. The copies are compressed as the overrides say.
#[test]
fn a_full_dead_letter_producer_queue_loses_no_copy() {
    let topic = unique("it-dlq-full");
    let dlq = format!("{topic}-dlq");
    kafka::create_topic(&topic, 1);
    // Values that are not JSON, and compress well.
    let recs: Vec<Full> = (0..40)
        .map(|id| Full {
            value: Some(vec![b'x'; 2_000]),
            ..good(id, None)
        })
        .collect();
    produce(&topic, &recs);
    let config = queue_connector(
        &topic,
        &dlq,
        &[
            ("producer.override.queue.buffering.max.messages", "1"),
            ("producer.override.compression.type", "zstd"),
        ],
    );
    let (w, _, _, group) = run("it-dlq-full", &config);
    wait_committed(&group, &topic, 40);
    // Each record copied (at least once; a copy sent again after a backoff may come after
    // later ones).
    let copied: std::collections::BTreeSet<Option<Vec<u8>>> =
        kafka::read_full(&dlq).into_iter().map(|c| c.key).collect();
    let want: std::collections::BTreeSet<Option<Vec<u8>>> =
        recs.iter().map(|r| r.key.clone()).collect();
    assert_eq!(copied, want);
    assert!(
        w.log_text()
            .contains("the dead-letter producer's queue is full"),
        "the queue never filled: this test tested nothing"
    );
    assert!(w.stop().success());
    let segment = std::fs::read(kafka::first_segment(&dlq)).unwrap();
    let codecs: Vec<i16> = kafka::batches(&segment)
        .iter()
        .map(|b| b.attributes & 7)
        .collect();
    assert!(
        !codecs.is_empty() && codecs.iter().all(|&c| c == 4),
        "batch codecs {codecs:?}, expected zstd (4)"
    );
}
