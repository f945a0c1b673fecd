//! The cache's HTTP mode through its public API, in a real axum `Router` on paused tokio time
//! (one test per directive, each naming its RFC section), and around a real server on
//! 127.0.0.1 for the stampede: freshness, `Age`, `Cache-Status`, `Vary`, `304` revalidation,
//! stale-while-revalidate and stale-if-error, the rules that keep one caller's response from
//! another, invalidation by unsafe methods, single flight, and bounded memory.

mod support;

use std::net::SocketAddr;
use std::num::{NonZeroU64, NonZeroUsize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use palisade::cache::{
    CacheMode, HttpCacheBuilder, HttpCacheHandle, HttpCacheLayer, LeaderFailure,
};
use palisade::{Factor, Ratio};
use tokio::time::{advance, sleep};
use tower::ServiceExt;

const MS: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);

/// What the origin answers to its `n`-th call (1-based), given the request's headers.
#[derive(Clone, Debug)]
struct Reply {
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

impl Reply {
    fn ok(headers: &[(&'static str, &str)], body: impl Into<String>) -> Self {
        Self {
            status: StatusCode::OK,
            headers: headers.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

type Script = Arc<dyn Fn(&http::request::Parts, usize) -> Reply + Send + Sync>;

/// An origin whose answers a test scripts, counting its calls and keeping every request.
#[derive(Clone)]
struct Origin {
    script: Arc<Mutex<Script>>,
    calls: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<(Method, String, HeaderMap)>>>,
}

impl Origin {
    fn new(script: impl Fn(&http::request::Parts, usize) -> Reply + Send + Sync + 'static) -> Self {
        Self {
            script: Arc::new(Mutex::new(Arc::new(script))),
            calls: Arc::new(AtomicUsize::new(0)),
            seen: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Answers `headers` and a body of `v{n}` to every call.
    fn serving(headers: &'static [(&'static str, &'static str)]) -> Self {
        Self::new(move |_, n| Reply::ok(headers, format!("v{n}")))
    }

    fn set(&self, script: impl Fn(&http::request::Parts, usize) -> Reply + Send + Sync + 'static) {
        *self.script.lock().unwrap() = Arc::new(script);
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The headers of the origin's last request.
    fn last_request(&self) -> HeaderMap {
        self.seen.lock().unwrap().last().unwrap().2.clone()
    }
}

/// The request's `name` header as text, or `default` without one.
fn header_or(parts: &http::request::Parts, name: &str, default: &str) -> String {
    parts
        .headers
        .get(name)
        .map_or(default, |v| v.to_str().unwrap())
        .to_owned()
}

async fn handle(State(origin): State<Origin>, request: Request) -> Response {
    let n = origin.calls.fetch_add(1, Ordering::SeqCst) + 1;
    let (parts, _) = request.into_parts();
    origin.seen.lock().unwrap().push((
        parts.method.clone(),
        parts.uri.to_string(),
        parts.headers.clone(),
    ));
    let script = Arc::clone(&origin.script.lock().unwrap());
    let reply = script(&parts, n);
    if !reply.delay.is_zero() {
        sleep(reply.delay).await;
    }
    let mut response = Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        response = response.header(*name, value);
    }
    response.body(Body::from(reply.body)).unwrap()
}

/// The builder every test starts from: XFetch off, so that no early refresh is drawn.
fn shared() -> HttpCacheBuilder {
    HttpCacheLayer::builder(CacheMode::Shared).early_refresh(Factor::new_const(0.0))
}

fn app(origin: &Origin, cache: HttpCacheLayer) -> Router {
    Router::new()
        .fallback(handle)
        .with_state(origin.clone())
        .layer(cache)
}

/// A cache built from `builder` in front of `origin`, and its handle.
fn stack(origin: &Origin, builder: HttpCacheBuilder) -> (Router, HttpCacheHandle) {
    let cache = builder.build().unwrap();
    let handle = cache.handle();
    (app(origin, cache), handle)
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn cache_status(&self) -> String {
        let lines: Vec<_> = self
            .headers
            .get_all("cache-status")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        lines.join(", ")
    }

    fn age(&self) -> Option<u64> {
        self.headers
            .get("age")
            .map(|v| v.to_str().unwrap().parse().unwrap())
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
}

async fn send(app: &Router, method: Method, uri: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = http::Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

async fn get(app: &Router, uri: &str) -> Answer {
    send(app, Method::GET, uri, &[]).await
}

async fn get_with(app: &Router, uri: &str, headers: &[(&str, &str)]) -> Answer {
    send(app, Method::GET, uri, headers).await
}

/// Lets spawned work (a background revalidation) run to completion on paused time.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

// ---- Freshness (RFC 9111 §4.2) -------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn max_age_is_fresh_until_its_last_millisecond_rfc_9111_4_2_1() {
    support::init_tracing();
    let origin = Origin::serving(&[("cache-control", "max-age=60")]);
    let (app, handle) = stack(&origin, shared());
    let first = get(&app, "/a").await;
    assert_eq!(first.text(), "v1");
    assert_eq!(
        first.cache_status(),
        "palisade; fwd=uri-miss; fwd-status=200; ttl=60; stored"
    );
    assert_eq!(first.age(), None, "fetched for this request: no Age (§5.1)");
    advance(60 * SECOND - MS).await;
    let hit = get(&app, "/a").await;
    assert_eq!(hit.text(), "v1");
    assert_eq!(hit.cache_status(), "palisade; hit; ttl=0");
    assert_eq!(hit.age(), Some(59));
    advance(MS).await;
    let stale = get(&app, "/a").await;
    assert_eq!(stale.text(), "v2", "stale at 60 s: forwarded");
    assert_eq!(
        stale.cache_status(),
        "palisade; fwd=stale; fwd-status=200; ttl=60; stored"
    );
    assert_eq!(origin.calls(), 2);
    assert_eq!(handle.metrics().hits, 1);
}

#[tokio::test(start_paused = true)]
async fn age_is_computed_per_rfc_9111_4_2_3_and_sent_on_every_cached_answer() {
    // The origin's response is 30 s old already (an upstream cache's Age): 60 − 30 = 30 s left.
    let origin = Origin::serving(&[("cache-control", "max-age=60"), ("age", "30")]);
    let (app, _) = stack(&origin, shared());
    assert_eq!(
        get(&app, "/a").await.cache_status(),
        "palisade; fwd=uri-miss; fwd-status=200; ttl=30; stored"
    );
    advance(10 * SECOND).await;
    let hit = get(&app, "/a").await;
    assert_eq!(hit.age(), Some(40));
    assert_eq!(hit.cache_status(), "palisade; hit; ttl=20");
    advance(20 * SECOND).await;
    assert_eq!(
        get(&app, "/a").await.text(),
        "v2",
        "stale after 30 s resident"
    );
}

#[tokio::test(start_paused = true)]
async fn s_maxage_wins_in_a_shared_cache_and_is_ignored_by_a_private_one_rfc_9111_5_2_2_10() {
    let origin = Origin::serving(&[("cache-control", "max-age=10, s-maxage=100")]);
    let (app, _) = stack(&origin, shared());
    assert!(
        get(&app, "/a")
            .await
            .cache_status()
            .ends_with("ttl=100; stored")
    );
    let private = HttpCacheLayer::builder(CacheMode::Private).early_refresh(Factor::new_const(0.0));
    let (app, _) = stack(&origin, private);
    assert!(
        get(&app, "/a")
            .await
            .cache_status()
            .ends_with("ttl=10; stored")
    );
}

#[tokio::test(start_paused = true)]
async fn expires_minus_date_is_the_lifetime_without_max_age_rfc_9111_4_2_1() {
    let origin = Origin::new(|_, n| Reply::ok(&[], format!("v{n}")));
    let (app, _) = stack(&origin, shared());
    // Built first, so the Date below is never earlier than the cache's wall clock.
    let now = SystemTime::now();
    let date = httpdate::fmt_http_date(now);
    let expires = httpdate::fmt_http_date(now + Duration::from_secs(120));
    origin.set(move |_, n| Reply::ok(&[("date", &date), ("expires", &expires)], format!("v{n}")));
    let first = get(&app, "/a").await;
    let ttl = first.cache_status();
    assert!(ttl.contains("ttl=120") || ttl.contains("ttl=119"), "{ttl}");
    advance(100 * SECOND).await;
    assert_eq!(get(&app, "/a").await.text(), "v1");
    advance(21 * SECOND).await;
    assert_eq!(get(&app, "/a").await.text(), "v2", "expired");
    // An invalid Expires means already expired (§5.3): with a validator it is stored, and
    // every use revalidates.
    origin.set(|_, n| Reply::ok(&[("expires", "0"), ("etag", "\"e\"")], format!("v{n}")));
    get(&app, "/b").await;
    assert_eq!(
        get(&app, "/b").await.cache_status(),
        "palisade; fwd=stale; fwd-status=200; ttl=0; stored"
    );
    assert_eq!(
        origin.last_request()["if-none-match"],
        "\"e\"",
        "revalidated conditionally"
    );
}

#[tokio::test(start_paused = true)]
async fn heuristic_freshness_applies_only_when_configured_rfc_9111_4_2_2() {
    let origin = Origin::new(|_, n| Reply::ok(&[], format!("v{n}")));
    let now = SystemTime::now();
    let (app, _) = stack(&origin, shared());
    let (heuristic, _) = stack(&origin, shared().heuristic_freshness(Ratio::new_const(0.1)));
    let date = httpdate::fmt_http_date(now + SECOND);
    let modified = httpdate::fmt_http_date(now + SECOND - Duration::from_secs(1000));
    origin.set(move |_, n| {
        Reply::ok(
            &[("date", &date), ("last-modified", &modified)],
            format!("v{n}"),
        )
    });
    get(&app, "/a").await;
    assert_eq!(
        get(&app, "/a").await.cache_status(),
        "palisade; fwd=stale; fwd-status=200; ttl=0; stored",
        "off by default: stored for its validator only, revalidated each time"
    );
    get(&heuristic, "/a").await;
    let hit = get(&heuristic, "/a").await;
    assert_eq!(
        hit.cache_status(),
        "palisade; hit; ttl=100",
        "10 % of 1000 s"
    );
}

// ---- What is stored (RFC 9111 §3) ------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn no_store_in_the_response_or_the_request_stores_nothing_rfc_9111_5_2_2_5_and_5_2_1_5() {
    let origin = Origin::serving(&[("cache-control", "no-store, max-age=60")]);
    let (app, handle) = stack(&origin, shared());
    get(&app, "/a").await;
    let second = get(&app, "/a").await;
    assert_eq!(second.text(), "v2");
    assert_eq!(
        second.cache_status(),
        "palisade; fwd=uri-miss; fwd-status=200"
    );
    origin.set(|_, n| Reply::ok(&[("cache-control", "max-age=60")], format!("v{n}")));
    get_with(&app, "/b", &[("cache-control", "no-store")]).await;
    assert_eq!(
        get(&app, "/b").await.text(),
        "v4",
        "the request's no-store kept it out"
    );
    assert_eq!(handle.metrics().entries, 1);
}

#[tokio::test(start_paused = true)]
async fn no_cache_responses_are_stored_and_revalidated_on_every_use_rfc_9111_5_2_2_4() {
    let origin = Origin::new(|parts, n| {
        if parts
            .headers
            .get("if-none-match")
            .is_some_and(|v| v == "\"t1\"")
        {
            return Reply::ok(&[("cache-control", "no-cache"), ("etag", "\"t1\"")], "")
                .status(StatusCode::NOT_MODIFIED);
        }
        Reply::ok(
            &[("cache-control", "no-cache"), ("etag", "\"t1\"")],
            format!("v{n}"),
        )
    });
    let (app, handle) = stack(&origin, shared());
    assert_eq!(get(&app, "/a").await.text(), "v1");
    let revalidated = get(&app, "/a").await;
    assert_eq!(revalidated.status, StatusCode::OK);
    assert_eq!(revalidated.text(), "v1", "the 304 renewed the stored body");
    assert_eq!(
        revalidated.cache_status(),
        "palisade; fwd=stale; fwd-status=304; ttl=0; stored"
    );
    assert_eq!(origin.last_request()["if-none-match"], "\"t1\"");
    assert_eq!(origin.calls(), 2);
    assert_eq!(handle.metrics().revalidated, 1);
}

#[tokio::test(start_paused = true)]
async fn private_responses_are_never_stored_by_a_shared_cache_rfc_9111_5_2_2_7() {
    let origin = Origin::new(|parts, _| {
        let user = header_or(parts, "x-user", "nobody");
        Reply::ok(
            &[("cache-control", "private, max-age=60")],
            format!("for {user}"),
        )
    });
    let (app, handle) = stack(&origin, shared());
    assert_eq!(
        get_with(&app, "/me", &[("x-user", "alice")]).await.text(),
        "for alice"
    );
    assert_eq!(
        get_with(&app, "/me", &[("x-user", "bob")]).await.text(),
        "for bob"
    );
    assert_eq!(handle.metrics().entries, 0);
    let private = HttpCacheLayer::builder(CacheMode::Private).early_refresh(Factor::new_const(0.0));
    let (app, _) = stack(&origin, private);
    get_with(&app, "/me", &[("x-user", "alice")]).await;
    assert_eq!(
        get_with(&app, "/me", &[("x-user", "alice")])
            .await
            .cache_status(),
        "palisade; hit; ttl=60",
        "a private cache (one user's) stores it"
    );
}

#[tokio::test(start_paused = true)]
async fn authorization_never_reaches_another_caller_unless_the_response_allows_it_rfc_9111_3_5() {
    let origin = Origin::new(|parts, n| {
        let auth = header_or(parts, "authorization", "anonymous");
        Reply::ok(&[("cache-control", "max-age=60")], format!("{auth} #{n}"))
    });
    let (app, handle) = stack(&origin, shared());
    assert_eq!(
        get_with(&app, "/doc", &[("authorization", "Bearer alice")])
            .await
            .text(),
        "Bearer alice #1"
    );
    assert_eq!(
        get(&app, "/doc").await.text(),
        "anonymous #2",
        "alice's response was not stored"
    );
    assert_eq!(
        get_with(&app, "/doc", &[("authorization", "Bearer bob")])
            .await
            .text(),
        "anonymous #2",
        "the anonymous response is public by the origin's word: it may serve anyone"
    );
    // With `public`, the response to an authorized request may be stored and shared.
    origin.set(|_, n| {
        Reply::ok(
            &[("cache-control", "public, max-age=60")],
            format!("public #{n}"),
        )
    });
    get_with(&app, "/open", &[("authorization", "Bearer alice")]).await;
    assert_eq!(
        get(&app, "/open").await.cache_status(),
        "palisade; hit; ttl=60"
    );
    // Cookies are credentials too.
    origin.set(|_, n| Reply::ok(&[("cache-control", "max-age=60")], format!("cookie #{n}")));
    get_with(&app, "/c", &[("cookie", "session=1")]).await;
    assert_eq!(get(&app, "/c").await.text(), "cookie #5");
    assert_eq!(handle.metrics().entries, 3);
}

#[tokio::test(start_paused = true)]
async fn responses_setting_cookies_are_not_stored_unless_configured_and_then_never_replay_the_cookie()
 {
    let origin = Origin::serving(&[
        ("cache-control", "max-age=60"),
        ("set-cookie", "session=alice"),
    ]);
    let (app, _) = stack(&origin, shared());
    assert_eq!(get(&app, "/a").await.headers["set-cookie"], "session=alice");
    assert_eq!(get(&app, "/a").await.text(), "v2", "not stored");
    let (app, _) = stack(&origin, shared().store_set_cookie_responses(true));
    let first = get(&app, "/b").await;
    assert_eq!(
        first.headers["set-cookie"], "session=alice",
        "its own caller keeps its cookie"
    );
    let hit = get(&app, "/b").await;
    assert_eq!(hit.cache_status(), "palisade; hit; ttl=60");
    assert!(
        !hit.headers.contains_key("set-cookie"),
        "another caller never gets it"
    );
}

#[tokio::test(start_paused = true)]
async fn vary_keeps_one_entry_per_selecting_header_value_and_vary_star_is_never_stored_rfc_9111_4_1()
 {
    let origin = Origin::new(|parts, n| {
        let lang = header_or(parts, "accept-language", "none");
        Reply::ok(
            &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
            format!("{lang} #{n}"),
        )
    });
    let (app, handle) = stack(&origin, shared());
    assert_eq!(
        get_with(&app, "/a", &[("accept-language", "fr")])
            .await
            .text(),
        "fr #1"
    );
    assert_eq!(
        get_with(&app, "/a", &[("accept-language", "de")])
            .await
            .text(),
        "de #2"
    );
    let fr = get_with(&app, "/a", &[("accept-language", "fr")]).await;
    assert_eq!(
        (fr.text(), fr.cache_status().as_str()),
        ("fr #1", "palisade; hit; ttl=60")
    );
    assert_eq!(
        get_with(&app, "/a", &[("accept-language", "de")])
            .await
            .text(),
        "de #2"
    );
    let none = get(&app, "/a").await;
    assert_eq!(none.text(), "none #3");
    assert_eq!(
        none.cache_status(),
        "palisade; fwd=vary-miss; fwd-status=200; ttl=60; stored"
    );
    assert_eq!(handle.metrics().entries, 4, "one index and three variants");
    origin.set(|_, n| {
        Reply::ok(
            &[("cache-control", "max-age=60"), ("vary", "*")],
            format!("v{n}"),
        )
    });
    get(&app, "/star").await;
    assert_eq!(
        get(&app, "/star").await.cache_status(),
        "palisade; fwd=uri-miss; fwd-status=200"
    );
}

#[tokio::test(start_paused = true)]
async fn only_get_is_stored_and_head_is_answered_from_it() {
    let origin = Origin::serving(&[("cache-control", "max-age=60")]);
    let (app, _) = stack(&origin, shared());
    let head_miss = send(&app, Method::HEAD, "/a", &[]).await;
    assert_eq!(
        head_miss.cache_status(),
        "palisade; fwd=uri-miss; fwd-status=200"
    );
    get(&app, "/a").await;
    let head = send(&app, Method::HEAD, "/a", &[]).await;
    assert_eq!(head.cache_status(), "palisade; hit; ttl=60");
    assert!(head.body.is_empty());
    let options = send(&app, Method::OPTIONS, "/a", &[]).await;
    assert_eq!(
        options.cache_status(),
        "palisade; fwd=method; fwd-status=200"
    );
    assert_eq!(origin.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_limit_streams_through_unstored() {
    let origin = Origin::new(|_, n| {
        Reply::ok(
            &[("cache-control", "max-age=60")],
            format!("{n}").repeat(2000),
        )
    });
    let (app, handle) = stack(&origin, shared().max_body(NonZeroUsize::new(1024).unwrap()));
    let first = get(&app, "/big").await;
    assert_eq!(first.body.len(), 2000, "the whole body reached its caller");
    assert_eq!(
        first.cache_status(),
        "palisade; fwd=uri-miss; fwd-status=200"
    );
    assert_eq!(get(&app, "/big").await.body[0], b'2');
    assert_eq!(handle.metrics().uncached, 2);
}

// ---- Request directives (RFC 9111 §5.2.1) ---------------------------------------------------

#[tokio::test(start_paused = true)]
async fn request_max_age_min_fresh_and_no_cache_refuse_a_stored_response_rfc_9111_5_2_1() {
    let origin = Origin::serving(&[("cache-control", "max-age=60")]);
    let (app, _) = stack(&origin, shared());
    get(&app, "/a").await;
    advance(10 * SECOND).await;
    // §5.2.1.1 max-age: 10 s old is acceptable to max-age=10, not to max-age=9.
    assert_eq!(
        get_with(&app, "/a", &[("cache-control", "max-age=10")])
            .await
            .text(),
        "v1"
    );
    let refused = get_with(&app, "/a", &[("cache-control", "max-age=9")]).await;
    assert_eq!(refused.text(), "v2");
    assert_eq!(
        refused.cache_status(),
        "palisade; fwd=request; fwd-status=200; ttl=60; stored"
    );
    advance(10 * SECOND).await;
    // §5.2.1.3 min-fresh: 50 s of freshness left.
    assert_eq!(
        get_with(&app, "/a", &[("cache-control", "min-fresh=50")])
            .await
            .text(),
        "v2"
    );
    assert_eq!(
        get_with(&app, "/a", &[("cache-control", "min-fresh=51")])
            .await
            .text(),
        "v3"
    );
    // §5.2.1.4 no-cache: always forwarded.
    assert_eq!(
        get_with(&app, "/a", &[("cache-control", "no-cache")])
            .await
            .text(),
        "v4"
    );
    // §5.4: Pragma: no-cache without Cache-Control.
    assert_eq!(
        get_with(&app, "/a", &[("pragma", "no-cache")]).await.text(),
        "v5"
    );
}

#[tokio::test(start_paused = true)]
async fn request_max_stale_accepts_a_stale_response_up_to_its_bound_rfc_9111_5_2_1_2() {
    let origin = Origin::serving(&[("cache-control", "max-age=10")]);
    let (app, _) = stack(&origin, shared());
    get(&app, "/a").await;
    advance(40 * SECOND).await;
    let stale = get_with(&app, "/a", &[("cache-control", "max-stale=30")]).await;
    assert_eq!(
        (stale.text(), stale.cache_status().as_str()),
        ("v1", "palisade; hit; ttl=-30")
    );
    assert_eq!(stale.age(), Some(40));
    advance(MS).await;
    assert_eq!(
        get_with(&app, "/a", &[("cache-control", "max-stale=30")])
            .await
            .text(),
        "v2"
    );
    advance(Duration::from_secs(1000)).await;
    assert_eq!(
        get_with(&app, "/a", &[("cache-control", "max-stale")])
            .await
            .text(),
        "v2",
        "any staleness"
    );
}

#[tokio::test(start_paused = true)]
async fn only_if_cached_answers_504_on_a_miss_rfc_9111_5_2_1_7() {
    let origin = Origin::serving(&[("cache-control", "max-age=60")]);
    let (app, _) = stack(&origin, shared());
    let miss = get_with(&app, "/a", &[("cache-control", "only-if-cached")]).await;
    assert_eq!(miss.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(miss.cache_status(), "palisade; detail=only-if-cached");
    assert_eq!(origin.calls(), 0);
    get(&app, "/a").await;
    let hit = get_with(&app, "/a", &[("cache-control", "only-if-cached")]).await;
    assert_eq!((hit.status, hit.text()), (StatusCode::OK, "v1"));
}

// ---- Stale windows (RFC 5861) and revalidation directives ----------------------------------

#[tokio::test(start_paused = true)]
async fn stale_while_revalidate_serves_at_once_and_revalidates_once_in_the_background_rfc_5861_3() {
    let origin = Origin::new(|parts, n| {
        let headers = [
            ("cache-control", "max-age=10, stale-while-revalidate=20"),
            ("etag", "\"e\""),
        ];
        if parts.headers.contains_key("if-none-match") {
            return Reply::ok(&headers, "").status(StatusCode::NOT_MODIFIED);
        }
        Reply::ok(&headers, format!("v{n}"))
    });
    let (app, handle) = stack(&origin, shared());
    get(&app, "/a").await;
    advance(10 * SECOND).await;
    let answers: Vec<_> = futures_join(&app, "/a", 50).await;
    for answer in &answers {
        assert_eq!(answer.text(), "v1");
        assert_eq!(answer.cache_status(), "palisade; hit; ttl=0");
    }
    settle().await;
    assert_eq!(
        origin.calls(),
        2,
        "one background revalidation for 50 stale hits"
    );
    assert_eq!(origin.last_request()["if-none-match"], "\"e\"");
    let metrics = handle.metrics();
    assert_eq!(
        (metrics.stale_hits, metrics.refreshes, metrics.revalidated),
        (50, 1, 1)
    );
    // Renewed by the 304: fresh again for 10 s from the revalidation.
    let renewed = get(&app, "/a").await;
    assert_eq!(renewed.cache_status(), "palisade; hit; ttl=10");
    assert_eq!(renewed.age(), Some(0));
}

async fn futures_join(app: &Router, uri: &str, count: usize) -> Vec<Answer> {
    let tasks: Vec<_> = (0..count)
        .map(|_| {
            let app = app.clone();
            let uri = uri.to_owned();
            tokio::spawn(async move { get(&app, &uri).await })
        })
        .collect();
    let mut answers = Vec::with_capacity(count);
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_covers_a_failing_origin_until_its_window_ends_rfc_5861_4() {
    let origin = Origin::serving(&[("cache-control", "max-age=10, stale-if-error=100")]);
    let (app, handle) = stack(&origin, shared());
    get(&app, "/a").await;
    origin.set(|_, _| {
        Reply::ok(&[("retry-after", "5")], "down").status(StatusCode::SERVICE_UNAVAILABLE)
    });
    advance(110 * SECOND - MS).await;
    let covered = get(&app, "/a").await;
    assert_eq!((covered.status, covered.text()), (StatusCode::OK, "v1"));
    assert_eq!(
        covered.cache_status(),
        "palisade; fwd=stale; fwd-status=503; ttl=-100; detail=stale-if-error"
    );
    assert_eq!(covered.age(), Some(109));
    advance(MS).await;
    let failed = get(&app, "/a").await;
    assert_eq!(
        (failed.status, failed.text()),
        (StatusCode::SERVICE_UNAVAILABLE, "down")
    );
    assert_eq!(failed.cache_status(), "palisade; fwd=stale; fwd-status=503");
    assert_eq!(handle.metrics().stale_if_error, 1);
}

#[tokio::test(start_paused = true)]
async fn must_revalidate_and_proxy_revalidate_forbid_every_stale_use_rfc_9111_5_2_2_2_and_5_2_2_8()
{
    for directive in [
        "max-age=10, must-revalidate",
        "max-age=10, proxy-revalidate",
    ] {
        let origin =
            Origin::new(move |_, n| Reply::ok(&[("cache-control", directive)], format!("v{n}")));
        let defaults = shared()
            .stale_while_revalidate(Duration::from_secs(60))
            .stale_if_error(Duration::from_secs(600));
        let (app, _) = stack(&origin, defaults);
        get(&app, "/a").await;
        advance(10 * SECOND).await;
        assert_eq!(
            get(&app, "/a").await.text(),
            "v2",
            "{directive}: no stale-while-revalidate"
        );
        origin.set(|_, _| Reply::ok(&[], "down").status(StatusCode::BAD_GATEWAY));
        advance(10 * SECOND).await;
        let failed = get(&app, "/a").await;
        assert_eq!(
            failed.status,
            StatusCode::BAD_GATEWAY,
            "{directive}: no stale-if-error"
        );
        assert_eq!(
            get_with(&app, "/a", &[("cache-control", "max-stale")])
                .await
                .status,
            StatusCode::BAD_GATEWAY,
            "{directive}: not even for max-stale"
        );
    }
}

// ---- Conditional requests (RFC 9111 §4.3) ---------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_304_updates_the_stored_headers_and_freshness_without_a_new_body_rfc_9111_4_3_4() {
    let origin = Origin::new(|parts, n| {
        if parts.headers.get("if-modified-since").is_some() {
            return Reply::ok(&[("cache-control", "max-age=100"), ("x-version", "2")], "")
                .status(StatusCode::NOT_MODIFIED);
        }
        Reply::ok(
            &[
                ("cache-control", "max-age=10"),
                ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
                ("x-version", "1"),
            ],
            format!("v{n}"),
        )
    });
    let (app, _) = stack(&origin, shared());
    get(&app, "/a").await;
    advance(10 * SECOND).await;
    let revalidated = get(&app, "/a").await;
    assert_eq!(
        origin.last_request()["if-modified-since"],
        "Sun, 06 Nov 1994 08:49:37 GMT"
    );
    assert_eq!(revalidated.text(), "v1");
    assert_eq!(revalidated.headers["x-version"], "2");
    assert_eq!(
        revalidated.cache_status(),
        "palisade; fwd=stale; fwd-status=304; ttl=100; stored"
    );
    advance(99 * SECOND).await;
    let hit = get(&app, "/a").await;
    assert_eq!(
        (hit.text(), hit.headers["x-version"].to_str().unwrap()),
        ("v1", "2")
    );
    assert_eq!(hit.cache_status(), "palisade; hit; ttl=1");
}

#[tokio::test(start_paused = true)]
async fn a_callers_own_if_none_match_is_answered_304_from_the_store_rfc_9110_13_1_2() {
    let origin = Origin::serving(&[("cache-control", "max-age=60"), ("etag", "W/\"abc\"")]);
    let (app, _) = stack(&origin, shared());
    let first = get_with(&app, "/a", &[("if-none-match", "\"abc\"")]).await;
    assert_eq!(
        first.status,
        StatusCode::NOT_MODIFIED,
        "fetched in full, stored, then answered"
    );
    assert!(
        origin.last_request().get("if-none-match").is_none(),
        "the caller's validator was not forwarded"
    );
    let hit = get_with(&app, "/a", &[("if-none-match", "\"zzz\", W/\"abc\"")]).await;
    assert_eq!(hit.status, StatusCode::NOT_MODIFIED);
    assert!(hit.body.is_empty());
    assert_eq!(
        get_with(&app, "/a", &[("if-none-match", "\"other\"")])
            .await
            .text(),
        "v1"
    );
    assert_eq!(origin.calls(), 1);
    // Preconditions the cache does not evaluate go forward untouched.
    let ranged = get_with(&app, "/a", &[("range", "bytes=0-1")]).await;
    assert_eq!(
        ranged.cache_status(),
        "palisade; fwd=bypass; fwd-status=200"
    );
}

// ---- Invalidation (RFC 9111 §4.4) ------------------------------------------------------------

// ---- Single flight ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_thousand_callers_on_a_cold_target_make_one_origin_call_and_share_its_response() {
    let origin = Origin::new(|_, n| {
        Reply::ok(&[("cache-control", "max-age=60")], format!("v{n}")).after(100 * MS)
    });
    let (app, handle) = stack(&origin, shared());
    let answers = futures_join(&app, "/hot", 1000).await;
    assert_eq!(origin.calls(), 1);
    let collapsed = answers
        .iter()
        .filter(|a| a.cache_status().contains("collapsed"))
        .count();
    assert_eq!(collapsed, 999);
    assert!(answers.iter().all(|a| a.text() == "v1"));
    assert_eq!(handle.metrics().coalesced, 999);
    // The same on an expired target.
    advance(61 * SECOND).await;
    let answers = futures_join(&app, "/hot", 1000).await;
    assert_eq!(origin.calls(), 2);
    assert!(answers.iter().all(|a| a.text() == "v2"));
}

#[tokio::test(start_paused = true)]
async fn a_failing_leader_is_shared_as_a_problem_with_the_origins_status_or_each_waiter_tries() {
    let origin = Origin::new(|_, _| {
        Reply::ok(&[("retry-after", "7")], "down")
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .after(50 * MS)
    });
    let (app, _) = stack(&origin, shared());
    let answers = futures_join(&app, "/a", 20).await;
    assert_eq!(origin.calls(), 1);
    let collapsed: Vec<_> = answers
        .iter()
        .filter(|a| a.cache_status().contains("collapsed"))
        .collect();
    assert_eq!(collapsed.len(), 19);
    for answer in collapsed {
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.headers["retry-after"], "7");
        assert_eq!(answer.headers["content-type"], "application/problem+json");
    }
    let (app, _) = stack(
        &origin,
        shared().on_leader_failure(LeaderFailure::EachTries),
    );
    futures_join(&app, "/a", 20).await;
    assert_eq!(origin.calls(), 21);
}

#[tokio::test(start_paused = true)]
async fn a_leader_dropped_mid_fetch_hands_over_to_one_waiter() {
    let origin = Origin::new(|_, n| {
        Reply::ok(&[("cache-control", "max-age=60")], format!("v{n}")).after(100 * MS)
    });
    let (app, _) = stack(&origin, shared());
    let leader = tokio::spawn({
        let app = app.clone();
        async move { get(&app, "/a").await }
    });
    tokio::task::yield_now().await;
    let waiters: Vec<_> = (0..10)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { get(&app, "/a").await })
        })
        .collect();
    tokio::task::yield_now().await;
    leader.abort();
    for waiter in waiters {
        assert_eq!(waiter.await.unwrap().text(), "v2");
    }
    assert_eq!(origin.calls(), 2, "exactly one more call");
}

// ---- Bounds ----------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_flood_of_distinct_targets_with_large_bodies_stays_within_the_byte_bound() {
    let origin = Origin::new(|_, n| {
        Reply::ok(
            &[("cache-control", "max-age=600")],
            "x".repeat(8 * 1024 + n % 7),
        )
    });
    let max = 256 * 1024;
    let (app, handle) = stack(&origin, shared().max_bytes(NonZeroU64::new(max).unwrap()));
    for i in 0..2000 {
        get(&app, &format!("/flood/{i}")).await;
        assert!(handle.metrics().weight <= max);
    }
    let metrics = handle.metrics();
    assert!(metrics.entries > 0 && metrics.evictions > 0, "{metrics:?}");
}

// ---- A real server on 127.0.0.1 ----------------------------------------------------------------

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stampede_over_real_connections_makes_one_origin_call() {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    support::init_tracing();
    let origin = Origin::new(|_, n| {
        Reply::ok(&[("cache-control", "max-age=60")], format!("v{n}"))
            .after(Duration::from_millis(200))
    });
    let (app, handle) = stack(&origin, shared());
    let addr = serve(app).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let start = Arc::new(tokio::sync::Barrier::new(100));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let client = client.clone();
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                start.wait().await;
                let request = http::Request::get(format!("http://{addr}/cold"))
                    .body(Body::empty())
                    .unwrap();
                let response = client.request(request).await.unwrap();
                let status = response.headers()["cache-status"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (status, body)
            })
        })
        .collect();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(body, "v1", "{status}");
    }
    assert_eq!(origin.calls(), 1);
    let metrics = handle.metrics();
    assert_eq!(metrics.misses, 1);
    assert_eq!(metrics.coalesced + metrics.hits, 99);
}

// ---- Found in review: windows, failed revalidations, credentials, 304 merges, races ---------

#[tokio::test(start_paused = true)]
async fn the_configured_windows_apply_to_responses_with_freshness_that_set_none() {
    let origin = Origin::serving(&[("cache-control", "max-age=10")]);
    let builder = shared().stale_while_revalidate(Duration::from_secs(5));
    let (app, handle) = stack(&origin, builder);
    get(&app, "/a").await;
    advance(15 * SECOND - MS).await;
    assert_eq!(
        get(&app, "/a").await.cache_status(),
        "palisade; hit; ttl=-5"
    );
    settle().await;
    assert_eq!(origin.calls(), 2);
    assert_eq!(handle.metrics().refreshes, 1);
    let renewed = get(&app, "/a").await;
    assert_eq!(renewed.text(), "v2");
    assert_eq!(renewed.cache_status(), "palisade; hit; ttl=10");
    // A response that says nothing about its freshness is never served stale on the cache's
    // word (RFC 9111 §3, §4.2.4): it is revalidated on each use.
    origin.set(|_, n| Reply::ok(&[("etag", "\"e\"")], format!("v{n}")));
    get(&app, "/silent").await;
    let again = get(&app, "/silent").await;
    assert_eq!(
        again.cache_status(),
        "palisade; fwd=stale; fwd-status=200; ttl=0; stored"
    );
    assert_eq!(origin.last_request()["if-none-match"], "\"e\"");
}

#[tokio::test(start_paused = true)]
async fn a_background_revalidation_that_fails_keeps_the_stale_response_rfc_5861_4() {
    let origin = Origin::serving(&[(
        "cache-control",
        "max-age=10, stale-while-revalidate=60, stale-if-error=600",
    )]);
    let (app, handle) = stack(&origin, shared());
    get(&app, "/a").await;
    origin.set(|_, _| Reply::ok(&[], "down").status(StatusCode::SERVICE_UNAVAILABLE));
    advance(11 * SECOND).await;
    assert_eq!(get(&app, "/a").await.text(), "v1");
    settle().await;
    let metrics = handle.metrics();
    assert_eq!(metrics.refresh_failures, 1);
    assert_eq!(metrics.entries, 1, "the 503 kept the entry");
    advance(2 * SECOND).await;
    assert_eq!(
        get(&app, "/a").await.text(),
        "v1",
        "served, and retried after the backoff"
    );
    settle().await;
    assert_eq!(handle.metrics().refresh_failures, 2);
    // Past the stale window, the 503 is covered by stale-if-error.
    advance(60 * SECOND).await;
    let covered = get(&app, "/a").await;
    assert_eq!(covered.text(), "v1");
    assert!(covered.cache_status().ends_with("detail=stale-if-error"));
}

#[tokio::test(start_paused = true)]
async fn a_shared_cache_revalidates_without_the_credentials_of_the_caller_who_found_it_stale() {
    let origin = Origin::new(|parts, n| {
        let personal =
            parts.headers.contains_key("cookie") || parts.headers.contains_key("authorization");
        let body = if personal {
            format!("personal #{n}")
        } else {
            format!("public #{n}")
        };
        Reply::ok(
            &[("cache-control", "max-age=10, stale-while-revalidate=60")],
            body,
        )
    });
    let (app, handle) = stack(&origin, shared());
    get(&app, "/a").await;
    advance(11 * SECOND).await;
    let alice = [
        ("cookie", "session=alice"),
        ("authorization", "Bearer alice"),
    ];
    assert_eq!(get_with(&app, "/a", &alice).await.text(), "public #1");
    settle().await;
    let seen = origin.last_request();
    assert!(!seen.contains_key("cookie") && !seen.contains_key("authorization"));
    assert_eq!(handle.metrics().refreshes, 1, "renewed, not dropped");
    assert_eq!(get(&app, "/a").await.text(), "public #2");
}

#[tokio::test(start_paused = true)]
async fn the_stale_while_revalidate_window_ends_on_its_last_millisecond_rfc_5861_3() {
    let origin = Origin::serving(&[("cache-control", "max-age=10, stale-while-revalidate=20")]);
    let (app, _) = stack(&origin, shared());
    get(&app, "/a").await;
    // Every revalidation fails, so what is measured is the first entry's own window.
    origin.set(|_, _| Reply::ok(&[], "down").status(StatusCode::BAD_GATEWAY));
    advance(30 * SECOND - MS).await;
    let last = get(&app, "/a").await;
    assert_eq!(last.text(), "v1");
    assert_eq!(last.cache_status(), "palisade; hit; ttl=-20");
    settle().await;
    advance(MS).await;
    let forwarded = get(&app, "/a").await;
    assert_eq!(forwarded.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        forwarded.cache_status(),
        "palisade; fwd=stale; fwd-status=502"
    );
}

#[tokio::test(start_paused = true)]
async fn request_max_age_without_max_stale_refuses_a_stale_answer_rfc_9111_5_2_1_1() {
    let origin = Origin::serving(&[("cache-control", "max-age=10, stale-while-revalidate=60")]);
    let (app, _) = stack(&origin, shared());
    get(&app, "/a").await;
    advance(11 * SECOND).await;
    let strict = get_with(&app, "/a", &[("cache-control", "max-age=100")]).await;
    assert_eq!(strict.text(), "v2");
    advance(11 * SECOND).await;
    let widened = get_with(&app, "/a", &[("cache-control", "max-age=100, max-stale=5")]).await;
    assert_eq!(widened.text(), "v2", "max-stale lets the stale one through");
    assert_eq!(widened.cache_status(), "palisade; hit; ttl=-1");
}

#[tokio::test(start_paused = true)]
async fn a_304_is_merged_without_the_old_age_and_its_cookie_reaches_only_its_caller_rfc_9111_3_2() {
    let origin = Origin::new(|parts, n| {
        if parts.headers.contains_key("if-none-match") {
            let mut reply = Reply::ok(&[("cache-control", "max-age=200"), ("etag", "\"e\"")], "")
                .status(StatusCode::NOT_MODIFIED);
            if parts.uri.path() == "/cookie" && n == 4 {
                reply.headers.push(("set-cookie", "renewed=1".to_owned()));
            }
            return reply;
        }
        let headers = [
            ("cache-control", "max-age=200"),
            ("etag", "\"e\""),
            ("age", "150"),
        ];
        Reply::ok(&headers, format!("v{n}"))
    });
    let (app, _) = stack(&origin, shared());
    get(&app, "/a").await;
    advance(51 * SECOND).await;
    let revalidated = get(&app, "/a").await;
    // Renewed by a 304 without Age: the old Age of 150 no longer counts (ttl would be 50).
    assert_eq!(
        revalidated.cache_status(),
        "palisade; fwd=stale; fwd-status=304; ttl=200; stored"
    );
    get(&app, "/cookie").await;
    advance(51 * SECOND).await;
    let with_cookie = get(&app, "/cookie").await;
    assert_eq!(
        with_cookie.headers["set-cookie"], "renewed=1",
        "its caller gets the cookie"
    );
    assert_eq!(with_cookie.text(), "v3");
    assert_eq!(
        with_cookie.cache_status(),
        "palisade; fwd=stale; fwd-status=304"
    );
    let next = get(&app, "/cookie").await;
    assert!(
        !next.headers.contains_key("set-cookie"),
        "never replayed to another caller"
    );
    assert!(
        next.cache_status().contains("fwd=stale"),
        "{}",
        next.cache_status()
    );
}

#[tokio::test(start_paused = true)]
async fn a_304_that_changes_vary_drops_the_stored_response() {
    let origin = Origin::new(|parts, n| {
        if parts.headers.contains_key("if-none-match") {
            let headers = [
                ("cache-control", "max-age=60"),
                ("etag", "\"e\""),
                ("vary", "accept-language"),
            ];
            return Reply::ok(&headers, "").status(StatusCode::NOT_MODIFIED);
        }
        Reply::ok(
            &[("cache-control", "max-age=10"), ("etag", "\"e\"")],
            format!("v{n}"),
        )
    });
    let (app, handle) = stack(&origin, shared());
    get(&app, "/a").await;
    advance(11 * SECOND).await;
    let fr = get_with(&app, "/a", &[("accept-language", "fr")]).await;
    assert_eq!(fr.text(), "v1");
    assert_eq!(
        handle.metrics().entries,
        0,
        "it now describes other variants than the one stored"
    );
}

#[tokio::test(start_paused = true)]
async fn coalesced_callers_get_the_leaders_response_only_for_their_own_variant() {
    let origin = Origin::new(|parts, n| {
        let lang = header_or(parts, "accept-language", "none");
        let headers = [("cache-control", "max-age=60"), ("vary", "accept-language")];
        Reply::ok(&headers, format!("{lang} #{n}")).after(50 * MS)
    });
    let (app, handle) = stack(&origin, shared());
    let spawn = |lang: &'static str| {
        let app = app.clone();
        tokio::spawn(async move { get_with(&app, "/a", &[("accept-language", lang)]).await })
    };
    let fr = spawn("fr");
    tokio::task::yield_now().await;
    let (fr_too, de) = (spawn("fr"), spawn("de"));
    let (fr, fr_too, de) = (fr.await.unwrap(), fr_too.await.unwrap(), de.await.unwrap());
    assert_eq!(
        handle.metrics().coalesced,
        2,
        "both waited on the first French fetch"
    );
    assert_eq!(fr_too.text(), "fr #1");
    assert!(
        fr_too.cache_status().contains("collapsed"),
        "same variant: shared"
    );
    assert_eq!(de.text(), "de #2", "never the French variant");
    assert!(!de.cache_status().contains("collapsed"));
    assert_eq!(fr.text(), "fr #1");
}

