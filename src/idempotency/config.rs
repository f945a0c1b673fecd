//! The idempotency layer's private settings: what the service reads per request.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use http::header::HeaderName;
use http::{Method, StatusCode};

use super::identity::Identify;
use super::layer::{InFlight, OversizedBody, StoreFailure, StorePolicy};

/// Everything the service reads per request.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) methods: Vec<Method>,
    pub(crate) require_key: bool,
    pub(crate) accept_unquoted: bool,
    pub(crate) max_key_length: usize,
    pub(crate) body_limit: usize,
    pub(crate) oversized: OversizedBody,
    pub(crate) response_limit: usize,
    pub(crate) lease: Duration,
    pub(crate) retention: Duration,
    pub(crate) in_flight: InFlight,
    pub(crate) in_flight_retry_after: Duration,
    pub(crate) store_failure: StoreFailure,
    pub(crate) stores: StorePolicy,
    pub(crate) client_error_retention: Duration,
    /// Response headers never stored or replayed.
    pub(crate) strip: Vec<HeaderName>,
    pub(crate) identity: Arc<dyn Identify>,
    /// Whether an identity was set (even `Anonymous`): if not, the first covered request logs
    /// a warning, once per layer.
    pub(crate) identity_chosen: bool,
    pub(crate) warned: Arc<AtomicBool>,
}

impl Config {
    pub(crate) fn covers(&self, method: &Method) -> bool {
        self.methods.contains(method)
    }

    /// How long a stored answer with `status` is kept.
    pub(crate) fn retention_for(&self, status: StatusCode) -> Duration {
        if status.is_client_error() {
            self.client_error_retention.min(self.retention)
        } else {
            self.retention
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("methods", &self.methods)
            .field("require_key", &self.require_key)
            .field("accept_unquoted", &self.accept_unquoted)
            .field("max_key_length", &self.max_key_length)
            .field("body_limit", &self.body_limit)
            .field("oversized", &self.oversized)
            .field("response_limit", &self.response_limit)
            .field("lease", &self.lease)
            .field("retention", &self.retention)
            .field("client_error_retention", &self.client_error_retention)
            .field("strip", &self.strip)
            .field("in_flight", &self.in_flight)
            .field("store_failure", &self.store_failure)
            .finish_non_exhaustive()
    }
}
