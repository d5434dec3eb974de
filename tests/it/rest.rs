//! The REST API: task lifecycle (FAILED → restart, pause, stop, offsets) on the real servers;
//! connectors kept across a crash of a standalone worker.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::kafka::{self, Rec};
use crate::support::rest::{WAIT, call, rest_worker, state_dir, states, wait_for, wait_state};
use crate::support::worker::Worker;
use crate::support::{es, es_connector, servers, unique};

/// A Debezium change event for row `id` (PostgreSQL, streamed).
fn change(id: i64, extra: Option<(&str, i64)>) -> Rec {
    let mut after = json!({"id": id, "name": format!("n{id}")});
    if let Some((k, v)) = extra {
        after[k] = json!(v);
    }
    let payload = json!({"before": null, "after": after,
        "source": {"connector": "postgresql", "lsn": 1000 + id, "db": "d", "schema": "s", "table": "t"}, "op": "c"});
    Rec {
        partition: 0,
        key: Some(json!({"id": id}).to_string()),
        value: Some(payload.to_string()),
    }
}

/// A Debezium delete event of row `id`, after its `change`.
fn delete_of(id: i64) -> Rec {
    let payload = json!({"before": {"id": id, "name": format!("n{id}")}, "after": null,
        "source": {"connector": "postgresql", "lsn": 2000 + id, "db": "d", "schema": "s", "table": "t"}, "op": "d"});
    Rec {
        partition: 0,
        key: Some(json!({"id": id}).to_string()),
        value: Some(payload.to_string()),
    }
}

fn post(url: &str, name: &str, config: &Value, initial: Option<&str>) -> (u16, Value) {
    let mut body = json!({"name": name, "config": config});
    if let Some(s) = initial {
        body["initial_state"] = json!(s);
    }
    call(url, "POST", "/connectors", Some(&body))
}

/// `PUT /connectors/NAME/{pause,resume,stop}`, answered as Kafka Connect answers it.
fn act(url: &str, name: &str, action: &str) {
    let want = if action == "stop" { 204 } else { 202 };
    let (code, body) = call(url, "PUT", &format!("/connectors/{name}/{action}"), None);
    assert_eq!(code, want, "{action}: {body}");
}

/// `PATCH /connectors/NAME/offsets` with `offsets`, answered 200.
fn patch_offsets(url: &str, name: &str, offsets: &Value) {
    let (code, body) = call(
        url,
        "PATCH",
        &format!("/connectors/{name}/offsets"),
        Some(offsets),
    );
    assert_eq!(code, 200, "{body}");
}

