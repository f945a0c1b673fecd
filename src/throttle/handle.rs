//! [`ThrottleHandle`]: read and reset a throttle from outside the request path.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::gate::Gate;
use super::state::Snapshot;

/// The phase of a throttle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ThrottleState {
    /// Calls pass, each shed with the current rejection probability (zero while at least
    /// `1/K` of the window's calls succeed).
    Throttling,
    /// The dependency looks down: only one probe per probe interval is sent, every other call
    /// is rejected.
    Shedding,
}

impl From<Snapshot> for ThrottleState {
    fn from(snapshot: Snapshot) -> Self {
        match snapshot {
            Snapshot::Throttling { .. } => Self::Throttling,
            Snapshot::Shedding { .. } => Self::Shedding,
        }
    }
}

/// Why a throttle changed phase (the `reason` of its `tracing` events).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransitionReason {
    /// A run of consecutive failures too long to be chance: Throttling to Shedding.
    ConsecutiveFailures,
    /// A probe succeeded: Shedding to Throttling, with an empty window.
    ProbeSucceeded,
    /// [`ThrottleHandle::reset`].
    Reset,
}

/// A snapshot of a throttle, from [`ThrottleHandle::metrics`].
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Metrics {
    /// The phase.
    pub state: ThrottleState,
    /// Outcomes in the window.
    pub calls: u64,
    /// Failed (or slow) outcomes in the window.
    pub failures: u64,
    /// The share of calls rejected now: the formula over the window while Throttling (zero
    /// below `minimum_calls`), 1 while Shedding (but for the probes).
    pub rejection_probability: f64,
    /// The current run of failures (Throttling).
    pub consecutive_failures: u64,
    /// Time until the next probe slot (Shedding).
    pub next_probe_in: Option<Duration>,
    /// Calls rejected since the throttle was built.
    pub rejected: u64,
    /// Changes of phase and resets since the throttle was built.
    pub transitions: u64,
}

/// The operations a handle needs, without the classifier's type.
pub(crate) trait Control: Send + Sync {
    fn state(&self) -> ThrottleState;
    fn metrics(&self) -> Metrics;
    fn reset(&self);
    fn name(&self) -> Option<&str>;
}

impl<C: Send + Sync> Control for Gate<C> {
    fn state(&self) -> ThrottleState {
        self.current_state()
    }

    fn metrics(&self) -> Metrics {
        Gate::metrics(self)
    }

    fn reset(&self) {
        Gate::reset(self);
    }

    fn name(&self) -> Option<&str> {
        self.config().name.as_deref()
    }
}

/// Reads and resets one throttle. Cheap to clone; every clone reaches the same throttle.
///
/// ```
/// use palisade::throttle::{ThrottleLayer, ThrottleState};
///
/// let layer = ThrottleLayer::new();
/// let handle = layer.handle();
/// assert_eq!(handle.state(), ThrottleState::Throttling);
/// assert_eq!(handle.metrics().rejection_probability, 0.0);
/// ```
#[derive(Clone)]
pub struct ThrottleHandle {
    gate: Arc<dyn Control>,
}

impl ThrottleHandle {
    pub(crate) fn new(gate: Arc<dyn Control>) -> Self {
        Self { gate }
    }

    /// The current phase.
    #[must_use]
    pub fn state(&self) -> ThrottleState {
        self.gate.state()
    }

    /// A snapshot of the phase, the window and the counters.
    #[must_use]
    pub fn metrics(&self) -> Metrics {
        self.gate.metrics()
    }

    /// Back to Throttling with an empty window, from any phase: for an operator who knows the
    /// dependency is healthy again.
    pub fn reset(&self) {
        self.gate.reset();
    }

    /// The name given with [`ThrottleBuilder::name`](super::ThrottleBuilder::name).
    #[must_use]
    pub fn name(&self) -> Option<&str> {
        self.gate.name()
    }
}

impl fmt::Debug for ThrottleHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThrottleHandle")
            .field("name", &self.name())
            .field("metrics", &self.metrics())
            .finish()
    }
}
