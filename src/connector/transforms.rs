//! The single message transforms a ported Kafka Connect config may carry (docs/design.md).
//!
//! Debezium's `ExtractNewRecordState` is native here (the connector always writes the row
//! image), so its options are read for their meaning; `ExtractField$Key`, `RegexRouter` and
//! `TimestampRouter` are applied as Kafka Connect would. Any other transform is rejected.

use regex::Regex;

use super::options::Options;

/// What `ExtractNewRecordState` was told to do with deletes and tombstones.
#[derive(Debug, Clone, PartialEq)]
pub struct Unwrap {
    /// What becomes of a `d` event.
    pub on_delete: UnwrapDelete,
    /// Whether tombstones reach the sink (then `behavior.on.null.values` applies).
    pub keep_tombstones: bool,
    /// `add.fields`, e.g. `op`, `source.ts_ms`.
    pub add_fields: Vec<String>,
    /// `add.fields.prefix`.
    pub add_fields_prefix: String,
}

/// The fate of a delete event under `ExtractNewRecordState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnwrapDelete {
    /// Dropped (`delete.handling.mode=drop`).
    Drop,
    /// Rewritten into the `before` image with `__deleted=true` (soft delete).
    Rewrite,
    /// Passed on as a record with a null value (then `behavior.on.null.values` applies).
    AsNull,
}

/// A router that renames the topic a record is indexed under.
#[derive(Debug, Clone)]
pub enum Router {
    /// `org.apache.kafka.connect.transforms.RegexRouter`.
    Regex { regex: Regex, replacement: String },
    /// `org.apache.kafka.connect.transforms.TimestampRouter`.
    Timestamp {
        topic_format: String,
        timestamp_format: String,
    },
}

impl Router {
    /// The topic name this router gives a record of `topic` with Kafka timestamp `ts_ms`; an
    /// error for a record without a timestamp under `TimestampRouter` (as in Kafka Connect).
    pub fn route(&self, topic: &str, ts_ms: Option<i64>) -> Result<String, String> {
        match self {
            Router::Regex { regex, replacement } => match regex.captures(topic) {
                // Kafka's RegexRouter uses Matcher.matches(): the whole topic must match.
                Some(c)
                    if c.get(0)
                        .is_some_and(|m| m.start() == 0 && m.end() == topic.len()) =>
                {
                    let mut out = String::new();
                    c.expand(replacement, &mut out);
                    Ok(out)
                }
                _ => Ok(topic.to_string()),
            },
            Router::Timestamp {
                topic_format,
                timestamp_format,
            } => {
                let ts_ms = ts_ms.ok_or("TimestampRouter: the record has no timestamp")?;
                let ts = format_timestamp(timestamp_format, ts_ms);
                Ok(topic_format
                    .replace("${topic}", topic)
                    .replace("${timestamp}", &ts))
            }
        }
    }
}

/// The transforms of a connector, in the meaning Kafka Connect gives them.
#[derive(Debug, Clone, Default)]
pub struct Transforms {
    pub unwrap: Option<Unwrap>,
    /// `ExtractField$Key`: the document id is this field of the key.
    pub key_field: Option<String>,
    pub routers: Vec<Router>,
}

impl Transforms {
    /// The topic name after every router (`None`: no router).
    pub fn route(&self, topic: &str, ts_ms: Option<i64>) -> Result<Option<String>, String> {
        if self.routers.is_empty() {
            return Ok(None);
        }
        let mut t = topic.to_string();
        for r in &self.routers {
            t = r.route(&t, ts_ms)?;
        }
        Ok(Some(t))
    }
}

const UNWRAP: &[&str] = &["io.debezium.transforms.ExtractNewRecordState"];
const EXTRACT_KEY: &[&str] = &["org.apache.kafka.connect.transforms.ExtractField$Key"];
const REGEX_ROUTER: &[&str] = &["org.apache.kafka.connect.transforms.RegexRouter"];
const TIMESTAMP_ROUTER: &[&str] = &["org.apache.kafka.connect.transforms.TimestampRouter"];

