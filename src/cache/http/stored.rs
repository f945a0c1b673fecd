//! What is kept of a response, how it is sent again (with `Age` and `Cache-Status`), how a
//! `304` updates it (RFC 9111 §4.3.4), and how a caller's own conditional request is answered
//! from it (RFC 9110 §13.1.1, §13.1.3).

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use super::directives::split_member;
use super::freshness::Freshness;
use super::key::VaryIndex;
use crate::http::ResponseBody;
use crate::http::headers::remove_hop_by_hop;

/// The headers a response varies on, and their values in the request it answered.
pub(crate) type Selection = (Box<[HeaderName]>, Box<[Option<HeaderValue>]>);

/// A stored response, never changed once stored: a revalidation stores a new one.
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) trailers: Option<HeaderMap>,
    pub(crate) freshness: Freshness,
    /// The headers the response varies on and their values in the request that fetched it:
    /// a caller coalesced behind that request is handed the response only if its own values
    /// match.
    pub(crate) selected_by: Option<Selection>,
    /// For a response that varies, with a remote tier: the generation of the remote index its
    /// variant key is under (see `remote`), so that an invalidation, which removes the index,
    /// leaves every variant under it unreachable.
    pub(crate) remote_index: Option<u64>,
}

/// What the store holds under a key, and what a fetch lands for the callers coalesced
/// behind it (the last two are only ever landed, never stored).
#[derive(Clone, Debug)]
pub(crate) enum HttpValue {
    /// A response: stored, or landed for the waiters to share.
    Response(Arc<Stored>),
    /// The headers a target's responses vary on (stored at the target's own key).
    Vary(Arc<VaryIndex>),
    /// The response may not be shared (not storable, or too large to collect): each waiter
    /// forwards its own request.
    Pass,
    /// The origin failed with this status (and `Retry-After`), or did not answer (`None`).
    Failed(Option<StatusCode>, Option<HeaderValue>),
    /// The origin failed and this stored response stood in for it (stale-if-error).
    Stale(Arc<Stored>),
}

impl Stored {
    /// The weight of the response: its body, its headers and trailers, the request values
    /// that selected it, and a fixed overhead for the rest.
    pub(crate) fn weight(&self) -> u64 {
        let fields = |map: &HeaderMap| -> usize {
            map.iter()
                .map(|(name, value)| name.as_str().len() + value.len() + 32)
                .sum()
        };
        let selection = self.selected_by.as_ref().map_or(0, |(names, values)| {
            names
                .iter()
                .map(|name| name.as_str().len() + 32)
                .sum::<usize>()
                + values
                    .iter()
                    .map(|value| value.as_ref().map_or(0, HeaderValue::len))
                    .sum::<usize>()
        });
        let trailers = self.trailers.as_ref().map_or(0, fields);
        (self.body.len() + fields(&self.headers) + trailers + selection + 256) as u64
    }

    pub(crate) fn etag(&self) -> Option<&HeaderValue> {
        self.headers.get(header::ETAG)
    }

    pub(crate) fn last_modified(&self) -> Option<&HeaderValue> {
        self.headers.get(header::LAST_MODIFIED)
    }

    /// Whether a coalesced caller whose request carries `headers` may be handed this response.
    pub(crate) fn selected_by(&self, headers: &HeaderMap) -> bool {
        match &self.selected_by {
            None => true,
            Some((names, values)) => &super::key::selecting_values(names, headers) == values,
        }
    }

    /// The response sent from the store: the stored status, headers, body and trailers (none
    /// for `HEAD`), with `Age` (§5.1) for one served without contacting the origin.
    pub(crate) fn answer<B>(
        &self,
        head: bool,
        age: Option<u64>,
        status: &CacheStatus,
        name: &str,
    ) -> Response<ResponseBody<B>> {
        let body = if head {
            ResponseBody::full(Bytes::new())
        } else {
            ResponseBody::full_with_trailers(self.body.clone(), self.trailers.clone())
        };
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        let headers = response.headers_mut();
        match age {
            Some(age) => {
                headers.insert(header::AGE, HeaderValue::from(age / 1_000_000_000));
            }
            None => {
                headers.remove(header::AGE);
            }
        }
        status.append_to(headers, name);
        response
    }
}

/// The headers kept of a response: all but the hop-by-hop ones, and `Set-Cookie` (a stored
/// response never sets another caller's cookie). The `Cache-Status` members of caches nearer
/// the origin stay, as RFC 9211 asks.
pub(crate) fn kept_headers(headers: &HeaderMap) -> HeaderMap {
    let mut kept = headers.clone();
    remove_hop_by_hop(&mut kept);
    kept.remove(header::SET_COOKIE);
    kept
}

