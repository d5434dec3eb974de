//! A JSON envelope read by serde in one pass, for what the reader of our own (`by_hand`) leaves
//! (escaped strings, above all): `source`'s fields read ([`Inline`]) and a struct-typed
//! `after` image converted while serde_json walks them, instead of slicing each out and walking
//! it again (docs/performance-log.md). Whatever this pass refuses, the converter reads again the
//! slower way, which names the problem; so this pass only has to agree with that way on the
//! envelopes it accepts (tests/it/fixtures.rs reads every recorded one both ways).

use std::borrow::Cow;
use std::fmt;

use serde::Deserializer as _;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::super::row::{Key, some_str};
use super::super::schema::{Conv, StructConv};
use super::super::semantic;
use super::super::source::Inline;
use super::super::{Options, Row};
use super::{Top, write_value};

/// Reads `text` as an envelope (or the `{"schema", "payload"}` around one) into `top`, which
/// must be empty (`Top::empty`); `after`: the after image's conversion when the schema gives
/// one. `false` when anything is unexpected, and `top` then holds part of what was read.
pub(super) fn read<'a>(
    text: &'a str,
    after: Option<&StructConv>,
    opts: &Options,
    top: &mut Top<'a, Inline<'a>>,
) -> bool {
    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_map(TopFields { after, opts, top }).is_ok() && de.end().is_ok()
}

/// Fills the caller's `top` in place rather than returning one (see `JsonConverter::one_pass`).
struct TopFields<'c, 'de> {
    after: Option<&'c StructConv>,
    opts: &'c Options,
    top: &'c mut Top<'de, Inline<'de>>,
}

/// Where an envelope field goes in [`Top`].
enum Slot<'t, 'de> {
    /// Kept as its raw JSON text (`null` included, as the derived `Top` keeps it).
    Raw(&'t mut Option<&'de RawValue>),
    Op,
    After,
    Source,
    TsMs,
}

/// `op`: a string or null, borrowed unless escaped.
struct OptStr<'a>(Option<Cow<'a, str>>);

impl<'de> serde::Deserialize<'de> for OptStr<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        some_str(d).map(OptStr)
    }
}

impl<'de> Visitor<'de> for TopFields<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Debezium envelope")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let top = self.top;
        // A field given twice is refused (the other way names it): one bit per field.
        let mut seen = 0u16;
        while let Some(key) = map.next_key_seed(Key("a field name"))? {
            let (bit, slot) = match &*key {
                "schema" => (0, Slot::Raw(&mut top.schema)),
                "payload" => (1, Slot::Raw(&mut top.payload)),
                "before" => (2, Slot::Raw(&mut top.before)),
                "ddl" => (3, Slot::Raw(&mut top.ddl)),
                "tableChanges" => (4, Slot::Raw(&mut top.table_changes)),
                "status" => (5, Slot::Raw(&mut top.status)),
                "event_count" => (6, Slot::Raw(&mut top.event_count)),
                "op" => (7, Slot::Op),
                "after" => (8, Slot::After),
                "source" => (9, Slot::Source),
                "ts_ms" => (10, Slot::TsMs),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if seen & 1 << bit != 0 {
                return Err(de::Error::custom("a field given twice"));
            }
            seen |= 1 << bit;
            match slot {
                Slot::Raw(raw) => *raw = Some(map.next_value()?),
                Slot::Op => top.op = map.next_value::<OptStr>()?.0,
                Slot::After => match self.after {
                    Some(st) => {
                        top.after_row = map.next_value_seed(Image {
                            st,
                            opts: self.opts,
                        })?;
                    }
                    None => top.after = Some(map.next_value()?),
                },
                Slot::Source => top.source = map.next_value()?,
                Slot::TsMs => top.ts_ms = map.next_value()?,
            }
        }
        Ok(())
    }
}

/// A row image converted by its struct's conversion: `None` for null.
struct Image<'c> {
    st: &'c StructConv,
    opts: &'c Options,
}

impl<'de> DeserializeSeed<'de> for Image<'_> {
    type Value = Option<Row>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for Image<'_> {
    type Value = Option<Row>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a row image")
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let mut out = Vec::with_capacity(256);
        d.deserialize_map(Struct {
            st: self.st,
            opts: self.opts,
            out: &mut out,
        })?;
        Ok(Some(Row::from_bytes(out)))
    }
}

/// A struct's fields converted into `out`, as `write_value` converts them from raw text.
struct Struct<'c> {
    st: &'c StructConv,
    opts: &'c Options,
    out: &'c mut Vec<u8>,
}

