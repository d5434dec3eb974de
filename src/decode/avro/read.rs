//! Avro binary, read by a [`Plan`] and written straight out as JSON with semantic types decoded
//! (docs/design.md): no intermediate value tree, no schema resolution per record.

use std::ops::Range;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::plan::{Field, Node, Plan};
use crate::decode::Options;
use crate::decode::row::{plain_ascii, push_quoted, write_escaped, write_json_str as write_str};
use crate::decode::schema::Conv;
use crate::decode::semantic;

/// A cursor over one Avro-encoded datum.
pub struct Reader<'a> {
    data: &'a [u8],
    pub pos: usize,
    /// Array and map items the rest of the record may still hold (see [`blocks`]).
    items: usize,
}

const TRUNCATED: &str = "the Avro data ends early (truncated, or not written with this schema)";

fn zigzag(value: u64) -> i64 {
    (value >> 1) as i64 ^ -((value & 1) as i64)
}

/// An Avro string's bytes as text.
fn utf8(b: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(b).map_err(|e| format!("an Avro string is not UTF-8: {e}"))
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader {
            data,
            pos: 0,
            items: data.len().saturating_mul(MAX_ITEMS_PER_BYTE) + 64,
        }
    }

    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.data.len())
            .ok_or(TRUNCATED)?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// A zig-zag varint. Inlined, with one byte (−64..=63: lengths, union branches, small
    /// numbers) taken first: the loop was called for every field, 8% of the Avro hot path.
    #[inline]
    pub fn long(&mut self) -> Result<i64, String> {
        match self.data.get(self.pos) {
            Some(&b) if b < 0x80 => {
                self.pos += 1;
                Ok(zigzag(u64::from(b)))
            }
            _ => self.long_multi_byte(),
        }
    }

    fn long_multi_byte(&mut self) -> Result<i64, String> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self.data.get(self.pos).ok_or(TRUNCATED)?;
            self.pos += 1;
            // The tenth byte holds the 64th bit alone: more is a number no writer encodes.
            if shift == 63 && b > 1 {
                return Err("an Avro varint overflows 64 bits".into());
            }
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(zigzag(value));
            }
        }
        Err("an Avro varint is longer than 10 bytes".into())
    }

    pub fn int(&mut self) -> Result<i64, String> {
        let v = self.long()?;
        if i32::try_from(v).is_err() {
            return Err(format!("Avro int out of range: {v}"));
        }
        Ok(v)
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], String> {
        let len = self.long()?;
        let len = usize::try_from(len).map_err(|_| format!("negative Avro length {len}"))?;
        self.take(len)
    }

    pub fn string(&mut self) -> Result<&'a str, String> {
        utf8(self.bytes()?)
    }

    /// A string written into `out` as a JSON string. Plain ASCII (`plain_ascii`: one scan) is
    /// copied as it is; only other strings are checked as UTF-8 and escaped.
    pub fn json_string(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        let b = self.bytes()?;
        if plain_ascii(b) {
            push_quoted(out, b);
        } else {
            write_escaped(out, utf8(b)?);
        }
        Ok(())
    }

    fn float(&mut self) -> Result<f32, String> {
        Ok(f32::from_le_bytes(
            self.take(4)?.try_into().map_err(|_| TRUNCATED)?,
        ))
    }

    fn double(&mut self) -> Result<f64, String> {
        Ok(f64::from_le_bytes(
            self.take(8)?.try_into().map_err(|_| TRUNCATED)?,
        ))
    }

    /// The branch index of a union.
    fn branch<'p>(&mut self, branches: &'p [Plan]) -> Result<&'p Plan, String> {
        let i = self.long()?;
        usize::try_from(i)
            .ok()
            .and_then(|i| branches.get(i))
            .ok_or_else(|| {
                format!(
                    "Avro union branch {i} does not exist (the union has {})",
                    branches.len()
                )
            })
    }
}

fn write_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    let start = out.len();
    out.resize(start + bytes.len().div_ceil(3) * 4, 0);
    let n = BASE64.encode_slice(bytes, &mut out[start..]).unwrap_or(0);
    out.truncate(start + n);
    out.push(b'"');
}

