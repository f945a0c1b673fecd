//! [`RetryBudget`]: how many retries a whole client may make, shared by every clone of a retry
//! layer, kept in atomics with no lock. Two algorithms, one file each: `token_bucket.rs`
//! (gRPC) and `percent.rs` (Finagle).

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use self::percent::PercentBudget;
use self::token_bucket::TokenBucket;
use crate::Ratio;
use crate::clock::Clock;
use crate::error::ConfigError;

mod percent;
mod token_bucket;

/// Token bucket size: 10 tokens (the gRPC retry-throttling example).
pub const DEFAULT_MAX_TOKENS: u32 = 10;
/// Tokens a success refills: 0.1 (the gRPC example: throttles once failures pass about 10 %).
pub const DEFAULT_TOKEN_RATIO: Ratio = Ratio::new_const(0.1);
/// How long a percentage budget remembers requests: 10 s (Finagle, Linkerd, tower).
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// Share of requests that may be retried: 20 % (Finagle, Linkerd, tower).
pub const DEFAULT_PERCENT: f64 = 0.2;
/// Retries per second allowed whatever the traffic: 10 (Finagle, Linkerd, tower).
pub const DEFAULT_MIN_PER_SECOND: u32 = 10;

/// Caps retries across every call of a client, so that when a dependency fails as a whole,
/// retries stop instead of multiplying its load. Cloning shares the budget.
///
/// Two kinds, both lock-free:
///
/// - [`RetryBudget::token_bucket`] (gRPC retry throttling, the default): every failed attempt
///   takes a token, every success puts back a fraction of one, and retries are allowed only
///   while more than half the tokens remain. Reads no clock, and a healthy client's successes
///   into a full bucket leave the bucket unwritten. With the defaults (10 tokens, 0.1 per
///   success) retries stop once more than about 1 attempt in 11 fails for a while: a
///   fail-fast budget. Use it unless you need the next one.
/// - [`RetryBudget::percent`] (Finagle's `RetryBudget`, tower's `TpsBudget`): retries may be
///   at most a percentage of the requests of the last `ttl`, plus a floor per second. Bounds
///   retries relative to traffic over time, which suits a client with bursty volume; it reads
///   the clock on every request and writes a shared slot, so it costs more.
/// - [`RetryBudget::unlimited`]: only `max_attempts` limits retries.
///
/// ```
/// use std::num::NonZeroU32;
/// use palisade::Ratio;
/// use palisade::retry::RetryBudget;
///
/// let budget = RetryBudget::token_bucket(NonZeroU32::new(10).unwrap(), Ratio::new_const(0.1));
/// assert!(budget.allows_retry());
/// for _ in 0..5 {
///     budget.record(false); // five failed attempts: 5 of 10 tokens left
/// }
/// assert!(!budget.allows_retry(), "retries need more than half the tokens");
/// budget.record(true); // a success refills 0.1
/// assert!(budget.allows_retry());
/// ```
#[derive(Clone)]
pub struct RetryBudget {
    pub(super) kind: Option<Arc<Kind>>,
}

/// Aligned to its own pair of cache lines: every call writes the `Arc`'s reference count,
/// which would otherwise share a line with the counters every call reads.
#[repr(align(128))]
pub(super) enum Kind {
    Tokens(TokenBucket),
    Percent(PercentBudget),
}

impl RetryBudget {
    /// gRPC retry throttling: a bucket of `max_tokens` (at most 1000), each failed attempt
    /// takes one, each successful one puts back `ratio` (kept to 3 decimals, above zero); a
    /// retry is allowed while more than `max_tokens / 2` remain.
    ///
    /// Out-of-range values are clamped (`max_tokens` to 1000, `ratio` to at least 0.001);
    /// [`try_token_bucket`](Self::try_token_bucket) refuses them instead.
    #[must_use]
    pub fn token_bucket(max_tokens: NonZeroU32, ratio: Ratio) -> Self {
        Self::from_kind(Kind::Tokens(TokenBucket::new(max_tokens, ratio)))
    }

    /// As [`token_bucket`](Self::token_bucket), refusing out-of-range values.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for `max_tokens` above 1000 or a `ratio` below 0.001.
    pub fn try_token_bucket(max_tokens: NonZeroU32, ratio: Ratio) -> Result<Self, ConfigError> {
        if max_tokens.get() > 1000 {
            return Err(ConfigError::CountOutOfRange {
                setting: "max_tokens",
                value: u64::from(max_tokens.get()),
                min: 1,
                max: 1000,
            });
        }
        if ratio.get() < 0.001 {
            return Err(ConfigError::ZeroThreshold {
                setting: "token ratio",
            });
        }
        Ok(Self::token_bucket(max_tokens, ratio))
    }

    /// Finagle's budget: retries may be `percent` of the requests of the last `ttl` (1 to 60
    /// s), plus `min_per_second` retries per second. `percent` is a share: 0.2 is 20 %, and
    /// values above 1 allow several retries per request (up to 10). A `percent` of 0 leaves
    /// only the floor.
    ///
    /// Requests are remembered in 10 slots of `ttl / 10`, so old requests leave the budget in
    /// steps of a tenth of the TTL.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for a `ttl` outside 1 to 60 s, or a `percent` other than 0 outside
    /// 0.001 to 10.
    pub fn percent(ttl: Duration, percent: f64, min_per_second: u32) -> Result<Self, ConfigError> {
        Self::percent_with_clock(ttl, percent, min_per_second, Clock::default())
    }

