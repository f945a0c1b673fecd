//! Building an idempotency layer: [`IdempotencyBuilder`], its defaults and their validation, and
//! the settings every request reads.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use http::header::{HeaderName, SET_COOKIE};
use http::{Method, StatusCode};

use super::identity::{Anonymous, Identify};
use super::layer::IdempotencyLayer;
use super::store::{IdempotencyStore, MemoryStore};
use crate::error::{ConfigError, duration_within};
use crate::http::DEFAULT_MAX_KEY_LENGTH;
use crate::instruments::{Counters, LayerKind, name_label};

/// The largest request body read to fingerprint a request by default: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
/// The largest response body stored for replay by default: 1 MiB.
pub const DEFAULT_RESPONSE_LIMIT: usize = 1024 * 1024;
/// How long a claim holds a key by default before another request may take it over: 90 s
/// (the lock timeout of brandur's Stripe-style implementation).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(90);
/// How long a completed response is replayed by default: 24 h (Stripe keeps keys at least as
/// long).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a stored 4xx answer is replayed by default: 5 minutes, long enough for a client's
/// retries, short enough that a flood of bad requests does not fill the store for a day.
pub const DEFAULT_CLIENT_ERROR_RETENTION: Duration = Duration::from_secs(5 * 60);
/// The `Retry-After` of a 409 by default: 1 s.
pub const DEFAULT_IN_FLIGHT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// The shortest lease and retention accepted: 1 s.
pub const MIN_LEASE: Duration = Duration::from_secs(1);
/// The longest lease accepted: 1 day.
pub const MAX_LEASE: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest retention accepted: 365 days.
pub const MAX_RETENTION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// What to do with a request whose body is over [`body_limit`](IdempotencyBuilder::body_limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OversizedBody {
    /// Answer 413 (the default): an operation that must not run twice must fit the limit.
    Reject,
    /// Run the request unprotected: no claim, no record, no replay.
    PassThrough,
}

/// What a duplicate does while the first request with its key is still running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InFlight {
    /// Answer 409 with a `Retry-After` (the IETF draft's behaviour; the default).
    Conflict,
    /// Wait up to this long for the first request to finish, then replay its response (or run,
    /// if it released the key); answer 409 if it is still running by then.
    Wait(Duration),
}

/// What to do when the store fails to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreFailure {
    /// Answer 503 (the default): never risk running a request twice.
    FailClosed,
    /// Run the request unprotected: availability over exactly-once.
    FailOpen,
}

/// Which response statuses are stored for replay.
pub type StorePolicy = Arc<dyn Fn(StatusCode) -> bool + Send + Sync>;

/// The default storage policy: store what is final, release what a retry might change.
///
/// Stored: 2xx, 3xx, and 4xx except those that invite a retry (408 Request Timeout, 409
/// Conflict, 423 Locked, 425 Too Early, 429 Too Many Requests), those a caller fixes by
/// authenticating (401 Unauthorized, 403 Forbidden, 407 Proxy Authentication Required: a client
/// that refreshes its token and retries with the same key must be heard), and those a router
/// answers for a route it does not have (404 Not Found, 405 Method Not Allowed: they did
/// nothing, so running them again is harmless, and keeping them would let junk paths fill the
/// store). Released: those, every 5xx, and 1xx (a 101 switches protocols, and cannot be
/// replayed).
#[must_use]
pub fn stores_final_responses(status: StatusCode) -> bool {
    (200..500).contains(&status.as_u16())
        && !matches!(
            status.as_u16(),
            401 | 403 | 404 | 405 | 407 | 408 | 409 | 423 | 425 | 429
        )
}

/// The shortest [`InFlight::Wait`]: 1 ms (a zero wait is a [`InFlight::Conflict`]).
const MIN_IN_FLIGHT_WAIT: Duration = Duration::from_millis(1);

/// Everything the service reads per request, checked by [`IdempotencyBuilder::build`].
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
    /// At most `retention`.
    pub(crate) client_error_retention: Duration,
    /// Response headers never stored or replayed.
    pub(crate) strip: Vec<HeaderName>,
    pub(crate) identity: Arc<dyn Identify>,
    /// Whether an identity was set (even `Anonymous`): if not, the first covered request logs
    /// a warning, once per layer.
    pub(crate) identity_chosen: bool,
    pub(crate) warned: Arc<AtomicBool>,
    /// The `name` label of its metrics.
    pub(crate) name: Option<Arc<str>>,
    /// `palisade_idempotency_requests_total` (empty without the `metrics` feature; resolved
    /// when the layer is built).
    pub(crate) outcomes: Counters,
}

