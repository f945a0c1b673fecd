//! Deadline headers: how much time a caller has left, on the wire.

use std::fmt;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

/// The gRPC timeout header name.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// Largest value the gRPC grammar allows: at most 8 ASCII digits.
const GRPC_MAX_VALUE: u128 = 99_999_999;

/// A header that carries a caller's remaining time.
///
/// Two formats:
///
/// - [`DeadlineHeader::grpc`]: `grpc-timeout` with the gRPC grammar, a non-negative integer of
///   1 to 8 ASCII digits followed by a unit: `H` hours, `M` minutes, `S` seconds, `m`
///   milliseconds, `u` microseconds, `n` nanoseconds (`250m`, `30S`). Zero (`0S`, `0m`, ...)
///   parses to [`Duration::ZERO`]: the caller's time is already up, so a
///   `palisade::timeout::ServerTimeoutLayer` answers at once without running the
///   handler. (The gRPC spec calls the value positive; palisade reads zero as the safe,
///   already-expired deadline rather than refusing it.)
/// - [`DeadlineHeader::millis`]: a header of your choosing holding whole milliseconds (`1500`; `0`
///   is likewise a deadline already reached),
///   for plain HTTP services (Envoy, for one, sends `x-envoy-expected-rq-timeout-ms`).
///
/// Encoding rounds *up* to the finest unit that fits (as grpc-go does), so a value is never
/// shortened to zero. Decoding is strict: anything outside the grammar is an
/// [`InvalidDeadlineHeader`] naming the header and the reason, never a panic. Optional
/// whitespace (spaces and tabs) around the value is allowed, as HTTP allows it around any field
/// value.
///
/// ```
/// use std::time::Duration;
/// use palisade::http::DeadlineHeader;
///
/// let grpc = DeadlineHeader::grpc();
/// assert_eq!(grpc.encode(Duration::from_millis(1500)), "1500000u");
/// assert_eq!(grpc.parse(b"250m"), Ok(Duration::from_millis(250)));
/// assert_eq!(grpc.parse(b"0S"), Ok(Duration::ZERO)); // the caller's time is up
/// assert!(grpc.parse(b"123456789S").is_err()); // nine digits
///
/// let millis = DeadlineHeader::millis(http::HeaderName::from_static("x-request-timeout-ms"));
/// assert_eq!(millis.encode(Duration::from_micros(1500)), "2");
/// assert_eq!(millis.parse(b"1500"), Ok(Duration::from_millis(1500)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadlineHeader {
    name: HeaderName,
    format: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Grpc,
    Millis,
}

impl DeadlineHeader {
    /// `grpc-timeout`, in the gRPC grammar.
    #[must_use]
    pub fn grpc() -> Self {
        Self {
            name: GRPC_TIMEOUT,
            format: Format::Grpc,
        }
    }

    /// The header `name`, holding whole milliseconds.
    #[must_use]
    pub fn millis(name: HeaderName) -> Self {
        Self {
            name,
            format: Format::Millis,
        }
    }

    /// The header's name.
    #[must_use]
    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    /// `remaining` as a header value, rounded up to the format's resolution.
    #[must_use]
    pub fn encode(&self, remaining: Duration) -> HeaderValue {
        match self.format {
            Format::Grpc => encode_grpc(remaining),
            Format::Millis => {
                let millis = remaining.as_nanos().div_ceil(1_000_000);
                number_value(millis, b"")
            }
        }
    }

    /// Parses one header value.
    ///
    /// # Errors
    ///
    /// The reason the value is outside the format's grammar.
    pub fn parse(&self, value: &[u8]) -> Result<Duration, InvalidReason> {
        let value = trim_ows(value);
        match self.format {
            Format::Grpc => parse_grpc(value),
            Format::Millis => parse_millis(value),
        }
    }

    /// Reads this header from `headers`: `Ok(None)` when it is absent.
    ///
    /// # Errors
    ///
    /// [`InvalidDeadlineHeader`] when the value is outside the grammar or the header appears more
    /// than once (two remaining times cannot both be right).
    pub fn read(&self, headers: &HeaderMap) -> Result<Option<Duration>, InvalidDeadlineHeader> {
        let mut values = headers.get_all(&self.name).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        let invalid = |reason| InvalidDeadlineHeader {
            header: self.name.clone(),
            reason,
        };
        if values.next().is_some() {
            return Err(invalid(InvalidReason::Repeated));
        }
        self.parse(value.as_bytes()).map(Some).map_err(invalid)
    }

