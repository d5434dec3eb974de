//! Connector configs: the JSON users post (`{"name", "config"}`), placeholder resolution,
//! secret redaction, and validation into a typed [`ConnectorSpec`] that names every bad key.

pub mod errors;
pub mod options;
pub mod transforms;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::decode;
use crate::sink::druid::config::DruidConfig;
use crate::sink::elasticsearch::config::EsConfig;
use errors::ErrorPolicy;
use options::{ConfigError, OptionDef, Options};
use transforms::Transforms;

/// A connector config as posted: string values, as in Kafka Connect.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectorConfig {
    pub name: String,
    pub config: BTreeMap<String, String>,
}

/// Redacted (`[hidden]` secrets), as logs show a config: a `{:?}` anywhere (a change logged
/// when applying it failed, a test's message) never prints a password.
impl std::fmt::Debug for ConnectorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorConfig")
            .field("name", &self.name)
            .field("config", &self.redacted())
            .finish()
    }
}

#[derive(Deserialize)]
struct RawConnector {
    name: Option<String>,
    config: BTreeMap<String, serde_json::Value>,
}

impl ConnectorConfig {
    /// Parses `{"name": …, "config": {…}}`. Numbers and booleans are taken as their text
    /// (Kafka Connect does the same); nested objects are rejected.
    pub fn from_json(text: &str) -> Result<ConnectorConfig, ConfigError> {
        // serde's derived structs would also take `["name", {…}]`, field by position.
        if !text.trim_start().starts_with('{') {
            return Err(ConfigError::one(
                "connector JSON must be {\"name\": …, \"config\": {…}}: it is not a JSON object",
            ));
        }
        let raw: RawConnector = serde_json::from_str(text).map_err(|e| {
            ConfigError::one(format!(
                "connector JSON must be {{\"name\": …, \"config\": {{…}}}}: {e}"
            ))
        })?;
        let mut config = BTreeMap::new();
        let mut errors = Vec::new();
        for (k, v) in raw.config {
            match v {
                serde_json::Value::String(s) => {
                    config.insert(k, s);
                }
                serde_json::Value::Number(n) => {
                    config.insert(k, n.to_string());
                }
                serde_json::Value::Bool(b) => {
                    config.insert(k, b.to_string());
                }
                serde_json::Value::Null => {}
                _ => errors.push(format!("{k}: must be a string")),
            }
        }
        // Trimmed, as Kafka Connect trims a created connector's name: " x " is x.
        let name = match (raw.name.map(|n| n.trim().to_string()), config.get("name")) {
            (Some(n), Some(c)) if &n != c => {
                errors.push(format!(
                    "name: `{c}` in config differs from the connector name `{n}`"
                ));
                n
            }
            (Some(n), _) => n,
            (None, Some(c)) => c.clone(),
            (None, None) => {
                errors.push("name: missing".into());
                String::new()
            }
        };
        if !errors.is_empty() {
            return Err(ConfigError(errors));
        }
        config.insert("name".into(), name.clone());
        Ok(ConnectorConfig { name, config })
    }

    /// Replaces `${env:VAR}` and `${file:/path}` in every value.
    pub fn resolve_placeholders(&self) -> Result<ConnectorConfig, ConfigError> {
        self.resolve_with_pieces().map(|(config, _)| config)
    }

    /// As [`Self::resolve_placeholders`], with what each placeholder gave: (the placeholder,
    /// its text), for errors to put the placeholder back wherever its text shows.
    fn resolve_with_pieces(&self) -> Result<(ConnectorConfig, Pieces), ConfigError> {
        let mut pieces = Vec::new();
        let mut errors = Vec::new();
        let mut config = BTreeMap::new();
        // What the placeholders of the whole config may give: one ${file:…} of 1 MiB repeated
        // through a 2 MiB request asked for gigabytes.
        let mut budget = MAX_RESOLVED;
        for (k, v) in &self.config {
            match resolve(v, &mut budget, &mut pieces) {
                Ok(r) => {
                    config.insert(k.clone(), r);
                }
                Err(e) => errors.push(format!("{k}: {e}")),
            }
        }
        if errors.is_empty() {
            let config = ConnectorConfig {
                name: self.name.clone(),
                config,
            };
            Ok((config, pieces))
        } else {
            Err(ConfigError(errors))
        }
    }

    /// The config with secret values shown as `[hidden]`, for logs and API responses.
    pub fn redacted(&self) -> BTreeMap<String, String> {
        self.config
            .iter()
            .map(|(k, v)| (k.clone(), redact(k, v).into_owned()))
            .collect()
    }
}

/// `value` of `key` as logs and API responses show it: a secret key's as `[hidden]`, and the
/// password of any URL in it (`https://user:password@es:9200`, a list of them) too.
pub fn redact<'v>(key: &str, value: &'v str) -> Cow<'v, str> {
    if is_secret(key) {
        return Cow::Borrowed(HIDDEN);
    }
    if !value.contains("://") || !value.contains('@') {
        return Cow::Borrowed(value);
    }
    let parts: Vec<String> = value
        .split(',')
        .map(|part| {
            let Some(scheme_end) = part.find("://").map(|i| i + 3) else {
                return part.to_string();
            };
            let rest = &part[scheme_end..];
            let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
            match authority.rfind('@').and_then(|at| {
                let colon = authority[..at].find(':')?;
                Some((colon, at))
            }) {
                Some((colon, at)) => format!(
                    "{}{}{HIDDEN}{}",
                    &part[..scheme_end],
                    &rest[..=colon],
                    &rest[at..]
                ),
                None => part.to_string(),
            }
        })
        .collect();
    Cow::Owned(parts.join(","))
}

/// What the REST API shows in place of a secret's value.
pub const HIDDEN: &str = "[hidden]";

/// Keys whose values are never shown.
pub fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "api.key",
        "sasl.jaas.config",
        "user.info",
        "ssl.key",
        "token",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// The largest file a `${file:…}` placeholder reads.
const MAX_FILE_PLACEHOLDER: u64 = 1 << 20;

/// The error of a key no plugin knows (it says nothing of the value).
const UNKNOWN_OPTION: &str = "unknown option";

/// The most a config's placeholders give in all.
const MAX_RESOLVED: usize = 4 << 20;

/// The text of a `${file:…}` placeholder: a regular file of at most 1 MiB, trailing newline
/// dropped (not a device or a pipe, which could block or never end).
fn read_secret_file(path: &str) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
    if !meta.is_file() {
        return Err(format!("`{path}` is not a regular file"));
    }
    if meta.len() > MAX_FILE_PLACEHOLDER {
        return Err(format!(
            "`{path}` is larger than {MAX_FILE_PLACEHOLDER} bytes"
        ));
    }
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
        .map_err(|e| format!("cannot read `{path}`: {e}"))
}

