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
//! [`Rejection::find`](crate::error::Rejection::find). A value served by stale-if-error is
//! counted in the [metrics](Metrics), and marked if you give the layer a
//! [marker](CacheLayer::mark_stale_if_error) (the HTTP mode marks its answers in
//! `Cache-Status`).
//!
//! # Event hooks
//!
//! [`CacheLayer::on_event`] (in HTTP mode [`HttpCacheBuilder::on_event`], with the target as
//! `host/path?query`) is called with the key and a [`CacheEvent`] at each miss,
//! coalesced wait, remote hit, refresh, failed refresh and stale-if-error answer, on the task
//! that sees it, with no lock of the cache held (a refresh's on its background task). Hits are
//! not told: they are the hot path, and the [metrics](CacheHandle::metrics) count them. A hit
//! never looks at the hook; a miss clones the layer's two callback pointers.
//!
//! ```
//! use std::time::Duration;
//! use palisade::cache::{CacheEvent, CacheLayer};
//!
//! let cache = CacheLayer::builder(Duration::from_secs(30), |id: &u64| Some(*id))
//!     .build::<u64, std::sync::Arc<str>>()
//!     .unwrap()
//!     .on_event(|id, event| {
//!         if event == CacheEvent::RefreshFailed {
//!             tracing::warn!(id, "refresh failed: serving stale");
//!         }
//!     });
//! # let _ = cache;
//! ```
//!
//! # A remote tier for a fleet
//!
//! Each instance of a scaled-out service has its own entries, so without help each one
//! fetches a cold key and refreshes a stale one on its own: a fleet of 20 instances sends 20
//! calls per key to the origin. [`CacheLayer::remote`] gives the layer a [`RemoteStore`]
//! shared by the fleet (`palisade::redis::RedisCacheStore` with the `redis` feature), and a
//! [`RemoteCodec`] that turns keys and values into bytes.
//!
//! The local entries stay the first tier: **a hit never leaves the process**, and costs what it
//! costs without a remote. The remote is asked only where the origin would be:
//!
//! - **A miss** (or an expired entry): the local leader looks the key up (one round trip). A
//!   fresh or stale entry there is taken into the local tier and served; counted as
//!   `remote_hits`. Otherwise that same round trip takes the key's remote lock (a lease of the
//!   [lock timeout](CacheBuilder::lock_timeout)) if nobody holds it, and the holder calls the
//!   origin. A leader that finds the lock held looks again, 5 ms later, then 10, 20 and every
//!   50 ms, for up to half the lock timeout, then calls the origin itself. Local callers wait on
//!   their own leader as ever, so each instance asks the remote once per key, however many
//!   callers it has.
//! - **A stale hit**'s background refresh first takes a fresher remote entry if another
//!   instance published one, else the remote lock: only its holder calls the origin. An
//!   instance that finds the lock held serves stale and looks again 50 ms later.
//! - **A fetched or refreshed value** is published (one round trip, after its callers have it)
//!   for its whole life, with its windows. The remote keeps them as instants of its own clock,
//!   so every instance computes the same phase whatever its own clock says.
//! - [`CacheHandle::invalidate`] removes the remote entry too; [`CacheHandle::insert`]
//!   publishes. [`CacheHandle::invalidate_all`] clears only the local tier: drop a remote's
//!   entries by moving to a new key prefix.
//!
//! A remote that fails, answers late (the Redis store's timeout, 250 ms by default) or holds a
//! value the codec cannot decode is **bypassed**: the call goes on as if there were no remote
//! tier (the local entry, or the origin), and the failure is counted (`remote_errors`). A
//! remote never makes a call fail. Jitter, XFetch and stale-if-error work as without it; a
//! per-response time to live is carried in the published windows.
//!
//! ```
//! use std::sync::Arc;
//!
//! use bytes::Bytes;
//! use palisade::cache::RemoteCodec;
//!
//! /// Prices by product id, as UTF-8 text: the same bytes on every instance and release.
//! struct Prices;
//!
//! impl RemoteCodec<u64, Arc<str>> for Prices {
//!     fn key(&self, id: &u64) -> Vec<u8> {
//!         format!("price:{id}").into_bytes()
//!     }
//!     fn encode(&self, price: &Arc<str>) -> Option<Bytes> {
//!         Some(Bytes::copy_from_slice(price.as_bytes()))
//!     }
//!     fn decode(&self, bytes: &[u8]) -> Option<Arc<str>> {
//!         std::str::from_utf8(bytes).ok().map(Arc::from)
//!     }
//! }
//! # let _ = Prices;
//! ```
//!
//! ## Without a local tier
//!
//! The local tier is bounded like any cache (entries, weight) and optional:
//! [`CacheLayer::remote_only`] (and [`HttpCacheBuilder::remote_only`]) keep nothing in memory.
//! Choose it when the fleet must agree soon: an invalidation from any instance is seen by
//! every other once its removal lands in the remote (one round trip, sent on a task of its own
//! as the invalidation happens), where with a local tier the others serve what they hold until
//! it is stale. What it costs: every call asks the remote (one round trip; the concurrent
//! callers of one instance still share one lookup), and a remote that is down leaves nothing
//! to serve but the origin.
//!
//! One race remains, with a local tier or without: a fetch already running on another
//! instance when the invalidation lands publishes its (older) response when it finishes. (The
//! remote lock, by contrast, is its holder's: it keeps a random [`LockToken`], so a holder
//! whose lease lapsed mid-fetch cannot give up the lock of the instance that took over.) A
//! removal that fails is counted in `remote_errors`, not retried.
//!
//! | | with a local tier (default) | remote only |
//! | --- | --- | --- |
//! | a hit | in memory, no round trip | one lookup |
//! | a stale entry | served; the background refresh takes the remote lock | served; the call that found it refreshes in the background, under the remote lock |
//! | XFetch's early refresh | drawn on each local hit | does not run |
//! | an invalidation elsewhere | seen once the local entry is stale | seen once its removal lands |
//! | the remote down | local entries still served | every call goes to the origin |
//! | stale-if-error (HTTP mode) | the local copy stands in | not served: no local copy |
//! | `HEAD`, `only-if-cached` (HTTP mode) | answered from the local tier | `HEAD` goes to the origin; `only-if-cached` is answered `504` |
//!
//! # HTTP mode
//!
//! With the `http` feature, [`HttpCacheLayer`] is the same engine as an HTTP cache: the
//! freshness, the stale windows and what may be stored come from each response's own headers
//! (RFC 9111, RFC 5861), every answer says what the cache did (RFC 9211 `Cache-Status`), and it
//! goes on an axum `Router` as it is (its error is the inner service's).
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use palisade::cache::{CacheMode, HttpCacheLayer};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let cache = HttpCacheLayer::builder(CacheMode::Shared)
//!     .stale_if_error(Duration::from_secs(600)) // for responses that set no window
//!     .build()
//!     .unwrap();
//! let app = Router::new()
//!     .route("/price", get(|| async {
//!         ([("cache-control", "max-age=30, stale-while-revalidate=60")], "42")
//!     }))
//!     .layer(cache);
//!
//! let get = || http::Request::get("/price").body(axum::body::Body::empty()).unwrap();
//! let first = app.clone().oneshot(get()).await.unwrap();
//! assert_eq!(first.headers()["cache-status"], "palisade; fwd=uri-miss; fwd-status=200; ttl=30; stored");
//! tokio::time::advance(Duration::from_secs(5)).await;
//! let hit = app.clone().oneshot(get()).await.unwrap();
//! assert_eq!(hit.headers()["cache-status"], "palisade; hit; ttl=25");
//! assert_eq!(hit.headers()["age"], "5");
//! # }
//! ```
//!
//! ## What a stored response may answer
//!
//! | rule | RFC 9111 | here |
//! | --- | --- | --- |
//! | freshness lifetime | §4.2.1 | `s-maxage` (shared mode), else `max-age`, else `Expires − Date`; an invalid or conflicting value is stale |
//! | heuristic freshness | §4.2.2 | only if [configured](HttpCacheBuilder::heuristic_freshness): a share of `Date − Last-Modified` |
//! | age | §4.2.3 | the corrected initial age (the larger of receipt − `Date` and `Age` + the exchange's time) plus the time stored; `Age` on every answer from the store |
//! | request `max-age`, `min-fresh`, `max-stale` | §5.2.1 | narrow or widen what is served; `max-stale` without a value takes any staleness |
//! | request `no-cache` (or `Pragma: no-cache`) | §5.2.1.4, §5.4 | forwarded (conditionally), the answer stored |
//! | request `no-store` | §5.2.1.5 | forwarded, the answer not stored |
//! | request `only-if-cached` | §5.2.1.7 | `504` problem when nothing stored may answer |
//! | response `no-store` | §5.2.2.5 | not stored |
//! | response `no-cache` | §5.2.2.4 | stored, revalidated before every use, never served stale |
//! | response `must-revalidate`, `proxy-revalidate` and `s-maxage` (shared) | §5.2.2.2, §5.2.2.8, §5.2.2.10 | never served stale: no stale-while-revalidate, no stale-if-error, no `max-stale` |
//! | `stale-while-revalidate=N`, `stale-if-error=N` | RFC 5861 | the windows of that response; the builder's apply to responses that set none but have a freshness of their own (explicit or heuristic): a response silent about caching is never served stale |
//! | `Vary` | §4.1 | one entry per value of the named request headers (normalised: lines joined, spaces trimmed); `Vary: *` never stored |
//! | validators | §4.3.1, §4.3.4 | a stale response with `ETag` / `Last-Modified` is revalidated with `If-None-Match` / `If-Modified-Since`; a `304` updates its headers and freshness, the body kept |
//! | unsafe methods | §4.4 | a `POST`, `PUT`, `DELETE`, `PATCH` answered 2xx or 3xx removes its target and the same-origin targets of its `Location` and `Content-Location`, each with and without a scheme (HTTP/1 requests come in origin form, HTTP/2 and client requests with a scheme); a caller that comes after the write is never coalesced behind a fetch the write invalidated |
//! | caller's conditionals | RFC 9110 §13.1.2–3 | `If-None-Match` and `If-Modified-Since` are answered `304` from what the cache serves; `Range`, `If-Match`, `If-Unmodified-Since`, `If-Range` go forward untouched (`fwd=bypass`) |
//!
//! Only `GET` responses are stored (a `HEAD` is answered from them, without the body), and
//! only complete ones that are not server errors: a `206`, a `304` or a `5xx` never displaces
//! the entry stale-if-error would serve. Qualified `no-cache="…"` and `private="…"` are read
//! as their unqualified forms, the stricter reading RFC 9111 allows.
//!
//! ## Never one caller's response to another
//!
//! - In [`CacheMode::Shared`], a `private` response is never stored, and a response to a
//!   request with `Authorization` or `Cookie` is stored only when the response says it may be
//!   shared (`public`, `s-maxage` or `must-revalidate`, §3.5).
//! - A response that sets a cookie is not stored unless
//!   [configured](HttpCacheBuilder::store_set_cookie_responses), and then without its
//!   `Set-Cookie`: only the caller whose request fetched it gets the cookie.
//! - A caller coalesced behind another's fetch is handed that response only if the response
//!   may be stored, and only if it varies on nothing or this caller's request headers select
//!   the same variant; otherwise it forwards its own request.
//! - A caller coalesced behind a failed fetch gets a problem response carrying the origin's
//!   status and `Retry-After`, never the origin's body ([`LeaderFailure::Share`]; with
//!   [`LeaderFailure::EachTries`] each forwards its own request).
//! - A shared cache's background revalidations (stale-while-revalidate, XFetch) are sent
//!   without the `Authorization` and `Cookie` of the caller who found the entry stale (but
//!   see the next point for a response that varies on them).
//! - Keys include the scheme when the request has one (a client's absolute URI), so an `http`
//!   answer never stands in for an `https` request. A request whose `Host` is more than a host
//!   and port (a path, a user part) is neither stored nor answered from the store
//!   (`fwd=bypass`): glued to its path, it could name another target's key.
//! - A background revalidation keeps `Authorization` or `Cookie` when the stored response
//!   varies on it: that entry is the variant of those credentials, and its key holds them.
//!
//! ## `Cache-Status`
//!
//! Every response carries one member (named `palisade`, or the cache's
//! [name](HttpCacheBuilder::name)), appended after those of caches nearer the origin:
//!
//! | member | meaning |
//! | --- | --- |
//! | `palisade; hit; ttl=25` | served from the store, 25 s of freshness left (negative: stale, within a window or `max-stale`) |
//! | `palisade; fwd=uri-miss; fwd-status=200; ttl=30; stored` | nothing stored for the target; the origin's `200` stored |
//! | `fwd=vary-miss` | something stored for the target, not for these request headers |
//! | `fwd=stale; fwd-status=304; …; stored` | the stored response was stale (or `no-cache`); the origin validated it |
//! | `fwd=request` | the request's directives refused the stored response |
//! | `fwd=method`, `fwd=bypass` | a method, range or precondition the cache does not handle |
//! | `…; collapsed` | answered from another caller's fetch of the same target |
//! | `…; detail=stale-if-error` | the origin failed; the stored response stood in |
//! | `palisade; hit; ttl=25; detail=remote` | served from the [remote tier](#a-remote-tier-in-http-mode): another instance's response |
//! | `fwd=…; detail=remote-unavailable` | the remote tier failed on this request's way and was bypassed |
//! | `palisade; detail=only-if-cached` | the `504` for `only-if-cached` |
//!
//! ## Defaults
//!
//! | setting | default | source |
//! | --- | --- | --- |
//! | [mode](CacheMode) | chosen at [`builder`](HttpCacheLayer::builder) | a server's cache is shared, a client's usually private |
//! | [`max_body`](HttpCacheBuilder::max_body) | [`DEFAULT_MAX_BODY`] (1 MiB) | larger bodies stream through |
//! | [`max_bytes`](HttpCacheBuilder::max_bytes) | [`DEFAULT_MAX_BYTES`] (64 MiB) | an eighth of it at most per response |
//! | [`heuristic_freshness`](HttpCacheBuilder::heuristic_freshness) | off | RFC 9111 §4.2.2 permits, never requires, it; 0.1 is the customary share |
//! | [`stale_while_revalidate`](HttpCacheBuilder::stale_while_revalidate), [`stale_if_error`](HttpCacheBuilder::stale_if_error) | 0 | RFC 5861: the origin opens them |
//! | [`store_set_cookie_responses`](HttpCacheBuilder::store_set_cookie_responses) | off | a cookie is one user's |
//! | lock timeout, refresh backoff, XFetch, bounds | as the generic mode | see [Defaults](#defaults) |
//!
//! ## Where it goes
//!
//! In front of axum handlers: `Router::layer`, inside the server timeout (a waiter's wait is
//! bounded by it) and outside everything the handler does. Around a client: outside the retry
//! and the breaker, in [`CacheMode::Private`] for one user's client, shared for a gateway. A
//! background revalidation is a clone of the inner service's call with the request of the
//! caller that found the entry stale, plus the stored validators.
//!
//! ## Memory
//!
//! The store holds at most [`max_bytes`](HttpCacheBuilder::max_bytes), each entry weighed by
//! its body, headers, trailers, key and selecting header values. Fetches in flight hold their
//! body while they read it, up to [`max_body`](HttpCacheBuilder::max_body) each: bound the
//! requests in flight in front of the cache (a concurrency limit, the server's) to bound that
//! too. Variants left behind by an invalidation are unreachable at once and leave the store as
//! it evicts.
//!
//! ## Revalidation failures
//!
//! A background revalidation that meets a server error, a body that fails, or a response this
//! exchange may not store keeps the stale entry (stale-if-error needs it) and lets the next
//! revalidation start after the backoff; only the origin's own word (`no-store`, `private`, a
//! changed `Vary`, or a new body larger than the cache keeps) removes it, never a request's own
//! `no-store`. A `304` whose `ETag`
//! is not the stored one is answered `502` and the entry dropped, so the next request fetches
//! afresh.
//!
//! ## A remote tier in HTTP mode
//!
//! [`HttpCacheBuilder::remote`] shares stored responses with the other instances of a fleet,
//! as the [generic mode's remote tier](#a-remote-tier-for-a-fleet) does values, with the same
//! store (`palisade::redis::RedisCacheStore`) and no codec to write: responses travel in a
//! versioned binary record (status, headers, trailers, body, the `Vary` selection and the
//! freshness). The local store stays the first tier; the remote is asked only where the origin
//! would be:
//!
//! - **A request the local tier cannot answer** (nothing stored, another variant, stale past
//!   its windows), unless its own directives refused the stored response (`fwd=request`),
//!   looks its target up (one round trip). A response there that this request may use (fresh,
//!   or within its stale window, by the request's directives too) is stored locally and served
//!   as `hit; …; detail=remote`. A target whose responses `Vary` holds an index naming the
//!   headers and its generation; the variant the request selects, under that generation, is a
//!   second lookup (always through the index: a variant is reachable only while its index
//!   is). Nothing usable: the same round trip takes the key's lock,
//!   and the holder goes to the origin while the other instances look again, as in the generic
//!   mode, for up to half the lock timeout.
//! - **A stale response's background revalidation** first takes a fresher response another
//!   instance published, else the key's lock: one instance of the fleet revalidates
//!   (conditionally, with the stored validators), the others serve stale meanwhile.
//! - **A response stored** (fetched, or renewed by a `304`) is published after its caller has
//!   it, with its windows from the moment it is sent; one round trip (two for a response that
//!   varies: the variant, then the index). `Age` counts the time spent in the remote: its age
//!   when published plus the time since, by the remote's own clock.
//! - **A successful unsafe request**, and [`HttpCacheHandle::invalidate`], remove the target's
//!   remote entry: its index, and with it every variant (the next index has a new generation,
//!   so the old variants are never read again; they age out). The other
//!   instances' local tiers keep what they hold until it is stale: the remote tier shares
//!   fetches, it does not broadcast invalidations. Keep freshness lifetimes as short as a
//!   change may take to show.
//!
//! Not published: responses that must be revalidated on every use (`no-cache`) or have no
//! freshness nor stale window left (another instance could not use them without the origin),
//! and anything the local tier does not store (too heavy, `private` in a shared cache, …).
//! Stale-if-error serves the local tier's copy only. A remote that fails, answers late or
//! holds a record that does not decode is bypassed, counted in `remote_errors`, and said in
//! `Cache-Status` (`detail=remote-unavailable`); a remote never makes a request fail.
//!
//! ```no_run
//! # #[cfg(feature = "redis")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use palisade::cache::{CacheMode, HttpCacheLayer};
//! use palisade::redis::{RedisCacheStore, RedisConnection};
//!
//! let redis = RedisConnection::builder("redis://127.0.0.1:6379/").build()?;
//! let cache = HttpCacheLayer::builder(CacheMode::Shared)
//!     .stale_if_error(Duration::from_secs(600))
//!     .remote(RedisCacheStore::builder(redis).prefix("pages:").build()?)
//!     .build()?;
//! # let _ = cache;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "redis"))]
//! # fn main() {}
//! ```
//!
//! # Not yet
//!
//! A `HEAD` response does not update a stored `GET` (§4.3.5), and a `206` is never stored or
//! combined. The remote tier does not carry invalidations to the other instances' local tiers.

mod config;
mod error;
mod flight;
mod future;
mod handle;
mod hooks;
#[cfg(feature = "http")]
mod http;
mod layer;
#[cfg(all(test, palisade_loom))]
mod loom_models;
mod remote;
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
pub use self::hooks::{CacheEvent, OnEvent};
#[cfg(feature = "http")]
pub use self::http::{
    CacheMode, DEFAULT_MAX_BODY, DEFAULT_MAX_BYTES, HttpCache, HttpCacheBuilder, HttpCacheHandle,
    HttpCacheLayer, HttpResponseFuture,
};
pub use self::layer::{CacheLayer, MarkStale};
pub use self::remote::{
    LockToken, Lookup, RemoteCodec, RemoteEntry, RemoteError, RemoteFuture, RemoteStore,
};
pub use self::service::Cache;
