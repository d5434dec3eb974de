//! Crashes: workers killed with SIGKILL at random moments after they made progress, workers
//! sharing a connector, one stopped cleanly and another killed. The index still ends as the
//! source table, every document at the version of its row's last change, and no committed
//! offset ever runs ahead of what Elasticsearch holds.

use std::thread;
use std::time::{Duration, Instant};

use crate::support::committed::{self, assert_versions};
use crate::support::history::{self, History, Options};
use crate::support::kafka;
use crate::support::proxy::{Faults, Proxy};
use crate::support::worker::{Worker, connector_file};
use crate::support::{es_connector, servers, unique, wait_converged};

/// Records of `topic` produced and not committed by `group`.
fn uncommitted(group: &str, topic: &str) -> i64 {
    let end: i64 = kafka::end_offsets(topic, 4).values().sum();
    end - kafka::committed(group, topic, 4).values().sum::<i64>()
}

/// Waits until `group` has committed more of `topic` than `before` (summed over partitions), or
/// all `total` records of the history.
fn wait_progress(group: &str, topic: &str, before: i64, total: usize, timeout: Duration) {
    let start = Instant::now();
    loop {
        let now: i64 = kafka::committed(group, topic, 4).values().sum();
        if now > before || now == total as i64 {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "no offset committed beyond {before} within {timeout:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

fn setup(seed: u64, es_url: &str) -> (History, String, String, std::path::PathBuf) {
    let h = history::generate(seed, &Options::default());
    let topic = unique("it-crash");
    kafka::create_topic(&topic, 4);
    let name = unique("it-crash");
    let file = connector_file(
        &name,
        &es_connector(
            &topic,
            es_url,
            &[("behavior.on.null.values", "delete"), ("batch.size", "500")],
        ),
    );
    (h, topic, name, file)
}

#[test]
fn sigkill_at_random_moments_loses_nothing_and_never_commits_ahead_of_the_index() {
    // Every request of the worker's held 200 ms on its way to Elasticsearch, so that writes are
    // in flight for a while: a worker that committed offsets ahead of its writes is then seen
    // doing so, and loses records when killed. (Without the delay its writes landed within
    // milliseconds of the commit, and such a worker passed this test in 6 runs of 6, and
    // only `faults::failing_and_unreachable…` caught it.)
    let proxy = Proxy::start(&servers().es);
    proxy.set_faults(Faults {
        slow: 100,
        slow_ms: 200,
        ..Faults::default()
    });
    let (h, topic, name, file) = setup(21, &proxy.url);
    let group = format!("connect-{name}");
    let producer = kafka::produce_slowly(
        topic.clone(),
        h.records.clone(),
        400,
        Duration::from_millis(300),
    );
    let watch = committed::watch(&topic, &topic, 4, &group, &h.log);
    let mut w = Worker::start(&file);
    let mut committed = 0;
    for kill in 0..4 {
        // Kill only after this worker has committed progress of its own, at a random moment
        // while it writes.
        wait_progress(
            &group,
            &topic,
            committed,
            h.records.len(),
            Duration::from_secs(120),
        );
        // A random moment at which records are produced and not yet committed (mid-write).
        thread::sleep(Duration::from_millis(fastrand::u64(0..1500)));
        let deadline = Instant::now() + Duration::from_secs(10);
        while uncommitted(&group, &topic) == 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(fastrand::u64(5..50)));
        }
        w.kill();
        let after = uncommitted(&group, &topic);
        committed = kafka::committed(&group, &topic, 4).values().sum();
        eprintln!("kill {kill}: {committed} records committed, {after} produced and not committed");
        w = Worker::start(&file);
    }
    producer.join().unwrap();
    wait_converged(&topic, &h.expected, &group, 4, Duration::from_secs(240));
    assert_versions(&topic, &h.versions);
    let samples = watch.finish();
    assert!(
        samples > 5,
        "only {samples} samples of the committed offsets"
    );
    assert!(w.stop().success());
}

#[test]
fn two_workers_share_partitions_and_survive_a_clean_stop_and_a_kill() {
    let (h, topic, name, file) = setup(22, &servers().es);
    let producer = kafka::produce_slowly(
        topic.clone(),
        h.records.clone(),
        400,
        Duration::from_millis(300),
    );
    let watch = committed::watch(&topic, &topic, 4, &format!("connect-{name}"), &h.log);
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
    assert_versions(&topic, &h.versions);
    watch.finish();
    assert!(a2.stop().success());
}
