//! Debezium records in Avro, as Confluent's AvroConverter writes them, made from the same
//! records in JSON with schema: the Connect schema becomes an Avro schema (`connect.name`,
//! `connect.parameters`, logical types, optional fields as unions with null), the payload an
//! Avro datum encoded by apache-avro, framed with the magic byte and the schema id.

use std::collections::HashSet;

use apache_avro::types::Value as Avro;
use base64::Engine as _;
use serde_json::{Map, Value, json};

/// Avro names allow `[A-Za-z0-9_]`; Connect names are dotted and may hold anything.
fn avro_name(connect: &str) -> (String, String) {
    let clean = |s: &str| {
        let s: String = s
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if s.starts_with(|c: char| c.is_ascii_digit()) {
            format!("_{s}")
        } else {
            s
        }
    };
    match connect.rsplit_once('.') {
        Some((ns, name)) => (
            ns.split('.').map(clean).collect::<Vec<_>>().join("."),
            clean(name),
        ),
        None => (String::new(), clean(connect)),
    }
}

/// The Avro schema AvroConverter makes of a Connect schema (JsonConverter's `"schema"` block).
pub fn schema(connect: &Value) -> Value {
    let mut defined = HashSet::new();
    let mut unnamed = 0;
    convert(connect, &mut defined, &mut unnamed)
}

fn convert(s: &Value, defined: &mut HashSet<String>, unnamed: &mut usize) -> Value {
    let base = non_optional(s, defined, unnamed);
    if s["optional"].as_bool().unwrap_or(false) {
        json!(["null", base])
    } else {
        base
    }
}

fn non_optional(s: &Value, defined: &mut HashSet<String>, unnamed: &mut usize) -> Value {
    let ty = s["type"].as_str().unwrap_or("");
    let name = s["name"].as_str();
    let mut out = Map::new();
    let avro_ty = match ty {
        "int8" | "int16" | "int32" => "int",
        "int64" => "long",
        "float" | "float32" => "float",
        "double" | "float64" => "double",
        "boolean" => "boolean",
        "string" => "string",
        "bytes" => "bytes",
        "array" => {
            out.insert("type".into(), json!("array"));
            out.insert("items".into(), convert(&s["items"], defined, unnamed));
            return Value::Object(out);
        }
        "map" => {
            out.insert("type".into(), json!("map"));
            out.insert("values".into(), convert(&s["values"], defined, unnamed));
            return Value::Object(out);
        }
        "struct" => {
            let connect_name = name.map(String::from).unwrap_or_else(|| {
                *unnamed += 1;
                format!("io.confluent.connect.avro.ConnectDefault{unnamed}")
            });
            let (ns, short) = avro_name(&connect_name);
            let full = if ns.is_empty() {
                short.clone()
            } else {
                format!("{ns}.{short}")
            };
            if !defined.insert(full.clone()) {
                return json!(full);
            }
            let fields: Vec<Value> = s["fields"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    let t = convert(f, defined, unnamed);
                    let mut field = json!({"name": f["field"], "type": t});
                    if f["optional"].as_bool().unwrap_or(false) {
                        field["default"] = Value::Null;
                    }
                    field
                })
                .collect();
            let mut r = json!({"type": "record", "name": short, "fields": fields});
            if !ns.is_empty() {
                r["namespace"] = json!(ns);
            }
            if name.is_some() {
                r["connect.name"] = json!(connect_name);
            }
            return r;
        }
        other => panic!("Connect type {other} has no Avro translation here"),
    };
    out.insert("type".into(), json!(avro_ty));
    if matches!(ty, "int8" | "int16") {
        out.insert("connect.type".into(), json!(ty));
    }
    if let Some(n) = name {
        out.insert("connect.version".into(), json!(1));
        if let Some(p) = s.get("parameters").filter(|p| p.is_object()) {
            out.insert("connect.parameters".into(), p.clone());
        }
        out.insert("connect.name".into(), json!(n));
        match n {
            "org.apache.kafka.connect.data.Decimal" => {
                let scale: i64 = s["parameters"]["scale"]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let precision: i64 = s["parameters"]["connect.decimal.precision"]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(64);
                out.insert("scale".into(), json!(scale));
                out.insert("precision".into(), json!(precision));
                out.insert("logicalType".into(), json!("decimal"));
            }
            "org.apache.kafka.connect.data.Date" => {
                out.insert("logicalType".into(), json!("date"));
            }
            "org.apache.kafka.connect.data.Time" => {
                out.insert("logicalType".into(), json!("time-millis"));
            }
            "org.apache.kafka.connect.data.Timestamp" => {
                out.insert("logicalType".into(), json!("timestamp-millis"));
            }
            _ => {}
        }
    }
    if out.len() == 1 {
        // A plain primitive is written as its name, as AvroConverter does.
        return json!(avro_ty);
    }
    Value::Object(out)
}

