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

use super::config::Config;
use super::error::IdempotencyRejection;
use super::fingerprint::{Fingerprint, Owner, RecordKey};
use super::layer::{InFlight, OversizedBody, StoreFailure};
use super::store::{
    Claim, ClaimOutcome, Completed, Completion, FencingToken, IdempotencyStore, StoreError,
    StoredResponse,
};
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
            response: Option<Response<ResponseBody<ResB>>>,
        },
        Done,
    }
}

/// A covered request on its way: what the states after `Reading` need.
struct Pending<S, St, B> {
    settings: Arc<Config>,
    store: St,
    key: RecordKey,
    /// Whose quota a new record counts against.
    owner: Option<Owner>,
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
        let release = self.store.release(self.key, token);
        finish_detached(release, self.key, "release");
    }

    /// Records that the request holding `token` ran and was answered with `status`, without
    /// its response (which did not fit): a duplicate is told so, and never runs it again.
    fn complete_not_kept(&self, token: FencingToken, status: http::StatusCode) {
        tracing::warn!(
            key = ?self.key,
            %status,
            "response not kept for replay: its key records that the request ran"
        );
        let complete = self.store.complete(
            self.key,
            token,
            Completed::NotKept { status },
            self.settings.retention_for(status),
        );
        finish_detached(complete, self.key, "complete");
    }

    /// What a dropped request leaves behind, by the state it was dropped in.
    fn on_drop<Fut, ResB>(
        &self,
        state: StateProjReplace<Fut, St, B, ResB>,
        held: Option<FencingToken>,
    ) where
        Fut: Service<Request<ReplayBody<B>>>,
        ResB: Body<Data = Bytes> + Unpin + Send + 'static,
        ResB::Error: Into<BoxError>,
    {
        match (state, held) {
            // Claimed by the store, perhaps, but never learned: finish the claim and give the
            // key straight back.
            (StateProjReplace::Claiming { claim: Some(claim) }, None) => {
                let store = self.store.clone();
                let key = self.key;
                spawn_detached(key, async move {
                    if let Ok(ClaimOutcome::Claimed(token)) = claim.await {
                        let _ = store.release(key, token).await;
                    }
                });
            }
            // The handler has answered with a response to store: the client's leaving must not
            // let a retry run it again. Finish reading and storing without the client.
            (
                StateProjReplace::Storing {
                    collect,
                    parts: Some(parts),
                },
                Some(token),
            ) => {
                let store = self.store.clone();
                let key = self.key;
                let settings = Arc::clone(&self.settings);
                tracing::debug!(?key, "dropped while storing a response: storing it anyway");
                spawn_detached(key, async move {
                    // Releases the key if this task ends without completing it: the body
                    // failed, or panicked while read (then the guard runs as the task unwinds).
                    let mut guard = ReleaseGuard {
                        store: store.clone(),
                        key,
                        token: Some(token),
                    };
                    let mut collect = collect;
                    // `ok()`: the body's error need not be `Send`; a failure releases the key.
                    let collected = std::future::poll_fn(|cx| collect.poll_collect(cx))
                        .await
                        .ok();
                    let status = parts.status;
                    let completed = match collected {
                        Some(Collected::Whole { data, trailers }) => {
                            Completed::Response(stored_response(&settings, &parts, data, trailers))
                        }
                        // Over the limit: the request ran, its response is not kept.
                        Some(Collected::Over { .. }) => Completed::NotKept { status },
                        None => return,
                    };
                    let retention = settings.retention_for(status);
                    let outcome = store.complete(key, token, completed, retention).await;
                    if let Ok(Completion::Full) = outcome {
                        let not_kept = Completed::NotKept { status };
                        let _ = store.complete(key, token, not_kept, retention).await;
                    }
                    // Stored, superseded, or a store that failed: never released now.
                    guard.token = None;
                });
            }
            // The completion is under way: let it land rather than release under it.
            (
                StateProjReplace::Completing {
                    complete: Some(complete),
                    ..
                },
                Some(_),
            ) => {
                spawn_detached(self.key, async move {
                    let _ = complete.await;
                });
            }
            (_, Some(token)) => {
                tracing::debug!(key = ?self.key, "dropped while holding an idempotency key: releasing it");
                self.release(token);
            }
            _ => {}
        }
    }
}

/// Releases a claim when dropped still armed: a detached task that ends (or unwinds) before it
/// completed the record.
struct ReleaseGuard<St: IdempotencyStore> {
    store: St,
    key: RecordKey,
    /// The claim to release; `None` once the task has settled the record.
    token: Option<FencingToken>,
}

impl<St: IdempotencyStore> Drop for ReleaseGuard<St> {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            tracing::debug!(key = ?self.key, "a detached store of a response ended early: releasing the key");
            finish_detached(self.store.release(self.key, token), self.key, "release");
        }
    }
}

