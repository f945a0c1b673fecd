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
/// Its `Display` names the breaker (its [name](super::CircuitBreakerBuilder::name)) and the
/// time left, e.g. `circuit open (breaker "payments"): calls resume in 1.25s`; its
/// [problem](Self::problem) leaves the name out (a client need not learn what is behind it).
///
/// Rejecting reads no clock: the time left is computed when you ask for it. The rejection is
/// two machine words with no reference count (the name is an interned index), so returning it
/// through the response future costs what returning two integers does.
#[derive(Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub struct CircuitOpen {
    /// `[state 2 | reopening time 62]`: the refusing state (0 open, 1 half-open, 2 isolated)
    /// and the time the breaker lets calls through again, in nanoseconds since the clock's
    /// process-wide anchor (all ones: not known). 2^62 ns is about 146 years.
    word: u64,
    /// The breaker's interned name (0: none).
    name: u32,
}

const STATE_SHIFT: u32 = 62;
const REOPENS_UNKNOWN: u64 = (1 << STATE_SHIFT) - 1;

impl CircuitOpen {
    /// A rejection by `state` (open, half-open or isolated), letting calls through again
    /// `reopens` nanoseconds after the anchor, if known.
    #[inline]
    pub(crate) fn new(state: State, reopens: Option<u64>) -> Self {
        let code = match state {
            State::HalfOpen => 1,
            State::Isolated => 2,
            _ => 0,
        };
        let reopens = reopens.map_or(REOPENS_UNKNOWN, |ns| ns.min(REOPENS_UNKNOWN - 1));
        Self {
            word: (code << STATE_SHIFT) | reopens,
            name: 0,
        }
    }

    /// This rejection, by the breaker whose interned name is `name`.
    #[inline]
    pub(crate) fn named(self, name: u32) -> Self {
        Self { name, ..self }
    }

    /// The name of the breaker that refused the call, if it has one (for a keyed breaker, the
    /// layer's [name](super::CircuitBreakerBuilder::name), not the key's).
    #[must_use]
    pub fn breaker(&self) -> Option<&'static str> {
        super::names::name_of(self.name)
    }

    /// The state that refused the call: [`State::Open`], [`State::HalfOpen`] (every probe slot
    /// taken) or [`State::Isolated`].
    #[must_use]
    pub fn state(&self) -> State {
        match self.word >> STATE_SHIFT {
            0 => State::Open,
            1 => State::HalfOpen,
            _ => State::Isolated,
        }
    }

    /// When the breaker will let a call through again, if it knows.
    ///
    /// For an open breaker this is one millisecond after its open duration ends: the breaker
    /// half-opens on a timer at that end, and a caller that comes back exactly when told (a
    /// retry honouring this as pushback) then finds the timer has already fired rather than
    /// racing it.
    #[must_use]
    pub fn reopens_at(&self) -> Option<Instant> {
        let ns = self.word & REOPENS_UNKNOWN;
        if ns == REOPENS_UNKNOWN {
            return None;
        }
        let anchor = crate::clock::anchor_if_fixed()?;
        Some(Epoch::new(anchor).instant(ns))
    }

    /// The time left until the breaker lets a call through again (zero if that moment has
    /// passed), if it knows. Reads tokio's clock.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        self.reopens_at()
            .map(|at| at.saturating_duration_since(Instant::now()))
    }
}

impl fmt::Debug for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitOpen")
            .field("state", &self.state())
            .field("breaker", &self.breaker())
            .field("reopens_at", &self.reopens_at())
            .finish()
    }
}

impl CircuitOpen {
    /// What happened and when calls resume, without the breaker's name.
    fn describe(&self, f: &mut fmt::Formatter<'_>, name: Option<&str>) -> fmt::Result {
        f.write_str(match self.state() {
            State::HalfOpen => "circuit half-open",
            State::Isolated => "circuit isolated",
            _ => "circuit open",
        })?;
        if let Some(name) = name {
            write!(f, " (breaker {name:?})")?;
        }
        match (self.state(), self.retry_after()) {
            (State::Isolated, _) => f.write_str(": forced open until released"),
            (State::HalfOpen, Some(left)) => write!(
                f,
                ": every probe slot is taken, for {:?} at most",
                Millis(left)
            ),
            (State::HalfOpen, None) => f.write_str(": every probe slot is taken"),
            (_, Some(left)) => write!(f, ": calls resume in {:?}", Millis(left)),
            (_, None) => Ok(()),
        }
    }
}

