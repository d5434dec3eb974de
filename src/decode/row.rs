//! [`Row`]: a JSON value as single-line text, semantic types decoded; and borrowed walks over it.

use std::borrow::Cow;
use std::fmt;

use serde::Deserializer as _;
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde_json::value::RawValue;

/// JSON text on one line (safe to put in an NDJSON body as is), semantic types decoded.
/// Row images and keys are rows; for row images it is an object.
#[derive(Clone, PartialEq, Eq)]
pub struct Row(Box<str>);

impl Row {
    /// Wraps JSON text that is known to be valid; newlines (only possible as whitespace in
    /// valid JSON) are dropped so the text fits on one NDJSON line.
    pub fn from_json(text: &str) -> Row {
        if memchr::memchr2(b'\n', b'\r', text.as_bytes()).is_some() {
            Row(text
                .chars()
                .filter(|c| *c != '\n' && *c != '\r')
                .collect::<String>()
                .into())
        } else {
            Row(text.into())
        }
    }

    /// Wraps bytes produced by the decoder itself (always valid, single-line JSON).
    pub(crate) fn from_bytes(bytes: Vec<u8>) -> Row {
        match String::from_utf8(bytes) {
            Ok(s) => Row(s.into_boxed_str()),
            // The decoder writes only UTF-8; keep going with replacement characters if not.
            Err(e) => Row(String::from_utf8_lossy(e.as_bytes()).into()),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_null(&self) -> bool {
        &*self.0 == "null"
    }

    /// Calls `f` with each field of an object row, in order.
    pub fn for_each_field<'a>(
        &'a self,
        f: impl FnMut(&str, &'a RawValue) -> Result<(), String>,
    ) -> Result<(), String> {
        for_each_field(&self.0, f)
    }

    /// The raw JSON of field `name` of an object row (`a.b` walks into nested objects).
    pub fn get(&self, path: &str) -> Option<&RawValue> {
        // Walked once per level: parsing the whole row first (to start from a `RawValue`) was
        // a second walk over it, for `add.fields`, `pk.fields` and `key.field` on every record.
        let mut cur: &str = &self.0;
        let mut found = None;
        for part in path.split('.') {
            found = None;
            for_each_field(cur, |k, v| {
                if k == part {
                    found = Some(v);
                }
                Ok(())
            })
            .ok()?;
            cur = found?.get();
        }
        found
    }
}

impl fmt::Debug for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Calls `f` with each (name, raw value) of the JSON object `json`, in order, borrowing
/// from `json`. Fails when `json` is not an object.
pub fn for_each_field<'a>(
    json: &'a str,
    f: impl FnMut(&str, &'a RawValue) -> Result<(), String>,
) -> Result<(), String> {
    struct FieldVisitor<'e, F> {
        f: F,
        /// The callback's own error, kept out of serde so it reads as written.
        failed: &'e mut Option<String>,
    }
    impl<'de, F: FnMut(&str, &'de RawValue) -> Result<(), String>> Visitor<'de>
        for FieldVisitor<'_, F>
    {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key_seed(Key("a string"))? {
                let value: &'de RawValue = map.next_value()?;
                if let Err(e) = (self.f)(&key, value) {
                    *self.failed = Some(e);
                    return Err(de::Error::custom("stopped"));
                }
            }
            Ok(())
        }
    }
    let mut failed = None;
    let mut de = serde_json::Deserializer::from_str(json);
    let result = de.deserialize_map(FieldVisitor {
        f,
        failed: &mut failed,
    });
    if let Some(e) = failed {
        return Err(e);
    }
    result.map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())
}

/// A JSON string (or an object's key), borrowed from the JSON unless it has escapes. (serde's
/// `Cow<str>` always allocates: a string per field of every row walked, `to_row`'s field names
/// among them, and per base64 value decoded.)
/// Its field: what it expects, for the error.
pub(crate) struct Key(pub &'static str);

/// A flat JSON object: see [`flat_object`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flat {
    /// One of its fields is named `payload`.
    pub payload: bool,
}

