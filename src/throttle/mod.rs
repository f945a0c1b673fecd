//! Adaptive throttling (feature `throttle`): shed only the calls a failing dependency cannot
//! take.
//!
//! A [`Throttle`] watches the outcomes of the calls it sends and, once fewer than `1/K` of them
//! succeed, rejects calls locally at random, the more the fewer succeed: Google SRE's
//! client-side throttling ("Handling Overload"),
//!
//! ```text
//! p_reject = max(0, (requests − K·accepts) / (requests + 1))        K = 2 by default
//! ```
//!
//! over the last N calls sent. When the dependency stops answering altogether (a run of
//! failures too long to be chance), it sends only one probe per probe interval, and the first
//! probe that succeeds starts it afresh. Rejections are [`Throttled`] (503 for HTTP callers), and a
//! palisade retry around the throttle returns them at once.
//!
//! # The throttle or a circuit breaker?
//!
//! | the dependency | failure-rate [breaker](crate::circuit_breaker) | throttle |
//! | --- | --- | --- |
//! | fails half its calls (a brownout) | opens at a 50 % threshold and sheds **all** of them, the half that would have succeeded too | sheds nothing at `K = 2` (what fails beyond `1/K` is shed) |
//! | fails 80 % | sheds all | sheds about 60 % (`1 − K·s` for a success rate `s`) |
//! | is down or hangs | sheds all but a probe per open period | sheds all but one probe per probe interval (250 ms), after 20 failures in a row (more if it was already failing) |
//! | recovers | closes after its open period and a probe (seconds) | resumes at the first successful probe (within a probe interval) |
//!
//! Choose the throttle for a dependency that degrades in part (an overloaded backend, a
//! cluster with a bad shard, a rate limit) and for clients that must keep their success rate
//! up while it does. Choose the breaker when any failure rate above a threshold means the
//! dependency should be left alone (a failing call is costly or harmful), when you need manual
//! control (isolate, force closed), or per-key breakers.
//!
//! # When not to use it
//!
//! - For failures that are the caller's own fault (4xx): classify them as
//!   [`Success`](crate::classify::Outcome::Success) or
//!   [`Ignore`](crate::classify::Outcome::Ignore), as for a breaker.
//! - To cap load on a healthy dependency: the throttle reacts to failures, not to volume (use a
//!   concurrency or rate limit).
//! - Where each request's failure is independent of the dependency's health (one bad record):
//!   shedding then only loses calls that would have succeeded.
//!
//! # Example
//!
//! ```
//! use std::num::NonZeroU32;
//! use palisade::error::{BoxError, Rejection};
//! use palisade::throttle::{ThrottleLayer, ThrottleState};
//! use tower::{Layer, Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let layer = ThrottleLayer::builder()
//!     .shed_after(NonZeroU32::new(5).unwrap())
//!     .build()
//!     .unwrap();
//! let handle = layer.handle();
//! let mut svc = layer.layer(tower::service_fn(|fail: bool| async move {
//!     if fail { Err::<(), BoxError>("upstream down".into()) } else { Ok(()) }
//! }));
//!
//! for _ in 0..5 {
//!     let _ = svc.ready().await.unwrap().call(true).await;
//! }
//! assert_eq!(handle.state(), ThrottleState::Shedding);
//!
//! // Refused without calling the service until the next probe slot, which it names.
//! let err = svc.ready().await.unwrap().call(false).await.unwrap_err();
//! let Some(Rejection::Throttled(throttled)) = Rejection::find(&err) else { panic!() };
//! assert!(throttled.is_shedding());
//! assert!(throttled.retry_after().is_some());
//!
//! // A probe goes through once the slot comes, and its success resumes throttling.
//! tokio::time::sleep(throttled.retry_after().unwrap()).await;
//! svc.ready().await.unwrap().call(false).await.unwrap();
//! assert_eq!(handle.state(), ThrottleState::Throttling);
//! # }
//! ```
//!
//! # Behaviour
//!
//! ```text
//!                shed_after consecutive failures
//!   Throttling ─────────────────────────────────▶ Shedding
//!     │ each call rejected with p_reject           │ one probe per probe interval
//!     │ over the last N outcomes                   │ (jittered); every other call rejected
//!     ◀──────── a probe succeeds (window emptied) ─┘
//! ```
//!
//! - **The window** is the last `window` outcomes of calls the throttle *sent* (a ring, as
//!   the breaker's count window), so `requests` and `accepts` in the formula count sent calls
//!   and their successes. The SRE book counts the requests the client *attempted*, rejected
//!   ones included, which keeps what is sent near `K` times what is accepted; measured end to
//!   end that makes the throttle its own evidence: with nothing accepted it admits about one
//!   call per window length, and stayed shut seconds after its dependency recovered. Counting
//!   sent calls, the probability depends only on how the dependency answers (about `1 − K·s`
//!   at a success rate `s`), and the probes below bound what a dead dependency sees. The window
//!   holds calls, not time: after a long idle spell its verdict is the last one it formed,
//!   until new outcomes replace it.
//! - **Throttling.** Below `minimum_calls` outcomes nothing is shed. Then each call is shed
//!   with probability `p_reject`, which is zero while at least `1/K` of the window's calls
//!   succeed. A window with no failure is not even read beyond its failure count.
//! - **Shedding.** A run of consecutive failures too long to be chance at the window's
//!   success rate means the dependency is down: `shed_after` (20) failures in a row when at
//!   least half the window's calls succeeded (odds of 2^-20 by chance), proportionally longer
//!   when fewer did, so that a dependency already failing 80 % of its calls is not taken for
//!   dead on a run it makes every few hundred calls (at most a window's length). From then on
//!   only one call per probe interval is sent, the interval lengthened by a random share of up
//!   to `probe_jitter` so that clients that started shedding together spread their probes.
//!   The others are rejected at once, naming the next probe slot as their `retry_after`. The
//!   first probe to succeed empties the window and resumes Throttling with nothing shed, so
//!   recovery shows within about one probe interval; if the dependency is still fragile, the
//!   window learns it again within `minimum_calls`.
//! - **Slow calls** (opt-in, [`slow_calls`](ThrottleBuilder::slow_calls)): a call slower than
//!   the threshold counts as a failure, even if it succeeded: in the window and in the run
//!   of failures, so a dependency whose every call is slow is shed like a dead one, and a slow
//!   probe does not end the shedding.
//! - **Outcomes** go through the [`Classify`](crate::classify::Classify) classifier; ignored
//!   ones (a request deadline that ran out, a call an inner layer never sent) count nowhere.
//!   An outcome of a call admitted before the throttle last changed phase is ignored. A call
//!   whose future is dropped counts nowhere and holds nothing; so a hung dependency is only
//!   seen through a timeout *inside* the throttle, and a probe whose outcome is ignored leaves
//!   the next probe to the next slot.
//! - **Randomness** is a per-thread generator by default, and seedable
//!   ([`seed`](ThrottleBuilder::seed)) for reproducible tests.
//! - **Shared state.** The throttle lives in the layer value: every clone of the layer and of
//!   its services, and every [`Layer::layer`](tower_layer::Layer::layer) call, shares it.
//! - **Control** through a [`ThrottleHandle`]: phase, [`Metrics`] (window, rejection
//!   probability, rejections) and reset. Each change of phase and each reset emits one
//!   `tracing` event at `info`; each rejection one at `trace`.
//!
//! # Defaults
//!
//! | setting | default | source |
//! | --- | --- | --- |
//! | [`multiplier`](ThrottleBuilder::multiplier) `K` | [`DEFAULT_MULTIPLIER`] (2) | Google SRE, "Handling Overload" |
//! | [`window`](ThrottleBuilder::window) | [`DEFAULT_WINDOW_SIZE`] (1000 calls) | measured: 100 calls shed 5 % of a 50 % brownout by chance, 1000 nothing; the SRE book counts 2 minutes |
//! | [`minimum_calls`](ThrottleBuilder::minimum_calls) | [`DEFAULT_MINIMUM_CALLS`] (10) | |
//! | [`shed_after`](ThrottleBuilder::shed_after) | [`DEFAULT_SHED_AFTER`] (20 failures in a row at a 50 % success rate, longer below) | a 50 % brownout makes such a run once in about 2^21 calls |
//! | [`probe_interval`](ThrottleBuilder::probe_interval) | [`DEFAULT_PROBE_INTERVAL`] (250 ms) | measured in `examples/chaos.rs`: recovery noticed within 300 ms, a dead dependency sees 2 % of 200 req/s |
//! | [`probe_jitter`](ThrottleBuilder::probe_jitter) | [`DEFAULT_PROBE_JITTER`] (up to +20 %) | |
//! | [`slow_calls`](ThrottleBuilder::slow_calls) | off | |
//! | classifier | [`DefaultClassifier`](crate::classify::DefaultClassifier): `Err` is a failure | |
//!
//! # Errors
//!
//! The service's error is [`ThrottleError`]: [`Throttled`](ThrottleError::Throttled) when the
//! throttle refused the call (no allocation), or [`Inner`](ThrottleError::Inner) with the inner
//! service's error. It converts into a [`BoxError`](crate::error::BoxError), and
//! [`Rejection::find`](crate::error::Rejection::find) finds the `Throttled` through any chain.
//! With the `http` feature a `Throttled` maps to `503 Service Unavailable`, with `Retry-After`
//! (whole seconds, rounded up) when it names a probe slot, and an `application/problem+json`
//! body of type `urn:palisade:throttled`.
//!
//! # Event hooks
//!
//! [`on_rejected`](ThrottleBuilder::on_rejected) is called with every [`Throttled`] before the
//! shed call returns it, on the caller's task, with no lock held. A plain callback: keep it
//! short. Admitted calls never look at it; a rejection checks one pointer.
//!
//! # Interaction with other layers
//!
//! - **Retry** goes outside the throttle, so each attempt is admitted and counted on its own. A
//!   retry returns a [`Throttled`] at once: it costs no budget and no attempt. Because the
//!   throttle bounds what a failing dependency sees, the retry's budget only needs to bound
//!   amplification in a partial failure.
//! - **Timeouts**: put the per-attempt timeout inside the throttle, so a timed-out attempt is a
//!   failure; a request deadline that runs out is ignored (see
//!   [`classify`](crate::classify#palisades-own-rejections)).
//! - **A breaker** inside or outside it works, but the two answer the same question; pick one
//!   (see above).
//!
//! # Guarantees
//!
//! 1. While Shedding, at most one probe is sent per probe slot, whatever the interleaving.
//! 2. Shedding always ends once a probe succeeds, and a probe is always sent once its slot has
//!    come (a dropped, hung or ignored probe only costs one interval).
//! 3. The run of failures only counts outcomes of the phase its calls were admitted in (the
//!    window may take one late outcome per recorder racing a change of phase).
//! 4. The healthy path (a full window holding no failure) takes no lock, allocates nothing,
//!    and writes nothing shared but the reference count each call takes on the throttle.
//!
//! These rest on the numbered invariants of the private `state` module, which documents the
//! word's encoding, transition table and orderings, and which the loom models and a
//! model-based property test check.

mod config;
mod error;
pub mod future;
mod gate;
mod handle;
mod layer;
#[cfg(all(test, palisade_loom))]
mod loom_models;
#[cfg(all(test, not(palisade_loom)))]
mod model_tests;
mod service;
mod state;

pub use self::config::{
    DEFAULT_MINIMUM_CALLS, DEFAULT_MULTIPLIER, DEFAULT_PROBE_INTERVAL, DEFAULT_PROBE_JITTER,
    DEFAULT_SHED_AFTER, DEFAULT_WINDOW_SIZE, ThrottleBuilder,
};
pub use self::error::{ThrottleError, Throttled};
pub use self::handle::{Metrics, ThrottleHandle, ThrottleState, TransitionReason};
pub use self::layer::ThrottleLayer;
pub use self::service::Throttle;
