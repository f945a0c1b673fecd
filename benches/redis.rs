//! The Redis idempotency store against a local `redis-server` (started by the bench on a free
//! loopback port), beside the in-memory store and the bare router in the same run.
//!
//! `cargo bench --features redis --bench redis` (needs `redis-server` on the PATH). Each
//! subject is a whole request through an axum `Router` with the idempotency layer:
//!
//! - `round_trip/ping`: one redis-rs `PING` through a `ConnectionManager`, the floor of one
//!   round trip on this machine;
//! - `first_request`: a new key each time: claim, handler, completion (two round trips);
//! - `replay`: one stored key: the claim finds the response (one round trip);
//! - `concurrent_64`: 64 first requests at once on a 2-worker runtime; the time given is for
//!   all 64, so requests per second = 64 / time;
//! - `http_cache/hit`: a `GET` answered by an HTTP cache with the Redis tier: `bare` (no
//!   cache), `local` (the in-memory tier answers; Redis is not asked), `remote_only` (no
//!   in-memory tier: one lookup per request).
//!
//! The latency groups run on a current-thread runtime (no wake-up crosses threads, the least
//! noisy measure of the work itself); the concurrent group on a 2-worker runtime, as a server
//! runs.

#[path = "../tests/redis_support/mod.rs"]
mod redis_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use std::hint::black_box;

use criterion::Criterion;
use http::{HeaderValue, Request, StatusCode};
use palisade::idempotency::{IdempotencyLayer, MemoryStore};
use palisade::redis::{RedisConnection, RedisIdempotencyStore};
use tower::ServiceExt;

fn router() -> Router {
    Router::new().route(
        "/orders",
        post(|body: bytes::Bytes| async move {
            black_box(body);
            (StatusCode::CREATED, "{\"order\":1}")
        }),
    )
}

fn order(key: HeaderValue) -> Request<Body> {
    Request::post("/orders")
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(Body::from(&b"{\"item\":42}"[..]))
        .expect("request")
}

fn fresh_key() -> HeaderValue {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    HeaderValue::try_from(format!("\"order-{n}\"")).expect("key")
}

async fn send(app: &Router, key: HeaderValue) {
    let response = app.clone().oneshot(order(key)).await.expect("infallible");
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "{:?}",
        response.headers()
    );
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    black_box(body);
}

/// The bare router, the router with the in-memory store and with the Redis store, made (and
/// the Redis connection opened) on `runtime`.
fn apps(
    runtime: &tokio::runtime::Runtime,
    server: &redis_support::RedisServer,
) -> (Router, Router, Router, RedisConnection) {
    runtime.block_on(async {
        let connection = RedisConnection::builder(server.url())
            .build()
            .expect("connection");
        let store = RedisIdempotencyStore::builder(connection.clone())
            .build()
            .expect("store");
        let redis_app = router().layer(IdempotencyLayer::builder().store(store).build().unwrap());
        let memory = MemoryStore::builder()
            .max_entries(std::num::NonZeroUsize::MAX)
            .max_bytes(usize::MAX)
            .build();
        let memory_app = router().layer(IdempotencyLayer::builder().store(memory).build().unwrap());
        // Opens the connection and loads the scripts here.
        send(&redis_app, fresh_key()).await;
        (router(), memory_app, redis_app, connection)
    })
}

/// A handler answering 1 KiB fresh for an hour: bare, behind an HTTP cache with the Redis
/// tier behind its in-memory one, and behind one with the Redis tier only.
async fn http_caches(server: &redis_support::RedisServer) -> (Router, Router, Router) {
    use axum::routing::get;
    use palisade::cache::{CacheMode, HttpCacheLayer};
    use palisade::redis::RedisCacheStore;
    let kib = bytes::Bytes::from(vec![b'x'; 1024]);
    let items = move || {
        let kib = kib.clone();
        Router::new().route(
            "/items",
            get(move || {
                let kib = kib.clone();
                async move { ([("cache-control", "max-age=3600")], kib) }
            }),
        )
    };
    let store = |prefix: &str| {
        let connection = RedisConnection::builder(server.url())
            .build()
            .expect("connection");
        RedisCacheStore::builder(connection)
            .prefix(prefix)
            .build()
            .expect("store")
    };
    let local = HttpCacheLayer::builder(CacheMode::Shared)
        .remote(store("bench:local:"))
        .build()
        .expect("cache");
    let remote_only = HttpCacheLayer::builder(CacheMode::Shared)
        .remote_only(store("bench:remote:"))
        .build()
        .expect("cache");
    (items(), items().layer(local), items().layer(remote_only))
}

