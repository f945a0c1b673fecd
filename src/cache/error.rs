//! The cache's one rejection.

use std::fmt;
use std::sync::Arc;

/// The caller was coalesced behind another caller's fetch of the same key (single flight), and
/// that fetch failed: the failure is shared rather than repeated against the origin
/// ([`LeaderFailure::Share`](super::LeaderFailure::Share), the default).
///
/// The leader itself gets the inner service's own error; only its waiters get this. Its
/// `Display` carries the leader's error text; its [problem](Self::problem) does not (an inner
/// error's text may say what a client should not learn).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub struct LeaderFailed {
    error: Arc<str>,
    /// Whether the text may go to a client (the HTTP mode's own words about the origin's
    /// answer), or only to logs (an inner service's error).
    public: bool,
}

impl LeaderFailed {
    pub(crate) fn new(error: Arc<str>) -> Self {
        Self {
            error,
            public: false,
        }
    }

    /// A failure described in the cache's own words, fit for a client.
    #[cfg(feature = "http")]
    pub(crate) fn public(text: Arc<str>) -> Self {
        Self {
            error: text,
            public: true,
        }
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
            if self.public {
                self.to_string()
            } else {
                "the fetch this request waited for failed".to_owned()
            },
        )
    }
}

impl crate::rejection::RejectionKind for LeaderFailed {
    /// It stands for the origin's failure, which the leader's own result already reported.
    fn outcome(&self) -> Option<crate::classify::Outcome> {
        None
    }
}

#[cfg(all(test, feature = "http", not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_waiters_problem_does_not_repeat_the_inner_error_but_the_http_modes_own_words_do() {
        let inner = LeaderFailed::new("password authentication failed for user app".into());
        assert!(inner.to_string().contains("password"), "logs keep it");
        assert!(
            !inner.problem().detail().contains("password"),
            "clients do not get it"
        );
        let own = LeaderFailed::public("the origin answered 503 Service Unavailable".into());
        assert!(own.problem().detail().contains("503"));
    }
}
