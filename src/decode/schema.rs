//! Connect schemas compiled into per-field conversions.
//!
//! A schema (from JsonConverter's `"schema"` block, or later from Avro's `connect.name`) is
//! compiled once into a [`Conv`] tree; decoding a record then only follows the tree. Fields
//! that need no conversion collapse into [`Conv::Keep`], so a table of plain columns costs a
//! copy.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

use super::semantic::TimeUnit;

/// What to do with one value on its way into a document (docs/design.md).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Conv {
    /// Written as the wire gives it.
    #[default]
    Keep,
    /// Days since the epoch → `"2024-03-01"`.
    Date,
    /// Time since midnight → `"13:45:07.123456"`.
    Time(TimeUnit),
    /// Time since the epoch, no zone → `"2024-03-01T13:45:07.123456Z"`.
    Timestamp(TimeUnit),
    /// Connect `Decimal`: unscaled two's-complement bytes, or a number, with a fixed scale.
    Decimal { scale: i32 },
    /// `io.debezium.data.VariableScaleDecimal`: `{scale, value}`.
    VariableScaleDecimal,
    /// `io.debezium.data.Json`: a string holding JSON → that JSON, as it is
    /// (`semantic::json_text`).
    Json,
    /// `io.debezium.data.Bits`: bytes; `length` is the bit count when the schema gives it.
    Bits { length: Option<u32> },
    /// `io.debezium.data.geometry.Point` → `{"lat": y, "lon": x}`.
    Point,
    /// A struct with at least one field to convert.
    Struct(Arc<StructConv>),
    /// An array whose items need converting.
    Array(Box<Conv>),
    /// A map whose values need converting.
    Map(Box<Conv>),
    /// A value its schema does not let be read (a Decimal without its scale): an error.
    /// (Boxed: a `Conv` stays two words, as every struct field holds one.)
    Refused(Box<String>),
}

/// The conversions of a struct's fields, in schema order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StructConv {
    pub fields: Vec<(String, Conv)>,
    index: HashMap<String, usize>,
    /// Each field's name as a document writes it, quoted and followed by its colon: written
    /// once here rather than escaped again for every record (4% of the JSON hot path with
    /// schema, docs/performance-log.md).
    written: Vec<Box<[u8]>>,
}

impl StructConv {
    pub fn new(fields: Vec<(String, Conv)>) -> Self {
        let index = fields
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.clone(), i))
            .collect();
        let written = fields
            .iter()
            .map(|(n, _)| {
                let mut w = Vec::with_capacity(n.len() + 3);
                super::row::write_json_str(&mut w, n);
                w.push(b':');
                w.into_boxed_slice()
            })
            .collect();
        StructConv {
            fields,
            index,
            written,
        }
    }

    /// Writes field `name` (at position `hint`, as in [`Self::field`]) into `out` as a
    /// document's member name, `"name":`, and returns its conversion.
    pub fn write_name(&self, out: &mut Vec<u8>, name: &str, hint: usize) -> &Conv {
        match self.position(name, hint) {
            Some(i) => {
                out.extend_from_slice(&self.written[i]);
                &self.fields[i].1
            }
            None => {
                super::row::write_json_str(out, name);
                out.push(b':');
                &Conv::Keep
            }
        }
    }

    /// The conversion of field `name`; `hint` is the position the field is expected at
    /// (records list fields in schema order, so the hint almost always hits).
    pub fn field(&self, name: &str, hint: usize) -> &Conv {
        self.position(name, hint)
            .map_or(&Conv::Keep, |i| &self.fields[i].1)
    }

    /// The position of field `name`, if the schema has it.
    pub fn position(&self, name: &str, hint: usize) -> Option<usize> {
        match self.fields.get(hint) {
            Some((n, _)) if n == name => Some(hint),
            _ => self.index.get(name).copied(),
        }
    }
}

/// A Connect schema as JsonConverter writes it (`schemas.enable=true`).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ConnectSchema {
    #[serde(rename = "type", default)]
    pub ty: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub field: Option<String>,
    #[serde(default)]
    pub fields: Vec<ConnectSchema>,
    #[serde(default)]
    pub items: Option<Box<ConnectSchema>>,
    #[serde(default)]
    pub values: Option<Box<ConnectSchema>>,
    #[serde(default)]
    pub parameters: HashMap<String, serde_json::Value>,
}

