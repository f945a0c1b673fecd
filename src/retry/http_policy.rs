//! The HTTP retry policy (features `retry` + `http`): which requests are safe to repeat, and
//! how a request is copied for another attempt. The bodies it can copy come from
//! [`BufferBody`](super::BufferBody), in `buffer_body.rs`.

use std::fmt;
use std::sync::Arc;

use http::{Method, Request, Response};

use super::policy::{Decision, Policy, decide_by};
use crate::classify::{Classify, StatusClassifier};
use crate::error::BoxError;
use crate::http::headers::remove_hop_by_hop;
use crate::http::{IDEMPOTENCY_KEY, ReplayBody};

/// The retry policy for HTTP clients.
///
/// - **Which requests.** Only requests that are safe to send twice: the idempotent methods of
///   RFC 9110 (GET, HEAD, OPTIONS, TRACE, PUT, DELETE), or any request carrying an
///   `Idempotency-Key` header (the server then deduplicates). Other requests (a POST without a
///   key) are sent once. [`retry_unsafe_methods`](Self::retry_unsafe_methods) lifts this.
/// - **Which bodies.** Only a body [`BufferBodyLayer`](super::BufferBodyLayer) kept in full
///   ([`ReplayBody`]); a body over its limit is sent once.
/// - **Which results.** What the classifier calls a failure (by default
///   [`StatusClassifier`]: 5xx, 429 and transport errors), waiting exactly as long as a
///   `Retry-After` on a 429 or 503 says.
/// - **What is sent again.** A fresh request with the same method, URI, version, headers and
///   extensions, minus the hop-by-hop headers, which belong to one connection: `Connection`
///   and the headers it names, `Keep-Alive`, `Proxy-Connection`, `Transfer-Encoding`,
///   `Upgrade`, and `TE` except for `TE: trailers` (which gRPC requires on every request).
#[derive(Debug)]
pub struct HttpPolicy<C = StatusClassifier> {
    classifier: Arc<C>,
    unsafe_methods: bool,
}

impl<C> Clone for HttpPolicy<C> {
    fn clone(&self) -> Self {
        Self {
            classifier: Arc::clone(&self.classifier),
            unsafe_methods: self.unsafe_methods,
        }
    }
}

impl HttpPolicy {
    /// Idempotent or keyed requests, retried on 5xx, 429 and errors.
    #[must_use]
    pub fn new() -> Self {
        Self::with_classifier(StatusClassifier::new())
    }
}

impl Default for HttpPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> HttpPolicy<C> {
    /// Decides failures with `classifier`.
    #[must_use]
    pub fn with_classifier(classifier: C) -> Self {
        Self {
            classifier: Arc::new(classifier),
            unsafe_methods: false,
        }
    }

    /// Retries requests of any method, keyed or not. Defaults to `false`: only do this if the
    /// server deduplicates, or repeating is harmless.
    #[must_use]
    pub fn retry_unsafe_methods(mut self, retry: bool) -> Self {
        self.unsafe_methods = retry;
        self
    }

    fn may_repeat<B>(&self, request: &Request<B>) -> bool {
        self.unsafe_methods
            || is_idempotent(request.method())
            || request.headers().contains_key(IDEMPOTENCY_KEY)
    }
}

/// RFC 9110 §9.2.2.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

