//! The shared gate: the state word, the window of outcomes, and the decisions' side effects.
//!
//! One `Gate` lives behind an `Arc` in the layer; every service and every response future holds
//! a clone. Admission ([`Gate::admit`]) is two loads on the healthy path (the state word and the
//! window's failure count); recording ([`Gate::record`]) writes only when the outcome changes
//! something. The decisions themselves are the pure functions of `state`.

use super::config::Config;
use super::error::Throttled;
use super::handle::{Metrics, ThrottleState, TransitionReason};
use super::state::{AtomicState, Snapshot, rejection_probability, run_to_shed};
use crate::classify::{Classify, Outcome};
use crate::clock::{Epoch, Instant};
use crate::count_window::{CountWindow, Counts};
use crate::random::Random;
use crate::ratio::scale;
use crate::sync::{AtomicU64, Ordering};

const NANOS_PER_MS: u64 = 1_000_000;

/// What an admitted call carries back to record its outcome: the generation it was admitted
/// in, and whether it is a probe.
///
/// One `u32` (bit 16: probe; bits 0–15: the generation), written and read whole: as an enum of
/// a tag and a generation, the admission's narrow stores were read back by one wider load that
/// waited for them to retire (a store-forwarding stall measured at about 4 ns a call).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Permit(u32);

impl Permit {
    const PROBE: u32 = 1 << 16;
    /// No permit: the one outcome has been recorded.
    pub(crate) const SPENT: Self = Self(u32::MAX);

    /// Admitted while Throttling in `generation`.
    #[inline]
    pub(crate) fn throttling(generation: u16) -> Self {
        Self(u32::from(generation))
    }

    /// A probe of the Shedding `generation`.
    #[inline]
    pub(crate) fn probe(generation: u16) -> Self {
        Self(Self::PROBE | u32::from(generation))
    }

    #[inline]
    pub(crate) fn is_probe(self) -> bool {
        self.0 & Self::PROBE != 0
    }

    #[allow(clippy::cast_possible_truncation)] // the low 16 bits
    #[inline]
    pub(crate) fn generation(self) -> u16 {
        self.0 as u16
    }
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::SPENT => f.write_str("Permit::Spent"),
            permit if permit.is_probe() => write!(f, "Permit::Probe({})", permit.generation()),
            permit => write!(f, "Permit::Throttling({})", permit.generation()),
        }
    }
}

/// The decision for one call.
#[derive(Debug)]
pub(crate) enum Admission {
    Admitted(Permit),
    Rejected(Throttled),
}

/// Keeps the state word on a cache line of its own, away from the `Arc`'s reference counts
/// that every call writes, so the healthy path's hottest word is only ever read.
#[repr(align(128))]
struct CacheLine<T>(T);

pub(crate) struct Gate<C> {
    state: CacheLine<AtomicState>,
    window: CountWindow,
    config: Config,
    epoch: Epoch,
    /// The epoch in nanoseconds since the clock's process-wide anchor (`u64::MAX`: before it),
    /// so a rejection names its probe slot in one word.
    anchored: u64,
    /// Seeded draws, if a seed was set; otherwise each thread's own.
    random: Option<Random>,
    /// Statistics, on a line of their own: every rejection writes one, and the fields beside
    /// them are read by every admission.
    stats: CacheLine<Stats>,
    pub(crate) classifier: C,
}

struct Stats {
    /// Calls rejected since the throttle was built.
    rejected: AtomicU64,
    /// Changes of phase and resets since the throttle was built.
    transitions: AtomicU64,
}

impl<C> Gate<C> {
    pub(crate) fn new(config: Config, classifier: C) -> Self {
        let base = config.clock.now();
        let anchored = base
            .checked_duration_since(crate::clock::anchor())
            .map_or(u64::MAX, Epoch::ticks_of);
        Self {
            state: CacheLine(AtomicState::new(Snapshot::INITIAL)),
            window: CountWindow::new(config.window),
            epoch: Epoch::new(base),
            anchored,
            random: config.seed.map(|seed| Random::new(Some(seed))),
            stats: CacheLine(Stats {
                rejected: AtomicU64::new(0),
                transitions: AtomicU64::new(0),
            }),
            classifier,
            config,
        }
    }

