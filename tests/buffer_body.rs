//! `BufferBody` against hostile and streaming request bodies, on paused time: a caller that
//! streams and waits for the response, bodies that end quickly in many chunks, slow bodies of
//! known length, and floods of empty frames.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::channel::Channel;
use palisade::error::BoxError;
use palisade::retry::{BufferBodyLayer, ReplayBody, UnknownLength};
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep, timeout};
use tower::{Layer, ServiceExt, service_fn};

/// What the inner service saw: whether the body was replayable, and (through the channel) the
/// whole body once it ended.
struct Seen {
    replayable: bool,
    after: Duration,
    body: oneshot::Receiver<Bytes>,
}

/// Sends `request` through `BufferBody` to a service that answers at once, without waiting for
/// the body, and reads the body to its end in the background.
async fn send<B>(layer: BufferBodyLayer, body: B) -> Seen
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError> + std::fmt::Debug,
{
    let start = Instant::now();
    let (whole_tx, whole_rx) = oneshot::channel();
    let whole_tx = std::sync::Arc::new(std::sync::Mutex::new(Some(whole_tx)));
    let service = layer.layer(service_fn(move |request: Request<ReplayBody<B>>| {
        let replayable = request.body().is_replayable();
        let whole_tx = whole_tx.lock().unwrap().take().expect("one request");
        tokio::spawn(async move {
            let whole = request.into_body().collect().await.unwrap().to_bytes();
            let _ = whole_tx.send(whole);
        });
        async move { Ok::<_, Infallible>(Response::new((replayable, start.elapsed()))) }
    }));
    let response = timeout(Duration::from_secs(60), service.oneshot(Request::new(body)))
        .await
        .expect("the request reached the service")
        .unwrap();
    let (replayable, after) = response.into_body();
    Seen {
        replayable,
        after,
        body: whole_rx,
    }
}

/// Client streaming: the caller sends a first message, then waits for the response before it
/// sends the rest. Waiting for the body's end before sending the request would deadlock.
#[tokio::test(start_paused = true)]
async fn a_streaming_caller_that_waits_for_the_response_is_not_deadlocked() {
    let (mut tx, body) = Channel::<Bytes, Infallible>::new(4);
    tx.send_data(Bytes::from_static(b"hello ")).await.unwrap();
    let seen = send(BufferBodyLayer::new(64 * 1024), body).await;
    assert!(!seen.replayable, "a stream is sent on unbuffered");
    assert_eq!(
        seen.after,
        Duration::from_millis(10),
        "after the default wait"
    );
    // The response came: the caller sends the rest.
    tx.send_data(Bytes::from_static(b"world")).await.unwrap();
    drop(tx);
    assert_eq!(
        seen.body.await.unwrap(),
        "hello world",
        "nothing lost or repeated"
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_of_unknown_length_that_ends_at_once_in_many_chunks_is_kept() {
    let (mut tx, body) = Channel::<Bytes, Infallible>::new(1);
    tokio::spawn(async move {
        for chunk in ["a", "b", "c", "d"] {
            tx.send_data(Bytes::from_static(chunk.as_bytes()))
                .await
                .unwrap();
            tokio::task::yield_now().await;
        }
    });
    let seen = send(BufferBodyLayer::new(64 * 1024), body).await;
    assert!(seen.replayable);
    assert_eq!(seen.after, Duration::ZERO);
    assert_eq!(seen.body.await.unwrap(), "abcd");
}

#[tokio::test(start_paused = true)]
async fn waiting_for_the_end_keeps_a_slow_body_replayable_when_asked_to() {
    let (mut tx, body) = Channel::<Bytes, Infallible>::new(1);
    tokio::spawn(async move {
        tx.send_data(Bytes::from_static(b"slow ")).await.unwrap();
        sleep(Duration::from_secs(1)).await;
        tx.send_data(Bytes::from_static(b"body")).await.unwrap();
    });
    let layer = BufferBodyLayer::new(64 * 1024).unknown_length(UnknownLength::WaitForEnd);
    let seen = send(layer, body).await;
    assert!(seen.replayable);
    assert_eq!(seen.after, Duration::from_secs(1));
    assert_eq!(seen.body.await.unwrap(), "slow body");

    let (mut tx, body) = Channel::<Bytes, Infallible>::new(1);
    tokio::spawn(async move {
        tx.send_data(Bytes::from_static(b"slow ")).await.unwrap();
        sleep(Duration::from_millis(300)).await;
        tx.send_data(Bytes::from_static(b"body")).await.unwrap();
    });
    let layer = BufferBodyLayer::new(64 * 1024)
        .unknown_length(UnknownLength::WaitUpTo(Duration::from_millis(500)));
    let seen = send(layer, body).await;
    assert!(seen.replayable, "ended within the longer wait");
    assert_eq!(seen.after, Duration::from_millis(300));
}

/// A body that declares its length and sends it in timed chunks.
struct Declared {
    chunks: VecDeque<(Duration, Bytes)>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    left: u64,
}

impl Body for Declared {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let Some((delay, _)) = self.chunks.front() else {
            return Poll::Ready(None);
        };
        let delay = *delay;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.sleep = None;
        let (_, chunk) = self.chunks.pop_front().unwrap();
        self.left -= chunk.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_body_of_declared_length_is_waited_for_and_kept() {
    let body = Declared {
        chunks: VecDeque::from([
            (Duration::ZERO, Bytes::from_static(b"upload ")),
            (Duration::from_secs(2), Bytes::from_static(b"done")),
        ]),
        sleep: None,
        left: 11,
    };
    let seen = send(BufferBodyLayer::new(64 * 1024), body).await;
    assert!(
        seen.replayable,
        "whoever declared the length sends all of it"
    );
    assert_eq!(seen.after, Duration::from_secs(2));
    assert_eq!(seen.body.await.unwrap(), "upload done");
}

/// Frames that are always ready: `empty` empty ones, then `data`.
struct EmptyFrames {
    empty: u32,
    data: Option<Bytes>,
}

impl Body for EmptyFrames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.empty > 0 {
            self.empty -= 1;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::new()))));
        }
        Poll::Ready(self.data.take().map(|data| Ok(Frame::data(data))))
    }
}

/// A flood of empty frames under a small limit: before the fix every one was kept in a `Vec`
/// (2,000,000 of them grew the heap by 96 MiB). Now they hold nothing, reading yields to the
/// runtime, stops at the frame cap, and the body is sent on whole, once.
#[tokio::test(start_paused = true)]
async fn a_flood_of_empty_frames_is_sent_on_once_and_arrives_whole() {
    let body = EmptyFrames {
        empty: 200_000,
        data: Some(Bytes::from_static(b"x")),
    };
    let seen = send(BufferBodyLayer::new(1024), body).await;
    assert!(!seen.replayable, "too many frames to keep");
    assert_eq!(seen.body.await.unwrap(), "x");
}
