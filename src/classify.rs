//! Deciding whether a call succeeded: the one classification shared by the breaker and retry.
//!
//! A [`Classify`] looks at the `&Result` a service produced and says whether it was a
//! [`Success`](Outcome::Success), a [`Failure`](Outcome::Failure), or something to
//! [`Ignore`](Outcome::Ignore) (it says nothing about the dependency's health, such as a caller's
//! own cancellation). Layers that keep score take a classifier; users who only change thresholds
//! never see its type.
//!
//! - [`DefaultClassifier`]: `Ok` is a success, `Err` a failure (a palisade
//!   [`TimedOut`](crate::timeout::TimedOut) of the timeout's own limit included), except
//!   palisade's own rejections that say nothing about the dependency (below).
//! - [`StatusClassifier`] (feature `http`): for `http::Response`s, 5xx and 429 are failures and
//!   every other status a success, adjustable per status; an `Err` is a failure, with the same
//!   exception.
//! - Any closure `Fn(&Result<Res, E>) -> Outcome`.
//!
//! # palisade's own rejections
//!
//! Some errors a layer sees were made by another palisade layer, not by the dependency: the
//! request's [`Deadline`](crate::deadline::Deadline) ran out (a
//! [`TimedOut`](crate::timeout::TimedOut) of kind
//! [`Deadline`](crate::timeout::TimeoutKind::Deadline), which is also what a call whose deadline
//! had passed before it was sent gets), or the call was never sent at all (an inner breaker's
//! [`CircuitOpen`](crate::circuit_breaker::CircuitOpen), a throttle's
//! [`Throttled`](crate::throttle::Throttled), a request body that failed before sending). Both
//! shipped classifiers call these [`Ignore`](Outcome::Ignore): counting them would let a
//! caller's short deadline, or another layer's protection, open a healthy dependency's breaker
//! or drain a retry budget. A timeout of the timeout's *own* limit stays a failure: the
//! dependency was too slow.
//!
//! So a timeout only counts against a dependency when the attempt timeout fires before the
//! caller's deadline does: keep the attempt timeout below the deadlines callers bring. A
//! classifier of your own decides as it likes; [`rejection_outcome`] applies the rule above
//! for it to start from.
//!
//! # Example
//!
//! ```
//! use palisade::classify::{Classify, DefaultClassifier, Outcome};
//!
//! let ok: Result<u32, &str> = Ok(1);
//! let err: Result<u32, &str> = Err("boom");
//! assert_eq!(DefaultClassifier.classify(&ok), Outcome::Success);
//! assert_eq!(DefaultClassifier.classify(&err), Outcome::Failure);
//!
//! // A closure: not-found errors say nothing about the backend's health.
//! let custom = |result: &Result<u32, &str>| match result {
//!     Ok(_) => Outcome::Success,
//!     Err(e) if *e == "not found" => Outcome::Ignore,
//!     Err(_) => Outcome::Failure,
//! };
//! assert_eq!(custom.classify(&Err("not found")), Outcome::Ignore);
//! ```

use std::any::Any;
use std::error::Error;
use std::time::Duration;

use crate::error::{BoxError, Rejection};

/// What one call's result means for the health of the service behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The call succeeded.
    Success,
    /// The call failed in a way that counts against the service.
    Failure,
    /// The result says nothing about the service's health; it counts nowhere.
    Ignore,
}

/// Classifies a service's result as an [`Outcome`].
///
/// Implemented by [`DefaultClassifier`], [`StatusClassifier`] (feature `http`) and every closure
/// `Fn(&Result<Res, E>) -> Outcome`. It must be cheap and must not panic: layers call it on every
/// completed call.
pub trait Classify<Res, E> {
    /// The outcome of one call.
    fn classify(&self, result: &Result<Res, E>) -> Outcome;

