//! [`Cache`]: the service. A hit is answered from the entry without touching the inner
//! service; a stale hit also starts one background refresh; a miss joins the key's single
//! flight.

use std::fmt;
use std::future::poll_fn;
use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::config::LeaderFailure;
use super::error::LeaderFailed;
use super::flight::{self, Landing, Role};
use super::future::ResponseFuture;
use super::layer::MarkStale;
use super::shared::Shared;
use super::state::Phase;
use super::store::Entry;
use crate::classify::{Classify, Outcome};
use crate::error::BoxError;

/// Serves responses from a stale-while-revalidate cache: see the [module docs](crate::cache).
pub struct Cache<S, F, C, K, V> {
    inner: S,
    key_of: F,
    classifier: Arc<C>,
    shared: Arc<Shared<K, V>>,
    mark: Option<MarkStale<V>>,
}

impl<S, F, C, K, V> Cache<S, F, C, K, V> {
    pub(crate) fn new(
        inner: S,
        key_of: F,
        classifier: Arc<C>,
        shared: Arc<Shared<K, V>>,
        mark: Option<MarkStale<V>>,
    ) -> Self {
        Self {
            inner,
            key_of,
            classifier,
            shared,
            mark,
        }
    }
}

impl<S: Clone, F: Clone, C, K, V> Clone for Cache<S, F, C, K, V> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            key_of: self.key_of.clone(),
            classifier: Arc::clone(&self.classifier),
            shared: Arc::clone(&self.shared),
            mark: self.mark.clone(),
        }
    }
}

impl<S: fmt::Debug, F, C, K, V> fmt::Debug for Cache<S, F, C, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("name", &self.shared.config.name)
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, F, C, K, V, Req> Service<Req> for Cache<S, F, C, K, V>
where
    S: Service<Req, Response = V> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError> + Send,
    F: Fn(&Req) -> Option<K>,
    C: Classify<V, S::Error> + Send + Sync + 'static,
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    Req: Send + 'static,
{
    type Response = V;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, V>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let Some(key) = (self.key_of)(&req) else {
            return ResponseFuture::bypass(self.inner.call(req));
        };
        let shared = &self.shared;
        let now = shared.now();
        let fallback = match shared.store.get(&key) {
            Some(entry) => match entry.times.phase(now) {
                Phase::Fresh => {
                    shared.counters.hits.add();
                    if shared.refresh_early(&entry, now) {
                        self.refresh(key, &entry, req, now);
                    }
                    return ResponseFuture::ready(entry.value.clone());
                }
                Phase::Stale => {
                    shared.counters.stale_hits.add();
                    self.refresh(key, &entry, req, now);
                    return ResponseFuture::ready(entry.value.clone());
                }
                Phase::Expired => Some(entry),
                Phase::Dead => None,
            },
            None => None,
        };
        // The inner service was driven ready for this call: take that one, leave a clone.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::fetch(Box::pin(fetch(
            Arc::clone(shared),
            Arc::clone(&self.classifier),
            inner,
            key,
            req,
            fallback,
            self.mark.clone(),
        )))
    }
}

impl<S, F, C, K, V> Cache<S, F, C, K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Starts `entry`'s background refresh with `req`, if this caller wins its claim, a refresh
    /// slot is free and a runtime is there to run it.
    fn refresh<Req>(&self, key: K, entry: &Arc<Entry<V>>, req: Req, now: u64)
    where
        S: Service<Req, Response = V> + Clone + Send + 'static,
        S::Future: Send,
        S::Error: Send,
        C: Classify<V, S::Error> + Send + Sync + 'static,
        Req: Send + 'static,
    {
        let shared = &self.shared;
        let lapses = now.saturating_add(Shared::<K, V>::ticks(shared.config.lock_timeout));
        let Some(claim) = entry.refresh.try_claim(now, lapses) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            entry.refresh.release(claim, now);
            return;
        };
        let Ok(slot) = Arc::clone(&shared.refresh_slots).try_acquire_owned() else {
            // Every slot is busy: serve stale without a refresh; the next stale hit tries again.
            entry.refresh.release(claim, now);
            return;
        };
        let mut inner = self.inner.clone();
        let classifier = Arc::clone(&self.classifier);
        let shared = Arc::clone(shared);
        let old = Arc::clone(entry);
        // Dropped unrun if the runtime is shutting down: the claim then lapses on its own.
        runtime.spawn(async move {
            let _slot = slot;
            let attempt = async {
                match poll_fn(|cx| inner.poll_ready(cx)).await {
                    Ok(()) => inner.call(req).await,
                    Err(error) => Err(error),
                }
            };
            // Bounded by the claim's own life: a refresh that hangs gives its slot back.
            let result = tokio::time::timeout(shared.config.lock_timeout, attempt).await;
            let done = shared.now();
            let stored = match result {
                Ok(result) if classifier.classify(&result) == Outcome::Success => {
                    result.ok().and_then(|value| {
                        shared.entry(&key, value, done, done.saturating_sub(now))
                    })
                }
                _ => None,
            };
            match stored {
                Some(fresh) => {
                    if shared.store.replace_if_current(&key, &old, fresh) {
                        shared.counters.refreshes.add();
                    } else {
                        tracing::debug!(target: "palisade::cache", "refresh result dropped: the entry was replaced or invalidated meanwhile");
                    }
                }
                None => {
                    shared.counters.refresh_failures.add();
                    let backoff = Shared::<K, V>::ticks(shared.config.refresh_backoff);
                    old.refresh.release(claim, done.saturating_add(backoff));
                    tracing::debug!(target: "palisade::cache", "refresh failed; the stale entry stays");
                }
            }
        });
    }
}

