//! Keyed breakers: one breaker per key (host, route, tenant), so one failing upstream does not
//! cut off the others.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::sync::Ordering as BreakerOrdering;
use std::task::{Context, Poll};
use std::time::Duration;

use scc::HashIndex;
use tower_layer::Layer;
use tower_service::Service;

use super::breaker::{Admission, Breaker};
use super::config::Config;
use super::error::CircuitBreakerError;
use super::future::{Call, ResponseFuture};
use super::handle::CircuitBreakerHandle;
use crate::classify::{Classify, DefaultClassifier};
use crate::clock::Instant;
use crate::error::BoxError;

/// How many keys a keyed breaker tracks unless told otherwise.
pub const DEFAULT_MAX_KEYS: NonZeroUsize = NonZeroUsize::new(1024).unwrap();

/// The shortest time between two sweeps for idle keys: a sweep visits every key, so a full map
/// receiving new keys does not pay for one on every call.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Keys are stored as their 64-bit hash under a per-process random seed (SipHash), so the map
/// needs no `Clone`/`Eq` on user keys and a lookup allocates nothing. The map then hashes that
/// hash again; it is already uniformly random, so this hasher passes it through.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

type Map<C> = HashIndex<u64, Arc<Breaker<C>>, BuildHasherDefault<PassThrough>>;

struct Keyed<F, C> {
    key_of: F,
    config: Config,
    classifier: C,
    hasher: RandomState,
    map: Map<C>,
    /// Entries in `map` (kept here: the map's own count visits every bucket).
    keys: AtomicUsize,
    max_keys: usize,
    /// Shared by every key that arrives while the map is full and no key is idle.
    overflow: Arc<Breaker<C>>,
    /// Counts sweeps; a breaker remembers the sweep it was last used in, and one not used since
    /// the sweep before is idle.
    sweep: AtomicU64,
    /// When the last sweep ran, ms since `started`, to space sweeps out.
    last_sweep_ms: AtomicU64,
    started: Instant,
}

