//! The cache's optional remote tier: a store shared by every instance of a fleet (Redis, with
//! the `redis` feature), behind each instance's in-memory entries.
//!
//! The local entries stay the first tier: a hit never leaves the process. The remote tier is
//! consulted only where a local cache would call the origin:
//!
//! - a **miss** (or an expired entry) looks the key up in the remote first (one round trip); a
//!   fresh or stale entry there is taken into the local tier and served. Otherwise the same
//!   round trip takes the key's remote **lock** (a lease as long as the lock timeout) if nobody
//!   holds it: the holder calls the origin, and the other instances' leaders look again,
//!   pausing 5 ms, then 10, 20 and at most 50 ms between looks, until the holder's value lands
//!   (or half the lock timeout has passed, then they fetch themselves). A holder whose fetch
//!   fails gives the lock up at once. One origin call per key
//!   for the whole fleet; local callers wait on their own instance's leader as ever.
//! - a **stale** entry's background refresh takes the same lock first: the instance that gets
//!   it refreshes and publishes; another takes the published entry when it lands, and calls
//!   the origin only if it never does.
//! - a value fetched or refreshed is **published** (one round trip) with its times, after the
//!   callers have it: the remote keeps the entry for its whole life (fresh, stale and
//!   stale-if-error windows), and every instance computes the same phase from the remote's own
//!   clock, so no two instances disagree because their clocks do.
//!
//! A remote that fails (down, slow, a value that does not decode) is bypassed: the call goes on
//! as without a remote tier (the origin, or the local entry), and the failure is counted
//! ([`Metrics::remote_errors`](super::Metrics::remote_errors)).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::shared::Shared;
use crate::error::BoxError;

/// A boxed future of a remote store operation.
pub type RemoteFuture<T> = Pin<Box<dyn Future<Output = Result<T, RemoteError>> + Send>>;

/// A remote store failed to answer.
#[derive(Debug, thiserror::Error)]
#[error("the cache's remote store failed")]
pub struct RemoteError {
    #[source]
    source: BoxError,
}

impl RemoteError {
    /// Wraps the store's own error.
    pub fn new(source: impl Into<BoxError>) -> Self {
        Self {
            source: source.into(),
        }
    }
}

/// An entry as a remote store keeps it: the encoded value and its times, each measured from
/// the instant the store answered (or, when writing, from the instant it writes) by the store's
/// own clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteEntry {
    /// The value, as the [`RemoteCodec`] encoded it.
    pub value: Bytes,
    /// How long it is still fresh (zero once stale).
    pub fresh_for: Duration,
    /// How long it may still be served stale while it refreshes (from now, not from the end of
    /// freshness; zero once past that window).
    pub stale_for: Duration,
    /// How long it may still stand in for a failed fetch (stale-if-error; from now).
    pub errors_for: Duration,
    /// How long the fetch that produced it took (XFetch's δ).
    pub fetch: Duration,
}

impl RemoteEntry {
    /// How long the store must keep it: its longest window.
    #[must_use]
    pub fn life(&self) -> Duration {
        self.fresh_for.max(self.stale_for).max(self.errors_for)
    }
}

/// What a [lookup](RemoteStore::lookup) found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lookup {
    /// The entry, if the store has one not past its whole life.
    pub entry: Option<RemoteEntry>,
    /// Whether this caller took the key's lock: tried only when the entry is absent or past
    /// its stale window (so it must be fetched).
    pub locked: bool,
}

/// Who holds a key's remote lock: drawn at random by the caller that takes it, and kept in
/// the lock, so that only its holder gives it up. A holder whose lease lapsed mid-fetch cannot
/// free the lock of the instance that took it over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LockToken(u64);

impl LockToken {
    /// A token no other caller holds (a random 64-bit number).
    #[must_use]
    pub fn new() -> Self {
        Self(random_u64())
    }

    /// Its value, as a store keeps it.
    #[must_use]
    pub fn get(self) -> u64 {
        self.0
    }
}

impl Default for LockToken {
    fn default() -> Self {
        Self::new()
    }
}