/// The Avro value of JSON payload `v` under Avro schema `s` (as [`schema`] makes them).
pub fn value(v: &Value, s: &Value, named: &Map<String, Value>) -> Avro {
    match s {
        Value::String(name) => match name.as_str() {
            "null" => Avro::Null,
            "int" => Avro::Int(v.as_i64().unwrap() as i32),
            "long" => Avro::Long(v.as_i64().unwrap()),
            "float" => Avro::Float(v.as_f64().unwrap() as f32),
            "double" => Avro::Double(v.as_f64().unwrap()),
            "boolean" => Avro::Boolean(v.as_bool().unwrap()),
            "string" => Avro::String(v.as_str().unwrap().to_string()),
            "bytes" => Avro::Bytes(
                base64::engine::general_purpose::STANDARD
                    .decode(v.as_str().unwrap())
                    .unwrap(),
            ),
            other => value(
                v,
                named
                    .get(other)
                    .unwrap_or_else(|| panic!("unknown Avro type {other}")),
                named,
            ),
        },
        Value::Array(branches) => {
            if v.is_null() {
                let i = branches
                    .iter()
                    .position(|b| b == "null")
                    .expect("a null branch");
                Avro::Union(i as u32, Box::new(Avro::Null))
            } else {
                let i = branches.iter().position(|b| b != "null").unwrap();
                Avro::Union(i as u32, Box::new(value(v, &branches[i], named)))
            }
        }
        Value::Object(o) => match o["type"].as_str().unwrap() {
            "record" => Avro::Record(
                o["fields"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| {
                        let name = f["name"].as_str().unwrap();
                        (
                            name.to_string(),
                            value(v.get(name).unwrap_or(&Value::Null), &f["type"], named),
                        )
                    })
                    .collect(),
            ),
            "array" => Avro::Array(
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|i| value(i, &o["items"], named))
                    .collect(),
            ),
            "map" => Avro::Map(
                v.as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, i)| (k.clone(), value(i, &o["values"], named)))
                    .collect(),
            ),
            prim => {
                let inner = value(v, &json!(prim), named);
                match (o.get("logicalType").and_then(Value::as_str), inner) {
                    (Some("decimal"), Avro::Bytes(b)) => {
                        Avro::Decimal(apache_avro::Decimal::from(b))
                    }
                    (Some("date"), Avro::Int(d)) => Avro::Date(d),
                    (Some("time-millis"), Avro::Int(t)) => Avro::TimeMillis(t),
                    (Some("timestamp-millis"), Avro::Long(t)) => Avro::TimestampMillis(t),
                    (_, inner) => inner,
                }
            }
        },
        other => panic!("not an Avro schema: {other}"),
    }
}

/// Every named record of an Avro schema, by full name and by short name.
pub fn names(s: &Value, out: &mut Map<String, Value>) {
    match s {
        Value::Array(a) => a.iter().for_each(|b| names(b, out)),
        Value::Object(o) => {
            if o.get("type") == Some(&json!("record")) {
                let short = o["name"].as_str().unwrap().to_string();
                let full = match o.get("namespace").and_then(Value::as_str) {
                    Some(ns) => format!("{ns}.{short}"),
                    None => short.clone(),
                };
                out.insert(full, s.clone());
                out.insert(short, s.clone());
                for f in o["fields"].as_array().unwrap() {
                    names(&f["type"], out);
                }
            }
            for k in ["items", "values"] {
                if let Some(i) = o.get(k) {
                    names(i, out);
                }
            }
        }
        _ => {}
    }
}

