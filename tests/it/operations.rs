//! What an operator sees: `GET /metrics` with exact values after a known run, the lag gauge at
//! zero once caught up, progress in task status, and `cdc-sink status`.

use std::time::Duration;

use serde_json::json;

use crate::support::kafka::{self, Rec};
use crate::support::rest::{self, metric};
use crate::support::worker::{Worker, connector_file};
use crate::support::{es, es_connector, servers, unique};

fn create(id: i64) -> Rec {
    Rec {
        partition: (id % 2) as i32,
        key: Some(json!({"id": id}).to_string()),
        value: Some(
            json!({"before": null, "after": {"id": id, "name": format!("n{id}")},
            "source": {"connector": "postgresql", "lsn": 1000 + id, "ts_ms": 1_700_000_000_000i64, "db": "d", "schema": "s", "table": "t"}, "op": "c"})
            .to_string(),
        ),
    }
}

/// A delete of a document that was never written, then its tombstone.
fn delete(id: i64) -> [Rec; 2] {
    let key = Some(json!({"id": id}).to_string());
    let partition = (id % 2) as i32;
    [
        Rec {
            partition,
            key: key.clone(),
            value: Some(
                json!({"before": {"id": id, "name": "gone"}, "after": null,
                "source": {"connector": "postgresql", "lsn": 5000 + id, "db": "d", "schema": "s", "table": "t"}, "op": "d"})
                .to_string(),
            ),
        },
        Rec {
            partition,
            key,
            value: None,
        },
    ]
}

