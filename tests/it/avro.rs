//! Avro through a Confluent schema registry (the test registry of `tests/support/registry.rs`):
//! the same documents as JSON, every semantic type, and every failure named.

use std::collections::BTreeMap;
use std::time::Duration;

use apache_avro::types::Value as Avro;
use serde_json::{Value, json};

use cdc_sink::connector::{ConnectorConfig, ConnectorSpec};
use cdc_sink::decode::{Decoder, Value as Decoded};

use crate::support::avro;
use crate::support::history::{self, Options};
use crate::support::kafka::{self, Rec};
use crate::support::registry::Registry;
use crate::support::rest::{self, metric};
use crate::support::{
    assert_failed_at_offset_5, es, servers, start_es_worker, unique, wait_converged,
};

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(crate::support::servers::repo().join(path)).unwrap()
}

/// A decoder with the Avro converter on `registry` for keys and values. Both decoders keep
/// `source`'s whole block (`add.fields` names a field of it), so that it can be compared.
fn avro_decoder(registry: &str) -> Decoder {
    let config = json!({"name": "avro", "config": {"connector.class": "elasticsearch", "topics": "t",
        "connection.url": "http://es:9200", "add.fields": "source.db",
        "key.converter": "io.confluent.connect.avro.AvroConverter",
        "value.converter": "avro", "key.converter.schema.registry.url": registry,
        "value.converter.schema.registry.url": registry}});
    let spec =
        ConnectorSpec::validate(&ConnectorConfig::from_json(&config.to_string()).unwrap()).unwrap();
    Decoder::new(&spec).unwrap()
}

fn json_decoder() -> Decoder {
    let config = json!({"name": "json", "config": {"connector.class": "elasticsearch", "topics": "t",
        "connection.url": "http://es:9200", "add.fields": "source.db"}});
    Decoder::new(
        &ConnectorSpec::validate(&ConnectorConfig::from_json(&config.to_string()).unwrap())
            .unwrap(),
    )
    .unwrap()
}

/// A decoded value as JSON, rows parsed, so that two decodings can be compared.
fn normalized(v: &Decoded) -> Value {
    let row = |r: &Option<cdc_sink::decode::Row>| {
        r.as_ref()
            .map(|r| serde_json::from_str::<Value>(r.as_str()).unwrap())
    };
    match v {
        Decoded::Change(c) => json!({
            "op": c.op.code(), "before": row(&c.before), "after": row(&c.after), "ts_ms": c.ts_ms,
            "source": c.source.as_ref().map(|s| serde_json::from_str::<Value>(s.json.as_ref().unwrap().as_str()).unwrap()),
            "position": c.source.as_ref().map(|s| format!("{:?}", s.position)),
            "ordering": c.source.as_ref().map(|s| format!("{:?}", s.ordering)),
            // What sinks read of `source` besides its JSON and version.
            "source_fields": c.source.as_ref().map(|s| format!(
                "{:?} {:?} {:?} {:?} {:?} {:?}",
                s.connector, s.db, s.schema, s.table, s.ts_ms, s.snapshot
            )),
        }),
        other => json!(format!("{other:?}")),
    }
}

#[test]
fn the_recorded_avro_schema_round_trips() {
    let registry = Registry::start();
    let avsc: Value = serde_json::from_str(&repo_file(
        "tests/fixtures/debezium/avro/mysql_customers_Envelope__rw.avsc",
    ))
    .unwrap();
    let id = registry.register("dbserver1.inventory.customers-value", &avsc.to_string());
    let mut from_avro = avro_decoder(&registry.url);
    let mut from_json = json_decoder();
    let lines = repo_file(
        "tests/fixtures/debezium/sequences/mysql_customers_seq_withschema_value__rw-debezium_log.jsonl",
    );
    let mut n = 0;
    for line in lines.lines().filter(|l| !l.trim().is_empty()) {
        let record: Value = serde_json::from_str(line).unwrap();
        let bytes = avro::encode(id, &avsc, &record["payload"]);
        let a = from_avro.value("t", Some(&bytes)).unwrap();
        let j = from_json.value("t", Some(line.as_bytes())).unwrap();
        assert_eq!(normalized(&a), normalized(&j), "{line}");
        n += 1;
    }
    assert_eq!(n, 10);
    assert_eq!(registry.fetches(id), 1, "one fetch per schema id");
}

