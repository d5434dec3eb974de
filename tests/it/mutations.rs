//! Every recorded envelope, mutated thousands of ways (numbers swapped for extreme ones,
//! strings emptied or replaced, bytes flipped, text cut short), decoded and mapped by both
//! connectors: whatever comes out, a result or an error, nothing panics. Test builds check
//! arithmetic for overflow, so a calculation that would wrap in a release build (and write a
//! wrong date or version without a word) panics here. No servers needed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use serde_json::json;

use cdc_sink::connector::{ConnectorSpec, SinkSpec};
use cdc_sink::decode::Decoder;
use cdc_sink::sink::druid::row::Rows;
use cdc_sink::sink::elasticsearch::mapping::{Mapped, Mapper};

use crate::fixtures::{TOPIC, fixture, record, spec_on_topic};
use crate::support::avro;

/// Numbers put in place of each number of an envelope: the ends of the integer types,
/// beyond them, and the odd forms JSON allows.
const NUMBERS: &[&str] = &[
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "99999999999999999999999999",
    "2147483648",
    "-2147483649",
    "4294967296",
    "-1",
    "0",
    "-0",
    "1e308",
    "-1e308",
    "1.5",
    "1E400",
];

/// Strings put in place of each string of an envelope.
const STRINGS: &[&str] = &[
    "",
    "-",
    "mysql-bin.99999999999999999999",
    "mysql-bin.18446744073709551615",
    "mysql-bin.",
    "9223372036854775807",
    "-9223372036854775808",
    "99999999999999999999999999",
    "////",
    "AAAAAAAAAAAAAAAAAAAAAAAA",
    "/////////////////////////////////////////////w==",
    "\\u0000",
    "\\ud800",
    "true",
    "d",
    "last",
];

/// Where each number (`true`) and each string's content (`false`) lies in `text`.
fn literals(text: &str) -> Vec<(std::ops::Range<usize>, bool)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                out.push((start..i.min(b.len()), false));
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                i += 1;
                while i < b.len() && matches!(b[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                }
                out.push((start..i, true));
            }
            _ => i += 1,
        }
    }
    out
}

/// A small deterministic generator (xorshift64*): the same mutations every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The mutations of `text`: every literal replaced by each of its kind's values, then
/// `random` byte-level changes (a byte replaced, removed or repeated; the text cut short).
/// With schemas on, the payload's literals each take every value, the schema's only a sample
/// of `random` (a changed schema is compiled again: all of them took a quarter of an hour).
fn mutations(text: &str, random: usize, rng: &mut Rng) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let payload = text.find("\"payload\"").unwrap_or(0);
    let all = literals(text);
    let in_schema = all.iter().filter(|(r, _)| r.start < payload).count();
    for (range, number) in all {
        let values = if number { NUMBERS } else { STRINGS };
        for v in values {
            if range.start < payload && rng.below(in_schema * values.len()) >= random {
                continue;
            }
            let mut m = text[..range.start].to_string();
            m.push_str(v);
            m.push_str(&text[range.end..]);
            out.push(m.into_bytes());
        }
    }
    let bytes = text.as_bytes();
    const ODD: &[u8] = b"{}[]\",:0-9.e\\n \x00\xff";
    for _ in 0..random {
        let mut m = bytes.to_vec();
        let at = rng.below(m.len());
        match rng.below(4) {
            0 => m[at] = ODD[rng.below(ODD.len())],
            1 => {
                m.remove(at);
            }
            2 => m.insert(at, m[at]),
            _ => m.truncate(at),
        }
        out.push(m);
    }
    out
}

/// One connector's decoder and mapper, reused across records as a task reuses them.
struct Connector {
    decoder: Decoder,
    sink: Sink,
}

enum Sink {
    Elasticsearch(Mapper),
    Druid(Rows),
}

impl Connector {
    fn new(spec: &ConnectorSpec) -> Connector {
        let sink = match &spec.sink {
            SinkSpec::Druid(cfg) => Sink::Druid(Rows::new(Arc::new((**cfg).clone()))),
            _ => Sink::Elasticsearch(Mapper::new(Arc::new(
                spec.sink.elasticsearch().unwrap().clone(),
            ))),
        };
        Connector {
            decoder: Decoder::new(spec).unwrap(),
            sink,
        }
    }

    /// Decodes `value` (and `key`) and maps the record; `Err` holds the panic, if any.
    fn run(&mut self, key: Option<&[u8]>, value: &[u8]) -> Result<(), String> {
        catch_unwind(AssertUnwindSafe(|| {
            let Ok(value) = self.decoder.value(TOPIC, Some(value)) else {
                return;
            };
            let key = match key.map(|k| self.decoder.key(TOPIC, Some(k))) {
                Some(Ok(k)) => k,
                Some(Err(_)) => return,
                None => None,
            };
            let rec = record(key.as_ref(), &value, Some(1_700_000_000_000));
            match &mut self.sink {
                Sink::Druid(rows) => {
                    let _ = rows.map(&rec);
                }
                Sink::Elasticsearch(mapper) => {
                    if let Ok(Mapped::Write(action)) = mapper.map(&rec) {
                        action.encode(&mut Vec::new());
                    }
                }
            }
        }))
        .map_err(|p| {
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        })
    }
}

