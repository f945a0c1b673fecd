//! The instruments with the `metrics` feature: handles on the recorder's metrics.
//!
//! Every handle is resolved once, when the layer first records something (`metrics::counter!`
//! and friends look the metric up in the recorder then, not on each call), so the per-call cost
//! is a check that they are resolved (an atomic load) and the handles' own: an atomic add for a
//! counter, two clock reads and a histogram sample for a duration. Resolving at first use
//! rather than when the layer is built means that a layer never used registers nothing (no
//! zero series for a default a preset replaced), and that a recorder installed after the
//! layers were built but before traffic still sees everything.

use std::fmt;
use std::sync::{Arc, OnceLock};

use metrics::{Counter, Gauge, Histogram, SharedString, Unit};

use super::{LayerKind, Outcome};
use crate::clock::Instant;

/// The `name` label of a layer that was given none.
const UNNAMED: &str = "unnamed";

/// A layer's `name` label, kept for the metrics it registers.
pub(crate) type NameLabel = SharedString;

/// The `name` label for a layer's optional name.
pub(crate) fn name_label(name: Option<&str>) -> NameLabel {
    SharedString::from(name.unwrap_or(UNNAMED).to_owned())
}

/// Registers each metric's unit and help text with the current recorder (the Prometheus
/// exporter prints them as `# HELP`). Cheap and idempotent: called whenever a layer is built.
fn describe() {
    let counters = [
        (
            "palisade_calls_total",
            "Calls through a layer, by how they ended.",
        ),
        (
            "palisade_rejections_total",
            "Calls a layer refused without calling the inner service, by reason.",
        ),
        (
            "palisade_circuit_breaker_transitions_total",
            "Circuit breaker state changes.",
        ),
        (
            "palisade_retries_total",
            "Waits for another attempt, by where the wait came from.",
        ),
        (
            "palisade_retry_budget_refusals_total",
            "Retries the retry budget refused.",
        ),
        (
            "palisade_timeouts_total",
            "Requests a timeout abandoned, by which bound ran out.",
        ),
        (
            "palisade_idempotency_requests_total",
            "Requests with an idempotency key, by what the layer did.",
        ),
        (
            "palisade_cache_results_total",
            "Cache lookups and background work, by result.",
        ),
    ];
    for (name, help) in counters {
        metrics::describe_counter!(name, Unit::Count, help);
    }
    metrics::describe_gauge!(
        "palisade_in_flight",
        Unit::Count,
        "Calls inside a layer now (admitted and not yet answered)."
    );
    metrics::describe_gauge!(
        "palisade_circuit_breaker_state",
        Unit::Count,
        "1 for the breaker's current state, 0 for the others."
    );
    metrics::describe_histogram!(
        "palisade_request_duration_seconds",
        Unit::Seconds,
        "Time from a call entering a layer to its answer leaving it."
    );
    metrics::describe_histogram!(
        "palisade_attempt_duration_seconds",
        Unit::Seconds,
        "Time of each attempt the retry layer made."
    );
}

/// Outcome counters, in-flight gauge and duration histogram of one layer instance.
struct CallInstruments {
    /// Indexed by [`OUTCOMES`].
    outcomes: [Counter; 6],
    rejections: Counters,
    timeouts: Counters,
    in_flight: Gauge,
    duration: Histogram,
}

/// The `outcome` label values, in the order of [`CallInstruments::outcomes`].
const OUTCOMES: [&str; 6] = [
    "success",
    "failure",
    "ignored",
    "timeout",
    "rejected",
    "cancelled",
];
const REJECTED: usize = 4;
const CANCELLED: usize = 5;

/// The per-call instruments of one layer instance: `palisade_calls_total`,
/// `palisade_rejections_total`, `palisade_timeouts_total`, `palisade_in_flight`,
/// `palisade_request_duration_seconds`. Clones share the handles.
#[derive(Clone)]
pub(crate) struct Calls(Arc<LazyCalls>);

/// What [`CallInstruments`] are resolved from, and the cell they are resolved into.
struct LazyCalls {
    layer: LayerKind,
    name: NameLabel,
    reasons: &'static [&'static str],
    timeouts: &'static [&'static str],
    cell: OnceLock<CallInstruments>,
}

impl LazyCalls {
    #[inline]
    fn get(&self) -> &CallInstruments {
        self.cell.get_or_init(|| self.resolve())
    }

