//! The instruments without the `metrics` feature: empty types whose methods do nothing, so
//! that the layers' code reads the same either way and compiles to nothing here.

use super::{LayerKind, Outcome};

/// See the `enabled` twin.
pub(crate) fn name_label(_: Option<&str>) -> NameLabel {
    NameLabel
}

/// See the `enabled` twin.
#[derive(Clone, Debug, Default)]
pub(crate) struct NameLabel;

/// See the `enabled` twin.
#[derive(Clone, Debug)]
pub(crate) struct Calls;

impl Calls {
    #[inline(always)]
    pub(crate) fn new(
        _: LayerKind,
        _: &NameLabel,
        _: &'static [&'static str],
        _: &'static [&'static str],
    ) -> Self {
        Self
    }

    #[inline(always)]
    pub(crate) fn expired(&self, _: &'static str) {}

    #[inline(always)]
    pub(crate) fn start(&self) -> Call {
        Call
    }

    #[inline(always)]
    pub(crate) fn start_resolving(&self, _: impl FnOnce()) -> Call {
        Call
    }

    #[inline(always)]
    pub(crate) fn rejected(&self, _: &'static str) {}
}

/// See the `enabled` twin.
#[derive(Debug)]
pub(crate) struct Call;

impl Call {
    #[inline(always)]
    pub(crate) fn detached() -> Self {
        Self
    }

    #[inline(always)]
    pub(crate) fn started(&self) -> Stamp {
        Stamp
    }

    #[inline(always)]
    pub(crate) fn finish(&mut self, _: Outcome) {}

    #[inline(always)]
    pub(crate) fn finish_at(&mut self, _: Outcome, _: Stamp) {}

    #[inline(always)]
    pub(crate) fn timed_out(&mut self, _: &'static str) {}
}

/// See the `enabled` twin.
#[derive(Clone, Debug)]
pub(crate) struct Counters;

impl Counters {
    #[inline(always)]
    pub(crate) fn new(
        _: &'static str,
        _: LayerKind,
        _: &NameLabel,
        _: &'static str,
        _: &'static [&'static str],
    ) -> Self {
        Self
    }

    #[inline(always)]
    pub(crate) fn one(_: &'static str, _: LayerKind, _: &NameLabel) -> Self {
        Self
    }

    #[inline(always)]
    pub(crate) fn count(&self, _: &'static str) {}

    #[inline(always)]
    pub(crate) fn count_one(&self) {}

    #[inline(always)]
    pub(crate) fn touch(&self) {}
}

/// See the `enabled` twin.
#[derive(Clone, Debug)]
pub(crate) struct Durations;

impl Durations {
    #[inline(always)]
    pub(crate) fn new(_: &'static str, _: LayerKind, _: &NameLabel) -> Self {
        Self
    }

    #[inline(always)]
    pub(crate) fn record_between(&self, _: Stamp, _: Stamp) {}

    #[inline(always)]
    pub(crate) fn touch(&self) {}
}

/// See the `enabled` twin.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stamp;

impl Stamp {
    #[inline(always)]
    pub(crate) fn now() -> Self {
        Self
    }
}

/// See the `enabled` twin.
#[derive(Clone, Debug)]
pub(crate) struct BreakerStates;

impl BreakerStates {
    #[inline(always)]
    pub(crate) fn new(_: &NameLabel, _: &'static [&'static str]) -> Self {
        Self
    }

    #[inline(always)]
    pub(crate) fn ensure(&self, _: impl FnOnce() -> &'static str) {}

    #[inline(always)]
    pub(crate) fn transition(
        &self,
        _: &'static str,
        _: &'static str,
        _: impl Fn() -> &'static str,
    ) {
    }
}
