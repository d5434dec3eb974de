//! Elasticsearch misbehaving: a third of the requests and items failing with 429/503, slow and
//! dropped responses, answers without items, then no Elasticsearch at all for 30 s or more. The index still ends as the source
//! table, every offset is committed, and memory stays bounded while it is down.

use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::committed::{self, assert_versions};
use crate::support::history::{self, Options};
use crate::support::kafka;
use crate::support::proxy::{Faults, Proxy};
use crate::support::worker::Worker;
use crate::support::{servers, start_es_worker, unique, wait_converged};
use serde_json::Value;

#[test]
fn failing_and_unreachable_elasticsearch_still_converges_with_bounded_memory() {
    let h = history::generate(31, &Options::default());
    let topic = unique("it-faults");
    kafka::create_topic(&topic, 4);
    let proxy = Proxy::start(&servers().es);
    proxy.set_faults(Faults {
        request_429: 15,
        request_503: 15,
        item_429: 20,
        slow: 5,
        slow_ms: 300,
        drop_after_forward: 5,
        empty_200: 5,
        ..Faults::default()
    });
    let (first, rest) = h.records.split_at(h.records.len() * 2 / 5);
    kafka::produce(&topic, first);
    let (mut w, group) = start_es_worker(
        "it-faults",
        &topic,
        &proxy.url,
        &[
            ("behavior.on.null.values", "delete"),
            ("batch.size", "300"),
            ("max.buffered.records", "2000"),
            ("retry.backoff.ms", "20"),
            ("max.retry.backoff.ms", "500"),
            ("read.timeout.ms", "5000"),
        ],
    );
    thread::sleep(Duration::from_secs(3));

    // Elasticsearch unreachable while the rest of the history arrives: for 30 s at least, and
    // until the task has read nothing for 10 s (paused at max.buffered.records, or at the
    // history's end), however long a busy machine takes to get there. The committed offsets may
    // not run ahead of what Elasticsearch holds meanwhile.
    let watch = committed::watch(&topic, &topic, 4, &group, &h.log);
    proxy.refuse();
    kafka::produce(&topic, rest);
    let connector = group.trim_start_matches("connect-");
    let url = w.rest_url();
    let consumed = || {
        crate::support::rest::metric(
            &crate::support::rest::metrics(&url),
            "cdc_sink_records_consumed_total",
            &[("connector", connector)],
        )
    };
    let start = Instant::now();
    // (RSS in KiB, records read so far), every 0.5 s.
    let mut samples: Vec<(u64, Option<f64>)> = Vec::new();
    let still = 20;
    while start.elapsed() < Duration::from_secs(30)
        || samples.len() < still
        || samples[samples.len() - still..]
            .iter()
            .any(|s| s.1 != samples[samples.len() - 1].1)
    {
        assert!(
            start.elapsed() < Duration::from_secs(150),
            "the task never stopped reading while Elasticsearch was down: {samples:?}"
        );
        samples.extend(w.rss_kib().map(|kib| (kib, consumed())));
        thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "Elasticsearch down for {:?}, the task reading nothing in its last {} samples",
        start.elapsed(),
        samples
            .iter()
            .rev()
            .take_while(|s| s.1 == samples[samples.len() - 1].1)
            .count()
    );
    let committed_while_down = kafka::committed(&group, &topic, 4);
    w.wait_log("Elasticsearch unreachable", Duration::from_secs(5));
    proxy.resume();

    wait_converged(&topic, &h.expected, &group, 4, Duration::from_secs(300));
    assert!(watch.finish() > 10);
    assert_versions(&topic, &h.versions);
    assert!(
        committed_while_down.values().sum::<i64>()
            < kafka::end_offsets(&topic, 4).values().sum::<i64>(),
        "everything was committed while Elasticsearch was unreachable: {committed_while_down:?}"
    );
    let s = proxy.stats();
    let (req, failed_req) = (
        s.requests.load(Ordering::Relaxed),
        s.failed_requests.load(Ordering::Relaxed),
    );
    let (items, failed_items) = (
        s.forwarded_items.load(Ordering::Relaxed) + s.failed_items.load(Ordering::Relaxed),
        s.failed_items.load(Ordering::Relaxed),
    );
    // The faults really happened (counted by the proxy, not expected from a rate).
    assert!(
        failed_req > 0 && failed_items > 0,
        "no fault injected: {failed_req} of {req} requests, {failed_items} of {items} items"
    );
    eprintln!(
        "injected: {failed_req} of {req} requests failed, {failed_items} of {items} items failed"
    );
    // Bounded: paused at max.buffered.records, the worker stops growing while it waits. The
    // plateau is judged from when the task stopped reading: its later half against its earlier.
    let read = samples[samples.len() - 1].1;
    assert!(read.is_some(), "records read not counted: {samples:?}");
    let stopped = samples.iter().position(|s| s.1 == read).unwrap();
    let plateau: Vec<u64> = samples[stopped..].iter().map(|s| s.0).collect();
    let half = plateau.len() / 2;
    let middle = *plateau[..half].iter().max().unwrap();
    let (last, peak) = (
        *plateau[half..].iter().max().unwrap(),
        samples.iter().map(|s| s.0).max().unwrap(),
    );
    assert!(
        peak < 256 * 1024,
        "RSS reached {peak} KiB while Elasticsearch was down"
    );
    assert!(
        last < middle + 16 * 1024,
        "RSS still growing while Elasticsearch was down: {middle} KiB, then {last} KiB (samples every 0.5 s of RSS and records read: {samples:?})"
    );
    assert!(w.stop().success());
}

