//! Benchmarks (not tests): `cargo bench --bench pipeline [-- hot|e2e]`.
//!
//! * `hot`: decode → map → bulk body on one core, JSON with and without schema, records/s.
//! * `live`: PostgreSQL → Debezium → Kafka → cdc-sink → Elasticsearch at a steady 1 000 changes/s;
//!   freshness p50/p99 from the source commit to the Elasticsearch acknowledgement, with
//!   Debezium's share (source commit → Kafka timestamp) and cdc-sink's (Kafka → acknowledgement).
//! * `e2e`: the real broker → the `cdc-sink` binary → an instant-acknowledging ES-compatible
//!   endpoint of our own; records/s, records per worker CPU-second and peak RSS, beside a bare
//!   rdkafka consumer reading the same topic in the same run (the Kafka client's own cost).
//! * `druid`: the Druid connector — decode → row on one core, and end to end on the real broker
//!   (rows produced to the ingestion topic, transactions on and off) beside a bare consumer.
//!
//! Set `CDCSINK_TEST_SERVERS=DIR` to use a Kafka started with `scripts/servers start DIR kafka`.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cdc_sink::connector::{ConnectorConfig, ConnectorSpec};
use cdc_sink::decode::{Decoder, Row, Value as DecodedValue};
use cdc_sink::sink::elasticsearch::batch::{Batch, Origin};
use cdc_sink::sink::elasticsearch::mapping::{Mapped, Mapper};
use cdc_sink::sink::{Ack, SinkRecord};
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use serde_json::json;

use support::history::{self, Options};

/// As the `cdc-sink` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use support::http;
use support::kafka::{self, Rec};
use support::worker::{Worker, connector_file};

/// `extra`'s keys set on `config` (both JSON objects).
fn merge(config: &mut serde_json::Value, extra: &serde_json::Value) {
    for (k, v) in extra.as_object().expect("an object of connector options") {
        config[k] = v.clone();
    }
}

fn cpu_seconds_self() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// CPU-seconds the live threads of process `pid` have run, to the nanosecond (the sum of their
/// `/proc/<pid>/task/*/schedstat`), all of them and by kind; NaN once it is gone. A thread that
/// ended no longer counts: for the difference between two moments of a steady run, not for a
/// process's total ([`cpu_seconds_of`] is that, in clock ticks).
#[derive(Clone, Copy)]
struct ThreadCpu {
    all: f64,
    /// librdkafka's own threads (`rdk:…`): the broker connections, fetching, decompressing.
    librdkafka: f64,
    /// The worker's tokio runtime (`cdc-sink-io`): the HTTP client, REST, metrics.
    io: f64,
    /// Seconds the other threads (see [`ThreadCpu::rest`]) were runnable but waited for a core
    /// (`schedstat`'s second field).
    rest_queued: f64,
}

impl ThreadCpu {
    /// What the other threads ran: a worker's task threads (and its main thread, which waits),
    /// the bare consumer's polling thread.
    fn rest(&self) -> f64 {
        self.all - self.librdkafka - self.io
    }

    fn minus(&self, before: &ThreadCpu) -> ThreadCpu {
        ThreadCpu {
            all: self.all - before.all,
            librdkafka: self.librdkafka - before.librdkafka,
            io: self.io - before.io,
            rest_queued: self.rest_queued - before.rest_queued,
        }
    }

    fn per(&self, n: f64) -> ThreadCpu {
        ThreadCpu {
            all: self.all / n,
            librdkafka: self.librdkafka / n,
            io: self.io / n,
            rest_queued: self.rest_queued / n,
        }
    }
}

fn thread_cpu(pid: u32) -> ThreadCpu {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return ThreadCpu {
            all: f64::NAN,
            librdkafka: f64::NAN,
            io: f64::NAN,
            rest_queued: f64::NAN,
        };
    };
    let mut cpu = ThreadCpu {
        all: 0.0,
        librdkafka: 0.0,
        io: 0.0,
        rest_queued: 0.0,
    };
    for t in tasks.flatten() {
        // Nanoseconds on a core, then waiting for one.
        let Ok(stat) = std::fs::read_to_string(t.path().join("schedstat")) else {
            continue;
        };
        let mut ns = stat
            .split_whitespace()
            .map(|v| v.parse::<u64>().map_or(0.0, |n| n as f64 / 1e9));
        let (ran, queued) = (ns.next().unwrap_or(0.0), ns.next().unwrap_or(0.0));
        let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        cpu.all += ran;
        if name.starts_with("rdk:") {
            cpu.librdkafka += ran;
        } else if name.trim_end() == "cdc-sink-io" {
            cpu.io += ran;
        } else {
            cpu.rest_queued += queued;
        }
    }
    cpu
}

fn cpu_seconds_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let n = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (n(11) + n(12)) / ticks
}

/// The whole machine's CPU time so far, in clock ticks: (busy, busy and idle), from
/// `/proc/stat`.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let n: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| n.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    (busy, busy + at(3) + at(4))
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn spec(extra: serde_json::Value) -> ConnectorSpec {
    let mut config = json!({"connector.class": "elasticsearch", "topics": "bench", "connection.url": "http://127.0.0.1:9"});
    merge(&mut config, &extra);
    ConnectorSpec::validate(
        &ConnectorConfig::from_json(&json!({"name": "bench", "config": config}).to_string())
            .unwrap(),
    )
    .unwrap()
}

/// A wide MySQL-shaped table as Debezium's MySQL connector and JsonConverter with schemas write
/// its change events: `columns` columns cycling through the types such tables hold most
/// (integers, text, DECIMAL, DATETIME(6), DATE, TINYINT(1)); updates carry the before image
/// (`binlog_row_image=FULL`). 20 columns make records of about 6 KB.
fn wide(seed: u64, changes: usize, columns: usize, partitions: i32) -> Vec<Rec> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let kinds = [
        ("int64", None, "id_"),
        ("string", None, "name_"),
        (
            "bytes",
            Some("org.apache.kafka.connect.data.Decimal"),
            "amount_",
        ),
        ("int64", Some("io.debezium.time.MicroTimestamp"), "at_"),
        ("int32", Some("io.debezium.time.Date"), "day_"),
        ("int16", None, "flag_"),
        ("string", None, "note_"),
    ];
    let fields: Vec<serde_json::Value> = (0..columns)
        .map(|c| {
            let (ty, name, prefix) = kinds[c % kinds.len()];
            let mut f = json!({"type": ty, "optional": c != 0, "field": format!("{prefix}{c}")});
            if c == 0 {
                f["field"] = json!("id");
            }
            if let Some(n) = name {
                f["name"] = json!(n);
                f["version"] = json!(1);
            }
            if ty == "bytes" {
                f["parameters"] = json!({"scale": "2", "connect.decimal.precision": "12"});
            }
            f
        })
        .collect();
    let image = |field: &str| json!({"type":"struct","name":"bench.inventory.orders.Value","optional":true,"field":field,"fields":fields});
    let value_schema = json!({"type":"struct","name":"bench.inventory.orders.Envelope","optional":false,"fields":[
        image("before"), image("after"),
        {"type":"struct","name":"io.debezium.connector.mysql.Source","optional":false,"field":"source","fields":[
            {"type":"string","optional":false,"field":"version"},{"type":"string","optional":false,"field":"connector"},
            {"type":"string","optional":false,"field":"name"},{"type":"int64","optional":false,"field":"ts_ms"},
            {"type":"string","optional":true,"name":"io.debezium.data.Enum","version":1,"parameters":{"allowed":"true,last,false,incremental"},"default":"false","field":"snapshot"},
            {"type":"string","optional":false,"field":"db"},{"type":"string","optional":true,"field":"sequence"},
            {"type":"string","optional":true,"field":"table"},{"type":"int64","optional":false,"field":"server_id"},
            {"type":"string","optional":true,"field":"gtid"},{"type":"string","optional":false,"field":"file"},
            {"type":"int64","optional":false,"field":"pos"},{"type":"int32","optional":false,"field":"row"},
            {"type":"int64","optional":true,"field":"thread"},{"type":"string","optional":true,"field":"query"}]},
        {"type":"string","optional":false,"field":"op"},{"type":"int64","optional":true,"field":"ts_ms"},
        {"type":"struct","optional":true,"name":"event.block","version":1,"field":"transaction","fields":[
            {"type":"string","optional":false,"field":"id"},{"type":"int64","optional":false,"field":"total_order"},
            {"type":"int64","optional":false,"field":"data_collection_order"}]}]});
    let key_schema = json!({"type":"struct","name":"bench.inventory.orders.Key","optional":false,
        "fields":[{"type":"int64","optional":false,"field":"id"}]});
    let row = |id: u64, rng: &mut fastrand::Rng| {
        let mut r = serde_json::Map::new();
        for c in 0..columns {
            let (_, _, prefix) = kinds[c % kinds.len()];
            let v = match (c, prefix) {
                (0, _) => json!(id),
                (_, "id_") => json!(rng.u64(..1 << 40)),
                (_, "name_") => json!(format!("customer {} of tenant {}", rng.u32(..), rng.u8(..))),
                (_, "amount_") => {
                    use base64::Engine as _;
                    json!(
                        base64::engine::general_purpose::STANDARD.encode(rng.u32(..).to_be_bytes())
                    )
                }
                (_, "at_") => json!(1_700_000_000_000_000i64 + rng.i64(..1 << 40)),
                (_, "day_") => json!(rng.i32(..30_000)),
                (_, "flag_") => json!(rng.u8(..2)),
                _ => json!(format!(
                    "free text note {:x} about the order, written by hand",
                    rng.u64(..)
                )),
            };
            let name = if c == 0 {
                "id".to_string()
            } else {
                format!("{prefix}{c}")
            };
            r.insert(name, v);
        }
        serde_json::Value::Object(r)
    };
    let mut out = Vec::with_capacity(changes + changes / 10);
    let keys = (changes / 3).max(1) as u64;
    let mut pos = 4u64;
    for n in 0..changes {
        let id = rng.u64(..keys);
        let partition = (id % partitions as u64) as i32;
        let roll = rng.u8(..100);
        let (op, before, after) = match roll {
            0..20 => ("c", None, Some(row(id, &mut rng))),
            20..95 => ("u", Some(row(id, &mut rng)), Some(row(id, &mut rng))),
            _ => ("d", Some(row(id, &mut rng)), None),
        };
        pos += 300 + rng.u64(..200);
        let ts = 1_700_000_000_000i64 + n as i64;
        let payload = json!({"before": before, "after": after,
            "source": {"version":"2.7.0.Final","connector":"mysql","name":"bench","ts_ms":ts,"snapshot":"false",
                "db":"inventory","sequence":null,"table":"orders","server_id":223344,"gtid":null,
                "file":"mysql-bin.000003","pos":pos,"row":0,"thread":7,"query":null},
            "op": op, "ts_ms": ts + 3, "transaction": null});
        let key = json!({"schema": key_schema, "payload": {"id": id}}).to_string();
        out.push(Rec {
            partition,
            key: Some(key.clone()),
            value: Some(json!({"schema": value_schema, "payload": payload}).to_string()),
        });
        if op == "d" {
            out.push(Rec {
                partition,
                key: Some(key),
                value: None,
            });
        }
    }
    out
}