    /// How long the server asked callers to stay away, if the result says so (server pushback,
    /// such as a `503` or `429` with `Retry-After`). Layers that honour pushback (a circuit
    /// breaker with server-directed opening, a retry) read it; the default is `None`.
    fn pushback(&self, result: &Result<Res, E>) -> Option<Duration> {
        let _ = result;
        None
    }
}

impl<F, Res, E> Classify<Res, E> for F
where
    F: Fn(&Result<Res, E>) -> Outcome,
{
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        self(result)
    }
}

/// `Ok` is a success and `Err` a failure, whatever the types, except that palisade's own
/// rejections that say nothing about the dependency are [`Ignore`](Outcome::Ignore)d (see
/// [`rejection_outcome`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DefaultClassifier;

impl<Res, E: 'static> Classify<Res, E> for DefaultClassifier {
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(error) => rejection_outcome(error).unwrap_or(Outcome::Failure),
        }
    }
}

/// What a palisade rejection inside `error` says about the dependency's health, if `error` is
/// or carries one: [`Ignore`](Outcome::Ignore) for a request deadline that ran out and for a
/// call that was never sent (an inner layer's rejection, a request body that failed before
/// sending); `None` for anything else, a timeout's own limit included, which the caller then
/// classifies as it would any error.
///
/// `error` is recognised when it is a [`BoxError`], a palisade layer's error type
/// ([`CircuitBreakerError`](crate::circuit_breaker::CircuitBreakerError),
/// [`ThrottleError`](crate::throttle::ThrottleError)) or a rejection type itself; the rejection
/// may sit anywhere in its `source()` chain. Telling the types apart is a comparison of type ids
/// that the compiler resolves, so an unrelated error type costs nothing.
///
/// ```
/// use std::time::Duration;
/// use palisade::classify::{Outcome, rejection_outcome};
/// use palisade::deadline::Deadline;
/// use palisade::error::BoxError;
/// use palisade::timeout::TimeoutLayer;
/// use tower::{Layer, Service, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let mut svc = TimeoutLayer::new(Duration::from_secs(1))
///     .layer(tower::service_fn(|_: http::Request<()>| async { Ok::<_, BoxError>(()) }));
/// // A request whose deadline has already passed is never sent.
/// let mut late = http::Request::new(());
/// late.extensions_mut().insert(Deadline::after(Duration::ZERO));
/// let err = svc.ready().await.unwrap().call(late).await.unwrap_err();
/// assert_eq!(rejection_outcome(&err), Some(Outcome::Ignore));
///
/// let io: BoxError = std::io::Error::other("reset").into();
/// assert_eq!(rejection_outcome(&io), None);
/// # }
/// ```
#[must_use]
pub fn rejection_outcome<E: 'static>(error: &E) -> Option<Outcome> {
    let any: &dyn Any = error;
    let error: &(dyn Error + 'static) = if let Some(boxed) = any.downcast_ref::<BoxError>() {
        &**boxed
    } else {
        own_error(any)?
    };
    if let Some(rejection) = Rejection::find(error) {
        return rejection.outcome();
    }
    #[cfg(all(feature = "retry", feature = "http"))]
    {
        let mut next = Some(error);
        while let Some(error) = next {
            if error.is::<crate::retry::RequestBodyError>() {
                return Some(Outcome::Ignore);
            }
            next = error.source();
        }
    }
    None
}

/// `any` as an error, if it is one of palisade's own error types.
#[allow(clippy::unnecessary_wraps)] // `Some` only with the layers' features
fn own_error(any: &dyn Any) -> Option<&(dyn Error + 'static)> {
    #[cfg(feature = "circuit-breaker")]
    {
        if let Some(error) = any.downcast_ref::<crate::circuit_breaker::CircuitBreakerError>() {
            return Some(error);
        }
        if let Some(error) = any.downcast_ref::<crate::circuit_breaker::CircuitOpen>() {
            return Some(error);
        }
    }
    #[cfg(feature = "throttle")]
    {
        if let Some(error) = any.downcast_ref::<crate::throttle::ThrottleError>() {
            return Some(error);
        }
        if let Some(error) = any.downcast_ref::<crate::throttle::Throttled>() {
            return Some(error);
        }
    }
    #[cfg(feature = "timeout")]
    if let Some(error) = any.downcast_ref::<crate::timeout::TimedOut>() {
        return Some(error);
    }
    let _ = any;
    None
}