#[test]
fn avro_and_json_decode_every_recorded_envelope_with_schema_alike() {
    let registry = Registry::start();
    let mut from_avro = avro_decoder(&registry.url);
    let mut from_json = json_decoder();
    let dir = crate::support::servers::repo().join("tests/fixtures/debezium/envelopes");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        // The paimon snapshot carries decimals as JSON numbers (JsonConverter decimal.format=
        // NUMERIC) under a bytes schema: it has no Avro form.
        if !name.contains("_withschema_")
            || name.contains("tombstone")
            || name.contains("paimon-alltype.json")
        {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let subject = if name.contains("_key_") { "k" } else { "v" };
        let bytes = avro::from_json_record(&registry, &format!("{name}-{subject}"), &text);
        if subject == "k" {
            let a = from_avro.key("t", Some(&bytes)).unwrap().unwrap();
            let j = from_json.key("t", Some(text.as_bytes())).unwrap().unwrap();
            assert_eq!(
                serde_json::from_str::<Value>(a.as_str()).unwrap(),
                serde_json::from_str::<Value>(j.as_str()).unwrap(),
                "{name}"
            );
        } else {
            let a = normalized(&from_avro.value("t", Some(&bytes)).unwrap());
            let mut j = normalized(&from_json.value("t", Some(text.as_bytes())).unwrap());
            // The docs' record has a `source.sequence` its schema does not declare: the Avro form
            // cannot carry what the schema lacks.
            if let (Some(js), Some(avs)) = (j["source"].as_object_mut(), a["source"].as_object()) {
                let before = js.len();
                js.retain(|k, _| avs.contains_key(k));
                if js.len() != before {
                    // The version comes from `sequence` when there is one (docs/versions.md):
                    // the two forms' versions differ by what the Avro form could not carry, and
                    // so does how they are ordered (without it, by each change's own lsn).
                    j["position"] = a["position"].clone();
                    j["ordering"] = a["ordering"].clone();
                }
            }
            assert_eq!(a, j, "{name}");
        }
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} fixtures checked");
}

