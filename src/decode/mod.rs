//! Envelope decoding: Kafka record bytes → one [`ChangeEvent`] model.
//!
//! Every converter (JSON, and Avro through a schema registry) produces the same model:
//! row images as compact JSON text with Debezium's semantic types already decoded (docs/design.md),
//! the `source` block with the fields sinks need, and the key as JSON text. Sinks never see the
//! wire format.

pub mod avro;
pub mod json;
pub mod mongodb;
pub mod row;
pub mod schema;
pub mod semantic;
pub mod source;

pub use row::Row;
pub use source::Source;

/// `s` cut after 200 characters, for an error message: a record's value quoted whole could be
/// megabytes in a log line, a task's trace and a dead-letter header.
pub fn excerpt(s: &str) -> &str {
    match s.char_indices().nth(200) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A decode failure; the task adds topic/partition/offset when it reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    pub message: String,
    /// Nothing is wrong with the record: something decoding needs (the schema registry) is
    /// unavailable. Try the same record again later.
    pub retry: bool,
    /// Nothing is wrong with the record either: a service decoding needs refused this worker
    /// (the schema registry answered 401 or 403). The task fails, whatever `errors.tolerance`
    /// says.
    pub refused: bool,
}

impl DecodeError {
    /// The record cannot be decoded.
    pub fn new(msg: impl Into<String>) -> Self {
        DecodeError {
            message: msg.into(),
            retry: false,
            refused: false,
        }
    }

    /// A service decoding needs refused this worker's credentials.
    pub fn refused(msg: impl Into<String>) -> Self {
        DecodeError {
            message: msg.into(),
            retry: false,
            refused: true,
        }
    }

    /// Decoding must wait for something unavailable.
    pub fn unavailable(msg: impl Into<String>) -> Self {
        DecodeError {
            message: msg.into(),
            retry: true,
            refused: false,
        }
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
    /// The row before a delete (its id when the record has no key, its last content for soft
    /// deletes). Left out of other changes, for which no sink reads it: decoding it cost as
    /// much as the after image (docs/performance-log.md).
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

/// A Debezium envelope's decoded parts → the decoded value (shared by the converters).
/// `source` reads the `source` block, told whether the event is a snapshot read.
pub(crate) fn change(
    op: &str,
    before: Option<Row>,
    after: Option<Row>,
    source: impl FnOnce(bool) -> Result<Option<Source>, DecodeError>,
    ts_ms: Option<i64>,
) -> Result<Value, DecodeError> {
    let op =
        Op::parse(op).ok_or_else(|| DecodeError::new(format!("unknown Debezium op `{op}`")))?;
    if matches!(op, Op::Read | Op::Create | Op::Update) && after.is_none() {
        return Err(DecodeError::new(format!(
            "op `{}` without an `after` image",
            op.code()
        )));
    }
    let before = before.filter(|_| op == Op::Delete);
    let source = source(op == Op::Read)?;
    Ok(Value::Change(ChangeEvent {
        op,
        before,
        after,
        source,
        ts_ms,
    }))
}

/// Records Debezium writes beside row changes, known by their schema name: Debezium's own
/// (`io.debezium.connector.<connector or common>.<kind>`), not another producer's record of
/// the same short name, which is refused as not a change event rather than skipped.
pub(crate) fn skip_by_schema_name(name: &str) -> Option<Skip> {
    if !name.starts_with("io.debezium.") {
        None
    } else if name.ends_with(".SchemaChangeValue") {
        Some(Skip::SchemaChange)
    } else if name.ends_with(".TransactionMetadataValue") {
        Some(Skip::TransactionMetadata)
    } else if name.ends_with(".Heartbeat") {
        Some(Skip::Heartbeat)
    } else {
        None
    }
}

/// How decimals and bit strings are written (connector options `decimal.format`, `bits.format`),
/// and what of the record is kept beside the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    /// `decimal.format=number`: decimals as JSON numbers instead of exact strings.
    pub decimal_as_number: bool,
    /// `bits.format=number`: bit strings of at most 63 bits as numbers instead of base64.
    pub bits_as_number: bool,
    /// Keep the whole `source` block as JSON ([`Source::json`]): only the Elasticsearch sink's
    /// `add.fields` naming `source` fields reads it. Copying it for every record cost about 200
    /// instructions (docs/performance-log.md).
    pub keep_source: bool,
}

/// One role's converter (Kafka Connect makes one per role: keys, values).
#[derive(Debug)]
enum Converter {
    Json(json::JsonConverter),
    Avro(avro::AvroConverter),
    /// `StringConverter` (keys only): the key bytes are the text of the id.
    String,
}

impl Converter {
    fn new(kind: &crate::connector::ConverterKind, opts: Options) -> Result<Converter, String> {
        use crate::connector::ConverterKind;
        Ok(match kind {
            ConverterKind::Json { schemas_enable } => {
                Converter::Json(json::JsonConverter::new(opts, *schemas_enable))
            }
            ConverterKind::String => Converter::String,
            ConverterKind::Avro {
                registry_urls,
                user_info,
            } => {
                let registry = avro::registry::shared(registry_urls, user_info.as_deref())?;
                Converter::Avro(avro::AvroConverter::new(registry, opts))
            }
        })
    }

    fn take_waited(&mut self) -> bool {
        match self {
            Converter::Avro(c) => c.take_waited(),
            Converter::Json(_) | Converter::String => false,
        }
    }
}

/// The key and value converters of one task.
#[derive(Debug)]
pub struct Decoder {
    key: Converter,
    value: Converter,
}

impl Decoder {
    pub fn new(spec: &crate::connector::ConnectorSpec) -> Result<Decoder, String> {
        Ok(Decoder {
            key: Converter::new(&spec.key_converter, spec.decode)?,
            value: Converter::new(&spec.value_converter, spec.decode)?,
        })
    }

    /// The record key as JSON text; `None` for a record without key.
    pub fn key(&mut self, topic: &str, bytes: Option<&[u8]>) -> Result<Option<Row>, DecodeError> {
        // An Avro key of no bytes is not in the wire format (Confluent's deserializer refuses
        // it); a JSON or string one is read as no key.
        let Some(bytes) = bytes.filter(|b| !b.is_empty() || matches!(self.key, Converter::Avro(_)))
        else {
            return Ok(None);
        };
        match &mut self.key {
            Converter::Json(c) => c.key(topic, bytes).map(Some),
            Converter::Avro(c) => c.key(bytes).map(Some),
            Converter::String => {
                let text = std::str::from_utf8(bytes)
                    .map_err(|e| DecodeError::new(format!("key is not UTF-8 text: {e}")))?;
                let json =
                    serde_json::to_string(text).map_err(|e| DecodeError::new(e.to_string()))?;
                Ok(Some(Row::from_json(&json)))
            }
        }
    }

    /// Whether decoding waited for the schema registry (a schema not seen before) since the
    /// last call: a clock read before it does not say when decoding ended.
    pub fn waited(&mut self) -> bool {
        let key = self.key.take_waited();
        self.value.take_waited() || key
    }

    pub fn value(&mut self, topic: &str, bytes: Option<&[u8]>) -> Result<Value, DecodeError> {
        match &mut self.value {
            Converter::Json(c) => c.value(topic, bytes),
            Converter::Avro(c) => c.value(bytes),
            Converter::String => Err(DecodeError::new("values cannot use the string converter")),
        }
    }
}
