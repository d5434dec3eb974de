//! Deletes stay deleted, on the real broker and Elasticsearch: every ExtractNewRecordState delete
//! and tombstone mode ends as the Confluent sink behind that transform would leave the index
//! (versions included), and a restart between a delete event and its tombstone never loses the
//! row created again after it.

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::kafka::{self, Rec};
use crate::support::worker::{Worker, connector_file};
use crate::support::{es, es_connector, servers, unique};

/// The version of a change at binlog position `pos` of `mysql-bin.000001` (docs/versions.md).
fn version(pos: u64) -> u64 {
    1 << 40 | pos
}

fn row(id: i64, name: &str) -> Value {
    json!({"id": id, "name": name})
}

/// A MySQL change event without schema: `op` on row `id` at binlog `pos`.
fn change(
    partition: i32,
    id: i64,
    op: &str,
    pos: u64,
    before: Option<Value>,
    after: Option<Value>,
) -> Rec {
    let source = json!({"connector": "mysql", "name": "it", "ts_ms": 1_700_000_000_000i64, "db": "inventory",
        "table": "customers", "file": "mysql-bin.000001", "pos": pos, "row": 0});
    Rec {
        partition,
        key: Some(json!({"id": id}).to_string()),
        value: Some(
            json!({"before": before, "after": after, "source": source, "op": op}).to_string(),
        ),
    }
}

fn tombstone(partition: i32, id: i64) -> Rec {
    Rec {
        partition,
        key: Some(json!({"id": id}).to_string()),
        value: None,
    }
}

#[test]
fn every_delete_and_tombstone_mode_ends_as_the_confluent_sink_would() {
    // A, B created; A deleted (and tombstoned); Z created and deleted within one batch.
    let records = vec![
        change(0, 1, "c", 100, None, Some(row(1, "a"))),
        change(0, 2, "c", 200, None, Some(row(2, "b"))),
        change(0, 1, "d", 300, Some(row(1, "a")), None),
        tombstone(0, 1),
        change(0, 9, "c", 400, None, Some(row(9, "z"))),
        change(0, 9, "d", 410, Some(row(9, "z")), None),
        tombstone(0, 9),
    ];
    let unwrap = |extra: &[(&'static str, &'static str)]| {
        let mut v = vec![
            ("transforms", "unwrap"),
            (
                "transforms.unwrap.type",
                "io.debezium.transforms.ExtractNewRecordState",
            ),
        ];
        v.extend_from_slice(extra);
        v
    };
    let null_delete = ("behavior.on.null.values", "delete");
    let live = |id: i64, name: &str, pos: u64| (id.to_string(), (version(pos), row(id, name)));
    let soft = |id: i64, name: &str, pos: u64, deleted: bool| {
        let mut doc = row(id, name);
        doc["__deleted"] = json!(deleted);
        (id.to_string(), (version(pos), doc))
    };
    let only_b: BTreeMap<_, _> = [live(2, "b", 200)].into();
    let all_kept: BTreeMap<_, _> = [live(1, "a", 100), live(2, "b", 200), live(9, "z", 400)].into();
    let soft_deleted: BTreeMap<_, _> = [
        soft(1, "a", 300, true),
        soft(2, "b", 200, false),
        soft(9, "z", 410, true),
    ]
    .into();
    type Case = (
        Vec<(&'static str, &'static str)>,
        BTreeMap<String, (u64, Value)>,
    );
    let cases: Vec<Case> = vec![
        // No transform: a delete event deletes (delete.mode=hard), whatever tombstones do.
        (vec![], only_b.clone()),
        (vec![null_delete], only_b.clone()),
        (vec![("delete.mode", "soft")], soft_deleted.clone()),
        // Debezium 3.2's default mode (`tombstone`): the delete event becomes a null value.
        (unwrap(&[null_delete]), only_b.clone()),
        (unwrap(&[]), all_kept.clone()),
        (
            unwrap(&[
                null_delete,
                (
                    "transforms.unwrap.delete.tombstone.handling.mode",
                    "delete-to-tombstone",
                ),
            ]),
            only_b.clone(),
        ),
        (
            unwrap(&[
                null_delete,
                ("transforms.unwrap.delete.tombstone.handling.mode", "drop"),
            ]),
            all_kept.clone(),
        ),
        (
            unwrap(&[(
                "transforms.unwrap.delete.tombstone.handling.mode",
                "rewrite",
            )]),
            soft_deleted.clone(),
        ),
        // Soft delete, then Debezium's tombstone deletes the document.
        (
            unwrap(&[
                null_delete,
                (
                    "transforms.unwrap.delete.tombstone.handling.mode",
                    "rewrite-with-tombstone",
                ),
            ]),
            [soft(2, "b", 200, false)].into(),
        ),
        // Legacy options (Debezium before 3.2).
        (
            unwrap(&[
                null_delete,
                ("transforms.unwrap.delete.handling.mode", "none"),
            ]),
            only_b.clone(),
        ),
        (
            unwrap(&[
                null_delete,
                ("transforms.unwrap.delete.handling.mode", "none"),
                ("transforms.unwrap.drop.tombstones", "false"),
            ]),
            only_b.clone(),
        ),
        (
            unwrap(&[
                null_delete,
                ("transforms.unwrap.delete.handling.mode", "drop"),
                ("transforms.unwrap.drop.tombstones", "false"),
            ]),
            only_b.clone(),
        ),
        (
            unwrap(&[
                null_delete,
                ("transforms.unwrap.delete.handling.mode", "drop"),
            ]),
            all_kept.clone(),
        ),
        (
            unwrap(&[("transforms.unwrap.delete.handling.mode", "rewrite")]),
            soft_deleted.clone(),
        ),
    ];
    let mut files = Vec::new();
    let mut checks = Vec::new();
    for (options, expected) in cases {
        let topic = unique("it-del");
        kafka::create_topic(&topic, 1);
        kafka::produce(&topic, &records);
        let mut extra = options.clone();
        // Z's create and delete share a batch.
        extra.push(("linger.ms", "1000"));
        files.push(connector_file(
            &unique("it-del"),
            &es_connector(&topic, &servers().es, &extra),
        ));
        checks.push((topic, options, expected));
    }
    let refs: Vec<&std::path::PathBuf> = files.iter().collect();
    let w = Worker::start_with(&refs, &[]);
    for (topic, options, expected) in &checks {
        let what = format!("with {options:?}");
        es::wait_documents(topic, expected, Duration::from_secs(90), &what);
    }
    assert!(w.stop().success());
}

