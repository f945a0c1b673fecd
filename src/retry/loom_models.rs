//! loom models of the retry budgets: concurrent outcomes, deposits and withdrawals lose no
//! update. Run with `RUSTFLAGS="--cfg palisade_loom" cargo test --release --lib -- loom`.

use std::num::NonZeroU32;
use std::time::Duration;

use super::budget::{Kind, RetryBudget};
use crate::clock::ManualClock;
use crate::sync::Ordering;
use crate::{Factor, Ratio};

#[test]
fn loom_concurrent_outcomes_never_lose_a_token_update() {
    loom::model(|| {
        let budget = RetryBudget::token_bucket()
            .max_tokens(NonZeroU32::new(4).unwrap())
            .token_ratio(Ratio::new_const(0.5))
            .build()
            .unwrap();
        budget.record(false); // 3 tokens
        let other = budget.clone();
        let t = loom::thread::spawn(move || other.record(false));
        budget.record(true);
        t.join().unwrap();
        // 3 − 1 + 0.5 in either order (no clamping at either end here).
        let Some(Kind::Tokens(bucket)) = budget.kind.as_deref() else {
            unreachable!()
        };
        assert_eq!(bucket.tokens.load(Ordering::Relaxed), 2_500);
    });
}

#[test]
fn loom_concurrent_deposits_and_withdrawals_all_count() {
    loom::model(|| {
        let clock = ManualClock::new();
        let budget = RetryBudget::percent()
            .ttl(Duration::from_secs(10))
            .retry_share(Factor::new_const(1.0))
            .min_per_second(0)
            .clock(clock)
            .build()
            .unwrap();
        budget.on_request();
        let other = budget.clone();
        let t = loom::thread::spawn(move || {
            other.on_request();
            other.try_withdraw()
        });
        let mine = budget.try_withdraw();
        let theirs = t.join().unwrap();
        // Two deposits of one retry each, each visible to its withdrawer: both withdrawals
        // succeed, and no update is lost, whatever the order.
        assert!(mine && theirs);
        let Some(Kind::Percent(percent)) = budget.kind.as_deref() else {
            unreachable!()
        };
        assert_eq!(percent.balance(), 0);
    });
}
