//! `cdc-sink druid-spec`: a Druid Kafka supervisor spec for each topic a `druid` connector
//! writes, ready to POST to Druid's `/druid/indexer/v1/supervisor` (`--submit` does that).
//!
//! The columns and their types come from the rows the connector writes for the last records of
//! its topics (up to [`SAMPLE`] per partition, decoded and mapped as the connector does):
//! integers are `long`, other numbers `double`, objects and arrays `json`, everything else —
//! strings, booleans, and the semantic types the decoder renders as text — `string`. The
//! timestamp is `__time` (milliseconds); the reader is `read_committed`, so with
//! `exactly.once` Druid ingests each change once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::Message;
use serde_json::{Value, json};

use crate::connector::{ConnectorSpec, SinkSpec};
use crate::decode::Decoder;
use crate::settings::Settings;
use crate::sink::SinkRecord;
use crate::sink::druid::row::{Mapped, Rows};

/// Records read from the end of each partition to learn the columns.
const SAMPLE: i64 = 200;
const TIMEOUT: Duration = Duration::from_secs(30);

/// A column's type, as Druid's `dimensionsSpec` names it; merged over the rows seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unknown,
    Long,
    Double,
    String,
    Json,
}

impl Kind {
    fn of(v: &Value) -> Kind {
        match v {
            Value::Null => Kind::Unknown,
            Value::Number(n) if n.is_i64() || n.is_u64() => Kind::Long,
            Value::Number(_) => Kind::Double,
            Value::Object(_) | Value::Array(_) => Kind::Json,
            Value::String(_) | Value::Bool(_) => Kind::String,
        }
    }

    fn merge(self, other: Kind) -> Kind {
        match (self, other) {
            (Kind::Unknown, k) | (k, Kind::Unknown) => k,
            (a, b) if a == b => a,
            (Kind::Long, Kind::Double) | (Kind::Double, Kind::Long) => Kind::Double,
            _ => Kind::String,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Long => "long",
            Kind::Double => "double",
            Kind::Json => "json",
            Kind::Unknown | Kind::String => "string",
        }
    }
}

/// The worker's Kafka properties (librdkafka's) that mean the same to Druid's Java consumer.
/// Never its credentials: the spec is also served over REST, and librdkafka's
/// `sasl.username`/`sasl.password` and `ssl.ca.location` are not Java's anyway (Java wants
/// `sasl.jaas.config` and a trust store, added to the spec by hand).
const SHARED_WITH_JAVA: &[(&str, &str)] = &[
    ("security.protocol", "security.protocol"),
    ("sasl.mechanism", "sasl.mechanism"),
    ("sasl.mechanisms", "sasl.mechanism"),
    (
        "ssl.endpoint.identification.algorithm",
        "ssl.endpoint.identification.algorithm",
    ),
    ("client.dns.lookup", "client.dns.lookup"),
];

fn consumer_properties(settings: &Settings) -> Value {
    let mut props = json!({
        "bootstrap.servers": settings.kafka.bootstrap_servers,
        "isolation.level": "read_committed",
    });
    for (k, v) in &settings.kafka.properties {
        if let Some((_, java)) = SHARED_WITH_JAVA.iter().find(|(ours, _)| ours == k) {
            // librdkafka turns host name checks off with `none`, Java with an empty value
            // (JSSE refuses `none` as an unknown algorithm).
            let v = match (*java, v.as_str()) {
                ("ssl.endpoint.identification.algorithm", "none") => "",
                _ => v,
            };
            props[*java] = json!(v);
        }
    }
    props
}

/// The supervisor specs of `spec` (a `druid` connector), one per output topic.
pub fn run(settings: &Settings, spec: &ConnectorSpec) -> Result<Vec<Value>, String> {
    let SinkSpec::Druid(cfg) = &spec.sink else {
        return Err("druid-spec works on druid connectors only".into());
    };
    let columns = sample(settings, spec, cfg)?;
    if columns.is_empty() {
        return Err(
            "no change in the connector's topics yet to learn the columns from: run druid-spec once Debezium has written some"
                .into(),
        );
    }
    let consumer_properties = consumer_properties(settings);
    Ok(columns
        .into_iter()
        .map(|(topic, cols)| {
            let dimensions: Vec<Value> = cols
                .into_iter()
                .filter(|(name, _)| name != "__time")
                .map(|(name, kind)| json!({"type": kind.name(), "name": name}))
                .collect();
            json!({
                "type": "kafka",
                "spec": {
                    "ioConfig": {
                        "type": "kafka",
                        "topic": topic,
                        "consumerProperties": consumer_properties,
                        "inputFormat": {"type": "json"},
                        "useEarliestOffset": true,
                    },
                    "tuningConfig": {"type": "kafka"},
                    "dataSchema": {
                        "dataSource": topic,
                        "timestampSpec": {"column": "__time", "format": "millis"},
                        // The columns seen, with their types, and any other Druid finds
                        // (a column added to the table later, a key of a JSON value first
                        // seen after the sample), typed as Druid discovers them: listed
                        // alone, a column not in the sample was dropped without a word.
                        "dimensionsSpec": {
                            "dimensions": dimensions,
                            "includeAllDimensions": true,
                            "useSchemaDiscovery": true,
                        },
                        "granularitySpec": {
                            "queryGranularity": "none",
                            "rollup": false,
                            "segmentGranularity": "day",
                        },
                    },
                },
            })
        })
        .collect())
}

