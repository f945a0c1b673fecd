//! Building an HTTP cache: [`HttpCacheBuilder`], [`HttpCacheLayer`] and [`HttpCacheHandle`].

use std::fmt;
use std::num::{NonZeroU64, NonZeroUsize};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tower_layer::Layer;

use super::freshness::Rules;
use super::key::HttpKey;
use super::remote::Remote;
use super::service::HttpCache;
use super::stored::HttpValue;
use crate::cache::config::{CacheBuilder, LeaderFailure, WeightOf};
use crate::cache::handle::{CacheHandle, Metrics};
use crate::cache::hooks::{CacheEvent, OnEvent};
use crate::cache::remote::RemoteStore;
use crate::cache::shared::Shared;
use crate::clock::Clock;
use crate::error::ConfigError;
use crate::{Factor, Ratio};

/// The largest response body stored: 1 MiB. A larger one streams through to its caller
/// untouched, unstored.
pub const DEFAULT_MAX_BODY: NonZeroUsize = NonZeroUsize::new(1 << 20).unwrap();
/// The bytes the stored responses take at most, bodies and headers: 64 MiB.
pub const DEFAULT_MAX_BYTES: NonZeroU64 = NonZeroU64::new(64 << 20).unwrap();

/// Whether the cache serves many users (a server's or a proxy's) or one (a client's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheMode {
    /// A shared cache (RFC 9111 §1): never stores `private` responses, honours `s-maxage` and
    /// `proxy-revalidate`, and stores a response to a request with `Authorization` or
    /// `Cookie` only when the response allows it.
    Shared,
    /// A private cache, one user's: `private` responses and credentialed requests are stored,
    /// `s-maxage` and `proxy-revalidate` are ignored.
    Private,
}

/// What the service reads besides the engine's settings.
pub(crate) struct Settings {
    pub(crate) rules: Rules,
    pub(crate) max_body: usize,
    pub(crate) name: Box<str>,
    /// The wall-clock time at the engine's epoch: wall time at tick `t` is this plus `t`, so
    /// `Date` arithmetic moves with the cache's clock (and with paused time in tests).
    pub(crate) wall_at_epoch: Duration,
    /// The store shared with the other instances of a fleet, if any.
    pub(crate) remote: Remote,
    /// The event hook, if one is set.
    pub(crate) on_event: Option<OnEvent<str>>,
}

impl Settings {
    /// Tells the event hook, if one is set, that `event` happened to `key`'s target.
    #[inline]
    pub(crate) fn tell(&self, key: &HttpKey, event: CacheEvent) {
        if let Some(hook) = &self.on_event {
            hook(key.target_str(), event);
        }
    }
}

impl Settings {
    /// The wall-clock second at tick `ticks`.
    pub(crate) fn wall(&self, ticks: u64) -> u64 {
        self.wall_at_epoch
            .saturating_add(Duration::from_nanos(ticks))
            .as_secs()
    }
}

/// Configures an [`HttpCacheLayer`] (from [`HttpCacheLayer::builder`]); finish with
/// [`build`](Self::build). The freshness of each response comes from its own headers; these
/// settings bound the cache and choose what the headers leave open.
#[must_use]
pub struct HttpCacheBuilder {
    engine: CacheBuilder<()>,
    mode: CacheMode,
    max_body: NonZeroUsize,
    max_bytes: NonZeroU64,
    heuristic: Option<Ratio>,
    store_set_cookie: bool,
    name: Option<Arc<str>>,
    remote: Remote,
    /// Whether responses are kept in memory (not with [`remote_only`](Self::remote_only)).
    local: bool,
    on_event: Option<OnEvent<str>>,
}

impl HttpCacheBuilder {
    fn new(mode: CacheMode) -> Self {
        Self {
            // The engine's own time to live is unused here: every entry's comes from its
            // response. Jitter is off: a response's lifetime is the origin's to set.
            engine: CacheBuilder::new(Duration::from_secs(1), ()).ttl_jitter(Ratio::ZERO),
            mode,
            max_body: DEFAULT_MAX_BODY,
            max_bytes: DEFAULT_MAX_BYTES,
            heuristic: None,
            store_set_cookie: false,
            name: None,
            remote: None,
            local: true,
            on_event: None,
        }
    }

