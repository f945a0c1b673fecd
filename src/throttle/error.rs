//! The throttle's rejection and error type.

use std::fmt;
use std::time::Duration;

use crate::clock::{Epoch, Instant};
use crate::error::BoxError;

/// The throttle refused the call without calling the inner service, to protect a dependency
/// that is failing more than it is answering.
///
/// Two kinds: **shed** while Throttling (the call lost a draw against the current
/// [`rejection_probability`](Self::rejection_probability)), or refused while **shedding**
/// (the dependency looked down, and only one probe per interval is sent; the rejection names
/// when the next probe slot opens, see [`retry_after`](Self::retry_after)).
///
/// The rejection is one machine word. A shed call reads no clock; a call refused while shedding
/// has read it once, to compare with the probe slot.
#[derive(Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub struct Throttled {
    /// `[shedding 1 | payload 63]`. Shedding: the next probe slot in nanoseconds since the
    /// clock's process-wide anchor (all ones: not known). Shed: the rejection probability in
    /// billionths.
    word: u64,
}

const SHEDDING_BIT: u64 = 1 << 63;
const PAYLOAD: u64 = SHEDDING_BIT - 1;
const BILLION: f64 = 1e9;

impl Throttled {
    /// A call shed with probability `p`.
    pub(crate) fn shed(p: f64) -> Self {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // 0..=1e9
        let billionths = (p.clamp(0.0, 1.0) * BILLION).round() as u64;
        Self { word: billionths }
    }

    /// A call refused while shedding, the next probe slot `slot` nanoseconds after the anchor,
    /// if known.
    pub(crate) fn shedding(slot: Option<u64>) -> Self {
        let payload = slot.map_or(PAYLOAD, |ns| ns.min(PAYLOAD - 1));
        Self {
            word: SHEDDING_BIT | payload,
        }
    }

    /// Whether the throttle was shedding: the dependency looked down and only probes were
    /// being sent. Otherwise the call was shed by a draw while the dependency was failing in
    /// part.
    #[must_use]
    pub fn is_shedding(&self) -> bool {
        self.word & SHEDDING_BIT != 0
    }

    /// The rejection probability the call lost against, for a call shed while Throttling.
    #[must_use]
    pub fn rejection_probability(&self) -> Option<f64> {
        #[allow(clippy::cast_precision_loss)] // at most 1e9
        let p = (self.word & PAYLOAD) as f64 / BILLION;
        (!self.is_shedding()).then_some(p)
    }

    /// When the next probe slot opens, for a call refused while shedding.
    #[must_use]
    pub fn reopens_at(&self) -> Option<Instant> {
        let ns = self.word & PAYLOAD;
        if !self.is_shedding() || ns == PAYLOAD {
            return None;
        }
        let anchor = crate::clock::anchor_if_fixed()?;
        Some(Epoch::new(anchor).instant(ns))
    }

    /// The time until the next probe slot (zero if it has passed), for a call refused while
    /// shedding. Reads tokio's clock.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        self.reopens_at()
            .map(|at| at.saturating_duration_since(Instant::now()))
    }
}

impl fmt::Debug for Throttled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_shedding() {
            f.debug_struct("Throttled::Shedding")
                .field("reopens_at", &self.reopens_at())
                .finish()
        } else {
            f.debug_struct("Throttled::Shed")
                .field("rejection_probability", &self.rejection_probability())
                .finish()
        }
    }
}

impl fmt::Display for Throttled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rejection_probability() {
            Some(p) => write!(
                f,
                "request throttled: shedding {:.0}% of calls to a failing dependency",
                p * 100.0
            ),
            None => f.write_str("request throttled: the dependency is down, only probes are sent"),
        }
    }
}

#[cfg(feature = "http")]
impl Throttled {
    /// `503 Service Unavailable`.
    #[must_use]
    pub fn status(&self) -> http::StatusCode {
        http::StatusCode::SERVICE_UNAVAILABLE
    }

    /// This rejection as a problem description, with `Retry-After` when the throttle knows when
    /// its next probe slot opens.
    #[must_use]
    pub fn problem(&self) -> crate::http::Problem {
        let problem = crate::http::Problem::new(
            self.status(),
            "urn:palisade:throttled",
            "Throttled",
            self.to_string(),
        );
        match self.retry_after() {
            Some(retry_after) => problem.with_retry_after(retry_after),
            None => problem,
        }
    }
}

