//! An Avro writer schema compiled into a decode plan: what to read, in order, and what each
//! value becomes in the document.
//!
//! apache-avro parses and validates the schema, but its model keeps no custom attributes on
//! primitive types, and Debezium names its semantic types exactly there
//! (`{"type": "int", "connect.name": "io.debezium.time.Date"}`). So the plan is compiled from
//! the schema's JSON, with Avro's naming rules for references.

use std::cell::Cell;
use std::collections::HashMap;

use serde_json::{Map, Value as Json};

use crate::decode::schema::{Conv, semantic_conv};
use crate::decode::semantic::TimeUnit;

/// One value to read and how to write it.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub node: Node,
    pub conv: Conv,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Fixed(usize),
    /// The symbols, each already a JSON string.
    Enum(Vec<String>),
    Array(Box<Plan>),
    Map(Box<Plan>),
    Record {
        /// Full name (or `connect.name`).
        name: String,
        fields: Vec<Field>,
    },
    Union(Vec<Plan>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    /// `"name":` as JSON, ready to copy into the document.
    pub key: Vec<u8>,
    pub plan: Plan,
}

impl Plan {
    fn keep(node: Node) -> Plan {
        Plan {
            node,
            conv: Conv::Keep,
        }
    }

    /// The record's fields when this is a record.
    pub fn fields(&self) -> Option<&[Field]> {
        match &self.node {
            Node::Record { fields, .. } => Some(fields),
            _ => None,
        }
    }

    /// The record's name when this is a record.
    pub fn name(&self) -> Option<&str> {
        match &self.node {
            Node::Record { name, .. } => Some(name),
            _ => None,
        }
    }
}

/// Compiles `schema` (Avro schema JSON, as a registry returns it).
pub fn compile(schema: &str) -> Result<Plan, String> {
    apache_avro::Schema::parse_str(schema).map_err(|e| format!("not a valid Avro schema: {e}"))?;
    let json: Json =
        serde_json::from_str(schema).map_err(|e| format!("not a valid Avro schema: {e}"))?;
    let mut names = HashMap::new();
    collect(&json, "", &mut names);
    build(&json, "", &names, 0, &Budget::default())
}

/// Full name of a named type defined by `obj` inside namespace `ns`, and its own namespace.
fn fullname(obj: &Map<String, Json>, ns: &str) -> (String, String) {
    let name = obj.get("name").and_then(Json::as_str).unwrap_or("");
    if let Some((space, _)) = name.rsplit_once('.') {
        return (name.to_string(), space.to_string());
    }
    let space = obj
        .get("namespace")
        .and_then(Json::as_str)
        .unwrap_or(ns)
        .to_string();
    let full = if space.is_empty() {
        name.to_string()
    } else {
        format!("{space}.{name}")
    };
    (full, space)
}

/// Every named type (record, enum, fixed) by full name.
fn collect<'a>(v: &'a Json, ns: &str, names: &mut HashMap<String, (&'a Json, String)>) {
    match v {
        Json::Array(branches) => branches.iter().for_each(|b| collect(b, ns, names)),
        Json::Object(obj) => {
            let ty = obj.get("type");
            match ty.and_then(Json::as_str) {
                Some("record" | "error" | "enum" | "fixed") => {
                    let (full, space) = fullname(obj, ns);
                    names.insert(full, (v, space.clone()));
                    for f in obj
                        .get("fields")
                        .and_then(Json::as_array)
                        .into_iter()
                        .flatten()
                    {
                        if let Some(t) = f.get("type") {
                            collect(t, &space, names);
                        }
                    }
                }
                Some("array") => obj
                    .get("items")
                    .into_iter()
                    .for_each(|i| collect(i, ns, names)),
                Some("map") => obj
                    .get("values")
                    .into_iter()
                    .for_each(|i| collect(i, ns, names)),
                _ => ty.into_iter().for_each(|t| collect(t, ns, names)),
            }
        }
        _ => {}
    }
}

fn primitive(name: &str) -> Option<Node> {
    Some(match name {
        "null" => Node::Null,
        "boolean" => Node::Boolean,
        "int" => Node::Int,
        "long" => Node::Long,
        "float" => Node::Float,
        "double" => Node::Double,
        "bytes" => Node::Bytes,
        "string" => Node::String,
        _ => return None,
    })
}

