//! Every recorded Debezium envelope in `tests/fixtures/debezium/` decoded and mapped to the bulk
//! action docs/design.md call for. The expected actions and documents are written out here by
//! hand; semantic values (dates, timestamps, decimals) were checked with Python's `datetime`
//! and `decimal`. No servers needed.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use cdc_sink::connector::{ConnectorConfig, ConnectorSpec};
use cdc_sink::decode::{Decoder, Row, Value as DecodedValue};
use cdc_sink::sink::SinkRecord;
use cdc_sink::sink::elasticsearch::mapping::{Mapped, Mapper};

use crate::support::history::{self, Options};

pub(crate) const TOPIC: &str = "dbserver1.inventory.customers";
const MYSQL_BIN_3: u64 = 3 << 40;

pub(crate) fn fixture(name: &str) -> String {
    let path = crate::support::servers::repo()
        .join("tests/fixtures/debezium/envelopes")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A connector on [`TOPIC`]: `config` (its class and required options) with `extra` options.
pub(crate) fn spec_on_topic(mut config: Value, extra: &[(&str, &str)]) -> ConnectorSpec {
    config["topics"] = json!(TOPIC);
    for (k, v) in extra {
        config[*k] = json!(v);
    }
    let cc = ConnectorConfig::from_json(&json!({"name": "fixtures", "config": config}).to_string())
        .unwrap();
    ConnectorSpec::validate(&cc).unwrap()
}

/// The key (JSON text) and value of one record of [`TOPIC`], as `spec` decodes them.
pub(crate) fn decode(
    spec: &ConnectorSpec,
    value_text: &str,
    key: Option<&str>,
) -> (Option<Row>, DecodedValue) {
    let mut decoder = Decoder::new(spec).unwrap();
    let value = decoder.value(TOPIC, Some(value_text.as_bytes())).unwrap();
    let key = key.map(|k| decoder.key(TOPIC, Some(k.as_bytes())).unwrap().unwrap());
    (key, value)
}

/// A record of [`TOPIC`] at partition 0, offset 42.
pub(crate) fn record<'a>(
    key: Option<&'a Row>,
    value: &'a DecodedValue,
    timestamp_ms: Option<i64>,
) -> SinkRecord<'a> {
    SinkRecord {
        topic: TOPIC,
        kafka_topic: TOPIC,
        partition: 0,
        offset: 42,
        timestamp_ms,
        key,
        value,
        received_ms: 0,
    }
}

/// What the connector does with one record: `Ok((action line, document))`, or
/// `Err("skip: <reason>")`, or `Err(<why it cannot be mapped>)`.
pub(crate) fn map(
    value_file: &str,
    key: Option<&str>,
    extra: &[(&str, &str)],
) -> Result<(String, Option<Value>), String> {
    let spec = spec_on_topic(
        json!({"connector.class": "elasticsearch", "connection.url": "http://es:9200"}),
        extra,
    );
    let es = spec.sink.elasticsearch().unwrap();
    let mut mapper = Mapper::new(std::sync::Arc::new(es.clone()));
    let (key, value) = decode(&spec, &fixture(value_file), key);
    let rec = record(key.as_ref(), &value, None);
    match mapper.map(&rec)? {
        Mapped::Skip(why) => Err(format!("skip: {why}")),
        Mapped::Write(action) => {
            let mut body = Vec::new();
            action.encode(&mut body);
            let text = String::from_utf8(body).unwrap();
            let lines: Vec<&str> = text.strip_suffix('\n').unwrap().split('\n').collect();
            assert!(
                lines.len() <= 2,
                "an action is one or two NDJSON lines: {text}"
            );
            if let Some(d) = lines.get(1) {
                LAST_DOC.with(|l| *l.borrow_mut() = d.to_string());
            }
            let doc = lines
                .get(1)
                .map(|d| serde_json::from_str(d).expect("document line is JSON"));
            Ok((lines[0].to_string(), doc))
        }
    }
}

/// The document line exactly as it goes into the bulk body.
fn map_raw(value_file: &str, key: &str, extra: &[(&str, &str)]) -> String {
    let (_, doc) = map(value_file, Some(key), extra).unwrap();
    assert!(doc.is_some());
    LAST_DOC.with(|d| d.borrow().clone())
}

