//! [`ResponseFuture`]: a hit answered at once, a bypassed call, or a fetch.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::error::BoxError;

type Fetch<V> = Pin<Box<dyn Future<Output = Result<V, BoxError>> + Send>>;

pin_project! {
    /// The response future of [`Cache`](super::Cache). A hit allocates nothing; a miss boxes
    /// its fetch (it may wait on another caller's).
    pub struct ResponseFuture<F, V> {
        #[pin]
        kind: Kind<F, V>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, V> {
        Ready { value: Option<V> },
        Bypass { #[pin] inner: F },
        Fetch { fetch: Fetch<V> },
    }
}

impl<F, V> ResponseFuture<F, V> {
    pub(crate) fn ready(value: V) -> Self {
        Self {
            kind: Kind::Ready { value: Some(value) },
        }
    }

    pub(crate) fn bypass(inner: F) -> Self {
        Self {
            kind: Kind::Bypass { inner },
        }
    }

    pub(crate) fn fetch(fetch: Fetch<V>) -> Self {
        Self {
            kind: Kind::Fetch { fetch },
        }
    }
}

impl<F, V, E> Future for ResponseFuture<F, V>
where
    F: Future<Output = Result<V, E>>,
    E: Into<BoxError>,
{
    type Output = Result<V, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Ready { value } => match value.take() {
                Some(value) => Poll::Ready(Ok(value)),
                // Polled again after completing: a contract breach, answered without a panic.
                None => Poll::Ready(Err("cache response future polled after completion".into())),
            },
            KindProj::Bypass { inner } => inner.poll(cx).map_err(Into::into),
            KindProj::Fetch { fetch } => fetch.as_mut().poll(cx),
        }
    }
}

impl<F, V> fmt::Debug for ResponseFuture<F, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Ready { .. } => "hit",
            Kind::Bypass { .. } => "bypass",
            Kind::Fetch { .. } => "fetch",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
