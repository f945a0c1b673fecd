//! [`HttpCache`]: the service. A request a stored response may answer is answered from it; a
//! stale one within its stale-while-revalidate window also starts one background
//! revalidation; anything else goes forward under single flight, conditionally when the
//! stored response has a validator, and what comes back is stored if the rules allow.

use std::fmt;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use tower_service::Service;

use super::config::Settings;
use super::directives::RequestDirectives;
use super::freshness::{self, Exchange, Forward, Freshness, NotStored, Reuse};
use super::future::ResponseFuture;
use super::key::{self, HttpKey, VaryIndex};
use super::remote::{self, FromRemote, HeldLock, Publication, RemoteRefresh};
use super::stored::{
    CacheStatus, Conditional, Fwd, HttpValue, Selection, Stored, kept_headers, merged_headers,
    validates,
};
use crate::cache::config::LeaderFailure;
use crate::cache::error::LeaderFailed;
use crate::cache::flight::{self, Landing, Leader, Role};
use crate::cache::hooks::CacheEvent;
use crate::cache::remote::MAX_LOOK_PAUSE;
use crate::cache::shared::Shared;
use crate::cache::state::Times;
use crate::cache::store::Entry;
use crate::error::BoxError;
use crate::http::ResponseBody;
use crate::http::replay_body::{Collect, Collected};

type Engine = Shared<HttpKey, HttpValue>;
type HttpEntry = Arc<Entry<HttpValue>>;

/// An HTTP cache (RFC 9111, RFC 5861, RFC 9211) over a stale-while-revalidate engine: see the
/// [module docs](crate::cache#http-mode).
pub struct HttpCache<S> {
    inner: S,
    shared: Arc<Engine>,
    settings: Arc<Settings>,
}

impl<S> HttpCache<S> {
    pub(crate) fn new(inner: S, shared: Arc<Engine>, settings: Arc<Settings>) -> Self {
        Self {
            inner,
            shared,
            settings,
        }
    }
}

impl<S: Clone> HttpCache<S> {
    /// The inner service this call was driven ready on; a clone stays for the next call.
    fn take_inner(&mut self) -> S {
        let clone = self.inner.clone();
        std::mem::replace(&mut self.inner, clone)
    }
}

impl<S: Clone> Clone for HttpCache<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            settings: Arc::clone(&self.settings),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for HttpCache<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCache")
            .field("name", &self.settings.name)
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// What a lookup found for a request.
enum Found {
    Stored {
        key: HttpKey,
        entry: HttpEntry,
        stored: Arc<Stored>,
    },
    Missing {
        key: HttpKey,
        fwd: Fwd,
    },
}

/// The target's entry, and through its `Vary` index the variant these headers select.
fn lookup(shared: &Engine, target: HttpKey, headers: &HeaderMap) -> Found {
    let Some(entry) = shared.store.get(&target) else {
        return Found::Missing {
            key: target,
            fwd: Fwd::UriMiss,
        };
    };
    let (key, entry) = match &entry.value {
        HttpValue::Vary(index) => {
            let key = target.variant(index, headers);
            match shared.store.get(&key) {
                Some(entry) => (key, entry),
                None => {
                    return Found::Missing {
                        key,
                        fwd: Fwd::VaryMiss,
                    };
                }
            }
        }
        _ => (target, entry),
    };
    match &entry.value {
        HttpValue::Response(stored) => Found::Stored {
            key,
            stored: Arc::clone(stored),
            entry,
        },
        _ => Found::Missing {
            key,
            fwd: Fwd::VaryMiss,
        },
    }
}

/// Preconditions and ranges the cache does not evaluate: such a request goes forward as it
/// is, and its response is not stored.
fn bypassed(headers: &HeaderMap) -> bool {
    [
        header::RANGE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
    ]
    .iter()
    .any(|name| headers.contains_key(name))
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for HttpCache<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Send + 'static,
    ResB: Body<Data = Bytes> + Unpin + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let head = req.method() == Method::HEAD;
        if req.method() != Method::GET && !head {
            let settings = Arc::clone(&self.settings);
            if req.method().is_safe() {
                return ResponseFuture::forward(self.inner.call(req), Fwd::Method, settings);
            }
            let shared = Arc::clone(&self.shared);
            let inner = self.take_inner();
            return ResponseFuture::boxed(Box::pin(unsafe_request(shared, settings, inner, req)));
        }
        if bypassed(req.headers()) {
            let settings = Arc::clone(&self.settings);
            return ResponseFuture::forward(self.inner.call(req), Fwd::Bypass, settings);
        }
        let Some(target) = HttpKey::target(&req) else {
            // A `Host` that is not a plain authority: never stored, never answered from the
            // store (it could name another target's key).
            let settings = Arc::clone(&self.settings);
            return ResponseFuture::forward(self.inner.call(req), Fwd::Bypass, settings);
        };
        let directives = RequestDirectives::parse(req.headers());
        let conditional = Conditional::take(req.headers_mut());
        let shared = &self.shared;
        let settings = &self.settings;
        let now = shared.now();
        let (key, fwd, fallback) = match lookup(shared, target, req.headers()) {
            Found::Stored { key, entry, stored } => {
                let age = stored.freshness.age(now);
                let fwd = match freshness::reuse(&stored.freshness, age, &directives) {
                    Reuse::Fresh => {
                        shared.counters.hits.add();
                        let status = CacheStatus::hit(stored.freshness.ttl_seconds(age));
                        let answer = stored.answer(head, Some(age), &status, &settings.name);
                        if !head && shared.refresh_early(&entry, now) {
                            self.refresh(key, &entry, &stored, req, now);
                        }
                        return ResponseFuture::ready(conditional.apply(answer));
                    }
                    Reuse::Stale { refresh } => {
                        shared.counters.stale_hits.add();
                        let status = CacheStatus::hit(stored.freshness.ttl_seconds(age));
                        let answer = stored.answer(head, Some(age), &status, &settings.name);
                        if refresh && !head {
                            self.refresh(key, &entry, &stored, req, now);
                        }
                        return ResponseFuture::ready(conditional.apply(answer));
                    }
                    Reuse::Forward(Forward::Stale) => Fwd::Stale,
                    Reuse::Forward(Forward::Request) => Fwd::Request,
                };
                (key, fwd, Some((entry, stored)))
            }
            Found::Missing { key, fwd } => (key, fwd, None),
        };
        if directives.only_if_cached {
            // RFC 9111 §5.2.1.7: nothing usable stored, and the caller forbade going forward.
            let problem = crate::http::Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "urn:palisade:cache-only-if-cached",
                "Not in the cache",
                "the request said only-if-cached and no stored response may answer it".into(),
            );
            let mut response = problem.into_http_response();
            let status = CacheStatus {
                detail: Some("only-if-cached"),
                ..CacheStatus::default()
            };
            status.append_to(response.headers_mut(), &settings.name);
            return ResponseFuture::ready(response);
        }
        if head {
            // A HEAD response has no body to store: forwarded as the caller sent it.
            conditional.restore(req.headers_mut());
            let settings = Arc::clone(settings);
            return ResponseFuture::forward(self.inner.call(req), fwd, settings);
        }
        let job = Fetch {
            shared: Arc::clone(shared),
            settings: Arc::clone(settings),
            inner: self.take_inner(),
            key,
            fwd,
            directives,
            conditional,
            fallback,
            remote_lock: None,
            remote_index: None,
            remote_failed: false,
        };
        ResponseFuture::boxed(Box::pin(job.run(req)))
    }
}

