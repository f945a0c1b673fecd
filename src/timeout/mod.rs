//! Timeouts with request-scoped deadlines (feature `timeout`).
//!
//! A [`Timeout`] abandons a call that takes longer than its limit and fails it with
//! [`TimedOut`], so a slow dependency costs a caller a bounded wait instead of a pile-up of
//! stuck requests. Unlike `tower::timeout`, it honours the request's
//! [`Deadline`](crate::deadline::Deadline): the call gets the smaller of the timeout's own limit
//! and the time the deadline leaves, and a request whose deadline has already passed fails at
//! once without reaching the inner service. With the `http` feature the deadline also travels
//! between processes: [`PropagateDeadlineLayer`] writes what is left of it into outgoing headers
//! (`grpc-timeout`, or a milliseconds header), and [`ServerTimeoutLayer`] reads it back on the
//! server, caps it, enforces it on the handler and hands it to the handler's own outgoing calls.
//!
//! Use it around every call to something that can be slow: an HTTP client, a database pool, a
//! tonic channel; and on the server around handlers, so that work whose caller has given up
//! stops.
//!
//! A [`Timeout`] serves any request type that implements
//! [`RequestExtensions`](crate::RequestExtensions), which is where deadlines and overrides
//! travel: `http::Request` does, a type of your own can in one line, and a type from another
//! crate is wrapped in [`NoExtensions`](crate::NoExtensions).
//!
//! # When not to use it
//!
//! - To bound the time to *stream a response body*: the timeout covers the call until the
//!   response head arrives. Use a body timeout (tower-http's `TimeoutBody`) for the body.
//! - To stop work that has been moved elsewhere: dropping the future is the cancellation, and it
//!   is immediate, but a task the inner service `tokio::spawn`ed keeps running.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade::error::{BoxError, Rejection};
//! use palisade::timeout::TimeoutLayer;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let mut svc = ServiceBuilder::new()
//!     .layer(TimeoutLayer::new(Duration::from_millis(300)))
//!     .service_fn(|req: http::Request<u64>| async move {
//!         tokio::time::sleep(Duration::from_millis(*req.body())).await;
//!         Ok::<_, BoxError>("done")
//!     });
//!
//! let fast = svc.ready().await.unwrap().call(http::Request::new(100)).await;
//! assert_eq!(fast.unwrap(), "done");
//!
//! let slow = svc.ready().await.unwrap().call(http::Request::new(500)).await;
//! let err = slow.unwrap_err();
//! assert!(matches!(
//!     Rejection::find(&*err),
//!     Some(Rejection::TimedOut(t)) if t.after() == Duration::from_millis(300)
//! ));
//! # }
//! ```
//!
//! # Behaviour
//!
//! ```text
//!   call ──(deadline already passed)──────────────────────────────▶ Err(TimedOut { after: 0 })
//!     │                                                              inner service not called
//!     ▼
//!   Running ──(inner ready on first poll)──▶ Ok / inner error      no clock read, no timer
//!     │
//!     │ first poll finds inner Pending: arm the timer
//!     ▼
//!   Armed ──(inner ready first)───────────▶ Ok / inner error
//!     │
//!     └──(timer fires)────────────────────▶ Err(TimedOut { after }), inner future dropped
//! ```
//!
//! - **The limit** of a request is, in order of precedence: a [`TimeoutOverride`] in its
//!   extensions; the layer's [`per_request`](TimeoutLayer::per_request) closure; the layer's
//!   limit. The effective limit is the smaller of that and the time its deadline leaves.
//! - **When the clock starts.** Without a deadline, the limit runs from the first poll that finds
//!   the inner future pending: a future that is ready at once costs no clock read and no timer,
//!   and work done synchronously inside that first poll (which no timeout could interrupt) is
//!   not counted. With a deadline the clock is read once at the call, because the deadline is an
//!   instant.
//! - **Deadline nesting.** A request that already carries a deadline has it tightened in place
//!   when this timeout is sooner, so layers inside (nested timeouts, retries,
//!   [`PropagateDeadline`]) see the effective bound. [`TimeoutLayer::publish_deadline`] also
//!   inserts one into requests that carry none, for an outer "total" timeout.
//! - **Ties.** The inner future is polled before the timer: a response ready at the same
//!   instant as the expiry is returned.
//!
//! # Defaults
//!
//! | setting | default | why |
//! | --- | --- | --- |
//! | [`TimeoutLayer::new`] limit | required | no limit suits every dependency |
//! | [`TimeoutLayer::publish_deadline`] | `false` | publishing costs a clock read and an extension insert per call |
//! | [`ServerTimeoutLayer::status`] | `503` ([`DEFAULT_SERVER_TIMEOUT_STATUS`]) | the server, not the client, was slow; `408` means the client was slow to send |
//! | [`ServerTimeoutLayer::accept`] | no header | trusting callers' deadlines is a choice |
//! | [`ServerTimeoutLayer::on_invalid_header`] | [`OnInvalidHeader::Reject`] (400) | a broken deadline header is a caller bug worth surfacing |
//! | [`ServerTimeoutLayer::publish_deadline`] | `true` | the handler's outgoing calls should inherit the caller's remaining time |
//!
//! # Errors
//!
//! | rejection | when | HTTP status (feature `http`) |
//! | --- | --- | --- |
//! | [`TimedOut`] `{ after, kind: Limit }` | the limit passed first | 504 via [`Rejection::status`](crate::error::Rejection::status); the server-side timeout answers its configured status |
//! | [`TimedOut`] `{ after, kind: Deadline }` | the deadline passed first (`after` is zero if it had passed before the call) | as above |
//! | [`InvalidDeadlineHeader`](crate::http::InvalidDeadlineHeader) | a caller's deadline header is malformed ([`ServerTimeoutLayer`] only) | 400 |
//!
//! [`Timeout`] and [`PropagateDeadline`] return [`BoxError`](crate::error::BoxError): the inner
//! error or a rejection, found with [`Rejection::find`](crate::error::Rejection::find).
//! [`ServerTimeout`] keeps the inner service's error type (`Infallible` in axum) and answers its
//! rejections with `application/problem+json` responses. For a classifier, a `TimedOut` error is
//! a [`Failure`](crate::classify::Outcome::Failure).
//!
//! # Event hooks
//!
//! [`TimeoutLayer::on_timeout`] and [`ServerTimeoutLayer::on_timeout`] are called with the
//! [`TimedOut`] of every request they abandon (its limit or deadline ran out, or the deadline
//! had passed before the call), on that request's task, as the timer fires and before the
//! rejection is returned. A plain callback: keep it short. A request that finishes in time
//! never looks at it; with none set, each call copies one empty pointer.
//!
//! ```
//! use std::time::Duration;
//! use palisade::timeout::{TimeoutKind, TimeoutLayer};
//!
//! let layer = TimeoutLayer::new(Duration::from_secs(2)).on_timeout(|timed_out| {
//!     if timed_out.kind() == TimeoutKind::Deadline {
//!         tracing::debug!(after = ?timed_out.after(), "the caller's deadline ran out");
//!     }
//! });
//! # let _ = layer;
//! ```
//!
//! # Interaction with other layers
//!
//! - **Client stacks** put a per-attempt `Timeout` innermost, just outside the client (and
//!   [`PropagateDeadline`] inside it), and a total timeout with
//!   [`publish_deadline(true)`](TimeoutLayer::publish_deadline) outermost. Every attempt then
//!   gets `min(attempt limit, what the total leaves)`, and the server is told that.
//! - **Servers** put [`ServerTimeoutLayer`] around the handlers; a handler passes the
//!   [`Deadline`](crate::deadline::Deadline) from its request's extensions on to the requests it
//!   makes, whose client stack then honours and propagates it.
//!
//! # Guarantees
//!
//! 1. The inner service is called at most once per request, and never for a request whose
//!    deadline had passed at the call.
//! 2. Without a deadline and without publishing, the path where the inner future is ready on
//!    its first poll reads no clock, creates no timer and allocates nothing.
//! 3. A request never waits longer than its effective limit past the start of its clock, and a
//!    response ready at expiry wins over the timeout.
//! 4. A deadline in the request is only ever tightened, never extended, by a timeout.
//! 5. Malformed deadline headers never panic: they are a 400 or ignored, as configured.

mod error;
pub mod future;
mod layer;
mod policy;
mod service;

#[cfg(feature = "http")]
mod config;
#[cfg(feature = "http")]
pub(crate) mod deadline_header;
#[cfg(feature = "http")]
mod propagate;
#[cfg(feature = "http")]
mod server;

pub use self::error::{TimedOut, TimeoutKind};
pub use self::layer::TimeoutLayer;
pub use self::policy::{FixedTimeout, PerRequestTimeout, TimeoutOverride, TimeoutPolicy};
pub use self::service::Timeout;

#[cfg(feature = "http")]
pub use self::propagate::{PropagateDeadline, PropagateDeadlineLayer};
#[cfg(feature = "http")]
pub use self::server::{
    DEFAULT_SERVER_TIMEOUT_STATUS, OnInvalidHeader, ServerTimeout, ServerTimeoutLayer,
};
