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
    /// `org.apache.kafka.connect.transforms.RegexRouter`: `whole` is the regex anchored at both
    /// ends, `first` the regex as given.
    Regex {
        whole: Regex,
        first: Regex,
        replacement: String,
    },
    /// `org.apache.kafka.connect.transforms.TimestampRouter`.
    Timestamp {
        topic_format: String,
        /// `timestamp.format`, read once.
        timestamp_format: Vec<Piece>,
    },
}

impl Router {
    /// The topic name this router gives a record of `topic` with Kafka timestamp `ts_ms`; an
    /// error for a record without a timestamp under `TimestampRouter` (as in Kafka Connect).
    pub fn route(&self, topic: &str, ts_ms: Option<i64>) -> Result<String, String> {
        match self {
            // As Kafka's RegexRouter: when the regex matches the whole name (`matches()`, which
            // finds a whole-name match where the first match is shorter), the first match is
            // replaced and the rest of the name kept (`replaceFirst()`): `orders|orders_archive`
            // → `all` makes `orders_archive` into `all_archive`.
            Router::Regex {
                whole,
                first,
                replacement,
            } => Ok(if whole.is_match(topic) {
                first.replacen(topic, 1, replacement.as_str()).into_owned()
            } else {
                topic.to_string()
            }),
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
            let version = o.choice(&key("field.syntax.version"), &["V1", "V2"], "V1");
            match o.get(&key("field")) {
                // V2 reads `a.b` as the field b of the struct a; only top-level fields here.
                Some(f) if version == "V2" && f.contains('.') => o.error(
                    &key("field"),
                    format!("`{f}`: nested fields (field.syntax.version=V2) are not supported"),
                ),
                Some(f) => t.key_field = Some(f.to_string()),
                None => o.error(&key("field"), "missing"),
            }
        } else if REGEX_ROUTER.contains(&ty) {
            known(&["type", "regex", "replacement"]);
            let (Some(re), Some(rep)) = (o.get(&key("regex")), o.get(&key("replacement"))) else {
                o.error(&key("regex"), "RegexRouter needs regex and replacement");
                continue;
            };
            // The regex as given first: wrapped, `a)|(b` would compile, meaning something else.
            match Regex::new(re).and_then(|first| Ok((Regex::new(&format!("^(?:{re})$"))?, first)))
            {
                Ok((whole, first)) => match java_replacement(rep, &first) {
                    Ok(replacement) => t.routers.push(Router::Regex {
                        whole,
                        first,
                        replacement,
                    }),
                    Err(e) => o.error(&key("replacement"), e),
                },
                Err(e) => o.error(&key("regex"), format!("invalid regular expression: {e}")),
            }
        } else if TIMESTAMP_ROUTER.contains(&ty) {
            known(&["type", "topic.format", "timestamp.format"]);
            match timestamp_pieces(&o.string(&key("timestamp.format"), "yyyyMMdd")) {
                Ok(timestamp_format) => t.routers.push(Router::Timestamp {
                    topic_format: o.string(&key("topic.format"), "${topic}-${timestamp}"),
                    timestamp_format,
                }),
                Err(e) => o.error(&key("timestamp.format"), e),
            }
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

/// A Java replacement (`Matcher.appendReplacement`) in the regex crate's syntax. As in Java:
/// `$` and the longest run of digits naming a group the regex has (`$10` with one group is group
/// 1, then `0`), `${name}` a named group, `\` escaping the next character; a reference to a
/// group that does not exist, or a `$` naming none, is refused (Java throws at each record).
fn java_replacement(rep: &str, regex: &Regex) -> Result<String, String> {
    let groups = regex.captures_len() - 1;
    let mut out = String::with_capacity(rep.len() + 4);
    let mut chars = rep.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('$') => out.push_str("$$"),
                Some(n) => out.push(n),
                None => return Err("a replacement may not end with `\\`".into()),
            },
            '$' => match chars.next() {
                Some('{') => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(format!("`${{{name}` has no closing `}}`")),
                        }
                    }
                    if !regex.capture_names().flatten().any(|n| n == name) {
                        return Err(format!("`${{{name}}}` names no group of the regex"));
                    }
                    out.push_str(&format!("${{{name}}}"));
                }
                Some(d) if d.is_ascii_digit() => {
                    let mut group = d.to_digit(10).unwrap_or(0) as usize;
                    if group > groups {
                        return Err(format!("`${group}` names no group: the regex has {groups}"));
                    }
                    while let Some(next) = chars.peek().and_then(|c| c.to_digit(10)) {
                        match group
                            .checked_mul(10)
                            .and_then(|g| g.checked_add(next as usize))
                        {
                            Some(longer) if longer <= groups => {
                                group = longer;
                                chars.next();
                            }
                            _ => break,
                        }
                    }
                    out.push_str(&format!("${{{group}}}"));
                }
                _ => return Err("a `$` must name a group (`$1`, `${name}`); `\\$` is a `$`".into()),
            },
            c => out.push(c),
        }
    }
    Ok(out)
}