impl<F, C: Clone + Send + Sync + 'static> Keyed<F, C> {
    fn breaker_for(&self, hash: u64, label: impl FnOnce() -> String) -> Arc<Breaker<C>> {
        // The hot path: a lock-free read (the map takes no lock to read).
        if let Some(breaker) = self.map.peek_with(&hash, |_, breaker| Arc::clone(breaker)) {
            self.touch(&breaker);
            return breaker;
        }
        self.insert(hash, label)
    }

    /// Marks `breaker` as used in the current sweep. Reads only, unless this is its first use
    /// since the sweep counter moved.
    fn touch(&self, breaker: &Breaker<C>) {
        // Relaxed: a hint for eviction; a stale read makes a key look idle one sweep early or
        // late, never breaks a breaker.
        let sweep = self.sweep.load(Ordering::Relaxed);
        if breaker.last_used.load(BreakerOrdering::Relaxed) != sweep {
            breaker.last_used.store(sweep, BreakerOrdering::Relaxed);
        }
    }

    #[cold]
    fn insert(&self, hash: u64, label: impl FnOnce() -> String) -> Arc<Breaker<C>> {
        if self.keys.load(Ordering::Relaxed) >= self.max_keys {
            self.sweep_idle();
        }
        // Relaxed: the count bounds the map; two inserts racing past the check can overshoot
        // it by the number of racers, and the next sweep brings it back.
        if self.keys.load(Ordering::Relaxed) >= self.max_keys {
            tracing::trace!("keyed circuit breaker full: key shares the overflow breaker");
            return Arc::clone(&self.overflow);
        }
        let entry = self.map.entry_sync(hash);
        let breaker = match entry {
            scc::hash_index::Entry::Occupied(occupied) => Arc::clone(occupied.get()),
            scc::hash_index::Entry::Vacant(vacant) => {
                let mut config = self.config.clone();
                config.name = Some(Arc::from(label()));
                let breaker = Arc::new(Breaker::new(config, self.classifier.clone()));
                self.keys.fetch_add(1, Ordering::Relaxed);
                Arc::clone(vacant.insert_entry(breaker).get())
            }
        };
        self.touch(&breaker);
        breaker
    }

    /// Removes the keys not used since the sweep before this one whose breaker can be forgotten
    /// (see `Breaker::evictable`: quiet, or tripped and past its open period and probe wait),
    /// at most once per [`SWEEP_INTERVAL`]. A breaker still within its open period and probe
    /// wait, isolated or forced is kept: forgetting it would send a failing upstream full
    /// traffic again, or drop an operator's decision.
    fn sweep_idle(&self) {
        let now_ms = u64::try_from(
            self.config
                .clock
                .now()
                .saturating_duration_since(self.started)
                .as_millis(),
        )
        .unwrap_or(u64::MAX);
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        let interval = u64::try_from(SWEEP_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        if now_ms.saturating_sub(last) < interval && last != 0 {
            return;
        }
        // One sweeper at a time: whoever moves the timestamp runs it.
        if self
            .last_sweep_ms
            .compare_exchange(last, now_ms.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let previous = self.sweep.fetch_add(1, Ordering::Relaxed);
        let mut removed = 0;
        self.map.retain_sync(|_, breaker| {
            // Relaxed: only this sweep writes `idle_since_ms`, and the sweeps are serialised by
            // the exchange above.
            if breaker.last_used.load(BreakerOrdering::Relaxed) >= previous {
                if breaker.idle_since_ms.load(BreakerOrdering::Relaxed) != u64::MAX {
                    breaker
                        .idle_since_ms
                        .store(u64::MAX, BreakerOrdering::Relaxed);
                }
                return true;
            }
            // Unused since the previous sweep, which ran at `last`: idle since then at least,
            // or since whenever an earlier sweep first found it unused.
            let mut since = breaker.idle_since_ms.load(BreakerOrdering::Relaxed);
            if since == u64::MAX {
                since = last;
                breaker.idle_since_ms.store(since, BreakerOrdering::Relaxed);
            }
            let idle = Duration::from_millis(now_ms.saturating_sub(since));
            let keep = !breaker.evictable(idle);
            if !keep {
                removed += 1;
            }
            keep
        });
        self.keys.fetch_sub(removed, Ordering::Relaxed);
        if removed > 0 {
            tracing::debug!(removed, "keyed circuit breaker evicted idle keys");
        }
    }
}

/// Applies one circuit breaker per key: see [`KeyedCircuitBreaker`] and the
/// [module docs](crate::circuit_breaker).
///
/// Built by [`CircuitBreakerBuilder::keyed`](super::CircuitBreakerBuilder::keyed).
///
/// # Clone
///
/// Like [`CircuitBreakerLayer`](super::CircuitBreakerLayer): clones, every service, and every
/// `Layer::layer` call share one set of keyed breakers.
#[must_use]
pub struct KeyedCircuitBreakerLayer<F, C = DefaultClassifier> {
    keyed: Arc<Keyed<F, C>>,
}

impl<F, C: Clone + Send + Sync + 'static> KeyedCircuitBreakerLayer<F, C> {
    pub(crate) fn new(key_of: F, config: Config, classifier: C, max_keys: usize) -> Self {
        let mut overflow_config = config.clone();
        overflow_config.name = Some(Arc::from(match &config.name {
            Some(name) => format!("{name}[overflow]"),
            None => "[overflow]".to_owned(),
        }));
        let overflow = Arc::new(Breaker::new(overflow_config, classifier.clone()));
        let started = config.clock.now();
        Self {
            keyed: Arc::new(Keyed {
                key_of,
                config,
                classifier,
                hasher: RandomState::new(),
                map: HashIndex::default(),
                keys: AtomicUsize::new(0),
                max_keys,
                overflow,
                sweep: AtomicU64::new(0),
                last_sweep_ms: AtomicU64::new(0),
                started,
            }),
        }
    }

    /// A handle on the breaker of `key`, if that key has one now.
    #[must_use]
    pub fn handle<K: Hash + ?Sized>(&self, key: &K) -> Option<CircuitBreakerHandle> {
        let hash = self.keyed.hasher.hash_one(key);
        self.keyed.map.peek_with(&hash, |_, breaker| {
            CircuitBreakerHandle::new(breaker.clone())
        })
    }

    /// A handle on the breaker shared by keys that arrive while every slot is taken by a key in
    /// use.
    #[must_use]
    pub fn overflow_handle(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle::new(self.keyed.overflow.clone())
    }

    /// Handles on every keyed breaker now tracked (their names carry the key).
    #[must_use]
    pub fn handles(&self) -> Vec<CircuitBreakerHandle> {
        let mut handles = Vec::new();
        self.keyed.map.iter_sync(|_, breaker| {
            handles.push(CircuitBreakerHandle::new(breaker.clone()));
            true
        });
        handles
    }

    /// How many keys have a breaker now.
    #[must_use]
    pub fn keys(&self) -> usize {
        self.keyed.keys.load(Ordering::Relaxed)
    }
}

