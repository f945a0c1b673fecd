//! [`Ratio`]: a fraction between 0 and 1, checked once.

use std::fmt;

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
