//! Event hooks: plain callbacks a layer calls, on the task where the event happens, when
//! something worth telling happens (a retry, a transition, a rejection, a timeout, a refresh).
//!
//! Set on a layer's builder (`on_retry`, `on_transition`, `on_rejected`, `on_timeout`,
//! `on_event`). Unset, a hook costs an empty pointer: checked only on paths already off the
//! happy one (the retry and the timeout copy it into each call's future), and no event is built
//! unless a hook will read it. Set, the retry and the timeouts clone its reference-counted
//! pointer into each call (two atomic operations); the others keep it in shared state. Setting
//! the same hook twice calls both, in the order they were set.
//!
//! A hook runs synchronously inside the layer, with no lock of the layer's held: keep it
//! short (count, log, send on a channel) and let it not panic, since a panic unwinds through
//! the call that raised the event. No task is spawned and nothing is buffered, so, unlike a
//! broadcast subscription, a hook never lags and never misses an event.

use std::fmt;
use std::sync::Arc;

/// A callback for events of type `E`.
type Callback<E> = Arc<dyn Fn(&E) + Send + Sync>;

/// A callback for events of type `E`, or none.
pub(crate) struct Hook<E: ?Sized>(Option<Callback<E>>);

impl<E: ?Sized + 'static> Hook<E> {
    /// This hook, then `next`.
    pub(crate) fn then(self, next: impl Fn(&E) + Send + Sync + 'static) -> Self {
        Self(Some(match self.0 {
            None => Arc::new(next),
            Some(first) => Arc::new(move |event: &E| {
                first(event);
                next(event);
            }),
        }))
    }

    /// Whether a callback is set.
    #[cfg_attr(
        not(any(feature = "circuit-breaker", feature = "throttle")),
        allow(dead_code)
    )]
    #[inline]
    pub(crate) fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Calls the callback, if one is set, with the event `make` builds (only then).
    #[cfg_attr(not(feature = "retry"), allow(dead_code))]
    #[inline]
    pub(crate) fn emit_with(&self, make: impl FnOnce() -> E)
    where
        E: Sized,
    {
        if let Some(hook) = &self.0 {
            hook(&make());
        }
    }

    /// Calls the callback, if one is set, with `event`.
    #[cfg_attr(
        not(any(feature = "circuit-breaker", feature = "throttle", feature = "timeout")),
        allow(dead_code)
    )]
    #[inline]
    pub(crate) fn emit(&self, event: &E) {
        if let Some(hook) = &self.0 {
            hook(event);
        }
    }
}

impl<E: ?Sized> Default for Hook<E> {
    fn default() -> Self {
        Self(None)
    }
}

impl<E: ?Sized> Clone for Hook<E> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<E: ?Sized> fmt::Debug for Hook<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "set" } else { "unset" })
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn hooks_set_twice_both_run_in_order_and_an_unset_one_builds_no_event() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (a, b) = (Arc::clone(&seen), Arc::clone(&seen));
        let hook = Hook::<u32>::default()
            .then(move |n| a.lock().unwrap().push(("first", *n)))
            .then(move |n| b.lock().unwrap().push(("second", *n)));
        assert!(hook.is_set());
        hook.emit(&7);
        assert_eq!(*seen.lock().unwrap(), [("first", 7), ("second", 7)]);
        let unset = Hook::<u32>::default();
        unset.emit_with(|| unreachable!("no event is built for an unset hook"));
        assert_eq!(format!("{unset:?} {hook:?}"), "unset set");
    }
}