impl<F, C> Clone for KeyedCircuitBreakerLayer<F, C> {
    fn clone(&self) -> Self {
        Self {
            keyed: Arc::clone(&self.keyed),
        }
    }
}

impl<S, F, C> Layer<S> for KeyedCircuitBreakerLayer<F, C> {
    type Service = KeyedCircuitBreaker<S, F, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedCircuitBreaker {
            inner,
            keyed: Arc::clone(&self.keyed),
        }
    }
}

impl<F, C> fmt::Debug for KeyedCircuitBreakerLayer<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreakerLayer")
            .field("keys", &self.keyed.keys.load(Ordering::Relaxed))
            .field("max_keys", &self.keyed.max_keys)
            .finish_non_exhaustive()
    }
}

/// One circuit breaker per key: each call is admitted and counted by the breaker of the key
/// its request maps to, with the same configuration for every key.
///
/// The number of keys is bounded ([`max_keys`](super::CircuitBreakerBuilder::max_keys)).
/// When room is needed, a sweep (at most once a second) evicts the keys not used since the
/// previous sweep whose breaker can be forgotten:
///
/// - closed with nothing bad in its window;
/// - closed with failures on record, idle for the open duration plus the probe wait;
/// - open or half-open, once its open period and the probe wait after it
///   ([`half_open_max_wait`](super::CircuitBreakerBuilder::half_open_max_wait), by default the
///   open duration) have passed with no probe in flight (or only a stuck one).
///
/// A breaker still within its open period and probe wait is kept, so a failing upstream stays
/// protected while its callers stay away; an isolated or forced breaker is never evicted, so an
/// operator's decision survives. A new key arriving while every slot is taken shares one
/// overflow breaker, so memory never grows without bound and such keys are still protected.
/// An evicted key starts over with a fresh, closed breaker.
///
/// Keys are held as a 64-bit hash under a per-process random seed: a lookup allocates nothing
/// and keys need only `Hash` and `Debug` (the latter names each breaker's events). Two keys
/// share a breaker only if their hashes collide, which for n keys has odds of about n²/2⁶⁵ and
/// cannot be aimed at without the seed.
pub struct KeyedCircuitBreaker<S, F, C = DefaultClassifier> {
    inner: S,
    keyed: Arc<Keyed<F, C>>,
}

impl<S, F, C> KeyedCircuitBreaker<S, F, C> {
    crate::inner_accessors!();
}

impl<S: Clone, F, C> Clone for KeyedCircuitBreaker<S, F, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            keyed: Arc::clone(&self.keyed),
        }
    }
}

impl<S, F, C, K, Req> Service<Req> for KeyedCircuitBreaker<S, F, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    F: Fn(&Req) -> K,
    K: Hash + fmt::Debug,
    C: Classify<S::Response, S::Error> + Clone + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = CircuitBreakerError;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| CircuitBreakerError::Inner(e.into()))
    }

    // Always inlined, as `CircuitBreaker::call` is (see there).
    #[inline(always)]
    fn call(&mut self, request: Req) -> Self::Future {
        let key = (self.keyed.key_of)(&request);
        let hash = self.keyed.hasher.hash_one(&key);
        let breaker = self.keyed.breaker_for(hash, || {
            let name = self.keyed.config.name.as_deref().unwrap_or("");
            format!("{name}[{key:?}]")
        });
        match breaker.admit() {
            Admission::Admitted(permit) => {
                // The claim first: if the inner service panics, its drop gives the permit back.
                let call = Call::start(breaker, permit);
                ResponseFuture::admitted(self.inner.call(request), call)
            }
            Admission::Rejected(rejection) => {
                breaker.rejected(&rejection);
                ResponseFuture::rejected(rejection)
            }
        }
    }
}

impl<S: fmt::Debug, F, C> fmt::Debug for KeyedCircuitBreaker<S, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreaker")
            .field("inner", &self.inner)
            .field("keys", &self.keyed.keys.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}
