//! The breaker's rejection and error type.

use std::fmt;
use std::time::Duration;

use super::State;
use crate::clock::{Epoch, Instant};
use crate::error::BoxError;

/// The breaker refused the call without calling the inner service.
///
/// [`retry_after`](Self::retry_after) is the time left until the breaker will let a call
/// through again: until an open breaker half-opens (plus one millisecond, see
/// [`reopens_at`](Self::reopens_at)), or until a half-open breaker's busy probes count as
/// stuck. An isolated breaker (forced open through its handle) has none.
///
/// Rejecting reads no clock: the time left is computed when you ask for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub struct CircuitOpen {
    /// The state that refused the call: [`State::Open`], [`State::HalfOpen`] (every probe
    /// slot taken) or [`State::Isolated`].
    pub state: State,
    /// The breaker's epoch and the reopening time in ms since it: turned into an instant only
    /// when asked, so rejecting does no time arithmetic.
    reopens: Option<(Epoch, u64)>,
}

impl CircuitOpen {
    pub(crate) fn new(state: State, reopens: Option<(Epoch, u64)>) -> Self {
        Self { state, reopens }
    }

    /// When the breaker will let a call through again, if it knows.
    ///
    /// For an open breaker this is one millisecond after its open duration ends: the breaker
    /// half-opens on a timer at that end, and a caller that comes back exactly when told (a
    /// retry honouring this as pushback) then finds the timer has already fired rather than
    /// racing it.
    #[must_use]
    pub fn reopens_at(&self) -> Option<Instant> {
        let margin = u64::from(self.state == State::Open);
        self.reopens
            .map(|(epoch, ms)| epoch.instant(ms.saturating_add(margin).saturating_mul(1_000_000)))
    }

    /// The time left until the breaker lets a call through again (zero if that moment has
    /// passed), if it knows. Reads tokio's clock.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        self.reopens_at()
            .map(|at| at.saturating_duration_since(Instant::now()))
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.state {
            State::HalfOpen => f.write_str("circuit half-open: every probe slot is taken"),
            State::Isolated => f.write_str("circuit isolated: forced open"),
            _ => f.write_str("circuit open"),
        }
    }
}

#[cfg(feature = "http")]
impl CircuitOpen {
    /// `503 Service Unavailable`.
    #[must_use]
    pub fn status(&self) -> http::StatusCode {
        http::StatusCode::SERVICE_UNAVAILABLE
    }

    /// This rejection as a problem description, with `Retry-After` when the breaker knows when
    /// it will let calls through again.
    #[must_use]
    pub fn problem(&self) -> crate::http::Problem {
        let problem = crate::http::Problem::new(
            self.status(),
            "urn:palisade:circuit-open",
            "Circuit open",
            self.to_string(),
        );
        match self.retry_after() {
            Some(retry_after) => problem.with_retry_after(retry_after),
            None => problem,
        }
    }
}

/// The error of a [`CircuitBreaker`](super::CircuitBreaker): its own rejection, or the inner
/// service's error.
///
/// A concrete enum rather than a bare [`BoxError`], so that rejecting a call allocates nothing.
/// It converts into a `BoxError` like any error, stacks under tower's layers, and
/// [`Rejection::find`](crate::error::Rejection::find) sees through it. `Display` and `source()`
/// are the inner error's own for [`Inner`](Self::Inner).
#[derive(Debug)]
#[non_exhaustive]
pub enum CircuitBreakerError {
    /// The breaker refused the call.
    Open(CircuitOpen),
    /// The inner service failed.
    Inner(BoxError),
}

impl CircuitBreakerError {
    /// The rejection, if the breaker refused the call.
    #[must_use]
    pub fn as_open(&self) -> Option<&CircuitOpen> {
        match self {
            Self::Open(open) => Some(open),
            Self::Inner(_) => None,
        }
    }

    /// The inner service's error, if that is what this is.
    #[must_use]
    pub fn into_inner(self) -> Option<BoxError> {
        match self {
            Self::Inner(inner) => Some(inner),
            Self::Open(_) => None,
        }
    }
}

impl fmt::Display for CircuitBreakerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Open(open) => fmt::Display::fmt(open, f),
            Self::Inner(inner) => fmt::Display::fmt(inner, f),
        }
    }
}

impl std::error::Error for CircuitBreakerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Open(_) => None,
            Self::Inner(inner) => inner.source(),
        }
    }
}

impl From<CircuitOpen> for CircuitBreakerError {
    fn from(open: CircuitOpen) -> Self {
        Self::Open(open)
    }
}
