//! `cdc-sink rebuild` on the real broker and Elasticsearch: under live traffic the rebuilt index
//! takes the alias once it has caught up, reads through the alias never fail nor lose documents
//! during the move, the live connector goes on writing to the new index, and `--rollback` brings
//! the old index back caught up.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::kafka::{self, Rec};
use crate::support::worker::{Worker, connector_file};
use crate::support::{es, es_connector, servers, unique};

/// Ids of the table.
const ROWS: u64 = 200;

/// The change at binlog position `pos`: row `pos % ROWS + 1` created (first time) or updated.
fn change(pos: u64) -> Rec {
    let id = pos % ROWS + 1;
    let op = if pos <= ROWS { "c" } else { "u" };
    let source = json!({"connector": "mysql", "name": "it", "ts_ms": 1_700_000_000_000i64, "db": "inventory",
        "table": "items", "file": "mysql-bin.000001", "pos": 1000 + pos, "row": 0, "snapshot": "false"});
    Rec {
        partition: (id % 2) as i32,
        key: Some(json!({"id": id}).to_string()),
        value: Some(
            json!({"before": null, "after": {"id": id, "v": pos}, "source": source, "op": op})
                .to_string(),
        ),
    }
}

/// What the index must hold after changes 1..=n: id → (version, document).
fn expected(n: u64) -> BTreeMap<String, (u64, Value)> {
    let mut out = BTreeMap::new();
    for pos in 1..=n {
        let id = pos % ROWS + 1;
        out.insert(
            id.to_string(),
            (1 << 40 | (1000 + pos), json!({"id": id, "v": pos})),
        );
    }
    out
}

fn rebuild(connector: &std::path::Path, rollback: bool) {
    let (ok, log) = try_rebuild(connector, rollback, &[]);
    assert!(ok, "rebuild (rollback: {rollback}) failed:\n{log}");
}

/// Runs `cdc-sink rebuild`; its success and its log. Killed after 150 s, a failure.
fn try_rebuild(
    connector: &std::path::Path,
    rollback: bool,
    env: &[(&str, &str)],
) -> (bool, String) {
    let args: &[&str] = if rollback { &["--rollback"] } else { &[] };
    try_rebuild_with(connector, args, env)
}

