//! Layer configurations from files (feature `serde`).
//!
//! Each layer has a plain-data twin of its builder that deserializes with serde from TOML,
//! JSON or any other format serde reads (numbers must arrive as numbers: an environment
//! reader that hands every value over as a string needs one that parses them, as `envy`
//! does), and builds the layer *through the builder*: the same defaults, the same
//! validation, the same [`ConfigError`] naming the setting and its allowed range. Fields are
//! named like the builder's setters; every field is optional unless its builder requires it (a
//! timeout's `limit`, a cache's `ttl`); an unknown field is an error that names it and lists
//! the known ones.
//!
//! Durations are human strings (see [`parse_duration`]): `"250ms"`, `"2s"`, `"1m30s"`.
//! Shares (`failure_rate`, `open_jitter`, …) are [`Ratio`]s, numbers from 0 to 1;
//! multipliers ([`Factor`]s) are numbers of at least 0.
//!
//! ```
//! use palisade::config::RetryConfig;
//!
//! let retry: RetryConfig = serde_json::from_str(
//!     r#"{ "name": "payments", "max_attempts": 4,
//!          "backoff": { "base": "50ms", "cap": "2s", "jitter": "full" },
//!          "budget": { "kind": "percent", "ttl": "10s", "retry_share": 0.2 } }"#,
//! ).unwrap();
//! let layer = retry.layer().unwrap();
//! # let _ = layer;
//!
//! let typo = serde_json::from_str::<RetryConfig>(r#"{ "max_atempts": 4 }"#).unwrap_err();
//! assert!(typo.to_string().contains("unknown field `max_atempts`"));
//! ```
//!
//! `examples/config.rs` loads a whole client and server stack from a TOML file.
//!
//! The classifier, key functions, hooks, clocks and stores are code, not configuration: build
//! with the config, then set them on the builder ([`CircuitBreakerConfig::apply`] and its
//! siblings take a builder that already has them).

mod duration;

#[allow(unused_imports)] // Which layers use them depends on the features.
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use serde::Deserialize;

pub use self::duration::parse_duration;
#[allow(unused_imports)] // Which layers use it depends on the features.
use crate::error::ConfigError;
#[allow(unused_imports)]
use crate::{Factor, Ratio};

/// [`TimeoutLayer`](crate::timeout::TimeoutLayer)'s settings.
#[cfg(feature = "timeout")]
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutConfig {
    /// The limit per request (required).
    #[serde(deserialize_with = "duration::human")]
    pub limit: Duration,
    /// The metrics `name` label.
    #[serde(default)]
    pub name: Option<String>,
    /// Whether the expiry becomes the request's deadline. Default: `false`.
    #[serde(default)]
    pub publish_deadline: Option<bool>,
}

#[cfg(feature = "timeout")]
impl TimeoutConfig {
    /// The layer.
    pub fn layer(&self) -> crate::timeout::TimeoutLayer {
        let mut layer = crate::timeout::TimeoutLayer::new(self.limit);
        if let Some(publish) = self.publish_deadline {
            layer = layer.publish_deadline(publish);
        }
        if let Some(name) = &self.name {
            layer = layer.name(name.as_str());
        }
        layer
    }
}

/// [`ServerTimeoutLayer`](crate::timeout::ServerTimeoutLayer)'s settings.
#[cfg(all(feature = "timeout", feature = "http"))]
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTimeoutConfig {
    /// The most a handler gets (required).
    #[serde(deserialize_with = "duration::human")]
    pub limit: Duration,
    /// The metrics `name` label.
    #[serde(default)]
    pub name: Option<String>,
    /// The status of a timed-out answer, 400 to 599. Default: 503.
    #[serde(default)]
    pub status: Option<u16>,
    /// Whether the caller's `grpc-timeout` is honoured. Default: `true`.
    #[serde(default)]
    pub accept_grpc_timeout: Option<bool>,
    /// Whether the handler's deadline is published. Default: `true`.
    #[serde(default)]
    pub publish_deadline: Option<bool>,
}

