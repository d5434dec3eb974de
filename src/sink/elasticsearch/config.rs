//! The Elasticsearch connector's options: Confluent's names and meanings where they exist
//! (docs/design.md), defaults in one table, cross-field checks naming the bad key.

use std::collections::HashMap;
use std::time::Duration;

use crate::connector::Subscription;
use crate::connector::errors::ErrorPolicy;
use crate::connector::options::{OptionDef, Options};
use crate::connector::transforms::{Transforms, UnwrapDelete};

/// Every option of the Elasticsearch connector (the README's table is checked against it).
pub const OPTIONS: &[OptionDef] = &[
    OptionDef {
        name: "connection.url",
        default: None,
        doc: "Elasticsearch URLs, comma-separated (`http://host:9200`). Requests go to them in turn (round robin); a failed request is retried. Required unless `connection.cloud.id` is set.",
    },
    OptionDef {
        name: "connection.cloud.id",
        default: None,
        doc: "An Elastic Cloud deployment's Cloud ID, instead of `connection.url` (with `connection.username`/`password` or `connection.api.key`).",
    },
    OptionDef {
        name: "connection.username",
        default: None,
        doc: "Basic-auth user.",
    },
    OptionDef {
        name: "connection.password",
        default: None,
        doc: "Basic-auth password (shown as `[hidden]`).",
    },
    OptionDef {
        name: "connection.api.key",
        default: None,
        doc: "Elasticsearch API key, sent as `Authorization: ApiKey …` (shown as `[hidden]`).",
    },
    OptionDef {
        name: "elastic.https.ssl.ca.location",
        default: None,
        doc: "PEM file of the CA that signed Elasticsearch's certificate, for `https://` URLs.",
    },
    OptionDef {
        name: "elastic.https.ssl.ca.trusted.fingerprint",
        default: None,
        doc: "SHA-256 fingerprint of the CA that signed Elasticsearch's certificate (64 hexadecimal digits, colons allowed), for `https://` URLs, instead of its file or beside it: as Elasticsearch prints it when it first starts with security on. A server that sends that CA's certificate after its own is verified against it alone (its certificate must still name the host). cdc-sink's own, after Beats' and Logstash's `ca_trusted_fingerprint`.",
    },
    OptionDef {
        name: "connection.compression",
        default: Some("false"),
        doc: "Gzip bulk request bodies.",
    },
    OptionDef {
        name: "connection.timeout.ms",
        default: Some("1000"),
        doc: "How long a connection to a node may take to open: name resolution, TCP and the TLS handshake together (raise it for a distant cluster over TLS); 0 for no limit of its own. A connection not open by then is retried like a refused one (the next node in `connection.url` in its turn). A request may take this and `read.timeout.ms` in all.",
    },
    OptionDef {
        name: "read.timeout.ms",
        default: Some("3000"),
        doc: "Time to wait for a bulk response. A timeout is retried, and doubles the wait of later requests (up to 16×; prompt responses bring it back), so a slow Elasticsearch is not sent copies of a bulk it is still executing.",
    },
    OptionDef {
        name: "index.name",
        default: Some("${topic}"),
        doc: "Index name template: `${topic}`, `${db}`, `${schema}`, `${table}` (the last three from `source`). Always lower-cased. May name an alias.",
    },
    OptionDef {
        name: "topic.index.map",
        default: None,
        doc: "`topic:index,topic2:index2`: fixed index per topic; wins over `index.name`.",
    },
    OptionDef {
        name: "key.ignore",
        default: Some("false"),
        doc: "`true`: the document id is `topic+partition+offset` (one document per change, an append-only history; deletes are indexed like soft deletes).",
    },
    OptionDef {
        name: "pk.fields",
        default: None,
        doc: "Row columns that make the id when a record has no key (comma-separated, in order).",
    },
    OptionDef {
        name: "key.separator",
        default: Some("|"),
        doc: "Joins the values of a composite key into one document id, in key order.",
    },
    OptionDef {
        name: "delete.mode",
        default: Some("hard"),
        doc: "`hard`: a `d` event deletes the document. `soft`: it indexes the `before` image with `__deleted: true` (live documents carry `__deleted: false`).",
    },
    OptionDef {
        name: "behavior.on.null.values",
        default: Some("ignore"),
        doc: "Tombstones (null values): `ignore`, `delete` the document of the key, or `fail` the task.",
    },
    OptionDef {
        name: "behavior.on.malformed.documents",
        default: Some("fail"),
        doc: "A document Elasticsearch rejects as malformed (400 `mapper_parsing_exception`, `strict_dynamic_mapping_exception`, `document_parsing_exception`, `illegal_argument_exception`, `action_request_validation_exception`): `fail` the task, or `warn`/`ignore` (skipped: logged, as a warning with `warn` and at debug level with `ignore`, as the Confluent sink does, and at ERROR level with `errors.log.enable=true`; counted as failed, offset committed; written to the dead-letter queue first when `errors.tolerance=all` and `errors.deadletterqueue.topic.name` are set). Any other refusal (no permission, missing index…) fails the task whatever this says.",
    },
    OptionDef {
        name: "add.fields",
        default: None,
        doc: "Metadata fields to add, e.g. `op,ts_ms,source.ts_ms,source.table,source.lsn`; a bare name other than `op`/`ts_ms` is a `source` field.",
    },
    OptionDef {
        name: "add.fields.prefix",
        default: Some("__"),
        doc: "Prefix of the added fields; dots in names become `_` (`source.ts_ms` → `__source_ts_ms`).",
    },
    OptionDef {
        name: "version.source",
        default: Some("source"),
        doc: "Document version (`version_type=external_gte`): `source` = the source log position in commit order (PostgreSQL: the last commit LSN from `sequence`; MySQL/MariaDB: binlog file+pos+row; SQL Server: commit_lsn; Oracle: commit_scn; MongoDB: ts+ord; the Kafka offset for other connectors; see docs/versions.md), `offset` = the Kafka offset, `none` = unversioned writes.",
    },
    OptionDef {
        name: "snapshot.reconcile",
        default: Some("true"),
        doc: "When a Debezium snapshot of a table has been written, remove from its index the documents of rows the snapshot did not contain and no later change wrote (rows deleted while Debezium was not streaming), by a version-conditional delete (`delete.mode=soft`: marked `__deleted: true`); see docs/reconcile.md. Needs `version.source=source`, applied deletes, and an index fed by one topic of one table. Set `false` for filtered snapshots (`snapshot.select.statement.overrides`, ad-hoc snapshots with `additional-conditions`) and for indices that other writers share.",
    },
    OptionDef {
        name: "rebuild.retain.hours",
        default: Some("24"),
        doc: "`cdc-sink rebuild`: how long an index replaced by a rebuild is kept for `rebuild --rollback`; older ones are deleted by the next rebuild.",
    },
    OptionDef {
        name: "truncate.mode",
        default: Some("ignore"),
        doc: "`t` (truncate) events are counted and ignored.",
    },
    OptionDef {
        name: "decimal.format",
        default: Some("string"),
        doc: "Decimals as exact `string`s or as JSON `number`s.",
    },
    OptionDef {
        name: "bits.format",
        default: Some("base64"),
        doc: "`io.debezium.data.Bits` as `base64`, or as a `number` when at most 63 bits.",
    },
    OptionDef {
        name: "batch.size",
        default: Some("2000"),
        doc: "Most actions in one bulk request.",
    },
    OptionDef {
        name: "bulk.size.bytes",
        default: Some("5242880"),
        doc: "Most bytes in one bulk request body.",
    },
    OptionDef {
        name: "linger.ms",
        default: Some("10"),
        doc: "How long a partly filled batch waits for more records before it is sent.",
    },
    OptionDef {
        name: "max.in.flight.requests",
        default: Some("5"),
        doc: "Bulk requests in flight at once (1 to 1000); documents are spread over them by id, so each document's writes stay in order.",
    },
    OptionDef {
        name: "max.buffered.records",
        default: Some("20000"),
        doc: "Records held (batched or in flight) before the task stops reading; it pauses the consumer when they stay that many for 1 s. It also remembers at most 64 times this many records it cannot commit yet (at most 2^20), behind a record whose dead-letter copy waits or a snapshot's end; past that it stops reading the partitions they pile up in.",
    },
    OptionDef {
        name: "max.retries",
        default: None,
        doc: "Retries of a failed bulk item before the task fails; unset = retry without limit. Refusals by a write block (`cluster_block_exception`: a rebuild's, which lasts until its alias moves, or a full disk's) are retried without counting.",
    },
    OptionDef {
        name: "retry.backoff.ms",
        default: Some("100"),
        doc: "First retry delay; doubles per attempt, with jitter.",
    },
    OptionDef {
        name: "max.retry.backoff.ms",
        default: Some("10000"),
        doc: "Largest retry delay.",
    },
    OptionDef {
        name: "flush.timeout.ms",
        default: Some("180000"),
        doc: "How long shutdown and partition revocation wait for in-flight writes before committing what was written.",
    },
    OptionDef {
        name: "write.method",
        default: Some("insert"),
        doc: "Only `insert` (whole-document index); `upsert` is not supported.",
    },
    OptionDef {
        name: "schema.ignore",
        default: Some("true"),
        doc: "`true` or `false`, both meaning the same: cdc-sink never creates mappings from record schemas (use index templates; Elasticsearch maps new fields dynamically). The Confluent sink's default is `false`, which creates them.",
    },
    OptionDef {
        name: "compact.map.entries",
        default: Some("true"),
        doc: "Only `true`: maps are always JSON objects (`false`, the Confluent sink's arrays of key/value entries, is refused).",
    },
    OptionDef {
        name: "drop.invalid.message",
        default: Some("false"),
        doc: "`true`: a record that cannot be mapped to a document (no key, a key field missing…) is logged at ERROR level and skipped, as the Confluent sink does; with `errors.tolerance=all` it goes to the dead-letter queue instead. `false`: it fails the task unless `errors.tolerance=all`.",
    },
    OptionDef {
        name: "type.name",
        default: None,
        doc: "Accepted and ignored (mapping types are gone in Elasticsearch 8).",
    },
];

