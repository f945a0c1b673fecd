//! The token bucket: gRPC's retry throttling, in thousandths of a token.

use std::num::NonZeroU32;

use crate::Ratio;
use crate::sync::{AtomicU64, Ordering};

/// gRPC retry throttling, in thousandths of a token.
pub(in crate::retry) struct TokenBucket {
    pub(in crate::retry) tokens: AtomicU64,
    pub(super) max: u64,
    refill: u64,
}

impl TokenBucket {
    /// A full bucket of `max_tokens` (clamped to 1000), refilled by `ratio` a success
    /// (kept to 3 decimals, at least 0.001).
    pub(super) fn new(max_tokens: NonZeroU32, ratio: Ratio) -> Self {
        let max = u64::from(max_tokens.get().min(1000)) * 1000;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // 0..=1000
        let refill = ((ratio.get() * 1000.0) as u64).max(1);
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
    use super::super::RetryBudget;
    use super::*;

    #[test]
    fn the_token_bucket_follows_grpc_throttling() {
        let budget = RetryBudget::token_bucket(NonZeroU32::new(10).unwrap(), Ratio::new_const(0.1));
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
        let budget =
            RetryBudget::token_bucket(NonZeroU32::new(2).unwrap(), Ratio::new_const(0.0014));
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
