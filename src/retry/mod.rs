//! Retries with jittered backoff, server pushback, budgets and deadlines (feature `retry`).
//!
//! A [`Retry`] sends a failed call again, after a wait, so that a transient failure (a dropped
//! connection, a restarting instance, a brief overload) does not reach the caller. It is built
//! to not make things worse: waits are **capped, then jittered** so clients do not retry in
//! lockstep; a server's `Retry-After` **replaces** the computed wait; a layer inside that
//! refuses a call to protect the dependency (an open circuit, a throttle) is **not retried**,
//! and costs no budget and no attempt; a **budget** shared by every clone stops retries when a
//! dependency fails as a whole; and a request's **deadline** is never overrun by a wait or an
//! attempt that cannot finish in time.
//!
//! # When not to use it
//!
//! - For requests that are not safe to repeat (a POST that creates something) unless they
//!   carry an idempotency key the server honours. With the `http` feature the HTTP policy only
//!   retries idempotent methods and requests with an `Idempotency-Key` by default.
//! - At several layers of one call chain: three layers of three attempts make 27 calls to the
//!   bottom service. Retry at one layer, preferably the outermost client.
//!
//! # Example
//!
//! ```
//! use std::num::NonZeroU32;
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use palisade::RequestExtensions;
//! use palisade::error::BoxError;
//! use palisade::retry::RetryLayer;
//! use tower::{Layer, Service, ServiceExt};
//!
//! /// A request of your own: `Clone` so the default policy can copy it for a retry, and
//! /// `RequestExtensions` (here carrying nothing) so deadlines could travel in it.
//! #[derive(Clone)]
//! struct Job(u32);
//! impl RequestExtensions for Job {}
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! // Fails twice, then answers.
//! let calls = Arc::new(AtomicU32::new(0));
//! let counter = Arc::clone(&calls);
//! let flaky = tower::service_fn(move |Job(n): Job| {
//!     let attempt = counter.fetch_add(1, Ordering::Relaxed);
//!     async move {
//!         if attempt < 2 { Err::<u32, BoxError>("try again".into()) } else { Ok(n * 2) }
//!     }
//! });
//! let mut svc = RetryLayer::new()
//!     .max_attempts(NonZeroU32::new(3).unwrap())
//!     .layer(flaky);
//! assert_eq!(svc.ready().await.unwrap().call(Job(21)).await.unwrap(), 42);
//! assert_eq!(calls.load(Ordering::Relaxed), 3);
//! # }
//! ```
//!
//! ## An HTTP client
//!
//! HTTP requests are retried by [`HttpPolicy`] (safe methods, or a request with an
//! `Idempotency-Key`), whose copies need a body that can be sent again: a [`ReplayBody`].
//! [`BufferBodyLayer`] outside the retry makes one from any body (kept in memory up to its
//! limit), and the client inside is typed on it:
//!
//! ```no_run
//! use http_body_util::Full;
//! use hyper::body::Bytes;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use palisade::retry::{BufferBodyLayer, HttpPolicy, ReplayBody, RetryLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), palisade::error::BoxError> {
//! let http = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Full<Bytes>>>();
//! let client = ServiceBuilder::new()
//!     .layer(BufferBodyLayer::new(64 * 1024))
//!     .layer(RetryLayer::new().policy(HttpPolicy::new()))
//!     .service(http);
//! let request = http::Request::get("http://127.0.0.1:3000/").body(Full::default())?;
//! let response = client.oneshot(request).await?;
//! # let _ = response;
//! # Ok(())
//! # }
//! ```
//!
//! Without the buffer, the retry's `Policy` bound fails with a note naming `ReplayBody`.
//!
//! # Behaviour
//!
//! Each call's future is a state machine (see [`future::ResponseFuture`]): **calling** an
//! attempt; on a result, asking the [`Policy`] whether it is done; if not, **backing off** (a
//! tokio sleep); then **waiting for readiness** of the inner service again; then **calling** the
//! next attempt. The first attempt goes to the instance `poll_ready` readied; later ones to a
//! clone.
//!
//! - **Attempts.** `max_attempts` counts the first attempt (3 means up to 2 retries).
//! - **Backoff**, cap first then jitter, with `n` retries so far (the first retry has `n = 0`)
//!   and `c = min(cap, base·2ⁿ)`: [`Jitter::Full`] `U(0, c)` (the default), [`Jitter::Equal`]
//!   `c/2 + U(0, c/2)`, [`Jitter::Decorrelated`] `U(base, min(cap, 3·previous))` (`previous`
//!   is the last computed wait, the base after a pushback), [`Jitter::None`] `c`. No point
//!   mass at the cap (except with no jitter), no overflow for any retry count.
//! - **Pushback.** A result the policy reports with a wait ([`Decision::RetryAfter`]:
//!   `Retry-After` on a 429 or 503 with the HTTP policy) waits exactly that long instead; if
//!   it is longer than `max_pushback`, the result is returned rather than waited for.
//! - **Rejections fail fast.** An attempt refused by a palisade layer inside that protects the
//!   dependency ([`CircuitOpen`](crate::circuit_breaker::CircuitOpen),
//!   [`Throttled`](crate::throttle::Throttled): [`Decision::Rejected`]) is returned at once.
//!   It withdraws nothing from the budget, counts in it neither way, and uses up no attempt.
//!   Waiting instead is opt-in ([`RetryLayer::wait_for_reopening`]): once per call, only for a
//!   reopening at most the given bound away that the deadline leaves time for, and spread by
//!   jitter so callers rejected together do not return together.
//! - **Budget.** Before each retry the [`RetryBudget`] must allow it, or the last result is
//!   returned (or [`BudgetExhausted`], if configured). Every attempt's outcome feeds it, as the
//!   policy's [`Decision`] says: done is a success, retry a failure, and
//!   [`Decision::Ignore`] (a deadline that ran out, what the classifier ignores) and
//!   [`Decision::Rejected`] nothing.
//! - **Readiness.** After a wait, the inner service must be ready again; if it fails to get
//!   ready, or the deadline or time limit passed while it was not, the last attempt's result
//!   is returned and nothing more is sent.
//! - **Time.** With a [`Deadline`](crate::deadline::Deadline) in the request, or a
//!   `max_elapsed`, no wait starts that would end at or past it; the last result is returned
//!   instead. (A deadline in the request also bounds each attempt through any palisade timeout
//!   inside.)
//! - **Events.** Each retry emits a `tracing` event at `debug` (attempt, wait, whether it is
//!   pushback, and the outcome as [`Policy::describe`] writes it: the error, or the HTTP
//!   status); so does each refused retry, with why (no attempts left, not repeatable,
//!   pushback too long, out of time, budget exhausted).
//!
//! # Choosing a jitter and a budget
//!
//! Keep [`Jitter::Full`] unless you have measured otherwise: it spreads a herd of retrying
//! clients the most and does the least total work. [`Jitter::Decorrelated`] finishes slightly
//! sooner for slightly more work; [`Jitter::None`] is for tests.
//!
//! Keep the token bucket budget (the default) unless traffic is bursty enough that "a
//! percentage of the last 10 s of requests" describes what you want to allow better than
//! "stop retrying once failures outpace successes' refills" (with the defaults, about one
//! failed attempt in eleven); then use [`RetryBudget::percent`], which costs a clock read and
//! a shared write per request.
//!
//! # Defaults
//!
//! | setting | default | source |
//! | --- | --- | --- |
//! | [`max_attempts`](RetryLayer::max_attempts) | [`DEFAULT_MAX_ATTEMPTS`] (3) | AWS SDK standard mode; Google SRE "at most 3 attempts" |
//! | [`backoff`](RetryLayer::backoff) base | [`DEFAULT_BASE`] (50 ms) | tower; AWS SDK retry behaviour 2.1 |
//! | [`backoff`](RetryLayer::backoff) cap | [`DEFAULT_CAP`] (20 s) | AWS SDK `max_backoff` |
//! | jitter | [`Jitter::Full`] | Brooker, "Exponential Backoff And Jitter" |
//! | [`budget`](RetryLayer::budget) | token bucket of [`DEFAULT_MAX_TOKENS`] (10), refill [`DEFAULT_TOKEN_RATIO`] (0.1) | gRPC retry throttling (A6) |
//! | [`RetryBudget::percent`] | TTL [`DEFAULT_TTL`] (10 s), retry share [`DEFAULT_RETRY_SHARE`] (0.2), [`DEFAULT_MIN_PER_SECOND`] (10/s) | Finagle, Linkerd, tower |
//! | [`max_pushback`](RetryLayer::max_pushback) | [`DEFAULT_MAX_PUSHBACK`] (20 s) | the backoff cap |
//! | [`max_elapsed`](RetryLayer::max_elapsed) | none | |
//! | [`wait_for_reopening`](RetryLayer::wait_for_reopening) | off: a protective rejection is returned at once | measured in `examples/chaos.rs`: waiting held outage requests for seconds |
//! | policy | [`RetryFailures`]: what the classifier calls a failure | |
//!
//! # Errors
//!
//! The service's error is a [`BoxError`](crate::error::BoxError): the last attempt's own error
//! by default, so callers see the real failure. With
//! [`fail_when_budget_exhausted`](RetryLayer::fail_when_budget_exhausted), an error the budget
//! refused to retry becomes [`BudgetExhausted`] (503 with the `http` feature), its source the
//! real error.
//!
//! # Event hooks
//!
//! [`on_retry`](RetryLayer::on_retry) is called before every wait for another attempt with a
//! [`RetryEvent`] (the attempt about to be made, the wait, and whether the backoff, a server's
//! pushback or a reopening chose it); [`on_budget_exhausted`](RetryLayer::on_budget_exhausted)
//! with a [`BudgetRefused`] whenever the budget turns a retry down. Both are plain callbacks,
//! called on the task of the call that retries; keep them short. A call whose first attempt
//! succeeds never looks at them; with none set, each call copies one empty pointer.
//!
//! ```
//! use palisade::retry::{RetryLayer, RetryReason};
//!
//! let layer = RetryLayer::new()
//!     .on_retry(|event| {
//!         if event.reason == RetryReason::Pushback {
//!             tracing::info!(attempt = event.attempt, wait = ?event.delay, "the server asked us to wait");
//!         }
//!     })
//!     .on_budget_exhausted(|refused| {
//!         tracing::warn!(attempts = refused.attempts, "retry budget exhausted");
//!     });
//! # let _ = layer;
//! ```
//!
//! # Interaction with other layers
//!
//! - **Outside the circuit breaker or throttle**: each attempt is admitted and counted by the
//!   breaker on its own; a rejection is returned to the caller at once (an HTTP caller then
//!   gets `503` with the time left as `Retry-After`), since the retry layer sending it again
//!   would only be refused again, or, waited for, would come back with every other rejected
//!   caller at the same instant.
//! - **Outside the per-attempt timeout**, **inside the total timeout**: each attempt has its own
//!   limit, and the total timeout's published deadline keeps waits and attempts within the
//!   caller's time.
//!
//! # Guarantees
//!
//! 1. At most `max_attempts` attempts per call; never a retry the policy refused to copy. A
//!    protective rejection is not an attempt, and at most one is waited out per call.
//! 2. No wait is longer than `max_pushback` (pushback) or the backoff's cap (computed).
//! 3. No wait starts that would end at or past the request's deadline or the total limit, and
//!    no retry starts once either has passed.
//! 4. The path where the first attempt succeeds reads no clock (without `max_elapsed` or a
//!    percentage budget), allocates nothing beyond the policy's request copy, and writes no
//!    shared word but the budget's reference count (a token bucket that is full is only read;
//!    the count sits on its own cache lines).
//! 5. The budget's counters change only by atomic read-modify-writes, so no concurrent update
//!    overwrites another (loom models check both budgets). A percentage budget drops deposits
//!    into a saturated slot and refuses retries it cannot record.

