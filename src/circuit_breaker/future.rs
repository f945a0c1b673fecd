//! The breaker's response future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use super::breaker::{Breaker, Permit};
use super::error::{CircuitBreakerError, CircuitOpen};
use crate::classify::Classify;
use crate::clock::Instant;
use crate::error::BoxError;
use crate::instruments;

/// An admitted call's claim on the breaker: records the outcome exactly once, or gives the
/// permit back if the future is dropped first (the caller went away; nothing is learned).
pub(crate) struct Call<C> {
    breaker: Arc<Breaker<C>>,
    permit: Option<Permit>,
    started: Option<Instant>,
    /// The call's metrics (nothing without the `metrics` feature); dropped unfinished, it
    /// counts the call cancelled.
    metrics: instruments::Call,
}

impl<C> Call<C> {
    /// Claims an admitted call: reads the clock only when slow calls are timed and the call is
    /// tracked.
    #[inline(always)]
    pub(crate) fn start(breaker: Arc<Breaker<C>>, permit: Permit) -> Self {
        let started =
            (breaker.times_calls() && permit != Permit::Untracked).then(|| breaker.clock().now());
        let metrics = breaker.instruments().calls.start();
        Self {
            breaker,
            permit: Some(permit),
            started,
            metrics,
        }
    }

    fn finish<Res, E>(&mut self, result: &Result<Res, E>)
    where
        C: Classify<Res, E> + Send + Sync + 'static,
    {
        // The permit stays claimed until `record` returns: the classifier is user code, and if it
        // panics the unwinding drop gives the permit (a half-open probe slot) back. `record` runs
        // no user code after it has changed the state, so nothing is released twice.
        if let Some(permit) = self.permit {
            let outcome = self.breaker.record(permit, self.started, result);
            self.permit = None;
            self.metrics.finish(outcome.into());
        }
    }
}

impl<C> Drop for Call<C> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.breaker.release(permit);
        }
    }
}

pin_project! {
    /// The response future of [`CircuitBreaker`](super::CircuitBreaker).
    ///
    /// A rejected call resolves at once to [`CircuitBreakerError::Open`]. An admitted call
    /// resolves to the inner service's result, after recording its outcome with the breaker;
    /// dropped before that, it gives back a half-open probe slot and records nothing.
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, C> {
        Admitted {
            #[pin]
            inner: F,
            call: Call<C>,
        },
        Rejected {
            rejection: CircuitOpen,
        },
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn admitted(inner: F, call: Call<C>) -> Self {
        Self {
            kind: Kind::Admitted { inner, call },
        }
    }

    pub(crate) fn rejected(rejection: CircuitOpen) -> Self {
        Self {
            kind: Kind::Rejected { rejection },
        }
    }
}

impl<F, C, Res, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
    C: Classify<Res, E> + Send + Sync + 'static,
{
    type Output = Result<Res, CircuitBreakerError>;

    // Always inlined, as the service's `call` is: the caller then reads the outcome and the
    // rejection straight from where `call` wrote them.
    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Admitted { inner, call } => {
                let result = ready!(inner.poll(cx));
                call.finish(&result);
                Poll::Ready(result.map_err(|e| CircuitBreakerError::Inner(e.into())))
            }
            KindProj::Rejected { rejection } => {
                Poll::Ready(Err(CircuitBreakerError::Open(*rejection)))
            }
        }
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Admitted { call, .. } => f
                .debug_struct("ResponseFuture::Admitted")
                .field("permit", &call.permit)
                .finish(),
            Kind::Rejected { rejection } => f
                .debug_struct("ResponseFuture::Rejected")
                .field("rejection", rejection)
                .finish(),
        }
    }
}