/// Elasticsearch answering every bulk after 5 s, longer than `read.timeout.ms`: the sink must
/// wait longer after a timeout instead of resending the same bulk at the same pace (each copy
/// is executed by Elasticsearch), and it converges.
#[test]
fn a_slow_elasticsearch_is_waited_for_not_flooded_with_copies() {
    let h = history::generate(
        33,
        &Options {
            changes: 2_000,
            keys: 200,
            ..Options::default()
        },
    );
    let topic = unique("it-slow");
    kafka::create_topic(&topic, 4);
    let proxy = Proxy::start(&servers().es);
    proxy.set_faults(Faults {
        slow: 100,
        slow_ms: 5_000,
        ..Faults::default()
    });
    kafka::produce(&topic, &h.records);
    let (w, group) = start_es_worker(
        "it-slow",
        &topic,
        &proxy.url,
        &[
            ("behavior.on.null.values", "delete"),
            ("read.timeout.ms", "2000"),
            ("retry.backoff.ms", "50"),
            ("max.retry.backoff.ms", "200"),
            ("max.in.flight.requests", "2"),
            // Everything fits in one bulk per lane.
            ("batch.size", "5000"),
            ("linger.ms", "2000"),
        ],
    );
    wait_converged(&topic, &h.expected, &group, 4, Duration::from_secs(180));
    assert_versions(&topic, &h.versions);
    let requests = proxy.stats().requests.load(Ordering::Relaxed);
    eprintln!("{requests} bulk requests reached the slow Elasticsearch");
    // Two lanes, each: a first try and a few retries while the wait grows (2 s, 4 s, 8 s).
    assert!(
        requests <= 12,
        "{requests} bulk requests for two lanes' batches: resent at the same pace"
    );
    assert!(w.stop().success());
}

/// Two nodes in `connection.url`, taken in turn; one of them stops answering halfway. Its
/// requests fail and are retried on the other, and the index still ends as the source table,
/// with every version and offset where it must be.
#[test]
fn requests_go_to_each_url_in_turn_and_a_node_that_goes_down_is_gone_around() {
    let h = history::generate(
        35,
        &Options {
            changes: 3_000,
            keys: 300,
            ..Options::default()
        },
    );
    let topic = unique("it-nodes");
    kafka::create_topic(&topic, 4);
    let (a, b) = (Proxy::start(&servers().es), Proxy::start(&servers().es));
    let (first, rest) = h.records.split_at(h.records.len() / 2);
    kafka::produce(&topic, first);
    let (w, group) = start_es_worker(
        "it-nodes",
        &topic,
        &format!("{},{}", a.url, b.url),
        &[
            ("behavior.on.null.values", "delete"),
            ("batch.size", "100"),
            ("retry.backoff.ms", "20"),
            ("max.retry.backoff.ms", "200"),
        ],
    );
    let requests = |p: &Proxy| p.stats().requests.load(Ordering::Relaxed);
    let t0 = Instant::now();
    while requests(&a) == 0 || requests(&b) == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "not both nodes asked: {} and {} requests",
            requests(&a),
            requests(&b)
        );
        thread::sleep(Duration::from_millis(20));
    }
    b.refuse();
    kafka::produce(&topic, rest);
    wait_converged(&topic, &h.expected, &group, 4, Duration::from_secs(180));
    assert_versions(&topic, &h.versions);
    assert!(w.stop().success());
}

/// Partitions lost while Elasticsearch is down: the task was stopped (SIGSTOP) past its
/// session timeout, so the group gave its partition to another member, which wrote the record
/// the task still held (and a newer state of its document) and committed past it. The task's
/// own write of that record, still retrying, must never land after the new owner's: with
/// `version.source=none` it would put the older state back. After the loss the task starts over
/// from the committed offsets, its unfinished writes dropped.
#[test]
fn writes_of_lost_partitions_never_land_after_the_next_owners() {
    lost_while_stopped(false);
}

/// As above, with Elasticsearch answering again by the time the task wakes up: the write's
/// backoff ran out while the process stood still, and it must not be sent before the consumer
/// has learnt that its partition is gone (`src/sink/elasticsearch/stall.rs`).
#[test]
fn a_write_retrying_when_the_process_stopped_is_not_sent_on_waking_before_the_loss_is_known() {
    lost_while_stopped(true);
}

fn lost_while_stopped(elasticsearch_back_on_waking: bool) {
    use crate::support::es;
    use serde_json::json;
    let topic = unique("it-lost");
    kafka::create_topic(&topic, 1);
    let rec = |id: i64, name: &str| created(0, id, name);
    // Elasticsearch down on waking: retries back to back, so that a write left retrying after
    // the loss is sent again at once. Back on waking: retries a few hundred milliseconds apart,
    // so that the process can be stopped while the write waits for its next attempt, not while
    // an attempt is on its way out (`stop_within_a_backoff`).
    let backoff = match elasticsearch_back_on_waking {
        false => ("5", "10"),
        true => ("200", "400"),
    };
    let proxy = Proxy::start(&servers().es);
    let (w, group) = start_es_worker(
        "it-lost",
        &topic,
        &proxy.url,
        &[
            ("version.source", "none"),
            // One lane: the writes go out in the order they were read.
            ("max.in.flight.requests", "1"),
            ("retry.backoff.ms", backoff.0),
            ("max.retry.backoff.ms", backoff.1),
        ],
    );
    written_then_retrying(
        &topic,
        &proxy,
        || kafka::produce(&topic, &[rec(0, "first")]),
        || kafka::produce(&topic, &[rec(1, "old")]),
    );
    if elasticsearch_back_on_waking {
        stop_within_a_backoff(&w, &proxy, Duration::from_millis(200));
    } else {
        signal(&w, "-STOP");
    }
    // Another member takes the partition once the task's session has expired, writes a newer
    // state of document 1 and commits past record 1.
    take_over(&group, &topic, 2, || {
        es::put_document(&topic, "1", &json!({"id": 1, "name": "new"}))
    });
    // The task wakes up and finds its partition lost, Elasticsearch still down or already
    // back; then a newer record follows.
    let new = Some(&(1, json!({"id": 1, "name": "new"})));
    if elasticsearch_back_on_waking {
        proxy.set_faults(Faults::default());
    }
    signal(&w, "-CONT");
    until_given_up(&w, &topic, new, Duration::from_secs(60));
    proxy.set_faults(Faults::default());
    kafka::produce(&topic, &[rec(2, "later")]);
    crate::support::wait_until(Duration::from_secs(90), "record 2 written", || {
        es::sources(&topic).contains_key("2").then_some(())
    });
    kept_and_committed(&w, &topic, &group, new);
    assert!(w.stop().success());
}

