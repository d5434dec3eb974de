//! A record's headers, read and copied as the bytes Kafka holds. Kafka's header keys are bytes;
//! rdkafka's own getters (`Headers::iter`, `try_get`, `get_as`) unwrap every key as UTF-8, so
//! a record from a producer that wrote another key would panic the task that reads its
//! headers, on every restart. Headers are copied whole here (librdkafka's own copy) and read
//! through librdkafka's getter.

use rdkafka::bindings as rdsys;
use rdkafka::message::{BorrowedHeaders, Headers as _, Message, OwnedHeaders};

/// Headers as librdkafka holds them: a consumed record's, or a kept record's.
pub trait RawHeaders {
    fn raw(&self) -> &BorrowedHeaders;
}

impl RawHeaders for BorrowedHeaders {
    fn raw(&self) -> &BorrowedHeaders {
        self
    }
}

impl RawHeaders for OwnedHeaders {
    fn raw(&self) -> &BorrowedHeaders {
        self.as_borrowed()
    }
}

/// A record whose headers can be read and copied as bytes: a consumed one (`BorrowedMessage`)
/// or a kept one (`OwnedMessage`).
pub trait Record: Message<Headers: RawHeaders> {}

impl<M: Message<Headers: RawHeaders>> Record for M {}

/// A copy of `m`'s headers, byte for byte, that more can be added to.
pub fn copy(m: &impl Record) -> OwnedHeaders {
    m.headers()
        .map_or_else(OwnedHeaders::new, |h| h.raw().detach())
}

/// Each header's key and value, as bytes.
pub fn pairs(h: &BorrowedHeaders) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    // rdkafka hands out `&BorrowedHeaders` by casting librdkafka's `rd_kafka_headers_t`
    // pointer to a reference to this empty type (its `from_native_ptr`), and casts it back the
    // same way for every call: the reference's address is librdkafka's pointer.
    let native = h as *const BorrowedHeaders as *const rdsys::rd_kafka_headers_t;
    (0..h.count())
        .filter_map(|i| {
            let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0usize);
            // SAFETY: `native` is the live headers `h` borrows (above); librdkafka writes a
            // NUL-terminated name and a value of `size` bytes (or null) that live as long as
            // the headers, copied out here before `h`'s borrow ends.
            unsafe {
                let err =
                    rdsys::rd_kafka_header_get_all(native, i, &mut name, &mut value, &mut size);
                if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
                    return None;
                }
                let key = std::ffi::CStr::from_ptr(name).to_bytes().to_vec();
                let value = (!value.is_null())
                    .then(|| std::slice::from_raw_parts(value.cast::<u8>(), size).to_vec());
                Some((key, value))
            }
        })
        .collect()
}

/// Each header as text, for a log line: keys and values that are not UTF-8 shown lossily.
pub fn text(m: &impl Record) -> Vec<(String, Option<String>)> {
    m.headers().map_or_else(Vec::new, |h| {
        pairs(h.raw())
            .into_iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(&k).into_owned(),
                    v.map(|v| String::from_utf8_lossy(&v).into_owned()),
                )
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{Header, OwnedMessage, Timestamp};

    /// Headers with a key that is not UTF-8, added through librdkafka as a producer of any
    /// language may write it.
    fn headers_with_a_byte_key() -> OwnedHeaders {
        let h = OwnedHeaders::new().insert(Header {
            key: "trace-id",
            value: Some("t1"),
        });
        let native = h.as_borrowed() as *const BorrowedHeaders as *mut rdsys::rd_kafka_headers_t;
        let (key, value) = (b"\xffk", b"v");
        // SAFETY: `native` is `h`'s own headers (see `pairs`); librdkafka copies both buffers.
        let err = unsafe {
            rdsys::rd_kafka_header_add(
                native,
                key.as_ptr().cast(),
                key.len() as isize,
                value.as_ptr().cast(),
                value.len() as isize,
            )
        };
        assert_eq!(err, rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
        h
    }

    #[test]
    fn headers_whose_keys_are_not_utf8_are_copied_and_shown_without_a_panic() {
        let m = OwnedMessage::new(
            Some(b"x".to_vec()),
            None,
            "t".into(),
            Timestamp::NotAvailable,
            0,
            0,
            Some(headers_with_a_byte_key()),
        );
        let want = vec![
            (b"trace-id".to_vec(), Some(b"t1".to_vec())),
            (b"\xffk".to_vec(), Some(b"v".to_vec())),
        ];
        let copied = copy(&m).insert(Header {
            key: "__connect.errors.topic",
            value: Some("t"),
        });
        let mut with_context = want.clone();
        with_context.push((b"__connect.errors.topic".to_vec(), Some(b"t".to_vec())));
        assert_eq!(pairs(copied.as_borrowed()), with_context);
        assert_eq!(
            text(&m),
            vec![
                ("trace-id".to_string(), Some("t1".to_string())),
                ("\u{fffd}k".to_string(), Some("v".to_string())),
            ]
        );
    }
}