/// A miss or an expired entry: join the key's single flight, and call the inner service only as
/// its leader, alone (the table is full), after the lock timeout, or when the leader failed
/// and each waiter tries itself.
async fn fetch<S, C, K, V, Req>(
    shared: Arc<Shared<K, V>>,
    classifier: Arc<C>,
    mut inner: S,
    key: K,
    req: Req,
    fallback: Option<Arc<Entry<V>>>,
    mark: Option<MarkStale<V>>,
) -> Result<V, BoxError>
where
    S: Service<Req, Response = V>,
    S::Error: Into<BoxError>,
    C: Classify<V, S::Error>,
    K: Hash + Eq + Clone,
    V: Clone,
{
    // Taken before anything else: a write after it keeps a fetch outside a flight unstored.
    let generation = shared.flights.generation();
    let mut counted = false;
    let leader = loop {
        let landing = match shared.flights.join(&key) {
            Role::Leader(leader) => {
                // Another leader may have stored the key between this caller's lookup and its
                // join: serve that entry rather than call the origin again.
                if let Some(entry) = shared.store.get(&key) {
                    if entry.times.phase(shared.now()) == Phase::Fresh {
                        let value = entry.value.clone();
                        leader.land(Landing::Value(value.clone()), || {});
                        return Ok(value);
                    }
                }
                break Some(leader);
            }
            Role::Alone => break None,
            Role::Waiter(landing) => landing,
        };
        if !counted {
            shared.counters.coalesced.add();
            counted = true;
        }
        let Some(landed) = flight::wait(landing, shared.config.lock_timeout).await else {
            break None;
        };
        match landed {
            Landing::Value(value) => return Ok(value),
            Landing::Failed(error) => match shared.config.leader_failure {
                LeaderFailure::Share => return Err(LeaderFailed::new(error).into()),
                LeaderFailure::EachTries => break None,
            },
            Landing::Pending | Landing::Abandoned => {
                // The leader went away: the entry may have landed anyway; else lead or wait.
                let now = shared.now();
                if let Some(entry) = shared.store.get(&key) {
                    if entry.times.phase(now) == Phase::Fresh {
                        return Ok(entry.value.clone());
                    }
                }
            }
        }
    };
    shared.counters.misses.add();
    let started = shared.now();
    let result = inner.call(req).await;
    let done = shared.now();
    if classifier.classify(&result) == Outcome::Success {
        if let Ok(value) = result {
            let entry = shared.entry(&key, value.clone(), done, done.saturating_sub(started));
            if entry.is_none() {
                shared.counters.uncached.add();
            }
            let store = || {
                if let Some(entry) = entry {
                    shared.store.insert(key.clone(), entry);
                }
            };
            match leader {
                Some(leader) => leader.land(Landing::Value(value.clone()), store),
                None => shared.flights.store_unless_written(generation, store),
            }
            return Ok(value);
        }
    }
    // A failure: an old value still covering errors stands in for it (stale-if-error).
    if let Some(old) = fallback.filter(|old| old.times.covers_errors(done)) {
        shared.counters.stale_if_error.add();
        tracing::debug!(target: "palisade::cache", "fetch failed; serving the stale entry (stale-if-error)");
        let value = match mark {
            Some(mark) => mark(old.value.clone()),
            None => old.value.clone(),
        };
        if let Some(leader) = leader {
            leader.land(Landing::Value(value.clone()), || {});
        }
        return Ok(value);
    }
    match result {
        // A failure response (the classifier's word) is shared as it is, never stored.
        Ok(value) => {
            if let Some(leader) = leader {
                leader.land(Landing::Value(value.clone()), || {});
            }
            Ok(value)
        }
        Err(error) => {
            let error: BoxError = error.into();
            if let Some(leader) = leader {
                leader.land(Landing::Failed(error.to_string().into()), || {});
            }
            Err(error)
        }
    }
}