    /// Writes `remaining` into `headers`, replacing any value already there (a stale one copied
    /// from an incoming request, say).
    pub fn write(&self, headers: &mut HeaderMap, remaining: Duration) {
        headers.insert(self.name.clone(), self.encode(remaining));
    }
}

/// Smallest-unit-that-fits encoding, rounded up, as grpc-go does.
fn encode_grpc(remaining: Duration) -> HeaderValue {
    const UNITS: [(u128, &[u8]); 6] = [
        (1, b"n"),
        (1_000, b"u"),
        (1_000_000, b"m"),
        (1_000_000_000, b"S"),
        (60_000_000_000, b"M"),
        (3_600_000_000_000, b"H"),
    ];
    // Zero (or less) is sent as `1n`, never `0n`: some peers read 0 as "no deadline".
    let nanos = remaining.as_nanos().max(1);
    for (unit, suffix) in UNITS {
        let value = nanos.div_ceil(unit);
        if value <= GRPC_MAX_VALUE {
            return number_value(value, suffix);
        }
    }
    number_value(GRPC_MAX_VALUE, b"H")
}

/// `value` in decimal followed by `suffix`, formatted on the stack so the header value is the
/// only allocation. `value` saturates at `u64::MAX`.
fn number_value(value: u128, suffix: &[u8]) -> HeaderValue {
    let mut value = u64::try_from(value).unwrap_or(u64::MAX);
    let mut buf = [0u8; 24];
    let mut start = buf.len() - suffix.len();
    buf[start..].copy_from_slice(suffix);
    loop {
        start -= 1;
        // `value % 10` is a single digit.
        #[allow(clippy::cast_possible_truncation)]
        let digit = (value % 10) as u8;
        buf[start] = b'0' + digit;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    // Digits and an ASCII letter are always a valid header value.
    HeaderValue::from_bytes(&buf[start..]).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// `value` without the optional whitespace (spaces and tabs, RFC 9110 §5.6.3) around it.
fn trim_ows(value: &[u8]) -> &[u8] {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().take_while(|b| ows(b)).count();
    let end = value.len() - value[start..].iter().rev().take_while(|b| ows(b)).count();
    &value[start..end]
}

fn parse_grpc(value: &[u8]) -> Result<Duration, InvalidReason> {
    let Some((&unit, digits)) = value.split_last() else {
        return Err(InvalidReason::Empty);
    };
    if digits.is_empty() {
        return Err(if unit.is_ascii_digit() {
            InvalidReason::MissingUnit
        } else {
            InvalidReason::Empty
        });
    }
    let number = parse_digits(digits, 8)?;
    let duration = match unit {
        b'H' => Duration::from_secs(number * 3600),
        b'M' => Duration::from_secs(number * 60),
        b'S' => Duration::from_secs(number),
        b'm' => Duration::from_millis(number),
        b'u' => Duration::from_micros(number),
        b'n' => Duration::from_nanos(number),
        b'0'..=b'9' => return Err(InvalidReason::MissingUnit),
        _ => return Err(InvalidReason::UnknownUnit),
    };
    Ok(duration)
}

fn parse_millis(value: &[u8]) -> Result<Duration, InvalidReason> {
    if value.is_empty() {
        return Err(InvalidReason::Empty);
    }
    parse_digits(value, 20).map(Duration::from_millis)
}

/// An unsigned decimal of at most `max_digits` digits that fits a `u64`.
fn parse_digits(digits: &[u8], max_digits: usize) -> Result<u64, InvalidReason> {
    if digits.len() > max_digits {
        return Err(InvalidReason::TooManyDigits);
    }
    digits.iter().try_fold(0u64, |acc, &byte| {
        if !byte.is_ascii_digit() {
            return Err(InvalidReason::NotADigit);
        }
        acc.checked_mul(10)
            .and_then(|acc| acc.checked_add(u64::from(byte - b'0')))
            .ok_or(InvalidReason::TooLarge)
    })
}

/// A deadline header whose value is outside its grammar.
///
/// A rejection: the server-side timeout answers it with `400 Bad Request` (or ignores the header,
/// as configured) before the handler runs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {header} header: {reason}")]
#[non_exhaustive]
pub struct InvalidDeadlineHeader {
    /// The header that was malformed.
    pub header: HeaderName,
    /// What was wrong with it.
    pub reason: InvalidReason,
}

/// Why a deadline header value was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidReason {
    /// The value is empty.
    Empty,
    /// A gRPC value without its unit letter.
    MissingUnit,
    /// A gRPC unit other than `H`, `M`, `S`, `m`, `u` or `n`.
    UnknownUnit,
    /// A character other than an ASCII digit where the number should be.
    NotADigit,
    /// More digits than the format allows (8 for gRPC, 20 for milliseconds).
    TooManyDigits,
    /// The number does not fit in 64 bits.
    TooLarge,
    /// The header appears more than once.
    Repeated,
}

impl fmt::Display for InvalidReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "the value is empty",
            Self::MissingUnit => "the value has no unit (one of H, M, S, m, u, n)",
            Self::UnknownUnit => "the unit is not one of H, M, S, m, u, n",
            Self::NotADigit => "the value is not a decimal number",
            Self::TooManyDigits => "the value has too many digits",
            Self::TooLarge => "the value is too large",
            Self::Repeated => "the header appears more than once",
        })
    }
}

