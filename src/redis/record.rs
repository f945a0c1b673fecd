//! The binary format of a completed idempotency record's response, as the Redis store keeps
//! it: versioned, length-prefixed, read back with every length checked.
//!
//! ```text
//! version      u8    1
//! kind         u8    1 = a stored response, 2 = a result not kept
//! status       u16   big-endian
//! (a stored response only:)
//! headers      u32 count, then per field: u16 name length, name, u32 value length, value
//! trailers     u8 0 (none) or 1, then a header block as above
//! body         u32 length, then the bytes
//! ```
//!
//! Nothing follows the body. A record in another version, or one that does not parse, is an
//! error of the store (the request gets the store-failure answer), never a panic or a replay of
//! something else.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};

use crate::idempotency::{Completed, StoredResponse};

/// The format's version: the first byte of every record.
pub(crate) const VERSION: u8 = 1;
const RESPONSE: u8 = 1;
const NOT_KEPT: u8 = 2;

/// Encodes `completed`, or `None` when a length does not fit the format (a header over 64 KiB
/// of name, a body over 4 GiB): such a record is not stored.
pub(crate) fn encode(completed: &Completed) -> Option<Bytes> {
    let mut out = BytesMut::with_capacity(16 + completed.size());
    out.put_u8(VERSION);
    match completed {
        Completed::Response(response) => {
            out.put_u8(RESPONSE);
            out.put_u16(response.status().as_u16());
            put_headers(&mut out, response.headers())?;
            match response.trailers() {
                None => out.put_u8(0),
                Some(trailers) => {
                    out.put_u8(1);
                    put_headers(&mut out, trailers)?;
                }
            }
            let body = response.body();
            out.put_u32(u32::try_from(body.len()).ok()?);
            out.put_slice(body);
        }
        Completed::NotKept { status } => {
            out.put_u8(NOT_KEPT);
            out.put_u16(status.as_u16());
        }
    }
    Some(out.freeze())
}

fn put_headers(out: &mut BytesMut, headers: &HeaderMap) -> Option<()> {
    out.put_u32(u32::try_from(headers.len()).ok()?);
    for (name, value) in headers {
        out.put_u16(u16::try_from(name.as_str().len()).ok()?);
        out.put_slice(name.as_str().as_bytes());
        out.put_u32(u32::try_from(value.len()).ok()?);
        out.put_slice(value.as_bytes());
    }
    Some(())
}

/// Why a stored record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The record is in a version this build does not read (written by a newer palisade).
    #[error("idempotency record in format version {0}, this build reads version 1")]
    Version(u8),
    /// The record ends early, has bytes after its end, or holds an invalid field.
    #[error("malformed idempotency record: {0}")]
    Malformed(&'static str),
}

