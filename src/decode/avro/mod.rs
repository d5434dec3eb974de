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
use super::{DecodeError, Options, Row, Source, Value, mongodb};

/// Decodes keys or values of one connector (one per role, as in Kafka Connect).
#[derive(Debug)]
pub struct AvroConverter {
    registry: Arc<Registry>,
    opts: Options,
    /// One buffer per top-level envelope field, reused from record to record.
    scratch: Vec<Vec<u8>>,
    /// The key's buffer, reused likewise.
    key: Vec<u8>,
    /// Where each field of `source` lies in its buffer: (index among its fields, range).
    members: Vec<(usize, Range<usize>)>,
    /// The plans of the schema ids seen, which never change: the registry's shared cache
    /// takes two locks per lookup (4% of the task thread, end to end).
    plans: crate::FastMap<u32, Arc<Plan>>,
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
        }
    }

    fn plan(&mut self, id: u32) -> Result<Arc<Plan>, DecodeError> {
        if let Some(p) = self.plans.get(&id) {
            return Ok(p.clone());
        }
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
        read::write(&mut r, &plan, &self.opts, &mut self.key).map_err(|e| bad(id, &e))?;
        finished(&r, id)?;
        Ok(Row::from_bytes(self.key.to_vec()))
    }

    /// Decodes a record value. `None` (a Kafka null) is a tombstone.
    pub fn value(&mut self, bytes: Option<&[u8]>) -> Result<Value, DecodeError> {
        let Some(bytes) = bytes.filter(|b| !b.is_empty()) else {
            return Ok(Value::Tombstone);
        };
        let (id, body) = frame(bytes)?;
        let plan = self.plan(id)?;
        let Some(fields) = plan.fields().filter(|f| f.iter().any(|f| f.name == "op")) else {
            return match plan.name().and_then(super::skip_by_schema_name) {
                Some(skip) => Ok(Value::Skipped(skip)),
                None => Err(DecodeError::new(format!(
                    "schema id {id} ({}) is not a Debezium change event: it has no `op` field",
                    plan.name().unwrap_or("not a record")
                ))),
            };
        };
        if self.scratch.len() < fields.len() {
            self.scratch.resize_with(fields.len(), Vec::new);
        }
        let mut r = Reader::new(body);
        self.members.clear();
        let mut source_fields = None;
        // `before` comes ahead of `op`, and only a delete's is read: it is skipped, and written
        // once `op` says it is a delete (where it began, and its field's index).
        let mut before_at = None;
        for (i, (f, buf)) in fields.iter().zip(self.scratch.iter_mut()).enumerate() {
            buf.clear();
            let written = match (&f.plan.node, &f.plan.conv, f.name.as_str()) {
                (_, _, "before") => {
                    before_at = Some((r.pos, i));
                    read::skip(&mut r, &f.plan)
                }
                // `source` (a record in every Debezium connector): where each of its fields
                // lies, so that its fields need not be parsed again from the JSON.
                (Node::Record { fields: sf, .. }, Conv::Keep, "source") => {
                    source_fields = Some(sf);
                    let members = &mut self.members;
                    read::write_record(&mut r, sf, &self.opts, buf, |i, range| {
                        members.push((i, range))
                    })
                }
                _ => read::write(&mut r, &f.plan, &self.opts, buf),
            };
            written.map_err(|e| bad(id, &format!("field `{}`: {e}", f.name)))?;
        }
        finished(&r, id)?;
        // `op` as the reader wrote it: a JSON string, which for "d" has nothing to escape.
        let op_at = fields.iter().position(|f| f.name == "op");
        let delete = op_at.is_some_and(|i| self.scratch[i] == br#""d""#);
        if let Some((at, i)) = before_at.filter(|_| delete) {
            let mut r = Reader::new(body);
            r.pos = at;
            read::write(&mut r, &fields[i].plan, &self.opts, &mut self.scratch[i])
                .map_err(|e| bad(id, &format!("field `before`: {e}")))?;
        }
        let op = op_at
            // Borrowed: no allocation per record for a one-letter string.
            .and_then(|i| {
                super::row::some_str(&mut serde_json::Deserializer::from_slice(&self.scratch[i]))
                    .ok()
                    .flatten()
            })
            .ok_or_else(|| bad(id, "`op` is null"))?;
        let (mut before, mut after, mut source, mut ts_ms) = (None, None, None, None);
        // Rows are copied out of the buffers, which keep their capacity for the next record
        // (taking them made every record grow its buffers again: 11% of this decoder). Only a
        // delete's before image is read by a sink (`ChangeEvent::before`).
        for (f, buf) in fields.iter().zip(&self.scratch) {
            // Null, or not written (`before` of anything but a delete).
            if buf == b"null" || buf.is_empty() {
                continue;
            }
            match f.name.as_str() {
                // Written only for a delete (above).
                "before" => {
                    before = Some(image(buf).map_err(|e| bad(id, &format!("`before`: {e}")))?)
                }
                "after" => after = Some(image(buf).map_err(|e| bad(id, &format!("`after`: {e}")))?),
                "source" => source = Some(buf.as_slice()),
                "ts_ms" => ts_ms = std::str::from_utf8(buf).ok().and_then(|t| t.parse().ok()),
                _ => {}
            }
        }
        let members = &self.members;
        let keep = self.opts.keep_source;
        let source = |read| match (source, source_fields) {
            (None, _) => Ok(None),
            (Some(buf), Some(sf)) => {
                let text =
                    std::str::from_utf8(buf).map_err(|e| bad(id, &format!("`source`: {e}")))?;
                // The ranges lie between ASCII bytes (`:` and `,`), so `get` always finds them;
                // were one missing, the empty text is refused by the field's own parser.
                let named = members.iter().map(|(i, range)| {
                    (sf[*i].name.as_str(), text.get(range.clone()).unwrap_or(""))
                });
                Source::from_members(text, named, read, keep).map(Some)
            }
            (Some(buf), None) => {
                let text =
                    std::str::from_utf8(buf).map_err(|e| bad(id, &format!("`source`: {e}")))?;
                Source::parse(text, read, keep).map(Some)
            }
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
}
