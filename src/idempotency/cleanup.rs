//! What the idempotency layer finishes without the request: a key given back, a response
//! stored after the client left, a store operation run to its end as a task of its own.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body::Body;
use tower_service::Service;

use super::fingerprint::RecordKey;
use super::future::StateProjReplace;
use super::pending::Pending;
use super::response::stored_response;
use super::store::{
    ClaimOutcome, Completed, Completion, FencingToken, IdempotencyStore, StoreError,
};
use crate::error::BoxError;
use crate::http::ReplayBody;
use crate::http::replay_body::Collected;

impl<S, St: IdempotencyStore, B> Pending<S, St, B> {
    /// Releases `token` without waiting: the in-memory store does it at once; a networked
    /// store's release runs on as a task of its own.
    pub(super) fn release(&self, token: FencingToken) {
        let release = self.store.release(self.key, token);
        finish_detached(release, self.key, "release");
    }

    /// Records that the request holding `token` ran and was answered with `status`, without
    /// its response (which did not fit): a duplicate is told so, and never runs it again.
    pub(super) fn complete_not_kept(&self, token: FencingToken, status: http::StatusCode) {
        tracing::warn!(
            key = ?self.key,
            %status,
            "response not kept for replay: its key records that the request ran"
        );
        let not_kept = Completed::NotKept { status };
        let first = self.store.complete(
            self.key,
            token,
            not_kept.clone(),
            self.settings.retention_for(status),
        );
        let settle = settle(
            self.store.clone(),
            self.key,
            token,
            not_kept,
            (self.settings.retention_for(status), self.settings.lease),
            first,
        );
        finish_detached(Box::pin(settle), self.key, "complete");
    }

    /// Goes on recording `completed` for `token` without the request, after a first attempt
    /// that ended with `first`: see [`settle_after`].
    pub(super) fn record_detached(
        &self,
        token: FencingToken,
        completed: Completed,
        status: http::StatusCode,
        first: Result<Completion, StoreError>,
    ) {
        let settle = settle_after(
            self.store.clone(),
            self.key,
            token,
            completed,
            (self.settings.retention_for(status), self.settings.lease),
            first,
        );
        finish_detached(
            Box::pin(async move { Ok::<_, StoreError>(settle.await) }),
            self.key,
            "complete",
        );
    }

    /// What a dropped request leaves behind, by the state it was dropped in.
    pub(super) fn on_drop<Fut, ResB>(
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
                    let windows = (settings.retention_for(status), settings.lease);
                    let first = store.complete(key, token, completed.clone(), windows.0);
                    // Whatever the store says now, the request ran: never released from here.
                    guard.token = None;
                    let _ = settle(store, key, token, completed, windows, first).await;
                });
            }
            // The completion is under way: let it land rather than release under it.
            (
                StateProjReplace::Completing {
                    complete: Some(complete),
                    completed,
                    response,
                },
                Some(token),
            ) => {
                let status = response.map_or(http::StatusCode::OK, |response| response.status());
                let completed = completed.unwrap_or(Completed::NotKept { status });
                let windows = (self.settings.retention_for(status), self.settings.lease);
                let settle = settle(
                    self.store.clone(),
                    self.key,
                    token,
                    completed,
                    windows,
                    complete,
                );
                spawn_detached(self.key, async move {
                    let _ = settle.await;
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

/// The first pause before a failed completion is tried again.
const FIRST_COMPLETION_RETRY: Duration = Duration::from_millis(100);
/// The longest pause between two tries.
const MAX_COMPLETION_RETRY: Duration = Duration::from_secs(5);

/// Awaits the completion `first` of `completed`, then [`settle_after`] its outcome.
/// `windows` is (retention, lease).
async fn settle<St: IdempotencyStore>(
    store: St,
    key: RecordKey,
    token: FencingToken,
    completed: Completed,
    windows: (Duration, Duration),
    first: St::CompleteFuture,
) -> Result<Completion, StoreError> {
    let outcome = first.await;
    Ok(settle_after(store, key, token, completed, windows, outcome).await)
}

/// Makes the record say that its request ran, after a first completion that ended with
/// `first`: no room for the response records a result not kept instead; a store that failed
/// is tried again, 100 ms later, then doubling to every 5 s, until the lease (`windows.1`)
/// has passed from now. Until then the key stays claimed (duplicates get 409); unrecorded
/// past its lease, a retry could take the key over and run the request again.
///
/// Trying again is safe: a completion is accepted only with the token that still holds the
/// key, so one that did land the first time (its answer lost) is refused the second time
/// (superseded) and changes nothing.
async fn settle_after<St: IdempotencyStore>(
    store: St,
    key: RecordKey,
    token: FencingToken,
    mut completed: Completed,
    (retention, lease): (Duration, Duration),
    first: Result<Completion, StoreError>,
) -> Completion {
    let give_up = tokio::time::Instant::now() + lease;
    let mut pause = FIRST_COMPLETION_RETRY;
    let mut outcome = first;
    loop {
        match outcome {
            Ok(Completion::Full) if matches!(completed, Completed::Response(_)) => {
                completed = Completed::NotKept {
                    status: completed.status(),
                };
            }
            Ok(completion) => return completion,
            Err(error) => {
                if tokio::time::Instant::now() + pause >= give_up {
                    tracing::warn!(
                        %error,
                        ?key,
                        "could not record a completed request before its lease ends: a retry \
                         after the lease may run it again"
                    );
                    return Completion::Superseded;
                }
                tracing::debug!(%error, ?key, ?pause, "completion failed: trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_COMPLETION_RETRY);
            }
        }
        outcome = store
            .complete(key, token, completed.clone(), retention)
            .await;
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