impl<S> HttpCache<S> {
    /// Starts `entry`'s background revalidation with `req` (see [`start_revalidation`]).
    fn refresh<ReqB, ResB>(
        &self,
        key: HttpKey,
        entry: &HttpEntry,
        stored: &Arc<Stored>,
        req: Request<ReqB>,
        now: u64,
    ) where
        S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
        ReqB: Send + 'static,
        ResB: Body<Data = Bytes> + Unpin + Send + 'static,
        ResB::Error: Into<BoxError>,
    {
        let inner = || self.inner.clone();
        let (shared, settings) = (&self.shared, &self.settings);
        start_revalidation(shared, settings, inner, key, entry, stored, req, now);
    }
}

/// Starts `entry`'s background revalidation through the service `inner` makes, with `req`
/// (the caller is answered from the store, so its request is free), if this caller wins the
/// claim, a slot is free and a runtime is there to run it.
#[allow(clippy::too_many_arguments)] // each is one part of the job; a struct would only rename them
fn start_revalidation<S, ReqB, ResB>(
    shared: &Arc<Engine>,
    settings: &Arc<Settings>,
    inner: impl FnOnce() -> S,
    key: HttpKey,
    entry: &HttpEntry,
    stored: &Arc<Stored>,
    mut req: Request<ReqB>,
    now: u64,
) where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Send + 'static,
    ResB: Body<Data = Bytes> + Unpin + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    let Some((claim, runtime, slot)) = shared.background_refresh(entry, now) else {
        return;
    };
    add_validators(req.headers_mut(), stored);
    strip_credentials(settings, stored, req.headers_mut());
    let mut inner = inner();
    let shared = Arc::clone(shared);
    let settings = Arc::clone(settings);
    let old = Arc::clone(entry);
    let stored = Arc::clone(stored);
    // Without a local tier, a write since this instant keeps the revalidation unpublished.
    let generation = shared.flights.generation();
    // Dropped unrun if the runtime is shutting down: the claim then lapses on its own.
    runtime.spawn(async move {
            let _slot = slot;
            let mut remote_lock = None;
            if let Some(store) = &settings.remote {
                let token = crate::cache::remote::LockToken::new();
                match remote::refresh_claim(&shared, &**store, &key, &stored, token).await {
                    RemoteRefresh::Newer(newer, fetch) => {
                        // Another instance revalidated it already: its response replaces
                        // this one, without the origin.
                        let entry = new_entry(&shared, newer, fetch, &key);
                        if entry.weight <= shared.config.max_entry_weight
                            && shared.store.replace_if_current(&key, &old, entry)
                        {
                            shared.counters.remote_hits.add();
                            settings.tell(&key, CacheEvent::RemoteHit);
                        }
                        old.refresh.release(claim, shared.now());
                        return;
                    }
                    RemoteRefresh::Elsewhere => {
                        // Looked at again by a stale hit after the remote's shortest pause.
                        let pause = Engine::ticks(MAX_LOOK_PAUSE);
                        old.refresh.release(claim, shared.now().saturating_add(pause));
                        return;
                    }
                    RemoteRefresh::Locked(lock) => remote_lock = Some(lock),
                    RemoteRefresh::Unlocked => {}
                }
            }
            let headers = req.headers().clone();
            let attempt = async {
                poll_fn(|cx| inner.poll_ready(cx)).await?;
                inner.call(req).await
            };
            let request_time = now;
            // Bounded by the claim's own life, body included: a hung refresh gives its slot back.
            let revalidated = tokio::time::timeout(shared.config.lock_timeout, async {
                let response = attempt.await.ok()?;
                let exchange = exchange(&shared, &settings, request_time);
                let renewed = renew(&settings, &headers, &stored, response, exchange).await;
                Some((renewed, exchange.response_time))
            })
            .await
            .ok()
            .flatten();
            let done = shared.now();
            let stored_anew = match revalidated {
                Some((Renewed::Stored(fresh, not_modified), response_time)) => {
                    let fetch = response_time.saturating_sub(request_time);
                    let fresh: Arc<Stored> = fresh.into();
                    let entry = new_entry(&shared, Arc::clone(&fresh), fetch, &key);
                    if entry.weight > shared.config.max_entry_weight {
                        shared.store.remove_if_current(&key, &old);
                    } else {
                        let remote = &settings.remote;
                        let lock = remote_lock.take();
                        let mut publication =
                            Publication::of(&shared, remote, &key, &fresh, fetch, done, lock);
                        // Published only once stored (without a local tier: unless written
                        // since): an invalidation meanwhile wins remotely too.
                        let mut applied = false;
                        if shared.store.is_local() {
                            applied = shared.store.replace_if_current(&key, &old, entry);
                            if applied {
                                if let Some(publication) = publication.take() {
                                    publication.send();
                                }
                            }
                        } else {
                            shared.flights.store_unless_written(generation, || {
                                if let Some(publication) = publication.take() {
                                    publication.send();
                                }
                                applied = true;
                            });
                        }
                        if applied {
                            shared.counters.refreshes.add();
                            settings.tell(&key, CacheEvent::Refreshed);
                            if not_modified {
                                shared.counters.revalidated.add();
                            }
                        } else {
                            if let Some(publication) = publication {
                                publication.abandon();
                            }
                            tracing::debug!(
                                target: "palisade::cache",
                                "revalidation dropped: the entry was replaced or invalidated meanwhile"
                            );
                        }
                    }
                    true
                }
                Some((Renewed::Dropped, _)) => {
                    shared.store.remove_if_current(&key, &old);
                    // The origin no longer lets it be kept: nor may the other instances.
                    if let Some(store) = &settings.remote {
                        remote_lock = None;
                        remote::remove(&shared, store, remote::key_of(&key, &stored));
                    }
                    true
                }
                Some((Renewed::Failed, _)) | None => false,
            };
            remote::release(&shared, settings.remote.as_ref(), remote_lock);
            if !stored_anew {
                shared.counters.refresh_failures.add();
                settings.tell(&key, CacheEvent::RefreshFailed);
                let backoff = Engine::ticks(shared.config.refresh_backoff);
                old.refresh.release(claim, done.saturating_add(backoff));
                tracing::debug!(target: "palisade::cache", "revalidation failed; the stale response stays");
            }
        });
}

