//! Recorded Debezium envelopes → the Druid rows the `druid` connector writes, written out by
//! hand; every row's `__version` is the version the Elasticsearch connector gives the same
//! record. No servers needed.

use serde_json::{Value, json};

use cdc_sink::connector::{ConnectorConfig, ConnectorSpec, SinkSpec};
use cdc_sink::sink::druid::row::{Mapped, Rows};

use crate::fixtures::{
    TOPIC, after_with, decode, fixture, map as map_es, paimon_semantic_columns,
    paimon_snapshot_decimals, record, spec_on_topic, with,
};

/// The row key and row of one record (`value` is a fixture file name or, starting with `{`,
/// the envelope itself), or `Err("skip: …")` / the error.
fn row(
    value: &str,
    key: Option<&str>,
    extra: &[(&str, &str)],
) -> Result<(String, String, Value), String> {
    let spec = spec_on_topic(json!({"connector.class": "druid"}), extra);
    let SinkSpec::Druid(cfg) = &spec.sink else {
        panic!("not a druid connector")
    };
    let mut rows = Rows::new(std::sync::Arc::new((**cfg).clone()));
    let text = if value.starts_with('{') {
        value.to_string()
    } else {
        fixture(value)
    };
    let (key, value) = decode(&spec, &text, key);
    let rec = record(key.as_ref(), &value, Some(1_700_000_000_000));
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
    // The fixtures' records are at offset 42.
    m.insert("__kafka_offset".into(), json!(42));
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
            "__op": "c", "__deleted": false, "__source_ts_ms": 1000, "__version": version, "__kafka_offset": 42, "__time": 1000})
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
    assert_eq!(got["__kafka_offset"], 42);
    assert_eq!(got.as_object().unwrap().len(), 6, "{got}");
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
    // Transactions that would always be aborted, and a consumer that would not wait for
    // transactional offsets.
    assert!(invalid(json!({"transaction.max.ms": "60000"})).contains(
        "transaction.max.ms: must be below the producer's transaction.timeout.ms (60000 ms)"
    ));
    assert!(
        invalid(json!({"transaction.max.ms": "5000", "producer.override.transaction.timeout.ms": "4000"}))
            .contains("transaction.timeout.ms (4000 ms)")
    );
    assert!(
        invalid(json!({"consumer.override.isolation.level": "read_uncommitted"})).contains(
            "consumer.override.isolation.level: must stay read_committed with exactly.once"
        )
    );
}

/// `doc` as a row holds it: nested objects joined into `parent_child` columns.
fn flatten(doc: &Value) -> Value {
    fn walk(prefix: &str, v: &Value, out: &mut serde_json::Map<String, Value>) {
        match v {
            Value::Object(m) if !prefix.is_empty() || out.is_empty() => {
                for (k, v) in m {
                    let name = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}_{k}")
                    };
                    walk(&name, v, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.clone());
            }
        }
    }
    let mut out = serde_json::Map::new();
    walk("", doc, &mut out);
    Value::Object(out)
}

/// The recorded row image of `file` (`before` of a delete, else `after`), schema or not.
fn image(file: &str) -> Value {
    let v: Value = serde_json::from_str(&fixture(file)).unwrap();
    let p = if v.get("schema").is_some() {
        &v["payload"]
    } else {
        &v
    };
    if p["op"] == "d" {
        p["before"].clone()
    } else {
        p["after"].clone()
    }
}

/// (value file, key, options, row key, image, op, source.ts_ms)
type Case<'a> = (
    &'a str,
    Option<String>,
    Vec<(&'a str, &'a str)>,
    &'a str,
    Value,
    &'a str,
    Option<i64>,
);

