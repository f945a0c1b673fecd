//! The retry layer's one rejection.

use std::error::Error;
use std::fmt;

use crate::error::BoxError;

/// The retry budget had no retry left for a failed call, and the layer was configured to say
/// so ([`RetryLayer::fail_when_budget_exhausted`](super::RetryLayer::fail_when_budget_exhausted)).
///
/// By default an exhausted budget returns the last attempt's own result instead, and this
/// error never appears. Its `source()` is the last attempt's error.
#[derive(Debug)]
#[non_exhaustive]
pub struct BudgetExhausted {
    attempts: u32,
    last_error: BoxError,
}

impl BudgetExhausted {
    pub(crate) fn new(attempts: u32, last_error: BoxError) -> Self {
        Self {
            attempts,
            last_error,
        }
    }

    /// Attempts made before the budget ran out.
    #[must_use]
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The last attempt's error.
    #[must_use]
    pub fn last_error(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.last_error
    }
}

impl fmt::Display for BudgetExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "retry budget exhausted after {} attempt{}",
            self.attempts,
            if self.attempts == 1 { "" } else { "s" }
        )
    }
}

impl Error for BudgetExhausted {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.last_error)
    }
}

#[cfg(feature = "http")]
impl BudgetExhausted {
    /// `503 Service Unavailable`: the dependency is failing too often to retry.
    #[must_use]
    pub fn status(&self) -> http::StatusCode {
        http::StatusCode::SERVICE_UNAVAILABLE
    }

    /// This rejection as a problem description.
    #[must_use]
    pub fn problem(&self) -> crate::http::Problem {
        crate::http::Problem::new(
            self.status(),
            "urn:palisade:retry-budget-exhausted",
            "Retry budget exhausted",
            self.to_string(),
        )
    }
}

impl crate::rejection::RejectionKind for BudgetExhausted {
    /// It stands for the last real error, which the classifier judges.
    fn outcome(&self) -> Option<crate::classify::Outcome> {
        None
    }
}