    /// A name for this cache: its member of `Cache-Status` (an RFC 8941 token; anything else
    /// falls back to `palisade`), its log lines and `Debug` output. Defaults to `palisade`.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        let name = name.into();
        self.engine = self.engine.name(Arc::clone(&name));
        self.name = Some(name);
        self
    }

    /// The largest body stored. A larger one streams through to its caller as it comes, and
    /// is not stored. Defaults to [`DEFAULT_MAX_BODY`] (1 MiB).
    pub fn max_body(mut self, max: NonZeroUsize) -> Self {
        self.max_body = max;
        self
    }

    /// The bytes the stored responses take at most (bodies, headers and a fixed overhead per
    /// entry). Defaults to [`DEFAULT_MAX_BYTES`] (64 MiB); a single response heavier than an
    /// eighth of it is not stored.
    pub fn max_bytes(mut self, max: NonZeroU64) -> Self {
        self.max_bytes = max;
        self
    }

    /// How many responses the cache expects to hold, to size its tables. Defaults to
    /// 10 000; the bound is [`max_bytes`](Self::max_bytes).
    pub fn max_entries(mut self, max: NonZeroUsize) -> Self {
        self.engine = self.engine.max_entries(max);
        self
    }

    /// Heuristic freshness (RFC 9111 §4.2.2): a response without explicit freshness but with
    /// `Last-Modified` is fresh for `share` of the time since that date (0.1 is customary).
    /// Defaults to off: a response is fresh only for as long as it says.
    pub fn heuristic_freshness(mut self, share: Ratio) -> Self {
        self.heuristic = Some(share);
        self
    }

    /// The stale-while-revalidate window of a response that sets none (RFC 5861 §3); a
    /// response's own `stale-while-revalidate=N` wins. Defaults to zero.
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.engine = self.engine.stale_while_revalidate(window);
        self
    }

    /// The stale-if-error window of a response that sets none (RFC 5861 §4); a response's own
    /// `stale-if-error=N` wins. Defaults to zero.
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.engine = self.engine.stale_if_error(window);
        self
    }

    /// Stores responses that set a cookie, with their `Set-Cookie` removed (the caller whose
    /// request fetched the response still gets it). Defaults to off: such responses are not
    /// stored.
    pub fn store_set_cookie_responses(mut self, store: bool) -> Self {
        self.store_set_cookie = store;
        self
    }

    /// XFetch's β for fresh entries (see [`CacheBuilder::early_refresh`]). Defaults to 1.
    pub fn early_refresh(mut self, beta: Factor) -> Self {
        self.engine = self.engine.early_refresh(beta);
        self
    }

    /// How long a caller waits for another caller's fetch of the same target (see
    /// [`CacheBuilder::lock_timeout`]). Defaults to 5 s.
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.engine = self.engine.lock_timeout(timeout);
        self
    }

    /// How long after a failed background revalidation the next may start (see
    /// [`CacheBuilder::refresh_backoff`]). Defaults to 1 s.
    pub fn refresh_backoff(mut self, backoff: Duration) -> Self {
        self.engine = self.engine.refresh_backoff(backoff);
        self
    }

    /// What callers coalesced behind a fetch that failed get (see [`LeaderFailure`]): by
    /// default a `502` problem carrying the origin's status; with
    /// [`LeaderFailure::EachTries`] each forwards its own request.
    pub fn on_leader_failure(mut self, failure: LeaderFailure) -> Self {
        self.engine = self.engine.on_leader_failure(failure);
        self
    }

    /// Background revalidations running at once (see [`CacheBuilder::max_refreshes`]).
    /// Defaults to 64.
    pub fn max_refreshes(mut self, max: NonZeroUsize) -> Self {
        self.engine = self.engine.max_refreshes(max);
        self
    }

    /// Targets fetched at once under single flight (see [`CacheBuilder::max_in_flight`]).
    /// Defaults to 10 000.
    pub fn max_in_flight(mut self, max: NonZeroUsize) -> Self {
        self.engine = self.engine.max_in_flight(max);
        self
    }

    /// Seeds the XFetch draws, for reproducible tests.
    pub fn seed(mut self, seed: u64) -> Self {
        self.engine = self.engine.seed(seed);
        self
    }

    /// The clock entries age by. Defaults to tokio's (which paused-time tests control); the
    /// wall clock for `Date` arithmetic is read once, at build, and moved along by this one.
    pub fn clock(mut self, clock: impl Into<Clock>) -> Self {
        self.engine = self.engine.clock(clock);
        self
    }

    /// Shares stored responses with the other instances of a fleet through `store` (a
    /// [`RedisCacheStore`](crate::redis) with the `redis` feature). The in-memory store stays
    /// the first tier; a miss asks the remote before the origin, and one instance of the fleet
    /// fetches or revalidates a target while the others wait for its response. See the
    /// [module docs](crate::cache#a-remote-tier-in-http-mode). Defaults to none.
    pub fn remote(mut self, store: impl RemoteStore) -> Self {
        self.remote = Some(Arc::new(store));
        self.local = true;
        self
    }

    /// As [`remote`](Self::remote), with the remote as the only tier: nothing is kept in
    /// memory, so every request the cache may answer asks the remote (one round trip, two for
    /// a response that varies; the requests of one instance are still coalesced), and an
    /// invalidation anywhere in the fleet is seen everywhere once its removal lands. A stale
    /// response found there is served and revalidated by the request that found it (one
    /// instance of the fleet, by the remote lock); `HEAD` goes to the origin, `only-if-cached`
    /// is answered `504`, and stale-if-error has no copy to serve. See the
    /// [module docs](crate::cache#without-a-local-tier).
    pub fn remote_only(mut self, store: impl RemoteStore) -> Self {
        self.remote = Some(Arc::new(store));
        self.local = false;
        self
    }

    /// Calls `hook` with each target's misses, coalesced waits, remote hits, background
    /// revalidations that stored, failed ones and stale-if-error answers, as they happen, with
    /// the target as `host/path?query` (see [`CacheLayer::on_event`](crate::cache::CacheLayer::on_event)
    /// for the contract). Set twice, both run.
    pub fn on_event(mut self, hook: impl Fn(&str, CacheEvent) + Send + Sync + 'static) -> Self {
        self.on_event = Some(match self.on_event.take() {
            None => Arc::new(hook),
            Some(first) => Arc::new(move |target: &str, event| {
                first(target, event);
                hook(target, event);
            }),
        });
        self
    }

    /// Checks the settings and builds the layer.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first setting out of range, as
    /// [`CacheBuilder::build_with`] for the settings shared with it.
    pub fn build(self) -> Result<HttpCacheLayer, ConfigError> {
        // The one weigher of every entry: its key and what it holds.
        let weigh: WeightOf<HttpKey, HttpValue> = Arc::new(|key, value| {
            key.weight()
                + match value {
                    HttpValue::Response(stored) => stored.weight(),
                    HttpValue::Vary(index) => 64 + 16 * index.names.len() as u64,
                    HttpValue::Pass | HttpValue::Failed(..) | HttpValue::Stale(_) => 1,
                }
        });
        let engine = self.engine.max_weight(self.max_bytes.get());
        let ((), _, shared) = engine.into_shared(None, Some(weigh))?;
        if !self.local {
            shared.store.keep_nothing();
        }
        let config = &shared.config;
        let ticks = Shared::<HttpKey, HttpValue>::ticks;
        let name = self
            .name
            .filter(|name| is_token(name))
            .map_or_else(|| "palisade".into(), |name| name.as_ref().into());
        let settings = Settings {
            rules: Rules {
                shared: self.mode == CacheMode::Shared,
                heuristic: self.heuristic.map(Ratio::get),
                stale_while_revalidate: ticks(config.stale_while_revalidate),
                stale_if_error: ticks(config.stale_if_error),
                store_set_cookie: self.store_set_cookie,
            },
            max_body: self.max_body.get(),
            name,
            wall_at_epoch: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
            remote: self.remote,
            on_event: self.on_event,
        };
        Ok(HttpCacheLayer {
            shared,
            settings: Arc::new(settings),
        })
    }
}

