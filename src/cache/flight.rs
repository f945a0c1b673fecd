//! Single flight: one caller (the leader) fetches a missing or expired key; every other caller
//! for that key waits for the leader's landing, woken once.
//!
//! The table is a map under one lock, touched only on misses (twice per fetch: join and land),
//! never on a hit. A leader's landing is published through a `watch` channel, which wakes each
//! waiter once when the value changes from `Pending`; a waiter that subscribes after the landing
//! sees it at once.
//!
//! A leader whose future is dropped lands `Abandoned` from its guard's `Drop`: the waiters wake,
//! look again, and the first of them to join becomes the next leader, so exactly one more call
//! reaches the inner service and nobody fails because another caller went away.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, PoisonError};

use crate::sync::{Mutex, MutexGuard};

use tokio::sync::watch;

/// What a leader's fetch came to.
#[derive(Clone, Debug)]
pub(crate) enum Landing<V> {
    /// Still fetching.
    Pending,
    /// The value the leader returned (stored or not).
    Value(V),
    /// The fetch failed; the error, as text (errors are not `Clone`).
    Failed(Arc<str>),
    /// The leader went away without a result: look again.
    Abandoned,
}

struct Flight<V> {
    landing: watch::Sender<Landing<V>>,
    /// Set by an invalidation while the fetch runs: its result is returned, not stored.
    invalidated: bool,
}

/// The keys being fetched, and a generation every write from outside (insert, invalidation)
/// bumps, for the fetches that run outside a flight.
pub(crate) struct Flights<K, V> {
    table: Mutex<Table<K, V>>,
    max: usize,
}

struct Table<K, V> {
    flights: HashMap<K, Flight<V>>,
    generation: u64,
}

/// A caller's part in a key's fetch.
pub(crate) enum Role<'a, K: Hash + Eq + Clone, V: Clone> {
    /// Fetch, then [`Leader::land`].
    Leader(Leader<'a, K, V>),
    /// Wait for the leader's landing.
    Waiter(watch::Receiver<Landing<V>>),
    /// The table is full, or the key's running fetch was invalidated: fetch alone,
    /// uncoalesced.
    Alone,
}

impl<K: Hash + Eq + Clone, V: Clone> Flights<K, V> {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            table: Mutex::new(Table {
                flights: HashMap::new(),
                generation: 0,
            }),
            max,
        }
    }

    fn table(&self) -> MutexGuard<'_, Table<K, V>> {
        // A panic while the lock was held left the map consistent (every change is one call).
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Joins `key`'s fetch, leading it if none runs.
    pub(crate) fn join(&self, key: &K) -> Role<'_, K, V> {
        let mut table = self.table();
        if let Some(flight) = table.flights.get(key) {
            // An invalidated flight fetched what the write replaced: a caller that came after
            // the write must not be handed it, so it fetches on its own (its store then waits
            // on the generation, which the invalidation already moved).
            if flight.invalidated {
                return Role::Alone;
            }
            return Role::Waiter(flight.landing.subscribe());
        }
        if table.flights.len() >= self.max {
            return Role::Alone;
        }
        let (landing, _) = watch::channel(Landing::Pending);
        table.flights.insert(
            key.clone(),
            Flight {
                landing,
                invalidated: false,
            },
        );
        Role::Leader(Leader {
            flights: self,
            key: Some(key.clone()),
        })
    }

    /// Marks `key`'s running fetch (if any) so its result is not stored, and bumps the
    /// generation so no fetch running outside a flight stores either.
    pub(crate) fn invalidate(&self, key: &K) {
        let mut table = self.table();
        table.generation += 1;
        if let Some(flight) = table.flights.get_mut(key) {
            flight.invalidated = true;
        }
    }

    /// Marks every running fetch whose key `matches` so its result is not stored, and bumps
    /// the generation (as [`invalidate`](Self::invalidate), for a family of keys: every
    /// variant of an HTTP target).
    #[cfg(feature = "http")]
    pub(crate) fn invalidate_where(&self, matches: impl Fn(&K) -> bool) {
        let mut table = self.table();
        table.generation += 1;
        for (key, flight) in &mut table.flights {
            if matches(key) {
                flight.invalidated = true;
            }
        }
    }

    /// Marks every running fetch so its result is not stored.
    pub(crate) fn invalidate_all(&self) {
        let mut table = self.table();
        table.generation += 1;
        for flight in table.flights.values_mut() {
            flight.invalidated = true;
        }
    }

    /// The generation now, taken by a fetch that runs outside a flight when it starts.
    pub(crate) fn generation(&self) -> u64 {
        self.table().generation
    }

    /// Calls `store` for a fetch that ran outside a flight, unless an insert or invalidation
    /// came after `generation` (coarse: any key's, which only costs such rare fetches their
    /// store). Under the table's lock, as a leader's store (see `finish`).
    pub(crate) fn store_unless_written(&self, generation: u64, store: impl FnOnce()) {
        let table = self.table();
        if table.generation == generation {
            store();
        }
        drop(table);
    }

    pub(crate) fn len(&self) -> usize {
        self.table().flights.len()
    }

    /// Ends `key`'s flight with `landing`, first calling `store` unless an invalidation marked
    /// the flight. Both happen under the table's lock, and an invalidation marks the flight
    /// under it before it removes the key from the store: either the mark comes first and
    /// nothing is stored, or the store comes first and the invalidation then removes it.
    fn finish(&self, key: &K, landing: Landing<V>, store: impl FnOnce()) {
        let mut table = self.table();
        if let Some(flight) = table.flights.remove(key) {
            if !flight.invalidated {
                store();
            }
            drop(table);
            flight.landing.send_replace(landing);
        }
    }
}

/// Waits for the landing of the flight `landing` watches, parked and woken once, for at most
/// `timeout`; `None` when the timeout passed first (the caller then fetches uncoalesced). A
/// flight that ended without a landing to read counts as abandoned. Outside any runtime there
/// is no timer: then it waits for the landing alone (inside one, tokio's time must be enabled,
/// as for every palisade timeout).
pub(crate) async fn wait<V: Clone>(
    mut landing: watch::Receiver<Landing<V>>,
    timeout: std::time::Duration,
) -> Option<Landing<V>> {
    let landed = landing.wait_for(|landing| !matches!(landing, Landing::Pending));
    let waited = if tokio::runtime::Handle::try_current().is_ok() {
        tokio::time::timeout(timeout, landed).await
    } else {
        Ok(landed.await)
    };
    match waited {
        Ok(Ok(landed)) => Some(landed.clone()),
        Ok(Err(_)) => Some(Landing::Abandoned),
        Err(_) => {
            tracing::debug!(target: "palisade::cache", "lock timeout: fetching uncoalesced");
            None
        }
    }
}

/// The leader's duty: land the flight exactly once, from [`land`](Self::land) or, if the
/// leader's future is dropped first, from `Drop` with [`Landing::Abandoned`].
pub(crate) struct Leader<'a, K: Hash + Eq + Clone, V: Clone> {
    flights: &'a Flights<K, V>,
    key: Option<K>,
}

impl<K: Hash + Eq + Clone, V: Clone> Leader<'_, K, V> {
    /// Lands the flight, waking every waiter once, after `store` (skipped if the key was
    /// invalidated during the fetch).
    pub(crate) fn land(mut self, landing: Landing<V>, store: impl FnOnce()) {
        if let Some(key) = self.key.take() {
            self.flights.finish(&key, landing, store);
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Drop for Leader<'_, K, V> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.flights.finish(&key, Landing::Abandoned, || {});
        }
    }
}
