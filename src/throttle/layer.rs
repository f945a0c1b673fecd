//! [`ThrottleLayer`].

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::Throttle;
use super::config::ThrottleBuilder;
use super::gate::Gate;
use super::handle::ThrottleHandle;
use crate::classify::DefaultClassifier;

/// Applies a [`Throttle`]: see the [module docs](crate::throttle).
///
/// # Clone
///
/// The throttle's state is created once, in the layer value. Clones of the layer, every service
/// it builds, their clones, and every later [`Layer::layer`] call share it, so it judges the
/// combined traffic.
#[must_use]
pub struct ThrottleLayer<C = DefaultClassifier> {
    gate: Arc<Gate<C>>,
}

impl ThrottleLayer {
    /// A throttle with every default: `K = 2` over the last 1000 calls, shedding all but probes
    /// after 20 consecutive failures, a probe every 250 ms (plus up to 20 % jitter).
    pub fn new() -> Self {
        match ThrottleBuilder::new().build() {
            Ok(layer) => layer,
            // The defaults are valid (a test checks it); never reached.
            Err(error) => unreachable!("invalid default configuration: {error}"),
        }
    }

    /// Starts a configuration; finish it with [`ThrottleBuilder::build`].
    pub fn builder() -> ThrottleBuilder {
        ThrottleBuilder::new()
    }

    /// Starts a configuration for a throttle around an HTTP client: the
    /// [`StatusClassifier`](crate::classify::StatusClassifier), so a 5xx or a `429` counts as
    /// a failure (with [`builder`](Self::builder)'s default classifier only an `Err` does).
    #[cfg(feature = "http")]
    pub fn http_builder() -> ThrottleBuilder<crate::classify::StatusClassifier> {
        ThrottleBuilder::new().classifier(crate::classify::StatusClassifier::new())
    }
}

impl Default for ThrottleLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> ThrottleLayer<C> {
    pub(crate) fn from_gate(gate: Arc<Gate<C>>) -> Self {
        Self { gate }
    }

    #[cfg(test)]
    pub(crate) fn gate_for_tests(&self) -> Arc<Gate<C>> {
        Arc::clone(&self.gate)
    }
}

impl<C: Send + Sync + 'static> ThrottleLayer<C> {
    /// A handle on this layer's throttle: read its phase and metrics, reset it.
    #[must_use]
    pub fn handle(&self) -> ThrottleHandle {
        ThrottleHandle::new(self.gate.clone())
    }
}

impl<C> Clone for ThrottleLayer<C> {
    fn clone(&self) -> Self {
        Self {
            gate: Arc::clone(&self.gate),
        }
    }
}

impl<S, C> Layer<S> for ThrottleLayer<C> {
    type Service = Throttle<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Throttle::new(inner, Arc::clone(&self.gate))
    }
}

impl<C: Send + Sync + 'static> fmt::Debug for ThrottleLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThrottleLayer")
            .field("throttle", &self.handle())
            .finish()
    }
}
