//! [`CircuitBreakerLayer`].

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::CircuitBreaker;
use super::breaker::Breaker;
use super::config::CircuitBreakerBuilder;
use super::handle::CircuitBreakerHandle;
use crate::classify::DefaultClassifier;

/// Applies a [`CircuitBreaker`]: see the [module docs](crate::circuit_breaker).
///
/// # Clone
///
/// The breaker is created once, in the layer value. Clones of the layer, every service it
/// builds, their clones, and every later [`Layer::layer`] call (axum calls it again on some
/// paths) share that one breaker, so it trips on the combined traffic.
#[must_use]
pub struct CircuitBreakerLayer<C = DefaultClassifier> {
    breaker: Arc<Breaker<C>>,
}

impl CircuitBreakerLayer {
    /// A breaker with every default: a count window of the last 100 calls, opening at a 50 %
    /// failure rate once it holds 100 calls, open for 5 s, one half-open probe.
    pub fn new() -> Self {
        match CircuitBreakerBuilder::new().build() {
            Ok(layer) => layer,
            // The defaults are valid (a test checks it); never reached.
            Err(error) => unreachable!("invalid default configuration: {error}"),
        }
    }

    /// Starts a configuration; finish it with [`CircuitBreakerBuilder::build`].
    pub fn builder() -> CircuitBreakerBuilder {
        CircuitBreakerBuilder::new()
    }

    /// Starts a configuration for a breaker around an HTTP client or handler: the
    /// [`StatusClassifier`](crate::classify::StatusClassifier), so a 5xx or a `429` counts as
    /// a failure. With [`builder`](Self::builder)'s default classifier only an `Err` does, and
    /// an HTTP service answers a failing upstream with `Ok(503)`: a breaker built that way
    /// around one never opens.
    ///
    /// ```
    /// use palisade::circuit_breaker::CircuitBreakerLayer;
    ///
    /// let breaker = CircuitBreakerLayer::http_builder().name("payments").build().unwrap();
    /// # let _ = breaker;
    /// ```
    #[cfg(feature = "http")]
    pub fn http_builder() -> CircuitBreakerBuilder<crate::classify::StatusClassifier> {
        CircuitBreakerBuilder::new().classifier(crate::classify::StatusClassifier::new())
    }
}

impl Default for CircuitBreakerLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> CircuitBreakerLayer<C> {
    pub(crate) fn from_breaker(breaker: Arc<Breaker<C>>) -> Self {
        Self { breaker }
    }

    #[cfg(test)]
    pub(crate) fn breaker_for_tests(&self) -> Arc<Breaker<C>> {
        Arc::clone(&self.breaker)
    }
}

impl<C: Send + Sync + 'static> CircuitBreakerLayer<C> {
    /// A handle on this layer's breaker: read its state and metrics, force it open or closed,
    /// reset it, subscribe to its transitions.
    #[must_use]
    pub fn handle(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle::new(self.breaker.clone())
    }
}

impl<C> Clone for CircuitBreakerLayer<C> {
    fn clone(&self) -> Self {
        Self {
            breaker: Arc::clone(&self.breaker),
        }
    }
}

impl<S, C> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::new(inner, Arc::clone(&self.breaker))
    }
}

impl<C: Send + Sync + 'static> fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("breaker", &self.handle())
            .finish()
    }
}
