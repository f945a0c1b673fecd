//! What the answer function is given, how it answers, and how an answer is marked.

use std::fmt;
use std::future::{Future, Ready, ready};

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};

use crate::error::{BoxError, Rejection};
use crate::http::ResponseBody;

/// The header that marks a fallback answer: `palisade-fallback`, its value the
/// [`FallbackReason`] (`circuit-open`, `throttled`, `timed-out`, `budget-exhausted`,
/// `rejected`, `error`, or `status-503` and the like for a failure response).
pub const FALLBACK_HEADER: HeaderName = HeaderName::from_static("palisade-fallback");

/// Why a fallback answered, in the answer's extensions and its [`FALLBACK_HEADER`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FallbackReason {
    /// A circuit breaker inside refused the call.
    CircuitOpen,
    /// A throttle inside refused the call.
    Throttled,
    /// A timeout inside gave up on the call.
    TimedOut,
    /// A retry inside ran out of budget.
    BudgetExhausted,
    /// Another palisade rejection.
    Rejected,
    /// The inner service failed with an error that is no palisade rejection (with
    /// [`on_failures`](super::FallbackLayer::on_failures)).
    Error,
    /// The inner service answered with a status its classifier calls a failure (with
    /// [`on_failures`](super::FallbackLayer::on_failures)).
    Status(StatusCode),
}

impl FallbackReason {
    pub(crate) fn of_error(error: &BoxError) -> Option<Self> {
        #[allow(unreachable_patterns)] // the variants present depend on the features enabled
        Rejection::find(&**error).map(|rejection| match rejection {
            #[cfg(feature = "circuit-breaker")]
            Rejection::CircuitOpen(_) => Self::CircuitOpen,
            #[cfg(feature = "throttle")]
            Rejection::Throttled(_) => Self::Throttled,
            #[cfg(feature = "timeout")]
            Rejection::TimedOut(_) => Self::TimedOut,
            #[cfg(feature = "retry")]
            Rejection::BudgetExhausted(_) => Self::BudgetExhausted,
            _ => Self::Rejected,
        })
    }

    /// The header value: `circuit-open`, `throttled`, `timed-out`, `budget-exhausted`,
    /// `rejected`, `error`, or `status-` and the code.
    #[must_use]
    pub fn header_value(&self) -> HeaderValue {
        match self {
            Self::CircuitOpen => HeaderValue::from_static("circuit-open"),
            Self::Throttled => HeaderValue::from_static("throttled"),
            Self::TimedOut => HeaderValue::from_static("timed-out"),
            Self::BudgetExhausted => HeaderValue::from_static("budget-exhausted"),
            Self::Rejected => HeaderValue::from_static("rejected"),
            Self::Error => HeaderValue::from_static("error"),
            Self::Status(status) => {
                let mut value = String::with_capacity(10);
                value.push_str("status-");
                value.push_str(status.as_str());
                HeaderValue::try_from(value).unwrap_or(HeaderValue::from_static("status"))
            }
        }
    }
}

/// Marks a response as a fallback answer: in its extensions as a [`FallbackAnswer`], and in its
/// [`FALLBACK_HEADER`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FallbackAnswer {
    /// Why the fallback answered.
    pub reason: FallbackReason,
}

/// The request's method, URI, version and headers, kept for the answer function when asked
/// for ([`keep_request`](super::FallbackLayer::keep_request)).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RequestParts {
    /// The method.
    pub method: Method,
    /// The URI.
    pub uri: Uri,
    /// The version.
    pub version: Version,
    /// The headers.
    pub headers: HeaderMap,
}

impl RequestParts {
    pub(crate) fn of<B>(request: &Request<B>) -> Self {
        Self {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: request.headers().clone(),
        }
    }
}

/// What went wrong with a call the fallback is asked to answer.
pub enum FailureCause<B> {
    /// The call failed with this error: a palisade rejection, or (with
    /// [`on_failures`](super::FallbackLayer::on_failures)) any error.
    Error(BoxError),
    /// The inner service answered with a status its classifier calls a failure (with
    /// [`on_failures`](super::FallbackLayer::on_failures)).
    Response(Response<B>),
}

impl<B> fmt::Debug for FailureCause<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Error(error) => f.debug_tuple("Error").field(error).finish(),
            Self::Response(response) => {
                f.debug_tuple("Response").field(&response.status()).finish()
            }
        }
    }
}

/// A call the fallback answers: why, what failed, and the request's parts if they were kept.
#[derive(Debug)]
#[non_exhaustive]
pub struct Failure<B> {
    /// Why the fallback answers (also the mark the answer gets).
    pub reason: FallbackReason,
    /// The error or the failure response.
    pub cause: FailureCause<B>,
    /// The request's parts, if the layer keeps them
    /// ([`keep_request`](super::FallbackLayer::keep_request)).
    pub request: Option<RequestParts>,
}

impl<B> Failure<B> {
    /// The palisade rejection behind the failure, if it is one.
    #[must_use]
    pub fn rejection(&self) -> Option<Rejection<'_>> {
        match &self.cause {
            FailureCause::Error(error) => Rejection::find(&**error),
            FailureCause::Response(_) => None,
        }
    }

    /// The failure as the error the call would have returned, had no fallback answered (a
    /// failure response is returned as it is).
    ///
    /// # Errors
    ///
    /// The call's own error, for a failed call.
    pub fn into_result(self) -> Result<Response<ResponseBody<B>>, BoxError> {
        match self.cause {
            FailureCause::Error(error) => Err(error),
            FailureCause::Response(response) => Ok(response.map(ResponseBody::new)),
        }
    }
}

/// Answers a [`Failure`]: implemented by every `Fn(Failure<B>) -> impl Future<Output =
/// Result<Response<ResponseBody<B>>, BoxError>>` (an async answer), and by [`SyncAnswer`] for
/// a plain function ([`FallbackLayer::sync`](super::FallbackLayer::sync)).
pub trait Answer<B> {
    /// The answer's future.
    type Future: Future<Output = Result<Response<ResponseBody<B>>, BoxError>>;

    /// The answer to `failure`; an `Err` is returned to the caller in place of the failure.
    fn answer(&self, failure: Failure<B>) -> Self::Future;
}

impl<F, Fut, B> Answer<B> for F
where
    F: Fn(Failure<B>) -> Fut,
    Fut: Future<Output = Result<Response<ResponseBody<B>>, BoxError>>,
{
    type Future = Fut;

    fn answer(&self, failure: Failure<B>) -> Fut {
        self(failure)
    }
}

/// A plain function as an [`Answer`]: see [`FallbackLayer::sync`](super::FallbackLayer::sync).
#[derive(Clone, Copy, Debug)]
pub struct SyncAnswer<F>(pub(crate) F);

impl<F, B> Answer<B> for SyncAnswer<F>
where
    F: Fn(Failure<B>) -> Response<ResponseBody<B>>,
{
    type Future = Ready<Result<Response<ResponseBody<B>>, BoxError>>;

    fn answer(&self, failure: Failure<B>) -> Self::Future {
        ready(Ok((self.0)(failure)))
    }
}
