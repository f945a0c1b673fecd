//! The idempotency layer on a real axum server on 127.0.0.1: concurrent duplicates, and a
//! client stack (key ⊃ body buffer ⊃ retry ⊃ hyper) whose retried POST runs once.
//!
//! Real time (real sockets); waits are short and assertions are about what happened.

mod support;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade::http::{IDEMPOTENCY_KEY, ReplayBody};
use palisade::idempotency::{AddIdempotencyKeyLayer, IdempotencyLayer, InFlight};
use palisade::retry::{Backoff, BufferBodyLayer, HttpPolicy, Jitter, RetryBudget, RetryLayer};
use tower::{ServiceBuilder, ServiceExt};

/// Handler runs, and the `Idempotency-Key` of every request that reached the server.
#[derive(Clone, Default)]
struct Server {
    runs: Arc<AtomicUsize>,
    keys: Arc<Mutex<Vec<String>>>,
    /// Whether the next response should be lost on its way back (replaced with a 502).
    lose_next: Arc<AtomicBool>,
}

/// `POST /orders`: sleeps 100 ms, then 201 `order <run>`. Behind the idempotency layer, and
/// behind that a middleware that records keys and can lose a response after the handler ran.
async fn serve(server: Server, layer: IdempotencyLayer) -> SocketAddr {
    async fn order(State(server): State<Server>) -> (StatusCode, String) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let run = server.runs.fetch_add(1, Ordering::SeqCst) + 1;
        (StatusCode::CREATED, format!("order {run}"))
    }
    async fn network(State(server): State<Server>, request: Request, next: Next) -> Response {
        if let Some(key) = request.headers().get(IDEMPOTENCY_KEY) {
            let key = key.to_str().unwrap().to_owned();
            server.keys.lock().unwrap().push(key);
        }
        let response = next.run(request).await;
        if server.lose_next.swap(false, Ordering::SeqCst) {
            return (StatusCode::BAD_GATEWAY, "the response was lost").into_response();
        }
        response
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/orders", post(order))
        .layer(layer)
        .layer(from_fn_with_state(server.clone(), network))
        .with_state(server);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

type Body = Full<Bytes>;

fn order(addr: SocketAddr, key: Option<&str>) -> http::Request<Body> {
    let mut builder = http::Request::post(format!("http://{addr}/orders"));
    if let Some(key) = key {
        builder = builder.header(IDEMPOTENCY_KEY, key);
    }
    builder
        .body(Full::new(Bytes::from_static(b"{\"item\":42}")))
        .unwrap()
}

/// Sends `count` copies of one keyed order at once; returns each (status, replayed, body).
async fn stampede(addr: SocketAddr, count: usize) -> Vec<(StatusCode, bool, Bytes)> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let start = Arc::new(tokio::sync::Barrier::new(count));
    let tasks: Vec<_> = (0..count)
        .map(|_| {
            let client = client.clone();
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                start.wait().await;
                let response = client
                    .request(order(addr, Some("\"stampede-1\"")))
                    .await
                    .unwrap();
                let status = response.status();
                let replayed = response.headers().contains_key("idempotent-replayed");
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (status, replayed, body)
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_requests_with_one_key_run_the_handler_once() {
    support::init_tracing();
    let server = Server::default();
    let addr = serve(server.clone(), IdempotencyLayer::new()).await;
    let answers = stampede(addr, 50).await;
    assert_eq!(
        server.runs.load(Ordering::SeqCst),
        1,
        "exactly one execution"
    );
    let originals: Vec<_> = answers
        .iter()
        .filter(|(status, replayed, _)| *status == StatusCode::CREATED && !replayed)
        .collect();
    assert_eq!(originals.len(), 1, "one request ran: {answers:?}");
    for (status, replayed, body) in &answers {
        match *status {
            StatusCode::CONFLICT => {}
            StatusCode::CREATED => assert_eq!(body, "order 1", "replayed {replayed}"),
            other => panic!("unexpected {other}: {answers:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_waiting_duplicates_all_get_the_one_response() {
    support::init_tracing();
    let server = Server::default();
    let layer = IdempotencyLayer::builder()
        .in_flight(InFlight::Wait(Duration::from_secs(10)))
        .build()
        .unwrap();
    let addr = serve(server.clone(), layer).await;
    let answers = stampede(addr, 50).await;
    assert_eq!(server.runs.load(Ordering::SeqCst), 1);
    assert!(
        answers
            .iter()
            .all(|(status, _, body)| *status == StatusCode::CREATED && body == "order 1"),
        "{answers:?}"
    );
    assert_eq!(
        answers.iter().filter(|(_, replayed, _)| *replayed).count(),
        49
    );
}

#[tokio::test]
async fn a_post_retried_by_the_client_after_a_lost_response_runs_once() {
    support::init_tracing();
    let server = Server::default();
    let addr = serve(server.clone(), IdempotencyLayer::new()).await;
    // The client: a key for every POST ⊃ body buffering ⊃ HTTP retries ⊃ hyper.
    let http = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Body>>();
    let client = ServiceBuilder::new()
        .layer(AddIdempotencyKeyLayer::new())
        .layer(BufferBodyLayer::default())
        .layer(
            RetryLayer::new()
                .policy(HttpPolicy::new())
                .max_attempts(NonZeroU32::new(3).unwrap())
                .backoff(
                    Backoff::new(Duration::from_millis(10), Duration::from_millis(100))
                        .unwrap()
                        .jitter(Jitter::None),
                )
                .budget(RetryBudget::unlimited()),
        )
        .service(http);

    // The first response is lost after the order was placed.
    server.lose_next.store(true, Ordering::SeqCst);
    let response = client.oneshot(order(addr, None)).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["idempotent-replayed"], "true");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "order 1");
    assert_eq!(server.runs.load(Ordering::SeqCst), 1, "placed once");
    let keys = server.keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 2, "two attempts reached the server");
    assert_eq!(keys[0], keys[1], "with the same key");
    assert!(
        keys[0].starts_with('"') && keys[0].len() == 38,
        "a quoted UUID: {}",
        keys[0]
    );
}

#[tokio::test]
async fn without_the_key_layer_the_same_retry_would_not_be_sent() {
    support::init_tracing();
    // The control: the HTTP retry policy does not repeat a POST without a key, so the lost
    // response reaches the caller and the order is not placed twice either.
    let server = Server::default();
    let addr = serve(server.clone(), IdempotencyLayer::new()).await;
    let http = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Body>>();
    let client = ServiceBuilder::new()
        .layer(BufferBodyLayer::default())
        .layer(RetryLayer::new().policy(HttpPolicy::new()))
        .service(http);
    server.lose_next.store(true, Ordering::SeqCst);
    let response = client.oneshot(order(addr, None)).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(server.runs.load(Ordering::SeqCst), 1);
    assert!(server.keys.lock().unwrap().is_empty());
}
