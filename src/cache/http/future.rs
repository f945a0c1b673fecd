//! [`ResponseFuture`] of the HTTP cache: an answer from the store, a request forwarded
//! untouched, or a fetch.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;

use super::config::Settings;
use super::stored::{CacheStatus, Fwd};
use crate::error::BoxError;
use crate::http::ResponseBody;

type Fetch<B> = Pin<Box<dyn Future<Output = Result<Response<ResponseBody<B>>, BoxError>> + Send>>;

pin_project! {
    /// The response future of [`HttpCache`](super::HttpCache). An answer from the store
    /// allocates no future; a fetch is boxed (it may wait on another caller's).
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        Ready { response: Option<Response<ResponseBody<B>>> },
        Forward { #[pin] inner: F, fwd: Fwd, settings: Arc<Settings> },
        Fetch { fetch: Fetch<B> },
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn ready(response: Response<ResponseBody<B>>) -> Self {
        Self {
            kind: Kind::Ready {
                response: Some(response),
            },
        }
    }

    pub(crate) fn forward(inner: F, fwd: Fwd, settings: Arc<Settings>) -> Self {
        Self {
            kind: Kind::Forward {
                inner,
                fwd,
                settings,
            },
        }
    }

    pub(crate) fn boxed(fetch: Fetch<B>) -> Self {
        Self {
            kind: Kind::Fetch { fetch },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Ready { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                // Polled again after completing: a contract breach, answered without a panic.
                None => Poll::Ready(Err("cache response future polled after completion".into())),
            },
            KindProj::Forward {
                inner,
                fwd,
                settings,
            } => {
                let response = ready!(inner.poll(cx)).map_err(Into::into)?;
                let status = CacheStatus {
                    fwd: Some(*fwd),
                    fwd_status: Some(response.status()),
                    ..CacheStatus::default()
                };
                let mut response = response.map(ResponseBody::new);
                status.append_to(response.headers_mut(), &settings.name);
                Poll::Ready(Ok(response))
            }
            KindProj::Fetch { fetch } => fetch.as_mut().poll(cx),
        }
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Ready { .. } => "hit",
            Kind::Forward { .. } => "forward",
            Kind::Fetch { .. } => "fetch",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
