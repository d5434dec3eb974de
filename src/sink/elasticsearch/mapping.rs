//! A decoded change → one Elasticsearch bulk action (docs/design.md): index name, document id,
//! version, and the document itself. Plain functions over plain types.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::value::RawValue;

use super::config::{EsConfig, FieldRef, OnDelete, OnNull, VersionSource};
use super::deletes::{Deleted, RecentDeletes};
use super::scopes::Scopes;
use crate::sink::identity::record_id;

use crate::decode::row::write_json_str;
use crate::decode::source::{Ordering, SnapshotMark};
use crate::decode::{ChangeEvent, Op, Row, Value};
use crate::sink::PassedKey;
use crate::sink::SinkRecord;
use crate::sink::source_versions::SourceVersions;

/// Elasticsearch refuses longer ids.
const MAX_ID_BYTES: usize = 512;

/// One bulk action, borrowing its document from the record it maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkAction<'a> {
    pub index: Arc<str>,
    pub id: String,
    /// `version` with `version_type=external_gte`; `None` = unversioned.
    pub version: Option<u64>,
    pub kind: ActionKind<'a>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionKind<'a> {
    /// Index this whole document (one line of JSON).
    Index(Document<'a>),
    Delete,
}

/// A document to index: a row image's JSON object with fields added to it, written straight
/// into the bulk body ([`BulkAction::encode`]). It was assembled in a buffer of its own first,
/// then copied into the body: an allocation and a copy of every document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document<'a> {
    /// The image's object without its closing brace.
    open: &'a str,
    /// The added fields, each after its comma, then the closing brace.
    close: Cow<'a, [u8]>,
}

impl Document<'_> {
    /// A document of `json` alone.
    pub fn new(json: &str) -> Result<Document<'_>, String> {
        let text = json.trim_end();
        match text.strip_suffix('}').filter(|_| text.starts_with('{')) {
            Some(open) => Ok(Document {
                open,
                close: Cow::Borrowed(b"}"),
            }),
            None => Err(format!(
                "row image is not a JSON object: {}",
                crate::decode::excerpt(text)
            )),
        }
    }

    /// Appends the document's JSON (one line when the image is).
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.open.as_bytes());
        out.extend_from_slice(&self.close);
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.open.len() + self.close.len());
        self.write(&mut out);
        out
    }
}

impl BulkAction<'_> {
    /// Appends the action's NDJSON lines to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(match self.kind {
            ActionKind::Index(_) => b"{\"index\":{\"_index\":",
            ActionKind::Delete => b"{\"delete\":{\"_index\":",
        });
        write_json_str(out, &self.index);
        out.extend_from_slice(b",\"_id\":");
        write_json_str(out, &self.id);
        if let Some(v) = self.version {
            // itoa: `write!` went through the formatting machinery, a tenth of this function.
            out.extend_from_slice(b",\"version\":");
            out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
            out.extend_from_slice(b",\"version_type\":\"external_gte\"");
        }
        out.extend_from_slice(b"}}\n");
        if let ActionKind::Index(doc) = &self.kind {
            doc.write(out);
            out.push(b'\n');
        }
    }
}

/// What a record becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapped<'a> {
    Write(BulkAction<'a>),
    /// Nothing to write; the name says why (counted).
    Skip(&'static str),
}

/// The end of a table's snapshot, written: what reconciling its index needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEnd {
    pub index: Arc<str>,
    /// The Kafka topic of the table.
    pub topic: Box<str>,
    /// The snapshot's version: a document below it was written by no snapshot read and no later
    /// change.
    pub below: u64,
    /// PostgreSQL: versions `4n + 3` (a change of the first transaction after a snapshot that
    /// could not be raised above it) may be below `below` and are never removed.
    pub protect_after_snapshot: bool,
}

/// Whether a document at `version` is one the snapshot `end` did not write and no later change
/// wrote (docs/reconcile.md).
pub fn removable(version: u64, end: &SnapshotEnd) -> bool {
    version < end.below
        && !(end.protect_after_snapshot && version % 4 == crate::decode::source::PG_AFTER_SNAPSHOT)
}