#[cfg(all(feature = "timeout", feature = "http"))]
impl ServerTimeoutConfig {
    /// The layer.
    ///
    /// # Errors
    ///
    /// [`ConfigError::CountOutOfRange`] for a `status` outside 400 to 599.
    pub fn layer(&self) -> Result<crate::timeout::ServerTimeoutLayer, ConfigError> {
        let mut layer = crate::timeout::ServerTimeoutLayer::new(self.limit);
        if self.accept_grpc_timeout.unwrap_or(true) {
            layer = layer.accept(crate::http::DeadlineHeader::grpc());
        }
        if let Some(status) = self.status {
            let status = http::StatusCode::from_u16(status)
                .ok()
                .filter(|s| s.is_client_error() || s.is_server_error())
                .ok_or(ConfigError::CountOutOfRange {
                    setting: "status",
                    value: u64::from(status),
                    min: 400,
                    max: 599,
                })?;
            layer = layer.status(status);
        }
        if let Some(publish) = self.publish_deadline {
            layer = layer.publish_deadline(publish);
        }
        if let Some(name) = &self.name {
            layer = layer.name(name.as_str());
        }
        Ok(layer)
    }
}

/// A time window: its span and its buckets.
#[cfg(feature = "circuit-breaker")]
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeWindowConfig {
    /// How far back the window looks.
    #[serde(deserialize_with = "duration::human")]
    pub span: Duration,
    /// How many buckets it is counted in.
    pub buckets: NonZeroU32,
}

/// Slow-call detection: the threshold and the share of slow calls that opens the breaker.
#[cfg(feature = "circuit-breaker")]
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowCallsConfig {
    /// A call slower than this is slow.
    #[serde(deserialize_with = "duration::human")]
    pub threshold: Duration,
    /// The share of slow calls that opens the breaker.
    pub rate: Ratio,
}

/// [`CircuitBreakerBuilder`](crate::circuit_breaker::CircuitBreakerBuilder)'s settings. Set at
/// most one of `consecutive_failures`, `count_window` and `time_window`.
#[cfg(feature = "circuit-breaker")]
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[allow(missing_docs)] // Each field is the builder setter of the same name.
pub struct CircuitBreakerConfig {
    pub name: Option<String>,
    pub consecutive_failures: Option<NonZeroU32>,
    pub count_window: Option<NonZeroU32>,
    pub time_window: Option<TimeWindowConfig>,
    pub failure_rate: Option<Ratio>,
    pub minimum_calls: Option<NonZeroU32>,
    pub slow_calls: Option<SlowCallsConfig>,
    #[serde(deserialize_with = "duration::human_opt")]
    pub open_for: Option<Duration>,
    #[serde(deserialize_with = "duration::human_opt")]
    pub open_backoff: Option<Duration>,
    pub open_jitter: Option<Ratio>,
    pub half_open_probes: Option<NonZeroU32>,
    /// The longest pushback honoured from the server (`server_directed`).
    #[serde(deserialize_with = "duration::human_opt")]
    pub server_directed: Option<Duration>,
    pub max_keys: Option<NonZeroUsize>,
}

#[cfg(feature = "circuit-breaker")]
impl CircuitBreakerConfig {
    /// `builder` with these settings (it keeps its classifier, hooks and clock).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Conflict`] when more than one trip policy is set; the rest is checked by
    /// the builder's `build`.
    pub fn apply<C>(
        &self,
        mut builder: crate::circuit_breaker::CircuitBreakerBuilder<C>,
    ) -> Result<crate::circuit_breaker::CircuitBreakerBuilder<C>, ConfigError> {
        let trips = [
            ("consecutive_failures", self.consecutive_failures.is_some()),
            ("count_window", self.count_window.is_some()),
            ("time_window", self.time_window.is_some()),
        ];
        let mut set = trips.iter().filter(|(_, set)| *set).map(|(name, _)| *name);
        if let (Some(first), Some(second)) = (set.next(), set.next()) {
            return Err(ConfigError::Conflict {
                setting: second,
                value: "set".to_owned(),
                other: first,
                why: "a breaker trips by one policy: set one of consecutive_failures, \
                      count_window, time_window",
            });
        }
        if let Some(name) = &self.name {
            builder = builder.name(name.as_str());
        }
        if let Some(threshold) = self.consecutive_failures {
            builder = builder.consecutive_failures(threshold);
        }
        if let Some(size) = self.count_window {
            builder = builder.count_window(size);
        }
        if let Some(window) = self.time_window {
            builder = builder.time_window(window.span, window.buckets);
        }
        if let Some(rate) = self.failure_rate {
            builder = builder.failure_rate(rate);
        }
        if let Some(calls) = self.minimum_calls {
            builder = builder.minimum_calls(calls);
        }
        if let Some(slow) = self.slow_calls {
            builder = builder.slow_calls(slow.threshold, slow.rate);
        }
        if let Some(open) = self.open_for {
            builder = builder.open_for(open);
        }
        if let Some(max) = self.open_backoff {
            builder = builder.open_backoff(max);
        }
        if let Some(jitter) = self.open_jitter {
            builder = builder.open_jitter(jitter);
        }
        if let Some(probes) = self.half_open_probes {
            builder = builder.half_open_probes(probes);
        }
        if let Some(max) = self.server_directed {
            builder = builder.server_directed(max);
        }
        if let Some(max) = self.max_keys {
            builder = builder.max_keys(max);
        }
        Ok(builder)
    }