/// What placeholders gave: (the placeholder as written, the text it gave).
type Pieces = Vec<(String, String)>;

fn resolve(value: &str, budget: &mut usize, pieces: &mut Pieces) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let inner = &rest[start + 2..start + len];
        let resolved = if let Some(var) = inner.strip_prefix("env:") {
            std::env::var(var).map_err(|_| format!("environment variable `{var}` is not set"))?
        } else if let Some(path) = inner.strip_prefix("file:") {
            read_secret_file(path)?
        } else {
            // Not a config provider reference (e.g. `${topic}` in index.name): kept as is.
            rest[start..start + len + 1].to_string()
        };
        *budget = budget.checked_sub(resolved.len()).ok_or_else(|| {
            format!(
                "the config's placeholders give more than {} MiB in all",
                MAX_RESOLVED >> 20
            )
        })?;
        let placeholder = &rest[start..start + len + 1];
        if resolved != placeholder {
            pieces.push((placeholder.to_string(), resolved.clone()));
        }
        out.push_str(&rest[..start]);
        out.push_str(&resolved);
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `error` (`key: why`) without what placeholders gave: for a key whose value has one, `why`
/// becomes only that its value is refused, whatever it says but `unknown option` (a regular
/// expression's parse error quotes its pattern line by line, without backticks and trimmed, so
/// no search for the value finds it). Elsewhere the text each placeholder gave, as it is and
/// lower-cased (index names are), is put back as its placeholder: an error of another key may
/// quote one item of a list that holds a placeholder (`topics`, `topic.index.map`).
fn hide_resolved(
    error: String,
    raw: &ConnectorConfig,
    resolved: &ConnectorConfig,
    pieces: &Pieces,
) -> String {
    let given = |k: &str| raw.config.get(k).filter(|v| v.contains("${"));
    if let Some((key, why)) = error.split_once(": ")
        && let Some(placeholder) = given(key)
        && resolved.config.get(key) != Some(placeholder)
        && why != UNKNOWN_OPTION
    {
        return format!(
            "{key}: the value `{placeholder}` gives is not valid here (not shown: it comes from \
             the worker's environment or files)"
        );
    }
    let mut error = error;
    // Longest first, so that a text holding another is put back whole.
    let mut by_length: Vec<&(String, String)> = pieces.iter().collect();
    by_length.sort_by_key(|(_, text)| std::cmp::Reverse(text.len()));
    for (placeholder, text) in by_length {
        for text in [text.clone(), text.to_lowercase()] {
            if !text.is_empty() {
                error = error.replace(&text, placeholder);
            }
        }
    }
    error
}

/// Which topics a connector reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    Topics(Vec<String>),
    /// A regular expression every matching topic is read from (`topics.regex`); it must match
    /// the whole name, as in Kafka Connect (Java's `Matcher.matches`).
    Regex(String),
}

/// Topics Kafka keeps for itself, which a `topics.regex` never reads (as Kafka's Java consumer,
/// whose `exclude.internal.topics` is true by default).
const INTERNAL_TOPICS: [&str; 3] = [
    "__consumer_offsets",
    "__transaction_state",
    "__share_group_state",
];

/// A compiled `topics.regex`: which topic names it reads.
#[derive(Debug, Clone)]
pub struct TopicPattern(regex::Regex);

impl TopicPattern {
    /// Whether the pattern reads topic `name`: a match of the whole name, not an internal topic.
    pub fn reads(&self, name: &str) -> bool {
        !INTERNAL_TOPICS.contains(&name) && self.0.is_match(name)
    }
}

impl Subscription {
    /// The expression of a `topics.regex` as it must match: the whole topic name (for the
    /// `regex` crate; librdkafka never sees it, `source/subscription.rs` says why).
    pub fn whole_name(regex: &str) -> String {
        format!("^(?:{regex})$")
    }

    /// A `topics.regex`, compiled; `None` for a list of topics.
    pub fn pattern(&self) -> Result<Option<TopicPattern>, String> {
        match self {
            Subscription::Topics(_) => Ok(None),
            Subscription::Regex(r) => regex::Regex::new(&Self::whole_name(r))
                .map(|re| Some(TopicPattern(re)))
                .map_err(|e| format!("topics.regex: {e}")),
        }
    }

    /// Whether the connector reads `topic` (for a regex, one that does not compile: no).
    pub fn matches(&self, topic: &str) -> bool {
        match (self, self.pattern()) {
            (Subscription::Topics(t), _) => t.iter().any(|t| t == topic),
            (_, Ok(Some(p))) => p.reads(topic),
            _ => false,
        }
    }
}

/// How record keys or values are decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConverterKind {
    Json {
        schemas_enable: Option<bool>,
    },
    /// Keys only: the key bytes as UTF-8 text (`StringConverter`).
    String,
    /// Confluent's wire format, writer schemas from a schema registry (`AvroConverter`).
    Avro {
        registry_urls: Vec<String>,
        /// `user:password` for basic auth (`*.converter.basic.auth.user.info`).
        user_info: Option<String>,
    },
}

impl ConverterKind {
    /// Kafka Connect's class name of this converter (the dead-letter queue's
    /// `__connect.errors.class.name`).
    pub fn class_name(&self) -> &'static str {
        match self {
            ConverterKind::Json { .. } => CONVERTER_JSON[1],
            ConverterKind::String => CONVERTER_STRING[1],
            ConverterKind::Avro { .. } => CONVERTER_AVRO[1],
        }
    }
}

/// The sink a connector writes to, with its options.
#[derive(Debug, Clone)]
pub enum SinkSpec {
    Elasticsearch(Box<EsConfig>),
    Druid(Box<DruidConfig>),
}

impl SinkSpec {
    /// The Elasticsearch options, for the commands that work on indices.
    pub fn elasticsearch(&self) -> Option<&EsConfig> {
        match self {
            SinkSpec::Elasticsearch(c) => Some(c),
            SinkSpec::Druid(_) => None,
        }
    }

    /// Whether the sink reads `source`'s whole block ([`crate::decode::Source::json`]), which
    /// the decoder then keeps.
    pub fn reads_source_block(&self) -> bool {
        match self {
            SinkSpec::Elasticsearch(c) => c.reads_source_block(),
            SinkSpec::Druid(_) => false,
        }
    }