/// The key field Debezium's ByLogicalTableRouter adds when it merges tables into one topic.
const MERGED_TABLES_KEY: &str = "__dbz__physicalTableIdentifier";

/// Maps records of one task; remembers a little state (index per topic, the delete event each
/// tombstone follows).
pub struct Mapper {
    cfg: Arc<EsConfig>,
    /// `index.name` uses only `${topic}` (or is unset): the index is a function of the topic.
    per_topic: bool,
    indices: crate::FastMap<String, Arc<str>>,
    /// Delete events, for the tombstone that follows each.
    deletes: RecentDeletes,
    /// Versions from source positions (`version.source=source`).
    versions: SourceVersions,
    /// The table each index holds (`snapshot.reconcile`).
    scopes: Scopes,
    /// Indices already warned about as not reconcilable.
    warned: Vec<Arc<str>>,
}

impl Mapper {
    pub fn new(cfg: Arc<EsConfig>) -> Mapper {
        let per_topic = cfg.index_name.as_deref().is_none_or(|t| {
            !(t.contains("${db}") || t.contains("${schema}") || t.contains("${table}"))
        });
        Mapper {
            cfg,
            per_topic,
            indices: Default::default(),
            deletes: RecentDeletes::default(),
            versions: SourceVersions::checked(),
            scopes: Scopes::default(),
            warned: Vec::new(),
        }
    }

    /// Whether `rec` is the last read of a table's snapshot and reconciliation is on.
    pub fn ends_snapshot(&self, rec: &SinkRecord<'_>) -> bool {
        self.cfg.reconcile
            && matches!(rec.value, Value::Change(ev) if ev.op == Op::Read
                && ev.source.as_ref().is_some_and(|s| s.snapshot == SnapshotMark::EndOfTable))
    }

    /// What reconciling the index after `rec` (written as `action`) needs, when `rec` ends a
    /// table's snapshot and the index can be reconciled; warns once per index that cannot.
    pub fn snapshot_end(
        &mut self,
        rec: &SinkRecord<'_>,
        action: &BulkAction,
    ) -> Option<SnapshotEnd> {
        if !self.ends_snapshot(rec) {
            return None;
        }
        let Value::Change(ev) = rec.value else {
            return None;
        };
        let from_source = ev
            .source
            .as_ref()
            .is_some_and(|s| matches!(s.position, Ok(Some(_))));
        let merged = rec.key.is_some_and(|k| k.get(MERGED_TABLES_KEY).is_some());
        let own_position = ev
            .source
            .as_ref()
            .is_some_and(|s| s.ordering == Ordering::OwnPosition);
        let why = match (from_source, action.version) {
            (false, _) | (_, None) => {
                Some("the source position of its records is not known".to_string())
            }
            _ if own_position => Some(
                "its records carry no `source.sequence` (a Debezium version before it): their \
                 versions follow each change's own WAL position, not the commit order, and a \
                 change of a transaction open during the snapshot would look older than it"
                    .to_string(),
            ),
            _ if merged => Some(format!(
                "the topic merges several tables (its keys carry `{MERGED_TABLES_KEY}`)"
            )),
            // MongoDB snapshot reads: every document is at or above it.
            (true, Some(0)) => return None,
            _ => self.scopes.shared(&action.index).map(str::to_string),
        };
        if let Some(why) = why {
            if !self.warned.contains(&action.index) {
                self.warned.push(action.index.clone());
                tracing::warn!(index = %action.index, topic = rec.kafka_topic,
                    "a snapshot of the table ended; the index is not reconciled: {why} (snapshot.reconcile)");
            }
            return None;
        }
        let postgres = ev
            .source
            .as_ref()
            .is_some_and(|s| s.connector.as_deref() == Some("postgresql"));
        Some(SnapshotEnd {
            index: action.index.clone(),
            topic: rec.kafka_topic.into(),
            below: action.version?,
            protect_after_snapshot: postgres,
        })
    }

