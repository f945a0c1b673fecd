//! [`Timeout`].

use std::task::{Context, Poll};
use std::time::Duration;

use tower_service::Service;

use super::future::{Expiry, ResponseFuture};
use super::{FixedTimeout, TimedOut, TimeoutKind, TimeoutOverride, TimeoutPolicy};
use crate::RequestExtensions;
use crate::clock::Instant;
use crate::deadline::Deadline;
use crate::error::BoxError;
use crate::hook::Hook;
use crate::instruments::{Calls, LayerKind, name_label};

/// Limits how long the inner service may take to answer each request: see the
/// [module docs](crate::timeout).
///
/// Built by [`TimeoutLayer`](super::TimeoutLayer) or [`Timeout::new`]. Its error type is
/// [`BoxError`]: the inner service's error, or a [`TimedOut`].
///
/// # Clone
///
/// A timeout keeps no shared state; a clone is an independent timeout around a clone of the
/// inner service.
///
/// # Panics
///
/// Polling its response future panics, as any tokio timer does, if the inner future is pending
/// and the tokio runtime was built without its time driver (`enable_time` / `enable_all`). A
/// future that is ready on its first poll needs no runtime at all.
#[derive(Clone, Debug)]
pub struct Timeout<S, P = FixedTimeout> {
    inner: S,
    policy: P,
    publish_deadline: bool,
    on_timeout: Hook<TimedOut>,
    calls: Calls,
}

impl<S> Timeout<S> {
    /// Limits every request to `inner` to `timeout` (and to its deadline, whichever is sooner).
    #[must_use]
    pub fn new(inner: S, timeout: Duration) -> Self {
        let calls = timeout_calls(LayerKind::Timeout, None);
        Self::with_policy(
            inner,
            FixedTimeout::new(timeout),
            false,
            Hook::default(),
            calls,
        )
    }
}

/// The instruments of a timeout layer called `name` (the server's refuses malformed deadline
/// headers).
pub(super) fn timeout_calls(layer: LayerKind, name: Option<&str>) -> Calls {
    let reasons: &[&str] = match layer {
        LayerKind::ServerTimeout => &["invalid_deadline"],
        _ => &[],
    };
    Calls::new(
        layer,
        &name_label(name),
        reasons,
        super::error::TIMEOUT_KINDS,
    )
}

impl<S, P> Timeout<S, P> {
    pub(crate) fn with_policy(
        inner: S,
        policy: P,
        publish_deadline: bool,
        on_timeout: Hook<TimedOut>,
        calls: Calls,
    ) -> Self {
        Self {
            inner,
            policy,
            publish_deadline,
            on_timeout,
            calls,
        }
    }

    crate::inner_accessors!();
}

impl<S, P, Req> Service<Req> for Timeout<S, P>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    P: TimeoutPolicy<Req>,
    Req: RequestExtensions,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, mut request: Req) -> Self::Future {
        let extensions = request.extensions();
        let limit = match extensions.and_then(|e| e.get::<TimeoutOverride>()) {
            Some(TimeoutOverride(limit)) => *limit,
            None => self.policy.timeout(&request),
        };
        let deadline = extensions.and_then(|e| e.get::<Deadline>()).copied();

        if deadline.is_none() && !self.publish_deadline {
            // The common path: no clock read and no timer until the inner future is pending
            // (with the `metrics` feature, the call's duration reads it).
            let call = self.calls.start();
            return ResponseFuture::running(
                self.inner.call(request),
                Expiry::After(limit),
                TimeoutKind::Limit,
                self.on_timeout.clone(),
                call,
            );
        }

        // A deadline is involved, so the expiry must be an instant: read the clock once.
        let now = Instant::now();
        if let Some(deadline) = deadline {
            if deadline.is_expired_at(now) {
                let timed_out = TimedOut::new(Duration::ZERO, TimeoutKind::Deadline);
                self.calls.expired(TimeoutKind::Deadline.label());
                self.on_timeout.emit(&timed_out);
                return ResponseFuture::expired(timed_out);
            }
        }
        let own = now.checked_add(limit);
        let (expiry, kind) = match (deadline, own) {
            (Some(deadline), Some(own)) if deadline.instant() < own => {
                (Some(deadline.instant()), TimeoutKind::Deadline)
            }
            (Some(deadline), None) => (Some(deadline.instant()), TimeoutKind::Deadline),
            (_, own) => (own, TimeoutKind::Limit),
        };
        if let (Some(at), TimeoutKind::Limit) = (expiry, kind) {
            // Our limit is the tighter bound: let everything inside see it.
            if let Some(extensions) = request.extensions_mut() {
                match extensions.get_mut::<Deadline>() {
                    Some(existing) => *existing = Deadline::at(at),
                    None if self.publish_deadline => {
                        extensions.insert(Deadline::at(at));
                    }
                    None => {}
                }
            }
        }
        let expiry = match expiry {
            Some(at) => Expiry::At { at, since: now },
            None => Expiry::Never,
        };
        let on_timeout = self.on_timeout.clone();
        let call = self.calls.start();
        ResponseFuture::running(self.inner.call(request), expiry, kind, on_timeout, call)
    }
}
