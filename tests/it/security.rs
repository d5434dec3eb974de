//! Secured connections on the real servers: Kafka over SASL/SCRAM-SHA-512 and TLS (the
//! broker's SASL_SSL listener, `scripts/lib.sh`), Elasticsearch over HTTPS with basic auth and
//! with an API key (a TLS-terminating, credential-checking proxy in front of the real one), the
//! schema registry with basic auth; wrong credentials fail the task naming the URL and status.
//! No secret appears in the logs, REST responses, metrics or `cdc-sink status`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::history::{self, Options};
use crate::support::kafka::{self, Full, Rec};
use crate::support::registry::Registry;
use crate::support::rest;
use crate::support::secure::{
    Auth, SecureProxy, ca_bundle_file, ca_file, ca_fingerprint, self_signed_pem,
};
use crate::support::servers::{read_env, servers};
use crate::support::worker::{Worker, connector_file};
use crate::support::{avro, es, es_connector, unique, wait_converged, wait_until};

fn record(id: i64) -> Rec {
    Rec {
        partition: 0,
        key: Some(json!({"id": id}).to_string()),
        value: Some(
            json!({"before": null, "after": {"id": id, "name": format!("n{id}")}, "op": "c",
                "source": {"connector": "postgresql", "lsn": 1000 + id, "db": "d", "schema": "s", "table": "t"}})
            .to_string(),
        ),
    }
}

/// Everything a user could read from a worker: its log, the connector's config, status and
/// offsets over REST, `/metrics`, and `cdc-sink status`.
fn everything_shown(w: &Worker, url: &str, name: &str) -> String {
    let mut all = w.log_text();
    for path in [
        format!("/connectors/{name}"),
        format!("/connectors/{name}/config"),
        format!("/connectors/{name}/status"),
        format!("/connectors/{name}/tasks"),
        "/connectors?expand=status&expand=info".to_string(),
    ] {
        all.push_str(&rest::call(url, "GET", &path, None).1.to_string());
    }
    all.push_str(&rest::metrics(url));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cdc-sink"))
        .args(["status", "--url", url])
        .output()
        .unwrap();
    all.push_str(&String::from_utf8_lossy(&out.stdout));
    all
}

/// Waits until task 0 of connector `name` is FAILED; its trace.
fn failed_trace(url: &str, name: &str) -> String {
    let status = rest::wait_for(
        url,
        &format!("/connectors/{name}/status"),
        Duration::from_secs(60),
        |s| s["tasks"][0]["state"] == json!("FAILED"),
    );
    status["tasks"][0]["trace"].as_str().unwrap().to_string()
}

fn assert_no_secret(shown: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!shown.contains(s), "a secret was shown: {s}");
    }
}

/// A worker reading Kafka over the SASL_SSL listener as the test stack's SCRAM user with
/// `password`, running the connector in `file`.
fn sasl_worker(password: &str, file: &std::path::Path) -> Worker {
    let dir = &servers().dir;
    let user = read_env(dir, "kafka.env", "KAFKA_SCRAM_USER");
    let settings = std::env::temp_dir().join(format!("cdc-sink-sasl-{}.toml", fastrand::u32(..)));
    std::fs::write(
        &settings,
        format!(
            "[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\
             \"sasl.username\" = \"{user}\"\n\"sasl.password\" = \"{password}\"\n\
             \"ssl.ca.location\" = \"{}\"\n",
            ca_file()
        ),
    )
    .unwrap();
    let sasl = read_env(dir, "kafka.env", "KAFKA_SASL_SSL");
    Worker::start_configured(
        Some(&settings),
        &[&file.to_path_buf()],
        &[("CDC_SINK_KAFKA__BOOTSTRAP_SERVERS", &sasl)],
    )
}

