//! [`ReplayBody`], and reading a body into memory up to a limit.
//!
//! Used by the retry and idempotency layers; a build with neither uses only the public part.
#![cfg_attr(not(any(feature = "retry", feature = "idempotency")), allow(dead_code))]

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::body::prefixed_size_hint;

pin_project! {
    /// A request body read into memory when it fitted a limit (so it can be sent again, or
    /// fingerprinted), and otherwise streamed once: the part already read, then the rest.
    ///
    /// Built by the retry layer's [`BufferBodyLayer`](crate::retry::BufferBodyLayer) (a
    /// client behind it takes `Request<ReplayBody<B>>`; for hyper-util,
    /// `Client<_, ReplayBody<B>>`) and by the idempotency layer (the handler behind it takes
    /// `Request<ReplayBody<B>>`, which an axum `Router` accepts as it is).
    pub struct ReplayBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Kept {
            data: Option<Bytes>,
            trailers: Option<HeaderMap>,
        },
        Streaming {
            prefix: Option<Bytes>,
            #[pin]
            rest: B,
        },
    }
}

impl<B> ReplayBody<B> {
    /// A body of `data` alone, kept in full.
    #[must_use]
    pub fn kept(data: Bytes) -> Self {
        Self::kept_with_trailers(data, None)
    }

    pub(crate) fn kept_with_trailers(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        Self {
            kind: Kind::Kept {
                data: (!data.is_empty()).then_some(data),
                trailers,
            },
        }
    }

    /// A body passed on unread, sent once.
    pub(crate) fn passed(body: B) -> Self {
        Self::streaming(Bytes::new(), body)
    }

    /// A body too large to keep: `prefix` (already read) then `rest`, sent once.
    pub(crate) fn streaming(prefix: Bytes, rest: B) -> Self {
        Self {
            kind: Kind::Streaming {
                prefix: (!prefix.is_empty()).then_some(prefix),
                rest,
            },
        }
    }

    /// Whether this body can be sent again.
    #[must_use]
    pub fn is_replayable(&self) -> bool {
        matches!(self.kind, Kind::Kept { .. })
    }

    /// A copy to send again, if the body was kept in full (a reference count, no copy of the
    /// bytes).
    #[must_use]
    pub fn try_clone(&self) -> Option<Self> {
        match &self.kind {
            Kind::Kept { data, trailers } => Some(Self {
                kind: Kind::Kept {
                    data: data.clone(),
                    trailers: trailers.clone(),
                },
            }),
            Kind::Streaming { .. } => None,
        }
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Kept { data, trailers } => Poll::Ready(
                data.take()
                    .map(Frame::data)
                    .or_else(|| trailers.take().map(Frame::trailers))
                    .map(Ok),
            ),
            KindProj::Streaming { prefix, rest } => match prefix.take() {
                Some(prefix) => Poll::Ready(Some(Ok(Frame::data(prefix)))),
                None => rest.poll_frame(cx),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Kept { data, trailers } => data.is_none() && trailers.is_none(),
            Kind::Streaming { prefix, rest } => prefix.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Kept { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |data| data.len() as u64))
            }
            Kind::Streaming { prefix, rest } => {
                prefixed_size_hint(prefix.as_ref(), &rest.size_hint())
            }
        }
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Kept { data, .. } => f
                .debug_struct("ReplayBody::Kept")
                .field("len", &data.as_ref().map_or(0, Bytes::len))
                .finish_non_exhaustive(),
            Kind::Streaming { .. } => f
                .debug_struct("ReplayBody::Streaming")
                .finish_non_exhaustive(),
        }
    }
}

/// What [`Collect`] read: the whole body, or the part that fitted the limit and the rest.
pub(crate) enum Collected<B> {
    Whole {
        data: Bytes,
        trailers: Option<HeaderMap>,
    },
    Over {
        prefix: Bytes,
        rest: B,
    },
}

/// Reads a body into memory, up to `limit` bytes. A body whose size hint is already over the
/// limit is handed back unread; an empty one is not polled.
pub(crate) struct Collect<B> {
    body: Option<B>,
    /// The first chunk read, alone: most small bodies arrive in one, and need no `Vec`.
    first: Option<Bytes>,
    /// Any chunks after the first.
    more: Vec<Bytes>,
    read: usize,
    limit: usize,
}

impl<B> Collect<B> {
    pub(crate) fn new(body: B, limit: usize) -> Self {
        Self {
            body: Some(body),
            first: None,
            more: Vec::new(),
            read: 0,
            limit,
        }
    }
}

impl<B> Collect<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    /// Reads on. After it returns `Ready`, the body is gone: polling again answers an empty
    /// whole body.
    pub(crate) fn poll_collect(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Collected<B>, B::Error>> {
        loop {
            let Some(body) = self.body.as_mut() else {
                return Poll::Ready(Ok(self.whole(None)));
            };
            if self.read == 0 && self.first.is_none() {
                if body.size_hint().lower() > self.limit as u64 {
                    let rest = self.body.take().map(|rest| Collected::Over {
                        prefix: Bytes::new(),
                        rest,
                    });
                    return Poll::Ready(Ok(rest.unwrap_or_else(|| self.whole(None))));
                }
                if body.is_end_stream() {
                    self.body = None;
                    return Poll::Ready(Ok(self.whole(None)));
                }
            }
            match ready!(Pin::new(body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        self.read = self.read.saturating_add(data.len());
                        if self.first.is_none() {
                            self.first = Some(data);
                        } else {
                            self.more.push(data);
                        }
                        if self.read > self.limit {
                            let prefix = self.join();
                            let rest = self
                                .body
                                .take()
                                .map(|rest| Collected::Over { prefix, rest });
                            return Poll::Ready(Ok(rest.unwrap_or_else(|| self.whole(None))));
                        }
                    }
                    Err(frame) => {
                        // Trailers end the body.
                        self.body = None;
                        return Poll::Ready(Ok(self.whole(frame.into_trailers().ok())));
                    }
                },
                Some(Err(error)) => {
                    self.body = None;
                    return Poll::Ready(Err(error));
                }
                None => {
                    self.body = None;
                    return Poll::Ready(Ok(self.whole(None)));
                }
            }
        }
    }

    fn whole(&mut self, trailers: Option<HeaderMap>) -> Collected<B> {
        Collected::Whole {
            data: self.join(),
            trailers,
        }
    }

    /// The chunks read so far as one `Bytes` (no copy for a single chunk).
    fn join(&mut self) -> Bytes {
        let first = self.first.take().unwrap_or_default();
        if self.more.is_empty() {
            return first;
        }
        let len = first.len() + self.more.iter().map(Bytes::len).sum::<usize>();
        let mut joined = BytesMut::with_capacity(len);
        joined.extend_from_slice(&first);
        for chunk in self.more.drain(..) {
            joined.extend_from_slice(&chunk);
        }
        joined.freeze()
    }
}
