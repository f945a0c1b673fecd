//! [`CircuitBreakerHandle`]: read and steer a breaker from outside the request path.

use std::fmt;
use std::sync::Arc;

use tokio::sync::broadcast;

use super::breaker::Breaker;
use super::state::Snapshot;
use super::window::Counts;

/// The state of a breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Calls pass; outcomes are counted.
    Closed,
    /// Calls are rejected until the open duration has passed.
    Open,
    /// A limited number of probe calls pass; their outcomes decide between Closed and Open.
    HalfOpen,
    /// Forced open through the handle: every call is rejected until reset.
    Isolated,
    /// Forced closed through the handle: every call passes and nothing is counted until reset.
    ForcedClosed,
}

impl State {
    /// The `state` label of the breaker's metrics.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) const fn label(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
            Self::Isolated => "isolated",
            Self::ForcedClosed => "forced_closed",
        }
    }
}

/// Every [`State::label`].
pub(crate) const STATE_LABELS: &[&str] =
    &["closed", "open", "half_open", "isolated", "forced_closed"];

/// The `reason` labels of the breaker's rejections: the refusing states.
pub(crate) const REJECTION_LABELS: &[&str] = &["open", "half_open", "isolated"];

impl From<Snapshot> for State {
    fn from(snapshot: Snapshot) -> Self {
        match snapshot {
            Snapshot::Closed { .. } => Self::Closed,
            Snapshot::Open { .. } => Self::Open,
            Snapshot::HalfOpen { .. } => Self::HalfOpen,
            Snapshot::Isolated { .. } => Self::Isolated,
            Snapshot::ForcedClosed { .. } => Self::ForcedClosed,
        }
    }
}

/// Why a breaker changed state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransitionReason {
    /// The failure rate over the window reached its threshold.
    FailureRate,
    /// The slow-call rate over the window reached its threshold.
    SlowCallRate,
    /// The consecutive-failure threshold was reached.
    ConsecutiveFailures,
    /// The open duration passed.
    OpenElapsed,
    /// Every permitted probe succeeded.
    ProbesSucceeded,
    /// A probe failed or was slow.
    ProbeFailed,
    /// Every probe was still in flight past the half-open maximum wait.
    ProbesTimedOut,
    /// The service asked callers to stay away (`Retry-After`).
    ServerDirected,
    /// [`CircuitBreakerHandle::isolate`].
    Isolated,
    /// [`CircuitBreakerHandle::force_closed`].
    ForcedClosed,
    /// [`CircuitBreakerHandle::reset`].
    Reset,
}

/// One state change, as sent to [`CircuitBreakerHandle::subscribe`]rs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Transition {
    /// The state left.
    pub from: State,
    /// The state entered.
    pub to: State,
    /// The generation entered (13 bits, wrapping): outcomes of calls admitted in an older one
    /// are ignored.
    pub generation: u16,
    /// Why.
    pub reason: TransitionReason,
    /// When it was applied, by the breaker's clock (tokio's by default, so paused time in
    /// tests).
    pub at: crate::clock::Instant,
    /// The breaker's [name](super::CircuitBreakerBuilder::name), if it has one (for a keyed
    /// breaker, the layer's: every key's breaker tells the same hook).
    pub breaker: Option<&'static str>,
}

/// A snapshot of a breaker's state and window, from [`CircuitBreakerHandle::metrics`].
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Metrics {
    /// The state.
    pub state: State,
    /// Calls in the window (0 in consecutive mode).
    pub calls: u64,
    /// Failed calls in the window.
    pub failures: u64,
    /// Slow calls in the window (failed or not).
    pub slow_calls: u64,
    /// `failures / calls`, if the window holds any call.
    pub failure_rate: Option<f64>,
    /// `slow_calls / calls`, if the window holds any call.
    pub slow_call_rate: Option<f64>,
    /// The current run of failures (consecutive mode, closed).
    pub consecutive_failures: u64,
    /// Probes admitted in the current half-open period.
    pub probes_admitted: u16,
    /// Probes that succeeded in the current half-open period.
    pub probes_succeeded: u16,
    /// State changes since the breaker was built.
    pub transitions: u64,
}

