//! axum integration (feature `axum`): [`IntoResponse`] for [`Problem`] and for every palisade
//! rejection, and [`handle_error`] for axum's `HandleErrorLayer`.
//!
//! A handler can return a rejection (or a breaker's or a throttle's error) as its error, and a
//! router can turn the `BoxError`s of the palisade layers it runs (a client-side
//! [`TimeoutLayer`](crate::timeout::TimeoutLayer)'s; a breaker's after
//! `.map_err(CircuitBreakerError::into_box_error)`) into problem+json answers in one place:
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, error_handling::HandleErrorLayer, routing::get};
//! use palisade::timeout::TimeoutLayer;
//! use tower::ServiceBuilder;
//!
//! let app: Router = Router::new().route("/slow", get(|| async { "done" })).layer(
//!     ServiceBuilder::new()
//!         .layer(HandleErrorLayer::new(palisade::http::handle_error))
//!         .layer(TimeoutLayer::new(Duration::from_secs(2))),
//! );
//! # let _ = app;
//! ```

use axum_core::body::Body;
use axum_core::response::{IntoResponse, Response};
use http::StatusCode;

use super::Problem;
use crate::error::{BoxError, Rejection};

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        Problem::into_http_response::<Body>(self).map(Body::new)
    }
}

/// The response for any error a palisade stack returns: the problem of the first palisade
/// rejection in its `source()` chain ([`Rejection::find`]), or, for anything else, a `500`
/// problem that does not repeat the error (its text may say what the client should not
/// learn; it is logged at `warn` instead). For axum's `HandleErrorLayer::new(handle_error)`.
pub async fn handle_error(error: BoxError) -> Response {
    error_response(&*error)
}

/// [`handle_error`]'s answer, for code that is not async.
#[must_use]
pub fn error_response(error: &(dyn std::error::Error + 'static)) -> Response {
    match Rejection::find(error) {
        Some(rejection) => IntoResponse::into_response(rejection.problem()),
        None => {
            tracing::warn!(%error, "an error with no palisade rejection in it: answering 500");
            IntoResponse::into_response(Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "urn:palisade:internal-error",
                "Internal error",
                "the service failed to answer".to_owned(),
            ))
        }
    }
}

impl IntoResponse for Rejection<'_> {
    fn into_response(self) -> Response {
        IntoResponse::into_response(self.problem())
    }
}

/// `IntoResponse` by the type's own `problem()`.
macro_rules! problem_responses {
    ($($(#[$cfg:meta])* $ty:ty),* $(,)?) => {
        $(
            $(#[$cfg])*
            impl IntoResponse for $ty {
                fn into_response(self) -> Response {
                    IntoResponse::into_response(self.problem())
                }
            }
        )*
    };
}

problem_responses! {
    #[cfg(feature = "timeout")] crate::timeout::TimedOut,
    #[cfg(feature = "timeout")] crate::http::InvalidDeadlineHeader,
    #[cfg(feature = "circuit-breaker")] crate::circuit_breaker::CircuitOpen,
    #[cfg(feature = "retry")] crate::retry::BudgetExhausted,
    #[cfg(feature = "throttle")] crate::throttle::Throttled,
    #[cfg(feature = "cache")] crate::cache::LeaderFailed,
    #[cfg(feature = "idempotency")] crate::idempotency::IdempotencyRejection,
}

#[cfg(feature = "circuit-breaker")]
impl IntoResponse for crate::circuit_breaker::CircuitBreakerError {
    /// The rejection's problem, or [`error_response`]'s for the inner service's error.
    fn into_response(self) -> Response {
        error_response(&self)
    }
}

#[cfg(feature = "throttle")]
impl IntoResponse for crate::throttle::ThrottleError {
    /// The rejection's problem, or [`error_response`]'s for the inner service's error.
    fn into_response(self) -> Response {
        error_response(&self)
    }
}