/// The hold after a stall lasts until the task has polled its consumer, not only its first
/// seconds: here the task thread is waiting on a slow schema registry when the process stops,
/// and is still waiting when the hold's seconds are up, so the loss librdkafka found on waking
/// is not acted on yet. Elasticsearch answers again by then; the write retrying since before
/// the stop must still wait, and be given up once the task polls (`src/sink/elasticsearch/stall.rs`).
#[test]
fn a_write_held_after_a_stall_waits_until_the_task_has_polled_its_consumer() {
    use crate::support::avro;
    use crate::support::es;
    use crate::support::kafka::Rec;
    use crate::support::registry::Registry;
    use serde_json::json;
    let topic = unique("it-stall-poll");
    kafka::create_topic(&topic, 1);
    let registry = Registry::start();
    // Debezium JSON with schema, turned into Avro below.
    let rec = |id: i64, name: &str| {
        Rec {
        partition: 0,
        key: Some(
            json!({"schema": {"type": "struct", "name": "it.Key", "optional": false, "fields": [
                {"type": "int64", "optional": false, "field": "id"}]},
                "payload": {"id": id}})
            .to_string(),
        ),
        value: Some(
            json!({"schema": {"type": "struct", "name": "it.Envelope", "optional": false, "fields": [
                {"type": "struct", "name": "it.Value", "optional": true, "field": "before", "fields": [
                    {"type": "int64", "optional": false, "field": "id"},
                    {"type": "string", "optional": true, "field": "name"}]},
                {"type": "struct", "name": "it.Value", "optional": true, "field": "after", "fields": [
                    {"type": "int64", "optional": false, "field": "id"},
                    {"type": "string", "optional": true, "field": "name"}]},
                {"type": "struct", "name": "io.debezium.connector.postgresql.Source", "optional": false,
                 "field": "source", "fields": [
                    {"type": "string", "optional": false, "field": "connector"},
                    {"type": "string", "optional": false, "field": "db"},
                    {"type": "string", "optional": false, "field": "schema"},
                    {"type": "string", "optional": false, "field": "table"},
                    {"type": "int64", "optional": true, "field": "lsn"}]},
                {"type": "string", "optional": false, "field": "op"}]},
             "payload": {"before": null, "after": {"id": id, "name": name}, "op": "c",
                "source": {"connector": "postgresql", "db": "d", "schema": "s", "table": "t", "lsn": 100 + id}}})
            .to_string(),
        ),
    }
    };
    let mut first = avro::Encoder::new(&registry);
    let mut second = avro::Encoder::new(&registry);
    second.next_version = true;
    let proxy = Proxy::start(&servers().es);
    let mut options = vec![
        ("version.source", "none".to_string()),
        ("max.in.flight.requests", "1".into()),
        // Stopped while the write waits for its next attempt, not while one is on its way out
        // (`stop_within_a_backoff`).
        ("retry.backoff.ms", "200".into()),
        ("max.retry.backoff.ms", "400".into()),
        (
            "key.converter",
            "io.confluent.connect.avro.AvroConverter".into(),
        ),
        (
            "value.converter",
            "io.confluent.connect.avro.AvroConverter".into(),
        ),
    ];
    options.push(("key.converter.schema.registry.url", registry.url.clone()));
    options.push(("value.converter.schema.registry.url", registry.url.clone()));
    let extra: Vec<(&str, &str)> = options.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (w, group) = start_es_worker("it-stall-poll", &topic, &proxy.url, &extra);
    let first_records = first.records(&topic, &[rec(0, "first"), rec(1, "old")]);
    written_then_retrying(
        &topic,
        &proxy,
        || kafka::produce_bytes(&topic, &first_records[..1]),
        || kafka::produce_bytes(&topic, &first_records[1..]),
    );
    // Record 2 comes with new schemas, each answered 9 s after it is asked for (the worker's
    // registry client waits 10 s): the task thread waits on the registry about 18 s, without
    // polling its consumer. The process stops as soon as the first is asked for.
    registry.slow(Duration::from_secs(9));
    let fetched = |r: &Registry| (1..=8).map(|id| r.fetches(id)).sum::<usize>();
    let before = fetched(&registry);
    kafka::produce_bytes(&topic, &second.records(&topic, &[rec(2, "later")]));
    crate::support::wait_until(
        Duration::from_secs(60),
        "record 2's schema asked for",
        || (fetched(&registry) > before).then_some(()),
    );
    let asked = Instant::now();
    stop_within_a_backoff(&w, &proxy, Duration::from_millis(200));
    take_over(&group, &topic, 3, || {
        es::put_document(&topic, "1", &json!({"id": 1, "name": "new"}))
    });
    // Elasticsearch answers again before the task wakes up; it wakes with its thread still
    // waiting on the registry for several seconds more than the hold's first 3 s.
    proxy.set_faults(Faults::default());
    signal(&w, "-CONT");
    let woke = asked.elapsed();
    assert!(
        // Before the first schema's answer (9 s), which must beat the registry client's own
        // 10 s timeout; its 3 s then end well before the second's (18 s).
        woke < Duration::from_secs(9),
        "the process stopped too long ({woke:?}) for the hold's first seconds to run out \
         while the task waits on the registry"
    );
    let new = Some(&(1, json!({"id": 1, "name": "new"})));
    until_given_up(&w, &topic, new, Duration::from_secs(90));
    registry.slow(Duration::ZERO);
    kafka::produce_bytes(&topic, &first.records(&topic, &[rec(3, "last")]));
    crate::support::wait_until(Duration::from_secs(90), "record 3 written", || {
        es::sources(&topic).contains_key("3").then_some(())
    });
    kept_and_committed(&w, &topic, &group, new);
    // Record 2 was the next owner's to write, and it committed past it.
    assert_eq!(es::documents(&topic).get("2"), None);
    assert!(w.stop().success());
}

