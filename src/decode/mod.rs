//! Envelope decoding: Kafka record bytes → one [`ChangeEvent`] model.
//!
//! Every converter (JSON now; Avro through a schema registry next) produces the same model:
//! row images as compact JSON text with Debezium's semantic types already decoded (DESIGN §2),
//! the `source` block with the fields sinks need, and the key as JSON text. Sinks never see the
//! wire format.

pub mod json;
mod mongodb;
pub mod row;
pub mod schema;
pub mod semantic;
pub mod source;

pub use row::Row;
pub use source::Source;

/// A decode failure; the task adds topic/partition/offset when it reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

impl DecodeError {
    pub fn new(msg: impl Into<String>) -> Self {
        DecodeError(msg.into())
    }
}

/// Debezium's `op`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `r`: a row read by a snapshot.
    Read,
    /// `c`
    Create,
    /// `u`
    Update,
    /// `d`
    Delete,
    /// `t`: the table was truncated.
    Truncate,
    /// `m`: a logical decoding message (PostgreSQL).
    Message,
}

impl Op {
    pub fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "r" => Op::Read,
            "c" => Op::Create,
            "u" => Op::Update,
            "d" => Op::Delete,
            "t" => Op::Truncate,
            "m" => Op::Message,
            _ => return None,
        })
    }

    pub fn code(self) -> &'static str {
        match self {
            Op::Read => "r",
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Truncate => "t",
            Op::Message => "m",
        }
    }
}

/// One row change, whatever the wire format was.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    pub op: Op,
    /// The row before the change (updates with a full replica identity, deletes).
    pub before: Option<Row>,
    /// The row after the change (reads, creates, updates).
    pub after: Option<Row>,
    pub source: Option<Source>,
    /// When Debezium processed the change.
    pub ts_ms: Option<i64>,
}

/// Why a record carries no row change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    SchemaChange,
    Heartbeat,
    TransactionMetadata,
}

impl Skip {
    pub fn name(self) -> &'static str {
        match self {
            Skip::SchemaChange => "schema_change",
            Skip::Heartbeat => "heartbeat",
            Skip::TransactionMetadata => "transaction_metadata",
        }
    }
}

/// A decoded record value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Change(ChangeEvent),
    /// A null value (follows each delete).
    Tombstone,
    /// Not a row change: counted, never written.
    Skipped(Skip),
}

/// How decimals and bit strings are written (connector options `decimal.format`, `bits.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    /// `decimal.format=number`: decimals as JSON numbers instead of exact strings.
    pub decimal_as_number: bool,
    /// `bits.format=number`: bit strings of at most 63 bits as numbers instead of base64.
    pub bits_as_number: bool,
}

/// How a connector decodes its records' keys.
#[derive(Debug)]
enum KeyFormat {
    Json(json::JsonConverter),
    /// `StringConverter`: the key bytes are the text of the id.
    String,
}

/// The key and value converters of one task.
#[derive(Debug)]
pub struct Decoder {
    key: KeyFormat,
    value: json::JsonConverter,
}

impl Decoder {
    pub fn new(spec: &crate::connector::ConnectorSpec) -> Decoder {
        use crate::connector::ConverterKind;
        let json = |k: ConverterKind| match k {
            ConverterKind::Json { schemas_enable } => {
                json::JsonConverter::new(spec.decode, schemas_enable)
            }
            ConverterKind::String => json::JsonConverter::new(spec.decode, None),
        };
        let key = match spec.key_converter {
            ConverterKind::String => KeyFormat::String,
            k => KeyFormat::Json(json(k)),
        };
        Decoder {
            key,
            value: json(spec.value_converter),
        }
    }

    /// The record key as JSON text; `None` for a record without key.
    pub fn key(&mut self, topic: &str, bytes: Option<&[u8]>) -> Result<Option<Row>, DecodeError> {
        let Some(bytes) = bytes.filter(|b| !b.is_empty()) else {
            return Ok(None);
        };
        match &mut self.key {
            KeyFormat::Json(c) => c.key(topic, bytes).map(Some),
            KeyFormat::String => {
                let text = std::str::from_utf8(bytes)
                    .map_err(|e| DecodeError::new(format!("key is not UTF-8 text: {e}")))?;
                let json =
                    serde_json::to_string(text).map_err(|e| DecodeError::new(e.to_string()))?;
                Ok(Some(Row::from_json(&json)))
            }
        }
    }

    pub fn value(&mut self, topic: &str, bytes: Option<&[u8]>) -> Result<Value, DecodeError> {
        self.value.value(topic, bytes)
    }
}
