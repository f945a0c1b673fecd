//! [`Fallback`].

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::failure::{Answer, RequestParts};
use super::future::ResponseFuture;
use super::layer::Shared;
use crate::error::BoxError;
use crate::http::ResponseBody;

/// Answers rejections and, optionally, failures with a function of yours: see the
/// [module docs](crate::fallback).
///
/// Built by [`FallbackLayer`](super::FallbackLayer). Its response body is a
/// [`ResponseBody`] (the inner service's body, or the answer's), and its error a [`BoxError`]:
/// the inner error when no answer applies, or the answer's own.
pub struct Fallback<S, F> {
    inner: S,
    shared: Arc<Shared<F>>,
}

impl<S, F> Fallback<S, F> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<F>>) -> Self {
        Self { inner, shared }
    }

    crate::inner_accessors!();
}

impl<S: Clone, F> Clone for Fallback<S, F> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S, F, B, ResB> Service<Request<B>> for Fallback<S, F>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    F: Answer<ResB>,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, F, ResB>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, request: Request<B>) -> Self::Future {
        let kept = self
            .shared
            .keep_request
            .then(|| Box::new(RequestParts::of(&request)));
        ResponseFuture::new(self.inner.call(request), Arc::clone(&self.shared), kept)
    }
}

impl<S: fmt::Debug, F> fmt::Debug for Fallback<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("inner", &self.inner)
            .field("on_failures", &self.shared.failures)
            .field("keep_request", &self.shared.keep_request)
            .finish_non_exhaustive()
    }
}
