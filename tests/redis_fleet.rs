//! Two instances of an axum service on 127.0.0.1 sharing one real `redis-server` through the
//! Redis idempotency store (feature `redis`): a request runs once in the whole fleet, a stalled
//! holder cannot overwrite its successor, and every Redis fault gets the documented answer in
//! bounded time without running a request twice.
//!
//! Real time (real sockets, Redis's own clock); assertions are about what happened.

mod redis_support;
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade::http::IDEMPOTENCY_KEY;
use palisade::idempotency::{IdempotencyLayer, IdentityHeader, StoreFailure};
use palisade::redis::{RedisConnection, RedisIdempotencyStore};
use redis_support::RedisServer;

/// The fleet's handler runs (shared by both instances) and how long the first run takes.
#[derive(Clone)]
struct Handler {
    runs: Arc<AtomicUsize>,
    first_run_takes: Duration,
    instance: &'static str,
}

/// One instance: `POST /orders` → 201 `order <run> by <instance>`, behind the idempotency
/// layer on the shared Redis.
async fn instance(
    redis: &RedisServer,
    handler: Handler,
    configure: impl FnOnce(
        palisade::idempotency::IdempotencyBuilder<RedisIdempotencyStore>,
    ) -> palisade::idempotency::IdempotencyBuilder<RedisIdempotencyStore>,
) -> SocketAddr {
    async fn order(State(handler): State<Handler>) -> (StatusCode, String) {
        let run = handler.runs.fetch_add(1, Ordering::SeqCst) + 1;
        if run == 1 {
            tokio::time::sleep(handler.first_run_takes).await;
        }
        (
            StatusCode::CREATED,
            format!("order {run} by {}", handler.instance),
        )
    }
    let connection = RedisConnection::builder(redis.url())
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let store = RedisIdempotencyStore::builder(connection).build().unwrap();
    let builder = IdempotencyLayer::builder()
        .store(store)
        .identity(IdentityHeader::new(http::HeaderName::from_static(
            "x-tenant",
        )));
    let layer = configure(builder).build().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/orders", post(order))
        .layer(layer)
        .with_state(handler);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn handler(runs: &Arc<AtomicUsize>, first_run_takes: Duration, instance: &'static str) -> Handler {
    Handler {
        runs: Arc::clone(runs),
        first_run_takes,
        instance,
    }
}

type Body = Full<Bytes>;

#[derive(Debug)]
struct Answer {
    status: StatusCode,
    replayed: bool,
    problem_type: Option<String>,
    body: Bytes,
}

async fn send(addr: SocketAddr, key: &str) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let request = http::Request::post(format!("http://{addr}/orders"))
        // Behind a load balancer every instance sees the public host: records are keyed by it.
        .header(http::header::HOST, "orders.example")
        .header(IDEMPOTENCY_KEY, format!("\"{key}\""))
        .header("x-tenant", "acme")
        .body(Full::new(Bytes::from_static(b"{\"item\":42}")))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status();
    let replayed = response.headers().contains_key("idempotent-replayed");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let problem_type = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|problem| problem["type"].as_str().map(str::to_owned));
    Answer {
        status,
        replayed,
        problem_type,
        body,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_duplicates_split_across_two_instances_run_the_handler_once() {
    support::init_tracing();
    let redis = RedisServer::start().await;
    let runs = Arc::new(AtomicUsize::new(0));
    let slow = Duration::from_millis(300);
    let a = instance(&redis, handler(&runs, slow, "a"), |b| b).await;
    let b = instance(&redis, handler(&runs, slow, "b"), |b| b).await;
    let start = Arc::new(tokio::sync::Barrier::new(100));
    let tasks: Vec<_> = (0..100)
        .map(|n| {
            let start = Arc::clone(&start);
            let addr = if n % 2 == 0 { a } else { b };
            tokio::spawn(async move {
                start.wait().await;
                send(addr, "fleet-1").await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "once in the fleet: {answers:?}"
    );
    let original = answers
        .iter()
        .find(|answer| answer.status == StatusCode::CREATED && !answer.replayed)
        .expect("one request ran");
    for answer in &answers {
        match answer.status {
            StatusCode::CONFLICT => assert_eq!(
                answer.problem_type.as_deref(),
                Some("urn:palisade:idempotency-key-in-flight"),
                "{answer:?}"
            ),
            StatusCode::CREATED => assert_eq!(answer.body, original.body),
            _ => panic!("unexpected answer {answer:?}"),
        }
    }
    // Afterwards, both instances replay the one response.
    for addr in [a, b] {
        let again = send(addr, "fleet-1").await;
        assert_eq!((again.status, again.replayed), (StatusCode::CREATED, true));
        assert_eq!(again.body, original.body);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_stalled_past_its_lease_cannot_overwrite_the_instance_that_took_over() {
    support::init_tracing();
    let redis = RedisServer::start().await;
    let runs = Arc::new(AtomicUsize::new(0));
    let lease = Duration::from_secs(1);
    // The first run (on instance a) stalls for 2.5 s, past its 1 s lease.
    let stall = Duration::from_millis(2500);
    let a = instance(&redis, handler(&runs, stall, "a"), |b| b.lease(lease)).await;
    let b = instance(&redis, handler(&runs, stall, "b"), |b| b.lease(lease)).await;
    let stalled = tokio::spawn(async move { send(a, "fenced").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let early = send(b, "fenced").await;
    assert_eq!(
        early.status,
        StatusCode::CONFLICT,
        "in flight while the lease holds"
    );
    tokio::time::sleep(lease).await;
    let successor = send(b, "fenced").await;
    assert_eq!(successor.status, StatusCode::CREATED);
    assert_eq!(
        successor.body, "order 2 by b",
        "the lease ended: b took the key over"
    );
    let stalled = stalled.await.unwrap();
    assert_eq!(
        stalled.body, "order 1 by a",
        "the stalled client still gets its own answer"
    );
    for addr in [a, b] {
        let replay = send(addr, "fenced").await;
        assert!(replay.replayed);
        assert_eq!(
            replay.body, "order 2 by b",
            "the stored response is the successor's: a's late completion was refused"
        );
    }
}

#[tokio::test]
async fn with_redis_down_a_keyed_request_gets_503_in_bounded_time_and_never_runs() {
    support::init_tracing();
    let mut redis = RedisServer::start().await;
    let runs = Arc::new(AtomicUsize::new(0));
    let addr = instance(&redis, handler(&runs, Duration::ZERO, "a"), |b| b).await;
    assert_eq!(send(addr, "before").await.status, StatusCode::CREATED);
    redis.kill();
    for n in 0..3 {
        let started = Instant::now();
        let answer = send(addr, &format!("down-{n}")).await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{answer:?}");
        assert_eq!(
            answer.problem_type.as_deref(),
            Some("urn:palisade:idempotency-store-unavailable")
        );
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "fail closed: nothing ran");
}

#[tokio::test]
async fn failing_open_runs_the_request_unprotected_while_redis_is_down() {
    support::init_tracing();
    let mut redis = RedisServer::start().await;
    let runs = Arc::new(AtomicUsize::new(0));
    let addr = instance(&redis, handler(&runs, Duration::ZERO, "a"), |b| {
        b.store_failure(StoreFailure::FailOpen)
    })
    .await;
    redis.kill();
    let started = Instant::now();
    let answer = send(addr, "open").await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_claim_then_restarted_answers_503_then_serves_again() {
    support::init_tracing();
    let mut redis = RedisServer::start().await;
    let runs = Arc::new(AtomicUsize::new(0));
    let addr = instance(&redis, handler(&runs, Duration::ZERO, "a"), |b| b).await;
    assert_eq!(send(addr, "warm-up").await.status, StatusCode::CREATED);
    // Redis stops answering; the claim is sent and waits; Redis dies under it.
    let mut admin = redis.admin().await;
    tokio::spawn(async move {
        let _ = redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg("5")
            .query_async::<()>(&mut admin)
            .await;
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let request = tokio::spawn(async move {
        let started = Instant::now();
        (send(addr, "mid-claim").await, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    redis.kill();
    let (answer, took) = request.await.unwrap();
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{answer:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the request did not run");

    redis.restart().await;
    let started = Instant::now();
    let answer = loop {
        let answer = send(addr, "mid-claim").await;
        if answer.status != StatusCode::SERVICE_UNAVAILABLE {
            break answer;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never recovered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 2, "the retry ran, once");
    let replay = send(addr, "mid-claim").await;
    assert!(replay.replayed, "and is replayed from the restarted Redis");
}
