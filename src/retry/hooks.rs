//! The retry layer's event hooks: what [`RetryLayer::on_retry`](super::RetryLayer::on_retry)
//! and [`RetryLayer::on_budget_exhausted`](super::RetryLayer::on_budget_exhausted) are told.

use std::time::Duration;

use crate::hook::Hook;

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

/// The layer's hooks, behind one pointer each call copies (none at all when nothing is set).
#[derive(Clone, Debug, Default)]
pub(crate) struct Hooks {
    pub(crate) on_retry: Hook<RetryEvent>,
    pub(crate) on_budget_exhausted: Hook<BudgetRefused>,
}
