//! The entries: immutable values with their times and refresh word, in a bounded, weighted
//! `quick_cache` map.

use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use quick_cache::sync::{Cache, EntryAction, EntryResult};
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, Weighter};

use super::state::{RefreshWord, Times};

/// One cached value. Never changed once stored: a refresh or a write stores a new entry, and
/// the old one is retired.
#[derive(Debug)]
pub(crate) struct Entry<V> {
    pub(crate) value: V,
    pub(crate) times: Times,
    /// How long the fetch that produced the value took, in ticks (XFetch's δ).
    pub(crate) fetch: u64,
    pub(crate) weight: u64,
    pub(crate) refresh: RefreshWord,
}

/// Weighs an entry by the weight computed once when it was made.
#[derive(Clone, Copy, Debug)]
struct EntryWeight;

impl<K, V> Weighter<K, Arc<Entry<V>>> for EntryWeight {
    fn weight(&self, _key: &K, entry: &Arc<Entry<V>>) -> u64 {
        entry.weight
    }
}

/// Counts evictions, and retires what it evicts.
#[derive(Clone, Debug, Default)]
struct Evictions(Arc<AtomicU64>);

impl<K, V> Lifecycle<K, Arc<Entry<V>>> for Evictions {
    type RequestState = ();

    fn on_evict(&self, _state: &mut (), _key: K, entry: Arc<Entry<V>>) {
        entry.refresh.retire();
        // Relaxed: a statistic.
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

type Map<K, V> = Cache<K, Arc<Entry<V>>, EntryWeight, DefaultHashBuilder, Evictions>;

/// The entries.
pub(crate) struct Store<K, V> {
    map: Map<K, V>,
    evictions: Arc<AtomicU64>,
    /// Whether entries are kept here at all: not for a cache whose only tier is its remote
    /// one. Written once, before the first call.
    local: AtomicBool,
}

impl<K: Hash + Eq + Clone, V> Store<K, V> {
    /// A store of `capacity` weight, expecting about `items` entries.
    pub(crate) fn new(items: usize, capacity: u64) -> Self {
        let evictions = Evictions::default();
        let options = OptionsBuilder::new()
            .estimated_items_capacity(items)
            .weight_capacity(capacity)
            .build();
        let map = match options {
            Ok(options) => Map::with_options(
                options,
                EntryWeight,
                DefaultHashBuilder::default(),
                evictions.clone(),
            ),
            // Both numbers are set, so the options always build; fall back to the plain
            // constructor rather than panic should that ever change.
            Err(_) => Map::with(
                items,
                capacity,
                EntryWeight,
                DefaultHashBuilder::default(),
                evictions.clone(),
            ),
        };
        Self {
            map,
            evictions: evictions.0,
            local: AtomicBool::new(true),
        }
    }

    /// Keeps nothing from now on (a cache whose only tier is a remote one): every insert is
    /// dropped, so every lookup misses.
    pub(crate) fn keep_nothing(&self) {
        // Relaxed: set before the layer serves its first call, which happens after.
        self.local.store(false, Ordering::Relaxed);
        self.clear();
    }

    /// Whether entries are kept here (see [`keep_nothing`](Self::keep_nothing)).
    pub(crate) fn is_local(&self) -> bool {
        self.local.load(Ordering::Relaxed)
    }

    pub(crate) fn get(&self, key: &K) -> Option<Arc<Entry<V>>> {
        self.map.get(key)
    }

    /// Stores `entry` under `key`, retiring the entry it replaces.
    pub(crate) fn insert(&self, key: K, entry: Arc<Entry<V>>) {
        if !self.is_local() {
            return;
        }
        if let Some(old) = self.map.peek(&key) {
            old.refresh.retire();
        }
        self.map.insert(key, entry);
    }

    /// Replaces `current` with `entry` if the store still holds `current` under `key`,
    /// checked and replaced under the shard's lock (invariant 2). Returns whether it did.
    pub(crate) fn replace_if_current(
        &self,
        key: &K,
        current: &Arc<Entry<V>>,
        entry: Arc<Entry<V>>,
    ) -> bool {
        // A zero timeout: this store makes no placeholders, so a vacant key's own guard (dropped
        // at once) is the only one another call could meet, and the key is then vacant anyway.
        let result = self.map.entry(key, Some(Duration::ZERO), |_, held| {
            if Arc::ptr_eq(held, current) {
                *held = entry;
                EntryAction::Retain(true)
            } else {
                EntryAction::Retain(false)
            }
        });
        match result {
            EntryResult::Retained(replaced) => {
                if replaced {
                    current.refresh.retire();
                }
                replaced
            }
            // Removed (invalidated) meanwhile: the guard is dropped unused, nothing stored.
            _ => false,
        }
    }

    /// Removes `current` from under `key` if the store still holds it there (an entry written
    /// meanwhile stays).
    #[cfg(feature = "http")]
    pub(crate) fn remove_if_current(&self, key: &K, current: &Arc<Entry<V>>) {
        let result = self.map.entry(key, Some(Duration::ZERO), |_, held| {
            if Arc::ptr_eq(held, current) {
                EntryAction::Remove
            } else {
                EntryAction::Retain(())
            }
        });
        if let EntryResult::Removed(_, old) = result {
            old.refresh.retire();
        }
    }

    /// Removes `key`'s entry, retiring it.
    pub(crate) fn remove(&self, key: &K) -> bool {
        match self.map.remove(key) {
            Some((_, old)) => {
                old.refresh.retire();
                true
            }
            None => false,
        }
    }

    /// Removes every entry, retiring each.
    pub(crate) fn clear(&self) {
        for (_, old) in self.map.drain() {
            old.refresh.retire();
        }
    }

    /// The heaviest entry one shard can hold: `quick_cache` refuses heavier ones.
    pub(crate) fn shard_capacity(&self) -> u64 {
        self.map.shard_capacity()
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn weight(&self) -> u64 {
        self.map.weight()
    }

    pub(crate) fn evictions(&self) -> u64 {
        // Relaxed: a statistic.
        self.evictions.load(Ordering::Relaxed)
    }
}
