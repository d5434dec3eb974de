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
        let from_key;
        let image = match ev.op {
            Op::Read | Op::Create | Op::Update => ev.after.as_ref(),
            Op::Delete => match (&ev.before, rec.key.filter(|k| k.as_str().starts_with('{'))) {
                (Some(before), _) => Some(before),
                // MongoDB's key holds `_id` as Extended JSON text, its rows the plain value.
                (None, Some(key)) if is_mongodb(ev) => {
                    from_key = crate::decode::mongodb::key_image(key)?;
                    Some(&from_key)
                }
                (None, key) => key,
            },
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
                    crate::decode::excerpt(row.as_str())
                ));
            }
            let mut nested = false;
            flatten(
                row.as_str(),
                "",
                &self.cfg.separator,
                &mut out,
                &mut first,
                &mut nested,
            )?;
            if nested {
                unique_columns(&mut out, &self.cfg.separator)?;
            }
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
        // Druid throws away a row without a time as unparseable, counted only in its task's
        // report: refused here, naming why (`errors.tolerance` applies).
        .ok_or("the row has no time: the change has none where `druid.timestamp.field` looks, and the record has no Kafka timestamp")?;
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

/// The columns cdc-sink adds to each row.
const OWN_COLUMNS: [&str; 6] = [
    "__op",
    "__deleted",
    "__source_ts_ms",
    "__version",
    "__kafka_offset",
    "__time",
];

/// Writes the fields of object `json` into `out`, nested objects as `parent<sep>child` columns
/// (`nested` set when there is one). A column named as one cdc-sink adds is refused: Druid
/// would keep one of the two values without a word.
fn flatten(
    json: &str,
    prefix: &str,
    sep: &str,
    out: &mut Vec<u8>,
    first: &mut bool,
    nested: &mut bool,
) -> Result<(), String> {
    for_each_field(json, |name, v| {
        let raw = v.get().trim();
        if raw.starts_with('{') {
            *nested = true;
            let column = if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}{sep}{name}")
            };
            return flatten(raw, &column, sep, out, first, nested);
        }
        if prefix.is_empty() && name.starts_with("__") && OWN_COLUMNS.contains(&name) {
            return Err(format!(
                "the row has a column named {name}, which cdc-sink adds to every row: rename \
                 the column (a transform) or leave it out"
            ));
        }
        if !std::mem::take(first) {
            out.push(b',');
        }
        // A top-level column (the usual case) is written without building its name.
        let _ = if prefix.is_empty() {
            serde_json::to_writer(&mut *out, name)
        } else {
            let column = format!("{prefix}{sep}{name}");
            if OWN_COLUMNS.contains(&column.as_str()) {
                return Err(format!(
                    "the row's nested field {prefix}.{name} is flattened into column {column}, \
                     which cdc-sink adds to every row: set another flatten.separator"
                ));
            }
            serde_json::to_writer(&mut *out, &column)
        };
        out.push(b':');
        out.extend_from_slice(raw.as_bytes());
        Ok(())
    })
}

fn is_mongodb(ev: &ChangeEvent) -> bool {
    ev.source
        .as_ref()
        .is_some_and(|s| s.connector.as_deref() == Some("mongodb"))
}

