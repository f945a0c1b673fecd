//! [`ServiceBuilderExt`]: palisade's layers as methods of tower's
//! [`ServiceBuilder`], as tower-http does for its own.
//!
//! ```
//! use std::time::Duration;
//! use palisade::ServiceBuilderExt;
//! use palisade::circuit_breaker::CircuitBreakerLayer;
//! use palisade::retry::RetryLayer;
//! use tower::ServiceBuilder;
//!
//! // Outermost first: a retry over a breaker over a per-attempt timeout.
//! let stack = ServiceBuilder::new()
//!     .palisade_retry(RetryLayer::new())
//!     .circuit_breaker(CircuitBreakerLayer::new())
//!     .palisade_timeout(Duration::from_secs(2))
//!     .service(tower::service_fn(|_: u64| async { Ok::<_, std::io::Error>("pong") }));
//! # let _ = stack;
//! ```
//!
//! The retry and the timeout are `palisade_retry` and `palisade_timeout`: tower's own
//! `ServiceBuilder::retry` and `ServiceBuilder::timeout` (its `retry` and `timeout` features)
//! are inherent methods, which would win over a trait method of the same name.

use tower::ServiceBuilder;

/// palisade's layers as [`ServiceBuilder`] methods; each adds the layer as
/// [`ServiceBuilder::layer`] does (inside the layers added before it). See the
/// [module docs](self).
pub trait ServiceBuilderExt<L>: sealed::Sealed {
    /// Adds a [`TimeoutLayer`](crate::timeout::TimeoutLayer) of `limit`.
    #[cfg(feature = "timeout")]
    fn palisade_timeout(
        self,
        limit: std::time::Duration,
    ) -> ServiceBuilder<tower_layer::Stack<crate::timeout::TimeoutLayer, L>>;

    /// Adds a [`ServerTimeoutLayer`](crate::timeout::ServerTimeoutLayer) of `limit`, for
    /// handlers.
    #[cfg(all(feature = "timeout", feature = "http"))]
    fn server_timeout(
        self,
        limit: std::time::Duration,
    ) -> ServiceBuilder<tower_layer::Stack<crate::timeout::ServerTimeoutLayer, L>>;

    /// Adds a configured [`RetryLayer`](crate::retry::RetryLayer).
    #[cfg(feature = "retry")]
    fn palisade_retry<P>(
        self,
        layer: crate::retry::RetryLayer<P>,
    ) -> ServiceBuilder<tower_layer::Stack<crate::retry::RetryLayer<P>, L>>;

    /// Adds a configured [`CircuitBreakerLayer`](crate::circuit_breaker::CircuitBreakerLayer).
    #[cfg(feature = "circuit-breaker")]
    fn circuit_breaker<C>(
        self,
        layer: crate::circuit_breaker::CircuitBreakerLayer<C>,
    ) -> ServiceBuilder<tower_layer::Stack<crate::circuit_breaker::CircuitBreakerLayer<C>, L>>;

    /// Adds a configured [`ThrottleLayer`](crate::throttle::ThrottleLayer).
    #[cfg(feature = "throttle")]
    fn throttle<C>(
        self,
        layer: crate::throttle::ThrottleLayer<C>,
    ) -> ServiceBuilder<tower_layer::Stack<crate::throttle::ThrottleLayer<C>, L>>;

    /// Adds a configured [`IdempotencyLayer`](crate::idempotency::IdempotencyLayer).
    #[cfg(feature = "idempotency")]
    fn idempotency<St>(
        self,
        layer: crate::idempotency::IdempotencyLayer<St>,
    ) -> ServiceBuilder<tower_layer::Stack<crate::idempotency::IdempotencyLayer<St>, L>>;

    /// Adds a configured [`CacheLayer`](crate::cache::CacheLayer).
    #[cfg(feature = "cache")]
    fn swr_cache<F, C, K, V>(
        self,
        layer: crate::cache::CacheLayer<F, C, K, V>,
    ) -> ServiceBuilder<tower_layer::Stack<crate::cache::CacheLayer<F, C, K, V>, L>>;

    /// Adds a configured [`HttpCacheLayer`](crate::cache::HttpCacheLayer).
    #[cfg(all(feature = "cache", feature = "http"))]
    fn http_cache(
        self,
        layer: crate::cache::HttpCacheLayer,
    ) -> ServiceBuilder<tower_layer::Stack<crate::cache::HttpCacheLayer, L>>;
}

impl<L> sealed::Sealed for ServiceBuilder<L> {}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    #[cfg(feature = "timeout")]
    fn palisade_timeout(
        self,
        limit: std::time::Duration,
    ) -> ServiceBuilder<tower_layer::Stack<crate::timeout::TimeoutLayer, L>> {
        self.layer(crate::timeout::TimeoutLayer::new(limit))
    }

    #[cfg(all(feature = "timeout", feature = "http"))]
    fn server_timeout(
        self,
        limit: std::time::Duration,
    ) -> ServiceBuilder<tower_layer::Stack<crate::timeout::ServerTimeoutLayer, L>> {
        self.layer(crate::timeout::ServerTimeoutLayer::new(limit))
    }

    #[cfg(feature = "retry")]
    fn palisade_retry<P>(
        self,
        layer: crate::retry::RetryLayer<P>,
    ) -> ServiceBuilder<tower_layer::Stack<crate::retry::RetryLayer<P>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "circuit-breaker")]
    fn circuit_breaker<C>(
        self,
        layer: crate::circuit_breaker::CircuitBreakerLayer<C>,
    ) -> ServiceBuilder<tower_layer::Stack<crate::circuit_breaker::CircuitBreakerLayer<C>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "throttle")]
    fn throttle<C>(
        self,
        layer: crate::throttle::ThrottleLayer<C>,
    ) -> ServiceBuilder<tower_layer::Stack<crate::throttle::ThrottleLayer<C>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "idempotency")]
    fn idempotency<St>(
        self,
        layer: crate::idempotency::IdempotencyLayer<St>,
    ) -> ServiceBuilder<tower_layer::Stack<crate::idempotency::IdempotencyLayer<St>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "cache")]
    fn swr_cache<F, C, K, V>(
        self,
        layer: crate::cache::CacheLayer<F, C, K, V>,
    ) -> ServiceBuilder<tower_layer::Stack<crate::cache::CacheLayer<F, C, K, V>, L>> {
        self.layer(layer)
    }

    #[cfg(all(feature = "cache", feature = "http"))]
    fn http_cache(
        self,
        layer: crate::cache::HttpCacheLayer,
    ) -> ServiceBuilder<tower_layer::Stack<crate::cache::HttpCacheLayer, L>> {
        self.layer(layer)
    }
}

mod sealed {
    /// Only tower's `ServiceBuilder` takes these methods.
    pub trait Sealed {}
}
