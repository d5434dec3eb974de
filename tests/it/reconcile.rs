//! Reconciliation after a snapshot (docs/reconcile.md) and `cdc-sink verify`, on the real broker
//! and Elasticsearch, with MySQL-shaped change events: a table's second snapshot leaves out rows
//! deleted while Debezium was not streaming; once it is written their documents go, and nothing
//! the snapshot or a later change wrote. `verify` replays the topic and finds each injected drift.

use std::collections::BTreeMap;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::kafka::{self, Rec};
use crate::support::proxy::{Faults, Proxy};
use crate::support::worker::{Worker, connector_file};
use crate::support::{es, es_connector, servers, unique};

/// The version of a change at binlog position `pos` of `mysql-bin.000001` (docs/versions.md).
fn version(pos: u64) -> u64 {
    1 << 40 | pos
}

/// A MySQL change event without schema on row `id` at binlog `pos`; `snapshot`: the
/// `source.snapshot` mark.
fn event(id: i64, op: &str, pos: u64, snapshot: &str, name: &str) -> Rec {
    let source = json!({"connector": "mysql", "name": "it", "ts_ms": 1_700_000_000_000i64, "db": "inventory",
        "table": "items", "file": "mysql-bin.000001", "pos": pos, "row": 0, "snapshot": snapshot});
    let row = json!({"id": id, "name": name});
    let (before, after) = if op == "d" {
        (Some(row), None)
    } else {
        (None, Some(row))
    };
    Rec {
        partition: (id % 3) as i32,
        key: Some(json!({"id": id}).to_string()),
        value: Some(
            json!({"before": before, "after": after, "source": source, "op": op}).to_string(),
        ),
    }
}

/// Ids 1–30 created by streamed changes, then a second snapshot (binlog position 1000) that
/// reads ids 1–20 only (21–30 were deleted while Debezium was not streaming; no delete events),
/// then id 31 created and id 5 updated after it.
fn history() -> (Vec<Rec>, BTreeMap<String, (u64, Value)>) {
    let (mut recs, mut expected) = snapshot_history(30, 20, 1000);
    recs.push(event(31, "c", 1100, "false", "new"));
    recs.push(event(5, "u", 1200, "false", "updated"));
    expected.insert(
        "31".into(),
        (version(1100), json!({"id": 31, "name": "new"})),
    );
    expected.insert(
        "5".into(),
        (version(1200), json!({"id": 5, "name": "updated"})),
    );
    (recs, expected)
}

/// Ids 1–`created` created by streamed changes, then a snapshot at binlog position `at` that
/// reads ids 1–`read` only; with the documents it leaves.
fn snapshot_history(
    created: i64,
    read: i64,
    at: u64,
) -> (Vec<Rec>, BTreeMap<String, (u64, Value)>) {
    let mut recs: Vec<Rec> = (1..=created)
        .map(|id| event(id, "c", 100 + id as u64, "false", "old"))
        .collect();
    for id in 1..=read {
        let mark = match id {
            1 => "first",
            _ if id == read => "last",
            _ => "true",
        };
        recs.push(event(id, "r", at, mark, "snap"));
    }
    let expected = (1..=read)
        .map(|id| {
            (
                id.to_string(),
                (version(at), json!({"id": id, "name": "snap"})),
            )
        })
        .collect();
    (recs, expected)
}

/// Starts a worker with a new connector on `topic` (3 partitions; `extra` options), waits until
/// the index is `expected` and every offset is committed; returns the worker, its connector file.
fn converge(
    topic: &str,
    expected: &BTreeMap<String, (u64, Value)>,
    extra: &[(&str, &str)],
) -> (Worker, std::path::PathBuf) {
    let name = unique("reconcile");
    let file = connector_file(&name, &es_connector(topic, &servers().es, extra));
    let worker = Worker::start(&file);
    es::wait_documents(topic, expected, Duration::from_secs(60), "");
    let end = kafka::end_offsets(topic, 3);
    let group = format!("connect-{name}");
    let start = Instant::now();
    while kafka::committed(&group, topic, 3) != end {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "offsets not committed: {:?} of {end:?}",
            kafka::committed(&group, topic, 3)
        );
        thread::sleep(Duration::from_millis(300));
    }
    (worker, file)
}