/// Whether `name` is an RFC 8941 token, the form of a `Cache-Status` member's name.
fn is_token(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == b'*')
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || b":/!#$%&'*+-.^_`|~".contains(&byte))
}

impl fmt::Debug for HttpCacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCacheBuilder")
            .field("mode", &self.mode)
            .field("max_body", &self.max_body)
            .field("max_bytes", &self.max_bytes)
            .field("heuristic", &self.heuristic)
            .field("remote", &self.remote.is_some())
            .finish_non_exhaustive()
    }
}

/// Applies an [`HttpCache`]: see the [module docs](crate::cache#http-mode).
///
/// Clones of the layer, and every service it builds, share one store.
#[must_use]
pub struct HttpCacheLayer {
    shared: Arc<Shared<HttpKey, HttpValue>>,
    settings: Arc<Settings>,
}

impl HttpCacheLayer {
    /// Configures an HTTP cache of `mode`: [`CacheMode::Shared`] in front of a server's
    /// handlers, [`CacheMode::Private`] around one user's client.
    pub fn builder(mode: CacheMode) -> HttpCacheBuilder {
        HttpCacheBuilder::new(mode)
    }

    /// A handle to this layer's entries and counters.
    #[must_use]
    pub fn handle(&self) -> HttpCacheHandle {
        HttpCacheHandle {
            inner: CacheHandle::new(Arc::clone(&self.shared)),
            settings: Arc::clone(&self.settings),
        }
    }
}