    /// The breaker, with the default classifier (`Err` is a failure).
    ///
    /// # Errors
    ///
    /// As [`apply`](Self::apply) and the builder's `build`.
    pub fn build(&self) -> Result<crate::circuit_breaker::CircuitBreakerLayer, ConfigError> {
        self.apply(crate::circuit_breaker::CircuitBreakerLayer::builder())?
            .build()
    }

    /// The breaker for an HTTP client or handler (a 5xx or 429 is a failure).
    ///
    /// # Errors
    ///
    /// As [`apply`](Self::apply) and the builder's `build`.
    #[cfg(feature = "http")]
    pub fn build_http(
        &self,
    ) -> Result<
        crate::circuit_breaker::CircuitBreakerLayer<crate::classify::StatusClassifier>,
        ConfigError,
    > {
        self.apply(crate::circuit_breaker::CircuitBreakerLayer::http_builder())?
            .build()
    }
}

/// A backoff: [`Backoff::new`](crate::retry::Backoff::new)'s base and cap, and the jitter.
#[cfg(feature = "retry")]
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    /// The first wait's ceiling.
    #[serde(deserialize_with = "duration::human")]
    pub base: Duration,
    /// The longest wait.
    #[serde(deserialize_with = "duration::human")]
    pub cap: Duration,
    /// `"full"` (the default), `"equal"`, `"decorrelated"` or `"none"`.
    #[serde(default)]
    pub jitter: Option<JitterConfig>,
}

/// [`Jitter`](crate::retry::Jitter), by name.
#[cfg(feature = "retry")]
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)] // Each is the `Jitter` of the same name.
pub enum JitterConfig {
    Full,
    Equal,
    Decorrelated,
    None,
}

/// A retry budget, by `kind`: `"token_bucket"`, `"percent"` or `"unlimited"`.
#[cfg(feature = "retry")]
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[allow(missing_docs)] // Each field is the budget builder's setter of the same name.
pub enum BudgetConfig {
    /// [`RetryBudget::token_bucket`](crate::retry::RetryBudget::token_bucket).
    TokenBucket {
        #[serde(default)]
        max_tokens: Option<NonZeroU32>,
        #[serde(default)]
        token_ratio: Option<Ratio>,
    },
    /// [`RetryBudget::percent`](crate::retry::RetryBudget::percent).
    Percent {
        #[serde(default, deserialize_with = "duration::human_opt")]
        ttl: Option<Duration>,
        #[serde(default)]
        retry_share: Option<Factor>,
        #[serde(default)]
        min_per_second: Option<u32>,
    },
    /// [`RetryBudget::unlimited`](crate::retry::RetryBudget::unlimited).
    Unlimited,
}

#[cfg(feature = "retry")]
impl BudgetConfig {
    /// The budget.
    ///
    /// # Errors
    ///
    /// As the budget builder's `build`.
    pub fn build(&self) -> Result<crate::retry::RetryBudget, ConfigError> {
        use crate::retry::RetryBudget;
        match *self {
            Self::TokenBucket {
                max_tokens,
                token_ratio,
            } => {
                let mut builder = RetryBudget::token_bucket();
                if let Some(max) = max_tokens {
                    builder = builder.max_tokens(max);
                }
                if let Some(ratio) = token_ratio {
                    builder = builder.token_ratio(ratio);
                }
                builder.build()
            }
            Self::Percent {
                ttl,
                retry_share,
                min_per_second,
            } => {
                let mut builder = RetryBudget::percent();
                if let Some(ttl) = ttl {
                    builder = builder.ttl(ttl);
                }
                if let Some(share) = retry_share {
                    builder = builder.retry_share(share);
                }
                if let Some(floor) = min_per_second {
                    builder = builder.min_per_second(floor);
                }
                builder.build()
            }
            Self::Unlimited => Ok(RetryBudget::unlimited()),
        }
    }
}