/// Runs `cdc-sink verify` on `connector` (with `extra` arguments); returns its exit code and
/// report.
fn verify_with(connector: &std::path::Path, extra: &[&str]) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_cdc-sink"))
        .arg("verify")
        .args(extra)
        .arg(connector)
        .env(
            "CDC_SINK_KAFKA__BOOTSTRAP_SERVERS",
            servers().kafka.as_str(),
        )
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), report)
}

fn verify(connector: &std::path::Path) -> (i32, Value) {
    verify_with(connector, &[])
}

#[test]
fn a_written_snapshot_removes_what_it_did_not_contain_and_verify_sees_every_drift() {
    let topic = unique("reconcile");
    kafka::create_topic(&topic, 3);
    let (recs, expected) = history();
    kafka::produce(&topic, &recs);
    let (worker, file) = converge(&topic, &expected, &[("behavior.on.null.values", "delete")]);
    let log = worker.log.clone();
    assert!(worker.stop().success());
    let text = std::fs::read_to_string(log).unwrap();
    assert!(text.contains("removed=10"), "reconciliation:\n{text}");
    assert!(text.contains("\"reconciled\":10"), "counted:\n{text}");

    // The index matches a replay of the topic.
    let (code, report) = verify(&file);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["indices"][&topic]["expected"], 21, "{report}");

    // A copy, versions kept, to compare the index with once it has drifted.
    let es = reqwest::blocking::Client::new();
    let base = format!("{}/{topic}", servers().es);
    let ok = |r: reqwest::blocking::Response| assert!(r.status().is_success(), "{:?}", r.text());
    let copy = format!("{topic}-copy");
    let mut body = String::new();
    for (id, (version, doc)) in es::documents(&topic) {
        body.push_str(&format!(
            "{}\n{doc}\n",
            json!({"index": {"_index": copy, "_id": id, "version": version, "version_type": "external"}})
        ));
    }
    ok(es
        .post(format!("{}/_bulk?refresh=true", servers().es))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .unwrap());
    let (code, report) = verify_with(&file, &["--compare", &copy, &topic]);
    assert_eq!(code, 0, "{report}");

    // Drift: a document deleted, one changed, one extra, one at an older version.
    ok(es.delete(format!("{base}/_doc/1")).send().unwrap());
    ok(es
        .put(format!("{base}/_doc/2"))
        .json(&json!({"id": 2, "name": "changed by hand"}))
        .send()
        .unwrap());
    ok(es
        .put(format!("{base}/_doc/999"))
        .json(&json!({"id": 999}))
        .send()
        .unwrap());
    // Older than the topic's last change of 3: deleted, its delete forgotten at once, written
    // again at version 7.
    ok(es
        .put(format!("{base}/_settings"))
        .json(&json!({"index": {"gc_deletes": "0s"}}))
        .send()
        .unwrap());
    ok(es
        .delete(format!("{base}/_doc/3?refresh=true"))
        .send()
        .unwrap());
    // The delete's tombstone goes at the next refresh once gc_deletes has passed.
    let start = Instant::now();
    while !es
        .put(format!("{base}/_doc/3?version=7&version_type=external"))
        .json(&json!({"id": 3, "name": "snap"}))
        .send()
        .unwrap()
        .status()
        .is_success()
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "cannot write 3 at version 7"
        );
        let _ = es.post(format!("{base}/_refresh")).send();
        thread::sleep(Duration::from_millis(200));
    }
    let (code, report) = verify(&file);
    assert_eq!(code, 1, "{report}");
    let r = &report["indices"][&topic];
    assert_eq!(r["examples"]["missing"], json!(["1"]), "{report}");
    assert_eq!(r["examples"]["differing"], json!(["2"]), "{report}");
    assert_eq!(r["examples"]["extra"], json!(["999"]), "{report}");
    assert_eq!(r["examples"]["stale"], json!(["3"]), "{report}");
    // The same differences between the copy and the index.
    let (code, report) = verify_with(&file, &["--compare", &copy, &topic]);
    assert_eq!(code, 1, "{report}");
    let r = &report["indices"][format!("{topic} (against {copy})")];
    for (kind, id) in [
        ("missing", "1"),
        ("differing", "2"),
        ("extra", "999"),
        ("stale", "3"),
    ] {
        assert_eq!(r["examples"][kind], json!([id]), "{kind}: {report}");
    }
}

