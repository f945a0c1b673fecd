//! [`PropagateDeadlineLayer`]: the request's deadline, written to outgoing headers.

use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use tower_layer::Layer;
use tower_service::Service;

use super::future::{Expiry, ResponseFuture};
use super::{TimedOut, TimeoutKind};
use crate::clock::Instant;
use crate::deadline::Deadline;
use crate::error::BoxError;
use crate::hook::Hook;
use crate::http::DeadlineHeader;
use std::sync::Arc;

/// Writes the time a request's [`Deadline`] leaves into outgoing headers, so the server it goes
/// to can stop working when the caller stops waiting.
///
/// Place it innermost in a client stack, just outside the HTTP client, with a
/// [`TimeoutLayer`](super::TimeoutLayer) further out: the timeout tightens (or, with
/// [`publish_deadline`](super::TimeoutLayer::publish_deadline), sets) the deadline, and this
/// layer sends what is left of it at the moment the request leaves.
///
/// - A request with a deadline gets each configured header, replacing any value already there.
/// - A request whose deadline has already passed fails at once with [`TimedOut`] and is not
///   sent.
/// - A request without a deadline is sent unchanged.
///
/// The value is rounded up to the header's resolution, so it never reads zero while time is
/// left.
///
/// ```
/// use std::time::Duration;
/// use palisade::http::DeadlineHeader;
/// use palisade::timeout::{PropagateDeadlineLayer, TimeoutLayer};
/// use tower::ServiceBuilder;
///
/// let layers = ServiceBuilder::new()
///     .layer(TimeoutLayer::new(Duration::from_secs(2)).publish_deadline(true))
///     .layer(PropagateDeadlineLayer::new(DeadlineHeader::grpc()));
/// # let _ = layers;
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct PropagateDeadlineLayer {
    headers: Arc<Vec<DeadlineHeader>>,
}

impl PropagateDeadlineLayer {
    /// Writes the remaining time to `header`.
    pub fn new(header: DeadlineHeader) -> Self {
        Self {
            headers: Arc::new(vec![header]),
        }
    }

    /// Writes no header: a propagation stage switched off, which still fails a request whose
    /// deadline has passed before it is sent (for the client preset).
    #[cfg_attr(not(feature = "preset"), allow(dead_code))]
    pub(crate) fn writing_nothing() -> Self {
        Self {
            headers: Arc::new(Vec::new()),
        }
    }

    /// Writes the remaining time to `header` as well (for example `grpc-timeout` for gRPC-aware
    /// peers and a milliseconds header for the rest).
    pub fn also(mut self, header: DeadlineHeader) -> Self {
        Arc::make_mut(&mut self.headers).push(header);
        self
    }
}

impl<S> Layer<S> for PropagateDeadlineLayer {
    type Service = PropagateDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PropagateDeadline {
            inner,
            headers: Arc::clone(&self.headers),
        }
    }
}

/// Writes the request's remaining time into outgoing headers: see [`PropagateDeadlineLayer`].
#[derive(Clone, Debug)]
pub struct PropagateDeadline<S> {
    inner: S,
    headers: Arc<Vec<DeadlineHeader>>,
}

impl<S> PropagateDeadline<S> {
    crate::inner_accessors!();
}

impl<S, B> Service<Request<B>> for PropagateDeadline<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if let Some(deadline) = request.extensions().get::<Deadline>().copied() {
            let now = Instant::now();
            if deadline.is_expired_at(now) {
                return ResponseFuture::expired(TimedOut::new(
                    Duration::ZERO,
                    TimeoutKind::Deadline,
                ));
            }
            let remaining = deadline.remaining_at(now);
            for header in self.headers.iter() {
                header.write(request.headers_mut(), remaining);
            }
        }
        // No timer: enforcing the deadline is the timeouts' job; this layer only tells.
        ResponseFuture::running(
            self.inner.call(request),
            Expiry::Never,
            TimeoutKind::Deadline,
            Hook::default(),
            crate::instruments::Call::detached(),
        )
    }
}