impl ConnectSchema {
    /// Parses a schema, every node of which must be a JSON object: serde's derived structs
    /// would also take an array, field by position. (Parsed when a topic's schema changes,
    /// not per record.)
    pub fn parse(text: &str) -> Result<ConnectSchema, String> {
        fn objects(v: &serde_json::Value, at: &str) -> Result<(), String> {
            let Some(o) = v.as_object() else {
                return Err(format!("the schema at {at} is not a JSON object"));
            };
            if let Some(fields) = o.get("fields").and_then(|f| f.as_array()) {
                for (i, f) in fields.iter().enumerate() {
                    objects(f, &format!("{at}.fields[{i}]"))?;
                }
            }
            for k in ["items", "values"] {
                if let Some(v) = o.get(k).filter(|v| !v.is_null()) {
                    objects(v, &format!("{at}.{k}"))?;
                }
            }
            Ok(())
        }
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        objects(&v, "the top")?;
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    /// The field named `name` of a struct schema.
    pub fn field(&self, name: &str) -> Option<&ConnectSchema> {
        self.fields
            .iter()
            .find(|f| f.field.as_deref() == Some(name))
    }

    fn parameter(&self, key: &str) -> Option<String> {
        self.parameters.get(key).map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }

    /// Compiles this schema into the conversion its values need.
    pub fn compile(&self) -> Conv {
        let param = |k: &str| self.parameter(k);
        if let Some(conv) = semantic_conv(self.name.as_deref(), &self.ty, &param) {
            return conv;
        }
        match self.ty.as_str() {
            "struct" => struct_conv(
                self.fields
                    .iter()
                    .map(|f| (f.field.clone().unwrap_or_default(), f.compile())),
            ),
            "array" => match self.items.as_deref().map(ConnectSchema::compile) {
                Some(Conv::Keep) | None => Conv::Keep,
                Some(c) => Conv::Array(Box::new(c)),
            },
            "map" => match self.values.as_deref().map(ConnectSchema::compile) {
                Some(Conv::Keep) | None => Conv::Keep,
                Some(c) => Conv::Map(Box::new(c)),
            },
            _ => Conv::Keep,
        }
    }
}

/// A struct conversion, or [`Conv::Keep`] when none of its fields needs converting.
pub fn struct_conv(fields: impl Iterator<Item = (String, Conv)>) -> Conv {
    let fields: Vec<(String, Conv)> = fields.collect();
    if fields.iter().all(|(_, c)| *c == Conv::Keep) {
        Conv::Keep
    } else {
        Conv::Struct(Arc::new(StructConv::new(fields)))
    }
}

/// The conversion a semantic type name calls for; `wire` is the Connect type it is carried in
/// (`int32`, `int64`, `bytes`, `string`, `struct`…). Shared by the JSON and Avro decoders.
pub fn semantic_conv(
    name: Option<&str>,
    wire: &str,
    param: &dyn Fn(&str) -> Option<String>,
) -> Option<Conv> {
    let name = name?;
    if name == "org.apache.kafka.connect.data.Decimal" && !matches!(wire, "bytes" | "fixed") {
        // Only a Decimal's bytes are to be converted. One carried as a string (its digits
        // written out by a converter or a transform) or as a double is read as it comes, by
        // JSON as by Avro: read as base64 bytes, the string "1230" was another number, and the
        // two decoders wrote a double differently.
        return None;
    }
    let conv = match name {
        "io.debezium.time.Date" | "org.apache.kafka.connect.data.Date" => Conv::Date,
        "io.debezium.time.Time" | "org.apache.kafka.connect.data.Time" => {
            Conv::Time(TimeUnit::Millis)
        }
        "io.debezium.time.MicroTime" => Conv::Time(TimeUnit::Micros),
        "io.debezium.time.NanoTime" => Conv::Time(TimeUnit::Nanos),
        "io.debezium.time.Timestamp" | "org.apache.kafka.connect.data.Timestamp" => {
            Conv::Timestamp(TimeUnit::Millis)
        }
        "io.debezium.time.MicroTimestamp" => Conv::Timestamp(TimeUnit::Micros),
        "io.debezium.time.NanoTimestamp" => Conv::Timestamp(TimeUnit::Nanos),
        // Connect's Decimal cannot be read without its scale (Kafka Connect refuses it too).
        "org.apache.kafka.connect.data.Decimal" => match param("scale").map(|s| s.parse()) {
            Some(Ok(scale)) => Conv::Decimal { scale },
            Some(Err(_)) => Conv::Refused(Box::new(format!(
                "a Decimal's scale parameter `{}` is not an integer",
                param("scale").unwrap_or_default()
            ))),
            None => Conv::Refused(Box::new(
                "a Decimal schema without its scale parameter".into(),
            )),
        },
        "io.debezium.data.VariableScaleDecimal" => Conv::VariableScaleDecimal,
        "io.debezium.data.Json" => Conv::Json,
        "io.debezium.data.Bits" => Conv::Bits {
            length: param("length").and_then(|s| s.parse().ok()),
        },
        "io.debezium.data.geometry.Point" => Conv::Point,
        // Geometry/Geography ({wkb, srid}), ZonedTimestamp, Year, MicroDuration, Enum, EnumSet,
        // Uuid, Xml, Ltree: written as they come.
        _ => return None,
    };
    // A semantic name on an unexpected wire type (e.g. time.precision.mode=connect gives
    // Connect names on the expected types; anything else is left alone).
    let fits = match conv {
        Conv::Date => matches!(wire, "int32" | "int64" | "int"),
        Conv::Time(_) | Conv::Timestamp(_) => matches!(wire, "int32" | "int64" | "int" | "long"),
        // As a Decimal's: only bytes are read as bits. A string was read as base64 by the JSON
        // decoder alone (hex text such as "0a0b" is base64 too), and kept by the Avro one.
        Conv::Bits { .. } => matches!(wire, "bytes" | "fixed"),
        Conv::VariableScaleDecimal | Conv::Point => matches!(wire, "struct" | "record"),
        Conv::Json => wire == "string",
        _ => true,
    };
    fits.then_some(conv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conversion_stays_two_words() {
        // Every struct field of a schema holds one. With an `Arc<str>` in it (three words),
        // the JSON hot path ran 5% fewer records per CPU-second on the same instructions
        // (alternated runs of the `hot` benchmark, callgrind counts within 0.2%).
        assert_eq!(std::mem::size_of::<Conv>(), 16);
    }

    #[test]
    fn schemas_are_objects_all_the_way_down() {
        assert!(
            ConnectSchema::parse(r#"{"type":"struct","fields":[{"type":"int32","field":"id"}]}"#)
                .is_ok()
        );
        for (bad, at) in [
            (r#"["struct","x"]"#, "the top"),
            (
                r#"{"type":"struct","fields":[["int32",null,"id"]]}"#,
                "the top.fields[0]",
            ),
            (r#"{"type":"array","items":["int64"]}"#, "the top.items"),
            (
                r#"{"type":"struct","fields":[{"type":"map","values":[1],"field":"m"}]}"#,
                "the top.fields[0].values",
            ),
        ] {
            assert_eq!(
                ConnectSchema::parse(bad).unwrap_err(),
                format!("the schema at {at} is not a JSON object"),
                "{bad}"
            );
        }
        assert!(ConnectSchema::parse(r#"{"type":"struct","fields":"x"}"#).is_err());
    }

    #[test]
    fn plain_tables_compile_to_keep() {
        let s: ConnectSchema = serde_json::from_str(
            r#"{"type":"struct","fields":[{"type":"int32","field":"id"},{"type":"string","field":"email"}]}"#,
        )
        .unwrap();
        assert_eq!(s.compile(), Conv::Keep);
    }

    #[test]
    fn semantic_fields_compile_to_their_conversion() {
        let s: ConnectSchema = serde_json::from_str(
            r#"{"type":"struct","fields":[
                {"type":"int32","field":"id"},
                {"type":"int32","name":"io.debezium.time.Date","field":"d"},
                {"type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"2"},"field":"p"},
                {"type":"array","items":{"type":"int64","name":"io.debezium.time.MicroTimestamp"},"field":"a"}]}"#,
        )
        .unwrap();
        let Conv::Struct(st) = s.compile() else {
            panic!("not a struct conv")
        };
        assert_eq!(st.field("id", 0), &Conv::Keep);
        assert_eq!(st.field("d", 1), &Conv::Date);
        assert_eq!(st.field("p", 0), &Conv::Decimal { scale: 2 });
        assert_eq!(
            st.field("a", 3),
            &Conv::Array(Box::new(Conv::Timestamp(TimeUnit::Micros)))
        );
        assert_eq!(st.field("unknown", 9), &Conv::Keep);
    }

    #[test]
    fn a_decimal_or_bits_carried_as_a_string_or_a_double_is_kept_as_it_is() {
        let s: ConnectSchema = serde_json::from_str(
            r#"{"type":"struct","fields":[
                {"type":"string","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"2"},"field":"p"},
                {"type":"string","name":"org.apache.kafka.connect.data.Decimal","field":"q"},
                {"type":"float64","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"2"},"field":"r"},
                {"type":"string","name":"io.debezium.data.Bits","parameters":{"length":"16"},"field":"b"},
                {"type":"float64","name":"io.debezium.data.Bits","field":"c"}]}"#,
        )
        .unwrap();
        assert_eq!(s.compile(), Conv::Keep);
    }
}
