//! Rejections as `application/problem+json` responses (RFC 9457).

use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use super::ResponseBody;

/// The media type of every problem body palisade writes.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A problem description (RFC 9457) for one rejection: the status, a stable type identifier, a
/// short title, a detail sentence and, where the rejection has one, a `Retry-After`.
///
/// Get one from [`Rejection::problem`](crate::error::Rejection::problem) and turn it into a
/// response with [`Problem::into_http_response`]. The body is a JSON object with the members `type`,
/// `title`, `status` and `detail`:
///
/// ```json
/// {"type": "urn:palisade:timed-out", "title": "Request timed out", "status": 504,
///  "detail": "request timed out after 2s"}
/// ```
///
/// The `type` values are stable identifiers (`urn:palisade:<rejection>`) meant for programs to
/// match on; they are not links.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    status: StatusCode,
    type_uri: &'static str,
    title: &'static str,
    detail: String,
    retry_after: Option<Duration>,
}

impl Problem {
    // Every layer's rejection builds its problem with it; `http` alone has no rejection.
    #[cfg_attr(
        not(any(
            feature = "timeout",
            feature = "circuit-breaker",
            feature = "retry",
            feature = "throttle",
            feature = "idempotency"
        )),
        allow(dead_code)
    )]
    pub(crate) fn new(
        status: StatusCode,
        type_uri: &'static str,
        title: &'static str,
        detail: String,
    ) -> Self {
        Self {
            status,
            type_uri,
            title,
            detail,
            retry_after: None,
        }
    }

    /// Replaces the status code (for example a server-side timeout answered with 503 or 408).
    #[must_use]
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Adds a `Retry-After` (whole seconds on the wire, rounded up beyond 1 ms of slack).
    #[must_use]
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    /// The response status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The problem type identifier, such as `urn:palisade:timed-out`.
    #[must_use]
    pub fn type_uri(&self) -> &'static str {
        self.type_uri
    }

    /// The short, fixed summary of the problem type.
    #[must_use]
    pub fn title(&self) -> &'static str {
        self.title
    }

    /// The sentence explaining this occurrence.
    #[must_use]
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// How long the client should wait before trying again, if the rejection says.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The JSON body.
    #[must_use]
    pub fn to_json(&self) -> String {
        let mut json = String::with_capacity(96 + self.detail.len());
        json.push_str("{\"type\":");
        push_json_string(&mut json, self.type_uri);
        json.push_str(",\"title\":");
        push_json_string(&mut json, self.title);
        let _ = write!(json, ",\"status\":{},\"detail\":", self.status.as_u16());
        push_json_string(&mut json, &self.detail);
        json.push('}');
        json
    }

    /// The complete response: status, `Content-Type: application/problem+json`, `Retry-After`
    /// when there is one, and the JSON body.
    ///
    /// The body type wraps a service's own body type `B`, so a layer can answer either with the
    /// inner service's response or with a problem and keep one response type.
    #[must_use]
    pub fn into_http_response<B>(self) -> Response<ResponseBody<B>> {
        let body = ResponseBody::full(Bytes::from(self.to_json()));
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(retry_after) = self.retry_after {
            headers.insert(header::RETRY_AFTER, retry_after_value(retry_after));
        }
        response
    }
}

/// `Retry-After` in delta-seconds, rounded up so a client never comes back early, but with one
/// millisecond of slack: layers keep time in whole milliseconds rounded up, so a 1 s wait can
/// read as 1.0005 s, which should still say `1`.
fn retry_after_value(retry_after: Duration) -> HeaderValue {
    let retry_after = retry_after.saturating_sub(Duration::from_millis(1));
    let seconds = retry_after
        .as_secs()
        .saturating_add(u64::from(retry_after.subsec_nanos() > 0));
    HeaderValue::from(seconds)
}

/// Appends `value` as a JSON string literal, escaping what RFC 8259 requires.
fn push_json_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn json_escapes_quotes_backslashes_and_controls() {
        let problem = Problem::new(
            StatusCode::BAD_REQUEST,
            "urn:palisade:test",
            "Test",
            "a \"quoted\" \\ value\nwith\u{1}control".to_owned(),
        );
        let json: serde_json::Value = serde_json::from_str(&problem.to_json()).unwrap();
        assert_eq!(json["detail"], "a \"quoted\" \\ value\nwith\u{1}control");
        assert_eq!(json["status"], 400);
        assert_eq!(json["type"], "urn:palisade:test");
        assert_eq!(json["title"], "Test");
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_value(Duration::from_millis(2)), "1");
        assert_eq!(retry_after_value(Duration::from_secs(30)), "30");
        assert_eq!(retry_after_value(Duration::from_micros(30_000_900)), "30");
        assert_eq!(retry_after_value(Duration::from_millis(30_002)), "31");
        assert_eq!(retry_after_value(Duration::from_millis(1)), "0");
        assert_eq!(retry_after_value(Duration::ZERO), "0");
    }
}