/// Drives a store operation to its end without the request: at once if it is ready (the
/// in-memory store), or as a task.
fn finish_detached<F, T>(operation: F, key: RecordKey, what: &'static str)
where
    F: Future<Output = Result<T, StoreError>> + Send + Unpin + 'static,
    T: Send + 'static,
{
    let mut operation = operation;
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match Pin::new(&mut operation).poll(&mut cx) {
        Poll::Ready(Ok(_)) => {}
        Poll::Ready(Err(error)) => {
            tracing::warn!(%error, ?key, what, "idempotency store operation failed");
        }
        Poll::Pending => spawn_detached(key, async move {
            if let Err(error) = operation.await {
                tracing::warn!(%error, ?key, what, "idempotency store operation failed");
            }
        }),
    }
}

/// Runs `task` on the current tokio runtime, if there is one.
fn spawn_detached(key: RecordKey, task: impl Future<Output = ()> + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(task);
        }
        Err(_) => tracing::warn!(
            ?key,
            "no tokio runtime to finish an idempotency store operation on: the key stays \
             claimed until its lease ends"
        ),
    }
}

/// What is kept of a response: its status, its headers but the hop-by-hop ones and those the
/// layer strips (`Set-Cookie` by default), its body and trailers.
fn stored_response(
    settings: &Config,
    parts: &http::response::Parts,
    data: Bytes,
    trailers: Option<http::HeaderMap>,
) -> Arc<StoredResponse> {
    let mut headers = parts.headers.clone();
    remove_hop_by_hop(&mut headers);
    for name in &settings.strip {
        headers.remove(name);
    }
    Arc::new(StoredResponse::new(parts.status, headers, data, trailers))
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
        (key, owner): (RecordKey, Option<Owner>),
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
                owner,
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
                                claim: Some(request.claim(fingerprint)),
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
                    let Some(pending_claim) = claim.as_mut() else {
                        return Poll::Ready(Ok(reject(IdempotencyRejection::StoreUnavailable)));
                    };
                    let outcome = ready!(Pin::new(pending_claim).poll(cx));
                    *claim = None;
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
                        Ok(ClaimOutcome::Completed(Completed::Response(stored))) => {
                            tracing::debug!(key = ?request.key, "replaying a stored response");
                            return Poll::Ready(Ok(replay(&stored)));
                        }
                        Ok(ClaimOutcome::Completed(Completed::NotKept { status })) => {
                            tracing::debug!(
                                key = ?request.key,
                                "the request ran and its response was not kept: 409"
                            );
                            State::Rejected {
                                rejection: Some(IdempotencyRejection::ResultNotKept { status }),
                            }
                        }
                        Ok(ClaimOutcome::QuotaExceeded) => {
                            tracing::debug!(key = ?request.key, "caller over its quota of keys: 429");
                            State::Rejected {
                                rejection: Some(IdempotencyRejection::QuotaExceeded),
                            }
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
                            claim: Some(request.claim(fingerprint)),
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
                            let stored = stored_response(
                                &request.settings,
                                &parts,
                                data.clone(),
                                trailers.clone(),
                            );
                            let retention = request.settings.retention_for(parts.status);
                            let response = Response::from_parts(
                                parts,
                                ResponseBody::full_with_trailers(data, trailers),
                            );
                            State::Completing {
                                complete: Some(request.store.complete(
                                    request.key,
                                    token,
                                    Completed::Response(stored),
                                    retention,
                                )),
                                response: Some(response),
                            }
                        }
                        Ok(Collected::Over { prefix, rest }) => {
                            *this.held = None;
                            tracing::debug!(
                                key = ?request.key,
                                limit = request.settings.response_limit,
                                "response body over the limit: sent, not stored"
                            );
                            request.complete_not_kept(token, parts.status);
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
                    let Some(pending_complete) = complete.as_mut() else {
                        return Poll::Ready(Ok(reject(IdempotencyRejection::StoreUnavailable)));
                    };
                    let completion = ready!(Pin::new(pending_complete).poll(cx));
                    *complete = None;
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
                        // No room for the response: record that the request ran instead.
                        Ok(Completion::Full) => {
                            request.complete_not_kept(token, response.status());
                        }
                        // The request ran: never release it. The claim holds the key (a
                        // duplicate gets 409) until its lease ends.
                        Err(error) => tracing::warn!(
                            %error,
                            key = ?request.key,
                            "could not store a response: the key stays claimed until its lease ends"
                        ),
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
        let mut claim = Claim::new(self.key, fingerprint, self.settings.lease)
            .with_room_for(self.settings.response_limit);
        if let Some(owner) = self.owner {
            claim = claim.owned_by(owner);
        }
        self.store.claim(claim)
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
        // A bound too far to represent waits as long as the lease allows anyway.
        let until = *self.wait_until.get_or_insert_with(|| {
            now.checked_add(longest)
                .unwrap_or(now + self.settings.lease)
        });
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