/// Runs `cdc-sink rebuild ARGS…`; its success and its log. Killed after 150 s, a failure.
fn try_rebuild_with(
    connector: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (bool, String) {
    let log = std::env::temp_dir().join(format!("cdc-sink-rebuild-{}.log", fastrand::u32(..)));
    let out = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cdc-sink"));
    cmd.arg("rebuild");
    cmd.args(args);
    cmd.arg(connector)
        .env(
            "CDC_SINK_KAFKA__BOOTSTRAP_SERVERS",
            servers().kafka.as_str(),
        )
        .env("CDC_SINK_WORKER__OFFSET_FLUSH_INTERVAL_MS", "500")
        .env("RUST_LOG", "info,librdkafka=warn")
        .envs(env.iter().copied())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > Duration::from_secs(150) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    match status {
        Some(s) => (s.success(), text),
        None => (false, format!("still running after 150 s, killed:\n{text}")),
    }
}

fn alias_target(alias: &str) -> String {
    let v: Value = reqwest::blocking::get(format!("{}/_alias/{alias}", servers().es))
        .unwrap()
        .json()
        .unwrap();
    v.as_object().unwrap().keys().next().unwrap().clone()
}

#[test]
fn a_rebuild_under_live_traffic_moves_the_alias_without_a_failed_read_and_rollback_catches_up() {
    let topic = unique("rebuild");
    kafka::create_topic(&topic, 2);
    let alias = topic.clone();
    let es_url = servers().es.clone();
    aliased_index(&alias, &json!({}));
    let file = connector_file(
        &unique("rebuild"),
        &es_connector(&topic, &es_url, &[("behavior.on.null.values", "delete")]),
    );
    let live = Worker::start(&file);

    // Changes keep coming (inserts first, then updates: the document count never drops), and a
    // reader counts documents through the alias all along.
    let stop = Arc::new(AtomicBool::new(false));
    let (batches, per) = (60u64, 100u64);
    let producer = {
        let stop = stop.clone();
        let topic = topic.clone();
        thread::spawn(move || {
            let p = kafka::producer();
            for b in 0..batches {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let recs: Vec<Rec> = (b * per + 1..=(b + 1) * per).map(change).collect();
                p.send(&topic, &recs);
                thread::sleep(Duration::from_millis(250));
            }
        })
    };
    // Each read: its status, the document count, and the newest change it reflects (the
    // highest `v`); neither may ever go back.
    let reader = {
        let stop = stop.clone();
        let url = format!("{es_url}/{alias}/_search");
        thread::spawn(move || {
            let c = reqwest::blocking::Client::new();
            let query = json!({"size": 0, "track_total_hits": true, "aggs": {"newest": {"max": {"field": "v"}}}});
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let r = c.post(&url).json(&query).send().unwrap();
                let status = r.status().as_u16();
                let v = r.json::<Value>().unwrap_or(Value::Null);
                let n = v["hits"]["total"]["value"].as_u64().unwrap_or(0);
                let newest = v["aggregations"]["newest"]["value"].as_f64().unwrap_or(0.0) as u64;
                seen.push((status, (n, newest)));
                thread::sleep(Duration::from_millis(20));
            }
            seen
        })
    };
    wait_until(
        || es::documents(&alias).len() as u64 == ROWS,
        "the live index filled",
    );

    rebuild(&file, false);
    assert_eq!(alias_target(&alias), format!("{alias}-v2"));
    assert!(!producer.is_finished(), "the move came after the traffic");
    producer.join().unwrap();
    let n = batches * per;
    es::wait_documents(&alias, &expected(n), Duration::from_secs(60), "");
    stop.store(true, Ordering::Relaxed);
    let seen = reader.join().unwrap();
    assert!(
        seen.iter().all(|(s, _)| *s == 200),
        "a read through the alias failed: {:?}",
        seen.iter().find(|(s, _)| *s != 200)
    );
    assert!(
        seen.windows(2)
            .all(|w| w[1].1.0 >= w[0].1.0 && w[1].1.1 >= w[0].1.1),
        "a read through the alias went back (documents, newest change) during the move: {:?}",
        seen.windows(2)
            .find(|w| w[1].1.0 < w[0].1.0 || w[1].1.1 < w[0].1.1)
    );
    assert!(seen.len() > 50, "too few reads: {}", seen.len());

    // More changes after the move reach the new index only; the rollback catches the old one
    // up on them before the alias goes back.
    let more: Vec<Rec> = (n + 1..=n + 300).map(change).collect();
    kafka::produce(&topic, &more);
    es::wait_documents(&alias, &expected(n + 300), Duration::from_secs(60), "");
    rebuild(&file, true);
    assert_eq!(alias_target(&alias), format!("{alias}-v1"));
    es::wait_documents(&alias, &expected(n + 300), Duration::from_secs(5), "");
    assert!(live.stop().success());
}

/// An alias `alias` → `alias-v1`, the index empty, created with `body`.
fn aliased_index(alias: &str, body: &Value) {
    let http = reqwest::blocking::Client::new();
    let es_url = &servers().es;
    assert!(
        http.put(format!("{es_url}/{alias}-v1"))
            .json(body)
            .send()
            .unwrap()
            .status()
            .is_success()
    );
    assert!(
        http.post(format!("{es_url}/_aliases"))
            .json(&json!({"actions": [{"add": {"index": format!("{alias}-v1"), "alias": alias}}]}))
            .send()
            .unwrap()
            .status()
            .is_success()
    );
}