/// The error of a [`Throttle`](super::Throttle): its own rejection, or the inner service's
/// error.
///
/// A concrete enum rather than a bare [`BoxError`], so that rejecting a call allocates nothing.
/// It converts into a `BoxError` like any error, and
/// [`Rejection::find`](crate::error::Rejection::find) sees through it. `Display` and `source()`
/// are the inner error's own for [`Inner`](Self::Inner).
#[derive(Debug)]
#[non_exhaustive]
pub enum ThrottleError {
    /// The throttle refused the call.
    Throttled(Throttled),
    /// The throttle was shedding and sent this call as its probe, and the call failed with
    /// `error`: the dependency is still down, and `rejection` names the next probe slot.
    ///
    /// A rejection, for every layer outside: a retry returns it at once (another attempt would
    /// only be refused, or take the next probe slot), and
    /// [`Rejection::find`](crate::error::Rejection::find) finds the [`Throttled`]. Its
    /// `source()` is the probe's own error. (A probe that failed with a *response*, such as a
    /// `503`, returns that response.)
    ProbeFailed {
        /// The throttle's rejection: the dependency is down.
        rejection: Throttled,
        /// The probe's own error.
        error: BoxError,
    },
    /// The inner service failed.
    Inner(BoxError),
}

impl ThrottleError {
    /// The rejection, if the throttle refused the call.
    #[must_use]
    pub fn as_throttled(&self) -> Option<&Throttled> {
        match self {
            Self::Throttled(throttled)
            | Self::ProbeFailed {
                rejection: throttled,
                ..
            } => Some(throttled),
            Self::Inner(_) => None,
        }
    }

    /// The inner service's error, if the call was sent and failed (a failed probe's included).
    #[must_use]
    pub fn into_inner(self) -> Option<BoxError> {
        match self {
            Self::Inner(inner) | Self::ProbeFailed { error: inner, .. } => Some(inner),
            Self::Throttled(_) => None,
        }
    }

    /// The error as the other layers return theirs: the inner service's own error, unwrapped
    /// (so `downcast_ref` finds it), or the boxed [`Throttled`]; a failed probe stays this
    /// error (a rejection whose `source()` is the probe's error). For a stack that wants
    /// `BoxError` throughout: `.map_err(ThrottleError::into_box_error)`.
    #[must_use]
    pub fn into_box_error(self) -> BoxError {
        match self {
            Self::Inner(inner) => inner,
            Self::Throttled(throttled) => Box::new(throttled),
            probe @ Self::ProbeFailed { .. } => Box::new(probe),
        }
    }
}

impl fmt::Display for ThrottleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Throttled(throttled) => fmt::Display::fmt(throttled, f),
            Self::ProbeFailed { rejection, .. } => {
                write!(f, "{rejection}; this call was the probe, and failed")
            }
            Self::Inner(inner) => fmt::Display::fmt(inner, f),
        }
    }
}

impl std::error::Error for ThrottleError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Throttled(_) => None,
            Self::ProbeFailed { error, .. } => Some(&**error),
            Self::Inner(inner) => inner.source(),
        }
    }
}

impl From<Throttled> for ThrottleError {
    fn from(throttled: Throttled) -> Self {
        Self::Throttled(throttled)
    }
}

impl crate::rejection::RejectionKind for Throttled {
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
    fn a_shed_call_keeps_its_probability_and_names_no_reopening() {
        let shed = Throttled::shed(0.25);
        assert!(!shed.is_shedding());
        assert_eq!(shed.rejection_probability(), Some(0.25));
        assert_eq!(shed.reopens_at(), None);
        assert_eq!(
            shed.to_string(),
            "request throttled: shedding 25% of calls to a failing dependency"
        );
    }

    #[test]
    fn a_shedding_rejection_without_a_known_slot_says_so() {
        let refused = Throttled::shedding(None);
        assert!(refused.is_shedding());
        assert_eq!(refused.rejection_probability(), None);
        assert_eq!(refused.reopens_at(), None);
        let far = Throttled::shedding(Some(u64::MAX));
        assert_eq!(far.word & PAYLOAD, PAYLOAD - 1, "clamped, not unknown");
    }

    #[test]
    fn a_rejection_is_one_word() {
        assert_eq!(size_of::<Throttled>(), size_of::<u64>());
    }
}
