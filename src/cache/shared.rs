//! What every service of one cache layer shares: the entries, the flights, the settings, the
//! clock and the counters, and the decisions made over them (entry times, early refresh).

use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::config::Config;
use super::flight::Flights;
use super::remote::{Remote, RemoteEntry};
use super::state::{Claim, RefreshWord, Times};
use super::store::{Entry, Store};
use crate::clock::{Clock, Epoch};
use crate::instruments::{self, LayerKind, name_label};
use crate::random::{Random, draw};
use crate::ratio::scale;

/// XFetch refreshes with probability `exp(−x)`; past `x = 20` that is below 2·10⁻⁹, so the draw
/// is skipped.
const XFETCH_CUTOFF: f64 = 20.0;

/// Counters, each on its own line: hits are counted by every thread on the hot path. Each also
/// counts into `palisade_cache_results_total{result}` with the `metrics` feature.
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) hits: Padded,
    pub(crate) stale_hits: Padded,
    pub(crate) misses: Padded,
    pub(crate) coalesced: Padded,
    pub(crate) refreshes: Padded,
    pub(crate) refresh_failures: Padded,
    pub(crate) stale_if_error: Padded,
    pub(crate) uncached: Padded,
    pub(crate) revalidated: Padded,
    pub(crate) remote_hits: Padded,
    pub(crate) remote_errors: Padded,
}

impl Counters {
    /// The counters of the cache called `name`.
    pub(crate) fn new(name: Option<&str>) -> Self {
        // One set for all results, so that the first count registers every series at zero
        // (a hit ratio has a denominator from the first lookup). `hit` first: the hot path
        // finds its label at the first comparison.
        let metric = instruments::Counters::new(
            "palisade_cache_results_total",
            LayerKind::Cache,
            &name_label(name),
            "result",
            &[
                "hit",
                "stale",
                "miss",
                "collapsed",
                "refresh",
                "refresh_failed",
                "stale_if_error",
                "uncached",
                "revalidated",
                "remote_hit",
                "remote_error",
            ],
        );
        let counter = |result: &'static str| Padded {
            count: AtomicU64::new(0),
            metric: metric.clone(),
            result,
        };
        Self {
            hits: counter("hit"),
            stale_hits: counter("stale"),
            misses: counter("miss"),
            coalesced: counter("collapsed"),
            refreshes: counter("refresh"),
            refresh_failures: counter("refresh_failed"),
            stale_if_error: counter("stale_if_error"),
            uncached: counter("uncached"),
            revalidated: counter("revalidated"),
            remote_hits: counter("remote_hit"),
            remote_errors: counter("remote_error"),
        }
    }
}

/// A counter alone on a pair of cache lines, and its metric.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct Padded {
    count: AtomicU64,
    metric: instruments::Counters,
    /// Its `result` label.
    result: &'static str,
}

impl Padded {
    #[inline]
    pub(crate) fn add(&self) {
        // Relaxed: a statistic, read only by snapshots.
        self.count.fetch_add(1, Ordering::Relaxed);
        self.metric.count(self.result);
    }

