//! Recording: what a finished call's outcome does to the window and the state word. A success
//! on a healthy breaker writes nothing.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use super::super::config::{MIN_SERVER_PUSHBACK, Trip};
use super::super::handle::TransitionReason;
use super::super::state::{
    Snapshot, is_closed_in, on_consecutive_failure, on_consecutive_success, on_probe_failure,
    on_probe_released, on_probe_success, on_server_pushback, on_window_trip,
};
use super::super::window::Counts;
use super::{Breaker, Permit, Window};
use crate::classify::{Classify, Outcome};
use crate::clock::Instant;
use crate::sync::{Ordering, fence};

impl<C> Breaker<C> {
    /// Records the outcome of a call admitted with `permit`, and returns it.
    #[inline]
    pub(crate) fn record<Res, E>(
        self: &Arc<Self>,
        permit: Permit,
        started: Option<Instant>,
        result: &Result<Res, E>,
    ) -> Outcome
    where
        C: Classify<Res, E> + Send + Sync + 'static,
    {
        let outcome = self.classifier.classify(result);
        // The hot path: an untimed success of a closed call that changes nothing (a clean, full
        // ring; or no run of failures to end). No write, no clock.
        if let (Outcome::Success, Permit::Closed { generation }, None, false) =
            (outcome, permit, started, self.config.server_directed)
        {
            let unchanged = match &self.window {
                Window::Count(window) => window.success_changes_nothing(),
                Window::Consecutive { .. } => self.state().is_closed_without_failures(generation),
                Window::Time(window) => {
                    // Every success is counted in its bucket, but needs nothing else unless the
                    // window may hold failures (then it can bring it to minimum_calls).
                    if self.state().closed_generation() != Some(generation) {
                        return outcome;
                    }
                    let now = self.clock().now();
                    if window.record(now, false, false) {
                        // SeqCst fence: see `record_closed`.
                        fence(Ordering::SeqCst);
                        self.evaluate(generation, window.counts(now), Some(now));
                    }
                    return outcome;
                }
            };
            if unchanged {
                return outcome;
            }
        }
        if self.config.server_directed {
            if let Some(pushback) = self.classifier.pushback(result) {
                if pushback >= MIN_SERVER_PUSHBACK {
                    self.open_by_server(pushback.min(self.config.max_pushback));
                }
            }
        }
        self.record_outcome(permit, started, outcome);
        outcome
    }

    fn record_outcome(self: &Arc<Self>, permit: Permit, started: Option<Instant>, outcome: Outcome)
    where
        C: Send + Sync + 'static,
    {
        if outcome == Outcome::Ignore {
            self.release(permit);
            return;
        }
        let needs_clock = started.is_some()
            || (matches!(self.window, Window::Time(_)) && permit != Permit::Untracked);
        let now = needs_clock.then(|| self.clock().now());
        let slow = match (started, now, self.config.slow_call) {
            (Some(started), Some(now), Some(threshold)) => {
                now.saturating_duration_since(started) > threshold
            }
            _ => false,
        };
        let failed = outcome == Outcome::Failure;
        match permit {
            Permit::Untracked => {}
            Permit::Closed { generation } => self.record_closed(generation, failed, slow, now),
            Permit::Probe { generation } => self.record_probe(generation, failed || slow),
        }
    }

    fn record_closed(
        self: &Arc<Self>,
        generation: u16,
        failed: bool,
        slow: bool,
        now: Option<Instant>,
    ) where
        C: Send + Sync + 'static,
    {
        match &self.window {
            Window::Consecutive { threshold } => {
                if !failed {
                    // A success writes only when it ends a run of failures.
                    if on_consecutive_success(self.state().load(), generation).is_some() {
                        self.state()
                            .update(|snapshot| on_consecutive_success(snapshot, generation));
                    }
                    return;
                }
                let open = self.open_period_at(now.unwrap_or_else(|| self.clock().now()));
                let exchanged = self.state().update(|snapshot| {
                    on_consecutive_failure(snapshot, generation, *threshold, |reopens| {
                        open.period(reopens)
                    })
                });
                if let Some((old, new @ Snapshot::Open { .. })) = exchanged {
                    self.on_transition(old, new, TransitionReason::ConsecutiveFailures);
                }
            }
            Window::Count(window) => {
                if !is_closed_in(self.state().load(), generation) {
                    return;
                }
                if window.record(failed, slow, self.minimum_calls()) {
                    // SeqCst fence: two outcomes recorded at once each write their slot, then
                    // read the whole window. Without a total order between those writes and
                    // reads each thread may miss the other's write (the store-buffer pattern)
                    // and neither would trip; with it, the thread whose fence comes second sees
                    // both. Only evaluated records pay for it, never a plain success.
                    fence(Ordering::SeqCst);
                    self.evaluate(generation, window.counts(), now);
                }
            }
            Window::Time(window) => {
                if !is_closed_in(self.state().load(), generation) {
                    return;
                }
                let now = now.unwrap_or_else(|| self.clock().now());
                if window.record(now, failed, slow) {
                    // SeqCst fence: as for the count window above.
                    fence(Ordering::SeqCst);
                    self.evaluate(generation, window.counts(now), Some(now));
                }
            }
        }
    }

