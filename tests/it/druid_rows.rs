//! Recorded Debezium envelopes → the Druid rows the `druid` connector writes, written out by
//! hand; every row's `__version` is the version the Elasticsearch connector gives the same
//! record. No servers needed.

use serde_json::{Value, json};

use cdc_sink::connector::{ConnectorConfig, ConnectorSpec, SinkSpec};
use cdc_sink::decode::Decoder;
use cdc_sink::sink::SinkRecord;
use cdc_sink::sink::druid::row::{Mapped, Rows};

use crate::fixtures::{fixture, map as map_es};

const TOPIC: &str = "dbserver1.inventory.customers";

/// The row key and row of one record (`value` is a fixture file name or, starting with `{`,
/// the envelope itself), or `Err("skip: …")` / the error.
fn row(
    value: &str,
    key: Option<&str>,
    extra: &[(&str, &str)],
) -> Result<(String, String, Value), String> {
    let mut config = json!({"connector.class": "druid", "topics": TOPIC});
    for (k, v) in extra {
        config[*k] = json!(v);
    }
    let cc =
        ConnectorConfig::from_json(&json!({"name": "druid-rows", "config": config}).to_string())
            .unwrap();
    let spec = ConnectorSpec::validate(&cc).unwrap();
    let SinkSpec::Druid(cfg) = &spec.sink else {
        panic!("not a druid connector")
    };
    let mut rows = Rows::new(std::sync::Arc::new((**cfg).clone()));
    let mut decoder = Decoder::new(&spec).unwrap();
    let text = if value.starts_with('{') {
        value.to_string()
    } else {
        fixture(value)
    };
    let value = decoder.value(TOPIC, Some(text.as_bytes())).unwrap();
    let key = key.map(|k| decoder.key(TOPIC, Some(k.as_bytes())).unwrap().unwrap());
    let rec = SinkRecord {
        topic: TOPIC,
        kafka_topic: TOPIC,
        partition: 0,
        offset: 42,
        timestamp_ms: Some(1_700_000_000_000),
        key: key.as_ref(),
        value: &value,
    };
    match rows.map(&rec)? {
        Mapped::Skip(why) => Err(format!("skip: {why}")),
        Mapped::Row { topic, key, value } => {
            let text = String::from_utf8(value).unwrap();
            let parsed = serde_json::from_str(&text).expect("a row is JSON");
            Ok((topic.to_string(), key, parsed))
        }
    }
}

/// The version the Elasticsearch connector gives the same record.
fn es_version(value_file: &str, key: &str) -> u64 {
    let (line, _) = map_es(value_file, Some(key), &[]).unwrap();
    let action: Value = serde_json::from_str(&line).unwrap();
    let inner = action.as_object().unwrap().values().next().unwrap();
    inner["version"].as_u64().unwrap()
}

fn with_meta(mut image: Value, op: &str, source_ts: Value, version: u64, time: Value) -> Value {
    let m = image.as_object_mut().unwrap();
    m.insert("__op".into(), json!(op));
    m.insert("__deleted".into(), json!(op == "d"));
    m.insert("__source_ts_ms".into(), source_ts);
    m.insert("__version".into(), json!(version));
    m.insert("__time".into(), time);
    image
}

fn customer(id: i64, first: &str, last: &str, email: &str) -> Value {
    json!({"id": id, "first_name": first, "last_name": last, "email": email})
}

#[test]
fn recorded_changes_become_one_row_each_with_the_elasticsearch_version() {
    let cases = [
        (
            "mysql_customers_c_noschema_value__dbz-serde.json",
            r#"{"id":1004}"#,
            "1004",
            customer(1004, "Anne", "Kretchmar", "annek@noanswer.org"),
            "c",
            json!(0),
        ),
        (
            "mysql_customers_u_noschema_value__dbz-serde.json",
            r#"{"id":1004}"#,
            "1004",
            customer(1004, "Anne", "Kretchmar", "annek@noanswer.org"),
            "u",
            json!(0),
        ),
        (
            "mysql_customers_r_noschema_value__rw-log-l01.json",
            r#"{"id":1001}"#,
            "1001",
            customer(1001, "Sally", "Thomas", "sally.thomas@acme.com"),
            "r",
            json!(1_661_327_688_868_i64),
        ),
        // A delete: the `before` image, `__deleted: true`.
        (
            "mysql_customers_d_noschema_value__rw-log-l10.json",
            r#"{"id":1006}"#,
            "1006",
            customer(1006, "add1", "add2", "add1"),
            "d",
            json!(1_661_328_550_000_i64),
        ),
        (
            "postgresql_products_d_noschema_value__flink-l16.json",
            r#"{"id":111}"#,
            "111",
            json!({"id": 111, "name": "scooter", "description": "Big 2-wheel scooter ", "weight": 5.17}),
            "d",
            json!(1_596_010_988_168_i64),
        ),
        (
            "postgresql_customers_c_withschema_value__dbzdoc.json",
            r#"{"id":1}"#,
            "1",
            customer(1, "Anne", "Kretchmar", "annek@noanswer.org"),
            "c",
            json!(1_559_033_904_863_i64),
        ),
    ];
    for (file, key, id, image, op, source_ts) in cases {
        let version = es_version(file, key);
        let (topic, got_key, got) = row(file, Some(key), &[]).unwrap();
        assert_eq!(topic, format!("druid.{TOPIC}"), "{file}");
        assert_eq!(got_key, id, "{file}");
        assert_eq!(
            got,
            with_meta(image, op, source_ts.clone(), version, source_ts),
            "{file}"
        );
    }
    // Spot checks of the versions themselves (docs/versions.md).
    assert_eq!(
        es_version(
            "postgresql_customers_c_withschema_value__dbzdoc.json",
            r#"{"id":1}"#
        ),
        4 * 24_023_119 + 1
    );
    assert_eq!(
        es_version(
            "postgresql_products_d_noschema_value__flink-l16.json",
            r#"{"id":111}"#
        ),
        34_133_800
    );
}