#[test]
fn kafka_over_sasl_scram_and_tls_into_elasticsearch_over_https_with_basic_auth() {
    let scram_password = read_env(&servers().dir, "kafka.env", "KAFKA_SCRAM_PASSWORD");
    let es_password = format!("es-{}", fastrand::u64(..));
    let proxy = SecureProxy::start(Auth::Basic("elastic".into(), es_password.clone()));

    let topic = unique("it-secure");
    kafka::create_topic(&topic, 1);
    kafka::produce(&topic, &(0..20).map(record).collect::<Vec<_>>());
    // A record that is not JSON: its copy goes to the dead-letter queue over SASL_SSL too.
    kafka::produce_full(
        &topic,
        &Full {
            offset: 20,
            key: Some(b"{\"id\":20}".to_vec()),
            value: Some(b"not json".to_vec()),
            headers: Vec::new(),
            timestamp: None,
        },
    );
    let dlq = format!("{topic}-dlq");
    let name = unique("it-secure");
    let config = es_connector(
        &topic,
        &proxy.url,
        &[
            ("connection.username", "elastic"),
            ("connection.password", &es_password),
            ("elastic.https.ssl.ca.location", &ca_file()),
            ("connection.compression", "true"),
            ("errors.tolerance", "all"),
            ("errors.deadletterqueue.topic.name", &dlq),
            ("errors.deadletterqueue.topic.replication.factor", "1"),
        ],
    );
    let mut w = sasl_worker(&scram_password, &connector_file(&name, &config));
    let url = w.rest_url();
    let group = format!("connect-{name}");
    wait_until(Duration::from_secs(90), "every offset committed", || {
        (kafka::committed(&group, &topic, 1) == BTreeMap::from([(0, 21)])).then_some(())
    });
    assert_eq!(es::sources(&topic).len(), 20);
    assert_eq!(kafka::read_full(&dlq).len(), 1);
    assert!(proxy.forwarded.load(std::sync::atomic::Ordering::SeqCst) > 0);
    // The bulk bodies went gzipped (`connection.compression`), and Elasticsearch read them.
    assert!(proxy.gzipped.load(std::sync::atomic::Ordering::SeqCst) > 0);
    assert_eq!(proxy.refused.load(std::sync::atomic::Ordering::SeqCst), 0);
    // The worker really used the SASL_SSL listener: no other address was given to it.
    assert!(!w.log_text().contains(&servers().kafka));

    let shown = everything_shown(&w, &url, &name);
    assert_no_secret(&shown, &[&scram_password, &es_password]);
    assert!(w.stop().success());
}

#[test]
fn an_elasticsearch_api_key_works_and_wrong_credentials_fail_the_task_naming_url_and_status() {
    let key = format!("{}", fastrand::u64(..));
    let proxy = SecureProxy::start(Auth::ApiKey(key.clone()));
    let topic = unique("it-apikey");
    kafka::create_topic(&topic, 1);
    kafka::produce(&topic, &(0..10).map(record).collect::<Vec<_>>());
    // A CA file of two certificates, the one that verifies the proxy second.
    let base = [("elastic.https.ssl.ca.location", ca_bundle_file())];
    let with = |k: &str| {
        let mut opts: Vec<(&str, &str)> = base.iter().map(|(a, b)| (*a, b.as_str())).collect();
        opts.push(("connection.api.key", k));
        es_connector(&topic, &proxy.url, &opts)
    };
    let (good, bad) = (unique("it-apikey-good"), unique("it-apikey-bad"));
    let wrong = format!("wrong-{}", fastrand::u64(..));
    let (good_file, bad_file) = (
        connector_file(&good, &with(&key)),
        connector_file(&bad, &with(&wrong)),
    );
    let mut w = Worker::start_with(&[&good_file, &bad_file], &[]);
    let url = w.rest_url();
    wait_until(Duration::from_secs(60), "documents written", || {
        (es::sources(&topic).len() == 10).then_some(())
    });
    let trace = failed_trace(&url, &bad);
    assert!(
        trace.contains(&format!("POST {}/_bulk", proxy.url)) && trace.contains("HTTP 401"),
        "{trace}"
    );
    // Refused once per request in flight (one per lane, 5 by default), never retried: a wrong
    // key is not a failure that passes.
    let refused = proxy.refused.load(std::sync::atomic::Ordering::SeqCst);
    assert!((1..=5).contains(&refused), "{refused} refusals");
    assert_eq!(
        kafka::committed(&format!("connect-{bad}"), &topic, 1).get(&0),
        None,
        "nothing committed for the failed connector"
    );
    let shown = everything_shown(&w, &url, &good) + &everything_shown(&w, &url, &bad);
    assert_no_secret(&shown, &[&key, &wrong]);
    assert!(!w.stop().success(), "a task failed");
}

