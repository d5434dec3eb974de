//! Debezium and Kafka Connect semantic types, decoded to document values (docs/design.md).
//!
//! Pure functions from a wire value (days, micros, two's-complement bytes…) to the text that
//! goes into a document. They write straight into the output buffer so the hot path allocates
//! nothing per field.

/// Precision of a time or timestamp value on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    Millis,
    Micros,
    Nanos,
}

impl TimeUnit {
    fn per_second(self) -> i64 {
        match self {
            TimeUnit::Millis => 1_000,
            TimeUnit::Micros => 1_000_000,
            TimeUnit::Nanos => 1_000_000_000,
        }
    }

    fn digits(self) -> usize {
        match self {
            TimeUnit::Millis => 3,
            TimeUnit::Micros => 6,
            TimeUnit::Nanos => 9,
        }
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Widened: a day count near i64's ends (JSON may carry any integer) would overflow.
    let z = i128::from(days) + 719_468;
    let era = z.div_euclid(146_097) as i64;
    let doe = z.rem_euclid(146_097) as i64;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Writes `v` in decimal, zero-padded to at least `width` digits. With `itoa`: this runs for
/// several columns of every row, and a digit loop of our own checked its digits as UTF-8 each
/// time (half of the Avro value decoder's `from_utf8`, 5% of it: docs/performance-log.md).
pub fn push_digits(out: &mut Vec<u8>, v: u128, width: usize) {
    let mut buf = itoa::Buffer::new();
    let d = digits(&mut buf, v);
    out.extend(std::iter::repeat_n(b'0', width.saturating_sub(d.len())));
    out.extend_from_slice(d.as_bytes());
}

/// The decimal digits of `v`.
fn digits(buf: &mut itoa::Buffer, v: u128) -> &str {
    // 64-bit division is several times cheaper than 128-bit.
    match u64::try_from(v) {
        Ok(small) => buf.format(small),
        Err(_) => buf.format(v),
    }
}

/// `v` zero-padded to `width` digits, as a date's and time's fields are: for up to four digits
/// that fit, the digits written straight into `out` instead of through `push_digits`'
/// formatting and copies (13% of the Avro value decoder, most of it for dates and timestamps).
/// Anything wider (an hour count past 99 in a MySQL `TIME`) goes through `push_digits`.
fn push_padded(out: &mut Vec<u8>, v: u64, width: usize) {
    const MAX: usize = 4;
    if width <= MAX && v < 10u64.pow(width as u32) {
        let (mut digits, mut rest) = ([b'0'; MAX], v);
        for d in digits[..width].iter_mut().rev() {
            *d = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        out.extend_from_slice(&digits[..width]);
    } else {
        push_digits(out, u128::from(v), width);
    }
}

/// Writes `v` in decimal.
pub fn push_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    push_digits(out, u128::from(v.unsigned_abs()), 1);
}

fn write_date(out: &mut Vec<u8>, days: i64) {
    let (y, m, d) = civil_from_days(days);
    if (0..=9999).contains(&y) {
        push_padded(out, y as u64, 4);
    } else {
        // ISO 8601 expanded years carry a sign (`format!("{y:+05}")`, without core::fmt: 3% of
        // decoding the benchmark's 6 KB records, whose dates span millions of years).
        out.push(if y < 0 { b'-' } else { b'+' });
        push_digits(out, u128::from(y.unsigned_abs()), 4);
    }
    out.push(b'-');
    push_padded(out, u64::from(m), 2);
    out.push(b'-');
    push_padded(out, u64::from(d), 2);
}

fn write_time_of_day(out: &mut Vec<u8>, secs_of_day: i64, frac: i64, unit: TimeUnit) {
    let (h, m, s) = (secs_of_day / 3600, secs_of_day / 60 % 60, secs_of_day % 60);
    push_padded(out, h as u64, 2);
    out.push(b':');
    push_padded(out, m as u64, 2);
    out.push(b':');
    push_padded(out, s as u64, 2);
    out.push(b'.');
    push_digits(out, frac as u128, unit.digits());
}

/// `io.debezium.time.Date` / Connect `Date`: days since the epoch → `"2024-03-01"`.
pub fn date(out: &mut Vec<u8>, days: i64) {
    out.push(b'"');
    write_date(out, days);
    out.push(b'"');
}

/// `Time` / `MicroTime` / `NanoTime`: time since midnight → `"13:45:07.123456"`.
///
/// MySQL `TIME` columns may exceed a day or be negative; those are written as an hour count
/// (`"-838:59:59.000000"`), as MySQL itself does.
pub fn time(out: &mut Vec<u8>, value: i64, unit: TimeUnit) {
    let per = unit.per_second();
    out.push(b'"');
    if value < 0 {
        out.push(b'-');
    }
    let abs = value.unsigned_abs() as i128;
    let (secs, frac) = ((abs / per as i128) as i64, (abs % per as i128) as i64);
    write_time_of_day(out, secs, frac, unit);
    out.push(b'"');
}

/// `Timestamp` / `MicroTimestamp` / `NanoTimestamp`: time since the epoch, no zone →
/// `"2024-03-01T13:45:07.123456Z"`.
pub fn timestamp(out: &mut Vec<u8>, value: i64, unit: TimeUnit) {
    let per = unit.per_second();
    let secs = value.div_euclid(per);
    let frac = value.rem_euclid(per);
    out.push(b'"');
    write_date(out, secs.div_euclid(86_400));
    out.push(b'T');
    write_time_of_day(out, secs.rem_euclid(86_400), frac, unit);
    out.extend_from_slice(b"Z\"");
}

/// `io.debezium.data.Json`: the column's JSON text, checked and written as it is (whitespace
/// between tokens left out, for the one-line bulk body): numbers keep every digit
/// (`123456789012345678901` is not rounded to an `f64`) and every member stays, so the
/// document holds what the column held. `false`, nothing written, when it is not valid JSON.
pub fn json_text(text: &str, out: &mut Vec<u8>) -> bool {
    if serde_json::from_str::<serde::de::IgnoredAny>(text).is_err() {
        return false;
    }
    out.reserve(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for &b in text.as_bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            continue;
        } else if b == b'"' {
            in_string = true;
        }
        out.push(b);
    }
    true
}

/// The largest decimal scale, either way: PostgreSQL's `numeric` has up to 131 072 digits
/// before the point and 16 383 after. A scale from the data beyond it is refused: it would
/// make the sink write that many zeros.
pub const MAX_SCALE: i64 = 131_072;

/// The most one converted image (a row, a key, a field of `source`) may grow to. A decimal's
/// scale makes zeros from nothing (up to [`MAX_SCALE`] of them for a one-byte value), and a
/// record carries as many such values as it likes (an array of them, or a schema, sent with
/// each JSON record, of thousands of such fields): without a bound one record of 1 MB could ask
/// for gigabytes. Far beyond what Elasticsearch takes in one request (100 MB by default).
pub const MAX_IMAGE: usize = 64 << 20;

/// Refuses to let `out` grow past [`MAX_IMAGE`] by `more` bytes.
pub fn room(out: &[u8], more: usize) -> Result<(), String> {
    if out.len().saturating_add(more) > MAX_IMAGE {
        return Err(format!(
            "the converted value would be larger than {} MiB (decimals with a large scale, or many items that take no bytes?)",
            MAX_IMAGE >> 20
        ));
    }
    Ok(())
}

/// The longest unscaled decimal value taken, in bytes: about 158 000 digits, more than
/// PostgreSQL's `numeric` holds. Its digits are worked out in time that grows with the square
/// of its length: a value of 1 MB took about a minute.
const MAX_DECIMAL_BYTES: usize = 64 << 10;

fn check_scale(scale: i64) -> Result<(), String> {
    if scale.abs() > MAX_SCALE {
        return Err(format!(
            "decimal scale {scale} is out of range (at most ±{MAX_SCALE})"
        ));
    }
    Ok(())
}

/// Writes the unscaled two's-complement big-endian integer `bytes` with `scale` decimals as
/// plain decimal digits (`"39.98"`, `"-0.05"`, `"1200"` for a negative scale).
pub fn decimal_digits(out: &mut Vec<u8>, bytes: &[u8], scale: i32) -> Result<(), String> {
    check_scale(i64::from(scale))?;
    if bytes.is_empty() {
        // Not a number at all (Kafka Connect refuses it: a zero-length BigInteger).
        return Err("a decimal of no bytes".into());
    }
    if bytes.len() > MAX_DECIMAL_BYTES {
        return Err(format!(
            "a decimal of {} bytes is longer than the {MAX_DECIMAL_BYTES} taken",
            bytes.len()
        ));
    }
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    if bytes.len() <= 15 {
        // Fits an i128 with room to negate: no allocation.
        let v = bytes
            .iter()
            .fold(if negative { -1i128 } else { 0 }, |acc, b| {
                (acc << 8) | i128::from(*b)
            });
        let mut buf = itoa::Buffer::new();
        return write_scaled(out, v < 0, digits(&mut buf, v.unsigned_abs()), scale);
    }
    // Magnitude as big-endian bytes.
    let mut mag: Vec<u8> = if negative {
        let mut v: Vec<u8> = bytes.iter().map(|b| !b).collect();
        for b in v.iter_mut().rev() {
            let (sum, carry) = b.overflowing_add(1);
            *b = sum;
            if !carry {
                break;
            }
        }
        v
    } else {
        bytes.to_vec()
    };
    let digits = magnitude_to_decimal(&mut mag);
    write_scaled(out, negative && digits != "0", &digits, scale)
}

/// Big-endian unsigned magnitude to decimal digits (repeated division by 10^9).
fn magnitude_to_decimal(mag: &mut [u8]) -> String {
    if mag.len() <= 16 {
        let mut v: u128 = 0;
        for b in mag.iter() {
            v = (v << 8) | u128::from(*b);
        }
        return v.to_string();
    }
    let mut chunks: Vec<u32> = Vec::new();
    let mut start = 0;
    while start < mag.len() {
        let mut rem: u64 = 0;
        for b in mag[start..].iter_mut() {
            let cur = (rem << 8) | u64::from(*b);
            *b = (cur / 1_000_000_000) as u8;
            rem = cur % 1_000_000_000;
        }
        chunks.push(rem as u32);
        while start < mag.len() && mag[start] == 0 {
            start += 1;
        }
    }
    let mut s = String::new();
    for (i, c) in chunks.iter().rev().enumerate() {
        if i == 0 {
            s.push_str(&c.to_string());
        } else {
            s.push_str(&format!("{c:09}"));
        }
    }
    if s.is_empty() { "0".into() } else { s }
}

/// Places the decimal point `scale` digits from the right of `digits` (no sign, no point).
/// `scale` is within ±[`MAX_SCALE`]; an error, with nothing written, if `out` would grow past
/// [`MAX_IMAGE`].
fn write_scaled(out: &mut Vec<u8>, negative: bool, digits: &str, scale: i32) -> Result<(), String> {
    room(out, digits.len() + scale.unsigned_abs() as usize + 3)?;
    if negative {
        out.push(b'-');
    }
    if scale <= 0 {
        out.extend_from_slice(digits.as_bytes());
        if digits != "0" {
            out.extend(std::iter::repeat_n(b'0', scale.unsigned_abs() as usize));
        }
        return Ok(());
    }
    let scale = scale as usize;
    if digits.len() > scale {
        let (int, frac) = digits.split_at(digits.len() - scale);
        out.extend_from_slice(int.as_bytes());
        out.push(b'.');
        out.extend_from_slice(frac.as_bytes());
    } else {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', scale - digits.len()));
        out.extend_from_slice(digits.as_bytes());
    }
    Ok(())
}

/// Rewrites a JSON number's text (`1.2345e+32`, `-0.5`, `12`) as plain exact decimal digits,
/// without exponent. An error when `text` is not a JSON number, or its exponent would make
/// more than [`MAX_SCALE`] digits.
pub fn plain_number(text: &str) -> Result<String, String> {
    let not_a_number = || format!("expected a decimal, got `{text}`");
    let (negative, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(i) => (
            &rest[..i],
            rest[i + 1..].parse::<i64>().map_err(|_| not_a_number())?,
        ),
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(not_a_number());
    }
    let scale = (frac.len() as i64)
        .checked_sub(exp)
        .ok_or_else(not_a_number)?;
    check_scale(scale)?;
    let mut digits: String = format!("{int}{frac}");
    // Strip leading zeros of the unscaled value.
    let trimmed = digits.trim_start_matches('0');
    digits = if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed.into()
    };
    let mut out = Vec::new();
    write_scaled(&mut out, negative && digits != "0", &digits, scale as i32)?;
    String::from_utf8(out).map_err(|_| not_a_number())
}