/// The letters of Java's `SimpleDateFormat` that a TimestampRouter pattern may use here (UTC, as
/// Kafka Connect formats): years, months as numbers, days, hours, minutes, seconds and
/// milliseconds. Any other letter is refused: it was written out as it stands, and every
/// record went to one index.
const TIMESTAMP_LETTERS: &str = "yMdHmsS";

/// A piece of a TimestampRouter pattern, read once when the config is.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// Written as it stands (quoted text, `''`, anything not a letter).
    Text(String),
    /// One of [`TIMESTAMP_LETTERS`], repeated this many times.
    Field(char, usize),
}

/// `pattern` in pieces, as Java's `SimpleDateFormat` reads it: `'…'` literal text (`''` a quote,
/// inside it too), runs of a letter fields; refused with a letter it does not format here.
fn timestamp_pieces(pattern: &str) -> Result<Vec<Piece>, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            if chars.get(i + 1) == Some(&'\'') {
                text.push('\'');
                i += 2;
                continue;
            }
            // Quoted text up to the closing quote; `''` inside it is a quote.
            i += 1;
            loop {
                match (chars.get(i), chars.get(i + 1)) {
                    (None, _) => return Err(format!("`{pattern}` has a quote that is not closed")),
                    (Some('\''), Some('\'')) => {
                        text.push('\'');
                        i += 2;
                    }
                    (Some('\''), _) => break,
                    (Some(&q), _) => {
                        text.push(q);
                        i += 1;
                    }
                }
            }
            i += 1;
        } else if c.is_ascii_alphabetic() {
            if !TIMESTAMP_LETTERS.contains(c) {
                return Err(format!(
                    "`{c}` in `{pattern}` is not supported (supported: y, M as a number, d, H, m, s, S; quote literal text, 'like this')"
                ));
            }
            let run = chars[i..].iter().take_while(|&&x| x == c).count();
            if c == 'M' && run >= 3 {
                return Err(format!(
                    "month names (`{}`) in `{pattern}` are not supported: use MM",
                    "M".repeat(run)
                ));
            }
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(Piece::Field(c, run));
            i += run;
        } else {
            text.push(c);
            i += 1;
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

/// `pieces` for `ts_ms`, in UTC, as Java's `SimpleDateFormat` writes them: each number at least
/// as many digits as its letter is repeated (`M` gives `3`, `MM` `03`), `yy` the year's last two
/// digits.
fn format_timestamp(pieces: &[Piece], ts_ms: i64) -> String {
    let secs = ts_ms.div_euclid(1000);
    let (year, month, day) = crate::decode::semantic::civil_from_days(secs.div_euclid(86_400));
    let tod = secs.rem_euclid(86_400);
    let mut out = String::new();
    for piece in pieces {
        let (c, run) = match piece {
            Piece::Text(t) => {
                out.push_str(t);
                continue;
            }
            Piece::Field(c, run) => (*c, *run),
        };
        let v: i64 = match c {
            'y' if run == 2 => year.rem_euclid(100),
            'y' => year,
            'M' => i64::from(month),
            'd' => i64::from(day),
            'H' => tod / 3600,
            'm' => tod / 60 % 60,
            's' => tod % 60,
            _ => ts_ms.rem_euclid(1000),
        };
        let digits = v.unsigned_abs().to_string();
        if v < 0 {
            out.push('-');
        }
        out.push_str(&"0".repeat(run.saturating_sub(digits.len())));
        out.push_str(&digits);
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
    fn a_regex_router_matches_whole_names_and_reads_group_references_as_java_does() {
        let route = |regex: &str, replacement: &str, topic: &str| {
            transforms(&[
                ("transforms", "r"),
                (
                    "transforms.r.type",
                    "org.apache.kafka.connect.transforms.RegexRouter",
                ),
                ("transforms.r.regex", regex),
                ("transforms.r.replacement", replacement),
            ])
            .map(|t| t.route(topic, None).unwrap().unwrap())
        };
        for (regex, replacement, topic, routed) in [
            // The whole name must match, not only the first (shorter) match…
            ("(.*?)\\.(.*?)", "$1_$2", "db.inv.orders", "db_inv.orders"),
            ("orders", "all", "orders_archive", "orders_archive"),
            // …then the first match is replaced, the rest kept (Java's replaceFirst).
            (
                "orders|orders_archive",
                "all",
                "orders_archive",
                "all_archive",
            ),
            ("(.*?)\\.(.*?)", "$2.$1", "db.inv.orders", ".dbinv.orders"),
            // `$10` with one group is group 1 and a 0; `\$` a dollar; named groups.
            ("(a)", "$10", "a", "a0"),
            ("(a)", "\\$1", "a", "$1"),
            ("(?<t>.*)", "x-${t}", "a", "x-a"),
        ] {
            assert_eq!(
                route(regex, replacement, topic).unwrap(),
                routed,
                "{regex} {replacement} {topic}"
            );
        }
        let groups: Vec<String> = (1..=10).map(|i| format!("({i})")).collect();
        assert_eq!(
            route(&groups.join(""), "$10-$1", "12345678910").unwrap(),
            "10-1"
        );
        // A group the regex does not have: refused, naming the option.
        let err = route("(a)", "$2", "a").unwrap_err();
        assert!(
            err.starts_with("transforms.r.replacement: `$2` names no group"),
            "{err}"
        );
        assert!(route("(a)", "a$", "a").is_err());
        assert!(route("(?<t>.*)", "x-${tabel}", "a").is_err());
        assert!(route("(?<t>.*)", "x-${t", "a").is_err());
        // Not valid as given, though valid wrapped in ^(?:…)$.
        let err = route("a)|(b", "x", "a").unwrap_err();
        assert!(err.starts_with("transforms.r.regex: invalid"), "{err}");
    }

    #[test]
    fn a_timestamp_router_formats_as_simple_date_format_or_refuses_the_pattern() {
        let route = |format: &str, ts: i64| {
            transforms(&[
                ("transforms", "ts"),
                (
                    "transforms.ts.type",
                    "org.apache.kafka.connect.transforms.TimestampRouter",
                ),
                ("transforms.ts.timestamp.format", format),
            ])
            .map(|t| t.route("t", Some(ts)).unwrap().unwrap())
        };
        // 2024-03-01T09:05:07.042Z
        let ts = 1_709_283_907_042;
        assert_eq!(route("yyyyMMdd", ts).unwrap(), "t-20240301");
        assert_eq!(route("yy-M-d H:m:s.S", ts).unwrap(), "t-24-3-1 9:5:7.42");
        assert_eq!(
            route("yyyy-MM-dd'T'HH.SSS", ts).unwrap(),
            "t-2024-03-01T09.042"
        );
        assert_eq!(route("''yyyy'''s'", ts).unwrap(), "t-'2024's");
        for (bad, why) in [
            ("YYYY-ww", "`Y`"),
            ("yyyy-MMM", "month names"),
            ("yyyy-MM-dd hh a", "`h`"),
            ("yyyy'x", "not closed"),
        ] {
            let err = route(bad, ts).unwrap_err();
            assert!(
                err.starts_with("transforms.ts.timestamp.format: ") && err.contains(why),
                "{bad}: {err}"
            );
        }
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
