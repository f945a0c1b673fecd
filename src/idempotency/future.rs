//! The idempotency layer's response future: a named state machine.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use super::error::IdempotencyRejection;
use super::fingerprint::{Fingerprint, RecordKey};
use super::layer::{InFlight, OversizedBody, Settings, StoreFailure};
use super::store::{ClaimOutcome, Completion, FencingToken, IdempotencyStore, StoredResponse};
use crate::clock::Instant;
use crate::error::BoxError;
use crate::http::headers::remove_hop_by_hop;
use crate::http::replay_body::{Collect, Collected};
use crate::http::{IDEMPOTENT_REPLAYED, ReplayBody, ResponseBody};

/// The first wait between two looks at a key in flight, when duplicates wait.
const FIRST_WAIT_STEP: Duration = Duration::from_millis(10);
/// The longest wait between two looks.
const MAX_WAIT_STEP: Duration = Duration::from_millis(250);

pin_project! {
    /// The response future of [`Idempotency`](super::Idempotency).
    ///
    /// ```text
    ///   Reading (the request body, up to the limit)
    ///     │ whole: fingerprint          └─ too large: 413, or Passed (unprotected)
    ///     ▼
    ///   Claiming ─ completed ─▶ Ready(replay)      ─ reused ─▶ Ready(422)
    ///     │  ▲     in flight ─▶ Ready(409), or Waiting ─┘ (then claims again)
    ///     │ claimed (holds the key)
    ///     ▼
    ///   Calling ─ error, or a status not stored ─▶ release ─▶ Ready(as is)
    ///     │ a status to store
    ///     ▼
    ///   Storing (the response body, up to the limit) ─ too large ─▶ release ─▶ Ready(streamed)
    ///     │ whole
    ///     ▼
    ///   Completing ─▶ Ready(the response)
    /// ```
    ///
    /// Dropped while it holds the key (the client went away, or the handler panicked), it
    /// releases the key, so the client's retry runs.
    pub struct ResponseFuture<S, St, B, ResB>
    where
        S: Service<Request<ReplayBody<B>>>,
        St: IdempotencyStore,
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
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let (Some(token), Some(request)) = (this.held.take(), this.request.as_ref()) {
                tracing::debug!(
                    key = ?request.key,
                    "dropped while holding an idempotency key: releasing it"
                );
                request.release(token);
            }
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, St, B, ResB>
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
        Claiming {
            #[pin]
            claim: St::ClaimFuture,
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
            #[pin]
            complete: St::CompleteFuture,
            response: Option<Response<ResponseBody<ResB>>>,
        },
        Done,
    }
}

/// A covered request on its way: what the states after `Reading` need.
struct Pending<S, St, B> {
    settings: Arc<Settings>,
    store: St,
    key: RecordKey,
    service: Option<S>,
    /// Until the body is read.
    parts: Option<http::request::Parts>,
    /// Once the body is read, until the request is sent.
    request: Option<Request<ReplayBody<B>>>,
    fingerprint: Option<Fingerprint>,
    /// When a waiting duplicate gives up, once it has started waiting.
    wait_until: Option<Instant>,
    wait_step: Duration,
}

impl<S, St: IdempotencyStore, B> Pending<S, St, B> {
    /// Releases `token` without waiting: the in-memory store does it at once; a networked
    /// store's release runs on as a task of its own.
    fn release(&self, token: FencingToken) {
        let mut release = Box::pin(self.store.release(self.key, token));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match release.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(error)) => {
                tracing::warn!(%error, key = ?self.key, "could not release an idempotency key");
            }
            Poll::Pending => {
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        if let Err(error) = release.await {
                            tracing::warn!(%error, "could not release an idempotency key");
                        }
                    });
                } else {
                    tracing::warn!(
                        "no tokio runtime to release an idempotency key on: it stays claimed \
                         until its lease ends"
                    );
                }
            }
        }
    }
}