#[test]
fn metrics_count_a_known_run_exactly_and_the_lag_reaches_zero() {
    let topic = unique("it-metrics");
    kafka::create_topic(&topic, 2);
    // 12 creates and 3 deletes (each with its tombstone) of distinct documents: no write
    // supersedes another, so every count is exact.
    let mut recs: Vec<Rec> = (0..12).map(create).collect();
    recs.extend((100..103).flat_map(delete));
    kafka::produce(&topic, &recs);
    let end = kafka::end_offsets(&topic, 2);

    let name = unique("it-metrics");
    let file = connector_file(&name, &es_connector(&topic, &servers().es, &[]));
    let mut w = Worker::start(&file);
    let url = w.rest_url();
    let group = format!("connect-{name}");
    crate::support::wait_until(Duration::from_secs(60), "offsets committed", || {
        (kafka::committed(&group, &topic, 2) == end).then_some(())
    });
    assert_eq!(es::sources(&topic).len(), 12);

    // The end offsets come with the consumer's statistics (every 5 s): wait for lag 0 on both
    // partitions, with the committed and end offsets it is made of.
    let text = crate::support::wait_until(Duration::from_secs(30), "lag 0", || {
        let text = rest::metrics(&url);
        let all_zero = (0..2).all(|p| {
            let l = [("connector", name.as_str()), ("partition", &p.to_string())];
            metric(&text, "cdc_sink_lag_records", &l) == Some(0.0)
                && metric(&text, "cdc_sink_end_offset", &l) == Some(end[&p] as f64)
        });
        all_zero.then_some(text)
    });
    let c = ("connector", name.as_str());
    let m = |n: &str, labels: &[(&str, &str)]| {
        let mut all = vec![c];
        all.extend_from_slice(labels);
        metric(&text, n, &all)
    };
    for p in 0..2 {
        let p_s = p.to_string();
        assert_eq!(
            m("cdc_sink_committed_offset", &[("partition", &p_s)]),
            Some(end[&p] as f64),
            "partition {p}"
        );
    }
    assert_eq!(m("cdc_sink_records_consumed_total", &[]), Some(18.0));
    assert_eq!(
        m("cdc_sink_records_written_total", &[("action", "index")]),
        Some(12.0)
    );
    assert_eq!(
        m("cdc_sink_records_written_total", &[("action", "delete")]),
        Some(3.0)
    );
    assert_eq!(
        m("cdc_sink_records_skipped_total", &[("reason", "tombstone")]),
        Some(3.0)
    );
    assert_eq!(
        m("cdc_sink_freshness_kafka_to_ack_seconds_count", &[]),
        Some(15.0)
    );
    // The sink's own part of each, counted for every write, is a part of the whole.
    assert_eq!(
        m("cdc_sink_freshness_received_to_ack_seconds_count", &[]),
        Some(15.0)
    );
    assert!(
        m("cdc_sink_freshness_received_to_ack_seconds_sum", &[]).unwrap()
            <= m("cdc_sink_freshness_kafka_to_ack_seconds_sum", &[]).unwrap()
    );
    // Only the creates carry source.ts_ms.
    assert_eq!(
        m("cdc_sink_freshness_source_to_ack_seconds_count", &[]),
        Some(12.0)
    );
    assert_eq!(m("cdc_sink_bulk_batch_records_sum", &[]), Some(15.0));
    assert!(m("cdc_sink_bulk_request_duration_seconds_count", &[]).unwrap() >= 1.0);
    assert_eq!(m("cdc_sink_records_failed_total", &[]), None);
    assert_eq!(
        m(
            "cdc_sink_task_state",
            &[("task", "0"), ("state", "RUNNING")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m("cdc_sink_task_state", &[("task", "0"), ("state", "FAILED")]),
        Some(0.0)
    );
    assert!(
        m("cdc_sink_rebalances_total", &[("kind", "assigned")]).unwrap() >= 1.0,
        "{text}"
    );
    assert_eq!(m("cdc_sink_stalls_total", &[]), Some(0.0));

    // Progress in task status (set by the 30-second report), and the status command's table.
    rest::wait_for(
        &url,
        &format!("/connectors/{name}/status"),
        Duration::from_secs(60),
        |s| s["tasks"][0]["progress"]["lag"] == json!(0),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cdc-sink"))
        .args(["status", "--url", &url])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with(&name))
        .unwrap_or_else(|| panic!("no row for {name}:\n{table}"))
        .split_whitespace()
        .collect();
    assert_eq!(
        &row[..5],
        [name.as_str(), "sink", "RUNNING", "0", "RUNNING"]
    );
    assert_eq!(row[6], "0", "lag column: {table}");
    assert!(w.stop().success());
}

/// Kafka's answer to each of a task's asynchronous commits reaches the task: a refused one is
/// taken back and committed again (`Offsets::commit_failed`), and the committed-offset gauge
/// moves with confirmed ones only. rust-rdkafka's own asynchronous commit asks librdkafka for no
/// answer, and a refusal went unnoticed. (And a record's leader epoch, which rust-rdkafka does
/// not give, is read.)
#[test]
fn kafka_answers_each_asynchronous_commit() {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use cdc_sink::connector::Subscription;
    use cdc_sink::source::{self, Consumer, RebalanceHandler};
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{CommitMode, Consumer as _};

    type Marks = Mutex<Vec<(String, i32, i64)>>;
    #[derive(Default)]
    struct Answers {
        assigned: AtomicBool,
        confirmed: Marks,
        failed: Marks,
    }
    impl RebalanceHandler for Answers {
        fn assigned(&self, _: &Consumer<Self>, _: &[(String, i32)]) {
            self.assigned.store(true, Ordering::Relaxed);
        }
        fn revoking(&self, _: &Consumer<Self>, _: &[(String, i32)], _: bool) {}
        fn commit_confirmed(&self, offsets: &[(String, i32, i64)]) {
            self.confirmed.lock().unwrap().extend_from_slice(offsets);
        }
        fn commit_failed(&self, offsets: &[(String, i32, i64)]) {
            self.failed.lock().unwrap().extend_from_slice(offsets);
        }
    }

    let topic = unique("it-commit-answers");
    kafka::create_topic(&topic, 1);
    let group = unique("it-commit-answers");
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", crate::support::servers::kafka())
        .set("group.id", &group)
        // librdkafka's default, `latest`, would skip the record when the partition's start is
        // looked up after it is produced (as `source::consumer_config` sets for every task).
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    let (consumer, _subscribed) = source::create(
        &config,
        Answers::default(),
        "it".into(),
        &Subscription::Topics(vec![topic.clone()]),
    )
    .unwrap();
    let answers = &consumer.context().handler;
    let answered = |n: usize| {
        crate::support::wait_until(Duration::from_secs(30), "Kafka's answer", || {
            let _ = consumer.poll(Duration::from_millis(100));
            let both =
                answers.confirmed.lock().unwrap().len() + answers.failed.lock().unwrap().len();
            (both == n).then_some(())
        })
    };
    crate::support::wait_until(Duration::from_secs(60), "the assignment", || {
        let _ = consumer.poll(Duration::from_millis(100));
        answers.assigned.load(Ordering::Relaxed).then_some(())
    });
    // The records carry the leader epoch that wrote them, which the task goes by to tell a
    // log cut and written again from records delivered twice (a topic's first leader: 0).
    kafka::produce(
        &topic,
        &[Rec {
            partition: 0,
            key: Some("k".into()),
            value: Some("v".into()),
        }],
    );
    let epoch =
        crate::support::wait_until(Duration::from_secs(30), "the record", || {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => Some(source::leader_epoch(&m)),
                _ => None,
            }
        });
    assert_eq!(epoch, Some(0));
    source::commit(
        &consumer,
        &[(topic.as_str().into(), 0, 0)],
        CommitMode::Async,
    )
    .unwrap();
    answered(1);
    assert_eq!(*answers.confirmed.lock().unwrap(), [(topic.clone(), 0, 0)]);
    assert_eq!(kafka::committed(&group, &topic, 1).get(&0), Some(&0));
    // Kafka refuses a commit for a topic it does not have.
    let missing = unique("it-commit-nowhere");
    source::commit(
        &consumer,
        &[(missing.as_str().into(), 0, 7)],
        CommitMode::Async,
    )
    .unwrap();
    answered(2);
    assert_eq!(*answers.failed.lock().unwrap(), [(missing, 0, 7)]);
}