/// The request and response times of an exchange that ends now.
fn exchange(shared: &Engine, settings: &Settings, request_time: u64) -> Exchange {
    let response_time = shared.now();
    Exchange {
        request_time,
        response_time,
        response_wall: settings.wall(response_time),
    }
}

/// Adds the stored response's validators to the cache's request (RFC 9111 §4.3.1).
fn add_validators(headers: &mut HeaderMap, stored: &Stored) -> bool {
    let mut any = false;
    if let Some(etag) = stored.etag() {
        headers.insert(header::IF_NONE_MATCH, etag.clone());
        any = true;
    }
    if let Some(modified) = stored.last_modified() {
        headers.insert(header::IF_MODIFIED_SINCE, modified.clone());
        any = true;
    }
    any
}

/// What a revalidation came to (in the background, or in the foreground for a `304`).
enum Renewed {
    /// A response to store in place of the old one (`true`: renewed by a `304`).
    Stored(Box<Stored>, bool),
    /// The origin no longer lets the response be stored (`no-store`, `private`, another
    /// `Vary`, or now too large): the old entry goes.
    Dropped,
    /// A failure (a server error, a body that failed or did not fit, a response this request
    /// could not store): the stale entry stays until its backoff, as stale-if-error wants.
    Failed,
}

/// Whether a refusal to store is the origin's word against keeping the response at all
/// (rather than something about this one exchange).
fn refused_by_origin(why: NotStored) -> bool {
    // A request's own `no-store` (`NotStored::RequestNoStore`) is that caller's business: it
    // keeps its answer out of the store but removes nothing another caller may be served.
    matches!(
        why,
        NotStored::NoStore | NotStored::Private | NotStored::Vary
    )
}

/// A `304`'s headers merged into `stored`, checked as a new response would be: the renewed
/// response, or why it cannot be stored.
fn merge_not_modified(
    settings: &Settings,
    request: &HeaderMap,
    directives: &RequestDirectives,
    stored: &Stored,
    not_modified: &HeaderMap,
    exchange: Exchange,
) -> Renewed {
    if !validates(stored, not_modified) {
        return Renewed::Dropped;
    }
    if not_modified.contains_key(header::SET_COOKIE) && !settings.rules.store_set_cookie {
        return Renewed::Failed;
    }
    let headers = merged_headers(&stored.headers, not_modified);
    // A `304` that changes what the response varies on describes another set of variants.
    if selected_by(&headers, request).map(|(names, _)| names)
        != stored.selected_by.as_ref().map(|(names, _)| names.clone())
    {
        return Renewed::Dropped;
    }
    match freshness::storable(
        &settings.rules,
        &Method::GET,
        request,
        directives,
        stored.status,
        &headers,
        exchange,
    ) {
        Ok(freshness) => Renewed::Stored(
            Box::new(Stored {
                status: stored.status,
                headers,
                body: stored.body.clone(),
                trailers: stored.trailers.clone(),
                freshness,
                selected_by: stored.selected_by.clone(),
                remote_index: stored.remote_index,
            }),
            true,
        ),
        Err(why) if refused_by_origin(why) => Renewed::Dropped,
        Err(_) => Renewed::Failed,
    }
}