/// Documents of `index` with their versions, once it holds `n`.
fn wait_docs(index: &str, n: usize) -> BTreeMap<String, (u64, Value)> {
    let start = std::time::Instant::now();
    loop {
        let docs = es::documents(index);
        if docs.len() == n {
            return docs;
        }
        assert!(
            start.elapsed() < WAIT,
            "{index}: {} documents, expected {n}",
            docs.len()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn wait_committed(group: &str, topic: &str, want: i64) {
    let start = std::time::Instant::now();
    loop {
        let c = kafka::committed(group, topic, 1);
        if c.get(&0) == Some(&want) {
            return;
        }
        assert!(
            start.elapsed() < WAIT,
            "{group} committed {c:?}, expected {want}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn pause_resume_stop_and_offsets_act_on_the_running_tasks() {
    let topic = unique("it-rest-life");
    kafka::create_topic(&topic, 1);
    let (w, url) = rest_worker(&state_dir());
    let name = unique("rest-life");
    let group = format!("connect-{name}");
    let (code, _) = post(&url, &name, &es_connector(&topic, &servers().es, &[]), None);
    assert_eq!(code, 201);
    kafka::produce(
        &topic,
        &(0..10).map(|i| change(i, None)).collect::<Vec<_>>(),
    );
    let before = wait_docs(&topic, 10);
    wait_committed(&group, &topic, 10);

    // Paused: the task keeps its partition, reads nothing, and has committed what it wrote.
    act(&url, &name, "pause");
    wait_state(&url, &name, "PAUSED", Some("PAUSED"));
    kafka::produce(
        &topic,
        &(10..20).map(|i| change(i, None)).collect::<Vec<_>>(),
    );
    // Nothing may happen now; give it the time a running task needs to write them. Paused
    // with nothing in flight, the task waits: it does not spin on an empty sink.
    let (cpu, wall) = (w.cpu_seconds(), std::time::Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let busy = (w.cpu_seconds() - cpu) / wall.elapsed().as_secs_f64();
    assert!(
        busy < 0.25,
        "a paused worker used {:.0}% of a core",
        busy * 100.0
    );
    assert_eq!(es::documents(&topic).len(), 10, "written while paused");
    assert_eq!(
        kafka::committed(&group, &topic, 1),
        BTreeMap::from([(0, 10)])
    );

    act(&url, &name, "resume");
    wait_state(&url, &name, "RUNNING", Some("RUNNING"));
    let all = wait_docs(&topic, 20);
    wait_committed(&group, &topic, 20);

    // Stopped: no tasks, offsets committed; they can be moved back and are read again.
    act(&url, &name, "stop");
    let s = wait_state(&url, &name, "STOPPED", None);
    assert_eq!(s["tasks"], json!([]));
    let (code, offsets) = call(&url, "GET", &format!("/connectors/{name}/offsets"), None);
    assert_eq!(code, 200);
    assert_eq!(
        offsets,
        json!({"offsets": [{"partition": {"kafka_topic": topic, "kafka_partition": 0}, "offset": {"kafka_offset": 20}}]})
    );
    // Numbers as strings, which Kafka Connect takes too.
    let rewind = json!({"offsets": [{"partition": {"kafka_topic": topic, "kafka_partition": "0"}, "offset": {"kafka_offset": "0"}}]});
    patch_offsets(&url, &name, &rewind);
    assert_eq!(
        kafka::committed(&group, &topic, 1),
        BTreeMap::from([(0, 0)])
    );
    act(&url, &name, "resume");
    wait_committed(&group, &topic, 20);
    // Read again from 0: every write was refused as not newer, so nothing changed.
    assert_eq!(es::documents(&topic), all);
    for (id, doc) in &before {
        assert_eq!(&all[id], doc, "document {id} rewritten");
    }

    // Delete: tasks gone (they committed), config gone.
    assert_eq!(
        call(&url, "DELETE", &format!("/connectors/{name}"), None).0,
        204
    );
    assert_eq!(
        call(&url, "GET", &format!("/connectors/{name}"), None).0,
        404
    );
    assert_eq!(call(&url, "GET", "/connectors", None).1, json!([]));
    assert!(w.stop().success());
}

/// Records removed from the log (here by DeleteRecords; `retention.ms` alike) while the
/// connector was stopped, before it wrote them: its committed offset is below the log's start
/// now. The task fails naming them and commits nothing past them, until the offsets are moved
/// past the gap; then it goes on from there.
#[test]
fn records_removed_before_they_were_written_fail_the_task_until_the_offsets_are_moved() {
    let topic = unique("it-rest-gap");
    kafka::create_topic(&topic, 1);
    let (mut w, url) = rest_worker(&state_dir());
    let name = unique("rest-gap");
    let group = format!("connect-{name}");
    let (code, _) = post(&url, &name, &es_connector(&topic, &servers().es, &[]), None);
    assert_eq!(code, 201);
    kafka::produce(&topic, &(0..3).map(|i| change(i, None)).collect::<Vec<_>>());
    let written = wait_docs(&topic, 3);
    wait_committed(&group, &topic, 3);
    act(&url, &name, "stop");
    wait_state(&url, &name, "STOPPED", None);
    // 3 and 4 (a delete of row 1 among them) removed before the task read them; 5 kept.
    kafka::produce(&topic, &[change(3, None), delete_of(1), change(5, None)]);
    kafka::delete_records(&topic, 0, 5);
    act(&url, &name, "resume");
    let status = wait_state(&url, &name, "RUNNING", Some("FAILED"));
    let trace = status["tasks"][0]["trace"].as_str().unwrap_or_default();
    assert!(
        trace.contains(&format!(
            "topic {topic} partition 0: offsets 3 to 4 are no longer in the log"
        )),
        "{status}\n{}",
        w.log_tail(30)
    );
    // Nothing committed past the gap, nothing written after it: row 1 is still there, as the
    // lost delete left it, and record 5 waits.
    assert_eq!(
        kafka::committed(&group, &topic, 1),
        BTreeMap::from([(0, 3)])
    );
    assert_eq!(es::documents(&topic), written);
    // A restart fails the same way: the committed offset is still below the log's start.
    assert_eq!(
        call(
            &url,
            "POST",
            &format!("/connectors/{name}/tasks/0/restart"),
            None
        )
        .0,
        204
    );
    w.wait_log("offsets 3 to 4 are no longer in the log", WAIT);
    wait_state(&url, &name, "RUNNING", Some("FAILED"));
    assert_eq!(
        kafka::committed(&group, &topic, 1),
        BTreeMap::from([(0, 3)])
    );
    // The offsets moved past the gap, as the failure says: the task goes on from there.
    act(&url, &name, "stop");
    wait_state(&url, &name, "STOPPED", None);
    let past = json!({"offsets": [{"partition": {"kafka_topic": topic, "kafka_partition": 0}, "offset": {"kafka_offset": 5}}]});
    patch_offsets(&url, &name, &past);
    act(&url, &name, "resume");
    wait_state(&url, &name, "RUNNING", Some("RUNNING"));
    let docs = wait_docs(&topic, 4);
    wait_committed(&group, &topic, 6);
    assert_eq!(docs["5"], (1005, json!({"id": 5, "name": "n5"})));
    for (id, doc) in &written {
        assert_eq!(&docs[id], doc, "document {id} rewritten");
    }
    assert!(w.stop().success());
}

/// A standalone worker running connector `name` on a new one-partition topic, whose writes
/// Elasticsearch keeps refusing (a proxy answers every bulk request 503), once its task has
/// tried the first of `records` three times: a task with writes it cannot finish.
struct Refused {
    proxy: crate::support::proxy::Proxy,
    w: Worker,
    url: String,
    name: String,
    group: String,
    topic: String,
    config: Value,
}

fn refused_writes(prefix: &str, flush_timeout_ms: &str, records: &[Rec]) -> Refused {
    use crate::support::proxy::{Faults, Proxy};
    use std::sync::atomic::Ordering::SeqCst;
    let topic = unique(&format!("it-{prefix}"));
    kafka::create_topic(&topic, 1);
    let proxy = Proxy::start(&servers().es);
    proxy.set_faults(Faults {
        request_503: 100,
        ..Faults::default()
    });
    let (w, url) = rest_worker(&state_dir());
    let name = unique(prefix);
    let config = es_connector(
        &topic,
        &proxy.url,
        &[
            ("flush.timeout.ms", flush_timeout_ms),
            ("retry.backoff.ms", "50"),
            ("max.retry.backoff.ms", "200"),
        ],
    );
    assert_eq!(post(&url, &name, &config, None).0, 201);
    kafka::produce(&topic, records);
    let start = std::time::Instant::now();
    while proxy.stats().failed_requests.load(SeqCst) < 3 {
        assert!(start.elapsed() < WAIT, "the write was not tried");
        std::thread::sleep(Duration::from_millis(50));
    }
    Refused {
        proxy,
        w,
        url,
        group: format!("connect-{name}"),
        name,
        topic,
        config,
    }
}

impl Refused {
    fn stop(&self) {
        assert_eq!(
            call(
                &self.url,
                "PUT",
                &format!("/connectors/{}/stop", self.name),
                None
            )
            .0,
            204
        );
    }

    /// Where in the log the connector's old tasks ended (if they have), and where each start
    /// of it is.
    fn ended_and_started(&self) -> (Option<usize>, Vec<usize>) {
        let text = self.w.log_text();
        let of = |l: &str| l.contains(&self.name);
        let ended = text
            .lines()
            .position(|l| l.contains("connector stopped") && of(l));
        let started = text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.contains("starting connector") && of(l))
            .map(|(i, _)| i)
            .collect();
        (ended, started)
    }

    /// Checks that the connector was started twice, the second time after its old tasks ended.
    fn restarted_after_the_old_task_ended(&self) {
        let (ended, started) = self.ended_and_started();
        let ended = ended.expect("the old task did not end");
        assert_eq!(started.len(), 2, "{}", self.w.log_tail(40));
        assert!(
            ended < started[1],
            "the new task started before the old one ended: {}",
            self.w.log_tail(40)
        );
    }
}

/// A task stopped while Elasticsearch refuses its writes leaves no write retrying behind it:
/// its sink's writes end with it, so none can land after the records' next reader has written
/// newer changes (a delete forgotten after `index.gc_deletes`, an unversioned write). The
/// stopped connector's record is not written and not committed; once Elasticsearch answers
/// again nothing more reaches it.
#[test]
fn a_stopped_task_leaves_no_write_retrying_behind_it() {
    use crate::support::proxy::Faults;
    use std::sync::atomic::Ordering::SeqCst;
    let r = refused_writes("rest-orphan", "1000", &[change(1, None)]);
    r.stop();
    wait_state(&r.url, &r.name, "STOPPED", None);
    // The stop is answered at once; the task ends once flush.timeout.ms has run out.
    let start = std::time::Instant::now();
    while r.ended_and_started().0.is_none() {
        assert!(start.elapsed() < WAIT, "the task did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
    let requests = r.proxy.stats().requests.load(SeqCst);
    r.proxy.set_faults(Faults::default());
    // Ten times the largest backoff: a write left behind would have been sent again by now.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        r.proxy.stats().requests.load(SeqCst),
        requests,
        "a write of the stopped task reached Elasticsearch"
    );
    assert!(es::documents(&r.topic).is_empty());
    assert_eq!(kafka::committed(&r.group, &r.topic, 1).get(&0), None);
    // Given up when flush.timeout.ms ran out, before the task's consumer closed.
    assert!(
        r.w.log_text().contains(
            "writes still unfinished as the task ends (flush.timeout.ms: 1000 ms), dealt with before its consumer closes: every unfinished write dropped"
        ),
        "{}",
        r.w.log_tail(30)
    );
    assert!(r.w.stop().success());
}

/// Stopping a connector whose writes cannot finish does not hold the worker: the stop is
/// answered at once and the REST API answers while the task still finishes its writes (up to
/// `flush.timeout.ms`); a resume starts the new task only once the old one has ended, and the
/// new one writes the record and commits it.
#[test]
fn a_stop_is_answered_while_the_task_still_finishes_its_writes() {
    use crate::support::proxy::Faults;
    let r = refused_writes("rest-slowstop", "8000", &[change(1, None)]);
    let stop = std::time::Instant::now();
    r.stop();
    let (code, status) = call(
        &r.url,
        "GET",
        &format!("/connectors/{}/status", r.name),
        None,
    );
    let answered = stop.elapsed();
    assert_eq!((code, states(&status).0.as_str()), (200, "STOPPED"));
    assert!(
        answered < Duration::from_secs(4),
        "the stop and a status request took {answered:?}: they waited for the task's writes"
    );
    assert_eq!(
        r.ended_and_started().0,
        None,
        "the task did not wait for its writes"
    );
    // The resume waits for the old task, which gives its write up when flush.timeout.ms runs out.
    assert_eq!(
        call(
            &r.url,
            "PUT",
            &format!("/connectors/{}/resume", r.name),
            None
        )
        .0,
        202
    );
    r.restarted_after_the_old_task_ended();
    assert_eq!(kafka::committed(&r.group, &r.topic, 1).get(&0), None);
    r.proxy.set_faults(Faults::default());
    let docs = wait_docs(&r.topic, 1);
    assert!(docs.contains_key("1"), "{docs:?}");
    wait_committed(&r.group, &r.topic, 1);
    assert!(r.w.stop().success());
}

/// While a stopped connector's task still finishes its writes: deleting it is answered at once
/// (nothing is started, so nothing waits); creating it again waits for the old task, and meanwhile
/// another connector is created without waiting behind it.
#[test]
fn only_what_starts_a_stopping_connector_again_waits_for_its_old_task() {
    use crate::support::proxy::Faults;
    use std::time::Instant;
    let r = refused_writes("rest-redo", "8000", &[change(1, None)]);
    let stop = Instant::now();
    r.stop();
    assert_eq!(
        call(&r.url, "DELETE", &format!("/connectors/{}", r.name), None).0,
        204
    );
    let deleted = stop.elapsed();
    assert!(
        deleted < Duration::from_secs(4),
        "the stop and the delete took {deleted:?}: the delete waited for the task's writes"
    );
    let again = {
        let (url, name, config) = (r.url.clone(), r.name.clone(), r.config.clone());
        std::thread::spawn(move || post(&url, &name, &config, None).0)
    };
    // Let the create take its turn first.
    std::thread::sleep(Duration::from_millis(300));
    let other = es_connector(&unique("it-rest-redo-o"), &servers().es, &[]);
    let asked = Instant::now();
    let (code, body) = post(&r.url, &unique("rest-redo-other"), &other, None);
    let took = asked.elapsed();
    assert_eq!(code, 201, "{body}");
    assert!(
        took < Duration::from_secs(3),
        "another connector's create took {took:?}: it waited behind the one waiting for its old task"
    );
    assert_eq!(again.join().unwrap(), 201);
    r.restarted_after_the_old_task_ended();
    r.proxy.set_faults(Faults::default());
    assert!(r.w.stop().success());
}

/// Offsets changed right after a stop, while the task still finishes its writes: the change
/// waits for the task to leave the group, then is made.
#[test]
fn offsets_changed_right_after_a_stop_wait_for_the_task_to_leave() {
    let r = refused_writes("rest-stopoff", "4000", &[change(1, None), change(2, None)]);
    r.stop();
    let to = json!({"offsets": [{"partition": {"kafka_topic": r.topic, "kafka_partition": 0}, "offset": {"kafka_offset": 1}}]});
    let (code, body) = call(
        &r.url,
        "PATCH",
        &format!("/connectors/{}/offsets", r.name),
        Some(&to),
    );
    assert_eq!(code, 200, "{body}");
    assert!(
        r.ended_and_started().0.is_some(),
        "the offsets changed before the task ended: {}",
        r.w.log_tail(30)
    );
    assert_eq!(
        kafka::committed(&r.group, &r.topic, 1),
        BTreeMap::from([(0, 1)])
    );
    assert!(r.w.stop().success());
}

/// A task restarted while its last offset commit waits behind its group's rebalance ends within
/// seconds, not when the commit's request times out (`socket.timeout.ms`, 60 s): its consumer's
/// close, which waits for that commit, goes on after the task (`source::close`). With a
/// cooperative assignor the task keeps a partition, and writes it, while its JoinGroup waits for
/// another member that does not join again; the group's coordinator answers the task's offset
/// commits only after that JoinGroup. Once the other member has left, the new task commits
/// every record.
#[test]
fn a_restart_while_an_offset_commit_waits_behind_the_rebalance_is_not_held_by_it() {
    use std::time::Instant;
    let topic = unique("it-rest-rejoin");
    kafka::create_topic(&topic, 2);
    let on = |partition: i32, id: i64| Rec {
        partition,
        ..change(id, None)
    };
    kafka::produce(&topic, &[on(0, 1), on(1, 2)]);
    let name = unique("rest-rejoin");
    let group = format!("connect-{name}");
    let strategy = "cooperative-sticky";
    let (mut w, url) = rest_worker(&state_dir());
    let config = es_connector(
        &topic,
        &servers().es,
        &[("consumer.override.partition.assignment.strategy", strategy)],
    );
    assert_eq!(post(&url, &name, &config, None).0, 201);
    wait_docs(&topic, 2);
    let committed = |want: &[(i32, i64)]| {
        let start = Instant::now();
        let want: BTreeMap<i32, i64> = want.iter().copied().collect();
        loop {
            let c = kafka::committed(&group, &topic, 2);
            if c == want {
                return;
            }
            assert!(
                start.elapsed() < WAIT,
                "{group} committed {c:?}, expected {want:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    committed(&[(0, 1), (1, 1)]);
    // The task gives the other member a partition, then joins again for it, and waits.
    let other = kafka::silent_member(&group, &topic, strategy, 300_000);
    let revoked = w.wait_log("partitions revoked", WAIT);
    let start = Instant::now();
    while kafka::group_state(&group) != "PreparingRebalance" {
        assert!(
            start.elapsed() < WAIT,
            "no rebalance waits\n{}",
            w.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The partition it kept is written meanwhile; its commit waits behind the JoinGroup.
    let kept = if revoked.contains(&format!("(\"{topic}\", 1)")) {
        0
    } else {
        1
    };
    kafka::produce(&topic, &[on(kept, 3)]);
    let first = wait_docs(&topic, 3);
    let versions: Vec<u64> = (1..=3).map(|i| first[&i.to_string()].0).collect();
    assert!(versions.windows(2).all(|v| v[0] < v[1]), "{versions:?}");
    assert_eq!(first["3"].1["name"], "n3");
    let asked = Instant::now();
    let (code, body) = call(
        &url,
        "POST",
        &format!("/connectors/{name}/restart?includeTasks=true"),
        None,
    );
    let took = asked.elapsed();
    assert_eq!(code, 202, "{body}");
    assert!(
        took < Duration::from_secs(30),
        "the restart took {took:?}: it waited for the offset commit\n{}",
        w.log_tail(30)
    );
    assert!(
        w.log_text().contains("the consumer has not closed within"),
        "{}",
        w.log_tail(30)
    );
    drop(other);
    let mut want = vec![(0, 1), (1, 1)];
    want[kept as usize].1 = 2;
    committed(&want);
    // Once the old consumer has closed, its last commit (answered late, or refused) has moved
    // no offset back, and nothing read again changed a document.
    w.wait_log("consumer closed after", WAIT);
    committed(&want);
    assert_eq!(es::documents(&topic), first);
    assert!(w.stop().success());
}

/// A restarted task reads its config's placeholders again (a rotated secret, a moved server),
/// as Kafka Connect resolves them at each task's start; one that no longer resolves leaves the
/// task FAILED with the reason, and the connector's other state untouched.
#[test]
fn a_restarted_task_reads_its_placeholders_again() {
    use crate::support::proxy::{Faults, Proxy};
    use std::sync::atomic::Ordering::SeqCst;
    let topic = unique("it-rest-reread");
    kafka::create_topic(&topic, 1);
    // The file names at first a server that answers every write with 503.
    let proxy = Proxy::start(&servers().es);
    proxy.set_faults(Faults {
        request_503: 100,
        ..Faults::default()
    });
    let dir = state_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("es-url");
    std::fs::write(&file, &proxy.url).unwrap();
    let (w, url) = rest_worker(&dir);
    let name = unique("rest-reread");
    let group = format!("connect-{name}");
    let placeholder = format!("${{file:{}}}", file.display());
    let config = es_connector(
        &topic,
        &placeholder,
        &[
            ("flush.timeout.ms", "1000"),
            ("retry.backoff.ms", "50"),
            ("max.retry.backoff.ms", "200"),
        ],
    );
    assert_eq!(post(&url, &name, &config, None).0, 201);
    kafka::produce(&topic, &(0..3).map(|i| change(i, None)).collect::<Vec<_>>());
    let start = std::time::Instant::now();
    while proxy.stats().failed_requests.load(SeqCst) < 2 {
        assert!(start.elapsed() < WAIT, "the write was not tried");
        std::thread::sleep(Duration::from_millis(50));
    }
    let restart = |query: &str| {
        let (code, body) = call(
            &url,
            "POST",
            &format!("/connectors/{name}/restart?{query}"),
            None,
        );
        assert_eq!(code, 202, "{body}");
    };
    // The file gone: the restarted task cannot start, and says why.
    std::fs::remove_file(&file).unwrap();
    restart("includeTasks=true");
    let s = wait_state(&url, &name, "RUNNING", Some("FAILED"));
    let trace = s["tasks"][0]["trace"].as_str().unwrap_or("");
    assert!(trace.contains("es-url"), "{s}");
    // The file back, naming Elasticsearch itself: the failed task restarts and writes there.
    std::fs::write(&file, &servers().es).unwrap();
    restart("includeTasks=true&onlyFailed=true");
    let docs = wait_docs(&topic, 3);
    wait_committed(&group, &topic, 3);
    let versions: Vec<u64> = (0..3).map(|i| docs[&i.to_string()].0).collect();
    assert!(
        versions.windows(2).all(|v| 0 < v[0] && v[0] < v[1]),
        "{versions:?}"
    );
    // Stopped, then resumed without the file: the tasks start from the config read again, which
    // no longer validates; the plain restart, the file back, starts them.
    act(&url, &name, "stop");
    wait_state(&url, &name, "STOPPED", None);
    // A restart of its tasks starts nothing while it is stopped (applied before the answer).
    restart("includeTasks=true");
    let (_, s) = call(&url, "GET", &format!("/connectors/{name}/status"), None);
    assert_eq!(states(&s), ("STOPPED".to_string(), vec![]), "{s}");
    std::fs::remove_file(&file).unwrap();
    act(&url, &name, "resume");
    let s = wait_state(&url, &name, "FAILED", None);
    assert!(
        s["connector"]["trace"]
            .as_str()
            .unwrap_or("")
            .contains("es-url"),
        "{s}"
    );
    std::fs::write(&file, &servers().es).unwrap();
    let (code, body) = call(&url, "POST", &format!("/connectors/{name}/restart"), None);
    assert_eq!(code, 204, "{body}");
    wait_state(&url, &name, "RUNNING", Some("RUNNING"));
    kafka::produce(&topic, &(3..6).map(|i| change(i, None)).collect::<Vec<_>>());
    wait_docs(&topic, 6);
    wait_committed(&group, &topic, 6);
    assert!(w.stop().success());
    let _ = std::fs::remove_dir_all(dir);
}

/// A restart of the tasks whose `tasks.max` placeholder now gives another count runs that many.
#[test]
fn a_restart_runs_as_many_tasks_as_the_placeholder_now_gives() {
    let topic = unique("it-rest-count");
    kafka::create_topic(&topic, 2);
    let dir = state_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tasks");
    std::fs::write(&file, "1").unwrap();
    let (w, url) = rest_worker(&dir);
    let name = unique("rest-count");
    let placeholder = format!("${{file:{}}}", file.display());
    let config = es_connector(&topic, &servers().es, &[("tasks.max", &placeholder)]);
    assert_eq!(post(&url, &name, &config, None).0, 201);
    let s = wait_state(&url, &name, "RUNNING", Some("RUNNING"));
    assert_eq!(states(&s).1.len(), 1, "{s}");
    std::fs::write(&file, "2").unwrap();
    let (code, body) = call(
        &url,
        "POST",
        &format!("/connectors/{name}/restart?includeTasks=true"),
        None,
    );
    assert_eq!(code, 202, "{body}");
    wait_for(&url, &format!("/connectors/{name}/status"), WAIT, |s| {
        states(s) == ("RUNNING".to_string(), vec!["RUNNING".to_string(); 2])
    });
    assert!(w.stop().success());
    let _ = std::fs::remove_dir_all(dir);
}

/// PATCHes of one connector's config at the same moment each keep what the others changed.
#[test]
fn concurrent_patches_each_keep_the_others_keys() {
    let (w, url) = rest_worker(&state_dir());
    let name = unique("rest-patch");
    let config = es_connector(&unique("it-rest-patch"), &servers().es, &[]);
    assert_eq!(post(&url, &name, &config, Some("STOPPED")).0, 201);
    let keys = [
        ("batch.size", "1001"),
        ("linger.ms", "11"),
        ("max.retries", "7"),
        ("retry.backoff.ms", "101"),
        ("max.in.flight.requests", "3"),
        ("read.timeout.ms", "30001"),
        ("connection.timeout.ms", "1001"),
        ("flush.timeout.ms", "9001"),
    ];
    let start = std::sync::Barrier::new(keys.len());
    std::thread::scope(|s| {
        for (k, v) in keys {
            let (url, name, start) = (&url, &name, &start);
            s.spawn(move || {
                start.wait();
                let (code, body) = call(
                    url,
                    "PATCH",
                    &format!("/connectors/{name}/config"),
                    Some(&json!({ k: v })),
                );
                assert_eq!(code, 200, "{k}: {body}");
            });
        }
    });
    let (_, now) = call(&url, "GET", &format!("/connectors/{name}/config"), None);
    for (k, v) in keys {
        assert_eq!(now[k], v, "{k} lost: {now}");
    }
    assert!(w.stop().success());
}

#[test]
fn a_failed_task_restarted_over_rest_continues_from_the_failed_record() {
    let topic = unique("it-rest-fail");
    kafka::create_topic(&topic, 1);
    // A strict mapping refuses record 5, which has a field it does not know.
    let es_url = &servers().es;
    let created = reqwest::blocking::Client::new()
        .put(format!("{es_url}/{topic}"))
        .json(&json!({"mappings": {"dynamic": "strict", "properties": {"id": {"type": "long"}, "name": {"type": "keyword"}}}}))
        .send()
        .unwrap();
    assert!(created.status().is_success());
    let mut recs: Vec<Rec> = (0..5).map(|i| change(i, None)).collect();
    recs.push(change(5, Some(("extra", 1))));
    recs.extend((6..10).map(|i| change(i, None)));
    kafka::produce(&topic, &recs);

    let (w, url) = rest_worker(&state_dir());
    let name = unique("rest-fail");
    let group = format!("connect-{name}");
    assert_eq!(
        post(&url, &name, &es_connector(&topic, es_url, &[]), None).0,
        201
    );
    let s = wait_state(&url, &name, "RUNNING", Some("FAILED"));
    let trace = s["tasks"][0]["trace"].as_str().unwrap_or("").to_string();
    assert!(
        trace.contains(&format!("topic {topic} partition 0 offset 5")),
        "{trace}"
    );
    assert!(
        trace.contains("strict_dynamic_mapping_exception"),
        "{trace}"
    );
    // Never past the refused record. (Its bulk request fails as a whole: records of the same
    // request before it are written but not acknowledged, so they may be read again.)
    let failed_at = kafka::committed(&group, &topic, 1);
    assert!(failed_at.get(&0).is_none_or(|o| *o <= 5), "{failed_at:?}");
    // Elasticsearch wrote the other records of that request; only record 5 is missing.
    let first = es::documents(&topic);
    assert!(!first.contains_key("5"), "{first:?}");

    // Fix the index, then restart only the failed task.
    let fixed = reqwest::blocking::Client::new()
        .put(format!("{es_url}/{topic}/_mapping"))
        .json(&json!({"properties": {"extra": {"type": "long"}}}))
        .send()
        .unwrap();
    assert!(fixed.status().is_success());
    let (code, status) = call(
        &url,
        "POST",
        &format!("/connectors/{name}/restart?includeTasks=true&onlyFailed=true"),
        None,
    );
    assert_eq!(code, 202, "{status}");
    assert_eq!(status["tasks"][0]["state"], "RESTARTING", "{status}");
    let docs = wait_docs(&topic, 10);
    wait_committed(&group, &topic, 10);
    wait_state(&url, &name, "RUNNING", Some("RUNNING"));
    assert_eq!(docs["5"].1["extra"], 1);
    // What was written before the failure was not changed by reading it again (same versions);
    // all follow source order.
    for (id, doc) in &first {
        assert_eq!(&docs[id], doc);
    }
    let versions: Vec<u64> = (0..10).map(|i| docs[&i.to_string()].0).collect();
    assert!(versions.windows(2).all(|v| v[0] < v[1]), "{versions:?}");
    assert!(w.stop().success());
}

/// A stored connector whose config no longer validates when the worker starts again (the
/// variable its placeholder names is gone) is FAILED with the reason; the worker and its other
/// connectors run. Once mended, a restart starts it.
#[test]
fn a_stored_connector_that_no_longer_validates_fails_alone() {
    let state = state_dir();
    let dir = state.to_string_lossy().to_string();
    let env = [
        ("CDC_SINK_WORKER__STATE_DIR", dir.as_str()),
        ("CDCSINK_REST_ES", servers().es.as_str()),
    ];
    let mut w = Worker::start_with(&[], &env);
    let url = w.rest_url();
    let (plain, placeholder) = (unique("it-rest-plain"), unique("it-rest-env"));
    let config = |url: &str| es_connector(&unique("it-rest-stored"), url, &[]);
    assert_eq!(post(&url, &plain, &config(&servers().es), None).0, 201);
    assert_eq!(
        post(&url, &placeholder, &config("${env:CDCSINK_REST_ES}"), None).0,
        201
    );
    wait_state(&url, &placeholder, "RUNNING", Some("RUNNING"));
    // A stopped one: nothing of it runs, so it shows STOPPED (as on every other worker) until
    // it is resumed.
    let stopped = unique("it-rest-env-stopped");
    assert_eq!(
        post(
            &url,
            &stopped,
            &config("${env:CDCSINK_REST_ES}"),
            Some("STOPPED")
        )
        .0,
        201
    );
    wait_state(&url, &stopped, "STOPPED", None);
    // Another, whose file is gone at the restart and back before its resume.
    let url_file = std::env::temp_dir().join(format!("cdc-sink-url-{}", fastrand::u32(..)));
    std::fs::write(&url_file, &servers().es).unwrap();
    let mended = unique("it-rest-file-stopped");
    let from_file = format!("${{file:{}}}", url_file.display());
    assert_eq!(
        post(&url, &mended, &config(&from_file), Some("STOPPED")).0,
        201
    );
    wait_state(&url, &mended, "STOPPED", None);
    assert!(w.stop().success());
    std::fs::remove_file(&url_file).unwrap();

    // Started again without the variable.
    let mut w = Worker::start_with(&[], &env[..1]);
    let url = w.rest_url();
    wait_state(&url, &plain, "RUNNING", Some("RUNNING"));
    let s = wait_for(
        &url,
        &format!("/connectors/{placeholder}/status"),
        WAIT,
        |s| s["connector"]["state"] == "FAILED",
    );
    assert!(
        s["connector"]["trace"]
            .as_str()
            .is_some_and(|t| t.contains("CDCSINK_REST_ES")),
        "{s}"
    );
    let (code, s) = call(&url, "GET", &format!("/connectors/{stopped}/status"), None);
    assert_eq!((code, states(&s).0.as_str()), (200, "STOPPED"), "{s}");
    assert_eq!(
        call(&url, "PUT", &format!("/connectors/{stopped}/resume"), None).0,
        202
    );
    let s = wait_for(&url, &format!("/connectors/{stopped}/status"), WAIT, |s| {
        s["connector"]["state"] == "FAILED"
    });
    assert!(
        s["connector"]["trace"]
            .as_str()
            .is_some_and(|t| t.contains("CDCSINK_REST_ES")),
        "{s}"
    );
    // The file back, the stopped one resumes with it: its placeholders are read again.
    let (code, s) = call(&url, "GET", &format!("/connectors/{mended}/status"), None);
    assert_eq!((code, states(&s).0.as_str()), (200, "STOPPED"), "{s}");
    std::fs::write(&url_file, &servers().es).unwrap();
    assert_eq!(
        call(&url, "PUT", &format!("/connectors/{mended}/resume"), None).0,
        202
    );
    wait_state(&url, &mended, "RUNNING", Some("RUNNING"));
    let _ = std::fs::remove_file(&url_file);
    assert!(w.stop().success());
}

#[test]
fn a_standalone_worker_keeps_posted_connectors_across_a_crash() {
    let topic = unique("it-rest-keep");
    kafka::create_topic(&topic, 1);
    let state = state_dir();
    let (w, url) = rest_worker(&state);
    let [run, paused, stopped] = ["keep-run", "keep-paused", "keep-stopped"].map(unique);
    let config = es_connector(
        &topic,
        &servers().es,
        &[("connection.password", "s3cret-pw")],
    );
    let other = |i: &str| es_connector(&unique(i), &servers().es, &[]);
    assert_eq!(post(&url, &run, &config, None).0, 201);
    assert_eq!(post(&url, &paused, &other("keep-p"), Some("PAUSED")).0, 201);
    assert_eq!(post(&url, &stopped, &other("keep-s"), None).0, 201);
    assert_eq!(
        call(&url, "PUT", &format!("/connectors/{stopped}/stop"), None).0,
        204
    );
    kafka::produce(&topic, &(0..5).map(|i| change(i, None)).collect::<Vec<_>>());
    wait_docs(&topic, 5);
    let (_, config_before) = call(&url, "GET", &format!("/connectors/{run}/config"), None);
    assert_eq!(config_before["connection.password"], "[hidden]");
    w.kill();

    let (w, url) = rest_worker(&state);
    let (_, mut names) = call(&url, "GET", "/connectors", None);
    let mut want = json!([run, paused, stopped]);
    names.as_array_mut().unwrap().sort_by_key(|v| v.to_string());
    want.as_array_mut().unwrap().sort_by_key(|v| v.to_string());
    assert_eq!(names, want);
    assert_eq!(
        call(&url, "GET", &format!("/connectors/{run}/config"), None).1,
        config_before
    );
    wait_state(&url, &run, "RUNNING", Some("RUNNING"));
    wait_state(&url, &paused, "PAUSED", Some("PAUSED"));
    wait_state(&url, &stopped, "STOPPED", None);
    // The connector goes on from where it was.
    kafka::produce(
        &topic,
        &(5..10).map(|i| change(i, None)).collect::<Vec<_>>(),
    );
    wait_docs(&topic, 10);
    wait_committed(&format!("connect-{run}"), &topic, 10);
    assert!(w.stop().success());
    let log = std::fs::read_to_string(state.join("connectors.json")).unwrap();
    assert!(log.contains(&run));

    // A state file cut short is refused, naming it; nothing is started from it.
    let file = state.join("connectors.json");
    let full = std::fs::read(&file).unwrap();
    std::fs::write(&file, &full[..full.len() * 2 / 3]).unwrap();
    let dir = state.to_string_lossy().to_string();
    let mut w = Worker::start_with(&[], &[("CDC_SINK_WORKER__STATE_DIR", &dir)]);
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = w.exited() {
            break s;
        }
        assert!(
            start.elapsed() < WAIT,
            "the worker started from a damaged state file"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success());
    let log = w.log_text();
    assert!(
        log.contains("is damaged") && log.contains(&file.display().to_string()),
        "{log}"
    );
    assert!(!log.contains("REST API listening"), "{log}");
}

/// The shape of a JSON value: field names and types, recursively. `null` matches any type
/// (optional fields); arrays are compared by their first elements when both have one; objects
/// that are config maps (string → string) are compared as such, whatever their keys.
/// `GET …/config` shows secrets as `[hidden]`; that config sent back (PUT, or a PATCH that
/// repeats it) keeps the stored secret instead of storing the placeholder, and a new connector
/// given the placeholder is refused.
#[test]
fn a_config_sent_back_as_read_keeps_its_secrets() {
    let state = state_dir();
    let (w, url) = rest_worker(&state);
    let name = unique("it-rest-hidden");
    // Elasticsearch here has no security: it ignores the credentials.
    let with_password = servers().es.replacen("://", "://elastic:url-s3cret@", 1);
    let mut config = es_connector(&unique("it-rest-hidden"), &with_password, &[]);
    config["connection.username"] = json!("elastic");
    config["connection.password"] = json!("s3cret-value");
    assert_eq!(post(&url, &name, &config, Some("STOPPED")).0, 201);
    let (code, read) = call(&url, "GET", &format!("/connectors/{name}/config"), None);
    assert_eq!(code, 200);
    assert_eq!(read["connection.password"], "[hidden]");
    assert_eq!(
        read["connection.url"],
        servers().es.replacen("://", "://elastic:[hidden]@", 1)
    );
    let mut changed = read.clone();
    changed["linger.ms"] = json!("30");
    let (code, body) = call(
        &url,
        "PUT",
        &format!("/connectors/{name}/config"),
        Some(&changed),
    );
    assert_eq!(code, 200, "{body}");
    let (code, body) = call(
        &url,
        "PATCH",
        &format!("/connectors/{name}/config"),
        Some(&json!({"connection.password": "[hidden]", "linger.ms": "40"})),
    );
    assert_eq!(code, 200, "{body}");
    let stored = std::fs::read_to_string(state.join("connectors.json")).unwrap();
    assert!(
        stored.contains("s3cret-value")
            && stored.contains("url-s3cret")
            && !stored.contains("[hidden]")
            && stored.contains("40"),
        "{stored}"
    );
    let mut copy = read.clone();
    copy.as_object_mut().unwrap().remove("name");
    let (code, body) = post(&url, &format!("{name}-copy"), &copy, None);
    assert_eq!(code, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("connection.password"),
        "{body}"
    );
    assert!(w.stop().success());
}

/// Kafka client properties each valid alone but not together (librdkafka checks them only as it
/// creates a client) are refused when the config is posted, naming them, rather than failing
/// each task as it starts; a config whose clients librdkafka takes is accepted as before.
#[test]
fn client_properties_librdkafka_refuses_together_are_refused_when_posted() {
    let state = state_dir();
    let (w, url) = rest_worker(&state);
    let topic = unique("it-rest-combo");
    let name = unique("it-rest-combo");
    let message = |body: &Value| body["message"].as_str().unwrap_or_default().to_string();
    // The consumer: a fetch smaller than a message may be.
    let mut consumer = es_connector(&topic, &servers().es, &[]);
    consumer["consumer.override.fetch.max.bytes"] = json!("1000");
    let (code, body) = post(&url, &name, &consumer, None);
    assert_eq!(code, 400, "{body}");
    let m = message(&body);
    assert!(
        m.contains("consumer.override.<property>: librdkafka refuses")
            && m.contains("`fetch.max.bytes` must be >= `message.max.bytes`"),
        "{m}"
    );
    // The validate endpoint lists the same error, as Kafka Connect's does.
    let mut named = consumer.clone();
    named["name"] = json!(name);
    let (code, body) = call(
        &url,
        "PUT",
        "/connector-plugins/elasticsearch/config/validate",
        Some(&named),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["error_count"], json!(1), "{body}");
    assert!(
        body.to_string()
            .contains("`fetch.max.bytes` must be >= `message.max.bytes`"),
        "{body}"
    );
    // Also through PUT, and with a session longer than a poll interval.
    let mut consumer = es_connector(&topic, &servers().es, &[]);
    consumer["consumer.override.session.timeout.ms"] = json!("400000");
    let (code, body) = call(
        &url,
        "PUT",
        &format!("/connectors/{name}/config"),
        Some(&consumer),
    );
    assert_eq!(code, 400, "{body}");
    assert!(message(&body).contains("`session.timeout.ms`"), "{body}");
    // The Druid connector's producer: messages timing out before their batch may be sent.
    let druid = json!({"connector.class": "druid", "topics": topic, "exactly.once": "false",
        "producer.override.linger.ms": "5000", "producer.override.message.timeout.ms": "1000"});
    let (code, body) = post(&url, &name, &druid, None);
    assert_eq!(code, 400, "{body}");
    let m = message(&body);
    assert!(
        m.contains("producer.override.<property>: librdkafka refuses") && m.contains("linger.ms"),
        "{m}"
    );
    // The Elasticsearch connector's dead-letter producer, the same way.
    let mut queue = es_connector(&topic, &servers().es, &[]);
    for (k, v) in [
        ("errors.tolerance", "all"),
        ("errors.deadletterqueue.topic.name", "dlq"),
        ("producer.override.linger.ms", "5000"),
        ("producer.override.message.timeout.ms", "1000"),
    ] {
        queue[k] = json!(v);
    }
    let (code, body) = post(&url, &name, &queue, None);
    assert_eq!(code, 400, "{body}");
    let m = message(&body);
    assert!(
        m.contains("errors.deadletterqueue.topic.name: librdkafka refuses the dead-letter queue's producer's")
            && m.contains("linger.ms"),
        "{m}"
    );
    // Nothing was created.
    assert_eq!(
        call(&url, "GET", &format!("/connectors/{name}"), None).0,
        404
    );
    // The same properties, each taken together with what it needs: accepted.
    let mut fine = es_connector(&topic, &servers().es, &[]);
    fine["consumer.override.fetch.max.bytes"] = json!("1000");
    fine["consumer.override.message.max.bytes"] = json!("1000");
    let (code, body) = post(&url, &name, &fine, Some("STOPPED"));
    assert_eq!(code, 201, "{body}");
    // `cdc-sink validate` on connector files says the same, and `cdc-sink run` refuses to start.
    let validate = |config: &Value| {
        let file = crate::support::worker::connector_file(&name, config);
        std::process::Command::new(env!("CARGO_BIN_EXE_cdc-sink"))
            .arg("validate")
            .arg(&file)
            .output()
            .unwrap()
    };
    let out = validate(&queue);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("librdkafka refuses the dead-letter queue's"),
        "{err}"
    );
    assert!(validate(&fine).status.success());
    assert!(w.stop().success());
}