/// The stored headers updated by a `304` (§3.2): each header the `304` carries replaces the
/// stored one of that name, but `Content-Length` (the `304` has no body) and the hop-by-hop
/// ones.
pub(crate) fn merged_headers(stored: &HeaderMap, not_modified: &HeaderMap) -> HeaderMap {
    let mut merged = stored.clone();
    // The stored `Age` and `Date` were the old exchange's: only the `304`'s own count for the
    // new one (without a `Date`, the receipt stands in for it, RFC 9110 §6.6.1).
    merged.remove(header::AGE);
    merged.remove(header::DATE);
    let update = kept_headers(not_modified);
    let mut last: Option<HeaderName> = None;
    for (name, value) in update {
        match name {
            Some(name) => {
                last = Some(name.clone());
                if name == header::CONTENT_LENGTH {
                    continue;
                }
                merged.insert(name, value);
            }
            // A further value of the name just inserted.
            None => {
                if let Some(name) = last
                    .as_ref()
                    .filter(|name| **name != header::CONTENT_LENGTH)
                {
                    merged.append(name.clone(), value);
                }
            }
        }
    }
    merged
}

/// Whether a `304` answering the cache's conditional request validates `stored` (§4.3.4): its
/// strong `ETag`, if it has one, must be the stored one.
pub(crate) fn validates(stored: &Stored, not_modified: &HeaderMap) -> bool {
    match (not_modified.get(header::ETAG), stored.etag()) {
        (Some(new), Some(old)) => weak_eq(new.as_bytes(), old.as_bytes()),
        (Some(_), None) => false,
        (None, _) => true,
    }
}

/// The caller's own `If-None-Match` / `If-Modified-Since`, answered by the cache: the request
/// is forwarded without them (so a full response can be stored) and they are evaluated on
/// what the cache answers.
#[derive(Debug, Default)]
pub(crate) struct Conditional {
    if_none_match: Option<HeaderValue>,
    if_modified_since: Option<HeaderValue>,
}

impl Conditional {
    /// Takes the caller's conditionals out of `headers`.
    pub(crate) fn take(headers: &mut HeaderMap) -> Self {
        Self {
            if_none_match: headers.remove(header::IF_NONE_MATCH),
            if_modified_since: headers.remove(header::IF_MODIFIED_SINCE),
        }
    }

    /// Puts the caller's conditionals back, for a request forwarded as the caller sent it.
    pub(crate) fn restore(self, headers: &mut HeaderMap) {
        if let Some(value) = self.if_none_match {
            headers.insert(header::IF_NONE_MATCH, value);
        }
        if let Some(value) = self.if_modified_since {
            headers.insert(header::IF_MODIFIED_SINCE, value);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.if_none_match.is_none() && self.if_modified_since.is_none()
    }

    /// Turns a `200` the caller's conditional matches into a `304` (RFC 9110 §13.2.2: an
    /// `If-None-Match` decides alone; `If-Modified-Since` only without it).
    pub(crate) fn apply<B>(
        &self,
        response: Response<ResponseBody<B>>,
    ) -> Response<ResponseBody<B>> {
        if self.is_empty() || response.status() != StatusCode::OK {
            return response;
        }
        let headers = response.headers();
        let unchanged = match &self.if_none_match {
            Some(list) => headers
                .get(header::ETAG)
                .is_some_and(|etag| list_matches(list.as_bytes(), etag.as_bytes())),
            None => match (&self.if_modified_since, headers.get(header::LAST_MODIFIED)) {
                (Some(since), Some(modified)) => {
                    let parse = |value: &HeaderValue| {
                        let text = value.to_str().ok()?;
                        crate::http::retry_after::parse_http_date(
                            text.trim(),
                            std::time::SystemTime::now(),
                        )
                    };
                    matches!((parse(since), parse(modified)), (Some(since), Some(modified)) if modified <= since)
                }
                _ => false,
            },
        };
        if !unchanged {
            return response;
        }
        let (mut parts, _) = response.into_parts();
        parts.status = StatusCode::NOT_MODIFIED;
        for name in [
            header::CONTENT_LENGTH,
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
            header::TRANSFER_ENCODING,
        ] {
            parts.headers.remove(name);
        }
        Response::from_parts(parts, ResponseBody::full(Bytes::new()))
    }
}

/// Whether an `If-None-Match` list names `etag` (weak comparison, §8.8.3.2), or is `*`.
fn list_matches(list: &[u8], etag: &[u8]) -> bool {
    let Ok(list) = std::str::from_utf8(list) else {
        return false;
    };
    let mut rest = list;
    while !rest.is_empty() {
        let (member, tail) = split_member(rest);
        rest = tail;
        let member = member.trim();
        if member == "*" || weak_eq(member.as_bytes(), etag) {
            return true;
        }
    }
    false
}

/// Weak comparison of two entity tags: equal once a `W/` prefix is dropped.
fn weak_eq(a: &[u8], b: &[u8]) -> bool {
    let opaque = |tag: &[u8]| -> Vec<u8> {
        let tag = tag.trim_ascii();
        tag.strip_prefix(b"W/").unwrap_or(tag).to_vec()
    };
    let a = opaque(a);
    !a.is_empty() && a == opaque(b)
}

/// The `Cache-Status` response header (RFC 9211).
pub(crate) const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// Why a request went forward (RFC 9211 §2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fwd {
    /// The cache does not handle the request (a range or precondition it does not evaluate).
    Bypass,
    /// The method is not cached.
    Method,
    /// Nothing stored for the target.
    UriMiss,
    /// Something stored for the target, but not for these request headers.
    VaryMiss,
    /// The stored response was stale, or must be revalidated on each use.
    Stale,
    /// The request's directives refused the stored response.
    Request,
}

