//! The Avro converter: Confluent's wire format (byte 0 = 0, bytes 1–4 = big-endian schema id,
//! then Avro binary), writer schemas from a schema registry, decoded into the same model the
//! JSON converter produces.

pub mod plan;
pub mod read;
pub mod registry;

use std::ops::Range;
use std::sync::Arc;

use serde_json::value::RawValue;

use self::plan::{Node, Plan};
use self::read::Reader;
use self::registry::Registry;
use super::schema::Conv;
use super::source::Member;
use super::{DecodeError, Options, Row, Source, Value, mongodb};

/// Decodes keys or values of one connector (one per role, as in Kafka Connect).
#[derive(Debug)]
pub struct AvroConverter {
    registry: Arc<Registry>,
    opts: Options,
    /// One buffer for a value's envelope fields, reused from record to record: every field is
    /// written into it, so the cap on what a record may grow to
    /// ([`super::semantic::MAX_IMAGE`]) holds for the record as a whole. Buffers of their own,
    /// each with its own cap, let one record of forged decimals in forty fields ask for 2.5 GiB.
    scratch: Vec<u8>,
    /// The key's buffer, reused likewise.
    key: Vec<u8>,
    /// Where each field of `source` that sinks read lies in `scratch`.
    members: Vec<(Member, Range<usize>)>,
    /// The plans of the schema ids seen, which never change: the registry's shared cache
    /// takes two locks per lookup (4% of the task thread, end to end).
    plans: crate::FastMap<u32, Arc<Plan>>,
    /// What each value schema id seen is, worked out once: the envelope's and `source`'s
    /// field names were matched for every record (a few percent of decoding an Avro value).
    layouts: crate::FastMap<u32, Arc<Layout>>,
    /// A schema was asked of the registry since [`AvroConverter::take_waited`] last looked.
    waited: bool,
}

/// A value schema, as the decoder reads it.
#[derive(Debug)]
enum Layout {
    Change(Envelope),
    /// Not a Debezium change event but a record Debezium writes beside them (heartbeats,
    /// schema changes, transaction metadata): skipped by its name, once its data is read with
    /// the plan, as a record that does not decode is a bad record whatever its schema.
    Skipped(super::Skip, Arc<Plan>),
    /// Neither: refused with this error.
    Refused(String),
}

/// Where the parts of a Debezium envelope lie among its schema's fields.
#[derive(Debug)]
struct Envelope {
    plan: Arc<Plan>,
    /// Each top-level field's part, in the schema's order.
    parts: Vec<Part>,
    /// For each field of `source` (when it is a record), the member sinks read it as.
    members: Vec<Option<Member>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Before,
    After,
    /// A record, whose fields' places are noted while it is written.
    SourceRecord,
    /// Anything else named `source`: parsed from its JSON.
    Source,
    Op,
    TsMs,
    Other,
}

impl Layout {
    fn of(id: u32, plan: Arc<Plan>) -> Layout {
        let fields = plan.fields().unwrap_or_default();
        if !fields.iter().any(|f| f.name == "op") {
            return match plan.name().and_then(super::skip_by_schema_name) {
                Some(skip) => Layout::Skipped(skip, plan),
                None => Layout::Refused(format!(
                    "schema id {id} ({}) is not a Debezium change event: it has no `op` field",
                    plan.name().unwrap_or("not a record")
                )),
            };
        }
        let mut members = Vec::new();
        let parts = fields
            .iter()
            .map(|f| match (&f.plan.node, &f.plan.conv, f.name.as_str()) {
                (_, _, "before") => Part::Before,
                (_, _, "after") => Part::After,
                (Node::Record { fields: sf, .. }, Conv::Keep, "source") => {
                    members = sf.iter().map(|f| Member::of(&f.name)).collect();
                    Part::SourceRecord
                }
                (_, _, "source") => Part::Source,
                (_, _, "op") => Part::Op,
                (_, _, "ts_ms") => Part::TsMs,
                _ => Part::Other,
            })
            .collect();
        Layout::Change(Envelope {
            plan,
            parts,
            members,
        })
    }
}