/// With soft deletes the rows the snapshot did not contain are marked `__deleted: true`, and
/// `verify` agrees.
#[test]
fn with_soft_deletes_the_rows_missing_from_a_snapshot_are_marked_deleted() {
    let topic = unique("reconcile-soft");
    kafka::create_topic(&topic, 3);
    let (recs, expected) = history();
    kafka::produce(&topic, &recs);
    let index = format!("{topic}-soft");
    let file = connector_file(
        &unique("reconcile-soft"),
        &es_connector(
            &topic,
            &servers().es,
            &[("delete.mode", "soft"), ("index.name", "${topic}-soft")],
        ),
    );
    let worker = Worker::start(&file);
    let start = Instant::now();
    loop {
        let docs = es::sources(&index);
        let marked: Vec<&String> = docs
            .iter()
            .filter(|(_, d)| d["__deleted"] == json!(true))
            .map(|(id, _)| id)
            .collect();
        let live_ok = expected.iter().all(|(id, (_, d))| {
            let mut d = d.clone();
            d["__deleted"] = json!(false);
            docs.get(id) == Some(&d)
        });
        if live_ok && marked.len() == 10 && docs.len() == 31 {
            let mut ids: Vec<i64> = marked.iter().map(|i| i.parse().unwrap()).collect();
            ids.sort();
            assert_eq!(ids, (21..=30).collect::<Vec<_>>());
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{index}: {docs:?}"
        );
        thread::sleep(Duration::from_millis(300));
    }
    assert!(worker.stop().success());
    let (code, report) = verify(&file);
    assert_eq!(code, 0, "{report}");
}

/// Two snapshots of one table whose last reads are in different partitions, both already in
/// the topic when the worker starts: each waits only for what was produced before it, so
/// neither waits for the other, and the rows the second snapshot left out are removed.
#[test]
fn two_snapshot_ends_in_different_partitions_do_not_wait_for_each_other() {
    let topic = unique("reconcile-two");
    kafka::create_topic(&topic, 3);
    let (first, _) = history();
    // The first snapshot's last read (id 20) is in partition 2; the second's (id 15) in 0.
    kafka::produce(&topic, &first);
    thread::sleep(Duration::from_millis(50));
    let second: Vec<Rec> = (1..=15)
        .map(|id| {
            let mark = match id {
                1 => "first",
                15 => "last",
                _ => "true",
            };
            event(id, "r", 2000, mark, "again")
        })
        .collect();
    kafka::produce(&topic, &second);
    let expected: BTreeMap<String, (u64, Value)> = (1..=15)
        .map(|id| {
            (
                id.to_string(),
                (version(2000), json!({"id": id, "name": "again"})),
            )
        })
        .collect();
    let (worker, _) = converge(&topic, &expected, &[("behavior.on.null.values", "delete")]);
    assert!(worker.stop().success());
}

