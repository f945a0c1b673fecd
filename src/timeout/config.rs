//! The timeout layers' private settings: the server-side timeout's (the client-side
//! [`TimeoutLayer`](super::TimeoutLayer) holds only its policy).

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use super::TimedOut;
use super::deadline_header::DeadlineHeader;
use super::server::OnInvalidHeader;
use crate::hook::Hook;

/// What the server-side timeout reads per request.
#[derive(Clone, Debug)]
pub(super) struct Config {
    pub(super) limit: Duration,
    pub(super) status: StatusCode,
    pub(super) accept: Vec<DeadlineHeader>,
    pub(super) on_invalid: OnInvalidHeader,
    pub(super) publish_deadline: bool,
    pub(super) on_timeout: Hook<TimedOut>,
    /// The `name` label of its metrics.
    pub(super) name: Option<Arc<str>>,
}
