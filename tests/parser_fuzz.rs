//! Fuzzing the header parsers on the stable toolchain: property tests over arbitrary bytes,
//! over strings assembled from grammar fragments, and over valid values with one byte mutated.
//! Each parser must never panic and must agree exactly with a reference written from the
//! standard's grammar (as a regular expression) plus the documented semantic checks; encoders
//! must round-trip through their parser.
//!
//! The case budget per property comes from `PALISADE_FUZZ_CASES` (default 256, so `cargo test`
//! stays quick). CI runs a fixed larger budget; a long run is
//! `PALISADE_FUZZ_CASES=1000000 cargo test --release --all-features --test parser_fuzz`.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderName, HeaderValue};
use palisade::http::{DeadlineHeader, parse_idempotency_key, parse_retry_after};
use proptest::prelude::*;
use proptest::test_runner::Config;
use regex::bytes::Regex;

fn config() -> Config {
    let cases = std::env::var("PALISADE_FUZZ_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(256);
    Config {
        cases,
        // Regressions found by a long run belong in the unit tests, not in a file.
        failure_persistence: None,
        ..Config::default()
    }
}

fn regex(pattern: &str) -> Regex {
    // `(?-u)`: match bytes, not code points, so any byte sequence is a valid input.
    Regex::new(&format!("(?-u)^{pattern}$")).unwrap()
}

/// One of `fragments`, or a single arbitrary byte.
fn fragment(fragments: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::sample::select(fragments).prop_map(|f| f.as_bytes().to_vec()),
        1 => any::<u8>().prop_map(|b| vec![b]),
    ]
}

/// Up to `n` grammar fragments, concatenated: inputs close to the grammar, valid or nearly so.
fn assembled(fragments: &'static [&'static str], n: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(fragment(fragments), 0..n).prop_map(|parts| parts.concat())
}

/// `valid`, then at most one byte deleted, inserted or replaced.
fn mutated(valid: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (valid, 0u8..4, any::<prop::sample::Index>(), any::<u8>()).prop_map(
        |(mut bytes, how, at, byte)| {
            let i = at.index(bytes.len() + 1);
            match how {
                0 if i < bytes.len() => {
                    bytes.remove(i);
                }
                1 => bytes.insert(i, byte),
                2 if i < bytes.len() => bytes[i] = byte,
                _ => {}
            }
            bytes
        },
    )
}

fn header_value(bytes: &[u8]) -> Option<HeaderValue> {
    HeaderValue::from_bytes(bytes).ok()
}

// ---------------------------------------------------------------------------------------------
// Idempotency-Key: an RFC 8941 sf-string with optional parameters (IETF draft), or, when
// allowed, a bare key of visible ASCII other than `"` and `\`.

const SF_STRING: &str = r#""(?:[\x20\x21\x23-\x5B\x5D-\x7E]|\\["\\])*""#;

static QUOTED_KEY: LazyLock<Regex> = LazyLock::new(|| {
    let key = r"[a-z*][a-z0-9_.*\-]*";
    let bare_item = format!(
        r"(?:{SF_STRING}|\?[01]|:[A-Za-z0-9+/=]*:|-?[0-9]{{1,15}}|-?[0-9]{{1,12}}\.[0-9]{{1,3}}|[A-Za-z*][A-Za-z0-9!#$%&'*+.^_`|~:/\-]*)"
    );
    regex(&format!(
        r"[ ]*({SF_STRING})(?:;[ ]*{key}(?:={bare_item})?)*[ ]*"
    ))
});
static BARE_KEY: LazyLock<Regex> = LazyLock::new(|| regex(r"[ ]*([\x21\x23-\x5B\x5D-\x7E]+)[ ]*"));

/// What the grammar says the key is, or `None` for a refusal.
fn reference_key(bytes: &[u8], unquoted: bool, max: usize) -> Option<String> {
    let key = if let Some(found) = QUOTED_KEY.captures(bytes) {
        let quoted = &found[1];
        let mut key = String::new();
        let mut escaped = false;
        for &b in &quoted[1..quoted.len() - 1] {
            if b == b'\\' && !escaped {
                escaped = true;
                continue;
            }
            escaped = false;
            key.push(char::from(b));
        }
        key
    } else if unquoted && bytes.iter().find(|&&b| b != b' ') != Some(&b'"') {
        let found = BARE_KEY.captures(bytes)?;
        String::from_utf8(found[1].to_vec()).unwrap()
    } else {
        return None;
    };
    (!key.is_empty() && key.len() <= max).then_some(key)
}