/// A benchmark record's key and value, decoded (topic `bench`).
fn decode<T: AsRef<[u8]>>(decoder: &mut Decoder, r: &Rec<T>) -> (Option<Row>, DecodedValue) {
    let key = decoder
        .key("bench", r.key.as_ref().map(AsRef::as_ref))
        .unwrap();
    let value = decoder
        .value("bench", r.value.as_ref().map(AsRef::as_ref))
        .unwrap();
    (key, value)
}

/// decode → map → `batch` for record `i` of the benchmark topic, as a task does.
fn feed<T: AsRef<[u8]>>(
    decoder: &mut Decoder,
    mapper: &mut Mapper,
    batch: &mut Batch,
    topic: &Arc<str>,
    i: usize,
    r: &Rec<T>,
) {
    let (key, value) = decode(decoder, r);
    let rec = SinkRecord {
        topic: "bench",
        kafka_topic: "bench",
        partition: r.partition,
        offset: i as i64,
        timestamp_ms: None,
        key: key.as_ref(),
        value: &value,
        // The clock read as often as a task reads it, once per burst of 256 records (the
        // others get 0 here: only the cost is the task's).
        received_ms: if i.is_multiple_of(256) {
            cdc_sink::metrics::now_ms()
        } else {
            0
        },
    };
    if let Mapped::Write(a) = mapper.map(&rec).unwrap() {
        let origin = Origin {
            partition: r.partition,
            offset: i as i64,
            source_ts_ms: None,
            kafka_ts_ms: None,
            received_ms: rec.received_ms,
        };
        let ack = Ack {
            slot: 0,
            epoch: 0,
            offset: i as i64,
        };
        batch.push(a, topic, origin, ack);
    }
}

/// decode → map → batch (NDJSON body) for every record, on this thread.
/// Returns the best round's records per CPU-second.
fn hot<T: AsRef<[u8]>>(
    label: &str,
    records: &[Rec<T>],
    rounds: usize,
    extra: serde_json::Value,
) -> f64 {
    let mut options = json!({"behavior.on.null.values": "delete"});
    merge(&mut options, &extra);
    let spec = spec(options);
    let es = spec.sink.elasticsearch().unwrap();
    let mut mapper = Mapper::new(Arc::new(es.clone()));
    let mut decoder = Decoder::new(&spec).unwrap();
    let topic: Arc<str> = "bench".into();
    let bytes: usize = records
        .iter()
        .map(|r| {
            r.value.as_ref().map_or(0, |v| v.as_ref().len())
                + r.key.as_ref().map_or(0, |k| k.as_ref().len())
        })
        .sum();
    let (cpu0, t0) = (cpu_seconds_self(), Instant::now());
    let mut n = 0u64;
    let mut body_bytes = 0usize;
    let mut best = f64::INFINITY;
    for _ in 0..rounds {
        let round_cpu = cpu_seconds_self();
        let mut batch = Batch::new(false);
        for (i, r) in records.iter().enumerate() {
            feed(&mut decoder, &mut mapper, &mut batch, &topic, i, r);
            if batch.records() >= 2000 {
                body_bytes += batch.take().seal().body.len();
            }
            n += 1;
        }
        body_bytes += batch.seal().body.len();
        best = best.min(cpu_seconds_self() - round_cpu);
    }
    let (cpu, wall) = (cpu_seconds_self() - cpu0, t0.elapsed().as_secs_f64());
    println!(
        "hot {label:<16} {n:>8} records  {:>9.0} records/s  {:>9.0} records/CPU-s (best round {:>9.0})  {:>6.1} MB/s in  ({:.0} bytes/record in, {:.0} out)",
        n as f64 / wall,
        n as f64 / cpu,
        records.len() as f64 / best,
        (bytes * rounds) as f64 / wall / 1e6,
        bytes as f64 / records.len() as f64,
        body_bytes as f64 / n as f64,
    );
    records.len() as f64 / best
}

/// decode → map → batch on `threads` threads at once, each as a task with its own decoder and
/// mapper over the same records; records/s of them all (wall clock). Against one thread, it
/// says whether anything in the worker serialises its tasks, apart from the machine's cores.
fn hot_threads<T: AsRef<[u8]> + Sync>(records: &[Rec<T>], threads: usize, rounds: usize) -> f64 {
    let spec = spec(json!({"behavior.on.null.values": "delete"}));
    let es = Arc::new(spec.sink.elasticsearch().unwrap().clone());
    let topic: Arc<str> = "bench".into();
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            let (spec, es, topic) = (&spec, es.clone(), topic.clone());
            s.spawn(move || {
                let mut mapper = Mapper::new(es);
                let mut decoder = Decoder::new(spec).unwrap();
                for _ in 0..rounds {
                    let mut batch = Batch::new(false);
                    for (i, r) in records.iter().enumerate() {
                        feed(&mut decoder, &mut mapper, &mut batch, &topic, i, r);
                        if batch.records() >= 2000 {
                            std::hint::black_box(batch.take().seal());
                        }
                    }
                    std::hint::black_box(batch.seal());
                }
            });
        }
    });
    (records.len() * rounds * threads) as f64 / t0.elapsed().as_secs_f64()
}

/// Our Avro decoder alone: key and value to rows (semantic types decoded), no mapping.
fn avro_decode_only(registry: &str, records: &[Rec<Vec<u8>>], rounds: usize) {
    let spec = spec(json!({"key.converter": "avro", "value.converter": "avro",
        "key.converter.schema.registry.url": registry, "value.converter.schema.registry.url": registry}));
    let mut decoder = Decoder::new(&spec).unwrap();
    let (cpu0, t0) = (cpu_seconds_self(), Instant::now());
    let mut n = 0u64;
    for _ in 0..rounds {
        for r in records {
            std::hint::black_box(decoder.key("bench", r.key.as_deref()).unwrap());
            std::hint::black_box(decoder.value("bench", r.value.as_deref()).unwrap());
            n += 1;
        }
    }
    let (cpu, wall) = (cpu_seconds_self() - cpu0, t0.elapsed().as_secs_f64());
    println!(
        "hot {:<16} {n:>8} records  {:>9.0} records/s  {:>9.0} records/CPU-s  (our decoder alone: key and value to documents' rows)",
        "avro decode",
        n as f64 / wall,
        n as f64 / cpu
    );
}

/// For comparison: apache-avro's own decoding of the same records into its `Value` tree (the
/// writer schema parsed once per id), without even writing a document.
fn apache_avro_value_path(
    registry: &support::registry::Registry,
    records: &[Rec<Vec<u8>>],
    rounds: usize,
) {
    let schemas: Vec<apache_avro::Schema> = (1..=2)
        .map(|id| {
            let text = reqwest::blocking::get(format!("{}/schemas/ids/{id}", registry.url))
                .unwrap()
                .text()
                .unwrap();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            apache_avro::Schema::parse_str(v["schema"].as_str().unwrap()).unwrap()
        })
        .collect();
    // Resolved once per schema, as a careful user of the crate would.
    let readers: Vec<_> = schemas
        .iter()
        .map(|s| {
            apache_avro::reader::datum::GenericDatumReader::builder(s)
                .build()
                .unwrap()
        })
        .collect();
    let (cpu0, t0) = (cpu_seconds_self(), Instant::now());
    let mut n = 0u64;
    for _ in 0..rounds {
        for r in records {
            for bytes in [&r.key, &r.value].into_iter().flatten() {
                let id = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
                let mut body = &bytes[5..];
                let v = readers[id - 1].read_value(&mut body).unwrap();
                std::hint::black_box(v);
            }
            n += 1;
        }
    }
    let (cpu, wall) = (cpu_seconds_self() - cpu0, t0.elapsed().as_secs_f64());
    println!(
        "hot {:<16} {n:>8} records  {:>9.0} records/s  {:>9.0} records/CPU-s  (apache-avro from_avro_datum to Value only, no document)",
        "apache-avro",
        n as f64 / wall,
        n as f64 / cpu
    );
}

/// A plain rdkafka consumer of `topic` in a group of its own, librdkafka's defaults otherwise,
/// starting at `reset` (`earliest` or `latest`).
fn plain_consumer(topic: &str, reset: &str) -> BaseConsumer {
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", support::servers::kafka())
        .set("group.id", format!("bare-{}", fastrand::u32(..)))
        .set("auto.offset.reset", reset)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    c
}

