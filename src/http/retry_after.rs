//! `Retry-After` (RFC 9110 §10.2.3): delta-seconds or an HTTP-date.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;

/// Reads a `Retry-After` value as the time to wait from `now`.
///
/// Accepts delta-seconds (`120`) and the three HTTP-date forms RFC 9110 requires recipients to
/// accept: IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the obsolete RFC 850 form
/// (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime (`Sun Nov  6 08:49:37 1994`), to their exact
/// grammar (two-digit fields, a day name of the right form). The day name is not checked against
/// the date, as RFC 9110 asks recipients to be robust. A date in the past (before 1970
/// included) is a wait of zero; an impossible one (`31 Feb`, `24:00:00`) is malformed. Anything
/// else is `None`: a malformed `Retry-After` is ignored, never an error.
///
/// `now` is the wall clock (`SystemTime::now()`), since HTTP-dates are wall-clock times.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use http::HeaderValue;
/// use palisade::http::parse_retry_after;
///
/// let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
/// let seconds = HeaderValue::from_static("120");
/// assert_eq!(parse_retry_after(&seconds, now), Some(Duration::from_secs(120)));
/// let date = HeaderValue::from_static("Sun, 06 Nov 1994 08:51:37 GMT");
/// assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(120)));
/// assert_eq!(parse_retry_after(&HeaderValue::from_static("soon"), now), None);
/// ```
#[must_use]
pub fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    // A header value holds no whitespace but spaces and tabs, the optional whitespace around it.
    let bytes = value.as_bytes().trim_ascii();
    if !bytes.is_empty() && bytes.iter().all(u8::is_ascii_digit) {
        // Delta-seconds; absurdly long values saturate rather than fail.
        let seconds = bytes.iter().try_fold(0u64, |acc, &b| {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        });
        return Some(Duration::from_secs(seconds.unwrap_or(u64::MAX)));
    }
    let at = parse_http_date(std::str::from_utf8(bytes).ok()?, now)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses the three HTTP-date forms into a wall-clock time (the epoch for a valid date before
/// it); `now` places RFC 850's two-digit years.
pub(crate) fn parse_http_date(text: &str, now: SystemTime) -> Option<SystemTime> {
    let bytes = text.as_bytes();
    let (day, month, year, time) = if let Some((name, rest)) = text.split_once(", ") {
        if SHORT_DAYS.contains(&name) {
            // IMF-fixdate: "06 Nov 1994 08:49:37 GMT"
            let rest = rest.as_bytes();
            if rest.len() != 24
                || rest[2] != b' '
                || rest[6] != b' '
                || rest[11] != b' '
                || &rest[20..] != b" GMT"
            {
                return None;
            }
            (
                digits(&rest[..2])?,
                month_number(&rest[3..6])?,
                digits(&rest[7..11])?,
                &rest[12..20],
            )
        } else if LONG_DAYS.contains(&name) {
            // RFC 850: "06-Nov-94 08:49:37 GMT"
            let rest = rest.as_bytes();
            if rest.len() != 22
                || rest[2] != b'-'
                || rest[6] != b'-'
                || rest[9] != b' '
                || &rest[18..] != b" GMT"
            {
                return None;
            }
            (
                digits(&rest[..2])?,
                month_number(&rest[3..6])?,
                rfc850_year(digits(&rest[7..9])?, now),
                &rest[10..18],
            )
        } else {
            return None;
        }
    } else {
        // asctime: "Sun Nov  6 08:49:37 1994"
        if bytes.len() != 24
            || !SHORT_DAYS.contains(&text.get(..3)?)
            || bytes[3] != b' '
            || bytes[7] != b' '
            || bytes[10] != b' '
            || bytes[19] != b' '
        {
            return None;
        }
        let day = match &bytes[8..10] {
            [b' ', digit] => digits(std::slice::from_ref(digit))?,
            two => digits(two)?,
        };
        (
            day,
            month_number(&bytes[4..7])?,
            digits(&bytes[20..24])?,
            &bytes[11..19],
        )
    };
    // "08:49:37"
    if time[2] != b':' || time[5] != b':' {
        return None;
    }
    let hour = digits(&time[..2])?;
    let minute = digits(&time[3..5])?;
    let second = digits(&time[6..8])?;
    if hour > 23 || minute > 59 || second > 60 || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if year < 1970 {
        // In the past, and outside what the civil-date arithmetic below counts.
        return Some(UNIX_EPOCH);
    }
    let days = days_from_civil(year, month, day)?;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    UNIX_EPOCH.checked_add(Duration::from_secs(seconds))
}

const SHORT_DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const LONG_DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// RFC 9110 §5.6.7: a two-digit year that would be more than 50 years in the future is the
/// most recent past year with the same last two digits.
fn rfc850_year(yy: u64, now: SystemTime) -> u64 {
    let days = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400);
    let this_year = year_from_days(days);
    let mut year = this_year / 100 * 100 + yy;
    if year > this_year + 50 {
        year -= 100;
    } else if year + 100 <= this_year + 50 {
        year += 100;
    }
    year
}