/// Every recorded change envelope becomes exactly its row: the image as the Elasticsearch
/// connector decodes it (hand-written there: plain values as recorded, semantic types decoded),
/// flattened, with its op, delete flag, source time (`__time` too; absent: the Kafka
/// timestamp) and the Elasticsearch connector's version of the same record.
#[test]
// 3.14 is a recorded weight, not π.
#[allow(clippy::approx_constant)]
fn every_recorded_envelope_becomes_its_row() {
    let k = |id: i64| format!(r#"{{"id":{id}}}"#);
    let all_types_r = "mysql_all_types_table_r_withschema_value__paimon-alltype.json";
    let all_types_1 = "mysql_all_types_table_c_withschema_value__paimon-avroalltype-1.json";
    let all_types_2 = "mysql_all_types_table_c_withschema_value__paimon-avroalltype-2.json";
    let cases: Vec<Case> = vec![
        (
            all_types_r,
            Some(r#"{"_id":1}"#.into()),
            vec![],
            "1",
            with(
                after_with(all_types_r, paimon_snapshot_decimals()),
                paimon_semantic_columns(),
            ),
            "r",
            Some(0),
        ),
        (
            all_types_1,
            Some(fixture(
                "mysql_all_types_table_c_withschema_key__paimon-avroalltype-1.json",
            )),
            vec![],
            "1",
            after_with(all_types_1, paimon_semantic_columns()),
            "c",
            Some(1_695_606_891_000),
        ),
        (
            all_types_2,
            Some(fixture(
                "mysql_all_types_table_c_withschema_key__paimon-avroalltype-2.json",
            )),
            vec![],
            "2",
            after_with(all_types_2, json!({})),
            "c",
            Some(1_695_126_006_000),
        ),
        (
            "mysql_customers_c_noschema_value__dbz-serde.json",
            Some(k(1004)),
            vec![],
            "1004",
            customer(1004, "Anne", "Kretchmar", "annek@noanswer.org"),
            "c",
            Some(0),
        ),
        (
            "mysql_customers_c_noschema_value__rw-log-l05.json",
            Some(k(1005)),
            vec![],
            "1005",
            customer(1005, "add", "add", "add"),
            "c",
            Some(1_661_328_018_000),
        ),
        (
            "mysql_customers_c_withschema_value__dbz-serde.json",
            Some(k(1004)),
            vec![],
            "1004",
            customer(1004, "Anne", "Kretchmar", "annek@noanswer.org"),
            "c",
            Some(0),
        ),
        (
            "mysql_customers_c_withschema_value__dbzdoc.json",
            Some(k(1004)),
            vec![],
            "1004",
            customer(1004, "Anne", "Kretchmar", "annek@noanswer.org"),
            "c",
            Some(0),
        ),
        (
            "mysql_customers_c_withschema_value__rw-log-l05.json",
            Some(k(1005)),
            vec![],
            "1005",
            customer(1005, "add", "add", "add"),
            "c",
            Some(1_661_328_018_000),
        ),
        (
            "mysql_customers_d_noschema_value__rw-log-l10.json",
            Some(k(1006)),
            vec![],
            "1006",
            customer(1006, "add1", "add2", "add1"),
            "d",
            Some(1_661_328_550_000),
        ),
        (
            "mysql_customers_d_withschema_value__rw-log-l10.json",
            Some(fixture(
                "mysql_customers_d_withschema_key__dbzdoc-tutorial.json",
            )),
            vec![],
            "1004",
            customer(1006, "add1", "add2", "add1"),
            "d",
            Some(1_661_328_550_000),
        ),
        (
            "mysql_customers_r_noschema_value__dbzx-wasm.json",
            Some(k(1004)),
            vec![],
            "1004",
            customer(1004, "Anne", "Kretchmar", "annek@noanswer.org"),
            "r",
            Some(1_731_327_511_000),
        ),
        (
            "mysql_customers_r_noschema_value__rw-log-l01.json",
            Some(fixture("mysql_customers_any_withschema_key__dbzdoc.json")),
            vec![],
            "1001",
            customer(1001, "Sally", "Thomas", "sally.thomas@acme.com"),
            "r",
            Some(1_661_327_688_868),
        ),
        (
            "mysql_customers_r_withschema_value__dbzdoc-tutorial.json",
            Some(fixture(
                "mysql_customers_r_withschema_key__dbzdoc-tutorial.json",
            )),
            vec![],
            "1004",
            customer(1004, "Anne", "Kretchmar", "annek@noanswer.org"),
            "r",
            None,
        ),
        (
            "mysql_customers_r_withschema_value__rw-log-l01.json",
            Some(k(1001)),
            vec![],
            "1001",
            customer(1001, "Sally", "Thomas", "sally.thomas@acme.com"),
            "r",
            Some(1_661_327_688_868),
        ),
        (
            "mysql_customers_u_noschema_value__dbz-serde-unknownprop.json",
            Some(k(1004)),
            vec![],
            "1004",
            json!({"id": 1004, "first_name": "Anne", "last_name": "Kretchmar", "middle_name": "L", "email": "annek@noanswer.org"}),
            "u",
            Some(0),
        ),
        (
            "mysql_customers_u_noschema_value__dbz-serde.json",
            Some(k(1004)),
            vec![],
            "1004",
            customer(1004, "Anne", "Kretchmar", "annek@noanswer.org"),
            "u",
            Some(0),
        ),
        (
            "mysql_customers_u_noschema_value__dbzx-wasm.json",
            Some(k(1001)),
            vec![],
            "1001",
            customer(1001, "Sarah", "Thomas", "sally.thomas@acme.com"),
            "u",
            Some(1_731_327_659_000),
        ),
        (
            "mysql_customers_u_noschema_value__rw-log-l06.json",
            Some(k(1004)),
            vec![],
            "1004",
            customer(1004, "Anne1", "Kretchmar", "annek@noanswer.org"),
            "u",
            Some(1_661_328_309_000),
        ),
        (
            "mysql_customers_u_withschema_value__rw-log-l06.json",
            Some(fixture(
                "mysql_customers_u_withschema_key__dbzdoc-tutorial.json",
            )),
            vec![],
            "1004",
            customer(1004, "Anne1", "Kretchmar", "annek@noanswer.org"),
            "u",
            Some(1_661_328_309_000),
        ),
        (
            "mysql_test_c_noschema_value__paimon.json",
            Some(k(1)),
            vec![],
            "1",
            json!({"id": 1, "value": "A"}),
            "c",
            Some(1_596_684_883_000),
        ),
        (
            "postgresql_customer_r_withschema_value__rw-bugbash.json",
            None,
            vec![("pk.fields", "c_w_id,c_d_id,c_id")],
            "1|1|1",
            image("postgresql_customer_r_withschema_value__rw-bugbash.json"),
            "r",
            Some(1_664_141_081_149),
        ),
        (
            "postgresql_customers_c_withschema_value__dbzdoc.json",
            Some(k(1)),
            vec![],
            "1",
            customer(1, "Anne", "Kretchmar", "annek@noanswer.org"),
            "c",
            Some(1_559_033_904_863),
        ),
        (
            "postgresql_orderline_c_noschema_value__dbzx-caching-1.json",
            Some(fixture(
                "postgresql_orderline_c_noschema_key__dbzx-caching-1.json",
            )),
            vec![],
            "1",
            json!({"id": 1, "item": "Debezium in Action", "quantity": 2, "status": "ENTERED", "totalprice": "D54=", "order_id": 1}),
            "c",
            Some(1_610_716_846_989),
        ),
        (
            "postgresql_orderline_u_noschema_value__dbzx-caching-2.json",
            Some(fixture(
                "postgresql_orderline_u_noschema_key__dbzx-caching-2.json",
            )),
            vec![],
            "2",
            json!({"id": 2, "item": "Debezium for Dummies", "quantity": 1, "status": "CANCELLED", "totalprice": "C7c=", "order_id": 1}),
            "u",
            Some(1_610_716_988_917),
        ),
        (
            "postgresql_products_c_noschema_value__flink-l12.json",
            Some(k(110)),
            vec![],
            "110",
            json!({"id": 110, "name": "jacket", "description": "water resistent white wind breaker", "weight": 0.2}),
            "c",
            Some(1_596_010_946_488),
        ),
        (
            "postgresql_products_d_noschema_value__flink-l16.json",
            Some(k(111)),
            vec![],
            "111",
            json!({"id": 111, "name": "scooter", "description": "Big 2-wheel scooter ", "weight": 5.17}),
            "d",
            Some(1_596_010_988_168),
        ),
        (
            "postgresql_products_r_noschema_value__flink-l01.json",
            Some(k(101)),
            vec![],
            "101",
            json!({"id": 101, "name": "scooter", "description": "Small 2-wheel scooter", "weight": 3.14}),
            "r",
            Some(1_596_001_099_434),
        ),
        (
            "postgresql_products_u_noschema_value__flink-l10.json",
            Some(k(106)),
            vec![],
            "106",
            json!({"id": 106, "name": "hammer", "description": "18oz carpenter hammer", "weight": 1.0}),
            "u",
            Some(1_596_010_889_629),
        ),
        (
            "postgresql_purchaseorder_c_noschema_value__dbzx-caching.json",
            Some(fixture(
                "postgresql_purchaseorder_c_noschema_key__dbzx-caching.json",
            )),
            vec![],
            "1",
            json!({"id": 1, "customerid": 123, "orderdate": 1_548_936_781_000_000_i64}),
            "c",
            Some(1_610_716_846_989),
        ),
    ];
    let mut covered = std::collections::BTreeSet::new();
    for (file, key, options, row_key, image, op, source_ts) in cases {
        covered.insert(file);
        let (line, _) = map_es(file, key.as_deref(), &options).unwrap();
        let action: Value = serde_json::from_str(&line).unwrap();
        let version = action.as_object().unwrap().values().next().unwrap()["version"]
            .as_u64()
            .unwrap_or_else(|| panic!("{file}: no version in {line}"));
        let (topic, got_key, got) = row(file, key.as_deref(), &options).unwrap();
        assert_eq!(topic, format!("druid.{TOPIC}"), "{file}");
        assert_eq!(got_key, row_key, "{file}");
        let mut want = flatten(&image);
        let m = want.as_object_mut().unwrap();
        m.insert("__op".into(), json!(op));
        m.insert("__deleted".into(), json!(op == "d"));
        // Always there: null when the envelope has no `source.ts_ms`.
        m.insert("__source_ts_ms".into(), json!(source_ts));
        m.insert("__version".into(), json!(version));
        m.insert("__kafka_offset".into(), json!(42));
        m.insert(
            "__time".into(),
            json!(source_ts.unwrap_or(1_700_000_000_000)),
        );
        assert_eq!(got, want, "{file}");
    }
    // Every change envelope of the fixtures is above (keys and the tombstone are not changes).
    let dir = crate::support::servers::repo().join("tests/fixtures/debezium/envelopes");
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if !name.contains("_key_") && !name.contains("tombstone") {
            assert!(
                covered.contains(name.as_str()),
                "{name} has no expected row"
            );
        }
    }
}