/// [`RetryLayer`](crate::retry::RetryLayer)'s settings.
#[cfg(feature = "retry")]
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[allow(missing_docs)] // Each field is the layer setter of the same name.
pub struct RetryConfig {
    pub name: Option<String>,
    pub max_attempts: Option<NonZeroU32>,
    pub backoff: Option<BackoffConfig>,
    #[serde(deserialize_with = "duration::human_opt")]
    pub max_elapsed: Option<Duration>,
    #[serde(deserialize_with = "duration::human_opt")]
    pub max_pushback: Option<Duration>,
    pub budget: Option<BudgetConfig>,
    pub fail_when_budget_exhausted: Option<bool>,
    #[serde(deserialize_with = "duration::human_opt")]
    pub wait_for_reopening: Option<Duration>,
}

#[cfg(feature = "retry")]
impl RetryConfig {
    /// `layer` with these settings (it keeps its policy and hooks).
    ///
    /// # Errors
    ///
    /// As [`Backoff::new`](crate::retry::Backoff::new) and the budget builders.
    pub fn apply<P>(
        &self,
        mut layer: crate::retry::RetryLayer<P>,
    ) -> Result<crate::retry::RetryLayer<P>, ConfigError> {
        use crate::retry::{Backoff, Jitter};
        if let Some(name) = &self.name {
            layer = layer.name(name.as_str());
        }
        if let Some(attempts) = self.max_attempts {
            layer = layer.max_attempts(attempts);
        }
        if let Some(backoff) = self.backoff {
            let jitter = match backoff.jitter.unwrap_or(JitterConfig::Full) {
                JitterConfig::Full => Jitter::Full,
                JitterConfig::Equal => Jitter::Equal,
                JitterConfig::Decorrelated => Jitter::Decorrelated,
                JitterConfig::None => Jitter::None,
            };
            layer = layer.backoff(Backoff::new(backoff.base, backoff.cap)?.jitter(jitter));
        }
        if let Some(limit) = self.max_elapsed {
            layer = layer.max_elapsed(limit);
        }
        if let Some(limit) = self.max_pushback {
            layer = layer.max_pushback(limit);
        }
        if let Some(budget) = &self.budget {
            layer = layer.budget(budget.build()?);
        }
        if let Some(fail) = self.fail_when_budget_exhausted {
            layer = layer.fail_when_budget_exhausted(fail);
        }
        if let Some(max) = self.wait_for_reopening {
            layer = layer.wait_for_reopening(max);
        }
        Ok(layer)
    }

    /// The layer, with the default policy (`Err` is retried).
    ///
    /// # Errors
    ///
    /// As [`apply`](Self::apply).
    pub fn layer(&self) -> Result<crate::retry::RetryLayer, ConfigError> {
        self.apply(crate::retry::RetryLayer::new())
    }
}

/// [`ThrottleBuilder`](crate::throttle::ThrottleBuilder)'s settings.
#[cfg(feature = "throttle")]
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[allow(missing_docs)] // Each field is the builder setter of the same name.
pub struct ThrottleConfig {
    pub name: Option<String>,
    pub multiplier: Option<Factor>,
    pub window: Option<NonZeroU32>,
    pub minimum_calls: Option<NonZeroU32>,
    pub shed_after: Option<NonZeroU32>,
    #[serde(deserialize_with = "duration::human_opt")]
    pub probe_interval: Option<Duration>,
    pub probe_jitter: Option<Ratio>,
    #[serde(deserialize_with = "duration::human_opt")]
    pub slow_calls: Option<Duration>,
}

#[cfg(feature = "throttle")]
impl ThrottleConfig {
    /// `builder` with these settings (it keeps its classifier, hooks and clock).
    pub fn apply<C>(
        &self,
        mut builder: crate::throttle::ThrottleBuilder<C>,
    ) -> crate::throttle::ThrottleBuilder<C> {
        if let Some(name) = &self.name {
            builder = builder.name(name.as_str());
        }
        if let Some(multiplier) = self.multiplier {
            builder = builder.multiplier(multiplier);
        }
        if let Some(size) = self.window {
            builder = builder.window(size);
        }
        if let Some(calls) = self.minimum_calls {
            builder = builder.minimum_calls(calls);
        }
        if let Some(failures) = self.shed_after {
            builder = builder.shed_after(failures);
        }
        if let Some(interval) = self.probe_interval {
            builder = builder.probe_interval(interval);
        }
        if let Some(jitter) = self.probe_jitter {
            builder = builder.probe_jitter(jitter);
        }
        if let Some(threshold) = self.slow_calls {
            builder = builder.slow_calls(threshold);
        }
        builder
    }

