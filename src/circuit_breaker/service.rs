//! [`CircuitBreaker`].

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::breaker::{Admission, Breaker};
use super::error::CircuitBreakerError;
use super::future::{Call, ResponseFuture};
use super::handle::CircuitBreakerHandle;
use crate::classify::{Classify, DefaultClassifier};
use crate::error::BoxError;

/// Stops calling the inner service while it is failing: see the
/// [module docs](crate::circuit_breaker).
///
/// Built by [`CircuitBreakerLayer`](super::CircuitBreakerLayer).
///
/// # Clone
///
/// Every clone shares the one breaker of the layer that built it (and so does every other
/// service that layer built): cloning costs a reference count.
pub struct CircuitBreaker<S, C = DefaultClassifier> {
    inner: S,
    breaker: Arc<Breaker<C>>,
}

impl<S, C> CircuitBreaker<S, C> {
    pub(crate) fn new(inner: S, breaker: Arc<Breaker<C>>) -> Self {
        Self { inner, breaker }
    }

    crate::inner_accessors!();
}

impl<S, C: Send + Sync + 'static> CircuitBreaker<S, C> {
    /// A handle on this service's breaker.
    #[must_use]
    pub fn handle(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle::new(self.breaker.clone())
    }
}

impl<S: Clone, C> Clone for CircuitBreaker<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            breaker: Arc::clone(&self.breaker),
        }
    }
}

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = CircuitBreakerError;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| CircuitBreakerError::Inner(e.into()))
    }

    // Always inlined, as `Breaker::admit` is: see DEVELOPERS.md, "Performance notes" (store
    // forwarding).
    #[inline(always)]
    fn call(&mut self, request: Req) -> Self::Future {
        match self.breaker.admit() {
            Admission::Admitted(permit) => {
                let call = Call::start(Arc::clone(&self.breaker), permit);
                ResponseFuture::admitted(self.inner.call(request), call)
            }
            Admission::Rejected(rejection) => {
                self.breaker.rejected(&rejection);
                ResponseFuture::rejected(rejection)
            }
        }
    }
}

impl<S: fmt::Debug, C: Send + Sync + 'static> fmt::Debug for CircuitBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("breaker", &self.handle())
            .finish()
    }
}
