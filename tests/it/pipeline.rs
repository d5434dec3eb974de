//! End to end on the real broker and Elasticsearch: recorded Debezium sequences and a generated
//! history end as the source table, with every offset committed.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::history::{self, Options};
use crate::support::kafka::{self, Rec};

use crate::support::{servers, start_es_worker, unique, wait_converged};

fn fixture_lines(name: &str) -> Vec<String> {
    let path = crate::support::servers::repo()
        .join("tests/fixtures/debezium/sequences")
        .join(name);
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect()
}

fn customer(id: i64, first: &str, last: &str, email: &str) -> (String, Value) {
    (
        id.to_string(),
        json!({"id": id, "first_name": first, "last_name": last, "email": email}),
    )
}

#[test]
fn recorded_mysql_sequences_end_as_the_final_rows() {
    // The same ten changes, with and without schema, in one connector reading both topics.
    let with = unique("it-seq-schema");
    let without = unique("it-seq-noschema");
    for (topic, file) in [
        (
            &with,
            "mysql_customers_seq_withschema_value__rw-debezium_log.jsonl",
        ),
        (
            &without,
            "mysql_customers_seq_noschema_value__rw-debezium_log.jsonl",
        ),
    ] {
        kafka::create_topic(topic, 1);
        let recs: Vec<Rec> = fixture_lines(file)
            .into_iter()
            .map(|v| Rec {
                partition: 0,
                key: None,
                value: Some(v),
            })
            .collect();
        kafka::produce(topic, &recs);
    }
    let (w, group) = start_es_worker(
        "it-seq",
        &format!("{with},{without}"),
        &servers().es,
        &[("pk.fields", "id")],
    );
    let expected: BTreeMap<String, Value> = [
        customer(1001, "Sally", "Thomas", "sally.thomas@acme.com"),
        customer(1002, "George", "Bailey", "gbailey@foobar.com"),
        customer(1003, "Edward", "Walker", "ed@walker.com"),
        customer(1004, "Anne1", "Kretchmar", "annek@noanswer.org"),
        customer(1005, "add", "add2", "add"),
    ]
    .into_iter()
    .collect();
    wait_converged(&with, &expected, &group, 1, Duration::from_secs(60));
    wait_converged(&without, &expected, &group, 1, Duration::from_secs(60));
    assert!(w.stop().success());
}

#[test]
fn recorded_postgres_snapshot_is_indexed_by_pk_fields() {
    let topic = unique("it-pg-snapshot");
    kafka::create_topic(&topic, 1);
    let lines = fixture_lines("postgresql_customer_seq_withschema_value__rw-bugbash.jsonl");
    let mut expected = BTreeMap::new();
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap();
        let after = v["payload"]["after"].clone();
        let id = format!("{}|{}|{}", after["c_w_id"], after["c_d_id"], after["c_id"]);
        expected.insert(id, after);
    }
    assert_eq!(expected.len(), 25);
    let recs: Vec<Rec> = lines
        .into_iter()
        .map(|v| Rec {
            partition: 0,
            key: None,
            value: Some(v),
        })
        .collect();
    kafka::produce(&topic, &recs);
    let (w, group) = start_es_worker(
        "it-pg",
        &topic,
        &servers().es,
        &[("pk.fields", "c_w_id,c_d_id,c_id")],
    );
    wait_converged(&topic, &expected, &group, 1, Duration::from_secs(60));
    assert!(w.stop().success());
}

#[test]
fn generated_history_converges_and_commits_every_offset() {
    let h = history::generate(7, &Options::default());
    assert!(
        h.changes >= 20_000 && h.expected.len() >= 300,
        "{} changes, {} rows",
        h.changes,
        h.expected.len()
    );
    let topic = unique("it-history");
    kafka::create_topic(&topic, 4);
    kafka::produce(&topic, &h.records);
    let (w, group) = start_es_worker(
        "it-history",
        &topic,
        &servers().es,
        &[("behavior.on.null.values", "delete")],
    );
    wait_converged(&topic, &h.expected, &group, 4, Duration::from_secs(180));
    crate::support::committed::assert_versions(&topic, &h.versions);
    let log = w.log_text();
    assert!(w.stop().success());
    assert!(!log.contains("task failed"), "{log}");
}

