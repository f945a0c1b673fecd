//! The HTTP client preset: [`HttpClientLayer`], the stack it builds ([`HttpClient`]), and the
//! stage that holds its throttle or breaker ([`Guard`]).

use std::fmt;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::Method;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::Factor;
use crate::circuit_breaker::{CircuitBreaker, CircuitBreakerHandle, CircuitBreakerLayer};
use crate::classify::StatusClassifier;
use crate::error::BoxError;
use crate::http::DeadlineHeader;
use crate::idempotency::{AddIdempotencyKey, AddIdempotencyKeyLayer};
use crate::retry::{
    BufferBody, BufferBodyLayer, DEFAULT_BODY_LIMIT, HttpPolicy, Retry, RetryBudget, RetryLayer,
    UnknownLength,
};
use crate::throttle::{Throttle, ThrottleHandle, ThrottleLayer};
use crate::timeout::{PropagateDeadline, PropagateDeadlineLayer, Timeout, TimeoutLayer};

/// A call's whole time, attempts and waits included: 10 s. Published as the request's
/// deadline, so the retry starts nothing that cannot finish within it.
pub const DEFAULT_TOTAL_TIMEOUT: Duration = Duration::from_secs(10);
/// One attempt's time: 2 s, so three attempts and their waits fit in the total.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// The share of requests the preset's retry budget allows to be retried: 0.3 (30 %), over
/// [`DEFAULT_BUDGET_TTL`], plus [`crate::retry::DEFAULT_MIN_PER_SECOND`] per second. Measured
/// in `examples/chaos.rs`: in a 50 % brownout it keeps amplification under 1.5 while every
/// retry lands where it can succeed; the throttle, not the budget, is what protects a
/// dependency that fails as a whole.
pub const DEFAULT_RETRY_SHARE: Factor = Factor::new_const(0.3);
/// How long the preset's retry budget remembers requests: 10 s (Finagle, Linkerd, tower).
pub const DEFAULT_BUDGET_TTL: Duration = Duration::from_secs(10);

/// The stack [`HttpClientLayer`] builds around an HTTP client `S`, outermost first:
///
/// ```text
/// AddIdempotencyKey ⊃ total Timeout (publishes the deadline) ⊃ BufferBody ⊃ Retry
///   ⊃ Guard (throttle, breaker or none) ⊃ attempt Timeout ⊃ PropagateDeadline ⊃ S
/// ```
///
/// `S` serves `http::Request<ReplayBody<B>>` (the body kept for replay) for requests of body
/// `B`; its error is a [`BoxError`], and palisade's rejections are found in it with
/// [`Rejection::find`](crate::error::Rejection::find).
pub type HttpClient<S> =
    AddIdempotencyKey<Timeout<BufferBody<Retry<Guard<Timeout<PropagateDeadline<S>>>, HttpPolicy>>>>;

/// A standard resilient HTTP client in one layer, its stages in the order the crate docs give
/// and every stage configurable or removable: see the [module docs](crate::preset).
///
/// # Clone
///
/// The retry budget and the throttle or breaker are created once, in the layer value: clones
/// of the layer and every service it builds share them.
#[derive(Clone)]
#[must_use]
pub struct HttpClientLayer {
    keys: Option<AddIdempotencyKeyLayer>,
    total: Option<Duration>,
    body_limit: usize,
    unknown_length: UnknownLength,
    retry: Option<RetryLayer<HttpPolicy>>,
    guard: GuardLayer,
    attempt: Option<Duration>,
    propagate: Option<PropagateDeadlineLayer>,
    /// The stages' metrics name, if one was given.
    name: Option<Arc<str>>,
    /// Whether the guard is still the default throttle (renamed along with the preset).
    default_guard: bool,
}

impl HttpClientLayer {
    /// Every stage at its default: no idempotency keys; a 10 s total timeout published as the
    /// deadline; bodies up to 64 KiB kept for replay (a body of unknown length still going after
    /// 10 ms is sent once, unbuffered); 3 attempts with full jitter from 50 ms
    /// and a budget of 30 % of requests; the default throttle (5xx and 429 are failures); a 2 s
    /// attempt timeout; the remaining time sent in `grpc-timeout`.
    pub fn new() -> Self {
        Self {
            keys: None,
            total: Some(DEFAULT_TOTAL_TIMEOUT),
            body_limit: DEFAULT_BODY_LIMIT,
            unknown_length: UnknownLength::default(),
            retry: Some(default_retry()),
            guard: GuardLayer::Throttle(default_throttle()),
            attempt: Some(DEFAULT_ATTEMPT_TIMEOUT),
            propagate: Some(PropagateDeadlineLayer::new(DeadlineHeader::grpc())),
            name: None,
            default_guard: true,
        }
    }

