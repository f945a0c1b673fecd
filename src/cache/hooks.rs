//! The cache layer's callbacks: the stale-if-error marker and the event hook
//! ([`CacheLayer::on_event`](super::CacheLayer::on_event)).

use std::fmt;
use std::sync::Arc;

use super::layer::MarkStale;

/// What happened to a key, told to [`CacheLayer::on_event`](super::CacheLayer::on_event).
/// Hits are not told (they are the hot path: read them from the
/// [metrics](super::CacheHandle::metrics)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CacheEvent {
    /// The key was fetched from the inner service (a leader, a lone fetch, or a waiter that
    /// fetched itself).
    Miss,
    /// The caller waited for another caller's fetch of the key.
    Coalesced,
    /// A miss was answered from the remote tier, without the inner service.
    RemoteHit,
    /// A background refresh stored a new value.
    Refreshed,
    /// A background refresh failed; the stale entry stays.
    RefreshFailed,
    /// A failed fetch was answered with the old value (stale-if-error).
    StaleIfError,
}

/// An event hook, as [`CacheLayer::on_event`](super::CacheLayer::on_event) keeps it.
pub type OnEvent<K> = Arc<dyn Fn(&K, CacheEvent) + Send + Sync>;

/// The layer's callbacks, handed to every service it builds and, on a miss or a refresh
/// only, to the work that may call them.
pub(crate) struct Callbacks<K, V> {
    pub(crate) mark: Option<MarkStale<V>>,
    pub(crate) on_event: Option<OnEvent<K>>,
}

impl<K, V> Callbacks<K, V> {
    /// Tells the event hook, if one is set, that `event` happened to `key`.
    #[inline]
    pub(crate) fn tell(&self, key: &K, event: CacheEvent) {
        tell(self.on_event.as_ref(), key, event);
    }
}

/// Tells `hook`, if there is one, that `event` happened to `key`.
#[inline]
pub(crate) fn tell<K>(hook: Option<&OnEvent<K>>, key: &K, event: CacheEvent) {
    if let Some(hook) = hook {
        hook(key, event);
    }
}

impl<K, V> Default for Callbacks<K, V> {
    fn default() -> Self {
        Self {
            mark: None,
            on_event: None,
        }
    }
}

impl<K, V> Clone for Callbacks<K, V> {
    fn clone(&self) -> Self {
        Self {
            mark: self.mark.clone(),
            on_event: self.on_event.clone(),
        }
    }
}

impl<K, V> fmt::Debug for Callbacks<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Callbacks")
            .field("mark", &self.mark.is_some())
            .field("on_event", &self.on_event.is_some())
            .finish()
    }
}