#[cfg(feature = "http")]
pub use self::status::StatusClassifier;
#[cfg(feature = "tower-http")]
pub use self::tower_http_classify::FromTowerHttp;

#[cfg(feature = "tower-http")]
mod tower_http_classify {
    use tower_http::classify::{ClassifiedResponse, ClassifyResponse};

    use super::{Classify, Outcome, rejection_outcome};

    /// A tower-http response classifier as a palisade [`Classify`] (feature `tower-http`):
    /// `ServerErrorsAsFailures`, `StatusInRangeAsFailures`, `GrpcErrorsAsFailures` or your own
    /// `ClassifyResponse`, so a breaker, a throttle or a retry counts failures exactly as your
    /// `TraceLayer` reports them.
    ///
    /// A response the classifier calls a failure is a [`Failure`](Outcome::Failure), any other
    /// a [`Success`](Outcome::Success); an `Err` is a failure, except palisade's rejections that
    /// say nothing about the dependency, which are ignored (as with every palisade
    /// classifier). A classifier that can only decide at the end of the body
    /// (`RequiresEos`: gRPC with its status in the trailers) counts as a success: a layer
    /// decides when the response head arrives.
    ///
    /// ```
    /// use palisade::circuit_breaker::CircuitBreakerLayer;
    /// use palisade::classify::FromTowerHttp;
    /// use tower_http::classify::StatusInRangeAsFailures;
    ///
    /// // 4xx and 5xx count as failures, as a TraceLayer with this classifier reports them.
    /// let breaker = CircuitBreakerLayer::builder()
    ///     .classifier(FromTowerHttp(StatusInRangeAsFailures::new(400..=599)))
    ///     .build()
    ///     .unwrap();
    /// # let _ = breaker;
    /// ```
    #[derive(Clone, Debug, Default)]
    pub struct FromTowerHttp<C>(pub C);

    impl<C, B, E: 'static> Classify<http::Response<B>, E> for FromTowerHttp<C>
    where
        C: ClassifyResponse + Clone,
    {
        fn classify(&self, result: &Result<http::Response<B>, E>) -> Outcome {
            match result {
                // tower-http's classifiers are consumed by each classification.
                Ok(response) => match self.0.clone().classify_response(response) {
                    ClassifiedResponse::Ready(Ok(())) | ClassifiedResponse::RequiresEos(_) => {
                        Outcome::Success
                    }
                    ClassifiedResponse::Ready(Err(_)) => Outcome::Failure,
                },
                Err(error) => rejection_outcome(error).unwrap_or(Outcome::Failure),
            }
        }
    }
}

#[cfg(feature = "http")]
mod status {
    use std::time::Duration;

    use http::StatusCode;

    use super::{Classify, Outcome, rejection_outcome};

