//! [`IdempotencyLayer`]: the settings and the store, shared by every service it makes.

use super::error::OUTCOME_LABELS;
use crate::instruments::{Counters, LayerKind, name_label};
use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::config::{Config, IdempotencyBuilder};
use super::service::Idempotency;
use super::store::MemoryStore;

/// Makes unsafe requests carrying an `Idempotency-Key` run at most once: see the
/// [module docs](crate::idempotency).
///
/// Holds the settings and the store: every service it makes (axum calls
/// [`Layer::layer`] once per route, and on some paths per request) shares them, so a key claimed
/// through one is seen by all.
#[must_use]
pub struct IdempotencyLayer<St = MemoryStore> {
    settings: Arc<Config>,
    store: St,
}

impl IdempotencyLayer {
    /// POST and PATCH requests with a key are deduplicated in a new [`MemoryStore`]; requests
    /// without a key pass through.
    pub fn new() -> Self {
        Self::from_parts(Config::defaults(), MemoryStore::new())
    }

    /// A layer that covers no method: every request passes through (the server preset's
    /// `without_idempotency`).
    #[cfg(feature = "preset")]
    pub(crate) fn covering_nothing() -> Self {
        let settings = Config {
            methods: Vec::new(),
            ..Config::defaults()
        };
        Self::from_parts(settings, MemoryStore::new())
    }

    /// Configures a layer: the methods covered, the caller's identity, limits, lease and
    /// retention, the store; see [`IdempotencyBuilder`].
    pub fn builder() -> IdempotencyBuilder {
        IdempotencyBuilder::new()
    }
}

impl Default for IdempotencyLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<St> IdempotencyLayer<St> {
    pub(crate) fn from_parts(mut settings: Config, store: St) -> Self {
        settings.outcomes = Counters::new(
            "palisade_idempotency_requests_total",
            LayerKind::Idempotency,
            &name_label(settings.name.as_deref()),
            "outcome",
            OUTCOME_LABELS,
        );
        Self {
            settings: Arc::new(settings),
            store,
        }
    }

    /// This layer with its metrics under `name` (the records stay shared).
    #[cfg(feature = "preset")]
    pub(crate) fn renamed(self, name: Arc<str>) -> Self {
        let mut settings = Arc::unwrap_or_clone(self.settings);
        settings.name = Some(name);
        Self::from_parts(settings, self.store)
    }

    #[cfg(test)]
    pub(crate) fn settings(&self) -> &Config {
        &self.settings
    }

    /// The store.
    pub fn store_handle(&self) -> &St {
        &self.store
    }
}

impl<St: Clone> Clone for IdempotencyLayer<St> {
    fn clone(&self) -> Self {
        Self {
            settings: Arc::clone(&self.settings),
            store: self.store.clone(),
        }
    }
}

impl<S, St: Clone> Layer<S> for IdempotencyLayer<St> {
    type Service = Idempotency<S, St>;

    fn layer(&self, inner: S) -> Self::Service {
        Idempotency::new(inner, Arc::clone(&self.settings), self.store.clone())
    }
}

impl<St: fmt::Debug> fmt::Debug for IdempotencyLayer<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyLayer")
            .field("settings", &*self.settings)
            .field("store", &self.store)
            .finish()
    }
}