/// POSTs each spec to Druid's overlord at `url` (`/druid/indexer/v1/supervisor`, which creates
/// or updates the supervisor of the spec's datasource); returns the supervisor ids.
pub fn submit(specs: &[Value], url: &str) -> Result<Vec<String>, String> {
    let endpoint = format!("{}/druid/indexer/v1/supervisor", url.trim_end_matches('/'));
    let runtime = crate::worker::runtime()?;
    runtime.block_on(async {
        let client = crate::tls::client_builder(Default::default())?
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        let mut ids = Vec::with_capacity(specs.len());
        for spec in specs {
            let topic = spec["spec"]["ioConfig"]["topic"].as_str().unwrap_or("?");
            let resp = client
                .post(&endpoint)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(spec.to_string())
                .send()
                .await
                .map_err(|e| format!("POST {endpoint} (topic {topic}): {e}"))?;
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            if !status.is_success() {
                return Err(format!("POST {endpoint} (topic {topic}): {status}: {body}"));
            }
            let id = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["id"].as_str().map(String::from))
                .ok_or_else(|| {
                    format!("POST {endpoint} (topic {topic}): unexpected answer {body}")
                })?;
            ids.push(id);
        }
        Ok(ids)
    })
}

/// Output topic → column → type, in the order columns first appear.
type Columns = BTreeMap<String, Vec<(String, Kind)>>;

/// Maps the last records of every partition and collects the columns of the rows.
fn sample(
    settings: &Settings,
    spec: &ConnectorSpec,
    cfg: &crate::sink::druid::config::DruidConfig,
) -> Result<Columns, String> {
    let (consumer, mut ends) = crate::source::reader(
        settings,
        spec,
        "druid-spec",
        |low, high| low.max(high - SAMPLE),
        TIMEOUT,
    )?;
    let mut decoder = Decoder::new(spec)?;
    let mut rows = Rows::new(std::sync::Arc::new(cfg.clone()));
    let mut columns = Columns::new();
    let started = Instant::now();
    while !ends.is_empty() && started.elapsed() < TIMEOUT {
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            crate::source::forget_reached(&consumer, &mut ends);
            continue;
        };
        let m = msg.map_err(|e| format!("reading the topics: {e}"))?;
        let k = (m.topic().to_string(), m.partition());
        if ends.get(&k).is_some_and(|end| m.offset() + 1 >= *end) {
            ends.remove(&k);
        }
        let at = || {
            format!(
                "topic {} partition {} offset {}",
                m.topic(),
                m.partition(),
                m.offset()
            )
        };
        let key = decoder
            .key(m.topic(), m.key())
            .map_err(|e| format!("{}: key: {e}", at()))?;
        let value = decoder
            .value(m.topic(), m.payload())
            .map_err(|e| format!("{}: {e}", at()))?;
        let routed = spec
            .transforms
            .route(m.topic(), m.timestamp().to_millis())
            .map_err(|e| format!("{}: {e}", at()))?;
        let record = SinkRecord {
            topic: routed.as_deref().unwrap_or(m.topic()),
            kafka_topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
            key: key.as_ref(),
            value: &value,
            received_ms: 0,
        };
        let Mapped::Row { topic, value, .. } =
            rows.map(&record).map_err(|e| format!("{}: {e}", at()))?
        else {
            continue;
        };
        let row: serde_json::Map<String, Value> =
            serde_json::from_slice(&value).map_err(|e| format!("{}: {e}", at()))?;
        let cols = columns.entry(topic.to_string()).or_default();
        for (name, v) in row {
            let kind = Kind::of(&v);
            match cols.iter_mut().find(|(n, _)| *n == name) {
                Some((_, k)) => *k = k.merge(kind),
                None => cols.push((name, kind)),
            }
        }
    }
    if !ends.is_empty() {
        return Err(format!(
            "could not read the end of {:?} within {TIMEOUT:?}",
            ends.keys()
        ));
    }
    Ok(columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submitting_builds_a_client_with_its_tls_set_up() {
        // No default TLS provider in unit tests: a client built without the shared set-up
        // (`tls::client_builder`) would panic here. No spec: nothing is sent.
        assert_eq!(submit(&[], "http://127.0.0.1:9"), Ok(Vec::new()));
    }

    #[test]
    fn the_consumer_properties_carry_no_credentials() {
        let mut settings = Settings::default();
        settings.kafka.bootstrap_servers = "kafka:9092".into();
        for (k, v) in [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", "sink"),
            ("sasl.password", "s3cret"),
            ("ssl.ca.location", "/etc/ca.pem"),
            ("ssl.key.password", "k3y"),
            ("ssl.endpoint.identification.algorithm", "none"),
        ] {
            settings.kafka.properties.insert(k.into(), v.into());
        }
        let props = consumer_properties(&settings);
        assert_eq!(
            props,
            json!({"bootstrap.servers": "kafka:9092", "isolation.level": "read_committed",
                "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                "ssl.endpoint.identification.algorithm": ""})
        );
        assert!(!props.to_string().contains("s3cret"));
    }

    #[test]
    fn column_types_merge_as_druid_can_hold_them() {
        assert_eq!(
            Kind::of(&json!(1)).merge(Kind::of(&json!(2.5))),
            Kind::Double
        );
        assert_eq!(
            Kind::of(&json!(null)).merge(Kind::of(&json!(3))),
            Kind::Long
        );
        assert_eq!(
            Kind::of(&json!(1)).merge(Kind::of(&json!("a"))),
            Kind::String
        );
        assert_eq!(Kind::of(&json!(true)).name(), "string");
        assert_eq!(Kind::of(&json!([1])).name(), "json");
        assert_eq!(Kind::Unknown.name(), "string");
    }
}