    pub(crate) fn get(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

pub(crate) struct Shared<K, V> {
    pub(crate) config: Config<K, V>,
    pub(crate) store: Store<K, V>,
    pub(crate) flights: Flights<K, V>,
    pub(crate) refresh_slots: Arc<Semaphore>,
    pub(crate) counters: Counters,
    /// The remote tier, if the layer was given one (set once, before the first call).
    pub(crate) remote: OnceLock<Remote<K, V>>,
    clock: Clock,
    epoch: Epoch,
    random: Option<Random>,
}

impl<K: Hash + Eq + Clone, V: Clone> Shared<K, V> {
    pub(crate) fn new(
        mut config: Config<K, V>,
        max_entries: NonZeroUsize,
        capacity: Option<u64>,
        max_refreshes: NonZeroUsize,
        max_in_flight: NonZeroUsize,
        seed: Option<u64>,
        clock: Clock,
    ) -> Self {
        let items = max_entries.get();
        let store = Store::new(
            items,
            capacity.unwrap_or(u64::try_from(items).unwrap_or(u64::MAX)),
        );
        // quick_cache refuses an entry heavier than its hot target, 97 % of one shard's share
        // of the capacity: stay under it, so that such an entry passes through uncached
        // instead of being counted as an eviction.
        let admissible = (store.shard_capacity() / 100 * 97).max(1);
        config.max_entry_weight = config.max_entry_weight.min(admissible);
        let epoch = Epoch::new(clock.now());
        let counters = Counters::new(config.name.as_deref());
        Self {
            config,
            store,
            flights: Flights::new(max_in_flight.get()),
            refresh_slots: Arc::new(Semaphore::new(max_refreshes.get())),
            counters,
            remote: OnceLock::new(),
            clock,
            epoch,
            random: seed.map(|seed| Random::new(Some(seed))),
        }
    }

    /// Now, in ticks of the cache's epoch.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        self.epoch.ticks(self.clock.now())
    }

    pub(crate) fn ticks(duration: Duration) -> u64 {
        Epoch::ticks_of(duration)
    }

    /// A new entry for `value` fetched in `fetch` ticks, stored at `now`, or `None` when it is
    /// not to be stored (a time to live of zero, or too heavy).
    pub(crate) fn entry(&self, key: &K, value: V, now: u64, fetch: u64) -> Option<Arc<Entry<V>>> {
        let config = &self.config;
        // A value's own lifetime (a `max-age`, a token's expiry) is a promise not to serve it
        // later: its jitter only shortens it.
        let (ttl, own) = match config.ttl_of.as_ref().and_then(|ttl_of| ttl_of(&value)) {
            Some(ttl) => (ttl, true),
            None => (config.ttl, false),
        };
        if ttl.is_zero() {
            return None;
        }
        let weight = match &config.weight_of {
            Some(weight_of) => weight_of(key, &value).max(1),
            None => 1,
        };
        if weight > config.max_entry_weight {
            return None;
        }
        // ±jitter: a factor uniform in [1 − j, 1 + j); for a value's own lifetime, (1 − j, 1].
        let unit = draw(self.random.as_ref());
        let factor = if own {
            1.0 - config.ttl_jitter * unit
        } else {
            1.0 + config.ttl_jitter * (2.0 * unit - 1.0)
        };
        let ttl = Self::ticks(scale(ttl, factor));
        let fresh_until = now.saturating_add(ttl.max(1));
        Some(Arc::new(Entry {
            value,
            times: Times {
                fresh_until,
                stale_until: fresh_until.saturating_add(Self::ticks(config.stale_while_revalidate)),
                error_until: fresh_until.saturating_add(Self::ticks(config.stale_if_error)),
            },
            fetch,
            weight,
            refresh: RefreshWord::new(),
        }))
    }

    /// A local entry for `value` read from the remote tier at `now`: its windows from the
    /// remote's, so every instance agrees on its phase. `None` when it is too heavy to hold.
    pub(crate) fn entry_from_remote(
        &self,
        key: &K,
        value: V,
        remote: &RemoteEntry,
        now: u64,
    ) -> Option<Arc<Entry<V>>> {
        let until = |window: Duration| now.saturating_add(Self::ticks(window));
        let fresh_until = until(remote.fresh_for);
        let times = Times {
            fresh_until,
            stale_until: until(remote.stale_for).max(fresh_until),
            error_until: until(remote.errors_for).max(fresh_until),
        };
        let entry = self.entry_at(key, value, times, Self::ticks(remote.fetch));
        (entry.weight <= self.config.max_entry_weight).then_some(entry)
    }

    /// `entry` as the remote tier keeps it, its windows measured from `now`; `None` when the
    /// codec keeps the value local, or it is dead already.
    pub(crate) fn remote_entry(&self, entry: &Entry<V>, now: u64) -> Option<RemoteEntry>
    where
        K: 'static,
        V: 'static,
    {
        let remote = self.remote.get()?;
        let left = |until: u64| Epoch::duration_of(until.saturating_sub(now));
        let remote_entry = RemoteEntry {
            value: remote.codec.encode(&entry.value)?,
            fresh_for: left(entry.times.fresh_until),
            stale_for: left(entry.times.stale_until),
            errors_for: left(entry.times.error_until),
            fetch: Epoch::duration_of(entry.fetch),
        };
        (!remote_entry.life().is_zero()).then_some(remote_entry)
    }

    /// An entry for `value`, to be stored under `key`, with the times already decided (the
    /// HTTP mode's, from the response's own headers; the remote tier's), weighed by the
    /// configured weigher.
    pub(crate) fn entry_at(&self, key: &K, value: V, times: Times, fetch: u64) -> Arc<Entry<V>> {
        let weight = match &self.config.weight_of {
            Some(weight_of) => weight_of(key, &value).max(1),
            None => 1,
        };
        Arc::new(Entry {
            value,
            times,
            fetch,
            weight,
            refresh: RefreshWord::new(),
        })
    }

    /// What `entry`'s background refresh needs to start at `now`, in both modes: its claim
    /// (held for the lock timeout), the runtime to spawn it on and a refresh slot. `None` when
    /// another caller holds the claim, there is no runtime, or every slot is busy (the claim is
    /// then given back at once: the next stale hit tries again).
    pub(crate) fn background_refresh(
        &self,
        entry: &Entry<V>,
        now: u64,
    ) -> Option<(Claim, tokio::runtime::Handle, OwnedSemaphorePermit)> {
        let lapses = now.saturating_add(Self::ticks(self.config.lock_timeout));
        let claim = entry.refresh.try_claim(now, lapses)?;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            entry.refresh.release(claim, now);
            return None;
        };
        let Ok(slot) = Arc::clone(&self.refresh_slots).try_acquire_owned() else {
            entry.refresh.release(claim, now);
            return None;
        };
        Some((claim, runtime, slot))
    }

    /// XFetch: whether a fresh `entry` is refreshed early at `now`, with probability
    /// `exp(−τ / (β·δ))`.
    #[inline]
    pub(crate) fn refresh_early(&self, entry: &Entry<V>, now: u64) -> bool {
        let beta = self.config.early_refresh;
        if beta == 0.0 || entry.fetch == 0 {
            return false;
        }
        #[allow(clippy::cast_precision_loss)] // ticks to a ratio: precision to spare
        let x = entry.times.fresh_until.saturating_sub(now) as f64 / (beta * entry.fetch as f64);
        x < XFETCH_CUTOFF && draw(self.random.as_ref()) < (-x).exp()
    }
}