/// Document `id` created in partition `p` (schemaless JSON), at a source position growing with
/// `id`.
fn created(p: i32, id: i64, name: &str) -> crate::support::kafka::Rec {
    use serde_json::json;
    crate::support::kafka::Rec {
        partition: p,
        key: Some(json!({"id": id}).to_string()),
        value: Some(
            json!({"before": null, "after": {"id": id, "name": name}, "op": "c",
                "source": {"connector": "postgresql", "lsn": 100 + id, "db": "d", "schema": "s", "table": "t"}})
            .to_string(),
        ),
    }
}

/// Progress first: `first` produces document 0, and the task, in its group, writes it. Then
/// Elasticsearch goes down (`proxy` answers 503) and `old` produces document 1, whose write the
/// task keeps retrying.
fn written_then_retrying(topic: &str, proxy: &Proxy, first: impl FnOnce(), old: impl FnOnce()) {
    first();
    crate::support::wait_until(Duration::from_secs(60), "the first record written", || {
        crate::support::es::sources(topic)
            .contains_key("0")
            .then_some(())
    });
    proxy.set_faults(Faults {
        request_503: 100,
        ..Faults::default()
    });
    let failed = proxy.stats().failed_requests.load(Ordering::Relaxed);
    old();
    crate::support::wait_until(
        Duration::from_secs(60),
        "a failed write of record 1",
        || (proxy.stats().failed_requests.load(Ordering::Relaxed) > failed).then_some(()),
    );
}

/// [`written_then_retrying`] with JSON records: document 0 `first`, document 1 `old`.
fn first_written_then_old_retrying(topic: &str, proxy: &Proxy) {
    written_then_retrying(
        topic,
        proxy,
        || kafka::produce(topic, &[created(0, 0, "first")]),
        || kafka::produce(topic, &[created(0, 1, "old")]),
    );
}

/// Stops the worker (SIGSTOP) while its retrying write waits out its backoff (`retry.backoff.ms`,
/// `backoff`, doubling, jittered down by up to half: at least half of `backoff`), never while
/// an attempt is on its way out: such an attempt
/// goes out on waking whatever the stall clock says (the README's window of a request being
/// sent; stopped at any moment, on a busy machine that happened once in four runs of the
/// suite). The stop is sent as soon as the proxy has answered an attempt 503, and counts only
/// if it was sent well within the backoff that answer started; otherwise the process runs on
/// (too short a stop to be a stall) and the next answer is waited for.
fn stop_within_a_backoff(w: &Worker, proxy: &Proxy, backoff: Duration) {
    let answered = || *proxy.stats().answered_503.lock().unwrap();
    let start = Instant::now();
    loop {
        let before = answered();
        while answered() == before {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no write answered 503"
            );
            thread::sleep(Duration::from_millis(1));
        }
        signal(w, "-STOP");
        let stopped = Instant::now();
        let answer = answered().expect("answered");
        // The next attempt starts at least half of `backoff` after the worker read the answer,
        // itself after `answer`; the other quarter is margin for the stop to take effect.
        if stopped.duration_since(answer) < backoff / 4 && answered() == Some(answer) {
            return;
        }
        signal(w, "-CONT");
    }
}

/// Sends `sig` (`-STOP`, `-CONT`) to the worker's process.
fn signal(w: &Worker, sig: &str) {
    assert!(
        std::process::Command::new("kill")
            .args([sig, &w.pid().to_string()])
            .status()
            .unwrap()
            .success()
    );
}

/// Waits until the worker, woken after its partition was lost, has given up its writes (logged
/// once the sink has dropped them, inside the rebalance callback; the loss itself, "lost=true",
/// is logged before, and the task's consumer closes after), checking all along that document 1
/// of `topic` is still the next owner's `new`. The process must have stood still long enough
/// to count as a stall (logged by the sink's clock, or at the latest when the sink gave its
/// writes up, if the task learnt of the loss first).
fn until_given_up(w: &Worker, topic: &str, new: Option<&(u64, Value)>, timeout: Duration) {
    let t0 = Instant::now();
    while !w.log_text().contains("every unfinished write dropped") {
        document_1_kept(w, topic, new);
        assert!(t0.elapsed() < timeout, "the task never gave up its writes");
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        w.log_text().contains("the process did not run for"),
        "no stall seen"
    );
}

fn document_1_kept(w: &Worker, topic: &str, new: Option<&(u64, Value)>) {
    let docs = crate::support::es::documents(topic);
    assert_eq!(
        docs.get("1"),
        new,
        "the lost partition's old write landed after the new owner's: {docs:?}; the worker's log ends:\n{}",
        w.log_tail(40)
    );
}

/// Document 1 of `topic` is still `new`, and `group` commits the topic's one partition to its
/// end.
fn kept_and_committed(w: &Worker, topic: &str, group: &str, new: Option<&(u64, Value)>) {
    document_1_kept(w, topic, new);
    let end = kafka::end_offsets(topic, 1);
    crate::support::wait_until(Duration::from_secs(60), "committed to the end", || {
        (kafka::committed(group, topic, 1) == end).then_some(())
    });
}

/// Joins `group` as another member, once the worker's task in it has stopped (SIGSTOP) and its
/// session expired; once given partition 0 of `topic`, calls `write` (the new owner's writes)
/// and commits the partition at `offset`; then leaves.
fn take_over(group: &str, topic: &str, offset: i64, write: impl FnOnce()) {
    use rdkafka::consumer::{CommitMode, Consumer as _};
    use rdkafka::{Offset, TopicPartitionList};
    let other = kafka::member(group, topic, 3000);
    kafka::wait_assigned(&other);
    write();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(offset))
        .unwrap();
    other.commit(&tpl, CommitMode::Sync).expect("committing");
}