/// Turns a background revalidation's response into what replaces the stale entry.
async fn renew<ResB>(
    settings: &Settings,
    request: &HeaderMap,
    stored: &Stored,
    response: Response<ResB>,
    exchange: Exchange,
) -> Renewed
where
    ResB: Body<Data = Bytes> + Unpin,
    ResB::Error: Into<BoxError>,
{
    let directives = RequestDirectives::default();
    if response.status() == StatusCode::NOT_MODIFIED {
        let headers = response.headers();
        return merge_not_modified(settings, request, &directives, stored, headers, exchange);
    }
    if response.status().is_server_error() {
        return Renewed::Failed;
    }
    let (parts, body) = response.into_parts();
    let storable = freshness::storable(
        &settings.rules,
        &Method::GET,
        request,
        &directives,
        parts.status,
        &parts.headers,
        exchange,
    );
    let freshness = match storable {
        Ok(freshness) => freshness,
        Err(why) if refused_by_origin(why) => return Renewed::Dropped,
        Err(_) => return Renewed::Failed,
    };
    let selection = selected_by(&parts.headers, request);
    if selection.as_ref().map(|(names, _)| names)
        != stored.selected_by.as_ref().map(|(names, _)| names)
    {
        // It varies on other headers now: it belongs under other keys, which the next fetch
        // makes; the old entry is outdated.
        return Renewed::Dropped;
    }
    let mut collect = Collect::new(body, settings.max_body);
    match poll_fn(|cx| collect.poll_collect(cx)).await {
        Ok(Collected::Whole { data, trailers }) => Renewed::Stored(
            Box::new(Stored {
                status: parts.status,
                headers: kept_headers(&parts.headers),
                body: data,
                trailers,
                freshness,
                selected_by: selection,
                // The same names (checked above): the same remote index.
                remote_index: stored.remote_index,
            }),
            false,
        ),
        // Now larger than the cache keeps: the stored one is outdated and cannot be renewed.
        Ok(Collected::Over { .. }) => Renewed::Dropped,
        Err(_) => Renewed::Failed,
    }
}

/// Removes the credentials from a shared cache's own request: a stored shared response is
/// revalidated as nobody in particular, never with the credentials of the caller who
/// happened to find it stale.
///
/// A response that varies on one of them is the variant of those very credentials (its key
/// holds their values, which this caller's request matched): they stay, or the origin would
/// answer another variant under this one's key.
fn strip_credentials(settings: &Settings, stored: &Stored, headers: &mut HeaderMap) {
    if !settings.rules.shared {
        return;
    }
    let varies_on = |name: &header::HeaderName| {
        stored
            .selected_by
            .as_ref()
            .is_some_and(|(names, _)| names.contains(name))
    };
    for name in [header::AUTHORIZATION, header::COOKIE] {
        if !varies_on(&name) {
            headers.remove(name);
        }
    }
}

/// The `Vary`'d header names of a response and their values in `request`.
fn selected_by(response: &HeaderMap, request: &HeaderMap) -> Option<Selection> {
    let names = key::vary_names(response);
    if names.is_empty() {
        return None;
    }
    let values = key::selecting_values(&names, request);
    Some((names, values))
}

/// The store entry for a response fetched in `fetch` ticks, to be stored at (a variant of)
/// `key` (the builder's weigher weighs both).
fn new_entry(
    shared: &Engine,
    stored: impl Into<Arc<Stored>>,
    fetch: u64,
    key: &HttpKey,
) -> HttpEntry {
    let stored = stored.into();
    let f: &Freshness = &stored.freshness;
    let fresh_until = f.fresh_until();
    let times = Times {
        fresh_until,
        stale_until: fresh_until.saturating_add(f.stale_while_revalidate),
        error_until: fresh_until.saturating_add(f.stale_if_error),
    };
    shared.entry_at(key, HttpValue::Response(stored), times, fetch)
}

/// Stores `entry` for `target`: at the target's key, or for a response that varies, at its
/// variant's key under the target's `Vary` index (made anew if the names changed).
fn store_at(shared: &Engine, target: &HttpKey, request: &HeaderMap, entry: HttpEntry) {
    let HttpValue::Response(stored) = &entry.value else {
        return;
    };
    let Some((names, _)) = &stored.selected_by else {
        shared.store.insert(target.clone(), entry);
        return;
    };
    let index = match shared.store.get(target).as_ref().map(|held| &held.value) {
        Some(HttpValue::Vary(index)) if index.names == *names => Arc::clone(index),
        _ => {
            let index = Arc::new(VaryIndex::new(names.clone()));
            let times = Times {
                fresh_until: u64::MAX,
                stale_until: u64::MAX,
                error_until: u64::MAX,
            };
            let marker = shared.entry_at(target, HttpValue::Vary(Arc::clone(&index)), times, 0);
            shared.store.insert(target.clone(), marker);
            index
        }
    };
    shared.store.insert(target.variant(&index, request), entry);
}

/// Removes what is stored for `target`, every variant included (they hang off its index),
/// and keeps any fetch of it running now from storing. A remote tier's entry at the target's
/// key goes too (its variants, unreachable without the index, age out there).
pub(crate) fn invalidate(shared: &Arc<Engine>, settings: &Settings, target: &HttpKey) -> bool {
    // Mark the flights first, then remove: see `Flights::finish`.
    shared
        .flights
        .invalidate_where(|key| key.same_target(target));
    if let Some(store) = &settings.remote {
        remote::remove(shared, store, remote::target_key(target));
    }
    shared.store.remove(target)
}

/// A request that goes forward, and what is done with its response.
struct Fetch<S> {
    shared: Arc<Engine>,
    settings: Arc<Settings>,
    inner: S,
    key: HttpKey,
    fwd: Fwd,
    directives: RequestDirectives,
    conditional: Conditional,
    /// The stored response the request could not use: the validators for a conditional
    /// request, and the stand-in for an error (stale-if-error).
    fallback: Option<(HttpEntry, Arc<Stored>)>,
    /// The remote lock this fetch holds: published to, or given up, at the end.
    remote_lock: Option<HeldLock>,
    /// The remote index the lookup found for the target: its header names and generation.
    remote_index: Option<(Box<[HeaderName]>, u64)>,
    /// The remote tier failed on this request's way (said in `Cache-Status`).
    remote_failed: bool,
}

