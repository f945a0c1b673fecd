//! `Cache-Control` (RFC 9111 §5.2, RFC 5861), `Pragma` (§5.4) and the few other header values
//! the freshness rules read, parsed without allocating.
//!
//! Directive names compare case-insensitively; an argument may be a token or a quoted string
//! (§5.2). Every field line of a header is read, so `Cache-Control: public` and
//! `Cache-Control: max-age=60` on two lines are one list.

use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderValue};

use crate::http::retry_after::parse_http_date;

/// The largest delta-seconds kept: a larger value, or one that overflows, counts as 2³¹
/// (RFC 9111 §1.2.2).
pub(crate) const DELTA_MAX: u64 = 1 << 31;

/// A delta-seconds argument as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delta {
    /// A valid count of seconds (capped at [`DELTA_MAX`]).
    Seconds(u64),
    /// Missing, empty or not a number: the directive is there, its value is unusable.
    Invalid,
}

impl Delta {
    fn parse(argument: Option<&str>) -> Self {
        let Some(text) = argument.filter(|text| !text.is_empty()) else {
            return Self::Invalid;
        };
        if !text.bytes().all(|byte| byte.is_ascii_digit()) {
            return Self::Invalid;
        }
        // Only digits: the one failure left is overflow, which counts as 2^31.
        Self::Seconds(text.parse::<u64>().map_or(DELTA_MAX, |n| n.min(DELTA_MAX)))
    }

    /// The value, an invalid one read as zero: an unusable freshness value leaves the response
    /// stale (§4.2.1), and an unusable window opens nothing.
    pub(crate) fn or_zero(self) -> u64 {
        match self {
            Self::Seconds(seconds) => seconds,
            Self::Invalid => 0,
        }
    }
}

/// The response's `Cache-Control` directives palisade acts on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ResponseDirectives {
    pub(crate) max_age: Option<Delta>,
    pub(crate) s_maxage: Option<Delta>,
    pub(crate) no_store: bool,
    /// `no-cache`, qualified (`no-cache="Set-Cookie"`) or not: both are read as the unqualified
    /// form, which is the stricter (§5.2.2.4 allows it).
    pub(crate) no_cache: bool,
    /// `private`, qualified or not: a shared cache stores neither (the stricter reading).
    pub(crate) private: bool,
    pub(crate) public: bool,
    pub(crate) must_revalidate: bool,
    pub(crate) proxy_revalidate: bool,
    pub(crate) stale_while_revalidate: Option<Delta>,
    pub(crate) stale_if_error: Option<Delta>,
    /// A freshness directive given twice with different values: the response is stale
    /// (§4.2.1 allows either the first or this; stale is the safe one).
    pub(crate) conflicting: bool,
}

/// The request's `Cache-Control` directives (and `Pragma: no-cache` when it has none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RequestDirectives {
    pub(crate) max_age: Option<u64>,
    /// `Some(None)`: `max-stale` without a value, any staleness is acceptable (§5.2.1.2).
    pub(crate) max_stale: Option<Option<u64>>,
    pub(crate) min_fresh: Option<u64>,
    pub(crate) no_cache: bool,
    pub(crate) no_store: bool,
    pub(crate) only_if_cached: bool,
}

/// Calls `each(name, argument)` for every directive in every `Cache-Control` line of
/// `headers`; `name` is as written (compare it case-insensitively), `argument` unquoted.
fn for_each_directive(headers: &HeaderMap, mut each: impl FnMut(&str, Option<&str>)) {
    for line in headers.get_all(header::CACHE_CONTROL) {
        // Read even with bytes outside visible ASCII (they can only sit in an argument): a
        // line skipped whole would lose its `private` or `no-store`, failing open.
        let line = String::from_utf8_lossy(line.as_bytes());
        for_each_in_list(&line, &mut each);
    }
}

/// Splits one list of `name[=argument]` members at the commas outside quoted strings.
fn for_each_in_list(line: &str, each: &mut impl FnMut(&str, Option<&str>)) {
    let mut rest = line;
    while !rest.is_empty() {
        let (member, tail) = split_member(rest);
        rest = tail;
        let member = member.trim();
        if member.is_empty() {
            continue;
        }
        match member.split_once('=') {
            Some((name, argument)) => {
                let argument = argument.trim();
                let argument = argument
                    .strip_prefix('"')
                    .and_then(|quoted| quoted.strip_suffix('"'))
                    .unwrap_or(argument);
                each(name.trim(), Some(argument));
            }
            None => each(member, None),
        }
    }
}