/// A float as JSON, spelled as Kafka Connect's JsonConverter (Jackson: Java's
/// `Double.toString`, `Float.toString` for a `float`) writes it, so that a JSON topic and an Avro topic of the same changes give
/// the same documents and the same ids (a key's text is its id): the shortest digits, `2.0` for
/// whole numbers, Java's scientific notation outside 10⁻³ ≤ |x| < 10⁷ (`1.0E7`, `1.5E-5`), and
/// strings for what JSON cannot hold (`"NaN"`, `"Infinity"`, `"-Infinity"`).
fn write_float<F>(out: &mut Vec<u8>, f: F)
where
    F: std::fmt::Display + std::fmt::LowerExp + Into<f64> + Copy,
{
    let v: f64 = f.into();
    if !v.is_finite() {
        let java = match (v.is_nan(), v > 0.0) {
            (true, _) => "NaN",
            (false, true) => "Infinity",
            (false, false) => "-Infinity",
        };
        write_str(out, java);
        return;
    }
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e7).contains(&a) {
        // Rust's `1.5e-5`: the same shortest digits, written as Java writes them.
        let text = format!("{f:e}");
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        out.extend_from_slice(mantissa.as_bytes());
        if !mantissa.contains('.') {
            out.extend_from_slice(b".0");
        }
        out.push(b'E');
        out.extend_from_slice(exponent.as_bytes());
        return;
    }
    let text = f.to_string();
    out.extend_from_slice(text.as_bytes());
    if !text.contains('.') {
        out.extend_from_slice(b".0");
    }
}

/// An `int` (range-checked) or a `long`, as `node` says.
fn integer(r: &mut Reader<'_>, node: &Node) -> Result<i64, String> {
    match node {
        Node::Int => r.int(),
        _ => r.long(),
    }
}

fn write_decimal(
    out: &mut Vec<u8>,
    bytes: &[u8],
    scale: i32,
    opts: &Options,
) -> Result<(), String> {
    if !opts.decimal_as_number {
        out.push(b'"');
    }
    semantic::decimal_digits(out, bytes, scale)?;
    if !opts.decimal_as_number {
        out.push(b'"');
    }
    Ok(())
}

/// Reads one value by `plan` and writes it as JSON into `out`.
pub fn write(
    r: &mut Reader<'_>,
    plan: &Plan,
    opts: &Options,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    match (&plan.node, &plan.conv) {
        (Node::Union(branches), _) => {
            let b = r.branch(branches)?;
            write(r, b, opts, out)
        }
        (_, Conv::Refused(why)) => Err(why.to_string()),
        (Node::Null, _) => {
            out.extend_from_slice(b"null");
            Ok(())
        }
        (node @ (Node::Int | Node::Long), Conv::Date) => {
            semantic::date(out, integer(r, node)?);
            Ok(())
        }
        (node @ (Node::Int | Node::Long), Conv::Time(unit)) => {
            semantic::time(out, integer(r, node)?, *unit);
            Ok(())
        }
        (node @ (Node::Int | Node::Long), Conv::Timestamp(unit)) => {
            semantic::timestamp(out, integer(r, node)?, *unit);
            Ok(())
        }
        (Node::Bytes, Conv::Decimal { scale }) => {
            write_decimal(out, r.bytes()?, *scale, opts)?;
            Ok(())
        }
        (Node::Fixed(n), Conv::Decimal { scale }) => {
            write_decimal(out, r.take(*n)?, *scale, opts)?;
            Ok(())
        }
        (Node::Bytes, Conv::Bits { length }) => {
            let bytes = r.bytes()?;
            match semantic::bits_number(bytes)
                .filter(|_| opts.bits_as_number && length.is_some_and(|l| l <= 63))
            {
                Some(n) => out.extend_from_slice(n.to_string().as_bytes()),
                None => write_base64(out, bytes),
            }
            Ok(())
        }
        (Node::String, Conv::Json) => {
            let s = r.string()?;
            if !semantic::json_text(s, out) {
                write_str(out, s);
            }
            Ok(())
        }
        (Node::Record { fields, .. }, Conv::VariableScaleDecimal) => {
            let (mut scale, mut value) = (None, None);
            for f in fields {
                match (f.name.as_str(), &f.plan.node) {
                    ("scale", Node::Int) => scale = Some(r.int()? as i32),
                    ("value", Node::Bytes) => value = Some(r.bytes()?),
                    _ => skip(r, &f.plan)?,
                }
            }
            match (scale, value) {
                (Some(s), Some(v)) => write_decimal(out, v, s, opts)?,
                _ => return Err("a VariableScaleDecimal without scale or value".into()),
            }
            Ok(())
        }
        (Node::Record { fields, .. }, Conv::Point) => {
            // The coordinates are written where the point goes, so that the record's cap on
            // its size counts them, then taken back out: in a buffer of their own, coordinates
            // of forged arrays grew past it.
            let start = out.len();
            let (mut x, mut y) = (None, None);
            for f in fields {
                let at = out.len() - start;
                match f.name.as_str() {
                    "x" | "y" => write(r, &f.plan, opts, out)?,
                    _ => skip(r, &f.plan)?,
                }
                let span = at..out.len() - start;
                match f.name.as_str() {
                    "x" => x = Some(span),
                    "y" => y = Some(span),
                    _ => {}
                }
            }
            let written = out.split_off(start);
            let text = |span: Option<Range<usize>>| {
                span.map(|s| String::from_utf8_lossy(&written[s]).into_owned())
            };
            semantic::point(out, text(x).as_deref(), text(y).as_deref())
        }
        (node, _) => write_plain(r, node, opts, out),
    }
}

