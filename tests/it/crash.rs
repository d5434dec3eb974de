//! Crashes: workers killed with SIGKILL at random moments, workers sharing a connector, one
//! stopped cleanly and another killed. The index still ends as the source table, and no
//! document's version ever goes down.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use crate::support::history::{self, History, Options};
use crate::support::kafka::{self, Rec};
use crate::support::worker::{Worker, connector_file};
use crate::support::{es, es_connector, servers, unique, wait_converged};

/// Produces `records` in chunks over a few seconds, so that workers come and go mid-stream.
fn produce_slowly(topic: String, records: Vec<Rec>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let p = kafka::producer();
        for chunk in records.chunks(800) {
            p.send(&topic, chunk);
            thread::sleep(Duration::from_millis(250));
        }
    })
}

/// Reads the index over and over; returns the documents whose `_version` went down.
fn watch_versions(index: String, stop: Arc<AtomicBool>) -> thread::JoinHandle<Vec<String>> {
    thread::spawn(move || {
        let mut seen: BTreeMap<String, u64> = BTreeMap::new();
        let mut regressions = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            for (id, (version, _)) in es::documents(&index) {
                let last = seen.entry(id.clone()).or_insert(version);
                if version < *last {
                    regressions.push(format!("{id}: {last} → {version}"));
                }
                *last = version.max(*last);
            }
            thread::sleep(Duration::from_millis(200));
        }
        regressions
    })
}

fn setup(seed: u64) -> (History, String, String, std::path::PathBuf) {
    let h = history::generate(seed, &Options::default());
    let topic = unique("it-crash");
    kafka::create_topic(&topic, 4);
    let name = unique("it-crash");
    let file = connector_file(
        &name,
        &es_connector(
            &topic,
            &servers().es,
            &[("behavior.on.null.values", "delete"), ("batch.size", "500")],
        ),
    );
    (h, topic, name, file)
}

#[test]
fn sigkill_at_random_moments_loses_nothing_and_never_moves_a_document_back() {
    let (h, topic, name, file) = setup(21);
    let producer = produce_slowly(topic.clone(), h.records.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_versions(topic.clone(), stop.clone());
    let mut w = Worker::start(&file);
    for _ in 0..4 {
        thread::sleep(Duration::from_millis(fastrand::u64(700..2500)));
        w.kill();
        w = Worker::start(&file);
    }
    producer.join().unwrap();
    wait_converged(
        &topic,
        &h.expected,
        &format!("connect-{name}"),
        4,
        Duration::from_secs(240),
    );
    stop.store(true, Ordering::Relaxed);
    let regressions = watcher.join().unwrap();
    assert!(
        regressions.is_empty(),
        "versions went down: {regressions:?}"
    );
    assert!(w.stop().success());
}

#[test]
fn two_workers_share_partitions_and_survive_a_clean_stop_and_a_kill() {
    let (h, topic, name, file) = setup(22);
    let producer = produce_slowly(topic.clone(), h.records.clone());
    let mut a = Worker::start(&file);
    let mut b = Worker::start(&file);
    // Both hold partitions of the same group.
    a.wait_log("partitions assigned", Duration::from_secs(60));
    b.wait_log("partitions assigned", Duration::from_secs(60));
    thread::sleep(Duration::from_secs(2));
    let status = a.stop();
    assert!(status.success(), "clean stop exited with {status}");
    let a2 = Worker::start(&file);
    thread::sleep(Duration::from_secs(3));
    b.kill();
    producer.join().unwrap();
    wait_converged(
        &topic,
        &h.expected,
        &format!("connect-{name}"),
        4,
        Duration::from_secs(240),
    );
    assert!(a2.stop().success());
}
