//! The idempotency layer's response future: a named state machine. `poll` only dispatches:
//! each state polls what it waits for and hands the result to its step in `pending.rs`, which
//! returns the next state or the answer; what a dropped future leaves to finish is in
//! `cleanup.rs`, the responses the layer builds in `response.rs`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use super::config::Config;
use super::error::IdempotencyRejection;
use super::fingerprint::RecordKey;
use super::pending::{FIRST_WAIT_STEP, Pending};
use super::response::{cannot_happen, reject};
use super::store::{Completed, FencingToken, IdempotencyStore};
use crate::error::BoxError;
use crate::http::replay_body::Collect;
use crate::http::{ReplayBody, ResponseBody};

pin_project! {
    /// The response future of [`Idempotency`](super::Idempotency).
    ///
    /// ```text
    ///   Reading (the request body, up to the limit)
    ///     │ whole: fingerprint          └─ too large: 413, or Passed (unprotected)
    ///     ▼
    ///   Claiming ─ completed ─▶ Ready(replay, or 409 if its result was not kept)
    ///     │  ▲     in flight ─▶ Ready(409), or Waiting ─┘ (then claims again)
    ///     │        reused ─▶ Ready(422)    full ─▶ Ready(503)    over quota ─▶ Ready(429)
    ///     │ claimed (holds the key)
    ///     ▼
    ///   Calling ─ error, or a status not stored ─▶ release ─▶ Ready(as is)
    ///     │ a status to store
    ///     ▼
    ///   Storing (the response body, up to the limit) ─ too large ─▶ record "ran, not kept"
    ///     │ whole                                                    ─▶ Ready(streamed)
    ///     ▼
    ///   Completing ─ no room ─▶ record "ran, not kept" ─▶ Ready(the response)
    ///     └─ stored ─▶ Ready(the response)
    /// ```
    ///
    /// Once the handler has answered with a status to store, the key is never released: a
    /// response that cannot be kept leaves a record that the request ran, so a retry is told
    /// so rather than run again. Dropped while it holds the key before that (the client went
    /// away, or the handler panicked), it releases the key, so the client's retry runs.
    pub struct ResponseFuture<S, St, B, ResB>
    where
        S: Service<Request<ReplayBody<B>>>,
        St: IdempotencyStore,
        ResB: Body<Data = Bytes>,
        ResB: Unpin,
        ResB: Send,
        ResB: 'static,
        ResB::Error: Into<BoxError>,
    {
        #[pin]
        state: State<S, St, B, ResB>,
        request: Option<Pending<S, St, B>>,
        // The claim this future holds, released unless its response is stored.
        held: Option<FencingToken>,
    }

    impl<S, St, B, ResB> PinnedDrop for ResponseFuture<S, St, B, ResB>
    where
        S: Service<Request<ReplayBody<B>>>,
        St: IdempotencyStore,
        ResB: Body<Data = Bytes>,
        ResB: Unpin,
        ResB: Send,
        ResB: 'static,
        ResB::Error: Into<BoxError>,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let held = this.held.take();
            // Out with the state first: a handler future still running is dropped (its own
            // clean-up runs) before its key is released.
            let state = this.state.project_replace(State::Done);
            let Some(request) = this.request.as_ref() else {
                return;
            };
            request.on_drop(state, held);
        }
    }
}

pin_project! {
    #[project = StateProj]
    #[project_replace = StateProjReplace]
    pub(super) enum State<S, St, B, ResB>
    where
        S: Service<Request<ReplayBody<B>>>,
        St: IdempotencyStore,
    {
        Passed {
            #[pin]
            future: S::Future,
        },
        Rejected {
            rejection: Option<IdempotencyRejection>,
        },
        Reading {
            collect: Collect<B>,
        },
        // The store's futures are `Unpin`: a dropped request can hand them to a task.
        Claiming {
            claim: Option<St::ClaimFuture>,
        },
        Waiting {
            sleep: Pin<Box<Sleep>>,
        },
        Calling {
            #[pin]
            future: S::Future,
        },
        Storing {
            collect: Collect<ResB>,
            parts: Option<http::response::Parts>,
        },
                Completing {
            complete: Option<St::CompleteFuture>,
            // What is being stored, kept to try again if the store fails (a reference count).
            completed: Option<Completed>,
            response: Option<Response<ResponseBody<ResB>>>,
        },
        Done,
    }
}

/// What a state's step decided: the next state, or the answer to the caller.
pub(super) enum Step<S, St, B, ResB>
where
    S: Service<Request<ReplayBody<B>>>,
    St: IdempotencyStore,
{
    Next(State<S, St, B, ResB>),
    Answer(Result<Response<ResponseBody<ResB>>, S::Error>),
}

