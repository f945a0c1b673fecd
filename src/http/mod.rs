//! HTTP integration (feature `http`).
//!
//! - [`Problem`]: every palisade rejection as an `application/problem+json` response (RFC 9457),
//!   through [`Rejection::problem`](crate::error::Rejection::problem).
//! - [`ResponseBody`]: the body of layers that answer some requests themselves, so a router keeps
//!   one response type and its `Infallible` error type.
//! - [`DeadlineHeader`] (with `timeout`): the caller's remaining time on the wire
//!   (`grpc-timeout`, or a milliseconds header), read by the server-side timeout and written by
//!   the deadline propagation layer.
//! - [`parse_retry_after`]: server pushback, in delta-seconds or any of the three HTTP-date forms.
//! - [`ReplayBody`]: a request body read into memory up to a limit, so a retry can send it again
//!   and the idempotency layer can fingerprint it.
//! - [`IDEMPOTENCY_KEY`] and [`IDEMPOTENT_REPLAYED`]: the idempotency headers, and (with
//!   `idempotency`) [`parse_idempotency_key`] for the first (an RFC 8941 sf-string).
//!
//! - With the `axum` feature: `IntoResponse` for [`Problem`] and every rejection, and
//!   [`handle_error`] / [`error_response`] for axum's `HandleErrorLayer`.
//!
//! The HTTP classifier lives with the other classifiers:
//! [`StatusClassifier`](crate::classify::StatusClassifier).

//!
//! # What lives here
//!
//! Only the HTTP vocabulary two or more layers share: problem+json, the bodies, `Retry-After`,
//! the idempotency header names (the retry layer reads the key, the idempotency layer keys by
//! it), hop-by-hop rules. A parser or type only one layer needs lives in that layer's directory
//! and is re-exported here, so every HTTP item keeps one path: the deadline headers in
//! `timeout/` (so they need the `timeout` feature), the `Idempotency-Key` parser in
//! `idempotency/` (the `idempotency` feature).

#[cfg(feature = "axum")]
mod axum;
mod body;
pub(crate) mod headers;
mod problem;
pub(crate) mod replay_body;
pub(crate) mod retry_after;

#[cfg(feature = "axum")]
pub use self::axum::{error_response, handle_error};
pub use self::body::ResponseBody;
pub use self::headers::{IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED};
pub use self::problem::{PROBLEM_JSON, Problem};
pub use self::replay_body::ReplayBody;
pub use self::retry_after::parse_retry_after;
#[cfg(feature = "idempotency")]
pub use crate::idempotency::idempotency_key::{
    DEFAULT_MAX_KEY_LENGTH, KeyError, parse_idempotency_key,
};
#[cfg(feature = "timeout")]
pub use crate::timeout::deadline_header::{
    DeadlineHeader, GRPC_TIMEOUT, InvalidDeadlineHeader, InvalidReason,
};
