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

fn cpu_seconds_self() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
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
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    ConnectorSpec::validate(
        &ConnectorConfig::from_json(&json!({"name": "bench", "config": config}).to_string())
            .unwrap(),
    )
    .unwrap()
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

/// decode → map → batch (NDJSON body) for every record, on this thread.
fn hot<T: AsRef<[u8]>>(label: &str, records: &[Rec<T>], rounds: usize, extra: serde_json::Value) {
    let mut options = json!({"behavior.on.null.values": "delete"});
    for (k, v) in extra.as_object().unwrap() {
        options[k] = v.clone();
    }
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
            let (key, value) = decode(&mut decoder, r);
            let rec = SinkRecord {
                topic: "bench",
                kafka_topic: "bench",
                partition: r.partition,
                offset: i as i64,
                timestamp_ms: None,
                key: key.as_ref(),
                value: &value,
            };
            if let Mapped::Write(a) = mapper.map(&rec).unwrap() {
                batch.push(
                    a,
                    Origin {
                        topic: topic.clone(),
                        partition: r.partition,
                        offset: i as i64,
                        source_ts_ms: None,
                        kafka_ts_ms: None,
                    },
                    Ack {
                        slot: 0,
                        epoch: 0,
                        offset: i as i64,
                    },
                );
            }
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

/// Reads `topic` to its end with a plain rdkafka consumer, touching every payload; prints the
/// CPU seconds this process spent. Run as a child process of the benchmark.
fn bare_consumer(topic: &str, partitions: i32, expected: usize) {
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", support::servers::kafka())
        .set("group.id", format!("bare-{}", fastrand::u32(..)))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let (mut n, mut bytes) = (0usize, 0usize);
    let deadline = Instant::now() + Duration::from_secs(600);
    while n < expected && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            bytes += m.payload().map_or(0, |p| {
                p.iter().fold(0usize, |a, b| a.wrapping_add(*b as usize)) & 1
            });
            n += 1;
        }
    }
    let _ = (partitions, bytes);
    println!("{n} {}", cpu_seconds_self());
}

/// Waits until the worker committed every offset of `topic` for connector `name`, then stops
/// it: (seconds since `t0`, the worker's CPU-seconds, its peak RSS in MiB).
fn finish(w: Worker, name: &str, topic: &str, partitions: i32, t0: Instant) -> (f64, f64, f64) {
    let group = format!("connect-{name}");
    let end = kafka::end_offsets(topic, partitions);
    while kafka::committed(&group, topic, partitions) != end {
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            t0.elapsed() < Duration::from_secs(900),
            "worker did not finish:\n{}",
            w.log_text()
        );
    }
    let wall = t0.elapsed().as_secs_f64();
    let (cpu, rss) = (cpu_seconds_of(w.pid()), peak_rss_mib(w.pid()));
    assert!(w.stop().success());
    (wall, cpu, rss)
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

/// (records read, CPU-seconds) as [`bare_consumer`] printed them.
fn bare_result(stdout: &[u8]) -> (usize, f64) {
    let text = String::from_utf8_lossy(stdout);
    let mut parts = text.split_whitespace();
    let n = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let cpu = parts
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    (n, cpu)
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
    let (wall, cpu, rss) = finish(w, &name, &topic, partitions, t0);
    let (bare_n, bare_cpu) = bare_result(&run_bare(&topic, partitions, total).stdout);
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

fn e2e(label: &str, records: &[Rec], partitions: i32) {
    let topic = support::unique(&format!("bench-{label}"));
    kafka::create_topic(&topic, partitions);
    kafka::produce(&topic, records);
    let total = records.len();

    // An Elasticsearch that acknowledges every action at once.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handler: http::Handler = Arc::new(|req| {
        Box::pin(async move {
            let actions = http::bulk_actions(&req.body);
            http::Reply::Respond {
                status: 200,
                body: http::ack_all(actions.iter().map(|a| a.op())),
            }
        })
    });
    rt.spawn(http::serve(listener, handler));

    let name = support::unique("bench");
    let file = connector_file(
        &name,
        &json!({"connector.class": "elasticsearch", "topics": topic, "connection.url": url,
        "behavior.on.null.values": "delete"}),
    );
    let t0 = Instant::now();
    let w = Worker::start(&file);
    let (wall, cpu, rss) = finish(w, &name, &topic, partitions, t0);

    let out = run_bare(&topic, partitions, total);
    let (bare_n, bare_cpu) = bare_result(&out.stdout);
    println!(
        "e2e {label:<16} {total:>8} records  {:>9.0} records/s (incl. startup)  worker {:.2} CPU-s = {:>9.0} records/CPU-s, peak RSS {rss:.0} MiB",
        total as f64 / wall,
        cpu,
        total as f64 / cpu
    );
    println!(
        "e2e {label:<16} bare rdkafka consumer: {bare_n} records, {bare_cpu:.2} CPU-s = {:>9.0} records/CPU-s  → worker/bare CPU per record = {:.2}x",
        bare_n as f64 / bare_cpu,
        cpu / bare_cpu
    );
}

