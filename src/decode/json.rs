//! The JSON converter: Debezium envelopes as Kafka Connect's JsonConverter writes them.
//!
//! Accepted values: `{"schema":…, "payload":{…}}` (`schemas.enable=true`), the bare payload
//! (`schemas.enable=false`), `{"schema":null,"payload":…}` and `{"payload":…}`. An envelope is
//! read in one pass by a reader of our own (`by_hand`), or by serde in one pass (`one_pass`)
//! when that reader gives up, or, when that refuses it too, into borrowed raw slices, which
//! names what is wrong. Only fields whose schema names a semantic type are re-encoded, the rest
//! is copied. A topic's schema text is compared with the last one seen and compiled only when
//! it changes.

use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::row::{
    Row, flat_object, for_each_field, some_raw, some_str, unquote, write_json_str as write_str,
};
use super::schema::StructConv;
use super::schema::{ConnectSchema, Conv};
use super::semantic;
use super::source::Inline;

mod by_hand;
mod one_pass;
use super::{DecodeError, Options, Skip, Source, Value, mongodb};

/// Decodes keys or values of one connector (Kafka Connect makes one converter per role).
#[derive(Debug, Default)]
pub struct JsonConverter {
    opts: Options,
    /// `schemas.enable`: `Some(false)` never unwraps `{"schema","payload"}`; `None` detects it.
    schemas_enable: Option<bool>,
    /// Per topic: the last schema text seen and what it compiled to.
    schemas: crate::FastMap<Box<str>, (Box<str>, Arc<EnvelopeSchema>)>,
    /// The length of the last after image converted by a schema: the next one's first buffer
    /// (`by_hand`).
    row_len: std::cell::Cell<usize>,
}

/// What a value schema (or key schema) tells the decoder.
#[derive(Debug, Default)]
struct EnvelopeSchema {
    name: Option<String>,
    /// Conversion of the row images (`before`/`after`), or of the whole key.
    row: Conv,
}

/// Every top-level field the decoder looks at, borrowed from the record. `S`: how `source` is
/// read (see [`SourceBlock`]).
#[derive(Deserialize)]
#[serde(bound(deserialize = "S: Deserialize<'de>"))]
struct Top<'a, S> {
    #[serde(borrow, default, deserialize_with = "some_raw")]
    schema: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "some_raw")]
    payload: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "some_str")]
    op: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "some_raw")]
    before: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "some_raw")]
    after: Option<&'a RawValue>,
    /// `after` already converted, by the one-pass read (`one_pass`); `after` is then `None`.
    #[serde(skip)]
    after_row: Option<Row>,
    /// A delete's `before`, already a row, by the reader of our own (`by_hand`); `before` is
    /// then `None`.
    #[serde(skip)]
    before_row: Option<Row>,
    #[serde(default = "Option::default")]
    source: Option<S>,
    #[serde(default)]
    ts_ms: Option<i64>,
    // Only to recognise records that are not row changes.
    #[serde(borrow, default, deserialize_with = "some_raw")]
    ddl: Option<&'a RawValue>,
    #[serde(
        borrow,
        default,
        rename = "tableChanges",
        deserialize_with = "some_raw"
    )]
    table_changes: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "some_raw")]
    status: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "some_raw")]
    event_count: Option<&'a RawValue>,
}

impl<S> Top<'_, S> {
    /// Nothing read yet: what a record lacking every field would give.
    fn empty() -> Self {
        Top {
            schema: None,
            payload: None,
            op: None,
            before: None,
            after: None,
            after_row: None,
            before_row: None,
            source: None,
            ts_ms: None,
            ddl: None,
            table_changes: None,
            status: None,
            event_count: None,
        }
    }
}

/// How an envelope's `source` is read: its fields in the envelope's own pass over the record
/// ([`Inline`]), or kept as raw text when `add.fields` needs the whole block, and for naming
/// what is wrong with a block the first way refused.
trait SourceBlock {
    fn is_null(&self) -> bool;
    /// `read`: the event is a snapshot read; `keep`: keep the whole block.
    fn source(&self, read: bool, keep: bool) -> Result<Source, DecodeError>;
}

impl SourceBlock for &RawValue {
    fn is_null(&self) -> bool {
        self.get() == "null"
    }
    fn source(&self, read: bool, keep: bool) -> Result<Source, DecodeError> {
        Source::parse(self.get(), read, keep)
    }
}

impl SourceBlock for Inline<'_> {
    fn is_null(&self) -> bool {
        // A JSON null is read as no block at all.
        false
    }
    fn source(&self, read: bool, keep: bool) -> Result<Source, DecodeError> {
        debug_assert!(!keep, "a kept block is read as raw text");
        Inline::source(self, read)
    }
}

fn parse_json(bytes: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(bytes).map_err(|e| DecodeError::new(format!("not UTF-8 text: {e}")))
}

impl JsonConverter {
    pub fn new(opts: Options, schemas_enable: Option<bool>) -> Self {
        JsonConverter {
            opts,
            schemas_enable,
            schemas: Default::default(),
            row_len: Default::default(),
        }
    }

    /// The compiled form of `schema` (raw JSON) for `topic`, compiled again only when the
    /// schema text differs from the last one seen on the topic.
    fn schema(
        &mut self,
        topic: &str,
        schema: &RawValue,
        as_envelope: bool,
    ) -> Result<Arc<EnvelopeSchema>, DecodeError> {
        if let Some((text, compiled)) = self.schemas.get(topic)
            && **text == *schema.get()
        {
            return Ok(compiled.clone());
        }
        let parsed = ConnectSchema::parse(schema.get())
            .map_err(|e| DecodeError::new(format!("`schema` is not a Connect schema: {e}")))?;
        let row = if as_envelope {
            parsed
                .field("after")
                .or_else(|| parsed.field("before"))
                .map(ConnectSchema::compile)
                .unwrap_or(Conv::Keep)
        } else {
            parsed.compile()
        };
        let compiled = Arc::new(EnvelopeSchema {
            name: parsed.name.clone(),
            row,
        });
        self.schemas
            .insert(topic.into(), (schema.get().into(), compiled.clone()));
        Ok(compiled)
    }

