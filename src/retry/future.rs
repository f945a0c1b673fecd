//! The retry layer's response future: a named state machine.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use super::budget::RetryBudget;
use super::config::Config;
use super::error::BudgetExhausted;
use super::hooks::{BudgetRefused, Hooks, RetryEvent, RetryReason};
use super::policy::{Decision, Described, Policy};
use crate::RequestExtensions;
use crate::clock::Instant;
use crate::deadline::Deadline;
use crate::error::BoxError;
use crate::instruments::{self, Outcome, Stamp};
use crate::random::Random;
use crate::ratio::fraction_of;

pin_project! {
    /// The response future of [`Retry`](super::Retry).
    ///
    /// ```text
    ///   Calling ──(result: done, ignored, or no retry left)───────────────▶ Ready(result)
    ///     │ failure, retry allowed (the result is kept)
    ///     ▼
    ///   BackingOff (tokio sleep; skipped for a zero wait)
    ///     │
    ///     ▼
    ///   Readying (poll_ready on a clone of the inner service)
    ///     │    └──(not ready: error, or no time left)──────────▶ Ready(kept result)
    ///     │ ready, still in time
    ///     └──────────▶ Calling (the next attempt; the kept result is dropped)
    /// ```
    ///
    /// Dropping it drops the attempt in flight or the sleep: nothing more is sent.
    pub struct ResponseFuture<S: Service<Req>, Req, P> {
        #[pin]
        state: State<S::Future, Result<S::Response, BoxError>>,
        retry: Retrying<S, Req, P>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, T> {
        Calling {
            #[pin]
            future: F,
        },
        // Boxed: a sleep is only needed once a call has failed (and then waits milliseconds at
        // least), while an inline one would make every call's future 100 bytes larger.
        BackingOff {
            sleep: Pin<Box<Sleep>>,
            // The failed attempt's result, returned if no further attempt starts.
            last: Option<T>,
        },
        Readying {
            last: Option<T>,
        },
    }
}

/// Everything another attempt needs.
struct Retrying<S, Req, P> {
    service: S,
    policy: P,
    /// A copy of the request for the attempt after the next, if one may follow.
    copy: Option<Req>,
    /// The request for the attempt being readied.
    pending: Option<Req>,
    config: Config,
    budget: RetryBudget,
    random: Option<Arc<Random>>,
    /// The layer's event hooks, if any is set.
    hooks: Option<Arc<Hooks>>,
    /// Attempts made so far.
    attempts: u32,
    /// The last computed wait, for decorrelated jitter (the base after a pushback).
    previous_delay: Duration,
    /// When the call started (only read when a total time limit is set).
    started: Option<Instant>,
    /// Whether this call has waited out a protective rejection (at most once).
    waited_for_reopening: bool,
    /// The call's metrics, finished when it returns (nothing without the `metrics` feature).
    metrics: instruments::Call,
    /// When the attempt in flight started (nothing without the `metrics` feature).
    attempt_started: Stamp,
}

/// After an attempt: return its result, or wait this long and try again (keeping the result
/// in case the next attempt cannot start).
enum Next<T> {
    Finish(T),
    Wait(Duration, T),
}

impl<S: Service<Req>, Req, P> ResponseFuture<S, Req, P> {
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(crate) fn new(
        future: S::Future,
        service: S,
        policy: P,
        copy: Option<Req>,
        config: Config,
        budget: RetryBudget,
        random: Option<Arc<Random>>,
        hooks: Option<Arc<Hooks>>,
        started: Option<Instant>,
        metrics: instruments::Call,
    ) -> Self {
        Self {
            state: State::Calling { future },
            retry: Retrying {
                service,
                policy,
                copy,
                pending: None,
                config,
                budget,
                random,
                hooks,
                attempts: 1,
                previous_delay: config.backoff.base(),
                started,
                waited_for_reopening: false,
                // The first attempt starts with the call: one clock read for both.
                attempt_started: metrics.started(),
                metrics,
            },
        }
    }
}

impl<S, Req, P> Future for ResponseFuture<S, Req, P>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    P: Policy<Req, S::Response>,
    Req: RequestExtensions,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    let result = ready!(future.poll(cx)).map_err(Into::into);
                    match this.retry.after_attempt(result) {
                        Next::Finish(result) => return Poll::Ready(result),
                        Next::Wait(delay, last) if delay.is_zero() => {
                            this.state.set(State::Readying { last: Some(last) });
                        }
                        Next::Wait(delay, last) => this.state.set(State::BackingOff {
                            sleep: Box::pin(tokio::time::sleep(delay)),
                            last: Some(last),
                        }),
                    }
                }
                StateProj::BackingOff { sleep, last } => {
                    ready!(sleep.as_mut().poll(cx));
                    let last = last.take();
                    this.state.set(State::Readying { last });
                }
                StateProj::Readying { last } => {
                    // Every attempt waits for the inner service's readiness again.
                    let readiness = ready!(this.retry.service.poll_ready(cx));
                    let request = this.retry.pending.take();
                    let start = match (readiness, request) {
                        (Ok(()), Some(request)) => {
                            this.retry.still_in_time(&request).then_some(request)
                        }
                        (Err(error), _) => {
                            let error: BoxError = error.into();
                            tracing::debug!(
                                %error,
                                "the service failed while getting ready for a retry: \
                                 returning the last attempt's result"
                            );
                            None
                        }
                        // Unreachable: `after_attempt` sets `pending` whenever it waits.
                        (Ok(()), None) => None,
                    };
                    let Some(request) = start else {
                        this.retry.metrics.finish(Outcome::Failure);
                        return Poll::Ready(
                            last.take()
                                .unwrap_or_else(|| Err("retry lost its last result".into())),
                        );
                    };
                    this.retry.attempt_started = Stamp::now();
                    let future = this.retry.service.call(request);
                    this.state.set(State::Calling { future });
                }
            }
        }
    }
}