impl Config {
    /// Every default (valid, as a test checks).
    pub(crate) fn defaults() -> Self {
        Self {
            methods: vec![Method::POST, Method::PATCH],
            require_key: false,
            accept_unquoted: false,
            max_key_length: DEFAULT_MAX_KEY_LENGTH.get(),
            body_limit: DEFAULT_BODY_LIMIT,
            oversized: OversizedBody::Reject,
            response_limit: DEFAULT_RESPONSE_LIMIT,
            lease: DEFAULT_LEASE,
            retention: DEFAULT_RETENTION,
            in_flight: InFlight::Conflict,
            in_flight_retry_after: DEFAULT_IN_FLIGHT_RETRY_AFTER,
            store_failure: StoreFailure::FailClosed,
            stores: Arc::new(stores_final_responses),
            client_error_retention: DEFAULT_CLIENT_ERROR_RETENTION,
            strip: vec![SET_COOKIE],
            identity: Arc::new(Anonymous),
            identity_chosen: false,
            warned: Arc::new(AtomicBool::new(false)),
            name: None,
            outcomes: Counters::new(
                "palisade_idempotency_requests_total",
                LayerKind::Idempotency,
                &name_label(None),
                "outcome",
                &[],
            ),
        }
    }

    pub(crate) fn covers(&self, method: &Method) -> bool {
        self.methods.contains(method)
    }

    /// How long a stored answer with `status` is kept.
    pub(crate) fn retention_for(&self, status: StatusCode) -> Duration {
        if status.is_client_error() {
            self.client_error_retention
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

/// Configures an [`IdempotencyLayer`] (from [`IdempotencyLayer::builder`]); finish with
/// [`build`](Self::build). Every setter states its default.
///
/// ```
/// use std::time::Duration;
/// use palisade::idempotency::{IdempotencyLayer, IdentityHeader, InFlight};
///
/// let layer = IdempotencyLayer::builder()
///     .identity(IdentityHeader::new(http::HeaderName::from_static("x-tenant")))
///     .lease(Duration::from_secs(30))
///     .retention(Duration::from_secs(3600))
///     .in_flight(InFlight::Wait(Duration::from_secs(5)))
///     .build()
///     .unwrap();
/// # let _ = layer;
/// ```
#[must_use]
pub struct IdempotencyBuilder<St = MemoryStore> {
    settings: Config,
    /// `None`: the default, [`DEFAULT_CLIENT_ERROR_RETENTION`] or a shorter retention.
    client_error_retention: Option<Duration>,
    store: St,
}

impl IdempotencyBuilder {
    pub(crate) fn new() -> Self {
        Self {
            settings: Config::defaults(),
            client_error_retention: None,
            store: MemoryStore::new(),
        }
    }
}

impl<St> IdempotencyBuilder<St> {
    /// Keeps records in `store` instead of a new [`MemoryStore`] (one configured with
    /// [`MemoryStore::builder`], or a store shared with other layers).
    pub fn store<St2: IdempotencyStore>(self, store: St2) -> IdempotencyBuilder<St2> {
        IdempotencyBuilder {
            settings: self.settings,
            client_error_retention: self.client_error_retention,
            store,
        }
    }

    /// Names this layer: the `name` label of its metrics (feature `metrics`; see
    /// [`crate::metrics`]). Defaults to none (the label reads `unnamed`).
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.settings.name = Some(name.into());
        self
    }

    /// Which methods are deduplicated. Default: POST and PATCH (the methods that are not
    /// idempotent by themselves). Requests of other methods pass through untouched.
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.settings.methods = methods.into_iter().collect();
        self
    }

    /// Answers 400 to a request of a covered method that has no key. Default: `false` (such
    /// requests pass through unprotected).
    pub fn require_key(mut self, require: bool) -> Self {
        self.settings.require_key = require;
        self
    }

    /// Accepts unquoted keys (`Idempotency-Key: 8e03978e-...`), as many clients send, besides
    /// the draft's quoted sf-strings. Default: `false`.
    pub fn accept_unquoted_keys(mut self, accept: bool) -> Self {
        self.settings.accept_unquoted = accept;
        self
    }

    /// The longest key accepted, in characters. Default: 255 ([`DEFAULT_MAX_KEY_LENGTH`]).
    pub fn max_key_length(mut self, max: NonZeroUsize) -> Self {
        self.settings.max_key_length = max.get();
        self
    }

    /// Who the caller is: the identity scopes every record (see [`Identify`] and its security
    /// note), and counts it against the caller's quota in the store. Default: [`Anonymous`],
    /// one scope for all callers, with no per-caller quota; a layer left at the default logs a
    /// warning once, at its first covered request. Pass [`Anonymous`] to choose it explicitly
    /// (for a service whose callers are one party, or whose records hold nothing private).
    pub fn identity(mut self, identity: impl Identify) -> Self {
        let settings = &mut self.settings;
        settings.identity = Arc::new(identity);
        settings.identity_chosen = true;
        self
    }

    /// Response headers never stored, so never replayed to another request with the key.
    /// Default: `Set-Cookie` alone: a session cookie belongs to the caller who got it, and
    /// with an identity shared by several callers, replaying it would hand one caller's
    /// session to another. The list given replaces the default; include `Set-Cookie` in it.
    /// Hop-by-hop headers are never stored either way.
    pub fn strip_headers(mut self, headers: impl IntoIterator<Item = HeaderName>) -> Self {
        self.settings.strip = headers.into_iter().collect();
        self
    }

    /// How long a stored 4xx answer is replayed ([`MIN_LEASE`] up to the retention). Default:
    /// [`DEFAULT_CLIENT_ERROR_RETENTION`] (5 minutes), or the whole retention when that is
    /// shorter.
    pub fn client_error_retention(mut self, retention: Duration) -> Self {
        self.client_error_retention = Some(retention);
        self
    }

    /// The largest request body read and fingerprinted, in bytes. Default:
    /// [`DEFAULT_BODY_LIMIT`] (1 MiB).
    pub fn body_limit(mut self, limit: usize) -> Self {
        self.settings.body_limit = limit;
        self
    }

    /// What to do with a body over the limit. Default: [`OversizedBody::Reject`] (413).
    pub fn oversized_body(mut self, oversized: OversizedBody) -> Self {
        self.settings.oversized = oversized;
        self
    }

    /// The largest response body stored, in bytes. A larger response is sent to its client but
    /// not stored: its key keeps a record that the request ran (a duplicate gets `409`,
    /// [`ResultNotKept`](super::IdempotencyRejection::ResultNotKept)), so it never runs twice.
    /// A store also refuses a new key unless it has this much room left. Default:
    /// [`DEFAULT_RESPONSE_LIMIT`] (1 MiB).
    pub fn response_limit(mut self, limit: usize) -> Self {
        self.settings.response_limit = limit;
        self
    }

    /// How long a claim holds its key ([`MIN_LEASE`] to [`MAX_LEASE`]). If the request is
    /// still running when the lease ends, a duplicate may take the key over and run (or a full
    /// store may drop the claim); the first one's response is then not stored. Set it above
    /// the handler's timeout. Default: [`DEFAULT_LEASE`] (90 s).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.settings.lease = lease;
        self
    }

