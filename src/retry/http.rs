//! HTTP retries (features `retry` + `http`): which requests are safe to repeat, and request
//! bodies that can be sent again.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::policy::{Decision, Policy, decide_by};
use crate::classify::{Classify, StatusClassifier};
use crate::error::BoxError;
use crate::http::headers::remove_hop_by_hop;
use crate::http::replay_body::{Collect, Collected};
use crate::http::{IDEMPOTENCY_KEY, ReplayBody};

/// The largest request body kept for replay: 64 KiB.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// How long [`BufferBody`] waits by default for a body of unknown length to end: 10 ms.
pub const DEFAULT_UNKNOWN_LENGTH_WAIT: Duration = Duration::from_millis(10);

/// What [`BufferBody`] does with a request body whose length is not known up front (no exact
/// size hint: a chunked upload, a gRPC stream, a body fed from a channel) while it has not
/// ended.
///
/// A body of known length is always waited for, up to the limit: whoever declared its length
/// sends all of it. A body of unknown length may come from a caller that sends part of it, then
/// waits for the response (client streaming, a bidirectional stream): waiting for its end
/// before sending the request would deadlock both sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnknownLength {
    /// Wait up to this long for the body to end (or pass the limit); zero waits for nothing
    /// beyond what is ready at once. A body still going then is sent on as it is, unbuffered: the part already read, then the rest, once (not
    /// replayable, so not retried). The default, with [`DEFAULT_UNKNOWN_LENGTH_WAIT`]: a body
    /// produced at once (the usual case, even in many chunks) is kept; a stream costs at most
    /// that much latency.
    WaitUpTo(Duration),
    /// Wait for the end (or the limit) however long it takes. Every body that fits is
    /// replayable, but a caller that waits for the response before sending the rest of its body
    /// deadlocks. Only for callers whose bodies never depend on the response.
    WaitForEnd,
}

impl Default for UnknownLength {
    fn default() -> Self {
        Self::WaitUpTo(DEFAULT_UNKNOWN_LENGTH_WAIT)
    }
}

/// The retry policy for HTTP clients.
///
/// - **Which requests.** Only requests that are safe to send twice: the idempotent methods of
///   RFC 9110 (GET, HEAD, OPTIONS, TRACE, PUT, DELETE), or any request carrying an
///   `Idempotency-Key` header (the server then deduplicates). Other requests (a POST without a
///   key) are sent once. [`retry_unsafe_methods`](Self::retry_unsafe_methods) lifts this.
/// - **Which bodies.** Only a body [`BufferBodyLayer`] kept in full ([`ReplayBody`]); a body
///   over its limit is sent once.
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

/// A request body that failed while [`BufferBody`] was reading it: the call failed before
/// anything was sent. Its [`source`](std::error::Error::source) is the body's own error.
#[derive(Debug, thiserror::Error)]
#[error("the request body failed before the request could be sent")]
pub struct RequestBodyError {
    #[source]
    source: BoxError,
}

/// Reads each request's body, up to a limit, into memory so that a retry layer inside can
/// send it again: `Request<B>` in, `Request<ReplayBody<B>>` out.
///
/// A body within the limit is kept in full (replayable); a body over it is sent once, as the
/// bytes already read followed by the rest, so nothing is lost or sent twice. An empty body, or
/// one whose size hint is already over the limit, is passed on without waiting. A body of
/// unknown length still going after a short wait ([`UnknownLength`], by default 10 ms) is sent
/// on the same way, so a streaming caller that waits for the response before sending the rest
/// never deadlocks. A body of more than 65,536 frames counts as over the limit, and empty
/// frames hold no memory. Bodies must be
/// `Unpin`, as hyper's, axum's and http-body-util's are (box others with `BodyExt::boxed`).
/// A body that fails while being read fails the call with [`RequestBodyError`] before anything
/// is sent. Place it just
/// outside the [`RetryLayer`](super::RetryLayer):
///
/// ```
/// use palisade::retry::{BufferBodyLayer, HttpPolicy, RetryLayer};
/// use tower::ServiceBuilder;
///
/// let layers = ServiceBuilder::new()
///     .layer(BufferBodyLayer::new(64 * 1024))
///     .layer(RetryLayer::new().policy(HttpPolicy::new()));
/// # let _ = layers;
/// ```
#[derive(Clone, Copy, Debug)]
#[must_use]
pub struct BufferBodyLayer {
    limit: usize,
    unknown_length: UnknownLength,
}