#[test]
fn avro_through_a_schema_registry_with_basic_auth() {
    let registry = Registry::start();
    let password = format!("sr-{}", fastrand::u64(..));
    let topic = unique("it-sr-auth");
    kafka::create_topic(&topic, 4);
    let h = history::generate(
        43,
        &Options {
            changes: 500,
            keys: 50,
            replay: 0,
            ..Options::default()
        },
    );
    let avro_records = avro::Encoder::new(&registry).records(&topic, &h.records);
    kafka::produce_bytes(&topic, &avro_records);
    // From now on (the schemas are registered): every request needs the credentials.
    registry.require_basic_auth("reader", &password);
    let opts = |user_info: &str| -> Value {
        let info = format!("reader:{user_info}");
        es_connector(
            &topic,
            &servers().es,
            &[
                ("key.converter", "avro"),
                ("value.converter", "avro"),
                ("key.converter.schema.registry.url", &registry.url),
                ("value.converter.schema.registry.url", &registry.url),
                ("key.converter.basic.auth.user.info", &info),
                ("value.converter.basic.auth.user.info", &info),
                ("behavior.on.null.values", "delete"),
            ],
        )
    };
    let (good, bad) = (unique("it-sr-good"), unique("it-sr-bad"));
    let wrong = format!("wrong-{}", fastrand::u64(..));
    let mut bad_config = opts(&wrong);
    // Even when errors are tolerated: refused credentials are not the record's fault.
    bad_config["errors.tolerance"] = json!("all");
    bad_config["topic.index.map"] = json!(format!("{topic}:{topic}-bad"));
    let (good_file, bad_file) = (
        connector_file(&good, &opts(&password)),
        connector_file(&bad, &bad_config),
    );
    let mut w = Worker::start_with(&[&good_file, &bad_file], &[]);
    let url = w.rest_url();
    wait_converged(
        &topic,
        &h.expected,
        &format!("connect-{good}"),
        4,
        Duration::from_secs(120),
    );
    let trace = failed_trace(&url, &bad);
    assert!(registry.unauthorized() >= 1);
    assert!(
        trace.contains(&registry.url) && trace.contains("answered 401"),
        "{trace}"
    );
    assert!(es::sources(&format!("{topic}-bad")).is_empty());
    let shown = everything_shown(&w, &url, &good) + &everything_shown(&w, &url, &bad);
    assert_no_secret(&shown, &[&password, &wrong]);
    assert!(!w.stop().success(), "a task failed");
}

#[test]
fn a_wrong_kafka_password_fails_the_task_naming_the_broker() {
    let wrong = format!("wrong-{}", fastrand::u64(..));
    let topic = unique("it-sasl-wrong");
    kafka::create_topic(&topic, 1);
    kafka::produce(&topic, &(0..5).map(record).collect::<Vec<_>>());
    let name = unique("it-sasl-wrong");
    let file = connector_file(&name, &es_connector(&topic, &servers().es, &[]));
    let mut w = sasl_worker(&wrong, &file);
    let sasl = read_env(&servers().dir, "kafka.env", "KAFKA_SASL_SSL");
    let url = w.rest_url();
    let trace = failed_trace(&url, &name);
    assert!(
        trace.contains(&format!("Kafka ({sasl}) refused this worker"))
            && trace.contains("uthenticat"),
        "{trace}"
    );
    assert!(es::sources(&topic).is_empty());
    let shown = everything_shown(&w, &url, &name);
    assert_no_secret(&shown, &[&wrong]);
    assert!(!w.stop().success(), "a task failed");
}