/// Decodes a record written by [`encode`].
pub(crate) fn decode(bytes: &[u8]) -> Result<Completed, RecordError> {
    let mut input = Reader { bytes };
    let version = input.u8()?;
    if version != VERSION {
        return Err(RecordError::Version(version));
    }
    let kind = input.u8()?;
    let status = StatusCode::from_u16(input.u16()?)
        .map_err(|_| RecordError::Malformed("status out of range"))?;
    let completed = match kind {
        RESPONSE => {
            let headers = input.headers()?;
            let trailers = match input.u8()? {
                0 => None,
                1 => Some(input.headers()?),
                _ => return Err(RecordError::Malformed("trailers flag")),
            };
            let length = input.u32()?;
            let body = Bytes::copy_from_slice(input.take(length)?);
            Completed::Response(Arc::new(StoredResponse::new(
                status, headers, body, trailers,
            )))
        }
        NOT_KEPT => Completed::NotKept { status },
        _ => return Err(RecordError::Malformed("record kind")),
    };
    if !input.bytes.is_empty() {
        return Err(RecordError::Malformed("bytes after the body"));
    }
    Ok(completed)
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, length: impl TryInto<usize>) -> Result<&'a [u8], RecordError> {
        let length = length
            .try_into()
            .map_err(|_| RecordError::Malformed("length"))?;
        if length > self.bytes.len() {
            return Err(RecordError::Malformed("ends early"));
        }
        let (taken, rest) = self.bytes.split_at(length);
        self.bytes = rest;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1_usize)?[0])
    }

    fn u16(&mut self) -> Result<u16, RecordError> {
        let bytes = self.take(2_usize)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        let bytes = self.take(4_usize)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn headers(&mut self) -> Result<HeaderMap, RecordError> {
        let count = self.u32()?;
        // Each field takes at least 6 bytes: a count larger than that allows is a lie, and
        // must not reserve memory for it.
        if usize::try_from(count).map_or(true, |count| count > self.bytes.len() / 6) {
            return Err(RecordError::Malformed("header count"));
        }
        let mut headers = HeaderMap::with_capacity(count as usize);
        for _ in 0..count {
            let length = self.u16()?;
            let name = HeaderName::from_bytes(self.take(length)?)
                .map_err(|_| RecordError::Malformed("header name"))?;
            let length = self.u32()?;
            let value = HeaderValue::from_bytes(self.take(length)?)
                .map_err(|_| RecordError::Malformed("header value"))?;
            headers.append(name, value);
        }
        Ok(headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn response(body: &'static [u8], trailers: bool) -> Completed {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.append("x-repeated", HeaderValue::from_static("one"));
        headers.append("x-repeated", HeaderValue::from_static("two"));
        let trailers = trailers.then(|| {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            trailers
        });
        Completed::Response(Arc::new(StoredResponse::new(
            StatusCode::CREATED,
            headers,
            Bytes::from_static(body),
            trailers,
        )))
    }

    #[test]
    fn a_response_reads_back_as_it_was_written() {
        for completed in [
            response(b"{\"order\":1}", false),
            response(b"", true),
            Completed::NotKept {
                status: StatusCode::OK,
            },
        ] {
            let bytes = encode(&completed).expect("fits the format");
            assert_eq!(bytes[0], VERSION);
            assert_eq!(decode(&bytes), Ok(completed));
        }
    }

    #[test]
    fn repeated_headers_keep_their_order() {
        let bytes = encode(&response(b"x", false)).unwrap();
        let Ok(Completed::Response(read)) = decode(&bytes) else {
            panic!("a response");
        };
        let values: Vec<_> = read.headers().get_all("x-repeated").iter().collect();
        assert_eq!(values, ["one", "two"]);
    }

    #[test]
    fn another_version_is_refused_by_its_number() {
        let mut bytes = encode(&response(b"x", false)).unwrap().to_vec();
        bytes[0] = 2;
        assert_eq!(decode(&bytes), Err(RecordError::Version(2)));
    }

    #[test]
    fn every_truncation_and_any_extra_byte_is_malformed() {
        let bytes = encode(&response(b"body", true)).unwrap();
        for end in 0..bytes.len() {
            assert!(decode(&bytes[..end]).is_err(), "cut at {end}");
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert_eq!(
            decode(&longer),
            Err(RecordError::Malformed("bytes after the body"))
        );
    }

    #[test]
    fn a_header_count_larger_than_the_record_reserves_nothing() {
        let mut bytes = vec![VERSION, RESPONSE, 0, 200];
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(decode(&bytes), Err(RecordError::Malformed("header count")));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn arbitrary_bytes_after_a_valid_header_never_panic(
            kind in 0u8..4,
            rest in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let mut bytes = vec![VERSION, kind, 0, 200];
            bytes.extend_from_slice(&rest);
            let _ = decode(&bytes);
        }

        #[test]
        fn any_response_round_trips(
            status in 200u16..600,
            body in proptest::collection::vec(any::<u8>(), 0..512),
            values in proptest::collection::vec("[ -~]{0,40}", 0..6),
        ) {
            let mut headers = HeaderMap::new();
            for (i, value) in values.iter().enumerate() {
                headers.append(
                    HeaderName::from_bytes(format!("x-field-{}", i % 3).as_bytes()).unwrap(),
                    HeaderValue::from_str(value).unwrap(),
                );
            }
            let completed = Completed::Response(Arc::new(StoredResponse::new(
                StatusCode::from_u16(status).unwrap(),
                headers,
                Bytes::from(body),
                None,
            )));
            let bytes = encode(&completed).unwrap();
            prop_assert_eq!(decode(&bytes), Ok(completed));
        }
    }
}