impl<'de> Visitor<'de> for Struct<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a struct")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.out.push(b'{');
        let mut i = 0;
        while let Some(k) = map.next_key_seed(Key("a field name"))? {
            if i > 0 {
                self.out.push(b',');
            }
            let conv = self.st.write_name(self.out, &k, i);
            map.next_value_seed(Field {
                conv,
                opts: self.opts,
                out: self.out,
            })?;
            i += 1;
        }
        self.out.push(b'}');
        Ok(())
    }
}

/// One field's value converted into `out`: nested structs walked in the same pass, other
/// values sliced out and converted by `write_value`.
struct Field<'c> {
    conv: &'c Conv,
    opts: &'c Options,
    out: &'c mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for Field<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.conv {
            Conv::Struct(st) => {
                return d.deserialize_any(Struct {
                    st,
                    opts: self.opts,
                    out: self.out,
                });
            }
            Conv::Date | Conv::Time(_) | Conv::Timestamp(_) => {
                return d.deserialize_any(Temporal {
                    conv: self.conv,
                    out: self.out,
                });
            }
            _ => {}
        }
        let raw: &RawValue = serde::Deserialize::deserialize(d)?;
        write_value(raw.get(), self.conv, self.opts, self.out).map_err(de::Error::custom)
    }
}

/// A date, time or timestamp field (`conv`) read as the integer it is and written converted:
/// capturing its raw text and parsing that again took 4% of the JSON hot path with schema.
/// Takes what `write_value` takes from raw text (an integer within `i64`, or null) and
/// refuses the rest, which the slower way then names.
struct Temporal<'c> {
    conv: &'c Conv,
    out: &'c mut Vec<u8>,
}

impl<'de> Visitor<'de> for Temporal<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        match self.conv {
            Conv::Date => semantic::date(self.out, v),
            Conv::Time(unit) => semantic::time(self.out, v, *unit),
            Conv::Timestamp(unit) => semantic::timestamp(self.out, v, *unit),
            _ => return Err(de::Error::custom("not a temporal conversion")),
        }
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        let v = i64::try_from(v).map_err(|_| de::Error::custom("out of range"))?;
        self.visit_i64(v)
    }
}

#[cfg(test)]
mod tests {
    use super::super::to_row;
    use super::*;
    use crate::decode::schema::ConnectSchema;

