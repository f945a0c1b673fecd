//! Request bodies that can be sent again (features `retry` + `http`): [`BufferBody`] reads a
//! request's body into memory, up to a limit, so the retry layer inside can send it again.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body::Body;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::BoxError;
use crate::http::ReplayBody;
use crate::http::replay_body::{Collect, Collected};

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
    /// beyond what is ready at once. A body still going then is sent on as it is, unbuffered: the
    /// part already read, then the rest, once (not replayable, so not retried). The default, with
    /// [`DEFAULT_UNKNOWN_LENGTH_WAIT`]: a body produced at once (the usual case, even in many
    /// chunks) is kept; a stream costs at most that much latency.
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

    use http::HeaderMap;
    use http_body::Frame;
    use http_body_util::BodyExt;

    use std::sync::Arc;

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
