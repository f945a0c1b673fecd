//! What the idempotency layer finishes without the request: a key given back, a response
//! stored after the client left, a store operation run to its end as a task of its own.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

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
        let complete = self.store.complete(
            self.key,
            token,
            Completed::NotKept { status },
            self.settings.retention_for(status),
        );
        finish_detached(complete, self.key, "complete");
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