#[test]
fn every_semantic_type_and_avro_construct_decodes_as_design_says() {
    let schema = json!({"type": "record", "name": "Value", "namespace": "t.s.all", "fields": [
        {"name": "d", "type": {"type": "int", "connect.version": 1, "connect.name": "io.debezium.time.Date"}},
        {"name": "t_ms", "type": {"type": "int", "connect.version": 1, "connect.name": "org.apache.kafka.connect.data.Time", "logicalType": "time-millis"}},
        {"name": "t_us", "type": {"type": "long", "connect.name": "io.debezium.time.MicroTime"}},
        {"name": "t_ns", "type": {"type": "long", "connect.name": "io.debezium.time.NanoTime"}},
        {"name": "ts_ms", "type": {"type": "long", "connect.name": "io.debezium.time.Timestamp"}},
        {"name": "ts_us", "type": {"type": "long", "connect.name": "io.debezium.time.MicroTimestamp"}},
        {"name": "ts_ns", "type": {"type": "long", "connect.name": "io.debezium.time.NanoTimestamp"}},
        {"name": "zoned", "type": {"type": "string", "connect.name": "io.debezium.time.ZonedTimestamp"}},
        {"name": "year", "type": {"type": "int", "connect.name": "io.debezium.time.Year"}},
        {"name": "interval", "type": {"type": "long", "connect.name": "io.debezium.time.MicroDuration"}},
        {"name": "dec", "type": {"type": "bytes", "scale": 2, "precision": 10, "connect.version": 1,
            "connect.parameters": {"scale": "2", "connect.decimal.precision": "10"},
            "connect.name": "org.apache.kafka.connect.data.Decimal", "logicalType": "decimal"}},
        {"name": "vsd", "type": {"type": "record", "name": "VariableScaleDecimal", "namespace": "io.debezium.data",
            "fields": [{"name": "scale", "type": "int"}, {"name": "value", "type": "bytes"}],
            "connect.name": "io.debezium.data.VariableScaleDecimal"}},
        {"name": "json", "type": {"type": "string", "connect.name": "io.debezium.data.Json"}},
        {"name": "dbz_enum", "type": {"type": "string", "connect.parameters": {"allowed": "sad,happy"}, "connect.name": "io.debezium.data.Enum"}},
        {"name": "avro_enum", "type": {"type": "enum", "name": "Mood", "symbols": ["sad", "happy"]}},
        {"name": "enum_set", "type": {"type": "string", "connect.name": "io.debezium.data.EnumSet"}},
        {"name": "uuid", "type": {"type": "string", "connect.name": "io.debezium.data.Uuid"}},
        {"name": "bits", "type": {"type": "bytes", "connect.parameters": {"length": "8"}, "connect.name": "io.debezium.data.Bits"}},
        {"name": "point", "type": {"type": "record", "name": "Point", "namespace": "io.debezium.data.geometry", "fields": [
            {"name": "x", "type": "double"}, {"name": "y", "type": "double"},
            {"name": "wkb", "type": ["null", "bytes"]}, {"name": "srid", "type": ["null", "int"]}],
            "connect.name": "io.debezium.data.geometry.Point"}},
        {"name": "geometry", "type": {"type": "record", "name": "Geometry", "namespace": "io.debezium.data.geometry", "fields": [
            {"name": "wkb", "type": "bytes"}, {"name": "srid", "type": ["null", "int"]}],
            "connect.name": "io.debezium.data.geometry.Geometry"}},
        {"name": "raw", "type": "bytes"},
        {"name": "fixed", "type": {"type": "fixed", "name": "Three", "size": 3}},
        {"name": "l_date", "type": {"type": "int", "logicalType": "date"}},
        {"name": "l_ts_ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "l_ts_us", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "l_time_us", "type": {"type": "long", "logicalType": "time-micros"}},
        {"name": "l_dec", "type": {"type": "fixed", "name": "Dec4", "size": 4, "logicalType": "decimal", "precision": 9, "scale": 3}},
        // Invalid decimals (scale above precision; more digits than a byte holds): the
        // logical type is ignored, as the Avro specification says.
        {"name": "bad_dec", "type": {"type": "bytes", "logicalType": "decimal", "precision": 2, "scale": 3}},
        {"name": "bad_fixed", "type": {"type": "fixed", "name": "Dec1", "size": 1, "logicalType": "decimal", "precision": 3}},
        {"name": "ints", "type": {"type": "array", "items": "int"}},
        {"name": "tags", "type": {"type": "map", "values": "string"}},
        {"name": "nested", "type": {"type": "record", "name": "Nested", "fields": [
            {"name": "a", "type": "int"}, {"name": "b", "type": ["null", "string"]}]}},
        {"name": "none", "type": ["null", "string"], "default": null},
        {"name": "some", "type": ["null", "string"], "default": null},
        {"name": "f32", "type": "float"},
        {"name": "f64", "type": "double"},
        {"name": "flag", "type": "boolean"},
        {"name": "big", "type": "long"}
    ]});
    let registry = Registry::start();
    let id = registry.register("all-value", &schema.to_string());
    let parsed = apache_avro::Schema::parse(&schema).unwrap();
    let rec = |fields: Vec<(&str, Avro)>| {
        Avro::Record(
            fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    };
    let value = rec(vec![
        ("d", Avro::Int(19_783)),
        ("t_ms", Avro::TimeMillis(49_507_123)),
        ("t_us", Avro::Long(49_507_123_456)),
        ("t_ns", Avro::Long(49_507_123_456_789)),
        ("ts_ms", Avro::Long(1_709_300_707_123)),
        ("ts_us", Avro::Long(1_709_300_707_123_456)),
        ("ts_ns", Avro::Long(1_709_300_707_123_456_789)),
        ("zoned", Avro::String("2024-03-01T11:45:07.123456Z".into())),
        ("year", Avro::Int(2024)),
        ("interval", Avro::Long(93_784_500_000)),
        (
            "dec",
            Avro::Decimal(apache_avro::Decimal::from(vec![0x0f, 0x9e])),
        ),
        (
            "vsd",
            rec(vec![
                ("scale", Avro::Int(4)),
                ("value", Avro::Bytes(vec![0x00, 0xbc, 0x61, 0x4e])),
            ]),
        ),
        ("json", Avro::String("{\"a\": [1, 2]}".into())),
        ("dbz_enum", Avro::String("happy".into())),
        ("avro_enum", Avro::Enum(1, "happy".into())),
        ("enum_set", Avro::String("x,z".into())),
        (
            "uuid",
            Avro::String("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
        ),
        ("bits", Avro::Bytes(vec![0xa5])),
        (
            "point",
            rec(vec![
                ("x", Avro::Double(1.5)),
                ("y", Avro::Double(2.5)),
                (
                    "wkb",
                    Avro::Union(1, Box::new(Avro::Bytes(vec![1, 1, 0, 0, 0]))),
                ),
                ("srid", Avro::Union(0, Box::new(Avro::Null))),
            ]),
        ),
        (
            "geometry",
            rec(vec![
                ("wkb", Avro::Bytes(vec![1, 2, 3])),
                ("srid", Avro::Union(1, Box::new(Avro::Int(4326)))),
            ]),
        ),
        ("raw", Avro::Bytes(vec![1, 2, 255])),
        ("fixed", Avro::Fixed(3, vec![97, 98, 99])),
        ("l_date", Avro::Date(0)),
        ("l_ts_ms", Avro::TimestampMillis(-1)),
        ("l_ts_us", Avro::TimestampMicros(1)),
        ("l_time_us", Avro::TimeMicros(3_723_000_001)),
        (
            "l_dec",
            Avro::Decimal(apache_avro::Decimal::from(vec![0xff, 0xff, 0xff, 0xfb])),
        ),
        ("bad_dec", Avro::Bytes(vec![0x0f, 0x9e])),
        ("bad_fixed", Avro::Fixed(1, vec![0x7b])),
        (
            "ints",
            Avro::Array(vec![Avro::Int(1), Avro::Int(2), Avro::Int(3)]),
        ),
        (
            "tags",
            Avro::Map(
                [("k".to_string(), Avro::String("v".into()))]
                    .into_iter()
                    .collect(),
            ),
        ),
        (
            "nested",
            rec(vec![
                ("a", Avro::Int(1)),
                ("b", Avro::Union(0, Box::new(Avro::Null))),
            ]),
        ),
        ("none", Avro::Union(0, Box::new(Avro::Null))),
        ("some", Avro::Union(1, Box::new(Avro::String("x".into())))),
        ("f32", Avro::Float(1.5)),
        ("f64", Avro::Double(2.0)),
        ("flag", Avro::Boolean(true)),
        ("big", Avro::Long(9_007_199_254_740_993)),
    ]);
    let datum = apache_avro::writer::datum::GenericDatumWriter::builder(&parsed)
        .build()
        .unwrap()
        .write_value_to_vec(value)
        .unwrap();
    let mut bytes = vec![0];
    bytes.extend(id.to_be_bytes());
    bytes.extend(datum);
    let row = avro_decoder(&registry.url)
        .key("t", Some(&bytes))
        .unwrap()
        .unwrap();
    // The whole document, written out by hand from docs/design.md.
    let expected = r#"{"d":"2024-03-01","t_ms":"13:45:07.123","t_us":"13:45:07.123456","t_ns":"13:45:07.123456789",
        "ts_ms":"2024-03-01T13:45:07.123Z","ts_us":"2024-03-01T13:45:07.123456Z","ts_ns":"2024-03-01T13:45:07.123456789Z",
        "zoned":"2024-03-01T11:45:07.123456Z","year":2024,"interval":93784500000,"dec":"39.98","vsd":"1234.5678",
        "json":{"a":[1,2]},"dbz_enum":"happy","avro_enum":"happy","enum_set":"x,z",
        "uuid":"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11","bits":"pQ==","point":{"lat":2.5,"lon":1.5},
        "geometry":{"wkb":"AQID","srid":4326},"raw":"AQL/","fixed":"YWJj","l_date":"1970-01-01",
        "l_ts_ms":"1969-12-31T23:59:59.999Z","l_ts_us":"1970-01-01T00:00:00.000001Z","l_time_us":"01:02:03.000001",
        "l_dec":"-0.005","bad_dec":"D54=","bad_fixed":"ew==","ints":[1,2,3],"tags":{"k":"v"},"nested":{"a":1,"b":null},"none":null,"some":"x",
        "f32":1.5,"f64":2.0,"flag":true,"big":9007199254740993}"#;
    let expected: String = expected.split('\n').map(str::trim).collect();
    assert_eq!(row.as_str(), expected);
}

/// Avro records of a generated history, keys and values, schemas registered in `registry`.
fn avro_history(registry: &Registry, topic: &str, h: &history::History) -> Vec<Rec<Vec<u8>>> {
    avro::Encoder::new(registry).records(topic, &h.records)
}

fn avro_options(registry: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "key.converter",
            "io.confluent.connect.avro.AvroConverter".into(),
        ),
        (
            "value.converter",
            "io.confluent.connect.avro.AvroConverter".into(),
        ),
        ("key.converter.schema.registry.url", registry.into()),
        ("value.converter.schema.registry.url", registry.into()),
        ("behavior.on.null.values", "delete".into()),
    ]
}