/// Partitions revoked while Elasticsearch is down: another member joins the group, the task's
/// writes of its partitions are still retrying when `flush.timeout.ms` runs out, and the next
/// owner writes a newer state of a document and commits past the record the task held. The
/// task must give those writes up inside the revocation (and start over from the committed
/// offsets): kept retrying, the older state lands once Elasticsearch answers.
#[test]
fn writes_of_revoked_partitions_unfinished_after_the_flush_timeout_never_land_after_the_next_owners()
 {
    use crate::support::es;
    use rdkafka::consumer::{CommitMode, Consumer as _};
    use rdkafka::{Offset, TopicPartitionList};
    use serde_json::json;
    use std::collections::BTreeMap;
    let topic = unique("it-revoked");
    kafka::create_topic(&topic, 2);
    let rec = created;
    let proxy = Proxy::start(&servers().es);
    let (w, group) = start_es_worker(
        "it-revoked",
        &topic,
        &proxy.url,
        &[
            ("version.source", "none"),
            ("max.in.flight.requests", "1"),
            ("retry.backoff.ms", "5"),
            ("max.retry.backoff.ms", "10"),
            ("flush.timeout.ms", "2000"),
        ],
    );
    // Progress first: the task holds both partitions and has written from each.
    kafka::produce(&topic, &[rec(0, 10, "first"), rec(1, 11, "first")]);
    crate::support::wait_until(Duration::from_secs(60), "the first records written", || {
        let docs = es::sources(&topic);
        (docs.contains_key("10") && docs.contains_key("11")).then_some(())
    });
    // Elasticsearch down; the task reads document p at offset 1 of partition p, and retries.
    proxy.set_faults(Faults {
        request_503: 100,
        ..Faults::default()
    });
    let failed = proxy.stats().failed_requests.load(Ordering::Relaxed);
    kafka::produce(&topic, &[rec(0, 0, "old"), rec(1, 1, "old")]);
    crate::support::wait_until(
        Duration::from_secs(60),
        "a failed write of the old records",
        || (proxy.stats().failed_requests.load(Ordering::Relaxed) > failed + 2).then_some(()),
    );
    // Another member joins: every partition is revoked from the task (the eager assignors the
    // worker's consumers use), whose writes cannot finish within flush.timeout.ms. Whatever
    // partition the member is given, it writes a newer state of that partition's document and
    // commits past the old record, while it holds the partition (a commit refused because the
    // group is rebalancing again is tried again once it holds a partition again).
    let other = kafka::member(&group, &topic, 45_000);
    // Partition → the new owner's document: (version, source).
    let mut taken: BTreeMap<i32, (u64, serde_json::Value)> = BTreeMap::new();
    let start = Instant::now();
    while taken.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the other member never committed past an old record"
        );
        let _ = other.poll(Duration::from_millis(100));
        let held: Vec<i32> = other
            .assignment()
            .map(|a| a.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default();
        for p in held {
            let new = json!({"id": p, "name": "new"});
            es::put_document(&topic, &p.to_string(), &new);
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, p, Offset::Offset(2))
                .unwrap();
            if other.commit(&tpl, CommitMode::Sync).is_ok() {
                let version = es::documents(&topic)[&p.to_string()].0;
                taken.insert(p, (version, new));
            }
        }
    }
    drop(other);
    assert!(
        w.log_text()
            .contains("writes of revoked partitions not finished within flush.timeout.ms"),
        "the revocation did not give the writes up: {}",
        w.log_text()
    );
    // Elasticsearch answers again; newer records follow in both partitions.
    proxy.set_faults(Faults::default());
    kafka::produce(&topic, &[rec(0, 20, "later"), rec(1, 21, "later")]);
    let end = kafka::end_offsets(&topic, 2);
    crate::support::wait_until(Duration::from_secs(120), "committed to the end", || {
        let docs = es::sources(&topic);
        (kafka::committed(&group, &topic, 2) == end
            && docs.contains_key("20")
            && docs.contains_key("21"))
        .then_some(())
    });
    let docs = es::documents(&topic);
    for (p, new) in &taken {
        assert_eq!(
            docs.get(&p.to_string()),
            Some(new),
            "partition {p}: the revoked task's old write landed after the next owner's: {docs:?}; the worker's log ends:\n{}",
            w.log_tail(40)
        );
    }
    assert!(w.stop().success());
}

/// The options of the tests whose write is held after a stall: unversioned, one request at a
/// time, and a worker stopped while the write waits for its next attempt (see
/// `stop_within_a_backoff`), long before `flush.timeout.ms` runs out.
const HELD: &[(&str, &str)] = &[
    ("version.source", "none"),
    ("max.in.flight.requests", "1"),
    ("retry.backoff.ms", "200"),
    ("max.retry.backoff.ms", "400"),
    ("flush.timeout.ms", "30000"),
];

/// Waits until document 1 of `topic` is written and `group` has committed its one partition to
/// the end.
fn record_1_written_and_committed(topic: &str, group: &str) {
    crate::support::wait_until(Duration::from_secs(90), "record 1 written", || {
        crate::support::es::sources(topic)
            .contains_key("1")
            .then_some(())
    });
    let end = kafka::end_offsets(topic, 1);
    crate::support::wait_until(Duration::from_secs(60), "committed to the end", || {
        (kafka::committed(group, topic, 1) == end).then_some(())
    });
}

