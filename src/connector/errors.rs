//! Kafka Connect's error-handling options (`errors.*`), and the Confluent Elasticsearch sink's
//! `drop.invalid.message`: what a task does with a record it cannot decode or map, or that
//! Elasticsearch rejects as malformed. Retryable failures (Elasticsearch or the schema
//! registry unavailable) are never tolerated: they are retried, and nothing after them is
//! committed. README "Errors and the dead-letter queue" explains each option.

use std::collections::BTreeMap;
use std::time::Duration;

use super::OptionDef;
use super::options::Options;

/// The options of this file, as `GET /connector-plugins/{p}/config` lists them.
pub const OPTIONS: &[OptionDef] = &[
    OptionDef {
        name: "errors.tolerance",
        default: Some("none"),
        doc: "`none`: a record that cannot be decoded or mapped fails the task. `all`: it is skipped — written to the dead-letter queue when `errors.deadletterqueue.topic.name` is set — and the task goes on. Never applies to retryable failures.",
    },
    OptionDef {
        name: "errors.deadletterqueue.topic.name",
        default: None,
        doc: "With `errors.tolerance=all`: the topic failed records are written to, unchanged (key, value, headers, timestamp); created if missing; never one the connector reads. A record's offset is committed only once Kafka has acknowledged its copy.",
    },
    OptionDef {
        name: "errors.deadletterqueue.topic.replication.factor",
        default: Some("3"),
        doc: "Replication factor of the dead-letter queue topic when cdc-sink creates it (1 partition). -1: the broker's default.",
    },
    OptionDef {
        name: "errors.deadletterqueue.context.headers.enable",
        default: Some("false"),
        doc: "Add Kafka Connect's `__connect.errors.*` headers (topic, partition, offset, connector.name, task.id, stage, class.name, exception.class.name, exception.message, exception.stacktrace) after the record's own.",
    },
    OptionDef {
        name: "producer.override.<property>",
        default: None,
        doc: "Elasticsearch connector: any librdkafka producer property for the dead-letter queue's producer (e.g. `producer.override.compression.type`), as Kafka Connect applies a sink connector's to its dead-letter producer; checked when the config is, as `consumer.override.*`. `enable.idempotence`, `acks` and `transactional.id` are cdc-sink's. The Druid connector's are its rows' producer's (its options below); its dead-letter producer takes the worker's `[kafka.properties]`.",
    },
    OptionDef {
        name: "errors.log.enable",
        default: Some("false"),
        doc: "Log each tolerated failure (stage, record coordinates, reason) at ERROR level, a document skipped under `behavior.on.malformed.documents` among them.",
    },
    OptionDef {
        name: "errors.log.include.messages",
        default: Some("false"),
        doc: "With `errors.log.enable`: also log the record's key, value and headers.",
    },
    OptionDef {
        name: "errors.retry.timeout",
        default: Some("-1"),
        doc: "Milliseconds a record waiting on an unavailable dependency (the schema registry) is retried before the task fails (the last attempt made when the time is up); 0: not retried at all, the task fails at once; -1: without limit. Kafka Connect's default is 0; cdc-sink never gives up by default, since nothing after the record is committed while it waits.",
    },
    OptionDef {
        name: "errors.retry.delay.max.ms",
        default: Some("60000"),
        doc: "The longest wait between two attempts at such a record (the waits double from 200 ms).",
    },
];

/// The error-handling choices of one connector.
#[derive(Debug, Clone, Default)]
pub struct ErrorPolicy {
    /// `errors.tolerance=all`.
    pub tolerate: bool,
    /// Where tolerated records go; `None`: they are dropped (counted, logged per the options).
    pub dead_letter: Option<DeadLetterConfig>,
    /// `errors.log.enable`, `errors.log.include.messages`.
    pub log: bool,
    pub log_messages: bool,
    /// `errors.retry.timeout`; `None`: retried without limit.
    pub retry_timeout: Option<Duration>,
    /// `errors.retry.delay.max.ms`.
    pub retry_delay_max: Duration,
    /// `drop.invalid.message` (Elasticsearch): a record that cannot be mapped is logged and
    /// skipped, whatever `errors.tolerance` says.
    pub drop_invalid: bool,
}

/// The dead-letter queue of a connector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterConfig {
    pub topic: String,
    pub replication_factor: i32,
    pub context_headers: bool,
    /// `producer.override.*` for the queue's producer (a connector without a producer of its
    /// own, as Kafka Connect applies them to a sink's dead-letter producer).
    pub producer_overrides: BTreeMap<String, String>,
}

impl ErrorPolicy {
    /// Reads the options; `drop_invalid_allowed`: the connector has `drop.invalid.message`;
    /// `overrides_for_queue`: its `producer.override.*` are the dead-letter producer's.
    pub fn read(
        o: &Options<'_>,
        drop_invalid_allowed: bool,
        overrides_for_queue: bool,
    ) -> ErrorPolicy {
        let tolerate = o.choice("errors.tolerance", &["none", "all"], "none") == "all";
        let topic = o
            .get("errors.deadletterqueue.topic.name")
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let replication_factor = o.parse("errors.deadletterqueue.topic.replication.factor", 3i32);
        if replication_factor == 0 || replication_factor < -1 {
            o.error(
                "errors.deadletterqueue.topic.replication.factor",
                "must be at least 1, or -1 for the broker's default",
            );
        }
        let context_headers = o.bool("errors.deadletterqueue.context.headers.enable", false);
        let producer_overrides = if overrides_for_queue {
            o.producer_overrides()
        } else {
            BTreeMap::new()
        };
        let retry_timeout = o.parse("errors.retry.timeout", -1i64);
        if retry_timeout < -1 {
            o.error(
                "errors.retry.timeout",
                "must be -1 (no limit) or at least 0",
            );
        }
        ErrorPolicy {
            tolerate,
            // With `none` the first failing record fails the task: a queue would never be used.
            dead_letter: topic.filter(|_| tolerate).map(|t| DeadLetterConfig {
                topic: t.to_string(),
                replication_factor,
                context_headers,
                producer_overrides,
            }),
            log: o.bool("errors.log.enable", false),
            log_messages: o.bool("errors.log.include.messages", false),
            retry_timeout: u64::try_from(retry_timeout).ok().map(Duration::from_millis),
            retry_delay_max: Duration::from_millis(o.at_least(
                "errors.retry.delay.max.ms",
                60_000u64,
                1,
            )),
            drop_invalid: drop_invalid_allowed && o.bool("drop.invalid.message", false),
        }
    }

    /// Whether a failure at `stage` is skipped instead of failing the task.
    pub fn tolerates(&self, stage: Stage) -> bool {
        self.tolerate || (stage == Stage::TaskPut && self.drop_invalid)
    }
}

/// Where in the data path a record failed (Kafka Connect's stage names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    KeyConverter,
    ValueConverter,
    /// A transform refused the record (`TimestampRouter` without a timestamp).
    Transformation,
    /// Mapping the change to a write, or the write rejected by the sink as malformed.
    TaskPut,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::KeyConverter => "KEY_CONVERTER",
            Stage::ValueConverter => "VALUE_CONVERTER",
            Stage::Transformation => "TRANSFORMATION",
            Stage::TaskPut => "TASK_PUT",
        }
    }
}