const KEY_FRAGMENTS: &[&str] = &[
    "\"",
    "\\",
    "\\\"",
    "\\\\",
    ";",
    "=",
    " ",
    "abc",
    "8e03978e-40d5",
    "k",
    "*",
    "_",
    ".",
    "-",
    "?0",
    "?1",
    "?2",
    ":",
    "aGk=",
    "12",
    "1.5",
    "-3",
    "1234567890123456",
    "1.2345",
    "tok/en",
    "Tok:en",
    "~",
    "\t",
    "\u{7f}",
    "\u{e9}",
    "\"a\"",
    ";v=1",
    ";a",
    ";v=\"x\"",
    "(",
    ",",
];

fn check_key(bytes: &[u8], unquoted: bool, max: usize) -> Result<(), TestCaseError> {
    let Some(value) = header_value(bytes) else {
        return Ok(());
    };
    let parsed = parse_idempotency_key(&value, unquoted, max)
        .ok()
        .map(std::borrow::Cow::into_owned);
    prop_assert_eq!(
        parsed,
        reference_key(bytes, unquoted, max),
        "{:?}",
        String::from_utf8_lossy(bytes)
    );
    Ok(())
}

fn valid_key() -> impl Strategy<Value = Vec<u8>> {
    (
        "[ -~]{1,40}",
        proptest::collection::vec(
            prop_oneof![
                Just(";v=1".to_owned()),
                Just(";a".to_owned()),
                Just(";*x=?1".to_owned()),
                Just(";t=:aGk=:".to_owned()),
                Just(";d=-12.5".to_owned()),
                Just(";s=\"q\\\"\"".to_owned()),
                Just("; tok=Ab/c:d".to_owned()),
            ],
            0..3,
        ),
    )
        .prop_map(|(key, params)| {
            let quoted = key.replace('\\', "\\\\").replace('"', "\\\"");
            format!(" \"{quoted}\"{} ", params.concat()).into_bytes()
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn idempotency_key_agrees_with_the_grammar_on_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
        unquoted in any::<bool>(),
        max in 1usize..80,
    ) {
        check_key(&bytes, unquoted, max)?;
    }

    #[test]
    fn idempotency_key_agrees_with_the_grammar_near_it(
        bytes in assembled(KEY_FRAGMENTS, 12),
        unquoted in any::<bool>(),
    ) {
        check_key(&bytes, unquoted, 255)?;
    }

    #[test]
    fn idempotency_key_agrees_with_the_grammar_one_byte_off_a_valid_key(
        bytes in mutated(valid_key()),
        unquoted in any::<bool>(),
    ) {
        check_key(&bytes, unquoted, 255)?;
    }

    /// Quoting any printable key, with any well-formed parameters, gives the key back.
    #[test]
    fn a_quoted_key_round_trips(key in "[ -~]{1,100}", params in "(;[a-z][a-z0-9]{0,3}(=[0-9]{1,3})?){0,3}") {
        let quoted = format!("\"{}\"{params}", key.replace('\\', "\\\\").replace('"', "\\\""));
        let value = HeaderValue::from_str(&quoted).unwrap();
        prop_assert_eq!(parse_idempotency_key(&value, false, 255).unwrap(), key);
    }
}

// ---------------------------------------------------------------------------------------------
// Retry-After (RFC 9110 §10.2.3): delay-seconds, or an HTTP-date in one of its three forms.

const DAYS: &str = "(Mon|Tue|Wed|Thu|Fri|Sat|Sun)";
const LONG_DAYS: &str = "(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)";
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const MONTH: &str = "(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)";
const TIME: &str = "([0-9]{2}):([0-9]{2}):([0-9]{2})";
const OWS: &str = "[ \t]*";

static DELAY: LazyLock<Regex> = LazyLock::new(|| regex(&format!("{OWS}([0-9]+){OWS}")));
static IMF_FIXDATE: LazyLock<Regex> = LazyLock::new(|| {
    regex(&format!(
        "{OWS}{DAYS}, ([0-9]{{2}}) {MONTH} ([0-9]{{4}}) {TIME} GMT{OWS}"
    ))
});
static RFC850: LazyLock<Regex> = LazyLock::new(|| {
    regex(&format!(
        "{OWS}{LONG_DAYS}, ([0-9]{{2}})-{MONTH}-([0-9]{{2}}) {TIME} GMT{OWS}"
    ))
});
static ASCTIME: LazyLock<Regex> = LazyLock::new(|| {
    regex(&format!(
        "{OWS}{DAYS} {MONTH} ([0-9]{{2}}| [0-9]) {TIME} ([0-9]{{4}}){OWS}"
    ))
});

fn num(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes).unwrap().trim().parse().unwrap()
}

fn month_of(name: &[u8]) -> u64 {
    MONTHS.iter().position(|m| m.as_bytes() == name).unwrap() as u64 + 1
}