/// A duration shown to the millisecond, rounded up (`1.25s`, `3ms`, `0ns` once over).
struct Millis(Duration);

impl fmt::Debug for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_nanos().div_ceil(1_000_000);
        let rounded = Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX));
        fmt::Debug::fmt(&rounded, f)
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.describe(f, self.breaker())
    }
}

/// A [`CircuitOpen`] shown without its breaker's name (for the problem sent to a client).
#[cfg(feature = "http")]
struct Anonymous<'a>(&'a CircuitOpen);

#[cfg(feature = "http")]
impl fmt::Display for Anonymous<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.describe(f, None)
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
            Anonymous(self).to_string(),
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

    /// The error as the other layers return theirs: the inner service's own error, unwrapped
    /// (so `downcast_ref` finds it), or the boxed [`CircuitOpen`]. For a stack that wants
    /// `BoxError` throughout, `.map_err(CircuitBreakerError::into_box_error)`; a plain
    /// `BoxError::from` keeps this wrapper on top, whose `source()` is the inner error's own
    /// source (it forwards `Display` and `source()` as a transparent wrapper does).
    ///
    /// ```
    /// use palisade::circuit_breaker::CircuitBreakerError;
    /// use palisade::error::BoxError;
    ///
    /// let inner: BoxError = Box::new(std::io::Error::other("connection reset"));
    /// let error = CircuitBreakerError::Inner(inner).into_box_error();
    /// assert!(error.downcast_ref::<std::io::Error>().is_some());
    /// ```
    #[must_use]
    pub fn into_box_error(self) -> BoxError {
        match self {
            Self::Inner(inner) => inner,
            Self::Open(open) => Box::new(open),
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

impl crate::rejection::RejectionKind for CircuitOpen {
    /// The call was never sent: it says nothing about the dependency.
    fn outcome(&self) -> Option<crate::classify::Outcome> {
        Some(crate::classify::Outcome::Ignore)
    }
    fn protects_dependency(&self) -> bool {
        true
    }
    fn reopens_at(&self) -> Option<Instant> {
        Self::reopens_at(self)
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_rejection_keeps_its_state_and_says_when_it_does_not_know_the_time() {
        for state in [State::Open, State::HalfOpen, State::Isolated] {
            let open = CircuitOpen::new(state, None);
            assert_eq!(open.state(), state);
            assert_eq!(open.reopens_at(), None);
            assert_eq!(open.retry_after(), None);
        }
    }

    #[test]
    fn a_reopening_time_too_far_away_to_name_is_clamped_not_mistaken_for_unknown() {
        let open = CircuitOpen::new(State::HalfOpen, Some(u64::MAX));
        assert_eq!(open.state(), State::HalfOpen);
        assert_eq!(open.word & REOPENS_UNKNOWN, REOPENS_UNKNOWN - 1);
    }

    #[test]
    fn a_rejection_is_two_words_with_no_reference_count() {
        assert_eq!(size_of::<CircuitOpen>(), 2 * size_of::<u64>());
    }

    #[test]
    fn a_rejection_names_its_breaker_and_the_time_left_but_its_problem_does_not_name_it() {
        let id = super::super::names::intern(Some("error-test-payments"));
        let isolated = CircuitOpen::new(State::Isolated, None).named(id);
        assert_eq!(
            isolated.to_string(),
            "circuit isolated (breaker \"error-test-payments\"): forced open until released"
        );
        assert_eq!(isolated.breaker(), Some("error-test-payments"));
        let unnamed = CircuitOpen::new(State::Open, None);
        assert_eq!(unnamed.to_string(), "circuit open");
        #[cfg(feature = "http")]
        assert_eq!(
            isolated.problem().detail(),
            "circuit isolated: forced open until released"
        );
    }
}
