//! [`Rejection`]: the typed view of every palisade rejection, generated from one table.
//!
//! This is the crate's top module: it knows every layer's rejection type, and no layer imports
//! it (they import the leaf `error` module, which re-exports [`Rejection`] at its public path).
//! Each rejection type implements [`RejectionKind`] next to its definition; the table in
//! [`rejections!`] below is the only other place a new rejection is named.

use std::error::Error;
use std::fmt;
use std::time::Duration;

#[cfg(feature = "cache")]
use crate::cache::LeaderFailed;
#[cfg(feature = "circuit-breaker")]
use crate::circuit_breaker::{CircuitBreakerError, CircuitOpen};
use crate::classify::Outcome;
use crate::clock::Instant;
#[cfg(all(feature = "timeout", feature = "http"))]
use crate::http::InvalidDeadlineHeader;
#[cfg(feature = "http")]
use crate::http::Problem;
#[cfg(feature = "retry")]
use crate::retry::BudgetExhausted;
#[cfg(feature = "throttle")]
use crate::throttle::{ThrottleError, Throttled};
#[cfg(feature = "timeout")]
use crate::timeout::TimedOut;

/// What a rejection type decides about the stack around it; implemented next to each type's
/// definition. The [`Rejection`] methods of the same names document the rules. (The HTTP
/// mapping needs no trait: every type in the table has inherent `status()` and `problem()`,
/// which the generated dispatch calls, and `retry_after` is derived from `reopens_at`.)
pub(crate) trait RejectionKind {
    /// [`Rejection::outcome`].
    fn outcome(&self) -> Option<Outcome>;
    /// [`Rejection::protects_dependency`].
    fn protects_dependency(&self) -> bool {
        false
    }
    /// [`Rejection::reopens_at`].
    fn reopens_at(&self) -> Option<Instant> {
        None
    }
}

