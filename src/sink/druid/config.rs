//! The Druid connector's options.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::connector::options::{OptionDef, Options};
use crate::connector::transforms::Transforms;

/// Every option of the Druid connector (beyond the common ones). The README lists exactly these.
pub const OPTIONS: &[OptionDef] = &[
    OptionDef {
        name: "druid.topic",
        default: Some("druid.${topic}"),
        doc: "The topic the rows go to; `${topic}` is the record's topic (after any router).",
    },
    OptionDef {
        name: "flatten.separator",
        default: Some("_"),
        doc: "Joins the names of nested fields into one column name (`address` `{\"city\"}` → `address_city`).",
    },
    OptionDef {
        name: "druid.timestamp.field",
        default: Some("source.ts_ms"),
        doc: "What `__time` is: `source.ts_ms` (when the source committed the change), `ts_ms` (when Debezium processed it) or `kafka` (the record's Kafka timestamp). Absent on a record: its Kafka timestamp.",
    },
    OptionDef {
        name: "pk.fields",
        default: None,
        doc: "Row columns that make the row key when a record has no key (comma-separated, in order).",
    },
    OptionDef {
        name: "key.separator",
        default: Some("|"),
        doc: "Joins the values of a composite key into one row key, in key order.",
    },
    OptionDef {
        name: "exactly.once",
        default: Some("true"),
        doc: "`true`: each task writes its rows and commits the consumed offsets in one Kafka transaction, so a `read_committed` reader (Druid's default) sees every change exactly once across crashes and rebalances; needs a Kafka cluster with transactions (a task that cannot start one fails and says so). `false`: at least once (an idempotent producer; offsets committed after the broker acknowledged the rows: a crash can write a row twice, never lose one).",
    },
    OptionDef {
        name: "transaction.max.records",
        default: Some("10000"),
        doc: "With `exactly.once`: a transaction is committed once it holds about this many rows (checked every 256 records)…",
    },
    OptionDef {
        name: "transaction.max.ms",
        default: Some("1000"),
        doc: "…or once it has been open this long, whichever comes first (and at every offset commit, `worker.offset_flush_interval_ms`). Rows become visible to `read_committed` readers when their transaction commits. Must be below the producer's `transaction.timeout.ms` (60 s; `producer.override.transaction.timeout.ms`).",
    },
    OptionDef {
        name: "flush.timeout.ms",
        default: Some("10000"),
        doc: "How long stopping or a rebalance waits for rows in flight to be acknowledged.",
    },
    OptionDef {
        name: "producer.override.<property>",
        default: None,
        doc: "Any librdkafka producer property for this connector (e.g. `producer.override.compression.type`), checked when the config is, as `consumer.override.*`.",
    },
];

/// What `__time` is taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeField {
    SourceTs,
    DebeziumTs,
    Kafka,
}

#[derive(Debug, Clone)]
pub struct DruidConfig {
    /// `druid.topic`, with `${topic}` to replace.
    pub topic: String,
    pub separator: String,
    pub time: TimeField,
    pub pk_fields: Vec<String>,
    pub key_separator: String,
    /// `ExtractField$Key`: the row key is this field of the key.
    pub key_field: Option<String>,
    pub producer_overrides: BTreeMap<String, String>,
    pub flush_timeout: Duration,
    /// Rows and offsets in one transaction per commit.
    pub exactly_once: bool,
    /// A transaction is committed at this many rows…
    pub txn_max_records: usize,
    /// …or this old.
    pub txn_max: Duration,
}

impl DruidConfig {
    pub fn read(o: &Options<'_>, transforms: &Transforms) -> DruidConfig {
        let time = match o.choice(
            "druid.timestamp.field",
            &["source.ts_ms", "ts_ms", "kafka"],
            "source.ts_ms",
        ) {
            "ts_ms" => TimeField::DebeziumTs,
            "kafka" => TimeField::Kafka,
            _ => TimeField::SourceTs,
        };
        let exactly_once = o.bool("exactly.once", true);
        let txn_max_records = o.at_least("transaction.max.records", 10_000usize, 1);
        let txn_max = Duration::from_millis(o.at_least("transaction.max.ms", 1_000u64, 1));
        if exactly_once {
            // Rows of a transaction are committed with the offsets the consumer's group
            // commits; a consumer reading uncommitted offsets would not wait for them (KIP-447).
            if o.get("consumer.override.isolation.level") == Some("read_uncommitted") {
                o.error(
                    "consumer.override.isolation.level",
                    "must stay read_committed with exactly.once",
                );
            }
            // The broker aborts a transaction older than transaction.timeout.ms.
            let timeout = o
                .get("producer.override.transaction.timeout.ms")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(60_000);
            if txn_max.as_millis() as u64 >= timeout {
                o.error(
                    "transaction.max.ms",
                    format!(
                        "must be below the producer's transaction.timeout.ms ({timeout} ms), or every transaction is aborted"
                    ),
                );
            }
        }
        if transforms.unwrap.is_some() {
            o.error(
                "transforms",
                "ExtractNewRecordState cannot be used with the druid connector: a row carries the change's op, version and time, which that transform removes",
            );
        }
        let topic = o.string("druid.topic", "druid.${topic}");
        if topic.trim().is_empty() {
            o.error("druid.topic", "must not be empty");
        }
        let producer_overrides = o.producer_overrides();
        DruidConfig {
            topic,
            separator: o.raw("flatten.separator").unwrap_or_else(|| "_".into()),
            time,
            pk_fields: o.list("pk.fields"),
            key_separator: crate::sink::identity::key_separator(o),
            key_field: transforms.key_field.clone(),
            producer_overrides,
            flush_timeout: Duration::from_millis(o.at_least("flush.timeout.ms", 10_000u64, 1)),
            exactly_once,
            txn_max_records,
            txn_max,
        }
    }

    /// The output topic of records of `topic`.
    pub fn topic_of(&self, topic: &str) -> String {
        self.topic.replace("${topic}", topic)
    }
}