/// The scale of a valid Avro `decimal` on `wire` (`bytes` or `fixed`). The specification
/// makes one invalid, to be read as its underlying type, when its precision is missing or not
/// positive, its scale (0 when left out) negative or above the precision, or a `fixed` too small
/// for the precision: at most ⌊log10(2^(8·size−1) − 1)⌋ digits.
fn decimal_scale(obj: &Map<String, Json>, wire: &str) -> Option<i32> {
    let precision = obj.get("precision")?.as_i64().filter(|p| *p > 0)?;
    let scale = match obj.get("scale") {
        None => 0,
        Some(s) => s.as_i64().and_then(|s| i32::try_from(s).ok())?,
    };
    if scale < 0 || i64::from(scale) > precision {
        return None;
    }
    if wire == "fixed" {
        let size = obj.get("size")?.as_u64()?;
        // 2^k is never a power of ten (k > 0), so the floor of k·log10(2) is that of
        // log10(2^k − 1); a size of 0 gives −1 digits, too few for any precision.
        let digits = ((size as f64 * 8.0 - 1.0) * std::f64::consts::LOG10_2).floor() as i64;
        if precision > digits {
            return None;
        }
    }
    Some(scale)
}

/// What an annotated type decodes to: Debezium/Connect's `connect.name` first, then Avro's
/// `logicalType`.
fn conv_of(obj: &Map<String, Json>, wire: &str, connect_name: Option<&str>) -> Conv {
    let params = obj.get("connect.parameters").and_then(Json::as_object);
    // A Connect Decimal's scale is in `connect.parameters`, and also Avro's own `scale`.
    let param = |k: &str| -> Option<String> {
        params
            .and_then(|p| p.get(k))
            .or_else(|| obj.get(k).filter(|_| k == "scale"))
            .map(|v| v.as_str().map_or_else(|| v.to_string(), String::from))
    };
    if let Some(c) = semantic_conv(connect_name, wire, &param) {
        return c;
    }
    match obj.get("logicalType").and_then(Json::as_str) {
        Some("decimal") if matches!(wire, "bytes" | "fixed") => match decimal_scale(obj, wire) {
            Some(scale) => Conv::Decimal { scale },
            None => Conv::Keep,
        },
        Some("date") if wire == "int" => Conv::Date,
        Some("time-millis") if wire == "int" => Conv::Time(TimeUnit::Millis),
        Some("time-micros") if wire == "long" => Conv::Time(TimeUnit::Micros),
        Some("timestamp-millis" | "local-timestamp-millis") if wire == "long" => {
            Conv::Timestamp(TimeUnit::Millis)
        }
        Some("timestamp-micros" | "local-timestamp-micros") if wire == "long" => {
            Conv::Timestamp(TimeUnit::Micros)
        }
        Some("timestamp-nanos" | "local-timestamp-nanos") if wire == "long" => {
            Conv::Timestamp(TimeUnit::Nanos)
        }
        _ => Conv::Keep,
    }
}

/// The most types one schema's plan may hold. A named type is written out anew wherever it is
/// used, so a small schema whose records each use the next one twice would grow to 2^depth
/// types (a 2 KB schema, a billion): refused, as a schema the decoder cannot take, rather than
/// the worker running out of memory. Debezium's schemas hold a few hundred.
const MAX_NODES: usize = 100_000;

/// The most bytes of names and enum symbols one schema's plan may hold, for the same reason: a
/// large enum used in every field of records used over and over stays under [`MAX_NODES`] and
/// would still be copied tens of gigabytes' worth. Debezium's schemas hold a few kilobytes.
const MAX_NAME_BYTES: usize = 16 << 20;

/// What a plan being built has taken so far, against [`MAX_NODES`] and [`MAX_NAME_BYTES`].
#[derive(Default)]
struct Budget {
    nodes: Cell<usize>,
    bytes: Cell<usize>,
}

impl Budget {
    fn node(&self) -> Result<(), String> {
        self.nodes.set(self.nodes.get() + 1);
        if self.nodes.get() > MAX_NODES {
            return Err(format!(
                "the Avro schema expands to more than {MAX_NODES} types (named types used over and over): not supported"
            ));
        }
        Ok(())
    }

