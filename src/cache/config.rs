//! Building a cache: [`CacheBuilder`], its defaults and their validation.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use super::layer::CacheLayer;
use super::shared::Shared;
use crate::classify::DefaultClassifier;
use crate::clock::Clock;
use crate::error::{ConfigError, duration_within};
use crate::{Factor, Ratio};

/// Entries the cache holds at most: 10 000.
pub const DEFAULT_MAX_ENTRIES: NonZeroUsize = NonZeroUsize::new(10_000).unwrap();
/// How far each entry's time to live is spread on insert: ±10 %, so entries written together
/// (a deploy, a warm-up) do not expire together.
pub const DEFAULT_TTL_JITTER: Ratio = Ratio::new_const(0.1);
/// XFetch's β: 1, the paper's value (the optimum for an exponentially distributed recompute
/// time); 0 turns early refresh off.
pub const DEFAULT_EARLY_REFRESH: Factor = Factor::new_const(1.0);
/// How long a caller waits for the fetch another caller leads before fetching itself: 5 s
/// (nginx's `proxy_cache_lock_timeout`). Also how long a refresh claim lives before another
/// caller may take it over.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long after a failed refresh the next one may start: 1 s, so a failing origin sees one
/// refresh per key per second rather than one per request.
pub const DEFAULT_REFRESH_BACKOFF: Duration = Duration::from_secs(1);
/// Background refreshes running at once, across every key: 64.
pub const DEFAULT_MAX_REFRESHES: NonZeroUsize = NonZeroUsize::new(64).unwrap();
/// Keys being fetched at once (each one led by one caller): 10 000. Past it, a miss is fetched
/// by its own caller, uncoalesced.
pub const DEFAULT_MAX_IN_FLIGHT: NonZeroUsize = NonZeroUsize::new(10_000).unwrap();

/// The longest time to live or window: 365 days.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// What the callers coalesced behind a failed fetch get.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaderFailure {
    /// A [`LeaderFailed`](super::LeaderFailed) rejection, at once: one failed call reaches the
    /// origin however many callers wait (the default, which is what protects a struggling
    /// origin from a stampede of retries).
    #[default]
    Share,
    /// Each waiter calls the inner service once itself.
    EachTries,
}

/// Gives a response its own time to live (an HTTP `max-age`, a token's expiry): `None` keeps
/// the cache's, `Some(Duration::ZERO)` does not store it.
pub type TtlOf<V> = Arc<dyn Fn(&V) -> Option<Duration> + Send + Sync>;
/// Weighs an entry for the weight bound (its size in bytes, typically).
pub type WeightOf<K, V> = Arc<dyn Fn(&K, &V) -> u64 + Send + Sync>;

/// What a checked builder becomes: the key function, the classifier and the engine.
pub(crate) type Engine<F, C, K, V> = (F, C, Arc<Shared<K, V>>);

/// The settings every decision reads, checked by [`CacheBuilder::build`].
pub(crate) struct Config<K, V> {
    pub(crate) name: Option<Arc<str>>,
    pub(crate) ttl: Duration,
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
    pub(crate) ttl_jitter: f64,
    pub(crate) early_refresh: f64,
    pub(crate) lock_timeout: Duration,
    pub(crate) refresh_backoff: Duration,
    pub(crate) leader_failure: LeaderFailure,
    pub(crate) ttl_of: Option<TtlOf<V>>,
    pub(crate) weight_of: Option<WeightOf<K, V>>,
    pub(crate) max_entry_weight: u64,
}