/// Reads `topic` to its end with a plain rdkafka consumer, touching every payload; prints the
/// CPU seconds this process spent. Run as a child process of the benchmark.
fn bare_consumer(topic: &str, partitions: i32, expected: usize) {
    let c = plain_consumer(topic, "earliest");
    let (mut n, mut bytes) = (0usize, 0usize);
    // CPU-seconds when the 10% and the 90% record were read: the steady middle of the run.
    let (from, to) = (expected / 10, expected * 9 / 10);
    let (mut cpu_from, mut cpu_to) = (f64::NAN, f64::NAN);
    // librdkafka's threads' share of it.
    let (mut rdk_from, mut rdk_to) = (f64::NAN, f64::NAN);
    let me = std::process::id();
    let deadline = Instant::now() + Duration::from_secs(600);
    while n < expected && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            bytes += m.payload().map_or(0, |p| {
                p.iter().fold(0usize, |a, b| a.wrapping_add(*b as usize)) & 1
            });
            n += 1;
            if n == from {
                (cpu_from, rdk_from) = (cpu_seconds_self(), thread_cpu(me).librdkafka);
            } else if n == to {
                (cpu_to, rdk_to) = (cpu_seconds_self(), thread_cpu(me).librdkafka);
            }
        }
    }
    let _ = (partitions, bytes);
    println!(
        "{n} {} {} {} {}",
        cpu_seconds_self(),
        to - from,
        cpu_to - cpu_from,
        rdk_to - rdk_from
    );
}

/// How a worker run went.
struct Run {
    /// Seconds from the worker's start to its last commit.
    wall: f64,
    cpu: f64,
    rss_mib: f64,
    /// Records per second from its first commit to its last (startup and group join left out).
    steady: f64,
}

/// Waits until the worker committed every offset of `topic` for connector `name`, then stops
/// it.
fn finish(w: Worker, name: &str, topic: &str, partitions: i32, t0: Instant) -> Run {
    let group = format!("connect-{name}");
    let end = kafka::end_offsets(topic, partitions);
    let total: i64 = end.values().sum();
    let mut first: Option<(Instant, i64)> = None;
    let watch = kafka::Committed::new(&group, topic, partitions);
    loop {
        let committed = watch.now();
        if committed == end {
            break;
        }
        let done: i64 = committed.values().filter(|o| **o > 0).sum();
        if first.is_none() && done > 0 {
            first = Some((Instant::now(), done));
        }
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            t0.elapsed() < Duration::from_secs(900),
            "worker did not finish:\n{}",
            w.log_text()
        );
    }
    let done_at = Instant::now();
    let wall = t0.elapsed().as_secs_f64();
    let (cpu, rss_mib) = (cpu_seconds_of(w.pid()), peak_rss_mib(w.pid()));
    assert!(w.stop().success());
    let steady = match first {
        Some((t, done)) if (done_at - t).as_secs_f64() > 0.5 => {
            (total - done) as f64 / (done_at - t).as_secs_f64()
        }
        _ => f64::NAN,
    };
    Run {
        wall,
        cpu,
        rss_mib,
        steady,
    }
}

/// Runs [`bare_consumer`] in a process of its own (its CPU time is its own).
fn run_bare(topic: &str, partitions: i32, total: usize) -> std::process::Output {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--bare-consumer",
            topic,
            &partitions.to_string(),
            &total.to_string(),
        ])
        .env(
            "CDCSINK_TEST_SERVERS",
            std::env::var_os("CDCSINK_TEST_SERVERS").unwrap(),
        )
        .output()
        .unwrap()
}

/// (records read, CPU-seconds; CPU-seconds per record over the middle 80% of the records, and
/// librdkafka's threads' part of it) as [`bare_consumer`] printed them.
fn bare_result(stdout: &[u8]) -> (usize, f64, f64, f64) {
    let text = String::from_utf8_lossy(stdout);
    let parts: Vec<f64> = text
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(f64::NAN))
        .collect();
    let at = |i: usize| parts.get(i).copied().unwrap_or(f64::NAN);
    (at(0) as usize, at(1), at(3) / at(2), at(4) / at(2))
}

/// decode → Druid row (the bytes handed to the producer) for every record, on this thread.
fn hot_druid<T: AsRef<[u8]>>(label: &str, records: &[Rec<T>], rounds: usize) {
    use cdc_sink::connector::SinkSpec;
    use cdc_sink::sink::druid::row::{Mapped as RowMapped, Rows};
    let spec = ConnectorSpec::validate(
        &ConnectorConfig::from_json(
            &json!({"name": "bench", "config": {"connector.class": "druid", "topics": "bench"}})
                .to_string(),
        )
        .unwrap(),
    )
    .unwrap();
    let SinkSpec::Druid(cfg) = &spec.sink else {
        unreachable!()
    };
    let mut rows = Rows::new(Arc::new((**cfg).clone()));
    let mut decoder = Decoder::new(&spec).unwrap();
    let (cpu0, t0) = (cpu_seconds_self(), Instant::now());
    let (mut n, mut out_bytes) = (0u64, 0usize);
    for _ in 0..rounds {
        for (i, r) in records.iter().enumerate() {
            let (key, value) = decode(&mut decoder, r);
            let rec = SinkRecord {
                topic: "bench",
                kafka_topic: "bench",
                partition: r.partition,
                offset: i as i64,
                timestamp_ms: Some(1_700_000_000_000),
                key: key.as_ref(),
                value: &value,
                received_ms: 0,
            };
            if let RowMapped::Row { value, key, .. } = rows.map(&rec).unwrap() {
                out_bytes += value.len() + key.len();
            }
            n += 1;
        }
    }
    let (cpu, wall) = (cpu_seconds_self() - cpu0, t0.elapsed().as_secs_f64());
    println!(
        "hot druid {label:<16} {n:>8} records  {:>9.0} records/s  {:>9.0} records/CPU-s  ({:.0} bytes/row out)",
        n as f64 / wall,
        n as f64 / cpu,
        out_bytes as f64 / n as f64,
    );
}

/// The real broker → the `cdc-sink` binary running the Druid connector → its ingestion topic,
/// with transactions (`exactly.once`) on or off; beside a bare consumer of the same topic.
fn e2e_druid(label: &str, records: &[Rec], partitions: i32, exactly_once: bool) {
    let topic = support::unique(&format!("bench-druid-{label}"));
    kafka::create_topic(&topic, partitions);
    kafka::create_topic(&format!("druid.{topic}"), partitions);
    kafka::produce(&topic, records);
    let total = records.len();
    let name = support::unique("bench-druid");
    let file = connector_file(
        &name,
        &json!({"connector.class": "druid", "topics": topic, "exactly.once": exactly_once.to_string()}),
    );
    let t0 = Instant::now();
    // The worker's default offset commit interval (the tests' worker sets 500 ms).
    let w = Worker::start_with(
        &[&file],
        &[("CDC_SINK_WORKER__OFFSET_FLUSH_INTERVAL_MS", "5000")],
    );
    let Run {
        wall,
        cpu,
        rss_mib: rss,
        ..
    } = finish(w, &name, &topic, partitions, t0);
    let (bare_n, bare_cpu, ..) = bare_result(&run_bare(&topic, partitions, total).stdout);
    let txn = if exactly_once {
        "exactly once"
    } else {
        "at least once"
    };
    println!(
        "e2e druid {label:<16} {txn:<13} {total:>8} records  {:>9.0} records/s (incl. startup)  worker {:.2} CPU-s = {:>9.0} records/CPU-s, peak RSS {rss:.0} MiB",
        total as f64 / wall,
        cpu,
        total as f64 / cpu
    );
    println!(
        "e2e druid {label:<16} {txn:<13} bare rdkafka consumer: {bare_n} records, {bare_cpu:.2} CPU-s = {:>9.0} records/CPU-s  → worker/bare CPU per record = {:.2}x",
        bare_n as f64 / bare_cpu,
        cpu / bare_cpu
    );
}

/// What an end-to-end run measured.
struct E2e {
    topic: String,
    /// Over the median pair's worker run.
    records_per_cpu: f64,
    /// The first worker run.
    run: Run,
    /// The worker's CPU per record over the bare consumer's: the median over the pairs.
    ratio: f64,
    /// The bare consumer's records/CPU-s in the median pair.
    bare_per_cpu: f64,
}

/// How many times [`e2e`] runs the worker and the bare consumer, alternated, for its ratio
/// (`BENCH_PAIRS`, 3 by default). This machine's speed moves by ±30% within a minute: a
/// worker run and the bare run right after it see about the same machine, runs a minute apart
/// do not: one pair's ratio moved from 3.73× to 6.61× within one run of the same binaries.
fn pairs() -> usize {
    std::env::var("BENCH_PAIRS")
        .ok()
        .and_then(|p| p.parse().ok())
        .filter(|p| *p > 0)
        .unwrap_or(3)
}