/// `text` as, byte for byte, a flat JSON object of the shape Kafka Connect writes most keys in:
/// `{"id":1004}`, `{"tenant":"a","id":7}`. Names and string values without escapes or control
/// characters, numbers as JSON's grammar has them, no whitespace. `Some` only for valid JSON;
/// `None` for anything else, valid or not, which serde_json then reads. (By hand: serde_json's
/// `from_str::<&RawValue>` took about 640 instructions to check a key of a dozen bytes, 5% of
/// the `hot` benchmark's records without schema; docs/performance-log.md.)
pub(crate) fn flat_object(text: &str) -> Option<Flat> {
    let mut flat = Flat { payload: false };
    let mut rest = text.as_bytes().strip_prefix(b"{")?;
    loop {
        let name = rest.strip_prefix(b"\"")?;
        let end = string_end(name)?;
        flat.payload |= &name[..end] == b"payload";
        let value = name[end + 1..].strip_prefix(b":")?;
        rest = match value.strip_prefix(b"\"") {
            Some(s) => &s[string_end(s)? + 1..],
            None => &value[number_end(value)?..],
        };
        match rest {
            [b',', more @ ..] => rest = more,
            [b'}'] => return Some(flat),
            _ => return None,
        }
    }
}

/// Where the string whose content starts `s` ends (its closing quote), if it has no escape or
/// control character before that.
fn string_end(s: &[u8]) -> Option<usize> {
    // Bytes that end a plain string's content: a quote, a backslash, a control character.
    const STOP: [bool; 256] = {
        let mut t = [false; 256];
        let mut c = 0;
        while c < 0x20 {
            t[c] = true;
            c += 1;
        }
        t[b'"' as usize] = true;
        t[b'\\' as usize] = true;
        t
    };
    s.iter()
        .position(|&c| STOP[usize::from(c)])
        .filter(|&i| s[i] == b'"')
}

/// Where the JSON number that starts `s` ends: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
pub(crate) fn number_end(s: &[u8]) -> Option<usize> {
    let digits = |from: usize| {
        let n = s[from..].iter().take_while(|c| c.is_ascii_digit()).count();
        (n > 0).then_some(from + n)
    };
    let mut i = usize::from(s.first() == Some(&b'-'));
    i = match s.get(i)? {
        b'0' => i + 1,
        b'1'..=b'9' => digits(i)?,
        _ => return None,
    };
    if s.get(i) == Some(&b'.') {
        i = digits(i + 1)?;
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(s.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        i = digits(i)?;
    }
    Some(i)
}

/// The content of the JSON string `raw`, borrowed unless it has escapes.
pub(crate) fn unquote(raw: &str) -> serde_json::Result<Cow<'_, str>> {
    let mut de = serde_json::Deserializer::from_str(raw);
    let s = Key("a string").deserialize(&mut de)?;
    de.end()?;
    Ok(s)
}

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// For `#[serde(deserialize_with)]`: an optional field kept as its raw JSON, borrowed (a JSON
/// `null` is `Some("null")`; an absent field takes the field's default).
pub(crate) fn some_raw<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue as serde::Deserialize>::deserialize(d).map(Some)
}

/// [`some_raw`]'s JSON text.
pub(crate) fn some_raw_text<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<&'de str>, D::Error> {
    some_raw(d).map(|r| r.map(RawValue::get))
}

/// For `#[serde(deserialize_with)]`: an optional string, borrowed unless it has escapes. (serde's
/// `borrow` attribute borrows a `Cow<str>` field but not an `Option<Cow<str>>`, which it
/// allocates every time: 9% of the Avro value decoder, in `source`: docs/performance-log.md.)
pub(crate) fn some_str<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Cow<'de, str>>, D::Error> {
    struct Str;
    impl<'de> Visitor<'de> for Str {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            Key("a string or null").deserialize(d).map(Some)
        }
    }
    d.deserialize_option(Str)
}

/// Writes `s` as a JSON string: copied between quotes when it is [`plain_ascii`] (nearly every
/// string a table holds), through serde_json's writer otherwise.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    if plain_ascii(s.as_bytes()) {
        push_quoted(out, s.as_bytes());
    } else {
        write_escaped(out, s);
    }
}