    fn bytes(&self, n: usize) -> Result<(), String> {
        self.bytes.set(self.bytes.get().saturating_add(n));
        if self.bytes.get() > MAX_NAME_BYTES {
            return Err(format!(
                "the Avro schema expands to more than {} MiB of names and symbols (named types used over and over): not supported",
                MAX_NAME_BYTES >> 20
            ));
        }
        Ok(())
    }
}

fn build(
    v: &Json,
    ns: &str,
    names: &HashMap<String, (&Json, String)>,
    depth: usize,
    budget: &Budget,
) -> Result<Plan, String> {
    if depth > 64 {
        return Err("recursive Avro schemas are not supported".into());
    }
    budget.node()?;
    match v {
        Json::String(s) => {
            if let Some(n) = primitive(s) {
                return Ok(Plan::keep(n));
            }
            let full = if s.contains('.') || ns.is_empty() {
                s.clone()
            } else {
                format!("{ns}.{s}")
            };
            let (def, space) = names
                .get(&full)
                .or_else(|| names.get(s.as_str()))
                .ok_or_else(|| format!("Avro schema refers to unknown type `{s}`"))?;
            build(def, space, names, depth + 1, budget)
        }
        Json::Array(branches) => {
            let plans = branches
                .iter()
                .map(|b| build(b, ns, names, depth + 1, budget))
                .collect::<Result<_, _>>()?;
            Ok(Plan::keep(Node::Union(plans)))
        }
        Json::Object(obj) => {
            let ty = obj.get("type").ok_or("Avro schema object without `type`")?;
            let connect_name = obj.get("connect.name").and_then(Json::as_str);
            let ty_name = match ty {
                Json::String(t) => t.as_str(),
                nested => return build(nested, ns, names, depth + 1, budget),
            };
            if let Some(node) = primitive(ty_name) {
                let conv = conv_of(obj, ty_name, connect_name);
                return Ok(Plan { node, conv });
            }
            match ty_name {
                "record" | "error" => {
                    let (full, space) = fullname(obj, ns);
                    budget.bytes(full.len())?;
                    let mut fields = Vec::new();
                    for f in obj
                        .get("fields")
                        .and_then(Json::as_array)
                        .ok_or("Avro record without `fields`")?
                    {
                        let name = f
                            .get("name")
                            .and_then(Json::as_str)
                            .ok_or("Avro field without `name`")?;
                        // Held twice: the name, and the key written before its value.
                        budget.bytes(2 * name.len() + 3)?;
                        let plan = build(
                            f.get("type").ok_or("Avro field without `type`")?,
                            &space,
                            names,
                            depth + 1,
                            budget,
                        )?;
                        let mut key = serde_json::to_vec(name).map_err(|e| e.to_string())?;
                        key.push(b':');
                        fields.push(Field {
                            name: name.to_string(),
                            key,
                            plan,
                        });
                    }
                    let name = connect_name.map_or(full, String::from);
                    let conv =
                        semantic_conv(Some(&name), "record", &|_| None).unwrap_or(Conv::Keep);
                    Ok(Plan {
                        node: Node::Record { name, fields },
                        conv,
                    })
                }
                "enum" => {
                    let symbols = obj
                        .get("symbols")
                        .and_then(Json::as_array)
                        .ok_or("Avro enum without `symbols`")?;
                    budget.bytes(
                        symbols
                            .iter()
                            .map(|s| s.as_str().map_or(0, str::len) + 2)
                            .sum(),
                    )?;
                    let symbols = symbols.iter().map(|s| s.to_string()).collect();
                    Ok(Plan::keep(Node::Enum(symbols)))
                }
                "array" => {
                    let items = build(
                        obj.get("items").ok_or("Avro array without `items`")?,
                        ns,
                        names,
                        depth + 1,
                        budget,
                    )?;
                    Ok(Plan::keep(Node::Array(Box::new(items))))
                }
                "map" => {
                    let values = build(
                        obj.get("values").ok_or("Avro map without `values`")?,
                        ns,
                        names,
                        depth + 1,
                        budget,
                    )?;
                    Ok(Plan::keep(Node::Map(Box::new(values))))
                }
                "fixed" => {
                    let size =
                        obj.get("size")
                            .and_then(Json::as_u64)
                            .ok_or("Avro fixed without `size`")? as usize;
                    Ok(Plan {
                        node: Node::Fixed(size),
                        conv: conv_of(obj, "fixed", connect_name),
                    })
                }
                other => build(
                    &Json::String(other.to_string()),
                    ns,
                    names,
                    depth + 1,
                    budget,
                ),
            }
        }
        other => Err(format!("not an Avro schema: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debezium_annotations_become_conversions() {
        let plan = compile(
            r#"{"type":"record","name":"Value","namespace":"db.inv.t","fields":[
                {"name":"id","type":"int"},
                {"name":"d","type":["null",{"type":"int","connect.version":1,"connect.name":"io.debezium.time.Date"}],"default":null},
                {"name":"p","type":{"type":"bytes","scale":2,"precision":10,"connect.version":1,
                  "connect.parameters":{"scale":"2","connect.decimal.precision":"10"},
                  "connect.name":"org.apache.kafka.connect.data.Decimal","logicalType":"decimal"}},
                {"name":"ts","type":{"type":"long","logicalType":"timestamp-micros"}},
                {"name":"e","type":{"type":"enum","name":"Mood","symbols":["sad","happy"]}},
                {"name":"again","type":["null","Mood"]}]}"#,
        )
        .unwrap();
        let f = plan.fields().unwrap();
        assert_eq!(plan.name(), Some("db.inv.t.Value"));
        assert_eq!(f[0].plan, Plan::keep(Node::Int));
        let Node::Union(d) = &f[1].plan.node else {
            panic!("union")
        };
        assert_eq!(d[1].conv, Conv::Date);
        assert_eq!(f[2].plan.conv, Conv::Decimal { scale: 2 });
        assert_eq!(f[3].plan.conv, Conv::Timestamp(TimeUnit::Micros));
        assert_eq!(
            f[4].plan.node,
            Node::Enum(vec!["\"sad\"".into(), "\"happy\"".into()])
        );
        let Node::Union(again) = &f[5].plan.node else {
            panic!("union")
        };
        assert_eq!(
            again[1].node, f[4].plan.node,
            "a named type is found by its short name"
        );
        assert_eq!(f[1].key, br#""d":"#);

        // Avro decimals: the scale 0 when left out; a scale that is not one (too large, or
        // negative, or above the precision), a precision missing or not positive, or a fixed
        // too small for the precision makes the logical type invalid, read as plain bytes; a
        // Connect Decimal takes Avro's own scale when its parameters leave it out.
        let typed = |ty: &str| {
            let plan = compile(&format!(
                r#"{{"type":"record","name":"r","fields":[{{"name":"v","type":{ty}}}]}}"#
            ))
            .unwrap();
            plan.fields().unwrap()[0].plan.conv.clone()
        };
        let decimal = |attrs: &str| {
            typed(&format!(
                r#"{{"type":"bytes","logicalType":"decimal","precision":10{attrs}}}"#
            ))
        };
        assert_eq!(decimal(""), Conv::Decimal { scale: 0 });
        assert_eq!(decimal(r#","scale":3"#), Conv::Decimal { scale: 3 });
        assert_eq!(decimal(r#","scale":10"#), Conv::Decimal { scale: 10 });
        assert_eq!(decimal(r#","scale":11"#), Conv::Keep);
        assert_eq!(decimal(r#","scale":4294967298"#), Conv::Keep);
        assert_eq!(decimal(r#","scale":-1"#), Conv::Keep);
        assert_eq!(
            decimal(r#","scale":2,"connect.name":"org.apache.kafka.connect.data.Decimal""#),
            Conv::Decimal { scale: 2 }
        );
        let bare = r#"{"type":"bytes","logicalType":"decimal""#;
        assert_eq!(typed(&format!("{bare}}}")), Conv::Keep);
        assert_eq!(typed(&format!(r#"{bare},"precision":0}}"#)), Conv::Keep);
        assert_eq!(typed(&format!(r#"{bare},"precision":"5"}}"#)), Conv::Keep);
        // A fixed of n bytes holds ⌊log10(2^(8n−1) − 1)⌋ digits: 2 for 1 byte (127), 4 for 2
        // (32767), 38 for 16.
        let fixed = |size: u32, precision: u32| {
            typed(&format!(
                r#"{{"type":"fixed","name":"f{size}_{precision}","size":{size},"logicalType":"decimal","precision":{precision},"scale":1}}"#
            ))
        };
        assert_eq!(fixed(1, 2), Conv::Decimal { scale: 1 });
        assert_eq!(fixed(1, 3), Conv::Keep);
        assert_eq!(fixed(2, 4), Conv::Decimal { scale: 1 });
        assert_eq!(fixed(2, 5), Conv::Keep);
        assert_eq!(fixed(16, 38), Conv::Decimal { scale: 1 });
        assert_eq!(fixed(16, 39), Conv::Keep);
        // A Connect Decimal whose digits are written out as a string: kept as it is, as the
        // JSON decoder keeps it.
        let plan = compile(
            r#"{"type":"record","name":"r","fields":[{"name":"v","type":{"type":"string","connect.name":"org.apache.kafka.connect.data.Decimal","connect.parameters":{"scale":"2"}}}]}"#,
        )
        .unwrap();
        assert_eq!(plan.fields().unwrap()[0].plan.conv, Conv::Keep);
    }

    #[test]
    fn a_schema_whose_named_types_double_at_each_level_is_refused_not_expanded() {
        // A_k holds two fields of type A_{k+1}: 2^30 records written out, from 2 KB.
        let levels = 30;
        let mut types = String::from(r#"{"type":"record","name":"A0","fields":[]}"#);
        for k in 1..=levels {
            types = format!(
                r#"{{"type":"record","name":"A{k}","fields":[{{"name":"a","type":{types}}},{{"name":"b","type":"A{}"}}]}}"#,
                k - 1
            );
        }
        let err = compile(&types).unwrap_err();
        assert!(err.contains("more than 100000 types"), "{err}");
        // A few levels are fine.
        let mut small = String::from(r#"{"type":"record","name":"A0","fields":[]}"#);
        for k in 1..=5 {
            small = format!(
                r#"{{"type":"record","name":"A{k}","fields":[{{"name":"a","type":{small}}},{{"name":"b","type":"A{}"}}]}}"#,
                k - 1
            );
        }
        assert!(compile(&small).is_ok());
    }

    #[test]
    fn a_large_enum_used_over_and_over_is_refused_not_copied() {
        // An enum of 20 000 symbols (260 KB) in each of 50 fields of R1, R1 in each of 50
        // fields of R2, R2 in 10 fields of the top record: 25 000 copies (6.5 GB of symbols)
        // in 51 000 types, under the node limit.
        let symbols: Vec<String> = (0..20_000).map(|i| format!("S{i:08}")).collect();
        let enum_type = serde_json::json!({"type": "enum", "name": "E", "symbols": symbols});
        let fields = |ty: &serde_json::Value, n: usize| -> Vec<serde_json::Value> {
            (0..n)
                .map(|i| serde_json::json!({"name": format!("f{i}"), "type": ty}))
                .collect()
        };
        let mut r1 = fields(&serde_json::json!("E"), 50);
        r1[0]["type"] = enum_type;
        let mut r2 = fields(&serde_json::json!("R1"), 50);
        r2[0]["type"] = serde_json::json!({"type": "record", "name": "R1", "fields": r1});
        let mut top = fields(&serde_json::json!("R2"), 10);
        top[0]["type"] = serde_json::json!({"type": "record", "name": "R2", "fields": r2});
        let schema = serde_json::json!({"type": "record", "name": "Top", "fields": top});
        let t0 = std::time::Instant::now();
        let err = compile(&schema.to_string()).unwrap_err();
        assert!(err.contains("MiB of names and symbols"), "{err}");
        // Refused at the budget, not after copying: 6.5 GB of copies would take minutes. The
        // refusal took 4.8-6 s in debug builds on a busy 2-core machine, and once over 10 s
        // during the whole suite, so the bound leaves room for that.
        assert!(t0.elapsed() < std::time::Duration::from_secs(60));
        // One use of the enum is fine.
        let one = serde_json::json!({"type": "record", "name": "One", "fields": [
            {"name": "e", "type": {"type": "enum", "name": "E", "symbols": symbols}}]});
        assert!(compile(&one.to_string()).is_ok());
    }

    #[test]
    fn invalid_schemas_are_rejected() {
        assert!(compile(r#"{"type":"record","name":"x"}"#).is_err());
        assert!(compile("not json").is_err());
    }
}
