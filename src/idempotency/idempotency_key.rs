//! Parsing the `Idempotency-Key` header.

use std::borrow::Cow;
use std::num::NonZeroUsize;

use http::HeaderValue;

/// The longest key accepted by default, in characters: 255 (Stripe's limit).
pub const DEFAULT_MAX_KEY_LENGTH: NonZeroUsize = NonZeroUsize::new(255).unwrap();

/// Why an `Idempotency-Key` header was refused. Each is answered with 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The header appears more than once.
    #[error("the Idempotency-Key header appears more than once")]
    Repeated,
    /// The key is empty (`""`, or nothing at all).
    #[error("the Idempotency-Key is empty")]
    Empty,
    /// The key is longer than the limit.
    #[error("the Idempotency-Key is longer than {max} characters")]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// The key is not a quoted string, and unquoted keys are not accepted.
    #[error(
        "the Idempotency-Key must be a quoted string (RFC 8941), such as \
         \"8e03978e-40d5-43e8-bc93-6894a57f9324\" with the quotes"
    )]
    NotQuoted,
    /// A byte outside printable ASCII (`0x20`–`0x7E`; no space in an unquoted key).
    #[error("the Idempotency-Key has a character outside printable ASCII at byte {position}")]
    InvalidCharacter {
        /// Its offset in the header value.
        position: usize,
    },
    /// A quoted string with no closing quote, a backslash before anything but `"` or `\`, or
    /// something after the closing quote other than well-formed parameters.
    #[error("the Idempotency-Key is not a well-formed quoted string")]
    Malformed,
}

/// Parses one `Idempotency-Key` header value.
///
/// The IETF draft makes the value an RFC 8941 sf-string: printable ASCII in double quotes, with
/// `\"` and `\\` as the only escapes. Surrounding spaces are ignored, and so are parameters
/// (`"abc";v=1`), which the draft defines none of; they must be well-formed.
/// With `accept_unquoted`, a bare key is accepted too (as Stripe's clients send): one or more
/// visible ASCII characters other than `"` and `\`, a UUID for instance. The key is at most
/// `max_len` characters once unescaped, and never empty.
///
/// Borrows from the header unless the key had escapes.
///
/// ```
/// use http::HeaderValue;
/// use palisade::http::{KeyError, parse_idempotency_key};
///
/// let quoted = HeaderValue::from_static("\"8e03978e-40d5-43e8-bc93-6894a57f9324\"");
/// assert_eq!(
///     parse_idempotency_key(&quoted, false, 255).unwrap(),
///     "8e03978e-40d5-43e8-bc93-6894a57f9324"
/// );
/// let bare = HeaderValue::from_static("8e03978e-40d5-43e8-bc93-6894a57f9324");
/// assert_eq!(parse_idempotency_key(&bare, false, 255), Err(KeyError::NotQuoted));
/// assert!(parse_idempotency_key(&bare, true, 255).is_ok());
/// ```
///
/// # Errors
///
/// The [`KeyError`] that says what is wrong.
pub fn parse_idempotency_key(
    value: &HeaderValue,
    accept_unquoted: bool,
    max_len: usize,
) -> Result<Cow<'_, str>, KeyError> {
    let bytes = value.as_bytes();
    let start = bytes.iter().take_while(|&&b| b == b' ').count();
    let end = bytes.len() - bytes.iter().rev().take_while(|&&b| b == b' ').count();
    let trimmed = bytes.get(start..end.max(start)).unwrap_or_default();
    let key = match trimmed.first() {
        None => return Err(KeyError::Empty),
        Some(b'"') => {
            let (key, used) = parse_quoted(trimmed, start)?;
            skip_parameters(trimmed.get(used..).unwrap_or_default())?;
            key
        }
        Some(_) if accept_unquoted => parse_bare(trimmed, start)?,
        Some(_) => return Err(KeyError::NotQuoted),
    };
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    // Printable ASCII only: bytes and characters are the same count.
    if key.len() > max_len {
        return Err(KeyError::TooLong { max: max_len });
    }
    Ok(key)
}