/// The recorded envelopes' file names that `keep`, sorted.
fn envelope_files(keep: impl Fn(&str) -> bool) -> Vec<String> {
    let dir = crate::support::servers::repo().join("tests/fixtures/debezium/envelopes");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| keep(n))
        .collect();
    files.sort();
    files
}

/// Fails naming the first panics, if any (`what`: which records), or if fewer than `least`
/// records were tried.
fn none_panicked(what: &str, tried: usize, least: usize, mut panics: Vec<String>) {
    eprintln!("{tried} mutated {what}records decoded and mapped");
    assert!(tried > least, "only {tried} mutations tried");
    panics.sort();
    panics.dedup();
    assert!(
        panics.is_empty(),
        "{} of {tried} mutated {what}records panicked; the first ones:\n{}",
        panics.len(),
        panics[..panics.len().min(8)].join("\n")
    );
}

#[test]
fn mutated_envelopes_decode_and_map_to_a_result_or_an_error_never_a_panic() {
    let files = envelope_files(|n| n.ends_with(".json"));
    let specs = [
        spec_on_topic(
            json!({"connector.class": "elasticsearch", "connection.url": "http://es:9200"}),
            &[],
        ),
        spec_on_topic(json!({"connector.class": "druid"}), &[]),
    ];
    // Panics are caught and counted; the default hook would print each one.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut tried, mut panics) = (0, Vec::new());
    for file in &files {
        let text = fixture(file);
        let is_key = file.contains("_key_");
        let mut connectors: Vec<Connector> = specs.iter().map(Connector::new).collect();
        for m in mutations(&text, 200, &mut rng) {
            for c in &mut connectors {
                tried += 1;
                let result = if is_key {
                    c.run(Some(&m), br#"{"op":"c","after":{"id":1}}"#)
                } else {
                    c.run(Some(br#"{"id":1}"#), &m)
                };
                if let Err(why) = result {
                    panics.push(format!("{file}: {why}\n  {}", String::from_utf8_lossy(&m)));
                }
            }
        }
    }
    std::panic::set_hook(hook);
    none_panicked("", tried, 20_000, panics);
}

/// The Avro form of every recorded envelope with schema (through the test schema registry),
/// its bytes mutated, and its numbers replaced by extreme ones: decoded and mapped by both
/// connectors, to a result or an error, never a panic.
#[test]
fn mutated_avro_records_decode_and_map_to_a_result_or_an_error_never_a_panic() {
    let registry = crate::support::registry::Registry::start();
    let with = |class: &str| {
        let mut config = json!({"connector.class": class,
            "value.converter": "io.confluent.connect.avro.AvroConverter",
            "value.converter.schema.registry.url": registry.url});
        if class == "elasticsearch" {
            config["connection.url"] = json!("http://es:9200");
        }
        spec_on_topic(config, &[])
    };
    let specs = [with("elasticsearch"), with("druid")];
    // As in tests/it/avro.rs: the records that have an Avro form.
    let files = envelope_files(|n| {
        n.contains("_withschema_value_")
            && !n.contains("tombstone")
            && !n.contains("paimon-alltype.json")
    });
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let (mut tried, mut panics) = (0, Vec::new());
    for file in &files {
        let text = fixture(file);
        let bytes = avro::from_json_record(&registry, &format!("{file}-v"), &text);
        let id = u32::from_be_bytes(bytes[1..5].try_into().unwrap());
        let record: serde_json::Value = serde_json::from_str(&text).unwrap();
        let schema = avro::schema(&record["schema"]);
        let mut records = vec![bytes.clone()];
        // Numbers of the payload replaced (those its Avro type cannot hold are not encoded).
        let payload = text.find("\"payload\"").unwrap();
        for (range, number) in literals(&text) {
            if !number || range.start < payload {
                continue;
            }
            for v in NUMBERS.iter().filter(|_| rng.below(4) == 0) {
                let m = format!("{}{v}{}", &text[..range.start], &text[range.end..]);
                let Ok(m) = serde_json::from_str::<serde_json::Value>(&m) else {
                    continue;
                };
                if let Ok(b) = catch_unwind(|| avro::encode(id, &schema, &m["payload"])) {
                    records.push(b);
                }
            }
        }
        // Bytes of the datum replaced, removed or repeated, and the datum cut short.
        for _ in 0..1000 {
            let mut m = bytes.clone();
            let at = 5 + rng.below(m.len() - 5);
            match rng.below(4) {
                0 => m[at] = [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff][rng.below(6)],
                1 => {
                    m.remove(at);
                }
                2 => m.insert(at, m[at]),
                _ => m.truncate(at),
            }
            records.push(m);
        }
        let mut connectors: Vec<Connector> = specs.iter().map(Connector::new).collect();
        for m in &records {
            for c in &mut connectors {
                tried += 1;
                if let Err(why) = c.run(Some(br#"{"id":1}"#), m) {
                    panics.push(format!("{file}: {why}\n  {m:?}"));
                }
            }
        }
    }
    std::panic::set_hook(hook);
    none_panicked("Avro ", tried, 10_000, panics);
}
