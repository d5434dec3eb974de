//! Bad input stops the task with a message naming topic/partition/offset and the reason; the
//! records before it are written and committed, nothing at or after it is.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::support::kafka::{self, Rec};
use crate::support::{assert_failed_at_offset_5, es, servers, start_es_worker, unique};

fn good(id: i64) -> Rec {
    let payload = json!({"before": null, "after": {"id": id, "name": format!("n{id}")},
        "source": {"connector": "postgresql", "lsn": 1000 + id, "db": "d", "schema": "s", "table": "t"}, "op": "c"});
    Rec {
        partition: 0,
        key: Some(json!({"id": id}).to_string()),
        value: Some(payload.to_string()),
    }
}

/// Five good records, `bad` at offset 5, four good after; returns the failure log line.
fn fails_at_offset_5(bad: Rec, extra: &[(&str, &str)]) -> String {
    let topic = unique("it-bad");
    kafka::create_topic(&topic, 1);
    let mut recs: Vec<Rec> = (0..5).map(good).collect();
    recs.push(bad);
    recs.extend((6..10).map(good));
    kafka::produce(&topic, &recs);
    let (mut w, group) = start_es_worker("it-bad", &topic, &servers().es, extra);
    let line = assert_failed_at_offset_5(&mut w, &topic, &group);
    let docs = es::sources(&topic);
    let expected: BTreeMap<String, Value> = (0..5)
        .map(|id| (id.to_string(), json!({"id": id, "name": format!("n{id}")})))
        .collect();
    assert_eq!(docs, expected);
    assert!(
        !w.stop().success(),
        "a worker whose task failed must exit non-zero after SIGTERM"
    );
    line
}

