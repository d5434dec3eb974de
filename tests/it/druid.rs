//! The Druid connector on the real Kafka: a generated history becomes one row per change on
//! the Druid ingestion topic, keyed by the row id, in each key's order, offsets committed; the
//! worker killed with SIGKILL mid-stream loses no row (delivery is at least once: rows may
//! repeat, never go missing, and each key's newest row is its last change).

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::druid;
use crate::support::history::{self, History, Options};
use crate::support::kafka;
use crate::support::unique;
use crate::support::worker::{Worker, connector_file};

const WAIT: Duration = Duration::from_secs(180);
const OUT_PARTITIONS: i32 = 3;

/// (row key, `__version`, `__deleted`) of every change of `h`, in history order.
fn expected(h: &History) -> Vec<(String, u64, bool)> {
    h.records
        .iter()
        .zip(&h.log)
        .filter(|(r, _)| r.value.is_some())
        .map(|(_, l)| (l.id.clone(), l.version, l.delete))
        .collect()
}

/// Every row of `topic`: (row key, `__version`, `__deleted`), each partition in order.
fn rows(topic: &str) -> Vec<(i32, String, u64, bool)> {
    kafka::read_all(topic, OUT_PARTITIONS)
        .into_iter()
        .map(|r| {
            let v: Value = serde_json::from_slice(r.value.as_deref().expect("a row")).unwrap();
            let key = String::from_utf8(r.key.expect("a row key")).unwrap();
            (
                r.partition,
                key,
                v["__version"].as_u64().unwrap(),
                v["__deleted"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn total(topic: &str, partitions: i32) -> i64 {
    kafka::end_offsets(topic, partitions).values().sum()
}

/// The offsets `group` has committed over the 4 partitions of `topic`, summed.
fn committed_total(group: &str, topic: &str) -> i64 {
    kafka::committed(group, topic, 4).values().sum()
}

/// Waits until `group` has committed more than `n` records of `topic` (4 partitions).
fn wait_committed_beyond(group: &str, topic: &str, n: i64) {
    let start = Instant::now();
    while committed_total(group, topic) <= n {
        assert!(start.elapsed() < WAIT, "no progress beyond {n}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// Produces the history's records to `topic` in the background, 400 every 250 ms, so that a
/// worker is mid-stream when a test kills, freezes or adds one.
fn stream_slowly(h: &History, topic: &str) -> thread::JoinHandle<()> {
    kafka::produce_slowly(
        topic.to_string(),
        h.records.clone(),
        400,
        Duration::from_millis(250),
    )
}

/// Waits until `group` committed every offset of `topic`.
fn wait_committed_all(group: &str, topic: &str, partitions: i32) {
    let start = Instant::now();
    let end = kafka::end_offsets(topic, partitions);
    while kafka::committed(group, topic, partitions) != end {
        assert!(start.elapsed() < WAIT, "{group} did not commit {end:?}");
        thread::sleep(Duration::from_millis(200));
    }
}

/// A worker restarted after a kill started its producer's transactions without starting over:
/// the brokers answer its producer id request `CONCURRENT_TRANSACTIONS` while they abort the
/// killed worker's open transaction, a retriable error to wait out (its text: "Producer
/// attempted to update a transaction while another concurrent operation…").
fn assert_started_its_transactions(w: &Worker) {
    let log = w.log_text();
    assert!(
        !log.lines()
            .any(|l| l.contains("starting over") && l.contains("Failed to initialize Producer ID")),
        "a task started over at its start:\n{log}"
    );
}

/// Starts a worker with `file` and kills it (SIGKILL) three times, each time after it committed
/// progress of its own, at a random moment; returns the fourth worker.
fn kill_three_times(
    file: &std::path::PathBuf,
    env: &[(&str, &str)],
    group: &str,
    topic: &str,
    records: usize,
) -> Worker {
    let mut w = Worker::start_with(&[file], env);
    let mut committed = 0;
    for kill in 0..3 {
        if committed < records as i64 {
            wait_committed_beyond(group, topic, committed);
        }
        thread::sleep(Duration::from_millis(fastrand::u64(0..800)));
        assert_started_its_transactions(&w);
        w.kill();
        committed = committed_total(group, topic);
        eprintln!("kill {kill}: {committed} records committed");
        w = Worker::start_with(&[file], env);
    }
    w
}

fn setup_with(
    seed: u64,
    changes: usize,
    extra: &[(&str, &str)],
) -> (History, String, String, std::path::PathBuf) {
    let h = history::generate(
        seed,
        &Options {
            changes,
            ..Options::default()
        },
    );
    let topic = unique("it-druid");
    kafka::create_topic(&topic, 4);
    kafka::create_topic(&format!("druid.{topic}"), OUT_PARTITIONS);
    let name = unique("it-druid");
    let mut config = json!({"connector.class": "druid", "topics": topic,
        "consumer.override.session.timeout.ms": "3000",
        "consumer.override.heartbeat.interval.ms": "500"});
    for (k, v) in extra {
        config[*k] = json!(v);
    }
    let file = connector_file(&name, &config);
    (h, topic, name, file)
}

#[test]
fn a_history_becomes_one_row_per_change_in_each_keys_order() {
    // At least once, so that the output topic holds only rows (no transaction markers).
    let (h, topic, name, file) = setup_with(51, 6_000, &[("exactly.once", "false")]);
    kafka::produce(&topic, &h.records);
    let mut w = Worker::start(&file);
    let url = w.rest_url();
    let want = expected(&h);
    let out = format!("druid.{topic}");
    let start = Instant::now();
    while total(&out, OUT_PARTITIONS) < want.len() as i64 {
        assert!(
            start.elapsed() < WAIT,
            "{} rows of {}",
            total(&out, OUT_PARTITIONS),
            want.len()
        );
        thread::sleep(Duration::from_millis(200));
    }
    wait_committed_all(&format!("connect-{name}"), &topic, 4);

    // The supervisor spec, from the CLI and over REST: Druid's documented shape, the columns
    // of the rows with their types.
    let specs = druid::spec_of(&file);
    let dims: Vec<Value> = [
        ("string", "tenant"),
        ("long", "id"),
        ("string", "name"),
        ("string", "balance"),
        ("string", "updated_at"),
        ("string", "birthday"),
        ("string", "__op"),
        ("string", "__deleted"),
        ("long", "__source_ts_ms"),
        ("long", "__version"),
        ("long", "__kafka_offset"),
    ]
    .iter()
    .map(|(t, n)| json!({"type": t, "name": n}))
    .collect();
    assert_eq!(
        specs,
        json!([{"type": "kafka", "spec": {
            "ioConfig": {"type": "kafka", "topic": out,
                "consumerProperties": {"bootstrap.servers": crate::support::servers::kafka(), "isolation.level": "read_committed"},
                "inputFormat": {"type": "json"}, "useEarliestOffset": true},
            "tuningConfig": {"type": "kafka"},
            "dataSchema": {"dataSource": out, "timestampSpec": {"column": "__time", "format": "millis"},
                "dimensionsSpec": {"dimensions": dims, "includeAllDimensions": true, "useSchemaDiscovery": true},
                "granularitySpec": {"queryGranularity": "none", "rollup": false, "segmentGranularity": "day"}}}}])
    );
    let (code, over_rest) =
        crate::support::rest::call(&url, "GET", &format!("/connectors/{name}/druid-spec"), None);
    assert_eq!(code, 200, "{over_rest}");
    assert_eq!(over_rest, specs);

    assert!(w.stop().success());
    let got = rows(&out);
    assert_eq!(got.len(), want.len(), "one row per change, none twice");
    // Each key in one partition, its rows in its changes' order.
    let mut by_key: BTreeMap<&str, Vec<(u64, bool)>> = BTreeMap::new();
    let mut partition_of: BTreeMap<&str, i32> = BTreeMap::new();
    for (p, k, v, d) in &got {
        by_key.entry(k).or_default().push((*v, *d));
        assert_eq!(
            *partition_of.entry(k).or_insert(*p),
            *p,
            "key {k} in two partitions"
        );
    }
    let mut want_by_key: BTreeMap<&str, Vec<(u64, bool)>> = BTreeMap::new();
    for (k, v, d) in &want {
        want_by_key.entry(k).or_default().push((*v, *d));
    }
    assert_eq!(by_key, want_by_key);
}

#[test]
fn sigkill_mid_stream_loses_no_row_and_each_keys_newest_row_is_its_last_change() {
    // At least once: exactly.once off.
    let (h, topic, name, file) = setup_with(52, 8_000, &[("exactly.once", "false")]);
    let group = format!("connect-{name}");
    let producer = stream_slowly(&h, &topic);
    let w = kill_three_times(&file, &[], &group, &topic, h.records.len());
    producer.join().unwrap();
    wait_committed_all(&group, &topic, 4);
    assert!(w.stop().success());

    let want = expected(&h);
    let got = rows(&format!("druid.{topic}"));
    let got_set: std::collections::BTreeSet<(String, u64, bool)> =
        got.iter().map(|(_, k, v, d)| (k.clone(), *v, *d)).collect();
    let want_set: std::collections::BTreeSet<(String, u64, bool)> = want.iter().cloned().collect();
    let missing: Vec<_> = want_set.difference(&got_set).take(5).collect();
    let extra: Vec<_> = got_set.difference(&want_set).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, unexpected {extra:?}"
    );
    eprintln!("{} rows for {} changes", got.len(), want.len());
    // The newest row of each key (by __version) is its last change.
    let mut newest: BTreeMap<&str, (u64, bool)> = BTreeMap::new();
    for (_, k, v, d) in &got {
        let e = newest.entry(k).or_insert((*v, *d));
        if *v > e.0 {
            *e = (*v, *d);
        }
    }
    // Each key's change with the highest version (a replayed older change may come later).
    let mut last: BTreeMap<&str, (u64, bool)> = BTreeMap::new();
    for (k, v, d) in &want {
        let e = last.entry(k).or_insert((*v, *d));
        if *v > e.0 {
            *e = (*v, *d);
        }
    }
    assert_eq!(newest, last);
}

/// Asserts that the committed rows of `druid.<topic>` hold each change of `h` exactly once, in
/// each key's order (versions and delete flags compared); returns them by key.
fn assert_each_change_committed_once_in_order(
    h: &History,
    topic: &str,
) -> BTreeMap<String, Vec<(u64, bool)>> {
    let want = expected(h);
    let got = committed_rows(&format!("druid.{topic}"));
    eprintln!("{} committed rows for {} changes", got.len(), want.len());
    let mut by_key: BTreeMap<String, Vec<(u64, bool)>> = BTreeMap::new();
    for (_, k, v, d) in got {
        by_key.entry(k).or_default().push((v, d));
    }
    let mut want_by_key: BTreeMap<String, Vec<(u64, bool)>> = BTreeMap::new();
    for (k, v, d) in want {
        want_by_key.entry(k).or_default().push((v, d));
    }
    let differing: Vec<&String> = want_by_key
        .keys()
        .filter(|k| by_key.get(*k) != want_by_key.get(*k))
        .take(3)
        .collect();
    for k in &differing {
        eprintln!(
            "{k}: got {:?}\n  want {:?}",
            by_key.get(*k),
            want_by_key.get(*k)
        );
    }
    let (rows, changes): (usize, usize) = (
        by_key.values().map(Vec::len).sum(),
        want_by_key.values().map(Vec::len).sum(),
    );
    assert_eq!(rows, changes, "each change exactly once");
    assert!(
        differing.is_empty(),
        "keys whose rows differ: {differing:?}"
    );
    want_by_key
}

/// Every committed row of `topic` as a `read_committed` reader (Druid's default) sees it.
fn committed_rows(topic: &str) -> Vec<(i32, String, u64, bool)> {
    committed_values(topic)
        .into_iter()
        .map(|(p, k, v)| {
            (
                p,
                k,
                v["__version"].as_u64().unwrap(),
                v["__deleted"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// Every committed row of `topic` (partition, key, row), each partition in order.
fn committed_values(topic: &str) -> Vec<(i32, String, Value)> {
    kafka::read_committed_rows(topic, OUT_PARTITIONS)
}

#[test]
fn exactly_once_sigkill_mid_stream_gives_each_change_one_committed_row_in_order() {
    let (h, topic, name, file) = setup_with(
        53,
        8_000,
        &[
            ("exactly.once", "true"),
            ("producer.override.transaction.timeout.ms", "10000"),
        ],
    );
    let group = format!("connect-{name}");
    let producer = stream_slowly(&h, &topic);
    // A stable worker id, as in production: a restarted worker's producer fences the killed
    // one's and aborts its open transaction.
    let env = [("CDC_SINK_WORKER__ID", "druid-eos-worker")];
    let w = kill_three_times(&file, &env, &group, &topic, h.records.len());
    producer.join().unwrap();
    wait_committed_all(&group, &topic, 4);
    assert_started_its_transactions(&w);
    assert!(w.stop().success());

    let want_by_key = assert_each_change_committed_once_in_order(&h, &topic);
    let want = expected(&h);

    // The real Druid ingests the topic with the spec druid-spec prints (read_committed): it
    // holds each change once, and the README's query gives the source table with its versions.
    let out = format!("druid.{topic}");
    // Submitted by druid-spec itself; an unreachable Druid is an error naming its URL.
    let unreachable = druid::druid_spec_cli(&["--submit", "http://127.0.0.1:9"], &file);
    let err = String::from_utf8_lossy(&unreachable.stderr);
    assert_eq!(unreachable.status.code(), Some(1), "{err}");
    assert!(
        err.contains("POST http://127.0.0.1:9/druid/indexer/v1/supervisor"),
        "{err}"
    );
    let supervisors = druid::submit_cli(&file);
    assert_eq!(
        supervisors
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>(),
        [out.as_str()]
    );
    let count = format!("SELECT COUNT(*) AS \"n\" FROM \"{out}\"");
    druid::wait_sql(&count, WAIT, |r| {
        r.first().is_some_and(|r| r["n"] == json!(want.len()))
    });
    let all = druid::sql(&format!(
        "SELECT \"tenant\", \"id\", \"__version\", \"__deleted\" FROM \"{out}\""
    ))
    .unwrap();
    let mut in_druid: BTreeMap<String, Vec<(u64, bool)>> = BTreeMap::new();
    for r in &all {
        let key = format!("{}|{}", r["tenant"].as_str().unwrap(), r["id"]);
        let deleted = r["__deleted"].as_str().unwrap() == "true";
        in_druid
            .entry(key)
            .or_default()
            .push((r["__version"].as_u64().unwrap(), deleted));
    }
    let mut sorted_want = want_by_key;
    for rows in in_druid.values_mut().chain(sorted_want.values_mut()) {
        rows.sort();
    }
    assert_eq!(in_druid, sorted_want, "Druid's rows: each change once");
    let columns = [
        "tenant",
        "id",
        "name",
        "balance",
        "updated_at",
        "birthday",
        "__version",
    ];
    let latest = druid::sql(&druid::latest_query(&out, &["tenant", "id"], &columns)).unwrap();
    let mut table: BTreeMap<String, Value> = BTreeMap::new();
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    for mut r in latest {
        let key = format!("{}|{}", r["tenant"].as_str().unwrap(), r["id"]);
        versions.insert(key.clone(), r["__version"].as_u64().unwrap());
        r.as_object_mut().unwrap().remove("__version");
        assert!(table.insert(key.clone(), r).is_none(), "{key} twice");
    }
    assert_eq!(
        versions, h.versions,
        "the latest row's version of every key"
    );
    assert_eq!(table, h.expected, "the latest rows are the source table");
}

/// Counts the rows of `topic` a `read_committed` reader sees, until `target` or `timeout`.
fn count_committed(topic: &str, target: usize, timeout: Duration) -> usize {
    let c = kafka::read_committed_consumer(topic, OUT_PARTITIONS);
    let start = Instant::now();
    let mut n = 0;
    while n < target && start.elapsed() < timeout {
        if let Some(Ok(_)) = c.poll(Duration::from_millis(200)) {
            n += 1;
        }
    }
    n
}

/// With offset commits 10 minutes apart, only `transaction.max.records` and
/// `transaction.max.ms` commit transactions: rows become visible to `read_committed` readers
/// in transactions of about that many rows, or that often.
#[test]
fn a_transaction_commits_at_transaction_max_records_or_max_ms() {
    let env = [("CDC_SINK_WORKER__OFFSET_FLUSH_INTERVAL_MS", "600000")];
    for (max_records, max_ms) in [(500, 300_000), (1_000_000, 300)] {
        let (h, topic, _, file) = setup_with(
            54,
            2_000,
            &[
                ("transaction.max.records", &max_records.to_string()),
                ("transaction.max.ms", &max_ms.to_string()),
                ("producer.override.transaction.timeout.ms", "600000"),
            ],
        );
        kafka::produce(&topic, &h.records);
        let w = Worker::start_with(&[&file], &env);
        let want = expected(&h).len();
        // By size: every transaction but the last, open one (under 500 rows) is committed.
        let target = if max_ms == 300_000 {
            want - max_records
        } else {
            want
        };
        let seen = count_committed(&format!("druid.{topic}"), target, Duration::from_secs(60));
        assert!(
            seen >= target,
            "transaction.max.records={max_records} transaction.max.ms={max_ms}: {seen} of {want} rows committed, expected at least {target}"
        );
        assert!(w.stop().success());
    }
}

/// A worker frozen (SIGSTOP) past its transaction timeout and its group session: the broker
/// aborts the open transaction and the group moves on without it. Resumed (SIGCONT), its
/// producer finds the transaction gone; the task aborts, starts over from the committed
/// offsets and goes on. Each change is still committed exactly once, in each key's order.
#[test]
fn a_worker_frozen_past_its_transaction_timeout_starts_over_and_stays_exactly_once() {
    let (h, topic, name, file) = setup_with(
        55,
        6_000,
        &[
            ("transaction.max.ms", "2000"),
            ("transaction.max.records", "1000000"),
            ("producer.override.transaction.timeout.ms", "4000"),
        ],
    );
    let group = format!("connect-{name}");
    let producer = stream_slowly(&h, &topic);
    // Transactions every 2 s at most (transaction.max.ms); the freeze (12 s) outlasts the
    // transaction timeout (4 s).
    let env = [("CDC_SINK_WORKER__OFFSET_FLUSH_INTERVAL_MS", "2500")];
    let w = Worker::start_with(&[&file], &env);
    wait_committed_beyond(&group, &topic, 0);
    thread::sleep(Duration::from_millis(1_000));
    unsafe { libc::kill(w.pid() as i32, libc::SIGSTOP) };
    thread::sleep(Duration::from_secs(12));
    unsafe { libc::kill(w.pid() as i32, libc::SIGCONT) };
    producer.join().unwrap();
    wait_committed_all(&group, &topic, 4);
    let log = w.log_text();
    assert!(w.stop().success(), "the task must not fail");
    assert!(
        log.contains("starting over from the committed offsets"),
        "the frozen task did not start over:\n{log}"
    );
    assert_each_change_committed_once_in_order(&h, &topic);
}

/// The recorded sequences (MySQL with and without schema, a PostgreSQL snapshot), exactly once
/// through the real broker: per key, the rows a `read_committed` reader sees are the recorded
/// changes in order — op, delete flag, image and source time, each once.
#[test]
fn recorded_sequences_become_their_rows_once_each_in_order() {
    let files = [
        (
            "mysql_customers_seq_withschema_value__rw-debezium_log.jsonl",
            "id",
        ),
        (
            "mysql_customers_seq_noschema_value__rw-debezium_log.jsonl",
            "id",
        ),
        (
            "postgresql_customer_seq_withschema_value__rw-bugbash.jsonl",
            "c_w_id,c_d_id,c_id",
        ),
    ];
    let mut connectors = Vec::new();
    let mut cases = Vec::new();
    for (file, pk) in files {
        let topic = unique("it-druid-seq");
        kafka::create_topic(&topic, 1);
        kafka::create_topic(&format!("druid.{topic}"), OUT_PARTITIONS);
        let lines: Vec<String> = std::fs::read_to_string(
            crate::support::servers::repo()
                .join("tests/fixtures/debezium/sequences")
                .join(file),
        )
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect();
        // Per key, what each change must become, written from the envelope itself.
        let mut want: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for (offset, l) in lines.iter().enumerate() {
            let v: Value = serde_json::from_str(l).unwrap();
            let p = if v.get("schema").is_some() {
                &v["payload"]
            } else {
                &v
            };
            let op = p["op"].as_str().unwrap();
            let image = if op == "d" { &p["before"] } else { &p["after"] };
            let key: Vec<String> = pk.split(',').map(|c| image[c].to_string()).collect();
            let mut row = image.clone();
            row["__op"] = json!(op);
            row["__deleted"] = json!(op == "d");
            row["__source_ts_ms"] = p["source"]["ts_ms"].clone();
            row["__time"] = p["source"]["ts_ms"].clone();
            // One record per line, on one partition: a line's offset is its number.
            row["__kafka_offset"] = json!(offset);
            want.entry(key.join("|")).or_default().push(row);
        }
        let recs: Vec<kafka::Rec> = lines
            .into_iter()
            .map(|v| kafka::Rec {
                partition: 0,
                key: None,
                value: Some(v),
            })
            .collect();
        kafka::produce(&topic, &recs);
        let name = unique("it-druid-seq");
        connectors.push(connector_file(
            &name,
            &json!({"connector.class": "druid", "topics": topic, "pk.fields": pk}),
        ));
        cases.push((topic, name, want));
    }
    let w = Worker::start_with(&connectors.iter().collect::<Vec<_>>(), &[]);
    for (topic, name, want) in &cases {
        wait_committed_all(&format!("connect-{name}"), topic, 1);
        let mut got: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for (_, key, mut row) in committed_values(&format!("druid.{topic}")) {
            assert!(row["__version"].as_u64().unwrap() > 0, "{row}");
            row.as_object_mut().unwrap().remove("__version");
            got.entry(key).or_default().push(row);
        }
        assert_eq!(&got, want, "{topic}");
    }
    assert!(w.stop().success());
}

/// Exactly once across rebalances: a second worker joins mid-stream (partitions move while
/// transactions are open), the first is killed (SIGKILL; its open transaction is never
/// committed, and its successor for those partitions reads them again from the committed
/// offsets), and it comes back under its id (fencing what it left). Each change is committed
/// exactly once, in each key's order.
#[test]
fn exactly_once_across_rebalances_and_a_killed_worker() {
    let (h, topic, name, file) = setup_with(
        56,
        8_000,
        &[("producer.override.transaction.timeout.ms", "10000")],
    );
    let group = format!("connect-{name}");
    let producer = stream_slowly(&h, &topic);
    let committed = || committed_total(&group, &topic);
    let progress_beyond = |n: i64| wait_committed_beyond(&group, &topic, n);
    let a = Worker::start_with(&[&file], &[("CDC_SINK_WORKER__ID", "druid-a")]);
    progress_beyond(0);
    let mut b = Worker::start_with(&[&file], &[("CDC_SINK_WORKER__ID", "druid-b")]);
    // Both have partitions once b has joined: wait for progress after it started.
    let before = committed();
    b.wait_log("partitions assigned", WAIT);
    progress_beyond(before);
    thread::sleep(Duration::from_millis(fastrand::u64(0..800)));
    a.kill();
    eprintln!("a killed at {} committed records", committed());
    progress_beyond(committed());
    let a = Worker::start_with(&[&file], &[("CDC_SINK_WORKER__ID", "druid-a")]);
    producer.join().unwrap();
    wait_committed_all(&group, &topic, 4);
    assert!(a.stop().success());
    assert!(b.stop().success());

    assert_each_change_committed_once_in_order(&h, &topic);
}

/// A worker frozen (SIGSTOP) past its group session but not its transaction timeout, beside
/// another: the group gives its partitions to the other worker, which reads them again from the
/// committed offsets. Resumed, the frozen one must not commit the transaction it had open (its
/// rows are the other worker's now): it abandons it and starts over. Each change is committed
/// exactly once, in each key's order.
#[test]
fn a_worker_frozen_past_its_session_abandons_its_transaction() {
    let (h, topic, name, file) = setup_with(
        57,
        8_000,
        &[("producer.override.transaction.timeout.ms", "30000")],
    );
    let group = format!("connect-{name}");
    let producer = stream_slowly(&h, &topic);
    let committed = || committed_total(&group, &topic);
    let progress_beyond = |n: i64| wait_committed_beyond(&group, &topic, n);
    let mut a = Worker::start_with(&[&file], &[("CDC_SINK_WORKER__ID", "druid-frozen-a")]);
    a.wait_log("partitions assigned", WAIT);
    progress_beyond(0);
    let mut b = Worker::start_with(&[&file], &[("CDC_SINK_WORKER__ID", "druid-frozen-b")]);
    b.wait_log("partitions assigned", WAIT);
    progress_beyond(committed());
    unsafe { libc::kill(a.pid() as i32, libc::SIGSTOP) };
    // Past the session (3 s): b gets every partition and makes progress.
    thread::sleep(Duration::from_secs(5));
    progress_beyond(committed());
    thread::sleep(Duration::from_secs(3));
    unsafe { libc::kill(a.pid() as i32, libc::SIGCONT) };
    producer.join().unwrap();
    wait_committed_all(&group, &topic, 4);
    assert!(a.stop().success(), "the frozen worker's task must not fail");
    assert!(b.stop().success());
    assert_each_change_committed_once_in_order(&h, &topic);
}

/// A `transaction.timeout.ms` above what the brokers allow (`transaction.max.timeout.ms`, 15
/// minutes by default) can never start a transaction: the task fails saying so, rather than
/// starting over and over.
#[test]
fn a_transaction_timeout_the_brokers_refuse_fails_the_task_naming_it() {
    let (_, _, _, file) = setup_with(
        56,
        10,
        &[("producer.override.transaction.timeout.ms", "1000000")],
    );
    let mut w = Worker::start(&file);
    let line = w.wait_log("task failed", Duration::from_secs(60));
    assert!(line.contains("transaction.max.timeout.ms"), "{line}");
    assert!(
        !w.log_text().contains("starting over"),
        "the task started over before failing:\n{}",
        w.log_text()
    );
    assert!(
        !w.stop().success(),
        "a worker whose task failed exits non-zero"
    );
}

/// A worker told to stop while a task's producer waits for a Kafka transaction coordinator
/// stops at once: the producer's wait is cut into slices between which the task looks at its
/// stop, where one wait of 30 s had held the stop. Here the producer's bootstrap server is a
/// port nothing listens on, so no coordinator ever answers.
#[test]
fn a_stop_while_a_producer_waits_for_a_transaction_coordinator_is_prompt() {
    let topic = unique("it-druid-nocoord");
    kafka::create_topic(&topic, 1);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .to_string();
    let name = unique("it-druid-nocoord");
    let config = json!({"connector.class": "druid", "topics": topic,
        "producer.override.bootstrap.servers": closed});
    let mut w = Worker::start(&connector_file(&name, &config));
    w.wait_log("waiting for a Kafka transaction coordinator", WAIT);
    let start = Instant::now();
    let exit = w.stop();
    let took = start.elapsed();
    assert!(exit.success(), "{exit}");
    // The old wait had 29 s left at the earliest; a slice is 1 s.
    assert!(
        took < Duration::from_secs(10),
        "the worker took {took:?} to stop"
    );
}

/// A task that starts over and over says why in its status the whole time: through each new
/// run, not only while it waits to start over. Here its rows are for an output topic that does
/// not exist and may not be created on first use: each run reads, sends its rows, and starts
/// over when they time out (`message.timeout.ms`, 2 s); the Druid sink itself reports no trouble
/// meanwhile.
#[test]
fn a_task_starting_over_and_over_shows_why_through_each_run() {
    let topic = unique("it-druid-over");
    kafka::create_topic(&topic, 1);
    let recs: Vec<kafka::Rec> = (0..5)
        .map(|id| kafka::Rec {
            partition: 0,
            key: Some(json!({ "id": id }).to_string()),
            value: Some(
                json!({"before": null, "after": {"id": id, "name": format!("n{id}")}, "op": "c",
                    "source": {"connector": "postgresql", "lsn": 1000 + id, "db": "d",
                    "schema": "s", "table": "t", "ts_ms": 1}})
                .to_string(),
            ),
        })
        .collect();
    kafka::produce(&topic, &recs);
    let out = format!("druid.{topic}");
    let name = unique("it-druid-over");
    let config = json!({"connector.class": "druid", "topics": topic,
        "producer.override.message.timeout.ms": "2000",
        "producer.override.allow.auto.create.topics": "false",
        "consumer.override.session.timeout.ms": "3000",
        "consumer.override.heartbeat.interval.ms": "500"});
    let mut w = Worker::start(&connector_file(&name, &config));
    let url = w.rest_url();
    w.wait_log("starting over from the committed offsets", WAIT);
    // From the first start over until the third run has begun: the first wait, the whole second
    // run (which reads, sends and fails as the first did), the second wait.
    let path = format!("/connectors/{name}/tasks/0/status");
    let start = Instant::now();
    let mut reads = 0;
    loop {
        assert!(start.elapsed() < WAIT, "no third run within {WAIT:?}");
        let (code, s) = crate::support::rest::call(&url, "GET", &path, None);
        assert_eq!(code, 200, "{s}");
        reads += 1;
        assert_eq!(s["state"], json!("RUNNING"), "{s}");
        let trouble = s["trouble"].as_str().unwrap_or_else(|| {
            panic!("no trouble shown at status read {reads} since the task started over: {s}")
        });
        assert!(trouble.contains(&out), "{trouble}");
        if trouble.contains("2 time(s) in a row") {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        kafka::committed(&format!("connect-{name}"), &topic, 1),
        BTreeMap::new(),
        "committed past rows never written"
    );
    w.kill();
}

/// A row larger than the producer may send (`message.max.bytes`) is refused before it enters
/// the transaction: a bad record, which `errors.tolerance=all` sends to the dead-letter queue,
/// and the stream goes on; the other rows are committed once each.
#[test]
fn a_row_too_large_to_produce_goes_to_the_dead_letter_queue_and_the_stream_goes_on() {
    let topic = unique("it-druid-large");
    let dlq = format!("{topic}-dlq");
    kafka::create_topic(&topic, 1);
    kafka::create_topic(&format!("druid.{topic}"), 1);
    let change = |id: i64, name: String| {
        kafka::Rec {
        partition: 0,
        key: Some(json!({"id": id}).to_string()),
        value: Some(
            json!({"before": null, "after": {"id": id, "name": name}, "op": "c",
                "source": {"connector": "postgresql", "lsn": 1000 + id, "db": "d", "schema": "s", "table": "t", "ts_ms": 1}})
            .to_string(),
        ),
    }
    };
    let recs: Vec<kafka::Rec> = (0..10)
        .map(|id| {
            let name = if id == 5 {
                "x".repeat(5000)
            } else {
                format!("n{id}")
            };
            change(id, name)
        })
        .collect();
    kafka::produce(&topic, &recs);
    let name = unique("it-druid-large");
    let config = json!({"connector.class": "druid", "topics": topic,
        "producer.override.message.max.bytes": "3000",
        "errors.tolerance": "all",
        "errors.deadletterqueue.topic.name": dlq,
        "errors.deadletterqueue.topic.replication.factor": "1"});
    let w = Worker::start(&connector_file(&name, &config));
    wait_committed_all(&format!("connect-{name}"), &topic, 1);
    let rows = kafka::read_committed_rows(&format!("druid.{topic}"), 1);
    let keys: Vec<&str> = rows.iter().map(|(_, k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        ["0", "1", "2", "3", "4", "6", "7", "8", "9"],
        "{rows:?}"
    );
    let copies = kafka::read_all(&dlq, 1);
    assert_eq!(copies.len(), 1);
    assert_eq!(
        copies[0].value.as_deref(),
        recs[5].value.as_deref().map(str::as_bytes)
    );
    assert!(w.stop().success());
}

/// Once librdkafka has found the output topic missing (after
/// `topic.metadata.propagation.max.ms`), it fails the rows that waited for it and refuses new
/// ones at once, as they are sent. A row refused so starts the task over, as a row failed
/// through its delivery report does: the task does not fail for good, and keeps trying until
/// the topic exists.
#[test]
fn a_row_refused_at_once_for_a_missing_topic_starts_the_task_over() {
    use std::sync::Arc;

    use cdc_sink::connector::SinkSpec;
    use cdc_sink::decode::Decoder;
    use cdc_sink::settings::Settings;
    use cdc_sink::sink::druid::DruidSink;
    use cdc_sink::sink::{Sink as _, SinkError};

    use crate::support::sink::{self as direct, ack};
    let topic = unique("it-druid-gone");
    let spec = direct::spec(
        &topic,
        json!({"connector.class": "druid", "topics": topic, "exactly.once": "false",
            "producer.override.allow.auto.create.topics": "false",
            "producer.override.topic.metadata.propagation.max.ms": "300"}),
    );
    let SinkSpec::Druid(cfg) = &spec.sink else {
        panic!("not a druid connector")
    };
    let mut settings = Settings::default();
    settings.kafka.bootstrap_servers = crate::support::servers::kafka();
    let metrics = Arc::new(cdc_sink::metrics::Registry::new().task(&topic, 0));
    let not_stopped = std::sync::atomic::AtomicBool::new(false);
    let mut sink = DruidSink::new(
        Arc::new((**cfg).clone()),
        &settings,
        metrics,
        None,
        &not_stopped,
    )
    .unwrap()
    .expect("a sink without transactions starts at once");
    let mut decoder = Decoder::new(&spec).unwrap();
    let (key, value) = direct::created(&mut decoder, &topic, 1, json!("a"));
    let record = |offset: i64| direct::record(&topic, offset, &key, &value);
    // The first row waits for the topic, and fails through its delivery report.
    sink.put(record(0), ack(0)).unwrap();
    let start = Instant::now();
    let failed = loop {
        assert!(start.elapsed() < WAIT, "the row never failed");
        match sink.poll(Duration::from_millis(100)) {
            Ok(acks) => assert!(acks.is_empty(), "a row acknowledged: {acks:?}"),
            Err(e) => break e,
        }
    };
    assert!(matches!(failed, SinkError::Rewind(_)), "{failed:?}");
    // The next is refused at once; the task starts over, naming the topic.
    match sink.put(record(1), ack(1)) {
        Err(SinkError::Rewind(why)) => assert!(
            why.contains(&format!("cannot produce to druid.{topic}"))
                && why.contains("does the topic exist"),
            "{why}"
        ),
        other => panic!("a row for a missing topic: {other:?}"),
    }
}

/// The output topic is missing, and the cluster does not create topics on first use (here:
/// the producer may not ask it to, `allow.auto.create.topics=false`): every row waits for it
/// until `message.timeout.ms`. An undelivered row aborts the open transaction (or, at least
/// once, is never acknowledged): nothing is committed past it, and the task starts over from
/// the committed offsets until the topic exists. Then every change arrives: exactly once, in
/// each key's order, with `exactly.once`; at least once without.
#[test]
fn rows_for_a_missing_output_topic_are_never_committed_past() {
    for exactly_once in ["true", "false"] {
        let (h, topic, name, file) = setup_with(
            57,
            1_000,
            &[
                ("exactly.once", exactly_once),
                ("producer.override.message.timeout.ms", "2000"),
                ("producer.override.allow.auto.create.topics", "false"),
            ],
        );
        let out = format!("druid.{topic}");
        kafka::delete_topic(&out);
        kafka::produce(&topic, &h.records);
        let group = format!("connect-{name}");
        let w = Worker::start(&file);
        // Two rounds refused (offsets are committed every 500 ms), or offsets committed.
        let refused = "a row could not be written";
        let start = Instant::now();
        while w.log_text().matches(refused).count() < 2
            && kafka::committed(&group, &topic, 4).is_empty()
        {
            assert!(start.elapsed() < WAIT, "no refusal:\n{}", w.log_tail(30));
            thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(
            kafka::committed(&group, &topic, 4),
            BTreeMap::new(),
            "exactly.once={exactly_once}: committed past rows never written"
        );
        assert!(
            w.log_text().contains(&format!(
                "topic {out}: Message production error: MessageTimedOut (Local: Message timed out) (no partition of it is known: does the topic exist"
            )),
            "{}",
            w.log_tail(10)
        );
        kafka::create_topic(&out, OUT_PARTITIONS);
        wait_committed_all(&group, &topic, 4);
        assert!(w.stop().success());
        if exactly_once == "true" {
            assert_each_change_committed_once_in_order(&h, &topic);
        } else {
            let got: std::collections::BTreeSet<(String, u64, bool)> = rows(&out)
                .into_iter()
                .map(|(_, k, v, d)| (k, v, d))
                .collect();
            let missing: Vec<_> = expected(&h)
                .into_iter()
                .filter(|c| !got.contains(c))
                .take(3)
                .collect();
            assert!(missing.is_empty(), "changes without a row: {missing:?}");
        }
    }
}