/// Confluent framing: magic byte 0, the schema id (big-endian), the Avro datum of `payload`.
pub fn encode(id: u32, avro_schema: &Value, payload: &Value) -> Vec<u8> {
    let parsed =
        apache_avro::Schema::parse(avro_schema).unwrap_or_else(|e| panic!("{e}: {avro_schema}"));
    let mut named = Map::new();
    names(avro_schema, &mut named);
    let datum = apache_avro::writer::datum::GenericDatumWriter::builder(&parsed)
        .build()
        .unwrap()
        .write_value_to_vec(value(payload, avro_schema, &named))
        .unwrap_or_else(|e| panic!("{e}: {payload}"));
    let mut out = vec![0];
    out.extend(id.to_be_bytes());
    out.extend(datum);
    out
}

/// A Debezium JSON record with schema (`{"schema", "payload"}`) in Avro, its schema registered
/// in `registry` under `subject`.
pub fn from_json_record(
    registry: &super::registry::Registry,
    subject: &str,
    json_record: &str,
) -> Vec<u8> {
    let v: Value = serde_json::from_str(json_record).unwrap();
    let avro_schema = schema(&v["schema"]);
    let id = registry.register(subject, &avro_schema.to_string());
    encode(id, &avro_schema, &v["payload"])
}

/// A schema registered once: its id, its Avro JSON, parsed, and its named types.
type Registered = (u32, Value, apache_avro::Schema, Map<String, Value>);

/// A JSON record with schema, its schema left as text: the cache below is keyed by that text.
/// (Parsing each record's schema and printing it again for the key had been over half of the
/// encoding's CPU, in tests that encode tens of thousands of records.)
#[derive(serde::Deserialize)]
struct WithSchema<'a> {
    #[serde(borrow)]
    schema: &'a serde_json::value::RawValue,
    payload: Value,
}

/// Turns JSON records with schema into Avro records, registering each distinct schema once.
pub struct Encoder<'r> {
    registry: &'r super::registry::Registry,
    /// By subject, then by the Connect schema's text.
    cache: std::collections::HashMap<String, std::collections::HashMap<String, Registered>>,
    /// Register a new version of each schema (a `doc` added), as after a schema change.
    pub next_version: bool,
}

impl<'r> Encoder<'r> {
    pub fn new(registry: &'r super::registry::Registry) -> Encoder<'r> {
        Encoder {
            registry,
            cache: Default::default(),
            next_version: false,
        }
    }

    /// Records of `topic` (keys and values JSON with schema) in Avro, subjects `<topic>-key`
    /// and `<topic>-value`.
    pub fn records(
        &mut self,
        topic: &str,
        records: &[super::kafka::Rec],
    ) -> Vec<super::kafka::Rec<Vec<u8>>> {
        records
            .iter()
            .map(|r| super::kafka::Rec {
                partition: r.partition,
                key: r
                    .key
                    .as_ref()
                    .map(|k| self.record(&format!("{topic}-key"), k)),
                value: r
                    .value
                    .as_ref()
                    .map(|v| self.record(&format!("{topic}-value"), v)),
            })
            .collect()
    }

    pub fn record(&mut self, subject: &str, json_record: &str) -> Vec<u8> {
        let v: WithSchema = serde_json::from_str(json_record).unwrap();
        if !self.cache.contains_key(subject) {
            self.cache.insert(subject.to_string(), Default::default());
        }
        let by_schema = self.cache.get_mut(subject).unwrap();
        if !by_schema.contains_key(v.schema.get()) {
            let mut avro_schema = schema(&serde_json::from_str(v.schema.get()).unwrap());
            if self.next_version {
                avro_schema["doc"] = json!("version 2");
            }
            let id = self.registry.register(subject, &avro_schema.to_string());
            let parsed = apache_avro::Schema::parse(&avro_schema).unwrap();
            let mut named = Map::new();
            names(&avro_schema, &mut named);
            by_schema.insert(v.schema.get().to_string(), (id, avro_schema, parsed, named));
        }
        let (id, avro_schema, parsed, named) = &by_schema[v.schema.get()];
        let datum = apache_avro::writer::datum::GenericDatumWriter::builder(parsed)
            .build()
            .unwrap()
            .write_value_to_vec(value(&v.payload, avro_schema, named))
            .unwrap();
        let mut out = vec![0];
        out.extend(id.to_be_bytes());
        out.extend(datum);
        out
    }
}