#[tokio::test(start_paused = true)]
async fn an_invalidation_during_a_fetch_keeps_its_response_out_of_the_store_rfc_9111_4_4() {
    let origin = Origin::new(|parts, n| {
        if parts.method == Method::POST {
            return Reply::ok(&[], "").status(StatusCode::NO_CONTENT);
        }
        Reply::ok(&[("cache-control", "max-age=60")], format!("v{n}")).after(100 * MS)
    });
    let (app, handle) = stack(&origin, shared());
    let before = tokio::spawn({
        let app = app.clone();
        async move { get(&app, "/a").await }
    });
    tokio::task::yield_now().await;
    send(&app, Method::POST, "/a", &[]).await;
    assert_eq!(
        before.await.unwrap().text(),
        "v1",
        "its own caller still gets it"
    );
    assert_eq!(
        handle.metrics().entries,
        0,
        "the write that came after it wins"
    );
    assert_eq!(get(&app, "/a").await.text(), "v3");
}

#[tokio::test(start_paused = true)]
async fn a_successful_unsafe_request_invalidates_its_target_and_its_location_rfc_9111_4_4() {
    let origin = Origin::new(|parts, n| {
        if parts.method == Method::POST {
            let status = if parts.uri.path() == "/fail" {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::CREATED
            };
            let headers = [
                ("location", "/items/7"),
                ("content-location", "http://other.test/items/8"),
            ];
            return Reply::ok(&headers, "").status(status);
        }
        Reply::ok(
            &[("cache-control", "max-age=60"), ("vary", "accept")],
            format!("v{n}"),
        )
    });
    let (app, handle) = stack(&origin, shared());
    let api = [("host", "api.test")];
    let html = [("host", "api.test"), ("accept", "text/html")];
    let other = [("host", "other.test")];
    for uri in ["/items", "/items/7", "/fail"] {
        get_with(&app, uri, &api).await;
    }
    get_with(&app, "/items", &html).await;
    get_with(&app, "/items/8", &other).await;
    let posted = send(&app, Method::POST, "/items", &api).await;
    assert_eq!(
        posted.cache_status(),
        "palisade; fwd=method; fwd-status=201"
    );
    assert_eq!(
        get_with(&app, "/items", &api).await.cache_status(),
        "palisade; fwd=uri-miss; fwd-status=200; ttl=60; stored"
    );
    let variant = get_with(&app, "/items", &html).await;
    assert_eq!(
        variant.cache_status(),
        "palisade; fwd=vary-miss; fwd-status=200; ttl=60; stored",
        "every variant went with the target (the index is the one just made)"
    );
    let location = get_with(&app, "/items/7", &api).await;
    assert!(
        location.cache_status().contains("uri-miss"),
        "its Location too"
    );
    let elsewhere = get_with(&app, "/items/8", &other).await;
    assert_eq!(
        elsewhere.cache_status(),
        "palisade; hit; ttl=60",
        "another origin: untouched"
    );
    send(&app, Method::POST, "/fail", &api).await;
    assert_eq!(
        get_with(&app, "/fail", &api).await.cache_status(),
        "palisade; hit; ttl=60",
        "a failed POST invalidates nothing"
    );
    // The handle invalidates by URI (with a scheme: the server's view of it too).
    assert!(handle.invalidate(&"http://api.test/fail".parse().unwrap()));
    assert!(
        get_with(&app, "/fail", &api)
            .await
            .cache_status()
            .contains("uri-miss")
    );
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_long_targets_is_weighed_by_its_keys_too() {
    let origin = Origin::serving(&[("cache-control", "max-age=600")]);
    let max = 64 * 1024;
    let (app, handle) = stack(&origin, shared().max_bytes(NonZeroU64::new(max).unwrap()));
    let long = "k".repeat(2048);
    for i in 0..500 {
        get(&app, &format!("/{long}/{i}")).await;
    }
    let metrics = handle.metrics();
    assert!(metrics.weight <= max);
    assert!(
        metrics.entries * 2048 <= max,
        "each entry weighs its 2 KiB key: {metrics:?}"
    );
}

// ---- Hostile origins ---------------------------------------------------------------------------

/// A body that sends `first`, then either never ends or fails.
struct Trickle {
    first: Option<Bytes>,
    fail: bool,
}

impl http_body::Body for Trickle {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if let Some(first) = self.first.take() {
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::data(first))));
        }
        if self.fail {
            return std::task::Poll::Ready(Some(Err(std::io::Error::other("connection reset"))));
        }
        std::task::Poll::Pending
    }
}

