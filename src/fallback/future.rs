//! The fallback's response future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;

use super::failure::{
    Answer, FALLBACK_HEADER, Failure, FailureCause, FallbackAnswer, FallbackReason, RequestParts,
};
use super::layer::Shared;
use crate::classify::Outcome;
use crate::error::BoxError;
use crate::http::ResponseBody;

pin_project! {
    /// The response future of [`Fallback`](super::Fallback).
    ///
    /// ```text
    ///   Calling ──(success, or a failure the layer does not answer)──▶ Ready(inner result)
    ///     │ a rejection (or, with on_failures, a failure)
    ///     ▼
    ///   Answering (the answer function's future) ──▶ Ready(marked answer, or its error)
    /// ```
    pub struct ResponseFuture<Fut, F: Answer<ResB>, ResB> {
        #[pin]
        state: State<Fut, F::Future>,
        shared: Arc<Shared<F>>,
        kept: Option<Box<RequestParts>>,
        reason: Option<FallbackReason>,
        _body: std::marker::PhantomData<fn() -> ResB>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<Fut, A> {
        Calling { #[pin] inner: Fut },
        Answering { #[pin] answer: A },
    }
}

impl<Fut, F: Answer<ResB>, ResB> ResponseFuture<Fut, F, ResB> {
    pub(crate) fn new(inner: Fut, shared: Arc<Shared<F>>, kept: Option<Box<RequestParts>>) -> Self {
        Self {
            state: State::Calling { inner },
            shared,
            kept,
            reason: None,
            _body: std::marker::PhantomData,
        }
    }
}

/// Why the layer answers `result`, if it does.
fn reason_for<F, ResB>(
    shared: &Shared<F>,
    result: &Result<Response<ResB>, BoxError>,
) -> Option<FallbackReason> {
    match result {
        Err(error) => FallbackReason::of_error(error)
            .or_else(|| shared.failures.is_some().then_some(FallbackReason::Error)),
        Ok(response) => shared.failures.as_ref().and_then(|classifier| {
            (classifier.outcome(response.status()) == Outcome::Failure)
                .then(|| FallbackReason::Status(response.status()))
        }),
    }
}

impl<Fut, F, ResB, E> Future for ResponseFuture<Fut, F, ResB>
where
    Fut: Future<Output = Result<Response<ResB>, E>>,
    E: Into<BoxError>,
    F: Answer<ResB>,
{
    type Output = Result<Response<ResponseBody<ResB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { inner } => {
                    let result = ready!(inner.poll(cx)).map_err(Into::into);
                    let Some(reason) = reason_for(this.shared, &result) else {
                        return Poll::Ready(result.map(|response| response.map(ResponseBody::new)));
                    };
                    // Relaxed: a statistic.
                    this.shared.answered.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(?reason, "fallback answers the call");
                    let cause = match result {
                        Err(error) => FailureCause::Error(error),
                        Ok(response) => FailureCause::Response(response),
                    };
                    let failure = Failure {
                        reason,
                        cause,
                        request: this.kept.take().map(|kept| *kept),
                    };
                    *this.reason = Some(reason);
                    let answer = this.shared.answer.answer(failure);
                    this.state.set(State::Answering { answer });
                }
                StateProj::Answering { answer } => {
                    let mut response = ready!(answer.poll(cx))?;
                    if let Some(reason) = *this.reason {
                        response.extensions_mut().insert(FallbackAnswer { reason });
                        response
                            .headers_mut()
                            .insert(FALLBACK_HEADER, reason.header_value());
                    }
                    return Poll::Ready(Ok(response));
                }
            }
        }
    }
}

impl<Fut, F: Answer<ResB>, ResB> fmt::Debug for ResponseFuture<Fut, F, ResB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Calling { .. } => "Calling",
            State::Answering { .. } => "Answering",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}