    #[cold]
    fn resolve(&self) -> CallInstruments {
        describe();
        let (layer, name) = (self.layer, &self.name);
        let layer_label = layer.label();
        let outcomes = OUTCOMES.map(|outcome| {
            metrics::counter!(
                "palisade_calls_total",
                "layer" => layer_label,
                "name" => name.clone(),
                "outcome" => outcome
            )
        });
        let instruments = CallInstruments {
            outcomes,
            rejections: Counters::new(
                "palisade_rejections_total",
                layer,
                name,
                "reason",
                self.reasons,
            ),
            timeouts: Counters::new(
                "palisade_timeouts_total",
                layer,
                name,
                "kind",
                self.timeouts,
            ),
            in_flight: metrics::gauge!(
                "palisade_in_flight",
                "layer" => layer_label,
                "name" => name.clone()
            ),
            duration: metrics::histogram!(
                "palisade_request_duration_seconds",
                "layer" => layer_label,
                "name" => name.clone()
            ),
        };
        // Registered now, at zero, so that a rate over them exists before the first one.
        instruments.rejections.touch();
        instruments.timeouts.touch();
        instruments
    }
}

impl Calls {
    /// The instruments of a `layer` called `name`, refusing calls for `reasons` (the
    /// `reason` label values of its rejections) and giving up on them for `timeouts` (the
    /// `kind` label values of its timeouts).
    pub(crate) fn new(
        layer: LayerKind,
        name: &NameLabel,
        reasons: &'static [&'static str],
        timeouts: &'static [&'static str],
    ) -> Self {
        Self(Arc::new(LazyCalls {
            layer,
            name: name.clone(),
            reasons,
            timeouts,
            cell: OnceLock::new(),
        }))
    }

    /// [`start`](Self::start), running `also` first if this is the layer's first record (to
    /// register the layer's other metrics at zero with its calls).
    #[inline]
    pub(crate) fn start_resolving(&self, also: impl FnOnce()) -> Call {
        if self.0.cell.get().is_none() {
            also();
        }
        self.start()
    }

    /// A call enters the layer: counted in flight until it ends.
    #[inline]
    pub(crate) fn start(&self) -> Call {
        self.0.get().in_flight.increment(1.0);
        Call(Some((Arc::clone(&self.0), Instant::now())))
    }

    /// A call the layer abandoned before calling the inner service (its deadline had passed):
    /// a `timeout` outcome and a `kind` timeout, neither in flight nor timed.
    #[inline]
    pub(crate) fn expired(&self, kind: &'static str) {
        let instruments = self.0.get();
        instruments.outcomes[Outcome::Timeout as usize].increment(1);
        instruments.timeouts.count(kind);
    }

    /// A call the layer refused (it never entered: not in flight, no duration).
    #[inline]
    pub(crate) fn rejected(&self, reason: &'static str) {
        let instruments = self.0.get();
        instruments.outcomes[REJECTED].increment(1);
        instruments.rejections.count(reason);
    }
}

/// One call in flight through a layer: [`finish`](Self::finish) it with its outcome; dropped
/// unfinished, it counts as `cancelled`.
pub(crate) struct Call(Option<(Arc<LazyCalls>, Instant)>);

impl Call {
    /// A call that records nothing (for a future shared with an uninstrumented layer).
    #[inline]
    pub(crate) fn detached() -> Self {
        Self(None)
    }

    /// When the call started (now, for a detached one): for a span that starts with it.
    #[inline]
    pub(crate) fn started(&self) -> Stamp {
        match &self.0 {
            Some((_, started)) => Stamp(*started),
            None => Stamp::now(),
        }
    }

    /// Records the call's outcome and duration, once (later calls do nothing).
    #[inline]
    pub(crate) fn finish(&mut self, outcome: Outcome) {
        if self.0.is_some() {
            self.finish_at(outcome, Stamp::now());
        }
    }

    /// [`finish`](Self::finish), the call having ended at `now` (a clock read shared with
    /// another span that ends with it).
    #[inline]
    pub(crate) fn finish_at(&mut self, outcome: Outcome, now: Stamp) {
        if let Some((lazy, started)) = self.0.take() {
            let instruments = lazy.get();
            instruments.in_flight.decrement(1.0);
            instruments.outcomes[outcome as usize].increment(1);
            instruments
                .duration
                .record(now.0.saturating_duration_since(started).as_secs_f64());
        }
    }