    /// As [`percent`](Self::percent), reading time from `clock`.
    ///
    /// # Errors
    ///
    /// As [`percent`](Self::percent).
    pub fn percent_with_clock(
        ttl: Duration,
        percent: f64,
        min_per_second: u32,
        clock: Clock,
    ) -> Result<Self, ConfigError> {
        PercentBudget::new(ttl, percent, min_per_second, clock)
            .map(|budget| Self::from_kind(Kind::Percent(budget)))
    }

    /// No budget: only `max_attempts` limits retries.
    #[must_use]
    pub fn unlimited() -> Self {
        Self { kind: None }
    }

    fn from_kind(kind: Kind) -> Self {
        Self {
            kind: Some(Arc::new(kind)),
        }
    }

    /// A new request (its first attempt) is about to be sent: a percentage budget deposits.
    #[inline]
    pub(crate) fn on_request(&self) {
        if let Some(Kind::Percent(budget)) = self.kind.as_deref() {
            budget.deposit();
        }
    }

    /// Records the outcome of one attempt: a token bucket takes a token for a failure and
    /// refills a fraction for a success.
    #[inline]
    pub fn record(&self, success: bool) {
        if let Some(Kind::Tokens(bucket)) = self.kind.as_deref() {
            bucket.record(success);
        }
    }

    /// Whether a retry would be allowed now (without taking it).
    #[must_use]
    pub fn allows_retry(&self) -> bool {
        match self.kind.as_deref() {
            None => true,
            Some(Kind::Tokens(bucket)) => bucket.allows_retry(),
            Some(Kind::Percent(budget)) => budget.balance() >= budget.withdraw_i64(),
        }
    }

    /// Takes one retry from the budget if it allows one.
    ///
    /// Two callers racing for the last retry may both get it: the check and the withdrawal
    /// are separate operations, so the budget can be overdrawn by at most one retry per
    /// concurrent caller (as in gRPC's and tower's budgets). It never blocks.
    #[inline]
    pub(crate) fn try_withdraw(&self) -> bool {
        match self.kind.as_deref() {
            None => true,
            Some(Kind::Tokens(bucket)) => bucket.allows_retry(),
            Some(Kind::Percent(budget)) => budget.try_withdraw(),
        }
    }
}

impl Default for RetryBudget {
    /// A token bucket of [`DEFAULT_MAX_TOKENS`] refilling [`DEFAULT_TOKEN_RATIO`].
    fn default() -> Self {
        Self::token_bucket(
            NonZeroU32::new(DEFAULT_MAX_TOKENS).unwrap_or(NonZeroU32::MIN),
            DEFAULT_TOKEN_RATIO,
        )
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind.as_deref() {
            None => f.write_str("RetryBudget::Unlimited"),
            Some(Kind::Tokens(bucket)) => f
                .debug_struct("RetryBudget::TokenBucket")
                .field("tokens", &bucket.tokens())
                .field("max_tokens", &(bucket.max / 1000))
                .finish(),
            Some(Kind::Percent(budget)) => f
                .debug_struct("RetryBudget::Percent")
                .field("balance", &budget.balance())
                .field("withdraw", &budget.withdraw)
                .finish(),
        }
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_budgets_are_refused() {
        assert!(RetryBudget::percent(Duration::from_millis(500), 0.2, 10).is_err());
        assert!(RetryBudget::percent(Duration::from_secs(61), 0.2, 10).is_err());
        assert!(RetryBudget::percent(Duration::from_secs(10), 11.0, 10).is_err());
        assert!(RetryBudget::percent(Duration::from_secs(10), 1e-9, 10).is_err());
        assert!(RetryBudget::percent(Duration::from_secs(10), -0.1, 10).is_err());
        assert!(RetryBudget::percent(Duration::from_secs(10), f64::NAN, 10).is_err());
        assert!(RetryBudget::percent(Duration::from_secs(10), 0.001, 10).is_ok());
        assert!(RetryBudget::try_token_bucket(NonZeroU32::new(1001).unwrap(), Ratio::ONE).is_err());
        assert!(RetryBudget::try_token_bucket(NonZeroU32::MIN, Ratio::ZERO).is_err());
        // Both bounds are inclusive.
        let most = NonZeroU32::new(1000).unwrap();
        assert!(RetryBudget::try_token_bucket(most, Ratio::ONE).is_ok());
        let least = Ratio::new(0.001).unwrap();
        assert!(RetryBudget::try_token_bucket(NonZeroU32::MIN, least).is_ok());
        assert!(
            RetryBudget::try_token_bucket(NonZeroU32::MIN, Ratio::new(0.000_9).unwrap()).is_err()
        );
    }

    #[test]
    fn a_token_bucket_shows_its_tokens_and_size() {
        let budget = RetryBudget::token_bucket(NonZeroU32::new(10).unwrap(), Ratio::new_const(0.1));
        budget.record(false);
        assert_eq!(
            format!("{budget:?}"),
            "RetryBudget::TokenBucket { tokens: 9.0, max_tokens: 10 }"
        );
    }

    #[test]
    fn unlimited_always_allows() {
        let budget = RetryBudget::unlimited();
        for _ in 0..100 {
            budget.record(false);
            assert!(budget.try_withdraw());
        }
    }
}