/// What a `d` event does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDelete {
    /// `delete` the document.
    Delete,
    /// Index `before` with `__deleted: true`.
    SoftDelete,
    /// Skip it (ExtractNewRecordState `delete.handling.mode=drop`).
    Ignore,
    /// Handle it as a record with a null value, by `behavior.on.null.values`, as the Confluent
    /// sink would after ExtractNewRecordState turned it into one (`delete.handling.mode=none`,
    /// `delete.tombstone.handling.mode=tombstone|delete-to-tombstone`). A delete is applied at
    /// the event's own version.
    AsNull,
}

/// What a tombstone does (`behavior.on.null.values`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnNull {
    Ignore,
    Delete,
    Fail,
}

/// Where the document version comes from (`version.source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSource {
    Source,
    Offset,
    None,
}

/// A metadata field to add to every document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddField {
    /// Field name in the document, prefix included.
    pub name: String,
    pub from: FieldRef,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldRef {
    Op,
    TsMs,
    Source(String),
}

#[derive(Debug, Clone)]
pub struct EsConfig {
    pub urls: Vec<String>,
    /// `connection.cloud.id`: an Elastic Cloud deployment, instead of `urls`.
    pub cloud_id: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub api_key: Option<String>,
    pub ca_location: Option<String>,
    /// `elastic.https.ssl.ca.trusted.fingerprint`.
    pub ca_fingerprint: Option<crate::tls::Fingerprint>,
    pub compression: bool,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub index_name: Option<String>,
    pub topic_index_map: HashMap<String, String>,
    pub key_ignore: bool,
    pub pk_fields: Vec<String>,
    pub key_separator: String,
    pub key_field: Option<String>,
    pub on_delete: OnDelete,
    /// `behavior.on.null.values`: what a record with a null value does.
    pub on_null: OnNull,
    /// Debezium's own tombstones (the null-value record after each delete) are dropped, as
    /// ExtractNewRecordState's `drop.tombstones` (or its tombstone handling mode) says.
    pub drop_tombstones: bool,
    /// Live documents carry `__deleted: false` (soft deletes are on).
    pub mark_live: bool,
    pub fail_on_malformed: bool,
    /// `behavior.on.malformed.documents=warn`: a skipped document is logged as a warning
    /// (`ignore`: at debug level only, as the Confluent sink does).
    pub warn_on_malformed: bool,
    /// Documents skipped under `behavior.on.malformed.documents` go to the dead-letter queue
    /// (handed back by `Sink::take_rejected`) instead of being acked.
    pub dead_letters: bool,
    /// `errors.log.enable`: a skipped document is logged at ERROR level, as every tolerated
    /// record is (in Kafka Connect, the Confluent sink reports it to the errant record
    /// reporter, which logs it).
    pub log_skipped: bool,
    pub add_fields: Vec<AddField>,
    pub version: VersionSource,
    /// `snapshot.reconcile`, where it applies (source versions, deletes applied, not
    /// `key.ignore`).
    pub reconcile: bool,
    /// `rebuild.retain.hours`.
    pub rebuild_retain: Duration,
    pub batch_size: usize,
    pub bulk_size_bytes: usize,
    pub linger: Duration,
    pub max_in_flight: usize,
    pub max_buffered_records: usize,
    pub max_retries: Option<u32>,
    pub retry_backoff: Duration,
    pub max_retry_backoff: Duration,
    pub flush_timeout: Duration,
}