impl<S, St, B, ResB> ResponseFuture<S, St, B, ResB>
where
    S: Service<Request<ReplayBody<B>>>,
    St: IdempotencyStore,
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
        settings: Arc<Settings>,
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
    ResB: Body<Data = Bytes> + Unpin,
    ResB::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<ResB>>, S::Error>;

    #[allow(clippy::too_many_lines)] // one arm per state, each short
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Passed { future } => {
                    let response = ready!(future.poll(cx))?;
                    return Poll::Ready(Ok(response.map(ResponseBody::new)));
                }
                StateProj::Rejected { rejection } => {
                    let rejection = rejection
                        .take()
                        .unwrap_or(IdempotencyRejection::StoreUnavailable);
                    return Poll::Ready(Ok(reject(rejection)));
                }
                StateProj::Done => {
                    // Unreachable: nothing polls a finished future.
                    return Poll::Ready(Ok(reject(IdempotencyRejection::StoreUnavailable)));
                }
                StateProj::Reading { collect } => {
                    let Some(request) = this.request.as_mut() else {
                        return Poll::Ready(Ok(reject(IdempotencyRejection::StoreUnavailable)));
                    };
                    let collected = ready!(collect.poll_collect(cx));
                    let Some(parts) = request.parts.take() else {
                        return Poll::Ready(Ok(reject(IdempotencyRejection::StoreUnavailable)));
                    };
                    match collected {
                        Ok(Collected::Whole { data, trailers }) => {
                            let fingerprint = Fingerprint::new(
                                &parts.method,
                                parts.uri.path(),
                                parts.uri.query(),
                                &data,
                            );
                            request.fingerprint = Some(fingerprint);
                            request.request = Some(Request::from_parts(
                                parts,
                                ReplayBody::kept_with_trailers(data, trailers),
                            ));
                            State::Claiming {
                                claim: request.claim(fingerprint),
                            }
                        }
                        Ok(Collected::Over { prefix, rest }) => match request.settings.oversized {
                            OversizedBody::Reject => State::Rejected {
                                rejection: Some(IdempotencyRejection::BodyTooLarge {
                                    limit: request.settings.body_limit,
                                }),
                            },
                            OversizedBody::PassThrough => {
                                tracing::debug!(
                                    key = ?request.key,
                                    "request body over the limit: running it unprotected"
                                );
                                let body = ReplayBody::streaming(prefix, rest);
                                match request.service.take() {
                                    Some(mut service) => State::Passed {
                                        future: service.call(Request::from_parts(parts, body)),
                                    },
                                    None => State::Rejected {
                                        rejection: Some(IdempotencyRejection::StoreUnavailable),
                                    },
                                }
                            }
                        },
                        Err(error) => {
                            let error: BoxError = error.into();
                            tracing::debug!(%error, "the request body failed while read");
                            State::Rejected {
                                rejection: Some(IdempotencyRejection::BodyUnreadable),
                            }
                        }
                    }
                }
                StateProj::Claiming { claim } => {
                    let outcome = ready!(claim.poll(cx));
                    let Some(request) = this.request.as_mut() else {
                        return Poll::Ready(Ok(reject(IdempotencyRejection::StoreUnavailable)));
                    };
                    match outcome {
                        Ok(ClaimOutcome::Claimed(token)) => {
                            *this.held = Some(token);
                            request.send().map_or(
                                State::Rejected {
                                    rejection: Some(IdempotencyRejection::StoreUnavailable),
                                },
                                |future| State::Calling { future },
                            )
                        }
                        Ok(ClaimOutcome::Completed(stored)) => {
                            tracing::debug!(key = ?request.key, "replaying a stored response");
                            return Poll::Ready(Ok(replay(&stored)));
                        }
                        Ok(ClaimOutcome::InFlight { lease_left }) => request.in_flight(lease_left),
                        Ok(ClaimOutcome::Mismatch) => {
                            tracing::debug!(key = ?request.key, "idempotency key reused");
                            State::Rejected {
                                rejection: Some(IdempotencyRejection::KeyReused),
                            }
                        }
                        Ok(ClaimOutcome::Full) => {
                            tracing::warn!("idempotency store full: refusing a new key");
                            State::Rejected {
                                rejection: Some(IdempotencyRejection::StoreFull),
                            }
                        }
                        Err(error) => match request.settings.store_failure {
                            StoreFailure::FailClosed => {
                                tracing::warn!(%error, "idempotency store failed: answering 503");
                                State::Rejected {
                                    rejection: Some(IdempotencyRejection::StoreUnavailable),
                                }
                            }
                            StoreFailure::FailOpen => {
                                tracing::warn!(
                                    %error,
                                    "idempotency store failed: running the request unprotected"
                                );
                                request.send().map_or(
                                    State::Rejected {
                                        rejection: Some(IdempotencyRejection::StoreUnavailable),
                                    },
                                    |future| State::Passed { future },
                                )
                            }
                        },
                    }
                }
                StateProj::Waiting { sleep } => {
                    ready!(sleep.as_mut().poll(cx));
                    let Some(request) = this.request.as_ref() else {
                        return Poll::Ready(Ok(reject(IdempotencyRejection::StoreUnavailable)));
                    };
                    match request.fingerprint {
                        Some(fingerprint) => State::Claiming {
                            claim: request.claim(fingerprint),
                        },
                        None => State::Rejected {
                            rejection: Some(IdempotencyRejection::StoreUnavailable),
                        },
                    }
                }
                StateProj::Calling { future } => {
                    let result = ready!(future.poll(cx));
                    let (Some(request), Some(token)) = (this.request.as_ref(), *this.held) else {
                        return Poll::Ready(result.map(|response| response.map(ResponseBody::new)));
                    };
                    match result {
                        Err(error) => {
                            *this.held = None;
                            request.release(token);
                            tracing::debug!(key = ?request.key, "the request failed: key released");
                            return Poll::Ready(Err(error));
                        }
                        Ok(response) if !(request.settings.stores)(response.status()) => {
                            *this.held = None;
                            request.release(token);
                            tracing::debug!(
                                key = ?request.key,
                                status = %response.status(),
                                "response not stored: key released"
                            );
                            return Poll::Ready(Ok(response.map(ResponseBody::new)));
                        }
                        Ok(response) => {
                            let (parts, body) = response.into_parts();
                            State::Storing {
                                collect: Collect::new(body, request.settings.response_limit),
                                parts: Some(parts),
                            }
                        }
                    }
                }
                StateProj::Storing { collect, parts } => {
                    let collected = ready!(collect.poll_collect(cx));
                    let (Some(request), Some(token), Some(parts)) =
                        (this.request.as_ref(), *this.held, parts.take())
                    else {
                        return Poll::Ready(Ok(reject(IdempotencyRejection::StoreUnavailable)));
                    };
                    match collected {
                        Ok(Collected::Whole { data, trailers }) => {
                            let mut headers = parts.headers.clone();
                            remove_hop_by_hop(&mut headers);
                            let stored = Arc::new(StoredResponse::new(
                                parts.status,
                                headers,
                                data.clone(),
                                trailers.clone(),
                            ));
                            let response = Response::from_parts(
                                parts,
                                ResponseBody::full_with_trailers(data, trailers),
                            );
                            State::Completing {
                                complete: request.store.complete(
                                    request.key,
                                    token,
                                    stored,
                                    request.settings.retention,
                                ),
                                response: Some(response),
                            }
                        }
                        Ok(Collected::Over { prefix, rest }) => {
                            *this.held = None;
                            request.release(token);
                            tracing::debug!(
                                key = ?request.key,
                                limit = request.settings.response_limit,
                                "response body over the limit: sent, not stored; key released"
                            );
                            return Poll::Ready(Ok(Response::from_parts(
                                parts,
                                ResponseBody::prefixed(prefix, rest),
                            )));
                        }
                        Err(error) => {
                            *this.held = None;
                            request.release(token);
                            tracing::debug!(key = ?request.key, "the response body failed: key released");
                            return Poll::Ready(Ok(Response::from_parts(
                                parts,
                                ResponseBody::failed(error.into()),
                            )));
                        }
                    }
                }
                StateProj::Completing { complete, response } => {
                    let completion = ready!(complete.poll(cx));
                    let (Some(request), Some(token), Some(response)) =
                        (this.request.as_ref(), this.held.take(), response.take())
                    else {
                        return Poll::Ready(Ok(reject(IdempotencyRejection::StoreUnavailable)));
                    };
                    match completion {
                        Ok(Completion::Stored) => {}
                        Ok(Completion::Superseded) => tracing::warn!(
                            key = ?request.key,
                            "the key's lease ended and another request took it over: this \
                             response was not stored"
                        ),
                        Ok(Completion::Full) => {
                            request.release(token);
                            tracing::warn!(
                                key = ?request.key,
                                "idempotency store full: response not stored, key released"
                            );
                        }
                        Err(error) => {
                            request.release(token);
                            tracing::warn!(%error, key = ?request.key, "could not store a response");
                        }
                    }
                    this.state.set(State::Done);
                    return Poll::Ready(Ok(response));
                }
            };
            this.state.set(next);
        }
    }
}