/// Ends a fetch for the callers coalesced behind it: lands `value` for them (after `store`,
/// unless the target was invalidated meanwhile), or for a fetch outside any flight, stores
/// unless something was written since `generation`.
fn land(
    shared: &Engine,
    leader: Option<Leader<'_, HttpKey, HttpValue>>,
    generation: u64,
    value: HttpValue,
    store: impl FnOnce(),
) {
    match leader {
        Some(leader) => leader.land(Landing::Value(value), store),
        None => shared.flights.store_unless_written(generation, store),
    }
}

impl<S> Fetch<S> {
    async fn run<ReqB, ResB>(
        mut self,
        mut req: Request<ReqB>,
    ) -> Result<Response<ResponseBody<ResB>>, S::Error>
    where
        S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
        ReqB: Send + 'static,
        ResB: Body<Data = Bytes> + Unpin + Send + 'static,
        ResB::Error: Into<BoxError>,
    {
        let shared = Arc::clone(&self.shared);
        // Taken before anything else: a write after it keeps a fetch outside a flight unstored.
        let generation = shared.flights.generation();
        let mut collapsed = false;
        let leader = loop {
            let landing = match shared.flights.join(&self.key) {
                Role::Leader(leader) => {
                    // Another leader may have stored the target between this caller's lookup
                    // and its join: answer from that rather than go forward again.
                    if let Some((stored, answer)) = self.stored_meanwhile(&req) {
                        leader.land(Landing::Value(HttpValue::Response(stored)), || {});
                        return Ok(answer);
                    }
                    break Some(leader);
                }
                Role::Alone => break None,
                Role::Waiter(landing) => landing,
            };
            if !collapsed {
                shared.counters.coalesced.add();
                self.settings.tell(&self.key, CacheEvent::Coalesced);
                collapsed = true;
            }
            let Some(landed) = flight::wait(landing, shared.config.lock_timeout).await else {
                break None;
            };
            match landed {
                // Shared only with callers whose request selects the same variant.
                Landing::Value(HttpValue::Response(stored))
                    if stored.selected_by(req.headers()) =>
                {
                    return Ok(self.collapsed(&stored, None));
                }
                Landing::Value(HttpValue::Stale(stored)) if stored.selected_by(req.headers()) => {
                    return Ok(self.collapsed(&stored, Some("stale-if-error")));
                }
                Landing::Value(HttpValue::Failed(status, retry_after))
                    if shared.config.leader_failure == LeaderFailure::Share =>
                {
                    return Ok(self.leader_failed(status, retry_after.as_ref()));
                }
                // Not shareable (or another variant, or each waiter tries itself): forward.
                Landing::Value(_) | Landing::Failed(_) => break None,
                // The leader went away: lead or wait again.
                Landing::Pending | Landing::Abandoned => {}
            }
        };
        if let Some(store) = self.settings.remote.clone() {
            // A request whose directives refused the local response refuses the remote's; a
            // response revalidated on every use is never published.
            let revalidated_each_use = self
                .fallback
                .as_ref()
                .is_some_and(|(_, stored)| stored.freshness.no_cache);
            if self.fwd != Fwd::Request && !revalidated_each_use {
                let target = self.key.without_variant();
                let directives = self.directives;
                let token = crate::cache::remote::LockToken::new();
                let headers = req.headers();
                let found =
                    remote::look_up(&shared, &*store, &target, headers, &directives, token).await;
                match found {
                    FromRemote::Found(stored, fetch, lock) => {
                        remote::release(&shared, Some(&store), lock);
                        let answer =
                            self.answer_from_remote(stored, fetch, leader, generation, req);
                        return Ok(answer);
                    }
                    FromRemote::Fetch {
                        lock,
                        failed,
                        index,
                    } => {
                        self.remote_lock = lock;
                        self.remote_failed = failed;
                        self.remote_index = index;
                    }
                }
            }
        }
        let validating = self
            .fallback
            .as_ref()
            .is_some_and(|(_, stored)| add_validators(req.headers_mut(), stored));
        shared.counters.misses.add();
        self.settings.tell(&self.key, CacheEvent::Miss);
        let method = req.method().clone();
        let request_headers = req.headers().clone();
        let request_time = shared.now();
        let result = self.inner.call(req).await;
        let exchange = exchange(&shared, &self.settings, request_time);
        let fetch = exchange.response_time.saturating_sub(request_time);
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                let leader = match self.stand_in(None, exchange.response_time, leader, generation) {
                    Ok(answer) => return Ok(answer),
                    Err(leader) => leader,
                };
                let failed = HttpValue::Failed(None, None);
                land(&shared, leader, generation, failed, || {});
                return Err(error);
            }
        };
        let status = response.status();
        if status == StatusCode::NOT_MODIFIED && validating {
            let not_modified = NotModified {
                request_headers: &request_headers,
                exchange,
                fetch,
                generation,
            };
            return Ok(self.not_modified(response.headers(), &not_modified, leader));
        }
        if status.is_server_error() {
            let leader =
                match self.stand_in(Some(status), exchange.response_time, leader, generation) {
                    Ok(answer) => return Ok(answer),
                    Err(leader) => leader,
                };
            let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
            land(
                &shared,
                leader,
                generation,
                HttpValue::Failed(Some(status), retry_after),
                || {},
            );
            return Ok(self.passed(response));
        }
        let rules = &self.settings.rules;
        let storable = freshness::storable(
            rules,
            &method,
            &request_headers,
            &self.directives,
            status,
            response.headers(),
            exchange,
        );
        let Ok(freshness) = storable else {
            land(&shared, leader, generation, HttpValue::Pass, || {});
            return Ok(self.passed(response));
        };
        let (parts, body) = response.into_parts();
        let mut collect = Collect::new(body, self.settings.max_body);
        match poll_fn(|cx| collect.poll_collect(cx)).await {
            Ok(Collected::Whole { data, trailers }) => {
                let selected_by = selected_by(&parts.headers, &request_headers);
                let remote_index = self.remote_index_for(selected_by.as_ref());
                let stored = Stored {
                    status,
                    headers: kept_headers(&parts.headers),
                    body: data.clone(),
                    trailers: trailers.clone(),
                    freshness,
                    selected_by,
                    remote_index,
                };
                let ttl = freshness.ttl_seconds(freshness.age(exchange.response_time));
                let entry = new_entry(&shared, stored, fetch, &self.key);
                let keep = entry.weight <= shared.config.max_entry_weight;
                if !keep {
                    shared.counters.uncached.add();
                }
                let value = entry.value.clone();
                let target = self.key.without_variant();
                // Encoded here, outside the flight table's lock; sent only once stored.
                let mut publication = match &value {
                    HttpValue::Response(kept) if keep => Publication::of(
                        &shared,
                        &self.settings.remote,
                        &target,
                        kept,
                        fetch,
                        exchange.response_time,
                        self.remote_lock.take(),
                    ),
                    _ => None,
                };
                let stored = std::cell::Cell::new(false);
                land(&shared, leader, generation, value, || {
                    if keep {
                        store_at(&shared, &target, &request_headers, entry);
                        stored.set(true);
                        if let Some(publication) = publication.take() {
                            publication.send();
                        }
                    }
                });
                if let Some(publication) = publication {
                    publication.abandon();
                }
                // The caller whose request fetched it gets the response as the origin sent it
                // (its `Set-Cookie` included).
                let mut response =
                    Response::from_parts(parts, ResponseBody::full_with_trailers(data, trailers));
                let cache_status = CacheStatus {
                    fwd: Some(self.fwd),
                    fwd_status: Some(status),
                    ttl: Some(ttl),
                    stored: stored.get(),
                    detail: self.remote_detail(),
                    ..CacheStatus::default()
                };
                cache_status.append_to(response.headers_mut(), &self.settings.name);
                Ok(self.conditional.apply(response))
            }
            Ok(Collected::Over { prefix, rest }) => {
                shared.counters.uncached.add();
                land(&shared, leader, generation, HttpValue::Pass, || {});
                let response = Response::from_parts(parts, ResponseBody::prefixed(prefix, rest));
                Ok(self.with_status(response, Some(status)))
            }
            Err(error) => {
                land(&shared, leader, generation, HttpValue::Pass, || {});
                let response = Response::from_parts(parts, ResponseBody::failed(error.into()));
                Ok(self.with_status(response, Some(status)))
            }
        }
    }

    /// A fresh response another caller stored since this one's lookup, if any.
    fn stored_meanwhile<ReqB, B>(
        &self,
        req: &Request<ReqB>,
    ) -> Option<(Arc<Stored>, Response<ResponseBody<B>>)> {
        let Found::Stored { stored, .. } =
            lookup(&self.shared, HttpKey::target(req)?, req.headers())
        else {
            return None;
        };
        let now = self.shared.now();
        let age = stored.freshness.age(now);
        if freshness::reuse(&stored.freshness, age, &self.directives) != Reuse::Fresh {
            return None;
        }
        self.shared.counters.hits.add();
        let status = CacheStatus::hit(stored.freshness.ttl_seconds(age));
        let answer = stored.answer(false, Some(age), &status, &self.settings.name);
        Some((Arc::clone(&stored), self.conditional.apply(answer)))
    }

    /// The response a coalesced caller gets from its leader's fetch (`detail`: why it is not
    /// the origin's new answer).
    fn collapsed<B>(
        &self,
        stored: &Stored,
        detail: Option<&'static str>,
    ) -> Response<ResponseBody<B>> {
        let age = stored.freshness.age(self.shared.now());
        let status = CacheStatus {
            fwd: Some(self.fwd),
            collapsed: true,
            ttl: Some(stored.freshness.ttl_seconds(age)),
            detail,
            ..CacheStatus::default()
        };
        self.conditional
            .apply(stored.answer(false, Some(age), &status, &self.settings.name))
    }

    /// What a coalesced caller gets when its leader's fetch failed and failures are shared:
    /// a problem with the origin's status (502 when it did not answer) and `Retry-After`.
    fn leader_failed<B>(
        &self,
        status: Option<StatusCode>,
        retry_after: Option<&HeaderValue>,
    ) -> Response<ResponseBody<B>> {
        let text = match status {
            Some(status) => format!("the origin answered {status}"),
            None => "the origin did not answer".to_owned(),
        };
        let mut problem = LeaderFailed::public(text.into()).problem();
        if let Some(status) = status {
            problem = problem.with_status(status);
        }
        if let Some(wait) =
            retry_after.and_then(|value| crate::http::parse_retry_after(value, SystemTime::now()))
        {
            problem = problem.with_retry_after(wait);
        }
        let mut response = problem.into_http_response();
        let cache_status = CacheStatus {
            fwd: Some(self.fwd),
            fwd_status: status,
            collapsed: true,
            ..CacheStatus::default()
        };
        cache_status.append_to(response.headers_mut(), &self.settings.name);
        response
    }

    /// Answers a failure (`status`, or none for an error) with the stored response if
    /// stale-if-error covers it, landing that response for the coalesced callers too; else
    /// hands the leader back.
    fn stand_in<'a, B>(
        &self,
        status: Option<StatusCode>,
        now: u64,
        leader: Option<Leader<'a, HttpKey, HttpValue>>,
        generation: u64,
    ) -> Result<Response<ResponseBody<B>>, Option<Leader<'a, HttpKey, HttpValue>>> {
        match self.stale_for_error(status, now) {
            Some((stale, answer)) => {
                let stale = HttpValue::Stale(stale);
                land(&self.shared, leader, generation, stale, || {});
                Ok(answer)
            }
            None => Err(leader),
        }
    }

    /// The stored response standing in for a failure at `now` (stale-if-error), if it may.
    fn stale_for_error<B>(
        &self,
        status: Option<StatusCode>,
        now: u64,
    ) -> Option<(Arc<Stored>, Response<ResponseBody<B>>)> {
        let (entry, stored) = self.fallback.as_ref()?;
        let age = stored.freshness.age(now);
        if !stored.freshness.covers_error(age) {
            return None;
        }
        // Only while it is still the stored one, under the target's current `Vary` index for a
        // variant: an invalidation during the fetch wins.
        let store = &self.shared.store;
        let held = store
            .get(&self.key)
            .is_some_and(|held| Arc::ptr_eq(&held, entry));
        let indexed = self.key.generation().is_none_or(|generation| {
            store.get(&self.key.without_variant()).is_some_and(|target| {
                matches!(&target.value, HttpValue::Vary(index) if index.generation == generation)
            })
        });
        if !(held && indexed) {
            return None;
        }
        self.shared.counters.stale_if_error.add();
        self.settings.tell(&self.key, CacheEvent::StaleIfError);
        tracing::debug!(target: "palisade::cache", "origin failed; serving the stored response (stale-if-error)");
        let cache_status = CacheStatus {
            fwd: Some(self.fwd),
            fwd_status: status,
            ttl: Some(stored.freshness.ttl_seconds(age)),
            detail: Some("stale-if-error"),
            ..CacheStatus::default()
        };
        let answer = stored.answer(false, Some(age), &cache_status, &self.settings.name);
        Some((Arc::clone(stored), self.conditional.apply(answer)))
    }

    /// The origin's response passed through untouched but for `Cache-Status`.
    fn passed<B>(&self, response: Response<B>) -> Response<ResponseBody<B>> {
        let status = response.status();
        self.with_status(response.map(ResponseBody::new), Some(status))
    }

    fn with_status<B>(
        &self,
        mut response: Response<ResponseBody<B>>,
        fwd_status: Option<StatusCode>,
    ) -> Response<ResponseBody<B>> {
        let cache_status = CacheStatus {
            fwd: Some(self.fwd),
            fwd_status,
            detail: self.remote_detail(),
            ..CacheStatus::default()
        };
        cache_status.append_to(response.headers_mut(), &self.settings.name);
        response
    }

    /// The remote index generation a response selected by `selection` is published under: the
    /// one the lookup found if it names the same headers, else a new one (a new index replaces
    /// the old, and the old one's variants become unreachable). None without a remote tier,
    /// or for a response that does not vary.
    fn remote_index_for(&self, selection: Option<&Selection>) -> Option<u64> {
        let (names, _) = selection?;
        self.settings.remote.as_ref()?;
        Some(match &self.remote_index {
            Some((found, generation)) if found == names => *generation,
            _ => remote::new_index_generation(),
        })
    }

    /// Removes the remote tier's copy of `stored` (and its lock, which this fetch then no
    /// longer holds): the origin's own word dropped the local one.
    fn drop_remote_copy(&mut self, stored: &Stored) {
        if let Some(store) = &self.settings.remote {
            self.remote_lock = None;
            remote::remove(&self.shared, store, remote::key_of(&self.key, stored));
        }
    }

    /// `Cache-Status`'s `detail` for a response that went forward: whether the remote tier
    /// was bypassed because it failed.
    fn remote_detail(&self) -> Option<&'static str> {
        self.remote_failed.then_some("remote-unavailable")
    }

    /// A response another instance stored, found in the remote tier: taken into the local
    /// tier (and landed for the callers coalesced here) and served as a hit.
    fn answer_from_remote<ReqB, ResB>(
        &self,
        stored: Box<Stored>,
        fetch: u64,
        leader: Option<Leader<'_, HttpKey, HttpValue>>,
        generation: u64,
        req: Request<ReqB>,
    ) -> Response<ResponseBody<ResB>>
    where
        S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
        ReqB: Send + 'static,
        ResB: Body<Data = Bytes> + Unpin + Send + 'static,
        ResB::Error: Into<BoxError>,
    {
        let shared = &self.shared;
        shared.counters.remote_hits.add();
        self.settings.tell(&self.key, CacheEvent::RemoteHit);
        let stored: Arc<Stored> = stored.into();
        let entry = new_entry(shared, Arc::clone(&stored), fetch, &self.key);
        let keep = entry.weight <= shared.config.max_entry_weight;
        let target = self.key.without_variant();
        let value = HttpValue::Response(Arc::clone(&stored));
        let held = Arc::clone(&entry);
        land(shared, leader, generation, value, || {
            if keep {
                store_at(shared, &target, req.headers(), entry);
            }
        });
        let now = shared.now();
        let age = stored.freshness.age(now);
        let reuse = freshness::reuse(&stored.freshness, age, &self.directives);
        if !shared.store.is_local() && reuse == (Reuse::Stale { refresh: true }) {
            // No local tier to find it stale on a later request: this one revalidates it.
            let (settings, inner) = (&self.settings, || self.inner.clone());
            start_revalidation(
                shared,
                settings,
                inner,
                self.key.clone(),
                &held,
                &stored,
                req,
                now,
            );
        }
        let status = CacheStatus {
            detail: Some("remote"),
            ..CacheStatus::hit(stored.freshness.ttl_seconds(age))
        };
        self.conditional
            .apply(stored.answer(false, Some(age), &status, &self.settings.name))
    }

    /// A `304` to the cache's conditional request: the stored response, its headers updated
    /// (RFC 9111 §4.3.4), stored again and served.
    fn not_modified<B>(
        &mut self,
        response: &HeaderMap,
        at: &NotModified<'_>,
        leader: Option<Leader<'_, HttpKey, HttpValue>>,
    ) -> Response<ResponseBody<B>> {
        let shared = Arc::clone(&self.shared);
        let Some((old, stored)) = self.fallback.take() else {
            land(&shared, leader, at.generation, HttpValue::Pass, || {});
            return self
                .bad_revalidation("a 304 answered a request the cache sent unconditionally");
        };
        if !validates(&stored, response) {
            shared.store.remove_if_current(&self.key, &old);
            self.drop_remote_copy(&stored);
            land(&shared, leader, at.generation, HttpValue::Pass, || {});
            return self.bad_revalidation(
                "the origin answered 304 for a representation the cache does not hold",
            );
        }
        let renewed = merge_not_modified(
            &self.settings,
            at.request_headers,
            &self.directives,
            &stored,
            response,
            at.exchange,
        );
        // The caller whose request was validated gets the cookies the `304` set.
        let with_cookies = |mut answer: Response<ResponseBody<B>>| {
            for cookie in response.get_all(header::SET_COOKIE) {
                answer
                    .headers_mut()
                    .append(header::SET_COOKIE, cookie.clone());
            }
            answer
        };
        let entry = match renewed {
            Renewed::Stored(renewed, _) => new_entry(&shared, *renewed, at.fetch, &self.key),
            Renewed::Dropped | Renewed::Failed => {
                if matches!(renewed, Renewed::Dropped) {
                    shared.store.remove_if_current(&self.key, &old);
                    self.drop_remote_copy(&stored);
                }
                land(&shared, leader, at.generation, HttpValue::Pass, || {});
                // Served as validated, but not stored (or not shared).
                let mut answer = Response::new(ResponseBody::full_with_trailers(
                    stored.body.clone(),
                    stored.trailers.clone(),
                ));
                *answer.status_mut() = stored.status;
                *answer.headers_mut() = merged_headers(&stored.headers, response);
                let answer = self.with_status(answer, Some(StatusCode::NOT_MODIFIED));
                return with_cookies(self.conditional.apply(answer));
            }
        };
        shared.counters.revalidated.add();
        let keep = entry.weight <= shared.config.max_entry_weight;
        let HttpValue::Response(renewed) = entry.value.clone() else {
            return self.bad_revalidation("a renewed entry holds no response");
        };
        let key = self.key.clone();
        let mut publication = if keep {
            let now = at.exchange.response_time;
            let lock = self.remote_lock.take();
            let remote = &self.settings.remote;
            Publication::of(&shared, remote, &key, &renewed, at.fetch, now, lock)
        } else {
            None
        };
        let stored_anew = std::cell::Cell::new(false);
        land(
            &shared,
            leader,
            at.generation,
            HttpValue::Response(Arc::clone(&renewed)),
            || {
                if !keep {
                    shared.store.remove_if_current(&key, &old);
                } else if shared.store.replace_if_current(&key, &old, entry) {
                    stored_anew.set(true);
                    if let Some(publication) = publication.take() {
                        publication.send();
                    }
                }
            },
        );
        if let Some(publication) = publication {
            publication.abandon();
        }
        let freshness = renewed.freshness;
        let cache_status = CacheStatus {
            fwd: Some(self.fwd),
            fwd_status: Some(StatusCode::NOT_MODIFIED),
            ttl: Some(freshness.ttl_seconds(freshness.age(at.exchange.response_time))),
            stored: stored_anew.get(),
            detail: self.remote_detail(),
            ..CacheStatus::default()
        };
        // Validated by the origin for this request: no `Age` (RFC 9111 §5.1).
        let answer = renewed.answer(false, None, &cache_status, &self.settings.name);
        with_cookies(self.conditional.apply(answer))
    }

    /// `502`: the origin's `304` cannot be used (the stored response is dropped; the caller
    /// may retry and be fetched afresh).
    fn bad_revalidation<B>(&self, detail: &str) -> Response<ResponseBody<B>> {
        tracing::warn!(target: "palisade::cache", detail, "unusable 304 from the origin");
        let problem = crate::http::Problem::new(
            StatusCode::BAD_GATEWAY,
            "urn:palisade:cache-bad-revalidation",
            "Unusable revalidation",
            detail.to_owned(),
        );
        self.with_status(problem.into_http_response(), Some(StatusCode::NOT_MODIFIED))
    }
}

