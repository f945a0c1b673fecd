//! [`Throttle`].

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::error::ThrottleError;
use super::future::{Call, ResponseFuture};
use super::gate::{Admission, Gate};
use super::handle::ThrottleHandle;
use crate::classify::{Classify, DefaultClassifier};
use crate::error::BoxError;

/// Sheds the calls a failing dependency cannot take: see the [module docs](crate::throttle).
///
/// Built by [`ThrottleLayer`](super::ThrottleLayer).
///
/// # Clone
///
/// Every clone shares the one throttle of the layer that built it (and so does every other
/// service that layer built): cloning costs a reference count.
pub struct Throttle<S, C = DefaultClassifier> {
    inner: S,
    gate: Arc<Gate<C>>,
}

impl<S, C> Throttle<S, C> {
    pub(crate) fn new(inner: S, gate: Arc<Gate<C>>) -> Self {
        Self { inner, gate }
    }

    crate::inner_accessors!();
}

impl<S, C: Send + Sync + 'static> Throttle<S, C> {
    /// A handle on this service's throttle.
    #[must_use]
    pub fn handle(&self) -> ThrottleHandle {
        ThrottleHandle::new(self.gate.clone())
    }
}

impl<S: Clone, C> Clone for Throttle<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            gate: Arc::clone(&self.gate),
        }
    }
}

impl<S, C, Req> Service<Req> for Throttle<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = ThrottleError;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| ThrottleError::Inner(e.into()))
    }

    // Always inlined, as the breaker's is: the decision and the future are then written once,
    // where the caller keeps them.
    #[inline(always)]
    fn call(&mut self, request: Req) -> Self::Future {
        match self.gate.admit() {
            Admission::Admitted(permit) => {
                let call = Call::start(Arc::clone(&self.gate), permit);
                ResponseFuture::admitted(self.inner.call(request), call)
            }
            Admission::Rejected(rejection) => {
                self.gate.rejected(&rejection);
                ResponseFuture::rejected(rejection)
            }
        }
    }
}

impl<S: fmt::Debug, C: Send + Sync + 'static> fmt::Debug for Throttle<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Throttle")
            .field("inner", &self.inner)
            .field("throttle", &self.handle())
            .finish()
    }
}
