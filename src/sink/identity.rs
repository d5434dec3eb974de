//! What identifies a change in every sink: the id of its row — from the record key, else from
//! the row's primary-key fields — so that "newest wins" (with the version of
//! `source_versions`) means the same in Elasticsearch and in Druid.

use std::borrow::Cow;

use serde_json::value::RawValue;

use crate::connector::options::Options;
use crate::decode::Row;
use crate::decode::row::id_text;

/// The id a key gives: the value of `field` (`ExtractField$Key`), the key itself when it is a
/// primitive, else its fields' values joined with `separator`, in key order.
pub fn key_id(key: &Row, field: Option<&str>, separator: &str) -> Result<String, String> {
    if let Some(f) = field {
        let v = key
            .get(f)
            .ok_or_else(|| format!("the key has no field `{f}` (transforms ExtractField$Key)"))?;
        return id_part(v)
            .map(Cow::into_owned)
            .ok_or_else(|| no_part(&format!("key field `{f}`"), v));
    }
    match plain_fields(key.as_str(), separator) {
        Some(id) => Ok(id),
        None => walked_key_id(key, separator),
    }
}

/// [`key_id`] without a key field, for any key: serde_json walks it.
fn walked_key_id(key: &Row, separator: &str) -> Result<String, String> {
    if !key.as_str().starts_with('{') {
        let raw: &RawValue = serde_json::from_str(key.as_str()).map_err(|e| e.to_string())?;
        return id_part(raw)
            .map(Cow::into_owned)
            .ok_or_else(|| no_part("the key", raw));
    }
    let mut id = String::new();
    let mut n = 0;
    key.for_each_field(|name, v| {
        let part = id_part(v).ok_or_else(|| no_part(&format!("key field `{name}`"), v))?;
        // The first part becomes the id: one allocation for a key of one field.
        if n == 0 {
            id = part.into_owned();
        } else {
            if n == 1 {
                escape_first(&mut id, separator);
            }
            id.push_str(separator);
            push_escaped(&mut id, &part, separator);
        }
        n += 1;
        Ok(())
    })?;
    if n == 0 {
        return Err("the key has no fields".into());
    }
    Ok(id)
}

/// The id of the commonest keys, flat objects (`{"id":1004}`, `{"tenant":"a","id":7}`) whose
/// values are numbers or strings without escapes, as the walk reads them: values joined with
/// `separator`. `None` for any other shape, which [`walked_key_id`] then reads. Read by hand:
/// serde_json's walk over these few bytes was 6.6–7.4% of the hot path.
fn plain_fields(key: &str, separator: &str) -> Option<String> {
    let mut rest = key.strip_prefix('{')?;
    // Sized once: growing it field by field was half of this function's time.
    let (mut id, mut parts) = (String::with_capacity(key.len()), 0);
    loop {
        rest = rest.strip_prefix('"')?;
        let quote = memchr::memchr(b'"', rest.as_bytes())?;
        if rest[..quote].contains('\\') {
            return None;
        }
        rest = rest[quote..].strip_prefix("\":")?;
        let value = if let Some(s) = rest.strip_prefix('"') {
            let end = memchr::memchr2(b'"', b'\\', s.as_bytes())?;
            if s.as_bytes()[end] != b'"' {
                return None;
            }
            rest = &s[end + 1..];
            &s[..end]
        } else {
            let number =
                |b: &u8| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E');
            let end = rest.bytes().position(|b| !number(&b))?;
            if end == 0 {
                return None;
            }
            let (value, after) = rest.split_at(end);
            rest = after;
            value
        };
        if parts == 0 {
            id.push_str(value);
        } else {
            if parts == 1 {
                escape_first(&mut id, separator);
            }
            id.push_str(separator);
            push_escaped(&mut id, value, separator);
        }
        parts += 1;
        match rest.as_bytes().first()? {
            b',' => rest = &rest[1..],
            b'}' if rest.len() == 1 => return Some(id),
            _ => return None,
        }
    }
}