/// The real broker → the `cdc-sink` binary (`tasks.max` tasks, `extra` connector options) → an
/// instant-acknowledging endpoint; beside a bare consumer of the same topic, `pairs` times
/// each, alternated (a fresh connector, so a fresh consumer group, every time).
fn e2e<T: AsRef<[u8]>>(
    label: &str,
    records: &[Rec<T>],
    partitions: i32,
    tasks: usize,
    pairs: usize,
    extra: serde_json::Value,
) -> E2e {
    let topic = support::unique(&format!("bench-{label}"));
    kafka::create_topic(&topic, partitions);
    kafka::producer().send(&topic, records);
    let total = records.len();
    let stand_in = StandIn::start();
    let acks = &stand_in.acks;

    let mut config = json!({"connector.class": "elasticsearch", "topics": topic, "connection.url": stand_in.url,
        "behavior.on.null.values": "delete", "tasks.max": tasks.to_string()});
    merge(&mut config, &extra);
    // BENCH_OPTIONS='{"consumer.override.fetch.max.bytes":"4194304"}' tries other settings.
    if let Ok(more) = std::env::var("BENCH_OPTIONS") {
        let more: serde_json::Value = serde_json::from_str(&more).unwrap();
        merge(&mut config, &more);
    }
    // (worker run, its CPU over the bare consumer's right after it)
    let mut measured: Vec<(Run, f64, f64)> = Vec::new();
    let mut acked_rates = Vec::new();
    let mut steady_ratios = Vec::new();
    for pair in 1..=pairs {
        acks.lock().unwrap().clear();
        let name = support::unique("bench");
        let file = connector_file(&name, &config);
        let kafka0 = server_cpu("kafka");
        let t0 = Instant::now();
        let w = Worker::start(&file);
        stand_in.worker.store(w.pid(), Ordering::Relaxed);
        let run = finish(w, &name, &topic, partitions, t0);
        stand_in.worker.store(0, Ordering::Relaxed);
        let kafka_worker = server_cpu("kafka") - kafka0;
        acked_rates.push(acked_rate(&acks.lock().unwrap(), total));
        let (wall, cpu, rss) = (run.wall, run.cpu, run.rss_mib);
        let steady = worker_steady(&acks.lock().unwrap(), total);
        let kafka0 = server_cpu("kafka");
        let (bare_n, bare_cpu, bare_steady, bare_rdk) =
            bare_result(&run_bare(&topic, partitions, total).stdout);
        let kafka_bare = server_cpu("kafka") - kafka0;
        let of = format!("{pair}/{pairs}");
        println!(
            "e2e {label:<16} {of:>5} {total:>8} records  {:>9.0} records/s (incl. startup)  worker {cpu:.2} CPU-s = {:>9.0} records/CPU-s, peak RSS {rss:.0} MiB",
            total as f64 / wall,
            total as f64 / cpu
        );
        println!(
            "e2e {label:<16} {of:>5} bare rdkafka consumer: {bare_n} records, {bare_cpu:.2} CPU-s = {:>9.0} records/CPU-s  → worker/bare CPU per record = {:.2}x; Kafka's broker serving them: {kafka_worker:.2} CPU-s for the worker, {kafka_bare:.2} for the bare consumer",
            bare_n as f64 / bare_cpu,
            cpu / bare_cpu
        );
        println!(
            "e2e {label:<16} {of:>5} tasks.max={tasks}: {:>9} records/s from the first commit to the last, {:>9.0} while the middle 80% was acknowledged (the machine {:.0}% busy)",
            // NaN: the first commit and the last were under 0.5 s apart.
            if run.steady.is_nan() {
                "(not measured: the first and last commits under 0.5 s apart)".to_string()
            } else {
                format!("{:.0}", run.steady)
            },
            acked_rates[pair - 1].0,
            100.0 * acked_rates[pair - 1].1
        );
        println!(
            "e2e {label:<16} {of:>5} the middle 80% alone: worker {:.2} µs/record, bare {:.2} µs/record → {:.2}x; the worker's CPU before its first bulk request: {:.2} s",
            1e6 * steady.per_record,
            1e6 * bare_steady,
            steady.per_record / bare_steady,
            steady.before_first
        );
        if let Some(t) = steady.split {
            println!(
                "e2e {label:<16} {of:>5} the middle 80% by thread, µs/record: worker's tasks {:.2}, its librdkafka threads {:.2}, its HTTP runtime {:.2}; bare consumer's poll {:.2}, its librdkafka threads {:.2}",
                1e6 * t.rest(),
                1e6 * t.librdkafka,
                1e6 * t.io,
                1e6 * (bare_steady - bare_rdk),
                1e6 * bare_rdk
            );
        }
        steady_ratios.push(steady.per_record / bare_steady);
        measured.push((run, cpu / bare_cpu, bare_n as f64 / bare_cpu));
    }
    let ratios: Vec<f64> = measured.iter().map(|(_, r, _)| *r).collect();
    let median = median_of(&ratios);
    let ratio = ratios[median];
    if pairs > 1 {
        println!(
            "e2e {label:<16} worker/bare CPU per record over {pairs} alternated pairs: median {ratio:.2}x ({}); the middle 80% alone: median {:.2}x ({})",
            spread(&ratios),
            steady_ratios[median_of(&steady_ratios)],
            spread(&steady_ratios)
        );
    }
    let records_per_cpu = total as f64 / measured[median].0.cpu;
    let bare_per_cpu = measured[median].2;
    E2e {
        ratio,
        records_per_cpu,
        bare_per_cpu,
        run: measured.swap_remove(0).0,
        topic,
    }
}

/// The least the worker/bare ratio of `e2e` can be with the hot path of this run: the bare
/// consumer's CPU per record plus the hot path's (decode → map → bulk body, its best round on
/// the same kind of records), over the bare consumer's; as if nothing else cost anything.
fn floor(hot_rates: &[(&str, f64)], label: &str, e2e: &E2e) {
    if let Some((_, hot)) = hot_rates.iter().find(|(l, _)| *l == label) {
        println!(
            "e2e {label:<16} the least this ratio can be with this run's hot path ({hot:.0} records/CPU-s): 1 + bare/hot = {:.2}x",
            1.0 + e2e.bare_per_cpu / hot
        );
    }
}

/// An Elasticsearch that acknowledges every action at once, noting when (see [`Acked`]).
struct StandIn {
    _rt: tokio::runtime::Runtime,
    /// The worker whose CPU each request notes ([`Acked::worker_cpu`]); 0: none.
    worker: Arc<AtomicU32>,
    url: String,
    /// The requests answered, in order.
    acks: Arc<std::sync::Mutex<Vec<Acked>>>,
}

impl StandIn {
    fn start() -> StandIn {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let acks: Arc<std::sync::Mutex<Vec<Acked>>> = Arc::default();
        let seen = acks.clone();
        let worker = Arc::new(AtomicU32::new(0));
        let pid = worker.clone();
        let handler: http::Handler = Arc::new(move |req| {
            let seen = seen.clone();
            let pid = pid.load(Ordering::Relaxed);
            Box::pin(async move {
                let worker_cpu = match pid {
                    0 => None,
                    pid => Some(thread_cpu(pid)),
                };
                let actions = http::bulk_actions(&req.body);
                let ticks = machine_ticks();
                let mut seen = seen.lock().unwrap();
                let before = seen.last().map_or(0, |a| a.actions);
                seen.push(Acked {
                    at: Instant::now(),
                    actions: before + actions.len(),
                    ticks,
                    worker_cpu,
                });
                http::Reply::Respond {
                    status: 200,
                    body: http::ack_all(actions.iter().map(|a| a.op())),
                }
            })
        });
        rt.spawn(http::serve(listener, handler));
        StandIn {
            _rt: rt,
            worker,
            url,
            acks,
        }
    }
}

/// Scale on cores: `tasks` tasks of one connector over `topic`, which holds `total` records in
/// `partitions`; documents/s while every task was busy ([`all_busy_rate`]), and how busy the
/// machine was while the stand-in acknowledged the middle 80% ([`acked_rate`], whose rate is
/// printed too). The connector is created paused and resumed
/// once its consumer group holds all its tasks: started running, the first task took every
/// partition and read much of the topic alone before the second joined and the group
/// rebalanced, so a run of two tasks measured mostly one.
fn scale_run(label: &str, topic: &str, total: usize, partitions: i32, tasks: usize) -> (f64, f64) {
    let stand_in = StandIn::start();
    let mut w = Worker::start_with(&[], &[]);
    let url = w.rest_url();
    let name = support::unique("bench-scale");
    let mut config = json!({"connector.class": "elasticsearch", "topics": topic,
        "connection.url": stand_in.url, "behavior.on.null.values": "delete",
        "tasks.max": tasks.to_string()});
    if let Ok(more) = std::env::var("BENCH_OPTIONS") {
        merge(&mut config, &serde_json::from_str(&more).unwrap());
    }
    // The group starts from committed offsets. A fresh group's consumers look up where to
    // start (ListOffsets, for `auto.offset.reset`); resuming a partition while its lookup is
    // out makes the answer outdated, and librdkafka asks again only after 500 ms: a task
    // started half a second late, in a run of a second or two (docs/performance-log.md, "Why the
    // first task started late").
    kafka::commit_offsets(&format!("connect-{name}"), topic, partitions, 0);
    let client = reqwest::blocking::Client::new();
    let created = client
        .post(format!("{url}/connectors"))
        .json(&json!({"name": name, "config": config, "initial_state": "PAUSED"}))
        .send()
        .unwrap();
    assert!(created.status().is_success(), "{}", created.text().unwrap());
    // Every task in the group, the group stable: each holds its share of the partitions.
    let group = format!("connect-{name}");
    let admin: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", support::servers::kafka())
        .create()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let joined = admin
            .fetch_group_list(Some(&group), Duration::from_secs(5))
            .ok()
            .and_then(|l| {
                l.groups()
                    .first()
                    .map(|g| (g.state().to_string(), g.members().len()))
            });
        if joined
            .as_ref()
            .is_some_and(|(state, n)| state == "Stable" && *n == tasks)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "group {group} did not hold {tasks} tasks: {joined:?}\n{}",
            w.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stand_in.worker.store(w.pid(), Ordering::Relaxed);
    let t0 = Instant::now();
    let (own0, kafka0) = (cpu_seconds_self(), server_cpu("kafka"));
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (marks, run) = std::thread::scope(|s| {
        let scraper = s.spawn(|| done_marks(&url, &stop));
        let resumed = client
            .put(format!("{url}/connectors/{name}/resume"))
            .send()
            .unwrap();
        assert!(resumed.status().is_success(), "{}", resumed.text().unwrap());
        let run = finish(w, &name, topic, partitions, t0);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (scraper.join().unwrap(), run)
    });
    // Where the machine's time went, from the resume to the last commit (the worker's since it
    // started): what the others spend, its tasks could not have.
    println!(
        "e2e {label:<16} tasks.max={tasks}: over {:.1} s, the worker {:.2} CPU-s since it started, Kafka {:.2} CPU-s, this process (the stand-in, the scraper, the commit checks) {:.2} CPU-s",
        run.wall,
        run.cpu,
        server_cpu("kafka") - kafka0,
        cpu_seconds_self() - own0
    );
    let acks = stand_in.acks.lock().unwrap();
    if let Some(c) = middle_cores(&acks) {
        println!(
            "e2e {label:<16} tasks.max={tasks}: while the middle 80% was acknowledged, cores used by the worker's tasks {:.2} (runnable but waiting for a core: {:.2} more), its librdkafka threads {:.2}, its HTTP runtime {:.2}",
            c.rest(),
            c.rest_queued,
            c.librdkafka,
            c.io
        );
    }
    let (rate, busy) = acked_rate(&acks, total);
    let all_busy = all_busy_rate(&marks);
    if all_busy.is_nan() && tasks > 1 {
        println!(
            "e2e {label:<16} tasks.max={tasks}: the tasks were never all busy at once (one had done 95% of its records before another had done 5%): left out"
        );
    }
    println!(
        "e2e {label:<16} tasks.max={tasks}: {all_busy:>9.0} documents/s while every task was busy; {rate:>9.0} records/s while the middle 80% was acknowledged (the machine {:.0}% busy)",
        100.0 * busy
    );
    (all_busy, busy)
}

