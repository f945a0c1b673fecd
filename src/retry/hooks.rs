//! The retry layer's event hooks: what [`RetryLayer::on_retry`](super::RetryLayer::on_retry)
//! and [`RetryLayer::on_budget_exhausted`](super::RetryLayer::on_budget_exhausted) are told.

use std::time::Duration;

use crate::hook::Hook;
use crate::instruments::{Calls, Counters, Durations, LayerKind, name_label};

/// A retry about to wait, told to [`RetryLayer::on_retry`](super::RetryLayer::on_retry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryEvent {
    /// The attempt about to be made: 2 for the first retry. For a wait on a reopening, the
    /// rejected attempt's own number (it did not count, and is sent again).
    pub attempt: u32,
    /// How long it waits first.
    pub delay: Duration,
    /// Why it waits that long.
    pub reason: RetryReason,
}

/// Where a [`RetryEvent`]'s wait came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetryReason {
    /// The backoff: the attempt failed and the layer chose the wait.
    Backoff,
    /// The server's pushback (`Retry-After`, an inner breaker's time left).
    Pushback,
    /// A protective rejection's reopening, waited out once
    /// ([`RetryLayer::wait_for_reopening`](super::RetryLayer::wait_for_reopening)).
    Reopening,
}

/// A retry the budget refused, told to
/// [`RetryLayer::on_budget_exhausted`](super::RetryLayer::on_budget_exhausted): the failed
/// attempt's result is returned instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BudgetRefused {
    /// The attempts made in the call, all failed.
    pub attempts: u32,
}

impl RetryReason {
    /// The `reason` label of `palisade_retries_total`.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) const fn label(self) -> &'static str {
        match self {
            Self::Backoff => "backoff",
            Self::Pushback => "pushback",
            Self::Reopening => "reopening",
        }
    }
}

/// The layer's hooks and metrics, behind one pointer each call copies (none at all when no
/// hook is set and the `metrics` feature is off).
#[derive(Clone, Debug, Default)]
pub(crate) struct Hooks {
    pub(crate) on_retry: Hook<RetryEvent>,
    pub(crate) on_budget_exhausted: Hook<BudgetRefused>,
    /// Set when the layer builds a service (it needs the layer's name); read through
    /// [`Hooks::instruments`].
    pub(crate) instruments: Option<Instruments>,
}

impl Hooks {
    /// The metrics, if any: without the `metrics` feature a constant `None`, so the calls and
    /// attempts of a layer with hooks set test nothing for them.
    #[inline(always)]
    pub(crate) fn instruments(&self) -> Option<&Instruments> {
        if cfg!(feature = "metrics") {
            self.instruments.as_ref()
        } else {
            None
        }
    }
}

/// The retry layer's metrics (empty types without the `metrics` feature).
#[derive(Clone, Debug)]
pub(crate) struct Instruments {
    pub(crate) calls: Calls,
    pub(crate) retries: Counters,
    pub(crate) refusals: Counters,
    pub(crate) attempts: Durations,
}

impl Instruments {
    pub(crate) fn new(name: Option<&str>) -> Self {
        let name = name_label(name);
        let layer = LayerKind::Retry;
        Self {
            calls: Calls::new(layer, &name, &[], &[]),
            retries: Counters::new(
                "palisade_retries_total",
                layer,
                &name,
                "reason",
                &["backoff", "pushback", "reopening"],
            ),
            refusals: Counters::one("palisade_retry_budget_refusals_total", layer, &name),
            attempts: Durations::new("palisade_attempt_duration_seconds", layer, &name),
        }
    }
}