    /// Classifies `http::Response`s by status code.
    ///
    /// Defaults: every 5xx and `429 Too Many Requests` is a [`Failure`](Outcome::Failure), every
    /// other status a [`Success`](Outcome::Success), and an `Err` (a transport error, a palisade
    /// [`TimedOut`](crate::timeout::TimedOut) of the timeout's own limit) a failure, except
    /// palisade's rejections that say nothing about the dependency, which are ignored (see
    /// [`rejection_outcome`](super::rejection_outcome)). Each status can be reassigned.
    ///
    /// The table is two 1024-bit sets, so classifying is two bit tests and cloning copies 256
    /// bytes without allocating.
    ///
    /// ```
    /// use http::{Response, StatusCode};
    /// use palisade::classify::{Classify, Outcome, StatusClassifier};
    ///
    /// let classifier = StatusClassifier::new()
    ///     .ignore(StatusCode::NOT_IMPLEMENTED)
    ///     .failure(StatusCode::REQUEST_TIMEOUT);
    /// let status = |code| -> Result<Response<()>, std::io::Error> {
    ///     Ok(Response::builder().status(code).body(()).unwrap())
    /// };
    /// assert_eq!(classifier.classify(&status(StatusCode::BAD_GATEWAY)), Outcome::Failure);
    /// assert_eq!(classifier.classify(&status(StatusCode::TOO_MANY_REQUESTS)), Outcome::Failure);
    /// assert_eq!(classifier.classify(&status(StatusCode::NOT_IMPLEMENTED)), Outcome::Ignore);
    /// assert_eq!(classifier.classify(&status(StatusCode::REQUEST_TIMEOUT)), Outcome::Failure);
    /// assert_eq!(classifier.classify(&status(StatusCode::NOT_FOUND)), Outcome::Success);
    /// ```
    #[derive(Clone, PartialEq, Eq)]
    #[must_use]
    pub struct StatusClassifier {
        failures: StatusSet,
        ignored: StatusSet,
    }

    /// One bit per status code 0..1024 (`http` only builds codes 100..=999).
    #[derive(Clone, Copy, PartialEq, Eq)]
    struct StatusSet([u64; 16]);

    impl StatusSet {
        const EMPTY: Self = Self([0; 16]);

        fn contains(&self, status: StatusCode) -> bool {
            let code = usize::from(status.as_u16());
            self.0[(code >> 6) & 15] & (1 << (code & 63)) != 0
        }

        fn set(&mut self, status: StatusCode, on: bool) {
            let code = usize::from(status.as_u16());
            let word = &mut self.0[(code >> 6) & 15];
            if on {
                *word |= 1 << (code & 63);
            } else {
                *word &= !(1 << (code & 63));
            }
        }
    }

    impl StatusClassifier {
        /// 5xx and 429 are failures, every other status a success, `Err` a failure.
        pub fn new() -> Self {
            let mut failures = StatusSet::EMPTY;
            for code in 500..=599 {
                if let Ok(status) = StatusCode::from_u16(code) {
                    failures.set(status, true);
                }
            }
            failures.set(StatusCode::TOO_MANY_REQUESTS, true);
            Self {
                failures,
                ignored: StatusSet::EMPTY,
            }
        }

        /// Counts `status` as a failure.
        pub fn failure(mut self, status: StatusCode) -> Self {
            self.failures.set(status, true);
            self.ignored.set(status, false);
            self
        }

        /// Counts `status` as a success.
        pub fn success(mut self, status: StatusCode) -> Self {
            self.failures.set(status, false);
            self.ignored.set(status, false);
            self
        }

        /// Counts `status` nowhere: it says nothing about the service's health.
        pub fn ignore(mut self, status: StatusCode) -> Self {
            self.failures.set(status, false);
            self.ignored.set(status, true);
            self
        }

        /// The outcome this classifier gives a response with `status`.
        #[must_use]
        pub fn outcome(&self, status: StatusCode) -> Outcome {
            if self.failures.contains(status) {
                Outcome::Failure
            } else if self.ignored.contains(status) {
                Outcome::Ignore
            } else {
                Outcome::Success
            }
        }
    }

    impl Default for StatusClassifier {
        fn default() -> Self {
            Self::new()
        }
    }

    impl<B, E: 'static> Classify<http::Response<B>, E> for StatusClassifier {
        fn classify(&self, result: &Result<http::Response<B>, E>) -> Outcome {
            match result {
                Ok(response) => self.outcome(response.status()),
                Err(error) => rejection_outcome(error).unwrap_or(Outcome::Failure),
            }
        }