/// One bulk request answered by the stand-in.
struct Acked {
    at: Instant,
    /// Actions answered by then, this request's included.
    actions: usize,
    /// [`machine_ticks`] then.
    ticks: (u64, u64),
    /// The worker's [`thread_cpu`] then (`None` when none was named).
    worker_cpu: Option<ThreadCpu>,
}

/// A worker's CPU per record over the middle of its run, and what it had spent before.
struct Steady {
    /// CPU-seconds per record while the stand-in acknowledged the actions from 10% to 90% of
    /// their final count, as in [`acked_rate`] (actions counted as the records they stand
    /// for): startup, the group join and the last commit left out. Records in flight at either
    /// end are about as many, so they cancel.
    per_record: f64,
    /// The same by kind of thread.
    split: Option<ThreadCpu>,
    /// CPU-seconds the worker had spent when its first bulk request came: startup, the
    /// consumer group join, the first batch.
    before_first: f64,
}

/// `total`: the records the run's actions stand for (a write that a later one of its document
/// supersedes within a batch is not sent, so there are fewer actions than records).
fn worker_steady(acks: &[Acked], total: usize) -> Steady {
    let before_first = acks
        .first()
        .and_then(|a| a.worker_cpu)
        .map_or(f64::NAN, |c| c.all);
    let all = acks.last().map_or(0, |a| a.actions);
    let split = match middle(acks, |a| a.actions, all) {
        Some((a, b)) if b.actions > a.actions => {
            a.worker_cpu.zip(b.worker_cpu).map(|(a_cpu, b_cpu)| {
                b_cpu
                    .minus(&a_cpu)
                    .per((b.actions - a.actions) as f64 * total as f64 / all as f64)
            })
        }
        _ => None,
    };
    Steady {
        per_record: split.map_or(f64::NAN, |c| c.all),
        split,
        before_first,
    }
}

/// Records per second of a run whose `total` records the stand-in acknowledged as `acks`, over
/// the requests that took the answered actions from 10% to 90% of their final count; and the
/// share of the machine's CPU time that was busy meanwhile (all cores, every process). Per
/// request, where offset commits (every 500 ms in these runs) made the first-commit-to-last
/// rate of a run of a second or two a coarse figure, or none. Actions stand for records in
/// proportion: a batch sends only the newest write of each document, which thins all of a run
/// alike.
fn acked_rate(acks: &[Acked], total: usize) -> (f64, f64) {
    let all = acks.last().map_or(0, |a| a.actions);
    match middle(acks, |a| a.actions, all) {
        Some((a, b)) if b.at > a.at => (
            (b.actions - a.actions) as f64 * total as f64
                / all as f64
                / (b.at - a.at).as_secs_f64(),
            (b.ticks.0 - a.ticks.0) as f64 / (b.ticks.1 - a.ticks.1).max(1) as f64,
        ),
        _ => (f64::NAN, f64::NAN),
    }
}

/// The worker's cores used by kind of thread while the stand-in acknowledged the middle 80%
/// of the actions (as [`acked_rate`]): CPU-seconds over seconds.
fn middle_cores(acks: &[Acked]) -> Option<ThreadCpu> {
    let all = acks.last().map_or(0, |a| a.actions);
    let (a, b) = middle(acks, |a| a.actions, all).filter(|(a, b)| b.at > a.at)?;
    let (from, to) = a.worker_cpu.zip(b.worker_cpu)?;
    Some(to.minus(&from).per((b.at - a.at).as_secs_f64()))
}

/// The first of `marks` (in order of their counts `done`) at which the count reached 10% of
/// `total`, and the first at which it reached 90%: the steady middle of a run, between its
/// start-up and its tail.
fn middle<T>(marks: &[T], done: impl Fn(&T) -> usize, total: usize) -> Option<(&T, &T)> {
    let at = |share: usize| marks.iter().find(|m| done(m) * 10 >= total * share);
    at(1).zip(at(9))
}

/// The index of the median of `values` (the upper one of an even count).
fn median_of(values: &[f64]) -> usize {
    // A run too short to measure gives NaN: left out (and `0` when nothing is left).
    let mut order: Vec<usize> = (0..values.len()).filter(|i| !values[*i].is_nan()).collect();
    order.sort_by(|a, b| values[*a].total_cmp(&values[*b]));
    order.get(order.len() / 2).copied().unwrap_or(0)
}

/// `from <least>x to <greatest>x`.
fn spread(values: &[f64]) -> String {
    match least_and_most(values) {
        Some((least, most)) => format!("from {least:.2}x to {most:.2}x"),
        None => "no pair measured".into(),
    }
}

/// The least and the greatest of `values`, NaN left out (`f64::min` and `max` skip it);
/// `None` when nothing is left.
fn least_and_most(values: &[f64]) -> Option<(f64, f64)> {
    let least = values.iter().copied().fold(f64::INFINITY, f64::min);
    let most = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (least <= most).then_some((least, most))
}

/// The bulk bodies the worker would send for `records` into `index` (decode → map → batch of
/// `batch.size` 2000, as in [`hot`]): what an ideal client sends, built before the clock starts.
fn bodies(records: &[Rec], index: &str) -> Vec<bytes::Bytes> {
    let spec = spec(json!({"behavior.on.null.values": "delete", "index.name": index}));
    let mut mapper = Mapper::new(Arc::new(spec.sink.elasticsearch().unwrap().clone()));
    let mut decoder = Decoder::new(&spec).unwrap();
    let topic: Arc<str> = "bench".into();
    let mut out = Vec::new();
    let mut batch = Batch::new(false);
    for (i, r) in records.iter().enumerate() {
        feed(&mut decoder, &mut mapper, &mut batch, &topic, i, r);
        if batch.records() >= 2000 {
            out.push(batch.take().seal().body);
        }
    }
    if !batch.is_empty() {
        out.push(batch.seal().body);
    }
    out
}

/// Sends `bodies` to `_bulk` of the real Elasticsearch from `threads` threads: documents
/// (actions) per second while the middle 80% of them were acknowledged ([`middle_rate`]), as
/// the worker's are measured; and how many documents.
fn ideal_client(bodies: &[bytes::Bytes], threads: usize) -> (f64, usize) {
    let es = support::servers().es.clone();
    let client = reqwest::blocking::Client::new();
    let actions: Vec<usize> = bodies.iter().map(|b| http::bulk_actions(b).len()).collect();
    let total: usize = actions.iter().sum();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::Mutex::new(vec![(Instant::now(), 0usize)]);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else { break };
                    let resp = client
                        .post(format!("{es}/_bulk"))
                        .header("content-type", "application/x-ndjson")
                        .body(body.clone())
                        .send()
                        .unwrap();
                    assert!(resp.status().is_success());
                    // Bodies sent side by side reach a document out of order: the older write is
                    // refused as stale (409), as the worker's would be, and a delete may find
                    // nothing to delete (404).
                    let reply: serde_json::Value = resp.json().unwrap();
                    for item in reply["items"].as_array().unwrap() {
                        let status = item.as_object().unwrap().values().next().unwrap()["status"]
                            .as_u64()
                            .unwrap();
                        assert!(status < 300 || status == 409 || status == 404, "{item}");
                    }
                    let mut done = done.lock().unwrap();
                    let so_far = done.last().unwrap().1 + actions[i];
                    done.push((Instant::now(), so_far));
                }
            });
        }
    });
    (middle_rate(&done.into_inner().unwrap(), total), total)
}

/// Items per second between the moments `marks` (when, items done by then, in order)
/// first reached 10% and 90% of `total`: the first request's latency, startup, and the last
/// commit left out, the same for the worker and the ideal client.
fn middle_rate(marks: &[(Instant, usize)], total: usize) -> f64 {
    match middle(marks, |m| m.1, total) {
        Some((a, b)) if b.0 > a.0 => (b.1 - a.1) as f64 / (b.0 - a.0).as_secs_f64(),
        _ => f64::NAN,
    }
}