impl<S, Req, P> Retrying<S, Req, P>
where
    S: Service<Req>,
    P: Policy<Req, S::Response>,
    Req: RequestExtensions,
{
    /// Decides what follows an attempt's `result`.
    #[inline]
    fn after_attempt(
        &mut self,
        result: Result<S::Response, BoxError>,
    ) -> Next<Result<S::Response, BoxError>> {
        // One clock read ends the attempt and, if it is the last, the call.
        let ended = Stamp::now();
        if let Some(instruments) = self.hooks.as_deref().and_then(Hooks::instruments) {
            instruments
                .attempts
                .record_between(self.attempt_started, ended);
        }
        // The budget learns from every attempt the policy judged: a success refills, a
        // failure takes a token (in `after_failure`), an ignored result or a rejection counts
        // nowhere.
        let (next, outcome) = match self.policy.decide(&result) {
            Decision::Done => {
                self.budget.record(true);
                (Next::Finish(result), Outcome::Success)
            }
            Decision::Ignore => (Next::Finish(result), Outcome::Ignored),
            Decision::Rejected(reopens_at) => {
                (self.after_rejection(reopens_at, result), Outcome::Failure)
            }
            decision => (self.after_failure(decision, result), Outcome::Failure),
        };
        if let Next::Finish(_) = next {
            self.metrics.finish_at(outcome, ended);
        }
        next
    }

    /// A layer inside refused the attempt to protect the dependency: return the rejection, or
    /// (opted in, once per call) wait for the reopening it names. Neither touches the budget or
    /// the attempt count.
    #[cold]
    fn after_rejection(
        &mut self,
        reopens_at: Option<Instant>,
        result: Result<S::Response, BoxError>,
    ) -> Next<Result<S::Response, BoxError>> {
        let Some(max) = self.config.reopening_wait else {
            tracing::trace!("attempt rejected to protect the dependency: failing fast");
            return Next::Finish(result);
        };
        if self.waited_for_reopening {
            tracing::debug!("rejected again after waiting for a reopening: not waiting twice");
            return Next::Finish(result);
        }
        let Some(reopens_at) = reopens_at else {
            tracing::debug!("rejected with no reopening time: not waiting");
            return Next::Finish(result);
        };
        let left = reopens_at.saturating_duration_since(Instant::now());
        if left > max {
            tracing::debug!(?left, ?max, "reopening too far away: not waiting");
            return Next::Finish(result);
        }
        let Some(copy) = self.copy.take() else {
            tracing::debug!("the request cannot be sent again: not waiting for the reopening");
            return Next::Finish(result);
        };
        let spread = fraction_of(self.config.backoff.base(), self.draw());
        let delay = left.saturating_add(spread);
        if !self.fits_in_time(&copy, delay) {
            return Next::Finish(result);
        }
        tracing::debug!(?delay, attempt = self.attempts, "waiting for the reopening");
        if let Some(hooks) = &self.hooks {
            if let Some(instruments) = hooks.instruments() {
                instruments.retries.count(RetryReason::Reopening.label());
            }
            hooks.on_retry.emit_with(|| RetryEvent {
                attempt: self.attempts,
                delay,
                reason: RetryReason::Reopening,
            });
        }
        self.waited_for_reopening = true;
        // The rejected attempt was not one: it is sent again, and a copy is kept only if
        // another attempt may follow it.
        self.copy = if self.attempts < self.config.max_attempts {
            self.policy.clone_request(&copy)
        } else {
            None
        };
        self.pending = Some(copy);
        Next::Wait(delay, result)
    }

    /// The slow path: a result the policy would retry.
    #[inline(never)]
    fn after_failure(
        &mut self,
        decision: Decision,
        result: Result<S::Response, BoxError>,
    ) -> Next<Result<S::Response, BoxError>> {
        self.budget.record(false);
        let outcome = Described::<P, Req, S::Response>::new(&self.policy, &result);
        if self.attempts >= self.config.max_attempts {
            tracing::debug!(attempts = self.attempts, %outcome, "no attempts left: not retrying");
            return Next::Finish(result);
        }
        let Some(copy) = self.copy.take() else {
            tracing::debug!(
                attempts = self.attempts,
                %outcome,
                "the request cannot be sent again (not safe to repeat, or not replayable): \
                 not retrying"
            );
            return Next::Finish(result);
        };
        let (delay, pushback) = match decision {
            Decision::RetryAfter(wait) if wait > self.config.max_pushback => {
                tracing::debug!(
                    ?wait,
                    max_pushback = ?self.config.max_pushback,
                    %outcome,
                    "pushback longer than the maximum: not retrying"
                );
                return Next::Finish(result);
            }
            Decision::RetryAfter(wait) => (wait, true),
            _ => {
                let delay =
                    self.config
                        .backoff
                        .delay(self.attempts - 1, self.previous_delay, self.draw());
                (delay, false)
            }
        };
        if !self.fits_in_time(&copy, delay) {
            return Next::Finish(result);
        }
        if !self.budget.try_withdraw() {
            tracing::debug!(attempts = self.attempts, %outcome, "retry budget exhausted: not retrying");
            if let Some(hooks) = &self.hooks {
                if let Some(instruments) = hooks.instruments() {
                    instruments.refusals.count_one();
                }
                let attempts = self.attempts;
                hooks
                    .on_budget_exhausted
                    .emit_with(|| BudgetRefused { attempts });
            }
            return Next::Finish(match result {
                Err(error) if self.config.fail_when_exhausted => {
                    Err(BudgetExhausted::new(self.attempts, error).into())
                }
                other => other,
            });
        }
        tracing::debug!(attempt = self.attempts + 1, ?delay, pushback, %outcome, "retrying");
        if let Some(hooks) = &self.hooks {
            let reason = if pushback {
                RetryReason::Pushback
            } else {
                RetryReason::Backoff
            };
            if let Some(instruments) = hooks.instruments() {
                instruments.retries.count(reason.label());
            }
            hooks.on_retry.emit_with(|| RetryEvent {
                attempt: self.attempts + 1,
                delay,
                reason,
            });
        }
        // Decorrelated jitter grows from computed waits only: a server's pushback says
        // nothing about how far apart our own retries should be.
        self.previous_delay = if pushback {
            self.config.backoff.base()
        } else {
            delay
        };
        self.attempts += 1;
        // Copy only for an attempt that may follow this one, or for sending this one again
        // after a rejection that may still be waited out.
        self.copy = if self.attempts < self.config.max_attempts || self.may_wait_for_reopening() {
            self.policy.clone_request(&copy)
        } else {
            None
        };
        self.pending = Some(copy);
        Next::Wait(delay, result)
    }

    /// Whether a rejection of the next attempt could still be waited out (so its request must
    /// be kept).
    fn may_wait_for_reopening(&self) -> bool {
        self.config.reopening_wait.is_some() && !self.waited_for_reopening
    }

    /// Whether the next attempt may still start now: the wait may have used the time left.
    fn still_in_time(&self, request: &Req) -> bool {
        self.fits_in_time(request, Duration::ZERO)
    }

    /// Whether waiting `delay` and starting another attempt is still within the request's
    /// deadline and the total time limit. Reads the clock only if either is set.
    fn fits_in_time(&self, request: &Req, delay: Duration) -> bool {
        let deadline = request
            .extensions()
            .and_then(|extensions| extensions.get::<Deadline>())
            .copied();
        if deadline.is_none() && self.config.max_elapsed.is_none() {
            return true;
        }
        let now = Instant::now();
        let resume = now.checked_add(delay);
        if let Some(deadline) = deadline {
            if resume.is_none_or(|at| at >= deadline.instant()) {
                tracing::debug!(?delay, "the deadline leaves no time for another attempt");
                return false;
            }
        }
        if let (Some(limit), Some(started)) = (self.config.max_elapsed, self.started) {
            if resume.is_none_or(|at| at.saturating_duration_since(started) >= limit) {
                tracing::debug!(
                    ?delay,
                    "the total time limit leaves no time for another attempt"
                );
                return false;
            }
        }
        true
    }

    /// A uniform draw for jitter: from the layer's seeded source, or this thread's.
    fn draw(&self) -> f64 {
        crate::random::draw(self.random.as_deref())
    }
}

impl<S: Service<Req>, Req, P> fmt::Debug for ResponseFuture<S, Req, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Calling { .. } => "Calling",
            State::BackingOff { .. } => "BackingOff",
            State::Readying { .. } => "Readying",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("attempts", &self.retry.attempts)
            .finish_non_exhaustive()
    }
}
