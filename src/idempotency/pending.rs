//! A covered request on its way through the response future, and the step each state of that
//! future takes once what it waited for is ready: each returns the next state, or the answer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::config::Config;
use super::config::{InFlight, OversizedBody, StoreFailure};
use super::error::IdempotencyRejection;
use super::fingerprint::{Fingerprint, RecordKey};
use super::future::{State, Step};
use super::response::{cannot_happen, replay, stored_response};
use super::store::{
    Claim, ClaimOutcome, Completed, Completion, FencingToken, IdempotencyStore, StoreError,
};
use crate::clock::Instant;
use crate::error::BoxError;
use crate::http::replay_body::{Collect, Collected};
use crate::http::{ReplayBody, ResponseBody};

/// The first wait between two looks at a key in flight, when duplicates wait.
pub(super) const FIRST_WAIT_STEP: Duration = Duration::from_millis(10);
/// The longest wait between two looks.
const MAX_WAIT_STEP: Duration = Duration::from_millis(250);

/// A covered request on its way: what the states after `Reading` need.
pub(super) struct Pending<S, St, B> {
    pub(super) settings: Arc<Config>,
    pub(super) store: St,
    pub(super) key: RecordKey,
    pub(super) service: Option<S>,
    /// Until the body is read.
    pub(super) parts: Option<http::request::Parts>,
    /// Once the body is read, until the request is sent.
    pub(super) request: Option<Request<ReplayBody<B>>>,
    pub(super) fingerprint: Option<Fingerprint>,
    /// When a waiting duplicate gives up, once it has started waiting.
    pub(super) wait_until: Option<Instant>,
    pub(super) wait_step: Duration,
}

/// A state that answers `rejection`.
fn rejected<S, St, B, ResB>(rejection: IdempotencyRejection) -> State<S, St, B, ResB>
where
    S: Service<Request<ReplayBody<B>>>,
    St: IdempotencyStore,
{
    State::Rejected {
        rejection: Some(rejection),
    }
}