    /// How long stopping or a rebalance waits for writes in flight.
    /// Whether the sink commits the offsets in its own Kafka transactions (Druid's
    /// `exactly.once`): its consumer must then read committed records only.
    pub fn commits_offsets_in_transactions(&self) -> bool {
        matches!(self, SinkSpec::Druid(c) if c.exactly_once)
    }

    pub fn flush_timeout(&self) -> std::time::Duration {
        match self {
            SinkSpec::Elasticsearch(c) => c.flush_timeout,
            SinkSpec::Druid(c) => c.flush_timeout,
        }
    }
}

/// A validated connector: everything a task needs to run it.
#[derive(Debug, Clone)]
pub struct ConnectorSpec {
    pub name: String,
    pub tasks_max: usize,
    pub subscription: Subscription,
    pub key_converter: ConverterKind,
    pub value_converter: ConverterKind,
    pub decode: decode::Options,
    pub transforms: Transforms,
    /// `consumer.override.*`: librdkafka properties for this connector's consumers.
    pub consumer_overrides: BTreeMap<String, String>,
    pub sink: SinkSpec,
    /// What happens to records that cannot be decoded or mapped (`errors.*`).
    pub errors: ErrorPolicy,
    /// The config as posted, placeholders unresolved (so secrets stay out of status output).
    pub config: ConnectorConfig,
}

/// Options every sink connector has (Kafka Connect's framework options).
pub const COMMON_OPTIONS: &[OptionDef] = &[
    OptionDef {
        name: "name",
        default: None,
        doc: "Connector name; its consumer group is `connect-<name>`.",
    },
    OptionDef {
        name: "connector.class",
        default: None,
        doc: "`elasticsearch` (or `io.confluent.connect.elasticsearch.ElasticsearchSinkConnector`), or `druid`.",
    },
    OptionDef {
        name: "tasks.max",
        default: Some("1"),
        doc: "Tasks (consumers of the group) this worker runs for the connector, at most 256. In distributed mode every worker runs this many.",
    },
    OptionDef {
        name: "topics",
        default: None,
        doc: "Topics to read, comma-separated. Exactly one of `topics` and `topics.regex`.",
    },
    OptionDef {
        name: "topics.regex",
        default: None,
        doc: "Regular expression of topics to read, matching whole names (as in Kafka Connect: `inventory` does not read `inventory.orders`), in Rust's `regex` syntax, which Java's common patterns share (`\\d`, `(?:…)`; no look-around); Kafka's internal topics are never read. New matching topics are picked up within 5 s (`consumer.override.topic.metadata.refresh.interval.ms`).",
    },
    OptionDef {
        name: "key.converter",
        default: Some("json"),
        doc: "`json` (`org.apache.kafka.connect.json.JsonConverter`), `avro` (`io.confluent.connect.avro.AvroConverter`) or `string` (`org.apache.kafka.connect.storage.StringConverter`).",
    },
    OptionDef {
        name: "value.converter",
        default: Some("json"),
        doc: "`json` (`org.apache.kafka.connect.json.JsonConverter`) or `avro` (`io.confluent.connect.avro.AvroConverter`).",
    },
    OptionDef {
        name: "key.converter.schemas.enable",
        default: None,
        doc: "`false`: never read `{\"schema\",\"payload\"}` keys as wrapped; unset: detected per record.",
    },
    OptionDef {
        name: "value.converter.schemas.enable",
        default: None,
        doc: "As for keys; values are always detected, since Debezium envelopes are unambiguous.",
    },
    OptionDef {
        name: "key.converter.schema.registry.url",
        default: None,
        doc: "Avro: the schema registry URL(s), comma-separated (tried in order).",
    },
    OptionDef {
        name: "value.converter.schema.registry.url",
        default: None,
        doc: "Avro: as for keys.",
    },
    OptionDef {
        name: "key.converter.basic.auth.user.info",
        default: None,
        doc: "Avro: `user:password` for the schema registry (`basic.auth.credentials.source=USER_INFO`; shown as `[hidden]`).",
    },
    OptionDef {
        name: "value.converter.basic.auth.user.info",
        default: None,
        doc: "Avro: as for keys.",
    },
    OptionDef {
        name: "transforms",
        default: None,
        doc: "Only `ExtractNewRecordState`, `ExtractField$Key`, `RegexRouter` and `TimestampRouter`, with Kafka Connect's meaning; others are rejected.",
    },
    OptionDef {
        name: "consumer.override.<property>",
        default: None,
        doc: "Any librdkafka consumer property for this connector (e.g. `consumer.override.session.timeout.ms`), checked when the config is: a property librdkafka does not know (a Java consumer's `max.poll.records`) or a value it refuses is refused, naming it. Properties librdkafka takes alone but not together (`fetch.max.bytes` below `message.max.bytes`, `session.timeout.ms` above `max.poll.interval.ms`) are refused too, checked with the worker's `[kafka.properties]` on a client that contacts no broker: when the config is posted to the REST API (and listed by its validate endpoint), when `cdc-sink run` loads a connector file, and by `cdc-sink validate` (with the settings of its `--config`, or the defaults). `group.instance.id` is refused (here, and in `[kafka.properties]` when a task starts): every task would share it, and Kafka fences all but one.",
    },
];

const CONVERTER_JSON: &[&str] = &["json", "org.apache.kafka.connect.json.JsonConverter"];
const CONVERTER_STRING: &[&str] = &["string", "org.apache.kafka.connect.storage.StringConverter"];
const CONVERTER_AVRO: &[&str] = &["avro", "io.confluent.connect.avro.AvroConverter"];
const ES_CLASSES: &[&str] = &[
    "elasticsearch",
    "io.confluent.connect.elasticsearch.ElasticsearchSinkConnector",
];

/// A connector plugin this worker runs (`GET /connector-plugins`).
pub struct Plugin {
    /// The class name it is listed under.
    pub class: &'static str,
    /// Every `connector.class` value that names it.
    pub names: &'static [&'static str],
    /// Its own options (the framework's are [`COMMON_OPTIONS`]).
    pub options: &'static [OptionDef],
    /// The group its own options are shown in by `config/validate`.
    pub group: &'static str,
    /// Its options without which a connector is invalid (beyond `name`, `connector.class`).
    pub required: &'static [&'static str],
}

pub const PLUGINS: &[Plugin] = &[
    Plugin {
        class: "elasticsearch",
        names: ES_CLASSES,
        options: crate::sink::elasticsearch::config::OPTIONS,
        group: "Elasticsearch",
        // `connection.url`, or `connection.cloud.id` instead.
        required: &[],
    },
    Plugin {
        class: "druid",
        names: DRUID_CLASSES,
        options: crate::sink::druid::config::OPTIONS,
        group: "Druid",
        required: &[],
    },
];