/// A revocation served while writes are held after a stall (the process stood still for less
/// than its session, while another member joined) gives the writes of the revoked partitions
/// up at once: they wait for a poll to return, and the rebalance callback runs inside one, so
/// waiting for them would only run out `flush.timeout.ms` and hold up the group's rebalance as
/// long. The task starts over from the committed offsets, and the record is written once more.
#[test]
fn a_revocation_while_writes_are_held_after_a_stall_gives_them_up_without_waiting_the_flush_timeout()
 {
    // As in the stop test below: a run where the process stood still past its session tested
    // nothing, and is tried again on new names.
    tried_until_the_session_holds(held_revocation);
}

/// One run of the test above; false if the process stood still past its session.
fn held_revocation(attempt: u32) -> bool {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    let topic = unique("it-held-revoked");
    kafka::create_topic(&topic, 1);
    let proxy = Proxy::start(&servers().es);
    let (mut w, group) = start_es_worker("it-held-revoked", &topic, &proxy.url, HELD);
    first_written_then_old_retrying(&topic, &proxy);
    // Stopped for 1.8 s: past the stall threshold (1.25 s with the tests' 3 s session and
    // 0.5 s heartbeat), within the session. Meanwhile another member joins the group, which
    // starts a rebalance the task learns of on waking.
    stop_within_a_backoff(&w, &proxy, Duration::from_millis(200));
    let stopped = Instant::now();
    let leave = Arc::new(AtomicBool::new(false));
    let member = {
        let (group, topic, leave) = (group.clone(), topic.clone(), leave.clone());
        thread::spawn(move || {
            let other = kafka::member(&group, &topic, 10_000);
            while !leave.load(Ordering::SeqCst) {
                let _ = other.poll(Duration::from_millis(100));
            }
        })
    };
    crate::support::wait_until(Duration::from_secs(10), "the group rebalancing", || {
        (kafka::group_state(&group) == "PreparingRebalance").then_some(())
    });
    assert!(
        stopped.elapsed() < Duration::from_millis(1700),
        "the other member took {:?} to join: the task's session may expire before it wakes",
        stopped.elapsed()
    );
    thread::sleep(Duration::from_millis(1800).saturating_sub(stopped.elapsed()));
    proxy.set_faults(Faults::default());
    signal(&w, "-CONT");
    let woke = Instant::now();
    // The give-up, well before flush.timeout.ms (30 s) would have run out.
    let revoked =
        crate::support::wait_until(Duration::from_secs(15), "the held writes given up", || {
            let log = w.log_text();
            if log.contains("writes of revoked partitions held since the process stood still") {
                Some(true)
            } else {
                stood_past_the_session(&log).map(|_| false)
            }
        });
    let given_up = woke.elapsed();
    if !revoked {
        let still = stood_past_the_session(&w.log_text()).unwrap_or_default();
        eprintln!("attempt {attempt}: the process stood still {still} ms, past its session");
        leave.store(true, Ordering::SeqCst);
        member.join().unwrap();
        assert!(w.stop().success());
        return false;
    }
    assert!(
        !w.log_text().contains("lost=true"),
        "the partition was lost, not revoked: {}",
        w.log_tail(40)
    );
    assert!(
        w.log_text().contains("the process did not run for"),
        "no stall seen"
    );
    // Counted for the task in /metrics (the connector's only task: task 0).
    let connector = group.trim_start_matches("connect-");
    let stalls = crate::support::rest::metric(
        &crate::support::rest::metrics(&w.rest_url()),
        "cdc_sink_stalls_total",
        &[("connector", connector), ("task", "0")],
    );
    assert!(stalls >= Some(1.0), "stalls counted: {stalls:?}");
    leave.store(true, Ordering::SeqCst);
    member.join().unwrap();
    // Whoever read it last, record 1 ends written and the partition committed to its end.
    record_1_written_and_committed(&topic, &group);
    eprintln!("held writes given up {given_up:?} after waking");
    assert!(w.stop().success());
    true
}

/// A stop asked for while writes are held after a stall (SIGTERM within the hold) gives them
/// up at once: they wait for a poll of the consumer that the stopping task never makes, and
/// the group may have moved on while the process stood still. The record is not committed,
/// and the next start writes it.
#[test]
fn a_stop_while_writes_are_held_after_a_stall_gives_them_up_without_waiting_the_flush_timeout() {
    // A loaded machine can keep the process still for longer than asked (2.9 s for 1.8 s once,
    // in a suite run): past the 3 s session, the task takes the "partitions lost" path, which
    // is right but not what is tested here. Such a run is tried again, on new names.
    tried_until_the_session_holds(held_stop);
}

/// One run of the test above; false if the process stood still past its session (the run
/// tested nothing, and is to be tried again).
fn held_stop(attempt: u32) -> bool {
    use crate::support::es_connector;
    use crate::support::worker::connector_file;
    let topic = unique("it-held-stop");
    kafka::create_topic(&topic, 1);
    let proxy = Proxy::start(&servers().es);
    let name = unique("it-held-stop");
    let file = connector_file(&name, &es_connector(&topic, &proxy.url, HELD));
    let group = format!("connect-{name}");
    let mut w = Worker::start(&file);
    first_written_then_old_retrying(&topic, &proxy);
    // Stopped for 1.8 s: past the stall threshold (1.25 s with the tests' 3 s session and
    // 0.5 s heartbeat), within the session. Elasticsearch answers again, and the stop is
    // asked for as the process wakes: within the 3 s hold.
    stop_within_a_backoff(&w, &proxy, Duration::from_millis(200));
    thread::sleep(Duration::from_millis(1800));
    proxy.set_faults(Faults::default());
    signal(&w, "-TERM");
    let woke = Instant::now();
    signal(&w, "-CONT");
    let status =
        crate::support::wait_until(Duration::from_secs(60), "the worker exiting", || w.exited());
    let took = woke.elapsed();
    assert!(status.success(), "{}", w.log_tail(40));
    let log = w.log_text();
    assert!(log.contains("the process did not run for"), "no stall seen");
    if let Some(still) = stood_past_the_session(&log) {
        eprintln!("attempt {attempt}: the process stood still {still} ms, past its session");
        return false;
    }
    assert!(
        log.contains("given up as the task ends"),
        "the held writes were not given up: {}",
        w.log_tail(40)
    );
    // Well before flush.timeout.ms (30 s) would have run out.
    assert!(
        took < Duration::from_secs(10),
        "the worker took {took:?} to stop: {}",
        w.log_tail(40)
    );
    // Record 1 neither written nor committed past.
    assert!(!crate::support::es::sources(&topic).contains_key("1"));
    assert_eq!(kafka::committed(&group, &topic, 1), [(0, 1)].into());
    // The next start writes it, and commits to the end.
    let w = Worker::start(&file);
    record_1_written_and_committed(&topic, &group);
    eprintln!("stopped {took:?} after waking");
    assert!(w.stop().success());
    true
}