/// Drives `rate` changes per second into PostgreSQL for `run`, through Debezium and cdc-sink
/// into Elasticsearch, and prints the freshness the worker measured.
fn live_freshness(rate: usize, run: Duration) {
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
    live::register(&db, live::pg_debezium(&db));
    let config = json!({"connector.class": "elasticsearch", "topics.regex": format!("{db}\\.inventory\\..*"),
        "connection.url": es, "linger.ms": "10"});
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
    let lat = |k: &str| {
        format!(
            "p50 {:>5} ms  p99 {:>5} ms  ({} writes)",
            json[k]["p50_ms"], json[k]["p99_ms"], json[k]["count"]
        )
    };
    println!(
        "live {n} changes at {rate}/s for {run:?} (PostgreSQL → Debezium → Kafka → cdc-sink → Elasticsearch)"
    );
    println!(
        "live source commit → Elasticsearch ack   {}",
        lat("source_to_sink")
    );
    println!(
        "live   Debezium: source commit → Kafka   {}",
        lat("source_to_kafka")
    );
    println!(
        "live   cdc-sink: Kafka → Elasticsearch   {}",
        lat("kafka_to_sink")
    );
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--bare-consumer") {
        bare_consumer(
            &args[i + 1],
            args[i + 2].parse().unwrap(),
            args[i + 3].parse().unwrap(),
        );
        return;
    }
    let want = |what: &str| {
        !args
            .iter()
            .any(|a| a == "hot" || a == "e2e" || a == "druid" || a == "live" || a == "backlog")
            || args.iter().any(|a| a == what)
    };
    if want("live") && args.iter().any(|a| a == "live") {
        live_freshness(1_000, Duration::from_secs(60));
        return;
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
    if want("hot") {
        let rounds: usize = std::env::var("BENCH_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(4);
        // BENCH_ONLY=avro (or json) runs one family, for profiling.
        let only = std::env::var("BENCH_ONLY").unwrap_or_default();
        if only != "avro" {
            hot("without schema", &plain.records, rounds, json!({}));
            hot(
                "with schema",
                &schema.records,
                rounds.div_ceil(2),
                json!({}),
            );
        }
        // The same history in Avro, through a schema registry of the tests' own.
        let registry = support::registry::Registry::start();
        let mut enc = support::avro::Encoder::new(&registry);
        let avro = enc.records("bench", &schema.records);
        let url = registry.url.clone();
        if only == "json" {
            return;
        }
        hot(
            "avro",
            &avro,
            rounds,
            json!({"key.converter": "avro", "value.converter": "avro",
                   "key.converter.schema.registry.url": url, "value.converter.schema.registry.url": url}),
        );
        avro_decode_only(&url, &avro, rounds);
        apache_avro_value_path(&registry, &avro, rounds);
    }
    if want("e2e") {
        ensure_kafka();
        let big = |seed, with_schema, changes| {
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
        };
        e2e("without-schema", &big(3, false, 400_000), 4);
        e2e("with-schema", &big(4, true, 150_000), 4);
    }
    if want("druid") {
        let rounds: usize = std::env::var("BENCH_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(4);
        hot_druid("without schema", &plain.records, rounds);
        hot_druid("with schema", &schema.records, rounds.div_ceil(2));
        ensure_kafka();
        let records = history::generate(
            6,
            &Options {
                changes: 200_000,
                keys: 100_000,
                with_schema: true,
                replay: 0,
                ..Options::default()
            },
        )
        .records;
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
        e2e("backlog-1M", &backlog.records[..1_000_000], 8);
    }
}
