//! MongoDB's string-encoded documents: Debezium's MongoDB connector writes `before`/`after` as
//! a string of MongoDB Extended JSON. Decoded here to a plain JSON object.
//!
//! `{"$oid": …}`, `{"$numberLong": …}`, `{"$numberInt": …}`, `{"$numberDouble": …}` and
//! `{"$numberDecimal": …}` become their plain values, `{"$date": …}` an ISO timestamp. A
//! top-level `_id`, which Elasticsearch refuses inside a document, is written as `id` (or as
//! `__id` when the document has an `id` of its own).

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::Row;
use super::semantic::{TimeUnit, timestamp};

pub(super) fn document(raw: &RawValue) -> Result<Row, String> {
    let text: String =
        serde_json::from_str(raw.get()).map_err(|e| format!("not a JSON string: {e}"))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| format!("string-encoded document is not JSON: {e}"))?;
    let Value::Object(mut doc) = simplify(value) else {
        return Err("string-encoded document is not a JSON object".into());
    };
    if let Some(id) = doc.shift_remove("_id") {
        let name = if doc.contains_key("id") { "__id" } else { "id" };
        if doc.contains_key(name) {
            return Err(
                "the document has `_id`, `id` and `__id`: no field left to keep `_id` in (Elasticsearch refuses `_id` in a document)"
                    .into(),
            );
        }
        let mut renamed = Map::with_capacity(doc.len() + 1);
        renamed.insert(name.to_string(), id);
        renamed.extend(doc);
        doc = renamed;
    }
    Ok(Row::from_bytes(
        serde_json::to_vec(&Value::Object(doc)).map_err(|e| e.to_string())?,
    ))
}

/// The row a MongoDB delete without a before image stands for, from its key: Debezium's key
/// `{"id": …}` holds the document's `_id` as Extended JSON text (`"{\"$oid\": \"5f…\"}"`,
/// `"\"abc\""`, `"1234"`), given here as an after image gives it (`"5f…"`, `"abc"`, `1234`),
/// so that a delete's row carries the id its document's other rows do. A document with an `id`
/// of its own keeps `_id` as `__id`: its delete cannot say so (capture full documents before
/// the change, `capture.mode=change_streams_update_full_with_pre_image`, for a before image).
pub fn key_image(key: &Row) -> Result<Row, String> {
    let mut fields: Map<String, Value> = serde_json::from_str(key.as_str())
        .map_err(|e| format!("a MongoDB key is not a JSON object: {e}"))?;
    if let Some(Value::String(text)) = fields.get("id") {
        let id: Value = serde_json::from_str(text)
            .map_err(|e| format!("a MongoDB key's id is not Extended JSON: {e}"))?;
        fields.insert("id".to_string(), simplify(id));
    }
    Ok(Row::from_bytes(
        serde_json::to_vec(&Value::Object(fields)).map_err(|e| e.to_string())?,
    ))
}

fn simplify(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            if map.len() == 1 {
                let (k, v) = map
                    .iter()
                    .next()
                    .map(|(k, v)| (k.as_str(), v))
                    .unwrap_or(("", &Value::Null));
                match (k, v) {
                    ("$oid" | "$numberDecimal" | "$symbol", Value::String(s)) => {
                        return Value::String(s.clone());
                    }
                    ("$numberLong" | "$numberInt", Value::String(s)) => {
                        if let Ok(n) = s.parse::<i64>() {
                            return Value::from(n);
                        }
                    }
                    ("$numberDouble", Value::String(s)) => {
                        if let Ok(n) = s.parse::<f64>()
                            && n.is_finite()
                        {
                            return Value::from(n);
                        }
                        return Value::String(s.clone());
                    }
                    ("$date", d) => {
                        let ms = match d {
                            Value::Number(n) => n.as_i64(),
                            Value::Object(o) => o
                                .get("$numberLong")
                                .and_then(|v| v.as_str())
                                .and_then(|s| s.parse().ok()),
                            Value::String(s) => return Value::String(s.clone()),
                            _ => None,
                        };
                        if let Some(ms) = ms {
                            let mut out = Vec::new();
                            timestamp(&mut out, ms, TimeUnit::Millis);
                            return serde_json::from_slice(&out).unwrap_or(Value::Null);
                        }
                    }
                    _ => {}
                }
            }
            Value::Object(map.into_iter().map(|(k, v)| (k, simplify(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(simplify).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_json_is_simplified_and_id_renamed() {
        let raw: Box<RawValue> = serde_json::from_str(
            r#""{\"_id\": {\"$oid\": \"5f1\"}, \"n\": {\"$numberLong\": \"12\"}, \"at\": {\"$date\": 1558965508000}, \"tags\": [{\"$numberInt\": \"1\"}]}""#,
        )
        .unwrap();
        assert_eq!(
            document(&raw).unwrap().as_str(),
            r#"{"id":"5f1","n":12,"at":"2019-05-27T13:58:28.000Z","tags":[1]}"#
        );
        let taken: Box<RawValue> = serde_json::from_str(r#""{\"_id\": 1, \"id\": 2}""#).unwrap();
        assert_eq!(document(&taken).unwrap().as_str(), r#"{"__id":1,"id":2}"#);
        // No name left: an error, not `_id` lost.
        let full: Box<RawValue> =
            serde_json::from_str(r#""{\"_id\": 1, \"id\": 2, \"__id\": 3}""#).unwrap();
        assert!(document(&full).unwrap_err().contains("no field left"));
    }
}