/// A PostgreSQL create of row `id` at `lsn`, in partition 0.
fn created(id: i64, lsn: i64) -> Rec {
    Rec {
        partition: 0,
        key: Some(json!({"id": id}).to_string()),
        value: Some(
            json!({"before": null, "after": {"id": id}, "op": "c",
                "source": {"connector": "postgresql", "lsn": lsn, "db": "d", "schema": "s", "table": "t"}})
            .to_string(),
        ),
    }
}

/// A topic whose batches the broker compresses with zstd (the topic's `compression.type`, as
/// many clusters set it) is read like any other: librdkafka is built with zstd.
#[test]
fn a_topic_compressed_with_zstd_is_read() {
    let topic = unique("it-zstd");
    kafka::create_topic_with(&topic, &[("compression.type", "zstd")]);
    kafka::produce(
        &topic,
        &(0..10).map(|id| created(id, 100 + id)).collect::<Vec<_>>(),
    );
    // The broker wrote them as zstd batches.
    let segment = std::fs::read(kafka::first_segment(&topic)).unwrap();
    let batches = kafka::batches(&segment);
    assert!(!batches.is_empty());
    assert!(
        batches.iter().all(|b| b.attributes & 7 == 4),
        "not all zstd: {batches:?}"
    );
    let (w, group) = start_es_worker("it-zstd", &topic, &servers().es, &[]);
    let expected: BTreeMap<String, Value> = (0..10)
        .map(|id| (id.to_string(), json!({"id": id})))
        .collect();
    wait_converged(&topic, &expected, &group, 1, Duration::from_secs(60));
    assert!(w.stop().success());
}