mod backoff;
mod budget;
#[cfg(feature = "http")]
mod buffer_body;
mod config;
mod error;
pub mod future;
mod hooks;
#[cfg(feature = "http")]
mod http_policy;
mod layer;
#[cfg(all(test, palisade_loom))]
mod loom_models;
mod policy;
mod service;

pub use self::backoff::{Backoff, DEFAULT_BASE, DEFAULT_CAP, Jitter};
pub use self::budget::{
    DEFAULT_MAX_TOKENS, DEFAULT_MIN_PER_SECOND, DEFAULT_RETRY_SHARE, DEFAULT_TOKEN_RATIO,
    DEFAULT_TTL, PercentBudgetBuilder, RetryBudget, TokenBucketBuilder,
};
#[cfg(feature = "http")]
pub use self::buffer_body::{
    BufferBody, BufferBodyLayer, BufferFuture, DEFAULT_BODY_LIMIT, DEFAULT_UNKNOWN_LENGTH_WAIT,
    RequestBodyError, UnknownLength,
};
pub use self::error::BudgetExhausted;
pub use self::hooks::{BudgetRefused, RetryEvent, RetryReason};
#[cfg(feature = "http")]
pub use self::http_policy::HttpPolicy;
pub use self::layer::{DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_PUSHBACK, RetryLayer};
pub use self::policy::{Decision, Policy, RetryFailures};
pub use self::service::Retry;
/// Re-exported from [`crate::http`] for HTTP retry stacks.
#[cfg(feature = "http")]
pub use crate::http::{IDEMPOTENCY_KEY, ReplayBody};
