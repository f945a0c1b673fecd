//! The one configuration rule (DEVELOPERS.md, "Configuration"), checked through the public API
//! of every layer: each default passes back into its own setter as it is, and a value out of
//! range is refused by `build()` with an error that names the setting, never clamped.

mod support;

use std::time::Duration;

use palisade::circuit_breaker::{self, CircuitBreakerLayer};
use palisade::error::ConfigError;
use palisade::idempotency::{self, IdempotencyLayer, InFlight, MemoryStore};
use palisade::retry::{self, RetryBudget, RetryLayer};
use palisade::throttle::{self, ThrottleLayer};
use palisade::{Factor, Ratio, preset};

/// The setting a configuration error names.
fn setting(error: &ConfigError) -> &'static str {
    match error {
        ConfigError::ShareOutOfRange { setting, .. }
        | ConfigError::MustBePositive { setting }
        | ConfigError::CountOutOfRange { setting, .. }
        | ConfigError::DurationOutOfRange { setting, .. }
        | ConfigError::Conflict { setting, .. } => setting,
        other => panic!("a configuration error that names no setting: {other:?}"),
    }
}

#[test]
fn every_default_goes_back_into_its_own_setter() {
    support::init_tracing();
    // Compiling is most of the check (each constant has its setter's type); building checks
    // that the defaults are also in range together.
    let _breaker = CircuitBreakerLayer::builder()
        .count_window(circuit_breaker::DEFAULT_WINDOW_SIZE)
        .minimum_calls(circuit_breaker::DEFAULT_MINIMUM_CALLS)
        .failure_rate(circuit_breaker::DEFAULT_FAILURE_RATE)
        .open_for(circuit_breaker::DEFAULT_OPEN_DURATION)
        .half_open_probes(circuit_breaker::DEFAULT_PROBES)
        .server_directed(circuit_breaker::DEFAULT_MAX_PUSHBACK)
        .max_keys(circuit_breaker::DEFAULT_MAX_KEYS)
        .build()
        .unwrap();
    let _throttle = ThrottleLayer::builder()
        .multiplier(throttle::DEFAULT_MULTIPLIER)
        .window(throttle::DEFAULT_WINDOW_SIZE)
        .minimum_calls(throttle::DEFAULT_MINIMUM_CALLS)
        .shed_after(throttle::DEFAULT_SHED_AFTER)
        .probe_interval(throttle::DEFAULT_PROBE_INTERVAL)
        .probe_jitter(throttle::DEFAULT_PROBE_JITTER)
        .build()
        .unwrap();
    let _retry = RetryLayer::new()
        .max_attempts(retry::DEFAULT_MAX_ATTEMPTS)
        .max_pushback(retry::DEFAULT_MAX_PUSHBACK)
        .budget(
            RetryBudget::token_bucket()
                .max_tokens(retry::DEFAULT_MAX_TOKENS)
                .token_ratio(retry::DEFAULT_TOKEN_RATIO)
                .build()
                .unwrap(),
        );
    RetryBudget::percent()
        .ttl(retry::DEFAULT_TTL)
        .retry_share(retry::DEFAULT_RETRY_SHARE)
        .min_per_second(retry::DEFAULT_MIN_PER_SECOND)
        .build()
        .unwrap();
    RetryBudget::percent()
        .ttl(preset::DEFAULT_BUDGET_TTL)
        .retry_share(preset::DEFAULT_RETRY_SHARE)
        .build()
        .unwrap();
    let store = MemoryStore::builder()
        .max_entries(idempotency::DEFAULT_MAX_ENTRIES)
        .max_bytes(idempotency::DEFAULT_MAX_BYTES)
        .max_per_owner(idempotency::DEFAULT_MAX_PER_OWNER)
        .build();
    let _idempotency = IdempotencyLayer::builder()
        .store(store)
        .max_key_length(palisade::http::DEFAULT_MAX_KEY_LENGTH)
        .body_limit(idempotency::DEFAULT_BODY_LIMIT)
        .response_limit(idempotency::DEFAULT_RESPONSE_LIMIT)
        .lease(idempotency::DEFAULT_LEASE)
        .retention(idempotency::DEFAULT_RETENTION)
        .client_error_retention(idempotency::DEFAULT_CLIENT_ERROR_RETENTION)
        .in_flight_retry_after(idempotency::DEFAULT_IN_FLIGHT_RETRY_AFTER)
        .build()
        .unwrap();
}

#[test]
fn out_of_range_values_are_refused_by_name_not_clamped() {
    support::init_tracing();
    let four = std::num::NonZeroU32::new(4).unwrap();
    let five = std::num::NonZeroU32::new(5).unwrap();
    let refused = [
        (
            CircuitBreakerLayer::builder()
                .count_window(four)
                .minimum_calls(five)
                .build()
                .unwrap_err(),
            "minimum_calls",
        ),
        (
            CircuitBreakerLayer::builder()
                .failure_rate(Ratio::ZERO)
                .build()
                .unwrap_err(),
            "failure_rate",
        ),
        (
            ThrottleLayer::builder()
                .window(four)
                .minimum_calls(five)
                .build()
                .unwrap_err(),
            "minimum_calls",
        ),
        (
            ThrottleLayer::builder()
                .multiplier(Factor::new_const(0.5))
                .build()
                .unwrap_err(),
            "multiplier",
        ),
        (
            RetryBudget::token_bucket()
                .max_tokens(std::num::NonZeroU32::new(1001).unwrap())
                .build()
                .unwrap_err(),
            "max_tokens",
        ),
        (
            RetryBudget::percent()
                .retry_share(Factor::new_const(11.0))
                .build()
                .unwrap_err(),
            "retry_share",
        ),
        (
            RetryBudget::percent()
                .ttl(Duration::ZERO)
                .build()
                .unwrap_err(),
            "ttl",
        ),
        (
            IdempotencyLayer::builder()
                .lease(Duration::ZERO)
                .build()
                .unwrap_err(),
            "lease",
        ),
        (
            IdempotencyLayer::builder()
                .retention(Duration::from_secs(60))
                .client_error_retention(Duration::from_secs(120))
                .build()
                .unwrap_err(),
            "client_error_retention",
        ),
        (
            IdempotencyLayer::builder()
                .in_flight(InFlight::Wait(Duration::ZERO))
                .build()
                .unwrap_err(),
            "in_flight",
        ),
    ];
    for (error, expected) in refused {
        assert_eq!(setting(&error), expected, "{error}");
        assert!(error.to_string().contains(expected), "{error}");
    }
}

#[test]
fn invalid_shares_and_factors_cannot_be_made() {
    support::init_tracing();
    assert!(matches!(
        Ratio::new(1.5),
        Err(ConfigError::InvalidRatio { .. })
    ));
    for bad in [-0.1, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            Factor::new(bad),
            Err(ConfigError::InvalidFactor { .. })
        ));
    }
    assert_eq!(Factor::new(10.0).unwrap().get(), 10.0);
}
