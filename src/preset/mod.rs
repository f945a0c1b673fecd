//! Presets (feature `preset`): the recommended client and server stacks, each one layer.
//!
//! A stack of palisade layers is only as good as its order and its settings together: a
//! per-attempt timeout outside the retry, or a retry that waits out an open circuit, undoes
//! what each layer does well on its own. The presets put the stages in the order the crate docs
//! give, with defaults chosen by measuring whole stacks against a degrading upstream
//! (`examples/chaos.rs`; the figures are in `BENCHMARKS.md`). Every stage can be replaced with
//! a layer configured your way, or removed, and the stack has a type you can name
//! ([`HttpClient`], [`HttpServer`]).
//!
//! # The client
//!
//! ```text
//! AddIdempotencyKey ⊃ total Timeout ⊃ BufferBody ⊃ Retry ⊃ Throttle | CircuitBreaker
//!     ⊃ attempt Timeout ⊃ PropagateDeadline ⊃ client
//! ```
//!
//! | stage | default | why |
//! | --- | --- | --- |
//! | [idempotency keys](HttpClientLayer::idempotency_keys) | off | a key makes a POST retryable; only for a server that honours keys |
//! | [total timeout](HttpClientLayer::total_timeout) | [`DEFAULT_TOTAL_TIMEOUT`] (10 s), published as the deadline | the caller's time bounds attempts and waits alike |
//! | [body buffer](HttpClientLayer::body_limit) | 64 KiB | bodies the retry can send again |
//! | [retry](HttpClientLayer::retry) | 3 attempts, full jitter from 50 ms, budget [`DEFAULT_RETRY_SHARE`] (30 %) of requests over 10 s + 10/s; fails fast on rejections | measured: retries in a partial failure succeed as often as first attempts, and the throttle, not the budget, protects a dependency that is down |
//! | [guard](HttpClientLayer::throttle) | [`ThrottleLayer`](crate::throttle::ThrottleLayer) defaults, 5xx and 429 failures | sheds only the excess of a partial failure; a failure-rate breaker sheds all of it |
//! | [attempt timeout](HttpClientLayer::attempt_timeout) | [`DEFAULT_ATTEMPT_TIMEOUT`] (2 s) | a hung attempt is a failure the guard counts |
//! | [propagation](HttpClientLayer::propagate) | `grpc-timeout` | the server learns how long the caller waits |
//!
//! The timeouts are the settings to change first: set the attempt timeout a little above your
//! dependency's slowest healthy answer, and the total to what your caller can wait.
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use palisade::error::BoxError;
//! use palisade::http::ReplayBody;
//! use palisade::preset::{HttpClient, HttpClientLayer};
//! use tower::{Layer, Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! // Stands in for a hyper-util client of `ReplayBody<String>` requests.
//! let upstream = tower::service_fn(|req: http::Request<ReplayBody<String>>| async move {
//!     assert!(req.headers().contains_key("grpc-timeout"));
//!     Ok::<_, BoxError>(http::Response::new(Bytes::from_static(b"ok")))
//! });
//! let preset = HttpClientLayer::new()
//!     .total_timeout(Duration::from_secs(1))
//!     .attempt_timeout(Duration::from_millis(200));
//! let mut client: HttpClient<_> = preset.layer(upstream);
//! let response = client
//!     .ready()
//!     .await
//!     .unwrap()
//!     .call(http::Request::new("hello".to_owned()))
//!     .await
//!     .unwrap();
//! assert_eq!(response.status(), 200);
//! # }
//! ```
//!
//! # The server
//!
//! ```text
//! ServerTimeout ⊃ Idempotency ⊃ router
//! ```
//!
//! | stage | default |
//! | --- | --- |
//! | [server timeout](HttpServerLayer::timeout) | [`DEFAULT_SERVER_TIMEOUT`] (10 s), shortened by the caller's `grpc-timeout`, published to handlers; 503 on expiry |
//! | [idempotency](HttpServerLayer::idempotency) | POST and PATCH with an `Idempotency-Key` run once; in-memory records |
//!
//! ```
//! use axum::{Router, routing::post};
//! use palisade::preset::HttpServerLayer;
//!
//! let app: Router = Router::new()
//!     .route("/orders", post(|| async { (http::StatusCode::CREATED, "order placed") }))
//!     .layer(HttpServerLayer::new());
//! # let _ = app;
//! ```
//!
//! In an axum router the last layer added is the outermost: add authentication after the
//! preset, so it runs first and the idempotency records are scoped by the caller it finds.
//!
//! # Errors
//!
//! The client's error is a [`BoxError`](crate::error::BoxError): the last attempt's error, or a
//! palisade rejection ([`Throttled`](crate::throttle::Throttled),
//! [`CircuitOpen`](crate::circuit_breaker::CircuitOpen),
//! [`TimedOut`](crate::timeout::TimedOut)), found with
//! [`Rejection::find`](crate::error::Rejection::find) and answered, if you like, by a
//! [`FallbackLayer`](crate::fallback::FallbackLayer) around the preset. The server keeps the
//! router's error type.

mod client;
mod server;

pub use self::client::{
    DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_BUDGET_TTL, DEFAULT_RETRY_SHARE, DEFAULT_TOTAL_TIMEOUT, Guard,
    GuardFuture, HttpClient, HttpClientLayer,
};
pub use self::server::{DEFAULT_SERVER_TIMEOUT, HttpServer, HttpServerLayer};