    /// Debezium's tombstones reach the sink and delete documents: each needs the version of
    /// the delete event before it.
    fn tombstones_delete(&self) -> bool {
        !self.cfg.drop_tombstones && self.cfg.on_null == OnNull::Delete
    }

    /// Whether the offset commit must wait at `rec` for the record after it: a delete event
    /// whose tombstone (the next record of the partition) needs the delete's version, also after
    /// a restart.
    pub fn holds(&self, rec: &SinkRecord<'_>) -> bool {
        self.tombstones_delete() && matches!(rec.value, Value::Change(ev) if ev.op == Op::Delete)
    }

    /// A record of (`topic`, `partition`) that may be a delete event was tolerated without
    /// being mapped, or its mapping failed: the tombstone after it may belong to it rather than
    /// to the delete event remembered before it. The partition's is forgotten when
    /// the record's key names its document, or names none that can be told (unread, or no id
    /// from the key alone, as a tombstone's is made). That tombstone is then an unversioned
    /// delete, as one whose delete event the task never read; taking the remembered delete's
    /// version, it was answered 409 below a row created again between the two deletes, and
    /// that row stayed. A record of another document leaves the memory as it is.
    pub fn passed_over(&mut self, topic: &str, partition: i32, key: PassedKey<'_>) {
        let id = match key {
            PassedKey::Read(key) if !self.cfg.key_ignore => record_id(
                key,
                None,
                self.cfg.key_field.as_deref(),
                &self.cfg.pk_fields,
                &self.cfg.key_separator,
            )
            .ok()
            .flatten(),
            _ => None,
        };
        self.deletes.passed_over(topic, partition, id.as_deref());
    }