/// `topics.regex` reads the topics whose whole name it matches, as Kafka Connect does: not one
/// whose name only starts with a match (librdkafka matches anywhere in the name). Its syntax is
/// Java's where the `regex` crate shares it (`\d`, `(?:…)`), which librdkafka's POSIX patterns
/// do not read; a matching topic created later is read too.
#[test]
fn a_topics_regex_reads_only_the_topics_whose_whole_name_it_matches() {
    use crate::support::worker::{Worker, connector_file};
    use crate::support::{es, es_connector};
    let base = unique("it-regex");
    let topic = format!("{base}-1");
    let archive = format!("{base}-1-archive");
    let name = unique("regex");
    for t in [&topic, &archive] {
        kafka::create_topic(t, 1);
        kafka::produce(t, &[created(1, 1000)]);
    }
    let regex = format!(r"{base}-\d+(?:-later)?");
    let mut config = es_connector(&topic, &servers().es, &[("topics.regex", &regex)]);
    config.as_object_mut().unwrap().remove("topics");
    let w = Worker::start(&connector_file(&name, &config));
    let group = format!("connect-{name}");
    let start = std::time::Instant::now();
    let wait_committed = |t: &str| {
        while kafka::committed(&group, t, 1).get(&0) != Some(&1) {
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "{t} not written: {}",
                w.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_committed(&topic);
    assert_eq!(es::documents(&topic).len(), 1);
    // Created after the worker started: found at a later look at the topics.
    let later = format!("{base}-22-later");
    kafka::create_topic(&later, 1);
    kafka::produce(&later, &[created(1, 1000)]);
    wait_committed(&later);
    assert_eq!(es::documents(&later).len(), 1);
    // Both topics existed before the subscription: one metadata answer brought both.
    assert_eq!(kafka::committed(&group, &archive, 1).get(&0), None);
    let archived = reqwest::blocking::Client::new()
        .head(format!("{}/{archive}", servers().es))
        .send()
        .unwrap();
    assert_eq!(archived.status().as_u16(), 404, "{archive} was written");
    assert!(w.stop().success());
}

/// A topic written in Kafka transactions (Debezium under Kafka Connect's exactly-once source
/// support) is committed to its end, past the commit marker no consumer is handed: its lag
/// ends at 0, and `cdc-sink rebuild` can wait for it.
#[test]
fn a_topic_written_in_transactions_is_committed_to_its_end() {
    use crate::support::worker::{Worker, connector_file};
    use crate::support::{es, es_connector};
    let topic = unique("it-txn");
    let name = unique("txn");
    kafka::create_topic(&topic, 1);
    let recs: Vec<Rec> = (1..=3).map(|id| created(id, 1000 + id)).collect();
    kafka::produce_in_transaction(&topic, &recs);
    // Three records and the marker, which the coordinator writes after the commit returns.
    wait_for_end(&topic, 4);
    let w = Worker::start(&connector_file(
        &name,
        &es_connector(&topic, &servers().es, &[]),
    ));
    let group = format!("connect-{name}");
    let start = std::time::Instant::now();
    while kafka::committed(&group, &topic, 1).get(&0) != Some(&4) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "committed {:?}, not the end offset 4",
            kafka::committed(&group, &topic, 1)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let docs = es::documents(&topic);
    assert_eq!(docs.len(), 3, "{docs:?}");
    assert!(w.stop().success());

    // A task that stops before its next periodic commit commits to the end too.
    let more: Vec<Rec> = recs
        .iter()
        .map(|r| Rec {
            value: r
                .value
                .as_ref()
                .map(|v| v.replace("\"lsn\":100", "\"lsn\":200")),
            ..r.clone()
        })
        .collect();
    kafka::produce_in_transaction(&topic, &more);
    wait_for_end(&topic, 8);
    let w = Worker::start_with(
        &[&connector_file(
            &name,
            &es_connector(&topic, &servers().es, &[]),
        )],
        &[("CDC_SINK_WORKER__OFFSET_FLUSH_INTERVAL_MS", "600000")],
    );
    // The second transaction's changes written: each document at a newer version.
    while !es::documents(&topic)
        .iter()
        .all(|(id, (v, _))| *v > docs[id].0)
    {
        assert!(start.elapsed() < Duration::from_secs(120), "not rewritten");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(w.stop().success());
    assert_eq!(kafka::committed(&group, &topic, 1).get(&0), Some(&8));
}

/// Waits until partition 0 of `topic` ends at `end`: a transaction's marker is written by the
/// coordinator after the producer's commit returns.
fn wait_for_end(topic: &str, end: i64) {
    let start = std::time::Instant::now();
    while kafka::end_offsets(topic, 1)[&0] != end {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "partition 0 of {topic} ends at {:?}, not {end}: no commit marker",
            kafka::end_offsets(topic, 1)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The commit on revocation passes the transaction's marker too: with periodic commits far
/// off, a consumer of our own joins the task's group, and the rebalance (librdkafka's default
/// assignors are eager: every partition is revoked) is the only commit.
#[test]
fn a_partition_revoked_from_a_task_is_committed_past_its_transaction_marker() {
    use crate::support::worker::{Worker, connector_file};
    use crate::support::{es, es_connector};
    let topic = unique("it-txn-revoked");
    let name = unique("txn-revoked");
    kafka::create_topic(&topic, 1);
    let recs: Vec<Rec> = (1..=3).map(|id| created(id, 1000 + id)).collect();
    kafka::produce_in_transaction(&topic, &recs);
    wait_for_end(&topic, 4);
    let w = Worker::start_with(
        &[&connector_file(
            &name,
            &es_connector(&topic, &servers().es, &[]),
        )],
        &[("CDC_SINK_WORKER__OFFSET_FLUSH_INTERVAL_MS", "600000")],
    );
    let start = std::time::Instant::now();
    while es::documents(&topic).len() != 3 {
        assert!(start.elapsed() < Duration::from_secs(60), "not written");
        std::thread::sleep(Duration::from_millis(200));
    }
    let group = format!("connect-{name}");
    let committed = kafka::Committed::new(&group, &topic, 1);
    assert_eq!(
        committed.now(),
        BTreeMap::new(),
        "committed before the rebalance"
    );

    let other = kafka::member(&group, &topic, 45_000);
    while committed.now().get(&0) != Some(&4) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "committed {:?} after the rebalance, not the end offset 4",
            committed.now()
        );
        // Polling keeps the consumer in the group (and never commits).
        let _ = other.poll(Duration::from_millis(200));
    }
    drop(other);
    assert!(w.stop().success());
}