/// `io.debezium.data.geometry.Point` (x, y as JSON number text) → `{"lat": y, "lon": x}`, an
/// Elasticsearch `geo_point`. A point without both coordinates (Debezium's are never null) is
/// an error, not a null that would drop the column; so is a coordinate that is not a number
/// (Debezium's are doubles): its text is copied into the document, and anything else (an
/// array with a line break in it) could break the bulk body's lines.
pub fn point(out: &mut Vec<u8>, x: Option<&str>, y: Option<&str>) -> Result<(), String> {
    let number = |v: &str| crate::decode::row::number_end(v.as_bytes()) == Some(v.len());
    match (x, y) {
        (Some(x), Some(y)) if number(x) && number(y) => {
            out.extend_from_slice(b"{\"lat\":");
            out.extend_from_slice(y.as_bytes());
            out.extend_from_slice(b",\"lon\":");
            out.extend_from_slice(x.as_bytes());
            out.push(b'}');
            Ok(())
        }
        _ => Err(format!(
            "a Point without both coordinates as numbers (x {}, y {})",
            x.map_or("missing", super::excerpt),
            y.map_or("missing", super::excerpt)
        )),
    }
}

/// `io.debezium.data.Bits` as a number: the bytes are little-endian (Connect's `BitSet` order).
pub fn bits_number(bytes: &[u8]) -> Option<u64> {
    if bytes.len() > 8 {
        return None;
    }
    Some(
        bytes
            .iter()
            .rev()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn dates_from_days_since_epoch() {
        assert_eq!(s(|o| date(o, 0)), r#""1970-01-01""#);
        assert_eq!(s(|o| date(o, 19_783)), r#""2024-03-01""#);
        assert_eq!(s(|o| date(o, 19_439)), r#""2023-03-23""#);
        assert_eq!(s(|o| date(o, -1)), r#""1969-12-31""#);
        assert_eq!(s(|o| date(o, -719_528)), r#""0000-01-01""#);
        assert_eq!(s(|o| date(o, 2_932_896)), r#""9999-12-31""#);
        // Outside years 0–9999, ISO 8601's expanded years: a sign and at least four digits.
        assert_eq!(s(|o| date(o, 2_932_897)), r#""+10000-01-01""#);
        assert_eq!(s(|o| date(o, -719_529)), r#""-0001-12-31""#);
        assert_eq!(s(|o| date(o, -1_000_000_000)), r#""-2735938-12-29""#);
        // The ends of i64 (the calendar arithmetic once overflowed there).
        assert_eq!(s(|o| date(o, i64::MAX)), r#""+25252734927768524-07-27""#);
        assert_eq!(s(|o| date(o, i64::MIN)), r#""-25252734927764585-06-07""#);
    }

    #[test]
    fn times_of_day_keep_their_precision() {
        assert_eq!(
            s(|o| time(o, 36_803_000_000, TimeUnit::Micros)),
            r#""10:13:23.000000""#
        );
        assert_eq!(
            s(|o| time(o, 49_507_123, TimeUnit::Millis)),
            r#""13:45:07.123""#
        );
        assert_eq!(
            s(|o| time(o, 49_507_123_456_789, TimeUnit::Nanos)),
            r#""13:45:07.123456789""#
        );
        assert_eq!(
            s(|o| time(o, -3_020_399_000_000, TimeUnit::Micros)),
            r#""-838:59:59.000000""#
        );
    }

    #[test]
    fn timestamps_are_utc_with_the_wire_precision() {
        assert_eq!(
            s(|o| timestamp(o, 1_679_581_805_123, TimeUnit::Millis)),
            r#""2023-03-23T14:30:05.123Z""#
        );
        assert_eq!(
            s(|o| timestamp(o, 1_709_300_707_123_456, TimeUnit::Micros)),
            r#""2024-03-01T13:45:07.123456Z""#
        );
        assert_eq!(
            s(|o| timestamp(o, -1, TimeUnit::Millis)),
            r#""1969-12-31T23:59:59.999Z""#
        );
        assert_eq!(
            s(|o| timestamp(o, 1, TimeUnit::Nanos)),
            r#""1970-01-01T00:00:00.000000001Z""#
        );
    }

    #[test]
    fn json_columns_are_written_as_they_are_on_one_line() {
        let j = |t: &str| {
            let mut out = Vec::new();
            json_text(t, &mut out).then(|| String::from_utf8(out).unwrap())
        };
        assert_eq!(
            j("{\"n\": 123456789012345678901, \"x\": 1.10, \"e\": 1e400}").as_deref(),
            Some(r#"{"n":123456789012345678901,"x":1.10,"e":1e400}"#)
        );
        assert_eq!(
            j("{\"a\":1,\n \"a\":2}").as_deref(),
            Some(r#"{"a":1,"a":2}"#)
        );
        assert_eq!(
            j(r#"{"s": "a \" b\\", "t" : [ 1 , "\u00e9 x" ]}"#).as_deref(),
            Some(r#"{"s":"a \" b\\","t":[1,"\u00e9 x"]}"#)
        );
        assert_eq!(j("[1, 2").as_deref(), None);
        assert_eq!(j("{} x").as_deref(), None);
    }

    #[test]
    fn decimal_scales_and_exponents_from_the_data_are_bounded() {
        let mut out = Vec::new();
        assert!(decimal_digits(&mut out, &[1], i32::MAX).is_err());
        assert!(decimal_digits(&mut out, &[1], i32::MIN).is_err());
        assert!(decimal_digits(&mut out, &[1], -131_073).is_err());
        assert!(out.is_empty(), "nothing written for a refused value");
        assert!(decimal_digits(&mut out, &[1], 16_383).is_ok());
        assert_eq!(out.len(), 16_385);
        // Longer unscaled values than any database holds: refused before the quadratic work.
        let err = decimal_digits(&mut out, &vec![1; 70_000], 0).unwrap_err();
        assert!(err.contains("longer than"), "{err}");
        assert!(decimal_digits(&mut out, &vec![1; 1_000], 0).is_ok());
        for text in [
            "1e2147483647",
            "1e-2147483648",
            "1e99999999999999999999",
            "1e200000",
        ] {
            assert!(plain_number(text).is_err(), "{text}");
        }
        assert_eq!(plain_number("1e3").as_deref(), Ok("1000"));
    }

    #[test]
    fn decimals_from_twos_complement_bytes() {
        assert_eq!(s(|o| decimal_digits(o, &[0x0f, 0x9e], 2).unwrap()), "39.98");
        assert_eq!(s(|o| decimal_digits(o, &[0x0b, 0xb7], 2).unwrap()), "29.99");
        assert_eq!(s(|o| decimal_digits(o, &[0xff, 0xfb], 2).unwrap()), "-0.05");
        assert_eq!(s(|o| decimal_digits(o, &[0x00], 3).unwrap()), "0.000");
        assert_eq!(s(|o| decimal_digits(o, &[0x0c], -2).unwrap()), "1200");
        assert_eq!(s(|o| decimal_digits(o, &[0x80], 0).unwrap()), "-128");
        // 2^160 needs the wide path; so does its negation.
        let mut big = vec![0x01];
        big.extend([0u8; 20]);
        assert_eq!(
            s(|o| decimal_digits(o, &big, 0).unwrap()),
            "1461501637330902918203684832716283019655932542976"
        );
        let mut neg = vec![0xff];
        neg.extend([0u8; 20]);
        assert_eq!(
            s(|o| decimal_digits(o, &neg, 10).unwrap()),
            "-146150163733090291820368483271628301965.5932542976"
        );
    }

    #[test]
    fn json_numbers_become_plain_decimal_text() {
        assert_eq!(plain_number("39.98").as_deref(), Ok("39.98"));
        assert_eq!(
            plain_number("1.2345678987654322e+32").as_deref(),
            Ok("123456789876543220000000000000000")
        );
        assert_eq!(plain_number("-5E-3").as_deref(), Ok("-0.005"));
        assert_eq!(plain_number("0").as_deref(), Ok("0"));
        assert_eq!(plain_number("-0.0").as_deref(), Ok("0.0"));
        assert!(plain_number("abc").is_err());
    }

    #[test]
    fn bits_are_little_endian() {
        assert_eq!(bits_number(&[0xc7, 0x07, 0, 0, 0, 0, 0, 0]), Some(1991));
        assert_eq!(bits_number(&[1, 2, 3, 4, 5, 6, 7, 8, 9]), None);
    }
}