impl EsConfig {
    /// `add.fields` names a field of `source`: the documents take it from the whole block.
    pub fn reads_source_block(&self) -> bool {
        self.add_fields
            .iter()
            .any(|f| matches!(f.from, FieldRef::Source(_)))
    }

    /// The index of (routed) `topic` when it depends on the topic alone, as the sink names it;
    /// an error when `index.name` uses fields of the records' `source`.
    pub fn index_of_topic(&self, topic: &str) -> Result<String, String> {
        if let Some(i) = self.topic_index_map.get(topic) {
            return Ok(i.clone());
        }
        match &self.index_name {
            None => Ok(topic.to_lowercase()),
            Some(t) if t.contains("${db}") || t.contains("${schema}") || t.contains("${table}") => {
                Err(format!(
                    "index.name `{t}` takes the index from each record's source, not from the topic"
                ))
            }
            Some(t) => Ok(t.replace("${topic}", topic).to_lowercase()),
        }
    }

    /// Reads and checks the options; problems are recorded in `o`.
    pub fn read(
        o: &Options<'_>,
        subscription: &Subscription,
        transforms: &Transforms,
        errors: &ErrorPolicy,
    ) -> EsConfig {
        let urls = o.list("connection.url");
        let cloud_id = o.get("connection.cloud.id").map(String::from);
        match (urls.is_empty(), &cloud_id) {
            (true, None) => o.error(
                "connection.url",
                "missing: give the Elasticsearch URL(s) (or connection.cloud.id)",
            ),
            (false, Some(_)) => o.error(
                "connection.cloud.id",
                "give either connection.url or connection.cloud.id, not both",
            ),
            _ => {}
        }
        for u in &urls {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                o.error(
                    "connection.url",
                    format!("`{u}` is not an http:// or https:// URL"),
                );
            } else if let Err(e) = reqwest::Url::parse(u) {
                // Checked here, where an error never shows what a placeholder gave (a password
                // in the URL), rather than when a task starts.
                o.error("connection.url", format!("`{u}` is not a URL: {e}"));
            }
        }
        let mut topic_index_map = HashMap::new();
        for pair in o.list("topic.index.map") {
            match pair.split_once(':') {
                Some((t, i)) if !t.is_empty() && !i.is_empty() => {
                    topic_index_map.insert(t.trim().to_string(), i.trim().to_lowercase());
                }
                _ => o.error("topic.index.map", format!("`{pair}` is not topic:index")),
            }
        }
        let index_name = o.get("index.name").map(String::from);
        if let Some(t) = &index_name {
            let mut rest = t.as_str();
            while let Some(start) = rest.find("${") {
                let end = rest[start..].find('}').map(|e| start + e);
                match end.map(|e| &rest[start + 2..e]) {
                    Some("topic" | "db" | "schema" | "table") => {
                        rest = &rest[end.unwrap_or(0) + 1..]
                    }
                    other => {
                        o.error(
                            "index.name",
                            format!("unknown placeholder `${{{}}}`", other.unwrap_or(rest)),
                        );
                        break;
                    }
                }
            }
        }

