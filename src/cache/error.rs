//! The cache's one rejection.

use std::fmt;
use std::sync::Arc;

/// The caller was coalesced behind another caller's fetch of the same key (single flight), and
/// that fetch failed: the failure is shared rather than repeated against the origin
/// ([`LeaderFailure::Share`](super::LeaderFailure::Share), the default).
///
/// The leader itself gets the inner service's own error; only its waiters get this. Its
/// `Display` carries the leader's error text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub struct LeaderFailed {
    error: Arc<str>,
}

impl LeaderFailed {
    pub(crate) fn new(error: Arc<str>) -> Self {
        Self { error }
    }

    /// The leader's error, as text.
    #[must_use]
    pub fn leader_error(&self) -> &str {
        &self.error
    }
}

impl fmt::Display for LeaderFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the coalesced fetch of this key failed: {}", self.error)
    }
}

#[cfg(feature = "http")]
impl LeaderFailed {
    /// `502 Bad Gateway`: the origin failed the fetch this request waited for.
    #[must_use]
    pub fn status(&self) -> http::StatusCode {
        http::StatusCode::BAD_GATEWAY
    }

    /// This rejection as a problem description.
    #[must_use]
    pub fn problem(&self) -> crate::http::Problem {
        crate::http::Problem::new(
            self.status(),
            "urn:palisade:cache-leader-failed",
            "Coalesced fetch failed",
            self.to_string(),
        )
    }
}

impl crate::rejection::RejectionKind for LeaderFailed {
    /// It stands for the origin's failure, which the leader's own result already reported.
    fn outcome(&self) -> Option<crate::classify::Outcome> {
        None
    }
}
