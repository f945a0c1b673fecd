//! [`RetryBudget`]: how many retries a whole client may make, shared by every clone of a retry
//! layer, kept in atomics with no lock.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use crate::Ratio;
use crate::clock::{Clock, Epoch, Instant};
use crate::error::ConfigError;
use crate::ring::StampedRing;
use crate::sync::{AtomicU64, Ordering};

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
    kind: Option<Arc<Kind>>,
}

/// Aligned to its own pair of cache lines: every call writes the `Arc`'s reference count,
/// which would otherwise share a line with the counters every call reads.
#[repr(align(128))]
enum Kind {
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
        let max = u64::from(max_tokens.get().min(1000)) * 1000;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // 0..=1000
        let refill = ((ratio.get() * 1000.0) as u64).max(1);
        Self::from_kind(Kind::Tokens(TokenBucket {
            tokens: AtomicU64::new(max),
            max,
            refill,
        }))
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
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&ttl) {
            return Err(ConfigError::DurationOutOfRange {
                setting: "budget ttl",
                value: ttl,
                min: Duration::from_secs(1),
                max: Duration::from_secs(60),
            });
        }
        if percent != 0.0 && !(0.001..=10.0).contains(&percent) {
            return Err(ConfigError::ShareOutOfRange {
                setting: "budget percent",
                value: percent,
                min: 0.001,
                max: 10.0,
            });
        }
        // tower's integer scheme: up to one retry per request, a request deposits 1 and a
        // retry withdraws ⌊1/percent⌋ (at most 1000); above that, 1000 and ⌊1000/percent⌋
        // (at least 100). With no percent, requests deposit nothing and a retry withdraws 1
        // from the floor.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // 1..=1000
        let (deposit, withdraw) = if percent == 0.0 {
            (0, 1)
        } else if percent <= 1.0 {
            (1, (1.0 / percent).floor().clamp(1.0, 1000.0) as u64)
        } else {
            (1000, (1000.0 / percent).floor().clamp(100.0, 1000.0) as u64)
        };
        let reserve = u64::from(min_per_second) * ttl.as_secs() * withdraw;
        let period = u64::try_from(ttl.as_nanos() / 10).unwrap_or(u64::MAX);
        let epoch = Epoch::new(clock.now());
        Ok(Self::from_kind(Kind::Percent(PercentBudget {
            clock,
            ring: StampedRing::new(epoch, period, 10, STAMP_BITS),
            deposit,
            withdraw,
            reserve,
        })))
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

/// gRPC retry throttling, in thousandths of a token.
struct TokenBucket {
    tokens: AtomicU64,
    max: u64,
    refill: u64,
}

impl TokenBucket {
    #[inline]
    fn record(&self, success: bool) {
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

    fn allows_retry(&self) -> bool {
        // Relaxed: a stale read admits or refuses one retry at the edge, as any interleaving
        // with the failure that changes the count would.
        self.tokens.load(Ordering::Relaxed) > self.max / 2
    }

    #[allow(clippy::cast_precision_loss)] // at most 10^6
    fn tokens(&self) -> f64 {
        self.tokens.load(Ordering::Relaxed) as f64 / 1000.0
    }
}

/// Finagle's budget: deposits and withdrawals per slot of `ttl / 10`.
struct PercentBudget {
    clock: Clock,
    /// Payload: `[deposits 28 | withdrawals 28]`, under an 8-bit stamp.
    ring: StampedRing,
    /// Added per request: 0, 1 or 1000.
    deposit: u64,
    /// Taken per retry: 1 to 1000.
    withdraw: u64,
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
    fn now(&self) -> Instant {
        self.clock.now()
    }

    fn withdraw_i64(&self) -> i64 {
        i64::try_from(self.withdraw).unwrap_or(i64::MAX)
    }

    fn deposit(&self) {
        if self.deposit == 0 {
            return;
        }
        self.ring
            .add(self.now(), self.deposit << WITHDRAWALS_BITS, |payload| {
                (payload >> WITHDRAWALS_BITS) & FIELD > FIELD - HEADROOM
            });
    }

    /// Deposits plus the reserve, minus withdrawals, over the last `ttl`.
    fn balance(&self) -> i64 {
        let (mut deposits, mut withdrawals) = (0u64, 0u64);
        self.ring.for_each_current(self.now(), |payload| {
            deposits += (payload >> WITHDRAWALS_BITS) & FIELD;
            withdrawals += payload & FIELD;
        });
        let credit = i64::try_from(deposits.saturating_add(self.reserve)).unwrap_or(i64::MAX);
        credit.saturating_sub(i64::try_from(withdrawals).unwrap_or(i64::MAX))
    }

    fn try_withdraw(&self) -> bool {
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

    #[test]
    fn the_percent_budget_allows_its_share_of_recent_requests_plus_a_floor() {
        let clock = ManualClock::new();
        let budget =
            RetryBudget::percent_with_clock(Duration::from_secs(10), 0.2, 1, clock.clone().into())
                .unwrap();
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
        let budget =
            RetryBudget::percent_with_clock(Duration::from_secs(10), 1.0, 0, clock.clone().into())
                .unwrap();
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
    }

    #[test]
    fn a_zero_percent_budget_allows_only_the_floor() {
        let clock = ManualClock::new();
        let budget =
            RetryBudget::percent_with_clock(Duration::from_secs(1), 0.0, 3, clock.into()).unwrap();
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
        let budget = RetryBudget::percent_with_clock(
            Duration::from_secs(1),
            0.001,
            1_000_000,
            clock.clone().into(),
        )
        .unwrap();
        let mut allowed = 0u32;
        while budget.try_withdraw() {
            allowed += 1;
            assert!(allowed < 1_000_000, "the slot never filled");
        }
        assert_eq!(u64::from(allowed), (FIELD - HEADROOM) / 1000 + 1);
        // Deposits of the largest unit (1000 at 10 retries per request) saturate the same way.
        let busy =
            RetryBudget::percent_with_clock(Duration::from_secs(1), 10.0, 0, clock.into()).unwrap();
        for _ in 0..300_000 {
            busy.on_request();
        }
        let Some(Kind::Percent(percent)) = busy.kind.as_deref() else {
            unreachable!()
        };
        let balance = percent.balance();
        assert!(
            balance > 0 && balance <= i64::try_from(FIELD).unwrap(),
            "{balance}"
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

/// loom models for the two budgets' shared words.
#[cfg(all(test, palisade_loom))]
mod loom_models {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn loom_concurrent_outcomes_never_lose_a_token_update() {
        loom::model(|| {
            let budget =
                RetryBudget::token_bucket(NonZeroU32::new(4).unwrap(), Ratio::new_const(0.5));
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
            let budget =
                RetryBudget::percent_with_clock(Duration::from_secs(10), 1.0, 0, clock.into())
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
}