/// A crash between a delete and its tombstone, made deterministic on 8 partitions: row X is created and deleted; the worker stops; then come X's tombstone and X
/// created again, which a second worker writes and is killed before committing them; a third
/// worker starts from the committed offset. Had the commit landed between the delete and its
/// tombstone, the tombstone would arrive without its delete, as an unversioned delete: it would
/// remove the re-created X and push Elasticsearch's version past the re-create's, which would
/// then be refused as stale: X lost. The worker therefore never commits between the two.
#[test]
fn a_restart_between_a_delete_and_its_tombstone_never_loses_the_recreated_row() {
    const P: i32 = 8;
    let topic = unique("it-del-restart");
    kafka::create_topic(&topic, P);
    let name = unique("it-del-restart");
    let group = format!("connect-{name}");
    let file = connector_file(
        &name,
        &es_connector(
            &topic,
            &servers().es,
            // One action per bulk: no batch may merge the tombstone with the re-create.
            &[("behavior.on.null.values", "delete"), ("batch.size", "1")],
        ),
    );
    let id = |p: i32| 100 + i64::from(p);
    let first: Vec<Rec> = (0..P)
        .flat_map(|p| {
            [
                change(p, id(p), "c", 1000, None, Some(row(id(p), "first"))),
                change(p, id(p), "d", 2000, Some(row(id(p), "first")), None),
            ]
        })
        .collect();
    kafka::produce(&topic, &first);

    // 1. Create and delete, then a clean stop: the delete is written, but its offset is not
    // committed past it until its tombstone is handled too.
    let w = Worker::start(&file);
    let start = Instant::now();
    while kafka::committed(&group, &topic, P).values().sum::<i64>() < i64::from(P) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "nothing committed"
        );
        thread::sleep(Duration::from_millis(200));
    }
    es::wait_documents(&topic, &BTreeMap::new(), Duration::from_secs(30), "deleted");
    thread::sleep(Duration::from_secs(1));
    assert!(w.stop().success());
    let held: BTreeMap<i32, i64> = (0..P).map(|p| (p, 1)).collect();
    assert_eq!(
        kafka::committed(&group, &topic, P),
        held,
        "each partition's commit must stop at its delete event (offset 1), not between it and its tombstone"
    );

    // 2. The tombstone and the re-create, written by a worker that never commits (no periodic
    // commit) and is killed.
    let second: Vec<Rec> = (0..P)
        .flat_map(|p| {
            [
                tombstone(p, id(p)),
                change(p, id(p), "c", 3000, None, Some(row(id(p), "again"))),
            ]
        })
        .collect();
    kafka::produce(&topic, &second);
    let recreated: BTreeMap<String, (u64, Value)> = (0..P)
        .map(|p| (id(p).to_string(), (version(3000), row(id(p), "again"))))
        .collect();
    let w = Worker::start_with(
        &[&file],
        &[("CDC_SINK_WORKER__OFFSET_FLUSH_INTERVAL_MS", "3600000")],
    );
    es::wait_documents(&topic, &recreated, Duration::from_secs(60), "re-created");
    w.kill();
    assert_eq!(
        kafka::committed(&group, &topic, P),
        held,
        "the killed worker committed"
    );

    // 3. Restart from the committed offsets: the replay must leave every re-created row.
    let w = Worker::start(&file);
    let end = kafka::end_offsets(&topic, P);
    let start = Instant::now();
    while kafka::committed(&group, &topic, P) != end {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "replay not committed"
        );
        thread::sleep(Duration::from_millis(200));
    }
    es::wait_documents(
        &topic,
        &recreated,
        Duration::from_secs(30),
        "after the replay",
    );
    assert!(w.stop().success());
}