/// The id of a record: from its key (see [`key_id`]), else from `pk_fields` of `image`;
/// `None` when it has neither key nor `pk_fields`.
pub fn record_id(
    key: Option<&Row>,
    image: Option<&Row>,
    key_field: Option<&str>,
    pk_fields: &[String],
    separator: &str,
) -> Result<Option<String>, String> {
    match key.filter(|k| !k.is_null()) {
        Some(key) => key_id(key, key_field, separator).map(Some),
        None if !pk_fields.is_empty() => {
            let row = image.ok_or("record has no key, and no row image to take pk.fields from")?;
            row_id(row, pk_fields, separator).map(Some)
        }
        None => Ok(None),
    }
}

/// The id `pk_fields` of `row` give, joined with `separator`.
pub fn row_id(row: &Row, pk_fields: &[String], separator: &str) -> Result<String, String> {
    let mut parts = Vec::with_capacity(pk_fields.len());
    for f in pk_fields {
        let v = row
            .get(f)
            .ok_or_else(|| format!("pk.fields: the row has no field `{f}`"))?;
        parts.push(id_part(v).ok_or_else(|| no_part(&format!("pk.fields: field `{f}`"), v))?);
    }
    if parts.len() == 1 {
        return Ok(parts.swap_remove(0).into_owned());
    }
    let mut id = String::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            id.push_str(separator);
        }
        push_escaped(&mut id, p, separator);
    }
    Ok(id)
}

/// `key.separator` (`|` when unset), checked: one that starts with `\` would make the escapes
/// of [`push_escaped`] ambiguous (with `\`, the parts `a\`,`b` and `a`,`\b` both give `a\\\b`).
pub fn key_separator(o: &Options<'_>) -> String {
    let separator = o.raw("key.separator").unwrap_or_else(|| "|".to_string());
    if separator.starts_with('\\') {
        o.error(
            "key.separator",
            "must not start with `\\`, the escape of composite keys' values",
        );
    }
    separator
}

/// A part of an id of several parts, with `\` and the separator's first character escaped
/// by a `\`, so that two keys never give one id: `{"a":"x|y","b":"z"}` and
/// `{"a":"x","b":"y|z"}` give `x\|y|z` and `x|y\|z`, not both `x|y|z` (one row's document
/// overwritten by the other's, and deleted with it). An id of one part is the value as it is.
fn push_escaped(id: &mut String, part: &str, separator: &str) {
    let Some(c) = separator.chars().next() else {
        id.push_str(part);
        return;
    };
    if !part.contains(['\\', c]) {
        id.push_str(part);
        return;
    }
    for ch in part.chars() {
        if ch == '\\' || ch == c {
            id.push('\\');
        }
        id.push(ch);
    }
}

/// `id`, so far the first part alone, escaped as [`push_escaped`] does once a second part comes.
fn escape_first(id: &mut String, separator: &str) {
    if separator
        .chars()
        .next()
        .is_some_and(|c| id.contains(['\\', c]))
    {
        let first = std::mem::take(id);
        push_escaped(id, &first, separator);
    }
}

/// Why `v` (`what`) gives no id: it is null, or a string that cannot be read (a lone surrogate
/// escape such as `"\ud800"`, which JSON's grammar allows).
fn no_part(what: &str, v: &RawValue) -> String {
    if v.get().trim() == "null" {
        format!("{what} is null")
    } else {
        format!("{what} `{}` is not a readable string", v.get())
    }
}

