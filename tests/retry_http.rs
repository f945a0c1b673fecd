//! HTTP retries end to end: a hyper-util client stack (body buffering, the HTTP retry policy)
//! against an axum server on 127.0.0.1 that fails, pushes back, and counts what it receives.
//!
//! Real time (real sockets); waits are kept short and assertions are about what happened.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::get;
use http::{HeaderMap, Method, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade::error::BoxError;
use palisade::retry::{
    Backoff, BufferBodyLayer, HttpPolicy, IDEMPOTENCY_KEY, Jitter, ReplayBody, RetryBudget,
    RetryLayer,
};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};

/// What the server received, per route: the bodies of each request, in order.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<HashMap<String, Vec<Bytes>>>>);

impl Seen {
    /// Records one request and returns how many `name` had before it.
    fn record(&self, name: &str, body: Bytes) -> usize {
        let mut seen = self.0.lock().unwrap();
        let bodies = seen.entry(name.to_owned()).or_default();
        bodies.push(body);
        bodies.len() - 1
    }

    fn bodies(&self, name: &str) -> Vec<Bytes> {
        self.0
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .unwrap_or_default()
    }
}

/// `/fail/{n}/{name}`: answers 500 to the first `n` requests named `name`, then 200 with the
/// body it received. `/busy/{name}`: answers 503 with `Retry-After: 1` once, then 200.
async fn serve(seen: Seen) -> SocketAddr {
    async fn fail(
        State(seen): State<Seen>,
        Path((n, name)): Path<(usize, String)>,
        body: Bytes,
    ) -> (StatusCode, Bytes) {
        if seen.record(&name, body.clone()) < n {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Bytes::from_static(b"not yet"),
            )
        } else {
            (StatusCode::OK, body)
        }
    }
    async fn busy(State(seen): State<Seen>, Path(name): Path<String>) -> (StatusCode, HeaderMap) {
        let mut headers = HeaderMap::new();
        if seen.record(&name, Bytes::new()) == 0 {
            headers.insert(header::RETRY_AFTER, "1".parse().unwrap());
            (StatusCode::SERVICE_UNAVAILABLE, headers)
        } else {
            (StatusCode::OK, headers)
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/fail/{n}/{name}", get(fail).post(fail).put(fail))
        .route("/busy/{name}", get(busy))
        .with_state(seen);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

type Body = Full<Bytes>;

/// Body buffering (16 bytes kept at most) ⊃ HTTP retry (4 attempts, 10 ms exact waits) ⊃
/// hyper-util's client.
fn client()
-> impl Service<http::Request<Body>, Response = http::Response<Incoming>, Error = BoxError, Future: Send>
+ Clone {
    let http = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Body>>();
    let backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(100))
        .unwrap()
        .jitter(Jitter::None);
    ServiceBuilder::new()
        .layer(BufferBodyLayer::new(16))
        .layer(
            RetryLayer::new()
                .policy(HttpPolicy::new())
                .max_attempts(NonZeroU32::new(4).unwrap())
                .backoff(backoff)
                .budget(RetryBudget::unlimited()),
        )
        .service(http)
}

fn request(
    method: Method,
    addr: SocketAddr,
    path: &str,
    body: &'static str,
) -> http::Request<Body> {
    http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

async fn send(request: http::Request<Body>) -> (StatusCode, Bytes) {
    let response = client().oneshot(request).await.unwrap();
    let status = response.status();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn a_get_that_fails_twice_is_retried_to_success() {
    support::init_tracing();
    let seen = Seen::default();
    let addr = serve(seen.clone()).await;
    let (status, _) = send(request(Method::GET, addr, "/fail/2/get", "")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen.bodies("get").len(), 3);
}

#[tokio::test]
async fn a_503_with_retry_after_is_retried_after_that_long() {
    support::init_tracing();
    let seen = Seen::default();
    let addr = serve(seen.clone()).await;
    let start = Instant::now();
    let (status, _) = send(request(Method::GET, addr, "/busy/b", "")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen.bodies("b").len(), 2);
    assert!(
        start.elapsed() >= Duration::from_millis(990),
        "waited as told, not the 10 ms backoff: {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_post_without_an_idempotency_key_is_sent_once() {
    support::init_tracing();
    let seen = Seen::default();
    let addr = serve(seen.clone()).await;
    let (status, _) = send(request(Method::POST, addr, "/fail/1/plain", "order")).await;
    assert_eq!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "the real failure comes back"
    );
    assert_eq!(seen.bodies("plain").len(), 1, "not repeated");
}

#[tokio::test]
async fn a_post_with_an_idempotency_key_is_retried_with_the_same_body() {
    support::init_tracing();
    let seen = Seen::default();
    let addr = serve(seen.clone()).await;
    let mut req = request(Method::POST, addr, "/fail/1/keyed", "order #7");
    req.headers_mut()
        .insert(IDEMPOTENCY_KEY, "k-123".parse().unwrap());
    let (status, echoed) = send(req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echoed, "order #7");
    assert_eq!(
        seen.bodies("keyed"),
        ["order #7", "order #7"],
        "byte for byte, twice"
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_sent_once_and_arrives_whole() {
    support::init_tracing();
    let seen = Seen::default();
    let addr = serve(seen.clone()).await;
    let big = "this body is longer than sixteen bytes";
    let (status, _) = send(request(Method::PUT, addr, "/fail/1/big", big)).await;
    assert_eq!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "not retried: it was not kept"
    );
    assert_eq!(seen.bodies("big"), [big], "sent once, nothing lost");
}
