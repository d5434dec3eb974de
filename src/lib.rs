//! cdc-sink: a Kafka Connect-style sink worker for Debezium change events.
//!
//! The data path (docs/design.md), one module per stage:
//!
//! * [`settings`] — worker settings (figment: defaults → TOML → env);
//! * [`connector`] — connector configs: parsing, placeholders, validation, transforms;
//! * [`serve`] — `cdc-sink run`: the worker process; [`rest`] — the REST API (Kafka
//!   Connect's); [`herder`] — connectors' configs and target states, kept in the state file
//!   (standalone) or shared through Kafka topics (distributed);
//! * [`worker`] — runs connectors' tasks; [`task`] — one task's poll → decode → sink → commit loop;
//! * [`source`] — the Kafka consumer, rebalances, per-partition offset watermarks;
//! * [`decode`] — Debezium envelopes (JSON) → one `ChangeEvent` model, semantic types decoded;
//! * [`sink`] — the `Sink` trait and the Elasticsearch sink (mapping, batching, bulk, retry);
//! * [`metrics`] — every metric (Prometheus), defined once; [`status`] — `cdc-sink status`;
//! * [`verify`] — `cdc-sink verify`: replay a connector's topics and compare with its indices;
//! * [`rebuild`] — `cdc-sink rebuild`: rebuild a connector's indices behind their aliases;
//! * [`druid_spec`] — `cdc-sink druid-spec`: Druid supervisor specs for a `druid` connector;
//! * [`tls`] — the TLS connector the HTTP clients share, built once per process;
//! * [`deliveries`] — waiting for a Kafka producer's delivery reports (Druid, dead-letter queue).

pub mod backoff;
pub mod connector;
pub mod dead_letter;
pub mod decode;
pub mod deliveries;
pub mod druid_spec;
pub mod herder;
pub mod metrics;
pub mod rebuild;
pub mod rest;
pub mod serve;
pub mod settings;
pub mod sink;
pub mod source;
pub mod status;
pub mod task;
pub mod tls;
pub mod verify;
pub mod worker;

/// The hash map of hot paths: a fast, DoS-resistant-enough hasher for keys we produce ourselves
/// (topic names, document ids).
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
