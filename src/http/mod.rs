//! HTTP integration (feature `http`).
//!
//! - [`Problem`]: every palisade rejection as an `application/problem+json` response (RFC 9457),
//!   through [`Rejection::problem`](crate::error::Rejection::problem).
//! - [`ResponseBody`]: the body of layers that answer some requests themselves, so a router keeps
//!   one response type and its `Infallible` error type.
//! - [`DeadlineHeader`]: the caller's remaining time on the wire (`grpc-timeout`, or a
//!   milliseconds header), read by the server-side timeout and written by the deadline
//!   propagation layer.
//! - [`parse_retry_after`]: server pushback, in delta-seconds or any of the three HTTP-date forms.
//!
//! The HTTP classifier lives with the other classifiers:
//! [`StatusClassifier`](crate::classify::StatusClassifier).

mod body;
mod deadline_header;
mod problem;
mod retry_after;

pub use self::body::ResponseBody;
pub use self::deadline_header::{
    DeadlineHeader, GRPC_TIMEOUT, InvalidDeadlineHeader, InvalidReason,
};
pub use self::problem::{PROBLEM_JSON, Problem};
pub use self::retry_after::parse_retry_after;
