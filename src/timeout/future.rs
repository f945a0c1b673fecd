//! The timeout layers' futures and the lazily armed timer they share.

use std::fmt;
use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::task::coop;
use tokio::time::Sleep;

use super::{TimedOut, TimeoutKind};
use crate::clock::Instant;
use crate::error::BoxError;
use crate::hook::Hook;
use crate::instruments::{Call, Outcome};

/// When a request's timer should fire.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Expiry {
    /// `limit` after the first poll that finds the inner future pending. Nothing is read or
    /// registered before that, so a future that is ready on its first poll costs no clock read
    /// and no timer.
    After(Duration),
    /// At a fixed instant (a deadline was involved, so the clock was read at the call anyway);
    /// `since` is when the call was made, to report how long the request was given.
    At { at: Instant, since: Instant },
    /// Never: the limit is too far away to represent.
    Never,
}

pin_project! {
    /// A timer armed on the first `Pending`, not at the call.
    pub(crate) struct Timer {
        #[pin]
        sleep: Option<Sleep>,
        expiry: Expiry,
        kind: TimeoutKind,
        on_timeout: Hook<TimedOut>,
        // The call's metrics (nothing without the `metrics` feature).
        call: Call,
    }
}

impl Timer {
    pub(crate) fn new(
        expiry: Expiry,
        kind: TimeoutKind,
        on_timeout: Hook<TimedOut>,
        call: Call,
    ) -> Self {
        Self {
            sleep: None,
            expiry,
            kind,
            on_timeout,
            call,
        }
    }

    /// Records that the inner future answered in time, with `outcome`.
    #[inline]
    pub(crate) fn answered(self: Pin<&mut Self>, outcome: Outcome) {
        self.project().call.finish(outcome);
    }

    /// Arms the timer if needed and polls it; on expiry, the rejection to report. Call only
    /// after the inner future returned `Pending`: the inner future's waker is registered then,
    /// so returning `Pending` for a timer that never fires still wakes the task when the inner
    /// future progresses.
    ///
    /// Kept out of line: it is the slow path, and the response futures' ready path stays small
    /// enough to inline.
    #[inline(never)]
    pub(crate) fn poll_expired(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<TimedOut> {
        let mut this = self.project();
        if this.sleep.is_none() {
            let at = match *this.expiry {
                // `Duration::MAX` is no limit of its own (a timeout configured off): nothing to
                // read or arm.
                Expiry::After(Duration::MAX) | Expiry::Never => None,
                Expiry::After(limit) => Instant::now().checked_add(limit),
                Expiry::At { at, .. } => Some(at),
            };
            let Some(at) = at else {
                *this.expiry = Expiry::Never;
                return Poll::Pending;
            };
            this.sleep.set(Some(tokio::time::sleep_until(at)));
        }
        let Some(sleep) = this.sleep.as_pin_mut() else {
            return Poll::Pending;
        };
        // Unconstrained: an inner future that spends the task's whole cooperative budget on
        // every poll (draining a busy socket, say) would otherwise make tokio report the sleep as
        // pending forever, and the timeout would never fire. Firing is a one-off, so skipping
        // the budget here cannot starve anything.
        ready!(pin!(coop::unconstrained(sleep)).poll(cx));
        let after = match *this.expiry {
            Expiry::After(limit) => limit,
            Expiry::At { at, since } => at.saturating_duration_since(since),
            Expiry::Never => Duration::MAX,
        };
        let timed_out = TimedOut::new(after, *this.kind);
        tracing::trace!(after = ?timed_out.after(), kind = ?timed_out.kind(), "request timed out");
        this.call.timed_out(timed_out.kind().label());
        this.on_timeout.emit(&timed_out);
        Poll::Ready(timed_out)
    }

    fn is_armed(&self) -> bool {
        self.sleep.is_some()
    }

    /// The limit this timer enforces, for `Debug`.
    fn limit(&self) -> Option<Duration> {
        match self.expiry {
            Expiry::After(limit) => Some(limit),
            Expiry::At { at, since } => Some(at.saturating_duration_since(since)),
            Expiry::Never => None,
        }
    }
}

pin_project! {
    /// The response future of [`Timeout`](super::Timeout) and
    /// [`PropagateDeadline`](super::PropagateDeadline): the inner future raced against the
    /// request's limit.
    ///
    /// It polls the inner future first, so a response that is ready at the same moment as the
    /// timer wins. The timer is armed on the first poll that finds the inner future pending.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Running {
            #[pin]
            inner: F,
            #[pin]
            timer: Timer,
        },
        Expired {
            timed_out: TimedOut,
        },
    }
}