impl Fwd {
    fn as_str(self) -> &'static str {
        match self {
            Self::Bypass => "bypass",
            Self::Method => "method",
            Self::UriMiss => "uri-miss",
            Self::VaryMiss => "vary-miss",
            Self::Stale => "stale",
            Self::Request => "request",
        }
    }
}

/// One cache's member of the `Cache-Status` list.
#[derive(Clone, Debug, Default)]
pub(crate) struct CacheStatus {
    pub(crate) hit: bool,
    pub(crate) fwd: Option<Fwd>,
    pub(crate) fwd_status: Option<StatusCode>,
    pub(crate) ttl: Option<i64>,
    pub(crate) stored: bool,
    pub(crate) collapsed: bool,
    pub(crate) detail: Option<&'static str>,
}

impl CacheStatus {
    pub(crate) fn hit(ttl: i64) -> Self {
        Self {
            hit: true,
            ttl: Some(ttl),
            ..Self::default()
        }
    }

    /// The member, `name; hit; ttl=…` or `name; fwd=…; fwd-status=…; stored; collapsed`.
    fn render(&self, name: &str) -> String {
        let mut text = String::with_capacity(48);
        text.push_str(name);
        if self.hit {
            text.push_str("; hit");
        }
        if let Some(fwd) = self.fwd {
            let _ = write!(text, "; fwd={}", fwd.as_str());
        }
        if let Some(status) = self.fwd_status {
            let _ = write!(text, "; fwd-status={}", status.as_u16());
        }
        if let Some(ttl) = self.ttl {
            let _ = write!(text, "; ttl={ttl}");
        }
        if self.stored {
            text.push_str("; stored");
        }
        if self.collapsed {
            text.push_str("; collapsed");
        }
        if let Some(detail) = self.detail {
            let _ = write!(text, "; detail={detail}");
        }
        text
    }

    /// Adds this cache's member, named `name`, after those of the caches nearer the origin
    /// (RFC 9211 §2).
    pub(crate) fn append_to(&self, headers: &mut HeaderMap, name: &str) {
        if let Ok(value) = HeaderValue::try_from(self.render(name)) {
            headers.append(CACHE_STATUS, value);
        }
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn cache_status_members_read_as_rfc_9211_writes_them() {
        assert_eq!(
            CacheStatus::hit(57).render("palisade"),
            "palisade; hit; ttl=57"
        );
        let miss = CacheStatus {
            fwd: Some(Fwd::UriMiss),
            fwd_status: Some(StatusCode::OK),
            stored: true,
            ..CacheStatus::default()
        };
        assert_eq!(
            miss.render("palisade"),
            "palisade; fwd=uri-miss; fwd-status=200; stored"
        );
        let collapsed = CacheStatus {
            fwd: Some(Fwd::Stale),
            collapsed: true,
            detail: Some("stale-if-error"),
            ttl: Some(-3),
            ..CacheStatus::default()
        };
        assert_eq!(
            collapsed.render("edge"),
            "edge; fwd=stale; ttl=-3; collapsed; detail=stale-if-error"
        );
    }

    #[test]
    fn a_304_replaces_the_headers_it_carries_but_content_length() {
        let mut stored = HeaderMap::new();
        stored.insert("etag", HeaderValue::from_static("\"a\""));
        stored.insert("content-length", HeaderValue::from_static("5"));
        stored.insert("cache-control", HeaderValue::from_static("max-age=1"));
        stored.insert("x-kept", HeaderValue::from_static("1"));
        let mut update = HeaderMap::new();
        update.insert("cache-control", HeaderValue::from_static("max-age=60"));
        update.insert("content-length", HeaderValue::from_static("0"));
        update.append("x-new", HeaderValue::from_static("1"));
        update.append("x-new", HeaderValue::from_static("2"));
        update.insert("connection", HeaderValue::from_static("close"));
        stored.insert("age", HeaderValue::from_static("500"));
        let merged = merged_headers(&stored, &update);
        assert!(
            !merged.contains_key("age"),
            "the old exchange's Age is gone"
        );
        assert_eq!(merged["cache-control"], "max-age=60");
        assert_eq!(merged["content-length"], "5");
        assert_eq!(merged["x-kept"], "1");
        assert_eq!(merged.get_all("x-new").iter().count(), 2);
        assert!(!merged.contains_key("connection"));
    }

    #[test]
    fn entity_tags_compare_weakly_and_lists_split_outside_quotes() {
        assert!(weak_eq(b"W/\"a\"", b"\"a\""));
        assert!(!weak_eq(b"\"a\"", b"\"b\""));
        assert!(list_matches(b"\"x\", W/\"a\"", b"\"a\""));
        assert!(list_matches(b"*", b"\"a\""));
        assert!(!list_matches(b"\"a,b\"", b"\"a\""));
        assert!(list_matches(b"\"a,b\"", b"\"a,b\""));
    }
}