/// Writes `s` as a JSON string through serde_json's writer, which escapes what it must (for
/// strings already found not [`plain_ascii`]).
pub fn write_escaped(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Writes bytes that are [`plain_ascii`] as a JSON string.
pub fn push_quoted(out: &mut Vec<u8>, plain: &[u8]) {
    out.reserve(plain.len() + 2);
    out.push(b'"');
    out.extend_from_slice(plain);
    out.push(b'"');
}

/// Whether `b` is ASCII with nothing a JSON string must escape (no control character, `"` or
/// `\`): such bytes are valid UTF-8 and are a JSON string's content as they are.
///
/// Hand-written, eight bytes at a time, because it replaces two scans per string: an Avro
/// string was checked as UTF-8 (`str::from_utf8`), then scanned again byte by byte by
/// serde_json's writer for what to escape (a byte-by-byte copy of our own was no faster than
/// that writer). Those two took 19% of the Avro hot path's instructions (callgrind:
/// docs/performance-log.md).
pub fn plain_ascii(b: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // Whether any byte of `x` is zero (exact as a yes or no; the classic bit trick).
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGH != 0;
    // A byte of 0x80 and above or below 0x20; a quote; a backslash.
    let escaped = |x: u64| {
        x & HIGH != 0
            || x.wrapping_sub(ONES * 0x20) & !x & HIGH != 0
            || zero_byte(x ^ (ONES * u64::from(b'"')))
            || zero_byte(x ^ (ONES * u64::from(b'\\')))
    };
    let mut words = b.chunks_exact(8);
    for w in &mut words {
        if escaped(u64::from_ne_bytes(w.try_into().unwrap_or_default())) {
            return false;
        }
    }
    // The last bytes one at a time (copying them into a padded word called memcpy: more
    // instructions in the Avro hot path's profile).
    words
        .remainder()
        .iter()
        .all(|&c| (0x20..0x80).contains(&c) && c != b'"' && c != b'\\')
}

/// The text a JSON scalar stands for as an identifier: a string's content, a number or a
/// boolean as written, objects and arrays as compact JSON. `None` for `null`.
pub fn id_text(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get().trim();
    match text.as_bytes().first() {
        Some(b'"') => unquote(text).ok(),
        Some(b'n') => None,
        Some(b'{') | Some(b'[') => serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .map(|v| Cow::Owned(v.to_string())),
        _ => Some(Cow::Borrowed(text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        // Every byte value at every position of strings 1 to 20 bytes long, among plain ones:
        // plain_ascii agrees with a byte-by-byte check, and the string written is serde_json's.
        for len in 1..=20 {
            for at in 0..len {
                for c in 0..=255u8 {
                    let mut b = vec![b'a'; len];
                    b[at] = c;
                    let plain = b
                        .iter()
                        .all(|&c| (0x20..0x80).contains(&c) && c != b'"' && c != b'\\');
                    assert_eq!(plain_ascii(&b), plain, "{b:?}");
                    if let Ok(s) = std::str::from_utf8(&b) {
                        let mut out = Vec::new();
                        write_json_str(&mut out, s);
                        assert_eq!(out, serde_json::to_vec(s).unwrap(), "{s:?}");
                    }
                }
            }
        }
        for s in [
            "",
            "é",
            "a\u{7f}b",
            "日本語のテキスト",
            "tab\there",
            "quote\"d and back\\slash",
        ] {
            let mut out = Vec::new();
            write_json_str(&mut out, s);
            assert_eq!(out, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn rows_are_single_line() {
        let r = Row::from_json("{\n  \"a\": \"x\\ny\",\r\n  \"b\": 1\n}");
        assert_eq!(r.as_str(), "{  \"a\": \"x\\ny\",  \"b\": 1}");
    }

    #[test]
    fn fields_walk_in_order_and_nested_get_works() {
        let r = Row::from_json(r#"{"id":1,"n\u0061me":"x","p":{"lat":1.5}}"#);
        let mut seen = vec![];
        r.for_each_field(|k, v| {
            seen.push(format!("{k}={}", v.get()));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, ["id=1", r#"name="x""#, r#"p={"lat":1.5}"#]);
        assert_eq!(r.get("p.lat").unwrap().get(), "1.5");
        assert!(r.get("q").is_none());
    }

    #[test]
    fn optional_strings_borrow_unless_escaped() {
        #[derive(serde::Deserialize)]
        struct S<'a> {
            #[serde(borrow, default, deserialize_with = "some_str")]
            a: Option<Cow<'a, str>>,
        }
        let s = |json: &'static str| serde_json::from_str::<S<'static>>(json).map(|s| s.a);
        assert!(matches!(s(r#"{"a":"x"}"#), Ok(Some(Cow::Borrowed("x")))));
        assert!(matches!(s(r#"{"a":"\u0078"}"#), Ok(Some(Cow::Owned(o))) if o == "x"));
        assert!(matches!(s(r#"{"a":null}"#), Ok(None)));
        assert!(matches!(s("{}"), Ok(None)));
        let e = s(r#"{"a":5}"#).unwrap_err().to_string();
        assert!(e.contains("expected a string or null"), "{e}");
    }

    #[test]
    fn strings_unquote_borrowed_unless_escaped() {
        assert!(matches!(unquote(r#""QUJD""#), Ok(Cow::Borrowed("QUJD"))));
        assert!(matches!(unquote(r#""a\/b""#), Ok(Cow::Owned(o)) if o == "a/b"));
        assert!(unquote("5").is_err());
        assert!(unquote(r#""a" x"#).is_err());
        assert!(unquote(r#""a"x""#).is_err());
        assert!(unquote("\"a\tb\"").is_err(), "a raw control character");
        assert!(matches!(unquote(r#" "ab" "#), Ok(Cow::Borrowed("ab"))));
    }

    #[test]
    fn id_text_of_scalars() {
        let raw = |s: &str| serde_json::from_str::<Box<RawValue>>(s).unwrap();
        assert_eq!(id_text(&raw(r#""a\"b""#)).as_deref(), Some("a\"b"));
        assert_eq!(id_text(&raw("1004")).as_deref(), Some("1004"));
        assert_eq!(id_text(&raw("true")).as_deref(), Some("true"));
        assert_eq!(id_text(&raw(r#"{"a": 1}"#)).as_deref(), Some(r#"{"a":1}"#));
        assert_eq!(id_text(&raw("null")), None);
    }

    #[test]
    fn flat_objects_are_valid_json_and_anything_else_is_left_to_serde_json() {
        for ok in [
            r#"{"id":1004}"#,
            r#"{"tenant":"a","id":7}"#,
            r#"{"id":-0}"#,
            r#"{"x":1.5e-3,"y":2E+7,"z":0.25}"#,
            r#"{"é":"ü"}"#,
            r#"{"":""}"#,
            r#"{"a":1,"a":2}"#,
        ] {
            assert!(flat_object(ok).is_some(), "{ok}");
            serde_json::from_str::<&RawValue>(ok).unwrap();
        }
        for no in [
            "",
            "{",
            "{}",
            "[1]",
            "1",
            r#""id""#,
            r#"{"id":01}"#,
            r#"{"id":1.}"#,
            r#"{"id":.5}"#,
            r#"{"id":1e}"#,
            r#"{"id":+1}"#,
            r#"{"id":-}"#,
            r#"{"id":1}x"#,
            r#"{"id":1} "#,
            r#"{ "id":1}"#,
            r#"{"id" :1}"#,
            r#"{"id":"a\"b"}"#,
            r#"{"i\"d":1}"#,
            "{\"id\":\"a\tb\"}",
            "{\"i\nd\":1}",
            r#"{"id":true}"#,
            r#"{"id":null}"#,
            r#"{"id":{"a":1}}"#,
            r#"{"id":[1]}"#,
            r#"{"id":1,}"#,
            r#"{"id":"x}"#,
            r#"{"id":1"#,
            r#"{"id":"#,
            r#"{"id""#,
            r#"{"id"#,
            r#"{id:1}"#,
        ] {
            assert!(flat_object(no).is_none(), "{no}");
        }
        // Flat keys built from random pieces, then a byte or two changed, inserted or removed:
        // whatever is taken, serde_json takes too, as an object.
        let names: [&[u8]; 3] = [b"\"id\"", b"\"a\"", b"\"payload\""];
        let values: [&[u8]; 10] = [
            b"0", b"-7", b"12.5", b"3e-2", b"\"x\"", b"\"\"", b":", b",", b"1E+9", b"\"b c\"",
        ];
        let noise = b"{}\":,019-+.eEa\\\t ";
        let mut rng = fastrand::Rng::with_seed(17);
        let (mut taken, mut refused) = (0, 0);
        for _ in 0..200_000 {
            let mut text = b"{".to_vec();
            for f in 0..rng.usize(1..4) {
                if f > 0 {
                    text.push(b',');
                }
                text.extend_from_slice(names[rng.usize(..names.len())]);
                text.push(b':');
                text.extend_from_slice(values[rng.usize(..values.len())]);
            }
            text.push(b'}');
            for _ in 0..rng.usize(0..3) {
                let at = rng.usize(..text.len());
                let byte = noise[rng.usize(..noise.len())];
                match rng.u8(..3) {
                    0 => text[at] = byte,
                    1 => text.insert(at, byte),
                    _ => {
                        text.remove(at);
                    }
                }
            }
            let text = String::from_utf8(text).unwrap();
            if let Some(flat) = flat_object(&text) {
                taken += 1;
                let v: serde_json::Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{text:?} taken, but serde_json says {e}"));
                let named = v.as_object().map(|o| o.contains_key("payload"));
                assert_eq!(Some(flat.payload), named, "{text:?}");
            } else {
                refused += 1;
            }
        }
        assert!(refused > 10_000, "only {refused} texts refused");
        assert!(taken > 500, "only {taken} texts taken");
    }
}
