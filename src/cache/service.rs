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
use super::hooks::{CacheEvent, Callbacks, OnEvent, tell};
use super::remote::{
    FIRST_LOOK_PAUSE, LockToken, MAX_LOOK_PAUSE, Remote, RemoteEntry, RemoteError,
};
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
    callbacks: Callbacks<K, V>,
}

impl<S, F, C, K, V> Cache<S, F, C, K, V> {
    pub(crate) fn new(
        inner: S,
        key_of: F,
        classifier: Arc<C>,
        shared: Arc<Shared<K, V>>,
        callbacks: Callbacks<K, V>,
    ) -> Self {
        Self {
            inner,
            key_of,
            classifier,
            shared,
            callbacks,
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
            callbacks: self.callbacks.clone(),
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
            self.callbacks.clone(),
        )))
    }
}

impl<S, F, C, K, V> Cache<S, F, C, K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Starts `entry`'s background refresh with `req` (see [`start_refresh`]).
    fn refresh<Req>(&self, key: K, entry: &Arc<Entry<V>>, req: Req, now: u64)
    where
        S: Service<Req, Response = V> + Clone + Send + 'static,
        S::Future: Send,
        S::Error: Send,
        C: Classify<V, S::Error> + Send + Sync + 'static,
        Req: Send + 'static,
    {
        let inner = || self.inner.clone();
        let on_event = self.callbacks.on_event.as_ref();
        start_refresh(
            &self.shared,
            &self.classifier,
            on_event,
            inner,
            key,
            entry,
            req,
            now,
        );
    }
}