/// Reads `transforms` and `transforms.<alias>.*`.
pub fn parse(o: &Options<'_>) -> Transforms {
    let mut t = Transforms::default();
    for alias in o.list("transforms") {
        let key = |k: &str| format!("transforms.{alias}.{k}");
        let params = o.with_prefix(&format!("transforms.{alias}."));
        let known = |allowed: &[&str]| {
            for p in params.keys() {
                if !allowed.contains(&p.as_str()) {
                    o.error(&key(p), "unknown option of this transform");
                }
            }
        };
        let Some(ty) = o.get(&key("type")) else {
            o.error(&key("type"), "missing: every transform needs a type");
            continue;
        };
        if UNWRAP.contains(&ty) {
            known(&[
                "type",
                "drop.tombstones",
                "delete.handling.mode",
                "delete.tombstone.handling.mode",
                "add.fields",
                "add.fields.prefix",
                "add.headers",
                "add.headers.prefix",
                "route.by.field",
                "drop.fields.header.name",
                "drop.fields.from.key",
                "drop.fields.keep.schema.compatible",
                "replace.null.with.default",
            ]);
            for unsupported in ["add.headers", "route.by.field", "drop.fields.header.name"] {
                if o.get(&key(unsupported)).is_some() {
                    o.error(&key(unsupported), "is not supported by cdc-sink");
                }
            }
            // As Debezium's ExtractNewRecordState does it (its DefaultDeleteHandlingStrategy and
            // LegacyDeleteHandlingStrategy): the new option wins when set; the legacy options
            // (Debezium before 3.2) apply when one of them is set; neither: Debezium 3.2's
            // default, `tombstone`.
            let legacy = o.get(&key("delete.handling.mode")).is_some()
                || o.get(&key("drop.tombstones")).is_some();
            let (on_delete, keep_tombstones) =
                if o.get(&key("delete.tombstone.handling.mode")).is_some() || !legacy {
                    match o.choice(
                        &key("delete.tombstone.handling.mode"),
                        &[
                            "drop",
                            "tombstone",
                            "rewrite",
                            "rewrite-with-tombstone",
                            "delete-to-tombstone",
                        ],
                        "tombstone",
                    ) {
                        "drop" => (UnwrapDelete::Drop, false),
                        "rewrite" => (UnwrapDelete::Rewrite, false),
                        "rewrite-with-tombstone" => (UnwrapDelete::Rewrite, true),
                        // `tombstone` and `delete-to-tombstone`: the delete event becomes a
                        // null value, Debezium's tombstone is dropped.
                        _ => (UnwrapDelete::AsNull, false),
                    }
                } else {
                    let on_delete = match o.choice(
                        &key("delete.handling.mode"),
                        &["drop", "rewrite", "none"],
                        "drop",
                    ) {
                        "drop" => UnwrapDelete::Drop,
                        "rewrite" => UnwrapDelete::Rewrite,
                        _ => UnwrapDelete::AsNull,
                    };
                    (on_delete, !o.bool(&key("drop.tombstones"), true))
                };
            t.unwrap = Some(Unwrap {
                on_delete,
                keep_tombstones,
                add_fields: o.list(&key("add.fields")),
                add_fields_prefix: o.string(&key("add.fields.prefix"), "__"),
            });
        } else if EXTRACT_KEY.contains(&ty) {
            known(&["type", "field", "field.syntax.version"]);
            match o.get(&key("field")) {
                Some(f) => t.key_field = Some(f.to_string()),
                None => o.error(&key("field"), "missing"),
            }
        } else if REGEX_ROUTER.contains(&ty) {
            known(&["type", "regex", "replacement"]);
            let (Some(re), Some(rep)) = (o.get(&key("regex")), o.get(&key("replacement"))) else {
                o.error(&key("regex"), "RegexRouter needs regex and replacement");
                continue;
            };
            match Regex::new(re) {
                Ok(regex) => t.routers.push(Router::Regex {
                    regex,
                    replacement: java_replacement(rep),
                }),
                Err(e) => o.error(&key("regex"), format!("invalid regular expression: {e}")),
            }
        } else if TIMESTAMP_ROUTER.contains(&ty) {
            known(&["type", "topic.format", "timestamp.format"]);
            t.routers.push(Router::Timestamp {
                topic_format: o.string(&key("topic.format"), "${topic}-${timestamp}"),
                timestamp_format: o.string(&key("timestamp.format"), "yyyyMMdd"),
            });
        } else {
            o.error(
                &key("type"),
                format!(
                    "transform `{ty}` is not supported (supported: ExtractNewRecordState, ExtractField$Key, \
                     RegexRouter, TimestampRouter)"
                ),
            );
        }
    }
    t
}