/// An sf-string (RFC 8941 §4.2.5), `value` starting at its opening quote; also returns how
/// many bytes it took.
fn parse_quoted(value: &[u8], offset: usize) -> Result<(Cow<'_, str>, usize), KeyError> {
    let mut unescaped: Option<String> = None;
    let mut index = 1;
    while let Some(&byte) = value.get(index) {
        match byte {
            b'\\' => {
                let Some(&escaped @ (b'"' | b'\\')) = value.get(index + 1) else {
                    return Err(KeyError::Malformed);
                };
                unescaped
                    .get_or_insert_with(|| ascii(value.get(1..index).unwrap_or_default()))
                    .push(char::from(escaped));
                index += 2;
            }
            b'"' => {
                let key = match unescaped {
                    Some(key) => Cow::Owned(key),
                    None => Cow::Borrowed(ascii_str(value.get(1..index).unwrap_or_default())),
                };
                return Ok((key, index + 1));
            }
            0x20..=0x7E => {
                if let Some(key) = unescaped.as_mut() {
                    key.push(char::from(byte));
                }
                index += 1;
            }
            _ => {
                return Err(KeyError::InvalidCharacter {
                    position: offset + index,
                });
            }
        }
    }
    Err(KeyError::Malformed)
}

/// Parameters after the string (RFC 8941 §3.1.2: `;key` or `;key=bare-item`, each). They are
/// well-formed or refused, and ignored: the draft gives the key none.
fn skip_parameters(mut rest: &[u8]) -> Result<(), KeyError> {
    fn take_while(bytes: &[u8], keep: impl Fn(u8) -> bool) -> usize {
        bytes.iter().take_while(|&&b| keep(b)).count()
    }
    fn is_tchar(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
    }
    while let Some((&first, after)) = rest.split_first() {
        if first != b';' {
            return Err(KeyError::Malformed);
        }
        rest = after
            .get(take_while(after, |b| b == b' ')..)
            .unwrap_or_default();
        // key = ( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" )
        if !rest
            .first()
            .is_some_and(|&b| b.is_ascii_lowercase() || b == b'*')
        {
            return Err(KeyError::Malformed);
        }
        let key = take_while(rest, |b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.*".contains(&b)
        });
        rest = rest.get(key..).unwrap_or_default();
        let Some(value) = rest.strip_prefix(b"=") else {
            continue;
        };
        let used = match value.first() {
            Some(b'"') => parse_quoted(value, 0)?.1,
            Some(b'?') if matches!(value.get(1), Some(b'0' | b'1')) => 2,
            Some(b':') => {
                let body = take_while(value.get(1..).unwrap_or_default(), |b| {
                    b.is_ascii_alphanumeric() || b"+/=".contains(&b)
                });
                if value.get(1 + body) != Some(&b':') {
                    return Err(KeyError::Malformed);
                }
                body + 2
            }
            Some(b) if b.is_ascii_digit() || *b == b'-' => {
                // sf-integer `["-"] 1*15DIGIT`, or sf-decimal `["-"] 1*12DIGIT "." 1*3DIGIT`.
                let sign = usize::from(*b == b'-');
                let digits = value.get(sign..).unwrap_or_default();
                let whole = take_while(digits, |b| b.is_ascii_digit());
                let fraction = match digits.get(whole) {
                    Some(b'.') => Some(take_while(
                        digits.get(whole + 1..).unwrap_or_default(),
                        |b| b.is_ascii_digit(),
                    )),
                    _ => None,
                };
                match fraction {
                    None if (1..=15).contains(&whole) => sign + whole,
                    Some(fraction) if (1..=12).contains(&whole) && (1..=3).contains(&fraction) => {
                        sign + whole + 1 + fraction
                    }
                    _ => return Err(KeyError::Malformed),
                }
            }
            Some(b) if b.is_ascii_alphabetic() || *b == b'*' => {
                1 + take_while(value.get(1..).unwrap_or_default(), |b| {
                    is_tchar(b) || b == b':' || b == b'/'
                })
            }
            _ => return Err(KeyError::Malformed),
        };
        rest = value.get(used..).unwrap_or_default();
    }
    Ok(())
}

/// An unquoted key: visible ASCII but `"` and `\`.
fn parse_bare(value: &[u8], offset: usize) -> Result<Cow<'_, str>, KeyError> {
    if let Some(position) = value
        .iter()
        .position(|&b| !(0x21..=0x7E).contains(&b) || b == b'"' || b == b'\\')
    {
        return Err(KeyError::InvalidCharacter {
            position: offset + position,
        });
    }
    Ok(Cow::Borrowed(ascii_str(value)))
}