/// A row image (`before`, `after`): as [`write`], except that a string is written as a JSON
/// string whatever its semantic name. MongoDB's images are strings of Extended JSON named
/// `io.debezium.data.Json`, converted as a whole document (`mongodb.rs`: `$oid`, `$date`…, and
/// `_id`, which Elasticsearch refuses in a document), as the JSON decoder converts them.
pub fn write_image(
    r: &mut Reader<'_>,
    plan: &Plan,
    opts: &Options,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    match &plan.node {
        Node::Union(branches) => {
            let b = r.branch(branches)?;
            write_image(r, b, opts, out)
        }
        Node::String => r.json_string(out),
        _ => write(r, plan, opts, out),
    }
}

/// A value with no conversion (its children may have some).
fn write_plain(
    r: &mut Reader<'_>,
    node: &Node,
    opts: &Options,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    match node {
        Node::Null => out.extend_from_slice(b"null"),
        Node::Boolean => match r.take(1)?[0] {
            0 => out.extend_from_slice(b"false"),
            1 => out.extend_from_slice(b"true"),
            b => return Err(format!("an Avro boolean byte is {b}")),
        },
        Node::Int => semantic::push_i64(out, r.int()?),
        Node::Long => semantic::push_i64(out, r.long()?),
        Node::Float => {
            write_float(out, r.float()?);
        }
        Node::Double => {
            write_float(out, r.double()?);
        }
        Node::Bytes => write_base64(out, r.bytes()?),
        Node::Fixed(n) => write_base64(out, r.take(*n)?),
        Node::String => r.json_string(out)?,
        Node::Enum(symbols) => {
            let i = r.long()?;
            let s = usize::try_from(i)
                .ok()
                .and_then(|i| symbols.get(i))
                .ok_or_else(|| format!("Avro enum index {i} out of range"))?;
            out.extend_from_slice(s.as_bytes());
        }
        Node::Array(items) => {
            out.push(b'[');
            let mut first = true;
            blocks(r, |r| {
                if !std::mem::take(&mut first) {
                    out.push(b',');
                }
                write(r, items, opts, out)?;
                // Items that take no bytes may still write many (records of null fields).
                semantic::room(out, 0)
            })?;
            out.push(b']');
        }
        Node::Map(values) => {
            out.push(b'{');
            let mut first = true;
            blocks(r, |r| {
                if !std::mem::take(&mut first) {
                    out.push(b',');
                }
                r.json_string(out)?;
                out.push(b':');
                write(r, values, opts, out)?;
                semantic::room(out, 0)
            })?;
            out.push(b'}');
        }
        Node::Record { fields, .. } => write_record(r, fields, opts, out, |_, _| {})?,
        Node::Union(branches) => {
            let b = r.branch(branches)?;
            write(r, b, opts, out)?;
        }
    }
    Ok(())
}

