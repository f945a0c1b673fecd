//! [`Policy`]: which requests are retried, and after which results.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use crate::classify::{Classify, DefaultClassifier, Outcome};
use crate::error::{BoxError, Rejection};

/// What the retry layer does after an attempt.
///
/// The decision also tells the [`RetryBudget`](super::RetryBudget) what the attempt was:
/// [`Done`](Self::Done) counts as a success, [`Retry`](Self::Retry) and
/// [`RetryAfter`](Self::RetryAfter) as failures (whether or not a retry follows), and
/// [`Ignore`](Self::Ignore) as nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Return this result: the attempt succeeded (or failed in a way that counts as success,
    /// such as a 404).
    Done,
    /// Retry after the backoff's wait.
    Retry,
    /// Retry after exactly this long: the server (`Retry-After`) or an open circuit said when.
    /// A wait longer than the layer's maximum pushback returns the result instead.
    RetryAfter(Duration),
    /// Return this result, and count it nowhere: it says nothing about the dependency's
    /// health (a cancelled call, a deadline that had already passed, a circuit held open by
    /// hand).
    Ignore,
}

/// Decides which requests may be retried and which results call for a retry.
///
/// The two questions are separate: [`clone_request`](Self::clone_request) looks at the request
/// (is it safe to repeat, can it be replayed?) and produces the copy for the next attempt;
/// [`decide`](Self::decide) looks at one attempt's result. The retry layer itself needs no
/// `Req: Clone`: a policy clones, or refuses.
///
/// Implemented by [`RetryFailures`] (any `Clone` request, classifier-driven) and, with the
/// `http` feature, [`HttpPolicy`](super::HttpPolicy).
pub trait Policy<Req, Res> {
    /// A copy of `request` for another attempt, or `None` if it must not be retried.
    fn clone_request(&self, request: &Req) -> Option<Req>;

    /// What to do with one attempt's result (the inner error already converted to a
    /// [`BoxError`]).
    fn decide(&self, result: &Result<Res, BoxError>) -> Decision;

    /// Writes what went wrong with a result the layer retries or gives up on, for its
    /// `tracing` events (only called when they are enabled). By default: `error: ` and the
    /// error, or `failure response`; the HTTP policy writes the status.
    ///
    /// # Errors
    ///
    /// Only the formatter's.
    fn describe(&self, result: &Result<Res, BoxError>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match result {
            Err(error) => write!(f, "error: {error}"),
            Ok(_) => f.write_str("failure response"),
        }
    }
}

/// Formats a result through [`Policy::describe`], lazily, as a `tracing` field.
pub(crate) struct Described<'a, P, Req, Res> {
    policy: &'a P,
    result: &'a Result<Res, BoxError>,
    request: PhantomData<fn(&Req)>,
}

impl<'a, P, Req, Res> Described<'a, P, Req, Res> {
    pub(crate) fn new(policy: &'a P, result: &'a Result<Res, BoxError>) -> Self {
        Self {
            policy,
            result,
            request: PhantomData,
        }
    }
}

impl<P: Policy<Req, Res>, Req, Res> fmt::Display for Described<'_, P, Req, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.policy.describe(self.result, f)
    }
}

/// The default policy: retries what its classifier calls a
/// [`Failure`](crate::classify::Outcome::Failure), honouring pushback, for any `Clone` request.
///
/// - The wait comes from the backoff, unless the classifier reports pushback
///   ([`Classify::pushback`], e.g. `Retry-After` with
///   [`StatusClassifier`](crate::classify::StatusClassifier)) or the error is a palisade
///   rejection that says when to come back (an open circuit's `retry_after`).
/// - A rejection that says retrying is pointless is not retried: an isolated circuit (no end
///   in sight) or a timeout whose deadline has passed.
#[derive(Clone, Copy, Debug, Default)]
pub struct RetryFailures<C = DefaultClassifier> {
    classifier: C,
}

impl<C> RetryFailures<C> {
    /// Retries what `classifier` calls a failure.
    pub fn new(classifier: C) -> Self {
        Self { classifier }
    }
}

impl<Req: Clone, Res, C: Classify<Res, BoxError>> Policy<Req, Res> for RetryFailures<C> {
    fn clone_request(&self, request: &Req) -> Option<Req> {
        Some(request.clone())
    }

    fn decide(&self, result: &Result<Res, BoxError>) -> Decision {
        decide_by(&self.classifier, result)
    }
}

/// The shared decision: classify, then look for pushback in the result or its error.
pub(crate) fn decide_by<Res, C: Classify<Res, BoxError>>(
    classifier: &C,
    result: &Result<Res, BoxError>,
) -> Decision {
    match classifier.classify(result) {
        Outcome::Failure => {}
        Outcome::Ignore => return Decision::Ignore,
        Outcome::Success => return Decision::Done,
    }
    if let Some(pushback) = classifier.pushback(result) {
        return Decision::RetryAfter(pushback);
    }
    let Err(error) = result else {
        return Decision::Retry;
    };
    match Rejection::find(&**error) {
        None => Decision::Retry,
        Some(rejection) => rejection_decision(rejection),
    }
}

/// How a palisade rejection met by an attempt bears on retrying it. The rejections that make
/// a retry pointless say nothing of the dependency's health either: they are ignored.
#[allow(unreachable_patterns)] // the variants present depend on the features enabled
fn rejection_decision(rejection: Rejection<'_>) -> Decision {
    match rejection {
        #[cfg(feature = "timeout")]
        Rejection::TimedOut(timed_out) if timed_out.is_deadline() => Decision::Ignore,
        #[cfg(feature = "circuit-breaker")]
        Rejection::CircuitOpen(open) => match open.retry_after() {
            Some(wait) => Decision::RetryAfter(wait),
            None => Decision::Ignore,
        },
        #[cfg(feature = "http")]
        Rejection::InvalidDeadlineHeader(_) => Decision::Ignore,
        _ => Decision::Retry,
    }
}