impl<S, St, B> Pending<S, St, B>
where
    S: Service<Request<ReplayBody<B>>>,
    St: IdempotencyStore,
{
    fn claim(&self, fingerprint: Fingerprint) -> St::ClaimFuture {
        self.store.claim(self.key, fingerprint, self.settings.lease)
    }

    /// Sends the request to the service that was polled ready.
    fn send(&mut self) -> Option<S::Future> {
        let request = self.request.take()?;
        let mut service = self.service.take()?;
        Some(service.call(request))
    }

    /// A duplicate of a request in flight: 409 now, or wait a step and look again.
    fn in_flight<ResB>(&mut self, lease_left: Duration) -> State<S, St, B, ResB> {
        let conflict = State::Rejected {
            rejection: Some(IdempotencyRejection::KeyInFlight {
                retry_after: self.settings.in_flight_retry_after,
            }),
        };
        let InFlight::Wait(longest) = self.settings.in_flight else {
            tracing::debug!(key = ?self.key, ?lease_left, "idempotency key in flight: 409");
            return conflict;
        };
        let now = Instant::now();
        let until = *self.wait_until.get_or_insert_with(|| now + longest);
        if now >= until {
            tracing::debug!(key = ?self.key, "idempotency key still in flight after waiting: 409");
            return conflict;
        }
        let step = self.wait_step.min(until - now);
        self.wait_step = (self.wait_step * 2).min(MAX_WAIT_STEP);
        State::Waiting {
            sleep: Box::pin(tokio::time::sleep(step)),
        }
    }
}

/// The problem response for `rejection`, carrying the rejection in its extensions.
fn reject<B>(rejection: IdempotencyRejection) -> Response<ResponseBody<B>> {
    let mut response = rejection.problem().into_response();
    response.extensions_mut().insert(rejection);
    response
}

/// A stored response, as sent again: the same status, headers, body and trailers, marked
/// `Idempotent-Replayed: true`.
fn replay<B>(stored: &StoredResponse) -> Response<ResponseBody<B>> {
    let body = ResponseBody::full_with_trailers(stored.body().clone(), stored.trailers().cloned());
    let mut response = Response::new(body);
    *response.status_mut() = stored.status();
    *response.headers_mut() = stored.headers().clone();
    response
        .headers_mut()
        .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response
}

impl<S, St, B, ResB> fmt::Debug for ResponseFuture<S, St, B, ResB>
where
    S: Service<Request<ReplayBody<B>>>,
    St: IdempotencyStore,
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