fn trickling_app(fail: bool, calls: Arc<AtomicUsize>, cache: HttpCacheLayer) -> Router {
    Router::new()
        .fallback(move || {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                let body = Trickle {
                    first: Some(Bytes::from_static(b"partial ")),
                    fail,
                };
                Response::builder()
                    .header("cache-control", "max-age=60")
                    .body(Body::new(body))
                    .unwrap()
            }
        })
        .layer(cache)
}

#[tokio::test(start_paused = true)]
async fn a_body_that_never_ends_holds_its_waiters_only_until_the_lock_timeout() {
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = shared().lock_timeout(SECOND).build().unwrap();
    let handle = cache.handle();
    let app = trickling_app(false, Arc::clone(&calls), cache);
    // The leader's caller waits on the body as it would without the cache (its own timeout
    // bounds that); the callers coalesced behind it give up after the lock timeout and go to
    // the origin themselves.
    let leader = tokio::spawn({
        let app = app.clone();
        async move { get(&app, "/endless").await }
    });
    tokio::task::yield_now().await;
    let waiter = tokio::spawn({
        let app = app.clone();
        async move {
            let request = http::Request::get("/endless").body(Body::empty()).unwrap();
            app.oneshot(request).await.unwrap().status()
        }
    });
    tokio::time::sleep(SECOND + MS).await;
    settle().await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the waiter went on its own after 1 s"
    );
    assert!(
        !leader.is_finished(),
        "the endless body is still being read"
    );
    assert_eq!(handle.metrics().entries, 0);
    leader.abort();
    waiter.abort();
}

