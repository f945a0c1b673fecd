//! The percentage budget: Finagle's, deposits and withdrawals per slot of `ttl / 10`, and its
//! builder.

use std::time::Duration;

use super::{DEFAULT_MIN_PER_SECOND, DEFAULT_RETRY_SHARE, DEFAULT_TTL, Kind, RetryBudget};
use crate::Factor;
use crate::clock::{Clock, Epoch, Instant};
use crate::error::{ConfigError, duration_within};
use crate::ring::StampedRing;

/// The shortest and longest TTL: 1 s and 60 s.
const MIN_TTL: Duration = Duration::from_secs(1);
const MAX_TTL: Duration = Duration::from_secs(60);
/// The smallest share above 0 (one retry per 1000 requests) and the largest (10 per request).
const MIN_SHARE: f64 = 0.001;
const MAX_SHARE: f64 = 10.0;

/// Configures a percentage [`RetryBudget`] (from [`RetryBudget::percent`]); finish with
/// [`build`](Self::build).
#[derive(Clone, Debug)]
#[must_use]
pub struct PercentBudgetBuilder {
    ttl: Duration,
    retry_share: Factor,
    min_per_second: u32,
    clock: Clock,
}

impl PercentBudgetBuilder {
    pub(super) fn new() -> Self {
        Self {
            ttl: DEFAULT_TTL,
            retry_share: DEFAULT_RETRY_SHARE,
            min_per_second: DEFAULT_MIN_PER_SECOND,
            clock: Clock::default(),
        }
    }

    /// How long requests are remembered. Defaults to [`DEFAULT_TTL`] (10 s); between 1 and 60
    /// s. Requests are kept in 10 slots of `ttl / 10`, so old requests leave the budget in
    /// steps of a tenth of the TTL.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Retries allowed per request, as a share of the requests: 0.2 allows one retry for every
    /// five requests, 2 allows two per request. Defaults to [`DEFAULT_RETRY_SHARE`] (0.2);
    /// 0 (only the floor), or between 0.001 and 10.
    pub fn retry_share(mut self, share: Factor) -> Self {
        self.retry_share = share;
        self
    }

    /// Retries per second allowed whatever the traffic. Defaults to
    /// [`DEFAULT_MIN_PER_SECOND`] (10); 0 leaves only the share.
    pub fn min_per_second(mut self, retries: u32) -> Self {
        self.min_per_second = retries;
        self
    }

    /// The clock the budget's slots follow. Defaults to tokio's (which paused-time tests
    /// control); a [`ManualClock`](crate::clock::ManualClock) drives it by hand.
    pub fn clock(mut self, clock: impl Into<Clock>) -> Self {
        self.clock = clock.into();
        self
    }

    /// Checks the settings and builds the budget.
    ///
    /// # Errors
    ///
    /// [`ConfigError::DurationOutOfRange`] for a `ttl` outside 1 to 60 s, and
    /// [`ConfigError::ShareOutOfRange`] for a `retry_share` other than 0 outside 0.001 to 10.
    pub fn build(self) -> Result<RetryBudget, ConfigError> {
        duration_within("ttl", self.ttl, MIN_TTL, MAX_TTL)?;
        let share = self.retry_share.get();
        if share != 0.0 {
            self.retry_share
                .within("retry_share", MIN_SHARE, MAX_SHARE)?;
        }
        Ok(RetryBudget::from_kind(Kind::Percent(PercentBudget::new(
            self.ttl,
            share,
            self.min_per_second,
            self.clock,
        ))))
    }
}

/// Finagle's budget: deposits and withdrawals per slot of `ttl / 10`.
pub(in crate::retry) struct PercentBudget {
    clock: Clock,
    /// Payload: `[deposits 28 | withdrawals 28]`, under an 8-bit stamp.
    ring: StampedRing,
    /// Added per request: 0, 1 or 1000.
    deposit: u64,
    /// Taken per retry: 1 to 1000.
    pub(super) withdraw: u64,
    /// The floor, `min_per_second × ttl` retries, in withdrawal units.
    reserve: u64,
}