/// Configures a [`CacheLayer`] (from [`CacheLayer::builder`]); finish with
/// [`build`](Self::build). Every setter states its default; the
/// [module docs](crate::cache) say how to choose the windows.
///
/// ```
/// use std::time::Duration;
/// use palisade::cache::CacheLayer;
///
/// let cache = CacheLayer::builder(Duration::from_secs(30), |id: &u64| Some(*id))
///     .stale_while_revalidate(Duration::from_secs(60))
///     .stale_if_error(Duration::from_secs(600))
///     .build::<u64, std::sync::Arc<str>>()
///     .unwrap();
/// # let _ = cache;
/// ```
#[must_use]
pub struct CacheBuilder<F, C = DefaultClassifier> {
    pub(crate) key_of: F,
    pub(crate) classifier: C,
    name: Option<Arc<str>>,
    ttl: Duration,
    stale_while_revalidate: Duration,
    stale_if_error: Duration,
    ttl_jitter: Ratio,
    early_refresh: Factor,
    lock_timeout: Duration,
    refresh_backoff: Duration,
    leader_failure: LeaderFailure,
    max_entries: NonZeroUsize,
    max_weight: Option<u64>,
    max_entry_weight: Option<u64>,
    max_refreshes: NonZeroUsize,
    max_in_flight: NonZeroUsize,
    seed: Option<u64>,
    clock: Clock,
}

impl<F> CacheBuilder<F> {
    pub(crate) fn new(ttl: Duration, key_of: F) -> Self {
        Self {
            key_of,
            classifier: DefaultClassifier,
            name: None,
            ttl,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            ttl_jitter: DEFAULT_TTL_JITTER,
            early_refresh: DEFAULT_EARLY_REFRESH,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            refresh_backoff: DEFAULT_REFRESH_BACKOFF,
            leader_failure: LeaderFailure::Share,
            max_entries: DEFAULT_MAX_ENTRIES,
            max_weight: None,
            max_entry_weight: None,
            max_refreshes: DEFAULT_MAX_REFRESHES,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            seed: None,
            clock: Clock::default(),
        }
    }
}

impl<F, C> CacheBuilder<F, C> {
    /// Decides which results are stored with `classifier` (a
    /// [`Classify`](crate::classify::Classify) implementation or a closure): a
    /// [`Success`](crate::classify::Outcome::Success) is stored, anything else passes through.
    /// Defaults to [`DefaultClassifier`]: every `Ok` is stored.
    pub fn classifier<C2>(self, classifier: C2) -> CacheBuilder<F, C2> {
        CacheBuilder {
            key_of: self.key_of,
            classifier,
            name: self.name,
            ttl: self.ttl,
            stale_while_revalidate: self.stale_while_revalidate,
            stale_if_error: self.stale_if_error,
            ttl_jitter: self.ttl_jitter,
            early_refresh: self.early_refresh,
            lock_timeout: self.lock_timeout,
            refresh_backoff: self.refresh_backoff,
            leader_failure: self.leader_failure,
            max_entries: self.max_entries,
            max_weight: self.max_weight,
            max_entry_weight: self.max_entry_weight,
            max_refreshes: self.max_refreshes,
            max_in_flight: self.max_in_flight,
            seed: self.seed,
            clock: self.clock,
        }
    }