/// One id component; MongoDB's Extended JSON ids (`{"$oid": "…"}`) give their inner value.
pub fn id_part(v: &RawValue) -> Option<Cow<'_, str>> {
    let text = id_text(v)?;
    if (text.starts_with("{\"$") || text.starts_with("{ \"$"))
        && let Ok(serde_json::Value::Object(o)) = serde_json::from_str::<serde_json::Value>(&text)
        && o.len() == 1
        && let Some((_, inner)) = o.iter().next()
    {
        return Some(Cow::Owned(match inner {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        }));
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_and_why_a_key_gives_none() {
        let id = |k: &str, field| key_id(&Row::from_json(k), field, "+");
        assert_eq!(id(r#"{"id":1004}"#, None).unwrap(), "1004");
        assert_eq!(id(r#"{"a":"x","b":2}"#, None).unwrap(), "x+2");
        assert_eq!(id(r#"{"a":"x","b":2}"#, Some("b")).unwrap(), "2");
        assert_eq!(id(r#""k1""#, None).unwrap(), "k1");
        assert_eq!(
            id(r#"{"id":null}"#, None).unwrap_err(),
            "key field `id` is null"
        );
        assert_eq!(
            id(r#"{"id":"\ud800"}"#, None).unwrap_err(),
            r#"key field `id` `"\ud800"` is not a readable string"#
        );
        assert_eq!(id("null", None).unwrap_err(), "the key is null");
        assert_eq!(id("{}", None).unwrap_err(), "the key has no fields");
    }

    #[test]
    fn the_commonest_keys_read_by_hand_as_the_walk_reads_them() {
        let taken = [
            (r#"{"id":1004}"#, "1004"),
            (r#"{"id":-1.5e3}"#, "-1.5e3"),
            (r#"{"k":"a b"}"#, "a b"),
            (r#"{"":""}"#, ""),
            (r#"{"tenant":"acme","id":7}"#, "acme+7"),
            (r#"{"a":"","b":"","c":1}"#, "++1"),
        ];
        for (k, want) in taken {
            assert_eq!(plain_fields(k, "+").as_deref(), Some(want), "{k}");
            assert_eq!(walked_key_id(&Row::from_json(k), "+").unwrap(), want, "{k}");
        }
        // Parts holding the separator or a backslash, escaped where there are several parts:
        // no two keys give one id.
        let escaped = [
            (r#"{"a":"x+y","b":"z"}"#, r"x\+y+z"),
            (r#"{"a":"x","b":"y+z"}"#, r"x+y\+z"),
            (r#"{"a":"x\\","b":"+z"}"#, r"x\\+\+z"),
            (r#"{"a":"x\\+","b":"z"}"#, r"x\\\++z"),
            (r#"{"a":"x+y"}"#, "x+y"),
        ];
        let mut ids = std::collections::BTreeSet::new();
        for (k, want) in escaped {
            assert_eq!(walked_key_id(&Row::from_json(k), "+").unwrap(), want, "{k}");
            if let Some(plain) = plain_fields(k, "+") {
                assert_eq!(plain, want, "{k}");
            }
            assert!(ids.insert(want), "{k}: {want} twice");
        }
        let row = Row::from_json(r#"{"a":"x+y","b":"z","c":"q+"}"#);
        let pk = |f: &[&str]| {
            row_id(
                &row,
                &f.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                "+",
            )
        };
        assert_eq!(pk(&["a", "b"]).unwrap(), r"x\+y+z");
        assert_eq!(pk(&["c"]).unwrap(), "q+");
        // Every other shape is left to the walk.
        for k in [
            r#"{"a":"x\"y"}"#,
            r#"{"a":"\u0041"}"#,
            r#"{"a\"b":1}"#,
            r#"{"x\":1,\"y":2}"#,
            r#"{"a": 1}"#,
            r#"{"a":1 }"#,
            r#"{"a":1,}"#,
            r#"{"a":1}x"#,
            r#"{"a":1,"b":null}"#,
            r#"{"a":null}"#,
            r#"{"a":true}"#,
            r#"{"a":{"$oid":"5"}}"#,
            r#"{"a":[1]}"#,
            r#"{"a":}"#,
            "{}",
            "1004",
            r#""k1""#,
        ] {
            assert_eq!(plain_fields(k, "+"), None, "{k}");
        }
    }
}