    /// The throttle, with the default classifier.
    ///
    /// # Errors
    ///
    /// As the builder's `build`.
    pub fn build(&self) -> Result<crate::throttle::ThrottleLayer, ConfigError> {
        self.apply(crate::throttle::ThrottleLayer::builder())
            .build()
    }

    /// The throttle for HTTP (a 5xx or 429 is a failure).
    ///
    /// # Errors
    ///
    /// As the builder's `build`.
    #[cfg(feature = "http")]
    pub fn build_http(
        &self,
    ) -> Result<crate::throttle::ThrottleLayer<crate::classify::StatusClassifier>, ConfigError>
    {
        self.apply(
            crate::throttle::ThrottleLayer::builder()
                .classifier(crate::classify::StatusClassifier::new()),
        )
        .build()
    }
}

/// [`CacheBuilder`](crate::cache::CacheBuilder)'s settings (the key function is code: see
/// [`builder`](Self::builder)).
#[cfg(feature = "cache")]
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // Each field is the builder setter of the same name.
pub struct CacheConfig {
    /// How long an entry is fresh (required).
    #[serde(deserialize_with = "duration::human")]
    pub ttl: Duration,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "duration::human_opt")]
    pub stale_while_revalidate: Option<Duration>,
    #[serde(default, deserialize_with = "duration::human_opt")]
    pub stale_if_error: Option<Duration>,
    #[serde(default)]
    pub ttl_jitter: Option<Ratio>,
    #[serde(default)]
    pub early_refresh: Option<Factor>,
    #[serde(default, deserialize_with = "duration::human_opt")]
    pub lock_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration::human_opt")]
    pub refresh_backoff: Option<Duration>,
    #[serde(default)]
    pub max_entries: Option<NonZeroUsize>,
    #[serde(default)]
    pub max_weight: Option<u64>,
    #[serde(default)]
    pub max_entry_weight: Option<u64>,
    #[serde(default)]
    pub max_refreshes: Option<NonZeroUsize>,
    #[serde(default)]
    pub max_in_flight: Option<NonZeroUsize>,
}

#[cfg(feature = "cache")]
impl CacheConfig {
    /// A cache builder with these settings, keyed by `key_of`; finish it with `build`, which
    /// validates them.
    pub fn builder<F>(&self, key_of: F) -> crate::cache::CacheBuilder<F> {
        let mut builder = crate::cache::CacheLayer::builder(self.ttl, key_of);
        if let Some(name) = &self.name {
            builder = builder.name(name.as_str());
        }
        if let Some(window) = self.stale_while_revalidate {
            builder = builder.stale_while_revalidate(window);
        }
        if let Some(window) = self.stale_if_error {
            builder = builder.stale_if_error(window);
        }
        if let Some(jitter) = self.ttl_jitter {
            builder = builder.ttl_jitter(jitter);
        }
        if let Some(beta) = self.early_refresh {
            builder = builder.early_refresh(beta);
        }
        if let Some(timeout) = self.lock_timeout {
            builder = builder.lock_timeout(timeout);
        }
        if let Some(backoff) = self.refresh_backoff {
            builder = builder.refresh_backoff(backoff);
        }
        if let Some(max) = self.max_entries {
            builder = builder.max_entries(max);
        }
        if let Some(max) = self.max_weight {
            builder = builder.max_weight(max);
        }
        if let Some(max) = self.max_entry_weight {
            builder = builder.max_entry_weight(max);
        }
        if let Some(max) = self.max_refreshes {
            builder = builder.max_refreshes(max);
        }
        if let Some(max) = self.max_in_flight {
            builder = builder.max_in_flight(max);
        }
        builder
    }
}

/// [`HttpCacheBuilder`](crate::cache::HttpCacheBuilder)'s settings (a remote tier and hooks
/// are code: set them on the builder [`builder`](Self::builder) returns).
#[cfg(all(feature = "cache", feature = "http"))]
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // Each field is the builder setter of the same name.
pub struct HttpCacheConfig {
    /// `"shared"` (in front of handlers: honours `s-maxage` and `private`) or `"private"`
    /// (one client's own cache) (required).
    pub mode: CacheModeConfig,
    #[serde(default)]
    pub name: Option<String>,
    /// In bytes.
    #[serde(default)]
    pub max_body: Option<NonZeroUsize>,
    /// In bytes.
    #[serde(default)]
    pub max_bytes: Option<std::num::NonZeroU64>,
    #[serde(default)]
    pub max_entries: Option<NonZeroUsize>,
    #[serde(default)]
    pub heuristic_freshness: Option<Ratio>,
    #[serde(default, deserialize_with = "duration::human_opt")]
    pub stale_while_revalidate: Option<Duration>,
    #[serde(default, deserialize_with = "duration::human_opt")]
    pub stale_if_error: Option<Duration>,
    #[serde(default)]
    pub store_set_cookie_responses: Option<bool>,
    #[serde(default)]
    pub early_refresh: Option<Factor>,
    #[serde(default, deserialize_with = "duration::human_opt")]
    pub lock_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration::human_opt")]
    pub refresh_backoff: Option<Duration>,
    #[serde(default)]
    pub max_refreshes: Option<NonZeroUsize>,
    #[serde(default)]
    pub max_in_flight: Option<NonZeroUsize>,
}