const DRUID_CLASSES: &[&str] = &["druid"];

/// The plugin `name` (a class name or alias) names.
pub fn plugin(name: &str) -> Option<&'static Plugin> {
    PLUGINS.iter().find(|p| p.names.contains(&name))
}

/// The most tasks a connector may have on one worker.
pub const MAX_TASKS: usize = 256;

/// Options without which any connector is invalid.
pub const REQUIRED: &[&str] = &["name", "connector.class"];

/// Framework keys accepted and not acted on (they change nothing a user would notice here).
const ACCEPTED_FRAMEWORK_KEYS: &[&str] = &["header.converter", "config.action.reload"];

impl ConnectorSpec {
    /// Validates `config`; every bad key is named in the error. An error never shows what a
    /// `${env:…}`/`${file:…}` placeholder gave: whoever may post a config (or ask
    /// `…/config/validate`) must not read the worker's files and environment in the answer.
    pub fn validate(config: &ConnectorConfig) -> Result<ConnectorSpec, ConfigError> {
        let (resolved, pieces) = config.resolve_with_pieces()?;
        Self::validate_resolved(config, &resolved).map_err(|ConfigError(errors)| {
            ConfigError(
                errors
                    .into_iter()
                    .map(|e| hide_resolved(e, config, &resolved, &pieces))
                    .collect(),
            )
        })
    }

    fn validate_resolved(
        config: &ConnectorConfig,
        resolved: &ConnectorConfig,
    ) -> Result<ConnectorSpec, ConfigError> {
        let o = Options::new(&resolved.config);

        let class = o.get("connector.class").unwrap_or("");
        let is_druid = DRUID_CLASSES.contains(&class);
        if class.is_empty() {
            o.error(
                "connector.class",
                "missing (use `elasticsearch` or `druid`)",
            );
        } else if plugin(class).is_none() {
            o.error(
                "connector.class",
                format!("unknown connector `{class}` (known: elasticsearch, druid)"),
            );
        }
        // Kafka Connect's rule (a non-empty string without ISO control characters), and no `/`:
        // the name is a path segment of the REST API, a consumer group's and a thread's name.
        if config.name.is_empty()
            || config.name.contains('/')
            || config.name.chars().any(char::is_control)
        {
            o.error(
                "name",
                "must be non-empty and contain no `/` and no control characters",
            );
        }

        let subscription = match (o.list("topics"), o.get("topics.regex")) {
            (t, None) if !t.is_empty() => Subscription::Topics(t),
            (t, Some(r)) if t.is_empty() => {
                if let Err(e) = regex::Regex::new(r) {
                    o.error("topics.regex", format!("invalid regular expression: {e}"));
                }
                Subscription::Regex(r.to_string())
            }
            (t, _) => {
                let msg = if t.is_empty() {
                    "set one of topics and topics.regex"
                } else {
                    "set only one of topics and topics.regex"
                };
                o.error("topics", msg);
                Subscription::Topics(t)
            }
        };

        let converter = |role: &str, allow_string: bool| {
            let key = format!("{role}.converter");
            let schemas = format!("{key}.schemas.enable");
            let schemas_enable = o.get(&schemas).map(|_| o.bool(&schemas, true));
            match o.get(&key) {
                None => ConverterKind::Json { schemas_enable },
                Some(c) if CONVERTER_JSON.contains(&c) => ConverterKind::Json { schemas_enable },
                Some(c) if allow_string && CONVERTER_STRING.contains(&c) => ConverterKind::String,
                Some(c) if CONVERTER_AVRO.contains(&c) => {
                    let urls_key = format!("{key}.schema.registry.url");
                    let registry_urls = o.list(&urls_key);
                    if registry_urls.is_empty() {
                        o.error(
                            &urls_key,
                            "missing: the Avro converter needs the schema registry URL(s)",
                        );
                    }
                    for u in &registry_urls {
                        if !(u.starts_with("http://") || u.starts_with("https://")) {
                            o.error(
                                &urls_key,
                                format!("`{u}` is not an http:// or https:// URL"),
                            );
                        }
                    }
                    let source_key = format!("{key}.basic.auth.credentials.source");
                    o.choice(&source_key, &["USER_INFO"], "USER_INFO");
                    let user_info = o
                        .get(&format!("{key}.basic.auth.user.info"))
                        .map(String::from);
                    ConverterKind::Avro {
                        registry_urls,
                        user_info,
                    }
                }
                Some(c) => {
                    o.error(&key, format!("unknown converter `{c}`"));
                    ConverterKind::Json { schemas_enable }
                }
            }
        };
        let key_converter = converter("key", true);
        let value_converter = converter("value", false);

        let mut decode = decode::Options {
            decimal_as_number: o.choice("decimal.format", &["string", "number"], "string")
                == "number",
            bits_as_number: o.choice("bits.format", &["base64", "number"], "base64") == "number",
            keep_source: false,
        };
        // The Druid connector's producer.override.* are its rows' producer's.
        let errors = ErrorPolicy::read(&o, !is_druid, !is_druid);
        // Its copies would be read back as records of the connector: a failed decode copied
        // again for ever, a document refused indexed into an index of copies. Kafka Connect
        // refuses it the same way.
        if let Some(dlq) = &errors.dead_letter
            && subscription.matches(&dlq.topic)
        {
            let why = format!(
                "`{}` is a topic the connector reads (topics or topics.regex): its copies would be read back",
                dlq.topic
            );
            o.error("errors.deadletterqueue.topic.name", why);
        }
        if o.get("predicates").is_some() {
            o.error("predicates", "transform predicates are not supported");
        }
        let transforms = transforms::parse(&o);
        let consumer_overrides = o.overrides(
            "consumer.override.",
            &["group.id", "enable.auto.commit", "enable.auto.offset.store"],
        );
        if consumer_overrides.contains_key("group.instance.id") {
            o.error(
                "consumer.override.group.instance.id",
                "would be one static member id for every task of the connector, on every worker: \
                 Kafka fences all but one of them, a fatal error for the others (static membership \
                 is not supported)",
            );
        }

        let sink = if is_druid {
            SinkSpec::Druid(Box::new(DruidConfig::read(&o, &transforms)))
        } else {
            SinkSpec::Elasticsearch(Box::new(EsConfig::read(
                &o,
                &subscription,
                &transforms,
                &errors,
            )))
        };
        decode.keep_source = sink.reads_source_block();
        let tasks_max = o.at_least("tasks.max", 1usize, 1);
        if tasks_max > MAX_TASKS {
            o.error(
                "tasks.max",
                format!("must be at most {MAX_TASKS} (each task is a thread and a Kafka consumer)"),
            );
        }
        let max_poll = o.parse(
            "consumer.override.max.poll.interval.ms",
            MAX_POLL_INTERVAL_MS,
        );
        let heartbeat = o.parse(
            "consumer.override.heartbeat.interval.ms",
            HEARTBEAT_INTERVAL_MS,
        );
        if let Some(e) = poll_interval_error(sink.flush_timeout(), max_poll, heartbeat) {
            o.error("flush.timeout.ms", e);
        }

        // Unknown keys: anything not documented, not a prefix family, not a framework key.
        let sink_options = if is_druid {
            crate::sink::druid::config::OPTIONS
        } else {
            crate::sink::elasticsearch::config::OPTIONS
        };
        for key in resolved.config.keys() {
            let known = COMMON_OPTIONS
                .iter()
                .chain(errors::OPTIONS)
                .chain(sink_options)
                .any(|d| d.name == key)
                || ACCEPTED_FRAMEWORK_KEYS.contains(&key.as_str())
                || [
                    "transforms.",
                    "consumer.override.",
                    "key.converter.",
                    "value.converter.",
                    "producer.override.",
                ]
                .iter()
                .any(|p| key.starts_with(p));
            if !known {
                o.error(key, UNKNOWN_OPTION);
            }
        }
        o.finish()?;
        Ok(ConnectorSpec {
            name: config.name.clone(),
            tasks_max,
            subscription,
            key_converter,
            value_converter,
            decode,
            transforms,
            consumer_overrides,
            sink,
            errors,
            config: config.clone(),
        })
    }