/// With no system trust store at all (as in a minimal container), a connector whose
/// Elasticsearch is `http` writes, and one over `https` verifies its server by its CA file alone:
/// the store is read at a first handshake, not when a client is built (src/tls/mod.rs). One over
/// `https` without a CA file fails, naming the missing store.
#[test]
fn without_a_system_trust_store_http_writes_and_https_trusts_its_ca_file() {
    let password = format!("es-{}", fastrand::u64(..));
    let proxy = SecureProxy::start(Auth::Basic("elastic".into(), password.clone()));
    let (plain, secure) = (unique("it-nostore-http"), unique("it-nostore-https"));
    for topic in [&plain, &secure] {
        kafka::create_topic(topic, 1);
        kafka::produce(topic, &(0..10).map(record).collect::<Vec<_>>());
    }
    let plain_file = connector_file(&plain, &es_connector(&plain, &servers().es, &[]));
    let secure_config = es_connector(
        &secure,
        &proxy.url,
        &[
            ("connection.username", "elastic"),
            ("connection.password", &password),
            ("elastic.https.ssl.ca.location", &ca_file()),
        ],
    );
    let secure_file = connector_file(&secure, &secure_config);
    // The same server without the CA file: nothing to trust it by.
    let untrusted = unique("it-nostore-untrusted");
    let mut untrusted_config = secure_config.clone();
    untrusted_config
        .as_object_mut()
        .unwrap()
        .remove("elastic.https.ssl.ca.location");
    untrusted_config["max.retries"] = json!("1");
    let untrusted_file = connector_file(&untrusted, &untrusted_config);
    let no_store = [
        ("SSL_CERT_FILE", "/nonexistent/cert.pem"),
        ("SSL_CERT_DIR", "/nonexistent"),
    ];
    let mut w = Worker::start_with(&[&plain_file, &secure_file, &untrusted_file], &no_store);
    let trace = failed_trace(&w.rest_url(), &untrusted);
    assert!(
        trace.contains("No CA certificates were loaded from the system"),
        "{trace}"
    );
    for topic in [&plain, &secure] {
        let group = format!("connect-{topic}");
        wait_until(Duration::from_secs(90), "every offset committed", || {
            (kafka::committed(&group, topic, 1) == BTreeMap::from([(0, 10)])).then_some(())
        });
        let docs = es::sources(topic);
        assert_eq!(docs.len(), 10, "{topic}: {docs:?}");
        assert_eq!(docs["3"]["name"], "n3", "{topic}");
    }
    assert!(proxy.forwarded.load(std::sync::atomic::Ordering::SeqCst) > 0);
    assert!(!w.stop().success(), "a task failed");
}

/// An Elasticsearch over `https` that presents its CA's certificate in its chain is trusted by
/// that CA's fingerprint alone (`elastic.https.ssl.ca.trusted.fingerprint`: no CA file, and a
/// system store holding only a certificate that signed nothing here). A wrong fingerprint, or a
/// server that does not present the CA, fails the task naming the option; a server presenting
/// the CA beside a certificate the CA did not sign fails it as an untrusted certificate. Each
/// fails at once, `max.retries` unset (retry without limit): a refused certificate is not
/// retried. Nothing is committed for any of them. Of two nodes, one refused and one trusted,
/// the trusted one takes every write: one node's refusal does not stop the sink.
#[test]
fn https_trusts_the_ca_whose_fingerprint_is_given() {
    let password = format!("es-{}", fastrand::u64(..));
    let auth = || Auth::Basic("elastic".into(), password.clone());
    let own = read_env(&servers().dir, "kafka.env", "TLS_SERVER_PEM");
    let foreign = self_signed_pem();
    let presenting = SecureProxy::start_presenting(auth(), &own, true);
    let alone = SecureProxy::start(auth());
    let unsigned = SecureProxy::start_presenting(auth(), &foreign, true);
    let fingerprint = ca_fingerprint();
    let mut wrong = fingerprint.clone();
    // The last digit changed.
    let last = wrong.pop().unwrap();
    wrong.push(if last == '0' { '1' } else { '0' });
    let two_nodes = format!("{},{}", unsigned.url, presenting.url);
    let mut files = Vec::new();
    let mut names = Vec::new();
    for (what, url, print) in [
        ("right", &presenting.url, &fingerprint),
        ("two-nodes", &two_nodes, &fingerprint),
        ("wrong", &presenting.url, &wrong),
        ("not-presented", &alone.url, &fingerprint),
        ("unsigned", &unsigned.url, &fingerprint),
    ] {
        let topic = unique(&format!("it-fingerprint-{what}"));
        kafka::create_topic(&topic, 1);
        kafka::produce(&topic, &(0..10).map(record).collect::<Vec<_>>());
        let config = es_connector(
            &topic,
            url,
            &[
                ("connection.username", "elastic"),
                ("connection.password", &password),
                ("elastic.https.ssl.ca.trusted.fingerprint", print),
            ],
        );
        files.push(connector_file(&topic, &config));
        names.push(topic);
    }
    // A store that loads and trusts nothing here: a missing one is retried, not a refusal.
    let store = std::path::Path::new(&foreign).with_file_name("cert.pem");
    let store = [
        ("SSL_CERT_FILE", store.to_str().unwrap()),
        ("SSL_CERT_DIR", "/nonexistent"),
    ];
    let mut w = Worker::start_with(&files.iter().collect::<Vec<_>>(), &store);
    for written in &names[..2] {
        wait_until(Duration::from_secs(90), "every offset committed", || {
            (kafka::committed(&format!("connect-{written}"), written, 1)
                == BTreeMap::from([(0, 10)]))
            .then_some(())
        });
        let docs = es::sources(written);
        assert_eq!(docs.len(), 10, "{written}: {docs:?}");
        assert_eq!(docs["3"]["name"], "n3", "{written}");
    }
    // The two-node connector's task is still running, the refusing node left out.
    let status = rest::call(
        &w.rest_url(),
        "GET",
        &format!("/connectors/{}/status", names[1]),
        None,
    )
    .1;
    assert_eq!(status["tasks"][0]["state"], "RUNNING", "{status}");
    for (i, refused) in names.iter().enumerate().skip(2) {
        let trace = failed_trace(&w.rest_url(), refused);
        let why = if i < 4 {
            "no certificate the server presented after its own has the SHA-256 fingerprint of elastic.https.ssl.ca.trusted.fingerprint"
        } else {
            "does not verify against the CA of elastic.https.ssl.ca.trusted.fingerprint: invalid peer certificate: UnknownIssuer"
        };
        assert!(trace.contains(why), "{refused}: {trace}");
        assert!(
            trace.contains("Elasticsearch's certificate was refused"),
            "{refused}: {trace}"
        );
        assert_eq!(
            kafka::committed(&format!("connect-{refused}"), refused, 1).get(&0),
            None,
            "{refused}: nothing committed"
        );
    }
    assert!(
        presenting
            .forwarded
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
    );
    assert!(!w.stop().success(), "a task failed");
}