#[tokio::test(start_paused = true)]
async fn a_body_that_fails_midway_reaches_its_caller_as_a_failure_and_is_not_stored() {
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = shared().build().unwrap();
    let handle = cache.handle();
    let app = trickling_app(true, Arc::clone(&calls), cache);
    let request = || http::Request::get("/reset").body(Body::empty()).unwrap();
    let response = app.clone().oneshot(request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "the head had been sent");
    let read = response.into_body().collect().await;
    assert!(
        read.is_err(),
        "the caller sees the failure, not a truncated body"
    );
    assert_eq!(handle.metrics().entries, 0);
    let again = app.clone().oneshot(request()).await.unwrap();
    assert!(again.into_body().collect().await.is_err());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "nothing was stored to answer from"
    );
}

// ---- Found in a second review ------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_host_that_is_more_than_an_authority_is_never_cached() {
    let origin = Origin::serving(&[("cache-control", "max-age=60")]);
    let (app, handle) = stack(&origin, shared());
    // Glued to the path, this Host would make the key of `example.com/admin/x`.
    let poisoned = get_with(&app, "/x", &[("host", "example.com/admin")]).await;
    assert_eq!(
        poisoned.cache_status(),
        "palisade; fwd=bypass; fwd-status=200"
    );
    assert_eq!(handle.metrics().entries, 0);
    let admin = get_with(&app, "/admin/x", &[("host", "example.com")]).await;
    assert!(
        admin.cache_status().contains("uri-miss"),
        "{}",
        admin.cache_status()
    );
}

