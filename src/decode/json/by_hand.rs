//! A JSON envelope read by a reader of our own, in one pass over the text: `source`'s fields
//! read, the after image taken as it is (JSON without schema) or converted by its schema's
//! struct (`StructConv`, as `one_pass` converts it), everything else checked and passed over.
//!
//! Why not serde_json here: counted by callgrind in the end-to-end worker without schema,
//! serde's walk took about 2 500 instructions per change event to check an after image it only
//! hands on as text (`RawValue`), and about 3 800 for `source`'s fields through the derived
//! visitor; serde cannot skip a value without walking it, nor say where its walk stands, so no
//! second reader can take part of that work off it (docs/performance-log.md). This reader
//! walks the whole record once and reads only what the sinks use.
//!
//! It reads the common shape only, and gives up on anything else: any escape (`\`) or control
//! character in a string, a field given twice, a record without `op` (schema changes,
//! heartbeats, transaction records), a `schema`/`payload` wrapper, an image that is not an
//! object or null (MongoDB's strings), a `source` member serde would refuse, an integer
//! written `-0` (serde_json reads it as a float), nesting deeper than [`MAX_DEPTH`]. The record is then read by serde (`one_pass`, then the slower way that
//! names what is wrong), so this reader only has to agree with serde on what it accepts: the
//! unit test below checks that over mutations of every recorded envelope.

use std::borrow::Cow;
use std::cell::Cell;

use super::super::schema::{Conv, StructConv};
use super::super::source::{Inline, Member};
use super::super::{Options, Row};
use super::{Top, to_row, write_value};

/// Containers nested deeper than this are left to serde (serde_json's own limit is 128).
const MAX_DEPTH: u32 = 64;

/// Reads `text` into `top`, which must be empty (`Top::empty`); `conv`: the row images'
/// conversion (`Conv::Keep` without schema). `false` when the reader gives up, and `top` then
/// holds part of what was read.
/// `row_len`: the length of the last converted after image, updated.
pub(super) fn read<'a>(
    text: &'a str,
    conv: &Conv,
    opts: &Options,
    row_len: &Cell<usize>,
    top: &mut Top<'a, Inline<'a>>,
) -> bool {
    let images = Images {
        conv,
        opts,
        row_len,
    };
    envelope(&mut Cursor { text, at: 0 }, &images, top).is_some()
}

/// How row images become rows.
struct Images<'c> {
    conv: &'c Conv,
    opts: &'c Options,
    row_len: &'c Cell<usize>,
}

impl Images<'_> {
    /// The after image at the cursor: `None` for null. Anything but an object or null
    /// (MongoDB's images are strings of Extended JSON) is left to serde, and so is a value its
    /// conversion refuses (the slower way names it).
    fn after(&self, c: &mut Cursor<'_>) -> Read<Option<Row>> {
        match (c.peek()?, self.conv) {
            (b'{', Conv::Struct(st)) => {
                // Sized by the last image: one a little larger fits, one less than half as long
                // is moved once (`Row::from_bytes`). From 256 bytes, the buffer of a 6 KB record
                // grew twice, moved each time; sized so, the end-to-end worker on 6 KB records
                // counted 0.7% fewer instructions (callgrind).
                let last = self.row_len.get();
                let mut out = Vec::with_capacity((last + last / 4).max(128));
                convert(c, st, self.opts, &mut out, 0)?;
                self.row_len.set(out.len());
                Some(Some(Row::from_bytes(out)))
            }
            (b'{', _) => to_row(c.value(0)?, self.conv, self.opts).ok().map(Some),
            _ => c.null(),
        }
    }
}