/// `bytes`, already checked to be printable ASCII, as a `str`.
fn ascii_str(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

fn ascii(bytes: &[u8]) -> String {
    ascii_str(bytes).to_owned()
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse(value: &'static str) -> Result<Cow<'static, str>, KeyError> {
        let value: &'static HeaderValue = Box::leak(Box::new(HeaderValue::from_static(value)));
        parse_idempotency_key(value, false, DEFAULT_MAX_KEY_LENGTH.get())
    }

    #[test]
    fn a_quoted_key_is_its_content() {
        assert_eq!(parse("\"abc-123\"").unwrap(), "abc-123");
        assert_eq!(parse("  \"with space\"  ").unwrap(), "with space");
        assert!(matches!(parse("\"abc\"").unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn escapes_are_unescaped() {
        assert_eq!(parse(r#""a\"b\\c""#).unwrap(), r#"a"b\c"#);
        assert_eq!(parse(r#""a\nb""#), Err(KeyError::Malformed));
        assert_eq!(parse(r#""a\"#), Err(KeyError::Malformed));
    }

    #[test]
    fn malformed_values_are_refused() {
        assert_eq!(parse("\"abc"), Err(KeyError::Malformed));
        assert_eq!(parse("\"abc\"x"), Err(KeyError::Malformed));
        assert_eq!(
            parse("\"abc\";"),
            Err(KeyError::Malformed),
            "a parameter needs a key"
        );
        assert_eq!(
            parse("\"abc\";K=1"),
            Err(KeyError::Malformed),
            "keys are lowercase"
        );
        assert_eq!(parse("\"abc\";p="), Err(KeyError::Malformed));
        assert_eq!(parse("\"abc\";p=:YWJj"), Err(KeyError::Malformed));
        assert_eq!(parse("\"\""), Err(KeyError::Empty));
        assert_eq!(parse("   "), Err(KeyError::Empty));
        assert_eq!(parse(""), Err(KeyError::Empty));
        assert_eq!(parse("abc"), Err(KeyError::NotQuoted));
        let tab = HeaderValue::from_bytes(b"\"a\tb\"").unwrap();
        assert_eq!(
            parse_idempotency_key(&tab, false, 255),
            Err(KeyError::InvalidCharacter { position: 2 })
        );
        let high = HeaderValue::from_bytes(b"\"a\xffb\"").unwrap();
        assert_eq!(
            parse_idempotency_key(&high, false, 255),
            Err(KeyError::InvalidCharacter { position: 2 })
        );
    }

    #[test]
    fn well_formed_parameters_are_ignored() {
        for value in [
            "\"abc\";p",
            "\"abc\";p=1",
            "\"abc\"; p=-1.5;q=?1",
            "\"abc\";p=\"x;y\";t=tok/en:1;b=:YWJj:",
            "\"abc\";*star=*",
        ] {
            assert_eq!(parse(value).unwrap(), "abc", "{value}");
        }
    }

    #[test]
    fn unquoted_keys_need_the_option_and_visible_ascii() {
        let bare = HeaderValue::from_static("8e03978e-40d5");
        assert_eq!(
            parse_idempotency_key(&bare, true, 255).unwrap(),
            "8e03978e-40d5"
        );
        let spaced = HeaderValue::from_static("a b");
        assert_eq!(
            parse_idempotency_key(&spaced, true, 255),
            Err(KeyError::InvalidCharacter { position: 1 })
        );
        let quote_inside = HeaderValue::from_static("a\"b");
        assert!(parse_idempotency_key(&quote_inside, true, 255).is_err());
    }

    #[test]
    fn the_length_limit_counts_unescaped_characters() {
        let exactly = HeaderValue::from_static("\"abcde\"");
        assert!(parse_idempotency_key(&exactly, false, 5).is_ok());
        assert_eq!(
            parse_idempotency_key(&exactly, false, 4),
            Err(KeyError::TooLong { max: 4 })
        );
        let escaped = HeaderValue::from_static(r#""ab\"c""#);
        assert_eq!(parse_idempotency_key(&escaped, false, 4).unwrap(), "ab\"c");
    }

    proptest! {
        /// The parser never panics, and whatever it accepts is printable ASCII within the limit.
        #[test]
        fn any_header_value_is_parsed_or_refused_without_panicking(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            unquoted in any::<bool>(),
            max in 1usize..300,
        ) {
            if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                if let Ok(key) = parse_idempotency_key(&value, unquoted, max) {
                    prop_assert!(!key.is_empty() && key.len() <= max);
                    prop_assert!(key.bytes().all(|b| (0x20..=0x7E).contains(&b)));
                }
            }
        }

        /// Quoting any printable key, escaping `"` and `\`, gives the key back.
        #[test]
        fn quoting_round_trips(key in "[ -~]{1,100}") {
            let quoted = format!("\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\""));
            let value = HeaderValue::from_str(&quoted).unwrap();
            prop_assert_eq!(parse_idempotency_key(&value, false, 255).unwrap(), key);
        }
    }
}