/// Runs `run` (given its attempt's number) until it returns true, up to three times: false
/// is a run where the process stood still past its session (`stood_past_the_session`).
fn tried_until_the_session_holds(run: fn(u32) -> bool) {
    if !(1..=3).any(run) {
        panic!("the session expired during the stop in all three attempts");
    }
}

/// How long (ms) the worker's log says the process stood still, if that was long enough to
/// outlast the tests' 3 s session (2.5 s: the last heartbeat may have gone out up to one 0.5 s
/// heartbeat interval before the stop) and the task then found its partitions lost.
fn stood_past_the_session(log: &str) -> Option<u64> {
    let longest = log
        .split("the process did not run for ")
        .skip(1)
        .filter_map(|rest| rest.split(' ').next()?.parse().ok())
        .max()?;
    (longest >= 2500 && log.contains("partitions lost")).then_some(longest)
}

/// What the task relies on above, on the sink alone: once `abandon` returns, a write that was
/// retrying behind a failing Elasticsearch is never sent again, even when Elasticsearch
/// answers, and its record is never acknowledged.
#[test]
fn an_abandoned_sink_never_sends_its_retrying_write_again() {
    use cdc_sink::decode::Decoder;
    use cdc_sink::sink::{Sink as _, SinkError};
    use serde_json::json;

    use crate::support::{es, sink as direct};
    let index = unique("it-abandon");
    let proxy = Proxy::start(&servers().es);
    proxy.set_faults(Faults {
        request_503: 100,
        ..Faults::default()
    });
    let spec = direct::spec(
        &index,
        json!({"connector.class": "elasticsearch", "connection.url": proxy.url, "topics": index,
            "version.source": "none", "retry.backoff.ms": "10", "max.retry.backoff.ms": "20"}),
    );
    let (mut sink, _rt) = direct::elasticsearch(&spec);
    let mut decoder = Decoder::new(&spec).unwrap();
    let (key, value) = direct::created(&mut decoder, &index, 1, json!("old"));
    let record = direct::record(&index, 0, &key, &value);
    let ack = direct::ack(0);
    sink.put(record, ack).unwrap();
    sink.flush();
    let failed = || proxy.stats().failed_requests.load(Ordering::Relaxed);
    let t0 = Instant::now();
    while failed() < 3 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the write was never retried"
        );
        assert_eq!(sink.poll(Duration::from_millis(5)), Ok(vec![]));
    }
    assert_eq!(sink.abandon(), "every unfinished write dropped");
    // A request already on the wire when the sink gave up cannot be called back: it is
    // answered (503) first. 200 ms is ten retry backoffs.
    thread::sleep(Duration::from_millis(200));
    let requests = || proxy.stats().requests.load(Ordering::Relaxed);
    let before = requests();
    // Fifty retry backoffs, Elasticsearch still failing, then as many with it answering: a
    // write still retrying would have been sent again many times, and written.
    for answering in [false, true] {
        if answering {
            proxy.set_faults(Faults::default());
        }
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(1) {
            assert_eq!(
                sink.poll(Duration::ZERO),
                Ok(vec![]),
                "an abandoned write was acknowledged"
            );
            thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(requests(), before, "the abandoned write was sent again");
    }
    assert!(matches!(sink.put(record, ack), Err(SinkError::Rewind(_))));
    assert_eq!(es::sources(&index), Default::default());
}

/// With `behavior.on.malformed.documents=warn` a batch keeps every write of a document. One
/// PostgreSQL transaction deletes row 1 and inserts it again: both changes share a version
/// (docs/versions.md) and one batch. Elasticsearch refuses the delete (429) and takes the insert:
/// the retry must send the insert again after the delete, or the delete, equal in version,
/// lands last and the live row is gone from the index.
#[test]
fn a_retried_write_is_followed_again_by_the_later_writes_of_its_document() {
    use crate::support::es;
    use crate::support::kafka::Rec;
    use serde_json::{Value, json};
    let topic = unique("it-retry-order");
    kafka::create_topic(&topic, 1);
    let change = |op: &str, name: &str, last_commit: u64, lsn: u64| {
        let row = json!({"id": 1, "name": name});
        let (before, after) = if op == "d" {
            (row, Value::Null)
        } else {
            (Value::Null, row)
        };
        Rec {
            partition: 0,
            key: Some(json!({"id": 1}).to_string()),
            value: Some(
                json!({"before": before, "after": after, "op": op,
                    "source": {"connector": "postgresql", "lsn": lsn,
                        "sequence": format!("[\"{last_commit}\",\"{lsn}\"]"),
                        "db": "d", "schema": "s", "table": "t"}})
                .to_string(),
            ),
        }
    };
    let proxy = Proxy::start(&servers().es);
    let (w, group) = start_es_worker(
        "it-retry-order",
        &topic,
        &proxy.url,
        &[
            ("behavior.on.malformed.documents", "warn"),
            // The delete and the insert in one batch.
            ("linger.ms", "1000"),
            ("retry.backoff.ms", "20"),
        ],
    );
    kafka::produce(&topic, &[change("c", "first", 100, 150)]);
    let first: std::collections::BTreeMap<_, _> =
        [("1".to_string(), (401, json!({"id": 1, "name": "first"})))].into();
    es::wait_documents(&topic, &first, Duration::from_secs(60), "the first insert");
    proxy.set_faults(Faults {
        first_item_429: 1,
        ..Faults::default()
    });
    kafka::produce(
        &topic,
        &[
            change("d", "first", 200, 250),
            change("c", "again", 200, 260),
        ],
    );
    let end = kafka::end_offsets(&topic, 1);
    crate::support::wait_until(Duration::from_secs(60), "committed to the end", || {
        (kafka::committed(&group, &topic, 1) == end).then_some(())
    });
    assert_eq!(
        proxy.stats().failed_items.load(Ordering::Relaxed),
        1,
        "the delete was not refused once"
    );
    let again: std::collections::BTreeMap<_, _> =
        [("1".to_string(), (801, json!({"id": 1, "name": "again"})))].into();
    assert_eq!(es::documents(&topic), again);
    assert!(w.stop().success());
}