/// A rebuild of a topic with an empty partition ends; one run again after its index was
/// deleted (after a rollback) writes that index from the beginning, not from where the
/// deleted index's writing had got to.
#[test]
fn a_rebuild_run_again_after_its_index_was_deleted_writes_it_from_the_beginning() {
    let topic = unique("rebuild-again");
    // Records go to partitions 0 and 1: partition 2 stays empty.
    kafka::create_topic(&topic, 3);
    let alias = topic.clone();
    // Settings of its own, which the rebuilt index must have too.
    aliased_index(
        &alias,
        &json!({"settings": {"index": {"mapping.total_fields.limit": 1234, "refresh_interval": "2s"}}}),
    );
    let es_url = servers().es.clone();
    let name = unique("rebuild-again");
    let file = connector_file(&name, &es_connector(&topic, &es_url, &[]));
    let live = Worker::start(&file);
    let n = 2 * ROWS;
    kafka::produce(&topic, &(1..=n).map(change).collect::<Vec<_>>());
    es::wait_documents(&alias, &expected(n), Duration::from_secs(60), "");
    rebuild(&file, false);
    assert_eq!(alias_target(&alias), format!("{alias}-v2"));
    let settings: Value =
        reqwest::blocking::get(format!("{es_url}/{alias}-v2/_settings?flat_settings=true"))
            .unwrap()
            .json()
            .unwrap();
    let s = &settings[format!("{alias}-v2")]["settings"];
    assert_eq!(s["index.mapping.total_fields.limit"], "1234", "{settings}");
    assert_eq!(s["index.refresh_interval"], "2s", "{settings}");
    assert!(s["index.blocks.write"].is_null(), "{settings}");
    rebuild(&file, true);
    assert_eq!(alias_target(&alias), format!("{alias}-v1"));
    let deleted = reqwest::blocking::Client::new()
        .delete(format!("{es_url}/{alias}-v2"))
        .send()
        .unwrap();
    assert!(deleted.status().is_success());
    // Also for a connector told to start new groups at the log's end: the rebuild reads from
    // the start (it had written only what came during the rebuild, or waited for ever).
    let latest = connector_file(
        &name,
        &es_connector(
            &topic,
            &es_url,
            &[("consumer.override.auto.offset.reset", "latest")],
        ),
    );
    rebuild(&latest, false);
    assert_eq!(alias_target(&alias), format!("{alias}-v2"));
    // Every row at its newest version, read straight from the new index.
    es::wait_documents(
        &format!("{alias}-v2"),
        &expected(n),
        Duration::from_secs(5),
        "",
    );
    // Rolled back, rebuilt again, rolled back again: to the index the last rebuild replaced
    // (v1), not to the highest earlier one (v2, rolled away from).
    rebuild(&file, true);
    assert_eq!(alias_target(&alias), format!("{alias}-v1"));
    rebuild(&file, false);
    assert_eq!(alias_target(&alias), format!("{alias}-v3"));
    rebuild(&file, true);
    assert_eq!(alias_target(&alias), format!("{alias}-v1"));
    assert!(live.stop().success());
}

/// Topics that lost their first records (retention, DeleteRecords) cannot rebuild every row:
/// `rebuild` refuses before it creates anything, naming the partition, unless told the records
/// kept hold every row; and a rollback whose recorded offsets are gone from the topic refuses
/// too, the alias left where it is.
#[test]
fn a_rebuild_refuses_topics_that_lost_records_it_needs() {
    let topic = unique("rebuild-trunc");
    kafka::create_topic(&topic, 2);
    let alias = topic.clone();
    aliased_index(&alias, &json!({}));
    let es_url = servers().es.clone();
    let file = connector_file(
        &unique("rebuild-trunc"),
        &es_connector(&topic, &es_url, &[]),
    );
    let live = Worker::start(&file);
    let n = 2 * ROWS;
    kafka::produce(&topic, &(1..=n).map(change).collect::<Vec<_>>());
    es::wait_documents(&alias, &expected(n), Duration::from_secs(60), "");
    kafka::delete_records(&topic, 0, 10);
    let (ok, log) = try_rebuild(&file, false, &[]);
    assert!(!ok, "{log}");
    assert!(
        log.contains(&format!("{topic}/0 starts at offset 10")),
        "{log}"
    );
    assert_eq!(alias_target(&alias), format!("{alias}-v1"));
    let v2 = reqwest::blocking::get(format!("{es_url}/{alias}-v2")).unwrap();
    assert_eq!(v2.status(), 404, "an index was created");

    // Told the records kept are enough: rebuilt from them.
    let (ok, log) = try_rebuild_with(&file, &["--allow-truncated-topics"], &[]);
    assert!(ok, "{log}");
    assert_eq!(alias_target(&alias), format!("{alias}-v2"));
    // Changes after the move, then gone from the topic: the offsets recorded on v1 are below
    // the partition's start, and a rollback cannot catch v1 up on them.
    kafka::produce(&topic, &(n + 1..=n + 20).map(change).collect::<Vec<_>>());
    es::wait_documents(&alias, &expected(n + 20), Duration::from_secs(60), "");
    let end = kafka::end_offsets(&topic, 2)[&0];
    kafka::delete_records(&topic, 0, end);
    let (ok, log) = try_rebuild(&file, true, &[]);
    assert!(!ok, "{log}");
    assert!(log.contains("cannot be caught up"), "{log}");
    assert_eq!(alias_target(&alias), format!("{alias}-v2"));
    assert!(live.stop().success());
}

