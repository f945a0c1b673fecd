//! How a timeout chooses each request's own limit.

use std::fmt;
use std::time::Duration;

/// Chooses the time limit of one request, before its deadline is applied.
///
/// The [`Timeout`](crate::timeout::Timeout) then limits the call to the smaller of this and the
/// time the request's [`Deadline`](crate::deadline::Deadline) leaves. A
/// [`TimeoutOverride`] in the request's extensions takes precedence over any policy.
///
/// Implemented by [`FixedTimeout`] (the default) and [`PerRequestTimeout`] (a closure).
/// `Duration::MAX` means "no limit of its own".
pub trait TimeoutPolicy<Req> {
    /// The limit for `request`.
    fn timeout(&self, request: &Req) -> Duration;
}

/// The same limit for every request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedTimeout {
    timeout: Duration,
}

impl FixedTimeout {
    /// A limit of `timeout` for every request.
    #[must_use]
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }

    /// The limit.
    #[must_use]
    pub fn get(&self) -> Duration {
        self.timeout
    }
}

impl<Req> TimeoutPolicy<Req> for FixedTimeout {
    fn timeout(&self, _request: &Req) -> Duration {
        self.timeout
    }
}

/// A limit chosen by a closure over the request; `None` falls back to the layer's limit.
///
/// Built by [`TimeoutLayer::per_request`](crate::timeout::TimeoutLayer::per_request).
#[derive(Clone)]
pub struct PerRequestTimeout<F> {
    choose: F,
    fallback: Duration,
}

impl<F> PerRequestTimeout<F> {
    pub(crate) fn new(choose: F, fallback: Duration) -> Self {
        Self { choose, fallback }
    }
}

impl<Req, F> TimeoutPolicy<Req> for PerRequestTimeout<F>
where
    F: Fn(&Req) -> Option<Duration>,
{
    fn timeout(&self, request: &Req) -> Duration {
        (self.choose)(request).unwrap_or(self.fallback)
    }
}

impl<F> fmt::Debug for PerRequestTimeout<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerRequestTimeout")
            .field("choose", &std::any::type_name::<F>())
            .field("fallback", &self.fallback)
            .finish()
    }
}

/// A request extension that replaces the timeout's own limit for that request.
///
/// It can lengthen the limit as well as shorten it (a known-slow report, say); the request's
/// [`Deadline`](crate::deadline::Deadline), if it has one, still applies. Every
/// [`Timeout`](crate::timeout::Timeout) the request passes through reads it; the server-side
/// timeout does not, since its limit is the server's cap.
///
/// ```
/// use std::time::Duration;
/// use palisade::timeout::TimeoutOverride;
///
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(TimeoutOverride(Duration::from_secs(30)));
/// # assert!(request.extensions().get::<TimeoutOverride>().is_some());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeoutOverride(pub Duration);