    /// The consumer group of this connector, as Kafka Connect names it.
    pub fn group_id(&self) -> String {
        format!("connect-{}", self.name)
    }
}

/// librdkafka's defaults for `max.poll.interval.ms` and `heartbeat.interval.ms`.
pub const MAX_POLL_INTERVAL_MS: u64 = 300_000;
pub const HEARTBEAT_INTERVAL_MS: u64 = 3_000;

/// What a revocation may take beyond `flush.timeout.ms` before its task leaves the rebalance:
/// giving up writes still unfinished (up to 5 s for a bulk request already sent) and the
/// synchronous commit of what was written.
const REVOCATION_SLACK_MS: u64 = 10_000;

/// A revocation waits up to `flush.timeout.ms` for in-flight writes inside the rebalance, and
/// the group gives a member's partitions to another once `max.poll.interval.ms` has passed
/// since the rebalance began: the task may learn of the rebalance a heartbeat late, and must
/// be done with the partitions before the next owner writes them. `None` when `flush` fits.
pub fn poll_interval_error(flush: Duration, max_poll_ms: u64, heartbeat_ms: u64) -> Option<String> {
    let most = max_poll_ms.saturating_sub(heartbeat_ms.saturating_add(REVOCATION_SLACK_MS));
    (flush.as_millis() > u128::from(most)).then(|| {
        format!(
            "{} ms must be at most max.poll.interval.ms ({max_poll_ms} ms) less \
             heartbeat.interval.ms ({heartbeat_ms} ms) and 10 s, {most} ms: a revocation waits \
             that long for the task's writes, and the group gives the task's partitions to \
             another member once max.poll.interval.ms has passed since the rebalance began",
            flush.as_millis()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Result<ConnectorSpec, String> {
        ConnectorSpec::validate(&ConnectorConfig::from_json(json).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_debezium_example_es_sink_config_is_accepted() {
        let json = include_str!(
            "../../tests/fixtures/debezium/connector-configs/unwrap-smt__es-sink.json"
        );
        let s = spec(json).unwrap();
        assert_eq!(s.group_id(), "connect-elastic-sink");
        assert_eq!(
            s.subscription,
            Subscription::Topics(vec!["customers".into()])
        );
        let es = s.sink.elasticsearch().unwrap();
        assert_eq!(es.urls, ["http://elastic:9200"]);
        assert_eq!(
            es.on_null,
            crate::sink::elasticsearch::config::OnNull::Delete
        );
        assert_eq!(
            es.on_delete,
            crate::sink::elasticsearch::config::OnDelete::Ignore
        );
        assert_eq!(es.key_field.as_deref(), Some("id"));
    }

    #[test]
    fn the_source_block_is_kept_only_for_add_fields_that_name_it() {
        let keeps = |extra: &str| {
            spec(&format!(
                r#"{{"name":"x","config":{{"connector.class":"elasticsearch","topics":"t",
                   "connection.url":"http://es:9200"{extra}}}}}"#
            ))
            .unwrap()
            .decode
            .keep_source
        };
        assert!(!keeps(""));
        assert!(!keeps(r#","add.fields":"op,ts_ms""#));
        assert!(keeps(r#","add.fields":"op,source.lsn""#));
        // A bare name other than `op` and `ts_ms` is a field of `source`.
        assert!(keeps(r#","add.fields":"table""#));
        let unwrap = r#","transforms":"unwrap","transforms.unwrap.type":"io.debezium.transforms.ExtractNewRecordState""#;
        assert!(keeps(&format!(
            r#"{unwrap},"transforms.unwrap.add.fields":"source.ts_ms""#
        )));
        assert!(!keeps(&format!(
            r#"{unwrap},"transforms.unwrap.add.fields":"op""#
        )));
        let druid =
            spec(r#"{"name":"x","config":{"connector.class":"druid","topics":"t"}}"#).unwrap();
        assert!(!druid.decode.keep_source);
    }

    #[test]
    fn every_bad_key_is_named_at_once() {
        let err = spec(
            r#"{"name":"x","config":{"connector.class":"elasticsearch","topics":"t","connection.url":"es:9200",
               "batch.size":"many","batch.szie":"10","errors.tolerance":"all",
               "elastic.https.ssl.ca.trusted.fingerprint":"ab:cd"}}"#,
        )
        .unwrap_err();
        assert!(
            err.contains(
                "elastic.https.ssl.ca.trusted.fingerprint: `ab:cd` is not a SHA-256 fingerprint"
            ),
            "{err}"
        );
        assert!(
            err.contains("connection.url: `es:9200` is not an http:// or https:// URL"),
            "{err}"
        );
        assert!(
            err.contains("batch.size: `many` is not a valid integer"),
            "{err}"
        );
        assert!(err.contains("batch.szie: unknown option"), "{err}");
        assert!(!err.contains("errors.tolerance"), "{err}");
    }

    #[test]
    fn passwords_in_urls_are_hidden_too() {
        assert_eq!(
            redact(
                "connection.url",
                "https://elastic:pa:ss@es1:9200/x,http://es2:9200, https://u:p@es3"
            ),
            "https://elastic:[hidden]@es1:9200/x,http://es2:9200, https://u:[hidden]@es3"
        );
        assert_eq!(redact("connection.url", "http://es:9200"), "http://es:9200");
        // A user without a password, an `@` past the host: nothing to hide.
        assert_eq!(
            redact("connection.url", "https://u@es:9200/a@b"),
            "https://u@es:9200/a@b"
        );
        assert_eq!(redact("connection.password", "p"), "[hidden]");
    }

    #[test]
    fn a_name_with_a_control_character_is_refused() {
        for name in ["a\\u0000b", "a\\nb", "a\\u0085b", "a/b", ""] {
            let err = spec(&format!(
                r#"{{"name":"{name}","config":{{"connector.class":"elasticsearch","topics":"t","connection.url":"http://es:9200"}}}}"#
            ))
            .unwrap_err();
            assert!(err.contains("name: must be non-empty"), "{name}: {err}");
        }
    }

    #[test]
    fn a_regex_matches_whole_topic_names_only() {
        let re = |r: &str| Subscription::Regex(r.into());
        assert!(re("inventory").matches("inventory"));
        assert!(!re("inventory").matches("inventory.customers"));
        assert!(!re("a|b").matches("xb"));
        assert!(re("a|b").matches("b"));
        assert!(re(r"^db1\.inv\..*$").matches("db1.inv.orders"));
        assert!(!re(r"db1\.inv\..*").matches("x.db1.inv.orders"));
        assert!(re("^a|b$").matches("a") && re("^a|b$").matches("b"));
        assert!(!re("^a|b$").matches("ab"));
        // Java's syntax where the `regex` crate shares it (librdkafka's POSIX one does not).
        assert!(re(r"db\d+\.(?:orders|items)").matches("db12.items"));
        assert!(re(r"price\$").matches("price$"));
    }

    #[test]
    fn the_dead_letter_queue_may_not_be_a_topic_the_connector_reads() {
        let with = |subscription: &str| {
            spec(&format!(
                r#"{{"name":"x","config":{{"connector.class":"elasticsearch","connection.url":"http://es:9200",
                   {subscription},"errors.tolerance":"all","errors.deadletterqueue.topic.name":"inventory-dlq"}}}}"#
            ))
        };
        for own in [
            r#""topics":"a,inventory-dlq""#,
            r#""topics.regex":"inventory.*""#,
        ] {
            let err = with(own).unwrap_err();
            assert!(
                err.contains("errors.deadletterqueue.topic.name: `inventory-dlq` is a topic the connector reads"),
                "{err}"
            );
        }
        assert!(with(r#""topics":"inventory""#).is_ok());
        assert!(with(r#""topics.regex":"inventory\\.[a-z]+""#).is_ok());
    }

    #[test]
    fn flush_timeout_must_fit_in_the_poll_interval() {
        let err = spec(
            r#"{"name":"x","config":{"connector.class":"elasticsearch","topics":"t","connection.url":"http://es:9200",
               "flush.timeout.ms":"60000","consumer.override.max.poll.interval.ms":"30000"}}"#,
        )
        .unwrap_err();
        assert!(
            err.contains(
                "flush.timeout.ms: 60000 ms must be at most max.poll.interval.ms (30000 ms) less heartbeat.interval.ms (3000 ms) and 10 s, 17000 ms"
            ),
            "{err}"
        );
        // Below max.poll.interval.ms is not enough: the revocation's own slack must fit too.
        let err = spec(
            r#"{"name":"x","config":{"connector.class":"elasticsearch","topics":"t","connection.url":"http://es:9200",
               "flush.timeout.ms":"299000","consumer.override.heartbeat.interval.ms":"1000"}}"#,
        )
        .unwrap_err();
        assert!(err.contains("289000 ms"), "{err}");
        assert!(
            spec(r#"{"name":"x","config":{"connector.class":"elasticsearch","topics":"t","connection.url":"http://es:9200",
                "flush.timeout.ms":"289000","consumer.override.heartbeat.interval.ms":"1000"}}"#)
                .is_ok()
        );
        assert!(
            spec(r#"{"name":"x","config":{"connector.class":"elasticsearch","topics":"t","connection.url":"http://es:9200"}}"#)
                .is_ok()
        );
    }

    #[test]
    fn a_connectors_name_is_trimmed_as_kafka_connect_trims_it() {
        let c = ConnectorConfig::from_json(r#"{"name":"  x ","config":{"topics":"t"}}"#).unwrap();
        assert_eq!((c.name.as_str(), c.config["name"].as_str()), ("x", "x"));
    }

    #[test]
    fn a_connector_file_must_be_an_object() {
        let e = ConnectorConfig::from_json(r#" ["x", {"topics": "t"}]"#).unwrap_err();
        assert!(e.to_string().contains("it is not a JSON object"), "{e}");
    }

    #[test]
    fn an_error_never_shows_what_a_placeholder_gave() {
        let dir = std::env::temp_dir().join(format!("cdc-sink-secret-{}", std::process::id()));
        std::fs::write(&dir, "-----BEGIN PRIVATE KEY-----\nMIIEv").unwrap();
        let path = dir.to_string_lossy();
        let config = ConnectorConfig::from_json(&format!(
            r#"{{"name":"x","config":{{"connector.class":"elasticsearch","topics":"t","connection.url":"${{file:{path}}}","batch.size":"${{file:{path}}}"}}}}"#
        ))
        .unwrap();
        let err = ConnectorSpec::validate(&config).unwrap_err().to_string();
        let _ = std::fs::remove_file(&dir);
        assert!(!err.contains("PRIVATE"), "{err}");
        assert!(!err.contains("MIIEv"), "{err}");
        assert!(
            err.contains(&format!(
                "connection.url: the value `${{file:{path}}}` gives is not valid here"
            )),
            "{err}"
        );
        assert!(err.contains("batch.size: the value"), "{err}");
        // What says nothing of the value is kept.
        let unknown = ConnectorConfig::from_json(&format!(
            r#"{{"name":"x","config":{{"connector.class":"elasticsearch","topics":"t","connection.url":"http://es:9200","no.such.key":"${{file:{path}}}"}}}}"#
        ))
        .unwrap();
        std::fs::write(&dir, "-----BEGIN PRIVATE KEY-----\nMIIEv").unwrap();
        let err = ConnectorSpec::validate(&unknown).unwrap_err().to_string();
        let _ = std::fs::remove_file(&dir);
        assert_eq!(err, "no.such.key: unknown option");
        // A regular expression's parse error quotes the pattern line by line, trimmed.
        for pattern in ["MIIEv\n(", "MIIEv(  "] {
            std::fs::write(&dir, pattern).unwrap();
            let regex = ConnectorConfig::from_json(&format!(
                r#"{{"name":"x","config":{{"connector.class":"elasticsearch","topics.regex":"${{file:{path}}}","connection.url":"http://es:9200"}}}}"#
            ))
            .unwrap();
            let err = ConnectorSpec::validate(&regex).unwrap_err().to_string();
            let _ = std::fs::remove_file(&dir);
            assert!(!err.contains("MIIEv"), "{err}");
            assert!(err.starts_with("topics.regex: the value"), "{err}");
        }
        // Another key's error quoting one item of a list a placeholder is part of.
        std::fs::write(&dir, "Secret-Topic").unwrap();
        for extra in [
            format!(r#""topics":"${{file:{path}}},zzz","index.name":"x""#),
            format!(r#""topics.regex":".*","topic.index.map":"a:${{file:{path}}}""#),
        ] {
            let listed = ConnectorConfig::from_json(&format!(
                r#"{{"name":"x","config":{{"connector.class":"elasticsearch","connection.url":"http://es:9200","snapshot.reconcile":"true",{extra}}}}}"#
            ))
            .unwrap();
            let err = ConnectorSpec::validate(&listed).unwrap_err().to_string();
            assert!(err.starts_with("snapshot.reconcile:"), "{err}");
            assert!(!err.to_lowercase().contains("secret-topic"), "{err}");
        }
        let _ = std::fs::remove_file(&dir);
        // What placeholders give in all is bounded: one file of 1 MiB given 90 000 times
        // asked for 90 GiB.
        std::fs::write(&dir, "x".repeat(1 << 19)).unwrap();
        let many: Vec<String> = (0..9)
            .map(|i| format!(r#""k{i}":"${{file:{path}}}""#))
            .collect();
        let big = ConnectorConfig::from_json(&format!(
            r#"{{"name":"x","config":{{"connector.class":"elasticsearch",{}}}}}"#,
            many.join(",")
        ))
        .unwrap();
        let err = big.resolve_placeholders().unwrap_err().to_string();
        let _ = std::fs::remove_file(&dir);
        assert!(err.contains("give more than 4 MiB in all"), "{err}");
    }

    #[test]
    fn client_overrides_urls_and_bounds_are_checked_when_the_config_is() {
        let es = |extra: &str| {
            spec(&format!(
                r#"{{"name":"x","config":{{"connector.class":"elasticsearch","topics":"t","connection.url":"http://es:9200"{extra}}}}}"#
            ))
        };
        // librdkafka's names and values, refused here rather than when a task starts.
        assert!(es(r#","consumer.override.fetch.min.bytes":"1""#).is_ok());
        let err = es(r#","consumer.override.max.poll.records":"500""#).unwrap_err();
        assert!(
            err.starts_with("consumer.override.max.poll.records: librdkafka refuses it"),
            "{err}"
        );
        let err = es(r#","consumer.override.session.timeout.ms":"soon""#).unwrap_err();
        assert!(
            err.starts_with("consumer.override.session.timeout.ms: librdkafka refuses it"),
            "{err}"
        );
        let druid = spec(
            r#"{"name":"d","config":{"connector.class":"druid","topics":"t","producer.override.linger":"5"}}"#,
        )
        .unwrap_err();
        assert!(
            druid.starts_with("producer.override.linger: librdkafka refuses it"),
            "{druid}"
        );
        // The Elasticsearch connector's go to its dead-letter producer, checked the same way.
        let err = es(r#","producer.override.linger":"5""#).unwrap_err();
        assert!(
            err.starts_with("producer.override.linger: librdkafka refuses it"),
            "{err}"
        );
        let err = es(r#","producer.override.acks":"1""#).unwrap_err();
        assert!(
            err.starts_with("producer.override.acks: is set by cdc-sink"),
            "{err}"
        );
        assert!(es(r#","producer.override.compression.type":"zstd""#).is_ok());
        // Bounds: a lane per request in flight is allocated up front; hours overflowed.
        let err = es(r#","max.in.flight.requests":"100000000""#).unwrap_err();
        assert_eq!(
            err,
            "max.in.flight.requests: must be at most 1000, got 100000000"
        );
        assert!(es(r#","rebuild.retain.hours":"5124095576030433""#).is_err());
        // A URL that does not parse is named at validation, a placeholder's value hidden.
        let dir = std::env::temp_dir().join(format!("cdc-sink-pw-{}", std::process::id()));
        std::fs::write(&dir, "p/ss").unwrap();
        let config = ConnectorConfig::from_json(&format!(
            r#"{{"name":"x","config":{{"connector.class":"elasticsearch","topics":"t","connection.url":"https://elastic:${{file:{}}}@es:9200"}}}}"#,
            dir.display()
        ))
        .unwrap();
        let err = ConnectorSpec::validate(&config).unwrap_err().to_string();
        let _ = std::fs::remove_file(&dir);
        assert!(err.starts_with("connection.url: "), "{err}");
        assert!(!err.contains("p/ss"), "{err}");
    }

    #[test]
    fn options_kept_for_the_confluent_sink_are_checked_not_ignored() {
        let es = |extra: &str| {
            spec(&format!(
                r#"{{"name":"x","config":{{"connector.class":"elasticsearch","topics":"t","connection.url":"http://es:9200"{extra}}}}}"#
            ))
        };
        assert!(es(r#","schema.ignore":"false","compact.map.entries":"true""#).is_ok());
        assert_eq!(
            es(r#","schema.ignore":"ture""#).unwrap_err(),
            "schema.ignore: `ture` is not true or false"
        );
        assert_eq!(
            es(r#","compact.map.entries":"false""#).unwrap_err(),
            "compact.map.entries: only true is supported: maps are written as JSON objects"
        );
        let key = |field: &str, version: &str| {
            es(&format!(
                r#","transforms":"k","transforms.k.type":"org.apache.kafka.connect.transforms.ExtractField$Key","transforms.k.field":"{field}","transforms.k.field.syntax.version":"{version}""#
            ))
        };
        assert!(key("id", "V2").is_ok());
        assert!(key("a.b", "V1").is_ok());
        let err = key("a.b", "V2").unwrap_err();
        assert!(err.contains("nested fields"), "{err}");
        assert!(key("id", "V3").is_err());
    }

    #[test]
    fn placeholders_resolve_and_secrets_are_hidden() {
        // SAFETY: tests in this module do not read this variable concurrently.
        unsafe { std::env::set_var("CDCSINK_TEST_PW", "s3cret") };
        let c = ConnectorConfig::from_json(
            r#"{"name":"x","config":{"connection.password":"${env:CDCSINK_TEST_PW}","index.name":"${topic}"}}"#,
        )
        .unwrap();
        let r = c.resolve_placeholders().unwrap();
        assert_eq!(r.config["connection.password"], "s3cret");
        assert_eq!(r.config["index.name"], "${topic}");
        assert_eq!(c.redacted()["connection.password"], "[hidden]");
        assert!(format!("{c:?}").contains(r#""connection.password": "[hidden]""#));
        assert!(!format!("{r:?}").contains("s3cret"), "{r:?}");
        let missing =
            ConnectorConfig::from_json(r#"{"name":"x","config":{"a":"${env:CDCSINK_NOPE}"}}"#)
                .unwrap();
        assert_eq!(
            missing.resolve_placeholders().unwrap_err().to_string(),
            "a: environment variable `CDCSINK_NOPE` is not set"
        );
    }

    #[test]
    fn a_key_separator_starting_with_the_escape_is_refused() {
        for (class, url) in [
            ("elasticsearch", r#""connection.url":"http://es:9200","#),
            ("druid", ""),
        ] {
            let with = |sep: &str| {
                spec(&format!(
                    r#"{{"name":"k","config":{{"connector.class":"{class}","topics":"t",{url}"key.separator":"{sep}"}}}}"#
                ))
            };
            let Err(err) = with("\\\\") else {
                panic!("{class}: a separator `\\` was taken");
            };
            assert!(err.contains("key.separator: must not start with"), "{err}");
            assert!(with("\\\\|").is_err());
            assert!(with("::").is_ok(), "{class}");
        }
    }

    /// One `group.instance.id` for every task would have Kafka fence all but one.
    #[test]
    fn a_static_member_id_for_every_task_is_refused() {
        let with = |extra: &str| {
            spec(&format!(
                r#"{{"name":"g","config":{{"connector.class":"elasticsearch","topics":"t","connection.url":"http://es:9200"{extra}}}}}"#
            ))
        };
        let Err(err) = with(r#","consumer.override.group.instance.id":"sink-1""#) else {
            panic!("a static member id for every task was taken");
        };
        assert!(
            err.contains("consumer.override.group.instance.id: would be one static member id"),
            "{err}"
        );
        assert!(with(r#","consumer.override.session.timeout.ms":"30000""#).is_ok());
    }

    #[test]
    fn reconciliation_is_on_only_where_an_index_holds_one_topic() {
        let es = |extra: &str| {
            spec(&format!(
                r#"{{"name":"r","config":{{"connector.class":"elasticsearch","topics":"a,b","connection.url":"http://es:9200"{extra}}}}}"#
            ))
        };
        let reconcile = |extra: &str| {
            let SinkSpec::Elasticsearch(c) = es(extra).unwrap().sink else {
                panic!("not an Elasticsearch connector");
            };
            c.reconcile
        };
        assert!(reconcile(""));
        assert!(reconcile(r#","index.name":"cdc-${topic}""#));
        assert!(!reconcile(r#","index.name":"all""#));
        assert!(!reconcile(r#","topic.index.map":"a:x,b:x""#));
        // A map's target that an unmapped topic writes too, or two names differing in case.
        assert!(reconcile(r#","topic.index.map":"a:x""#));
        let Err(err) = es(r#","topic.index.map":"b:a","snapshot.reconcile":"true""#) else {
            panic!("a map onto another topic's index was taken");
        };
        assert!(
            err.contains("topics `a` and `b` both write index `a`"),
            "{err}"
        );
        let pair = |extra: &str| {
            spec(&format!(
                r#"{{"name":"r","config":{{"connector.class":"elasticsearch","connection.url":"http://es:9200"{extra}}}}}"#
            ))
            .map(|s| matches!(s.sink, SinkSpec::Elasticsearch(c) if c.reconcile))
        };
        assert_eq!(pair(r#","topics":"Orders,orders""#), Ok(false));
        assert_eq!(
            pair(
                r#","topics":"s1.t,s2.t","index.name":"cdc-${topic}","topic.index.map":"s2.t:cdc-s1.t""#
            ),
            Ok(false)
        );
        // With topics.regex: a target some matching topic (in any case) would write.
        let regex = |r: &str, extra: &str| pair(&format!(r#","topics.regex":"{r}"{extra}"#));
        assert_eq!(
            regex("s[12]\\\\.t", r#","topic.index.map":"s2.t:s1.t""#),
            Ok(false)
        );
        assert_eq!(
            regex("S1\\\\.T|s2\\\\.t", r#","topic.index.map":"s2.t:s1.t""#),
            Ok(false)
        );
        // A map entry of a topic the expression does not read writes nothing.
        assert_eq!(
            regex("S[12]\\\\.T", r#","topic.index.map":"s2.t:s1.t""#),
            Ok(true)
        );
        assert_eq!(
            regex("s[12]\\\\.t", r#","topic.index.map":"s2.t:merged""#),
            Ok(true)
        );
        assert_eq!(
            regex(
                "s.*",
                r#","index.name":"cdc-${topic}","topic.index.map":"s2:cdc-s1""#
            ),
            Ok(false)
        );
        assert_eq!(
            regex(
                "s.*",
                r#","index.name":"cdc-${topic}","topic.index.map":"s2:s1""#
            ),
            Ok(true)
        );
        // An index from `source` fields beside a map: the targets may meet any of them.
        assert_eq!(
            pair(
                r#","topics":"s1.t,s2.t","index.name":"${topic}_${table}","topic.index.map":"s2.t:s1.t_customers""#
            ),
            Ok(false)
        );
        assert_eq!(
            pair(r#","topics":"s1.t,s2.t","index.name":"${topic}_${table}""#),
            Ok(true)
        );
        assert!(!reconcile(r#","behavior.on.malformed.documents":"warn""#));
        assert!(!reconcile(r#","version.source":"offset""#));
        assert!(!reconcile(r#","snapshot.reconcile":"false""#));
        let err = es(r#","snapshot.reconcile":"true","index.name":"all""#).unwrap_err();
        assert!(err.contains("snapshot.reconcile"), "{err}");
    }
}