/// A scan Elasticsearch answered only in part is scanned again, never taken as done: some
/// shards failed the search (200, `_shards.failed`, the other shards' hits only), or the scroll
/// was lost between two pages (404). 1 500 rows created, then a snapshot of 500 of them: the
/// 1 000 others were deleted meanwhile, more than one page of the scan. Until the fault is gone
/// the snapshot's last record is not committed; then the 1 000 documents go.
#[test]
fn a_scan_answered_in_part_is_scanned_again_before_the_snapshot_end_counts() {
    let es_url = &servers().es;
    for (kind, fault) in [
        (
            "shards",
            Faults {
                shards_failed: true,
                ..Faults::default()
            },
        ),
        (
            "scroll",
            Faults {
                scroll_lost: true,
                ..Faults::default()
            },
        ),
    ] {
        let topic = unique(&format!("reconcile-{kind}"));
        kafka::create_topic(&topic, 3);
        let (recs, expected) = snapshot_history(1500, 500, 5000);
        let proxy = Proxy::start(es_url);
        proxy.set_faults(fault);
        kafka::produce(&topic, &recs);
        let name = unique("reconcile-part");
        let file = connector_file(
            &name,
            &es_connector(&topic, &proxy.url, &[("behavior.on.null.values", "delete")]),
        );
        let worker = Worker::start(&file);
        let group = format!("connect-{name}");
        // The snapshot's end is in partition 500 % 3.
        let last: i32 = 500 % 3;
        let end = kafka::end_offsets(&topic, 3);
        let start = Instant::now();
        while proxy
            .stats()
            .searches
            .load(std::sync::atomic::Ordering::SeqCst)
            < 4
        {
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "{kind}: the scan was not tried again: {} searches, log:\n{}",
                proxy
                    .stats()
                    .searches
                    .load(std::sync::atomic::Ordering::SeqCst),
                worker.log_text()
            );
            thread::sleep(Duration::from_millis(200));
        }
        assert!(
            kafka::committed(&group, &topic, 3).get(&last) < end.get(&last),
            "{kind}: the snapshot's end committed before its scan was whole"
        );
        proxy.set_faults(Faults::default());
        es::wait_documents(&topic, &expected, Duration::from_secs(90), kind);
        let start = Instant::now();
        while kafka::committed(&group, &topic, 3) != end {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{kind}: offsets not committed: {:?} of {end:?}",
                kafka::committed(&group, &topic, 3)
            );
            thread::sleep(Duration::from_millis(300));
        }
        let text = worker.log_text();
        assert!(
            !text.contains("reconciliation after the snapshot skipped"),
            "{kind}:\n{text}"
        );
        assert!(worker.stop().success());
    }
}

/// Three tasks, one partition each: the task that reads the snapshot's last read waits for the
/// other partitions through the group's committed offsets, then reconciles.
#[test]
fn a_snapshot_end_waits_for_partitions_other_tasks_read() {
    let topic = unique("reconcile-tasks");
    kafka::create_topic(&topic, 3);
    let (recs, expected) = history();
    kafka::produce(&topic, &recs);
    let (worker, _) = converge(
        &topic,
        &expected,
        &[("behavior.on.null.values", "delete"), ("tasks.max", "3")],
    );
    let log = worker.log.clone();
    assert!(worker.stop().success());
    let text = std::fs::read_to_string(log).unwrap();
    assert!(text.contains("removed=10"), "reconciliation:\n{text}");
    // Each task had one partition.
    for task in 0..3 {
        assert!(
            text.lines().any(|l| l.contains("partitions assigned")
                && l.contains(&format!("-{task} partitions=[(\"{topic}\""))
                && l.matches(&topic).count() == 1),
            "task {task} did not get exactly one partition:\n{text}"
        );
    }
}

/// A partition whose records below a snapshot's end were removed from the log before the group
/// wrote them (retention, here DeleteRecords) may have held some of the snapshot's reads: the
/// snapshot is not reconciled, since that would delete the documents of those rows, which
/// exist. Nine rows written earlier (version 101–109), and three since deleted; a snapshot at
/// position 1000 reads the nine; partition 1's reads (rows 1, 4, 7) are removed before a new
/// connector reads the topic. Its end (row 9, partition 0) is committed; no document goes.
#[test]
fn a_snapshot_whose_reads_left_the_log_unwritten_is_not_reconciled() {
    let topic = unique("reconcile-lost");
    kafka::create_topic(&topic, 3);
    let mut expected = BTreeMap::new();
    for id in 1..=12 {
        let v = version(100 + id as u64);
        let doc = json!({"id": id, "name": "old"});
        es::put_versioned(&topic, &id.to_string(), &doc, v);
        expected.insert(id.to_string(), (v, doc));
    }
    let (recs, written) = snapshot_history(0, 9, 1000);
    kafka::produce(&topic, &recs);
    assert_eq!(
        kafka::end_offsets(&topic, 3),
        BTreeMap::from([(0, 3), (1, 3), (2, 3)])
    );
    kafka::delete_records(&topic, 1, 3);
    for (id, doc) in written {
        if id.parse::<i64>().unwrap() % 3 != 1 {
            expected.insert(id, doc);
        }
    }
    let name = unique("reconcile-lost");
    let file = connector_file(
        &name,
        &es_connector(
            &topic,
            &servers().es,
            &[("behavior.on.null.values", "delete")],
        ),
    );
    let worker = Worker::start(&file);
    let group = format!("connect-{name}");
    crate::support::wait_until(
        Duration::from_secs(60),
        "the snapshot's end committed",
        || {
            let c = kafka::committed(&group, &topic, 3);
            (c.get(&0) == Some(&3) && c.get(&2) == Some(&3)).then_some(())
        },
    );
    es::wait_documents(
        &topic,
        &expected,
        Duration::from_secs(10),
        "nothing removed",
    );
    let log = worker.log_text();
    assert!(
        log.contains("reconciliation after the snapshot skipped")
            && log.contains(&format!("partition(s) [1] of topic {topic} lost records")),
        "no reconciliation skipped for partition 1:\n{log}"
    );
    assert!(worker.stop().success());
}

