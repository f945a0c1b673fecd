//! [`Backoff`]: how long to wait before each retry. Always **cap first, then jitter**.

use std::time::Duration;

use crate::error::ConfigError;
use crate::ratio::fraction_of;

/// The first retry's ceiling: 50 ms (tower's default base, AWS SDK retry behaviour 2.1's
/// initial backoff for non-throttling errors).
pub const DEFAULT_BASE: Duration = Duration::from_millis(50);
/// The longest computed wait: 20 s (the AWS SDKs' `max_backoff`).
pub const DEFAULT_CAP: Duration = Duration::from_secs(20);

/// How the wait before a retry is spread below its ceiling `c = min(cap, base·2ⁿ)`, where `n`
/// counts retries from 0 (the first retry's ceiling is `base`). Formulas from Marc Brooker's
/// "Exponential Backoff And Jitter" (AWS Architecture Blog), with the cap applied *before* the
/// jitter so clients never re-synchronise at the cap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Jitter {
    /// `U(0, c)`. The default: in Brooker's simulation it does the least total work, which is
    /// what protects an overloaded server.
    #[default]
    Full,
    /// `c/2 + U(0, c/2)`: never shorter than half the ceiling. Kept for parity; it does more work
    /// and takes longer than `Full` in the same simulation.
    Equal,
    /// `U(base, min(cap, 3·previous))`, with `previous` starting at `base`: each wait grows from
    /// the last one rather than from the retry count. Finishes slightly sooner than `Full` for
    /// slightly more work.
    Decorrelated,
    /// Exactly `c`: every client retries in lockstep. For tests and single clients only.
    None,
}

/// Exponential backoff with a cap and a [`Jitter`].
///
/// ```
/// use std::time::Duration;
/// use palisade::retry::{Backoff, Jitter};
///
/// let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1))
///     .unwrap()
///     .jitter(Jitter::None);
/// assert_eq!(backoff.ceiling(0), Duration::from_millis(100));
/// assert_eq!(backoff.ceiling(3), Duration::from_millis(800));
/// assert_eq!(backoff.ceiling(4), Duration::from_secs(1), "capped");
/// assert_eq!(backoff.ceiling(u32::MAX), Duration::from_secs(1), "no overflow");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    jitter: Jitter,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: DEFAULT_BASE,
            cap: DEFAULT_CAP,
            jitter: Jitter::Full,
        }
    }
}

impl Backoff {
    /// Waits growing from `base` (doubling per retry) up to `cap`, with [`Jitter::Full`].
    ///
    /// # Errors
    ///
    /// [`ConfigError::DurationOutOfRange`] for a zero `base`, and [`ConfigError::Conflict`] for a
    /// `cap` below `base`.
    pub fn new(base: Duration, cap: Duration) -> Result<Self, ConfigError> {
        if base.is_zero() {
            return Err(ConfigError::DurationOutOfRange {
                setting: "backoff base",
                value: base,
                min: Duration::from_nanos(1),
                max: Duration::MAX,
            });
        }
        if cap < base {
            return Err(ConfigError::Conflict {
                setting: "backoff cap",
                value: format!("{cap:?}"),
                other: "backoff base",
                why: "the cap must be at least the base",
            });
        }
        Ok(Self {
            base,
            cap,
            jitter: Jitter::Full,
        })
    }

    /// Spreads each wait with `jitter`. Defaults to [`Jitter::Full`].
    #[must_use]
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The first retry's ceiling.
    #[must_use]
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The largest computed wait.
    #[must_use]
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// The jitter.
    #[must_use]
    pub fn kind(&self) -> Jitter {
        self.jitter
    }