/// A random 64-bit number: std's `RandomState` is seeded from the OS, and a count keeps two
/// draws in one process apart even where the seed is reused.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static DRAWN: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    // Relaxed: only distinctness matters.
    hasher.write_u64(DRAWN.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

/// A store shared by a fleet's caches: `palisade::redis::RedisCacheStore` with the `redis`
/// feature, or your own. Keys are the [`RemoteCodec`]'s bytes. Each operation is one round
/// trip to the store, and must be bounded in time (return an error rather than hang).
///
/// A key's lock holds the [`LockToken`] of the caller that took it; only that token gives it
/// up (a put or an unlock with another token, or none, leaves it).
pub trait RemoteStore: Send + Sync + 'static {
    /// The entry under `key`; if there is none that may be served (fresh or stale), also takes
    /// `key`'s lock for `lease` with `token` if nobody holds it. One atomic step.
    fn lookup(&self, key: &[u8], lease: Duration, token: LockToken) -> RemoteFuture<Lookup>;
    /// Stores `entry` under `key` for its [life](RemoteEntry::life), and gives up `key`'s lock
    /// if `token` holds it.
    fn put(&self, key: &[u8], entry: RemoteEntry, token: Option<LockToken>) -> RemoteFuture<()>;
    /// Takes `key`'s lock for `lease` with `token` if nobody holds it: `true` if this caller
    /// holds it now.
    fn lock(&self, key: &[u8], lease: Duration, token: LockToken) -> RemoteFuture<bool>;
    /// Gives up `key`'s lock if `token` holds it (after a failed fetch: the others need not
    /// wait its lease out).
    fn unlock(&self, key: &[u8], token: LockToken) -> RemoteFuture<()>;
    /// Removes `key`'s entry (and its lock, whoever holds it).
    fn remove(&self, key: &[u8]) -> RemoteFuture<()>;
}

/// Turns a cache's keys and values into bytes for a [`RemoteStore`], and back.
///
/// Keys must be stable across the fleet and across releases (the same key, the same bytes),
/// and a value that does not decode (written by another version) is treated as absent.
pub trait RemoteCodec<K, V>: Send + Sync + 'static {
    /// The key's bytes.
    fn key(&self, key: &K) -> Vec<u8>;
    /// The value's bytes, or `None` to keep it local only.
    fn encode(&self, value: &V) -> Option<Bytes>;
    /// The value from its bytes, or `None` if they do not decode.
    fn decode(&self, bytes: &[u8]) -> Option<V>;
}

/// The remote tier a cache layer was given: its store and its codec.
pub(crate) struct Remote<K, V> {
    pub(crate) store: Arc<dyn RemoteStore>,
    pub(crate) codec: Arc<dyn RemoteCodec<K, V>>,
}

impl<K, V> fmt::Debug for Remote<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote").finish_non_exhaustive()
    }
}

/// Removes `key`'s remote entry (and its lock), on a task of its own: an invalidation does not
/// wait for the round trip. A failure is counted in `remote_errors`, not retried.
pub(crate) fn spawn_remove<K, V>(
    shared: &Arc<Shared<K, V>>,
    store: &Arc<dyn RemoteStore>,
    key: Vec<u8>,
) where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let (shared, store) = (Arc::clone(shared), Arc::clone(store));
    runtime.spawn(async move {
        if let Err(error) = store.remove(&key).await {
            shared.counters.remote_errors.add();
            tracing::debug!(target: "palisade::cache", %error, "could not remove a remote entry");
        }
    });
}

/// Gives up `key`'s remote lock if `token` still holds it, on a task of its own: a fetch that
/// publishes nothing lets the instances waiting on it go to the origin at once rather than wait
/// out its lease. A failure is counted in `remote_errors`.
pub(crate) fn spawn_unlock<K, V>(
    shared: &Arc<Shared<K, V>>,
    store: &Arc<dyn RemoteStore>,
    key: Vec<u8>,
    token: LockToken,
) where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let (shared, store) = (Arc::clone(shared), Arc::clone(store));
    runtime.spawn(async move { unlock_now(&shared, &*store, &key, token).await });
}

/// Gives up `key`'s remote lock if `token` holds it, now; a failure is counted.
pub(crate) async fn unlock_now<K, V>(
    shared: &Shared<K, V>,
    store: &dyn RemoteStore,
    key: &[u8],
    token: LockToken,
) {
    if let Err(error) = store.unlock(key, token).await {
        shared.counters.remote_errors.add();
        tracing::debug!(target: "palisade::cache", %error, "could not give up a remote lock");
    }
}

/// The first pause between two looks at the remote while another instance fills a key.
pub(crate) const FIRST_LOOK_PAUSE: Duration = Duration::from_millis(5);
/// The longest pause between two looks.
pub(crate) const MAX_LOOK_PAUSE: Duration = Duration::from_millis(50);