thread_local! {
    static LAST_DOC: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

fn index_line(id: &str, version: u64) -> String {
    format!(
        r#"{{"index":{{"_index":"{TOPIC}","_id":"{id}","version":{version},"version_type":"external_gte"}}}}"#
    )
}

fn delete_line(id: &str, version: Option<u64>) -> String {
    match version {
        Some(v) => format!(
            r#"{{"delete":{{"_index":"{TOPIC}","_id":"{id}","version":{v},"version_type":"external_gte"}}}}"#
        ),
        None => format!(r#"{{"delete":{{"_index":"{TOPIC}","_id":"{id}"}}}}"#),
    }
}

fn customer(id: i64, first: &str, last: &str, email: &str) -> Value {
    json!({"id": id, "first_name": first, "last_name": last, "email": email})
}

fn assert_index(value_file: &str, key: &str, id: &str, version: u64, doc: Value) {
    let (line, got) =
        map(value_file, Some(key), &[]).unwrap_or_else(|s| panic!("{value_file}: skipped ({s})"));
    assert_eq!(line, index_line(id, version), "{value_file}");
    assert_eq!(got, Some(doc), "{value_file}");
}

#[test]
fn mysql_customer_changes_index_the_after_image_versioned_by_binlog_position() {
    let anne = customer(1004, "Anne", "Kretchmar", "annek@noanswer.org");
    let sally = customer(1001, "Sally", "Thomas", "sally.thomas@acme.com");
    let add = customer(1005, "add", "add", "add");
    let k = |id: i64| json!({"id": id}).to_string();
    assert_index(
        "mysql_customers_c_noschema_value__dbz-serde.json",
        &k(1004),
        "1004",
        MYSQL_BIN_3 + 154,
        anne.clone(),
    );
    assert_index(
        "mysql_customers_c_withschema_value__dbz-serde.json",
        &k(1004),
        "1004",
        MYSQL_BIN_3 + 154,
        anne.clone(),
    );
    assert_index(
        "mysql_customers_c_noschema_value__rw-log-l05.json",
        &k(1005),
        "1005",
        MYSQL_BIN_3 + 392,
        add.clone(),
    );
    assert_index(
        "mysql_customers_c_withschema_value__rw-log-l05.json",
        &k(1005),
        "1005",
        MYSQL_BIN_3 + 392,
        add,
    );
    assert_index(
        "mysql_customers_r_noschema_value__dbzx-wasm.json",
        &k(1004),
        "1004",
        MYSQL_BIN_3 + 797,
        anne.clone(),
    );
    // The docs' key record (schema name with an unresolved `{context}`) gives the same id.
    let any_key = fixture("mysql_customers_any_withschema_key__dbzdoc.json");
    assert_index(
        "mysql_customers_r_noschema_value__rw-log-l01.json",
        &any_key,
        "1001",
        MYSQL_BIN_3 + 157,
        sally.clone(),
    );
    assert_index(
        "mysql_customers_r_withschema_value__rw-log-l01.json",
        &k(1001),
        "1001",
        MYSQL_BIN_3 + 157,
        sally,
    );
    // Debezium 0.x (the tutorial's record) has no `connector`: the binlog fields still version it.
    assert_index(
        "mysql_customers_r_withschema_value__dbzdoc-tutorial.json",
        &fixture("mysql_customers_r_withschema_key__dbzdoc-tutorial.json"),
        "1004",
        MYSQL_BIN_3 + 154,
        anne.clone(),
    );
    // The docs' record names its connector `{context}`: not a known connector, so the Kafka offset.
    assert_index(
        "mysql_customers_c_withschema_value__dbzdoc.json",
        &k(1004),
        "1004",
        42,
        anne.clone(),
    );
    assert_index(
        "mysql_customers_u_noschema_value__dbz-serde.json",
        &k(1004),
        "1004",
        MYSQL_BIN_3 + 154,
        anne.clone(),
    );
    assert_index(
        "mysql_customers_u_noschema_value__dbz-serde-unknownprop.json",
        &k(1004),
        "1004",
        MYSQL_BIN_3 + 154,
        json!({"id": 1004, "first_name": "Anne", "last_name": "Kretchmar", "middle_name": "L", "email": "annek@noanswer.org"}),
    );
    assert_index(
        "mysql_customers_u_noschema_value__dbzx-wasm.json",
        &k(1001),
        "1001",
        MYSQL_BIN_3 + 1041,
        customer(1001, "Sarah", "Thomas", "sally.thomas@acme.com"),
    );
    let anne1 = customer(1004, "Anne1", "Kretchmar", "annek@noanswer.org");
    assert_index(
        "mysql_customers_u_noschema_value__rw-log-l06.json",
        &k(1004),
        "1004",
        MYSQL_BIN_3 + 722,
        anne1.clone(),
    );
    assert_index(
        "mysql_customers_u_withschema_value__rw-log-l06.json",
        &fixture("mysql_customers_u_withschema_key__dbzdoc-tutorial.json"),
        "1004",
        MYSQL_BIN_3 + 722,
        anne1,
    );
    // Paimon's test record has an empty binlog file name: no position, so the Kafka offset.
    assert_index(
        "mysql_test_c_noschema_value__paimon.json",
        &k(1),
        "1",
        42,
        json!({"id": 1, "value": "A"}),
    );
}

#[test]
#[allow(clippy::approx_constant)]
fn postgres_changes_are_versioned_by_commit_order_and_pass_schemaless_values_through() {
    let k = |id: i64| json!({"id": id}).to_string();
    assert_index(
        "postgresql_customers_c_withschema_value__dbzdoc.json",
        &k(1),
        "1",
        // `sequence` ["24023119","24023128"]: four times the last commit LSN, plus one (streamed).
        4 * 24_023_119 + 1,
        customer(1, "Anne", "Kretchmar", "annek@noanswer.org"),
    );
    // Without a schema, the Decimal stays base64 and the MicroTimestamp a number.
    assert_index(
        "postgresql_orderline_c_noschema_value__dbzx-caching-1.json",
        &fixture("postgresql_orderline_c_noschema_key__dbzx-caching-1.json"),
        "1",
        34_251_136,
        json!({"id": 1, "item": "Debezium in Action", "quantity": 2, "status": "ENTERED", "totalprice": "D54=", "order_id": 1}),
    );
    assert_index(
        "postgresql_orderline_u_noschema_value__dbzx-caching-2.json",
        &fixture("postgresql_orderline_u_noschema_key__dbzx-caching-2.json"),
        "2",
        34_251_752,
        json!({"id": 2, "item": "Debezium for Dummies", "quantity": 1, "status": "CANCELLED", "totalprice": "C7c=", "order_id": 1}),
    );
    assert_index(
        "postgresql_purchaseorder_c_noschema_value__dbzx-caching.json",
        &fixture("postgresql_purchaseorder_c_noschema_key__dbzx-caching.json"),
        "1",
        34_250_896,
        json!({"id": 1, "customerid": 123, "orderdate": 1_548_936_781_000_000i64}),
    );
    assert_index(
        "postgresql_products_c_noschema_value__flink-l12.json",
        &k(110),
        "110",
        34_132_560,
        json!({"id": 110, "name": "jacket", "description": "water resistent white wind breaker", "weight": 0.2}),
    );
    assert_index(
        "postgresql_products_r_noschema_value__flink-l01.json",
        &k(101),
        "101",
        34_078_720,
        json!({"id": 101, "name": "scooter", "description": "Small 2-wheel scooter", "weight": 3.14}), // the row's value, not π
    );
    assert_index(
        "postgresql_products_u_noschema_value__flink-l10.json",
        &k(106),
        "106",
        34_131_104,
        json!({"id": 106, "name": "hammer", "description": "18oz carpenter hammer", "weight": 1.0}),
    );
}

#[test]
fn postgres_snapshot_without_key_takes_the_id_from_pk_fields() {
    let (line, doc) = map(
        "postgresql_customer_r_withschema_value__rw-bugbash.json",
        None,
        &[("pk.fields", "c_w_id,c_d_id,c_id")],
    )
    .unwrap();
    // A snapshot read of a fresh snapshot (`sequence` [null, "24363832"]): four times its LSN.
    assert_eq!(line, index_line("1|1|1", 4 * 24_363_832));
    let doc = doc.unwrap();
    assert_eq!(doc["c_credit_lim"], json!(50000.0));
    assert_eq!(doc["c_since"], json!("2015-11-22 00:00:00"));
    assert_eq!(doc.as_object().unwrap().len(), 22);
    // Without pk.fields (and no key) the record cannot be mapped.
    assert_eq!(
        map(
            "postgresql_customer_r_withschema_value__rw-bugbash.json",
            None,
            &[]
        ),
        Err("record has no key: set pk.fields, or key.ignore=true".to_string())
    );
}

#[test]
fn deletes_delete_or_soft_delete_and_tombstones_follow_behavior_on_null_values() {
    let k1006 = json!({"id": 1006}).to_string();
    for file in [
        "mysql_customers_d_noschema_value__rw-log-l10.json",
        "mysql_customers_d_withschema_value__rw-log-l10.json",
    ] {
        let (line, doc) = map(file, Some(&k1006), &[]).unwrap();
        assert_eq!(
            line,
            delete_line("1006", Some(MYSQL_BIN_3 + 1831)),
            "{file}"
        );
        assert_eq!(doc, None);
        let (line, doc) = map(file, Some(&k1006), &[("delete.mode", "soft")]).unwrap();
        assert_eq!(line, index_line("1006", MYSQL_BIN_3 + 1831), "{file}");
        assert_eq!(
            doc,
            Some(
                json!({"id": 1006, "first_name": "add1", "last_name": "add2", "email": "add1", "__deleted": true})
            )
        );
    }
    let (line, _) = map(
        "postgresql_products_d_noschema_value__flink-l16.json",
        Some(r#"{"id":111}"#),
        &[],
    )
    .unwrap();
    assert_eq!(line, delete_line("111", Some(34_133_800)));

    let key = fixture("mysql_customers_d_withschema_key__dbzdoc-tutorial.json");
    let tombstone = "mysql_customers_tombstone_withschema_value__dbzdoc-tutorial.json";
    assert_eq!(
        map(tombstone, Some(&key), &[]),
        Err("skip: tombstone".into())
    );
    let (line, doc) = map(
        tombstone,
        Some(&key),
        &[("behavior.on.null.values", "delete")],
    )
    .unwrap();
    assert_eq!((line, doc), (delete_line("1004", None), None));
    // ExtractNewRecordState with Debezium 3.2's default (`tombstone`): the delete event becomes
    // a null value, which deletes at the event's version; Debezium's tombstone is dropped.
    let unwrap = [
        ("transforms", "unwrap"),
        (
            "transforms.unwrap.type",
            "io.debezium.transforms.ExtractNewRecordState",
        ),
        ("behavior.on.null.values", "delete"),
    ];
    assert_eq!(
        map(tombstone, Some(&key), &unwrap),
        Err("skip: tombstone".into())
    );
    let d1006 = "mysql_customers_d_noschema_value__rw-log-l10.json";
    assert_eq!(
        map(d1006, Some(&k1006), &unwrap).unwrap().0,
        delete_line("1006", Some(MYSQL_BIN_3 + 1831))
    );
    // Legacy `delete.handling.mode=drop` (Debezium before 3.2): deletes are dropped.
    let mut legacy = unwrap.to_vec();
    legacy.push(("transforms.unwrap.delete.handling.mode", "drop"));
    assert_eq!(
        map(d1006, Some(&k1006), &legacy),
        Err("skip: delete_dropped".into())
    );
    // `none` keeps the delete event as a null value: deleted, even though drop.tombstones
    // (default true) drops Debezium's tombstone.
    legacy[3] = ("transforms.unwrap.delete.handling.mode", "none");
    assert_eq!(
        map(d1006, Some(&k1006), &legacy).unwrap().0,
        delete_line("1006", Some(MYSQL_BIN_3 + 1831))
    );
    assert_eq!(
        map(tombstone, Some(&key), &legacy),
        Err("skip: tombstone".into())
    );
}

#[test]
fn add_fields_and_unwrap_rewrite_add_metadata() {
    let k = json!({"id": 1005}).to_string();
    let (_, doc) = map(
        "mysql_customers_c_withschema_value__rw-log-l05.json",
        Some(&k),
        &[(
            "add.fields",
            "op,ts_ms,source.ts_ms,table,source.file,source.gtid",
        )],
    )
    .unwrap();
    assert_eq!(
        doc,
        Some(
            json!({"id": 1005, "first_name": "add", "last_name": "add", "email": "add",
            "__op": "c", "__ts_ms": 1_661_328_018_647i64, "__source_ts_ms": 1_661_328_018_000i64, "__table": "customers",
            "__source_file": "mysql-bin.000003", "__source_gtid": null})
        )
    );
    let rewrite = [
        ("transforms", "unwrap"),
        (
            "transforms.unwrap.type",
            "io.debezium.transforms.ExtractNewRecordState",
        ),
        ("transforms.unwrap.delete.handling.mode", "rewrite"),
        ("transforms.unwrap.add.fields", "op"),
        ("transforms.unwrap.add.fields.prefix", "_"),
    ];
    let (_, live) = map(
        "mysql_customers_c_noschema_value__rw-log-l05.json",
        Some(&k),
        &rewrite,
    )
    .unwrap();
    assert_eq!(
        live,
        Some(
            json!({"id": 1005, "first_name": "add", "last_name": "add", "email": "add", "_op": "c", "__deleted": false})
        )
    );
    let (line, gone) = map(
        "mysql_customers_d_noschema_value__rw-log-l10.json",
        Some(r#"{"id":1006}"#),
        &rewrite,
    )
    .unwrap();
    assert_eq!(line, index_line("1006", MYSQL_BIN_3 + 1831));
    assert_eq!(
        gone,
        Some(
            json!({"id": 1006, "first_name": "add1", "last_name": "add2", "email": "add1", "_op": "d", "__deleted": true})
        )
    );
}

/// The Paimon all-types rows' date, time, JSON and point columns as documents hold them.
pub(crate) fn paimon_semantic_columns() -> Value {
    json!({
            "_date": "2023-03-23",
            "_datetime": "2023-03-23T14:30:05.000Z",
            "_datetime3": "2023-03-23T14:30:05.123Z",
            "_datetime6": "2023-03-23T14:30:05.123456Z",
            "_datetime_p": "2023-03-24T14:30:00.000Z",
            "_datetime_p2": "2023-03-24T14:30:05.120Z",
            "_json": {"a": "b"},
            "_time": "10:13:23.000000",
            "_point": {"lat": 1.0, "lon": 1.0},
    })
}

/// The Paimon all-types snapshot row's decimals (JsonConverter `decimal.format=NUMERIC`) as
/// documents hold them: the exact digits of the JSON numbers, not what a double would make of
/// them.
pub(crate) fn paimon_snapshot_decimals() -> Value {
    json!({
        "pt": "1.1",
        "_bigint_unsigned": "20000000000", "_bigint_unsigned_zerofill": "30000000000", "_serial": "40000000000",
        "_numeric": "12345.110", "_numeric_unsigned": "12345.220", "_numeric_unsigned_zerofill": "12345.330",
        "_fixed": "123456789876543212345678987654321.110",
        "_fixed_unsigned": "123456789876543212345678987654321.220",
        "_fixed_unsigned_zerofill": "123456789876543212345678987654321.330",
        "_decimal": "11111", "_decimal_unsigned": "22222", "_decimal_unsigned_zerofill": "33333",
        "_big_decimal": "2222222222222222300000001111.1234567890",
    })
}

/// `doc` with `changes` applied.
pub(crate) fn with(mut doc: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().unwrap() {
        doc[k] = v.clone();
    }
    doc
}

/// `after` of `file` with `changes` applied: what the document must be.
pub(crate) fn after_with(file: &str, changes: Value) -> Value {
    let v: Value = serde_json::from_str(&fixture(file)).unwrap();
    let mut after = v["payload"]["after"].clone();
    for (k, val) in changes.as_object().unwrap() {
        assert!(after.get(k).is_some(), "{file} has no column {k}");
        after[k] = val.clone();
    }
    after
}

#[test]
fn mysql_all_types_decode_every_semantic_type() {
    // Snapshot read with JsonConverter decimal.format=NUMERIC (decimals as JSON numbers).
    let file = "mysql_all_types_table_r_withschema_value__paimon-alltype.json";
    let (line, doc) = map(file, Some(r#"{"_id":1}"#), &[]).unwrap();
    assert_eq!(line, index_line("1", 42));
    let expected = after_with(file, paimon_snapshot_decimals());
    let expected = with(expected, paimon_semantic_columns());
    assert_eq!(doc.as_ref(), Some(&expected));
    // Unchanged: ZonedTimestamp, Year, Enum, EnumSet, bytes (base64), Geometry, Bits of 64 bits.
    let doc = doc.unwrap();
    assert_eq!(doc["_timestamp"], json!("2023-03-23T22:00:10.123456Z"));
    assert_eq!(doc["_bit"], json!("xwcAAAAAAAA="));
    assert_eq!(doc["_bin"], json!("Ynl0ZXMAAAAAAA=="));
    assert_eq!(doc["_geometry"]["srid"], Value::Null);

    // decimal.format=number: the same exact digits, as JSON numbers.
    let raw = map_raw(
        file,
        r#"{"_id":1}"#,
        &[("decimal.format", "number"), ("bits.format", "number")],
    );
    assert!(raw.contains(r#""_numeric":12345.110,"#), "{raw}");
    assert!(
        raw.contains(r#""_fixed":123456789876543212345678987654321.110,"#),
        "{raw}"
    );
    assert!(
        raw.contains(r#""_big_decimal":2222222222222222300000001111.1234567890,"#),
        "{raw}"
    );
    assert!(
        raw.contains(r#""_bit":"xwcAAAAAAAA=""#),
        "64 bits do not fit a number: still base64: {raw}"
    );
}

#[test]
fn mysql_all_types_with_string_decimals_and_nulls() {
    let file = "mysql_all_types_table_c_withschema_value__paimon-avroalltype-1.json";
    let key = fixture("mysql_all_types_table_c_withschema_key__paimon-avroalltype-1.json");
    let (line, doc) = map(file, Some(&key), &[]).unwrap();
    assert_eq!(line, index_line("1", (74 << 40) + 13_593));
    let expected = after_with(file, paimon_semantic_columns());
    assert_eq!(doc, Some(expected));

    let file = "mysql_all_types_table_c_withschema_value__paimon-avroalltype-2.json";
    let key = fixture("mysql_all_types_table_c_withschema_key__paimon-avroalltype-2.json");
    let (line, doc) = map(file, Some(&key), &[]).unwrap();
    assert_eq!(line, index_line("2", (73 << 40) + 337_176_435));
    // Nulls stay null whatever their semantic type.
    assert_eq!(doc, Some(after_with(file, json!({}))));
    let doc = doc.unwrap();
    let non_null: BTreeSet<&str> = doc
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(non_null, BTreeSet::from(["_id", "pt", "_serial"]));
}

/// Every recorded value decodes alike in the decoder's single pass (`source` read in the
/// envelope's own walk) and through raw slices (the way taken when `add.fields` keeps the whole
/// block), on a topic's first record and again once its schema is known.
#[test]
fn every_value_decodes_alike_with_and_without_the_source_block_kept() {
    let es = json!({"connector.class": "elasticsearch", "connection.url": "http://es:9200"});
    let one_pass = spec_on_topic(es.clone(), &[]);
    let kept = spec_on_topic(es, &[("add.fields", "source.db")]);
    let dir = crate::support::servers::repo().join("tests/fixtures/debezium/envelopes");
    let mut compared = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if !name.contains("_value_") {
            continue;
        }
        let text = fixture(&name);
        let (mut a, mut b) = (
            Decoder::new(&one_pass).unwrap(),
            Decoder::new(&kept).unwrap(),
        );
        for round in ["first", "schema known"] {
            let without = a.value(TOPIC, Some(text.as_bytes()));
            let mut with = b.value(TOPIC, Some(text.as_bytes()));
            if let Ok(DecodedValue::Change(ev)) = &mut with
                && let Some(source) = &mut ev.source
            {
                assert!(
                    source.json.take().is_some(),
                    "{name}: the block was not kept"
                );
            }
            assert_eq!(without, with, "{name}, {round}");
            compared += 1;
        }
    }
    assert!(compared >= 40, "{compared}");
}

/// The same over generated histories, whose schema converts decimals, timestamps and dates
/// (so the after image is converted in the single pass): creates, updates, deletes and
/// tombstones, with and without schema, every record compared.
#[test]
fn generated_histories_decode_alike_with_and_without_the_source_block_kept() {
    let es = json!({"connector.class": "elasticsearch", "connection.url": "http://es:9200"});
    let one_pass = spec_on_topic(es.clone(), &[]);
    let kept = spec_on_topic(es, &[("add.fields", "source.db")]);
    for with_schema in [true, false] {
        let h = history::generate(
            21,
            &Options {
                changes: 3_000,
                keys: 200,
                with_schema,
                ..Options::default()
            },
        );
        let (mut a, mut b) = (
            Decoder::new(&one_pass).unwrap(),
            Decoder::new(&kept).unwrap(),
        );
        let mut changes = 0;
        for (i, rec) in h.records.iter().enumerate() {
            let bytes = rec.value.as_ref().map(String::as_bytes);
            let without = a.value(TOPIC, bytes);
            let mut with = b.value(TOPIC, bytes);
            if let Ok(DecodedValue::Change(ev)) = &mut with {
                changes += 1;
                let source = ev.source.as_mut().expect("a source block");
                assert!(source.json.take().is_some(), "record {i}: not kept");
            }
            assert_eq!(without, with, "record {i} (with schema: {with_schema})");
        }
        assert!(changes > 3_000, "{changes}");
    }
}

#[test]
fn every_fixture_envelope_is_covered_by_a_test_here() {
    let dir = crate::support::servers::repo().join("tests/fixtures/debezium/envelopes");
    let this = include_str!("fixtures.rs");
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            this.contains(&name),
            "{name} is not checked in tests/it/fixtures.rs"
        );
    }
}
