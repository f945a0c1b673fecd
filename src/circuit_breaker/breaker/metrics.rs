//! Metrics: what the handle reports, and the transition channel.

use tokio::sync::broadcast;

use super::super::handle::{Metrics, State, Transition};
use super::super::state::Snapshot;
use super::super::window::Counts;
use super::{Breaker, Window};
use crate::sync::Ordering;

impl<C> Breaker<C> {
    pub(crate) fn current_state(&self) -> State {
        State::from(self.state().load())
    }

    pub(crate) fn metrics(&self) -> Metrics {
        let snapshot = self.state().load();
        let counts = match &self.window {
            Window::Consecutive { .. } => Counts::default(),
            Window::Count(window) => window.counts(),
            Window::Time(window) => window.counts(self.clock().now()),
        };
        let (consecutive_failures, probes_admitted, probes_succeeded) = match snapshot {
            Snapshot::Closed { failures, .. } => (failures, 0, 0),
            Snapshot::HalfOpen {
                admitted,
                succeeded,
                ..
            } => (0, admitted, succeeded),
            _ => (0, 0, 0),
        };
        Metrics::new(
            State::from(snapshot),
            counts,
            consecutive_failures,
            probes_admitted,
            probes_succeeded,
            // Relaxed: a statistic.
            self.transitions.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Transition> {
        self.events.subscribe()
    }
}