    /// Names the stages for their metrics (feature `metrics`; see `palisade::metrics`): the
    /// retry and the default throttle get `name`, the total and attempt timeouts
    /// `{name}/total` and `{name}/attempt`. A throttle or breaker passed in keeps its own name.
    /// Defaults to none (`unnamed`).
    ///
    /// Set it before taking a [`throttle_handle`](Self::throttle_handle): with the default
    /// throttle, naming builds the named one in its place (a throttle's name is fixed when it
    /// is built), and a handle taken before watches the one replaced.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        let name = name.into();
        if self.default_guard {
            self.guard = GuardLayer::Throttle(default_throttle_named(Some(&name)));
        }
        self.name = Some(name);
        self
    }

    /// Gives each POST and PATCH a generated `Idempotency-Key` (kept across its retries), which
    /// also makes them retryable. Defaults to off: turn it on only for a server that honours
    /// the keys, or a retried POST may run twice.
    pub fn idempotency_keys(mut self, keys: AddIdempotencyKeyLayer) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Limits each call's whole time, attempts and waits included, and publishes it as the
    /// request's deadline. Defaults to [`DEFAULT_TOTAL_TIMEOUT`] (10 s).
    pub fn total_timeout(mut self, limit: Duration) -> Self {
        self.total = Some(limit);
        self
    }

    /// Removes the total timeout: a deadline the request already carries still applies.
    pub fn without_total_timeout(mut self) -> Self {
        self.total = None;
        self
    }

    /// The largest request body kept for replay (a larger one is sent once). Defaults to
    /// [`DEFAULT_BODY_LIMIT`] (64 KiB).
    pub fn body_limit(mut self, limit: usize) -> Self {
        self.body_limit = limit;
        self
    }

    /// What to do with a request body of unknown length (a stream) that has not ended: by
    /// default wait up to 10 ms for it, then send it on unbuffered and not retryable, so a
    /// streaming caller that waits for the response is never deadlocked. See
    /// [`UnknownLength`].
    pub fn unknown_length(mut self, rule: UnknownLength) -> Self {
        self.unknown_length = rule;
        self
    }

    /// The retry stage. Defaults to 3 attempts, full jitter from 50 ms capped at 20 s, and a
    /// percentage budget of [`DEFAULT_RETRY_SHARE`] (30 %) over 10 s plus 10 retries a second.
    pub fn retry(mut self, retry: RetryLayer<HttpPolicy>) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Removes the retry stage: each call is sent once, and bodies are not buffered.
    pub fn without_retry(mut self) -> Self {
        self.retry = None;
        self
    }

    /// Guards the dependency with `throttle` (the default is [`ThrottleLayer`]'s defaults with
    /// [`StatusClassifier`]).
    pub fn throttle(mut self, throttle: ThrottleLayer<StatusClassifier>) -> Self {
        self.default_guard = false;
        self.guard = GuardLayer::Throttle(throttle);
        self
    }

    /// Guards the dependency with a circuit breaker instead of the throttle.
    pub fn breaker(mut self, breaker: CircuitBreakerLayer<StatusClassifier>) -> Self {
        self.default_guard = false;
        self.guard = GuardLayer::Breaker(breaker);
        self
    }

    /// Removes the throttle or breaker.
    pub fn without_guard(mut self) -> Self {
        self.default_guard = false;
        self.guard = GuardLayer::None;
        self
    }

    /// Limits each attempt. Defaults to [`DEFAULT_ATTEMPT_TIMEOUT`] (2 s); keep it below the
    /// deadlines callers bring, or a hung dependency is never counted as failing (see
    /// [`classify`](crate::classify#palisades-own-rejections)).
    pub fn attempt_timeout(mut self, limit: Duration) -> Self {
        self.attempt = Some(limit);
        self
    }

    /// Removes the attempt timeout: an attempt is bounded by the deadline alone.
    pub fn without_attempt_timeout(mut self) -> Self {
        self.attempt = None;
        self
    }

    /// How the remaining time is told to the server. Defaults to `grpc-timeout`.
    pub fn propagate(mut self, propagate: PropagateDeadlineLayer) -> Self {
        self.propagate = Some(propagate);
        self
    }

    /// Sends no deadline header.
    pub fn without_propagation(mut self) -> Self {
        self.propagate = None;
        self
    }

    /// The retry budget every service of this layer shares, if it retries.
    #[must_use]
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.retry.as_ref().map(RetryLayer::budget_handle)
    }

    /// A handle on the throttle, if the guard is one.
    #[must_use]
    pub fn throttle_handle(&self) -> Option<ThrottleHandle> {
        match &self.guard {
            GuardLayer::Throttle(throttle) => Some(throttle.handle()),
            _ => None,
        }
    }

    /// A handle on the breaker, if the guard is one.
    #[must_use]
    pub fn breaker_handle(&self) -> Option<CircuitBreakerHandle> {
        match &self.guard {
            GuardLayer::Breaker(breaker) => Some(breaker.handle()),
            _ => None,
        }
    }
}

