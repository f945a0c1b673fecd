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
    #[cfg_attr(not(feature = "idempotency"), allow(dead_code))] // only idempotency uses it
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

/// The most frames [`Collect`] reads from one body, empty ones included. A body that needs more
/// is not kept (it counts as over the limit): each frame costs a poll however little it holds,
/// and 65,536 frames of one byte already fill the default 64 KiB limit.
pub(crate) const MAX_FRAMES: u32 = 65_536;

/// How many frames [`Collect`] reads in one poll before it yields (waking itself at once), so a
/// body whose frames are always ready cannot hold its task, and the timeout above it, hostage.
const FRAMES_PER_POLL: u32 = 64;

/// Reads a body into memory, up to `limit` bytes. A body whose size hint is already over the
/// limit is handed back unread; an empty one is not polled.
///
/// Memory stays within the limit whatever the framing: empty data frames are skipped, and from
/// the second non-empty frame on the data is appended to one buffer, so a body of millions of
/// tiny or empty frames holds at most `limit` bytes plus one frame. A body of more than
/// [`MAX_FRAMES`] frames is handed back as over the limit.
pub(crate) struct Collect<B> {
    body: Option<B>,
    /// The first non-empty chunk read, alone: most small bodies arrive in one, and need no copy.
    first: Option<Bytes>,
    /// Every chunk after the first, appended to a copy of the first.
    joined: BytesMut,
    read: usize,
    frames: u32,
    limit: usize,
}

impl<B> Collect<B> {
    pub(crate) fn new(body: B, limit: usize) -> Self {
        Self {
            body: Some(body),
            first: None,
            joined: BytesMut::new(),
            read: 0,
            frames: 0,
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
        let mut this_poll = 0;
        loop {
            let Some(body) = self.body.as_mut() else {
                return Poll::Ready(Ok(self.whole(None)));
            };
            if self.frames == 0 {
                if body.size_hint().lower() > self.limit as u64 {
                    return Poll::Ready(Ok(self.over()));
                }
                if body.is_end_stream() {
                    self.body = None;
                    return Poll::Ready(Ok(self.whole(None)));
                }
            }
            if self.frames >= MAX_FRAMES {
                tracing::debug!(
                    frames = self.frames,
                    "body sent in too many frames to keep: treated as over the limit"
                );
                return Poll::Ready(Ok(self.over()));
            }
            if this_poll == FRAMES_PER_POLL {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let frame = ready!(Pin::new(body).poll_frame(cx));
            this_poll += 1;
            self.frames += 1;
            match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        if data.is_empty() {
                            continue;
                        }
                        self.read = self.read.saturating_add(data.len());
                        self.keep(data);
                        if self.read > self.limit {
                            return Poll::Ready(Ok(self.over()));
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

    /// Adds a non-empty chunk: the first is held as it is, later ones are appended to one buffer.
    fn keep(&mut self, data: Bytes) {
        if self.joined.is_empty() {
            match self.first.take() {
                None => {
                    self.first = Some(data);
                    return;
                }
                Some(first) => {
                    self.joined
                        .reserve(first.len().saturating_add(data.len()).min(self.limit + 1));
                    self.joined.extend_from_slice(&first);
                }
            }
        }
        self.joined.extend_from_slice(&data);
    }

    /// Whether the body declared its exact length (what remains of it, once reading started).
    #[cfg(feature = "retry")]
    pub(crate) fn length_known(&self) -> bool {
        self.body
            .as_ref()
            .is_none_or(|body| body.size_hint().exact().is_some())
    }

    /// Stops reading: what was read so far and the rest of the body, to be sent once.
    #[cfg(feature = "retry")]
    pub(crate) fn give_up(&mut self) -> Collected<B> {
        self.over()
    }

    /// What was read so far and the rest of the body, to be sent once.
    fn over(&mut self) -> Collected<B> {
        let prefix = self.join();
        match self.body.take() {
            Some(rest) => Collected::Over { prefix, rest },
            None => Collected::Whole {
                data: prefix,
                trailers: None,
            },
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
        match self.first.take() {
            Some(first) => first,
            None => std::mem::take(&mut self.joined).freeze(),
        }
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use std::convert::Infallible;

    use super::*;

    /// A body whose frames are always ready: `empty` empty data frames, then `data` frames of
    /// one byte each, then the end. Counts the frames it was asked for.
    struct Frames {
        empty: u64,
        data: u64,
        polled: u64,
    }

    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            self.polled += 1;
            let chunk = if self.empty > 0 {
                self.empty -= 1;
                Bytes::new()
            } else if self.data > 0 {
                self.data -= 1;
                Bytes::from_static(b"x")
            } else {
                return Poll::Ready(None);
            };
            Poll::Ready(Some(Ok(Frame::data(chunk))))
        }
    }

    /// Polls to the end, counting the polls that yielded.
    fn collect(body: Frames, limit: usize) -> (Collected<Frames>, u64) {
        let mut collect = Collect::new(body, limit);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut yields = 0;
        loop {
            match collect.poll_collect(&mut cx) {
                Poll::Ready(Ok(collected)) => return (collected, yields),
                Poll::Ready(Err(never)) => match never {},
                Poll::Pending => yields += 1,
            }
        }
    }

    #[test]
    fn millions_of_empty_frames_hold_no_memory_and_stop_at_the_frame_cap() {
        let body = Frames {
            empty: 2_000_000,
            data: 1,
            polled: 0,
        };
        let (collected, yields) = collect(body, 1024);
        let Collected::Over { prefix, rest } = collected else {
            panic!("a body of 2,000,001 frames is not kept");
        };
        assert!(prefix.is_empty(), "empty frames add nothing");
        assert_eq!(
            rest.polled,
            u64::from(MAX_FRAMES),
            "reading stopped at the cap"
        );
        assert_eq!(yields, u64::from(MAX_FRAMES / FRAMES_PER_POLL) - 1);
    }

    #[test]
    fn many_small_frames_are_joined_into_one_buffer_within_the_limit() {
        let body = Frames {
            empty: 10,
            data: 1000,
            polled: 0,
        };
        let (collected, _) = collect(body, 1000);
        let Collected::Whole { data, trailers } = collected else {
            panic!("1000 bytes fit a 1000-byte limit");
        };
        assert_eq!(data.len(), 1000);
        assert!(data.iter().all(|&b| b == b'x'));
        assert!(trailers.is_none());

        let body = Frames {
            empty: 0,
            data: 1001,
            polled: 0,
        };
        let (collected, _) = collect(body, 1000);
        let Collected::Over { prefix, rest } = collected else {
            panic!("1001 bytes are over a 1000-byte limit");
        };
        assert_eq!(prefix.len(), 1001, "the part read, to send before the rest");
        assert_eq!(rest.polled, 1001);
    }

    #[test]
    fn one_chunk_is_handed_back_without_a_copy() {
        let chunk = Bytes::from(vec![7u8; 100]);
        let body = http_body_util::Full::new(chunk.clone());
        let mut collect = Collect::new(body, 1000);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let Poll::Ready(Ok(Collected::Whole { data, .. })) = collect.poll_collect(&mut cx) else {
            panic!("a full body is read at once");
        };
        assert_eq!(data.as_ptr(), chunk.as_ptr());
    }
}