/// [`CacheMode`](crate::cache::CacheMode), by name.
#[cfg(all(feature = "cache", feature = "http"))]
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)] // Each is the mode of the same name.
pub enum CacheModeConfig {
    Shared,
    Private,
}

#[cfg(all(feature = "cache", feature = "http"))]
impl HttpCacheConfig {
    /// A builder with these settings; finish it with `build`, which validates them.
    pub fn builder(&self) -> crate::cache::HttpCacheBuilder {
        let mode = match self.mode {
            CacheModeConfig::Shared => crate::cache::CacheMode::Shared,
            CacheModeConfig::Private => crate::cache::CacheMode::Private,
        };
        let mut builder = crate::cache::HttpCacheLayer::builder(mode);
        if let Some(name) = &self.name {
            builder = builder.name(name.as_str());
        }
        if let Some(max) = self.max_body {
            builder = builder.max_body(max);
        }
        if let Some(max) = self.max_bytes {
            builder = builder.max_bytes(max);
        }
        if let Some(max) = self.max_entries {
            builder = builder.max_entries(max);
        }
        if let Some(share) = self.heuristic_freshness {
            builder = builder.heuristic_freshness(share);
        }
        if let Some(window) = self.stale_while_revalidate {
            builder = builder.stale_while_revalidate(window);
        }
        if let Some(window) = self.stale_if_error {
            builder = builder.stale_if_error(window);
        }
        if let Some(store) = self.store_set_cookie_responses {
            builder = builder.store_set_cookie_responses(store);
        }
        if let Some(beta) = self.early_refresh {
            builder = builder.early_refresh(beta);
        }
        if let Some(timeout) = self.lock_timeout {
            builder = builder.lock_timeout(timeout);
        }
        if let Some(backoff) = self.refresh_backoff {
            builder = builder.refresh_backoff(backoff);
        }
        if let Some(max) = self.max_refreshes {
            builder = builder.max_refreshes(max);
        }
        if let Some(max) = self.max_in_flight {
            builder = builder.max_in_flight(max);
        }
        builder
    }
}

/// [`IdempotencyBuilder`](crate::idempotency::IdempotencyBuilder)'s settings (the store and
/// the caller's identity are code: set them on the builder [`apply`](Self::apply) returns).
#[cfg(feature = "idempotency")]
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[allow(missing_docs)] // Each field is the builder setter of the same name.
pub struct IdempotencyConfig {
    pub name: Option<String>,
    /// The methods covered, by name (`["POST", "PATCH"]`).
    pub methods: Option<Vec<String>>,
    pub require_key: Option<bool>,
    pub accept_unquoted_keys: Option<bool>,
    pub max_key_length: Option<NonZeroUsize>,
    /// In bytes.
    pub body_limit: Option<usize>,
    /// `"reject"` (413) or `"pass_through"` (run unprotected).
    pub oversized_body: Option<OversizedBodyConfig>,
    /// In bytes.
    pub response_limit: Option<usize>,
    #[serde(deserialize_with = "duration::human_opt")]
    pub lease: Option<Duration>,
    #[serde(deserialize_with = "duration::human_opt")]
    pub retention: Option<Duration>,
    #[serde(deserialize_with = "duration::human_opt")]
    pub client_error_retention: Option<Duration>,
    /// A duplicate of a request in flight: `"conflict"` (409 at once) or how long to wait for
    /// its answer (`"2s"`).
    pub in_flight: Option<Switch>,
    #[serde(deserialize_with = "duration::human_opt")]
    pub in_flight_retry_after: Option<Duration>,
    /// `"fail_closed"` (503) or `"fail_open"` (run unprotected).
    pub store_failure: Option<StoreFailureConfig>,
}