    /// Maps one record of a single pass over the records (one assignment of each partition:
    /// [`Mapper::map_assigned`]).
    pub fn map<'a>(&mut self, rec: &SinkRecord<'a>) -> Result<Mapped<'a>, String> {
        self.map_assigned(rec, 0)
    }

    /// Maps one record, read in `assignment` of its partition (its ack's epoch: a delete event
    /// is remembered for its tombstone within one assignment, `deletes`). An error names what
    /// is wrong with the record (the caller adds where it is).
    pub fn map_assigned<'a>(
        &mut self,
        rec: &SinkRecord<'a>,
        assignment: u32,
    ) -> Result<Mapped<'a>, String> {
        match rec.value {
            Value::Skipped(s) => Ok(Mapped::Skip(s.name())),
            Value::Tombstone if self.cfg.drop_tombstones => Ok(Mapped::Skip("tombstone")),
            Value::Tombstone => self.tombstone(rec, assignment),
            Value::Change(ev) => match ev.op {
                Op::Read | Op::Create | Op::Update => {
                    let after = ev.after.as_ref().ok_or("change without an `after` image")?;
                    let index = self.index(rec, Some(ev))?;
                    let id = self.id(rec, Some(after))?;
                    let doc =
                        self.document(after.as_str(), ev, self.cfg.mark_live.then_some(false))?;
                    // Last of what can fail: a refused record leaves no version remembered.
                    let version = self.version(rec, ev)?;
                    if self.cfg.reconcile {
                        self.scopes.wrote(&index, rec.kafka_topic, table_of(ev));
                    }
                    Ok(Mapped::Write(BulkAction {
                        index,
                        id,
                        version,
                        kind: ActionKind::Index(doc),
                    }))
                }
                Op::Delete => self.delete(rec, ev, assignment),
                Op::Truncate => Ok(Mapped::Skip("truncate")),
                Op::Message => Ok(Mapped::Skip("message")),
            },
        }
    }

    fn delete<'a>(
        &mut self,
        rec: &SinkRecord<'a>,
        ev: &'a ChangeEvent,
        assignment: u32,
    ) -> Result<Mapped<'a>, String> {
        let on_delete = self.cfg.on_delete;
        let remember = self.tombstones_delete();
        // What is not written is decided first. (A remembered delete needs its version for the
        // tombstone after it even when the delete itself is dropped; `remember` implies
        // `behavior.on.null.values=delete`.)
        match (on_delete, self.cfg.on_null) {
            (OnDelete::Ignore, _) if !remember => return Ok(Mapped::Skip("delete_dropped")),
            // ExtractNewRecordState made it a null value: `behavior.on.null.values` decides,
            // and a delete keeps the event's version.
            (OnDelete::AsNull, OnNull::Ignore) => return Ok(Mapped::Skip("null_value")),
            (OnDelete::AsNull, OnNull::Fail) => {
                return Err(
                    "delete event (a null value after ExtractNewRecordState) and behavior.on.null.values=fail"
                        .into(),
                );
            }
            _ => {}
        }
        let index = self.index(rec, Some(ev))?;
        let id = self.id(rec, ev.before.as_ref())?;
        let kind = match on_delete {
            OnDelete::SoftDelete => {
                let image = match (&ev.before, rec.key) {
                    (Some(b), _) => b.as_str(),
                    (None, Some(k)) if k.as_str().starts_with('{') => k.as_str(),
                    _ => "{}",
                };
                Some(ActionKind::Index(self.document(image, ev, Some(true))?))
            }
            OnDelete::Delete | OnDelete::AsNull => Some(ActionKind::Delete),
            OnDelete::Ignore => None,
        };
        // Last of what can fail: a refused record leaves no version remembered.
        let version = self.version(rec, ev)?;
        if self.cfg.reconcile {
            self.scopes.wrote(&index, rec.kafka_topic, table_of(ev));
        }
        if remember {
            let deleted = Deleted {
                index: index.clone(),
                version,
            };
            self.deletes.deleted(
                rec.kafka_topic,
                rec.partition,
                assignment,
                id.clone(),
                deleted,
            );
        }
        Ok(match kind {
            Some(kind) => Mapped::Write(BulkAction {
                index,
                id,
                version,
                kind,
            }),
            None => Mapped::Skip("delete_dropped"),
        })
    }

    /// Debezium's tombstone (a null value after a delete event), by `behavior.on.null.values`.
    /// A delete takes the index and version of the delete event it follows; one whose delete
    /// event was not read by this task in the same assignment (a compacted topic) is
    /// unversioned.
    fn tombstone<'a>(
        &mut self,
        rec: &SinkRecord<'a>,
        assignment: u32,
    ) -> Result<Mapped<'a>, String> {
        match self.cfg.on_null {
            OnNull::Ignore => Ok(Mapped::Skip("tombstone")),
            OnNull::Fail => Err("null value (tombstone) and behavior.on.null.values=fail".into()),
            OnNull::Delete => {
                let id = self.id(rec, None)?;
                let (index, version) =
                    match self
                        .deletes
                        .tombstone(rec.kafka_topic, rec.partition, assignment, &id)
                    {
                        Some(d) => (d.index, d.version),
                        None => (self.index(rec, None)?, None),
                    };
                Ok(Mapped::Write(BulkAction {
                    index,
                    id,
                    version,
                    kind: ActionKind::Delete,
                }))
            }
        }
    }

    /// The index of a record; `ev` is `None` for a tombstone.
    fn index(
        &mut self,
        rec: &SinkRecord<'_>,
        ev: Option<&ChangeEvent>,
    ) -> Result<Arc<str>, String> {
        if let Some(i) = self.cfg.topic_index_map.get(rec.topic).cloned() {
            return Ok(self.intern_topic(rec.topic, || i));
        }
        let Some(template) = self.cfg.index_name.clone() else {
            return Ok(self.intern_topic(rec.topic, || rec.topic.to_lowercase()));
        };
        if self.per_topic {
            return Ok(self.intern_topic(rec.topic, || {
                template.replace("${topic}", rec.topic).to_lowercase()
            }));
        }
        let Some(source) = ev.and_then(|e| e.source.as_ref()) else {
            // A tombstone has no source: use the index this topic last wrote to.
            return self.indices.get(rec.topic).cloned().ok_or_else(|| {
                format!("index.name `{template}` needs `source`, which a tombstone does not have")
            });
        };
        let field = |name: &str, v: &Option<Box<str>>| {
            v.as_deref()
                .map(str::to_string)
                .ok_or_else(|| format!("index.name uses ${{{name}}} but `source.{name}` is absent"))
        };
        let mut name = template.replace("${topic}", rec.topic);
        for (ph, key, v) in [
            ("${db}", "db", &source.db),
            ("${schema}", "schema", &source.schema),
            ("${table}", "table", &source.table),
        ] {
            if name.contains(ph) {
                name = name.replace(ph, &field(key, v)?);
            }
        }
        let index: Arc<str> = name.to_lowercase().into();
        if self.indices.get(rec.topic) != Some(&index) {
            self.indices.insert(rec.topic.to_string(), index.clone());
        }
        Ok(index)
    }

    fn intern_topic(&mut self, topic: &str, make: impl FnOnce() -> String) -> Arc<str> {
        if let Some(i) = self.indices.get(topic) {
            return i.clone();
        }
        let i: Arc<str> = make().into();
        self.indices.insert(topic.to_string(), i.clone());
        i
    }

    /// The document id (docs/design.md): from the key, else from `pk.fields` of `row`.
    fn id(&self, rec: &SinkRecord<'_>, row: Option<&Row>) -> Result<String, String> {
        let cfg = &self.cfg;
        if cfg.key_ignore {
            return Ok(format!("{}+{}+{}", rec.topic, rec.partition, rec.offset));
        }
        let id = record_id(
            rec.key,
            row,
            cfg.key_field.as_deref(),
            &cfg.pk_fields,
            &cfg.key_separator,
        )?
        .ok_or("record has no key: set pk.fields, or key.ignore=true")?;
        if id.is_empty() {
            return Err("the document id is empty".into());
        }
        if id.len() > MAX_ID_BYTES {
            return Err(format!(
                "the document id is {} bytes; Elasticsearch allows {MAX_ID_BYTES}",
                id.len()
            ));
        }
        Ok(id)
    }

    fn version(&mut self, rec: &SinkRecord<'_>, ev: &ChangeEvent) -> Result<Option<u64>, String> {
        match self.cfg.version {
            VersionSource::None => Ok(None),
            VersionSource::Offset => Ok(Some(rec.offset as u64)),
            VersionSource::Source => self.versions.version(rec, ev).map(Some),
        }
    }

    /// `image` plus the configured metadata fields and, with soft deletes, `__deleted`.
    fn document<'a>(
        &self,
        image: &'a str,
        ev: &ChangeEvent,
        deleted: Option<bool>,
    ) -> Result<Document<'a>, String> {
        let mut doc = Document::new(image)?;
        if self.cfg.add_fields.is_empty() && deleted.is_none() {
            return Ok(doc);
        }
        let mut out = Vec::with_capacity(64 * (self.cfg.add_fields.len() + 1));
        let mut empty = doc.open[1..].trim().is_empty();
        let mut field = |out: &mut Vec<u8>, name: &str, value: &str| {
            if !std::mem::take(&mut empty) {
                out.push(b',');
            }
            write_json_str(out, name);
            out.push(b':');
            out.extend_from_slice(value.as_bytes());
        };
        for f in &self.cfg.add_fields {
            match &f.from {
                FieldRef::Op => field(&mut out, &f.name, &format!("\"{}\"", ev.op.code())),
                FieldRef::TsMs => field(
                    &mut out,
                    &f.name,
                    &ev.ts_ms.map_or("null".into(), |t| t.to_string()),
                ),
                FieldRef::Source(path) => {
                    let v = match &ev.source {
                        None => None,
                        // The connector asks the decoder to keep the block when `add.fields`
                        // names a `source` field (`EsConfig::reads_source_block`).
                        Some(s) => s
                            .json
                            .as_ref()
                            .ok_or("the decoder did not keep `source` for `add.fields`")?
                            .get(path),
                    };
                    field(&mut out, &f.name, v.map_or("null", RawValue::get));
                }
            }
        }
        if let Some(d) = deleted {
            field(&mut out, "__deleted", if d { "true" } else { "false" });
        }
        out.push(b'}');
        doc.close = Cow::Owned(out);
        Ok(doc)
    }
}