/// Enough for a ring of 10 slots (the ring needs `2^bits > 20`); the rest is payload.
const STAMP_BITS: u32 = 8;
const WITHDRAWALS_BITS: u32 = 28;
const FIELD: u64 = (1 << WITHDRAWALS_BITS) - 1;
/// Room kept free in a field for adds racing past its check: 1024 concurrent callers of
/// the largest unit. A slot that full (over 260 000 retries in a tenth of the TTL) stops
/// counting: deposits are dropped and retries refused.
const HEADROOM: u64 = 1024 * 1000;

impl PercentBudget {
    /// The budget for a `ttl` of 1 to 60 s and a `share` of 0 or 0.001 to 10, as the builder
    /// checks.
    fn new(ttl: Duration, share: f64, min_per_second: u32, clock: Clock) -> Self {
        debug_assert!((MIN_TTL..=MAX_TTL).contains(&ttl));
        debug_assert!(share == 0.0 || (MIN_SHARE..=MAX_SHARE).contains(&share));
        // tower's integer scheme: up to one retry per request, a request deposits 1 and a
        // retry withdraws ⌊1/share⌋ (at most 1000); above that, 1000 and ⌊1000/share⌋
        // (at least 100). With no share, requests deposit nothing and a retry withdraws 1
        // from the floor. (The clamps only guard the float rounding: the range is checked.)
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // 1..=1000
        let (deposit, withdraw) = if share == 0.0 {
            (0, 1)
        } else if share <= 1.0 {
            (1, (1.0 / share).floor().clamp(1.0, 1000.0) as u64)
        } else {
            (1000, (1000.0 / share).floor().clamp(100.0, 1000.0) as u64)
        };
        let reserve = u64::from(min_per_second) * ttl.as_secs() * withdraw;
        let period = u64::try_from(ttl.as_nanos() / 10).unwrap_or(u64::MAX);
        let epoch = Epoch::new(clock.now());
        Self {
            clock,
            ring: StampedRing::new(epoch, period, 10, STAMP_BITS),
            deposit,
            withdraw,
            reserve,
        }
    }

    fn now(&self) -> Instant {
        self.clock.now()
    }

    pub(super) fn withdraw_i64(&self) -> i64 {
        i64::try_from(self.withdraw).unwrap_or(i64::MAX)
    }

    pub(super) fn deposit(&self) {
        if self.deposit == 0 {
            return;
        }
        self.ring
            .add(self.now(), self.deposit << WITHDRAWALS_BITS, |payload| {
                (payload >> WITHDRAWALS_BITS) & FIELD > FIELD - HEADROOM
            });
    }

    /// Deposits plus the reserve, minus withdrawals, over the last `ttl`.
    pub(in crate::retry) fn balance(&self) -> i64 {
        let (mut deposits, mut withdrawals) = (0u64, 0u64);
        self.ring.for_each_current(self.now(), |payload| {
            deposits += (payload >> WITHDRAWALS_BITS) & FIELD;
            withdrawals += payload & FIELD;
        });
        let credit = i64::try_from(deposits.saturating_add(self.reserve)).unwrap_or(i64::MAX);
        credit.saturating_sub(i64::try_from(withdrawals).unwrap_or(i64::MAX))
    }