#[tokio::test(start_paused = true)]
async fn a_caller_after_an_invalidation_is_not_coalesced_behind_the_fetch_it_invalidated() {
    let origin = Origin::new(|parts, n| {
        if parts.method == Method::POST {
            return Reply::ok(&[], "").status(StatusCode::NO_CONTENT);
        }
        Reply::ok(&[("cache-control", "max-age=60")], format!("v{n}")).after(100 * MS)
    });
    let (app, _) = stack(&origin, shared());
    let before = tokio::spawn({
        let app = app.clone();
        async move { get(&app, "/a").await }
    });
    tokio::task::yield_now().await;
    send(&app, Method::POST, "/a", &[]).await;
    let after = get(&app, "/a").await;
    assert_eq!(before.await.unwrap().text(), "v1");
    assert_eq!(after.text(), "v3", "its own fetch, after the write");
    assert!(!after.cache_status().contains("collapsed"));
}

#[tokio::test(start_paused = true)]
async fn a_write_in_origin_form_invalidates_the_target_stored_with_a_scheme() {
    let origin = Origin::new(|parts, n| {
        if parts.method == Method::POST {
            return Reply::ok(&[], "").status(StatusCode::NO_CONTENT);
        }
        Reply::ok(&[("cache-control", "max-age=60")], format!("v{n}"))
    });
    let (app, _) = stack(&origin, shared());
    // An HTTP/2 request (or a client's) carries scheme and authority in its URI.
    get(&app, "https://api.test/a").await;
    assert_eq!(
        get(&app, "https://api.test/a").await.cache_status(),
        "palisade; hit; ttl=60"
    );
    // An HTTP/1 request to the same target: origin form and Host.
    send(&app, Method::POST, "/a", &[("host", "api.test")]).await;
    let after = get(&app, "https://api.test/a").await;
    assert!(
        after.cache_status().contains("uri-miss"),
        "{}",
        after.cache_status()
    );
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_never_serves_a_variant_invalidated_during_the_fetch() {
    let origin = Origin::new(|parts, n| {
        if parts.method == Method::POST {
            return Reply::ok(&[], "").status(StatusCode::NO_CONTENT);
        }
        if n == 1 {
            let headers = [
                ("cache-control", "max-age=10, stale-if-error=600"),
                ("vary", "accept-language"),
            ];
            return Reply::ok(&headers, "v1");
        }
        Reply::ok(&[], "down")
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .after(100 * MS)
    });
    let (app, _) = stack(&origin, shared());
    let fr = [("accept-language", "fr")];
    get_with(&app, "/a", &fr).await;
    advance(11 * SECOND).await;
    let during = tokio::spawn({
        let app = app.clone();
        async move { get_with(&app, "/a", &[("accept-language", "fr")]).await }
    });
    tokio::task::yield_now().await;
    send(&app, Method::POST, "/a", &[]).await;
    let answer = during.await.unwrap();
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the write came first"
    );
}