        let key_ignore = o.bool("key.ignore", false);
        let delete_mode = o.choice("delete.mode", &["hard", "soft"], "hard");
        let on_null = match o.choice(
            "behavior.on.null.values",
            &["ignore", "delete", "fail"],
            "ignore",
        ) {
            "delete" => OnNull::Delete,
            "fail" => OnNull::Fail,
            _ => OnNull::Ignore,
        };
        let mut on_delete = if delete_mode == "soft" {
            OnDelete::SoftDelete
        } else {
            OnDelete::Delete
        };
        let mut drop_tombstones = false;
        let mut add_field_names = o.list("add.fields");
        let mut prefix = o.string("add.fields.prefix", "__");
        if let Some(u) = &transforms.unwrap {
            if o.get("delete.mode").is_some() {
                o.error(
                    "delete.mode",
                    "conflicts with the ExtractNewRecordState transform's delete handling; set one",
                );
            }
            on_delete = match u.on_delete {
                UnwrapDelete::Drop => OnDelete::Ignore,
                UnwrapDelete::Rewrite => OnDelete::SoftDelete,
                UnwrapDelete::AsNull => OnDelete::AsNull,
            };
            drop_tombstones = !u.keep_tombstones;
            if !u.add_fields.is_empty() {
                if !add_field_names.is_empty() {
                    o.error("add.fields", "set in both the connector and the ExtractNewRecordState transform; set one");
                }
                add_field_names = u.add_fields.clone();
                prefix = u.add_fields_prefix.clone();
            }
        }
        if key_ignore && on_delete == OnDelete::Delete {
            // Each change is its own document: a delete is recorded, not applied.
            on_delete = OnDelete::SoftDelete;
        }
        let add_fields = add_field_names
            .iter()
            .map(|f| AddField {
                name: format!("{prefix}{}", f.replace('.', "_")),
                from: match f.as_str() {
                    "op" => FieldRef::Op,
                    "ts_ms" => FieldRef::TsMs,
                    s => FieldRef::Source(s.strip_prefix("source.").unwrap_or(s).to_string()),
                },
            })
            .collect();