#[test]
fn a_json_topic_and_an_avro_topic_of_the_same_history_give_the_same_index() {
    let h = history::generate(
        41,
        &Options {
            changes: 10_000,
            ..Options::default()
        },
    );
    let registry = Registry::start();
    let (json_topic, avro_topic) = (unique("it-parity-json"), unique("it-parity-avro"));
    kafka::create_topic(&json_topic, 4);
    kafka::create_topic(&avro_topic, 4);
    kafka::produce(&json_topic, &h.records);
    let avro_records = avro_history(&registry, &avro_topic, &h);
    kafka::produce_bytes(&avro_topic, &avro_records);
    let (jw, json_group) = start_es_worker(
        "it-parity-json",
        &json_topic,
        &servers().es,
        &[("behavior.on.null.values", "delete")],
    );
    let opts = avro_options(&registry.url);
    let mut extra: Vec<(&str, &str)> = opts.iter().map(|(k, v)| (*k, v.as_str())).collect();
    extra.push(("tasks.max", "2"));
    let (aw, avro_group) = start_es_worker("it-parity-avro", &avro_topic, &servers().es, &extra);
    wait_converged(
        &json_topic,
        &h.expected,
        &json_group,
        4,
        Duration::from_secs(180),
    );
    wait_converged(
        &avro_topic,
        &h.expected,
        &avro_group,
        4,
        Duration::from_secs(180),
    );
    // Same documents, same versions.
    assert_eq!(es::documents(&json_topic), es::documents(&avro_topic));
    // Two tasks, many records: each schema fetched once.
    for id in 1..=2 {
        assert_eq!(registry.fetches(id), 1, "schema {id}");
    }
    assert!(jw.stop().success());
    assert!(aw.stop().success());
}