    /// `{"schema":<the topic's last schema>,"payload":<payload>}` byte for byte as
    /// JsonConverter writes it: the compiled schema and the payload text, found with a
    /// comparison instead of parsing the (often kilobytes long) schema again.
    /// Works on the record's bytes: the schema part was checked to be UTF-8 when it was first
    /// seen, so only the payload is validated here (with schemas on, most of a record is its
    /// schema).
    fn known_schema<'t>(
        &self,
        topic: &str,
        bytes: &'t [u8],
    ) -> Option<(Arc<EnvelopeSchema>, &'t str)> {
        if self.schemas_enable == Some(false) {
            return None;
        }
        let (schema_text, compiled) = self.schemas.get(topic)?;
        let payload = bytes
            .strip_prefix(b"{\"schema\":")?
            .strip_prefix(schema_text.as_bytes())?
            .strip_prefix(b",\"payload\":")?;
        let payload = trim_json_end(payload).strip_suffix(b"}")?;
        let payload = std::str::from_utf8(payload).ok()?;
        Some((compiled.clone(), payload))
    }

    /// Decodes a record key to JSON text: a struct key becomes an object, a plain key a scalar.
    pub fn key(&mut self, topic: &str, bytes: &[u8]) -> Result<Row, DecodeError> {
        if let Some((schema, payload)) = self.known_schema(topic, bytes) {
            // The commonest keys, flat and with nothing to convert, checked by hand.
            if schema.row == Conv::Keep && flat_object(payload).is_some() {
                return Ok(Row::from_json(payload));
            }
            if let Ok(raw) = serde_json::from_str::<&RawValue>(payload) {
                return to_row(raw.get(), &schema.row, &self.opts)
                    .map_err(|e| DecodeError::new(format!("key: {e}")));
            }
        }
        let text = parse_json(bytes)?;
        // A flat key is a bare key unless it may be `{"payload":…}` (see `unwrap_key`).
        if let Some(flat) = flat_object(text)
            && (!flat.payload || self.schemas_enable == Some(false))
        {
            return Ok(Row::from_json(text));
        }
        let top: &RawValue = serde_json::from_str(text)
            .map_err(|e| DecodeError::new(format!("key is not valid JSON: {e}")))?;
        let (schema, payload) = self.unwrap_key(top);
        let conv = match schema {
            Some(s) if s.get() != "null" => self.schema(topic, s, false)?.row.clone(),
            _ => Conv::Keep,
        };
        to_row(payload.get(), &conv, &self.opts).map_err(|e| DecodeError::new(format!("key: {e}")))
    }

    /// Splits `{"schema":…, "payload":…}` (or `{"payload":…}`) from a bare key.
    fn unwrap_key<'a>(&self, top: &'a RawValue) -> (Option<&'a RawValue>, &'a RawValue) {
        if self.schemas_enable == Some(false) || !top.get().starts_with('{') {
            return (None, top);
        }
        // Without the bytes `"payload"` (or an escape that could spell them) no field is named
        // `payload`: a bare key, not walked (the walk was half of decoding such keys).
        let text = top.get().as_bytes();
        if memchr::memmem::find(text, b"\"payload\"").is_none()
            && memchr::memchr(b'\\', text).is_none()
        {
            return (None, top);
        }
        let mut schema = None;
        let mut payload = None;
        // A walk that fails part way (a name serde cannot read, a lone surrogate) leaves the
        // key whole: taken as `{"payload":…}` from what was read before, it lost a member.
        let mut others = false;
        let walked = for_each_field(top.get(), |k, v| {
            match k {
                "schema" => schema = Some(v),
                "payload" => payload = Some(v),
                _ => others = true,
            }
            Ok(())
        });
        others |= walked.is_err();
        match payload {
            Some(p) if !others => (schema, p),
            _ => (None, top),
        }
    }

    /// Decodes a record value. `None` bytes (a Kafka null) are a tombstone.
    pub fn value(&mut self, topic: &str, bytes: Option<&[u8]>) -> Result<Value, DecodeError> {
        let Some(bytes) = bytes else {
            return Ok(Value::Tombstone);
        };
        if bytes.is_empty() {
            // Not a tombstone (that has no value at all): taken as one, it deleted its key's
            // document.
            return Err(DecodeError::new(
                "the value is empty (0 bytes), which is not JSON; a tombstone has no value at all",
            ));
        }
        if let Some((schema, payload)) = self.known_schema(topic, bytes) {
            if is_null(payload) {
                return Ok(Value::Tombstone);
            }
            // Anything unexpected falls through to the full parse, which names the problem.
            let mut inner = Top::empty();
            if self.one_pass(payload, Some(&schema), &mut inner) {
                return self.envelope(&mut inner, Some(&schema), payload);
            }
            if let Ok(mut inner) = parse_top::<&RawValue>(payload, "`payload`") {
                return self.envelope(&mut inner, Some(&schema), payload);
            }
        }
        let text = parse_json(bytes)?;
        if is_null(text) {
            // JsonConverter reads a JSON null as a null value: a tombstone.
            return Ok(Value::Tombstone);
        }
        let mut top = Top::empty();
        if self.one_pass(text, None, &mut top) {
            return self.unwrap_value(topic, text, &mut top);
        }
        let mut top = parse_top::<&RawValue>(text, "value")?;
        self.unwrap_value(topic, text, &mut top)
    }

    /// `text` read in one pass into `top` (by hand, `by_hand`, or else by serde, `one_pass`),
    /// unless `add.fields` keeps `source`'s whole block; `false` when both refuse it (`top` is
    /// then partly filled: not for use).
    /// `top` is the caller's, not returned: at about 550 bytes, moving it out and into
    /// `envelope` was 4% of the end-to-end task thread (`memcpy`, docs/performance-log.md).
    fn one_pass<'a>(
        &self,
        text: &'a str,
        schema: Option<&EnvelopeSchema>,
        top: &mut Top<'a, Inline<'a>>,
    ) -> bool {
        if self.opts.keep_source {
            return false;
        }
        // By hand first; serde (which names what is wrong) for whatever that reader leaves.
        let conv = schema.map_or(&Conv::Keep, |s| &s.row);
        if by_hand::read(text, conv, &self.opts, &self.row_len, top) {
            return true;
        }
        *top = Top::empty();
        let after = match conv {
            Conv::Struct(st) => Some(&**st as &StructConv),
            _ => None,
        };
        one_pass::read(text, after, &self.opts, top)
    }

    /// A value's top level: the envelope itself, or `{"schema": …, "payload": …}` around it.
    fn unwrap_value<S: SourceBlock>(
        &mut self,
        topic: &str,
        text: &str,
        top: &mut Top<'_, S>,
    ) -> Result<Value, DecodeError> {
        if top.op.is_some() || top.payload.is_none() || self.schemas_enable == Some(false) {
            return self.envelope(top, None, text);
        }
        // {"schema": …, "payload": …}
        let schema = match top.schema.filter(|s| s.get() != "null") {
            Some(s) => Some(self.schema(topic, s, true)?),
            None => None,
        };
        let payload = top.payload.map(RawValue::get).unwrap_or("null");
        if payload == "null" {
            return Ok(Value::Tombstone);
        }
        let mut inner = Top::empty();
        if self.one_pass(payload, schema.as_deref(), &mut inner) {
            return self.envelope(&mut inner, schema.as_deref(), payload);
        }
        let mut inner = parse_top::<&RawValue>(payload, "`payload`")?;
        self.envelope(&mut inner, schema.as_deref(), payload)
    }

    /// The change in `top`, read from `text` (read again only when it has no `op`).
    fn envelope<S: SourceBlock>(
        &self,
        top: &mut Top<'_, S>,
        schema: Option<&EnvelopeSchema>,
        text: &str,
    ) -> Result<Value, DecodeError> {
        let Some(op) = top.op.as_deref() else {
            return classify_non_change(top, schema.and_then(|s| s.name.as_deref()), text);
        };
        let conv = schema.map(|s| &s.row).unwrap_or(&Conv::Keep);
        let image = |name: &str, raw: Option<&RawValue>| -> Result<Option<Row>, DecodeError> {
            match raw.filter(|r| r.get() != "null") {
                None => Ok(None),
                Some(r) if r.get().starts_with('"') => mongodb::document(r)
                    .map(Some)
                    .map_err(|e| DecodeError::new(format!("`{name}`: {e}"))),
                Some(r) => to_row(r.get(), conv, &self.opts)
                    .map(Some)
                    .map_err(|e| DecodeError::new(format!("`{name}`: {e}"))),
            }
        };
        // Only a delete's before image is read by a sink (`ChangeEvent::before`): the others
        // are not converted (on 6 KB MySQL records with full row images, a third of the work).
        let before = if op == "d" {
            match top.before_row.take() {
                Some(row) => Some(row),
                None => image("before", top.before)?,
            }
        } else {
            None
        };
        let after = match top.after_row.take() {
            Some(row) => Some(row),
            None => image("after", top.after)?,
        };
        let source = |read| {
            top.source
                .as_ref()
                .filter(|s| !s.is_null())
                .map(|s| s.source(read, self.opts.keep_source))
                .transpose()
        };
        super::change(op, before, after, source, top.ts_ms)
    }
}