        /// The `Retry-After` of a `503 Service Unavailable` or `429 Too Many Requests`
        /// response, in either form (see [`parse_retry_after`](crate::http::parse_retry_after)).
        fn pushback(&self, result: &Result<http::Response<B>, E>) -> Option<Duration> {
            let response = result.as_ref().ok()?;
            if !matches!(
                response.status(),
                StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
            ) {
                return None;
            }
            let value = response.headers().get(http::header::RETRY_AFTER)?;
            crate::http::parse_retry_after(value, std::time::SystemTime::now())
        }
    }

    impl std::fmt::Debug for StatusClassifier {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let codes = |set: &StatusSet| {
                (100..=999u16)
                    .filter_map(|code| StatusCode::from_u16(code).ok())
                    .filter(|status| set.contains(*status))
                    .map(|status| status.as_u16())
                    .collect::<Vec<_>>()
            };
            f.debug_struct("StatusClassifier")
                .field("failures", &codes(&self.failures))
                .field("ignored", &codes(&self.ignored))
                .finish()
        }
    }
}

#[cfg(all(test, feature = "http", not(palisade_loom)))]
mod tests {
    use http::{Response, StatusCode};

    use super::*;

    fn response(code: u16) -> Result<Response<()>, &'static str> {
        Ok(Response::builder().status(code).body(()).unwrap())
    }

    #[test]
    fn status_classifier_defaults_cover_every_code() {
        let classifier = StatusClassifier::new();
        for code in 100..=999u16 {
            let expected = if (500..=599).contains(&code) || code == 429 {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            assert_eq!(
                classifier.classify(&response(code)),
                expected,
                "status {code}"
            );
        }
        let reset: Result<Response<()>, &str> = Err("reset");
        assert_eq!(classifier.classify(&reset), Outcome::Failure);
    }

    #[test]
    fn reassigning_a_status_replaces_its_previous_outcome() {
        let classifier = StatusClassifier::new()
            .ignore(StatusCode::SERVICE_UNAVAILABLE)
            .success(StatusCode::TOO_MANY_REQUESTS)
            .failure(StatusCode::NOT_FOUND);
        assert_eq!(
            classifier.outcome(StatusCode::SERVICE_UNAVAILABLE),
            Outcome::Ignore
        );
        assert_eq!(
            classifier.outcome(StatusCode::TOO_MANY_REQUESTS),
            Outcome::Success
        );
        assert_eq!(classifier.outcome(StatusCode::NOT_FOUND), Outcome::Failure);
        let back = classifier.failure(StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            back.outcome(StatusCode::SERVICE_UNAVAILABLE),
            Outcome::Failure
        );
    }
}

#[cfg(all(
    test,
    feature = "timeout",
    feature = "circuit-breaker",
    not(palisade_loom)
))]
mod rejection_tests {
    use std::time::Duration;

    use super::*;
    use crate::circuit_breaker::{CircuitBreakerError, CircuitOpen, State};
    use crate::timeout::{TimedOut, TimeoutKind};

    fn deadline() -> TimedOut {
        TimedOut::new(Duration::from_millis(5), TimeoutKind::Deadline)
    }

    fn limit() -> TimedOut {
        TimedOut::new(Duration::from_millis(5), TimeoutKind::Limit)
    }

    #[test]
    fn a_deadline_and_a_call_never_sent_are_ignored_in_every_shape() {
        let boxed: BoxError = deadline().into();
        assert_eq!(rejection_outcome(&boxed), Some(Outcome::Ignore));
        assert_eq!(rejection_outcome(&deadline()), Some(Outcome::Ignore));
        let open = CircuitOpen::new(State::Open, None);
        assert_eq!(rejection_outcome(&open), Some(Outcome::Ignore));
        let breaker_error = CircuitBreakerError::Open(open);
        assert_eq!(rejection_outcome(&breaker_error), Some(Outcome::Ignore));
        // A deadline timeout behind an inner breaker's error, boxed again.
        let nested: BoxError = CircuitBreakerError::Inner(deadline().into()).into();
        assert_eq!(rejection_outcome(&nested), Some(Outcome::Ignore));
    }