/// The worker at `url`'s records done per task, from its `/metrics`, every 20 ms until `stop`:
/// (when, records done by then by each task, by its `task` label). Done: written, or refused
/// as stale (both acknowledged by Elasticsearch), or skipped, failed or dead-lettered as its
/// settings allow.
fn done_marks(
    url: &str,
    stop: &std::sync::atomic::AtomicBool,
) -> Vec<(Instant, std::collections::BTreeMap<String, usize>)> {
    let client = reqwest::blocking::Client::new();
    let mut marks = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if let Ok(text) = client
            .get(format!("{url}/metrics"))
            .send()
            .and_then(|r| r.text())
        {
            let mut done = std::collections::BTreeMap::new();
            for l in text.lines().filter(|l| {
                l.starts_with("cdc_sink_records_")
                    && !l.starts_with("cdc_sink_records_consumed_total")
            }) {
                let task = l
                    .split("task=\"")
                    .nth(1)
                    .and_then(|t| t.split('"').next())
                    .unwrap_or("")
                    .to_string();
                let n = l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
                *done.entry(task).or_default() += n.unwrap_or(0.0) as usize;
            }
            marks.push((Instant::now(), done));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    marks
}

/// [`done_marks`] summed over the tasks.
fn done_total(
    marks: &[(Instant, std::collections::BTreeMap<String, usize>)],
) -> Vec<(Instant, usize)> {
    marks
        .iter()
        .map(|(at, done)| (*at, done.values().sum()))
        .collect()
}

/// Records per second of all tasks together while every task was busy: from the moment the
/// last of them had done 5% of its final count to the moment the first of them had done 95%
/// of its own. Each task reads its own partitions, and after a rebalance one may start half
/// a second after another (librdkafka's committed-offset query): over a run of a second or
/// two, a rate over the middle of all records would measure that skew, not the tasks.
fn all_busy_rate(marks: &[(Instant, std::collections::BTreeMap<String, usize>)]) -> f64 {
    let Some((_, last)) = marks.last() else {
        return f64::NAN;
    };
    // The index of the first mark at which `task` had done `share`% of its final count.
    let when = |task: &str, share: usize| {
        marks
            .iter()
            .position(|(_, d)| d.get(task).copied().unwrap_or(0) * 100 >= last[task] * share)
    };
    let from = last.keys().map(|t| when(t, 5)).max().flatten();
    let to = last.keys().map(|t| when(t, 95)).min().flatten();
    let (Some(from), Some(to)) = (from, to) else {
        return f64::NAN;
    };
    if to <= from {
        return f64::NAN;
    }
    let (a, b) = (&marks[from], &marks[to]);
    let sum = |d: &std::collections::BTreeMap<String, usize>| d.values().sum::<usize>();
    (sum(&b.1) - sum(&a.1)) as f64 / (b.0 - a.0).as_secs_f64()
}

/// Kafka Connect of the benchmark's servers (started there if it is not running yet).
fn connect_url() -> String {
    let dir = servers_dir();
    if !dir.join("connect.env").exists() {
        let ok = std::process::Command::new(support::servers::repo().join("scripts/servers"))
            .arg("start")
            .arg(&dir)
            .arg("connect")
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "Kafka Connect did not start");
    }
    support::servers::read_env(&dir, "connect.env", "CONNECT_URL")
}

/// The CPU-seconds of a server of the benchmark's (`connect`, `elasticsearch`) so far: its
/// process tree (the JVM is a descendant of the process whose id `scripts/servers` keeps).
fn server_cpu(name: &str) -> f64 {
    fn tree(pid: u32) -> f64 {
        // Each thread lists the children it started.
        let children: String = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
            .collect::<Vec<_>>()
            .join(" ");
        cpu_seconds_of(pid)
            + children
                .split_whitespace()
                .filter_map(|c| c.parse().ok())
                .map(tree)
                .sum::<f64>()
    }
    std::fs::read_to_string(servers_dir().join(name).join("pid"))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .map_or(f64::NAN, tree)
}