/// [`OversizedBody`](crate::idempotency::OversizedBody), by name.
#[cfg(feature = "idempotency")]
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)] // Each is the variant of the same name.
pub enum OversizedBodyConfig {
    Reject,
    PassThrough,
}

/// [`StoreFailure`](crate::idempotency::StoreFailure), by name.
#[cfg(feature = "idempotency")]
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)] // Each is the variant of the same name.
pub enum StoreFailureConfig {
    FailClosed,
    FailOpen,
}

#[cfg(feature = "idempotency")]
impl IdempotencyConfig {
    /// `builder` with these settings (it keeps its store and identity).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] for a method name that is not one; the rest is checked by the
    /// builder's `build`.
    pub fn apply<St>(
        &self,
        mut builder: crate::idempotency::IdempotencyBuilder<St>,
    ) -> Result<crate::idempotency::IdempotencyBuilder<St>, ConfigError> {
        use crate::idempotency::{InFlight, OversizedBody, StoreFailure};
        if let Some(name) = &self.name {
            builder = builder.name(name.as_str());
        }
        if let Some(methods) = &self.methods {
            let methods = methods
                .iter()
                .map(|method| {
                    http::Method::from_bytes(method.as_bytes()).map_err(|_| ConfigError::Invalid {
                        setting: "methods",
                        why: "an entry is not an HTTP method name",
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            builder = builder.methods(methods);
        }
        if let Some(require) = self.require_key {
            builder = builder.require_key(require);
        }
        if let Some(accept) = self.accept_unquoted_keys {
            builder = builder.accept_unquoted_keys(accept);
        }
        if let Some(max) = self.max_key_length {
            builder = builder.max_key_length(max);
        }
        if let Some(limit) = self.body_limit {
            builder = builder.body_limit(limit);
        }
        if let Some(oversized) = self.oversized_body {
            builder = builder.oversized_body(match oversized {
                OversizedBodyConfig::Reject => OversizedBody::Reject,
                OversizedBodyConfig::PassThrough => OversizedBody::PassThrough,
            });
        }
        if let Some(limit) = self.response_limit {
            builder = builder.response_limit(limit);
        }
        if let Some(lease) = self.lease {
            builder = builder.lease(lease);
        }
        if let Some(retention) = self.retention {
            builder = builder.retention(retention);
        }
        if let Some(retention) = self.client_error_retention {
            builder = builder.client_error_retention(retention);
        }
        if let Some(in_flight) = self.in_flight {
            builder = builder.in_flight(match in_flight {
                Switch::After(wait) => InFlight::Wait(wait),
                Switch::Off => InFlight::Conflict,
            });
        }
        if let Some(retry_after) = self.in_flight_retry_after {
            builder = builder.in_flight_retry_after(retry_after);
        }
        if let Some(failure) = self.store_failure {
            builder = builder.store_failure(match failure {
                StoreFailureConfig::FailClosed => StoreFailure::FailClosed,
                StoreFailureConfig::FailOpen => StoreFailure::FailOpen,
            });
        }
        Ok(builder)
    }

    /// The layer, with the in-memory store and no identity.
    ///
    /// # Errors
    ///
    /// As [`apply`](Self::apply) and the builder's `build`.
    pub fn build(&self) -> Result<crate::idempotency::IdempotencyLayer, ConfigError> {
        self.apply(crate::idempotency::IdempotencyLayer::builder())?
            .build()
    }
}

/// [`HttpClientLayer`](crate::preset::HttpClientLayer)'s settings: each stage's, where
/// given (an absent stage keeps the preset's default).
#[cfg(feature = "preset")]
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpClientConfig {
    /// The stages' metrics name.
    pub name: Option<String>,
    /// The total timeout, or `"off"`.
    pub total_timeout: Option<Switch>,
    /// The per-attempt timeout, or `"off"`.
    pub attempt_timeout: Option<Switch>,
    /// The largest request body kept for replay, in bytes.
    pub body_limit: Option<usize>,
    /// The retry stage (its policy stays the HTTP one).
    pub retry: Option<RetryConfig>,
    /// The throttle guarding the dependency (the default guard).
    pub throttle: Option<ThrottleConfig>,
    /// A circuit breaker instead of the throttle.
    pub breaker: Option<CircuitBreakerConfig>,
}

/// A duration, or `"off"` (for `in_flight`, `"conflict"` also means off: no wait).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Switch {
    /// This long.
    After(Duration),
    /// Off.
    Off,
}

impl<'de> Deserialize<'de> for Switch {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text == "off" || text == "conflict" {
            return Ok(Self::Off);
        }
        parse_duration(&text)
            .map(Self::After)
            .map_err(|why| serde::de::Error::custom(format!("{why}, or \"off\"")))
    }
}

#[cfg(feature = "preset")]
impl HttpClientConfig {
    /// The preset with these settings.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Conflict`] for both a `throttle` and a `breaker`; otherwise as each
    /// stage's builder.
    pub fn layer(&self) -> Result<crate::preset::HttpClientLayer, ConfigError> {
        let mut layer = crate::preset::HttpClientLayer::new();
        match self.total_timeout {
            Some(Switch::After(limit)) => layer = layer.total_timeout(limit),
            Some(Switch::Off) => layer = layer.without_total_timeout(),
            None => {}
        }
        match self.attempt_timeout {
            Some(Switch::After(limit)) => layer = layer.attempt_timeout(limit),
            Some(Switch::Off) => layer = layer.without_attempt_timeout(),
            None => {}
        }
        if let Some(limit) = self.body_limit {
            layer = layer.body_limit(limit);
        }
        if let Some(retry) = &self.retry {
            let base = crate::retry::RetryLayer::new().policy(crate::retry::HttpPolicy::new());
            layer = layer.retry(retry.apply(base)?);
        }
        match (&self.throttle, &self.breaker) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Conflict {
                    setting: "breaker",
                    value: "set".to_owned(),
                    other: "throttle",
                    why: "the client guards its dependency with one of them",
                });
            }
            (Some(throttle), None) => layer = layer.throttle(throttle.build_http()?),
            (None, Some(breaker)) => layer = layer.breaker(breaker.build_http()?),
            (None, None) => {}
        }
        // Last: the name goes to the stages built above too.
        if let Some(name) = &self.name {
            layer = layer.name(name.as_str());
        }
        Ok(layer)
    }
}