/// A delete event is remembered for its tombstone within the assignment it was read in. Here
/// the partition moves to another member between a delete and its tombstone, that member writes
/// the row created again and commits, and the partition comes back: the next delete event of
/// the row is gone (compacted away, leaving its tombstone), so the tombstone has no delete
/// event before it in this assignment. It must delete the row, unversioned; taking the first
/// delete's version, it was answered 409 below the re-created row's version and counted as
/// written while the row stayed.
#[test]
fn a_tombstone_never_takes_the_version_of_a_delete_read_before_its_partition_moved() {
    use crate::support::wait_until;
    use rdkafka::consumer::{CommitMode, Consumer as _};
    use rdkafka::{Offset, TopicPartitionList};
    let topic = unique("it-del-moved");
    kafka::create_topic(&topic, 1);
    let name = unique("it-del-moved");
    let group = format!("connect-{name}");
    let file = connector_file(
        &name,
        &es_connector(
            &topic,
            &servers().es,
            &[("behavior.on.null.values", "delete"), ("batch.size", "1")],
        ),
    );
    kafka::produce(
        &topic,
        &[
            change(0, 7, "c", 1000, None, Some(row(7, "first"))),
            change(0, 7, "d", 2000, Some(row(7, "first")), None),
        ],
    );
    let w = Worker::start(&file);
    // The delete written, its offset held until its tombstone is handled.
    es::wait_documents(&topic, &BTreeMap::new(), Duration::from_secs(60), "deleted");
    let held = BTreeMap::from([(0, 1)]);
    wait_until(Duration::from_secs(60), "committed at the delete", || {
        (kafka::committed(&group, &topic, 1) == held).then_some(())
    });
    // Another member, first in the range assignor's order of member ids (the worker's start
    // with `connector-consumer-`), takes the partition.
    let other = kafka::member_as(&group, &topic, 6000, "a-next-owner");
    kafka::wait_assigned(&other);
    // The second delete event of the row is not there: compacted away, its tombstone kept.
    kafka::produce(
        &topic,
        &[
            tombstone(0, 7),
            change(0, 7, "c", 3000, None, Some(row(7, "again"))),
            tombstone(0, 7),
        ],
    );
    // The other member's work: offsets 1-3, the row created again at its version.
    es::put_versioned(&topic, "7", &row(7, "again"), version(3000));
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(4))
        .unwrap();
    other.commit(&tpl, CommitMode::Sync).expect("committing");
    drop(other);
    // The partition back: the tombstone deletes the row.
    let end = kafka::end_offsets(&topic, 1);
    assert_eq!(end, BTreeMap::from([(0, 5)]));
    wait_until(Duration::from_secs(60), "committed to the end", || {
        (kafka::committed(&group, &topic, 1) == end).then_some(())
    });
    es::wait_documents(
        &topic,
        &BTreeMap::new(),
        Duration::from_secs(10),
        "the row deleted by the last tombstone",
    );
    assert!(w.stop().success());
}