/// Nor is a snapshot reconciled on a topic whose timestamps the brokers set
/// (`message.timestamp.type=LogAppendTime`): each partition's leader stamps by its own clock, so
/// what the other partitions held before the snapshot's end cannot be told by time. Twelve rows
/// created, a snapshot reads nine: the three others stay, and the snapshot's end is committed.
#[test]
fn a_snapshot_on_a_topic_with_broker_timestamps_is_not_reconciled() {
    let topic = unique("reconcile-append");
    kafka::create_topic(&topic, 3);
    kafka::set_topic_config(&topic, "message.timestamp.type", "LogAppendTime");
    let (recs, mut expected) = snapshot_history(12, 9, 1000);
    for id in 10..=12 {
        let doc = (version(100 + id as u64), json!({"id": id, "name": "old"}));
        expected.insert(id.to_string(), doc);
    }
    kafka::produce(&topic, &recs);
    let (worker, _) = converge(&topic, &expected, &[("behavior.on.null.values", "delete")]);
    let log = worker.log_text();
    assert!(
        log.contains("reconciliation after the snapshot skipped")
            && log.contains("message.timestamp.type=LogAppendTime"),
        "no reconciliation skipped for broker timestamps:\n{log}"
    );
    // Still there once the snapshot's end is committed (`converge`).
    es::wait_documents(&topic, &expected, Duration::from_secs(5), "nothing removed");
    assert!(worker.stop().success());
}

/// A topic of two partitions for a task remembering more records than it may behind a
/// snapshot's end (64 × `max.buffered.records`: 640 with the connector of
/// [`remembering_connector`]). Partition 1 − `end` holds 8 000 rows created before the
/// snapshot; partition `end` the snapshot (rows 1–10) and 1 500 rows created after it, written
/// but not committable until the snapshot's end is reconciled. Produced 50 records a batch, so that
/// small fetches interleave the partitions; returns the topic and the documents it ends as.
fn remembering_topic(end: i32) -> (String, BTreeMap<String, (u64, Value)>) {
    let topic = unique("reconcile-remembered");
    kafka::create_topic(&topic, 2);
    let at = |mut r: Rec, partition: i32| {
        r.partition = partition;
        r
    };
    let producer = kafka::producer();
    let before: Vec<Rec> = (1..=8000)
        .map(|id| at(event(id, "c", 100 + id as u64, "false", "old"), 1 - end))
        .collect();
    before.chunks(50).for_each(|c| producer.send(&topic, c));
    thread::sleep(Duration::from_millis(50));
    let snapshot_at = 100_000;
    let mut after: Vec<Rec> = (1..=10)
        .map(|id| {
            let mark = match id {
                1 => "first",
                10 => "last",
                _ => "true",
            };
            at(event(id, "r", snapshot_at, mark, "snap"), end)
        })
        .collect();
    after.extend(
        (10_001..=11_500).map(|id| at(event(id, "c", 100_000 + id as u64, "false", "new"), end)),
    );
    after.chunks(50).for_each(|c| producer.send(&topic, c));
    let mut expected: BTreeMap<String, (u64, Value)> = (1..=10)
        .map(|id| {
            (
                id.to_string(),
                (version(snapshot_at), json!({"id": id, "name": "snap"})),
            )
        })
        .collect();
    expected.extend((10_001..=11_500).map(|id| {
        (
            id.to_string(),
            (
                version(100_000 + id as u64),
                json!({"id": id, "name": "new"}),
            ),
        )
    }));
    (topic, expected)
}