impl<F> ResponseFuture<F> {
    #[inline]
    pub(crate) fn running(
        inner: F,
        expiry: Expiry,
        kind: TimeoutKind,
        on_timeout: Hook<TimedOut>,
        call: Call,
    ) -> Self {
        Self {
            kind: Kind::Running {
                inner,
                timer: Timer::new(expiry, kind, on_timeout, call),
            },
        }
    }

    /// Fails at once: the deadline had passed before the inner service was called.
    pub(crate) fn expired(timed_out: TimedOut) -> Self {
        Self {
            kind: Kind::Expired { timed_out },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Running { inner, timer } => {
                if let Poll::Ready(result) = inner.poll(cx) {
                    timer.answered(if result.is_ok() {
                        Outcome::Success
                    } else {
                        Outcome::Failure
                    });
                    return Poll::Ready(result.map_err(Into::into));
                }
                let timed_out = ready!(timer.poll_expired(cx));
                Poll::Ready(Err(timed_out.into()))
            }
            KindProj::Expired { timed_out } => {
                tracing::trace!("request deadline had already passed; inner service not called");
                Poll::Ready(Err((*timed_out).into()))
            }
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Running { timer, .. } => f
                .debug_struct("ResponseFuture::Running")
                .field("limit", &timer.limit())
                .field("armed", &timer.is_armed())
                .finish(),
            Kind::Expired { timed_out } => f
                .debug_struct("ResponseFuture::Expired")
                .field("timed_out", timed_out)
                .finish(),
        }
    }
}

#[cfg(feature = "http")]
pub use self::server::ServerResponseFuture;

#[cfg(feature = "http")]
mod server {
    use std::fmt;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, ready};

    use http::{Response, StatusCode};
    use pin_project_lite::pin_project;

    use super::{Expiry, Timer};
    use crate::hook::Hook;
    use crate::http::{Problem, ResponseBody};
    use crate::instruments::{Call, Outcome};
    use crate::timeout::{TimedOut, TimeoutKind};

    pin_project! {
        /// The response future of [`ServerTimeout`](crate::timeout::ServerTimeout): the
        /// handler's response, or a problem+json response when it runs out of time or the
        /// request is refused before the handler runs.
        pub struct ServerResponseFuture<F> {
            #[pin]
            kind: Kind<F>,
        }
    }

    pin_project! {
        #[project = KindProj]
        enum Kind<F> {
            Running {
                #[pin]
                inner: F,
                #[pin]
                timer: Timer,
                status: StatusCode,
            },
            Answer {
                problem: Problem,
            },
        }
    }

    impl<F> ServerResponseFuture<F> {
        pub(crate) fn running(
            inner: F,
            expiry: Expiry,
            kind: TimeoutKind,
            status: StatusCode,
            on_timeout: Hook<TimedOut>,
            call: Call,
        ) -> Self {
            Self {
                kind: Kind::Running {
                    inner,
                    timer: Timer::new(expiry, kind, on_timeout, call),
                    status,
                },
            }
        }

        /// Answers with `problem` without calling the handler.
        pub(crate) fn answer(problem: Problem) -> Self {
            Self {
                kind: Kind::Answer { problem },
            }
        }
    }

    impl<F, B, E> Future for ServerResponseFuture<F>
    where
        F: Future<Output = Result<Response<B>, E>>,
    {
        type Output = Result<Response<ResponseBody<B>>, E>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            match self.project().kind.project() {
                KindProj::Running {
                    inner,
                    timer,
                    status,
                } => {
                    if let Poll::Ready(result) = inner.poll(cx) {
                        // A handler's 5xx is a failure; its other answers are successes.
                        let failed = result
                            .as_ref()
                            .map_or(true, |response| response.status().is_server_error());
                        timer.answered(if failed {
                            Outcome::Failure
                        } else {
                            Outcome::Success
                        });
                        return Poll::Ready(result.map(|response| response.map(ResponseBody::new)));
                    }
                    let timed_out = ready!(timer.poll_expired(cx));
                    let problem = timed_out.problem().with_status(*status);
                    Poll::Ready(Ok(problem.into_http_response()))
                }
                KindProj::Answer { problem } => {
                    Poll::Ready(Ok(problem.clone().into_http_response()))
                }
            }
        }
    }

    impl<F> fmt::Debug for ServerResponseFuture<F> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match &self.kind {
                Kind::Running { timer, status, .. } => f
                    .debug_struct("ServerResponseFuture::Running")
                    .field("limit", &timer.limit())
                    .field("armed", &timer.is_armed())
                    .field("status", status)
                    .finish(),
                Kind::Answer { problem } => f
                    .debug_struct("ServerResponseFuture::Answer")
                    .field("problem", problem)
                    .finish(),
            }
        }
    }
}