/// Java's `$1` group references become the regex crate's `${1}`.
fn java_replacement(rep: &str) -> String {
    let mut out = String::with_capacity(rep.len() + 4);
    let mut chars = rep.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    if n == '$' {
                        out.push_str("$$");
                    } else {
                        out.push(n);
                    }
                }
            }
            '$' if chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push_str("${");
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    out.push(*d);
                    chars.next();
                }
                out.push('}');
            }
            c => out.push(c),
        }
    }
    out
}

/// The subset of Java's `SimpleDateFormat` that TimestampRouter configs use, in UTC:
/// `yyyy`, `yy`, `MM`, `dd`, `HH`, `mm`, `ss`, and quoted literals.
fn format_timestamp(pattern: &str, ts_ms: i64) -> String {
    let mut buf = Vec::new();
    crate::decode::semantic::timestamp(&mut buf, ts_ms, crate::decode::semantic::TimeUnit::Millis);
    // "YYYY-MM-DDTHH:MM:SS.mmmZ" with quotes.
    let iso = String::from_utf8_lossy(&buf).trim_matches('"').to_string();
    let part = |a: usize, b: usize| iso.get(a..b).unwrap_or("").to_string();
    let mut out = String::new();
    let bytes: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let mut n = 1;
        while i + n < bytes.len() && bytes[i + n] == c {
            n += 1;
        }
        match c {
            'y' if n == 2 => out.push_str(&part(2, 4)),
            'y' => out.push_str(&part(0, 4)),
            'M' => out.push_str(&part(5, 7)),
            'd' => out.push_str(&part(8, 10)),
            'H' => out.push_str(&part(11, 13)),
            'm' => out.push_str(&part(14, 16)),
            's' => out.push_str(&part(17, 19)),
            '\'' => {
                let end = bytes[i + 1..]
                    .iter()
                    .position(|&x| x == '\'')
                    .map(|p| i + 1 + p)
                    .unwrap_or(bytes.len());
                out.extend(&bytes[i + 1..end]);
                i = end + 1;
                continue;
            }
            other => out.extend(std::iter::repeat_n(other, n)),
        }
        i += n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn transforms(pairs: &[(&str, &str)]) -> Result<Transforms, String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let o = Options::new(&map);
        let t = parse(&o);
        o.finish().map(|_| t).map_err(|e| e.to_string())
    }

    #[test]
    fn the_debezium_unwrap_example_keeps_its_meaning() {
        let t = transforms(&[
            ("transforms", "unwrap,key"),
            (
                "transforms.unwrap.type",
                "io.debezium.transforms.ExtractNewRecordState",
            ),
            ("transforms.unwrap.drop.tombstones", "false"),
            (
                "transforms.key.type",
                "org.apache.kafka.connect.transforms.ExtractField$Key",
            ),
            ("transforms.key.field", "id"),
        ])
        .unwrap();
        let u = t.unwrap.unwrap();
        assert_eq!(u.on_delete, UnwrapDelete::Drop);
        assert!(u.keep_tombstones);
        assert_eq!(t.key_field.as_deref(), Some("id"));
    }

    #[test]
    fn every_delete_and_tombstone_mode_means_what_debezium_makes_of_it() {
        use UnwrapDelete::*;
        let unwrap = |opts: &[(&str, &str)]| {
            let mut pairs = vec![
                ("transforms", "unwrap"),
                (
                    "transforms.unwrap.type",
                    "io.debezium.transforms.ExtractNewRecordState",
                ),
            ];
            pairs.extend_from_slice(opts);
            let u = transforms(&pairs).unwrap().unwrap.unwrap();
            (u.on_delete, u.keep_tombstones)
        };
        // (options, what becomes of the delete event, whether Debezium's tombstone goes on)
        type Case<'a> = (&'a [(&'a str, &'a str)], (UnwrapDelete, bool));
        let table: &[Case<'_>] = &[
            (&[], (AsNull, false)),
            (
                &[("transforms.unwrap.delete.handling.mode", "drop")],
                (Drop, false),
            ),
            (
                &[("transforms.unwrap.drop.tombstones", "false")],
                (Drop, true),
            ),
            (
                &[("transforms.unwrap.delete.handling.mode", "none")],
                (AsNull, false),
            ),
            (
                &[
                    ("transforms.unwrap.delete.handling.mode", "none"),
                    ("transforms.unwrap.drop.tombstones", "false"),
                ],
                (AsNull, true),
            ),
            (
                &[("transforms.unwrap.delete.handling.mode", "rewrite")],
                (Rewrite, false),
            ),
            (
                &[
                    ("transforms.unwrap.delete.handling.mode", "rewrite"),
                    ("transforms.unwrap.drop.tombstones", "false"),
                ],
                (Rewrite, true),
            ),
            (
                &[("transforms.unwrap.delete.tombstone.handling.mode", "drop")],
                (Drop, false),
            ),
            (
                &[(
                    "transforms.unwrap.delete.tombstone.handling.mode",
                    "tombstone",
                )],
                (AsNull, false),
            ),
            (
                &[(
                    "transforms.unwrap.delete.tombstone.handling.mode",
                    "rewrite",
                )],
                (Rewrite, false),
            ),
            (
                &[(
                    "transforms.unwrap.delete.tombstone.handling.mode",
                    "rewrite-with-tombstone",
                )],
                (Rewrite, true),
            ),
            (
                &[(
                    "transforms.unwrap.delete.tombstone.handling.mode",
                    "delete-to-tombstone",
                )],
                (AsNull, false),
            ),
            // The new option wins over the legacy ones.
            (
                &[
                    (
                        "transforms.unwrap.delete.tombstone.handling.mode",
                        "rewrite",
                    ),
                    ("transforms.unwrap.delete.handling.mode", "drop"),
                    ("transforms.unwrap.drop.tombstones", "false"),
                ],
                (Rewrite, false),
            ),
        ];
        for (opts, expected) in table {
            assert_eq!(unwrap(opts), *expected, "{opts:?}");
        }
    }

    #[test]
    fn routers_rename_topics_like_kafka_connect() {
        let t = transforms(&[
            ("transforms", "route,ts"),
            (
                "transforms.route.type",
                "org.apache.kafka.connect.transforms.RegexRouter",
            ),
            ("transforms.route.regex", "([^.]+)\\.([^.]+)\\.([^.]+)"),
            ("transforms.route.replacement", "$3"),
            (
                "transforms.ts.type",
                "org.apache.kafka.connect.transforms.TimestampRouter",
            ),
            ("transforms.ts.timestamp.format", "yyyy.MM"),
        ])
        .unwrap();
        assert_eq!(
            t.route("dbserver1.inventory.customers", Some(1_709_300_707_000)),
            Ok(Some("customers-2024.03".into()))
        );
        assert_eq!(
            t.route("unmatched", Some(0)),
            Ok(Some("unmatched-1970.01".into()))
        );
        // No timestamp: an error, not the year 1970.
        assert_eq!(
            t.route("unmatched", None),
            Err("TimestampRouter: the record has no timestamp".into())
        );
    }

    #[test]
    fn unknown_transforms_are_rejected_by_name() {
        let err = transforms(&[
            ("transforms", "mask"),
            (
                "transforms.mask.type",
                "org.apache.kafka.connect.transforms.MaskField$Value",
            ),
        ])
        .unwrap_err();
        assert!(err.starts_with("transforms.mask.type: transform `org.apache.kafka.connect.transforms.MaskField$Value` is not supported"), "{err}");
    }
}
