//! Composable [`tower`](https://docs.rs/tower) middleware that keeps services standing when what
//! they depend on fails.
//!
//! palisade's layers stack over any `tower::Service`: around an HTTP client (hyper-util's
//! client, a tonic channel, anything tower-shaped) and inside an axum `Router`. Each layer keeps
//! its decisions cheap: the happy path reads no clock it does not need, takes no lock and
//! allocates nothing.
//!
//! | layer | what it stops | module |
//! | --- | --- | --- |
//! | timeout with deadlines | a slow dependency tying up every caller; work nobody waits for | [`timeout`] |
//! | circuit breaker | hammering a dependency that is down; callers queueing behind it | [`circuit_breaker`] |
//! | retry with jittered backoff and budgets | transient failures reaching callers; retry storms | [`retry`] |
//! | adaptive throttling | a partly failing dependency drowned by calls it cannot take, without cutting off the ones it can | [`throttle`] |
//! | idempotency keys (IETF draft) | a client's retry writing the same order twice | [`idempotency`] |
//! | fallback answers | an error where a cached or default answer would do | [`fallback`] |
//! | stale-while-revalidate cache with single flight, generic and HTTP (RFC 9111, RFC 5861, RFC 9211) | a stampede on a hot key that expires; latency spikes on refresh; an origin outage (stale-if-error) | [`cache`] |
//!
//! The [`preset`] module
//! stacks them the recommended way, in one layer for a client and one for an axum server, with
//! defaults measured against a degrading upstream (`examples/chaos.rs`).
//!
//! # The presets
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::post};
//! use palisade::error::BoxError;
//! use palisade::http::ReplayBody;
//! use palisade::preset::{HttpClientLayer, HttpServerLayer};
//! use tower::{Layer, Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! // Around an axum router: handlers get at most 10 s (less if the caller says so), and a
//! // POST with an `Idempotency-Key` runs once.
//! let app: Router = Router::new()
//!     .route("/orders", post(|| async { "placed" }))
//!     .layer(HttpServerLayer::new());
//!
//! // Around an HTTP client (a hyper-util `Client` of `ReplayBody<B>` requests; here the router
//! // itself stands in): a 2 s total published as the deadline, retries with a budget,
//! // adaptive throttling, 300 ms attempts, the deadline sent in `grpc-timeout`.
//! let mut client = HttpClientLayer::new()
//!     .total_timeout(Duration::from_secs(2))
//!     .attempt_timeout(Duration::from_millis(300))
//!     .layer(tower::service_fn(move |req: http::Request<ReplayBody<String>>| {
//!         let app = app.clone();
//!         async move {
//!             let req = req.map(|body| axum::body::Body::new(body));
//!             Ok::<_, BoxError>(app.oneshot(req).await?)
//!         }
//!     }));
//!
//! let order = http::Request::post("/orders")
//!     .header("idempotency-key", "\"order-1\"")
//!     .body("one espresso".to_owned())
//!     .unwrap();
//! let response = client.ready().await.unwrap().call(order).await.unwrap();
//! assert_eq!(response.status(), 200);
//! # }
//! ```
//!
//! # A client stack
//!
//! Every attempt gets at most 2 s and never more than the request's own deadline; the server is
//! told how long it has in a `grpc-timeout` header. Here a `service_fn` stands in for the HTTP
//! client (a `hyper_util::client::legacy::Client` slots in the same way, see
//! `examples/demo.rs`).
//!
//! ```
//! use std::time::Duration;
//! use palisade::deadline::Deadline;
//! use palisade::error::{BoxError, Rejection};
//! use palisade::http::DeadlineHeader;
//! use palisade::timeout::{PropagateDeadlineLayer, TimeoutLayer};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let client = tower::service_fn(|req: http::Request<()>| async move {
//!     // What the server would see:
//!     let budget = req.headers()["grpc-timeout"].to_str().unwrap().to_owned();
//!     tokio::time::sleep(Duration::from_secs(1)).await;
//!     Ok::<_, BoxError>(budget)
//! });
//! let mut client = ServiceBuilder::new()
//!     .layer(TimeoutLayer::new(Duration::from_secs(2)).publish_deadline(true))
//!     .layer(PropagateDeadlineLayer::new(DeadlineHeader::grpc()))
//!     .service(client);
//!
//! // No deadline: the attempt limit is published and sent.
//! let sent = client.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
//! assert_eq!(sent, "2000000u");
//!
//! // A caller's deadline 500 ms away wins over the 2 s limit.
//! let mut req = http::Request::new(());
//! req.extensions_mut().insert(Deadline::after(Duration::from_millis(500)));
//! let err = client.ready().await.unwrap().call(req).await.unwrap_err();
//! assert!(matches!(Rejection::find(&*err), Some(Rejection::TimedOut(t)) if t.is_deadline()));
//! # }
//! ```
//!
//! # An axum server
//!
//! Handlers get at most 5 s, less if the caller says it has less; a handler that overruns is
//! answered with `503` and an `application/problem+json` body, and the router keeps its
//! `Infallible` error type.
//!
//! ```
//! use std::time::Duration;
//! use axum::{Extension, Router, routing::get};
//! use palisade::deadline::Deadline;
//! use palisade::http::DeadlineHeader;
//! use palisade::timeout::ServerTimeoutLayer;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! async fn handler(Extension(deadline): Extension<Deadline>) -> String {
//!     // Put `deadline` into the extensions of the requests this handler makes.
//!     format!("{:?} left", deadline.remaining())
//! }
//!
//! let app = Router::new()
//!     .route("/", get(handler))
//!     .layer(ServerTimeoutLayer::new(Duration::from_secs(5)).accept(DeadlineHeader::grpc()));
//!
//! let req = http::Request::get("/")
//!     .header("grpc-timeout", "250m")
//!     .body(axum::body::Body::empty())
//!     .unwrap();
//! let response = app.oneshot(req).await.unwrap();
//! assert_eq!(response.status(), 200);
//! let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
//! assert_eq!(body, "250ms left");
//! # }
//! ```
//!
//! # Ordering layers
//!
//! A tower stack is an onion: the first layer added is the outermost and sees the request first.
//!
//! ```text
//! client:  Fallback ⊃ AddIdempotencyKey ⊃ total Timeout (publish_deadline) ⊃ BufferBody ⊃ Retry
//!            ⊃ Throttle or CircuitBreaker ⊃ attempt Timeout ⊃ PropagateDeadline ⊃ HTTP client
//! server:  axum Router: ServerTimeout ⊃ auth ⊃ Idempotency ⊃ … ⊃ handler
//! ```
//!
//! [`preset::HttpClientLayer`] builds the client line (all but the fallback) and
//! [`preset::HttpServerLayer`] the server's timeout and idempotency.
//!
//! - The **attempt timeout** sits innermost, next to the client, so each attempt is bounded on
//!   its own; the **total timeout** sits outermost and publishes its expiry as the request's
//!   [`Deadline`](deadline::Deadline), so every layer inside works to the same end.
//! - **Deadline propagation** sits inside the attempt timeout, so the header carries the tighter
//!   of the attempt limit and the total deadline at the moment the request leaves.
//! - The **throttle or circuit breaker** sits outside the attempt timeout, so a timed-out
//!   attempt counts as a failure, and inside the retry, so each attempt is admitted and counted
//!   on its own. The retry returns their rejections at once, spending no budget and no attempt:
//!   sending again would be refused again. Choose the throttle for a dependency that fails in
//!   part (it sheds only what fails beyond `1/K`), the breaker when any failure rate past a
//!   threshold means leave it alone (see [`throttle`]).
//! - The **retry** sits inside the total timeout, whose published deadline stops it from
//!   starting a wait or an attempt that cannot finish in time. For HTTP, its
//!   [`BufferBodyLayer`](retry::BufferBodyLayer) goes just outside it.
//! - Classifiers ignore palisade's own deadline rejections and calls never sent, so a
//!   caller's short deadline or another layer's refusal never counts against the dependency
//!   (see [`classify`]).
//! - A **fallback** goes outermost: it answers only what every attempt and wait left failed.
//! - On the server, the **server timeout** goes outside anything that can wait, so the caller's
//!   deadline bounds all of it.
//! - The **idempotency layer** goes behind authentication (the caller's identity scopes its
//!   records) and in front of the handlers; on the client, the **key layer** goes outside the
//!   retry, so every attempt of a request carries the same key.
//!
//! # Features
//!
//! | feature | default | enables |
//! | --- | --- | --- |
//! | `timeout` | yes | [`timeout`]: [`Timeout`](timeout::Timeout), deadlines |
//! | `circuit-breaker` | yes | [`circuit_breaker`]: [`CircuitBreaker`](circuit_breaker::CircuitBreaker), keyed breakers (adds `scc`) |
//! | `retry` | yes | [`retry`]: [`Retry`](retry::Retry), backoff, budgets; with `http`, the HTTP policy and replayable bodies |
//! | `throttle` | yes | [`throttle`]: [`Throttle`](throttle::Throttle), client-side adaptive throttling |
//! | `fallback` | yes | [`fallback`]: [`FallbackLayer`](fallback::FallbackLayer), marked answers for refused or failed HTTP calls; enables `http` |
//! | `preset` | yes | [`preset`]: [`HttpClientLayer`](preset::HttpClientLayer) and [`HttpServerLayer`](preset::HttpServerLayer); enables the layers they stack |
//! | `http` | yes | [`http`]: deadline headers, [`StatusClassifier`](classify::StatusClassifier), rejections as problem+json responses; with `timeout`, the server-side timeout and deadline propagation |
//! | `idempotency` | yes | [`idempotency`]: [`IdempotencyLayer`](idempotency::IdempotencyLayer), [`AddIdempotencyKeyLayer`](idempotency::AddIdempotencyKeyLayer), the in-memory store; enables `http` (adds `sha2`, `scc`, `rand`) |
//! | `cache` | yes | [`cache`]: [`CacheLayer`](cache::CacheLayer), the stale-while-revalidate cache (adds `quick_cache`); with `http`, [`HttpCacheLayer`](cache::HttpCacheLayer), its HTTP mode |
//! | `redis` | no | [`redis`]: [`RedisIdempotencyStore`](redis::RedisIdempotencyStore) and [`RedisCacheStore`](redis::RedisCacheStore), idempotency records and a remote cache tier shared by a fleet; enables `idempotency` and `cache` (adds `redis`; needs Rust 1.88) |
//! | `axum` | no | `IntoResponse` for [`Problem`](http::Problem) and every rejection, and [`handle_error`](http::handle_error) for axum's `HandleErrorLayer`; enables `http` (adds `axum-core`) |
//! | `tower-http` | no | [`FromTowerHttp`](classify::FromTowerHttp): tower-http's response classifiers (`ServerErrorsAsFailures`, `GrpcErrorsAsFailures`, …) as palisade's; enables `http` (adds `tower-http` without features) |
//! | `serde` | no | [`config`]: every layer's settings from TOML, JSON or any format serde reads, with human durations, validated by the builders (adds `serde`) |
//! | `metrics` | no | [`metrics`]: counters, gauges and histograms of every layer through the `metrics` facade, labelled by layer and name; nothing at all when off (adds `metrics`) |
//! | `full` | no | every feature |
//!
//! Always present: [`clock`], [`classify`], [`deadline`], [`error`], [`Ratio`], [`Factor`] and
//! the [`RequestExtensions`] trait (with [`NoExtensions`] for request types from other crates).
//! Without `http` the crate needs only tokio (`time`), tower's service traits and the `http`
//! crate's extension map.
//!
//! # Errors at a glance
//!
//! A client-side layer adds its failure modes to the error type; a server-side layer answers
//! the request itself and keeps the router's error type. Find any rejection in an error chain
//! with [`Rejection::find`](error::Rejection::find); with `http`, each maps to a status and a
//! problem+json body ([`Rejection::problem`](error::Rejection::problem)).
//!
//! | layer | `Service::Error` | rejection | HTTP status |
//! | --- | --- | --- | --- |
//! | [`Timeout`](timeout::Timeout), [`PropagateDeadline`](timeout::PropagateDeadline) | [`BoxError`](error::BoxError) | [`TimedOut`](timeout::TimedOut) | 504 |
//! | [`ServerTimeout`](timeout::ServerTimeout) | the inner service's | answers itself: [`TimedOut`](timeout::TimedOut), [`InvalidDeadlineHeader`](http::InvalidDeadlineHeader) | 503 or 408 (configurable); 400 |
//! | [`CircuitBreaker`](circuit_breaker::CircuitBreaker), keyed | [`CircuitBreakerError`](circuit_breaker::CircuitBreakerError) | [`CircuitOpen`](circuit_breaker::CircuitOpen) | 503, `Retry-After` when known |
//! | [`Retry`](retry::Retry) | [`BoxError`](error::BoxError) | [`BudgetExhausted`](retry::BudgetExhausted) (opt-in; else the last error) | 503 |
//! | [`BufferBody`](retry::BufferBody) | [`BoxError`](error::BoxError) | none: a body that fails while read is [`RequestBodyError`](retry::RequestBodyError), the caller's own failure, ignored by the classifiers | — |
//! | [`Throttle`](throttle::Throttle) | [`ThrottleError`](throttle::ThrottleError) | [`Throttled`](throttle::Throttled) | 503, `Retry-After` at a probe slot |
//! | [`Idempotency`](idempotency::Idempotency) | the inner service's | answers itself: [`IdempotencyRejection`](idempotency::IdempotencyRejection), a response (in its extensions), not an error | 400, 409, 413, 422, 429, 503 |
//! | [`Cache`](cache::Cache) | [`BoxError`](error::BoxError) | [`LeaderFailed`](cache::LeaderFailed) (a waiter behind a failed fetch) | 502 |
//! | [`HttpCache`](cache::HttpCache) | the inner service's | answers itself: a problem response for a waiter behind a failed fetch (the origin's status, else 502), for `only-if-cached` on a miss (504), for an unusable `304` (502) | as listed |
//! | [`Fallback`](fallback::Fallback), the presets | [`BoxError`](error::BoxError) | what the layers inside return | as above |
//!
//! # Observability
//!
//! **Event hooks**: plain callbacks set on a layer's builder, called on the task where the
//! event happens, with no lock held, never spawned or buffered (so they cannot lag). Unset, a
//! hook costs an empty pointer; each setter's docs say what a set one costs. Each is chained
//! when set twice.
//!
//! | layer | hook | told | when |
//! | --- | --- | --- | --- |
//! | breaker | [`on_transition`](circuit_breaker::CircuitBreakerBuilder::on_transition) | [`Transition`](circuit_breaker::Transition) (from, to, generation, reason, instant) | every state change |
//! | breaker | [`on_rejected`](circuit_breaker::CircuitBreakerBuilder::on_rejected) | [`CircuitOpen`](circuit_breaker::CircuitOpen) | every rejection |
//! | retry | [`on_retry`](retry::RetryLayer::on_retry) | [`RetryEvent`](retry::RetryEvent) (attempt, wait, backoff / pushback / reopening) | before every wait for another attempt |
//! | retry | [`on_budget_exhausted`](retry::RetryLayer::on_budget_exhausted) | [`BudgetRefused`](retry::BudgetRefused) | every retry the budget turns down |
//! | timeout | [`on_timeout`](timeout::TimeoutLayer::on_timeout) (and the [server timeout's](timeout::ServerTimeoutLayer::on_timeout)) | [`TimedOut`](timeout::TimedOut) | every request abandoned |
//! | throttle | [`on_rejected`](throttle::ThrottleBuilder::on_rejected) | [`Throttled`](throttle::Throttled) | every shed call |
//! | cache | [`on_event`](cache::CacheLayer::on_event) (HTTP mode: [`on_event`](cache::HttpCacheBuilder::on_event), with the target) | the key and a [`CacheEvent`](cache::CacheEvent) | misses, waits, remote hits, refreshes, failed refreshes, stale-if-error |
//!
//! **Metrics** (feature `metrics`): every layer records calls by outcome, rejections,
//! in-flight calls, durations and its own events (breaker state, retries, timeouts,
//! idempotency outcomes, cache results) into the application's `metrics` recorder, labelled by
//! layer and `name`; the names and labels are in `palisade::metrics`, and
//! `examples/prometheus.rs` serves them to Prometheus.
//!
//! **Snapshots**: the handles' `metrics()` ([breaker](circuit_breaker::CircuitBreakerHandle::metrics),
//! [throttle](throttle::ThrottleHandle::metrics), [cache](cache::CacheHandle::metrics), and
//! with `redis` the [connection's](redis::RedisConnection::metrics) per operation), the
//! breaker's [`subscribe`](circuit_breaker::CircuitBreakerHandle::subscribe) stream, and the
//! retry budget's [`allows_retry`](retry::RetryBudget::allows_retry).
//!
//! **Tracing**: every line's target is its module under `palisade::<layer>` (so
//! `RUST_LOG=palisade::retry=debug` shows one layer), and the levels mean one thing each:
//!
//! | level | what | examples |
//! | --- | --- | --- |
//! | `trace` | one line per call on a path that may be hot | a rejection, a timeout firing |
//! | `debug` | a decision | retrying (attempt, delay, outcome), not retrying and why, a refresh failing, a remote tier bypassed |
//! | `info` | a state change | a breaker's or a throttle's transition (rate-limited), a Redis script reloaded |
//! | `warn` | trouble with a store or a misconfiguration | an idempotency store failing or full, Redis out of memory, an unusable `304`, an idempotency layer without an identity |
//! | `error` | a state that should be impossible | a response future polled in a state it cannot be in |
//!
//! Fields are named alike across layers: the layer's name under its kind (`breaker`,
//! `throttle`), `error` for an error's text, `key` for an idempotency key, `attempt` /
//! `attempts`, `delay`. The demo installs a subscriber that honours `RUST_LOG`
//! (`RUST_LOG=palisade=debug cargo run --example demo`).
//!
//! # Testing your stack
//!
//! Every palisade decision reads tokio's clock, and every wait is a tokio timer, so
//! `#[tokio::test(start_paused = true)]` with `tokio::time::advance` drives a stack through
//! time exactly and instantly. [`clock::ManualClock`] moves time by hand for testing state
//! machines without a runtime.
//!
//! # Rust version and targets
//!
//! The minimum supported Rust version is 1.85 (edition 2024; tokio declares the same); the
//! `redis` feature needs 1.88 (redis-rs 1.8's floor). Only the
//! newest stable toolchain is tested. State machines use 64-bit atomics, so targets without
//! `AtomicU64` are not supported.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

