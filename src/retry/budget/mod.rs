//! [`RetryBudget`]: how many retries a whole client may make, shared by every clone of a retry
//! layer, kept in atomics with no lock. Two algorithms, one file each: `token_bucket.rs`
//! (gRPC) and `percent.rs` (Finagle).

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use self::percent::PercentBudget;
pub use self::percent::PercentBudgetBuilder;
use self::token_bucket::TokenBucket;
pub use self::token_bucket::TokenBucketBuilder;
use crate::{Factor, Ratio};

mod percent;
mod token_bucket;

/// Token bucket size: 10 tokens (the gRPC retry-throttling example).
pub const DEFAULT_MAX_TOKENS: NonZeroU32 = NonZeroU32::new(10).unwrap();
/// Tokens a success refills: 0.1 (the gRPC example: throttles once failures pass about 10 %).
pub const DEFAULT_TOKEN_RATIO: Ratio = Ratio::new_const(0.1);
/// How long a percentage budget remembers requests: 10 s (Finagle, Linkerd, tower).
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// Retries allowed per request, a share of the requests: 0.2, 20 % (Finagle, Linkerd, tower).
pub const DEFAULT_RETRY_SHARE: Factor = Factor::new_const(0.2);
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
/// let budget = RetryBudget::token_bucket()
///     .max_tokens(NonZeroU32::new(10).unwrap())
///     .token_ratio(Ratio::new_const(0.1))
///     .build()
///     .unwrap();
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
    /// gRPC retry throttling, the default budget: a bucket of
    /// [`max_tokens`](TokenBucketBuilder::max_tokens), each failed attempt takes one, each
    /// successful one puts back [`token_ratio`](TokenBucketBuilder::token_ratio) of one; a
    /// retry is allowed while more than half the tokens remain. Finish with
    /// [`build`](TokenBucketBuilder::build).
    pub fn token_bucket() -> TokenBucketBuilder {
        TokenBucketBuilder::new()
    }

    /// Finagle's budget: retries may be [`retry_share`](PercentBudgetBuilder::retry_share) of
    /// the requests of the last [`ttl`](PercentBudgetBuilder::ttl), plus
    /// [`min_per_second`](PercentBudgetBuilder::min_per_second) retries per second. Finish with
    /// [`build`](PercentBudgetBuilder::build).
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade::Factor;
    /// use palisade::retry::RetryBudget;
    ///
    /// let budget = RetryBudget::percent()
    ///     .ttl(Duration::from_secs(30))
    ///     .retry_share(Factor::new_const(0.1))
    ///     .min_per_second(5)
    ///     .build()
    ///     .unwrap();
    /// assert!(budget.allows_retry(), "the floor allows retries before any request");
    /// ```
    pub fn percent() -> PercentBudgetBuilder {
        PercentBudgetBuilder::new()
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
        Self::from_kind(Kind::Tokens(TokenBucket::new(
            DEFAULT_MAX_TOKENS,
            DEFAULT_TOKEN_RATIO,
        )))
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
    use crate::error::ConfigError;

    fn share(value: f64) -> Factor {
        Factor::new(value).unwrap()
    }

    fn percent(ttl: Duration, retry_share: f64) -> Result<RetryBudget, ConfigError> {
        RetryBudget::percent()
            .ttl(ttl)
            .retry_share(share(retry_share))
            .build()
    }

    fn tokens(max: u32, ratio: f64) -> Result<RetryBudget, ConfigError> {
        RetryBudget::token_bucket()
            .max_tokens(NonZeroU32::new(max).unwrap())
            .token_ratio(Ratio::new(ratio).unwrap())
            .build()
    }

    /// The setting a refused budget names.
    fn refused(budget: Result<RetryBudget, ConfigError>) -> &'static str {
        match budget {
            Err(
                ConfigError::ShareOutOfRange { setting, .. }
                | ConfigError::CountOutOfRange { setting, .. }
                | ConfigError::DurationOutOfRange { setting, .. },
            ) => setting,
            other => panic!("expected a range error, got {other:?}"),
        }
    }

    #[test]
    fn out_of_range_budgets_are_refused_naming_the_setting() {
        let ten = Duration::from_secs(10);
        assert_eq!(refused(percent(Duration::from_millis(999), 0.2)), "ttl");
        assert_eq!(refused(percent(Duration::from_secs(61), 0.2)), "ttl");
        assert_eq!(refused(percent(ten, 10.001)), "retry_share");
        assert_eq!(refused(percent(ten, 1e-9)), "retry_share");
        assert_eq!(refused(tokens(1001, 1.0)), "max_tokens");
        assert_eq!(refused(tokens(1, 0.0)), "token_ratio");
        assert_eq!(refused(tokens(1, 0.000_9)), "token_ratio");
        // Every bound is inclusive, and a share of 0 leaves only the floor.
        for ttl in [Duration::from_secs(1), Duration::from_secs(60)] {
            assert!(percent(ttl, 0.2).is_ok());
        }
        for retry_share in [0.0, 0.001, 10.0] {
            assert!(percent(ten, retry_share).is_ok());
        }
        assert!(tokens(1000, 1.0).is_ok());
        assert!(tokens(1, 0.001).is_ok());
        assert!(RetryBudget::token_bucket().build().is_ok());
        assert!(RetryBudget::percent().build().is_ok());
    }

    #[test]
    fn a_token_bucket_shows_its_tokens_and_size() {
        let budget = tokens(10, 0.1).unwrap();
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