impl<S> Drop for Fetch<S> {
    /// A fetch that published nothing (it failed, stored nothing, or its caller went away)
    /// gives up the remote lock it holds: the instances waiting on it go to the origin at
    /// once rather than wait out its lease.
    fn drop(&mut self) {
        let lock = self.remote_lock.take();
        remote::release(&self.shared, self.settings.remote.as_ref(), lock);
    }
}

/// When and for what a `304` arrived.
struct NotModified<'a> {
    request_headers: &'a HeaderMap,
    exchange: Exchange,
    fetch: u64,
    generation: u64,
}

/// An unsafe request (RFC 9111 §4.4): forwarded, and when it succeeds, the target and the
/// targets its `Location` and `Content-Location` name (on the same authority) are invalidated.
async fn unsafe_request<S, ReqB, ResB>(
    shared: Arc<Engine>,
    settings: Arc<Settings>,
    mut inner: S,
    req: Request<ReqB>,
) -> Result<Response<ResponseBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    let target = HttpKey::target(&req);
    let response = inner.call(req).await?;
    let status = response.status();
    // A target with a `Host` that is not a plain authority was never stored.
    if let Some(target) = target.filter(|_| status.is_success() || status.is_redirection()) {
        let locations = [header::LOCATION, header::CONTENT_LOCATION]
            .into_iter()
            .filter_map(|name| target.resolve(response.headers().get(name)?));
        // Each in every form it may be stored under (with and without a scheme).
        for key in std::iter::once(target.clone()).chain(locations) {
            for form in key.every_form() {
                invalidate(&shared, &settings, &form);
            }
        }
    }
    let mut response = response.map(ResponseBody::new);
    let cache_status = CacheStatus {
        fwd: Some(Fwd::Method),
        fwd_status: Some(status),
        ..CacheStatus::default()
    };
    cache_status.append_to(response.headers_mut(), &settings.name);
    Ok(response)
}
