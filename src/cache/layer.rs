//! [`CacheLayer`].

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::config::CacheBuilder;
use super::handle::CacheHandle;
use super::service::Cache;
use super::shared::Shared;

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
}

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
        }
    }
}

impl<F, C, K: Hash + Eq + Clone, V: Clone> CacheLayer<F, C, K, V> {
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
