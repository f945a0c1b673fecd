//! The throttle's response future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use super::error::{ThrottleError, Throttled};
use super::gate::{Gate, Permit};
use crate::classify::Classify;
use crate::clock::Instant;
use crate::error::BoxError;
use crate::instruments;

/// An admitted call's claim on the throttle: records the outcome once. A call whose future is
/// dropped first records nothing (the caller went away; nothing was learned) and holds nothing
/// to give back: a probe's slot was spent when it was taken.
pub(crate) struct Call<C> {
    gate: Arc<Gate<C>>,
    /// [`Permit::SPENT`] once the one outcome is recorded.
    permit: Permit,
    started: Option<Instant>,
    /// The call's metrics (nothing without the `metrics` feature).
    metrics: instruments::Call,
}

impl<C> Call<C> {
    /// Claims an admitted call: reads the clock only when slow calls are timed.
    #[inline(always)]
    pub(crate) fn start(gate: Arc<Gate<C>>, permit: Permit) -> Self {
        let started = gate.times_calls().then(|| gate.now());
        let metrics = gate.config().calls.start();
        Self {
            gate,
            permit,
            started,
            metrics,
        }
    }

    /// Records the outcome once; for a failed probe, the rejection its caller gets instead.
    #[inline]
    fn finish<Res, E>(&mut self, result: &Result<Res, E>) -> Option<Throttled>
    where
        C: Classify<Res, E>,
    {
        let permit = std::mem::replace(&mut self.permit, Permit::SPENT);
        if permit == Permit::SPENT {
            return None;
        }
        let (outcome, probe_failed) = self.gate.record_classified(permit, self.started, result);
        self.metrics.finish(outcome.into());
        probe_failed
    }
}

pin_project! {
    /// The response future of [`Throttle`](super::Throttle).
    ///
    /// A rejected call resolves at once to [`ThrottleError::Throttled`]. An admitted call
    /// resolves to the inner service's result, after recording its outcome with the throttle;
    /// a probe that failed with an error resolves to [`ThrottleError::ProbeFailed`].
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
            rejection: Throttled,
        },
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn admitted(inner: F, call: Call<C>) -> Self {
        Self {
            kind: Kind::Admitted { inner, call },
        }
    }

    pub(crate) fn rejected(rejection: Throttled) -> Self {
        Self {
            kind: Kind::Rejected { rejection },
        }
    }
}

impl<F, C, Res, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
    C: Classify<Res, E>,
{
    type Output = Result<Res, ThrottleError>;

    // Always inlined, as the service's `call` is.
    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Admitted { inner, call } => {
                let result = ready!(inner.poll(cx));
                let probe_failed = call.finish(&result);
                Poll::Ready(match (result, probe_failed) {
                    (Err(error), Some(rejection)) => Err(ThrottleError::ProbeFailed {
                        rejection,
                        error: error.into(),
                    }),
                    (result, _) => result.map_err(|e| ThrottleError::Inner(e.into())),
                })
            }
            KindProj::Rejected { rejection } => {
                Poll::Ready(Err(ThrottleError::Throttled(*rejection)))
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
