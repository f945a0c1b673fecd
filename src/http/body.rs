//! The response body of layers that can answer on their own.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;

use crate::error::BoxError;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// Either the inner service's body, or a complete body a palisade layer holds itself (a
    /// problem+json rejection, a replayed response), or the start of the inner body already
    /// read followed by the rest.
    ///
    /// Layers that answer some requests themselves (the server-side timeout, the idempotency
    /// layer) return `http::Response<ResponseBody<B>>`, so a router keeps one response type and
    /// its `Infallible` error type. It streams the inner body untouched.
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Full { data: Option<Bytes>, trailers: Option<HeaderMap> },
        Prefixed { prefix: Option<Bytes>, #[pin] rest: B },
        Failed { error: Option<BoxError> },
    }
}

impl<B> ResponseBody<B> {
    /// Wraps the inner service's body.
    #[must_use]
    pub fn new(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    /// A complete body of `data`.
    #[must_use]
    pub fn full(data: Bytes) -> Self {
        Self::full_with_trailers(data, None)
    }

    /// A complete body of `data`, then `trailers`.
    pub(crate) fn full_with_trailers(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        let data = if data.is_empty() { None } else { Some(data) };
        Self {
            kind: Kind::Full { data, trailers },
        }
    }

    /// A body that fails with `error` when read: the inner body failed after a layer had
    /// started reading it, and the client must see that failure, not a truncated body.
    #[cfg_attr(not(feature = "idempotency"), allow(dead_code))]
    pub(crate) fn failed(error: BoxError) -> Self {
        Self {
            kind: Kind::Failed { error: Some(error) },
        }
    }

    /// `prefix`, already read from the inner body, then the rest of it.
    #[cfg_attr(not(feature = "idempotency"), allow(dead_code))]
    pub(crate) fn prefixed(prefix: Bytes, rest: B) -> Self {
        let prefix = if prefix.is_empty() {
            None
        } else {
            Some(prefix)
        };
        Self {
            kind: Kind::Prefixed { prefix, rest },
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx).map_err(Into::into),
            KindProj::Full { data, trailers } => Poll::Ready(
                data.take()
                    .map(Frame::data)
                    .or_else(|| trailers.take().map(Frame::trailers))
                    .map(Ok),
            ),
            KindProj::Prefixed { prefix, rest } => match prefix.take() {
                Some(prefix) => Poll::Ready(Some(Ok(Frame::data(prefix)))),
                None => rest.poll_frame(cx).map_err(Into::into),
            },
            KindProj::Failed { error } => Poll::Ready(error.take().map(Err)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Full { data, trailers } => data.is_none() && trailers.is_none(),
            Kind::Prefixed { prefix, rest } => prefix.is_none() && rest.is_end_stream(),
            Kind::Failed { error } => error.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Full { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |data| data.len() as u64))
            }
            Kind::Prefixed { prefix, rest } => {
                prefixed_size_hint(prefix.as_ref(), &rest.size_hint())
            }
            Kind::Failed { .. } => SizeHint::new(),
        }
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Inner { .. } => f
                .debug_tuple("ResponseBody::Inner")
                .field(&std::any::type_name::<B>())
                .finish(),
            Kind::Full { data, .. } => f.debug_tuple("ResponseBody::Full").field(data).finish(),
            Kind::Prefixed { prefix, .. } => f
                .debug_struct("ResponseBody::Prefixed")
                .field("prefix_len", &prefix.as_ref().map_or(0, Bytes::len))
                .finish_non_exhaustive(),
            Kind::Failed { error } => f.debug_tuple("ResponseBody::Failed").field(error).finish(),
        }
    }
}

/// The size hint of `prefix` followed by a body hinting `rest`.
pub(crate) fn prefixed_size_hint(prefix: Option<&Bytes>, rest: &SizeHint) -> SizeHint {
    let prefix = prefix.map_or(0, |prefix| prefix.len() as u64);
    let mut hint = SizeHint::new();
    hint.set_lower(rest.lower().saturating_add(prefix));
    if let Some(upper) = rest.upper() {
        hint.set_upper(upper.saturating_add(prefix));
    }
    hint
}