/// A partition added while a rebuild runs (the live connector writes its records to the old
/// index, which the rebuild did not wait for) fails the rebuild before the alias moves, the old
/// index taking writes again. The rebuild is slowed (its requests through a slow proxy) so
/// that the partition comes while it runs.
#[test]
fn a_partition_added_during_a_rebuild_fails_it_before_the_alias_moves() {
    use crate::support::proxy::{Faults, Proxy};
    let topic = unique("rebuild-grow");
    kafka::create_topic(&topic, 2);
    let alias = topic.clone();
    aliased_index(&alias, &json!({}));
    let es_url = servers().es.clone();
    let name = unique("rebuild-grow");
    // The live connector sees new partitions within a second.
    let live_options = [(
        "consumer.override.topic.metadata.refresh.interval.ms",
        "1000",
    )];
    let live_file = connector_file(&name, &es_connector(&topic, &es_url, &live_options));
    let live = Worker::start(&live_file);
    let n = 2 * ROWS;
    kafka::produce(&topic, &(1..=n).map(change).collect::<Vec<_>>());
    es::wait_documents(&alias, &expected(n), Duration::from_secs(60), "");
    // The same connector, for the rebuild, through a proxy that answers each bulk late.
    let proxy = Proxy::start(&es_url);
    proxy.set_faults(Faults {
        slow: 100,
        slow_ms: 300,
        ..Faults::default()
    });
    let slow = {
        let mut c = es_connector(&topic, &proxy.url, &live_options);
        c["batch.size"] = json!("20");
        connector_file(&name, &c)
    };
    let rebuild = thread::spawn(move || try_rebuild(&slow, false, &[]));
    // While it writes: a third partition, and a record on it.
    thread::sleep(Duration::from_secs(2));
    assert!(
        !rebuild.is_finished(),
        "the rebuild was over before the partition came"
    );
    kafka::add_partitions(&topic, 3);
    let late = Rec {
        partition: 2,
        ..change(n + 1)
    };
    kafka::produce(&topic, &[late]);
    let mut want = expected(n);
    want.extend(expected_one(n + 1));
    es::wait_documents(&alias, &want, Duration::from_secs(60), "the live connector");
    let (ok, log) = rebuild.join().unwrap();
    assert!(!ok, "{log}");
    assert!(
        log.contains(&format!(
            "partitions were added to the topics during the rebuild ({topic}/2)"
        )),
        "{log}"
    );
    assert_eq!(alias_target(&alias), format!("{alias}-v1"));
    let settings: Value = reqwest::blocking::get(format!("{es_url}/{alias}-v1/_settings"))
        .unwrap()
        .json()
        .unwrap();
    assert!(
        settings[format!("{alias}-v1")]["settings"]["index"]["blocks"]["write"] != "true",
        "the old index is still write-blocked: {settings}"
    );
    assert!(live.stop().success());
}

/// The document change `pos` leaves (what [`expected`] holds for it alone).
fn expected_one(pos: u64) -> BTreeMap<String, (u64, Value)> {
    let id = pos % ROWS + 1;
    BTreeMap::from([(
        id.to_string(),
        (1 << 40 | (1000 + pos), json!({"id": id, "v": pos})),
    )])
}

