//! [`CacheHandle`]: invalidate, insert, and read the counters.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use super::shared::Shared;

/// Controls one cache layer's entries from outside the request path. Cloning shares the cache.
pub struct CacheHandle<K, V> {
    pub(crate) shared: Arc<Shared<K, V>>,
}

/// A snapshot of a cache's counters (monotonic since it was built) and gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Fresh entries served.
    pub hits: u64,
    /// Stale entries served (each may have started a refresh).
    pub stale_hits: u64,
    /// Calls that reached the inner service for a missing or expired key (leaders, lone
    /// fetches, and waiters that fetched themselves).
    pub misses: u64,
    /// Callers that waited for another caller's fetch.
    pub coalesced: u64,
    /// Background refreshes that stored a new value.
    pub refreshes: u64,
    /// Background refreshes that failed (the stale entry stayed).
    pub refresh_failures: u64,
    /// Failed fetches answered with an old value instead (stale-if-error).
    pub stale_if_error: u64,
    /// Stored responses a `304 Not Modified` renewed (HTTP mode; 0 otherwise).
    pub revalidated: u64,
    /// Misses answered from the remote tier (another instance's fetch), without the origin.
    pub remote_hits: u64,
    /// Remote tier operations that failed (bypassed: the call went on without the remote).
    pub remote_errors: u64,
    /// Successful values not stored: a time to live of zero, or heavier than the entry bound.
    pub uncached: u64,
    /// Entries evicted for room.
    pub evictions: u64,
    /// Entries held now (dead ones not yet evicted included).
    pub entries: u64,
    /// Their total weight.
    pub weight: u64,
    /// Keys being fetched under single flight now.
    pub in_flight: u64,
}

impl<K, V> CacheHandle<K, V> {
    pub(crate) fn new(shared: Arc<Shared<K, V>>) -> Self {
        Self { shared }
    }
}

impl<K, V> CacheHandle<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Removes `key`'s entry. A refresh or fetch of it running now is not stored: the
    /// invalidation wins. Returns whether an entry was there (in this instance).
    ///
    /// With a remote tier, the remote entry is removed too (on a task of its own, one round
    /// trip); the other instances' local entries live on until they expire.
    pub fn invalidate(&self, key: &K) -> bool {
        // Mark the flight first, then remove: see `Flights::finish`.
        self.shared.flights.invalidate(key);
        if let Some(remote) = self.shared.remote.get() {
            super::remote::spawn_remove(&self.shared, &remote.store, remote.codec.key(key));
        }
        self.shared.store.remove(key)
    }

    /// Removes every entry of this instance; every refresh and fetch running now is not stored.
    /// A remote tier's entries are not touched (remove them by key, or move to a new prefix).
    pub fn invalidate_all(&self) {
        self.shared.flights.invalidate_all();
        self.shared.store.clear();
    }

    /// Stores `value` under `key` as if just fetched (fresh for the cache's time to live, or
    /// the value's own), replacing any entry; a refresh or fetch of the key running now is not
    /// stored over it. Returns whether it was stored (not if its time to live is zero or it is
    /// too heavy). With a remote tier, it is published there too.
    pub fn insert(&self, key: K, value: V) -> bool {
        let now = self.shared.now();
        let Some(entry) = self.shared.entry(&key, value, now, 0) else {
            return false;
        };
        // An explicit write holds no lock: it gives none up.
        super::service::publish(&self.shared, &key, &entry, now, None);
        self.shared.flights.invalidate(&key);
        self.shared.store.insert(key, entry);
        true
    }

    /// Whether `key` has an entry a caller would be served now (fresh or stale).
    #[must_use]
    pub fn contains(&self, key: &K) -> bool {
        let now = self.shared.now();
        self.shared.store.get(key).is_some_and(|entry| {
            matches!(
                entry.times.phase(now),
                super::state::Phase::Fresh | super::state::Phase::Stale
            )
        })
    }

    /// The counters and gauges now.
    #[must_use]
    pub fn metrics(&self) -> Metrics {
        let counters = &self.shared.counters;
        Metrics {
            hits: counters.hits.get(),
            stale_hits: counters.stale_hits.get(),
            misses: counters.misses.get(),
            coalesced: counters.coalesced.get(),
            refreshes: counters.refreshes.get(),
            refresh_failures: counters.refresh_failures.get(),
            stale_if_error: counters.stale_if_error.get(),
            uncached: counters.uncached.get(),
            revalidated: counters.revalidated.get(),
            remote_hits: counters.remote_hits.get(),
            remote_errors: counters.remote_errors.get(),
            evictions: self.shared.store.evictions(),
            entries: u64::try_from(self.shared.store.len()).unwrap_or(u64::MAX),
            weight: self.shared.store.weight(),
            in_flight: u64::try_from(self.shared.flights.len()).unwrap_or(u64::MAX),
        }
    }
}

impl<K, V> Clone for CacheHandle<K, V> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K, V> fmt::Debug for CacheHandle<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheHandle")
            .field("name", &self.shared.config.name)
            .finish_non_exhaustive()
    }
}