/// The first member of `list` (up to a comma outside quotes) and what follows that comma.
pub(crate) fn split_member(list: &str) -> (&str, &str) {
    let mut quoted = false;
    let mut escaped = false;
    for (at, byte) in list.bytes().enumerate() {
        match byte {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => return (&list[..at], &list[at + 1..]),
            _ => {}
        }
    }
    // A quote never closed is no quoted string: split at the first comma as if it were a
    // plain byte, so it cannot swallow the directives after it (`x="a, private`).
    if quoted {
        if let Some(at) = list.find(',') {
            return (&list[..at], &list[at + 1..]);
        }
    }
    (list, "")
}

/// Keeps the first value of a repeated delta directive, noting a conflicting repeat.
fn keep_first(slot: &mut Option<Delta>, value: Delta, conflicting: &mut bool) {
    match slot {
        None => *slot = Some(value),
        Some(first) if *first != value => *conflicting = true,
        Some(_) => {}
    }
}

impl ResponseDirectives {
    pub(crate) fn parse(headers: &HeaderMap) -> Self {
        let mut d = Self::default();
        let mut conflicting = false;
        for_each_directive(headers, |name, argument| {
            let is = |directive: &str| name.eq_ignore_ascii_case(directive);
            if is("max-age") {
                keep_first(&mut d.max_age, Delta::parse(argument), &mut conflicting);
            } else if is("s-maxage") {
                keep_first(&mut d.s_maxage, Delta::parse(argument), &mut conflicting);
            } else if is("no-store") {
                d.no_store = true;
            } else if is("no-cache") {
                d.no_cache = true;
            } else if is("private") {
                d.private = true;
            } else if is("public") {
                d.public = true;
            } else if is("must-revalidate") {
                d.must_revalidate = true;
            } else if is("proxy-revalidate") {
                d.proxy_revalidate = true;
            } else if is("stale-while-revalidate") {
                d.stale_while_revalidate
                    .get_or_insert(Delta::parse(argument));
            } else if is("stale-if-error") {
                d.stale_if_error.get_or_insert(Delta::parse(argument));
            }
            // Any other directive (immutable, no-transform, extensions) changes nothing here.
        });
        d.conflicting = conflicting;
        d
    }
}

impl RequestDirectives {
    pub(crate) fn parse(headers: &HeaderMap) -> Self {
        let mut d = Self::default();
        let mut any = false;
        for_each_directive(headers, |name, argument| {
            any = true;
            let is = |directive: &str| name.eq_ignore_ascii_case(directive);
            let seconds = || match Delta::parse(argument) {
                Delta::Seconds(seconds) => Some(seconds),
                Delta::Invalid => None,
            };
            if is("max-age") {
                // An invalid request max-age asks for nothing it can be held to: read it as
                // 0, the strict end (the caller wanted a bound).
                d.max_age.get_or_insert(seconds().unwrap_or(0));
            } else if is("max-stale") {
                // Without a value: any staleness. With one that is not a number: ignored (an
                // unreadable bound must not widen to "any").
                match (argument, seconds()) {
                    (None, _) => {
                        d.max_stale.get_or_insert(None);
                    }
                    (Some(_), Some(seconds)) => {
                        d.max_stale.get_or_insert(Some(seconds));
                    }
                    (Some(_), None) => {}
                }
            } else if is("min-fresh") {
                d.min_fresh.get_or_insert(seconds().unwrap_or(0));
            } else if is("no-cache") {
                d.no_cache = true;
            } else if is("no-store") {
                d.no_store = true;
            } else if is("only-if-cached") {
                d.only_if_cached = true;
            }
        });
        // `Pragma: no-cache` counts only without a `Cache-Control` (§5.4).
        if !any && pragma_no_cache(headers) {
            d.no_cache = true;
        }
        d
    }
}

fn pragma_no_cache(headers: &HeaderMap) -> bool {
    headers.get_all(header::PRAGMA).iter().any(|line| {
        line.to_str().is_ok_and(|line| {
            line.split(',')
                .any(|member| member.trim().eq_ignore_ascii_case("no-cache"))
        })
    })
}