async fn get_item(app: &Router) {
    let request = Request::get("/items")
        .header("host", "api.test")
        .body(Body::empty())
        .expect("request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    black_box(body);
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let workers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = runtime.block_on(redis_support::RedisServer::start());
    let mut criterion = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    let (bare, memory_app, redis_app, connection) = apps(&runtime, &server);
    let apps_here = [
        ("bare", &bare),
        ("memory", &memory_app),
        ("redis", &redis_app),
    ];

    let mut group = criterion.benchmark_group("idempotency_store/round_trip");
    let ping = runtime.block_on(async {
        redis::Client::open(server.url())
            .expect("client")
            .get_connection_manager()
            .await
            .expect("connection")
    });
    group.bench_function("ping", |b| {
        b.to_async(&runtime).iter(|| {
            let mut ping = ping.clone();
            async move {
                let pong: String = redis::cmd("PING")
                    .query_async(&mut ping)
                    .await
                    .expect("pong");
                black_box(pong);
            }
        });
    });
    group.finish();

    let mut group = criterion.benchmark_group("idempotency_store/first_request");
    for (name, app) in apps_here {
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| send(app, fresh_key()));
        });
    }
    group.finish();

    let mut group = criterion.benchmark_group("idempotency_store/replay");
    let replayed = HeaderValue::from_static("\"order-replayed\"");
    for (name, app) in apps_here {
        runtime.block_on(send(app, replayed.clone()));
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| send(app, replayed.clone()));
        });
    }
    group.finish();

    let mut group = criterion.benchmark_group("http_cache/hit");
    let caches = runtime.block_on(http_caches(&server));
    for (name, app) in [
        ("bare", &caches.0),
        ("local", &caches.1),
        ("remote_only", &caches.2),
    ] {
        runtime.block_on(get_item(app));
        // The publication lands on a task of its own.
        runtime.block_on(async { tokio::time::sleep(Duration::from_millis(50)).await });
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| get_item(app));
        });
    }
    group.finish();

    // Apps of their own on the 2-worker runtime: a connection's task runs on the runtime that
    // made it.
    let (bare, memory_app, redis_app, workers_connection) = apps(&workers, &server);
    let apps_there = [
        ("bare", &bare),
        ("memory", &memory_app),
        ("redis", &redis_app),
    ];
    let mut group = criterion.benchmark_group("idempotency_store/concurrent_64");
    for (name, app) in apps_there {
        group.bench_function(name, |b| {
            b.to_async(&workers).iter_custom(|iterations| async move {
                let started = Instant::now();
                for _ in 0..iterations {
                    let tasks: Vec<_> = (0..64)
                        .map(|_| {
                            let app = app.clone();
                            tokio::spawn(async move { send(&app, fresh_key()).await })
                        })
                        .collect();
                    for task in tasks {
                        task.await.expect("request");
                    }
                }
                started.elapsed()
            });
        });
    }
    group.finish();

    for (label, connection) in [
        ("current-thread runtime", &connection),
        ("2-worker runtime", &workers_connection),
    ] {
        let metrics = connection.metrics();
        println!(
            "{label}: claim {} round trips over {} calls (mean {:?}, max {:?}), complete {} over \
             {} (mean {:?}), claim errors {:?}",
            metrics.claim.round_trips,
            metrics.claim.calls,
            metrics.claim.mean_latency(),
            metrics.claim.max_latency,
            metrics.complete.round_trips,
            metrics.complete.calls,
            metrics.complete.mean_latency(),
            metrics.claim.errors,
        );
    }
    criterion.final_summary();
}