    /// A name for this cache's log lines, `Debug` output and metrics (the `name` label; see
    /// `palisade::metrics`, feature `metrics`). Defaults to none.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How long past the freshness an entry is still served at once while one background
    /// refresh runs (RFC 5861 `stale-while-revalidate`). Defaults to zero: an entry past its
    /// time to live is fetched again by a waiting caller.
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.stale_while_revalidate = window;
        self
    }

    /// How long past the freshness an entry stands in for a failed fetch or refresh (RFC 5861
    /// `stale-if-error`). Defaults to zero: a failure is returned.
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.stale_if_error = window;
        self
    }

    /// Spreads each entry's time to live uniformly over `±jitter` of itself (a value's own
    /// lifetime from `ttl_of` only downward: it is never served past it). Defaults to
    /// [`DEFAULT_TTL_JITTER`] (10 %).
    pub fn ttl_jitter(mut self, jitter: Ratio) -> Self {
        self.ttl_jitter = jitter;
        self
    }

    /// XFetch's β: a fresh entry is refreshed early, in the background, with probability
    /// `exp(−τ / (β·δ))`, τ its time to expiry and δ how long the fetch that made it took.
    /// Defaults to [`DEFAULT_EARLY_REFRESH`] (1); 0 turns it off; at most 100.
    pub fn early_refresh(mut self, beta: Factor) -> Self {
        self.early_refresh = beta;
        self
    }

    /// How long a caller waits for another caller's fetch of the same key before it calls the
    /// inner service itself, and how long a background refresh keeps its claim. Defaults to
    /// [`DEFAULT_LOCK_TIMEOUT`] (5 s); between 1 ms and 365 days.
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// How long after a failed refresh the next one may start. Defaults to
    /// [`DEFAULT_REFRESH_BACKOFF`] (1 s); zero retries on the next stale hit.
    pub fn refresh_backoff(mut self, backoff: Duration) -> Self {
        self.refresh_backoff = backoff;
        self
    }

    /// What the callers coalesced behind a failed fetch get. Defaults to
    /// [`LeaderFailure::Share`].
    pub fn on_leader_failure(mut self, failure: LeaderFailure) -> Self {
        self.leader_failure = failure;
        self
    }

    /// Holds at most `max` entries (without a weight bound), or expects about that many (with
    /// one). Defaults to [`DEFAULT_MAX_ENTRIES`] (10 000). Eviction is CLOCK-Pro-like (hot and
    /// cold queues), so a scan of one-off keys does not flush the hot ones.
    pub fn max_entries(mut self, max: NonZeroUsize) -> Self {
        self.max_entries = max;
        self
    }

    /// Bounds the cache by weight instead of entries: every entry weighs `weight_of(key,
    /// value)` (at least 1), and the cache holds at most `max` in all. Defaults to off.
    pub fn max_weight(mut self, max: u64) -> Self {
        self.max_weight = Some(max);
        self
    }

    /// The heaviest entry stored; a heavier value passes through uncached. Defaults to an
    /// eighth of the weight bound. Needs [`max_weight`](Self::max_weight).
    pub fn max_entry_weight(mut self, max: u64) -> Self {
        self.max_entry_weight = Some(max);
        self
    }

    /// Background refreshes running at once, across every key; a stale hit past it is served
    /// without starting one. Defaults to [`DEFAULT_MAX_REFRESHES`] (64).
    pub fn max_refreshes(mut self, max: NonZeroUsize) -> Self {
        self.max_refreshes = max;
        self
    }

    /// Keys fetched at once under single flight. Defaults to [`DEFAULT_MAX_IN_FLIGHT`]
    /// (10 000); past it, a miss is fetched by its own caller, uncoalesced.
    pub fn max_in_flight(mut self, max: NonZeroUsize) -> Self {
        self.max_in_flight = max;
        self
    }

    /// Seeds the random draws (TTL jitter, XFetch), for reproducible tests. Defaults to a
    /// per-thread random source.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The clock entries age by. Defaults to tokio's (which paused-time tests control).
    pub fn clock(mut self, clock: impl Into<Clock>) -> Self {
        self.clock = clock.into();
        self
    }

    /// Checks the settings and builds a layer caching values of type `V` (the inner
    /// service's response type) under keys of type `K` (what the key function returns); both
    /// are usually inferred from the service the layer wraps.
    ///
    /// # Errors
    ///
    /// As [`build_with`](Self::build_with).
    pub fn build<K, V>(self) -> Result<CacheLayer<F, C, K, V>, ConfigError>
    where
        K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
    {
        self.build_with(None, None)
    }

    /// As [`build`](Self::build), with a per-response time to live (`ttl_of`) and a weigher
    /// (`weight_of`, required by [`max_weight`](Self::max_weight)).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first setting out of range or in conflict: a zero `ttl` or
    /// one over 365 days, a window over 365 days, a lock timeout outside 1 ms to 365 days, an
    /// early-refresh β over 100, a zero weight bound, a weight bound without a weigher (or a
    /// weigher without a bound), an entry weight bound without a weight bound or above it.
    pub fn build_with<K, V>(
        self,
        ttl_of: Option<TtlOf<V>>,
        weight_of: Option<WeightOf<K, V>>,
    ) -> Result<CacheLayer<F, C, K, V>, ConfigError>
    where
        K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
    {
        let (key_of, classifier, shared) = self.into_shared(ttl_of, weight_of)?;
        Ok(CacheLayer::new(key_of, classifier, shared))
    }

    /// Checks the settings and builds the engine both modes share (the HTTP mode builds its
    /// own layer over it).
    pub(crate) fn into_shared<K, V>(
        self,
        ttl_of: Option<TtlOf<V>>,
        weight_of: Option<WeightOf<K, V>>,
    ) -> Result<Engine<F, C, K, V>, ConfigError>
    where
        K: std::hash::Hash + Eq + Clone,
        V: Clone,
    {
        let duration = |setting, value, min| duration_within(setting, value, min, MAX_DURATION);
        let nanos = Duration::from_nanos(1);
        duration("ttl", self.ttl, nanos)?;
        duration(
            "stale_while_revalidate",
            self.stale_while_revalidate,
            Duration::ZERO,
        )?;
        duration("stale_if_error", self.stale_if_error, Duration::ZERO)?;
        duration("lock_timeout", self.lock_timeout, Duration::from_millis(1))?;
        duration("refresh_backoff", self.refresh_backoff, Duration::ZERO)?;
        let early_refresh = self.early_refresh.within("early_refresh", 0.0, 100.0)?;
        let capacity = match (self.max_weight, &weight_of) {
            (None, None) => None,
            (Some(0), _) => {
                return Err(ConfigError::MustBePositive {
                    setting: "max_weight",
                });
            }
            (Some(max), Some(_)) => Some(max),
            (Some(max), None) => {
                return Err(ConfigError::Conflict {
                    setting: "max_weight",
                    value: max.to_string(),
                    other: "weight_of",
                    why: "a weight bound needs a weigher (pass one to build_with)",
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Conflict {
                    setting: "weight_of",
                    value: "set".to_owned(),
                    other: "max_weight",
                    why: "a weigher needs a weight bound to weigh against",
                });
            }
        };
        let max_entry_weight = match (self.max_entry_weight, capacity) {
            (None, None) => u64::MAX,
            (None, Some(max)) => (max / 8).max(1),
            (Some(entry), Some(max)) if (1..=max).contains(&entry) => entry,
            (Some(entry), _) => {
                return Err(ConfigError::CountOutOfRange {
                    setting: "max_entry_weight",
                    value: entry,
                    min: 1,
                    max: capacity.unwrap_or(0),
                });
            }
        };
        let config = Config {
            name: self.name,
            ttl: self.ttl,
            stale_while_revalidate: self.stale_while_revalidate,
            stale_if_error: self.stale_if_error,
            ttl_jitter: self.ttl_jitter.get(),
            early_refresh,
            lock_timeout: self.lock_timeout,
            refresh_backoff: self.refresh_backoff,
            leader_failure: self.leader_failure,
            ttl_of,
            weight_of,
            max_entry_weight,
        };
        let shared = Shared::new(
            config,
            self.max_entries,
            capacity,
            self.max_refreshes,
            self.max_in_flight,
            self.seed,
            self.clock,
        );
        Ok((self.key_of, self.classifier, Arc::new(shared)))
    }
}

impl<F, C: fmt::Debug> fmt::Debug for CacheBuilder<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("name", &self.name)
            .field("ttl", &self.ttl)
            .field("stale_while_revalidate", &self.stale_while_revalidate)
            .field("stale_if_error", &self.stale_if_error)
            .field("classifier", &self.classifier)
            .finish_non_exhaustive()
    }
}