/// Starts `entry`'s background refresh through the service `inner` makes, with `req`, if this
/// caller wins its claim, a refresh slot is free and a runtime is there to run it.
#[allow(clippy::too_many_arguments)] // each is one part of the job; a struct would only rename them
fn start_refresh<S, C, K, V, Req>(
    shared: &Arc<Shared<K, V>>,
    classifier: &Arc<C>,
    on_event: Option<&OnEvent<K>>,
    inner: impl FnOnce() -> S,
    key: K,
    entry: &Arc<Entry<V>>,
    req: Req,
    now: u64,
) where
    S: Service<Req, Response = V> + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    C: Classify<V, S::Error> + Send + Sync + 'static,
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    Req: Send + 'static,
{
    let Some((claim, runtime, slot)) = shared.background_refresh(entry, now) else {
        return;
    };
    let mut inner = inner();
    let classifier = Arc::clone(classifier);
    let on_event = on_event.cloned();
    let shared = Arc::clone(shared);
    let old = Arc::clone(entry);
    // Without a local tier, a write since this instant keeps the refresh unpublished.
    let generation = shared.flights.generation();
    // Dropped unrun if the runtime is shutting down: the claim then lapses on its own.
    runtime.spawn(async move {
        let _slot = slot;
        // Given up on every way out but a publication (whose put gives it up).
        let mut remote_lock = None;
        if let Some(remote) = shared.remote.get() {
            let token = LockToken::new();
            let refresh =
                remote_refresh(&shared, remote, &key, &old, token, on_event.as_ref()).await;
            if refresh == RemoteRefresh::Locked {
                remote_lock = Some(RemoteLock::held(&shared, &key, token));
            }
            if refresh == RemoteRefresh::Elsewhere {
                let pause = Shared::<K, V>::ticks(MAX_LOOK_PAUSE);
                old.refresh
                    .release(claim, shared.now().saturating_add(pause));
                return;
            }
        }
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
            Ok(result) if classifier.classify(&result) == Outcome::Success => result
                .ok()
                .and_then(|value| shared.entry(&key, value, done, done.saturating_sub(now))),
            _ => None,
        };
        match stored {
            Some(fresh) => {
                // Published only once stored (without a local tier: unless written
                // since): an invalidation meanwhile wins remotely too.
                let mut published = false;
                let token = remote_lock.as_ref().map(RemoteLock::token);
                let applied = if shared.store.is_local() {
                    let applied = shared
                        .store
                        .replace_if_current(&key, &old, Arc::clone(&fresh));
                    if applied {
                        published = publish(&shared, &key, &fresh, done, token);
                    }
                    applied
                } else {
                    let mut applied = false;
                    shared.flights.store_unless_written(generation, || {
                        published = publish(&shared, &key, &fresh, done, token);
                        applied = true;
                    });
                    applied
                };
                if published {
                    if let Some(lock) = remote_lock.take() {
                        lock.disarm();
                    }
                }
                if applied {
                    shared.counters.refreshes.add();
                    tell(on_event.as_ref(), &key, CacheEvent::Refreshed);
                } else {
                    tracing::debug!(
                        target: "palisade::cache",
                        "refresh result dropped: the entry was replaced or invalidated meanwhile"
                    );
                }
            }
            None => {
                drop(remote_lock.take());
                shared.counters.refresh_failures.add();
                tell(on_event.as_ref(), &key, CacheEvent::RefreshFailed);
                let backoff = Shared::<K, V>::ticks(shared.config.refresh_backoff);
                old.refresh.release(claim, done.saturating_add(backoff));
                tracing::debug!(target: "palisade::cache", "refresh failed; the stale entry stays");
            }
        }
    });
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
    callbacks: Callbacks<K, V>,
) -> Result<V, BoxError>
where
    S: Service<Req, Response = V> + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError> + Send,
    C: Classify<V, S::Error> + Send + Sync + 'static,
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    Req: Send + 'static,
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
            callbacks.tell(&key, CacheEvent::Coalesced);
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
    let mut fallback = fallback;
    // Given up on every way out but a publication, the caller's going away included.
    let mut remote_lock = None;
    if let Some(remote) = shared.remote.get() {
        let token = LockToken::new();
        match from_remote(&shared, remote, &key, token).await {
            FromRemote::Entry(entry) => {
                shared.counters.remote_hits.add();
                callbacks.tell(&key, CacheEvent::RemoteHit);
                let value = entry.value.clone();
                let now = shared.now();
                if !shared.store.is_local() && entry.times.phase(now) == Phase::Stale {
                    // No local tier to find it stale on a later call: this one refreshes it.
                    start_refresh(
                        &shared,
                        &classifier,
                        callbacks.on_event.as_ref(),
                        || inner,
                        key.clone(),
                        &entry,
                        req,
                        now,
                    );
                }
                let store = || shared.store.insert(key.clone(), entry);
                match leader {
                    Some(leader) => leader.land(Landing::Value(value.clone()), store),
                    None => shared.flights.store_unless_written(generation, store),
                }
                return Ok(value);
            }
            FromRemote::Value(value) => {
                shared.counters.remote_hits.add();
                callbacks.tell(&key, CacheEvent::RemoteHit);
                if let Some(leader) = leader {
                    leader.land(Landing::Value(value.clone()), || {});
                }
                return Ok(value);
            }
            FromRemote::Fetch { expired, locked } => {
                fallback = fallback.or(expired);
                remote_lock = locked.then(|| RemoteLock::held(&shared, &key, token));
            }
        }
    }
    shared.counters.misses.add();
    callbacks.tell(&key, CacheEvent::Miss);
    let started = shared.now();
    let result = inner.call(req).await;
    let done = shared.now();
    if classifier.classify(&result) == Outcome::Success {
        if let Ok(value) = result {
            let entry = shared.entry(&key, value.clone(), done, done.saturating_sub(started));
            if entry.is_none() {
                shared.counters.uncached.add();
            }
            // Published only if stored here: a fetch that an invalidation overtook is not.
            let publication = entry.as_ref().and_then(|entry| {
                let token = remote_lock.as_ref().map(RemoteLock::token);
                Publication::of(&shared, &key, entry, done, token)
            });
            let published = std::cell::Cell::new(false);
            let store = || {
                if let Some(entry) = entry {
                    if let Some(publication) = publication {
                        publication.send();
                        published.set(true);
                    }
                    shared.store.insert(key.clone(), entry);
                }
            };
            match leader {
                Some(leader) => leader.land(Landing::Value(value.clone()), store),
                None => shared.flights.store_unless_written(generation, store),
            }
            if published.get() {
                if let Some(lock) = remote_lock.take() {
                    lock.disarm();
                }
            }
            return Ok(value);
        }
    }
    // A failure: the other instances waiting on this one's remote lock may try at once.
    drop(remote_lock.take());
    // An old value still covering errors stands in for it (stale-if-error).
    if let Some(old) = fallback.filter(|old| old.times.covers_errors(done)) {
        shared.counters.stale_if_error.add();
        callbacks.tell(&key, CacheEvent::StaleIfError);
        tracing::debug!(target: "palisade::cache", "fetch failed; serving the stale entry (stale-if-error)");
        let value = match &callbacks.mark {
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

/// What the remote tier said about a key the local tier misses.
enum FromRemote<V> {
    /// An entry to serve (fresh or stale) and take into the local tier.
    Entry(Arc<Entry<V>>),
    /// A value to serve that is too heavy for the local tier.
    Value(V),
    /// Fetch from the origin (this caller holds the remote lock, another instance's fetch did
    /// not land in time, or the remote failed), with an expired entry to stand in for a
    /// failure, if the remote had one.
    Fetch {
        expired: Option<Arc<Entry<V>>>,
        /// Whether this caller holds the key's remote lock (given up if the fetch fails).
        locked: bool,
    },
}

/// Looks `key` up in the remote tier, and while another instance holds its lock, looks again
/// (5 ms apart, doubling to 50 ms) for up to half the lock timeout: the local waiters behind
/// this leader wait the whole lock timeout, so the leader still has time to fetch itself.
async fn from_remote<K, V>(
    shared: &Shared<K, V>,
    remote: &Remote<K, V>,
    key: &K,
    token: LockToken,
) -> FromRemote<V>
where
    K: Hash + Eq + Clone + 'static,
    V: Clone + 'static,
{
    let bytes = remote.codec.key(key);
    let lease = shared.config.lock_timeout;
    let deadline = tokio::time::Instant::now() + lease / 2;
    let mut pause = FIRST_LOOK_PAUSE;
    loop {
        let lookup = match remote.store.lookup(&bytes, lease, token).await {
            Ok(lookup) => lookup,
            Err(error) => {
                shared.counters.remote_errors.add();
                tracing::debug!(target: "palisade::cache", %error, "remote tier failed: fetching from the origin");
                return FromRemote::Fetch {
                    expired: None,
                    locked: false,
                };
            }
        };
        let mut expired = None;
        if let Some(found) = lookup.entry {
            let Some(value) = remote.codec.decode(&found.value) else {
                shared.counters.remote_errors.add();
                tracing::debug!(target: "palisade::cache", "remote entry does not decode: fetching from the origin");
                return FromRemote::Fetch {
                    expired: None,
                    locked: lookup.locked,
                };
            };
            let now = shared.now();
            match shared.entry_from_remote(key, value.clone(), &found, now) {
                Some(entry) => match entry.times.phase(now) {
                    Phase::Fresh | Phase::Stale => return FromRemote::Entry(entry),
                    Phase::Expired => expired = Some(entry),
                    Phase::Dead => {}
                },
                None if !found.stale_for.is_zero() => return FromRemote::Value(value),
                None => {}
            }
        }
        if lookup.locked || tokio::time::Instant::now() + pause > deadline {
            return FromRemote::Fetch {
                expired,
                locked: lookup.locked,
            };
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_LOOK_PAUSE);
    }
}

/// Who refreshes a stale entry, as the remote tier says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RemoteRefresh {
    /// Another instance: it published a fresher entry already (taken into the local tier), or
    /// holds the key's remote lock and is refreshing it (the local claim is then given back,
    /// and a later stale hit looks again).
    Elsewhere,
    /// This instance, holding the key's remote lock.
    Locked,
    /// This instance, without the lock: the remote failed.
    Unlocked,
}

/// Asks the remote tier who refreshes `key`'s stale entry `old`.
async fn remote_refresh<K, V>(
    shared: &Shared<K, V>,
    remote: &Remote<K, V>,
    key: &K,
    old: &Arc<Entry<V>>,
    token: LockToken,
    on_event: Option<&OnEvent<K>>,
) -> RemoteRefresh
where
    K: Hash + Eq + Clone + 'static,
    V: Clone + 'static,
{
    let bytes = remote.codec.key(key);
    let lease = shared.config.lock_timeout;
    let failed = |error: RemoteError| {
        shared.counters.remote_errors.add();
        tracing::debug!(target: "palisade::cache", %error, "remote tier failed: refreshing from the origin");
        RemoteRefresh::Unlocked
    };
    let lookup = match remote.store.lookup(&bytes, lease, token).await {
        Ok(lookup) => lookup,
        Err(error) => return failed(error),
    };
    let now = shared.now();
    let newer = lookup.entry.and_then(|found| {
        let value = remote.codec.decode(&found.value)?;
        shared.entry_from_remote(key, value, &found, now)
    });
    if let Some(entry) = newer.filter(|entry| {
        entry.times.phase(now) == Phase::Fresh && entry.times.fresh_until > old.times.fresh_until
    }) {
        if shared.store.replace_if_current(key, old, entry) {
            shared.counters.remote_hits.add();
            tell(on_event, key, CacheEvent::RemoteHit);
        }
        return RemoteRefresh::Elsewhere;
    }
    if lookup.locked {
        // The remote entry is past its stale window too: this instance holds the lock now.
        return RemoteRefresh::Locked;
    }
    match remote.store.lock(&bytes, lease, token).await {
        Ok(true) => RemoteRefresh::Locked,
        Ok(false) => {
            tracing::debug!(
                target: "palisade::cache",
                "another instance is refreshing: serving stale meanwhile"
            );
            RemoteRefresh::Elsewhere
        }
        Err(error) => failed(error),
    }
}

/// A remote lock this instance holds: given up when dropped (on a task of its own), unless a
/// publication, whose put gives it up, was sent ([`disarm`](Self::disarm)). Held across a
/// fetch, so a fetch that fails, stores nothing, publishes nothing or whose caller goes away
/// lets the other instances go to the origin at once rather than wait out its lease.
struct RemoteLock<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    shared: Arc<Shared<K, V>>,
    key: Option<K>,
    token: LockToken,
}