    fn state(&self) -> &AtomicState {
        &self.state.0
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// Whether calls are timed (slow-call detection).
    #[inline]
    pub(crate) fn times_calls(&self) -> bool {
        self.config.slow_call.is_some()
    }

    pub(crate) fn now(&self) -> Instant {
        self.config.clock.now()
    }

    fn draw(&self) -> f64 {
        crate::random::draw(self.random.as_ref())
    }

    /// `now` in whole ms since the epoch, rounded down (so `now_ms >= slot` exactly when the
    /// slot's instant has come).
    fn now_ms(&self, now: Instant) -> u64 {
        self.epoch.ticks(now) / NANOS_PER_MS
    }

    /// The next probe slot after `now`: the probe interval lengthened by the jitter draw, in
    /// whole ms since the epoch, rounded up (the state word caps it at the last instant a
    /// clock can reach).
    fn next_slot_ms(&self, now: Instant) -> u64 {
        let mut interval = self.config.probe_interval;
        if self.config.probe_jitter > 0.0 {
            interval = scale(interval, 1.0 + self.config.probe_jitter * self.draw());
        }
        self.epoch
            .ticks(now)
            .saturating_add(Epoch::ticks_of(interval))
            .div_ceil(NANOS_PER_MS)
    }

    /// `ms` since the epoch as nanoseconds since the clock's anchor, if it can be named.
    fn since_anchor(&self, ms: u64) -> Option<u64> {
        (self.anchored != u64::MAX).then(|| {
            self.anchored
                .saturating_add(ms.saturating_mul(NANOS_PER_MS))
        })
    }

    /// Tells the rejection hook, if one is set, about `rejection`.
    #[inline]
    pub(crate) fn rejected(&self, rejection: &Throttled) {
        self.config.calls.rejected("throttled");
        if self.config.on_rejected.is_set() {
            self.tell_rejected(rejection);
        }
    }

    #[cold]
    #[inline(never)]
    fn tell_rejected(&self, rejection: &Throttled) {
        self.config.on_rejected.emit(rejection);
    }

    /// Admits or rejects one call.
    ///
    /// Always inlined, so the healthy decision (two loads) stays in the caller's registers.
    #[inline(always)]
    pub(crate) fn admit(&self) -> Admission {
        if let Some(generation) = self.state().throttling_generation() {
            if self.window.holds_nothing_bad() {
                return Admission::Admitted(Permit::throttling(generation));
            }
            return self.admit_throttling(generation);
        }
        self.admit_shedding()
    }

    /// Admission while Throttling with failures in the window: the formula and a draw.
    #[cold]
    fn admit_throttling(&self, generation: u16) -> Admission {
        let p = self.rejection_probability();
        if p > 0.0 && self.draw() < p {
            // Relaxed: a statistic.
            self.stats.0.rejected.fetch_add(1, Ordering::Relaxed);
            tracing::trace!(probability = p, "call shed by the throttle");
            return Admission::Rejected(Throttled::shed(p));
        }
        Admission::Admitted(Permit::throttling(generation))
    }

    /// The window's calls and failures: two loads, or (while a racing record or reset has the
    /// failure count out of range) a count of its bits.
    fn counts(&self) -> Counts {
        match self.window.bad_count() {
            Some(failures) => {
                let calls = self.window.calls();
                Counts {
                    calls,
                    failures: failures.min(calls),
                    slow: 0,
                }
            }
            None => self.window.counts(),
        }
    }

    /// The current rejection probability while Throttling (zero below minimum_calls).
    fn rejection_probability(&self) -> f64 {
        let counts = self.counts();
        if counts.calls < self.config.minimum_calls {
            return 0.0;
        }
        rejection_probability(
            counts.calls,
            counts.calls.saturating_sub(counts.failures),
            self.config.multiplier,
        )
    }

    /// Admission while Shedding: take the probe slot if it has come, else reject.
    #[cold]
    fn admit_shedding(&self) -> Admission {
        let now = self.now();
        let now_ms = self.now_ms(now);
        // Drawn once, and only by a call that takes the slot.
        let mut next = None;
        let taken = self.state().update(|s| {
            s.take_probe_slot(now_ms, || {
                *next.get_or_insert_with(|| self.next_slot_ms(now))
            })
        });
        match taken {
            Ok((old, new)) => {
                tracing::debug!(
                    throttle = self.config.name.as_deref().unwrap_or(""),
                    generation = old.generation(),
                    ?new,
                    "throttle sends a probe"
                );
                Admission::Admitted(Permit::probe(old.generation()))
            }
            Err(snapshot @ Snapshot::Shedding { next_probe_ms, .. }) => {
                // Relaxed: a statistic.
                self.stats.0.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::trace!("call rejected: the throttle is shedding");
                // A close in progress names no slot: it ends in moments.
                let slot = (!snapshot.is_closing())
                    .then(|| self.since_anchor(next_probe_ms))
                    .flatten();
                Admission::Rejected(Throttled::shedding(slot))
            }
            // A probe succeeded meanwhile: decide as Throttling.
            Err(Snapshot::Throttling { generation, .. }) => self.admit_throttling(generation),
        }
    }

    /// Records the outcome of a call admitted with `permit`, started at `started` (when
    /// calls are timed). For a probe that failed, returns the rejection its caller gets in
    /// place of an error (see [`ThrottleError::ProbeFailed`](super::ThrottleError::ProbeFailed)).
    #[inline]
    #[cfg(any(test, palisade_loom))]
    pub(crate) fn record<Res, E>(
        &self,
        permit: Permit,
        started: Option<Instant>,
        result: &Result<Res, E>,
    ) -> Option<Throttled>
    where
        C: Classify<Res, E>,
    {
        self.record_classified(permit, started, result).1
    }

    /// [`record`](Self::record), also returning how the classifier judged the result.
    #[inline]
    pub(crate) fn record_classified<Res, E>(
        &self,
        permit: Permit,
        started: Option<Instant>,
        result: &Result<Res, E>,
    ) -> (Outcome, Option<Throttled>)
    where
        C: Classify<Res, E>,
    {
        let outcome = self.classifier.classify(result);
        // The hot path: an untimed success into a full, clean window changes nothing: the
        // window holds no failure, so there is no run of failures to end either (invariant 6).
        // No write, no clock, and not even the state word is read.
        if outcome == Outcome::Success
            && started.is_none()
            && !permit.is_probe()
            && self.window.success_changes_nothing()
        {
            return (outcome, None);
        }
        (outcome, self.record_outcome(permit, started, outcome))
    }

    #[cold]
    fn record_outcome(
        &self,
        permit: Permit,
        started: Option<Instant>,
        outcome: Outcome,
    ) -> Option<Throttled> {
        if outcome == Outcome::Ignore {
            return None;
        }
        let slow = match (started, self.config.slow_call) {
            (Some(started), Some(threshold)) => {
                self.now().saturating_duration_since(started) > threshold
            }
            _ => false,
        };
        let failed = outcome == Outcome::Failure || slow;
        if !permit.is_probe() {
            self.record_throttling(permit.generation(), failed);
            None
        } else if !failed {
            self.probe_succeeded(permit.generation());
            None
        } else {
            // A failed probe changes nothing (its admission already set the next slot), but
            // its caller learns the dependency is still down, and when the next probe goes.
            Some(self.shedding_rejection())
        }
    }

    /// The rejection of a call refused now, while Shedding: naming the next probe slot, or none
    /// if the throttle is no longer Shedding or its close is in progress.
    fn shedding_rejection(&self) -> Throttled {
        let slot = match self.state().load() {
            snapshot @ Snapshot::Shedding { next_probe_ms, .. } if !snapshot.is_closing() => {
                self.since_anchor(next_probe_ms)
            }
            _ => None,
        };
        Throttled::shedding(slot)
    }

    fn record_throttling(&self, generation: u16, failed: bool) {
        if self.state().throttling_generation() != Some(generation) {
            // The throttle has moved on since this call was admitted.
            return;
        }
        self.window.record(failed, false, u64::MAX);
        if !failed {
            // Writes only when it ends a run of failures.
            let _ = self.state().update(|s| s.after_success(generation));
            return;
        }
        let counts = self.counts();
        let accepts = counts.calls.saturating_sub(counts.failures);
        let config = &self.config;
        let threshold = |run| {
            run_to_shed(
                config.shed_after,
                u64::from(config.window),
                config.minimum_calls,
                counts.calls,
                accepts,
                run,
            )
        };
        // The clock is read only by the failure that starts Shedding.
        let mut slot = None;
        let exchanged = self.state().update(|s| {
            s.after_failure(generation, threshold, || {
                *slot.get_or_insert_with(|| self.next_slot_ms(self.now()))
            })
        });
        if let Ok((old, new @ Snapshot::Shedding { .. })) = exchanged {
            self.on_transition(old, new, TransitionReason::ConsecutiveFailures);
        }
    }

    fn probe_succeeded(&self, generation: u16) {
        // Invariant 5: claim the close, so that only this probe empties the window; the new
        // generation then starts from it, published to its callers by the exchange's Release.
        if self.state().update(|s| s.claim_close(generation)).is_err() {
            return;
        }
        self.window.reset();
        if let Ok((old, new)) = self.state().update(|s| s.after_probe_success(generation)) {
            self.on_transition(old, new, TransitionReason::ProbeSucceeded);
        }
    }

    /// Back to Throttling with an empty window, from any state.
    pub(crate) fn reset(&self) {
        self.window.reset();
        if let Ok((old, new)) = self.state().update(|s| Some(s.reset())) {
            self.on_transition(old, new, TransitionReason::Reset);
        }
    }

    /// The side effects of one successful exchange: count it and log it.
    fn on_transition(&self, old: Snapshot, new: Snapshot, reason: TransitionReason) {
        // Relaxed: a statistic.
        self.stats.0.transitions.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            throttle = self.config.name.as_deref().unwrap_or(""),
            from = ?ThrottleState::from(old),
            to = ?ThrottleState::from(new),
            generation = new.generation(),
            ?reason,
            "throttle transition"
        );
    }

    pub(crate) fn current_state(&self) -> ThrottleState {
        ThrottleState::from(self.state().load())
    }

    pub(crate) fn metrics(&self) -> Metrics {
        let snapshot = self.state().load();
        let counts = self.window.counts();
        let (consecutive_failures, rejection_probability, next_probe_in) = match snapshot {
            Snapshot::Throttling { failures, .. } => (failures, self.rejection_probability(), None),
            snapshot @ Snapshot::Shedding { next_probe_ms, .. } => {
                let at = self
                    .epoch
                    .instant(next_probe_ms.saturating_mul(NANOS_PER_MS));
                let next =
                    (!snapshot.is_closing()).then(|| at.saturating_duration_since(self.now()));
                (0, 1.0, next)
            }
        };
        Metrics {
            state: ThrottleState::from(snapshot),
            calls: counts.calls,
            failures: counts.failures,
            rejection_probability,
            consecutive_failures,
            next_probe_in,
            // Relaxed: statistics.
            rejected: self.stats.0.rejected.load(Ordering::Relaxed),
            transitions: self.stats.0.transitions.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
impl<C> Gate<C> {
    pub(crate) fn snapshot_for_tests(&self) -> Snapshot {
        self.state().load()
    }
}
