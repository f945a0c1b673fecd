//! `Retry-After` (RFC 9110 §10.2.3): delta-seconds or an HTTP-date.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;

/// Reads a `Retry-After` value as the time to wait from `now`.
///
/// Accepts delta-seconds (`120`) and the three HTTP-date forms RFC 9110 requires recipients to
/// accept: IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the obsolete RFC 850 form
/// (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime (`Sun Nov  6 08:49:37 1994`). A date in the past
/// is a wait of zero. Anything else is `None`: a malformed `Retry-After` is ignored, never an
/// error.
///
/// `now` is the wall clock (`SystemTime::now()`), since HTTP-dates are wall-clock times.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use http::HeaderValue;
/// use palisade::http::parse_retry_after;
///
/// let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
/// assert_eq!(parse_retry_after(&HeaderValue::from_static("120"), now), Some(Duration::from_secs(120)));
/// let date = HeaderValue::from_static("Sun, 06 Nov 1994 08:51:37 GMT");
/// assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(120)));
/// assert_eq!(parse_retry_after(&HeaderValue::from_static("soon"), now), None);
/// ```
#[must_use]
pub fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
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

/// Parses the three HTTP-date forms into a wall-clock time; `now` places RFC 850's two-digit
/// years.
fn parse_http_date(text: &str, now: SystemTime) -> Option<SystemTime> {
    let (day, month, year, time) = if let Some(rest) = text.split_once(", ").map(|(_, r)| r) {
        if rest.len() == 24 && rest.as_bytes()[2] == b' ' {
            // IMF-fixdate: "06 Nov 1994 08:49:37 GMT"
            let mut parts = rest.split(' ');
            let day = parts.next()?;
            let month = parts.next()?;
            let year = parts.next()?;
            let time = parts.next()?;
            if parts.next()? != "GMT" || parts.next().is_some() {
                return None;
            }
            (
                number(day, 2)?,
                month_number(month)?,
                number(year, 4)?,
                time,
            )
        } else {
            // RFC 850: "06-Nov-94 08:49:37 GMT"
            let (date, rest) = rest.split_once(' ')?;
            let (time, zone) = rest.split_once(' ')?;
            if zone != "GMT" {
                return None;
            }
            let mut parts = date.split('-');
            let day = number(parts.next()?, 2)?;
            let month = month_number(parts.next()?)?;
            let yy = number(parts.next()?, 2)?;
            if parts.next().is_some() {
                return None;
            }
            (day, month, rfc850_year(yy, now), time)
        }
    } else {
        // asctime: "Sun Nov  6 08:49:37 1994"
        let bytes = text.as_bytes();
        if bytes.len() != 24 || bytes[3] != b' ' || bytes[7] != b' ' || bytes[10] != b' ' {
            return None;
        }
        let month = month_number(text.get(4..7)?)?;
        let day = number(text.get(8..10)?.trim_start(), 2)?;
        let time = text.get(11..19)?;
        if bytes[19] != b' ' {
            return None;
        }
        let year = number(text.get(20..24)?, 4)?;
        (day, month, year, time)
    };
    let mut clock = time.split(':');
    let hour = number(clock.next()?, 2)?;
    let minute = number(clock.next()?, 2)?;
    let second = number(clock.next()?, 2)?;
    if clock.next().is_some()
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
        || year < 1970
    {
        return None;
    }
    let days = days_from_civil(year, month, day)?;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    UNIX_EPOCH.checked_add(Duration::from_secs(seconds))
}

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

/// A decimal of 1 to `max_digits` ASCII digits.
fn number(text: &str, max_digits: usize) -> Option<u64> {
    if text.is_empty() || text.len() > max_digits || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn month_number(name: &str) -> Option<u64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    MONTHS.iter().position(|m| *m == name).map(|i| i as u64 + 1)
}

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian), `None` for a day that
/// does not exist in that month.
fn days_from_civil(year: u64, month: u64, day: u64) -> Option<u64> {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if day > month_days[usize::try_from(month - 1).ok()?] {
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
            "Sun, 06 Nov 1969 08:49:37 GMT",
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