/// Kafka Connect's JsonConverter (schemas on) → FileStreamSink over `topic`: the least any
/// Connect-based sink spends per record. Records per CPU-second of the Connect worker.
fn connect_file_sink(topic: &str, partitions: i32) -> f64 {
    let url = connect_url();
    let name = support::unique("bench-connect-file");
    let file = std::env::temp_dir().join(format!("{name}.txt"));
    let total: i64 = kafka::end_offsets(topic, partitions).values().sum();
    let config = json!({"connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector",
        "topics": topic, "file": file, "tasks.max": "1",
        "key.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "key.converter.schemas.enable": "true", "value.converter.schemas.enable": "true"});
    let client = reqwest::blocking::Client::new();
    let cpu0 = server_cpu("connect");
    let t0 = Instant::now();
    let resp = client
        .put(format!("{url}/connectors/{name}/config"))
        .json(&config)
        .send()
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().unwrap());
    let group = format!("connect-{name}");
    let end = kafka::end_offsets(topic, partitions);
    let watch = kafka::Committed::new(&group, topic, partitions);
    while watch.now() != end {
        assert!(
            t0.elapsed() < Duration::from_secs(900),
            "Kafka Connect did not finish"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let cpu = server_cpu("connect") - cpu0;
    let _ = client.delete(format!("{url}/connectors/{name}")).send();
    let _ = std::fs::remove_file(&file);
    println!(
        "e2e Kafka Connect 4.1 JsonConverter → FileStreamSink: {total} records, {:.2} CPU-s = {:>9.0} records/CPU-s (the Connect worker's whole process, offset commits every 5 s)",
        cpu,
        total as f64 / cpu
    );
    total as f64 / cpu
}

/// The worker into the real Elasticsearch beside an ideal client sending the same documents as
/// pre-built bulk bodies with the best concurrency found. Returns the worker's rate over the
/// ideal client's around it for each of `pairs` worker runs (empty without an ideal client).
fn es_vs_ideal(records: &[Rec], partitions: i32, pairs: usize) -> Vec<f64> {
    let es = support::servers().es.clone();
    // A freshly started Elasticsearch keeps getting faster over its first million documents
    // or so (its JIT warming up): in one run its CPU per pass of the same documents fell from
    // 51 to 14 CPU-s over five passes, so whichever ran first lost. The ideal client runs
    // first, at each concurrency (warming it up), then once more at its best; then the worker
    // and the ideal client by turns: each worker run is compared with the mean of the ideal
    // runs on either side of it, which Elasticsearch's warming favours one way and the other,
    // and the median of those ratios is the figure (the one pair of earlier runs gave 96% in
    // one full run and 81% in the next).
    let ideal = |threads: usize| {
        let body = bodies(records, &support::unique("bench-ideal"));
        let (es0, own0) = (server_cpu("elasticsearch"), cpu_seconds_self());
        let (rate, documents) = ideal_client(&body, threads);
        println!(
            "es  ideal client, {threads} concurrent requests, pre-built bodies: {documents} documents, {rate:>8.0} documents/s while the middle 80% was acknowledged; the client {:.2} CPU-s, Elasticsearch {:.2} CPU-s",
            cpu_seconds_self() - own0,
            server_cpu("elasticsearch") - es0
        );
        rate
    };
    let concurrency: &[usize] = match std::env::var("BENCH_ES_IDEAL").as_deref() {
        Ok("0") => &[],
        _ => &[2, 4, 8],
    };
    let (mut best, mut best_threads) = (0.0f64, 0);
    for &threads in concurrency {
        let rate = ideal(threads);
        if rate > best {
            (best, best_threads) = (rate, threads);
        }
    }
    let mut before = if best_threads > 0 {
        ideal(best_threads)
    } else {
        0.0
    };
    let mut ratios = Vec::new();
    // Without an ideal client (`BENCH_ES_IDEAL=0`), one worker run: nothing to compare with.
    let pairs = if best_threads > 0 { pairs } else { 1 };
    for pair in 1..=pairs {
        // A topic and so an index of its own: the same documents written again into the same
        // index would come back as stale versions, which Elasticsearch refuses cheaply.
        let rate = es_worker(records, partitions, &es, best_threads);
        if best_threads == 0 {
            continue;
        }
        let after = ideal(best_threads);
        let ratio = rate / ((before + after) / 2.0);
        println!(
            "es  {pair}/{pairs} cdc-sink reaches {:.0}% of the ideal client's rate around it ({best_threads} at a time; {before:.0} before it, {after:.0} after it)",
            100.0 * ratio
        );
        ratios.push(ratio);
        before = after;
    }
    if let Some((least, most)) = least_and_most(&ratios) {
        let median = ratios[median_of(&ratios)];
        println!(
            "es  cdc-sink over the ideal client around it, {} pairs: median {:.0}% (from {:.0}% to {:.0}%)",
            ratios.len(),
            100.0 * median,
            100.0 * least,
            100.0 * most
        );
    }
    ratios
}

/// One run of the worker into Elasticsearch (`threads` requests in flight, when not 0) over
/// `records` in a topic of their own: documents/s while the middle 80% was acknowledged.
fn es_worker(records: &[Rec], partitions: i32, es: &str, threads: usize) -> f64 {
    let topic = support::unique("bench-es");
    kafka::create_topic(&topic, partitions);
    kafka::produce(&topic, records);
    // The worker with as many requests in flight as the ideal client's best (its default is
    // 5): the comparison is of what each does with the same concurrency, which is a setting.
    let name = support::unique("bench-es");
    let mut config = json!({"connector.class": "elasticsearch", "topics": topic, "connection.url": es,
        "behavior.on.null.values": "delete"});
    if threads > 0 {
        config["max.in.flight.requests"] = threads.to_string().into();
    }
    // BENCH_ES_OPTIONS='{"max.in.flight.requests":"8"}' tries other connector settings.
    if let Ok(extra) = std::env::var("BENCH_ES_OPTIONS") {
        let extra: serde_json::Value = serde_json::from_str(&extra).unwrap();
        merge(&mut config, &extra);
    }
    let file = connector_file(&name, &config);
    let (es0, kafka0) = (server_cpu("elasticsearch"), server_cpu("kafka"));
    let t0 = Instant::now();
    let mut w = Worker::start(&file);
    let url = w.rest_url();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (run, marks) = std::thread::scope(|s| {
        let scraper = s.spawn(|| done_total(&done_marks(&url, &stop)));
        let run = finish(w, &name, &topic, partitions, t0);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (run, scraper.join().unwrap())
    });
    let es_worker = server_cpu("elasticsearch") - es0;
    let kafka_worker = server_cpu("kafka") - kafka0;
    // In documents written (or refused as stale) per second, as the ideal client's: the
    // writes a batch supersedes before sending are not sent, by either.
    let actions = marks.last().map_or(0, |m| m.1);
    let rate = middle_rate(&marks, actions);
    println!(
        "es  cdc-sink → Elasticsearch, {} in flight: {} records, {actions} documents, {rate:>8.0} documents/s while the middle 80% was acknowledged ({:.0} records/s from the first commit to the last); worker {:.2} CPU-s, Kafka {:.2} CPU-s, Elasticsearch {:.2} CPU-s over {:.1} s",
        config["max.in.flight.requests"]
            .as_str()
            .unwrap_or("the default"),
        records.len(),
        run.steady,
        run.cpu,
        kafka_worker,
        es_worker,
        run.wall
    );
    rate
}

/// Drives `rate` changes per second into PostgreSQL for `run`, through Debezium and cdc-sink
/// into Elasticsearch, and prints the freshness the worker measured.
/// Returns cdc-sink's share (Kafka timestamp → acknowledgement): (p50, p99) in ms.
fn live_freshness(rate: usize, run: Duration) -> (f64, f64) {
    use std::io::Write as _;
    use support::live;
    let es = support::servers().es.clone();
    live::live();
    let db = format!("bench_{:08x}", fastrand::u32(..));
    live::pg("postgres", &format!("CREATE DATABASE {db};"));
    live::pg(&db, &live::inventory_sql("postgres"));
    // 10 000 rows to change, so that changes rarely meet in one bulk request.
    live::pg(
        &db,
        "INSERT INTO inventory.customers SELECT g, 'f', 'l', 'e' || g FROM generate_series(100000, 109999) g;",
    );
    let mut debezium = live::pg_debezium(&db);
    // The demo's Debezium settings (demo/connect); BENCH_DEBEZIUM='{"poll.interval.ms":"500",
    // "producer.override.batch.size":"16384"}' runs Debezium's and Kafka Connect's defaults.
    if let Ok(extra) = std::env::var("BENCH_DEBEZIUM") {
        merge(
            &mut debezium,
            &serde_json::from_str(&extra).expect("BENCH_DEBEZIUM is JSON"),
        );
    }
    live::register(&db, debezium);
    // Default settings: the freshness a user gets without tuning.
    let config = json!({"connector.class": "elasticsearch", "topics.regex": format!("{db}\\.inventory\\..*"),
        "connection.url": es});
    let file = connector_file(&format!("{db}-es"), &config);
    let w = Worker::start(&file);
    let index = format!("{db}.inventory.customers");
    let t0 = Instant::now();
    while support::es::sources(&index).len() < 10_004 {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "snapshot did not arrive:\n{}",
            w.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The snapshot is in; a new worker measures the steady state only.
    assert!(w.stop().success());
    let w = Worker::start(&file);
    // Beside the worker, a bare consumer of the same topic: how old each record is when any
    // consumer can first have it (the part of "Kafka → acknowledgement" no sink can save).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let receipt = {
        let (topic, stop) = (index.clone(), stop.clone());
        std::thread::spawn(move || {
            let c = plain_consumer(&topic, "latest");
            let mut ages = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(Ok(m)) = c.poll(Duration::from_millis(100))
                    && let Some(ts) = m.timestamp().to_millis()
                {
                    ages.push(cdc_sink::metrics::now_ms() - ts);
                }
            }
            ages
        })
    };
    std::thread::sleep(Duration::from_secs(5));
    // One psql session, fed a tenth of a second's changes every 100 ms.
    let mut psql = std::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &live::live().pg_port,
            "-U",
            "postgres",
            "-d",
            &db,
            "-q",
            "-X",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = psql.stdin.take().unwrap();
    let tick = Duration::from_millis(100);
    let per_tick = (rate / 10).max(1);
    let start = Instant::now();
    let mut n = 0usize;
    while start.elapsed() < run {
        let mut sql = String::new();
        for _ in 0..per_tick {
            n += 1;
            let id = 100_000 + fastrand::usize(..10_000);
            sql.push_str(&format!(
                "UPDATE inventory.customers SET first_name = 'n{n}' WHERE id = {id};\n"
            ));
        }
        stdin.write_all(sql.as_bytes()).unwrap();
        stdin.flush().unwrap();
        let next = tick * (n / per_tick) as u32;
        if let Some(wait) = next.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    drop(stdin);
    let _ = psql.wait();
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut ages = receipt.join().unwrap();
    ages.sort_unstable();
    // "–" when the bare consumer read nothing.
    let at = |q: f64| {
        ages.get(((ages.len() as f64 * q) as usize).min(ages.len().saturating_sub(1)))
            .map_or("–".to_string(), |a| a.to_string())
    };
    println!(
        "live   a bare consumer's receipt: Kafka timestamp → poll  p50 {} ms  p99 {} ms  ({} records)",
        at(0.5),
        at(0.99),
        ages.len()
    );
    // Where cdc-sink's share goes: the bulk requests' own latency.
    let mut w = w;
    let text = support::rest::metrics(&w.rest_url());
    // The sum of the samples on the lines `keep` picks.
    let total = |keep: &dyn Fn(&str) -> bool| {
        text.lines()
            .filter(|l| keep(l))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let sum = |name: &str| total(&|l: &str| l.starts_with(name));
    let (secs, requests) = (
        sum("cdc_sink_bulk_request_duration_seconds_sum"),
        sum("cdc_sink_bulk_request_duration_seconds_count"),
    );
    let records = sum("cdc_sink_bulk_batch_records_sum");
    // The tail: requests slower than 100 ms and than 500 ms (bucket bounds of the histogram).
    let within = |le: &str| {
        let bound = format!("le=\"{le}\"");
        total(&|l: &str| {
            l.starts_with("cdc_sink_bulk_request_duration_seconds_bucket{") && l.contains(&bound)
        })
    };
    println!(
        "live   bulk requests: {requests:.0}, mean {:.0} ms, {:.1} records each; {:.0} took over 100 ms, {:.0} over 500 ms",
        1000.0 * secs / requests,
        records / requests,
        requests - within("0.1"),
        requests - within("0.5"),
    );
    let log = w.log.clone();
    assert!(w.stop().success());
    live::unregister(&db);
    let text = std::fs::read_to_string(log).unwrap();
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("connector stopped"))
        .expect("final metrics line");
    let json: serde_json::Value =
        serde_json::from_str(line.split("metrics=").nth(1).unwrap().trim()).unwrap();
    let ms = |k: &str, q: &str| json[k][q].as_f64().map_or(f64::NAN, |s| s * 1000.0);
    let lat = |k: &str| {
        format!(
            "p50 {:>5.0} ms  p99 {:>5.0} ms  ({} writes)",
            ms(k, "p50_seconds"),
            ms(k, "p99_seconds"),
            json[k]["count"]
        )
    };
    println!(
        "live {n} changes at {rate}/s for {run:?} (PostgreSQL → Debezium → Kafka → cdc-sink → Elasticsearch)"
    );
    println!(
        "live source commit → Elasticsearch ack   {}",
        lat("source_to_ack")
    );
    println!(
        "live   cdc-sink: Kafka → Elasticsearch   {}",
        lat("kafka_to_ack")
    );
    println!(
        "live     of which in the sink: put → ack {}",
        lat("received_to_ack")
    );
    (
        ms("kafka_to_ack", "p50_seconds"),
        ms("kafka_to_ack", "p99_seconds"),
    )
}

/// The servers' directory, also when only Kafka was started ([`ensure_kafka`]):
/// `support::servers()` wants Elasticsearch too.
fn servers_dir() -> std::path::PathBuf {
    std::env::var_os("CDCSINK_TEST_SERVERS")
        .map(Into::into)
        .unwrap_or_else(|| support::servers().dir.clone())
}

/// A Kafka for the end-to-end runs: `CDCSINK_TEST_SERVERS`'s, or one started now (and named
/// there for the worker processes).
fn ensure_kafka() {
    if std::env::var_os("CDCSINK_TEST_SERVERS").is_none() {
        let dir = support::servers::start(&["kafka"]);
        // SAFETY: set before any other thread reads the environment.
        unsafe { std::env::set_var("CDCSINK_TEST_SERVERS", dir) };
    }
}

/// The benchmark's own directory for its workers' files (`support::scratch`), removed when
/// the benchmark ends, also by a panic; a run killed leaves it, named `cdc-sink-bench-<pid>`.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("cdc-sink-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // SAFETY: set before any other thread reads the environment (none has started yet).
        unsafe { std::env::set_var("CDCSINK_SCRATCH", &dir) };
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The targets beside what this run measured, printed at the end.
#[derive(Default)]
struct Targets(Vec<String>);

impl Targets {
    fn at_least(&mut self, what: &str, measured: f64, target: f64, unit: &str) {
        // Small figures (percentages) keep a decimal, so that 169.6 is not shown as 170 and
        // "NOT met" beside a target of 170.
        let measured_text = if measured.abs() < 1000.0 {
            format!("{measured:>10.1} {unit}")
        } else {
            format!("{measured:>10.0} {unit}")
        };
        self.line(
            what,
            measured >= target,
            measured_text,
            format!("≥ {target:.0}"),
        );
    }
    fn at_most(&mut self, what: &str, measured: f64, target: f64, unit: &str) {
        self.line(
            what,
            measured <= target,
            format!("{measured:>10.2} {unit}"),
            format!("≤ {target}"),
        );
    }
    fn line(&mut self, what: &str, met: bool, measured: String, target: String) {
        let verdict = if met { "met" } else { "NOT met" };
        self.0.push(format!(
            "target {what:<44} {measured:<22} {target:<10} {verdict}"
        ));
    }
}

/// `changes` changes of 100 000 rows in 4 partitions, for the runs on the real broker.
fn big_history(seed: u64, with_schema: bool, changes: usize) -> Vec<Rec> {
    history::generate(
        seed,
        &Options {
            changes,
            keys: 100_000,
            with_schema,
            replay: 0,
            ..Options::default()
        },
    )
    .records
}

/// Kafka and Elasticsearch for the runs against the real one.
fn ensure_es() {
    if std::env::var_os("CDCSINK_TEST_SERVERS").is_none() {
        let dir = support::servers::start(&["kafka", "elasticsearch"]);
        // SAFETY: set before any other thread reads the environment.
        unsafe { std::env::set_var("CDCSINK_TEST_SERVERS", dir) };
    }
}

fn main() {
    // The benchmark's own reqwest clients have no TLS set-up of their own.
    cdc_sink::tls::install_default();
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--bare-consumer") {
        bare_consumer(
            &args[i + 1],
            args[i + 2].parse().unwrap(),
            args[i + 3].parse().unwrap(),
        );
        return;
    }
    // The workers' logs, state directories and connector files, removed at the end (they had
    // been left in the temporary directory, a dozen or more files a run).
    let _scratch = Scratch::new();
    let want = |what: &str| {
        !args
            .iter()
            .any(|a| ["hot", "e2e", "es", "druid", "live", "backlog"].contains(&a.as_str()))
            || args.iter().any(|a| a == what)
    };
    if want("live") && args.iter().any(|a| a == "live") {
        let (p50, p99) = live_freshness(1_000, Duration::from_secs(60));
        let mut targets = Targets::default();
        targets.at_most(
            "live: Kafka → acknowledgement p50 at 1 000/s",
            p50,
            120.0,
            "ms",
        );
        targets.at_most(
            "live: Kafka → acknowledgement p99 at 1 000/s",
            p99,
            300.0,
            "ms",
        );
        for t in &targets.0 {
            println!("{t}");
        }
        return;
    }
    let mut targets = Targets::default();
    if want("es") {
        // Before any run starts a Kafka alone.
        ensure_es();
    }
    let plain = history::generate(
        1,
        &Options {
            changes: 50_000,
            keys: 20_000,
            with_schema: false,
            replay: 0,
            ..Options::default()
        },
    );
    let schema = history::generate(
        2,
        &Options {
            changes: 50_000,
            keys: 20_000,
            with_schema: true,
            replay: 0,
            ..Options::default()
        },
    );
    // The same history in Avro, through a schema registry of the tests' own.
    let registry = support::registry::Registry::start();
    let avro = support::avro::Encoder::new(&registry).records("bench", &schema.records);
    let avro_options = json!({"key.converter": "avro", "value.converter": "avro",
        "key.converter.schema.registry.url": registry.url, "value.converter.schema.registry.url": registry.url});
    // The hot path's best rounds, for the least each end-to-end ratio can be (`floor`).
    let mut hot_rates: Vec<(&str, f64)> = Vec::new();
    if want("hot") {
        let rounds: usize = std::env::var("BENCH_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(4);
        // BENCH_ONLY=avro (or json, or schema: JSON with schema only, or plain: JSON without
        // schema only) runs one family, for profiling.
        let only = std::env::var("BENCH_ONLY").unwrap_or_default();
        let runs = |family: &str| match only.as_str() {
            "" => true,
            "json" => family != "avro",
            _ => family == only,
        };
        if runs("plain") {
            let r = hot("without schema", &plain.records, rounds, json!({}));
            hot_rates.push(("without-schema", r));
            targets.at_least(
                "hot: JSON without schema, one core",
                r,
                500_000.0,
                "records/CPU-s",
            );
        }
        if runs("schema") {
            let r = hot(
                "with schema",
                &schema.records,
                rounds.div_ceil(2),
                json!({}),
            );
            hot_rates.push(("with-schema", r));
            targets.at_least(
                "hot: JSON with schema (~2 KB), one core",
                r,
                300_000.0,
                "records/CPU-s",
            );
            let wide = wide(7, 20_000, 20, 8);
            let r = hot("with schema 6 KB", &wide, rounds.div_ceil(2), json!({}));
            hot_rates.push(("with-schema-6KB", r));
            // Two tasks' hot paths on the two cores, against one: alternated, best of three.
            let (mut one, mut two) = (0f64, 0f64);
            for _ in 0..3 {
                one = one.max(hot_threads(&schema.records, 1, rounds.div_ceil(2)));
                two = two.max(hot_threads(&schema.records, 2, rounds.div_ceil(2)));
            }
            println!(
                "hot with schema on 2 threads: {two:>9.0} records/s, on 1: {one:>9.0} → {:.2}x ({} cores here)",
                two / one,
                std::thread::available_parallelism().map_or(0, |n| n.get())
            );
        }
        if runs("avro") {
            let r = hot("avro", &avro, rounds, avro_options.clone());
            hot_rates.push(("avro", r));
            targets.at_least("hot: Avro, one core", r, 400_000.0, "records/CPU-s");
            avro_decode_only(&registry.url, &avro, rounds);
            apache_avro_value_path(&registry, &avro, rounds);
        }
    }
    // BENCH_E2E=6KB (a part of a run's label) runs only the end-to-end runs it names;
    // BENCH_ONLY=avro, the Avro run alone (for profiling).
    let e2e_only = std::env::var("BENCH_E2E").unwrap_or_else(|_| {
        match std::env::var("BENCH_ONLY").as_deref() {
            Ok("avro") => "avro".into(),
            _ => String::new(),
        }
    });
    let e2e_wanted = |label: &str| want("e2e") && label.contains(e2e_only.as_str());
    if e2e_wanted("scale") {
        ensure_kafka();
        // Scale on cores: the same CPU-bound run with one task and with two. First of the
        // end-to-end runs, before the Kafka Connect comparison starts Connect's JVM beside them
        // (with it idle there, 0.90–1.05x over three pairs; without it, 1.01x and 1.37x).
        let scale = big_history(9, true, 200_000);
        let topic = support::unique("bench-scale");
        kafka::create_topic(&topic, 4);
        kafka::producer().send(&topic, &scale);
        // Alternated, as the worker/bare pairs are (see `pairs`).
        let gains: Vec<f64> = (0..pairs())
            .map(|_| {
                let (one, _) = scale_run("scale-1-task", &topic, scale.len(), 4, 1);
                let (two, _) = scale_run("scale-2-tasks", &topic, scale.len(), 4, 2);
                two / one
            })
            .collect();
        let median = gains[median_of(&gains)];
        println!(
            "e2e scale: tasks.max=2 over tasks.max=1 over {} alternated pairs: median {median:.2}x ({})",
            gains.len(),
            spread(&gains)
        );
        targets.at_least(
            "e2e: tasks.max=2 over tasks.max=1, records/s ×100",
            100.0 * median,
            170.0,
            "%",
        );
    }
    if e2e_wanted("without-schema") {
        ensure_kafka();
        let r = e2e(
            "without-schema",
            &big_history(3, false, 400_000),
            4,
            1,
            pairs(),
            json!({}),
        );
        floor(&hot_rates, "without-schema", &r);
        targets.at_most(
            "e2e: JSON without schema, worker/bare CPU",
            r.ratio,
            2.0,
            "x",
        );
    }
    if e2e_wanted("with-schema") {
        ensure_kafka();
        let r = e2e(
            "with-schema",
            &big_history(4, true, 150_000),
            4,
            1,
            pairs(),
            json!({}),
        );
        floor(&hot_rates, "with-schema", &r);
        targets.at_most(
            "e2e: JSON with schema ~2 KB, worker/bare CPU",
            r.ratio,
            2.5,
            "x",
        );
        if e2e_only.is_empty() {
            let connect = connect_file_sink(&r.topic, 4);
            println!(
                "e2e Kafka Connect (no Elasticsearch at all) spends {:.1}x the worker's CPU per record",
                r.records_per_cpu / connect
            );
        }
    }
    if e2e_wanted("with-schema-6KB") {
        ensure_kafka();
        let r = e2e(
            "with-schema-6KB",
            &wide(8, 60_000, 20, 4),
            4,
            1,
            pairs(),
            json!({}),
        );
        floor(&hot_rates, "with-schema-6KB", &r);
        targets.at_most(
            "e2e: JSON with schema ~6 KB, worker/bare CPU",
            r.ratio,
            2.5,
            "x",
        );
    }
    if e2e_wanted("avro") {
        ensure_kafka();
        let avro_big =
            support::avro::Encoder::new(&registry).records("bench", &big_history(4, true, 150_000));
        let r = e2e("avro", &avro_big, 4, 1, pairs(), avro_options.clone());
        floor(&hot_rates, "avro", &r);
        targets.at_most("e2e: Avro, worker/bare CPU", r.ratio, 2.0, "x");
    }
    if want("es") {
        let records = big_history(10, true, 200_000);
        // BENCH_ES_IDEAL=0 leaves the ideal client out: nothing to compare with.
        let ratios = es_vs_ideal(&records, 4, pairs());
        if !ratios.is_empty() {
            targets.at_least(
                "es: cdc-sink over an ideal client, records/s ×100",
                100.0 * ratios[median_of(&ratios)],
                90.0,
                "%",
            );
        }
    }
    if want("druid") {
        let rounds: usize = std::env::var("BENCH_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(4);
        hot_druid("without schema", &plain.records, rounds);
        hot_druid("with schema", &schema.records, rounds.div_ceil(2));
        ensure_kafka();
        let records = big_history(6, true, 200_000);
        e2e_druid("with-schema", &records, 4, false);
        e2e_druid("with-schema", &records, 4, true);
    }
    if args.iter().any(|a| a == "backlog") {
        // Catching up a backlog of a million records over 8 partitions: peak memory.
        ensure_kafka();
        let backlog = history::generate(
            5,
            &Options {
                changes: 1_000_000,
                keys: 200_000,
                partitions: 8,
                with_schema: false,
                replay: 0,
                ..Options::default()
            },
        );
        let r = e2e(
            "backlog-1M",
            &backlog.records[..1_000_000],
            8,
            1,
            1,
            json!({}),
        );
        targets.at_most(
            "backlog of 1M records over 8 partitions, peak RSS",
            r.run.rss_mib,
            120.0,
            "MiB",
        );
    }
    for t in &targets.0 {
        println!("{t}");
    }
}
