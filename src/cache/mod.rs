//! A stale-while-revalidate cache with single flight: a hot key that expires makes one call to
//! the origin, however many callers want it, and a stale entry is served at once while one
//! background refresh runs.
//!
//! # Quick start
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::time::Duration;
//! use palisade::cache::CacheLayer;
//! use palisade::error::BoxError;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let calls = Arc::new(AtomicUsize::new(0));
//! let cache = CacheLayer::builder(Duration::from_secs(30), |user: &u64| Some(*user))
//!     .stale_while_revalidate(Duration::from_secs(60))
//!     .stale_if_error(Duration::from_secs(600))
//!     .build()
//!     .unwrap();
//! let handle = cache.handle();
//! let mut profiles = ServiceBuilder::new().layer(cache).service_fn({
//!     let calls = Arc::clone(&calls);
//!     move |user: u64| {
//!         calls.fetch_add(1, Ordering::SeqCst);
//!         async move { Ok::<_, BoxError>(Arc::<str>::from(format!("profile {user}"))) }
//!     }
//! });
//! for _ in 0..3 {
//!     let profile = profiles.ready().await.unwrap().call(7).await.unwrap();
//!     assert_eq!(&*profile, "profile 7");
//! }
//! assert_eq!(calls.load(Ordering::SeqCst), 1, "one fetch, two hits");
//! assert_eq!(handle.metrics().hits, 2);
//! # }
//! ```
//!
//! # Entry life
//!
//! ```text
//!   stored             + ttl                + stale_while_revalidate
//!     |──── fresh ────────|──── stale ─────────────|──── expired ──────────▶
//!     served; XFetch may   served at once; the      callers wait on one fetch (single flight);
//!     refresh it early     first caller starts      a failed fetch is answered with the old
//!     (in the background)  one background refresh   value until ttl + stale_if_error
//! ```
//!
//! - **Single flight.** On a miss or an expired entry one caller (the leader) calls the inner
//!   service; every other caller for the key waits, parked and woken once, and gets the leader's
//!   response. A waiter gives up after the [lock timeout](CacheBuilder::lock_timeout) (5 s) and
//!   calls the inner service itself. A leader whose future is dropped hands over: its waiters
//!   wake and the first becomes the next leader, so exactly one more call reaches the origin.
//!   When the leader's call fails, its waiters get a [`LeaderFailed`] rejection by default
//!   ([`LeaderFailure::Share`]; [`LeaderFailure::EachTries`] lets each try once itself).
//! - **Background refresh.** The first caller to see a stale entry claims its refresh with one
//!   CAS; the refresh runs on tokio with a clone of the inner service, driven ready first, using
//!   that caller's request (the caller is answered from the cache, so its request is free). At
//!   most [`max_refreshes`](CacheBuilder::max_refreshes) run at once; a failed refresh keeps
//!   the stale entry and lets the next refresh start after the
//!   [backoff](CacheBuilder::refresh_backoff) (1 s). A refresh's result is stored only if the
//!   entry is still the one it refreshed: an [`insert`](CacheHandle::insert) or an
//!   [`invalidate`](CacheHandle::invalidate) during the refresh wins.
//! - **Early refresh (XFetch).** Vattani, Chierichetti and Lowenstein (VLDB 2015): a fresh
//!   entry is refreshed in the background with probability `exp(−τ / (β·δ))`, τ its time to
//!   expiry and δ how long its fetch took, so a hot key is usually refreshed before it expires
//!   and the expiry stampede never forms. β = 1 by default, 0 turns it off.
//! - **Jittered lifetimes.** Each entry's time to live is spread over ±10 % on insert, so
//!   entries written together do not expire together.
//! - **Bounded memory.** At most [`max_entries`](CacheBuilder::max_entries), or
//!   [`max_weight`](CacheBuilder::max_weight) with a weigher; eviction is `quick_cache`'s
//!   CLOCK-Pro-like policy (a scan of one-off keys does not flush the hot ones). A value heavier
//!   than the entry bound passes through uncached. The in-flight table and the refreshes are
//!   bounded too.
//!
//! Waiting (the lock timeout) and bounding a refresh use tokio's timers: run the cache on a
//! runtime with time enabled, as every palisade timeout needs. Outside any runtime a hit is
//! still served, a stale one without a refresh, and a waiter waits without a timeout.
//!
//! Values are cloned on every hit: cache `Arc<T>` or `Bytes` so that a hit is a reference
//! count. The key function returns `None` to pass a request through untouched.
//!
//! # Choosing the windows
//!
//! - `ttl`: how old an answer may be and still be served as current. Everything else follows.
//! - `stale_while_revalidate`: how much older it may be when a caller is served at once while
//!   the refresh runs. The longer, the more often a key that is read at least once per window
//!   is never waited on. Use the interval between reads of your coldest key worth keeping warm.
//! - `stale_if_error`: how much older it may be when the origin is failing. Use the longest
//!   origin outage you would rather ride out with old data than fail through: minutes to hours.
//!   It counts from the end of freshness (RFC 5861), so a window shorter than
//!   `stale_while_revalidate` adds nothing.
//!
//! # Defaults
//!
//! | setting | default | source |
//! | --- | --- | --- |
//! | [`stale_while_revalidate`](CacheBuilder::stale_while_revalidate) | 0 | RFC 5861: off unless asked for |
//! | [`stale_if_error`](CacheBuilder::stale_if_error) | 0 | RFC 5861: off unless asked for |
//! | [`ttl_jitter`](CacheBuilder::ttl_jitter) | [`DEFAULT_TTL_JITTER`] (±10 %) | common practice against synchronized expiry |
//! | [`early_refresh`](CacheBuilder::early_refresh) | [`DEFAULT_EARLY_REFRESH`] (β = 1) | XFetch, the paper's optimum |
//! | [`lock_timeout`](CacheBuilder::lock_timeout) | [`DEFAULT_LOCK_TIMEOUT`] (5 s) | nginx `proxy_cache_lock_timeout` |
//! | [`refresh_backoff`](CacheBuilder::refresh_backoff) | [`DEFAULT_REFRESH_BACKOFF`] (1 s) | one refresh per key per second against a failing origin |
//! | [`on_leader_failure`](CacheBuilder::on_leader_failure) | [`LeaderFailure::Share`] | one failed call per key, not one per waiter |
//! | [`max_entries`](CacheBuilder::max_entries) | [`DEFAULT_MAX_ENTRIES`] (10 000) | |
//! | [`max_refreshes`](CacheBuilder::max_refreshes) | [`DEFAULT_MAX_REFRESHES`] (64) | |
//! | [`max_in_flight`](CacheBuilder::max_in_flight) | [`DEFAULT_MAX_IN_FLIGHT`] (10 000) | |
//! | classifier | [`DefaultClassifier`](crate::classify::DefaultClassifier): every `Ok` is stored | |
//!
//! # Where it goes in a stack
//!
//! Around a client, outside the retry (a hit costs no attempt, and a refresh goes through the
//! retry, the breaker and the timeouts like any call); in a server, inside the server timeout
//! and outside the handler.
//!
//! # Errors
//!
//! The service's error is a [`BoxError`](crate::error::BoxError): the inner service's error,
//! or [`LeaderFailed`] for a waiter behind a failed fetch. Find it with
//! [`Rejection::find`](crate::error::Rejection::find).
//!
//! # Not yet
//!
//! The HTTP mode (RFC 9111 freshness, `Vary`, `Age`, `Cache-Status`, conditional
//! revalidation) and a Redis store are not built: this is the generic engine. A value served by
//! stale-if-error is counted in the [metrics](Metrics) but not marked on the value itself.

mod config;
mod error;
mod flight;
mod future;
mod handle;
#[cfg(feature = "http")]
mod http;
mod layer;
#[cfg(all(test, palisade_loom))]
mod loom_models;
mod service;
mod shared;
mod state;
mod store;

pub use self::config::{
    CacheBuilder, DEFAULT_EARLY_REFRESH, DEFAULT_LOCK_TIMEOUT, DEFAULT_MAX_ENTRIES,
    DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_REFRESHES, DEFAULT_REFRESH_BACKOFF, DEFAULT_TTL_JITTER,
    LeaderFailure, TtlOf, WeightOf,
};
pub use self::error::LeaderFailed;
pub use self::future::ResponseFuture;
pub use self::handle::{CacheHandle, Metrics};
#[cfg(feature = "http")]
pub use self::http::{
    CacheMode, DEFAULT_MAX_BODY, DEFAULT_MAX_BYTES, HttpCache, HttpCacheBuilder, HttpCacheHandle,
    HttpCacheLayer, HttpResponseFuture,
};
pub use self::layer::CacheLayer;
pub use self::service::Cache;
