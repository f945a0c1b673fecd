//! The HTTP cache's remote tier in a real `redis-server` (feature `redis`): two instances of
//! an axum service on 127.0.0.1, each with its own HTTP cache in front of the same handler,
//! share one Redis. A cold target stampeded on both reaches the handler once, a response that
//! varies is shared per variant, `Age` counts the time in Redis, a stale response is
//! revalidated by one instance, and a Redis that is down is bypassed and said so in
//! `Cache-Status`.
//!
//! Real time (real sockets, Redis's own clock); assertions are about what happened.

mod redis_support;
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use palisade::Factor;
use palisade::cache::{CacheMode, HttpCacheHandle, HttpCacheLayer};
use palisade::redis::{RedisCacheStore, RedisConnection};
use redis::AsyncCommands;
use redis_support::{RedisServer, commands, reset_stats};

/// The handler behind both instances: counts its calls, takes 100 ms, and answers what the
/// test set (headers, and a body of `v<n>` for its `n`-th call).
#[derive(Clone)]
struct Origin {
    calls: Arc<AtomicUsize>,
    headers: Arc<Mutex<Vec<(&'static str, &'static str)>>>,
    /// The `If-None-Match` of every call, to see revalidations.
    conditionals: Arc<Mutex<Vec<Option<String>>>>,
}