    /// The conversion of the row schema `fields` (Connect schema JSON).
    fn conv(fields: &str) -> Conv {
        ConnectSchema::parse(&format!(r#"{{"type":"struct","fields":[{fields}]}}"#))
            .unwrap()
            .compile()
    }

    const FIELDS: &str = r#"{"type":"int32","field":"id"},
        {"type":"int32","name":"io.debezium.time.Date","field":"d"},
        {"type":"struct","field":"inner","fields":[
          {"type":"int64","name":"io.debezium.time.MicroTimestamp","field":"at"}]}"#;

    /// What `read` fills in, or `None` when it refuses the text.
    fn read_top<'a>(
        text: &'a str,
        after: Option<&StructConv>,
        opts: &Options,
    ) -> Option<Top<'a, Inline<'a>>> {
        let mut top = Top::empty();
        read(text, after, opts, &mut top).then_some(top)
    }

    #[test]
    fn the_after_image_is_converted_as_from_its_raw_text() {
        let conv = conv(FIELDS);
        let Conv::Struct(st) = &conv else {
            panic!("{conv:?}")
        };
        let opts = Options::default();
        for after in [
            r#"{"id":1,"d":19782,"inner":{"at":1709300707123456},"extra":[1,{"a":"b"}]}"#,
            r#"{"inner":null,"d":null,"id":2}"#,
            r#"{"id":3,"n\u0061me":"x\ny","inner":{"at":0,"x":"\"q\""}}"#,
            "{}",
        ] {
            let text = format!(
                r#"{{"before":{after},"after":{after},"source":{{"connector":"mysql","file":"b.000002","pos":7}},"op":"u","ts_ms":5}}"#
            );
            let top = read_top(&text, Some(st), &opts).expect(after);
            let raw: &RawValue = serde_json::from_str(after).unwrap();
            assert_eq!(
                top.after_row,
                Some(to_row(raw.get(), &conv, &opts).unwrap()),
                "{after}"
            );
            assert!(top.after.is_none());
            assert_eq!(top.before.map(RawValue::get), Some(after));
            assert_eq!(top.op.as_deref(), Some("u"));
            assert_eq!(top.ts_ms, Some(5));
            let source = top.source.unwrap().source(false).unwrap();
            assert_eq!(source.position, Ok(Some(2 << 40 | 7)));
        }
        // Without a conversion, `after` is sliced out as it is; null is no image.
        let top = read_top(r#"{"after":{"id":1},"op":"c"}"#, None, &opts).unwrap();
        assert_eq!(top.after.map(RawValue::get), Some(r#"{"id":1}"#));
        // A delete: its before image stays raw (converted later), the after image is null.
        let text = r#"{"before":{"id":1,"d":5},"after":null,"op":"d","source":null,"ts_ms":null}"#;
        let top = read_top(text, Some(st), &opts).unwrap();
        assert!(top.after_row.is_none() && top.after.is_none());
        assert_eq!(top.before.map(RawValue::get), Some(r#"{"id":1,"d":5}"#));
        assert!(top.source.is_none() && top.ts_ms.is_none());
        // Field names with escapes are the names they spell; `op` may be null.
        let text = r#"{"\u0061fter":{"i\u0064":7,"d":0},"op":null,"source":{"connector":"postgresql","lsn":9}}"#;
        let top = read_top(text, Some(st), &opts).unwrap();
        assert_eq!(
            top.after_row.as_ref().map(Row::as_str),
            Some(r#"{"id":7,"d":"1970-01-01"}"#)
        );
        assert!(top.op.is_none());
        let source = top.source.unwrap().source(false).unwrap();
        assert_eq!(source.connector.as_deref(), Some("postgresql"));
        // Raw whitespace and newlines inside a value kept as it is leave the row on one line.
        let text = "{\"after\":{\"id\":1,\"x\":[1,\n 2]},\"op\":\"c\"}";
        let top = read_top(text, Some(st), &opts).unwrap();
        assert_eq!(top.after_row.unwrap().as_str(), r#"{"id":1,"x":[1, 2]}"#);
    }

    #[test]
    fn what_the_pass_refuses_is_left_to_the_slower_way() {
        let conv = conv(FIELDS);
        let Conv::Struct(st) = &conv else {
            panic!("{conv:?}")
        };
        let opts = Options::default();
        for text in [
            r#"{"op":"c","op":"u","after":{"id":1}}"#,
            r#"{"op":"c","after":{"id":1},"after":{"id":2}}"#,
            r#"{"op":"c","after":"{\"id\":1}"}"#,
            r#"{"op":"c","after":{"d":"yesterday"}}"#,
            r#"{"op":"c","after":{"inner":5}}"#,
            r#"{"op":"c","after":{"id":1},"source":["mysql"]}"#,
            r#"{"op":5,"after":{"id":1}}"#,
            r#"{"op":"c","ts_ms":1.5,"after":{"id":1}}"#,
            r#"{"op":"c","\u0061fter":{"id":1},"after":{"id":2}}"#,
            r#"{"op":"c","after":[1,2]}"#,
            r#"[null,null,"c"]"#,
            r#"{"op":"c"} x"#,
        ] {
            assert!(read_top(text, Some(st), &opts).is_none(), "{text}");
        }
    }

    #[test]
    fn dates_and_timestamps_read_as_integers_agree_with_their_raw_text() {
        let conv = conv(FIELDS);
        let Conv::Struct(st) = &conv else {
            panic!("{conv:?}")
        };
        let opts = Options::default();
        let slow = |after: &str| {
            let raw: &RawValue = serde_json::from_str(after).unwrap();
            to_row(raw.get(), &conv, &opts)
        };
        // Integers of the whole i64 range are converted in the pass, as from raw text.
        for v in [
            "0",
            "-1",
            "19782",
            "-719528",
            "9223372036854775807",
            "-9223372036854775808",
        ] {
            let after = format!(r#"{{"d":{v},"inner":{{"at":{v}}}}}"#);
            let text = format!(r#"{{"op":"c","after":{after}}}"#);
            let top = read_top(&text, Some(st), &opts).expect(&after);
            assert_eq!(top.after_row, Some(slow(&after).unwrap()), "{after}");
        }
        // What is not such an integer is refused by the pass and named by the slower way
        // (`-0` is read as a float by serde_json: refused here, and 0 there).
        for v in [
            "9223372036854775808",
            "1.5",
            "1e3",
            r#""2024-03-01""#,
            "true",
            "[1]",
            "-0",
        ] {
            let after = format!(r#"{{"d":{v}}}"#);
            let text = format!(r#"{{"op":"c","after":{after}}}"#);
            assert!(read_top(&text, Some(st), &opts).is_none(), "{after}");
            if v != "-0" {
                assert!(slow(&after).is_err(), "{after}");
            }
        }
    }
}
