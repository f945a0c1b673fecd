//! The token bucket: gRPC's retry throttling, in thousandths of a token, and its builder.

use std::num::NonZeroU32;

use super::{DEFAULT_MAX_TOKENS, DEFAULT_TOKEN_RATIO, Kind, RetryBudget};
use crate::Ratio;
use crate::error::ConfigError;
use crate::sync::{AtomicU64, Ordering};

/// The largest bucket: 1000 tokens.
const MAX_TOKENS: u32 = 1000;
/// The smallest refill a success can put back: 0.001 of a token (the bucket counts thousandths).
const MIN_TOKEN_RATIO: f64 = 0.001;

/// Configures a token-bucket [`RetryBudget`] (from [`RetryBudget::token_bucket`]); finish with
/// [`build`](Self::build).
#[derive(Clone, Copy, Debug)]
#[must_use]
pub struct TokenBucketBuilder {
    max_tokens: NonZeroU32,
    token_ratio: Ratio,
}

impl TokenBucketBuilder {
    pub(super) fn new() -> Self {
        Self {
            max_tokens: DEFAULT_MAX_TOKENS,
            token_ratio: DEFAULT_TOKEN_RATIO,
        }
    }

    /// The bucket's size. Defaults to [`DEFAULT_MAX_TOKENS`] (10); at most 1000.
    pub fn max_tokens(mut self, max_tokens: NonZeroU32) -> Self {
        self.max_tokens = max_tokens;
        self
    }

    /// The share of a token a successful attempt puts back. Defaults to
    /// [`DEFAULT_TOKEN_RATIO`] (0.1); at least 0.001, and counted in thousandths (0.0015 puts
    /// back 0.001).
    pub fn token_ratio(mut self, ratio: Ratio) -> Self {
        self.token_ratio = ratio;
        self
    }

    /// Checks the settings and builds the budget.
    ///
    /// # Errors
    ///
    /// [`ConfigError::CountOutOfRange`] for `max_tokens` above 1000, and
    /// [`ConfigError::ShareOutOfRange`] for a `token_ratio` below 0.001.
    pub fn build(self) -> Result<RetryBudget, ConfigError> {
        if self.max_tokens.get() > MAX_TOKENS {
            return Err(ConfigError::CountOutOfRange {
                setting: "max_tokens",
                value: u64::from(self.max_tokens.get()),
                min: 1,
                max: u64::from(MAX_TOKENS),
            });
        }
        if self.token_ratio.get() < MIN_TOKEN_RATIO {
            return Err(ConfigError::ShareOutOfRange {
                setting: "token_ratio",
                value: self.token_ratio.get(),
                min: MIN_TOKEN_RATIO,
                max: 1.0,
            });
        }
        Ok(RetryBudget::from_kind(Kind::Tokens(TokenBucket::new(
            self.max_tokens,
            self.token_ratio,
        ))))
    }
}

/// gRPC retry throttling, in thousandths of a token.
pub(in crate::retry) struct TokenBucket {
    pub(in crate::retry) tokens: AtomicU64,
    pub(super) max: u64,
    refill: u64,
}

impl TokenBucket {
    /// A full bucket of `max_tokens` (at most 1000, as the builder checks), refilled by
    /// `ratio` a success (at least 0.001, kept to 3 decimals).
    pub(super) fn new(max_tokens: NonZeroU32, ratio: Ratio) -> Self {
        debug_assert!(max_tokens.get() <= MAX_TOKENS && ratio.get() >= MIN_TOKEN_RATIO);
        let max = u64::from(max_tokens.get()) * 1000;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // 1..=1000
        let refill = (ratio.get() * 1000.0) as u64;
        Self {
            tokens: AtomicU64::new(max),
            max,
            refill,
        }
    }

    #[inline]
    pub(super) fn record(&self, success: bool) {
        // Relaxed throughout: the count is the whole message, and every change is one RMW, so
        // none is lost.
        if success {
            // A success into a full bucket changes nothing: a healthy client writes nothing.
            if self.tokens.load(Ordering::Relaxed) >= self.max {
                return;
            }
            let _ = self
                .tokens
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                    Some((t + self.refill).min(self.max))
                });
        } else {
            let _ = self
                .tokens
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                    Some(t.saturating_sub(1000))
                });
        }
    }

    pub(super) fn allows_retry(&self) -> bool {
        // Relaxed: a stale read admits or refuses one retry at the edge, as any interleaving
        // with the failure that changes the count would.
        self.tokens.load(Ordering::Relaxed) > self.max / 2
    }

    #[allow(clippy::cast_precision_loss)] // at most 10^6
    pub(super) fn tokens(&self) -> f64 {
        self.tokens.load(Ordering::Relaxed) as f64 / 1000.0
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    fn bucket(max_tokens: u32, ratio: f64) -> RetryBudget {
        RetryBudget::token_bucket()
            .max_tokens(NonZeroU32::new(max_tokens).unwrap())
            .token_ratio(Ratio::new(ratio).unwrap())
            .build()
            .unwrap()
    }

    #[test]
    fn the_token_bucket_follows_grpc_throttling() {
        let budget = bucket(10, 0.1);
        for _ in 0..4 {
            budget.record(false);
        }
        assert!(budget.allows_retry(), "6 of 10 tokens > 5");
        budget.record(false);
        assert!(!budget.allows_retry(), "5 of 10 is not more than half");
        for _ in 0..100 {
            budget.record(false);
        }
        assert!(!budget.allows_retry());
        for _ in 0..51 {
            budget.record(true);
        }
        assert!(budget.allows_retry(), "0 + 51 × 0.1 = 5.1 > 5");
        for _ in 0..1000 {
            budget.record(true);
        }
        let debug = format!("{budget:?}");
        assert!(debug.contains("tokens: 10.0"), "{debug}");
    }

    #[test]
    fn the_token_ratio_keeps_three_decimals() {
        let budget = bucket(2, 0.0014);
        budget.record(false);
        budget.record(false);
        for _ in 0..1000 {
            budget.record(true);
        }
        assert!(
            !budget.allows_retry(),
            "1000 × 0.001 (0.0014 kept to 3 decimals) = 1 token: not more than half of 2"
        );
        assert!(format!("{budget:?}").contains("tokens: 1.0"));
        budget.record(true);
        assert!(budget.allows_retry(), "1.001 > 1");
    }
}
