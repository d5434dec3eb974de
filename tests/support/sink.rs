//! Sinks driven directly, without a task, for tests of what a sink hands back: built from a
//! connector config as a task builds them, fed changes decoded as a task decodes them.

use std::sync::Arc;
use std::time::Duration;

use cdc_sink::connector::{ConnectorConfig, ConnectorSpec, SinkSpec};
use cdc_sink::decode::{Decoder, Row, Value as Decoded};
use cdc_sink::sink::elasticsearch::ElasticsearchSink;
use cdc_sink::sink::{Ack, SinkRecord};
use serde_json::{Value, json};

/// The connector `{"name": name, "config": config}`, validated.
pub fn spec(name: &str, config: Value) -> ConnectorSpec {
    let config = json!({"name": name, "config": config});
    ConnectorSpec::validate(&ConnectorConfig::from_json(&config.to_string()).unwrap()).unwrap()
}

/// The Elasticsearch sink of `spec` (a stall after 1 s), on a runtime of its own that must
/// outlive it.
pub fn elasticsearch(spec: &ConnectorSpec) -> (ElasticsearchSink, tokio::runtime::Runtime) {
    let SinkSpec::Elasticsearch(cfg) = &spec.sink else {
        panic!("not an Elasticsearch connector")
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let metrics = Arc::new(cdc_sink::metrics::Registry::new().task(&spec.name, 0));
    let sink = ElasticsearchSink::new(
        Arc::new((**cfg).clone()),
        metrics,
        rt.handle().clone(),
        Duration::from_secs(1),
    )
    .unwrap();
    (sink, rt)
}

/// Row `id` of a PostgreSQL table created as `{"id": id, "name": name}` at LSN 100 + `id`,
/// decoded by `decoder` from `topic`: (key, value).
pub fn created(decoder: &mut Decoder, topic: &str, id: i64, name: Value) -> (Option<Row>, Decoded) {
    let envelope = json!({"before": null, "after": {"id": id, "name": name}, "op": "c",
        "source": {"connector": "postgresql", "lsn": 100 + id, "db": "d", "schema": "s", "table": "t"}});
    let value = decoder
        .value(topic, Some(envelope.to_string().as_bytes()))
        .unwrap();
    let key = decoder
        .key(topic, Some(json!({"id": id}).to_string().as_bytes()))
        .unwrap();
    (key, value)
}

/// The record at `offset` of partition 0 of `topic`, holding `key` and `value`.
pub fn record<'a>(
    topic: &'a str,
    offset: i64,
    key: &'a Option<Row>,
    value: &'a Decoded,
) -> SinkRecord<'a> {
    SinkRecord {
        topic,
        kafka_topic: topic,
        partition: 0,
        offset,
        // As every record of a Kafka topic has (the Druid sink refuses a row without a time).
        timestamp_ms: Some(1_700_000_000_000 + offset),
        key: key.as_ref(),
        value,
        received_ms: 0,
    }
}

/// The ack of `offset` in partition slot 0, first assignment.
pub fn ack(offset: i64) -> Ack {
    Ack {
        slot: 0,
        epoch: 0,
        offset,
    }
}