/// Refuses a row (its columns so far in `out`, after its `{`) whose flattened columns share a
/// name (`{"a":{"b":1},"a_b":2}`): Druid would keep one of the two values without a word. Only
/// rows with a nested object are checked; a JSON object's own names are unique.
fn unique_columns(out: &mut Vec<u8>, sep: &str) -> Result<(), String> {
    out.push(b'}');
    let mut seen = std::collections::HashSet::new();
    let mut twice = None;
    let walked = std::str::from_utf8(out)
        .map_err(|e| e.to_string())
        .and_then(|text| {
            for_each_field(text, |name, _| {
                if !seen.insert(name.to_string()) && twice.is_none() {
                    twice = Some(name.to_string());
                }
                Ok(())
            })
        });
    out.pop();
    walked?;
    match twice {
        Some(name) => Err(format!(
            "two of the row's fields are flattened into one column {name} (a nested field joined \
             with flatten.separator {sep:?} gives the name of another column): set another \
             flatten.separator"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::{ConnectorConfig, ConnectorSpec, SinkSpec};
    use crate::decode::Op;

    fn rows() -> Rows {
        let config = ConnectorConfig::from_json(
            r#"{"name":"d","config":{"connector.class":"druid","topics":"t"}}"#,
        )
        .unwrap();
        let SinkSpec::Druid(cfg) = ConnectorSpec::validate(&config).unwrap().sink else {
            unreachable!()
        };
        Rows::new(Arc::new(*cfg))
    }

    /// The row of `value` with `key` at offset 7 of `t`, or why there is none.
    fn map(
        rows: &mut Rows,
        value: &Value,
        key: &str,
        timestamp_ms: Option<i64>,
    ) -> Result<String, String> {
        let key = Row::from_json(key);
        let rec = SinkRecord {
            topic: "t",
            kafka_topic: "t",
            partition: 0,
            offset: 7,
            timestamp_ms,
            key: Some(&key),
            value,
            received_ms: 0,
        };
        match rows.map(&rec)? {
            Mapped::Row { value, .. } => Ok(String::from_utf8(value).unwrap()),
            Mapped::Skip(why) => Err(why.into()),
        }
    }

    fn created(after: &str) -> Value {
        Value::Change(ChangeEvent {
            op: Op::Create,
            before: None,
            after: Some(Row::from_json(after)),
            source: None,
            ts_ms: None,
        })
    }

    fn row(rows: &mut Rows, after: &str) -> Result<String, String> {
        map(rows, &created(after), r#"{"id":1}"#, Some(1000))
    }

    #[test]
    fn a_mongodb_delete_without_before_carries_the_id_its_other_rows_do() {
        let mut rows = rows();
        let source = crate::decode::Source::parse(
            r#"{"connector":"mongodb","ts_ms":1558965508000,"ord":3}"#,
            false,
            false,
        )
        .unwrap();
        let value = Value::Change(ChangeEvent {
            op: Op::Delete,
            before: None,
            after: None,
            source: Some(source),
            ts_ms: None,
        });
        let mut delete = |key: &str| map(&mut rows, &value, key, Some(1000));
        // The after images of these documents hold `"id":"5f…"`, `"id":"abc"`, `"id":1234`.
        for (key, id) in [
            (
                r#"{"id":"{\"$oid\" : \"5f1b2c3d4e5f6a7b8c9d0e1f\"}"}"#,
                r#""id":"5f1b2c3d4e5f6a7b8c9d0e1f""#,
            ),
            (r#"{"id":"\"abc\""}"#, r#""id":"abc""#),
            (r#"{"id":"1234"}"#, r#""id":1234"#),
        ] {
            let row = delete(key).unwrap();
            assert!(row.starts_with(&format!("{{{id},\"__op\":\"d\"")), "{row}");
        }
        let Err(e) = delete(r#"{"id":"{not json"}"#) else {
            panic!("a MongoDB key whose id is not Extended JSON was taken");
        };
        assert!(e.contains("not Extended JSON"), "{e}");
    }

    #[test]
    fn columns_that_would_share_a_name_are_refused() {
        let mut rows = rows();
        assert_eq!(
            row(&mut rows, r#"{"id":1,"a":{"b":2,"c":{"d":3}}}"#).unwrap(),
            r#"{"id":1,"a_b":2,"a_c_d":3,"__op":"c","__deleted":false,"__source_ts_ms":null,"__version":7,"__kafka_offset":7,"__time":1000}"#
        );
        // Flattened onto another column: Druid would keep one of the two values.
        let e = row(&mut rows, r#"{"id":1,"a":{"b":1},"a_b":2}"#).unwrap_err();
        assert!(e.contains("one column a_b ("), "{e}");
        let e = row(&mut rows, r#"{"a_b":2,"id":1,"a":{"b":1}}"#).unwrap_err();
        assert!(e.contains("one column a_b ("), "{e}");
        // Named as a column cdc-sink adds, or flattened into one.
        let e = row(&mut rows, r#"{"id":1,"__version":5}"#).unwrap_err();
        assert!(e.contains("column named __version"), "{e}");
        let e = row(&mut rows, r#"{"id":1,"_":{"time":5}}"#).unwrap_err();
        assert!(e.contains("column __time"), "{e}");
        // Other names starting with `__` are the table's own.
        assert!(row(&mut rows, r#"{"id":1,"__note":5}"#).is_ok());
    }

    #[test]
    fn a_row_without_a_time_is_refused() {
        let Err(e) = map(&mut rows(), &created(r#"{"id":1}"#), r#"{"id":1}"#, None) else {
            panic!("a row without a time was written");
        };
        assert!(e.contains("the row has no time"), "{e}");
    }
}