/// A struct's members converted into `out` as `one_pass` converts them (`Struct`): each name
/// written by the schema, nested structs walked here, other values by `write_value`.
fn convert(
    c: &mut Cursor<'_>,
    st: &StructConv,
    opts: &Options,
    out: &mut Vec<u8>,
    depth: u32,
) -> Read<()> {
    if c.peek()? == b'n' {
        c.literal(b"null")?;
        out.extend_from_slice(b"null");
        return Some(());
    }
    if depth >= MAX_DEPTH {
        return None;
    }
    out.push(b'{');
    let mut i = 0;
    c.object(|c, name| {
        if i > 0 {
            out.push(b',');
        }
        let conv = st.write_name(out, name, i);
        i += 1;
        match conv {
            Conv::Struct(inner) if c.peek()? == b'{' || c.peek()? == b'n' => {
                convert(c, inner, opts, out, depth + 1)
            }
            // A struct's value that is neither: serde's way refuses it, naming it.
            Conv::Struct(_) => None,
            // `-0` is left to serde, which reads it as a float and refuses it where a date,
            // time or timestamp wants an integer (`write_value` would take it as 0).
            conv => match c.value(depth + 1)? {
                "-0" => None,
                raw => write_value(raw, conv, opts, out).ok(),
            },
        }
    })?;
    out.push(b'}');
    Some(())
}

/// `None`: the reader gives up, and serde reads the record.
type Read<T> = Option<T>;

fn envelope<'a>(
    c: &mut Cursor<'a>,
    images: &Images<'_>,
    top: &mut Top<'a, Inline<'a>>,
) -> Read<()> {
    c.ws();
    let (mut seen, mut before) = (0u8, None);
    c.object(|c, name| {
        let bit = match name {
            "before" => 0,
            "after" => 1,
            "source" => 2,
            "op" => 3,
            "ts_ms" => 4,
            // Not a change event, or a schema around one.
            "schema" | "payload" | "ddl" | "tableChanges" | "status" | "event_count" => {
                return None;
            }
            _ => return c.skip(0),
        };
        if seen & 1 << bit != 0 {
            return None;
        }
        seen |= 1 << bit;
        match bit {
            0 => before = image(c)?,
            1 => top.after_row = images.after(c)?,
            2 => {
                top.source = match c.peek()? {
                    b'{' => Some(source(c)?),
                    _ => c.null()?,
                }
            }
            3 => {
                top.op = match c.peek()? {
                    b'"' => Some(Cow::Borrowed(c.string()?)),
                    _ => c.null()?,
                }
            }
            _ => {
                top.ts_ms = match c.peek()? {
                    b'n' => c.null()?,
                    _ => Some(c.integer()?),
                }
            }
        }
        Some(())
    })?;
    c.ws();
    if c.at != c.text.len() {
        return None;
    }
    // Only a delete's before image is read (`ChangeEvent::before`).
    if top.op.as_deref()? == "d" {
        top.before_row = match before {
            Some(text) => Some(to_row(text, images.conv, images.opts).ok()?),
            None => None,
        };
    }
    Some(())
}

/// A row image passed over: an object's text, or `None` for null. Anything else (MongoDB's
/// images are strings of Extended JSON) is left to serde.
fn image<'a>(c: &mut Cursor<'a>) -> Read<Option<&'a str>> {
    match c.peek()? {
        b'{' => c.value(0).map(Some),
        _ => c.null(),
    }
}

/// `source`'s fields, each read from its text as serde's derived reading would.
fn source<'a>(c: &mut Cursor<'a>) -> Read<Inline<'a>> {
    let (mut inline, mut seen) = (Inline::empty(), 0u32);
    c.object(|c, name| {
        let Some(member) = Member::of(name) else {
            return c.skip(1);
        };
        let bit = 1 << member as u32;
        if seen & bit != 0 {
            return None;
        }
        seen |= bit;
        let start = c.at;
        // A string member's content taken as it is (it has no escapes). A member kept as raw
        // text (`snapshot`) is read again as a value: taking every member as a value first
        // cost 1.2% more instructions over the `hot` run without schema.
        if c.peek()? == b'"' && inline.set_plain_str(member, c.string()?) {
            return Some(());
        }
        c.at = start;
        inline.set(member, c.value(1)?).ok()
    })?;
    Some(inline)
}

struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.at).copied()
    }

    /// JSON's whitespace.
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Read<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    fn literal(&mut self, word: &[u8]) -> Read<()> {
        self.bytes()
            .get(self.at..)?
            .starts_with(word)
            .then(|| self.at += word.len())
    }

    /// `null`, as `None` of any type.
    fn null<T>(&mut self) -> Read<Option<T>> {
        self.literal(b"null").map(|()| None)
    }

    /// A string without escapes or control characters, at its opening quote: its content.
    fn string(&mut self) -> Read<&'a str> {
        let start = self.at + 1;
        self.skip_string()?;
        // Between two ASCII quotes: on character boundaries.
        self.text.get(start..self.at - 1)
    }

    /// The same, only passed over.
    fn skip_string(&mut self) -> Read<()> {
        self.eat(b'"')?;
        let end = self.at + plain_len(self.bytes().get(self.at..)?);
        // `plain_len` stops at the first quote, backslash or control character.
        if self.bytes().get(end) != Some(&b'"') {
            return None;
        }
        self.at = end + 1;
        Some(())
    }

    /// A number, by JSON's grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Read<()> {
        let b = self.bytes();
        let digits = |mut i: usize| {
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            i
        };
        let mut i = self.at + usize::from(b.get(self.at) == Some(&b'-'));
        i = match b.get(i)? {
            b'0' => i + 1,
            b'1'..=b'9' => digits(i + 1),
            _ => return None,
        };
        if b.get(i) == Some(&b'.') {
            let end = digits(i + 1);
            if end == i + 1 {
                return None;
            }
            i = end;
        }
        if let Some(b'e' | b'E') = b.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            let end = digits(i);
            if end == i {
                return None;
            }
            i = end;
        }
        self.at = i;
        Some(())
    }

    /// An integer as serde reads one into an `i64`: not `-0`, which serde_json reads as a float.
    fn integer(&mut self) -> Read<i64> {
        let start = self.at;
        self.number()?;
        match self.text.get(start..self.at)? {
            "-0" => None,
            digits => digits.parse().ok(),
        }
    }

    /// Any JSON value: its text.
    fn value(&mut self, depth: u32) -> Read<&'a str> {
        let start = self.at;
        self.skip(depth)?;
        self.text.get(start..self.at)
    }

    /// Any JSON value, passed over.
    fn skip(&mut self, depth: u32) -> Read<()> {
        match self.peek()? {
            b'"' => self.skip_string(),
            b'{' if depth < MAX_DEPTH => self.members(|c| {
                c.skip_string()?;
                c.colon()?;
                c.skip(depth + 1)
            }),
            b'[' if depth < MAX_DEPTH => self.array(depth + 1),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// An object, at its `{`: `member` reads each member's value, given its name.
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a str) -> Read<()>) -> Read<()> {
        self.members(|c| {
            let name = c.string()?;
            c.colon()?;
            member(c, name)
        })
    }

    /// The `:` between a member's name and its value, with the whitespace around it.
    fn colon(&mut self) -> Read<()> {
        self.ws();
        self.eat(b':')?;
        self.ws();
        Some(())
    }

    /// An object, at its `{`: `member` reads each member, its name, `:` and value.
    fn members(&mut self, member: impl FnMut(&mut Self) -> Read<()>) -> Read<()> {
        self.list(b'{', b'}', member)
    }

    /// An array, at its `[`; its items at `depth`.
    fn array(&mut self, depth: u32) -> Read<()> {
        self.list(b'[', b']', |c| c.skip(depth))
    }

    /// `open`, items separated by commas, `close`: an object's members or an array's items.
    fn list(
        &mut self,
        open: u8,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Read<()>,
    ) -> Read<()> {
        self.eat(open)?;
        self.ws();
        if self.eat(close).is_some() {
            return Some(());
        }
        loop {
            item(self)?;
            self.ws();
            match self.peek()? {
                b',' => {
                    self.at += 1;
                    self.ws();
                }
                b if b == close => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

/// How many bytes of `b` come before its first quote, backslash or control character (all of
/// them if none does). Eight bytes at a time: in each 64-bit word, a byte's top bit is set in
/// `found` where the byte is a quote or a backslash (it is zero once XORed with one) or below
/// 0x20; a bit can also be set wrongly, but only above a byte rightly found, so the lowest is
/// right. Bytes of 0x80 and above are never found (`& !x` clears their top bit).
fn plain_len(b: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const TOPS: u64 = 0x8080_8080_8080_8080;
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x;
    let mut i = 0;
    while let Some(word) = b.get(i..i + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) {
        let w = u64::from_le_bytes(word);
        let found = (below(w ^ (ONES * u64::from(b'"')), 1)
            | below(w ^ (ONES * u64::from(b'\\')), 1)
            | below(w, 0x20))
            & TOPS;
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + b[i..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .unwrap_or(b.len() - i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::json::{one_pass, to_row};
    use crate::decode::schema::ConnectSchema;

    /// What [`read`] fills in, or `None` when it gives up.
    fn by_hand<'a>(text: &'a str, conv: &Conv) -> Option<Top<'a, Inline<'a>>> {
        let mut top = Top::empty();
        read(text, conv, &Options::default(), &Cell::new(0), &mut top).then_some(top)
    }

    /// The same text through serde's one-pass read, converting the after image as the
    /// decoder has it do (a struct's conversion in the pass, any other after it).
    fn by_serde<'a>(text: &'a str, conv: &Conv) -> Option<Top<'a, Inline<'a>>> {
        let mut top = Top::empty();
        let after = match conv {
            Conv::Struct(st) => Some(&**st),
            _ => None,
        };
        one_pass::read(text, after, &Options::default(), &mut top).then_some(top)
    }

    /// Where the reader accepts `text`, serde accepts it too and reads the same: `op`, `ts_ms`,
    /// the after image, a delete's before image, and `source` as it becomes a [`Source`] (as a
    /// snapshot read and not). Returns whether the reader accepted it.
    fn agrees(text: &str, conv: &Conv) -> bool {
        let Some(mut ours) = by_hand(text, conv) else {
            return false;
        };
        let mut theirs =
            by_serde(text, conv).unwrap_or_else(|| panic!("serde refuses what we took: {text}"));
        // As `JsonConverter::envelope` makes rows of what the pass left as raw text.
        let row = |raw: Option<&serde_json::value::RawValue>| {
            raw.filter(|r| r.get() != "null")
                .map(|r| to_row(r.get(), conv, &Options::default()).expect(text))
        };
        theirs.after_row = theirs.after_row.take().or_else(|| row(theirs.after));
        assert_eq!(ours.op, theirs.op, "{text}");
        assert_eq!(ours.ts_ms, theirs.ts_ms, "{text}");
        assert_eq!(ours.after_row, theirs.after_row, "{text}");
        let delete = ours.op.as_deref() == Some("d");
        assert_eq!(
            ours.before_row.take(),
            if delete { row(theirs.before) } else { None },
            "{text}"
        );
        for read in [false, true] {
            let source = |t: &Top<'_, Inline<'_>>| t.source.as_ref().map(|s| s.source(read));
            assert_eq!(source(&ours), source(&theirs), "{text}");
        }
        assert!(
            theirs.schema.is_none() && theirs.payload.is_none() && theirs.ddl.is_none(),
            "{text}"
        );
        true
    }

    /// Every recorded change event's envelope (a `payload`'s, for those with schema), with its
    /// row images' conversion as the decoder compiles it from the schema.
    fn envelopes() -> Vec<(String, Conv)> {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/debezium/envelopes"
        );
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if !path.to_string_lossy().contains("_value_") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            match value.get("payload") {
                Some(p) if p.get("op").is_some() => {
                    let schema = ConnectSchema::parse(&value["schema"].to_string()).unwrap();
                    let row = schema.field("after").or_else(|| schema.field("before"));
                    found.push((
                        p.to_string(),
                        row.map_or(Conv::Keep, ConnectSchema::compile),
                    ));
                }
                Some(_) => {}
                None if value.get("op").is_some() => found.push((text, Conv::Keep)),
                None => {}
            }
        }
        // Few recorded schemas convert anything: two more whose after image has dates,
        // timestamps, decimals and a nested struct to convert.
        let conv = ConnectSchema::parse(
            r#"{"type":"struct","fields":[{"type":"int32","field":"id"},
            {"type":"int32","name":"io.debezium.time.Date","field":"d"},
            {"type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"2"},"field":"price"},
            {"type":"struct","field":"inner","optional":true,"fields":[
              {"type":"int64","name":"io.debezium.time.MicroTimestamp","field":"at"}]}]}"#,
        )
        .unwrap()
        .compile();
        assert!(matches!(conv, Conv::Struct(_)), "{conv:?}");
        let row = r#"{"id":1,"d":19782,"price":"AeI=","inner":{"at":1709300707123456}}"#;
        let source = r#"{"version":"2.7.0","connector":"postgresql","db":"inv","schema":"public","table":"t","ts_ms":5,"snapshot":"false","lsn":123,"sequence":null,"txId":7}"#;
        for (before, after, op) in [
            (
                row,
                r#"{"id":1,"d":-3,"price":"AA==","inner":null,"extra":[1,{"a":"b"}]}"#,
                "u",
            ),
            (row, "null", "d"),
        ] {
            found.push((
                format!(
                    r#"{{"before":{before},"after":{after},"source":{source},"op":"{op}","ts_ms":6}}"#
                ),
                conv.clone(),
            ));
        }
        found
    }

    #[test]
    fn recorded_envelopes_are_read_as_serde_reads_them() {
        let all = envelopes();
        let taken = all.iter().filter(|(t, conv)| agrees(t, conv)).count();
        // Only those with an escaped string are left to serde.
        for (left, conv) in &all {
            if by_hand(left, conv).is_none() {
                assert!(left.contains('\\'), "left to serde: {left}");
            }
        }
        assert!(taken >= 25, "{taken} of {}", all.len());
        // With schema and a conversion to make, among them.
        let converted = all
            .iter()
            .filter(|(t, conv)| matches!(conv, Conv::Struct(_)) && by_hand(t, conv).is_some())
            .count();
        assert!(converted >= 3, "{converted}");
    }

    #[test]
    fn mutated_envelopes_are_read_as_serde_reads_them_or_left_to_it() {
        const BYTES: &[u8] = b"{}[]\":,\\ \t\n\r0123456789-+.eEnultrfasdx\x01\x1f\x7f";
        const VALUES: [&str; 14] = [
            "-0",
            "0",
            "-1",
            "1.0",
            "1e5",
            "18446744073709551616",
            "null",
            "true",
            r#""x""#,
            r#""-0""#,
            "{}",
            "[]",
            r#"{"a":[1,{"b":null}]}"#,
            r#""é\u00e9""#,
        ];
        const NAMES: [&str; 15] = [
            "op",
            "ts_ms",
            "before",
            "after",
            "source",
            "db",
            "connector",
            "pos",
            "row",
            "file",
            "lsn",
            "snapshot",
            "sequence",
            "d",
            "at",
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        let (mut tried, mut ours, mut serde) = (0, 0, 0);
        let mut check = |text: &str, conv: &Conv| {
            tried += 1;
            serde += usize::from(by_serde(text, conv).is_some());
            ours += usize::from(agrees(text, conv));
        };
        for (base, conv) in envelopes() {
            let b = base.as_bytes();
            // Bytes deleted, inserted, replaced; spans repeated.
            for _ in 0..2_000 {
                let mut m = b.to_vec();
                let at = rng.usize(..m.len());
                match rng.u8(..4) {
                    0 => drop(m.drain(at..(at + rng.usize(1..3)).min(m.len()))),
                    1 => m.insert(at, BYTES[rng.usize(..BYTES.len())]),
                    2 => m[at] = BYTES[rng.usize(..BYTES.len())],
                    _ => {
                        let end = (at + rng.usize(1..40)).min(m.len());
                        let span = m[at..end].to_vec();
                        m.splice(end..end, span);
                    }
                }
                if let Ok(text) = String::from_utf8(m) {
                    check(&text, &conv);
                }
            }
            // Each field's value swapped for values of other types and edge cases, and each
            // field given twice, at the top and in `source`.
            for name in NAMES {
                let key = format!(r#""{name}":"#);
                if let Some(at) = base.find(&key).map(|i| i + key.len()) {
                    let end = at + base[at..].find([',', '}']).unwrap_or(0);
                    for value in VALUES {
                        check(&format!("{}{value}{}", &base[..at], &base[end..]), &conv);
                    }
                }
                for after in ["{", r#""source":{"#] {
                    if let Some(at) = base.find(after).map(|i| i + after.len()) {
                        check(&format!("{}{key}null,{}", &base[..at], &base[at..]), &conv);
                    }
                }
            }
        }
        // The comparison means something only if both read many of them.
        assert!(tried > 60_000, "{tried}");
        assert!(
            ours * 3 > serde * 2 && serde * 5 > tried * 2,
            "{ours} {serde} {tried}"
        );
    }

    #[test]
    fn plain_len_stops_where_a_byte_loop_does() {
        let mut rng = fastrand::Rng::with_seed(3);
        let pool = b"ab\"\\\x00\x1f \x7f\x80\xc3\xa9~";
        for _ in 0..50_000 {
            let len = rng.usize(..40);
            let b: Vec<u8> = (0..len)
                .map(|_| {
                    // Mostly plain bytes, so that the first stop falls anywhere.
                    if rng.u8(..8) == 0 {
                        pool[rng.usize(..pool.len())]
                    } else {
                        b'a' + rng.u8(..26)
                    }
                })
                .collect();
            let slow = b
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .unwrap_or(b.len());
            assert_eq!(plain_len(&b), slow, "{b:?}");
        }
    }

    #[test]
    fn what_serde_would_refuse_or_read_otherwise_is_left_to_it() {
        let ok = r#"{"before":null,"after":{"id":1},"source":{"connector":"mysql","file":"b.000002","pos":7},"op":"c","ts_ms":5}"#;
        assert!(by_hand(ok, &Conv::Keep).is_some());
        for text in [
            // An escape, a control character, a field twice, no `op`.
            r#"{"after":{"id":"a\"b"},"op":"c"}"#,
            "{\"after\":{\"id\":\"a\tb\"},\"op\":\"c\"}",
            r#"{"op":"c","op":"u"}"#,
            r#"{"after":{"id":1},"source":{"pos":1,"pos":2},"op":"c"}"#,
            r#"{"ts_ms":5,"after":null}"#,
            // An integer serde reads as a float; MongoDB's string image; a schema wrapper.
            r#"{"after":{"id":1},"op":"c","ts_ms":-0}"#,
            r#"{"after":{"id":1},"source":{"pos":-0},"op":"c"}"#,
            r#"{"after":"{\"_id\":1}","op":"c"}"#,
            r#"{"schema":null,"payload":{"op":"c"}}"#,
            // Trailing text, and nesting past the limit.
            r#"{"after":{"id":1},"op":"c"} x"#,
            &format!(
                r#"{{"after":{{"a":{}1{}}},"op":"c"}}"#,
                "[".repeat(70),
                "]".repeat(70)
            ),
        ] {
            assert!(by_hand(text, &Conv::Keep).is_none(), "{text}");
        }
        // `-0` where the schema converts a date or a timestamp (serde refuses it there).
        let (_, conv) = envelopes().pop().unwrap();
        for after in [r#"{"d":-0}"#, r#"{"inner":{"at":-0}}"#] {
            let text = format!(r#"{{"after":{after},"op":"c"}}"#);
            assert!(by_serde(&text, &conv).is_none(), "{text}");
            assert!(by_hand(&text, &conv).is_none(), "{text}");
        }
    }
}