#[tokio::test(start_paused = true)]
async fn a_response_that_varies_on_cookie_is_revalidated_with_that_cookie() {
    let origin = Origin::new(|parts, n| {
        let user = header_or(parts, "cookie", "nobody");
        let headers = [
            (
                "cache-control",
                "public, max-age=10, stale-while-revalidate=60",
            ),
            ("vary", "cookie"),
        ];
        Reply::ok(&headers, format!("{user} #{n}"))
    });
    let (app, _) = stack(&origin, shared());
    let alice = [("cookie", "user=alice")];
    get_with(&app, "/me", &alice).await;
    advance(11 * SECOND).await;
    assert_eq!(get_with(&app, "/me", &alice).await.text(), "user=alice #1");
    settle().await;
    assert_eq!(
        origin.last_request()["cookie"],
        "user=alice",
        "her variant, her cookie"
    );
    assert_eq!(get_with(&app, "/me", &alice).await.text(), "user=alice #2");
}

#[tokio::test(start_paused = true)]
async fn a_clients_no_store_on_a_revalidation_removes_nothing_rfc_9111_5_2_1_5() {
    let origin = Origin::new(|parts, n| {
        let headers = [("cache-control", "max-age=10"), ("etag", "\"e\"")];
        if parts.headers.contains_key("if-none-match") {
            return Reply::ok(&headers, "").status(StatusCode::NOT_MODIFIED);
        }
        Reply::ok(&headers, format!("v{n}"))
    });
    let (app, handle) = stack(&origin, shared());
    get(&app, "/a").await;
    advance(11 * SECOND).await;
    let refused = get_with(&app, "/a", &[("cache-control", "no-store")]).await;
    assert_eq!(refused.text(), "v1");
    assert_eq!(
        refused.cache_status(),
        "palisade; fwd=stale; fwd-status=304"
    );
    assert_eq!(handle.metrics().entries, 1, "another caller's entry stays");
}