impl InvalidDeadlineHeader {
    /// `400 Bad Request`: the caller sent a header outside its grammar.
    #[must_use]
    pub fn status(&self) -> http::StatusCode {
        http::StatusCode::BAD_REQUEST
    }

    /// This rejection as a problem description.
    #[must_use]
    pub fn problem(&self) -> crate::http::Problem {
        crate::http::Problem::new(
            self.status(),
            "urn:palisade:invalid-deadline-header",
            "Invalid deadline header",
            self.to_string(),
        )
    }
}

impl crate::rejection::RejectionKind for InvalidDeadlineHeader {
    /// The call was never sent.
    fn outcome(&self) -> Option<crate::classify::Outcome> {
        Some(crate::classify::Outcome::Ignore)
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn grpc(value: &str) -> Result<Duration, InvalidReason> {
        DeadlineHeader::grpc().parse(value.as_bytes())
    }

    #[test]
    fn grpc_units_decode_to_their_durations() {
        assert_eq!(grpc("2H"), Ok(Duration::from_secs(7200)));
        assert_eq!(grpc("3M"), Ok(Duration::from_secs(180)));
        assert_eq!(grpc("30S"), Ok(Duration::from_secs(30)));
        assert_eq!(grpc("250m"), Ok(Duration::from_millis(250)));
        assert_eq!(grpc("7u"), Ok(Duration::from_micros(7)));
        assert_eq!(grpc("99999999n"), Ok(Duration::from_nanos(99_999_999)));
        assert_eq!(grpc("0S"), Ok(Duration::ZERO));
        assert_eq!(grpc(" 5S\t"), Ok(Duration::from_secs(5)));
        assert_eq!(
            grpc("99999999H"),
            Ok(Duration::from_secs(99_999_999 * 3600))
        );
    }

    #[test]
    fn grpc_values_outside_the_grammar_are_refused_with_a_reason() {
        assert_eq!(grpc(""), Err(InvalidReason::Empty));
        assert_eq!(grpc("   "), Err(InvalidReason::Empty));
        assert_eq!(grpc("S"), Err(InvalidReason::Empty));
        assert_eq!(grpc("5"), Err(InvalidReason::MissingUnit));
        assert_eq!(grpc("100"), Err(InvalidReason::MissingUnit));
        assert_eq!(grpc("5s"), Err(InvalidReason::UnknownUnit));
        assert_eq!(grpc("5h"), Err(InvalidReason::UnknownUnit));
        assert_eq!(grpc("123456789S"), Err(InvalidReason::TooManyDigits));
        assert_eq!(grpc("-5S"), Err(InvalidReason::NotADigit));
        assert_eq!(grpc("+5S"), Err(InvalidReason::NotADigit));
        assert_eq!(grpc("1.5S"), Err(InvalidReason::NotADigit));
        assert_eq!(grpc("5 S"), Err(InvalidReason::NotADigit));
        assert_eq!(grpc("５S"), Err(InvalidReason::NotADigit));
    }

    #[test]
    fn grpc_encoding_picks_the_finest_unit_that_fits_and_rounds_up() {
        let encode = |d| DeadlineHeader::grpc().encode(d);
        assert_eq!(encode(Duration::ZERO), "1n");
        assert_eq!(encode(Duration::from_nanos(99_999_999)), "99999999n");
        assert_eq!(encode(Duration::from_nanos(100_000_000)), "100000u");
        assert_eq!(encode(Duration::from_nanos(100_000_001)), "100001u");
        assert_eq!(encode(Duration::from_secs(30)), "30000000u");
        assert_eq!(encode(Duration::from_secs(100_000)), "100000S");
        assert_eq!(encode(Duration::from_secs(100_000_000)), "1666667M");
        assert_eq!(encode(Duration::MAX), "99999999H");
    }

    #[test]
    fn millis_header_decodes_whole_milliseconds_and_refuses_the_rest() {
        let millis = DeadlineHeader::millis(HeaderName::from_static("x-timeout-ms"));
        assert_eq!(millis.parse(b"0"), Ok(Duration::ZERO));
        assert_eq!(millis.parse(b"1500"), Ok(Duration::from_millis(1500)));
        assert_eq!(millis.parse(b""), Err(InvalidReason::Empty));
        assert_eq!(millis.parse(b"15s"), Err(InvalidReason::NotADigit));
        assert_eq!(millis.parse(b"-1"), Err(InvalidReason::NotADigit));
        assert_eq!(
            millis.parse(b"18446744073709551616"),
            Err(InvalidReason::TooLarge)
        );
        assert_eq!(
            millis.parse(b"184467440737095516150"),
            Err(InvalidReason::TooManyDigits)
        );
        assert_eq!(millis.encode(Duration::from_nanos(1)), "1");
        assert_eq!(millis.encode(Duration::from_millis(1500)), "1500");
        assert_eq!(millis.encode(Duration::ZERO), "0");
    }

    #[test]
    fn reading_a_repeated_header_is_refused() {
        let mut headers = HeaderMap::new();
        headers.append(GRPC_TIMEOUT, HeaderValue::from_static("1S"));
        headers.append(GRPC_TIMEOUT, HeaderValue::from_static("2S"));
        let err = DeadlineHeader::grpc().read(&headers).unwrap_err();
        assert_eq!(err.reason, InvalidReason::Repeated);
        assert_eq!(
            err.to_string(),
            "invalid grpc-timeout header: the header appears more than once"
        );
    }

    #[test]
    fn writing_replaces_a_stale_value() {
        let mut headers = HeaderMap::new();
        headers.insert(GRPC_TIMEOUT, HeaderValue::from_static("99S"));
        DeadlineHeader::grpc().write(&mut headers, Duration::from_millis(5));
        assert_eq!(headers.get_all(GRPC_TIMEOUT).iter().count(), 1);
        assert_eq!(headers[GRPC_TIMEOUT], "5000000n");
    }

    proptest! {
        /// Encoding then decoding never loses time: the decoded value is at least the original
        /// and, within the encodable range, exceeds it by less than one unit of the chosen
        /// resolution.
        #[test]
        fn grpc_round_trip_rounds_up_by_less_than_one_unit(nanos in 0u64..=u64::MAX) {
            let header = DeadlineHeader::grpc();
            let original = Duration::from_nanos(nanos);
            let encoded = header.encode(original);
            let bytes = encoded.as_bytes();
            prop_assert!(bytes.len() <= 9);
            let decoded = header.parse(bytes).unwrap();
            prop_assert!(decoded >= original.max(Duration::from_nanos(1)));
            let unit = match bytes[bytes.len() - 1] {
                b'n' => Duration::from_nanos(1),
                b'u' => Duration::from_micros(1),
                b'm' => Duration::from_millis(1),
                b'S' => Duration::from_secs(1),
                b'M' => Duration::from_secs(60),
                _ => Duration::from_secs(3600),
            };
            prop_assert!(decoded - original.max(Duration::from_nanos(1)) < unit);
        }

        /// No byte string makes the parsers panic; whatever they accept re-encodes to a value
        /// they accept again.
        #[test]
        fn parsers_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..24)) {
            for header in [DeadlineHeader::grpc(), DeadlineHeader::millis(HeaderName::from_static("x-ms"))] {
                if let Ok(duration) = header.parse(&bytes) {
                    let again = header.encode(duration);
                    prop_assert!(header.parse(again.as_bytes()).is_ok());
                }
            }
        }
    }
}
