//! Deciding whether a call succeeded: the one classification shared by the breaker and retry.
//!
//! A [`Classify`] looks at the `&Result` a service produced and says whether it was a
//! [`Success`](Outcome::Success), a [`Failure`](Outcome::Failure), or something to
//! [`Ignore`](Outcome::Ignore) (it says nothing about the dependency's health, such as a caller's
//! own cancellation). Layers that keep score take a classifier; users who only change thresholds
//! never see its type.
//!
//! - [`DefaultClassifier`]: `Ok` is a success, `Err` a failure (a palisade
//!   [`TimedOut`](crate::timeout::TimedOut) included).
//! - [`StatusClassifier`] (feature `http`): for `http::Response`s, 5xx and 429 are failures and
//!   every other status a success, adjustable per status; an `Err` is a failure.
//! - Any closure `Fn(&Result<Res, E>) -> Outcome`.
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

use std::time::Duration;

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

/// `Ok` is a success and `Err` a failure, whatever the types.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DefaultClassifier;

impl<Res, E> Classify<Res, E> for DefaultClassifier {
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}

#[cfg(feature = "http")]
pub use self::status::StatusClassifier;

#[cfg(feature = "http")]
mod status {
    use std::time::Duration;

    use http::StatusCode;

    use super::{Classify, Outcome};

    /// Classifies `http::Response`s by status code.
    ///
    /// Defaults: every 5xx and `429 Too Many Requests` is a [`Failure`](Outcome::Failure), every
    /// other status a [`Success`](Outcome::Success), and an `Err` (a transport error, a palisade
    /// [`TimedOut`](crate::timeout::TimedOut)) a failure. Each status can be reassigned.
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

    impl<B, E> Classify<http::Response<B>, E> for StatusClassifier {
        fn classify(&self, result: &Result<http::Response<B>, E>) -> Outcome {
            match result {
                Ok(response) => self.outcome(response.status()),
                Err(_) => Outcome::Failure,
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