    /// Records that the layer gave up on the call, its `kind` bound having run out.
    #[inline]
    pub(crate) fn timed_out(&mut self, kind: &'static str) {
        if let Some((lazy, _)) = &self.0 {
            lazy.get().timeouts.count(kind);
        }
        self.finish(Outcome::Timeout);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if let Some((lazy, _)) = self.0.take() {
            let instruments = lazy.get();
            instruments.in_flight.decrement(1.0);
            instruments.outcomes[CANCELLED].increment(1);
        }
    }
}

/// One counter per value of one label (the reasons of a retry, the results of a cache), all
/// resolved at the first count.
#[derive(Clone)]
pub(crate) struct Counters(Arc<LazyCounters>);

struct LazyCounters {
    metric: &'static str,
    layer: LayerKind,
    name: NameLabel,
    /// `None`: a single counter with no label of its own.
    key: Option<&'static str>,
    values: &'static [&'static str],
    /// In the order of `values`.
    cell: OnceLock<Box<[Counter]>>,
}

impl LazyCounters {
    #[inline]
    fn get(&self) -> &[Counter] {
        self.cell.get_or_init(|| self.resolve())
    }

    #[cold]
    fn resolve(&self) -> Box<[Counter]> {
        describe();
        let (metric, layer, name) = (self.metric, self.layer.label(), &self.name);
        match self.key {
            None => Box::new([metrics::counter!(metric, "layer" => layer, "name" => name.clone())]),
            Some(key) => self
                .values
                .iter()
                .map(|&value| {
                    metrics::counter!(metric, "layer" => layer, "name" => name.clone(), key => value)
                })
                .collect(),
        }
    }
}

impl Counters {
    /// `metric{layer, name, key=value}` for every value in `values`.
    pub(crate) fn new(
        metric: &'static str,
        layer: LayerKind,
        name: &NameLabel,
        key: &'static str,
        values: &'static [&'static str],
    ) -> Self {
        Self::lazy(metric, layer, name, Some(key), values)
    }

    /// `metric{layer, name}`: a single counter, counted by [`count_one`](Self::count_one).
    pub(crate) fn one(metric: &'static str, layer: LayerKind, name: &NameLabel) -> Self {
        Self::lazy(metric, layer, name, None, &[""])
    }

    fn lazy(
        metric: &'static str,
        layer: LayerKind,
        name: &NameLabel,
        key: Option<&'static str>,
        values: &'static [&'static str],
    ) -> Self {
        Self(Arc::new(LazyCounters {
            metric,
            layer,
            name: name.clone(),
            key,
            values,
            cell: OnceLock::new(),
        }))
    }

    /// Registers the counters (at zero) if they are not yet.
    pub(crate) fn touch(&self) {
        self.0.get();
    }

    /// Adds one to a counter built by [`one`](Self::one) (or to the first value's).
    #[inline]
    pub(crate) fn count_one(&self) {
        if let Some(counter) = self.0.get().first() {
            counter.increment(1);
        }
    }

    /// Adds one to the counter for `value` (one of the values it was built with; another
    /// counts nothing, and a debug build panics).
    #[inline]
    pub(crate) fn count(&self, value: &'static str) {
        match self.0.values.iter().position(|known| *known == value) {
            Some(at) => self.0.get()[at].increment(1),
            None => debug_assert!(false, "{value} is not a label value of this counter"),
        }
    }
}

/// A duration histogram of one layer instance, resolved at the first sample.
#[derive(Clone)]
pub(crate) struct Durations(Arc<LazyDurations>);

struct LazyDurations {
    metric: &'static str,
    layer: LayerKind,
    name: NameLabel,
    cell: OnceLock<Histogram>,
}

impl Durations {
    pub(crate) fn new(metric: &'static str, layer: LayerKind, name: &NameLabel) -> Self {
        Self(Arc::new(LazyDurations {
            metric,
            layer,
            name: name.clone(),
            cell: OnceLock::new(),
        }))
    }

    /// Registers the histogram if it is not yet.
    pub(crate) fn touch(&self) {
        self.get();
    }

    /// Records the time from `started` to `ended`.
    #[inline]
    pub(crate) fn record_between(&self, started: Stamp, ended: Stamp) {
        self.get()
            .record(ended.0.saturating_duration_since(started.0).as_secs_f64());
    }