#[tokio::test(start_paused = true)]
async fn callers_coalesced_behind_a_stale_if_error_answer_are_told_so() {
    let origin = Origin::new(|_, n| {
        if n == 1 {
            return Reply::ok(&[("cache-control", "max-age=10, stale-if-error=600")], "v1");
        }
        Reply::ok(&[], "down")
            .status(StatusCode::BAD_GATEWAY)
            .after(50 * MS)
    });
    let (app, _) = stack(&origin, shared());
    get(&app, "/a").await;
    advance(11 * SECOND).await;
    let answers = futures_join(&app, "/a", 5).await;
    assert!(answers.iter().all(|a| a.text() == "v1"));
    let waiters = answers
        .iter()
        .filter(|a| {
            a.cache_status()
                .ends_with("collapsed; detail=stale-if-error")
        })
        .count();
    assert_eq!(waiters, 4);
}

#[tokio::test(start_paused = true)]
async fn a_304_without_a_date_renews_the_response_as_of_its_receipt() {
    let origin = Origin::new(|_, _| Reply::ok(&[], ""));
    let (app, _) = stack(&origin, shared());
    let date = httpdate::fmt_http_date(SystemTime::now() + SECOND);
    origin.set(move |parts, n| {
        if parts.headers.contains_key("if-none-match") {
            let headers = [("cache-control", "max-age=10"), ("etag", "\"e\"")];
            return Reply::ok(&headers, "").status(StatusCode::NOT_MODIFIED);
        }
        let headers = [
            ("cache-control", "max-age=10"),
            ("etag", "\"e\""),
            ("date", date.as_str()),
        ];
        Reply::ok(&headers, format!("v{n}"))
    });
    get(&app, "/a").await;
    advance(20 * SECOND).await;
    get(&app, "/a").await;
    // The first response's Date is 20 s old now; the renewal must not inherit it.
    let hit = get(&app, "/a").await;
    assert_eq!(hit.cache_status(), "palisade; hit; ttl=10");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_cache_around_a_hyper_client_answers_repeats_without_the_network() {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use tower::{Layer, Service};
    let origin = Origin::new(|_, n| {
        let headers = [("cache-control", "private, max-age=60"), ("etag", "\"p\"")];
        Reply::ok(&headers, format!("v{n}"))
    });
    let server = Router::new().fallback(handle).with_state(origin.clone());
    let addr = serve(server).await;
    let cache = HttpCacheLayer::builder(CacheMode::Private).build().unwrap();
    let handle = cache.handle();
    let mut client = cache.layer(Client::builder(TokioExecutor::new()).build_http::<Body>());
    let uri = format!("http://{addr}/profile");
    for expected in [
        "palisade; fwd=uri-miss; fwd-status=200",
        "palisade; hit; ttl=",
    ] {
        let request = http::Request::get(&uri).body(Body::empty()).unwrap();
        let response = client.ready().await.unwrap().call(request).await.unwrap();
        let status = response.headers()["cache-status"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(status.starts_with(expected), "{status}");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "v1");
    }
    assert_eq!(origin.calls(), 1, "the repeat never left the process");
    // The handle invalidates by the URI the client used.
    assert!(handle.invalidate(&uri.parse().unwrap()));
}
