//! Control: an operator's commands, and whether a keyed breaker may be forgotten.

use std::sync::Arc;
use std::time::Duration;

use super::super::handle::{State, TransitionReason};
use super::super::state::{Command, Snapshot, on_command};
use super::{Breaker, NANOS_PER_MS, Window};

impl<C> Breaker<C> {
    /// Moves to `target` (Isolated, ForcedClosed or Closed) from any state.
    pub(crate) fn force(self: &Arc<Self>, target: State)
    where
        C: Send + Sync + 'static,
    {
        let (command, reason) = match target {
            State::Isolated => (Command::Isolate, TransitionReason::Isolated),
            State::ForcedClosed => (Command::ForceClosed, TransitionReason::ForcedClosed),
            _ => (Command::Reset, TransitionReason::Reset),
        };
        if command == Command::Reset {
            // E1: the closed period starts with an empty window.
            self.reset_window();
        }
        let exchanged = self
            .state()
            .update(|snapshot| Some(on_command(snapshot, command)));
        if let Some((old, new)) = exchanged {
            self.on_transition(old, new, reason);
        }
    }

    /// Whether a keyed breaker left idle for at least `idle` may be forgotten (a key that comes
    /// back starts over with a fresh, closed breaker). The rule, by state:
    ///
    /// - Closed with nothing bad in its window: always, nothing is lost.
    /// - Closed with failures on record: once idle for the open duration plus the probe wait
    ///   (the time a trip would have taken to play out); the record is stale by then.
    /// - Open: once its open period *and* the probe wait after it have passed. Within that,
    ///   forgetting it would send the failing upstream full traffic again.
    /// - HalfOpen: once the probe deadline has passed (no probe is in flight, or the one in
    ///   flight is stuck). The open timer stamps that deadline when it half-opens.
    /// - Isolated, ForcedClosed: never, they are an operator's decision.
    ///
    /// Without the Open and HalfOpen rules a breaker that tripped and then lost its traffic
    /// would hold its slot forever, and a long uptime would fill `max_keys` with them.
    pub(crate) fn evictable(&self, idle: Duration) -> bool {
        match self.state().load() {
            Snapshot::Closed { failures, .. } => {
                let quiet = failures == 0
                    && match &self.window {
                        Window::Consecutive { .. } => true,
                        Window::Count(window) => window.holds_nothing_bad(),
                        Window::Time(window) => {
                            let counts = window.counts(self.clock().now());
                            counts.failures == 0 && counts.slow == 0
                        }
                    };
                quiet
                    || idle
                        >= self
                            .config
                            .open_base
                            .saturating_add(self.config.probe_max_wait)
            }
            Snapshot::Open { until_ms, .. } => {
                let now_ms = self.ms_after(self.clock().now(), Duration::ZERO);
                let wait_ms =
                    u64::try_from(self.config.probe_max_wait.as_millis()).unwrap_or(u64::MAX);
                now_ms >= until_ms.saturating_add(wait_ms)
            }
            Snapshot::HalfOpen { generation, .. } => {
                let now_ns = self.ticks(self.clock().now());
                self.probe_deadline
                    .of(generation)
                    .is_some_and(|ms| now_ns >= ms.saturating_mul(NANOS_PER_MS))
            }
            Snapshot::Isolated { .. } | Snapshot::ForcedClosed { .. } => false,
        }
    }
}