impl BufferBodyLayer {
    /// Keeps bodies of up to `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            unknown_length: UnknownLength::default(),
        }
    }

    /// What to do with a body of unknown length that has not ended yet. Defaults to
    /// [`UnknownLength::WaitUpTo`] 10 ms.
    pub fn unknown_length(mut self, rule: UnknownLength) -> Self {
        self.unknown_length = rule;
        self
    }
}

impl Default for BufferBodyLayer {
    /// Keeps bodies of up to [`DEFAULT_BODY_LIMIT`] (64 KiB).
    fn default() -> Self {
        Self::new(DEFAULT_BODY_LIMIT)
    }
}

impl<S> Layer<S> for BufferBodyLayer {
    type Service = BufferBody<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BufferBody {
            inner,
            limit: self.limit,
            unknown_length: self.unknown_length,
        }
    }
}

/// Makes request bodies replayable: see [`BufferBodyLayer`].
#[derive(Clone, Debug)]
pub struct BufferBody<S> {
    inner: S,
    limit: usize,
    unknown_length: UnknownLength,
}

impl<S> BufferBody<S> {
    crate::inner_accessors!();
}

impl<S, B> Service<Request<B>> for BufferBody<S>
where
    S: Service<Request<ReplayBody<B>>> + Clone,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BufferFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (parts, body) = request.into_parts();
        // The body may take a while to read; the instance polled ready goes with it, and a
        // fresh clone stays behind for the next call.
        let fresh = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, fresh);
        BufferFuture {
            state: BufferState::Reading {
                service: Some(ready),
                parts: Some(parts),
                collect: Collect::new(body, self.limit),
                unknown_length: self.unknown_length,
                wait: None,
            },
        }
    }
}

pin_project! {
    /// The response future of [`BufferBody`]: reads the body, then calls the inner service.
    pub struct BufferFuture<S: Service<Request<ReplayBody<B>>>, B> {
        #[pin]
        state: BufferState<S, B>,
    }
}

pin_project! {
    #[project = BufferStateProj]
    enum BufferState<S: Service<Request<ReplayBody<B>>>, B> {
        Reading {
            service: Option<S>,
            parts: Option<http::request::Parts>,
            collect: Collect<B>,
            unknown_length: UnknownLength,
            // The wait for a body of unknown length to end, started at its first `Pending`.
            // Boxed: only streaming bodies need it, and inline it would grow every future.
            wait: Option<Pin<Box<tokio::time::Sleep>>>,
        },
        Calling {
            #[pin]
            future: S::Future,
        },
    }
}

impl<S, B> Future for BufferFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>>,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                BufferStateProj::Calling { future } => {
                    return future.poll(cx).map_err(Into::into);
                }
                BufferStateProj::Reading {
                    service,
                    parts,
                    collect,
                    unknown_length,
                    wait,
                } => {
                    let collected = match collect.poll_collect(cx) {
                        Poll::Ready(collected) => collected,
                        Poll::Pending => {
                            let UnknownLength::WaitUpTo(limit) = *unknown_length else {
                                return Poll::Pending;
                            };
                            if collect.length_known() {
                                return Poll::Pending;
                            }
                            if !limit.is_zero() {
                                let sleep =
                                    wait.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                                ready!(sleep.as_mut().poll(cx));
                            }
                            tracing::debug!(
                                ?limit,
                                "request body of unknown length still going: sent on unbuffered, \
                                 not replayable"
                            );
                            Ok(collect.give_up())
                        }
                    };
                    let body = match collected {
                        Ok(Collected::Whole { data, trailers }) => {
                            ReplayBody::kept_with_trailers(data, trailers)
                        }
                        // Over the limit: send what was read, then the rest, once.
                        Ok(Collected::Over { prefix, rest }) => ReplayBody::streaming(prefix, rest),
                        Err(error) => {
                            return Poll::Ready(Err(RequestBodyError {
                                source: error.into(),
                            }
                            .into()));
                        }
                    };
                    let (Some(parts), Some(mut service)) = (parts.take(), service.take()) else {
                        return Poll::Ready(Err("request body polled after it was sent".into()));
                    };
                    let future = service.call(Request::from_parts(parts, body));
                    this.state.set(BufferState::Calling { future });
                }
            }
        }
    }
}