    fn minimum_calls(&self) -> u64 {
        match self.config.trip {
            Trip::Rate { minimum_calls, .. } => minimum_calls,
            Trip::Consecutive { .. } => u64::MAX,
        }
    }

    /// Opens the breaker of `generation` if the window's rates reach their thresholds.
    fn evaluate(self: &Arc<Self>, generation: u16, counts: Counts, now: Option<Instant>)
    where
        C: Send + Sync + 'static,
    {
        let Trip::Rate {
            failure_rate,
            slow_rate,
            minimum_calls,
            ..
        } = self.config.trip
        else {
            return;
        };
        if counts.calls == 0 || counts.calls < minimum_calls {
            return;
        }
        #[allow(clippy::cast_precision_loss)] // counts stay far below 2^52
        let rate = |n: u64| n as f64 / counts.calls as f64;
        let reason = if rate(counts.failures) >= failure_rate.get() {
            TransitionReason::FailureRate
        } else if slow_rate.is_some_and(|threshold| rate(counts.slow) >= threshold.get()) {
            TransitionReason::SlowCallRate
        } else {
            return;
        };
        let open = self.open_period_at(now.unwrap_or_else(|| self.clock().now()));
        let exchanged = self.state().update(|snapshot| {
            on_window_trip(snapshot, generation, |reopens| open.period(reopens))
        });
        if let Some((old, new)) = exchanged {
            self.on_transition(old, new, reason);
        }
    }

    fn record_probe(self: &Arc<Self>, generation: u16, failed: bool)
    where
        C: Send + Sync + 'static,
    {
        if failed {
            let open = self.open_period_at(self.clock().now());
            let exchanged = self.state().update(|snapshot| {
                on_probe_failure(snapshot, generation, |reopens| open.period(reopens))
            });
            if let Some((old, new)) = exchanged {
                self.on_transition(old, new, TransitionReason::ProbeFailed);
            }
            return;
        }
        let window_reset = Cell::new(false);
        let exchanged = self.state().update_preparing(
            |snapshot| on_probe_success(snapshot, generation, self.config.probes),
            |new| {
                // E1: this attempt would close the breaker, so empty the window first (once),
                // and the closed period starts clean whichever concurrent success closes it.
                if matches!(new, Snapshot::Closed { .. }) && !window_reset.replace(true) {
                    self.reset_window();
                }
            },
        );
        if let Some((old, new @ Snapshot::Closed { .. })) = exchanged {
            self.on_transition(old, new, TransitionReason::ProbesSucceeded);
        }
    }

    /// Gives back the permit of a call that will record nothing: its outcome was ignored, or
    /// its future was dropped before it finished.
    pub(crate) fn release(&self, permit: Permit) {
        if let Permit::Probe { generation } = permit {
            self.state()
                .update(|snapshot| on_probe_released(snapshot, generation));
        }
    }

    /// Opens the breaker for `pushback`, as the server asked.
    pub(super) fn open_by_server(self: &Arc<Self>, pushback: Duration)
    where
        C: Send + Sync + 'static,
    {
        let now = self.clock().now();
        let until_ms = self.ms_after(now, pushback.max(Duration::from_millis(1)));
        let armed = self.can_arm();
        let exchanged = self
            .state()
            .update(|snapshot| on_server_pushback(snapshot, until_ms, armed));
        if let Some((old, new)) = exchanged {
            if !matches!(old, Snapshot::Open { .. }) {
                self.on_transition(old, new, TransitionReason::ServerDirected);
            }
        }
    }

    /// Empties the window (E1 under the state machine's invariants).
    pub(super) fn reset_window(&self) {
        match &self.window {
            Window::Consecutive { .. } => {}
            Window::Count(window) => window.reset(),
            Window::Time(window) => window.reset(),
        }
    }
}