impl<S, St, B> Pending<S, St, B>
where
    S: Service<Request<ReplayBody<B>>>,
    St: IdempotencyStore,
{
    /// `Reading`: the request body was read whole (fingerprint it, then claim the key), passed
    /// the limit (413, or run unprotected), or failed (400).
    pub(super) fn body_read<ResB>(
        &mut self,
        collected: Result<Collected<B>, B::Error>,
    ) -> State<S, St, B, ResB>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let Some(parts) = self.parts.take() else {
            return rejected(cannot_happen(
                "request parts taken before the body was read",
            ));
        };
        match collected {
            Ok(Collected::Whole { data, trailers }) => {
                let fingerprint =
                    Fingerprint::new(&parts.method, parts.uri.path(), parts.uri.query(), &data);
                self.fingerprint = Some(fingerprint);
                self.request = Some(Request::from_parts(
                    parts,
                    ReplayBody::kept_with_trailers(data, trailers),
                ));
                State::Claiming {
                    claim: Some(self.claim(fingerprint)),
                }
            }
            Ok(Collected::Over { prefix, rest }) => match self.settings.oversized {
                OversizedBody::Reject => rejected(IdempotencyRejection::BodyTooLarge {
                    limit: self.settings.body_limit,
                }),
                OversizedBody::PassThrough => {
                    tracing::debug!(
                        key = ?self.key,
                        "request body over the limit: running it unprotected"
                    );
                    self.settings.outcomes.count("unprotected");
                    let body = ReplayBody::streaming(prefix, rest);
                    match self.service.take() {
                        Some(mut service) => State::Passed {
                            future: service.call(Request::from_parts(parts, body)),
                        },
                        None => rejected(cannot_happen("service taken before the call")),
                    }
                }
            },
            Err(error) => {
                let error: BoxError = error.into();
                tracing::debug!(%error, "the request body failed while read");
                rejected(IdempotencyRejection::BodyUnreadable)
            }
        }
    }

    /// `Claiming`: the store answered the claim. Claimed: call the handler, holding the key in
    /// `held`. Otherwise replay, wait, or answer with the rejection.
    pub(super) fn claimed<ResB>(
        &mut self,
        outcome: Result<ClaimOutcome, StoreError>,
        held: &mut Option<FencingToken>,
    ) -> Step<S, St, B, ResB> {
        Step::Next(match outcome {
            Ok(ClaimOutcome::Claimed(token)) => {
                self.settings.outcomes.count("claimed");
                *held = Some(token);
                match self.send() {
                    Some(future) => State::Calling { future },
                    None => rejected(cannot_happen("request sent twice")),
                }
            }
            Ok(ClaimOutcome::Completed(Completed::Response(stored))) => {
                tracing::debug!(key = ?self.key, "replaying a stored response");
                self.settings.outcomes.count("replayed");
                return Step::Answer(Ok(replay(&stored)));
            }
            Ok(ClaimOutcome::Completed(Completed::NotKept { status })) => {
                tracing::debug!(
                    key = ?self.key,
                    "the request ran and its response was not kept: 409"
                );
                rejected(IdempotencyRejection::ResultNotKept { status })
            }
            Ok(ClaimOutcome::QuotaExceeded) => {
                tracing::debug!(key = ?self.key, "caller over its quota of keys: 429");
                rejected(IdempotencyRejection::QuotaExceeded)
            }
            Ok(ClaimOutcome::InFlight { lease_left }) => self.in_flight(lease_left),
            Ok(ClaimOutcome::Mismatch) => {
                tracing::debug!(key = ?self.key, "idempotency key reused");
                rejected(IdempotencyRejection::KeyReused)
            }
            Ok(ClaimOutcome::Full) => {
                tracing::warn!("idempotency store full: refusing a new key");
                rejected(IdempotencyRejection::StoreFull)
            }
            Err(error) => match self.settings.store_failure {
                StoreFailure::FailClosed => {
                    tracing::warn!(%error, "idempotency store failed: answering 503");
                    rejected(IdempotencyRejection::StoreUnavailable)
                }
                StoreFailure::FailOpen => {
                    tracing::warn!(
                        %error,
                        "idempotency store failed: running the request unprotected"
                    );
                    self.settings.outcomes.count("unprotected");
                    match self.send() {
                        Some(future) => State::Passed { future },
                        None => rejected(cannot_happen("request sent twice")),
                    }
                }
            },
        })
    }

    /// `Waiting`: a duplicate's wait is over; look at the key again.
    pub(super) fn woke<ResB>(&self) -> State<S, St, B, ResB> {
        match self.fingerprint {
            Some(fingerprint) => State::Claiming {
                claim: Some(self.claim(fingerprint)),
            },
            None => rejected(cannot_happen("waiting without a fingerprint")),
        }
    }

    /// `Calling`: the handler answered. An error, or a status the policy does not store,
    /// releases the key and goes back as it is; a status to store is read for storing.
    pub(super) fn called<ResB>(
        &self,
        result: Result<Response<ResB>, S::Error>,
        token: FencingToken,
        held: &mut Option<FencingToken>,
    ) -> Step<S, St, B, ResB> {
        match result {
            Err(error) => {
                *held = None;
                self.release(token);
                tracing::debug!(key = ?self.key, "the request failed: key released");
                Step::Answer(Err(error))
            }
            Ok(response) if !(self.settings.stores)(response.status()) => {
                *held = None;
                self.release(token);
                tracing::debug!(
                    key = ?self.key,
                    status = %response.status(),
                    "response not stored: key released"
                );
                Step::Answer(Ok(response.map(ResponseBody::new)))
            }
            Ok(response) => {
                let (parts, body) = response.into_parts();
                Step::Next(State::Storing {
                    collect: Collect::new(body, self.settings.response_limit),
                    parts: Some(parts),
                })
            }
        }
    }

    /// `Storing`: the response body was read whole (complete the record with it), passed the
    /// limit (record that the request ran, send the response on unstored), or failed (release
    /// the key; the client gets the failing body).
    pub(super) fn response_read<ResB>(
        &self,
        collected: Result<Collected<ResB>, ResB::Error>,
        parts: http::response::Parts,
        token: FencingToken,
        held: &mut Option<FencingToken>,
    ) -> Step<S, St, B, ResB>
    where
        ResB: Body<Data = Bytes>,
        ResB::Error: Into<BoxError>,
    {
        match collected {
            Ok(Collected::Whole { data, trailers }) => {
                let stored =
                    stored_response(&self.settings, &parts, data.clone(), trailers.clone());
                let retention = self.settings.retention_for(parts.status);
                let response =
                    Response::from_parts(parts, ResponseBody::full_with_trailers(data, trailers));
                let completed = Completed::Response(stored);
                Step::Next(State::Completing {
                    complete: Some(self.store.complete(
                        self.key,
                        token,
                        completed.clone(),
                        retention,
                    )),
                    completed: Some(completed),
                    response: Some(response),
                })
            }
            Ok(Collected::Over { prefix, rest }) => {
                *held = None;
                tracing::debug!(
                    key = ?self.key,
                    limit = self.settings.response_limit,
                    "response body over the limit: sent, not stored"
                );
                self.complete_not_kept(token, parts.status);
                Step::Answer(Ok(Response::from_parts(
                    parts,
                    ResponseBody::prefixed(prefix, rest),
                )))
            }
            Err(error) => {
                *held = None;
                self.release(token);
                tracing::debug!(key = ?self.key, "the response body failed: key released");
                Step::Answer(Ok(Response::from_parts(
                    parts,
                    ResponseBody::failed(error.into()),
                )))
            }
        }
    }

    /// `Completing`: the store answered the completion. Whatever it said, the request ran, so
    /// the key is never released now; the response goes to the client.
    pub(super) fn completed(
        &self,
        completion: Result<Completion, StoreError>,
        token: FencingToken,
        status: http::StatusCode,
        completed: Option<Completed>,
    ) {
        match completion {
            Ok(Completion::Stored) => {}
            Ok(Completion::Superseded) => tracing::warn!(
                key = ?self.key,
                "the key's lease ended and another request took it over: this response was \
                 not stored"
            ),
            // No room for the response: record that the request ran instead.
            Ok(Completion::Full) => self.complete_not_kept(token, status),
            // The claim holds the key (a duplicate gets 409) meanwhile; the record must say
            // the request ran before the lease ends, or a retry would run it again.
            Err(error) => {
                tracing::warn!(
                    %error,
                    key = ?self.key,
                    "could not store a response: trying again until the key's lease ends"
                );
                let completed = completed.unwrap_or(Completed::NotKept { status });
                self.record_detached(token, completed, status, Err(error));
            }
        }
    }

    pub(super) fn claim(&self, fingerprint: Fingerprint) -> St::ClaimFuture {
        let claim = Claim::new(self.key, fingerprint, self.settings.lease)
            .with_room_for(self.settings.response_limit);
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
        let conflict = rejected(IdempotencyRejection::KeyInFlight {
            retry_after: self.settings.in_flight_retry_after,
        });
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