        let version = match o.choice("version.source", &["source", "offset", "none"], "source") {
            "offset" => VersionSource::Offset,
            "none" => VersionSource::None,
            _ => VersionSource::Source,
        };
        let malformed = o.choice(
            "behavior.on.malformed.documents",
            &["fail", "warn", "ignore"],
            "fail",
        );
        let deletes_applied = match on_delete {
            OnDelete::Delete | OnDelete::SoftDelete => true,
            OnDelete::AsNull => on_null == OnNull::Delete,
            OnDelete::Ignore => false,
        };
        let shared = shared_index(subscription, &topic_index_map, index_name.as_deref());
        // Why an index may hold documents of more than this one table, or lose some silently.
        let not_reconcilable = if version != VersionSource::Source {
            Some("version.source is not `source`")
        } else if key_ignore {
            Some("key.ignore=true")
        } else if !deletes_applied {
            Some("deletes are dropped")
        } else if malformed != "fail" {
            Some(
                "behavior.on.malformed.documents skips documents (a skipped snapshot read would look deleted)",
            )
        } else if errors.tolerate || errors.drop_invalid {
            Some(
                "errors.tolerance=all or drop.invalid.message=true skips records (a skipped snapshot read would look deleted)",
            )
        } else if !transforms.routers.is_empty() {
            Some("a router transform may send several topics to one index")
        } else if let Some(why) = &shared {
            Some(why.as_str())
        } else if index_name
            .as_deref()
            .is_some_and(|t| !t.contains("${topic}"))
        {
            Some("index.name without ${topic} may send several topics to one index")
        } else {
            None
        };
        let reconcile = o.bool("snapshot.reconcile", true);
        if let Some(why) = not_reconcilable
            && reconcile
            && o.get("snapshot.reconcile").is_some()
        {
            o.error(
                "snapshot.reconcile",
                format!("`true` is not possible here: {why}"),
            );
        }
        o.choice("truncate.mode", &["ignore"], "ignore");
        o.choice("write.method", &["insert"], "insert");
        // Kept for configs written for the Confluent sink: checked as booleans, and a value that
        // asks for what cdc-sink does not do is refused rather than ignored.
        o.bool("schema.ignore", true);
        if !o.bool("compact.map.entries", true) {
            o.error(
                "compact.map.entries",
                "only true is supported: maps are written as JSON objects",
            );
        }