/// A connector on `topic` through `es_url` that remembers at most 640 records, with fetches
/// and a prefetch too small to hold the backlog of [`remembering_topic`] (what a pause stops).
fn remembering_connector(topic: &str, es_url: &str, tasks: &str) -> (String, std::path::PathBuf) {
    let name = unique("reconcile-remembered");
    let file = connector_file(
        &name,
        &es_connector(
            topic,
            es_url,
            &[
                ("behavior.on.null.values", "delete"),
                ("max.buffered.records", "10"),
                ("consumer.override.max.partition.fetch.bytes", "8192"),
                ("consumer.override.queued.max.messages.kbytes", "64"),
                ("consumer.override.queued.min.messages", "50"),
                ("tasks.max", tasks),
            ],
        ),
    );
    (format!("connect-{name}"), file)
}

/// Waits until `group` has committed every offset of two-partition `topic`, then checks the
/// index holds `expected` and nothing else.
fn converged(worker: &Worker, group: &str, topic: &str, expected: &BTreeMap<String, (u64, Value)>) {
    let end = kafka::end_offsets(topic, 2);
    let start = Instant::now();
    while kafka::committed(group, topic, 2) != end {
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "stalled: committed {:?} of {end:?}; log:\n{}",
            kafka::committed(group, topic, 2),
            worker.log_text()
        );
        thread::sleep(Duration::from_millis(300));
    }
    let docs = es::documents(topic);
    let wrong: Vec<_> = expected
        .iter()
        .filter(|(id, want)| docs.get(*id) != Some(want))
        .map(|(id, _)| id)
        .chain(docs.keys().filter(|id| !expected.contains_key(*id)))
        .take(10)
        .collect();
    assert!(
        wrong.is_empty(),
        "{} documents, first wrong ids {wrong:?}",
        docs.len()
    );
}

/// Waits for the line saying the task stopped reading partition 0 of [`remembering_topic`],
/// where the records pile up behind the snapshot's end. Partition 1, which the end waits for,
/// must be read on (pausing every partition there stalled the task for ever): it may be stopped
/// for a moment, behind a slow bulk request, but read again once that lands.
fn stopped_partition_0(worker: &mut Worker, topic: &str) {
    let line = worker.wait_log(
        "not reading the partitions they pile up in",
        Duration::from_secs(60),
    );
    assert!(line.contains(&format!("(\"{topic}\", 0)")), "{line}");
}

#[test]
fn a_snapshot_end_behind_too_many_remembered_records_still_reads_what_it_waits_for() {
    let (topic, expected) = remembering_topic(0);
    let (group, file) = remembering_connector(&topic, &servers().es, "1");
    let mut worker = Worker::start(&file);
    stopped_partition_0(&mut worker, &topic);
    converged(&worker, &group, &topic, &expected);
    let text = worker.log_text();
    assert!(text.contains("removed=7990"), "reconciliation:\n{text}");
    assert!(worker.stop().success());
}

/// Two tasks, each waiting for the other: topic T's snapshot ends in T/0, its backlog is in
/// T/1; topic U's ends in U/1, its backlog in U/0. The group gives one task T/0 and U/0, the
/// other T/1 and U/1, so each task's snapshot end waits for a partition the other task reads,
/// while records pile up behind it. Each must stop reading only its own pile: pausing every
/// partition, or all but those its own snapshot end waits for, stopped both for ever.
#[test]
fn two_tasks_each_remembering_too_many_never_stop_what_the_other_waits_for() {
    let (t, t_expected) = remembering_topic(0);
    let (u, u_expected) = remembering_topic(1);
    let (group, file) = remembering_connector(&format!("{t},{u}"), &servers().es, "2");
    let worker = Worker::start(&file);
    converged(&worker, &group, &t, &t_expected);
    converged(&worker, &group, &u, &u_expected);
    let text = worker.log_text();
    let stopped: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("not reading the partitions they pile up in"))
        .collect();
    for (topic, p) in [(&t, 0), (&u, 1)] {
        assert!(
            stopped
                .iter()
                .any(|l| l.contains(&format!("(\"{topic}\", {p})"))),
            "{topic}/{p} never stopped: the bound was not reached, the test shows nothing:\n{text}"
        );
    }
    // Range assignment: the task that reads T/0 reads U/0, the other T/1 and U/1.
    assert!(
        text.lines().any(|l| l.contains("partitions assigned")
            && l.contains(&format!("(\"{t}\", 0)"))
            && l.contains(&format!("(\"{u}\", 0)"))
            && !l.contains(&format!("(\"{t}\", 1)"))),
        "the tasks did not wait for each other:\n{text}"
    );
    assert!(worker.stop().success());
}

