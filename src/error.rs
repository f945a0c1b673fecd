//! Rejections: finding palisade's own errors in whatever error a stack returns.
//!
//! Every way a palisade layer refuses or abandons a request is a small concrete error type
//! ([`TimedOut`], …). Layers that add a failure mode return
//! [`BoxError`], like tower's own layers, so they stack with anything. To get the typed view back
//! without a ladder of `downcast_ref` calls, [`Rejection::find`] walks an error and its whole
//! `source()` chain and returns the first palisade rejection as an enum to `match` on.
//!
//! ```
//! use std::time::Duration;
//! use palisade::error::{BoxError, Rejection};
//! use palisade::timeout::TimeoutLayer;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let mut svc = ServiceBuilder::new()
//!     .layer(TimeoutLayer::new(Duration::from_millis(100)))
//!     .service_fn(|_: http::Request<()>| async {
//!         tokio::time::sleep(Duration::from_secs(1)).await;
//!         Ok::<_, BoxError>("late")
//!     });
//!
//! let err = svc.ready().await.unwrap().call(http::Request::new(())).await.unwrap_err();
//! match Rejection::find(&*err) {
//!     Some(Rejection::TimedOut(timed_out)) => {
//!         assert_eq!(timed_out.after, Duration::from_millis(100));
//!     }
//!     other => panic!("expected a timeout, got {other:?}"),
//! }
//! # }
//! ```

use std::error::Error;
use std::fmt;
use std::time::Duration;

#[cfg(feature = "circuit-breaker")]
use crate::circuit_breaker::{CircuitBreakerError, CircuitOpen};
#[cfg(feature = "http")]
use crate::http::{InvalidDeadlineHeader, Problem};
#[cfg(feature = "retry")]
use crate::retry::BudgetExhausted;
#[cfg(feature = "throttle")]
use crate::throttle::{ThrottleError, Throttled};
#[cfg(feature = "timeout")]
use crate::timeout::TimedOut;

/// A type-erased error, as tower's layers use: `Box<dyn Error + Send + Sync>`.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// A layer configuration that cannot work, found when the layer is built.
///
/// One variant per broken rule, each naming the setting and the allowed range, so a test can
/// match on exactly what was wrong.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A [`Ratio`](crate::Ratio) outside `0..=1` (or `0..=100` percent), or NaN.
    #[error("a ratio must be between 0 and 1 (0 and 100 percent), got {value}")]
    InvalidRatio {
        /// The value given.
        value: f64,
    },
    /// A fractional setting outside its allowed range, or NaN.
    #[error("`{setting}` must be between {min} and {max}, got {value}")]
    ShareOutOfRange {
        /// The setting.
        setting: &'static str,
        /// The value given.
        value: f64,
        /// The smallest allowed value.
        min: f64,
        /// The largest allowed value.
        max: f64,
    },
    /// A threshold of zero would trip on any call.
    #[error("`{setting}` must be above zero")]
    ZeroThreshold {
        /// The setting.
        setting: &'static str,
    },
    /// A count outside its allowed range.
    #[error("`{setting}` must be between {min} and {max}, got {value}")]
    CountOutOfRange {
        /// The setting.
        setting: &'static str,
        /// The value given.
        value: u64,
        /// The smallest allowed value.
        min: u64,
        /// The largest allowed value.
        max: u64,
    },
    /// A duration outside its allowed range.
    #[error("`{setting}` must be between {min:?} and {max:?}, got {value:?}")]
    DurationOutOfRange {
        /// The setting.
        setting: &'static str,
        /// The value given.
        value: Duration,
        /// The shortest allowed value.
        min: Duration,
        /// The longest allowed value.
        max: Duration,
    },
    /// Two settings that contradict each other.
    #[error("`{setting}` ({value}) conflicts with `{other}`: {why}")]
    Conflict {
        /// The setting.
        setting: &'static str,
        /// Its value, formatted.
        value: String,
        /// The setting it conflicts with.
        other: &'static str,
        /// The rule broken.
        why: &'static str,
    },
}

