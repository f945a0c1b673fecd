//! The timeout's rejection.

use std::fmt;
use std::time::Duration;

/// The request did not complete in time: its limit or its deadline passed first.
///
/// [`after`](Self::after) is the time the request was given, from the call to expiry: the
/// layer's (or the request's own) limit, or the time its
/// [`Deadline`](crate::deadline::Deadline) left, whichever was smaller. It is zero when the
/// deadline had already passed at the call, in which case the inner service was never called.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub struct TimedOut {
    after: Duration,
    kind: TimeoutKind,
}

/// Which bound a [`TimedOut`] request ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TimeoutKind {
    /// The timeout's own limit: the layer's, a per-request closure's, or a
    /// [`TimeoutOverride`](crate::timeout::TimeoutOverride).
    Limit,
    /// The request-scoped [`Deadline`](crate::deadline::Deadline), which was sooner.
    ///
    /// A deadline published or tightened by an *outer* timeout counts as a deadline here: when
    /// timeouts nest, the innermost one that fires reports it, and the outer one's own limit
    /// shows up as `Deadline` from inside.
    Deadline,
}

impl TimeoutKind {
    /// The `kind` label of `palisade_timeouts_total`.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) const fn label(self) -> &'static str {
        match self {
            Self::Limit => "limit",
            Self::Deadline => "deadline",
        }
    }
}

/// The `kind` label values of `palisade_timeouts_total`.
pub(crate) const TIMEOUT_KINDS: &[&str] = &["limit", "deadline"];

impl TimedOut {
    pub(crate) fn new(after: Duration, kind: TimeoutKind) -> Self {
        Self { after, kind }
    }

    /// The time the request was given before it was abandoned.
    #[must_use]
    pub fn after(&self) -> Duration {
        self.after
    }

    /// Whether the timeout's own limit or the request's deadline ran out.
    #[must_use]
    pub fn kind(&self) -> TimeoutKind {
        self.kind
    }

    /// Whether the request's deadline (rather than the timeout's own limit) ran out.
    #[must_use]
    pub fn is_deadline(&self) -> bool {
        self.kind == TimeoutKind::Deadline
    }
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            TimeoutKind::Deadline if self.after.is_zero() => {
                f.write_str("request deadline had already passed")
            }
            TimeoutKind::Deadline => write!(f, "request deadline exceeded after {:?}", self.after),
            TimeoutKind::Limit => write!(f, "request timed out after {:?}", self.after),
        }
    }
}

#[cfg(feature = "http")]
impl TimedOut {
    /// `504 Gateway Timeout`: an upstream did not answer in time. The server-side timeout
    /// answers its own handler's timeouts with its configured status (503 or 408) instead.
    #[must_use]
    pub fn status(&self) -> http::StatusCode {
        http::StatusCode::GATEWAY_TIMEOUT
    }

    /// This rejection as a problem description.
    #[must_use]
    pub fn problem(&self) -> crate::http::Problem {
        crate::http::Problem::new(
            self.status(),
            "urn:palisade:timed-out",
            "Request timed out",
            self.to_string(),
        )
    }
}

impl crate::rejection::RejectionKind for TimedOut {
    /// A deadline that ran out says nothing about the dependency; a timeout's own limit is a
    /// failure (it was too slow).
    fn outcome(&self) -> Option<crate::classify::Outcome> {
        self.is_deadline()
            .then_some(crate::classify::Outcome::Ignore)
    }
}