/// librdkafka keeps a pause of a partition after a rebalance takes it away, so a partition the
/// task stopped reading comes back paused when the group gives it back. While the snapshot's
/// reconciliation cannot search (503), partition 0 stays stopped; another member joins the
/// group and leaves. Then every partition must be read again: partition 0 from before the
/// snapshot's end, which the rebalance left uncommitted.
#[test]
fn a_partition_stopped_before_a_rebalance_is_read_again_after_it() {
    let (topic, expected) = remembering_topic(0);
    let proxy = Proxy::start(&servers().es);
    proxy.set_faults(Faults {
        search_503: true,
        ..Faults::default()
    });
    let (group, file) = remembering_connector(&topic, &proxy.url, "1");
    let mut worker = Worker::start(&file);
    stopped_partition_0(&mut worker, &topic);
    // Partition 1 read and committed to its end: the reconciliation is what waits now.
    let end = kafka::end_offsets(&topic, 2);
    let start = Instant::now();
    while kafka::committed(&group, &topic, 2).get(&1) != end.get(&1) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "partition 1 not committed: {:?} of {end:?}; log:\n{}",
            kafka::committed(&group, &topic, 2),
            worker.log_text()
        );
        thread::sleep(Duration::from_millis(300));
    }
    kafka::join_group_briefly(&group, &topic);
    proxy.set_faults(Faults::default());
    converged(&worker, &group, &topic, &expected);
    let text = worker.log_text();
    assert!(
        text.matches("partitions assigned").count() >= 3,
        "no rebalance:\n{text}"
    );
    assert!(worker.stop().success());
}

/// `verify` never answers "match" without looking: a topic that does not exist is an error;
/// the index of a topic with no records is still read (what it holds is extra); a scan that
/// read part of the index (shards failed, scroll lost) is an error, not a verdict.
#[test]
fn verify_answers_only_what_it_has_read() {
    use crate::support::proxy::{Faults, Proxy};
    let missing = connector_file(
        &unique("verify-missing"),
        &es_connector(&unique("verify-no-such-topic"), &servers().es, &[]),
    );
    assert_eq!(verify(&missing).0, 2);

    let topic = unique("verify-empty");
    kafka::create_topic(&topic, 1);
    let put = reqwest::blocking::Client::new()
        .put(format!("{}/{topic}/_doc/7?refresh=true", servers().es))
        .json(&json!({"id": 7}))
        .send()
        .unwrap();
    assert!(put.status().is_success());
    let file = connector_file(
        &unique("verify-empty"),
        &es_connector(&topic, &servers().es, &[]),
    );
    let (code, report) = verify(&file);
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["indices"][&topic]["extra"], 1, "{report}");

    let proxy = Proxy::start(&servers().es);
    let through = connector_file(
        &unique("verify-partial"),
        &es_connector(&topic, &proxy.url, &[]),
    );
    for faults in [
        Faults {
            shards_failed: true,
            ..Faults::default()
        },
        Faults {
            scroll_lost: true,
            ..Faults::default()
        },
    ] {
        proxy.set_faults(faults);
        let (code, report) = verify(&through);
        assert_eq!(code, 2, "{faults:?}: {report}");
    }
}