/// A borrowed view of one palisade rejection, found with [`Rejection::find`].
///
/// One variant per rejection type of the enabled features. It is `#[non_exhaustive]`: a match
/// needs a `_` arm, and new layers add variants without breaking it.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Rejection<'a> {
    /// A timeout's limit or the request's deadline passed before the inner service answered.
    #[cfg(feature = "timeout")]
    TimedOut(&'a TimedOut),
    /// A deadline header sent by the caller was malformed.
    #[cfg(feature = "http")]
    InvalidDeadlineHeader(&'a InvalidDeadlineHeader),
    /// A circuit breaker refused the call.
    #[cfg(feature = "circuit-breaker")]
    CircuitOpen(&'a CircuitOpen),
    /// The retry budget refused a retry (only when configured to say so).
    #[cfg(feature = "retry")]
    BudgetExhausted(&'a BudgetExhausted),
    /// A throttle shed the call.
    #[cfg(feature = "throttle")]
    Throttled(&'a Throttled),
    /// Keeps the lifetime used when no feature adds a variant; never constructed.
    #[cfg(not(any(
        feature = "timeout",
        feature = "http",
        feature = "circuit-breaker",
        feature = "retry",
        feature = "throttle"
    )))]
    #[doc(hidden)]
    __Never(std::convert::Infallible, std::marker::PhantomData<&'a ()>),
}

impl<'a> Rejection<'a> {
    /// The first palisade rejection in `error` or anywhere in its `source()` chain.
    ///
    /// For a [`BoxError`] `err`, call it as `Rejection::find(&*err)`.
    #[must_use]
    pub fn find(error: &'a (dyn Error + 'static)) -> Option<Self> {
        let mut next = Some(error);
        while let Some(error) = next {
            if let Some(rejection) = Self::of(error) {
                return Some(rejection);
            }
            next = error.source();
        }
        None
    }

    /// `error` itself as a rejection, without looking at its sources.
    #[allow(unused_variables)] // with no feature enabled there is nothing to look for
    fn of(error: &'a (dyn Error + 'static)) -> Option<Self> {
        #[cfg(feature = "timeout")]
        if let Some(timed_out) = error.downcast_ref::<TimedOut>() {
            return Some(Self::TimedOut(timed_out));
        }
        #[cfg(feature = "http")]
        if let Some(invalid) = error.downcast_ref::<InvalidDeadlineHeader>() {
            return Some(Self::InvalidDeadlineHeader(invalid));
        }
        #[cfg(feature = "circuit-breaker")]
        if let Some(open) = error.downcast_ref::<CircuitOpen>() {
            return Some(Self::CircuitOpen(open));
        }
        #[cfg(feature = "retry")]
        if let Some(exhausted) = error.downcast_ref::<BudgetExhausted>() {
            return Some(Self::BudgetExhausted(exhausted));
        }
        #[cfg(feature = "throttle")]
        if let Some(throttled) = error.downcast_ref::<Throttled>() {
            return Some(Self::Throttled(throttled));
        }
        #[cfg(feature = "throttle")]
        if let Some(throttle_error) = error.downcast_ref::<ThrottleError>() {
            // A transparent wrapper, as the breaker's.
            return match throttle_error {
                ThrottleError::Throttled(throttled)
                | ThrottleError::ProbeFailed {
                    rejection: throttled,
                    ..
                } => Some(Self::Throttled(throttled)),
                ThrottleError::Inner(inner) => Self::find(&**inner),
            };
        }
        #[cfg(feature = "circuit-breaker")]
        if let Some(breaker_error) = error.downcast_ref::<CircuitBreakerError>() {
            // A transparent wrapper: its `source()` skips the inner error itself.
            return match breaker_error {
                CircuitBreakerError::Open(open) => Some(Self::CircuitOpen(open)),
                CircuitBreakerError::Inner(inner) => Self::find(&**inner),
            };
        }
        None
    }

    /// The rejection as an error.
    #[must_use]
    pub fn as_error(&self) -> &'a (dyn Error + Send + Sync + 'static) {
        match *self {
            #[cfg(feature = "timeout")]
            Self::TimedOut(e) => e,
            #[cfg(feature = "http")]
            Self::InvalidDeadlineHeader(e) => e,
            #[cfg(feature = "circuit-breaker")]
            Self::CircuitOpen(e) => e,
            #[cfg(feature = "retry")]
            Self::BudgetExhausted(e) => e,
            #[cfg(feature = "throttle")]
            Self::Throttled(e) => e,
            #[cfg(not(any(
                feature = "timeout",
                feature = "http",
                feature = "circuit-breaker",
                feature = "retry",
                feature = "throttle"
            )))]
            Self::__Never(never, _) => match never {},
        }
    }

    /// What this rejection says about the health of the dependency behind the layer that saw
    /// it (see [`rejection_outcome`](crate::classify::rejection_outcome)):
    /// [`Ignore`](crate::classify::Outcome::Ignore) when it says nothing, because the request's
    /// deadline ran out or the call was never sent; `None` when the error is a real failure of
    /// the dependency (a timeout's own limit: it was too slow) or stands for one (an exhausted
    /// budget, which returns the last real error).
    #[must_use]
    pub fn outcome(&self) -> Option<crate::classify::Outcome> {
        #[allow(unused_imports)] // no variant uses it without the layers' features
        use crate::classify::Outcome::Ignore;
        match *self {
            #[cfg(feature = "timeout")]
            Self::TimedOut(e) => e.is_deadline().then_some(Ignore),
            #[cfg(feature = "http")]
            Self::InvalidDeadlineHeader(_) => Some(Ignore),
            #[cfg(feature = "circuit-breaker")]
            Self::CircuitOpen(_) => Some(Ignore),
            #[cfg(feature = "retry")]
            Self::BudgetExhausted(_) => None,
            #[cfg(feature = "throttle")]
            Self::Throttled(_) => Some(Ignore),
            #[cfg(not(any(
                feature = "timeout",
                feature = "http",
                feature = "circuit-breaker",
                feature = "retry",
                feature = "throttle"
            )))]
            Self::__Never(never, _) => match never {},
        }
    }

    /// Whether a layer refused the call to protect the dependency (an open circuit, a
    /// throttle): the call was never sent, and sending it again at once would be refused the
    /// same way. A retry returns such a rejection at once by default, and never spends budget or
    /// an attempt on it.
    #[must_use]
    #[allow(unreachable_patterns)] // the variants present depend on the features enabled
    pub fn protects_dependency(&self) -> bool {
        match *self {
            #[cfg(feature = "circuit-breaker")]
            Self::CircuitOpen(_) => true,
            #[cfg(feature = "throttle")]
            Self::Throttled(_) => true,
            _ => false,
        }
    }

    /// When the refusing layer expects to let calls through again, for a rejection that
    /// [protects the dependency](Self::protects_dependency) and knows; reads no clock.
    #[must_use]
    #[allow(unreachable_patterns)] // the variants present depend on the features enabled
    pub fn reopens_at(&self) -> Option<crate::clock::Instant> {
        match *self {
            #[cfg(feature = "circuit-breaker")]
            Self::CircuitOpen(e) => e.reopens_at(),
            #[cfg(feature = "throttle")]
            Self::Throttled(e) => e.reopens_at(),
            _ => None,
        }
    }

    /// How long the caller should wait before trying again, when the rejection says (an open
    /// circuit or a shedding throttle does, computed now; a timeout does not). An HTTP answer
    /// carries it as `Retry-After`.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match *self {
            #[cfg(feature = "timeout")]
            Self::TimedOut(_) => None,
            #[cfg(feature = "http")]
            Self::InvalidDeadlineHeader(_) => None,
            #[cfg(feature = "circuit-breaker")]
            Self::CircuitOpen(e) => e.retry_after(),
            #[cfg(feature = "retry")]
            Self::BudgetExhausted(_) => None,
            #[cfg(feature = "throttle")]
            Self::Throttled(e) => e.retry_after(),
            #[cfg(not(any(
                feature = "timeout",
                feature = "http",
                feature = "circuit-breaker",
                feature = "retry",
                feature = "throttle"
            )))]
            Self::__Never(never, _) => match never {},
        }
    }

    /// The HTTP status this rejection maps to (feature `http`).
    ///
    /// | rejection | status |
    /// | --- | --- |
    /// | [`TimedOut`] | 504 Gateway Timeout (the server-side timeout answers 503 or 408, as configured) |
    /// | [`InvalidDeadlineHeader`] | 400 Bad Request |
    /// | [`CircuitOpen`] | 503 Service Unavailable, with `Retry-After` when known |
    /// | [`BudgetExhausted`] | 503 Service Unavailable |
    /// | [`Throttled`] | 503 Service Unavailable, with `Retry-After` when it names a probe slot |
    #[cfg(feature = "http")]
    #[must_use]
    pub fn status(&self) -> http::StatusCode {
        match *self {
            #[cfg(feature = "timeout")]
            Self::TimedOut(e) => e.status(),
            Self::InvalidDeadlineHeader(e) => e.status(),
            #[cfg(feature = "circuit-breaker")]
            Self::CircuitOpen(e) => e.status(),
            #[cfg(feature = "retry")]
            Self::BudgetExhausted(e) => e.status(),
            #[cfg(feature = "throttle")]
            Self::Throttled(e) => e.status(),
        }
    }

    /// The rejection as an `application/problem+json` description (feature `http`); turn it into
    /// a response with [`Problem::into_response`].
    #[cfg(feature = "http")]
    #[must_use]
    pub fn problem(&self) -> Problem {
        match *self {
            #[cfg(feature = "timeout")]
            Self::TimedOut(e) => e.problem(),
            Self::InvalidDeadlineHeader(e) => e.problem(),
            #[cfg(feature = "circuit-breaker")]
            Self::CircuitOpen(e) => e.problem(),
            #[cfg(feature = "retry")]
            Self::BudgetExhausted(e) => e.problem(),
            #[cfg(feature = "throttle")]
            Self::Throttled(e) => e.problem(),
        }
    }
}