/// The `Age` header's value in seconds; an invalid one is ignored (§5.1), a huge one capped.
pub(crate) fn age(headers: &HeaderMap) -> u64 {
    match headers.get(header::AGE).map(HeaderValue::to_str) {
        Some(Ok(text)) => match Delta::parse(Some(text.trim())) {
            Delta::Seconds(seconds) => seconds,
            Delta::Invalid => 0,
        },
        _ => 0,
    }
}

/// An HTTP-date header (`Date`, `Expires`, `Last-Modified`) in seconds since the Unix epoch;
/// `Err` for a header that is there but not a date (an invalid `Expires` means "already
/// expired", §5.3).
pub(crate) fn date(headers: &HeaderMap, name: header::HeaderName) -> Option<Result<u64, ()>> {
    let value = headers.get(name)?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|text| parse_http_date(text.trim(), SystemTime::now()))
            .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
            .map(|since| since.as_secs())
            .ok_or(()),
    )
}

/// The names `Vary` lists, trimmed, as written. A line with bytes outside visible ASCII
/// yields them replaced (U+FFFD), which no header name matches: such a `Vary` is refused, not
/// ignored.
pub(crate) fn vary_names(headers: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    headers.get_all(header::VARY).iter().flat_map(|line| {
        String::from_utf8_lossy(line.as_bytes())
            .split(',')
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .collect::<Vec<_>>()
    })
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    fn headers(lines: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn response(cc: &'static str) -> ResponseDirectives {
        ResponseDirectives::parse(&headers(&[("cache-control", cc)]))
    }

    fn request(cc: &'static str) -> RequestDirectives {
        RequestDirectives::parse(&headers(&[("cache-control", cc)]))
    }

    #[test]
    fn response_directives_are_read_case_insensitively_in_both_argument_forms() {
        let d = response(r#"Public, MAX-AGE=60, s-maxage="120", stale-while-revalidate=30"#);
        assert!(d.public);
        assert_eq!(d.max_age, Some(Delta::Seconds(60)));
        assert_eq!(d.s_maxage, Some(Delta::Seconds(120)));
        assert_eq!(d.stale_while_revalidate, Some(Delta::Seconds(30)));
        assert!(!d.conflicting);
    }

    /// Bytes a header value may hold (visible ASCII, space, tab, and obs-text).
    fn header_bytes() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            proptest::prop_oneof![0x20u8..0x7f, Just(b'\t'), 0x80u8..=0xff],
            0..64,
        )
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Whatever follows it, a `private` or `no-store` at the head of a line is read:
        /// hostile or broken bytes after it never make a shared cache store the response.
        #[test]
        fn a_refusal_is_never_lost_to_what_follows_it(junk in header_bytes()) {
            for head in ["private, ", "no-store,", "NO-STORE , "] {
                let mut line = head.as_bytes().to_vec();
                line.extend_from_slice(&junk);
                let Ok(value) = HeaderValue::from_bytes(&line) else { continue };
                let mut map = HeaderMap::new();
                map.append("cache-control", value);
                let d = ResponseDirectives::parse(&map);
                prop_assert!(d.private || d.no_store, "lost in {:?}", line);
            }
        }

        /// Arbitrary bytes in every header the rules read never panic a parser.
        #[test]
        fn arbitrary_header_bytes_never_panic(bytes in header_bytes()) {
            if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                let mut map = HeaderMap::new();
                for name in ["cache-control", "pragma", "age", "date", "expires", "vary"] {
                    map.append(name, value.clone());
                }
                let _ = ResponseDirectives::parse(&map);
                let _ = RequestDirectives::parse(&map);
                let _ = age(&map);
                let _ = date(&map, header::EXPIRES);
                let _ = vary_names(&map).count();
            }
        }
    }

    #[test]
    fn a_line_with_bytes_outside_ascii_is_still_read() {
        let mut map = HeaderMap::new();
        map.append(
            "cache-control",
            HeaderValue::from_bytes(b"private, max-age=60, x=\"\xc3\xa9\"").unwrap(),
        );
        assert!(ResponseDirectives::parse(&map).private, "never fails open");
        let mut vary = HeaderMap::new();
        vary.append("vary", HeaderValue::from_bytes(b"accept, \xe9").unwrap());
        assert!(
            vary_names(&vary).any(|name| http::HeaderName::from_bytes(name.as_bytes()).is_err())
        );
    }

    #[test]
    fn an_unterminated_quote_swallows_nothing_after_it() {
        let d = response(r#"x="a, private, max-age=5"#);
        assert!(d.private);
        assert_eq!(d.max_age, Some(Delta::Seconds(5)));
    }

    #[test]
    fn every_field_line_is_one_list() {
        let d = ResponseDirectives::parse(&headers(&[
            ("cache-control", "no-cache"),
            ("cache-control", "must-revalidate, stale-if-error=600"),
        ]));
        assert!(d.no_cache && d.must_revalidate);
        assert_eq!(d.stale_if_error, Some(Delta::Seconds(600)));
    }

    #[test]
    fn a_comma_inside_a_quoted_argument_does_not_split() {
        let d = response(r#"no-cache="set-cookie, x-token", max-age=5"#);
        assert!(d.no_cache);
        assert_eq!(d.max_age, Some(Delta::Seconds(5)));
        let d = response(r#"private="a\"b, c", max-age=7"#);
        assert!(d.private);
        assert_eq!(d.max_age, Some(Delta::Seconds(7)));
    }

    #[test]
    fn bad_deltas_are_invalid_and_huge_ones_are_capped_at_2_pow_31() {
        // RFC 9111 §1.2.2.
        assert_eq!(response("max-age=abc").max_age, Some(Delta::Invalid));
        assert_eq!(response("max-age").max_age, Some(Delta::Invalid));
        assert_eq!(response("max-age=-1").max_age, Some(Delta::Invalid));
        assert_eq!(
            response("max-age=99999999999999999999999").max_age,
            Some(Delta::Seconds(DELTA_MAX))
        );
        assert_eq!(Delta::Invalid.or_zero(), 0);
    }

    #[test]
    fn a_repeated_freshness_directive_with_another_value_conflicts() {
        assert!(response("max-age=60, max-age=120").conflicting);
        assert!(!response("max-age=60, max-age=60").conflicting);
    }

    #[test]
    fn request_directives() {
        let d = request("max-age=10, min-fresh=5, only-if-cached");
        assert_eq!(d.max_age, Some(10));
        assert_eq!(d.min_fresh, Some(5));
        assert!(d.only_if_cached);
        assert_eq!(request("max-stale").max_stale, Some(None));
        assert_eq!(request("max-stale=30").max_stale, Some(Some(30)));
        assert_eq!(
            request("max-stale=abc").max_stale,
            None,
            "unreadable: ignored, not any"
        );
        assert_eq!(request("max-stale=").max_stale, None);
        assert_eq!(request("max-age=x").max_age, Some(0));
        assert!(request("no-store").no_store);
        assert!(request("NO-CACHE").no_cache);
    }

    #[test]
    fn pragma_no_cache_counts_only_without_cache_control() {
        // RFC 9111 §5.4.
        let pragma = headers(&[("pragma", "no-cache")]);
        assert!(RequestDirectives::parse(&pragma).no_cache);
        let both = headers(&[("pragma", "no-cache"), ("cache-control", "max-age=5")]);
        assert!(!RequestDirectives::parse(&both).no_cache);
    }

    #[test]
    fn age_dates_and_vary() {
        assert_eq!(age(&headers(&[("age", "42")])), 42);
        assert_eq!(
            age(&headers(&[("age", "4x2")])),
            0,
            "invalid: ignored (§5.1)"
        );
        let date_line = headers(&[("date", "Sun, 06 Nov 1994 08:49:37 GMT")]);
        assert_eq!(date(&date_line, header::DATE), Some(Ok(784_111_777)));
        let bad = headers(&[("expires", "0")]);
        assert_eq!(date(&bad, header::EXPIRES), Some(Err(())));
        assert_eq!(date(&bad, header::DATE), None);
        let vary = headers(&[
            ("vary", "Accept-Encoding, accept-language"),
            ("vary", " x "),
        ]);
        assert_eq!(
            vary_names(&vary).collect::<Vec<_>>(),
            ["Accept-Encoding", "accept-language", "x"]
        );
    }
}