impl Origin {
    fn serving(headers: &[(&'static str, &'static str)]) -> Self {
        Self {
            calls: Arc::new(AtomicUsize::new(0)),
            headers: Arc::new(Mutex::new(headers.to_vec())),
            conditionals: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

async fn handle(State(origin): State<Origin>, request: Request) -> Response {
    let n = origin.calls.fetch_add(1, Ordering::SeqCst) + 1;
    let conditional = request
        .headers()
        .get("if-none-match")
        .map(|value| value.to_str().unwrap().to_owned());
    origin
        .conditionals
        .lock()
        .unwrap()
        .push(conditional.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let language = request
        .headers()
        .get("accept-language")
        .map_or("any", |value| value.to_str().unwrap())
        .to_owned();
    let headers = origin.headers.lock().unwrap().clone();
    let etag = headers
        .iter()
        .find(|(name, _)| *name == "etag")
        .map(|(_, value)| *value);
    let mut response = Response::builder();
    for (name, value) in &headers {
        response = response.header(*name, *value);
    }
    if conditional.is_some() && conditional.as_deref() == etag {
        return response
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .unwrap();
    }
    response
        .body(Body::from(format!("v{n} {language}")))
        .unwrap()
}

/// One instance on 127.0.0.1: the handler behind its own HTTP cache over the shared Redis.
async fn instance(redis: &RedisServer, origin: &Origin) -> (SocketAddr, HttpCacheHandle) {
    instance_with(redis, origin, true).await
}

/// One instance over the shared Redis, with a local tier or without.
async fn instance_with(
    redis: &RedisServer,
    origin: &Origin,
    local: bool,
) -> (SocketAddr, HttpCacheHandle) {
    let connection = RedisConnection::builder(redis.url())
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let store = RedisCacheStore::builder(connection).build().unwrap();
    let builder = HttpCacheLayer::builder(CacheMode::Shared).early_refresh(Factor::new_const(0.0));
    let builder = if local {
        builder.remote(store)
    } else {
        builder.remote_only(store)
    };
    let cache = builder.build().unwrap();
    let cache_handle = cache.handle();
    let app = Router::new()
        .fallback(handle)
        .with_state(origin.clone())
        .layer(cache);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, cache_handle)
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn cache_status(&self) -> &str {
        self.headers
            .get("cache-status")
            .map_or("", |value| value.to_str().unwrap())
    }

    fn age(&self) -> Option<u64> {
        self.headers
            .get("age")
            .map(|value| value.to_str().unwrap().parse().unwrap())
    }
}

async fn send(
    client: &HttpClient,
    method: Method,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        // Behind a load balancer every instance sees the public host: entries are keyed by it.
        .header(http::header::HOST, "shop.example");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

async fn get(client: &HttpClient, addr: SocketAddr, path: &str) -> Answer {
    send(client, Method::GET, addr, path, &[]).await
}

/// Asks both instances for `path` until both answer fresh (`ttl` not negative), within 5 s:
/// the two answers that were.
async fn both_fresh_again(
    client: &HttpClient,
    a: SocketAddr,
    b: SocketAddr,
    path: &str,
) -> (Answer, Answer) {
    let started = Instant::now();
    loop {
        let (x, y) = tokio::join!(get(client, a, path), get(client, b, path));
        let fresh = |answer: &Answer| !answer.cache_status().contains("ttl=-");
        if fresh(&x) && fresh(&y) {
            return (x, y);
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never revalidated: {} / {}",
            x.cache_status(),
            y.cache_status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Published after the caller has its response: long enough for it to land.
async fn published() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_target_stampeded_on_two_instances_reaches_the_handler_once() {
    support::init_tracing();
    let redis = RedisServer::start().await;
    let origin = Origin::serving(&[("cache-control", "max-age=60")]);
    let (a, a_handle) = instance(&redis, &origin).await;
    let (b, b_handle) = instance(&redis, &origin).await;
    let client = client();
    let start = Arc::new(tokio::sync::Barrier::new(100));
    let tasks: Vec<_> = (0..100)
        .map(|n| {
            let addr = if n % 2 == 0 { a } else { b };
            let (client, start) = (client.clone(), Arc::clone(&start));
            tokio::spawn(async move {
                start.wait().await;
                get(&client, addr, "/items/7").await
            })
        })
        .collect();
    let mut from_redis = 0;
    for task in tasks {
        let answer = task.await.unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body, "v1 any");
        if answer.cache_status().contains("detail=remote") {
            from_redis += 1;
        }
    }
    assert_eq!(origin.calls(), 1, "one handler call for the fleet");
    let (a, b) = (a_handle.metrics(), b_handle.metrics());
    assert_eq!(a.misses + b.misses, 1, "{a:?} {b:?}");
    assert_eq!(
        a.remote_hits + b.remote_hits,
        1,
        "the other instance's leader took it from Redis"
    );
    assert!(
        from_redis >= 1,
        "that leader's caller was told it came from the remote tier"
    );
    assert_eq!(a.remote_errors + b.remote_errors, 0);
}

#[tokio::test]
async fn a_response_that_varies_is_shared_per_variant() {
    support::init_tracing();
    let redis = RedisServer::start().await;
    let origin = Origin::serving(&[("cache-control", "max-age=60"), ("vary", "accept-language")]);
    let (a, _) = instance(&redis, &origin).await;
    let (b, b_handle) = instance(&redis, &origin).await;
    let client = client();
    let en = [("accept-language", "en")];
    let fr = [("accept-language", "fr")];
    assert_eq!(
        send(&client, Method::GET, a, "/items/1", &en).await.body,
        "v1 en"
    );
    published().await;
    let answer = send(&client, Method::GET, b, "/items/1", &en).await;
    assert_eq!(
        answer.body,
        "v1 en",
        "from Redis: {}",
        answer.cache_status()
    );
    assert!(
        answer.cache_status().contains("hit"),
        "{}",
        answer.cache_status()
    );
    let answer = send(&client, Method::GET, b, "/items/1", &fr).await;
    assert_eq!(answer.body, "v2 fr", "another variant: fetched");
    published().await;
    let answer = send(&client, Method::GET, a, "/items/1", &fr).await;
    assert_eq!(
        answer.body,
        "v2 fr",
        "and shared: {}",
        answer.cache_status()
    );
    assert_eq!(origin.calls(), 2, "one call per variant for the fleet");
    assert_eq!(b_handle.metrics().remote_hits, 1);
    // The next variant: the index, then the variant (always through the index, even where the
    // local tier has it), then the variant's and the index's puts.
    let mut admin = redis.admin().await;
    reset_stats(&mut admin).await;
    let de = [("accept-language", "de")];
    assert_eq!(
        send(&client, Method::GET, a, "/items/1", &de).await.body,
        "v3 de"
    );
    published().await;
    assert_eq!(commands(&mut admin).await, [("evalsha".to_owned(), 4)]);
}

#[tokio::test]
async fn after_an_invalidation_no_instance_reads_a_variant_of_the_old_index() {
    support::init_tracing();
    let redis = RedisServer::start().await;
    let origin = Origin::serving(&[("cache-control", "max-age=60"), ("vary", "accept-language")]);
    let (a, _) = instance(&redis, &origin).await;
    let (c, _) = instance(&redis, &origin).await;
    let client = client();
    let en = [("accept-language", "en")];
    let fr = [("accept-language", "fr")];
    assert_eq!(
        send(&client, Method::GET, a, "/items/2", &en).await.body,
        "v1 en"
    );
    assert_eq!(
        send(&client, Method::GET, a, "/items/2", &fr).await.body,
        "v2 fr"
    );
    published().await;
    // C takes `en` (and the target's index) from Redis; `fr` is in Redis, not in C.
    let answer = send(&client, Method::GET, c, "/items/2", &en).await;
    assert!(
        answer.cache_status().contains("detail=remote"),
        "{}",
        answer.cache_status()
    );
    // A's POST invalidates the target: its index goes, and every variant under it.
    send(&client, Method::POST, a, "/items/2", &[]).await;
    published().await;
    let answer = send(&client, Method::GET, c, "/items/2", &fr).await;
    assert_eq!(
        answer.body,
        "v4 fr",
        "fetched anew, not the old `fr`: {}",
        answer.cache_status()
    );
    // And the new `fr` is under a new index: another instance reads it, not the old one.
    published().await;
    assert_eq!(
        send(&client, Method::GET, a, "/items/2", &fr).await.body,
        "v4 fr"
    );
}

#[tokio::test]
async fn age_counts_the_time_spent_in_redis() {
    support::init_tracing();
    let redis = RedisServer::start().await;
    let origin = Origin::serving(&[("cache-control", "max-age=60")]);
    let (a, _) = instance(&redis, &origin).await;
    let (b, _) = instance(&redis, &origin).await;
    let client = client();
    get(&client, a, "/items/2").await;
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let answer = get(&client, b, "/items/2").await;
    assert_eq!(answer.body, "v1 any");
    assert_eq!(answer.age(), Some(2), "{:?}", answer.headers);
    let status = answer.cache_status();
    assert!(
        status.contains("ttl=57") || status.contains("ttl=58"),
        "the freshness left, not a new lifetime: {status}"
    );
}

#[tokio::test]
async fn a_miss_is_one_lookup_and_one_put_and_the_entry_lives_for_its_windows() {
    support::init_tracing();
    let redis = RedisServer::start().await;
    let origin = Origin::serving(&[(
        "cache-control",
        "max-age=30, stale-while-revalidate=10, stale-if-error=20",
    )]);
    let (a, _) = instance(&redis, &origin).await;
    let client = client();
    get(&client, a, "/items/0").await; // loads the scripts
    published().await;
    let mut admin = redis.admin().await;
    reset_stats(&mut admin).await;
    get(&client, a, "/items/3").await;
    published().await;
    assert_eq!(
        commands(&mut admin).await,
        [("evalsha".to_owned(), 2)],
        "a lookup (which took the lock) and a put"
    );
    reset_stats(&mut admin).await;
    let answer = get(&client, a, "/items/3").await;
    assert!(answer.cache_status().contains("hit"));
    assert_eq!(
        commands(&mut admin).await,
        [],
        "a local hit asks Redis nothing"
    );
    let connection = RedisConnection::builder(redis.url()).build().unwrap();
    let store = RedisCacheStore::builder(connection).build().unwrap();
    let pttl: i64 = admin
        .pttl(store.entry_key(b"shop.example/items/3"))
        .await
        .unwrap();
    // Fresh for 30 s, and stale-if-error 20 s past that: the longest window.
    assert!((49_000..=50_000).contains(&pttl), "{pttl}");
    let locked: bool = admin
        .exists(store.lock_key(b"shop.example/items/3"))
        .await
        .unwrap();
    assert!(!locked, "the put gave the lock up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_response_is_revalidated_by_one_instance_for_the_fleet() {
    support::init_tracing();
    let redis = RedisServer::start().await;
    let origin = Origin::serving(&[
        ("cache-control", "max-age=1, stale-while-revalidate=30"),
        ("etag", "\"v1\""),
    ]);
    let (a, a_handle) = instance(&redis, &origin).await;
    let (b, b_handle) = instance(&redis, &origin).await;
    let client = client();
    assert_eq!(get(&client, a, "/items/4").await.body, "v1 any");
    published().await;
    assert_eq!(
        get(&client, b, "/items/4").await.body,
        "v1 any",
        "from Redis"
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    // Both stale now: served at once, and one revalidation for the two.
    let (x, y) = tokio::join!(get(&client, a, "/items/4"), get(&client, b, "/items/4"));
    assert_eq!((x.body.as_str(), y.body.as_str()), ("v1 any", "v1 any"));
    // Renewed by a `304`: fresh again, the same body.
    let (x, y) = both_fresh_again(&client, a, b, "/items/4").await;
    assert_eq!((x.body.as_str(), y.body.as_str()), ("v1 any", "v1 any"));
    assert_eq!(origin.calls(), 2, "one fetch and one revalidation");
    assert_eq!(
        origin.conditionals.lock().unwrap()[1].as_deref(),
        Some("\"v1\""),
        "conditional"
    );
    let (a, b) = (a_handle.metrics(), b_handle.metrics());
    assert_eq!(a.revalidated + b.revalidated, 1, "{a:?} {b:?}");
}

#[tokio::test]
async fn with_redis_down_the_cache_forwards_and_says_so() {
    support::init_tracing();
    let mut redis = RedisServer::start().await;
    let origin = Origin::serving(&[("cache-control", "max-age=60")]);
    let (a, handle) = instance(&redis, &origin).await;
    let client = client();
    assert_eq!(get(&client, a, "/items/5").await.body, "v1 any");
    redis.kill();
    let started = Instant::now();
    let answer = get(&client, a, "/items/6").await;
    assert_eq!(answer.body, "v2 any", "from the handler");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let status = answer.cache_status();
    assert!(
        status.contains("fwd=uri-miss") && status.contains("detail=remote-unavailable"),
        "{status}"
    );
    assert!(status.contains("stored"), "kept locally: {status}");
    let answer = get(&client, a, "/items/5").await;
    assert!(
        answer.cache_status().contains("hit"),
        "the local tier still serves"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        handle.metrics().remote_errors >= 1,
        "{:?}",
        handle.metrics()
    );
}

#[tokio::test]
async fn an_unsafe_request_removes_the_target_from_redis() {
    support::init_tracing();
    let redis = RedisServer::start().await;
    let origin = Origin::serving(&[("cache-control", "max-age=60")]);
    let (a, _) = instance(&redis, &origin).await;
    let (b, _) = instance(&redis, &origin).await;
    let client = client();
    get(&client, a, "/items/8").await;
    published().await;
    let connection = RedisConnection::builder(redis.url()).build().unwrap();
    let store = RedisCacheStore::builder(connection).build().unwrap();
    let mut admin = redis.admin().await;
    let key = store.entry_key(b"shop.example/items/8");
    assert!(admin.exists::<_, bool>(&key).await.unwrap());
    let answer = send(&client, Method::POST, a, "/items/8", &[]).await;
    assert_eq!(answer.status, StatusCode::OK);
    published().await;
    assert!(!admin.exists::<_, bool>(&key).await.unwrap(), "removed");
    assert_eq!(
        get(&client, b, "/items/8").await.body,
        "v3 any",
        "the other instance fetches anew"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_that_is_not_stored_gives_the_lock_up_at_once() {
    support::init_tracing();
    let redis = RedisServer::start().await;
    let origin = Origin::serving(&[("cache-control", "no-store")]);
    let (a, _) = instance(&redis, &origin).await;
    let (b, _) = instance(&redis, &origin).await;
    let client = client();
    // The first holds the lock for its 100 ms handler call; the second waits on it, and
    // goes forward as soon as it is given up, not after half the 5 s lock timeout.
    let started = Instant::now();
    let first = get(&client, a, "/items/9");
    let second = async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        get(&client, b, "/items/9").await
    };
    let (x, y) = tokio::join!(first, second);
    assert_eq!(x.body, "v1 any");
    assert_eq!(y.body, "v2 any");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_redis_is_bypassed_within_its_timeout() {
    support::init_tracing();
    let redis = RedisServer::start().await;
    let origin = Origin::serving(&[("cache-control", "max-age=60")]);
    let (a, handle) = instance(&redis, &origin).await;
    let client = client();
    get(&client, a, "/items/10").await; // loads the scripts
    let mut admin = redis.admin().await;
    // Redis stops answering for two seconds.
    let sleeper = tokio::spawn(async move {
        redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg("2")
            .query_async::<()>(&mut admin)
            .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let answer = get(&client, a, "/items/11").await;
    let took = started.elapsed();
    assert_eq!(answer.body, "v2 any", "from the handler");
    assert!(
        answer.cache_status().contains("detail=remote-unavailable"),
        "{}",
        answer.cache_status()
    );
    // The 200 ms Redis timeout, then the 100 ms handler: nowhere near the 2 s sleep.
    assert!(took < Duration::from_millis(1_000), "{took:?}");
    let answer = get(&client, a, "/items/10").await;
    assert!(
        answer.cache_status().contains("hit"),
        "the local tier serves meanwhile"
    );
    sleeper.await.unwrap().unwrap();
    assert!(
        handle.metrics().remote_errors >= 1,
        "{:?}",
        handle.metrics()
    );
}

#[tokio::test]
async fn without_a_local_tier_an_unsafe_request_on_one_instance_is_seen_by_the_other_at_once() {
    support::init_tracing();
    let redis = RedisServer::start().await;
    let origin = Origin::serving(&[("cache-control", "max-age=60")]);
    let (a, _) = instance_with(&redis, &origin, false).await;
    let (b, b_handle) = instance_with(&redis, &origin, false).await;
    let client = client();
    get(&client, a, "/items/12").await;
    published().await;
    let answer = get(&client, b, "/items/12").await;
    assert_eq!(answer.body, "v1 any");
    assert!(
        answer.cache_status().contains("detail=remote"),
        "{}",
        answer.cache_status()
    );
    send(&client, Method::POST, a, "/items/12", &[]).await;
    published().await;
    assert_eq!(
        get(&client, b, "/items/12").await.body,
        "v3 any",
        "fetched anew"
    );
    assert_eq!(b_handle.metrics().entries, 0, "nothing kept in memory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_local_tier_a_stale_response_is_revalidated_once_for_the_fleet() {
    support::init_tracing();
    let redis = RedisServer::start().await;
    let origin = Origin::serving(&[
        ("cache-control", "max-age=1, stale-while-revalidate=30"),
        ("etag", "\"v1\""),
    ]);
    let (a, _) = instance_with(&redis, &origin, false).await;
    let (b, _) = instance_with(&redis, &origin, false).await;
    let client = client();
    assert_eq!(get(&client, a, "/items/13").await.body, "v1 any");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (x, y) = tokio::join!(get(&client, a, "/items/13"), get(&client, b, "/items/13"));
    assert_eq!(
        (x.body.as_str(), y.body.as_str()),
        ("v1 any", "v1 any"),
        "stale, at once"
    );
    both_fresh_again(&client, a, b, "/items/13").await;
    // A `304` to a request without the stored validators could not happen: the revalidation
    // carried them, though nothing was stored locally.
    assert_eq!(origin.calls(), 2, "one fetch and one revalidation");
    assert_eq!(
        origin.conditionals.lock().unwrap()[1].as_deref(),
        Some("\"v1\"")
    );
}