impl<S, St, B, ResB> ResponseFuture<S, St, B, ResB>
where
    S: Service<Request<ReplayBody<B>>>,
    St: IdempotencyStore,
    ResB: Body<Data = Bytes> + Unpin + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    pub(crate) fn passed(future: S::Future) -> Self {
        Self::with_state(State::Passed { future }, None)
    }

    pub(crate) fn rejected(rejection: IdempotencyRejection) -> Self {
        Self::with_state(
            State::Rejected {
                rejection: Some(rejection),
            },
            None,
        )
    }

    pub(crate) fn reading(
        service: S,
        settings: Arc<Config>,
        store: St,
        key: RecordKey,
        parts: http::request::Parts,
        body: B,
    ) -> Self {
        let collect = Collect::new(body, settings.body_limit);
        Self::with_state(
            State::Reading { collect },
            Some(Pending {
                settings,
                store,
                key,
                service: Some(service),
                parts: Some(parts),
                request: None,
                fingerprint: None,
                wait_until: None,
                wait_step: FIRST_WAIT_STEP,
            }),
        )
    }

    fn with_state(state: State<S, St, B, ResB>, request: Option<Pending<S, St, B>>) -> Self {
        Self {
            state,
            request,
            held: None,
        }
    }
}

impl<S, St, B, ResB> Future for ResponseFuture<S, St, B, ResB>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<ResB>>,
    St: IdempotencyStore,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Unpin + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<ResB>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let step = match this.state.as_mut().project() {
                StateProj::Passed { future } => {
                    let response = ready!(future.poll(cx))?;
                    Step::Answer(Ok(response.map(ResponseBody::new)))
                }
                StateProj::Rejected { rejection } => {
                    let rejection = rejection
                        .take()
                        .unwrap_or_else(|| cannot_happen("a rejection answered twice"));
                    // The service counts the rejections it answers before a request exists.
                    if let Some(request) = this.request.as_ref() {
                        request.settings.outcomes.count(rejection.label());
                    }
                    Step::Answer(Ok(reject(rejection)))
                }
                StateProj::Done => Step::Answer(Ok(reject(cannot_happen("polled after done")))),
                StateProj::Reading { collect } => {
                    let collected = ready!(collect.poll_collect(cx));
                    match this.request.as_mut() {
                        Some(request) => Step::Next(request.body_read(collected)),
                        None => Step::Answer(Ok(reject(cannot_happen("reading, no request")))),
                    }
                }
                StateProj::Claiming { claim } => {
                    let Some(pending_claim) = claim.as_mut() else {
                        return Poll::Ready(Ok(reject(cannot_happen("claim answered twice"))));
                    };
                    let outcome = ready!(Pin::new(pending_claim).poll(cx));
                    *claim = None;
                    match this.request.as_mut() {
                        Some(request) => request.claimed(outcome, this.held),
                        None => Step::Answer(Ok(reject(cannot_happen("claiming, no request")))),
                    }
                }
                StateProj::Waiting { sleep } => {
                    ready!(sleep.as_mut().poll(cx));
                    match this.request.as_ref() {
                        Some(request) => Step::Next(request.woke()),
                        None => Step::Answer(Ok(reject(cannot_happen("waiting, no request")))),
                    }
                }
                StateProj::Calling { future } => {
                    let result = ready!(future.poll(cx));
                    match (this.request.as_ref(), *this.held) {
                        (Some(request), Some(token)) => request.called(result, token, this.held),
                        // The handler ran: its answer goes back as it is.
                        _ => Step::Answer(result.map(|response| response.map(ResponseBody::new))),
                    }
                }
                StateProj::Storing { collect, parts } => {
                    let collected = ready!(collect.poll_collect(cx));
                    match (this.request.as_ref(), *this.held, parts.take()) {
                        (Some(request), Some(token), Some(parts)) => {
                            request.response_read(collected, parts, token, this.held)
                        }
                        _ => Step::Answer(Ok(reject(cannot_happen("storing, no claim")))),
                    }
                }
                StateProj::Completing {
                    complete,
                    completed,
                    response,
                } => {
                    let Some(pending_complete) = complete.as_mut() else {
                        return Poll::Ready(Ok(reject(cannot_happen("completed twice"))));
                    };
                    let completion = ready!(Pin::new(pending_complete).poll(cx));
                    *complete = None;
                    match (this.request.as_ref(), this.held.take(), response.take()) {
                        (Some(request), Some(token), Some(response)) => {
                            request.completed(
                                completion,
                                token,
                                response.status(),
                                completed.take(),
                            );
                            this.state.set(State::Done);
                            Step::Answer(Ok(response))
                        }
                        _ => Step::Answer(Ok(reject(cannot_happen("completing, no claim")))),
                    }
                }
            };
            match step {
                Step::Next(next) => this.state.set(next),
                Step::Answer(answer) => return Poll::Ready(answer),
            }
        }
    }
}

impl<S, St, B, ResB> fmt::Debug for ResponseFuture<S, St, B, ResB>
where
    S: Service<Request<ReplayBody<B>>>,
    St: IdempotencyStore,
    ResB: Body<Data = Bytes> + Unpin + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Passed { .. } => "Passed",
            State::Rejected { .. } => "Rejected",
            State::Reading { .. } => "Reading",
            State::Claiming { .. } => "Claiming",
            State::Waiting { .. } => "Waiting",
            State::Calling { .. } => "Calling",
            State::Storing { .. } => "Storing",
            State::Completing { .. } => "Completing",
            State::Done => "Done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("holds_key", &self.held.is_some())
            .finish_non_exhaustive()
    }
}
