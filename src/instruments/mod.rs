//! What the layers record for the `metrics` facade (see [`crate::metrics`] for the names).
//!
//! Every layer holds these types whether or not the `metrics` feature is on: with it, they are
//! handles on the recorder's counters, gauges and histograms, resolved once when the layer is
//! built; without it, they are empty types whose methods do nothing, so a build without the
//! feature carries no field, no clock read and no branch for them.

// Which of them a build uses depends on its layers.
#![allow(dead_code)]

#[cfg(feature = "metrics")]
mod enabled;
#[cfg(feature = "metrics")]
#[allow(unused_imports)] // A build with no layer uses none of them.
pub(crate) use enabled::*;

#[cfg(not(feature = "metrics"))]
mod disabled;
#[cfg(not(feature = "metrics"))]
#[allow(unused_imports)] // A build with no layer uses none of them.
pub(crate) use disabled::*;

/// How a call through a layer ended, for `palisade_calls_total{outcome}`. A rejection is
/// recorded by [`Calls::rejected`] instead, and a call whose future is dropped first counts as
/// `cancelled`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) enum Outcome {
    Success,
    Failure,
    /// Neither success nor failure for the layer (the breaker's classifier ignored it).
    Ignored,
    /// The layer gave up waiting.
    Timeout,
}

impl From<crate::classify::Outcome> for Outcome {
    fn from(outcome: crate::classify::Outcome) -> Self {
        match outcome {
            crate::classify::Outcome::Success => Self::Success,
            crate::classify::Outcome::Failure => Self::Failure,
            crate::classify::Outcome::Ignore => Self::Ignored,
        }
    }
}

/// The `layer` label of every metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) enum LayerKind {
    Timeout,
    ServerTimeout,
    CircuitBreaker,
    Retry,
    Throttle,
    Idempotency,
    Cache,
}

#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
impl LayerKind {
    pub(crate) const fn label(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::ServerTimeout => "server_timeout",
            Self::CircuitBreaker => "circuit_breaker",
            Self::Retry => "retry",
            Self::Throttle => "throttle",
            Self::Idempotency => "idempotency",
            Self::Cache => "cache",
        }
    }
}