#[test]
fn tombstones_and_non_changes_write_nothing() {
    assert_eq!(
        row(
            "mysql_customers_tombstone_withschema_value__dbzdoc-tutorial.json",
            Some(r#"{"id":1004}"#),
            &[]
        )
        .unwrap_err(),
        "skip: tombstone"
    );
    let heartbeat = r#"{"schema":{"type":"struct","name":"io.debezium.connector.common.Heartbeat","fields":[{"type":"int64","field":"ts_ms"}]},"payload":{"ts_ms":1}}"#;
    assert_eq!(row(heartbeat, None, &[]).unwrap_err(), "skip: heartbeat");
}

#[test]
fn nested_objects_are_flattened_and_time_follows_the_option() {
    let envelope = r#"{"op":"c","before":null,"after":{"id":7,"address":{"city":"Oslo","geo":{"lat":59.9}},"tags":["a","b"]},
        "source":{"connector":"mysql","ts_ms":1000,"file":"mysql-bin.000002","pos":4,"row":0,"db":"d","table":"t"},"ts_ms":2000}"#;
    let (_, key, got) = row(envelope, Some(r#"{"id":7}"#), &[("flatten.separator", ".")]).unwrap();
    assert_eq!(key, "7");
    let version = (2u64 << 40) | 4;
    assert_eq!(
        got,
        json!({"id": 7, "address.city": "Oslo", "address.geo.lat": 59.9, "tags": ["a", "b"],
            "__op": "c", "__deleted": false, "__source_ts_ms": 1000, "__version": version, "__time": 1000})
    );
    let (_, _, got) = row(
        envelope,
        Some(r#"{"id":7}"#),
        &[("druid.timestamp.field", "ts_ms")],
    )
    .unwrap();
    assert_eq!(got["__time"], 2000);
    assert_eq!(got["address_geo_lat"], 59.9);
    let (_, _, got) = row(
        envelope,
        Some(r#"{"id":7}"#),
        &[("druid.timestamp.field", "kafka")],
    )
    .unwrap();
    assert_eq!(got["__time"], 1_700_000_000_000_i64);
    let (topic, _, _) = row(
        envelope,
        Some(r#"{"id":7}"#),
        &[("druid.topic", "cdc-${topic}-rows")],
    )
    .unwrap();
    assert_eq!(topic, format!("cdc-{TOPIC}-rows"));
}

#[test]
fn a_truncate_is_one_row_keyed_by_its_table() {
    let envelope = r#"{"op":"t","before":null,"after":null,
        "source":{"connector":"postgresql","ts_ms":5,"db":"inventory","schema":"public","table":"orders","lsn":800,"sequence":"[null,\"800\"]"},"ts_ms":6}"#;
    let (_, key, got) = row(envelope, None, &[]).unwrap();
    assert_eq!(key, "inventory.public.orders");
    assert_eq!(got["__op"], "t");
    assert_eq!(got["__deleted"], false);
    assert_eq!(got["__time"], 5);
    assert_eq!(got.as_object().unwrap().len(), 5, "{got}");
}

#[test]
fn a_record_without_key_needs_pk_fields_and_options_are_checked() {
    let file = "mysql_customers_c_noschema_value__dbz-serde.json";
    assert!(
        row(file, None, &[])
            .unwrap_err()
            .contains("record has no key")
    );
    let (_, key, _) = row(file, None, &[("pk.fields", "id,email")]).unwrap();
    assert_eq!(key, "1004|annek@noanswer.org");
    let invalid = |extra: Value| {
        let mut config = json!({"connector.class": "druid", "topics": TOPIC});
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
        let cc = ConnectorConfig::from_json(&json!({"name": "x", "config": config}).to_string())
            .unwrap();
        ConnectorSpec::validate(&cc).unwrap_err().to_string()
    };
    assert!(
        invalid(json!({"exactly.once": "maybe"}))
            .contains("exactly.once: `maybe` is not true or false")
    );
    assert!(
        invalid(json!({"connection.url": "http://es:9200"}))
            .contains("connection.url: unknown option")
    );
    assert!(
        invalid(json!({"producer.override.acks": "1"}))
            .contains("producer.override.acks: is set by cdc-sink")
    );
    assert!(invalid(json!({"transforms": "u", "transforms.u.type": "io.debezium.transforms.ExtractNewRecordState"}))
        .contains("ExtractNewRecordState cannot be used with the druid connector"));
}