/// Reads a record's fields and writes them as a JSON object, telling `each` where in `out`
/// each field's value (by the field's index in `fields`) was written.
pub fn write_record(
    r: &mut Reader<'_>,
    fields: &[Field],
    opts: &Options,
    out: &mut Vec<u8>,
    mut each: impl FnMut(usize, Range<usize>),
) -> Result<(), String> {
    out.push(b'{');
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&f.key);
        let start = out.len();
        write(r, &f.plan, opts, out).map_err(|e| format!("field `{}`: {e}", f.name))?;
        each(i, start..out.len());
    }
    out.push(b'}');
    Ok(())
}

/// Array and map items come in blocks: a count (negative: followed by a byte size), 0 ends.
/// The count comes from the data: items that take no bytes (nulls, empty records, empty
/// arrays) would let a forged count loop and write without end, so a record may not hold more
/// items, in all its arrays and maps together, than [`MAX_ITEMS_PER_BYTE`] per byte of it
/// (plus a few). Counted for the whole record, not per array: arrays of empty arrays, each
/// allowed as many items as the bytes left, asked for about 10¹² items of a 1 MB record.
fn blocks(
    r: &mut Reader<'_>,
    mut item: impl FnMut(&mut Reader<'_>) -> Result<(), String>,
) -> Result<(), String> {
    loop {
        let mut n = r.long()?;
        if n == 0 {
            return Ok(());
        }
        if n < 0 {
            n = n.checked_neg().ok_or("bad Avro block count")?;
            r.long()?;
        }
        r.items = usize::try_from(n)
            .ok()
            .and_then(|n| r.items.checked_sub(n))
            .ok_or_else(|| {
                format!("Avro block of {n} items is larger than the record could hold")
            })?;
        for _ in 0..n {
            item(r)?;
        }
    }
}

/// See [`blocks`].
const MAX_ITEMS_PER_BYTE: usize = 8;

/// Reads past one value without writing it: its structure is checked (lengths, union branches,
/// enum indexes, block counts), not what a conversion would make of it, nor its strings' UTF-8.
/// For the values no sink reads, such as an update's before image, whose conversion was a third
/// of the Avro decoder (docs/performance-log.md).
pub fn skip(r: &mut Reader<'_>, plan: &Plan) -> Result<(), String> {
    match &plan.node {
        Node::Null => {}
        Node::Boolean => match r.take(1)?[0] {
            0 | 1 => {}
            b => return Err(format!("an Avro boolean byte is {b}")),
        },
        Node::Int => {
            r.int()?;
        }
        Node::Long => {
            r.long()?;
        }
        Node::Float => {
            r.take(4)?;
        }
        Node::Double => {
            r.take(8)?;
        }
        Node::Bytes | Node::String => {
            r.bytes()?;
        }
        Node::Fixed(n) => {
            r.take(*n)?;
        }
        Node::Enum(symbols) => {
            let i = r.long()?;
            if usize::try_from(i)
                .ok()
                .filter(|i| *i < symbols.len())
                .is_none()
            {
                return Err(format!("Avro enum index {i} out of range"));
            }
        }
        Node::Array(items) => blocks(r, |r| skip(r, items))?,
        Node::Map(values) => blocks(r, |r| {
            r.bytes()?;
            skip(r, values)
        })?,
        Node::Record { fields, .. } => {
            // Counted with the items (see `blocks`): an array of records that take no bytes
            // (records of empty records) writes nothing when skipped, so no cap on its size
            // ends it, and items of 32 767 such records each kept a thread for an hour.
            r.items = r.items.checked_sub(1).ok_or(
                "the Avro value holds more records than its size allows (records that take no bytes?)",
            )?;
            for f in fields {
                skip(r, &f.plan).map_err(|e| format!("field `{}`: {e}", f.name))?;
            }
        }
        Node::Union(branches) => {
            let b = r.branch(branches)?;
            skip(r, b)?;
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::decode::avro::plan::compile;

    pub(crate) fn zz(v: i64) -> Vec<u8> {
        let mut n = ((v << 1) ^ (v >> 63)) as u64;
        let mut out = vec![];
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    #[test]
    fn varints_are_zigzag() {
        for v in [
            0,
            -1,
            1,
            63,
            -64,
            64,
            300,
            -300,
            i32::MAX as i64,
            i64::MIN,
            i64::MAX,
            -65,
        ] {
            // Followed by another varint: each read stops at its own last byte.
            let mut data = zz(v);
            data.extend(zz(-3));
            let mut r = Reader::new(&data);
            assert_eq!(r.long().unwrap(), v);
            assert_eq!(r.pos, zz(v).len(), "{v}");
            assert_eq!(r.long().unwrap(), -3);
        }
        for cut in [&[][..], &[0x80], &[0xff, 0xff, 0xff]] {
            assert!(Reader::new(cut).long().unwrap_err().contains("ends early"));
        }
        // The tenth byte may hold the 64th bit and nothing more.
        let mut tenth = vec![0xff; 9];
        tenth.push(0x01);
        assert_eq!(Reader::new(&tenth).long().unwrap(), i64::MIN);
        for last in [0x7f, 0x02, 0x81] {
            tenth[9] = last;
            tenth.push(0x00);
            let e = Reader::new(&tenth).long().unwrap_err();
            assert_eq!(e, "an Avro varint overflows 64 bits", "{last:#x}");
            tenth.pop();
        }
        let long = Reader::new(&[0xff; 11]).long().unwrap_err();
        assert_eq!(long, "an Avro varint overflows 64 bits");
    }

    #[test]
    fn floats_are_spelled_as_kafka_connect_spells_them() {
        let plan = compile(
            r#"{"type":"record","name":"r","fields":[{"name":"d","type":"double"},{"name":"f","type":"float"}]}"#,
        )
        .unwrap();
        for (d, f, want) in [
            (
                f64::INFINITY,
                f32::NEG_INFINITY,
                r#"{"d":"Infinity","f":"-Infinity"}"#,
            ),
            (f64::NAN, 1.5, r#"{"d":"NaN","f":1.5}"#),
            // Java's notation: scientific outside 10⁻³ ≤ |x| < 10⁷, as the JSON topic's text.
            (1e7, 1e-5, r#"{"d":1.0E7,"f":1.0E-5}"#),
            (2.0, 0.001, r#"{"d":2.0,"f":0.001}"#),
            (-1.2345e-4, 9_999_999.0, r#"{"d":-1.2345E-4,"f":9999999.0}"#),
            (1.5e300, f32::MAX, r#"{"d":1.5E300,"f":3.4028235E38}"#),
            (-0.0, 0.0, r#"{"d":-0.0,"f":0.0}"#),
            (123_456.789, -1.0e7, r#"{"d":123456.789,"f":-1.0E7}"#),
        ] {
            let mut data = d.to_le_bytes().to_vec();
            data.extend(f.to_le_bytes());
            let mut out = Vec::new();
            write(
                &mut Reader::new(&data),
                &plan,
                &Options::default(),
                &mut out,
            )
            .unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }

    #[test]
    fn an_int_with_a_logical_type_is_read_as_an_int() {
        for ty in [
            r#"{"type":"int","logicalType":"date"}"#,
            r#"{"type":"int","logicalType":"time-millis"}"#,
        ] {
            let plan = compile(&format!(
                r#"{{"type":"record","name":"r","fields":[{{"name":"v","type":{ty}}}]}}"#
            ))
            .unwrap();
            let mut out = Vec::new();
            let e = write(
                &mut Reader::new(&zz(1 << 40)),
                &plan,
                &Options::default(),
                &mut out,
            )
            .unwrap_err();
            assert!(e.contains("Avro int out of range"), "{ty}: {e}");
            out.clear();
            write(
                &mut Reader::new(&zz(1)),
                &plan,
                &Options::default(),
                &mut out,
            )
            .unwrap();
        }
    }

    #[test]
    fn a_forged_block_count_of_empty_items_is_an_error_not_an_endless_loop() {
        let written = |data: &[u8], plan: &Plan| {
            let mut out = Vec::new();
            let r = write(&mut Reader::new(data), plan, &Options::default(), &mut out);
            (r, out)
        };
        let plan = compile(
            r#"{"type":"record","name":"r","fields":[{"name":"n","type":{"type":"array","items":"null"}}]}"#,
        )
        .unwrap();
        let mut data = zz(i64::MAX / 2);
        data.extend(zz(0));
        let err = written(&data, &plan).0.unwrap_err();
        assert!(err.contains("larger than the record could hold"), "{err}");
        // A small array of nulls is fine.
        let mut data = zz(3);
        data.extend(zz(0));
        let (r, out) = written(&data, &plan);
        r.unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"n":[null,null,null]}"#);

        // Arrays of empty arrays: each inner count within what the bytes left could hold, but
        // not all of them together. Written and skipped alike.
        let plan = compile(
            r#"{"type":"record","name":"r","fields":[{"name":"n","type":{"type":"array","items":{"type":"array","items":"null"}}}]}"#,
        )
        .unwrap();
        let inner = 1000;
        let mut data = zz(inner);
        for _ in 0..inner {
            data.extend(zz(1000));
            data.extend(zz(0));
        }
        data.extend(zz(0));
        let (r, out) = written(&data, &plan);
        let err = r.unwrap_err();
        assert!(err.contains("larger than the record could hold"), "{err}");
        assert!(out.len() < 100 * data.len(), "{} bytes written", out.len());
        let err = skip(&mut Reader::new(&data), &plan).unwrap_err();
        assert!(err.contains("larger than the record could hold"), "{err}");
    }

    #[test]
    fn records_that_take_no_bytes_cannot_be_skipped_without_bound() {
        // Each A_k holds two A_(k-1): an item of A10 is 2 047 records of no bytes.
        let mut schema = r#"{"type":"record","name":"A0","fields":[]}"#.to_string();
        for k in 1..=10 {
            schema = format!(
                r#"{{"type":"record","name":"A{k}","fields":[{{"name":"a","type":{schema}}},{{"name":"b","type":"A{}"}}]}}"#,
                k - 1
            );
        }
        let plan = compile(&format!(
            r#"{{"type":"record","name":"r","fields":[{{"name":"a","type":{{"type":"array","items":{schema}}}}},{{"name":"s","type":"string"}}]}}"#
        ))
        .unwrap();
        // As many items as the record's size allows (8 a byte), 160 million records.
        let mut data = zz(80_000);
        data.extend(zz(0));
        data.extend(zz(10_000));
        data.extend([b'x'; 10_000]);
        let Err(err) = skip(&mut Reader::new(&data), &plan) else {
            panic!("160 million records were skipped");
        };
        assert!(err.contains("more records than its size allows"), "{err}");
        // A value of records that take bytes is skipped as before.
        let plan = compile(
            r#"{"type":"array","items":{"type":"record","name":"p","fields":[{"name":"x","type":"int"}]}}"#,
        )
        .unwrap();
        let mut data = zz(1000);
        data.extend([2; 1000]);
        data.extend(zz(0));
        let mut r = Reader::new(&data);
        skip(&mut r, &plan).unwrap();
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn items_that_take_no_bytes_cannot_write_without_bound() {
        // An array of records of 500 null fields: each item 0 bytes read, about 13 KB written;
        // the 4 000-byte string after it lets the record hold 32 000 items, 430 MB written.
        let fields: Vec<String> = (0..500)
            .map(|i| format!(r#"{{"name":"a_rather_long_name_{i:03}","type":"null"}}"#))
            .collect();
        let plan = compile(&format!(
            r#"{{"type":"record","name":"r","fields":[
                {{"name":"a","type":{{"type":"array","items":{{"type":"record","name":"e","fields":[{}]}}}}}},
                {{"name":"s","type":"string"}}]}}"#,
            fields.join(",")
        ))
        .unwrap();
        let mut data = zz(30_000);
        data.extend(zz(0));
        data.extend(zz(4000));
        data.extend([b'x'; 4000]);
        let mut out = Vec::new();
        let err = write(
            &mut Reader::new(&data),
            &plan,
            &Options::default(),
            &mut out,
        )
        .unwrap_err();
        assert!(err.contains("larger than 64 MiB"), "{err}");
        assert!(
            out.len() < semantic::MAX_IMAGE + 20_000,
            "{} bytes",
            out.len()
        );
    }

    #[test]
    fn skipping_a_value_reads_past_exactly_what_writing_it_would() {
        let plan = compile(
            r#"{"type":"record","name":"r","fields":[
                {"name":"n","type":"null"},
                {"name":"t","type":"boolean"},
                {"name":"i","type":"int"},
                {"name":"l","type":{"type":"long","connect.name":"io.debezium.time.Timestamp"}},
                {"name":"f","type":"float"},
                {"name":"d","type":"double"},
                {"name":"b","type":{"type":"bytes","connect.name":"org.apache.kafka.connect.data.Decimal","connect.parameters":{"scale":"2"}}},
                {"name":"s","type":["null","string"]},
                {"name":"x","type":{"type":"fixed","name":"F","size":3}},
                {"name":"e","type":{"type":"enum","name":"E","symbols":["a","b","c"]}},
                {"name":"a","type":{"type":"array","items":{"type":"record","name":"I","fields":[
                    {"name":"v","type":"long"}]}}},
                {"name":"m","type":{"type":"map","values":"string"}}]}"#,
        )
        .unwrap();
        let mut data = vec![];
        data.push(1); // t
        data.extend(zz(-7)); // i
        data.extend(zz(1_700_000_000_000)); // l
        data.extend(1.5f32.to_le_bytes());
        data.extend(2.5f64.to_le_bytes());
        data.extend(zz(2));
        data.extend([0x30, 0x39]); // b: 123.45
        let branch_at = data.len();
        data.extend(zz(1));
        data.extend(zz(3));
        data.extend(b"abc"); // s
        data.extend(b"xyz"); // x
        let enum_at = data.len();
        data.extend(zz(2)); // e
        data.extend(zz(-2)); // a: a block of 2 records, with its size
        data.extend(zz(2));
        data.extend(zz(5));
        data.extend(zz(-5));
        data.extend(zz(0));
        data.extend(zz(1)); // m
        data.extend(zz(1));
        data.extend(b"k");
        data.extend(zz(2));
        data.extend(b"vw");
        data.extend(zz(0));
        let mut written = Reader::new(&data);
        write(&mut written, &plan, &Options::default(), &mut Vec::new()).unwrap();
        assert_eq!(written.remaining(), 0);
        // Followed by more data, as a before image is by the rest of its envelope.
        let mut more = data.clone();
        more.extend(zz(9));
        let mut skipped = Reader::new(&more);
        skip(&mut skipped, &plan).unwrap();
        assert_eq!(skipped.pos, data.len());
        assert_eq!(skipped.long().unwrap(), 9);
        // Short by any number of bytes, it is an error, as writing it is.
        for cut in 1..data.len() {
            let mut short = Reader::new(&data[..data.len() - cut]);
            assert!(skip(&mut short, &plan).is_err(), "cut {cut}");
        }
        // An enum index or a union branch that does not exist, or a bad boolean byte.
        let refused = |at: usize, byte: u8| {
            let mut bad = data.clone();
            bad[at] = byte;
            skip(&mut Reader::new(&bad), &plan).unwrap_err()
        };
        assert!(refused(enum_at, 6).contains("enum index 3"));
        assert!(refused(0, 2).contains("boolean byte is 2"));
        assert!(refused(branch_at, 4).contains("branch 2"));
    }

    #[test]
    fn a_point_becomes_a_geo_point_and_its_coordinates_count_against_the_cap() {
        let point = |x: &str| {
            compile(&format!(
                r#"{{"type":"record","name":"Point","namespace":"io.debezium.data.geometry",
                    "connect.name":"io.debezium.data.geometry.Point","fields":[
                    {{"name":"x","type":{x}}},{{"name":"y","type":"double"}},
                    {{"name":"wkb","type":["null","bytes"]}},{{"name":"srid","type":["null","int"]}}]}}"#
            ))
            .unwrap()
        };
        let mut data = 1.5f64.to_le_bytes().to_vec();
        data.extend((-2.25f64).to_le_bytes());
        data.extend(zz(1)); // wkb: the bytes branch, 3 bytes
        data.extend(zz(3));
        data.extend([1, 2, 3]);
        data.extend(zz(1)); // srid 4326
        data.extend(zz(4326));
        let mut r = Reader::new(&data);
        let mut out = b"{\"p\":".to_vec();
        write(&mut r, &point("\"double\""), &Options::default(), &mut out).unwrap();
        assert_eq!(r.remaining(), 0, "wkb and srid are read past");
        assert_eq!(out, br#"{"p":{"lat":-2.25,"lon":1.5}"#);

        // A coordinate that is no number is refused, naming both.
        let mut nan = f64::NAN.to_le_bytes().to_vec();
        nan.extend_from_slice(&data[8..]);
        let Err(err) = write(
            &mut Reader::new(&nan),
            &point("\"double\""),
            &Options::default(),
            &mut Vec::new(),
        ) else {
            panic!("a NaN coordinate was taken")
        };
        assert!(err.contains("x \"NaN\", y -2.25"), "{err}");
        // A long one is quoted in part: the message goes into logs and dead-letter headers.
        let mut long = zz(10_000);
        long.extend([b'7'; 10_000]);
        long.extend_from_slice(&data[8..]);
        let Err(err) = write(
            &mut Reader::new(&long),
            &point("\"string\""),
            &Options::default(),
            &mut Vec::new(),
        ) else {
            panic!("a string coordinate was taken")
        };
        assert!(
            err.len() < 300,
            "{} bytes: {}",
            err.len(),
            crate::decode::excerpt(&err)
        );

        // A forged point whose x is an array of records of null fields: the coordinates are
        // written where the record's value is, so the cap sees them at once. In a buffer of
        // their own they would grow unchecked by what the value holds already.
        let fields: Vec<String> = (0..200)
            .map(|i| format!(r#"{{"name":"null_field_{i:03}","type":"null"}}"#))
            .collect();
        let forged = point(&format!(
            r#"{{"type":"array","items":{{"type":"record","name":"e","fields":[{}]}}}}"#,
            fields.join(",")
        ));
        let mut data = zz(100);
        data.extend(zz(0));
        data.extend([0u8; 64]); // y, and room for the items
        let mut out = vec![b' '; semantic::MAX_IMAGE - 1000];
        let Err(err) = write(
            &mut Reader::new(&data),
            &forged,
            &Options::default(),
            &mut out,
        ) else {
            panic!("the forged point was taken")
        };
        assert!(err.contains("larger than 64 MiB"), "{err}");
        assert!(
            out.len() < semantic::MAX_IMAGE + 10_000,
            "{} bytes",
            out.len()
        );
    }

    #[test]
    fn a_record_becomes_its_document() {
        let plan = compile(
            r#"{"type":"record","name":"r","fields":[
                {"name":"id","type":"long"},
                {"name":"name","type":["null","string"]},
                {"name":"d","type":{"type":"int","connect.name":"io.debezium.time.Date"}},
                {"name":"w","type":"double"},
                {"name":"tags","type":{"type":"array","items":"string"}},
                {"name":"m","type":{"type":"map","values":"int"}},
                {"name":"b","type":"bytes"}]}"#,
        )
        .unwrap();
        let mut data = zz(1004);
        data.extend(zz(1));
        data.extend(zz(4));
        data.extend(b"Anne");
        data.extend(zz(19_783));
        data.extend(2.0f64.to_le_bytes());
        data.extend(zz(-2)); // a block of 2 items, with its size
        data.extend(zz(4));
        data.extend(zz(1));
        data.extend(b"a");
        data.extend(zz(1));
        data.extend(b"b");
        data.extend(zz(0));
        data.extend(zz(1));
        data.extend(zz(1));
        data.extend(b"k");
        data.extend(zz(7));
        data.extend(zz(0));
        data.extend(zz(2));
        data.extend([1, 0xff]);
        let mut r = Reader::new(&data);
        let mut out = Vec::new();
        write(&mut r, &plan, &Options::default(), &mut out).unwrap();
        assert_eq!(r.remaining(), 0);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"id":1004,"name":"Anne","d":"2024-03-01","w":2.0,"tags":["a","b"],"m":{"k":7},"b":"Af8="}"#
        );
        let mut short = Reader::new(&data[..data.len() - 1]);
        assert!(
            write(&mut short, &plan, &Options::default(), &mut Vec::new())
                .unwrap_err()
                .contains("ends early")
        );
    }
}