impl<S: Service<Request<ReplayBody<B>>>, B> fmt::Debug for BufferFuture<S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferFuture").finish_non_exhaustive()
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;

    use http::{HeaderMap, HeaderName, header};
    use http_body::Frame;
    use http_body_util::BodyExt;

    use super::*;

    /// A body delivered in the given chunks.
    struct Chunks(VecDeque<Bytes>);

    impl Chunks {
        fn of(chunks: &[&'static str]) -> Self {
            Self(
                chunks
                    .iter()
                    .map(|c| Bytes::from_static(c.as_bytes()))
                    .collect(),
            )
        }
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
        }
    }

    fn request(method: Method, body: ReplayBody<Chunks>) -> Request<ReplayBody<Chunks>> {
        let mut request = Request::new(body);
        *request.method_mut() = method;
        request
    }

    fn kept() -> ReplayBody<Chunks> {
        ReplayBody::kept(Bytes::from_static(b"payload"))
    }

    fn copy(policy: &HttpPolicy, request: &Request<ReplayBody<Chunks>>) -> bool {
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
        let streaming = ReplayBody::streaming(Bytes::from_static(b"head"), Chunks::of(&["tail"]));
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
                Policy::<Request<ReplayBody<Chunks>>, _>::describe(&HttpPolicy::new(), self.0, f)
            }
        }
        let unavailable = http::Response::builder().status(503).body(()).unwrap();
        assert_eq!(
            Show(&Ok(unavailable)).to_string(),
            "status 503 Service Unavailable"
        );
        assert_eq!(Show(&Err("reset".into())).to_string(), "error: reset");
    }

    #[tokio::test]
    async fn a_kept_body_replays_its_data_and_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", "abc".parse().unwrap());
        let body: ReplayBody<Chunks> =
            ReplayBody::kept_with_trailers(Bytes::from_static(b"data"), Some(trailers));
        let again = body.try_clone().unwrap();
        for body in [body, again] {
            let collected = body.collect().await.unwrap();
            assert_eq!(collected.trailers().unwrap()["x-checksum"], "abc");
            assert_eq!(collected.to_bytes(), "data");
        }
    }

    /// An inner "client" that collects the body it is sent.
    fn collector() -> impl Service<
        Request<ReplayBody<Chunks>>,
        Response = (bool, Bytes),
        Error = BoxError,
        Future: Send,
    > + Clone {
        tower::service_fn(|request: Request<ReplayBody<Chunks>>| async move {
            let replayable = request.body().is_replayable();
            let bytes = request.into_body().collect().await?.to_bytes();
            Ok::<_, BoxError>((replayable, bytes))
        })
    }

    async fn send(limit: usize, body: Chunks) -> (bool, Bytes) {
        use tower::ServiceExt;
        BufferBodyLayer::new(limit)
            .layer(collector())
            .oneshot(Request::new(body))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn bodies_within_the_limit_are_kept_whole() {
        let (replayable, bytes) = send(10, Chunks::of(&["abc", "def", "ghij"])).await;
        assert!(replayable);
        assert_eq!(bytes, "abcdefghij");
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_sent_once_with_nothing_lost() {
        let (replayable, bytes) = send(5, Chunks::of(&["abc", "def", "ghi", "jkl"])).await;
        assert!(!replayable);
        assert_eq!(
            bytes, "abcdefghijkl",
            "the read prefix, then the rest, in order"
        );
    }

    #[tokio::test]
    async fn an_empty_body_passes_without_reading() {
        let (replayable, bytes) = send(5, Chunks::of(&[])).await;
        assert!(replayable);
        assert!(bytes.is_empty());
    }

    #[tokio::test]
    async fn a_failing_body_fails_the_call_before_anything_is_sent() {
        use tower::ServiceExt;

        struct Broken;
        impl Body for Broken {
            type Data = Bytes;
            type Error = std::io::Error;
            fn poll_frame(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
                Poll::Ready(Some(Err(std::io::Error::other("disk gone"))))
            }
        }

        let sent = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&sent);
        let inner = tower::service_fn(move |_: Request<ReplayBody<Broken>>| {
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
            async { Ok::<_, BoxError>(()) }
        });
        let err = BufferBodyLayer::new(10)
            .layer(inner)
            .oneshot(Request::new(Broken))
            .await
            .unwrap_err();
        let body_error = err
            .downcast_ref::<RequestBodyError>()
            .unwrap_or_else(|| panic!("{err}"));
        let source = std::error::Error::source(body_error).unwrap();
        assert_eq!(source.to_string(), "disk gone");
        assert!(!sent.load(std::sync::atomic::Ordering::Relaxed));
    }
}