impl fmt::Display for Rejection<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_error(), f)
    }
}

#[cfg(feature = "http")]
impl InvalidDeadlineHeader {
    /// `400 Bad Request`: the caller sent a header outside its grammar.
    #[must_use]
    pub fn status(&self) -> http::StatusCode {
        http::StatusCode::BAD_REQUEST
    }

    /// This rejection as a problem description.
    #[must_use]
    pub fn problem(&self) -> Problem {
        Problem::new(
            self.status(),
            "urn:palisade:invalid-deadline-header",
            "Invalid deadline header",
            self.to_string(),
        )
    }
}

#[cfg(all(test, feature = "timeout", not(palisade_loom)))]
mod tests {
    use super::*;
    use crate::timeout::TimeoutKind;

    /// An application error that wraps another one as its source, as `anyhow`-style and
    /// hand-written error types do.
    #[derive(Debug)]
    struct Wrapped(BoxError);

    impl fmt::Display for Wrapped {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("calling the backend failed")
        }
    }

    impl Error for Wrapped {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    fn timed_out() -> TimedOut {
        TimedOut::new(Duration::from_millis(250), TimeoutKind::Limit)
    }

    #[test]
    fn finds_a_rejection_at_the_top_of_a_box_error() {
        let err: BoxError = timed_out().into();
        let Some(Rejection::TimedOut(found)) = Rejection::find(&*err) else {
            panic!("no rejection found");
        };
        assert_eq!(found.after, Duration::from_millis(250));
    }

    #[test]
    fn finds_a_rejection_two_sources_down() {
        let err: BoxError = Wrapped(Wrapped(timed_out().into()).into()).into();
        let found = Rejection::find(&*err).expect("rejection in the chain");
        assert!(matches!(found, Rejection::TimedOut(t) if t.kind == TimeoutKind::Limit));
        assert_eq!(found.to_string(), "request timed out after 250ms");
        assert_eq!(found.retry_after(), None);
    }

    #[test]
    fn an_unrelated_chain_has_no_rejection() {
        let io = std::io::Error::other("reset");
        let err: BoxError = Wrapped(io.into()).into();
        assert!(Rejection::find(&*err).is_none());
    }
}