/// The table an event comes from, as `source` names it.
fn table_of(ev: &ChangeEvent) -> super::scopes::TableId<'_> {
    match &ev.source {
        Some(s) => [s.db.as_deref(), s.schema.as_deref(), s.table.as_deref()],
        None => [None, None, None],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_is_its_object_written_as_it_is() {
        let doc = |json| Document::new(json).map(|d| String::from_utf8(d.to_vec()).unwrap());
        assert_eq!(doc(r#"{"a":1} "#).unwrap(), r#"{"a":1}"#);
        assert_eq!(doc("{}").unwrap(), "{}");
        for bad in ["[1]", r#""s""#, "{", "null"] {
            assert!(
                doc(bad)
                    .unwrap_err()
                    .starts_with("row image is not a JSON object"),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_tombstone_after_a_rewrite_still_takes_its_delete_events_version() {
        // d(7), c(7), tombstone(7): deleted at the delete's version, which Elasticsearch
        // refuses as older than the re-created document. Forgotten at the rewrite, the
        // tombstone was an unversioned delete that removed the re-created document.
        let config = crate::connector::ConnectorConfig::from_json(
            r#"{"name":"m","config":{"connector.class":"elasticsearch","topics":"t","connection.url":"http://es:9200","version.source":"offset","behavior.on.null.values":"delete"}}"#,
        )
        .unwrap();
        let crate::connector::SinkSpec::Elasticsearch(cfg) =
            crate::connector::ConnectorSpec::validate(&config)
                .unwrap()
                .sink
        else {
            unreachable!()
        };
        let mut mapper = Mapper::new(Arc::new(*cfg));
        let change = |op| {
            Value::Change(ChangeEvent {
                op,
                before: Some(Row::from_json(r#"{"id":7}"#)),
                after: (op != Op::Delete).then(|| Row::from_json(r#"{"id":7}"#)),
                source: None,
                ts_ms: None,
            })
        };
        let key = Row::from_json(r#"{"id":7}"#);
        let (delete, create) = (change(Op::Delete), change(Op::Create));
        let mut version_at = |value: &Value, offset: i64| {
            let rec = SinkRecord {
                topic: "t",
                kafka_topic: "t",
                partition: 0,
                offset,
                timestamp_ms: Some(1000),
                key: Some(&key),
                value,
                received_ms: 0,
            };
            match mapper.map(&rec) {
                Ok(Mapped::Write(a)) => a.version,
                _ => panic!("offset {offset} not written"),
            }
        };
        assert_eq!(version_at(&delete, 40), Some(40));
        assert_eq!(version_at(&create, 50), Some(50));
        assert_eq!(version_at(&Value::Tombstone, 51), Some(40));
    }

    #[test]
    fn a_postgres_change_left_below_the_snapshot_is_never_removable() {
        let end = |protect| SnapshotEnd {
            index: "i".into(),
            topic: "t".into(),
            below: 4 * 5000,
            protect_after_snapshot: protect,
        };
        // A snapshot read and a streamed change of an earlier time: gone rows.
        assert!(removable(4 * 4000, &end(true)));
        assert!(removable(4 * 4000 + 1, &end(true)));
        // The first transaction after the snapshot, not raised above it (4n + 3): kept.
        assert!(!removable(4 * 4000 + 3, &end(true)));
        assert!(removable(4 * 4000 + 3, &end(false)), "other connectors");
        // At or above the snapshot: written by it or after it.
        assert!(!removable(4 * 5000, &end(true)));
        assert!(!removable(4 * 5000 + 1, &end(false)));
    }
}