impl Metrics {
    pub(crate) fn new(
        state: State,
        counts: Counts,
        consecutive_failures: u64,
        probes_admitted: u16,
        probes_succeeded: u16,
        transitions: u64,
    ) -> Self {
        #[allow(clippy::cast_precision_loss)] // counts stay far below 2^52
        let rate = |n: u64| (counts.calls > 0).then(|| n as f64 / counts.calls as f64);
        Self {
            state,
            calls: counts.calls,
            failures: counts.failures,
            slow_calls: counts.slow,
            failure_rate: rate(counts.failures),
            slow_call_rate: rate(counts.slow),
            consecutive_failures,
            probes_admitted,
            probes_succeeded,
            transitions,
        }
    }
}

/// The operations a handle needs, without the classifier's type.
pub(crate) trait Control: Send + Sync {
    fn state(&self) -> State;
    fn metrics(&self) -> Metrics;
    fn force(self: Arc<Self>, target: State);
    fn subscribe(&self) -> broadcast::Receiver<Transition>;
    fn name(&self) -> Option<&str>;
}

impl<C: Send + Sync + 'static> Control for Breaker<C> {
    fn state(&self) -> State {
        self.current_state()
    }

    fn metrics(&self) -> Metrics {
        Breaker::metrics(self)
    }

    fn force(self: Arc<Self>, target: State) {
        Breaker::force(&self, target);
    }

    fn subscribe(&self) -> broadcast::Receiver<Transition> {
        Breaker::subscribe(self)
    }

    fn name(&self) -> Option<&str> {
        self.config().name.as_deref()
    }
}

/// Reads and steers one breaker: its state, a metrics snapshot, manual control, and a stream
/// of its transitions. Cheap to clone; every clone controls the same breaker.
///
/// ```
/// use palisade::circuit_breaker::{CircuitBreakerLayer, State};
///
/// let layer = CircuitBreakerLayer::new();
/// let handle = layer.handle();
/// assert_eq!(handle.state(), State::Closed);
/// handle.isolate();
/// assert_eq!(handle.state(), State::Isolated);
/// handle.reset();
/// assert_eq!(handle.state(), State::Closed);
/// ```
#[derive(Clone)]
pub struct CircuitBreakerHandle {
    breaker: Arc<dyn Control>,
}

impl CircuitBreakerHandle {
    pub(crate) fn new(breaker: Arc<dyn Control>) -> Self {
        Self { breaker }
    }

    /// The current state.
    #[must_use]
    pub fn state(&self) -> State {
        self.breaker.state()
    }

    /// The state and the window's counts and rates, read now.
    #[must_use]
    pub fn metrics(&self) -> Metrics {
        self.breaker.metrics()
    }

    /// Forces the breaker open: every call is rejected (with no `retry_after`) until
    /// [`reset`](Self::reset) or [`force_closed`](Self::force_closed). Takes effect at once for
    /// new calls; calls in flight finish, and their outcomes are ignored.
    pub fn isolate(&self) {
        Arc::clone(&self.breaker).force(State::Isolated);
    }

    /// Forces the breaker closed: every call passes and nothing is counted until
    /// [`reset`](Self::reset) or [`isolate`](Self::isolate).
    pub fn force_closed(&self) {
        Arc::clone(&self.breaker).force(State::ForcedClosed);
    }

    /// Back to Closed with an empty window and no history of re-opens, from any state.
    pub fn reset(&self) {
        Arc::clone(&self.breaker).force(State::Closed);
    }

    /// A stream of this breaker's transitions from now on. A receiver more than 64
    /// transitions behind gets `RecvError::Lagged` and skips ahead; sending costs nothing
    /// while nobody subscribes.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<Transition> {
        self.breaker.subscribe()
    }

    /// The breaker's name, if it was given one.
    #[must_use]
    pub fn name(&self) -> Option<&str> {
        self.breaker.name()
    }
}

impl fmt::Debug for CircuitBreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerHandle")
            .field("name", &self.name())
            .field("metrics", &self.metrics())
            .finish()
    }
}