/// `buf`'s length, after padding it to a multiple of 8: `source`'s text starts on a word, where
/// UTF-8 checks take it a word at a time (unaligned, they took its first bytes one by one: about
/// half a percent of the Avro hot path's instructions).
fn aligned(buf: &mut Vec<u8>) -> usize {
    while !buf.len().is_multiple_of(8) {
        buf.push(b' ');
    }
    buf.len()
}

/// The text of a part at `span` of `buf`; `None` when null or not written. Inlined: called
/// through a closure, it cost about 40 instructions a call (callgrind, the Avro hot path).
#[inline(always)]
fn written<'b>(buf: &'b [u8], span: &Range<usize>) -> Option<&'b [u8]> {
    let b = buf.get(span.clone())?;
    (!b.is_empty() && b != b"null").then_some(b)
}

/// The most a decoding buffer keeps for the next record (a 6 KB record takes about 10 KB).
const KEEP: usize = 1 << 20;

/// Drops `buf` when a record (a forged one: up to the cap) grew it past [`KEEP`].
fn release(buf: &mut Vec<u8>) {
    if buf.capacity() > KEEP {
        *buf = Vec::new();
    }
}

/// The schema id and the Avro body of a Confluent-framed record.
fn frame(bytes: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
    match bytes {
        [0, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        [m, ..] if bytes.len() >= 5 => Err(DecodeError::new(format!(
            "not in the Confluent Avro wire format: the first byte is {m}, not 0"
        ))),
        _ => Err(DecodeError::new(format!(
            "not in the Confluent Avro wire format: {} bytes, fewer than the 5-byte header",
            bytes.len()
        ))),
    }
}

impl AvroConverter {
    pub fn new(registry: Arc<Registry>, opts: Options) -> AvroConverter {
        AvroConverter {
            registry,
            opts,
            scratch: Vec::new(),
            key: Vec::new(),
            members: Vec::new(),
            plans: Default::default(),
            layouts: Default::default(),
            waited: false,
        }
    }

    /// Whether decoding asked the registry for a schema (a request that may take seconds)
    /// since the last call.
    pub fn take_waited(&mut self) -> bool {
        std::mem::take(&mut self.waited)
    }

    fn plan(&mut self, id: u32) -> Result<Arc<Plan>, DecodeError> {
        if let Some(p) = self.plans.get(&id) {
            return Ok(p.clone());
        }
        self.waited = true;
        let p = self.registry.plan(id)?;
        self.plans.insert(id, p.clone());
        Ok(p)
    }

    /// Decodes a record key to JSON text.
    pub fn key(&mut self, bytes: &[u8]) -> Result<Row, DecodeError> {
        let (id, body) = frame(bytes)?;
        let plan = self.plan(id)?;
        let mut r = Reader::new(body);
        self.key.clear();
        let written =
            read::write(&mut r, &plan, &self.opts, &mut self.key).map_err(|e| bad(id, &e));
        let key = written
            .and_then(|()| finished(&r, id))
            .map(|()| Row::from_bytes(self.key.to_vec()));
        release(&mut self.key);
        key
    }

    /// The layout of value schema `id`, worked out the first time it is seen.
    fn layout(&mut self, id: u32) -> Result<Arc<Layout>, DecodeError> {
        if let Some(l) = self.layouts.get(&id) {
            return Ok(l.clone());
        }
        let l = Arc::new(Layout::of(id, self.plan(id)?));
        self.layouts.insert(id, l.clone());
        Ok(l)
    }

    /// Decodes a record value. `None` (a Kafka null) is a tombstone; a value of no bytes is
    /// not one, and not in the wire format (Confluent's deserializer refuses it too): taken as a
    /// tombstone, it deleted its key's document.
    pub fn value(&mut self, bytes: Option<&[u8]>) -> Result<Value, DecodeError> {
        let value = self.decode_value(bytes);
        release(&mut self.scratch);
        value
    }

    fn decode_value(&mut self, bytes: Option<&[u8]>) -> Result<Value, DecodeError> {
        let Some(bytes) = bytes else {
            return Ok(Value::Tombstone);
        };
        let (id, body) = frame(bytes)?;
        let layout = self.layout(id)?;
        let env = match &*layout {
            Layout::Change(env) => env,
            Layout::Skipped(skip, plan) => {
                let mut r = Reader::new(body);
                read::skip(&mut r, plan).map_err(|e| bad(id, &e))?;
                finished(&r, id)?;
                return Ok(Value::Skipped(*skip));
            }
            Layout::Refused(e) => return Err(DecodeError::new(e.clone())),
        };
        let fields = env.plan.fields().unwrap_or_default();
        let buf = &mut self.scratch;
        buf.clear();
        // Where each part lies in `buf`, by `Part` (empty: not written; `Other` is not).
        let mut spans = [const { 0..0 }; 6];
        let mut r = Reader::new(body);
        self.members.clear();
        // `before` comes ahead of `op`, and only a delete's is read: it is skipped, and written
        // once `op` says it is a delete (where it began, and its field's index).
        let mut before_at = None;
        for (i, (f, part)) in fields.iter().zip(&env.parts).enumerate() {
            // `source`'s text is checked as UTF-8 (the images are when copied out).
            let start = match part {
                Part::SourceRecord | Part::Source => aligned(buf),
                _ => buf.len(),
            };
            let written = match (part, &f.plan.node) {
                (Part::Before, _) => {
                    before_at = Some((r.pos, i));
                    read::skip(&mut r, &f.plan)
                }
                // Read by no sink (`transaction`, `ts_us`…): passed over, as the JSON decoder
                // passes over them.
                (Part::Other, _) => read::skip(&mut r, &f.plan),
                // `source`: where each field sinks read lies, so that they need not be parsed
                // again from the JSON.
                (Part::SourceRecord, Node::Record { fields: sf, .. }) => {
                    let (members, at) = (&env.members, &mut self.members);
                    read::write_record(&mut r, sf, &self.opts, buf, |i, range| {
                        if let Some(Some(m)) = members.get(i) {
                            at.push((*m, range))
                        }
                    })
                }
                (Part::After, _) => read::write_image(&mut r, &f.plan, &self.opts, buf),
                _ => read::write(&mut r, &f.plan, &self.opts, buf),
            };
            written.map_err(|e| bad(id, &format!("field `{}`: {e}", f.name)))?;
            if let Some(span) = spans.get_mut(*part as usize) {
                *span = start..buf.len();
            }
        }
        finished(&r, id)?;
        // `op` as the reader wrote it: a JSON string, which for "d" has nothing to escape.
        let delete = buf[spans[Part::Op as usize].clone()] == *br#""d""#;
        if let Some((at, i)) = before_at.filter(|_| delete) {
            let mut r = Reader::new(body);
            r.pos = at;
            let start = buf.len();
            read::write_image(&mut r, &fields[i].plan, &self.opts, buf)
                .map_err(|e| bad(id, &format!("field `before`: {e}")))?;
            spans[Part::Before as usize] = start..buf.len();
        }
        // Each part's text; `None` when null or not written (`before` of anything but a
        // delete).
        let buf = &self.scratch[..];
        // Borrowed: no allocation per record for a one-letter string.
        let op = super::row::some_str(&mut serde_json::Deserializer::from_slice(
            written(buf, &spans[Part::Op as usize]).unwrap_or(b"null"),
        ))
        .map_err(|e| bad(id, &format!("`op` is not a string: {e}")))?
        .ok_or_else(|| bad(id, "`op` is null"))?;
        // Rows are copied out of the buffer, which keeps its capacity for the next record
        // (taking buffers made every record grow them again: 11% of this decoder). Only a
        // delete's before image is read by a sink (`ChangeEvent::before`).
        // Matched, not mapped: the closures were calls of their own (callgrind).
        let before = match written(buf, &spans[Part::Before as usize]) {
            Some(b) => Some(image(b).map_err(|e| bad(id, &format!("`before`: {e}")))?),
            None => None,
        };
        let after = match written(buf, &spans[Part::After as usize]) {
            Some(b) => Some(image(b).map_err(|e| bad(id, &format!("`after`: {e}")))?),
            None => None,
        };
        let source = match (
            written(buf, &spans[Part::SourceRecord as usize]),
            written(buf, &spans[Part::Source as usize]),
        ) {
            (Some(b), _) => Some((Part::SourceRecord, b)),
            (None, Some(b)) => Some((Part::Source, b)),
            (None, None) => None,
        };
        // An integer, as the JSON decoder requires it: a `ts_ms` of another type (a timestamp
        // written out, a double) is refused, not dropped.
        let ts_ms = match written(buf, &spans[Part::TsMs as usize]) {
            Some(b) => Some(
                std::str::from_utf8(b)
                    .ok()
                    .and_then(|t| t.parse::<i64>().ok())
                    .ok_or_else(|| {
                        bad(
                            id,
                            &format!(
                                "`ts_ms` is not an integer: {}",
                                String::from_utf8_lossy(&b[..b.len().min(64)])
                            ),
                        )
                    })?,
            ),
            None => None,
        };
        let members = &self.members;
        let keep = self.opts.keep_source;
        let source = |read| {
            let Some((part, buf)) = source else {
                return Ok(None);
            };
            let text = std::str::from_utf8(buf).map_err(|e| bad(id, &format!("`source`: {e}")))?;
            if part == Part::Source {
                return Source::parse(text, read, keep).map(Some);
            }
            // The ranges lie between ASCII bytes (`:` and `,`), so `get` always finds them;
            // were one missing, the empty text is refused by the field's own parser.
            // Noted where they lie in the buffer, `source`'s text starting at `from`.
            let from = spans[Part::SourceRecord as usize].start;
            let named = members.iter().map(|(m, range)| {
                let local = range.start.wrapping_sub(from)..range.end.wrapping_sub(from);
                (*m, text.get(local).unwrap_or(""))
            });
            Source::from_members(text, named, read, keep).map(Some)
        };
        super::change(&op, before, after, source, ts_ms)
    }
}

/// A row image, copied from its buffer; MongoDB's are strings of Extended JSON.
fn image(buf: &[u8]) -> Result<Row, String> {
    if buf.starts_with(b"\"") {
        let raw: &RawValue = serde_json::from_slice(buf).map_err(|e| e.to_string())?;
        return mongodb::document(raw);
    }
    // The reader writes single-line JSON only.
    Ok(Row::from_bytes(buf.to_vec()))
}

fn bad(id: u32, why: &str) -> DecodeError {
    DecodeError::new(format!(
        "Avro data does not decode with schema id {id}: {why}"
    ))
}

fn finished(r: &Reader<'_>, id: u32) -> Result<(), DecodeError> {
    match r.remaining() {
        0 => Ok(()),
        n => Err(bad(
            id,
            &format!("{n} bytes left over after the record (not written with this schema)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Skip;

    fn layout(schema: &str) -> Layout {
        Layout::of(7, Arc::new(plan::compile(schema).unwrap()))
    }

    #[test]
    fn a_value_schema_is_read_once_for_its_envelope_parts_and_source_members() {
        let envelope = layout(
            r#"{"type":"record","name":"Envelope","namespace":"it.inv.customers","fields":[
                {"name":"before","type":["null","long"]},
                {"name":"after","type":["null","long"]},
                {"name":"source","type":{"type":"record","name":"Source","fields":[
                    {"name":"version","type":"string"},
                    {"name":"connector","type":"string"},
                    {"name":"file","type":"string"},
                    {"name":"pos","type":"long"}]}},
                {"name":"transaction","type":"null"},
                {"name":"op","type":"string"},
                {"name":"ts_ms","type":["null","long"]}]}"#,
        );
        let Layout::Change(env) = envelope else {
            panic!("{envelope:?}")
        };
        assert_eq!(
            env.parts,
            [
                Part::Before,
                Part::After,
                Part::SourceRecord,
                Part::Other,
                Part::Op,
                Part::TsMs
            ]
        );
        assert_eq!(
            env.members,
            [
                None,
                Some(Member::Connector),
                Some(Member::File),
                Some(Member::Pos)
            ]
        );
        // A `source` that is not a record is parsed from its JSON.
        let Layout::Change(env) = layout(
            r#"{"type":"record","name":"E","fields":[{"name":"op","type":"string"},
                {"name":"source","type":{"type":"map","values":"string"}}]}"#,
        ) else {
            panic!()
        };
        assert_eq!(env.parts, [Part::Op, Part::Source]);
        // Records Debezium writes beside changes are skipped by name; anything else refused.
        let heartbeat = layout(
            r#"{"type":"record","name":"Heartbeat","namespace":"io.debezium.connector.common","fields":[{"name":"ts_ms","type":"long"}]}"#,
        );
        assert!(matches!(heartbeat, Layout::Skipped(Skip::Heartbeat, _)));
        let Layout::Refused(e) =
            layout(r#"{"type":"record","name":"x.Other","fields":[{"name":"id","type":"long"}]}"#)
        else {
            panic!()
        };
        assert_eq!(
            e,
            "schema id 7 (x.Other) is not a Debezium change event: it has no `op` field"
        );
    }

    /// A converter whose registry is a closed loopback port: the schemas a test gives it are
    /// its only plans, and any other id fails as an unreachable registry does.
    fn converter(schemas: &[(u32, &str)]) -> AvroConverter {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let registry = registry::shared(&[format!("http://127.0.0.1:{port}")], None).unwrap();
        let mut c = AvroConverter::new(registry, Options::default());
        for (id, schema) in schemas {
            c.plans
                .insert(*id, Arc::new(plan::compile(schema).unwrap()));
        }
        c
    }

    fn framed(id: u32, parts: &[&[u8]]) -> Vec<u8> {
        let mut v = vec![0];
        v.extend(id.to_be_bytes());
        parts.iter().for_each(|p| v.extend(*p));
        v
    }

    /// An Avro string (length as a zig-zag varint, under 64 bytes).
    fn string(s: &str) -> Vec<u8> {
        let mut v = vec![(s.len() as u8) << 1];
        v.extend(s.as_bytes());
        v
    }

    #[test]
    fn only_a_null_value_is_a_tombstone_and_an_empty_key_is_refused() {
        let mut c = converter(&[]);
        assert_eq!(c.value(None).unwrap(), Value::Tombstone);
        // No bytes: not the wire format, and never a delete.
        let err = c.value(Some(b"")).unwrap_err().message;
        assert!(
            err.contains("0 bytes, fewer than the 5-byte header"),
            "{err}"
        );
        // Through the task's decoder too: an Avro key of no bytes is not "no key".
        let config = crate::connector::ConnectorConfig::from_json(
            r#"{"name":"x","config":{"connector.class":"elasticsearch","topics":"t","connection.url":"http://es:9200",
               "key.converter":"io.confluent.connect.avro.AvroConverter","key.converter.schema.registry.url":"http://127.0.0.1:9"}}"#,
        )
        .unwrap();
        let spec = crate::connector::ConnectorSpec::validate(&config).unwrap();
        let mut decoder = crate::decode::Decoder::new(&spec).unwrap();
        assert_eq!(decoder.key("t", None).unwrap(), None);
        let err = decoder.key("t", Some(b"")).unwrap_err().message;
        assert!(
            err.contains("0 bytes, fewer than the 5-byte header"),
            "{err}"
        );
    }

    #[test]
    fn mongodb_images_are_converted_as_the_json_decoder_converts_them() {
        // Debezium's MongoDB connector: images are strings of Extended JSON named Json.
        let json = r#"{"type":"string","connect.name":"io.debezium.data.Json"}"#;
        let schema = format!(
            r#"{{"type":"record","name":"Envelope","namespace":"mongo.inv.t","fields":[
                {{"name":"before","type":["null",{json}]}},
                {{"name":"after","type":["null",{json}]}},
                {{"name":"source","type":{{"type":"record","name":"Source","fields":[
                    {{"name":"connector","type":"string"}},{{"name":"ord","type":"int"}}]}}}},
                {{"name":"op","type":["null","string"]}}]}}"#
        );
        let mut c = converter(&[(9, &schema)]);
        let doc = r#"{"_id": {"$oid": "65f0c0ffee"}, "n": {"$numberLong": "5"}}"#;
        let source = [string("mongodb"), vec![2]].concat();
        let create = framed(9, &[&[0], &[2], &string(doc), &source, &[2], &string("c")]);
        let Value::Change(e) = c.value(Some(&create)).unwrap() else {
            panic!()
        };
        let after = e.after.unwrap();
        assert_eq!(after.as_str(), r#"{"id":"65f0c0ffee","n":5}"#);
        // The same image through the JSON decoder.
        let as_json = serde_json::to_string(doc).unwrap();
        let mut j = crate::decode::json::JsonConverter::default();
        let Value::Change(je) = j
            .value(
                "t",
                Some(
                    format!(r#"{{"after":{as_json},"source":{{"connector":"mongodb"}},"op":"c"}}"#)
                        .as_bytes(),
                ),
            )
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(je.after.unwrap().as_str(), after.as_str());
        // A delete's before image alike.
        let delete = framed(9, &[&[2], &string(doc), &[0], &source, &[2], &string("d")]);
        let Value::Change(e) = c.value(Some(&delete)).unwrap() else {
            panic!()
        };
        assert_eq!(e.before.unwrap().as_str(), r#"{"id":"65f0c0ffee","n":5}"#);
    }

    #[test]
    fn values_decode_by_their_schema_layout_skips_refusals_and_source_shapes_included() {
        let envelope = |source: &str| {
            format!(
                r#"{{"type":"record","name":"Envelope","namespace":"it.inv.t","fields":[
                    {{"name":"before","type":["null",{{"type":"record","name":"Row","fields":[{{"name":"id","type":"int"}}]}}]}},
                    {{"name":"after","type":["null","Row"]}},
                    {{"name":"source","type":{source}}},
                    {{"name":"op","type":["null","string"]}},
                    {{"name":"ts_ms","type":["null","long"]}}]}}"#
            )
        };
        let record_source = r#"{"type":"record","name":"Source","fields":[
            {"name":"version","type":"string"},{"name":"connector","type":"string"},
            {"name":"db","type":"string"},{"name":"file","type":"string"},{"name":"pos","type":"long"}]}"#;
        let (as_record, as_map) = (
            envelope(record_source),
            envelope(r#"{"type":"map","values":"string"}"#),
        );
        let mut c = converter(&[
            (
                1,
                r#"{"type":"record","name":"Heartbeat","namespace":"io.debezium.connector.common","fields":[{"name":"ts_ms","type":"long"}]}"#,
            ),
            (
                2,
                r#"{"type":"record","name":"SchemaChangeValue","namespace":"io.debezium.connector.mysql","fields":[{"name":"ddl","type":"string"}]}"#,
            ),
            (
                3,
                r#"{"type":"record","name":"x.Other","fields":[{"name":"id","type":"long"}]}"#,
            ),
            (4, &as_record),
            (5, &as_map),
        ]);
        assert_eq!(
            c.value(Some(&framed(1, &[&[2]]))).unwrap(),
            Value::Skipped(super::super::Skip::Heartbeat)
        );
        assert_eq!(
            c.value(Some(&framed(2, &[&string("DROP")]))).unwrap(),
            Value::Skipped(super::super::Skip::SchemaChange)
        );
        // Skipped only once their data decodes: cut short, or with bytes left over, they are
        // bad records as a change would be.
        for bad in [
            framed(1, &[]),
            framed(1, &[&[2, 0xff]]),
            framed(2, &[&[8, b'D']]),
        ] {
            let Err(e) = c.value(Some(&bad)) else {
                panic!("a heartbeat or schema change that does not decode was skipped");
            };
            assert!(
                e.message.contains("ends early") || e.message.contains("left over"),
                "{}",
                e.message
            );
        }
        for _ in 0..2 {
            assert_eq!(
                c.value(Some(&framed(3, &[&[2]]))).unwrap_err().message,
                "schema id 3 (x.Other) is not a Debezium change event: it has no `op` field"
            );
        }
        // A delete: before (branch 1, id 7), after null, source, op "d", ts_ms 5.
        let source = [
            string("2.7"),
            string("mysql"),
            string("inv"),
            string("mysql-bin.000003"),
            vec![8],
        ]
        .concat();
        let delete = framed(4, &[&[2, 14], &[0], &source, &[2], &string("d"), &[2, 10]]);
        let Value::Change(e) = c.value(Some(&delete)).unwrap() else {
            panic!()
        };
        assert_eq!(e.op, super::super::Op::Delete);
        assert_eq!(e.before.as_ref().map(Row::as_str), Some(r#"{"id":7}"#));
        assert_eq!((e.after, e.ts_ms), (None, Some(5)));
        let s = e.source.unwrap();
        assert_eq!(
            (s.connector.as_deref(), s.db.as_deref()),
            (Some("mysql"), Some("inv"))
        );
        assert_eq!(s.position, Ok(Some(3 << 40 | 4)));
        // An update: its before image is skipped, not read.
        let update = framed(4, &[&[2, 14], &[2, 16], &source, &[2], &string("u"), &[0]]);
        let Value::Change(e) = c.value(Some(&update)).unwrap() else {
            panic!()
        };
        assert_eq!(
            (e.before, e.after.as_ref().map(Row::as_str)),
            (None, Some(r#"{"id":8}"#))
        );
        // `op` null.
        let no_op = framed(4, &[&[0], &[2, 16], &source, &[0], &[0]]);
        assert!(
            c.value(Some(&no_op))
                .unwrap_err()
                .message
                .ends_with("`op` is null")
        );
        // `source` as a map: read from its JSON.
        let map = [
            vec![4],
            string("connector"),
            string("mysql"),
            string("db"),
            string("m"),
            vec![0],
        ]
        .concat();
        let create = framed(5, &[&[0], &[2, 16], &map, &[2], &string("c"), &[0]]);
        let Value::Change(e) = c.value(Some(&create)).unwrap() else {
            panic!()
        };
        let s = e.source.unwrap();
        assert_eq!(
            (s.connector.as_deref(), s.db.as_deref(), s.position),
            (Some("mysql"), Some("m"), Ok(None))
        );
        // An id the registry cannot give: an error each time, nothing kept for it.
        for _ in 0..2 {
            let e = c.value(Some(&framed(9, &[&[0]]))).unwrap_err();
            assert!(e.message.contains("schema registry"), "{}", e.message);
        }
        assert!(!c.layouts.contains_key(&9) && !c.plans.contains_key(&9));
    }

    #[test]
    fn only_debeziums_own_records_without_op_are_skipped() {
        let mut c = converter(&[
            (
                7,
                r#"{"type":"record","name":"Heartbeat","namespace":"com.acme","fields":[{"name":"ts_ms","type":"long"}]}"#,
            ),
            (
                8,
                r#"{"type":"record","name":"TransactionMetadataValue","namespace":"io.debezium.connector.common","fields":[{"name":"id","type":"string"}]}"#,
            ),
        ]);
        let e = c.value(Some(&framed(7, &[&[2]]))).unwrap_err();
        assert!(
            e.message
                .contains("com.acme.Heartbeat) is not a Debezium change event"),
            "{}",
            e.message
        );
        assert_eq!(
            c.value(Some(&framed(8, &[&string("tx")]))).unwrap(),
            Value::Skipped(super::super::Skip::TransactionMetadata)
        );
    }

    #[test]
    fn a_ts_ms_that_is_not_an_integer_is_refused_not_dropped() {
        let schema = r#"{"type":"record","name":"Envelope","namespace":"it.inv.t","fields":[
            {"name":"before","type":["null",{"type":"record","name":"Row","fields":[{"name":"id","type":"int"}]}]},
            {"name":"after","type":["null","Row"]},
            {"name":"op","type":"string"},
            {"name":"ts_ms","type":["null","string"]}]}"#;
        let mut c = converter(&[(6, schema)]);
        let create = |ts: &[u8]| framed(6, &[&[0], &[2, 16], &string("c"), ts]);
        let Value::Change(e) = c.value(Some(&create(&[0]))).unwrap() else {
            panic!()
        };
        assert_eq!(e.ts_ms, None);
        let err = c
            .value(Some(&create(&[&[2][..], &string("2024-03-01")].concat())))
            .unwrap_err();
        assert!(
            err.message.contains("`ts_ms` is not an integer"),
            "{}",
            err.message
        );
    }

    #[test]
    fn the_confluent_header_is_checked() {
        assert_eq!(frame(&[0, 0, 0, 1, 2, 9]).unwrap(), (258, &[9u8][..]));
        assert_eq!(
            frame(&[1, 0, 0, 0, 2, 9]).unwrap_err().message,
            "not in the Confluent Avro wire format: the first byte is 1, not 0"
        );
        assert!(
            frame(&[0, 0, 0])
                .unwrap_err()
                .message
                .contains("fewer than the 5-byte header")
        );
    }

    #[test]
    fn a_record_is_capped_as_a_whole_and_fields_no_sink_reads_are_passed_over() {
        use super::read::tests::zz;
        let registry = registry::shared(&["http://127.0.0.1:9".to_string()], None).unwrap();
        let mut c = AvroConverter::new(registry, Options::default());
        // Each item a decimal of one byte whose text is 131 075 bytes long.
        let decimals = r#"{"type":"array","items":{"type":"bytes","logicalType":"decimal","precision":131072,"scale":131072}}"#;
        let schema = format!(
            r#"{{"type":"record","name":"Envelope","fields":[
                {{"name":"after","type":{{"type":"record","name":"V","fields":[{{"name":"d","type":{decimals}}}]}}}},
                {{"name":"source","type":{{"type":"record","name":"S","fields":[{{"name":"d","type":{decimals}}}]}}}},
                {{"name":"transaction","type":{decimals}}},
                {{"name":"op","type":"string"}}]}}"#
        );
        c.plans.insert(7, Arc::new(plan::compile(&schema).unwrap()));
        let items = |n: i64| {
            let mut v = Vec::new();
            if n > 0 {
                v = zz(n);
                for _ in 0..n {
                    v.extend([2u8, 1]);
                }
            }
            v.push(0);
            v
        };
        let record = |after: i64, source: i64, transaction: i64| {
            let mut v = vec![0, 0, 0, 0, 7];
            v.extend(items(after));
            v.extend(items(source));
            v.extend(items(transaction));
            v.extend([2, b'c']);
            v
        };
        // About 40 MiB in `after` and as much in `source`: each under the cap, together over
        // it (in buffers of their own, each field had a cap of its own).
        let Err(err) = c.value(Some(&record(320, 320, 0))) else {
            panic!("a record of 80 MiB was taken");
        };
        assert!(
            err.message.contains("larger than 64 MiB"),
            "{}",
            err.message
        );
        // About 40 MiB in `after` and as much in `transaction`, which no sink reads: passed
        // over, not written.
        let Ok(Value::Change(change)) = c.value(Some(&record(320, 0, 320))) else {
            panic!("a record whose `transaction` no sink reads was refused or not a change");
        };
        assert!(change.after.unwrap().as_str().len() > 40_000_000);
        // Neither record's buffer kept for the next.
        assert!(c.scratch.capacity() <= KEEP, "{}", c.scratch.capacity());
    }
}