/// A node whose connections never open (its accept queue full, so that its SYNs go unanswered:
/// neither open nor refused) is given `connection.timeout.ms`, not a response's
/// `read.timeout.ms`: its requests fail as connection failures, counted as `transport` retries,
/// never as timeouts (which say Elasticsearch may still be executing the request, and double the
/// wait of later ones), and the other node of `connection.url` writes everything.
#[test]
fn a_node_whose_connections_never_open_fails_within_the_connection_timeout() {
    use std::os::fd::AsRawFd;
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    // Linux takes a second listen() as a new backlog: 0 holds one connection, made here, and
    // drops the SYNs after it.
    assert_eq!(unsafe { libc::listen(hole.as_raw_fd(), 0) }, 0);
    let addr = hole.local_addr().unwrap();
    let _held = std::net::TcpStream::connect(addr).unwrap();
    let probe = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300));
    assert_eq!(
        probe.map(|_| ()).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::TimedOut),
        "a connection to the full listener must hang"
    );

    let topic = unique("it-hole");
    two_hundred_rows(&topic);
    // The hole first in the round robin; the tests' read.timeout.ms (30 s) stays, so that a slow
    // answer of the real node is no timeout either.
    let urls = format!("http://{addr},{}", servers().es);
    let (mut w, group) = start_es_worker(
        "it-hole",
        &topic,
        &urls,
        &[("connection.timeout.ms", "500"), ("batch.size", "20")],
    );
    all_two_hundred_written(&group, &topic);
    let metrics = crate::support::rest::metrics(&w.rest_url());
    let connector = group.trim_start_matches("connect-");
    let retries = |reason: &str| {
        crate::support::rest::metric(
            &metrics,
            "cdc_sink_retries_total",
            &[("connector", connector), ("reason", reason)],
        )
        .unwrap_or(0.0)
    };
    assert!(
        retries("transport") >= 1.0,
        "no request went to the hole:\n{metrics}"
    );
    assert_eq!(
        retries("timeout"),
        0.0,
        "a connection that never opened was taken for a late response"
    );
    assert!(w.stop().success());
}

/// Topic `topic` with one partition holding 200 created rows (ids 0 to 199), for the tests of
/// nodes that fail.
fn two_hundred_rows(topic: &str) {
    kafka::create_topic(topic, 1);
    let recs: Vec<kafka::Rec> = (0..200)
        .map(|id| kafka::Rec {
            partition: 0,
            key: Some(serde_json::json!({ "id": id }).to_string()),
            value: Some(
                serde_json::json!({"before": null, "after": {"id": id, "name": format!("n{id}")},
                    "op": "c", "source": {"connector": "postgresql", "lsn": 1000 + id,
                    "db": "d", "schema": "s", "table": "t", "ts_ms": 1}})
                .to_string(),
            ),
        })
        .collect();
    kafka::produce(topic, &recs);
}

/// Waits until `group` committed the 200 rows of [`two_hundred_rows`], and checks that the
/// index holds 200 documents.
fn all_two_hundred_written(group: &str, topic: &str) {
    crate::support::wait_until(Duration::from_secs(120), "every offset committed", || {
        (kafka::committed(group, topic, 1).get(&0) == Some(&200)).then_some(())
    });
    assert_eq!(crate::support::es::sources(topic).len(), 200);
}

/// A node of `connection.url` that gives no response is left out of the round robin after its
/// first failure (a minute at first, longer after each failure in a row, as the Elasticsearch
/// Java client leaves a host out), so the other nodes take its requests without each of its
/// turns failing first. Here a listener that closes every connection it accepts comes first:
/// of the requests for 200 records in batches of 20, one at a time, only the first reaches it.
#[test]
fn a_node_that_gives_no_response_is_left_out_after_its_first_failure() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    let closer = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    closer.set_nonblocking(true).unwrap();
    let addr = closer.local_addr().unwrap();
    let (accepted, done) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let closing = {
        let (accepted, done) = (accepted.clone(), done.clone());
        thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                match closer.accept() {
                    // Closed at once, unanswered.
                    Ok((connection, _)) => {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        drop(connection);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        })
    };

    let topic = unique("it-closer");
    two_hundred_rows(&topic);
    let urls = format!("http://{addr},{}", servers().es);
    let (w, group) = start_es_worker(
        "it-closer",
        &topic,
        &urls,
        &[("batch.size", "20"), ("max.in.flight.requests", "1")],
    );
    all_two_hundred_written(&group, &topic);
    done.store(true, Ordering::Relaxed);
    closing.join().unwrap();
    assert_eq!(
        accepted.load(Ordering::Relaxed),
        1,
        "the node that closes its connections kept its turn:\n{}",
        w.log_text()
    );
    assert!(
        w.log_text().contains("left out of the round robin for 60s"),
        "{}",
        w.log_text()
    );
    assert!(w.stop().success());
}