/// [`HttpServerLayer`](crate::preset::HttpServerLayer)'s settings.
#[cfg(feature = "preset")]
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpServerConfig {
    /// Both stages' metrics name.
    pub name: Option<String>,
    /// The server timeout, or `"off"`.
    pub timeout: Option<Switch>,
    /// The idempotency stage's settings, or `false` for none. Default: the layer's defaults.
    pub idempotency: Option<IdempotencyStage>,
}

/// The server preset's idempotency stage: `false` (none), `true` (the defaults), or a table of
/// settings.
#[cfg(feature = "preset")]
#[derive(Clone, Debug)]
pub enum IdempotencyStage {
    /// `true`: the defaults; `false`: no stage.
    On(bool),
    /// These settings.
    Settings(IdempotencyConfig),
}

// By hand rather than `untagged`: an untagged enum reports a typo in the table as "did not
// match any variant", losing the field's name.
#[cfg(feature = "preset")]
impl<'de> Deserialize<'de> for IdempotencyStage {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Stage;
        impl<'de> serde::de::Visitor<'de> for Stage {
            type Value = IdempotencyStage;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false, or a table of idempotency settings")
            }

            fn visit_bool<E: serde::de::Error>(self, on: bool) -> Result<Self::Value, E> {
                Ok(IdempotencyStage::On(on))
            }

            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                map: M,
            ) -> Result<Self::Value, M::Error> {
                IdempotencyConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(IdempotencyStage::Settings)
            }
        }
        deserializer.deserialize_any(Stage)
    }
}

#[cfg(feature = "preset")]
impl HttpServerConfig {
    /// The preset with these settings.
    ///
    /// # Errors
    ///
    /// As [`IdempotencyConfig::build`].
    pub fn layer(&self) -> Result<crate::preset::HttpServerLayer, ConfigError> {
        let mut layer = crate::preset::HttpServerLayer::new();
        match self.timeout {
            Some(Switch::After(limit)) => {
                layer = layer.timeout(
                    crate::timeout::ServerTimeoutLayer::new(limit)
                        .accept(crate::http::DeadlineHeader::grpc()),
                );
            }
            Some(Switch::Off) => layer = layer.without_timeout(),
            None => {}
        }
        match &self.idempotency {
            Some(IdempotencyStage::On(false)) => layer = layer.without_idempotency(),
            Some(IdempotencyStage::Settings(settings)) => {
                layer = layer.idempotency(settings.build()?);
            }
            Some(IdempotencyStage::On(true)) | None => {}
        }
        if let Some(name) = &self.name {
            layer = layer.name(name.as_str());
        }
        Ok(layer)
    }
}