fn is_leap(year: u64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Seconds since the epoch of a civil date and time, counted plainly (leap years before the
/// year, then the months), or `None` before 1970.
fn reference_seconds(year: u64, month: u64, day: u64, h: u64, m: u64, s: u64) -> Option<u64> {
    if year < 1970 {
        return None;
    }
    let leaps_before = |y: u64| (y - 1) / 4 - (y - 1) / 100 + (y - 1) / 400;
    let mut days = 365 * (year - 1970) + leaps_before(year) - leaps_before(1970);
    days += (1..month).map(|m| days_in_month(year, m)).sum::<u64>();
    days += day - 1;
    Some(days * 86_400 + h * 3600 + m * 60 + s)
}

/// The year `now` falls in, from an independent formatter.
fn year_of(now: SystemTime) -> u64 {
    httpdate::fmt_http_date(now)[12..16].parse().unwrap()
}

/// What the grammar and RFC 9110's semantics say the wait is: the delay, or the time until the
/// date (zero once it has passed); `None` for anything outside the grammar or an impossible
/// date or time. The day name must be a day name but need not match the date.
fn reference_retry_after(bytes: &[u8], now: SystemTime) -> Option<Duration> {
    if let Some(found) = DELAY.captures(bytes) {
        let seconds = std::str::from_utf8(&found[1]).unwrap().parse::<u64>();
        return Some(Duration::from_secs(seconds.unwrap_or(u64::MAX)));
    }
    let (year, month, day, time) = if let Some(f) = IMF_FIXDATE.captures(bytes) {
        (
            num(&f[4]),
            month_of(&f[3]),
            num(&f[2]),
            [num(&f[5]), num(&f[6]), num(&f[7])],
        )
    } else if let Some(f) = RFC850.captures(bytes) {
        let this = year_of(now);
        let yy = num(&f[3]);
        let year = this + 50 - (this + 50 - yy) % 100;
        (
            year,
            month_of(&f[2]),
            num(&f[1]),
            [num(&f[4]), num(&f[5]), num(&f[6])],
        )
    } else if let Some(f) = ASCTIME.captures(bytes) {
        (
            num(&f[7]),
            month_of(&f[2]),
            num(&f[3]),
            [num(&f[4]), num(&f[5]), num(&f[6])],
        )
    } else {
        return None;
    };
    let [h, m, s] = time;
    if day == 0 || day > days_in_month(year, month) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let now = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
    Some(match reference_seconds(year, month, day, h, m, s) {
        Some(at) => Duration::from_secs(at.saturating_sub(now)),
        None => Duration::ZERO,
    })
}

const DATE_FRAGMENTS: &[&str] = &[
    "Sun",
    "Mon",
    "Sunday",
    "Tuesday",
    "Xyz",
    ", ",
    ",",
    " ",
    "  ",
    "-",
    ":",
    "GMT",
    "UTC",
    "Nov",
    "Feb",
    "Foo",
    "06",
    "6",
    "29",
    "31",
    "00",
    "1994",
    "2024",
    "1969",
    "0000",
    "9999",
    "94",
    "08",
    "23",
    "24",
    "59",
    "60",
    "61",
    "\t",
    "120",
    "0",
    "99999999999999999999999",
];

fn any_now() -> impl Strategy<Value = SystemTime> {
    (0u64..253_402_300_799).prop_map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

fn check_retry_after(bytes: &[u8], now: SystemTime) -> Result<(), TestCaseError> {
    let Some(value) = header_value(bytes) else {
        return Ok(());
    };
    prop_assert_eq!(
        parse_retry_after(&value, now),
        reference_retry_after(bytes, now),
        "{:?} at {:?}",
        String::from_utf8_lossy(bytes),
        httpdate::fmt_http_date(now)
    );
    Ok(())
}

/// A valid date in one of the three forms, with any day name, near `now` or anywhere.
fn valid_date() -> impl Strategy<Value = Vec<u8>> {
    (0u64..253_402_300_799, 0usize..3, 0usize..7).prop_map(|(seconds, form, name)| {
        let imf = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(seconds));
        // "Sun, 06 Nov 1994 08:49:37 GMT"
        let (day, month, year, time) = (&imf[5..7], &imf[8..11], &imf[12..16], &imf[17..25]);
        let short = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"][name];
        let long = [
            "Monday",
            "Tuesday",
            "Wednesday",
            "Thursday",
            "Friday",
            "Saturday",
            "Sunday",
        ][name];
        match form {
            0 => format!("{short}, {day} {month} {year} {time} GMT"),
            1 => format!("{long}, {day}-{month}-{} {time} GMT", &year[2..]),
            _ => format!(
                "{short} {month} {:>2} {time} {year}",
                day.trim_start_matches('0')
            ),
        }
        .into_bytes()
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn retry_after_agrees_with_the_grammar_on_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..40),
        now in any_now(),
    ) {
        check_retry_after(&bytes, now)?;
    }

    #[test]
    fn retry_after_agrees_with_the_grammar_near_it(
        bytes in assembled(DATE_FRAGMENTS, 14),
        now in any_now(),
    ) {
        check_retry_after(&bytes, now)?;
    }

    #[test]
    fn retry_after_agrees_with_the_grammar_one_byte_off_a_valid_date(
        bytes in mutated(valid_date()),
        now in any_now(),
    ) {
        check_retry_after(&bytes, now)?;
    }

    /// An IMF-fixdate written by an independent formatter is read back to the second.
    #[test]
    fn an_imf_fixdate_round_trips(at in 0u64..253_402_300_799, before in 0u64..1_000_000) {
        let when = UNIX_EPOCH + Duration::from_secs(at);
        let now = UNIX_EPOCH + Duration::from_secs(at.saturating_sub(before));
        let value = HeaderValue::from_str(&httpdate::fmt_http_date(when)).unwrap();
        prop_assert_eq!(
            parse_retry_after(&value, now),
            Some(when.duration_since(now).unwrap())
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Deadline headers: `grpc-timeout` (1 to 8 digits and a unit) and whole milliseconds (digits
// that fit 64 bits), each with optional whitespace around.

static GRPC: LazyLock<Regex> =
    LazyLock::new(|| regex(&format!("{OWS}([0-9]{{1,8}})([HMSmun]){OWS}")));
static MILLIS: LazyLock<Regex> = LazyLock::new(|| regex(&format!("{OWS}([0-9]{{1,20}}){OWS}")));

fn reference_grpc(bytes: &[u8]) -> Option<Duration> {
    let found = GRPC.captures(bytes)?;
    let n = num(&found[1]);
    Some(match &found[2] {
        b"H" => Duration::from_secs(n * 3600),
        b"M" => Duration::from_secs(n * 60),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        _ => Duration::from_nanos(n),
    })
}

fn reference_millis(bytes: &[u8]) -> Option<Duration> {
    let found = MILLIS.captures(bytes)?;
    let n: u64 = std::str::from_utf8(&found[1]).unwrap().parse().ok()?;
    Some(Duration::from_millis(n))
}

const DEADLINE_FRAGMENTS: &[&str] = &[
    "0",
    "1",
    "9",
    "12345678",
    "99999999",
    "18446744073709551615",
    "18446744073709551616",
    "H",
    "M",
    "S",
    "m",
    "u",
    "n",
    "s",
    "h",
    " ",
    "\t",
    "\n",
    "-",
    "+",
    ".",
    "e",
];

fn check_deadline(bytes: &[u8]) -> Result<(), TestCaseError> {
    let grpc = DeadlineHeader::grpc();
    let millis = DeadlineHeader::millis(HeaderName::from_static("x-timeout-ms"));
    let text = String::from_utf8_lossy(bytes);
    prop_assert_eq!(
        grpc.parse(bytes).ok(),
        reference_grpc(bytes),
        "grpc {:?}",
        text
    );
    prop_assert_eq!(
        millis.parse(bytes).ok(),
        reference_millis(bytes),
        "ms {:?}",
        text
    );
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn deadline_headers_agree_with_the_grammar_on_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..32),
    ) {
        check_deadline(&bytes)?;
    }

    #[test]
    fn deadline_headers_agree_with_the_grammar_near_it(bytes in assembled(DEADLINE_FRAGMENTS, 6)) {
        check_deadline(&bytes)?;
    }

    #[test]
    fn deadline_headers_agree_with_the_grammar_one_byte_off_a_valid_value(
        bytes in mutated("[ \t]{0,2}[0-9]{1,8}[HMSmun]?[ \t]{0,2}".prop_map(String::into_bytes)),
    ) {
        check_deadline(&bytes)?;
    }

    /// Encoding rounds up to a value the parser reads back, never below the remaining time
    /// and never more than one unit of the chosen resolution above it.
    #[test]
    fn encoded_deadlines_round_trip_upwards(nanos in any::<u64>(), secs in 0u64..400_000_000_000) {
        let remaining = Duration::new(secs, 0) + Duration::from_nanos(nanos % 1_000_000_000);
        let grpc = DeadlineHeader::grpc();
        let encoded = grpc.encode(remaining);
        let back = grpc.parse(encoded.as_bytes()).unwrap();
        prop_assert_eq!(reference_grpc(encoded.as_bytes()), Some(back));
        let cap = Duration::from_secs(99_999_999 * 3600);
        prop_assert!(back >= remaining.min(cap), "{:?} -> {:?} -> {:?}", remaining, encoded, back);
        let millis = DeadlineHeader::millis(HeaderName::from_static("x-timeout-ms"));
        let back = millis.parse(millis.encode(remaining).as_bytes()).unwrap();
        prop_assert!(back >= remaining && back - remaining < Duration::from_millis(1));
    }
}
