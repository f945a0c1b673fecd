//! Errors: [`BoxError`], [`ConfigError`], and [`Rejection`], finding palisade's own errors in
//! whatever error a stack returns.
//!
//! Every way a palisade layer refuses or abandons a request is a small concrete error type
//! ([`TimedOut`](crate::timeout::TimedOut), …). Layers that add a failure mode return
//! [`BoxError`], like tower's own layers, so they stack with anything. To get the typed view back
//! without a ladder of `downcast_ref` calls, [`Rejection::find`] walks an error and its whole
//! `source()` chain and returns the first palisade rejection as an enum to `match` on.
//!
//! ```
//! use std::time::Duration;
//! use palisade::error::{BoxError, Rejection};
//! use palisade::timeout::TimeoutLayer;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let mut svc = ServiceBuilder::new()
//!     .layer(TimeoutLayer::new(Duration::from_millis(100)))
//!     .service_fn(|_: http::Request<()>| async {
//!         tokio::time::sleep(Duration::from_secs(1)).await;
//!         Ok::<_, BoxError>("late")
//!     });
//!
//! let err = svc.ready().await.unwrap().call(http::Request::new(())).await.unwrap_err();
//! match Rejection::find(&*err) {
//!     Some(Rejection::TimedOut(timed_out)) => {
//!         assert_eq!(timed_out.after(), Duration::from_millis(100));
//!     }
//!     other => panic!("expected a timeout, got {other:?}"),
//! }
//! # }
//! ```

use std::error::Error;
use std::time::Duration;

/// The typed view of every palisade rejection (defined in the crate's top module, which knows
/// every layer; this module is the leaf every layer imports).
pub use crate::rejection::Rejection;

/// A type-erased error, as tower's layers use: `Box<dyn Error + Send + Sync>`.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// A layer configuration that cannot work, found when the layer is built.
///
/// One variant per broken rule, each naming the setting and the allowed range, so a test can
/// match on exactly what was wrong.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A [`Ratio`](crate::Ratio) outside `0..=1` (or `0..=100` percent), or NaN.
    #[error("a ratio must be between 0 and 1 (0 and 100 percent), got {value}")]
    InvalidRatio {
        /// The value given.
        value: f64,
    },
    /// A fractional setting outside its allowed range, or NaN.
    #[error("`{setting}` must be between {min} and {max}, got {value}")]
    ShareOutOfRange {
        /// The setting.
        setting: &'static str,
        /// The value given.
        value: f64,
        /// The smallest allowed value.
        min: f64,
        /// The largest allowed value.
        max: f64,
    },
    /// A [`Factor`](crate::Factor) that is negative, infinite or NaN.
    #[error("a factor must be a finite number of at least 0, got {value}")]
    InvalidFactor {
        /// The value given.
        value: f64,
    },
    /// A setting whose allowed range is "above zero" was zero (a failure rate of 0 % would open
    /// on any call).
    #[error("`{setting}` must be above zero")]
    MustBePositive {
        /// The setting.
        setting: &'static str,
    },
    /// A count outside its allowed range.
    #[error("`{setting}` must be between {min} and {max}, got {value}")]
    CountOutOfRange {
        /// The setting.
        setting: &'static str,
        /// The value given.
        value: u64,
        /// The smallest allowed value.
        min: u64,
        /// The largest allowed value.
        max: u64,
    },
    /// A duration outside its allowed range.
    #[error("`{setting}` must be between {min:?} and {max:?}, got {value:?}")]
    DurationOutOfRange {
        /// The setting.
        setting: &'static str,
        /// The value given.
        value: Duration,
        /// The shortest allowed value.
        min: Duration,
        /// The longest allowed value.
        max: Duration,
    },
    /// Two settings that contradict each other.
    #[error("`{setting}` ({value}) conflicts with `{other}`: {why}")]
    Conflict {
        /// The setting.
        setting: &'static str,
        /// Its value, formatted.
        value: String,
        /// The setting it conflicts with.
        other: &'static str,
        /// The rule broken.
        why: &'static str,
    },
    /// A value that breaks a rule of its own setting (a Redis key prefix with a brace).
    #[error("`{setting}` is invalid: {why}")]
    Invalid {
        /// The setting.
        setting: &'static str,
        /// The rule broken.
        why: &'static str,
    },
}

/// `value` if it lies in `min..=max`, else the error naming `setting` and the range: the one
/// duration check every builder makes.
#[cfg_attr(
    not(any(
        feature = "circuit-breaker",
        feature = "throttle",
        feature = "retry",
        feature = "idempotency",
        feature = "cache",
        feature = "redis"
    )),
    allow(dead_code)
)]
pub(crate) fn duration_within(
    setting: &'static str,
    value: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::DurationOutOfRange {
            setting,
            value,
            min,
            max,
        })
    }
}