/// An envelope (`what`: which one, for the error), which must be a JSON object: serde's derived
/// structs also take an array, field by position.
fn parse_top<'a, S: Deserialize<'a>>(text: &'a str, what: &str) -> Result<Top<'a, S>, DecodeError> {
    if !text.trim_start().starts_with('{') {
        let first = text.trim_start().chars().next().unwrap_or(' ');
        if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() {
            return Err(DecodeError::new(format!(
                "{what} is not a JSON object (it starts with `{first}`)"
            )));
        }
    }
    serde_json::from_str(text)
        .map_err(|e| DecodeError::new(format!("{what} is not valid JSON: {e}")))
}

/// Records without `op`: schema changes, heartbeats and transaction metadata are skipped;
/// anything else is not a Debezium change event. `text` is the envelope's own JSON, whose
/// members must all be the kind's: a row of a table with a `ts_ms`, `ddl` or `status` column,
/// already unwrapped, is a record to refuse, never one to skip.
fn classify_non_change<S: SourceBlock>(
    top: &Top<'_, S>,
    schema_name: Option<&str>,
    text: &str,
) -> Result<Value, DecodeError> {
    if let Some(skip) = schema_name.and_then(super::skip_by_schema_name) {
        return Ok(Value::Skipped(skip));
    }
    // Debezium's own members of each kind (`SchemaChangeValue`, `TransactionMetadataValue`,
    // `Heartbeat`); `position` is also in a schema history record.
    const SCHEMA_CHANGE: &[&str] = &[
        "source",
        "ts_ms",
        "databaseName",
        "schemaName",
        "ddl",
        "tableChanges",
        "position",
    ];
    const TRANSACTION: &[&str] = &["status", "id", "ts_ms", "event_count", "data_collections"];
    let mut members = Vec::new();
    if for_each_field(text, |k, _| {
        members.push(k.to_owned());
        Ok(())
    })
    .is_err()
    {
        members.clear();
    }
    let only =
        |kind: &[&str]| !members.is_empty() && members.iter().all(|m| kind.contains(&m.as_str()));
    let is_string = |raw: Option<&RawValue>| raw.is_some_and(|r| r.get().starts_with('"'));
    let ddl = is_string(top.ddl) || top.table_changes.is_some_and(|t| t.get().starts_with('['));
    if ddl && only(SCHEMA_CHANGE) {
        return Ok(Value::Skipped(Skip::SchemaChange));
    }
    let status = top.status.map(RawValue::get);
    // `event_count` is in both (null in a `BEGIN`), as JsonConverter writes null members.
    if matches!(status, Some(r#""BEGIN""# | r#""END""#))
        && top.event_count.is_some()
        && only(TRANSACTION)
    {
        return Ok(Value::Skipped(Skip::TransactionMetadata));
    }
    if top.ts_ms.is_some() && members == ["ts_ms"] {
        return Ok(Value::Skipped(Skip::Heartbeat));
    }
    Err(DecodeError::new(
        "value is not a Debezium change event: it has no `op` field (nor is it a schema change, \
         heartbeat or transaction record, whose members are Debezium's alone)",
    ))
}

/// `raw`, the text of one valid JSON value, converted by `conv` into a [`Row`]; a plain copy
/// when nothing needs converting.
pub(crate) fn to_row(raw: &str, conv: &Conv, opts: &Options) -> Result<Row, String> {
    if *conv == Conv::Keep {
        return Ok(Row::from_json(raw));
    }
    let mut out = Vec::with_capacity(raw.len() + 32);
    write_value(raw, conv, opts, &mut out)?;
    Ok(Row::from_bytes(out))
}

fn push_raw(out: &mut Vec<u8>, raw: &str) {
    // Only an object or an array can hold a raw line break (whitespace between its members);
    // a string, number or literal that starts and ends as one cannot.
    let b = raw.as_bytes();
    let scalar = matches!(
        b.first(),
        Some(b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n')
    ) && matches!(b.last(), Some(b'"' | b'0'..=b'9' | b'e' | b'l'));
    if !scalar && memchr::memchr2(b'\n', b'\r', b).is_some() {
        out.extend(raw.bytes().filter(|b| *b != b'\n' && *b != b'\r'));
    } else {
        out.extend_from_slice(raw.as_bytes());
    }
}

fn int(raw: &str, what: &str) -> Result<i64, String> {
    raw.parse::<i64>()
        .map_err(|_| format!("expected an integer for {what}, got `{raw}`"))
}

fn bytes_of(raw: &str, what: &str) -> Result<Vec<u8>, String> {
    let s = unquote(raw).map_err(|_| format!("expected base64 bytes for {what}, got `{raw}`"))?;
    BASE64
        .decode(s.as_bytes())
        .map_err(|e| format!("expected base64 bytes for {what}, got `{raw}`: {e}"))
}

/// Writes the JSON value `raw` converted by `conv` (the README's semantic type table) into `out`.
pub(crate) fn write_value(
    raw: &str,
    conv: &Conv,
    opts: &Options,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    if raw == "null" {
        out.extend_from_slice(b"null");
        return Ok(());
    }
    match conv {
        Conv::Keep => push_raw(out, raw),
        Conv::Date => semantic::date(out, int(raw, "a date")?),
        Conv::Time(unit) => semantic::time(out, int(raw, "a time")?, *unit),
        Conv::Timestamp(unit) => semantic::timestamp(out, int(raw, "a timestamp")?, *unit),
        Conv::Decimal { scale } => write_decimal(raw, *scale, opts, out)?,
        Conv::VariableScaleDecimal => {
            let (mut scale, mut value) = (None, None);
            for_each_field(raw, |k, v| {
                match k {
                    "scale" => scale = Some(v.get()),
                    "value" => value = Some(v.get()),
                    _ => {}
                }
                Ok(())
            })?;
            match (scale, value) {
                // `value` is BYTES, base64 in JSON whatever `decimal.format` says: a number
                // there has no scale applied, and taken as a Decimal's number it lost it.
                (Some(_), Some(v)) if !v.starts_with('"') => {
                    return Err(format!(
                        "a variable-scale decimal's value must be base64 bytes, got `{}`",
                        super::excerpt(v)
                    ));
                }
                (Some(s), Some(v)) => {
                    let scale = i32::try_from(int(s, "a decimal scale")?)
                        .map_err(|_| format!("decimal scale {s} is out of range"))?;
                    write_decimal(v, scale, opts, out)?
                }
                _ => {
                    return Err(format!(
                        "expected {{scale, value}} for a variable-scale decimal, got `{raw}`"
                    ));
                }
            }
        }
        Conv::Json => {
            let s = unquote(raw)
                .map_err(|_| format!("expected a JSON string for a Json column, got `{raw}`"))?;
            if !semantic::json_text(&s, out) {
                push_raw(out, raw);
            }
        }
        Conv::Bits { length } => {
            let fits = length.is_some_and(|l| l <= 63);
            match (opts.bits_as_number && fits, raw.starts_with('"')) {
                (true, true) => {
                    let bytes = bytes_of(raw, "bits")?;
                    match semantic::bits_number(&bytes) {
                        Some(n) => out.extend_from_slice(n.to_string().as_bytes()),
                        None => push_raw(out, raw),
                    }
                }
                _ => push_raw(out, raw),
            }
        }
        Conv::Refused(why) => return Err(why.to_string()),
        Conv::Point => {
            let (mut x, mut y) = (None, None);
            for_each_field(raw, |k, v| {
                match k {
                    "x" => x = Some(v.get()),
                    "y" => y = Some(v.get()),
                    _ => {}
                }
                Ok(())
            })?;
            semantic::point(out, x, y)?;
        }
        Conv::Struct(st) => {
            out.push(b'{');
            let mut i = 0;
            for_each_field(raw, |k, v| {
                if i > 0 {
                    out.push(b',');
                }
                let conv = st.write_name(out, k, i);
                write_value(v.get(), conv, opts, out).map_err(|e| format!("field `{k}`: {e}"))?;
                i += 1;
                Ok(())
            })?;
            out.push(b'}');
        }
        Conv::Array(item) => {
            let items: Vec<&RawValue> =
                serde_json::from_str(raw).map_err(|_| format!("expected an array, got `{raw}`"))?;
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(v.get(), item, opts, out)?;
            }
            out.push(b']');
        }
        Conv::Map(value) => {
            if !raw.starts_with('{') {
                // Maps with non-string keys are arrays of [key, value] pairs (Kafka Connect's
                // JsonConverter): kept so, their values converted like any map's.
                let pairs: Vec<(&RawValue, &RawValue)> = serde_json::from_str(raw)
                    .map_err(|_| format!("expected a map, got `{raw}`"))?;
                out.push(b'[');
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.push(b'[');
                    push_raw(out, k.get());
                    out.push(b',');
                    write_value(v.get(), value, opts, out)?;
                    out.push(b']');
                }
                out.push(b']');
                return Ok(());
            }
            out.push(b'{');
            let mut first = true;
            for_each_field(raw, |k, v| {
                if !std::mem::take(&mut first) {
                    out.push(b',');
                }
                write_str(out, k);
                out.push(b':');
                write_value(v.get(), value, opts, out)
            })?;
            out.push(b'}');
        }
    }
    Ok(())
}

/// A Connect decimal: base64 two's-complement bytes, or a JSON number
/// (JsonConverter `decimal.format=NUMERIC`), or a string of digits.
fn write_decimal(raw: &str, scale: i32, opts: &Options, out: &mut Vec<u8>) -> Result<(), String> {
    let start = out.len();
    if !opts.decimal_as_number {
        out.push(b'"');
    }
    if raw.starts_with('"') {
        // Decoded on the stack when it fits (nearly every column's unscaled value does): the
        // allocation was a fifth of this function. Anything else, errors included, the old way.
        let mut buf = [0u8; 64];
        match unquote(raw).map(|s| BASE64.decode_slice(s.as_bytes(), &mut buf)) {
            Ok(Ok(n)) => semantic::decimal_digits(out, &buf[..n], scale)?,
            _ => semantic::decimal_digits(out, &bytes_of(raw, "a decimal")?, scale)?,
        }
    } else {
        let digits = semantic::plain_number(raw)?;
        semantic::room(out, digits.len())?;
        out.extend_from_slice(digits.as_bytes());
    }
    if !opts.decimal_as_number {
        out.push(b'"');
    } else if out[start..].starts_with(b"-") && out.len() == start + 1 {
        return Err(format!("expected a decimal, got `{raw}`"));
    }
    Ok(())
}

/// JSON's whitespace: space, tab, line feed, carriage return (`str::trim` takes all of
/// Unicode's, and `trim_ascii` form feeds too, which JSON does not allow).
const JSON_WHITESPACE: [char; 4] = [' ', '\t', '\n', '\r'];

/// Whether `text` is JSON's `null`, with only JSON's whitespace around it.
fn is_null(text: &str) -> bool {
    text.trim_matches(JSON_WHITESPACE) == "null"
}

/// `bytes` without the JSON whitespace it ends with.
fn trim_json_end(mut bytes: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t' | b'\n' | b'\r'] = bytes {
        bytes = rest;
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::ChangeEvent;

    fn value(json: &str) -> Value {
        JsonConverter::default()
            .value("t", Some(json.as_bytes()))
            .unwrap()
    }

    fn change(json: &str) -> ChangeEvent {
        match value(json) {
            Value::Change(c) => c,
            other => panic!("not a change: {other:?}"),
        }
    }

    #[test]
    fn bare_and_wrapped_envelopes_decode_alike() {
        let bare = r#"{"before":null,"after":{"id":1},"source":{"connector":"postgresql","lsn":7},"op":"c","ts_ms":5}"#;
        let wrapped = format!(r#"{{"schema":null,"payload":{bare}}}"#);
        let payload_only = format!(r#"{{"payload":{bare}}}"#);
        let a = change(bare);
        assert_eq!(a, change(&wrapped));
        assert_eq!(a, change(&payload_only));
        assert_eq!(a.after.unwrap().as_str(), r#"{"id":1}"#);
        assert_eq!(a.source.unwrap().position, Ok(Some(7)));
    }

    #[test]
    fn null_payloads_and_null_values_are_tombstones() {
        assert_eq!(value(r#"{"schema":null,"payload":null}"#), Value::Tombstone);
        let mut c = JsonConverter::default();
        assert_eq!(c.value("t", None).unwrap(), Value::Tombstone);
        assert_eq!(c.value("t", Some(b"null")).unwrap(), Value::Tombstone);
        // A value of no bytes is not a tombstone: it would delete its key's document.
        let err = c.value("t", Some(b"")).unwrap_err().message;
        assert!(err.contains("empty (0 bytes)"), "{err}");
    }

    #[test]
    fn records_that_are_not_changes_are_skipped_or_rejected() {
        assert_eq!(
            value(r#"{"source":{},"ts_ms":1,"databaseName":"x","ddl":"CREATE TABLE"}"#),
            Value::Skipped(Skip::SchemaChange)
        );
        assert_eq!(
            value(r#"{"status":"BEGIN","id":"571","event_count":null,"data_collections":null}"#),
            Value::Skipped(Skip::TransactionMetadata)
        );
        assert_eq!(value(r#"{"ts_ms":1}"#), Value::Skipped(Skip::Heartbeat));
        assert_eq!(
            value(r#"{"status":"END","id":"571","ts_ms":3,"event_count":2,"data_collections":[]}"#),
            Value::Skipped(Skip::TransactionMetadata)
        );
        // Rows already unwrapped, whose tables have such columns, are not Debezium's records:
        // refused, never skipped (and so committed) as one.
        for row in [
            r#"{"id":7,"ts_ms":1700000000000}"#,
            r#"{"id":7,"ddl":null}"#,
            r#"{"id":7,"ddl":"CREATE TABLE"}"#,
            r#"{"id":7,"status":"BEGINNER"}"#,
            r#"{"id":7,"status":"BEGIN"}"#,
            r#"{"ts_ms":1,"before":null,"after":null}"#,
        ] {
            let err = JsonConverter::default()
                .value("t", Some(row.as_bytes()))
                .unwrap_err();
            assert!(err.message.contains("no `op`"), "{row}: {err}");
            let wrapped = format!(r#"{{"schema":null,"payload":{row}}}"#);
            let err = JsonConverter::default()
                .value("t", Some(wrapped.as_bytes()))
                .unwrap_err();
            assert!(err.message.contains("no `op`"), "{wrapped}: {err}");
        }
        let err = JsonConverter::default()
            .value("t", Some(br#"{"id":1,"name":"x"}"#))
            .unwrap_err();
        assert!(err.message.contains("no `op`"), "{err}");
        let err = JsonConverter::default()
            .value("t", Some(b"{not json"))
            .unwrap_err();
        assert!(err.message.contains("not valid JSON"), "{err}");
        // An after image without `op` is no heartbeat, also when read converted in one pass.
        let schema = r#"{"type":"struct","fields":[{"type":"struct","field":"after","fields":[
            {"type":"int32","name":"io.debezium.time.Date","field":"d"}]}]}"#;
        let json = format!(r#"{{"schema":{schema},"payload":{{"after":{{"d":1}},"ts_ms":1}}}}"#);
        let mut c = JsonConverter::default();
        for _ in ["first", "schema known"] {
            let err = c.value("t", Some(json.as_bytes())).unwrap_err();
            assert!(err.message.contains("no `op`"), "{err}");
        }
    }

    #[test]
    fn envelopes_and_source_blocks_must_be_objects_not_arrays() {
        // serde's derived structs take an array field by field.
        let err = |bytes: &str| {
            JsonConverter::default()
                .value("t", Some(bytes.as_bytes()))
                .unwrap_err()
                .message
        };
        // `[schema, payload, op, before, after]`: a create, field by position.
        let e = err(r#"[null,null,"c",null,{"id":1}]"#);
        assert_eq!(e, "value is not a JSON object (it starts with `[`)");
        let e = err(r#"{"schema":null,"payload":[null,{"id":1},null,"c"]}"#);
        assert_eq!(e, "`payload` is not a JSON object (it starts with `[`)");
        let e = err(r#"{"after":{"id":1},"source":["postgresql",null,null,null,5],"op":"c"}"#);
        assert!(
            e.starts_with("`source` block is malformed:") && e.contains("is not a JSON object"),
            "{e}"
        );
        // With a known schema too (its fast path).
        let schema =
            r#"{"type":"struct","name":"x.Envelope","fields":[{"type":"string","field":"op"}]}"#;
        let mut c = JsonConverter::default();
        let ok = format!(r#"{{"schema":{schema},"payload":{{"op":"c","after":{{"id":1}}}}}}"#);
        assert!(c.value("t", Some(ok.as_bytes())).is_ok());
        let bad = format!(r#"{{"schema":{schema},"payload":[null,{{"id":1}},null,"c"]}}"#);
        let e = c.value("t", Some(bad.as_bytes())).unwrap_err().message;
        assert_eq!(e, "`payload` is not a JSON object (it starts with `[`)");
        let bad = format!(
            r#"{{"schema":{schema},"payload":{{"op":"c","after":{{"id":1}},"source":["mysql"]}}}}"#
        );
        let e = c.value("t", Some(bad.as_bytes())).unwrap_err().message;
        assert_eq!(
            e,
            "`source` block is malformed: `[\"mysql\"]` is not a JSON object"
        );
    }

    #[test]
    fn keys_with_and_without_schema() {
        let mut c = JsonConverter::default();
        let k = c
            .key("t", br#"{"schema":{"type":"struct","fields":[{"type":"int32","field":"id"}]},"payload":{"id":1001}}"#)
            .unwrap();
        assert_eq!(k.as_str(), r#"{"id":1001}"#);
        // The schema known now: the payload is checked by hand (`flat_object`), or read.
        for (payload, row) in [
            (r#"{"id":1002}"#, r#"{"id":1002}"#),
            (r#"{"id": 1003}"#, r#"{"id": 1003}"#),
            (r#"{"id":"a\"b"}"#, r#"{"id":"a\"b"}"#),
        ] {
            let record = format!(
                r#"{{"schema":{{"type":"struct","fields":[{{"type":"int32","field":"id"}}]}},"payload":{payload}}}"#
            );
            assert_eq!(c.key("t", record.as_bytes()).unwrap().as_str(), row);
        }
        let bad = br#"{"schema":{"type":"struct","fields":[{"type":"int32","field":"id"}]},"payload":{"id":01}}"#;
        assert!(c.key("t", bad).is_err());
        assert_eq!(c.key("t", br#"{"id":1}"#).unwrap().as_str(), r#"{"id":1}"#);
        assert_eq!(
            c.key("t", br#"{"a":"x","id":-1.5e3}"#).unwrap().as_str(),
            r#"{"a":"x","id":-1.5e3}"#
        );
        assert!(c.key("t", br#"{"id":01}"#).is_err());
        assert!(c.key("t", b"{\"id\":\"a\tb\"}").is_err());
        // A flat key with a field named `payload` is such an envelope.
        assert_eq!(c.key("t", br#"{"payload":5}"#).unwrap().as_str(), "5");
        assert_eq!(c.key("t", br#""abc""#).unwrap().as_str(), r#""abc""#);
        assert_eq!(c.key("t", b"42").unwrap().as_str(), "42");
        // An envelope without schema, also with its field name escaped, is unwrapped.
        assert_eq!(
            c.key("t", br#"{"payload":{"id":2}}"#).unwrap().as_str(),
            r#"{"id":2}"#
        );
        assert_eq!(
            c.key("t", br#"{"p\u0061yload":{"id":3}}"#)
                .unwrap()
                .as_str(),
            r#"{"id":3}"#
        );
        // A member whose name serde cannot read, after `payload`: the key is not taken as the
        // payload with that member dropped (the document would have had id 1).
        let key = br#"{"payload":{"id":1},"\udc00":2}"#;
        assert_eq!(c.key("t", key).unwrap().as_str().as_bytes(), key);
        let mut no_unwrap = JsonConverter::new(Options::default(), Some(false));
        assert_eq!(
            no_unwrap.key("t", br#"{"payload":3}"#).unwrap().as_str(),
            r#"{"payload":3}"#
        );
    }

    #[test]
    fn schema_names_semantic_types_and_they_are_decoded() {
        let schema = r#"{"type":"struct","name":"x.Envelope","fields":[
            {"type":"struct","field":"after","fields":[
              {"type":"int32","field":"id"},
              {"type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"2"},"field":"price"},
              {"type":"int64","name":"io.debezium.time.MicroTimestamp","field":"at"},
              {"type":"string","name":"io.debezium.data.Json","field":"doc"},
              {"type":"struct","name":"io.debezium.data.geometry.Point","field":"pt","fields":[]}]},
            {"type":"string","field":"op"}]}"#;
        let json = format!(
            r#"{{"schema":{schema},"payload":{{"after":{{"id":1,"price":"D54=","at":1709300707123456,"doc":"{{\"a\": [1, 2], \"n\": 123456789012345678901}}","pt":{{"x":2.5,"y":-1.0,"wkb":"AQ==","srid":null}}}},"op":"r"}}}}"#
        );
        let c = change(&json);
        assert_eq!(
            c.after.unwrap().as_str(),
            r#"{"id":1,"price":"39.98","at":"2024-03-01T13:45:07.123456Z","doc":{"a":[1,2],"n":123456789012345678901},"pt":{"lat":-1.0,"lon":2.5}}"#
        );
    }

    #[test]
    fn decimals_of_any_length_and_bad_base64_decode_as_before() {
        let conv = Conv::Decimal { scale: 2 };
        let opts = Options::default();
        let write = |raw: &str| {
            let mut out = Vec::new();
            write_value(raw, &conv, &opts, &mut out).map(|()| String::from_utf8(out).unwrap())
        };
        // Short and long unscaled values (the long ones past the stack buffer), escaped too.
        for len in [1usize, 2, 16, 47, 48, 49, 63, 64, 65, 100] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = BASE64.encode(&bytes);
            let mut expected = vec![b'"'];
            semantic::decimal_digits(&mut expected, &bytes, 2).unwrap();
            expected.push(b'"');
            let expected = String::from_utf8(expected).unwrap();
            assert_eq!(write(&format!("\"{text}\"")).unwrap(), expected, "{len}");
            let escaped = text.replace('/', "\\/");
            assert_eq!(write(&format!("\"{escaped}\"")).unwrap(), expected, "{len}");
        }
        assert_eq!(write(r#""D54=""#).unwrap(), r#""39.98""#);
        // A variable-scale decimal's value is bytes: a number there is refused, not taken
        // without its scale (12345 with scale 2 written as 12345).
        let variable = |value: &str| {
            let mut out = Vec::new();
            let raw = format!(r#"{{"scale":2,"value":{value}}}"#);
            write_value(&raw, &Conv::VariableScaleDecimal, &opts, &mut out)
                .map(|()| String::from_utf8(out).unwrap())
        };
        assert_eq!(variable(r#""MDk=""#).unwrap(), r#""123.45""#);
        let Err(e) = variable("12345") else {
            panic!("a variable-scale decimal's number was taken");
        };
        assert!(e.contains("must be base64 bytes, got `12345`"), "{e}");
        let bad = write(r#""D5*=""#).unwrap_err();
        assert!(
            bad.starts_with("expected base64 bytes for a decimal, got `\"D5*=\"`: "),
            "{bad}"
        );
    }

    #[test]
    fn a_map_with_non_string_keys_has_its_values_converted() {
        let conv = Conv::Map(Box::new(Conv::Date));
        let write = |raw: &str| {
            let mut out = Vec::new();
            write_value(raw, &conv, &Options::default(), &mut out)
                .map(|()| String::from_utf8(out).unwrap())
        };
        assert_eq!(write(r#"{"a":0}"#).unwrap(), r#"{"a":"1970-01-01"}"#);
        assert_eq!(
            write(r#"[[1, 0], [2, 19783]]"#).unwrap(),
            r#"[[1,"1970-01-01"],[2,"2024-03-01"]]"#
        );
        assert!(write(r#"[[1]]"#).unwrap_err().contains("expected a map"));
    }

    #[test]
    fn a_record_whose_decimals_would_grow_it_past_the_bound_is_refused() {
        // 1 000 values of 6 bytes, each written with 131 072 zeros: 131 MB from 7 KB.
        let schema = r#"{"type":"struct","fields":[{"type":"struct","field":"after","fields":[
            {"type":"array","field":"a","items":{"type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"131072"}}}]},
            {"type":"string","field":"op"}]}"#;
        let items = vec![r#""AA==""#; 1000].join(",");
        let json =
            format!(r#"{{"schema":{schema},"payload":{{"after":{{"a":[{items}]}},"op":"c"}}}}"#);
        let err = JsonConverter::default()
            .value("t", Some(json.as_bytes()))
            .unwrap_err();
        assert!(err.message.contains("larger than 64 MiB"), "{err}");
        // The same as numbers, with exponents instead of a scale.
        let schema = schema.replace(
            r#""parameters":{"scale":"131072"}"#,
            r#""parameters":{"scale":"0"}"#,
        );
        let items = vec!["1e-131072"; 1000].join(",");
        let json =
            format!(r#"{{"schema":{schema},"payload":{{"after":{{"a":[{items}]}},"op":"c"}}}}"#);
        let mut numbers = JsonConverter::new(
            Options {
                decimal_as_number: true,
                ..Options::default()
            },
            None,
        );
        let err = numbers.value("t", Some(json.as_bytes())).unwrap_err();
        assert!(err.message.contains("larger than 64 MiB"), "{err}");
        // A few such values are still written.
        let json = format!(
            r#"{{"schema":{schema},"payload":{{"after":{{"a":["AA==","AQ=="]}},"op":"c"}}}}"#
        )
        .replace(
            r#""parameters":{"scale":"0"}"#,
            r#""parameters":{"scale":"3"}"#,
        );
        assert_eq!(
            change(&json).after.unwrap().as_str(),
            r#"{"a":["0.000","0.001"]}"#
        );
    }

    #[test]
    fn values_that_would_be_read_wrong_are_refused() {
        let err = |field: &str, value: &str| {
            let json = format!(
                r#"{{"schema":{{"type":"struct","fields":[{{"type":"struct","field":"after","fields":[{field}]}},{{"type":"string","field":"op"}}]}},"payload":{{"after":{{"v":{value}}},"op":"c"}}}}"#
            );
            JsonConverter::default()
                .value("t", Some(json.as_bytes()))
                .unwrap_err()
                .message
        };
        // A Decimal without its scale (not read as scale 0), or with one that is no number.
        let decimal =
            r#"{"type":"bytes","name":"org.apache.kafka.connect.data.Decimal","field":"v"}"#;
        assert!(err(decimal, r#""D54=""#).contains("without its scale"));
        let bad_scale = r#"{"type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"two"},"field":"v"}"#;
        assert!(err(bad_scale, r#""D54=""#).contains("`two` is not an integer"));
        // A decimal of no bytes (not 0).
        let scaled = r#"{"type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"2"},"field":"v"}"#;
        assert!(err(scaled, "\"\"").contains("no bytes"));
        // A Point without a coordinate (not null, which would drop the column).
        let point =
            r#"{"type":"struct","name":"io.debezium.data.geometry.Point","field":"v","fields":[]}"#;
        assert!(err(point, r#"{"x":1.5,"y":null}"#).contains("without both coordinates"));
        assert!(err(point, r#"{"x":1.5}"#).contains("without both coordinates"));
        // Coordinates that are not numbers: their text would go into the bulk body as it is.
        assert!(err(point, "{\"x\":1,\"y\":[1,\n2]}").contains("as numbers"));
        assert!(err(point, r#"{"x":"a","y":{}}"#).contains("as numbers"));
    }

    #[test]
    fn only_json_whitespace_goes_around_a_null_value() {
        let schema = r#"{"type":"struct","fields":[{"type":"string","field":"op"}]}"#;
        let ok = format!(r#"{{"schema":{schema},"payload":{{"op":"c","after":{{"id":1}}}}}}"#);
        for bad in ["\u{a0}null", "null\u{b}", "\u{2028}null", "null\u{c}"] {
            assert!(serde_json::from_str::<serde_json::Value>(bad).is_err());
            let mut c = JsonConverter::default();
            assert!(c.value("t", Some(bad.as_bytes())).is_err(), "{bad:?}");
            // Nor after the schema is known (read by its bytes).
            c.value("t", Some(ok.as_bytes())).unwrap();
            let framed = format!(r#"{{"schema":{schema},"payload":{bad}}}"#);
            assert!(c.value("t", Some(framed.as_bytes())).is_err(), "{framed:?}");
        }
        assert!(matches!(
            JsonConverter::default().value("t", Some(b" null\r\n")),
            Ok(Value::Tombstone)
        ));
        // A form feed after a record whose schema is known is refused as on the first read.
        let mut c = JsonConverter::default();
        let bad = format!("{ok}\u{c}");
        assert!(c.value("t", Some(bad.as_bytes())).is_err());
        c.value("t", Some(ok.as_bytes())).unwrap();
        assert!(c.value("t", Some(bad.as_bytes())).is_err());
    }

    #[test]
    fn the_single_pass_is_taken_unless_add_fields_keeps_source() {
        let schema = r#"{"type":"struct","fields":[{"type":"struct","field":"after","fields":[
            {"type":"int32","name":"io.debezium.time.Date","field":"d"}]}]}"#;
        let payload = r#"{"after":{"d":1},"source":{"connector":"mysql"},"op":"c"}"#;
        let json = format!(r#"{{"schema":{schema},"payload":{payload}}}"#);
        for keep_source in [false, true] {
            let opts = Options {
                keep_source,
                ..Options::default()
            };
            let mut c = JsonConverter::new(opts, None);
            c.value("t", Some(json.as_bytes())).unwrap();
            let (schema, payload) = c.known_schema("t", json.as_bytes()).unwrap();
            let mut top = Top::empty();
            assert_eq!(c.one_pass(payload, Some(&schema), &mut top), !keep_source);
            if !keep_source {
                assert_eq!(top.after_row.unwrap().as_str(), r#"{"d":"1970-01-02"}"#);
            }
        }
    }

    #[test]
    fn malformed_semantic_values_name_the_field() {
        let json = r#"{"schema":{"type":"struct","fields":[{"type":"struct","field":"after","fields":[
            {"type":"int32","name":"io.debezium.time.Date","field":"d"}]}]},
            "payload":{"after":{"d":"yesterday"},"op":"c"}}"#;
        let err = JsonConverter::default()
            .value("t", Some(json.as_bytes()))
            .unwrap_err();
        assert_eq!(
            err.message,
            "`after`: field `d`: expected an integer for a date, got `\"yesterday\"`"
        );
    }
}