impl Default for HttpClientLayer {
    fn default() -> Self {
        Self::new()
    }
}

/// The preset's retry: the HTTP policy, 3 attempts, full jitter, a 30 % budget.
fn default_retry() -> RetryLayer<HttpPolicy> {
    let budget = RetryBudget::percent()
        .ttl(DEFAULT_BUDGET_TTL)
        .retry_share(DEFAULT_RETRY_SHARE)
        .build();
    let retry = RetryLayer::new().policy(HttpPolicy::new());
    match budget {
        Ok(budget) => retry.budget(budget),
        // The defaults are in range (a test checks it); never reached.
        Err(error) => unreachable!("invalid default budget: {error}"),
    }
}

/// The preset's throttle: the defaults, with HTTP statuses classified.
fn default_throttle() -> ThrottleLayer<StatusClassifier> {
    default_throttle_named(None)
}

/// The preset's throttle, named `name`.
fn default_throttle_named(name: Option<&Arc<str>>) -> ThrottleLayer<StatusClassifier> {
    let builder = ThrottleLayer::builder().classifier(StatusClassifier::new());
    let builder = match name {
        Some(name) => builder.name(Arc::clone(name)),
        None => builder,
    };
    match builder.build() {
        Ok(throttle) => throttle,
        // The defaults are valid (a test checks it); never reached.
        Err(error) => unreachable!("invalid default throttle: {error}"),
    }
}

impl<S> Layer<S> for HttpClientLayer {
    type Service = HttpClient<S>;

    fn layer(&self, client: S) -> Self::Service {
        let propagate = self
            .propagate
            .clone()
            .unwrap_or_else(PropagateDeadlineLayer::writing_nothing);
        // `Duration::MAX`: no limit of its own, at no cost (a deadline still applies).
        let attempt = self.named(
            TimeoutLayer::new(self.attempt.unwrap_or(Duration::MAX)),
            "/attempt",
        );
        let guarded = self.guard.layer(attempt.layer(propagate.layer(client)));
        let (retry, buffer) = match &self.retry {
            Some(retry) => (
                match &self.name {
                    Some(name) => retry.clone().name(Arc::clone(name)),
                    None => retry.clone(),
                },
                BufferBodyLayer::new(self.body_limit).unknown_length(self.unknown_length),
            ),
            // One attempt and no budget: the stage does nothing, and bodies stream through
            // without waiting.
            None => (
                {
                    let once = RetryLayer::new()
                        .policy(HttpPolicy::new())
                        .max_attempts(NonZeroU32::MIN)
                        .budget(RetryBudget::unlimited());
                    match &self.name {
                        Some(name) => once.name(Arc::clone(name)),
                        None => once,
                    }
                },
                BufferBodyLayer::new(0).unknown_length(UnknownLength::WaitUpTo(Duration::ZERO)),
            ),
        };
        let total = match self.total {
            Some(limit) => TimeoutLayer::new(limit).publish_deadline(true),
            None => TimeoutLayer::new(Duration::MAX),
        };
        let total = self.named(total, "/total");
        let keys = self
            .keys
            .clone()
            .unwrap_or_else(|| AddIdempotencyKeyLayer::new().methods(Vec::<Method>::new()));
        keys.layer(total.layer(buffer.layer(retry.layer(guarded))))
    }
}

impl HttpClientLayer {
    /// `timeout` named after the preset, with `suffix`.
    fn named(&self, timeout: TimeoutLayer, suffix: &str) -> TimeoutLayer {
        match &self.name {
            Some(name) => timeout.name(format!("{name}{suffix}")),
            None => timeout,
        }
    }
}