    pub(super) fn try_withdraw(&self) -> bool {
        if self.balance() < self.withdraw_i64() {
            return false;
        }
        // A withdrawal the slot cannot hold is a retry the budget cannot account for: refuse it.
        let (_, added) = self.ring.add(self.now(), self.withdraw, |payload| {
            payload & FIELD > FIELD - HEADROOM
        });
        added
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    /// A percentage budget over `ttl` allowing `share` of requests plus `floor` per second.
    fn budget(ttl: Duration, share: f64, floor: u32, clock: &ManualClock) -> RetryBudget {
        RetryBudget::percent()
            .ttl(ttl)
            .retry_share(Factor::new(share).unwrap())
            .min_per_second(floor)
            .clock(clock.clone())
            .build()
            .unwrap()
    }

    #[test]
    fn the_percent_budget_allows_its_share_of_recent_requests_plus_a_floor() {
        let clock = ManualClock::new();
        let budget = budget(Duration::from_secs(10), 0.2, 1, &clock);
        // The floor alone: 1 per second over 10 s = 10 retries.
        let mut allowed = 0;
        while budget.try_withdraw() {
            allowed += 1;
            assert!(allowed <= 10);
        }
        assert_eq!(allowed, 10);
        // 100 requests add 20 % of 100 = 20 retries.
        for _ in 0..100 {
            budget.on_request();
        }
        for _ in 0..20 {
            assert!(budget.try_withdraw());
        }
        assert!(!budget.try_withdraw());
        // After the TTL the requests and withdrawals have expired: the floor is back.
        clock.advance(Duration::from_secs(10));
        for _ in 0..10 {
            assert!(budget.try_withdraw());
        }
        assert!(!budget.try_withdraw());
    }

    #[test]
    fn deposits_expire_a_tenth_of_the_ttl_at_a_time() {
        let clock = ManualClock::new();
        let budget = budget(Duration::from_secs(10), 1.0, 0, &clock);
        budget.on_request();
        clock.advance(Duration::from_millis(9_999));
        assert!(
            budget.allows_retry(),
            "1 ms before the deposit's slot leaves"
        );
        clock.advance(Duration::from_millis(1));
        assert!(!budget.allows_retry(), "its slot has left the 10 s window");
    }

    #[test]
    fn a_zero_percent_budget_allows_only_the_floor() {
        let clock = ManualClock::new();
        let budget = budget(Duration::from_secs(1), 0.0, 3, &clock);
        for _ in 0..1000 {
            budget.on_request();
        }
        let mut allowed = 0;
        while budget.try_withdraw() {
            allowed += 1;
            assert!(allowed <= 3);
        }
        assert_eq!(allowed, 3, "3 per second over 1 s, nothing from requests");
    }

    #[test]
    fn a_full_slot_refuses_retries_instead_of_overflowing() {
        // The largest withdrawal (1000 units at 0.1 %) against a floor of a million retries:
        // the slot fills long before the floor runs out.
        let clock = ManualClock::new();
        let floor = budget(Duration::from_secs(1), 0.001, 1_000_000, &clock);
        let mut allowed = 0u32;
        while floor.try_withdraw() {
            allowed += 1;
            assert!(allowed < 1_000_000, "the slot never filled");
        }
        assert_eq!(u64::from(allowed), (FIELD - HEADROOM) / 1000 + 1);
        // Deposits of the largest unit (1000 at 10 retries per request) saturate the same way.
        let busy = budget(Duration::from_secs(1), 10.0, 0, &clock);
        for _ in 0..300_000 {
            busy.on_request();
        }
        let Some(Kind::Percent(percent)) = busy.kind.as_deref() else {
            unreachable!()
        };
        // Deposits stop at the first multiple of 1000 past FIELD − HEADROOM (2^28 − 1 −
        // 1,024,000): the slot never wraps into the withdrawal field.
        assert_eq!(percent.balance(), 267_412_000);
    }

    #[test]
    fn a_full_slot_holds_exactly_its_share_of_the_largest_withdrawals() {
        // As above, for withdrawals: the count is the literal one, not one derived from the
        // constants it checks.
        let floor = budget(
            Duration::from_secs(1),
            0.001,
            1_000_000,
            &ManualClock::new(),
        );
        let mut allowed = 0u32;
        while floor.try_withdraw() {
            allowed += 1;
        }
        assert_eq!(allowed, 267_412);
    }

    #[test]
    fn a_share_above_one_allows_that_many_retries_per_request() {
        let clock = ManualClock::new();
        let budget = budget(Duration::from_secs(10), 2.0, 0, &clock);
        budget.on_request();
        assert!(budget.try_withdraw());
        assert!(budget.try_withdraw());
        assert!(!budget.try_withdraw(), "two retries per request, not three");
    }

    #[test]
    fn a_retry_waits_for_a_whole_withdrawal_of_deposits() {
        // 20 %: a retry costs five requests' deposits.
        let clock = ManualClock::new();
        let budget = budget(Duration::from_secs(10), 0.2, 0, &clock);
        for _ in 0..4 {
            budget.on_request();
        }
        assert!(!budget.allows_retry());
        assert!(
            !budget.try_withdraw(),
            "four requests do not pay for a retry"
        );
        budget.on_request();
        assert!(budget.allows_retry());
        assert!(budget.try_withdraw());
        assert!(!budget.try_withdraw());
    }
}