#[cfg(not(target_has_atomic = "64"))]
compile_error!("palisade needs 64-bit atomics (`AtomicU64`), which this target lacks");

pub mod builder;
#[cfg(feature = "cache")]
pub mod cache;
#[cfg(feature = "circuit-breaker")]
pub mod circuit_breaker;
pub mod classify;
pub mod clock;
#[cfg(any(feature = "circuit-breaker", feature = "throttle"))]
mod count_window;
pub mod deadline;
pub mod error;
mod extensions;
#[cfg(feature = "fallback")]
pub mod fallback;
#[cfg(any(
    feature = "circuit-breaker",
    feature = "retry",
    feature = "throttle",
    feature = "timeout"
))]
mod hook;
// Always compiled: its types are empty without the `metrics` feature.
#[cfg(feature = "serde")]
pub mod config;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "idempotency")]
pub mod idempotency;
mod instruments;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "preset")]
pub mod preset;
#[cfg(any(
    feature = "circuit-breaker",
    feature = "retry",
    feature = "throttle",
    feature = "cache"
))]
mod random;
mod ratio;
#[cfg(feature = "redis")]
pub mod redis;
mod rejection;
#[cfg(feature = "retry")]
pub mod retry;
#[cfg(any(feature = "circuit-breaker", feature = "retry"))]
mod ring;
mod sync;
#[cfg(feature = "throttle")]
pub mod throttle;
#[cfg(feature = "timeout")]
pub mod timeout;

pub use self::builder::ServiceBuilderExt;
pub use self::extensions::{NoExtensions, RequestExtensions};
pub use self::ratio::{Factor, Ratio};

/// `get_ref`, `get_mut` and `into_inner` for a service struct whose inner service is the field
/// `inner` of type `S`.
#[cfg_attr(
    not(any(
        feature = "timeout",
        feature = "circuit-breaker",
        feature = "retry",
        feature = "throttle"
    )),
    allow(unused_macros)
)]
macro_rules! inner_accessors {
    () => {
        /// The inner service.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }

        /// The inner service, mutably.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }

        /// Consumes this layer's service and returns the inner service.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
}
#[cfg_attr(
    not(any(
        feature = "timeout",
        feature = "circuit-breaker",
        feature = "retry",
        feature = "throttle"
    )),
    allow(unused_imports)
)]
pub(crate) use inner_accessors;

/// The README's code blocks, compiled as doctests so they cannot rot. Its fleet example needs
/// the `redis` feature, so they compile with it (`cargo test --all-features`, as CI runs).
#[cfg(all(doctest, feature = "redis"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
