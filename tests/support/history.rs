//! A generated CDC history, as Debezium's MySQL connector would emit it, and the source table it
//! leaves behind.
//!
//! Composite keys (tenant, id); inserts, updates, deletes each followed by a tombstone; several
//! rows per binlog event; binlog rollovers; and a replayed stretch of older events, as Debezium
//! re-emits after its own restart. The expected table is computed by applying the changes in
//! order, independently of the code under test; semantic values come from fixed pairs checked
//! with Python's `datetime`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::kafka::Rec;

/// (MicroTimestamp, its ISO text).
const TIMESTAMPS: &[(i64, &str)] = &[
    (1_709_300_707_123_456, "2024-03-01T13:45:07.123456Z"),
    (0, "1970-01-01T00:00:00.000000Z"),
    (951_782_400_000_001, "2000-02-29T00:00:00.000001Z"),
    (1_893_456_000_999_999, "2030-01-01T00:00:00.999999Z"),
    (-86_399_999_999, "1969-12-31T00:00:00.000001Z"),
];
/// (Date as days since the epoch, its ISO text).
const DATES: &[(i32, &str)] = &[
    (19_783, "2024-03-01"),
    (0, "1970-01-01"),
    (-1, "1969-12-31"),
    (11_016, "2000-02-29"),
    (18_262, "2020-01-01"),
];
const TENANTS: &[&str] = &["acme", "globex", "initech", "umbrella", "hooli"];

pub struct Options {
    pub changes: usize,
    pub keys: usize,
    pub partitions: i32,
    /// JsonConverter `schemas.enable=true`.
    pub with_schema: bool,
    /// Binlog rollover every this many changes.
    pub rollover_every: usize,
    /// Re-emit this many records at 70% of the history.
    pub replay: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            changes: 20_000,
            keys: 600,
            partitions: 4,
            with_schema: true,
            rollover_every: 6_000,
            replay: 500,
        }
    }
}

pub struct History {
    pub records: Vec<Rec>,
    /// What each record of `records` is (same order).
    pub log: Vec<Logged>,
    /// Document id (`tenant|id`) → the document Elasticsearch must end with.
    pub expected: BTreeMap<String, Value>,
    /// Document id → the version it must end with: the source position of its row's last
    /// change (docs/versions.md: binlog file index << 40 | pos).
    pub versions: BTreeMap<String, u64>,
    /// Changes (not counting tombstones and replays).
    pub changes: usize,
}

/// One record of a history, as the checks need it.
#[derive(Debug, Clone)]
pub struct Logged {
    pub partition: i32,
    pub id: String,
    /// The record deletes the row (a `d` event or its tombstone).
    pub delete: bool,
    /// The version the change carries (a tombstone: its delete's).
    pub version: u64,
}

/// The version of a MySQL change at binlog `file`:`pos` (whatever its `row`).
pub fn mysql_version(file: u32, pos: u64) -> u64 {
    u64::from(file) << 40 | pos
}

fn key_schema() -> Value {
    json!({"type":"struct","name":"it.inventory.customers.Key","optional":false,"fields":[
        {"type":"string","optional":false,"field":"tenant"},
        {"type":"int32","optional":false,"field":"id"}]})
}

fn value_schema() -> Value {
    let row = |field: &str| {
        json!({"type":"struct","name":"it.inventory.customers.Value","optional":true,"field":field,"fields":[
            {"type":"string","optional":false,"field":"tenant"},
            {"type":"int32","optional":false,"field":"id"},
            {"type":"string","optional":true,"field":"name"},
            {"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","version":1,
             "parameters":{"scale":"2","connect.decimal.precision":"12"},"field":"balance"},
            {"type":"int64","optional":true,"name":"io.debezium.time.MicroTimestamp","version":1,"field":"updated_at"},
            {"type":"int32","optional":true,"name":"io.debezium.time.Date","version":1,"field":"birthday"}]})
    };
    json!({"type":"struct","name":"it.inventory.customers.Envelope","optional":false,"fields":[
        row("before"), row("after"),
        {"type":"struct","name":"io.debezium.connector.mysql.Source","optional":false,"field":"source","fields":[
            {"type":"string","optional":false,"field":"version"},
            {"type":"string","optional":false,"field":"connector"},
            {"type":"string","optional":false,"field":"name"},
            {"type":"int64","optional":false,"field":"ts_ms"},
            {"type":"string","optional":true,"field":"db"},
            {"type":"string","optional":true,"field":"table"},
            {"type":"string","optional":false,"field":"file"},
            {"type":"int64","optional":false,"field":"pos"},
            {"type":"int32","optional":false,"field":"row"}]},
        {"type":"string","optional":false,"field":"op"},
        {"type":"int64","optional":true,"field":"ts_ms"}]})
}

/// Minimal big-endian two's-complement bytes of `v`, base64.
fn decimal_bytes(v: i64) -> String {
    use base64::Engine as _;
    let bytes = v.to_be_bytes();
    let mut start = 0;
    while start < 7
        && ((bytes[start] == 0 && bytes[start + 1] & 0x80 == 0)
            || (bytes[start] == 0xff && bytes[start + 1] & 0x80 != 0))
    {
        start += 1;
    }
    base64::engine::general_purpose::STANDARD.encode(&bytes[start..])
}

/// `cents` as the exact decimal text with two places.
fn decimal_text(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    format!(
        "{sign}{}.{:02}",
        cents.unsigned_abs() / 100,
        cents.unsigned_abs() % 100
    )
}

#[derive(Clone)]
struct Row {
    tenant: &'static str,
    id: i32,
    name: String,
    cents: i64,
    ts: usize,
    date: usize,
}

