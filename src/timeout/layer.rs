//! [`TimeoutLayer`].

use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::service::timeout_calls;
use super::{FixedTimeout, PerRequestTimeout, TimedOut, Timeout};
use crate::hook::Hook;
use crate::instruments::LayerKind;

/// Applies a [`Timeout`] to every request: see the [module docs](crate::timeout).
///
/// # Clone
///
/// The layer holds only configuration; clones and every [`Layer::layer`] call produce
/// independent, identical timeouts (a timeout keeps no shared state).
#[derive(Clone, Debug)]
#[must_use]
pub struct TimeoutLayer<P = FixedTimeout> {
    policy: P,
    publish_deadline: bool,
    on_timeout: Hook<TimedOut>,
    name: Option<Arc<str>>,
}

impl TimeoutLayer {
    /// Limits every request to `timeout` (and to its [`Deadline`](crate::deadline::Deadline),
    /// whichever comes first).
    ///
    /// `Duration::MAX` means no limit of its own: only deadlines apply, and a call without one
    /// reads no clock and arms no timer even when its inner future is pending. Every value has
    /// a meaning, so this cannot fail: a zero limit lets through only a response that is ready
    /// at its first poll.
    pub fn new(timeout: Duration) -> Self {
        Self {
            policy: FixedTimeout::new(timeout),
            publish_deadline: false,
            on_timeout: Hook::default(),
            name: None,
        }
    }

    /// Chooses each request's limit with `choose`; where it returns `None`, the limit given to
    /// [`TimeoutLayer::new`] applies.
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade::timeout::TimeoutLayer;
    ///
    /// let layer = TimeoutLayer::new(Duration::from_secs(2)).per_request(
    ///     |req: &http::Request<()>| {
    ///         req.uri().path().starts_with("/reports/").then(|| Duration::from_secs(30))
    ///     },
    /// );
    /// # let _ = layer;
    /// ```
    pub fn per_request<F>(self, choose: F) -> TimeoutLayer<PerRequestTimeout<F>> {
        TimeoutLayer {
            policy: PerRequestTimeout::new(choose, self.policy.get()),
            publish_deadline: self.publish_deadline,
            on_timeout: self.on_timeout,
            name: self.name,
        }
    }
}

impl<P> TimeoutLayer<P> {
    /// Chooses each request's limit with a [`TimeoutPolicy`](super::TimeoutPolicy) of your own.
    pub fn with_policy(policy: P) -> Self {
        Self {
            policy,
            publish_deadline: false,
            on_timeout: Hook::default(),
            name: None,
        }
    }

    /// Names this timeout: the `name` label of its metrics (feature `metrics`; see
    /// [`crate::metrics`]). Defaults to none (the label reads `unnamed`).
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Whether this timeout's expiry also becomes the request's
    /// [`Deadline`](crate::deadline::Deadline), so that everything inside it (nested timeouts,
    /// retries, deadline headers on outgoing calls) works to the same bound.
    ///
    /// Defaults to `false`. A request that already carries a deadline always has it tightened
    /// in place when this timeout is sooner, whatever this setting. Publishing into a request
    /// that carries none reads the clock at the call and inserts an extension (three small
    /// allocations when the request has no extensions yet), which the default avoids.
    pub fn publish_deadline(mut self, publish: bool) -> Self {
        self.publish_deadline = publish;
        self
    }

    /// Calls `hook` with every request this timeout abandons (its limit or the request's
    /// deadline ran out, or the deadline had passed before the call), on the task of that
    /// request, as the timer fires. Unset, it costs a request an empty pointer; set, a
    /// reference count; see [`crate::timeout#event-hooks`]. Set twice, both run.
    pub fn on_timeout(mut self, hook: impl Fn(&TimedOut) + Send + Sync + 'static) -> Self {
        self.on_timeout = self.on_timeout.then(hook);
        self
    }
}

impl<S, P: Clone> Layer<S> for TimeoutLayer<P> {
    type Service = Timeout<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout::with_policy(
            inner,
            self.policy.clone(),
            self.publish_deadline,
            self.on_timeout.clone(),
            timeout_calls(LayerKind::Timeout, self.name.as_deref()),
        )
    }
}