/// The civil year of the day `days` after 1970-01-01.
fn year_from_days(days: u64) -> u64 {
    // Inverse of `days_from_civil`, counting eras of 400 years from 0000-03-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let year = year_of_era + era * 400;
    if month_from_march >= 10 {
        year + 1
    } else {
        year
    }
}

/// The decimal value of `bytes`, which must all be ASCII digits (at most 4 here).
fn digits(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        bytes
            .iter()
            .fold(0, |acc, &b| acc * 10 + u64::from(b - b'0')),
    )
}

fn month_number(name: &[u8]) -> Option<u64> {
    const MONTHS: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    MONTHS.iter().position(|m| *m == name).map(|i| i as u64 + 1)
}

fn days_in_month(year: u64, month: u64) -> u64 {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian, 1970 or later), `None`
/// for a day that does not exist in that month.
fn days_from_civil(year: u64, month: u64, day: u64) -> Option<u64> {
    if month == 0 || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    // Shift the year to start in March so the leap day is the year's last day.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let year_of_era = y % 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    // 719_468 days from 0000-03-01 to 1970-01-01.
    (era * 146_097 + day_of_era).checked_sub(719_468)
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const NOV_6_1994: u64 = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn parse(text: &str, now: SystemTime) -> Option<Duration> {
        parse_retry_after(&HeaderValue::from_str(text).unwrap(), now)
    }

    #[test]
    fn the_three_date_forms_name_the_same_instant() {
        let now = at(NOV_6_1994 - 60);
        for form in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(parse(form, now), Some(Duration::from_secs(60)), "{form}");
        }
    }

    #[test]
    fn delta_seconds_and_past_dates() {
        let now = at(NOV_6_1994);
        assert_eq!(parse("0", now), Some(Duration::ZERO));
        assert_eq!(parse(" 30 ", now), Some(Duration::from_secs(30)));
        assert_eq!(
            parse("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(
            parse("Sun, 06 Nov 1994 08:48:37 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse("Sun, 06 Nov 1969 08:49:37 GMT", now),
            Some(Duration::ZERO),
            "before the epoch is in the past too"
        );
        assert_eq!(
            parse("Mon, 29 Feb 0000 00:00:00 GMT", now),
            Some(Duration::ZERO),
            "year 0 is a leap year, and long gone"
        );
    }

    #[test]
    fn rfc850_two_digit_years_are_placed_within_50_years_of_now() {
        let in_2026 = at(1_795_000_000); // 2026-11-18
        assert_eq!(rfc850_year(76, in_2026), 2076);
        assert_eq!(rfc850_year(77, in_2026), 1977);
        assert_eq!(rfc850_year(26, in_2026), 2026);
        assert_eq!(rfc850_year(94, in_2026), 1994);
        let in_2099 = at(4_085_000_000); // 2099-06
        assert_eq!(rfc850_year(1, in_2099), 2101);
    }

    #[test]
    fn malformed_values_are_ignored() {
        let now = at(NOV_6_1994);
        for bad in [
            "",
            "-5",
            "1.5",
            "soon",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 31 Feb 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-1994 08:49:37 GMT",
            "Sun Nov 6 08:49:37 1994",
            "Sunday, 06-Nov-94 8:49:37 GMT",
            "Sunday, 6-Nov-94 08:49:37 GMT",
            "Xyz, 06 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse(bad, now), None, "{bad:?}");
        }
    }

    proptest! {
        /// Every instant httpdate formats as IMF-fixdate parses back to itself.
        #[test]
        fn imf_fixdate_round_trips(seconds in 0u64..253_402_300_799) {
            let when = at(seconds);
            let text = httpdate::fmt_http_date(when);
            prop_assert_eq!(parse_http_date(&text, when), Some(when));
        }

        /// The civil-date arithmetic agrees with httpdate on the year of every day.
        #[test]
        fn year_from_days_inverts_days_from_civil(seconds in 0u64..253_402_300_799) {
            let text = httpdate::fmt_http_date(at(seconds));
            let year: u64 = text[12..16].parse().unwrap();
            prop_assert_eq!(year_from_days(seconds / 86_400), year);
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,40}") {
            if let Ok(value) = HeaderValue::from_str(&text) {
                let _ = parse_retry_after(&value, at(NOV_6_1994));
            }
        }
    }
}