    #[inline]
    fn get(&self) -> &Histogram {
        let lazy = &*self.0;
        lazy.cell.get_or_init(|| {
            describe();
            metrics::histogram!(
                lazy.metric,
                "layer" => lazy.layer.label(),
                "name" => lazy.name.clone()
            )
        })
    }
}

/// When a timed span (an attempt) started; without the `metrics` feature, nothing (and no
/// clock read).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stamp(Instant);

impl Stamp {
    #[inline]
    pub(crate) fn now() -> Self {
        Self(Instant::now())
    }
}

/// The circuit breaker's `palisade_circuit_breaker_state` gauges (one per state, 1 for the
/// current one) and its transitions counter. The gauges are resolved at the breaker's first
/// call, rejection or transition, and set from its state then.
#[derive(Clone)]
pub(crate) struct BreakerStates(Arc<LazyStates>);

struct LazyStates {
    name: NameLabel,
    states: &'static [&'static str],
    cell: OnceLock<Box<[Gauge]>>,
}

impl BreakerStates {
    /// The gauges of the breaker `name`, one per value of `states` (none: only transitions
    /// are counted).
    pub(crate) fn new(name: &NameLabel, states: &'static [&'static str]) -> Self {
        Self(Arc::new(LazyStates {
            name: name.clone(),
            states,
            cell: OnceLock::new(),
        }))
    }

    /// Resolves the gauges if this is the first time, setting them to `current()`.
    #[inline]
    pub(crate) fn ensure(&self, current: impl FnOnce() -> &'static str) {
        if self.0.cell.get().is_none() {
            self.resolve(current());
        }
    }

    #[cold]
    fn resolve(&self, current: &'static str) -> &[Gauge] {
        let lazy = &*self.0;
        lazy.cell.get_or_init(|| {
            describe();
            lazy.states
                .iter()
                .map(|&state| {
                    let gauge = metrics::gauge!(
                        "palisade_circuit_breaker_state",
                        "layer" => LayerKind::CircuitBreaker.label(),
                        "name" => lazy.name.clone(),
                        "state" => state
                    );
                    gauge.set(if state == current { 1.0 } else { 0.0 });
                    gauge
                })
                .collect()
        })
    }

    /// The breaker moved from `from` to `to`; `now()` reads its state at this moment. The
    /// gauges are set from that read, not from `to`, and set again if the state moved while
    /// they were written: two transitions racing (a handle's `isolate` and a trip) may write
    /// their gauges in either order, and whichever writes last re-reads the state after
    /// writing, so exactly the current state is left at 1. Looks the transitions counter up in
    /// the recorder each time (transitions are rare, and most pairs never happen, so none is
    /// registered ahead).
    pub(crate) fn transition(
        &self,
        from: &'static str,
        to: &'static str,
        now: impl Fn() -> &'static str,
    ) {
        let lazy = &*self.0;
        let gauges = match lazy.cell.get() {
            Some(gauges) => gauges,
            None => self.resolve(from),
        };
        let mut current = now();
        // Bounded: a breaker flapping faster than this loop has its later transitions write
        // the gauges again anyway.
        for _ in 0..4 {
            for (state, gauge) in lazy.states.iter().zip(gauges.iter()) {
                gauge.set(if *state == current { 1.0 } else { 0.0 });
            }
            let after = now();
            if after == current {
                break;
            }
            current = after;
        }
        metrics::counter!(
            "palisade_circuit_breaker_transitions_total",
            "layer" => LayerKind::CircuitBreaker.label(),
            "name" => lazy.name.clone(),
            "from" => from,
            "to" => to
        )
        .increment(1);
    }
}

/// Handles print as their kind: what they point at is the recorder's business.
macro_rules! debug_as_name {
    ($($ty:ty),*) => {$(
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(stringify!($ty))
            }
        }
    )*};
}
debug_as_name!(Calls, Call, Counters, Durations, BreakerStates);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outcome_labels_follow_the_outcome_enum() {
        for (outcome, label) in [
            (Outcome::Success, "success"),
            (Outcome::Failure, "failure"),
            (Outcome::Ignored, "ignored"),
            (Outcome::Timeout, "timeout"),
        ] {
            assert_eq!(OUTCOMES[outcome as usize], label);
        }
        assert_eq!(OUTCOMES[REJECTED], "rejected");
        assert_eq!(OUTCOMES[CANCELLED], "cancelled");
    }
}
