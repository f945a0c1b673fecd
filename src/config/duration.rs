//! Human durations: `"250ms"`, `"2s"`, `"1m30s"`, `"1.5h"`.

use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

/// The units a duration may be written in, longest suffix first where two share an ending.
const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
];

/// Parses a human duration: one or more `<number><unit>` parts with no spaces between them
/// (`"1m30s"`), each number a non-negative integer or decimal, each unit one of `ns`, `us`
/// (or `µs`), `ms`, `s`, `m`, `h`, `d`; or `"0"`.
///
/// # Errors
///
/// A message naming what is wrong: an empty string, a number without a unit, an unknown
/// unit, a negative or malformed number, or a total past `Duration::MAX`.
///
/// ```
/// use std::time::Duration;
/// use palisade::config::parse_duration;
///
/// assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
/// assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
/// assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
/// assert!(parse_duration("10").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err("an empty duration (write e.g. \"250ms\" or \"2s\")".to_owned());
    }
    let mut rest = text;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| {
                format!("`{text}` has a number without a unit (ns, us, ms, s, m, h, d)")
            })?;
        if digits == 0 {
            return Err(format!(
                "`{text}` is not a duration: expected a number at `{rest}`"
            ));
        }
        let (number, after) = rest.split_at(digits);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let Some(&(_, nanos_per_unit)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(format!(
                "`{text}` has an unknown unit `{unit}` (ns, us, ms, s, m, h, d)"
            ));
        };
        total = total
            .checked_add(scaled(number, nanos_per_unit).ok_or_else(|| {
                format!("`{text}` has a malformed or too large number `{number}`")
            })?)
            .ok_or_else(|| format!("`{text}` is too long a duration"))?;
        rest = next;
    }
    let secs = u64::try_from(total / 1_000_000_000)
        .map_err(|_| format!("`{text}` is too long a duration"))?;
    // In range: the remainder of a division by 10^9.
    let nanos = u32::try_from(total % 1_000_000_000).unwrap_or(0);
    Ok(Duration::new(secs, nanos))
}

/// `number` (digits with at most one point) times `unit` nanoseconds, truncated to a whole
/// nanosecond.
fn scaled(number: &str, unit: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if fraction.contains('.') || (whole.is_empty() && fraction.is_empty()) {
        return None;
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut nanos = whole.checked_mul(unit)?;
    // Each fractional digit is worth a tenth of the one before it; digits past the
    // nanosecond are dropped.
    let mut place = unit;
    for digit in fraction.bytes() {
        place /= 10;
        if place == 0 {
            break;
        }
        nanos = nanos.checked_add(u128::from(digit - b'0') * place)?;
    }
    Some(nanos)
}

/// Deserializes a [`Duration`] from a human string (see [`parse_duration`]).
#[allow(dead_code)] // Which configs use it depends on the features.
pub(crate) fn human<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text).map_err(de::Error::custom)
}

/// [`human`] for an optional field.
#[allow(dead_code)] // Which configs use it depends on the features.
pub(crate) fn human_opt<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    human(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_and_compound_durations_parse() {
        let cases = [
            ("0", Duration::ZERO),
            ("15ns", Duration::from_nanos(15)),
            ("7us", Duration::from_micros(7)),
            ("7µs", Duration::from_micros(7)),
            ("250ms", Duration::from_millis(250)),
            ("2s", Duration::from_secs(2)),
            ("1.5s", Duration::from_millis(1500)),
            (".5s", Duration::from_millis(500)),
            ("3m", Duration::from_secs(180)),
            ("1h", Duration::from_secs(3600)),
            ("1d", Duration::from_secs(86_400)),
            ("1m30s", Duration::from_secs(90)),
            ("1h0m0.001s", Duration::from_millis(3_600_001)),
            ("0.0000000019s", Duration::from_nanos(1)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn malformed_durations_are_refused_with_what_is_wrong() {
        for (text, says) in [
            ("", "empty"),
            ("10", "without a unit"),
            ("10 s", "unknown unit"),
            ("10sec", "unknown unit"),
            ("-1s", "expected a number"),
            ("1..5s", "malformed"),
            ("s", "expected a number"),
            ("99999999999999999999999999999999999999999d", "too large"),
            ("1000000000000000d", "too long"),
        ] {
            let error = parse_duration(text).unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
    }
}