/// Generates [`Rejection`], its lookup and its dispatch from one line per rejection type:
/// `[cfg] Variant(Type)`, with the variant's docs above it.
macro_rules! rejections {
    ($( $(#[doc = $doc:literal])* [$($cfg:tt)*] $variant:ident($ty:ty), )*) => {
        /// A borrowed view of one palisade rejection, found with [`Rejection::find`].
        ///
        /// One variant per rejection type of the enabled features. It is `#[non_exhaustive]`: a
        /// match needs a `_` arm, and new layers add variants without breaking it.
        #[derive(Clone, Copy, Debug)]
        #[non_exhaustive]
        pub enum Rejection<'a> {
            $(
                $(#[doc = $doc])*
                #[cfg($($cfg)*)]
                $variant(&'a $ty),
            )*
            /// Keeps the lifetime used when no feature adds a variant; never constructed.
            #[cfg(not(any($($($cfg)*),*)))]
            #[doc(hidden)]
            __Never(std::convert::Infallible, std::marker::PhantomData<&'a ()>),
        }

        impl<'a> Rejection<'a> {
            /// `error` itself, if it is one of the table's types.
            #[allow(unused_variables)] // with no feature enabled there is nothing to look for
            fn of_type(error: &'a (dyn Error + 'static)) -> Option<Self> {
                $(
                    #[cfg($($cfg)*)]
                    if let Some(rejection) = error.downcast_ref::<$ty>() {
                        return Some(Self::$variant(rejection));
                    }
                )*
                None
            }

            /// The rejection as its type's [`RejectionKind`].
            fn kind(&self) -> &'a dyn RejectionKind {
                match *self {
                    $(
                        #[cfg($($cfg)*)]
                        Self::$variant(rejection) => rejection,
                    )*
                    #[cfg(not(any($($($cfg)*),*)))]
                    Self::__Never(never, _) => match never {},
                }
            }

            /// The rejection as an error.
            #[must_use]
            pub fn as_error(&self) -> &'a (dyn Error + Send + Sync + 'static) {
                match *self {
                    $(
                        #[cfg($($cfg)*)]
                        Self::$variant(rejection) => rejection,
                    )*
                    #[cfg(not(any($($($cfg)*),*)))]
                    Self::__Never(never, _) => match never {},
                }
            }

            /// The HTTP status this rejection maps to (feature `http`); the crate docs'
            /// "Errors at a glance" table lists them.
            #[cfg(feature = "http")]
            #[must_use]
            pub fn status(&self) -> http::StatusCode {
                match *self {
                    $(
                        #[cfg($($cfg)*)]
                        Self::$variant(rejection) => rejection.status(),
                    )*
                    #[cfg(not(any($($($cfg)*),*)))]
                    Self::__Never(never, _) => match never {},
                }
            }

            /// The rejection as an `application/problem+json` description (feature `http`);
            /// turn it into a response with [`Problem::into_http_response`].
            #[cfg(feature = "http")]
            #[must_use]
            pub fn problem(&self) -> Problem {
                match *self {
                    $(
                        #[cfg($($cfg)*)]
                        Self::$variant(rejection) => rejection.problem(),
                    )*
                    #[cfg(not(any($($($cfg)*),*)))]
                    Self::__Never(never, _) => match never {},
                }
            }
        }
    };
}

rejections! {
    /// A timeout's limit or the request's deadline passed before the inner service answered.
    [feature = "timeout"] TimedOut(TimedOut),
    /// A deadline header sent by the caller was malformed.
    [all(feature = "timeout", feature = "http")] InvalidDeadlineHeader(InvalidDeadlineHeader),
    /// A circuit breaker refused the call.
    [feature = "circuit-breaker"] CircuitOpen(CircuitOpen),
    /// The retry budget refused a retry (only when configured to say so).
    [feature = "retry"] BudgetExhausted(BudgetExhausted),
    /// A throttle shed the call.
    [feature = "throttle"] Throttled(Throttled),
    /// The cached fetch this call waited for failed.
    [feature = "cache"] LeaderFailed(LeaderFailed),
}

impl<'a> Rejection<'a> {
    /// The first palisade rejection in `error` or anywhere in its `source()` chain.
    ///
    /// For a [`BoxError`](crate::error::BoxError) `err`, call it as `Rejection::find(&*err)`.
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

    /// `error` itself as a rejection, without looking at its sources: one of the table's
    /// types, or a layer's transparent error wrapper holding one.
    fn of(error: &'a (dyn Error + 'static)) -> Option<Self> {
        if let Some(rejection) = Self::of_type(error) {
            return Some(rejection);
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

    /// What this rejection says about the health of the dependency behind the layer that saw
    /// it (see [`rejection_outcome`](crate::classify::rejection_outcome)):
    /// [`Ignore`](crate::classify::Outcome::Ignore) when it says nothing, because the request's
    /// deadline ran out or the call was never sent; `None` when the error is a real failure of
    /// the dependency (a timeout's own limit: it was too slow) or stands for one (an exhausted
    /// budget, which returns the last real error).
    #[must_use]
    pub fn outcome(&self) -> Option<Outcome> {
        self.kind().outcome()
    }

    /// Whether a layer refused the call to protect the dependency (an open circuit, a
    /// throttle): the call was never sent, and sending it again at once would be refused the
    /// same way. A retry returns such a rejection at once by default, and never spends budget or
    /// an attempt on it.
    #[must_use]
    pub fn protects_dependency(&self) -> bool {
        self.kind().protects_dependency()
    }

    /// When the refusing layer expects to let calls through again, for a rejection that
    /// [protects the dependency](Self::protects_dependency) and knows; reads no clock.
    #[must_use]
    pub fn reopens_at(&self) -> Option<Instant> {
        self.kind().reopens_at()
    }

    /// How long the caller should wait before trying again, when the rejection says (an open
    /// circuit or a shedding throttle does, computed now from [`reopens_at`](Self::reopens_at);
    /// a timeout does not). An HTTP answer carries it as `Retry-After`.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        self.reopens_at()
            .map(|at| at.saturating_duration_since(Instant::now()))
    }
}

impl fmt::Display for Rejection<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_error(), f)
    }
}

#[cfg(all(test, feature = "timeout", not(palisade_loom)))]
mod tests {
    use super::*;
    use crate::error::BoxError;
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
        assert_eq!(found.after(), Duration::from_millis(250));
    }

    #[test]
    fn finds_a_rejection_two_sources_down() {
        let err: BoxError = Wrapped(Wrapped(timed_out().into()).into()).into();
        let found = Rejection::find(&*err).expect("rejection in the chain");
        assert!(matches!(found, Rejection::TimedOut(t) if t.kind() == TimeoutKind::Limit));
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
