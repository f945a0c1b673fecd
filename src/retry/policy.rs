//! [`Policy`]: which requests are retried, and after which results.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use crate::classify::{Classify, DefaultClassifier, Outcome};
use crate::clock::Instant;
use crate::error::{BoxError, Rejection};

/// What the retry layer does after an attempt.
///
/// The decision also tells the [`RetryBudget`](super::RetryBudget) what the attempt was:
/// [`Done`](Self::Done) counts as a success, [`Retry`](Self::Retry) and
/// [`RetryAfter`](Self::RetryAfter) as failures (whether or not a retry follows), and
/// [`Ignore`](Self::Ignore) and [`Rejected`](Self::Rejected) as nothing.
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
    /// health (a cancelled call, a deadline that had already passed).
    Ignore,
    /// A layer inside refused to send the attempt, to protect the dependency (an open circuit,
    /// a throttle), and expects to let calls through again at this instant, if it knows.
    ///
    /// Counted nowhere and never an attempt: by default the rejection is returned at once;
    /// with [`wait_for_reopening`](super::RetryLayer::wait_for_reopening), a short reopening
    /// is waited out once per call.
    Rejected(Option<Instant>),
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
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot retry a `{Req}` answered by `{Res}`",
    note = "`HttpPolicy` retries `http::Request<ReplayBody<B>>`: put `BufferBodyLayer` outside \
            the retry (it makes any body a `ReplayBody`), and type the client inside on it, \
            e.g. `Client::builder(..).build_http::<ReplayBody<Full<Bytes>>>()`",
    note = "`RetryFailures` (the default policy) retries any request that is `Clone`"
)]
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
///   [`StatusClassifier`](crate::classify::StatusClassifier)).
/// - A palisade rejection that protects the dependency (an open circuit, a throttle) is
///   [`Decision::Rejected`], whatever the classifier says: returned at once, not retried.
/// - A timeout whose deadline has passed is not retried (the shipped classifiers ignore it).
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

/// The shared decision: a protective rejection first, then classify, then look for pushback in
/// the result or its error.
pub(crate) fn decide_by<Res, C: Classify<Res, BoxError>>(
    classifier: &C,
    result: &Result<Res, BoxError>,
) -> Decision {
    if let Err(error) = result {
        if let Some(rejection) = Rejection::find(&**error) {
            if rejection.protects_dependency() {
                return Decision::Rejected(rejection.reopens_at());
            }
        }
    }
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

/// How a palisade rejection that a classifier called a failure bears on retrying it: one that
/// makes a retry pointless (a deadline that has passed, a malformed deadline header) is not
/// retried, and says nothing of the dependency's health either.
#[allow(unreachable_patterns)] // the variants present depend on the features enabled
fn rejection_decision(rejection: Rejection<'_>) -> Decision {
    match rejection {
        #[cfg(feature = "timeout")]
        Rejection::TimedOut(timed_out) if timed_out.is_deadline() => Decision::Ignore,
        #[cfg(all(feature = "timeout", feature = "http"))]
        Rejection::InvalidDeadlineHeader(_) => Decision::Ignore,
        _ => Decision::Retry,
    }
}
