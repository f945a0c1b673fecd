//! [`Ratio`], a fraction between 0 and 1, and [`Factor`], a multiplier that may exceed 1: both
//! checked once, when they are made.

use std::fmt;
use std::time::Duration;

use crate::error::ConfigError;

/// A fraction between 0 and 1 inclusive (a failure-rate threshold, a jitter amount).
///
/// Built with [`Ratio::new`] (fallible) or [`Ratio::new_const`] (for literals, checked at
/// compile time in a `const`), so a setter that takes one never sees NaN or an out-of-range
/// value.
///
/// ```
/// use palisade::Ratio;
///
/// const HALF: Ratio = Ratio::new_const(0.5);
/// assert_eq!(HALF.get(), 0.5);
/// assert_eq!(Ratio::percent(20.0).unwrap().get(), 0.2);
/// assert!(Ratio::new(1.5).is_err());
/// assert!(Ratio::new(f64::NAN).is_err());
/// ```
#[derive(Clone, Copy, PartialEq, PartialOrd)]
pub struct Ratio(f64);

impl Ratio {
    /// Zero.
    pub const ZERO: Self = Self(0.0);
    /// One (all of it).
    pub const ONE: Self = Self(1.0);

    /// `value`, which must be between 0 and 1 inclusive.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidRatio`] for NaN or a value outside `0.0..=1.0`.
    pub fn new(value: f64) -> Result<Self, ConfigError> {
        if (0.0..=1.0).contains(&value) {
            Ok(Self(value))
        } else {
            Err(ConfigError::InvalidRatio { value })
        }
    }

    /// `value` percent, which must be between 0 and 100 inclusive.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidRatio`] for NaN or a value outside `0.0..=100.0`.
    pub fn percent(value: f64) -> Result<Self, ConfigError> {
        Self::new(value / 100.0).map_err(|_| ConfigError::InvalidRatio { value })
    }

    /// `value` for constants.
    ///
    /// # Panics
    ///
    /// If `value` is NaN or outside `0.0..=1.0`; in a `const` that is a compile error.
    #[must_use]
    pub const fn new_const(value: f64) -> Self {
        assert!(
            value >= 0.0 && value <= 1.0,
            "a Ratio must be between 0 and 1"
        );
        Self(value)
    }

    /// The fraction.
    #[must_use]
    pub const fn get(self) -> f64 {
        self.0
    }
}

impl fmt::Debug for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0 * 100.0)
    }
}

impl fmt::Display for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A multiplier: a finite number of at least 0, which unlike a [`Ratio`] may exceed 1 (the
/// throttle's `K`, a retry budget's retries per request).
///
/// Built like a [`Ratio`], with [`Factor::new`] (fallible) or [`Factor::new_const`]; each
/// setter that takes one checks its own range when its builder builds, and names itself in the
/// error.
///
/// ```
/// use palisade::Factor;
///
/// const DOUBLE: Factor = Factor::new_const(2.0);
/// assert_eq!(DOUBLE.get(), 2.0);
/// assert!(Factor::new(-1.0).is_err());
/// assert!(Factor::new(f64::INFINITY).is_err());
/// ```
#[derive(Clone, Copy, PartialEq, PartialOrd)]
pub struct Factor(f64);

impl Factor {
    /// `value`, which must be finite and at least 0.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidFactor`] for NaN, an infinity or a negative value.
    pub fn new(value: f64) -> Result<Self, ConfigError> {
        if value.is_finite() && value >= 0.0 {
            Ok(Self(value))
        } else {
            Err(ConfigError::InvalidFactor { value })
        }
    }

    /// `value` for constants.
    ///
    /// # Panics
    ///
    /// If `value` is NaN, infinite or negative; in a `const` that is a compile error.
    #[must_use]
    pub const fn new_const(value: f64) -> Self {
        assert!(
            value >= 0.0 && value < f64::INFINITY,
            "a Factor must be finite and at least 0"
        );
        Self(value)
    }

    /// The multiplier.
    #[must_use]
    pub const fn get(self) -> f64 {
        self.0
    }

    /// Checks that this factor lies in `min..=max` for `setting`.
    // Used by the builders that take a factor: the throttle's and the percentage budget's.
    #[cfg_attr(not(any(feature = "throttle", feature = "retry")), allow(dead_code))]
    pub(crate) fn within(
        self,
        setting: &'static str,
        min: f64,
        max: f64,
    ) -> Result<f64, ConfigError> {
        if (min..=max).contains(&self.0) {
            Ok(self.0)
        } else {
            Err(ConfigError::ShareOutOfRange {
                setting,
                value: self.0,
                min,
                max,
            })
        }
    }
}

impl fmt::Debug for Factor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "×{}", self.0)
    }
}

impl fmt::Display for Factor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// `duration · factor`, saturating: a product past [`Duration::MAX`] is `Duration::MAX`, and a
/// negative or NaN factor is zero. [`Duration::mul_f64`] panics on both, and a jittered wait
/// derived from a user's setting (up to `Duration::MAX`) can reach either.
// Used by the jittered waits of the breaker, the throttle and (through `fraction_of`) the retry.
#[cfg_attr(
    not(any(feature = "circuit-breaker", feature = "throttle", feature = "retry")),
    allow(dead_code)
)]
pub(crate) fn scale(duration: Duration, factor: f64) -> Duration {
    if factor.is_nan() || factor <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(duration.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

/// `duration · unit` for a draw `unit` in `[0, 1]` (clamped into it; NaN counts as 0), never more
/// than `duration` (a float product can round up past it, and past `Duration::MAX`).
#[cfg_attr(not(feature = "retry"), allow(dead_code))]
pub(crate) fn fraction_of(duration: Duration, unit: f64) -> Duration {
    // `>=` is false for NaN (and `f64::min` would turn NaN into 1).
    let unit = if unit >= 0.0 { unit.min(1.0) } else { 0.0 };
    scale(duration, unit).min(duration)
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn scaling_saturates_and_never_panics() {
        assert_eq!(scale(Duration::MAX, 1.0), Duration::MAX);
        assert_eq!(scale(Duration::MAX, 2.0), Duration::MAX);
        assert_eq!(scale(Duration::from_secs(1), f64::INFINITY), Duration::MAX);
        assert_eq!(scale(Duration::from_secs(1), f64::NAN), Duration::ZERO);
        assert_eq!(scale(Duration::from_secs(1), -1.0), Duration::ZERO);
        assert_eq!(
            scale(Duration::from_secs(2), 0.25),
            Duration::from_millis(500)
        );
        assert_eq!(fraction_of(Duration::MAX, 1.0), Duration::MAX);
        assert_eq!(
            fraction_of(Duration::from_secs(1), 2.0),
            Duration::from_secs(1)
        );
        assert_eq!(
            fraction_of(Duration::from_secs(1), f64::NAN),
            Duration::ZERO
        );
    }
}

/// Deserializes from a number, checked as [`Ratio::new`] checks it (feature `serde`).
#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Ratio {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = <f64 as serde::Deserialize>::deserialize(deserializer)?;
        Self::new(value).map_err(serde::de::Error::custom)
    }
}

/// Deserializes from a number, checked as [`Factor::new`] checks it (feature `serde`).
#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Factor {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = <f64 as serde::Deserialize>::deserialize(deserializer)?;
        Self::new(value).map_err(serde::de::Error::custom)
    }
}