impl<B, ResBody, C> Policy<Request<ReplayBody<B>>, Response<ResBody>> for HttpPolicy<C>
where
    C: Classify<Response<ResBody>, BoxError>,
{
    fn clone_request(&self, request: &Request<ReplayBody<B>>) -> Option<Request<ReplayBody<B>>> {
        if !self.may_repeat(request) {
            return None;
        }
        let body = request.body().try_clone()?;
        let mut copy = Request::new(body);
        *copy.method_mut() = request.method().clone();
        *copy.uri_mut() = request.uri().clone();
        *copy.version_mut() = request.version();
        let mut headers = request.headers().clone();
        remove_hop_by_hop(&mut headers);
        *copy.headers_mut() = headers;
        *copy.extensions_mut() = request.extensions().clone();
        Some(copy)
    }

    fn decide(&self, result: &Result<Response<ResBody>, BoxError>) -> Decision {
        decide_by(&*self.classifier, result)
    }

    fn describe(
        &self,
        result: &Result<Response<ResBody>, BoxError>,
        f: &mut fmt::Formatter<'_>,
    ) -> fmt::Result {
        match result {
            Ok(response) => write!(f, "status {}", response.status()),
            Err(error) => write!(f, "error: {error}"),
        }
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use bytes::Bytes;
    use http::{HeaderName, header};
    use http_body_util::Empty;

    use super::*;

    fn request(
        method: Method,
        body: ReplayBody<Empty<Bytes>>,
    ) -> Request<ReplayBody<Empty<Bytes>>> {
        let mut request = Request::new(body);
        *request.method_mut() = method;
        request
    }

    fn kept() -> ReplayBody<Empty<Bytes>> {
        ReplayBody::kept(Bytes::from_static(b"payload"))
    }

    fn copy(policy: &HttpPolicy, request: &Request<ReplayBody<Empty<Bytes>>>) -> bool {
        Policy::<_, http::Response<()>>::clone_request(policy, request).is_some()
    }

    #[test]
    fn only_idempotent_or_keyed_requests_are_copied() {
        let policy = HttpPolicy::new();
        for method in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::TRACE,
            Method::PUT,
            Method::DELETE,
        ] {
            assert!(copy(&policy, &request(method.clone(), kept())), "{method}");
        }
        for method in [Method::POST, Method::PATCH] {
            assert!(!copy(&policy, &request(method.clone(), kept())), "{method}");
            let mut keyed = request(method.clone(), kept());
            keyed
                .headers_mut()
                .insert(IDEMPOTENCY_KEY, "abc".parse().unwrap());
            assert!(copy(&policy, &keyed), "{method} with a key");
        }
        let lenient = HttpPolicy::new().retry_unsafe_methods(true);
        assert!(copy(&lenient, &request(Method::POST, kept())));
    }

    #[test]
    fn a_body_too_large_to_keep_is_never_copied() {
        let streaming = ReplayBody::streaming(Bytes::from_static(b"head"), Empty::new());
        assert!(!streaming.is_replayable());
        assert!(!copy(&HttpPolicy::new(), &request(Method::GET, streaming)));
    }

    #[test]
    fn a_copy_keeps_end_to_end_headers_and_extensions_but_not_hop_by_hop_ones() {
        let mut original = request(Method::PUT, kept());
        *original.uri_mut() = "http://example.test/thing".parse().unwrap();
        let headers = original.headers_mut();
        headers.insert(header::CONNECTION, "keep-alive, x-hop".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert("x-hop", "1".parse().unwrap());
        headers.insert(header::TE, "gzip, trailers".parse().unwrap());
        headers.insert(header::TRAILER, "x-checksum".parse().unwrap());
        headers.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        headers.insert(header::UPGRADE, "h2c".parse().unwrap());
        headers.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        headers.insert("x-request-id", "42".parse().unwrap());
        original.extensions_mut().insert(7u32);
        let copied =
            Policy::<_, http::Response<()>>::clone_request(&HttpPolicy::new(), &original).unwrap();
        assert_eq!(copied.method(), Method::PUT);
        assert_eq!(copied.uri(), original.uri());
        assert_eq!(copied.extensions().get::<u32>(), Some(&7));
        let mut names: Vec<_> = copied.headers().keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-type", "te", "trailer", "x-request-id"]);
        assert_eq!(
            copied.headers()[header::TE],
            "trailers",
            "only `trailers` survives"
        );
    }

    #[test]
    fn te_without_trailers_is_dropped() {
        let mut original = request(Method::GET, kept());
        original
            .headers_mut()
            .insert(header::TE, "gzip".parse().unwrap());
        let copied =
            Policy::<_, http::Response<()>>::clone_request(&HttpPolicy::new(), &original).unwrap();
        assert!(copied.headers().is_empty());
    }

    #[test]
    fn http_events_describe_a_response_by_its_status() {
        struct Show<'a>(&'a Result<http::Response<()>, BoxError>);
        impl fmt::Display for Show<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                Policy::<Request<ReplayBody<Empty<Bytes>>>, _>::describe(
                    &HttpPolicy::new(),
                    self.0,
                    f,
                )
            }
        }
        let unavailable = http::Response::builder().status(503).body(()).unwrap();
        assert_eq!(
            Show(&Ok(unavailable)).to_string(),
            "status 503 Service Unavailable"
        );
        assert_eq!(Show(&Err("reset".into())).to_string(), "error: reset");
    }
}
