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