impl<K, V> RemoteLock<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn held(shared: &Arc<Shared<K, V>>, key: &K, token: LockToken) -> Self {
        Self {
            shared: Arc::clone(shared),
            key: Some(key.clone()),
            token,
        }
    }

    fn token(&self) -> LockToken {
        self.token
    }

    /// A publication gives the lock up: nothing more to do.
    fn disarm(mut self) {
        self.key = None;
    }
}

impl<K, V> Drop for RemoteLock<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn drop(&mut self) {
        let Some(key) = self.key.take() else {
            return;
        };
        if let Some(remote) = self.shared.remote.get() {
            let bytes = remote.codec.key(&key);
            super::remote::spawn_unlock(&self.shared, &remote.store, bytes, self.token);
        }
    }
}

/// Sends `entry` to the remote tier, on a task of its own (the callers have their value
/// already): one round trip, which also gives up the key's remote lock if `token` holds it.
/// Whether anything was sent (not without a remote tier, a codec that keeps the value local,
/// or life left).
pub(crate) fn publish<K, V>(
    shared: &Arc<Shared<K, V>>,
    key: &K,
    entry: &Entry<V>,
    now: u64,
    token: Option<LockToken>,
) -> bool
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    match Publication::of(shared, key, entry, now, token) {
        Some(publication) => {
            publication.send();
            true
        }
        None => false,
    }
}