impl Row {
    fn wire(&self, with_schema: bool) -> Value {
        let _ = with_schema;
        json!({"tenant": self.tenant, "id": self.id, "name": self.name, "balance": decimal_bytes(self.cents),
               "updated_at": TIMESTAMPS[self.ts].0, "birthday": DATES[self.date].0})
    }

    fn expected(&self, with_schema: bool) -> Value {
        if with_schema {
            json!({"tenant": self.tenant, "id": self.id, "name": self.name, "balance": decimal_text(self.cents),
                   "updated_at": TIMESTAMPS[self.ts].1, "birthday": DATES[self.date].1})
        } else {
            // Without a schema, values pass through as JSON gives them.
            self.wire(false)
        }
    }
}

fn partition_of(key: &str, partitions: i32) -> i32 {
    // FNV-1a: any stable hash does; the same key always goes to the same partition.
    let mut h: u32 = 0x811c_9dc5;
    for b in key.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    (h % partitions as u32) as i32
}

pub fn generate(seed: u64, o: &Options) -> History {
    let mut rng = fastrand::Rng::with_seed(seed);
    let key_schema = key_schema();
    let value_schema = value_schema();
    let mut table: BTreeMap<(usize, i32), Row> = BTreeMap::new();
    let mut records: Vec<Rec> = Vec::new();
    let mut log: Vec<Logged> = Vec::new();
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    let (mut file, mut pos, mut ts_ms) = (3u32, 4u64, 1_700_000_000_000i64);
    let mut changes = 0;
    let mut replayed = o.replay == 0;
    while changes < o.changes {
        // One binlog rows event: 1-4 rows, sharing `pos`, numbered by `row`.
        let rows = 1 + rng.usize(..4);
        pos += 150 + rng.u64(..400);
        ts_ms += 1 + rng.i64(0..20);
        for row in 0..rows {
            let slot = rng.usize(..o.keys);
            let k = (slot % TENANTS.len(), (slot / TENANTS.len()) as i32 + 1);
            let key = json!({"tenant": TENANTS[k.0], "id": k.1});
            let key_text = format!("{}|{}", TENANTS[k.0], k.1);
            let before = table.get(&k).cloned();
            let (op, after) = match &before {
                None => (
                    "c",
                    Some(Row {
                        tenant: TENANTS[k.0],
                        id: k.1,
                        name: format!("n{}-{}", k.1, rng.u32(..1000)),
                        cents: rng.i64(-100_000..10_000_000),
                        ts: rng.usize(..TIMESTAMPS.len()),
                        date: rng.usize(..DATES.len()),
                    }),
                ),
                Some(r) if rng.u8(..10) < 7 => {
                    let mut r = r.clone();
                    r.name = format!("n{}-{}", k.1, rng.u32(..1000));
                    r.cents += rng.i64(-5000..5000);
                    r.ts = rng.usize(..TIMESTAMPS.len());
                    ("u", Some(r))
                }
                Some(_) => ("d", None),
            };
            let source = json!({"version":"2.7.0.Final","connector":"mysql","name":"it","ts_ms":ts_ms,
                "db":"inventory","table":"customers","file":format!("mysql-bin.{file:06}"),"pos":pos,"row":row});
            let payload = json!({"before": before.as_ref().map(|r| r.wire(o.with_schema)),
                "after": after.as_ref().map(|r| r.wire(o.with_schema)), "source": source, "op": op, "ts_ms": ts_ms + 3});
            let (key_json, value_json) = if o.with_schema {
                (
                    json!({"schema": key_schema, "payload": key}),
                    json!({"schema": value_schema, "payload": payload}),
                )
            } else {
                (key.clone(), payload)
            };
            let partition = partition_of(&key_text, o.partitions);
            let version = mysql_version(file, pos);
            let logged = Logged {
                partition,
                id: key_text.clone(),
                delete: op == "d",
                version,
            };
            records.push(Rec {
                partition,
                key: Some(key_json.to_string()),
                value: Some(value_json.to_string()),
            });
            log.push(logged.clone());
            if op == "d" {
                records.push(Rec {
                    partition,
                    key: Some(key_json.to_string()),
                    value: None,
                });
                log.push(logged);
                table.remove(&k);
                versions.remove(&key_text);
            } else if let Some(r) = after {
                table.insert(k, r);
                versions.insert(key_text.clone(), version);
            }
            changes += 1;
            if changes % o.rollover_every == 0 {
                file += 1;
                pos = 4;
            }
            if !replayed && changes >= o.changes * 7 / 10 {
                // Debezium restarted: it re-emits from its last committed source offset.
                replayed = true;
                let from = records.len().saturating_sub(o.replay);
                let again: Vec<Rec> = records[from..].to_vec();
                records.extend(again);
                let again: Vec<Logged> = log[from..].to_vec();
                log.extend(again);
            }
        }
    }
    let expected = table
        .values()
        .map(|r| (format!("{}|{}", r.tenant, r.id), r.expected(o.with_schema)))
        .collect();
    History {
        records,
        log,
        expected,
        versions,
        changes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_minimal_twos_complement() {
        use base64::Engine as _;
        let d = |v| {
            base64::engine::general_purpose::STANDARD
                .decode(decimal_bytes(v))
                .unwrap()
        };
        assert_eq!(d(3998), vec![0x0f, 0x9e]);
        assert_eq!(d(-5), vec![0xfb]);
        assert_eq!(d(128), vec![0x00, 0x80]);
        assert_eq!(d(-129), vec![0xff, 0x7f]);
        assert_eq!(decimal_text(-5), "-0.05");
        assert_eq!(decimal_text(123_456), "1234.56");
    }
}
