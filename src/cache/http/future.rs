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
use crate::http::ResponseBody;

type Fetch<B, E> = Pin<Box<dyn Future<Output = Result<Response<ResponseBody<B>>, E>> + Send>>;

pin_project! {
    /// The response future of [`HttpCache`](super::HttpCache). An answer from the store
    /// allocates no future; a fetch is boxed (it may wait on another caller's).
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        kind: Kind<F, B, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B, E> {
        Ready { response: Option<Response<ResponseBody<B>>> },
        Forward { #[pin] inner: F, fwd: Fwd, settings: Arc<Settings> },
        Fetch { fetch: Fetch<B, E> },
    }
}

impl<F, B, E> ResponseFuture<F, B, E> {
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

    pub(crate) fn boxed(fetch: Fetch<B, E>) -> Self {
        Self {
            kind: Kind::Fetch { fetch },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Ready { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                // Polled again after completing: a contract breach, answered without a panic.
                None => Poll::Ready(Ok(crate::http::Problem::new(
                    http::StatusCode::INTERNAL_SERVER_ERROR,
                    "urn:palisade:polled-after-completion",
                    "Polled after completion",
                    "the cache's response future was polled again after it completed".into(),
                )
                .into_http_response())),
            },
            KindProj::Forward {
                inner,
                fwd,
                settings,
            } => {
                let response = ready!(inner.poll(cx))?;
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

impl<F, B, E> fmt::Debug for ResponseFuture<F, B, E> {
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