impl Clone for HttpCacheLayer {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            settings: Arc::clone(&self.settings),
        }
    }
}

impl<S> Layer<S> for HttpCacheLayer {
    type Service = HttpCache<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpCache::new(inner, Arc::clone(&self.shared), Arc::clone(&self.settings))
    }
}

impl fmt::Debug for HttpCacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCacheLayer")
            .field("name", &self.settings.name)
            .field("shared", &self.settings.rules.shared)
            .finish_non_exhaustive()
    }
}

/// Controls one HTTP cache from outside the request path. Cloning shares the cache.
#[derive(Clone)]
pub struct HttpCacheHandle {
    inner: CacheHandle<HttpKey, HttpValue>,
    settings: Arc<Settings>,
}

impl fmt::Debug for HttpCacheHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCacheHandle")
            .field("name", &self.settings.name)
            .finish_non_exhaustive()
    }
}

impl HttpCacheHandle {
    /// Removes what is stored for `uri` (every variant of it, with and without a scheme), as
    /// a successful unsafe request
    /// to it does (RFC 9111 §4.4). `uri` names the target as requests do: with the authority
    /// they carried (in the URI or `Host`), or a bare path for requests that carried none.
    /// A fetch of the target running now is not stored. With a remote tier, the target's
    /// remote entry goes too (on a task of its own). Returns whether something was stored
    /// locally.
    pub fn invalidate(&self, uri: &http::Uri) -> bool {
        HttpKey::of_uri(uri)
            .every_form()
            .iter()
            .fold(false, |any, key| {
                super::service::invalidate(&self.inner.shared, &self.settings, key) | any
            })
    }

    /// Removes every locally stored response; no fetch running now is stored. A remote
    /// tier's entries stay: drop them by moving to a new key prefix.
    pub fn invalidate_all(&self) {
        self.inner.invalidate_all();
    }

    /// The counters and gauges now; `refreshes` counts background revalidations that stored
    /// (a `304` or a new response), `entries` counts `Vary` indexes too.
    #[must_use]
    pub fn metrics(&self) -> Metrics {
        self.inner.metrics()
    }
}
