//! A change → one Druid row: the row image (`after`, or `before` for a delete) flattened, plus
//! `__op`, `__deleted`, `__source_ts_ms`, `__version`, `__kafka_offset` and `__time`. Keyed by
//! the row's id, so a key's rows stay in one partition, in order.

use std::sync::Arc;

use super::config::{DruidConfig, TimeField};
use crate::decode::row::for_each_field;
use crate::decode::{ChangeEvent, Op, Row, Value};
use crate::sink::SinkRecord;
use crate::sink::identity::record_id;
use crate::sink::source_versions::SourceVersions;

/// A record as the Druid sink writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapped {
    Row {
        topic: Arc<str>,
        key: String,
        value: Vec<u8>,
    },
    /// Nothing to write (tombstones, schema changes, heartbeats, transaction markers…).
    Skip(&'static str),
}

pub struct Rows {
    cfg: Arc<DruidConfig>,
    versions: SourceVersions,
    topics: crate::FastMap<String, Arc<str>>,
}

impl Rows {
    pub fn new(cfg: Arc<DruidConfig>) -> Rows {
        Rows {
            cfg,
            versions: SourceVersions::default(),
            topics: Default::default(),
        }
    }

    pub fn map(&mut self, rec: &SinkRecord<'_>) -> Result<Mapped, String> {
        let ev = match rec.value {
            Value::Skipped(s) => return Ok(Mapped::Skip(s.name())),
            Value::Tombstone => return Ok(Mapped::Skip("tombstone")),
            Value::Change(ev) => ev,
        };
        let image = match ev.op {
            Op::Read | Op::Create | Op::Update => ev.after.as_ref(),
            Op::Delete => ev
                .before
                .as_ref()
                .or(rec.key.filter(|k| k.as_str().starts_with('{'))),
            Op::Truncate => None,
            Op::Message => return Ok(Mapped::Skip("message")),
        };
        let key = match ev.op {
            // A truncate has no row: its key is the table.
            Op::Truncate => table_of(ev).unwrap_or_else(|| rec.topic.to_string()),
            _ => self.id(rec, image)?,
        };
        let version = self.versions.version(rec, ev)?;
        let mut out = Vec::with_capacity(image.map_or(0, |r| r.as_str().len()) + 128);
        out.push(b'{');
        let mut first = true;
        if let Some(row) = image {
            if !row.as_str().starts_with('{') {
                return Err(format!(
                    "row image is not a JSON object: {}",
                    truncate(row.as_str())
                ));
            }
            flatten(row.as_str(), "", &self.cfg.separator, &mut out, &mut first)?;
        }
        // Read with the rest of `source` when it was decoded (parsing its JSON again for it
        // was a second walk over the block per row).
        let source_ts = ev
            .source
            .as_ref()
            .and_then(|s| s.ts_ms)
            .map(|t| t.to_string());
        let time = match self.cfg.time {
            TimeField::SourceTs => source_ts.clone(),
            TimeField::DebeziumTs => ev.ts_ms.map(|t| t.to_string()),
            TimeField::Kafka => None,
        }
        .or_else(|| rec.timestamp_ms.map(|t| t.to_string()))
        .unwrap_or_else(|| "null".into());
        let mut field = |name: &str, value: &str| {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            out.extend_from_slice(name.as_bytes());
            out.push(b':');
            out.extend_from_slice(value.as_bytes());
        };
        field("\"__op\"", &format!("\"{}\"", ev.op.code()));
        field(
            "\"__deleted\"",
            if ev.op == Op::Delete { "true" } else { "false" },
        );
        field("\"__source_ts_ms\"", source_ts.as_deref().unwrap_or("null"));
        field("\"__version\"", &version.to_string());
        // Changes of one row in one source transaction share a version (docs/versions.md); the
        // offset of each in the source topic orders them: a key's changes are in one partition,
        // in the order the transaction made them. Druid keeps every row, so a query of the
        // newest row needs both (README, "The Druid connector").
        field("\"__kafka_offset\"", itoa::Buffer::new().format(rec.offset));
        field("\"__time\"", &time);
        out.push(b'}');
        Ok(Mapped::Row {
            topic: self.topic(rec.topic),
            key,
            value: out,
        })
    }

    fn topic(&mut self, topic: &str) -> Arc<str> {
        if let Some(t) = self.topics.get(topic) {
            return t.clone();
        }
        let t: Arc<str> = self.cfg.topic_of(topic).into();
        self.topics.insert(topic.to_string(), t.clone());
        t
    }

    /// The row key: from the record key, else from `pk.fields` of the image.
    fn id(&self, rec: &SinkRecord<'_>, image: Option<&Row>) -> Result<String, String> {
        let cfg = &self.cfg;
        let id = record_id(
            rec.key,
            image,
            cfg.key_field.as_deref(),
            &cfg.pk_fields,
            &cfg.key_separator,
        )?
        .ok_or("record has no key: set pk.fields")?;
        if id.is_empty() {
            return Err("the row key is empty".into());
        }
        Ok(id)
    }
}

/// `db.schema.table` (the parts the source names).
fn table_of(ev: &ChangeEvent) -> Option<String> {
    let s = ev.source.as_ref()?;
    let parts: Vec<&str> = [&s.db, &s.schema, &s.table]
        .into_iter()
        .filter_map(|p| p.as_deref())
        .collect();
    (!parts.is_empty()).then(|| parts.join("."))
}

/// Writes the fields of object `json` into `out`, nested objects as `parent<sep>child` columns.
fn flatten(
    json: &str,
    prefix: &str,
    sep: &str,
    out: &mut Vec<u8>,
    first: &mut bool,
) -> Result<(), String> {
    for_each_field(json, |name, v| {
        let raw = v.get().trim();
        if raw.starts_with('{') {
            let column = if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}{sep}{name}")
            };
            return flatten(raw, &column, sep, out, first);
        }
        if !std::mem::take(first) {
            out.push(b',');
        }
        // A top-level column (the usual case) is written without building its name.
        let _ = if prefix.is_empty() {
            serde_json::to_writer(&mut *out, name)
        } else {
            serde_json::to_writer(&mut *out, &format!("{prefix}{sep}{name}"))
        };
        out.push(b':');
        out.extend_from_slice(raw.as_bytes());
        Ok(())
    })
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(200) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