    #[test]
    fn a_timeout_of_its_own_limit_and_foreign_errors_are_left_to_the_classifier() {
        let boxed: BoxError = limit().into();
        assert_eq!(rejection_outcome(&boxed), None);
        assert_eq!(rejection_outcome(&limit()), None);
        let io: BoxError = std::io::Error::other("reset").into();
        assert_eq!(rejection_outcome(&io), None);
        assert_eq!(rejection_outcome(&"a plain str error"), None);
    }

    #[test]
    fn the_default_classifier_ignores_palisades_own_rejections_only() {
        let ignored: Result<(), BoxError> = Err(deadline().into());
        let failed: Result<(), BoxError> = Err(limit().into());
        assert_eq!(DefaultClassifier.classify(&ignored), Outcome::Ignore);
        assert_eq!(DefaultClassifier.classify(&failed), Outcome::Failure);
        let open: Result<(), CircuitBreakerError> = Err(CircuitBreakerError::Open(
            CircuitOpen::new(State::Open, None),
        ));
        assert_eq!(DefaultClassifier.classify(&open), Outcome::Ignore);
    }

    #[cfg(feature = "http")]
    #[test]
    fn the_status_classifier_ignores_them_too() {
        let ignored: Result<http::Response<()>, BoxError> = Err(deadline().into());
        let failed: Result<http::Response<()>, BoxError> = Err(limit().into());
        assert_eq!(StatusClassifier::new().classify(&ignored), Outcome::Ignore);
        assert_eq!(StatusClassifier::new().classify(&failed), Outcome::Failure);
    }
}

#[cfg(all(test, feature = "tower-http", not(palisade_loom)))]
mod tower_http_tests {
    use http::{Response, StatusCode};
    use tower_http::classify::{
        GrpcErrorsAsFailures, ServerErrorsAsFailures, StatusInRangeAsFailures,
    };

    use super::{Classify, FromTowerHttp, Outcome};
    use crate::error::BoxError;

    fn status(code: u16) -> Result<Response<()>, BoxError> {
        Ok(Response::builder().status(code).body(()).unwrap())
    }

    #[test]
    fn tower_http_classifiers_decide_as_they_do_for_a_trace_layer() {
        let server_errors = FromTowerHttp(ServerErrorsAsFailures::new());
        assert_eq!(server_errors.classify(&status(200)), Outcome::Success);
        assert_eq!(server_errors.classify(&status(404)), Outcome::Success);
        assert_eq!(server_errors.classify(&status(503)), Outcome::Failure);
        let range = FromTowerHttp(StatusInRangeAsFailures::new(400..=599));
        assert_eq!(range.classify(&status(404)), Outcome::Failure);
        assert_eq!(range.classify(&status(302)), Outcome::Success);
        let transport: Result<Response<()>, BoxError> = Err("connection reset".into());
        assert_eq!(range.classify(&transport), Outcome::Failure);
    }

    #[test]
    fn a_grpc_status_in_the_head_counts_and_one_left_for_the_trailers_does_not() {
        let grpc = FromTowerHttp(GrpcErrorsAsFailures::new());
        let with_status = |code: &str| -> Result<Response<()>, BoxError> {
            Ok(Response::builder()
                .status(StatusCode::OK)
                .header("grpc-status", code)
                .body(())
                .unwrap())
        };
        assert_eq!(grpc.classify(&with_status("0")), Outcome::Success);
        assert_eq!(
            grpc.classify(&with_status("14")),
            Outcome::Failure,
            "UNAVAILABLE"
        );
        assert_eq!(
            grpc.classify(&status(200)),
            Outcome::Success,
            "decided in the trailers"
        );
    }

    #[cfg(feature = "circuit-breaker")]
    #[test]
    fn a_palisade_rejection_is_ignored() {
        let open =
            crate::circuit_breaker::CircuitOpen::new(crate::circuit_breaker::State::Open, None);
        let rejected: Result<Response<()>, BoxError> = Err(Box::new(open));
        assert_eq!(
            FromTowerHttp(ServerErrorsAsFailures::new()).classify(&rejected),
            Outcome::Ignore
        );
    }
}
