//! Fallback answers (feature `fallback`): answer a refused or failed HTTP call with a function
//! of yours instead of an error.
//!
//! A [`Fallback`] wraps an HTTP client stack. When a palisade layer inside refuses or abandons a
//! call (an open circuit, a throttle, a timeout, an exhausted retry budget) it calls your
//! answer function with the [`Failure`], and returns the response the function makes: a cached
//! copy, a default, a degraded page. Optionally ([`on_failures`](FallbackLayer::on_failures))
//! it also answers errors and failure statuses. Every answer is **marked**: a
//! [`FallbackAnswer`] in the response's extensions and a [`FALLBACK_HEADER`]
//! (`palisade-fallback: circuit-open`, …), so callers and logs can tell an answer from the real
//! thing; and **counted** ([`FallbackLayer::answered`]).
//!
//! # When not to use it
//!
//! - When the caller must know the call failed (a write, a payment): a fallback turns a
//!   failure into something that looks like success. Return the rejection instead; with the
//!   `http` feature it is already a meaningful `503` with `Retry-After`.
//! - To retry: the answer is final. Put a [`Retry`](crate::retry) inside the fallback.
//!
//! # Example
//!
//! ```
//! use std::num::NonZeroU32;
//! use bytes::Bytes;
//! use palisade::circuit_breaker::CircuitBreakerLayer;
//! use palisade::classify::StatusClassifier;
//! use palisade::error::BoxError;
//! use palisade::fallback::{FALLBACK_HEADER, Failure, FallbackLayer};
//! use palisade::http::ResponseBody;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! // Recommendations are nice to have: when the service is down, show an empty list.
//! let fallback = FallbackLayer::sync(|_failure: Failure<String>| {
//!     http::Response::new(ResponseBody::full(Bytes::from_static(b"[]")))
//! });
//! let breaker = CircuitBreakerLayer::builder()
//!     .classifier(StatusClassifier::new())
//!     .consecutive_failures(NonZeroU32::MIN)
//!     .build()
//!     .unwrap();
//! let mut client = ServiceBuilder::new()
//!     .layer(fallback.clone())
//!     .layer(breaker)
//!     .service_fn(|_: http::Request<()>| async {
//!         let down = http::Response::builder().status(503).body(String::new()).unwrap();
//!         Ok::<_, BoxError>(down)
//!     });
//!
//! // The first call reaches the service: its 503 is passed on (and opens the breaker).
//! let first = client.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
//! assert_eq!(first.status(), 503);
//! // The next one is refused by the open circuit and answered by the fallback, marked.
//! let second = client.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
//! assert_eq!(second.status(), 200);
//! assert_eq!(second.headers()[FALLBACK_HEADER], "circuit-open");
//! assert_eq!(fallback.answered(), 1);
//! # }
//! ```
//!
//! # Behaviour
//!
//! - **What is answered.** By default, an error carrying a palisade
//!   [`Rejection`](crate::error::Rejection) anywhere in its source chain. With
//!   [`on_failures`](FallbackLayer::on_failures), also every other error and every response
//!   whose status the given classifier calls a failure. Anything else passes through.
//! - **The answer function** gets the [`Failure`]: the [`FallbackReason`], the error or the
//!   failure response, and, with [`keep_request`](FallbackLayer::keep_request), the request's
//!   method, URI, version and headers. It is async ([`FallbackLayer::new`]) or plain
//!   ([`FallbackLayer::sync`]); an error it returns is the call's error.
//! - **Marking.** The answer gets a [`FallbackAnswer`] extension and the [`FALLBACK_HEADER`]
//!   with the reason (`circuit-open`, `throttled`, `timed-out`, `budget-exhausted`,
//!   `rejected`, `error`, `status-503`, …), replacing any the answer set itself.
//! - **Cost.** A call that needs no answer costs one reference count and a check of its
//!   result; nothing is allocated unless the request is kept.
//!
//! # Defaults
//!
//! | setting | default |
//! | --- | --- |
//! | what is answered | palisade's rejections |
//! | [`on_failures`](FallbackLayer::on_failures) | off |
//! | [`keep_request`](FallbackLayer::keep_request) | off (keeping clones the request's parts per call) |
//!
//! # Errors
//!
//! The service's error is a [`BoxError`](crate::error::BoxError): the inner error when no
//! answer applies, or the answer function's error. Its response body is
//! [`ResponseBody`](crate::http::ResponseBody), so an answer can be built from bytes whatever
//! the inner service's body type.
//!
//! # Interaction with other layers
//!
//! - **Outermost** in a client stack, outside the retry: every attempt and every wait has
//!   happened by the time the fallback sees the result, and it answers only what is left.
//! - Around the [client preset](crate::preset::HttpClientLayer), which returns rejections as
//!   errors.

mod failure;
pub mod future;
mod layer;
mod service;

pub use self::failure::{
    Answer, FALLBACK_HEADER, Failure, FailureCause, FallbackAnswer, FallbackReason, RequestParts,
    SyncAnswer,
};
pub use self::layer::FallbackLayer;
pub use self::service::Fallback;