#[test]
fn malformed_json_fails_the_task_at_that_record() {
    let line = fails_at_offset_5(
        Rec {
            partition: 0,
            key: Some(r#"{"id":5}"#.into()),
            value: Some(r#"{"op":"c","after":{"id":5"#.into()),
        },
        &[],
    );
    assert!(line.contains("value is not valid JSON"), "{line}");
}

#[test]
fn a_value_that_is_not_an_envelope_fails_the_task() {
    let line = fails_at_offset_5(
        Rec {
            partition: 0,
            key: Some(r#"{"id":5}"#.into()),
            value: Some(r#"{"id":5,"name":"x"}"#.into()),
        },
        &[],
    );
    assert!(line.contains("not a Debezium change event"), "{line}");
}

#[test]
fn a_key_without_the_id_field_fails_the_task() {
    let mut bad = good(5);
    bad.key = Some(r#"{"uuid":"x"}"#.into());
    let line = fails_at_offset_5(
        bad,
        &[
            ("transforms", "key"),
            (
                "transforms.key.type",
                "org.apache.kafka.connect.transforms.ExtractField$Key",
            ),
            ("transforms.key.field", "id"),
        ],
    );
    assert!(line.contains("the key has no field `id`"), "{line}");
}

#[test]
fn a_record_without_key_fails_the_task_when_no_pk_fields_are_set() {
    let mut bad = good(5);
    bad.key = None;
    let line = fails_at_offset_5(bad, &[]);
    assert!(line.contains("record has no key"), "{line}");
}

/// `drop.invalid.message=true` logs each record it drops, naming where it is; its contents only
/// under `errors.log.enable` (as Kafka Connect's `errors.log.include.messages` applies only
/// then): a value can hold personal data.
#[test]
fn a_dropped_invalid_record_is_logged_without_its_contents_unless_errors_are_logged() {
    let topic = unique("it-drop-invalid");
    kafka::create_topic(&topic, 1);
    let mut recs: Vec<Rec> = (0..5).map(good).collect();
    let mut bad = good(5);
    bad.key = None;
    bad.value = bad.value.map(|v| v.replace("n5", "private-n5"));
    recs.push(bad);
    recs.extend((6..10).map(good));
    kafka::produce(&topic, &recs);
    let extra = [
        ("drop.invalid.message", "true"),
        ("errors.log.include.messages", "true"),
    ];
    let (w, group) = start_es_worker("it-drop-invalid", &topic, &servers().es, &extra);
    let expected: BTreeMap<String, Value> = (0..10)
        .filter(|id| *id != 5)
        .map(|id| (id.to_string(), json!({"id": id, "name": format!("n{id}")})))
        .collect();
    crate::support::wait_converged(
        &topic,
        &expected,
        &group,
        1,
        std::time::Duration::from_secs(60),
    );
    let log = w.log_text();
    assert!(log.contains("error tolerated (dropped)"), "{log}");
    assert!(log.contains("offset=5"), "{log}");
    assert!(
        !log.contains("private-n5"),
        "the dropped record's value was logged"
    );
    assert!(w.stop().success());
}

/// `consumer.override.auto.offset.reset=error`: a partition without a committed offset fails
/// the task, naming the setting. librdkafka reads that partition no more, and the task showed
/// RUNNING with nothing read, for ever.
#[test]
fn auto_offset_reset_error_fails_the_task_at_a_partition_without_a_committed_offset() {
    let topic = unique("it-no-offset");
    kafka::create_topic(&topic, 1);
    kafka::produce(&topic, &(0..3).map(good).collect::<Vec<_>>());
    let (mut w, group) = start_es_worker(
        "it-no-offset",
        &topic,
        &servers().es,
        &[("consumer.override.auto.offset.reset", "error")],
    );
    let line = w.wait_log(
        "auto.offset.reset=error asks to stop",
        std::time::Duration::from_secs(60),
    );
    assert!(line.contains("has no committed offset"), "{line}");
    assert_eq!(kafka::committed(&group, &topic, 1), BTreeMap::new());
    assert!(!w.stop().success(), "the task did not fail");
}

/// Versions on two scales in one partition. A change without a source position at offset 0 is
/// versioned by its offset; the changes after it carry PostgreSQL positions above it and are
/// written at them; then a change without a position at offset 5: by its offset (5, against
/// LSN 1004) Elasticsearch would refuse it as stale, and it would be lost without a word. It
/// fails the task instead, and nothing is committed past it.
#[test]
fn a_change_without_a_source_position_below_positioned_ones_fails_the_task() {
    let unpositioned = |id: i64, name: &str| {
        Rec {
        partition: 0,
        key: Some(json!({"id": id}).to_string()),
        value: Some(
            json!({"before": null, "after": {"id": id, "name": name},
                "source": {"connector": "postgresql", "db": "d", "schema": "s", "table": "t"}, "op": "u"})
            .to_string(),
        ),
    }
    };
    let topic = unique("it-scales");
    kafka::create_topic(&topic, 1);
    let mut recs = vec![unpositioned(0, "n0")];
    recs.extend((1..5).map(good));
    recs.push(unpositioned(1, "changed"));
    recs.extend((6..10).map(good));
    kafka::produce(&topic, &recs);
    let (mut w, group) = start_es_worker("it-scales", &topic, &servers().es, &[]);
    let line = assert_failed_at_offset_5(&mut w, &topic, &group);
    assert!(line.contains("carries no source position"), "{line}");
    let expected: BTreeMap<String, (u64, Value)> = (0..5)
        .map(|id| {
            let version = if id == 0 { 0 } else { 1000 + id as u64 };
            (
                id.to_string(),
                (version, json!({"id": id, "name": format!("n{id}")})),
            )
        })
        .collect();
    assert_eq!(es::documents(&topic), expected);
    assert!(!w.stop().success());
}

/// A batch whose bytes were corrupted on the broker's disk fails the task when the consumer
/// checks CRCs (`check.crcs=true`): librdkafka would report it and skip it, and the task would
/// commit past records it never saw. The records before it are written and committed, the ones
/// in and after it are not.
#[test]
fn a_corrupt_batch_fails_the_task_instead_of_being_skipped() {
    use crate::support::wait_until;
    use std::time::Duration;
    let topic = unique("it-corrupt");
    kafka::create_topic(&topic, 1);
    // Three produce calls, three batches: offsets 0–4, 5–9 and 10–14.
    for ids in [0..5, 5..10, 10..15] {
        kafka::produce(&topic, &ids.map(good).collect::<Vec<_>>());
    }
    let path = kafka::first_segment(&topic);
    let mut segment = std::fs::read(&path).unwrap();
    let batches = kafka::batches(&segment);
    let bases: Vec<i64> = batches.iter().map(|b| b.base_offset).collect();
    assert_eq!(bases, [0, 5, 10]);
    // One byte of the second batch's last record flipped, in place (the broker serves its
    // segment from the page cache this write goes to).
    let at = batches[1].at + batches[1].size - 3;
    segment[at] ^= 0x20;
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(SeekFrom::Start(at as u64)).unwrap();
        f.write_all(&segment[at..=at]).unwrap();
    }
    let (mut w, group) = start_es_worker(
        "it-corrupt",
        &topic,
        &servers().es,
        &[("consumer.override.check.crcs", "true")],
    );
    let line = w.wait_log("a batch failing its CRC check", Duration::from_secs(60));
    assert!(line.contains("stops rather than commit past"), "{line}");
    wait_until(Duration::from_secs(60), "offset 5 committed", || {
        (kafka::committed(&group, &topic, 1) == BTreeMap::from([(0, 5)])).then_some(())
    });
    let expected: BTreeMap<String, Value> = (0..5)
        .map(|id| (id.to_string(), json!({"id": id, "name": format!("n{id}")})))
        .collect();
    assert_eq!(es::sources(&topic), expected);
    assert!(!w.stop().success());
}

/// A topic deleted and created again under a running task: librdkafka finds the task's
/// position out of range and resets it to the new log's start, whose records have offsets the
/// task had read already. Taken for records delivered again, they were skipped with a warning
/// and never written. The task fails instead, naming it; started again, it reads the new log
/// from its start (the committed offset is past its end) and writes every record. (Should the
/// consumer see the topic gone first, a rebalance gives it the new topic afresh, and the new
/// records are written without a failure: either way, none is skipped.) The worker logs errors
/// only: librdkafka's warning of the reset must reach the task all the same.
#[test]
fn a_topic_created_again_under_a_running_task_never_has_its_new_records_skipped() {
    use crate::support::wait_until;
    use crate::support::worker::{Worker, connector_file};
    use std::time::Duration;
    let topic = unique("it-recreated");
    kafka::create_topic(&topic, 1);
    kafka::produce(&topic, &(0..10).map(good).collect::<Vec<_>>());
    let name = unique("it-recreated");
    let file = connector_file(
        &name,
        &crate::support::es_connector(&topic, &servers().es, &[]),
    );
    let group = format!("connect-{name}");
    let start = || Worker::start_with(&[&file], &[("RUST_LOG", "error")]);
    let mut w = start();
    wait_until(Duration::from_secs(60), "the first topic committed", || {
        (kafka::committed(&group, &topic, 1) == BTreeMap::from([(0, 10)])).then_some(())
    });
    kafka::delete_topic(&topic);
    kafka::create_topic(&topic, 1);
    kafka::produce(&topic, &(100..103).map(good).collect::<Vec<_>>());
    let written = wait_until(
        Duration::from_secs(90),
        "the new records written, or the task failed",
        || {
            if es::documents(&topic).len() == 13 {
                return Some(true);
            }
            w.log_text().contains("task failed").then_some(false)
        },
    );
    if !written {
        let line = w.wait_log("task failed", Duration::from_secs(1));
        assert!(
            line.contains(&format!("topic {topic} partition 0 offset 0"))
                && line.contains("starts again below what the task had read"),
            "{line}"
        );
        assert!(!w.stop().success());
        assert_eq!(
            es::documents(&topic).len(),
            10,
            "nothing of the new log written"
        );
        w = start();
    }
    let docs = wait_until(Duration::from_secs(60), "the new records written", || {
        let docs = es::documents(&topic);
        (docs.len() == 13).then_some(docs)
    });
    for id in 100..103u64 {
        assert_eq!(
            docs[&id.to_string()],
            (1000 + id, json!({"id": id, "name": format!("n{id}")}))
        );
    }
    wait_until(Duration::from_secs(60), "the new log committed", || {
        (kafka::committed(&group, &topic, 1) == BTreeMap::from([(0, 3)])).then_some(())
    });
    eprintln!(
        "new records written {}",
        if written {
            "without a failure"
        } else {
            "after the failure and a restart"
        }
    );
    assert!(w.stop().success());
}