    /// How long a stored response is replayed ([`MIN_LEASE`] to [`MAX_RETENTION`]); after
    /// that the key is free again. Publish it to clients. Default: [`DEFAULT_RETENTION`]
    /// (24 h).
    pub fn retention(mut self, retention: Duration) -> Self {
        self.settings.retention = retention;
        self
    }

    /// What a duplicate does while the first request runs. Default: [`InFlight::Conflict`]; a
    /// [`Wait`](InFlight::Wait) is at least 1 ms.
    pub fn in_flight(mut self, in_flight: InFlight) -> Self {
        self.settings.in_flight = in_flight;
        self
    }

    /// The `Retry-After` sent with a 409. Default: [`DEFAULT_IN_FLIGHT_RETRY_AFTER`] (1 s).
    pub fn in_flight_retry_after(mut self, retry_after: Duration) -> Self {
        self.settings.in_flight_retry_after = retry_after;
        self
    }

    /// What to do when the store fails. Default: [`StoreFailure::FailClosed`] (503).
    pub fn store_failure(mut self, failure: StoreFailure) -> Self {
        self.settings.store_failure = failure;
        self
    }

    /// Which statuses are stored for replay; the claim of any other response is released, so a
    /// retry runs again. Default: [`stores_final_responses`].
    pub fn store_when(
        mut self,
        stores: impl Fn(StatusCode) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.settings.stores = Arc::new(stores);
        self
    }