/// An entry encoded for the remote tier, ready to send: encoded outside any lock, sent (a
/// spawned task, nothing more) where the local store decides it is stored.
struct Publication<K, V> {
    shared: Arc<Shared<K, V>>,
    key: Vec<u8>,
    entry: RemoteEntry,
    token: Option<LockToken>,
}

impl<K, V> Publication<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// `entry` for the remote, if there is a remote tier, the codec encodes the value and the
    /// entry has life left at `now`; its put gives up the lock `token` holds.
    fn of(
        shared: &Arc<Shared<K, V>>,
        key: &K,
        entry: &Entry<V>,
        now: u64,
        token: Option<LockToken>,
    ) -> Option<Self> {
        let remote = shared.remote.get()?;
        Some(Self {
            entry: shared.remote_entry(entry, now)?,
            key: remote.codec.key(key),
            shared: Arc::clone(shared),
            token,
        })
    }

    fn send(self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some(remote) = self.shared.remote.get() else {
            return;
        };
        let store = Arc::clone(&remote.store);
        runtime.spawn(async move {
            if let Err(error) = store.put(&self.key, self.entry, self.token).await {
                self.shared.counters.remote_errors.add();
                tracing::debug!(target: "palisade::cache", %error, "could not publish an entry to the remote tier");
            }
        });
    }
}