    /// The ceiling of retry `retry` (counted from 0): `min(cap, base·2^retry)`, saturating, so no
    /// retry count can overflow.
    #[must_use]
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry).unwrap_or(0);
        if factor == 0 {
            return self.cap;
        }
        self.base
            .checked_mul(factor)
            .map_or(self.cap, |d| d.min(self.cap))
    }

    /// The wait before retry `retry` (counted from 0), given the previous wait (for
    /// [`Jitter::Decorrelated`]; pass [`Backoff::base`] before the first retry) and a uniform
    /// draw `unit` in `[0, 1)` (a value outside `[0, 1]` is clamped into it; NaN counts as 0).
    #[must_use]
    pub fn delay(&self, retry: u32, previous: Duration, unit: f64) -> Duration {
        // Every product goes through `fraction_of`, which never exceeds its duration: with a cap
        // near `Duration::MAX` a float product can round past it, which `mul_f64` panics on.
        match self.jitter {
            Jitter::None => self.ceiling(retry),
            Jitter::Full => fraction_of(self.ceiling(retry), unit),
            Jitter::Equal => {
                let ceiling = self.ceiling(retry);
                let half = ceiling / 2;
                // `ceiling - half`, not `half`: an odd nanosecond count keeps its top.
                half + fraction_of(ceiling - half, unit)
            }
            Jitter::Decorrelated => {
                let high = previous.saturating_mul(3).min(self.cap);
                if high <= self.base {
                    return self.base;
                }
                self.base + fraction_of(high - self.base, unit)
            }
        }
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::random::Random;

    fn backoff(jitter: Jitter) -> Backoff {
        Backoff::new(Duration::from_millis(10), Duration::from_secs(1))
            .unwrap()
            .jitter(jitter)
    }

    #[test]
    fn draws_outside_the_unit_interval_are_clamped_not_a_panic() {
        for jitter in [
            Jitter::Full,
            Jitter::Equal,
            Jitter::Decorrelated,
            Jitter::None,
        ] {
            let b = backoff(jitter);
            let previous = Duration::from_millis(500);
            for unit in [f64::NAN, -1.0, f64::NEG_INFINITY] {
                assert_eq!(b.delay(3, previous, unit), b.delay(3, previous, 0.0));
            }
            for unit in [1.5, f64::INFINITY] {
                assert_eq!(b.delay(3, previous, unit), b.delay(3, previous, 1.0));
            }
        }
    }

    proptest! {
        #[test]
        fn every_delay_stays_in_its_documented_range(
            retry in any::<u32>(),
            previous_ms in 0u64..10_000,
            unit in 0.0f64..1.0,
        ) {
            let previous = Duration::from_millis(previous_ms);
            for jitter in [Jitter::Full, Jitter::Equal, Jitter::Decorrelated, Jitter::None] {
                let b = backoff(jitter);
                let ceiling = b.ceiling(retry);
                prop_assert!(ceiling >= b.base() && ceiling <= b.cap());
                let delay = b.delay(retry, previous, unit);
                match jitter {
                    Jitter::Full => prop_assert!(delay <= ceiling),
                    Jitter::Equal => prop_assert!(delay >= ceiling / 2 && delay <= ceiling),
                    Jitter::Decorrelated => {
                        let high = (previous * 3).min(b.cap()).max(b.base());
                        prop_assert!(delay >= b.base() && delay <= high, "{delay:?} not in [{:?}, {high:?}]", b.base());
                    }
                    _ => prop_assert_eq!(delay, ceiling),
                }
            }
        }

        /// Caps anywhere up to `Duration::MAX`, draws at both ends of the unit interval and any
        /// previous wait: never a panic, and the documented range still holds.
        #[test]
        fn huge_caps_and_extreme_draws_saturate_instead_of_panicking(
            base_ns in 1u64..=u64::MAX,
            cap_secs in prop_oneof![Just(u64::MAX), any::<u64>()],
            cap_nanos in prop_oneof![Just(999_999_999u32), 0u32..1_000_000_000],
            retry in any::<u32>(),
            previous_secs in any::<u64>(),
            unit in prop_oneof![Just(1.0f64), Just(0.999_999_999_999_999_9), 0.0f64..=1.0],
        ) {
            let base = Duration::from_nanos(base_ns);
            let cap = Duration::new(cap_secs, cap_nanos).max(base);
            let previous = Duration::from_secs(previous_secs);
            for jitter in [Jitter::Full, Jitter::Equal, Jitter::Decorrelated, Jitter::None] {
                let b = Backoff::new(base, cap).unwrap().jitter(jitter);
                let delay = b.delay(retry, previous, unit);
                let ceiling = b.ceiling(retry);
                match jitter {
                    Jitter::Decorrelated => prop_assert!(delay >= base && delay <= cap),
                    Jitter::Equal => prop_assert!(delay >= ceiling / 2 && delay <= ceiling),
                    _ => prop_assert!(delay <= ceiling),
                }
            }
        }

        #[test]
        fn the_ceiling_grows_monotonically_until_the_cap(retry in 0u32..200) {
            let b = backoff(Jitter::None);
            prop_assert!(b.ceiling(retry) <= b.ceiling(retry + 1));
        }
    }

    #[test]
    fn full_jitter_has_no_point_mass_at_the_cap() {
        let b = backoff(Jitter::Full);
        let random = Random::new(Some(42));
        let at_cap = (0..100_000)
            .filter(|_| b.delay(200, b.base(), random.unit()) == b.cap())
            .count();
        assert_eq!(at_cap, 0);
    }

    #[test]
    fn decorrelated_jitter_has_no_point_mass_at_the_cap() {
        let b = backoff(Jitter::Decorrelated);
        let random = Random::new(Some(42));
        let mut previous = b.base();
        let mut at_cap = 0;
        for retry in 0..100_000 {
            previous = b.delay(retry, previous, random.unit());
            at_cap += usize::from(previous == b.cap());
        }
        assert_eq!(at_cap, 0);
    }

    #[test]
    fn full_jitter_is_uniform_below_the_ceiling() {
        // 10 equal buckets over [0, cap); 100 000 seeded draws. Each bucket expects 10 000; a
        // chi-squared statistic over 9 degrees of freedom above 27.9 would happen by chance
        // with probability 0.001.
        let b = backoff(Jitter::Full);
        let random = Random::new(Some(7));
        let mut buckets = [0u32; 10];
        for _ in 0..100_000 {
            let delay = b.delay(100, b.base(), random.unit());
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // in 0..=10
            let bucket = (delay.as_secs_f64() / b.cap().as_secs_f64() * 10.0) as usize;
            buckets[bucket.min(9)] += 1;
        }
        let chi_squared: f64 = buckets
            .iter()
            .map(|&n| (f64::from(n) - 10_000.0).powi(2) / 10_000.0)
            .sum();
        assert!(chi_squared < 27.9, "{buckets:?}: chi² = {chi_squared}");
    }

    #[test]
    fn invalid_backoffs_are_refused() {
        assert!(Backoff::new(Duration::ZERO, Duration::from_secs(1)).is_err());
        assert!(Backoff::new(Duration::from_secs(2), Duration::from_secs(1)).is_err());
    }
}