/// The Druid connector on Avro: a JSON topic and an Avro topic of the same history give the
/// same committed rows (images, ops, versions, times), key by key, in order.
#[test]
fn a_json_topic_and_an_avro_topic_of_the_same_history_give_the_same_druid_rows() {
    use crate::support::worker::{Worker, connector_file};
    let h = history::generate(
        42,
        &Options {
            changes: 3_000,
            ..Options::default()
        },
    );
    let registry = Registry::start();
    let (json_topic, avro_topic) = (unique("it-druid-json"), unique("it-druid-avro"));
    for t in [&json_topic, &avro_topic] {
        kafka::create_topic(t, 4);
        kafka::create_topic(&format!("druid.{t}"), 4);
    }
    kafka::produce(&json_topic, &h.records);
    kafka::produce_bytes(&avro_topic, &avro_history(&registry, &avro_topic, &h));
    let (json_name, avro_name) = (unique("it-druid-json"), unique("it-druid-avro"));
    let json_file = connector_file(
        &json_name,
        &json!({"connector.class": "druid", "topics": json_topic}),
    );
    let mut avro_config = json!({"connector.class": "druid", "topics": avro_topic});
    for (k, v) in avro_options(&registry.url) {
        if k != "behavior.on.null.values" {
            avro_config[k] = json!(v);
        }
    }
    let avro_file = connector_file(&avro_name, &avro_config);
    let w = Worker::start_with(&[&json_file, &avro_file], &[]);
    let by_key = |topic: &str, name: &str| {
        let group = format!("connect-{name}");
        let end = kafka::end_offsets(topic, 4);
        let start = std::time::Instant::now();
        while kafka::committed(&group, topic, 4) != end {
            assert!(
                start.elapsed() < Duration::from_secs(180),
                "{name} did not commit {end:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let mut rows: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
        for (_, key, row) in kafka::read_committed_rows(&format!("druid.{topic}"), 4) {
            rows.entry(key).or_default().push(row);
        }
        rows
    };
    let from_json = by_key(&json_topic, &json_name);
    let from_avro = by_key(&avro_topic, &avro_name);
    assert_eq!(
        from_json.values().map(Vec::len).sum::<usize>(),
        h.records.iter().filter(|r| r.value.is_some()).count(),
        "a row per change"
    );
    assert_eq!(from_json, from_avro);
    assert!(w.stop().success());
}

#[test]
fn an_unavailable_schema_registry_pauses_the_task_and_loses_nothing() {
    let h = history::generate(
        42,
        &Options {
            changes: 2_000,
            keys: 300,
            partitions: 2,
            ..Options::default()
        },
    );
    let registry = Registry::start();
    let topic = unique("it-registry-down");
    kafka::create_topic(&topic, 2);
    let records = avro_history(&registry, &topic, &h);
    let half = records.len() / 2;
    // Failing (503) from the start: the worker waits for it, then goes on.
    registry.fail(Some(503));
    kafka::produce_bytes(&topic, &records[..half]);
    let opts = avro_options(&registry.url);
    let extra: Vec<(&str, &str)> = opts.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (mut w, group) = start_es_worker("it-registry-down", &topic, &servers().es, &extra);
    let line = w.wait_log("waiting, consumption paused", Duration::from_secs(60));
    assert!(
        line.contains("schema registry") && line.contains("503"),
        "{line}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        es::sources(&topic).is_empty(),
        "nothing can be decoded while the registry fails"
    );
    registry.fail(None);
    w.wait_log("going on", Duration::from_secs(60));

    // Unreachable mid-stream, when a new schema version appears: the same again.
    let mut enc = avro::Encoder::new(&registry);
    enc.next_version = true;
    let rest = enc.records(&topic, &h.records[half..]);
    registry.drop_connections(true);
    kafka::produce_bytes(&topic, &rest);
    std::thread::sleep(Duration::from_secs(5));
    registry.drop_connections(false);
    wait_converged(&topic, &h.expected, &group, 2, Duration::from_secs(180));
    let log = w.log_text();
    assert!(
        log.contains("unreachable"),
        "the wait for an unreachable registry is logged:\n{log}"
    );
    assert!(w.stop().success());
}

/// `errors.retry.timeout` bounds how long a record waits for a failing registry: the task fails
/// naming it once the time is up (2 s here), and at once with 0 (Kafka Connect's "no retry");
/// nothing is committed past the record either way.
#[test]
fn errors_retry_timeout_fails_the_task_once_the_registry_has_failed_that_long() {
    use crate::support::es_connector;
    use crate::support::worker::{Worker, connector_file};
    let h = history::generate(
        43,
        &Options {
            changes: 20,
            keys: 10,
            partitions: 1,
            ..Options::default()
        },
    );
    let registry = Registry::start();
    let opts = avro_options(&registry.url);
    let mut files = Vec::new();
    let mut cases = Vec::new();
    for timeout in ["2000", "0"] {
        let topic = unique("it-retry-timeout");
        kafka::create_topic(&topic, 1);
        kafka::produce_bytes(&topic, &avro_history(&registry, &topic, &h));
        let name = unique("it-retry-timeout");
        let mut extra: Vec<(&str, &str)> = opts.iter().map(|(k, v)| (*k, v.as_str())).collect();
        extra.push(("errors.retry.timeout", timeout));
        files.push(connector_file(
            &name,
            &es_connector(&topic, &servers().es, &extra),
        ));
        cases.push((topic, name, timeout));
    }
    registry.fail(Some(503));
    let refs: Vec<&std::path::PathBuf> = files.iter().collect();
    let w = Worker::start_with(&refs, &[]);
    for (topic, name, timeout) in &cases {
        let start = std::time::Instant::now();
        let line = loop {
            let log = w.log_text();
            if let Some(l) = log
                .lines()
                .find(|l| l.contains("task failed") && l.contains(name.as_str()))
            {
                break l.to_string();
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{name} (errors.retry.timeout={timeout}) did not fail:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let said = if *timeout == "0" {
            "not retried (errors.retry.timeout=0)".to_string()
        } else {
            format!("gave up after errors.retry.timeout={timeout} ms")
        };
        assert!(line.contains(&said) && line.contains("503"), "{line}");
        let waited = w
            .log_text()
            .lines()
            .any(|l| l.contains("waiting, consumption paused") && l.contains(name.as_str()));
        assert_eq!(waited, *timeout != "0", "{name}: {line}");
        assert_eq!(
            kafka::committed(&format!("connect-{name}"), topic, 1),
            BTreeMap::new(),
            "nothing committed past the record"
        );
    }
    assert!(
        !w.stop().success(),
        "a worker whose tasks failed exits non-zero"
    );
}

/// The sink's own part of freshness starts when a record is decoded, and a record's decoding
/// can wait seconds for the schema registry (a schema not seen before). The clock is read once
/// per burst of records: after the burst's first record is decoded, and again after any record
/// whose decoding waited. Here a registry answering 2.5 s late holds up the first record (its key
/// and value schemas) and, in the middle of the same burst, the first record of new schema
/// versions: every record waits in cdc-sink's share; in the sink's own part, only the records
/// the sink held while the task waited.
#[test]
fn a_slow_schema_registry_counts_in_the_sinks_own_part_only_for_records_it_held() {
    let h = history::generate(
        43,
        &Options {
            changes: 100,
            keys: 40,
            partitions: 1,
            ..Options::default()
        },
    );
    let registry = Registry::start();
    let topic = unique("it-registry-slow");
    kafka::create_topic(&topic, 1);
    // The index made beforehand: every record is of one burst, so the first bulk request goes
    // out after the second wait, and creating the index then counts in the writes' own part.
    // In the whole suite, where Elasticsearch creates other tests' indices meanwhile, no write
    // was quick twice in five runs today; alone (four CPU hogs beside it too) it passed, so the
    // index's creation is the likely cause, not a confirmed one.
    es::create_index(&topic, &json!({}));
    let half = h.records.len() / 2;
    let mut records = avro::Encoder::new(&registry).records(&topic, &h.records[..half]);
    let mut next = avro::Encoder::new(&registry);
    next.next_version = true;
    records.extend(next.records(&topic, &h.records[half..]));
    kafka::produce_bytes(&topic, &records);
    registry.slow(Duration::from_millis(2500));
    let opts = avro_options(&registry.url);
    let mut extra: Vec<(&str, &str)> = opts.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // No statistics event (every 5 s by default), which ends a burst, during the waits: every
    // record is of the first burst.
    extra.push(("consumer.override.statistics.interval.ms", "600000"));
    let (mut w, group) = start_es_worker("it-registry-slow", &topic, &servers().es, &extra);
    wait_converged(&topic, &h.expected, &group, 1, Duration::from_secs(120));
    // Four schemas fetched: two for the first record, two in the middle.
    assert_eq!((1..=5).map(|id| registry.fetches(id)).sum::<usize>(), 4);
    let text = rest::metrics(&w.rest_url());
    let name = group.trim_start_matches("connect-");
    let m = |n: &str, le: Option<&str>| {
        let mut labels = vec![("connector", name)];
        labels.extend(le.map(|le| ("le", le)));
        metric(&text, n, &labels).unwrap()
    };
    let writes = m("cdc_sink_freshness_received_to_ack_seconds_count", None);
    // (Fewer than the records: a later write of a document in the same batch supersedes one.)
    assert!(writes >= 20.0, "{writes} writes counted");
    assert_eq!(
        m("cdc_sink_freshness_kafka_to_ack_seconds_count", None),
        writes
    );
    // Every record waited in cdc-sink's share.
    assert_eq!(
        m(
            "cdc_sink_freshness_kafka_to_ack_seconds_bucket",
            Some("2.5")
        ),
        0.0
    );
    // In the sink's own part: the writes of records decoded after the second wait, not those
    // held in the sink during it.
    let quick = m(
        "cdc_sink_freshness_received_to_ack_seconds_bucket",
        Some("2.5"),
    );
    assert!(
        quick >= 1.0 && quick < writes,
        "{quick} of {writes} writes under 2.5 s in the sink's own part"
    );
    assert!(w.stop().success());
}

/// Five good Avro records, `bad` at offset 5, four good after; returns the failure log line.
fn avro_fails_at_offset_5(bad: impl Fn(&Registry, Vec<u8>) -> Vec<u8>) -> String {
    let registry = Registry::start();
    let topic = unique("it-avro-bad");
    kafka::create_topic(&topic, 1);
    let good = |i: i64| {
        let v = json!({"schema": {"type": "struct", "name": "t.Envelope", "fields": [
            {"type": "struct", "optional": true, "name": "t.Value", "field": "before", "fields": [{"type": "int64", "field": "id"}]},
            {"type": "struct", "optional": true, "name": "t.Value", "field": "after", "fields": [{"type": "int64", "field": "id"}]},
            {"type": "string", "field": "op"}]},
            "payload": {"before": null, "after": {"id": i}, "op": "c"}});
        let k = json!({"schema": {"type": "struct", "name": "t.Key", "fields": [{"type": "int64", "field": "id"}]}, "payload": {"id": i}});
        (
            avro::from_json_record(&registry, "k", &k.to_string()),
            avro::from_json_record(&registry, "v", &v.to_string()),
        )
    };
    let rec = |(k, v): (Vec<u8>, Vec<u8>)| Rec {
        partition: 0,
        key: Some(k),
        value: Some(v),
    };
    let mut recs: Vec<Rec<Vec<u8>>> = (0..5).map(|i| rec(good(i))).collect();
    let (k5, v5) = good(5);
    recs.push(rec((k5, bad(&registry, v5))));
    recs.extend((6..10).map(|i| rec(good(i))));
    kafka::produce_bytes(&topic, &recs);
    let opts = avro_options(&registry.url);
    let extra: Vec<(&str, &str)> = opts.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (mut w, group) = start_es_worker("it-avro-bad", &topic, &servers().es, &extra);
    let line = assert_failed_at_offset_5(&mut w, &topic, &group);
    assert_eq!(es::sources(&topic).len(), 5);
    line
}

#[test]
fn an_unknown_schema_id_fails_the_task_at_that_record() {
    let line = avro_fails_at_offset_5(|_, mut v| {
        v[1..5].copy_from_slice(&9_999u32.to_be_bytes());
        v
    });
    assert!(line.contains("unknown schema id 9999"), "{line}");
}

#[test]
fn a_wrong_magic_byte_fails_the_task_at_that_record() {
    let line = avro_fails_at_offset_5(|_, mut v| {
        v[0] = 7;
        v
    });
    assert!(line.contains("the first byte is 7, not 0"), "{line}");
}

#[test]
fn truncated_avro_data_fails_the_task_at_that_record() {
    let line = avro_fails_at_offset_5(|_, mut v| {
        v.truncate(v.len() - 2);
        v
    });
    assert!(
        line.contains("does not decode with schema id") && line.contains("ends early"),
        "{line}"
    );
}

#[test]
fn the_inventory_schemas_register_and_compile() {
    let registry = Registry::start();
    let out = std::process::Command::new(
        crate::support::servers::repo().join("scripts/register-schemas"),
    )
    .arg(&registry.url)
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let subjects: Vec<String> = reqwest::blocking::get(format!("{}/subjects", registry.url))
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(subjects.len(), 20, "{subjects:?}");
    for s in &subjects {
        assert!(
            s.starts_with("pg.inventory.") || s.starts_with("mariadb.inventory."),
            "{s}"
        );
        let v: Value =
            reqwest::blocking::get(format!("{}/subjects/{s}/versions/latest", registry.url))
                .unwrap()
                .json()
                .unwrap();
        cdc_sink::decode::avro::plan::compile(v["schema"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
}

/// A MySQL-shaped change with schema (JSON, to be encoded to Avro) on row `id` at binlog `pos`,
/// in partition `id % 2`; `snapshot`: the `source.snapshot` mark.
fn mysql_change(id: i64, op: &str, pos: u64, snapshot: &str, name: &str) -> Rec {
    let row = json!({"type":"struct","optional":true,"name":"it.inventory.items.Value","fields":[
        {"type":"int64","optional":false,"field":"id"},{"type":"string","optional":true,"field":"name"}]});
    let mut before = row.clone();
    before["field"] = json!("before");
    let mut after = row;
    after["field"] = json!("after");
    let schema = json!({"type":"struct","name":"it.inventory.items.Envelope","fields":[before, after,
        {"type":"struct","optional":false,"name":"io.debezium.connector.mysql.Source","field":"source","fields":[
            {"type":"string","optional":false,"field":"connector"},{"type":"string","optional":false,"field":"name"},
            {"type":"int64","optional":false,"field":"ts_ms"},{"type":"string","optional":true,"field":"snapshot"},
            {"type":"string","optional":false,"field":"db"},{"type":"string","optional":true,"field":"table"},
            {"type":"string","optional":false,"field":"file"},{"type":"int64","optional":false,"field":"pos"},
            {"type":"int32","optional":false,"field":"row"}]},
        {"type":"string","optional":false,"field":"op"}]});
    let data = json!({"id": id, "name": name});
    let (b, a) = if op == "d" {
        (data, Value::Null)
    } else {
        (Value::Null, data)
    };
    let payload = json!({"before": b, "after": a, "op": op, "source": {"connector": "mysql", "name": "it",
        "ts_ms": 1_700_000_000_000i64, "snapshot": snapshot, "db": "inventory", "table": "items",
        "file": "mysql-bin.000001", "pos": pos, "row": 0}});
    let key_schema = json!({"type":"struct","name":"it.inventory.items.Key","fields":[
        {"type":"int64","optional":false,"field":"id"}]});
    Rec {
        partition: (id % 2) as i32,
        key: Some(json!({"schema": key_schema, "payload": {"id": id}}).to_string()),
        value: Some(json!({"schema": schema, "payload": payload}).to_string()),
    }
}

/// A table's snapshot ends (its last read, in partition 0) while a read of partition 1 waits
/// for the schema registry: that read was taken from Kafka (the consumer's position is past
/// it) but is not written, and the snapshot's end must wait for it, or its clean-up would
/// remove the document the read is about to write. Partition 1 holds a backlog of `BACKLOG`
/// changes ahead of that read, so that partition 0's few records, the snapshot's end among
/// them, are handled long before it; the read is the last record of partition 1 before the
/// end.
#[test]
fn a_snapshot_end_waits_for_a_read_held_for_the_schema_registry() {
    let registry = Registry::start();
    let topic = unique("it-registry-snapshot");
    kafka::create_topic(&topic, 2);
    let mut enc = avro::Encoder::new(&registry);
    // Rows 1-6 streamed; row 5 (partition 1) is the one whose snapshot read will wait.
    let created: Vec<Rec> = (1..=6)
        .map(|id| mysql_change(id, "c", 100 + id as u64, "false", "old"))
        .collect();
    // (With 100 000, the test took 98 s alone, most of it encoding and decoding the backlog.)
    const BACKLOG: u64 = 20_000;
    let backlog: Vec<Rec> = (0..BACKLOG)
        .map(|i| mysql_change(3, "u", 2_000 + i, "false", "busy"))
        .collect();
    let created = enc.records(&topic, &created);
    let backlog = enc.records(&topic, &backlog);
    // The snapshot at position 1000: row 5's read under new schema versions, which the
    // registry will not serve; the other reads under the first ones, the last in partition 0.
    let mut held = avro::Encoder::new(&registry);
    held.next_version = true;
    let held = held.records(&topic, &[mysql_change(5, "r", 1000, "true", "snap")]);
    // Partition 1's other reads come before the waiting one, which is the last record of its
    // partition below the snapshot's end: nothing else keeps the end waiting.
    let read = |rows: &[(i64, &str)]| -> Vec<Rec> {
        rows.iter()
            .map(|(id, mark)| mysql_change(*id, "r", 1000, mark, "snap"))
            .collect()
    };
    let reads_1 = enc.records(&topic, &read(&[(1, "first"), (3, "true")]));
    let reads_0 = enc.records(&topic, &read(&[(2, "true"), (4, "true"), (6, "last")]));
    let first_id =
        |r: &Rec<Vec<u8>>| u32::from_be_bytes(r.key.as_ref().unwrap()[1..5].try_into().unwrap());
    registry.fail_ids_from(Some(first_id(&held[0])));
    for part in [&created, &backlog, &reads_1, &held, &reads_0] {
        kafka::produce_bytes(&topic, part);
    }
    // Partition 1: rows 1, 3 and 5 created, the backlog, rows 1 and 3 read, then the waiting
    // read.
    let waiting = 3 + backlog.len() as i64 + 2;
    // Partition 0: rows 2, 4 and 6 created, their reads, the last one the snapshot's end.
    let snapshot_end = 5;

    let opts = avro_options(&registry.url);
    let mut extra: Vec<(&str, &str)> = opts.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Small fetches and a small prefetch: partition 1's backlog cannot fill the consumer's
    // queue ahead of partition 0's records (with the default 8 MiB, the whole backlog came
    // first).
    extra.extend([
        ("consumer.override.queued.max.messages.kbytes", "256"),
        ("consumer.override.max.partition.fetch.bytes", "65536"),
    ]);
    let (mut w, group) = start_es_worker("it-registry-snapshot", &topic, &servers().es, &extra);
    w.wait_log("waiting, consumption paused", Duration::from_secs(120));
    // Everything before the waiting read is written and committed, and before the snapshot's
    // end in partition 0 too (the end itself waits for its clean-up): a clean-up would now
    // have started.
    let want = BTreeMap::from([(0, snapshot_end), (1, waiting)]);
    let start = std::time::Instant::now();
    while kafka::committed(&group, &topic, 2) != want {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "committed {:?}, expected {want:?}; documents: {:?}",
            kafka::committed(&group, &topic, 2),
            es::documents(&topic)
                .iter()
                .map(|(id, (v, d))| (id.clone(), *v, d["name"].clone()))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let removed = "documents of rows it did not contain removed";
    for _ in 0..20 {
        assert!(
            es::documents(&topic).contains_key("5"),
            "row 5's document removed while its read waited for the registry:\n{}",
            w.log_text()
        );
        assert!(!w.log_text().contains(removed), "{}", w.log_text());
        std::thread::sleep(Duration::from_millis(250));
    }

    registry.fail_ids_from(None);
    let expected: BTreeMap<String, Value> = [
        (1, "snap"),
        (2, "snap"),
        (3, "busy"),
        (4, "snap"),
        (5, "snap"),
        (6, "snap"),
    ]
    .iter()
    .map(|(id, name)| (id.to_string(), json!({"id": id, "name": name})))
    .collect();
    wait_converged(&topic, &expected, &group, 2, Duration::from_secs(120));
    let line = w.wait_log(removed, Duration::from_secs(60));
    assert!(line.contains("removed=0"), "{line}");
    let docs = es::documents(&topic);
    assert_eq!(docs["5"].0, 1 << 40 | 1000);
    assert_eq!(docs["3"].0, 1 << 40 | (2_000 + BACKLOG - 1));
    assert!(w.stop().success());
}