/// PostgreSQL events without `source.sequence` (Debezium versions before it) are versioned by
/// each change's own WAL position, not by commit order: a transaction open while the snapshot
/// read inserted row 3 below the snapshot's position, and its insert is streamed after the
/// snapshot, which did not see it. Reconciling that snapshot would remove row 3 as deleted
/// meanwhile; it is not reconciled, and row 3 stays.
#[test]
fn a_postgres_snapshot_without_sequence_is_not_reconciled() {
    let event = |id: i64, op: &str, lsn: u64, snapshot: &str| Rec {
        partition: 0,
        key: Some(json!({"id": id}).to_string()),
        value: Some(
            json!({"before": null, "after": {"id": id}, "op": op,
                "source": {"connector": "postgresql", "name": "it", "ts_ms": 1_700_000_000_000i64,
                    "db": "d", "schema": "s", "table": "items", "lsn": lsn, "snapshot": snapshot}})
            .to_string(),
        ),
    };
    let topic = unique("it-reconcile-noseq");
    kafka::create_topic(&topic, 1);
    kafka::produce(
        &topic,
        &[
            event(1, "c", 100, "false"),
            event(1, "r", 1000, "first"),
            event(2, "r", 1000, "last"),
            event(3, "c", 900, "false"),
        ],
    );
    let expected: BTreeMap<String, (u64, Value)> = [
        ("1".to_string(), (1000, json!({"id": 1}))),
        ("2".to_string(), (1000, json!({"id": 2}))),
        ("3".to_string(), (900, json!({"id": 3}))),
    ]
    .into();
    let name = unique("reconcile-noseq");
    let worker = Worker::start(&connector_file(
        &name,
        &es_connector(&topic, &servers().es, &[("linger.ms", "500")]),
    ));
    es::wait_documents(&topic, &expected, Duration::from_secs(60), "");
    let end = kafka::end_offsets(&topic, 1);
    crate::support::wait_until(Duration::from_secs(60), "every offset committed", || {
        (kafka::committed(&format!("connect-{name}"), &topic, 1) == end).then_some(())
    });
    // Still there once everything is committed (a reconciliation would have run by then).
    assert_eq!(es::documents(&topic), expected);
    assert!(
        worker.log_text().contains("carry no `source.sequence`"),
        "the snapshot was not said to be left unreconciled"
    );
    assert!(worker.stop().success());
}

/// A running reconciliation stops when its record's partition leaves the task in a rebalance,
/// as a snapshot's end still waiting does: the next owner reads the record again and
/// reconciles, and the index ends as the snapshot says. Every search is answered 503 until
/// then, so the first worker's reconciliation keeps running until a second worker joins.
#[test]
fn a_running_reconciliation_stops_when_its_partition_moves() {
    let topic = unique("reconcile-moved");
    kafka::create_topic(&topic, 3);
    let (recs, expected) = snapshot_history(30, 20, 1000);
    kafka::produce(&topic, &recs);
    let failing = Faults {
        search_503: true,
        ..Faults::default()
    };
    let (proxy_a, proxy_b) = (Proxy::start(&servers().es), Proxy::start(&servers().es));
    proxy_a.set_faults(failing);
    proxy_b.set_faults(failing);
    let name = unique("reconcile-moved");
    let options = [("retry.backoff.ms", "50"), ("max.retry.backoff.ms", "200")];
    let file = |proxy: &Proxy| connector_file(&name, &es_connector(&topic, &proxy.url, &options));
    let mut a = Worker::start(&file(&proxy_a));
    let searches = |p: &Proxy| p.stats().searches.load(std::sync::atomic::Ordering::SeqCst);
    let start = Instant::now();
    while searches(&proxy_a) < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the reconciliation did not start:\n{}",
            a.log_tail(30)
        );
        thread::sleep(Duration::from_millis(100));
    }
    let b = Worker::start(&file(&proxy_b));
    a.wait_log(
        "reconciliation after the snapshot cancelled",
        Duration::from_secs(60),
    );
    proxy_a.set_faults(Faults::default());
    proxy_b.set_faults(Faults::default());
    es::wait_documents(&topic, &expected, Duration::from_secs(90), "");
    let (group, end) = (format!("connect-{name}"), kafka::end_offsets(&topic, 3));
    let start = Instant::now();
    while kafka::committed(&group, &topic, 3) != end {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "offsets not committed: {:?} of {end:?}",
            kafka::committed(&group, &topic, 3)
        );
        thread::sleep(Duration::from_millis(300));
    }
    assert!(a.stop().success());
    assert!(b.stop().success());
}