/// A rebuild that fails after write-blocking the old index leaves it taking writes again: the
/// live connector goes on.
#[test]
fn a_rebuild_that_fails_after_blocking_the_old_index_unblocks_it() {
    use crate::support::proxy::{Faults, Proxy};
    let topic = unique("rebuild-fail");
    kafka::create_topic(&topic, 2);
    let alias = topic.clone();
    aliased_index(&alias, &json!({}));
    let es_url = servers().es.clone();
    let name = unique("rebuild-fail");
    let file = connector_file(&name, &es_connector(&topic, &es_url, &[]));
    let live = Worker::start(&file);
    kafka::produce(&topic, &(1..=ROWS).map(change).collect::<Vec<_>>());
    es::wait_documents(&alias, &expected(ROWS), Duration::from_secs(60), "");
    // The rebuild, the same connector, reaches Elasticsearch through a proxy that refuses the
    // offsets it records on the old index once that is blocked.
    let proxy = Proxy::start(&es_url);
    proxy.set_faults(Faults {
        mapping_503: true,
        ..Faults::default()
    });
    let through = connector_file(&name, &es_connector(&topic, &proxy.url, &[]));
    let (ok, log) = try_rebuild(&through, false, &[]);
    assert!(!ok, "the rebuild did not fail:\n{log}");
    assert!(log.contains("the old indices take writes again"), "{log}");
    assert_eq!(alias_target(&alias), format!("{alias}-v1"));
    let settings: Value = reqwest::blocking::get(format!("{es_url}/{alias}-v1/_settings"))
        .unwrap()
        .json()
        .unwrap();
    let block = &settings[format!("{alias}-v1")]["settings"]["index"]["blocks"]["write"];
    assert!(block.is_null() || block == "false", "{settings}");
    // The live connector writes on into the old index.
    kafka::produce(
        &topic,
        &(ROWS + 1..=2 * ROWS).map(change).collect::<Vec<_>>(),
    );
    es::wait_documents(
        &format!("{alias}-v1"),
        &expected(2 * ROWS),
        Duration::from_secs(60),
        "",
    );
    assert!(live.stop().success());
}

/// A connector of two topics, each written into an alias of its own: one rebuild moves both
/// aliases to new indices holding every row at its newest version, and a rollback moves both
/// back, each caught up on what the live connector wrote in between.
#[test]
fn a_rebuild_of_two_aliases_moves_both_and_a_rollback_brings_both_back() {
    let (a, b) = (unique("rebuild-two-a"), unique("rebuild-two-b"));
    for t in [&a, &b] {
        kafka::create_topic(t, 2);
        aliased_index(t, &json!({}));
    }
    let es_url = servers().es.clone();
    let file = connector_file(
        &unique("rebuild-two"),
        &es_connector(&format!("{a},{b}"), &es_url, &[]),
    );
    let live = Worker::start(&file);
    let (na, nb) = (2 * ROWS, ROWS + 50);
    kafka::produce(&a, &(1..=na).map(change).collect::<Vec<_>>());
    kafka::produce(&b, &(1..=nb).map(change).collect::<Vec<_>>());
    es::wait_documents(&a, &expected(na), Duration::from_secs(60), "");
    es::wait_documents(&b, &expected(nb), Duration::from_secs(60), "");
    rebuild(&file, false);
    for (alias, n) in [(&a, na), (&b, nb)] {
        assert_eq!(alias_target(alias), format!("{alias}-v2"));
        es::wait_documents(
            &format!("{alias}-v2"),
            &expected(n),
            Duration::from_secs(5),
            "rebuilt",
        );
    }
    // The live connector writes on, into the new index of `b`.
    let nb2 = 2 * ROWS + 30;
    kafka::produce(&b, &(nb + 1..=nb2).map(change).collect::<Vec<_>>());
    es::wait_documents(
        &format!("{b}-v2"),
        &expected(nb2),
        Duration::from_secs(60),
        "written live after the move",
    );
    rebuild(&file, true);
    for (alias, n) in [(&a, na), (&b, nb2)] {
        assert_eq!(alias_target(alias), format!("{alias}-v1"));
        es::wait_documents(
            &format!("{alias}-v1"),
            &expected(n),
            Duration::from_secs(5),
            "rolled back",
        );
    }
    assert!(live.stop().success());
}

fn wait_until(mut cond: impl FnMut() -> bool, what: &str) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not within 60 s: {what}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}