impl fmt::Debug for HttpClientLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClientLayer")
            .field("idempotency_keys", &self.keys)
            .field("total_timeout", &self.total)
            .field("body_limit", &self.body_limit)
            .field("unknown_length", &self.unknown_length)
            .field("retry", &self.retry)
            .field("guard", &self.guard)
            .field("attempt_timeout", &self.attempt)
            .field("propagate", &self.propagate)
            .field("name", &self.name)
            .finish()
    }
}

/// The guard stage's layer.
#[derive(Clone, Debug)]
enum GuardLayer {
    Throttle(ThrottleLayer<StatusClassifier>),
    Breaker(CircuitBreakerLayer<StatusClassifier>),
    None,
}

impl GuardLayer {
    fn layer<S>(&self, inner: S) -> Guard<S> {
        let kind = match self {
            Self::Throttle(throttle) => GuardKind::Throttle(throttle.layer(inner)),
            Self::Breaker(breaker) => GuardKind::Breaker(breaker.layer(inner)),
            Self::None => GuardKind::None(inner),
        };
        Guard { kind }
    }
}

/// The preset's guard stage: a throttle, a circuit breaker, or nothing, chosen with
/// [`HttpClientLayer::throttle`], [`breaker`](HttpClientLayer::breaker) or
/// [`without_guard`](HttpClientLayer::without_guard). Its error is a [`BoxError`].
#[derive(Clone)]
pub struct Guard<S> {
    kind: GuardKind<S>,
}

#[derive(Clone)]
enum GuardKind<S> {
    Throttle(Throttle<S, StatusClassifier>),
    Breaker(CircuitBreaker<S, StatusClassifier>),
    None(S),
}

impl<S: fmt::Debug> fmt::Debug for Guard<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            GuardKind::Throttle(throttle) => f.debug_tuple("Guard").field(throttle).finish(),
            GuardKind::Breaker(breaker) => f.debug_tuple("Guard").field(breaker).finish(),
            GuardKind::None(inner) => f.debug_tuple("Guard::None").field(inner).finish(),
        }
    }
}

impl<S, Req, ResB> Service<Req> for Guard<S>
where
    S: Service<Req, Response = http::Response<ResB>>,
    S::Error: Into<BoxError> + 'static,
{
    type Response = http::Response<ResB>;
    type Error = BoxError;
    type Future = GuardFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match &mut self.kind {
            GuardKind::Throttle(throttle) => throttle.poll_ready(cx).map_err(Into::into),
            GuardKind::Breaker(breaker) => breaker.poll_ready(cx).map_err(Into::into),
            GuardKind::None(inner) => inner.poll_ready(cx).map_err(Into::into),
        }
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        let kind = match &mut self.kind {
            GuardKind::Throttle(throttle) => FutureKind::Throttle {
                future: throttle.call(request),
            },
            GuardKind::Breaker(breaker) => FutureKind::Breaker {
                future: breaker.call(request),
            },
            GuardKind::None(inner) => FutureKind::None {
                future: inner.call(request),
            },
        };
        GuardFuture { kind }
    }
}

pin_project! {
    /// The response future of [`Guard`].
    pub struct GuardFuture<F> {
        #[pin]
        kind: FutureKind<F>,
    }
}

pin_project! {
    #[project = FutureKindProj]
    enum FutureKind<F> {
        Throttle { #[pin] future: crate::throttle::future::ResponseFuture<F, StatusClassifier> },
        Breaker { #[pin] future: crate::circuit_breaker::future::ResponseFuture<F, StatusClassifier> },
        None { #[pin] future: F },
    }
}

impl<F, ResB, E> Future for GuardFuture<F>
where
    F: Future<Output = Result<http::Response<ResB>, E>>,
    E: Into<BoxError> + 'static,
{
    type Output = Result<http::Response<ResB>, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(match self.project().kind.project() {
            FutureKindProj::Throttle { future } => ready!(future.poll(cx)).map_err(Into::into),
            FutureKindProj::Breaker { future } => ready!(future.poll(cx)).map_err(Into::into),
            FutureKindProj::None { future } => ready!(future.poll(cx)).map_err(Into::into),
        })
    }
}

impl<F> fmt::Debug for GuardFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            FutureKind::Throttle { .. } => "Throttle",
            FutureKind::Breaker { .. } => "Breaker",
            FutureKind::None { .. } => "None",
        };
        f.debug_struct("GuardFuture").field("kind", &kind).finish()
    }
}