/// A trust store missing at the first `https` handshake is read again at the next one: an
/// Elasticsearch over `https` trusted by the system's store alone (no CA file) is written to once
/// the store appears, without a restart. The verifier is kept only once it could be built
/// (src/tls/mod.rs, `Deferred`).
#[test]
fn a_trust_store_missing_at_the_first_handshake_is_read_again_at_the_next() {
    let password = format!("es-{}", fastrand::u64(..));
    let proxy = SecureProxy::start(Auth::Basic("elastic".into(), password.clone()));
    let topic = unique("it-latestore");
    kafka::create_topic(&topic, 1);
    kafka::produce(&topic, &(0..10).map(record).collect::<Vec<_>>());
    let mut config = es_connector(
        &topic,
        &proxy.url,
        &[
            ("connection.username", "elastic"),
            ("connection.password", &password),
        ],
    );
    config["retry.backoff.ms"] = json!("100");
    config["max.retry.backoff.ms"] = json!("500");
    let file = connector_file(&topic, &config);
    let store = std::env::temp_dir().join(format!("{topic}-store.pem"));
    let _ = std::fs::remove_file(&store);
    let store_name = store.to_str().unwrap();
    let w = Worker::start_with(
        &[&file],
        &[
            ("SSL_CERT_FILE", store_name),
            ("SSL_CERT_DIR", "/nonexistent"),
        ],
    );
    wait_until(
        Duration::from_secs(60),
        "a handshake without a store",
        || {
            w.log_text()
                .contains("No CA certificates were loaded from the system")
                .then_some(())
        },
    );
    assert_eq!(proxy.forwarded.load(std::sync::atomic::Ordering::SeqCst), 0);
    // Written whole under another name, then renamed: the worker never reads half a file.
    let part = store.with_extension("part");
    std::fs::copy(ca_file(), &part).unwrap();
    std::fs::rename(&part, &store).unwrap();
    let group = format!("connect-{topic}");
    wait_until(Duration::from_secs(60), "every offset committed", || {
        (kafka::committed(&group, &topic, 1) == BTreeMap::from([(0, 10)])).then_some(())
    });
    let docs = es::sources(&topic);
    assert_eq!(docs.len(), 10, "{docs:?}");
    assert_eq!(docs["7"]["name"], "n7");
    assert!(proxy.forwarded.load(std::sync::atomic::Ordering::SeqCst) > 0);
    assert!(w.stop().success(), "the worker stopped with a failed task");
    let _ = std::fs::remove_file(&store);
}