    /// Checks the settings together and builds the layer, whose settings and store every
    /// service it makes shares.
    ///
    /// # Errors
    ///
    /// [`ConfigError::DurationOutOfRange`] naming the first setting out of range: a lease
    /// outside [`MIN_LEASE`] to [`MAX_LEASE`], a retention outside [`MIN_LEASE`] to
    /// [`MAX_RETENTION`], a client-error retention under [`MIN_LEASE`], an
    /// [`InFlight::Wait`] under 1 ms; [`ConfigError::Conflict`] for a client-error retention
    /// longer than the retention.
    pub fn build(self) -> Result<IdempotencyLayer<St>, ConfigError> {
        let mut settings = self.settings;
        duration_within("lease", settings.lease, MIN_LEASE, MAX_LEASE)?;
        duration_within("retention", settings.retention, MIN_LEASE, MAX_RETENTION)?;
        settings.client_error_retention = match self.client_error_retention {
            None => DEFAULT_CLIENT_ERROR_RETENTION.min(settings.retention),
            Some(retention) if retention > settings.retention => {
                return Err(ConfigError::Conflict {
                    setting: "client_error_retention",
                    value: format!("{retention:?}"),
                    other: "retention",
                    why: "a 4xx answer cannot outlive the record that holds it",
                });
            }
            Some(retention) => duration_within(
                "client_error_retention",
                retention,
                MIN_LEASE,
                MAX_RETENTION,
            )?,
        };
        if let InFlight::Wait(wait) = settings.in_flight {
            duration_within("in_flight", wait, MIN_IN_FLIGHT_WAIT, Duration::MAX)?;
        }
        Ok(IdempotencyLayer::from_parts(settings, self.store))
    }
}

impl<St: fmt::Debug> fmt::Debug for IdempotencyBuilder<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyBuilder")
            .field("settings", &self.settings)
            .field("client_error_retention", &self.client_error_retention)
            .field("store", &self.store)
            .finish()
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_stores_final_responses_only() {
        for stored in [200, 201, 204, 301, 400, 410, 413, 422] {
            assert!(
                stores_final_responses(StatusCode::from_u16(stored).unwrap()),
                "{stored}"
            );
        }
        for released in [
            101, 401, 403, 404, 405, 407, 408, 409, 423, 425, 429, 500, 502, 503, 504,
        ] {
            assert!(
                !stores_final_responses(StatusCode::from_u16(released).unwrap()),
                "{released}"
            );
        }
    }

    /// The setting a refused builder names.
    fn refused(builder: IdempotencyBuilder) -> &'static str {
        match builder.build() {
            Err(
                ConfigError::DurationOutOfRange { setting, .. }
                | ConfigError::Conflict { setting, .. },
            ) => setting,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn durations_out_of_range_are_refused_naming_the_setting() {
        let builder = IdempotencyBuilder::new;
        let ms = Duration::from_millis;
        assert_eq!(refused(builder().lease(Duration::ZERO)), "lease");
        assert_eq!(refused(builder().lease(MAX_LEASE + ms(1))), "lease");
        assert_eq!(refused(builder().retention(ms(999))), "retention");
        assert_eq!(refused(builder().retention(Duration::MAX)), "retention");
        let too_short = builder().client_error_retention(ms(999));
        assert_eq!(refused(too_short), "client_error_retention");
        let past_retention = builder()
            .retention(Duration::from_secs(60))
            .client_error_retention(Duration::from_secs(61));
        assert_eq!(refused(past_retention), "client_error_retention");
        let no_wait = builder().in_flight(InFlight::Wait(Duration::ZERO));
        assert_eq!(refused(no_wait), "in_flight");
        // Every bound is inclusive.
        for lease in [MIN_LEASE, MAX_LEASE] {
            assert!(builder().lease(lease).build().is_ok());
        }
        for retention in [MIN_LEASE, MAX_RETENTION] {
            let both = builder()
                .retention(retention)
                .client_error_retention(retention);
            assert!(both.build().is_ok());
        }
    }

    #[test]
    fn the_client_error_retention_left_at_its_default_follows_a_shorter_retention() {
        let minute = Duration::from_secs(60);
        let layer = IdempotencyBuilder::new().retention(minute).build().unwrap();
        let settings = layer.settings();
        assert_eq!(settings.retention_for(StatusCode::BAD_REQUEST), minute);
        let layer = IdempotencyBuilder::new().build().unwrap();
        let settings = layer.settings();
        assert_eq!(
            settings.retention_for(StatusCode::BAD_REQUEST),
            DEFAULT_CLIENT_ERROR_RETENTION
        );
        assert_eq!(settings.retention_for(StatusCode::OK), DEFAULT_RETENTION);
    }
}
