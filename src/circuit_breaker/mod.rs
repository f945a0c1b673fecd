//! Circuit breakers (feature `circuit-breaker`).
//!
//! A [`CircuitBreaker`] watches the outcomes of the calls it passes to a dependency. When too
//! many fail (or are too slow), it *opens*: for a while it rejects calls at once with
//! [`CircuitOpen`] instead of calling the dependency, which gives a struggling service room to
//! recover and keeps callers from queueing behind timeouts. Then it lets a few *probe* calls
//! through; if they succeed it closes again, if not it opens again (for longer, if configured).
//!
//! Use it around calls to a dependency that can fail as a whole: an upstream HTTP service, a
//! database, a partner API; one breaker per dependency (or per host, route or tenant).
//!
//! # When not to use it
//!
//! - For failures that are the caller's own fault (4xx): classify them as
//!   [`Success`](crate::classify::Outcome::Success) or
//!   [`Ignore`](crate::classify::Outcome::Ignore), or the breaker will cut off a healthy
//!   service because of bad requests.
//! - To limit load (a concurrency cap or rate limit is the tool): a breaker reacts to failures,
//!   not to volume.
//! - For a dependency that fails in part (a brownout, a bad shard): a failure-rate breaker at
//!   50 % opens in a 50 % brownout and sheds every call, the half that would succeed too. The
//!   [throttle](crate::throttle) sheds only what fails beyond what the dependency answers;
//!   measured end to end (`examples/chaos.rs`), the breaker stack served 1–4 % of a 50 %
//!   brownout, the throttle stack 70 %. Keep the breaker where any failure rate past a
//!   threshold means the dependency must be left alone, or where you need to isolate it by
//!   hand.
//! - Around a dependency that fails per request, not as a whole (one bad record): retries or
//!   error handling fit better.
//!
//! # Example
//!
//! ```
//! use std::num::NonZeroU32;
//! use std::time::Duration;
//! use palisade::circuit_breaker::{CircuitBreakerLayer, State};
//! use palisade::error::{BoxError, Rejection};
//! use tower::{Layer, Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let layer = CircuitBreakerLayer::builder()
//!     .consecutive_failures(NonZeroU32::new(3).unwrap())
//!     .open_for(Duration::from_secs(10))
//!     .build()
//!     .unwrap();
//! let handle = layer.handle();
//! let mut svc = layer.layer(tower::service_fn(|fail: bool| async move {
//!     if fail { Err::<(), BoxError>("upstream down".into()) } else { Ok(()) }
//! }));
//!
//! for _ in 0..3 {
//!     let _ = svc.ready().await.unwrap().call(true).await;
//! }
//! assert_eq!(handle.state(), State::Open);
//!
//! // Rejected without calling the service, with the time left (plus 1 ms, so a caller that
//! // waits exactly that long finds the breaker already half-open).
//! let err = svc.ready().await.unwrap().call(false).await.unwrap_err();
//! let Some(Rejection::CircuitOpen(open)) = Rejection::find(&err) else { panic!() };
//! assert_eq!(open.retry_after(), Some(Duration::from_millis(10_001)));
//! # }
//! ```
//!
//! # Behaviour
//!
//! ```text
//!            failure rate or slow-call rate >= threshold (after minimum_calls),
//!            or N consecutive failures
//!   Closed ─────────────────────────────────────────────────────────────▶ Open
//!     ▲                                                                      │ open duration
//!     │ all `half_open_probes` probes succeed                                ▼ passes
//!     └──────────────────────────────────────────────────────────────── HalfOpen
//!                              a probe fails or is slow ──▶ Open (next duration)
//! ```
//!
//! - **Trip policies.** A **count window** (the default) holds the last N outcomes in a ring:
//!   after any number of successes, the last N alone decide. A **time window** holds the calls
//!   of the last T in B buckets that expire whole. Either opens when, once it holds
//!   `minimum_calls`, the failure rate reaches its threshold (`>=`), or the slow-call rate does
//!   (calls longer than the slow threshold, successes included). **Consecutive failures** opens
//!   after N failures in a row, with no window: the cheapest policy.
//! - **Evaluation** follows every outcome that can open the breaker: every failure and slow
//!   call, and a success that brings a window holding failures to `minimum_calls`. A success
//!   never raises a rate, so nothing else can trip it.
//! - **Open.** Calls are rejected with [`CircuitOpen`], whose
//!   [`retry_after`](CircuitOpen::retry_after) is the time left until it half-opens (see
//!   [`reopens_at`](CircuitOpen::reopens_at) for the extra millisecond). The open duration is
//!   fixed, or doubles with each consecutive re-open up to a cap
//!   ([`open_backoff`](CircuitBreakerBuilder::open_backoff)), optionally spread by
//!   [`open_jitter`](CircuitBreakerBuilder::open_jitter) so breakers that opened together do
//!   not probe together. A tokio timer moves the breaker on when the time is up, so an open
//!   breaker rejects without reading the clock, except on one rejection in 64 per thread, so
//!   that a timer whose runtime is no longer driven (a current-thread runtime whose `block_on`
//!   returned) cannot keep callers on other runtimes out for ever; with no runtime (or a
//!   [`ManualClock`](crate::clock::ManualClock)), calls compare the clock themselves.
//! - **Half-open.** Exactly `half_open_probes` calls are admitted; the rest are rejected. All
//!   must succeed to close (the window starts empty); any failure or slow probe opens again
//!   with the next duration. A probe whose future is dropped, or whose outcome is ignored, gives
//!   its slot back. Probes still in flight after the maximum wait count as stuck: the next call
//!   re-arms a fresh set of probes or re-opens, as configured, so a hung probe cannot wedge the
//!   breaker.
//! - **Outcomes** go through the [`Classify`](crate::classify::Classify) classifier:
//!   [`Ignore`](crate::classify::Outcome::Ignore)d ones count nowhere. An outcome of a call
//!   admitted before the breaker last changed state (an older *generation*) is ignored. A call
//!   whose future is dropped before it finishes counts nowhere.
//! - **Server-directed opening** (opt-in,
//!   [`server_directed`](CircuitBreakerBuilder::server_directed)): a `503` or `429` with
//!   `Retry-After` (through [`StatusClassifier`](crate::classify::StatusClassifier)) opens the
//!   breaker until then, capped. A pushback under [`MIN_SERVER_PUSHBACK`] (1 s, so
//!   `Retry-After: 0`) is ignored: opening for a millisecond per answer would only churn.
//! - **Shared state.** The breaker lives in the layer value: every clone of the layer and of its
//!   services, and every [`Layer::layer`](tower_layer::Layer::layer) call, shares it.
//! - **Control** through a [`CircuitBreakerHandle`]: state, [`Metrics`], isolate (force open),
//!   force closed, reset, and a stream of [`Transition`]s. Each transition also emits one
//!   `tracing` event at `info` (from, to, generation, reason), at most 10 per breaker in any
//!   10 s (beyond that at `debug`, and the next `info` line counts them in `quieted`); each
//!   rejection one at `trace`.
//!
//! # Defaults
//!
//! | setting | default | source |
//! | --- | --- | --- |
//! | policy | count window of [`DEFAULT_WINDOW_SIZE`] (100) calls | resilience4j `slidingWindowSize` |
//! | [`failure_rate`](CircuitBreakerBuilder::failure_rate) | [`DEFAULT_FAILURE_RATE`] (50 %), `>=` | resilience4j, Hystrix, opossum |
//! | [`minimum_calls`](CircuitBreakerBuilder::minimum_calls) | [`DEFAULT_MINIMUM_CALLS`] (100), or a smaller count window's size | resilience4j `minimumNumberOfCalls`, Polly `MinimumThroughput` |
//! | [`slow_calls`](CircuitBreakerBuilder::slow_calls) | off | resilience4j's default (60 s at 100 %) is off in effect |
//! | [`open_for`](CircuitBreakerBuilder::open_for) | [`DEFAULT_OPEN_DURATION`] (5 s) | Polly v8 `BreakDuration`, Hystrix sleep window |
//! | [`open_backoff`](CircuitBreakerBuilder::open_backoff) | off | |
//! | [`open_jitter`](CircuitBreakerBuilder::open_jitter) | 0 | |
//! | [`half_open_probes`](CircuitBreakerBuilder::half_open_probes) | [`DEFAULT_PROBES`] (1) | Polly, Hystrix, opossum |
//! | [`half_open_max_wait`](CircuitBreakerBuilder::half_open_max_wait) | the open duration, then [`HalfOpenTimeout::Rearm`] | Polly re-arms its probe after the break duration |
//! | [`server_directed`](CircuitBreakerBuilder::server_directed) | off; cap [`DEFAULT_MAX_PUSHBACK`] (5 min) | |
//! | classifier | [`DefaultClassifier`](crate::classify::DefaultClassifier): `Err` is a failure | |
//!
//! # Errors
//!
//! The service's error is [`CircuitBreakerError`]:
//! [`Open`](CircuitBreakerError::Open)`(`[`CircuitOpen`]`)` when the breaker refused the call (no
//! allocation), or [`Inner`](CircuitBreakerError::Inner) with the inner service's error. It
//! converts into a [`BoxError`](crate::error::BoxError), and
//! [`Rejection::find`](crate::error::Rejection::find) finds the `CircuitOpen` through any chain.
//! With the `http` feature a `CircuitOpen` maps to `503 Service Unavailable` with `Retry-After`
//! (whole seconds, rounded up; none when isolated) and an `application/problem+json` body of type
//! `urn:palisade:circuit-open`.
//!
//! # Event hooks
//!
//! [`on_transition`](CircuitBreakerBuilder::on_transition) is called with every
//! [`Transition`] (from, to, generation, reason, and the instant by the breaker's clock) as it
//! happens, and [`on_rejected`](CircuitBreakerBuilder::on_rejected) with every
//! [`CircuitOpen`] before the rejected call returns it. They are plain callbacks: called on
//! the task where the event happens, with no lock of the breaker held, never spawned or
//! buffered, so unlike [`subscribe`](CircuitBreakerHandle::subscribe) they cannot lag or miss
//! one. Keep them short (count, log, `try_send` on a channel). Unset, they cost nothing: an
//! admitted call never looks at them, and a rejection checks one pointer.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use palisade::circuit_breaker::{CircuitBreakerLayer, State};
//!
//! let opened = Arc::new(AtomicU64::new(0));
//! let rejected = Arc::new(AtomicU64::new(0));
//! let (o, r) = (Arc::clone(&opened), Arc::clone(&rejected));
//! let layer = CircuitBreakerLayer::builder()
//!     .on_transition(move |transition| {
//!         if transition.to == State::Open {
//!             o.fetch_add(1, Ordering::Relaxed);
//!         }
//!     })
//!     .on_rejected(move |_| {
//!         r.fetch_add(1, Ordering::Relaxed);
//!     })
//!     .build()
//!     .unwrap();
//! # let _ = layer;
//! ```
//!
//! # Interaction with other layers
//!
//! - **Retry** goes outside the breaker, so each attempt is admitted (and counted) on its own.
//!   A retry returns a [`CircuitOpen`] to its caller at once (no budget, no attempt spent), and
//!   can be told to wait out a short reopening instead
//!   ([`wait_for_reopening`](crate::retry::RetryLayer::wait_for_reopening)).
//! - **Deadlines**: an attempt that runs into the request's deadline, or is never sent because
//!   it had passed, says nothing about the dependency: both shipped classifiers ignore it, so
//!   it neither counts in the window nor uses up a half-open probe (see
//!   [`classify`](crate::classify#palisades-own-rejections)). Keep the attempt timeout below
//!   the deadlines callers bring, or hung calls cut short by a deadline never trip the breaker.
//! - **Timeouts**: put the per-attempt timeout inside the breaker, so a timed-out call counts as
//!   a failure; with slow-call detection, calls between the slow threshold and the timeout
//!   count as slow.
//! - **Per-dependency breakers**: one layer per dependency; clones share, separate layers do
//!   not.
//!
//! # Guarantees
//!
//! Each is one of the numbered invariants of the state machine (in the private `state`
//! module, with the encoding, the transition table and the ordering of every atomic
//! operation), which the loom models and the model-based property test check and cite:
//!
//! 1. At most `half_open_probes` probes of one half-open generation are in flight at once,
//!    whatever the interleaving; every one of them gives back a success, a failure or its slot
//!    (a slot given back can be taken by a new probe). *(Invariants 2 and 4.)*
//! 2. An outcome only affects the generation its call was admitted in. *(Invariant 3.)*
//! 3. An open breaker always half-opens once its time is up: by its timer, or by the first call
//!    that checks the clock (every call when no timer is armed; one in 64 per thread when one
//!    is). *(Invariant 6.)*
//! 4. A half-open breaker whose probes never finish re-arms or re-opens after the maximum wait.
//!    *(Invariant 5.)*
//! 5. Each state change is made by exactly one thread and reported once, and a breaker that
//!    closes starts with an empty window. *(Invariant 1.)*
//! 6. The closed success path takes no lock and allocates nothing; when the window has nothing
//!    to forget, it writes nothing. *(Checked by the allocation gate in
//!    `tests/allocations.rs`.)*

mod breaker;
mod config;
mod error;
pub mod future;
mod handle;
mod keyed;
mod layer;
#[cfg(all(test, palisade_loom))]
mod loom_models;
#[cfg(all(test, not(palisade_loom)))]
mod model_tests;
mod names;
mod service;
mod state;
#[cfg(all(test, not(palisade_loom)))]
mod tests;
mod window;

pub use self::config::{
    CircuitBreakerBuilder, DEFAULT_FAILURE_RATE, DEFAULT_MAX_PUSHBACK, DEFAULT_MINIMUM_CALLS,
    DEFAULT_OPEN_DURATION, DEFAULT_PROBES, DEFAULT_WINDOW_SIZE, HalfOpenTimeout,
    MIN_SERVER_PUSHBACK,
};
pub use self::error::{CircuitBreakerError, CircuitOpen};
pub use self::handle::{CircuitBreakerHandle, Metrics, State, Transition, TransitionReason};
pub use self::keyed::{DEFAULT_MAX_KEYS, KeyedCircuitBreaker, KeyedCircuitBreakerLayer};
pub use self::layer::CircuitBreakerLayer;
pub use self::service::CircuitBreaker;