/// Nor does a remembered delete event outlast a record of its partition the task passed over
/// (`errors.tolerance=all`) that may be a delete of the same row. Here the row is deleted,
/// created again (as by a second producer of the topic, before the first delete's tombstone),
/// and deleted again by an event that cannot be read, which is tolerated; its tombstone
/// follows. That tombstone must delete the row, unversioned; taking the first delete's version,
/// it was answered 409 below the re-created row's version and counted as written while the row
/// stayed. When the record passed over is another row's, or an update of the row that cannot be
/// versioned (read whole, so no delete), the tombstone still takes the first delete's version,
/// and the row created again after that delete stays, at its own version: forgetting the delete
/// there made the tombstone delete a newer row.
#[test]
fn a_tombstone_never_takes_the_version_of_a_delete_before_a_record_of_its_row_passed_over() {
    let unreadable = |id: i64| Rec {
        partition: 0,
        key: Some(json!({ "id": id }).to_string()),
        value: Some("{not json".into()),
    };
    // An update whose binlog file name has no number: it decodes, and cannot be versioned.
    let mut unversioned = change(
        0,
        7,
        "u",
        3500,
        Some(row(7, "again")),
        Some(row(7, "later")),
    );
    unversioned.value = unversioned
        .value
        .map(|v| v.replace("\"mysql-bin.000001\"", "\"mysql-bin\""));
    let stays = BTreeMap::from([("7".to_string(), (version(3000), row(7, "again")))]);
    let mut files = Vec::new();
    let mut checks = Vec::new();
    for (what, passed_over, left) in [
        ("row 7's unreadable delete", unreadable(7), BTreeMap::new()),
        ("row 9's unreadable record", unreadable(9), stays.clone()),
        (
            "row 7's update that cannot be versioned",
            unversioned,
            stays,
        ),
    ] {
        let topic = unique("it-del-passed");
        kafka::create_topic(&topic, 1);
        let name = unique("it-del-passed");
        files.push(connector_file(
            &name,
            &es_connector(
                &topic,
                &servers().es,
                &[
                    ("behavior.on.null.values", "delete"),
                    ("errors.tolerance", "all"),
                    ("errors.log.enable", "true"),
                    ("batch.size", "1"),
                ],
            ),
        ));
        kafka::produce(
            &topic,
            &[
                change(0, 7, "c", 1000, None, Some(row(7, "first"))),
                change(0, 7, "d", 2000, Some(row(7, "first")), None),
                change(0, 7, "c", 3000, None, Some(row(7, "again"))),
                passed_over,
                tombstone(0, 7),
            ],
        );
        checks.push((topic, format!("connect-{name}"), what, left));
    }
    let refs: Vec<&std::path::PathBuf> = files.iter().collect();
    let w = Worker::start_with(&refs, &[]);
    let end = BTreeMap::from([(0, 5)]);
    for (topic, group, what, left) in &checks {
        crate::support::wait_until(Duration::from_secs(60), "committed to the end", || {
            (kafka::committed(group, topic, 1) == end).then_some(())
        });
        es::wait_documents(
            topic,
            left,
            Duration::from_secs(10),
            &format!("{what} passed over, then the tombstone"),
        );
    }
    // The update was passed over for the reason expected, not another.
    assert!(
        w.log_text().contains("cannot version the change"),
        "no update refused for its version"
    );
    assert!(w.stop().success());
}

/// A tombstone whose delete event the task never read (a compacted topic, where compaction
/// left only the tombstone) is an unversioned delete; so is every delete with
/// `version.source=none`. Elasticsearch does not create an index for an unversioned delete and
/// answers it 404 `index_not_found_exception` when it comes first for its index: nothing to
/// delete, so the write is done and the task goes on past it to commit every offset.
#[test]
fn an_unversioned_delete_first_in_a_missing_index_is_done_and_the_task_goes_on() {
    type Options = &'static [(&'static str, &'static str)];
    let cases: [(Options, Vec<Rec>, u64); 2] = [
        (
            &[("behavior.on.null.values", "delete")],
            vec![
                tombstone(0, 5),
                change(0, 6, "c", 100, None, Some(row(6, "f"))),
            ],
            version(100),
        ),
        (
            &[("version.source", "none")],
            vec![
                change(0, 5, "d", 100, Some(row(5, "e")), None),
                change(0, 6, "c", 200, None, Some(row(6, "f"))),
            ],
            // Elasticsearch's own version of a document written once.
            1,
        ),
    ];
    let mut files = Vec::new();
    let mut checks = Vec::new();
    for (options, records, v) in cases {
        let topic = unique("it-del-first");
        kafka::create_topic(&topic, 1);
        kafka::produce(&topic, &records);
        let name = unique("it-del-first");
        files.push(connector_file(
            &name,
            &es_connector(&topic, &servers().es, options),
        ));
        checks.push((topic, name, v));
    }
    let refs: Vec<&std::path::PathBuf> = files.iter().collect();
    let w = Worker::start_with(&refs, &[]);
    for (topic, name, v) in &checks {
        let start = Instant::now();
        let end = kafka::end_offsets(topic, 1);
        while kafka::committed(&format!("connect-{name}"), topic, 1) != end {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{topic}: not committed to its end; the task stopped at the delete"
            );
            thread::sleep(Duration::from_millis(200));
        }
        let expected: BTreeMap<_, _> = [("6".to_string(), (*v, row(6, "f")))].into();
        es::wait_documents(topic, &expected, Duration::from_secs(30), topic);
    }
    assert!(w.stop().success());
}
