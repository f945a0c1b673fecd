//! [`CacheLayer`].

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::config::CacheBuilder;
use super::handle::CacheHandle;
use super::hooks::{CacheEvent, Callbacks};
use super::remote::{Remote, RemoteCodec, RemoteStore};
use super::service::Cache;
use super::shared::Shared;
use crate::error::ConfigError;

/// Applies a [`Cache`]: see the [module docs](crate::cache).
///
/// # Clone
///
/// The entries, the flights and the counters are created once, in the layer value: clones of
/// the layer and every service it builds share them, so a key fetched through one is a hit
/// through all.
#[must_use]
pub struct CacheLayer<F, C, K, V> {
    key_of: F,
    classifier: Arc<C>,
    shared: Arc<Shared<K, V>>,
    callbacks: Callbacks<K, V>,
}

/// Marks a value served in place of a failure (stale-if-error), for
/// [`CacheLayer::mark_stale_if_error`].
pub type MarkStale<V> = Arc<dyn Fn(V) -> V + Send + Sync>;

impl CacheLayer<(), (), (), ()> {
    /// Configures a cache whose entries are fresh for `ttl`, keyed by `key_of` (a request's
    /// key, or `None` to pass the request through uncached); see [`CacheBuilder`].
    pub fn builder<F>(ttl: Duration, key_of: F) -> CacheBuilder<F> {
        CacheBuilder::new(ttl, key_of)
    }
}

impl<F, C, K, V> CacheLayer<F, C, K, V> {
    pub(crate) fn new(key_of: F, classifier: C, shared: Arc<Shared<K, V>>) -> Self {
        Self {
            key_of,
            classifier: Arc::new(classifier),
            shared,
            callbacks: Callbacks::default(),
        }
    }

    /// Marks every value served in place of a failed fetch (stale-if-error) with `mark`, so
    /// the caller can tell an old answer from a current one: set a flag in it, add a header to
    /// an `http::Response`, wrap it. The callers coalesced behind that fetch get the marked
    /// value too. Defaults to none: the value is served as stored (and counted in
    /// [`Metrics::stale_if_error`](super::Metrics::stale_if_error)).
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade::cache::CacheLayer;
    ///
    /// #[derive(Clone)]
    /// struct Quote {
    ///     price: u32,
    ///     /// Set on a quote served while the origin fails.
    ///     stale: bool,
    /// }
    ///
    /// let cache = CacheLayer::builder(Duration::from_secs(30), |id: &u64| Some(*id))
    ///     .stale_if_error(Duration::from_secs(600))
    ///     .build::<u64, Quote>()
    ///     .unwrap()
    ///     .mark_stale_if_error(|quote| Quote { stale: true, ..quote });
    /// # let _ = cache;
    /// # let quote = Quote { price: 7, stale: false };
    /// # assert!(quote.price == 7 && !quote.stale);
    /// ```
    pub fn mark_stale_if_error(mut self, mark: impl Fn(V) -> V + Send + Sync + 'static) -> Self {
        self.callbacks.mark = Some(Arc::new(mark));
        self
    }

    /// Calls `hook` with each key's misses, coalesced waits, remote hits, refreshes, refresh
    /// failures and stale-if-error answers, as they happen (on the task that sees them, with
    /// no lock of the cache held). Hits are not told: they are the hot path, counted in the
    /// [metrics](CacheHandle::metrics). See [`crate::cache#event-hooks`]. Set twice, both run.
    pub fn on_event(mut self, hook: impl Fn(&K, CacheEvent) + Send + Sync + 'static) -> Self
    where
        K: 'static,
    {
        self.callbacks.on_event = Some(match self.callbacks.on_event.take() {
            None => Arc::new(hook),
            Some(first) => Arc::new(move |key: &K, event| {
                first(key, event);
                hook(key, event);
            }),
        });
        self
    }

    /// Shares entries with the other instances of a fleet through `store` (a
    /// [`RedisCacheStore`](crate::redis) with the `redis` feature), its keys and values turned
    /// into bytes by `codec`. The in-memory entries stay the first tier; see the
    /// [module docs](crate::cache#a-remote-tier-for-a-fleet) for what the remote is asked and
    /// when.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Conflict`] if this layer (or a clone of it) has a remote tier already.
    pub fn remote(
        self,
        store: impl RemoteStore,
        codec: impl RemoteCodec<K, V>,
    ) -> Result<Self, ConfigError> {
        self.set_remote(store, codec)
    }

    fn set_remote(
        self,
        store: impl RemoteStore,
        codec: impl RemoteCodec<K, V>,
    ) -> Result<Self, ConfigError> {
        let remote = Remote {
            store: Arc::new(store),
            codec: Arc::new(codec),
        };
        match self.shared.remote.set(remote) {
            Ok(()) => Ok(self),
            Err(_) => Err(ConfigError::Conflict {
                setting: "remote",
                value: "a second remote tier".to_owned(),
                other: "remote",
                why: "a cache layer has one remote tier, set once",
            }),
        }
    }
}

impl<F, C, K: Hash + Eq + Clone, V: Clone> CacheLayer<F, C, K, V> {
    /// As [`remote`](Self::remote), with the remote as the only tier: nothing is kept in
    /// memory, so every call asks the remote (one round trip; the callers of one instance are
    /// still coalesced behind one lookup), and an invalidation anywhere in the fleet is seen
    /// everywhere once its removal lands. A stale entry found there is served and refreshed by the call that
    /// found it (one instance of the fleet, by the remote lock); XFetch's early refresh, which
    /// draws on local hits, does not run. See the
    /// [module docs](crate::cache#without-a-local-tier).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Conflict`] if this layer (or a clone of it) has a remote tier already.
    pub fn remote_only(
        self,
        store: impl RemoteStore,
        codec: impl RemoteCodec<K, V>,
    ) -> Result<Self, ConfigError> {
        let layer = self.set_remote(store, codec)?;
        layer.shared.store.keep_nothing();
        Ok(layer)
    }

    /// A handle to the entries and counters of this layer's services: invalidate, insert, and
    /// read the metrics.
    pub fn handle(&self) -> CacheHandle<K, V> {
        CacheHandle::new(Arc::clone(&self.shared))
    }
}

impl<F: Clone, C, K, V> Clone for CacheLayer<F, C, K, V> {
    fn clone(&self) -> Self {
        Self {
            key_of: self.key_of.clone(),
            classifier: Arc::clone(&self.classifier),
            shared: Arc::clone(&self.shared),
            callbacks: self.callbacks.clone(),
        }
    }
}

impl<S, F: Clone, C, K, V> Layer<S> for CacheLayer<F, C, K, V> {
    type Service = Cache<S, F, C, K, V>;

    fn layer(&self, inner: S) -> Self::Service {
        Cache::new(
            inner,
            self.key_of.clone(),
            Arc::clone(&self.classifier),
            Arc::clone(&self.shared),
            self.callbacks.clone(),
        )
    }
}

impl<F, C, K, V> fmt::Debug for CacheLayer<F, C, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayer")
            .field("name", &self.shared.config.name)
            .field("ttl", &self.shared.config.ttl)
            .finish_non_exhaustive()
    }
}