        let key = "elastic.https.ssl.ca.trusted.fingerprint";
        let ca_fingerprint = o.get(key).and_then(|f| {
            crate::tls::Fingerprint::parse(f)
                .map_err(|e| o.error(key, e))
                .ok()
        });
        let max_retries = o.get("max.retries").map(|_| o.parse("max.retries", 0u32));
        let ms = |key: &str, default: u64| Duration::from_millis(o.parse(key, default));
        EsConfig {
            urls: urls
                .iter()
                .map(|u| u.trim_end_matches('/').to_string())
                .collect(),
            cloud_id,
            username: o.get("connection.username").map(String::from),
            password: o.get("connection.password").map(String::from),
            api_key: o.get("connection.api.key").map(String::from),
            ca_location: o.get("elastic.https.ssl.ca.location").map(String::from),
            ca_fingerprint,
            compression: o.bool("connection.compression", false),
            connect_timeout: ms("connection.timeout.ms", 1000),
            read_timeout: ms("read.timeout.ms", 3000),
            index_name,
            topic_index_map,
            key_ignore,
            pk_fields: o.list("pk.fields"),
            key_separator: crate::sink::identity::key_separator(o),
            key_field: transforms.key_field.clone(),
            on_delete,
            on_null,
            drop_tombstones,
            mark_live: on_delete == OnDelete::SoftDelete,
            fail_on_malformed: malformed == "fail",
            warn_on_malformed: malformed == "warn",
            dead_letters: errors.dead_letter.is_some(),
            log_skipped: errors.log,
            add_fields,
            version,
            reconcile: reconcile && not_reconcilable.is_none(),
            rebuild_retain: Duration::from_secs(
                3600 * o.between("rebuild.retain.hours", 24u64, 0, 24 * 366 * 100),
            ),
            batch_size: o.at_least("batch.size", 2000usize, 1),
            bulk_size_bytes: o.at_least("bulk.size.bytes", 5 * 1024 * 1024usize, 1024),
            linger: ms("linger.ms", 10),
            // As the Confluent sink bounds it; each one is a lane allocated up front.
            max_in_flight: o.between("max.in.flight.requests", 5usize, 1, 1000),
            max_buffered_records: o.at_least("max.buffered.records", 20_000usize, 1),
            max_retries,
            retry_backoff: ms("retry.backoff.ms", 100),
            max_retry_backoff: ms("max.retry.backoff.ms", 10_000),
            flush_timeout: ms("flush.timeout.ms", 180_000),
        }
    }
}

/// Why two of the connector's topics may write one index, as far as its config tells: then a
/// snapshot of one topic's table would remove the other's documents (`snapshot.reconcile`).
/// A topic's index is its `topic.index.map` entry, or else `index.name` (or the topic itself)
/// lower-cased, so a map's target can be the index of a topic left unmapped, and two topics
/// whose names differ in case write one index. With `topics.regex` the topics are not known
/// here: a target is taken as shared when the expression, read without regard to case, matches
/// a topic name that would give it (and that is not itself mapped). An `index.name` taking the
/// index from `source` fields (`${table}`…) beside a map is taken as shared: what the map's
/// targets meet is not known before the records come.
fn shared_index(
    subscription: &Subscription,
    map: &HashMap<String, String>,
    index_name: Option<&str>,
) -> Option<String> {
    let mut targets: Vec<&String> = map.values().collect();
    targets.sort();
    if let Some(w) = targets.windows(2).find(|w| w[0] == w[1]) {
        return Some(format!(
            "topic.index.map sends several topics to index `{}`",
            w[0]
        ));
    }
    let template = index_name.unwrap_or("${topic}");
    if !map.is_empty()
        && ["${db}", "${schema}", "${table}"]
            .iter()
            .any(|f| template.contains(f))
    {
        return Some(format!(
            "topic.index.map beside index.name `{template}`, whose index comes from each record's \
             source, may send two topics to one index"
        ));
    }
    let unmapped = |topic: &str| template.replace("${topic}", topic).to_lowercase();
    match subscription {
        Subscription::Topics(topics) => {
            let mut by_index: HashMap<String, &str> = HashMap::new();
            for t in topics {
                let index = map.get(t).cloned().unwrap_or_else(|| unmapped(t));
                if let Some(other) = by_index.insert(index.clone(), t)
                    && other != t
                {
                    return Some(format!(
                        "topics `{other}` and `{t}` both write index `{index}`"
                    ));
                }
            }
            None
        }
        Subscription::Regex(r) => {
            let checked = regex::RegexBuilder::new(&Subscription::whole_name(r))
                .case_insensitive(true)
                .build()
                .ok()
                .zip(subscription.pattern().ok().flatten());
            let Some((any_case, pattern)) = checked else {
                return Some(
                    "topics.regex could not be checked for topics that write one index".into(),
                );
            };
            // The topic name (lower-cased) an unmapped topic would need to write `index`.
            let (before, after) = template.split_once("${topic}")?;
            let (before, after) = (before.to_lowercase(), after.to_lowercase());
            fn topic_for<'a>(index: &'a str, before: &str, after: &str) -> Option<&'a str> {
                index.strip_prefix(before)?.strip_suffix(after)
            }
            // Entries of topics the expression does not read write nothing.
            map.iter()
                .filter(|(from, _)| pattern.reads(from))
                .find_map(|(from, index)| {
                    let name =
                        topic_for(index, &before, &after).filter(|n| unmapped(n) == *index)?;
                    (any_case.is_match(name) && !map.contains_key(name)).then(|| {
                        format!(
                            "topic.index.map sends `{from}` to index `{index}`, which topics of \
                         topics.regex named like `{name}` write too"
                        )
                    })
                })
        }
    }
}
