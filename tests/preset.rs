//! The presets end to end over real sockets: the client preset around a hyper-util client,
//! against an axum server on 127.0.0.1 behind the server preset; every client stage removable;
//! the fallback answering the preset's rejections and failures.
//!
//! Real time, not paused (real I/O makes tokio's paused clock jump), so the assertions are about
//! what happened, with wide margins, never about how fast.

mod support;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade::Ratio;
use palisade::circuit_breaker::CircuitBreakerLayer;
use palisade::classify::StatusClassifier;
use palisade::error::{BoxError, Rejection};
use palisade::fallback::{FALLBACK_HEADER, Failure, FallbackLayer};
use palisade::http::{
    DeadlineHeader, GRPC_TIMEOUT, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, ReplayBody, ResponseBody,
};
use palisade::idempotency::AddIdempotencyKeyLayer;
use palisade::preset::{HttpClient, HttpClientLayer, HttpServerLayer};
use palisade::retry::{Backoff, HttpPolicy, RetryBudget, RetryLayer};
use palisade::throttle::ThrottleLayer;
use palisade::timeout::ServerTimeoutLayer;
use tower::{Layer, Service, ServiceExt};

type Body = Full<Bytes>;
type Upstream = Client<hyper_util::client::legacy::connect::HttpConnector, ReplayBody<Body>>;

/// What the server saw.
#[derive(Default)]
struct Seen {
    /// Requests to `/flaky`, and the keys and deadline headers they carried.
    flaky: AtomicUsize,
    orders: AtomicUsize,
    headers: std::sync::Mutex<Vec<HeaderMap>>,
}

/// The server behind the server preset: `/flaky` fails with 503 until its third request,
/// `/down` always answers 503, `/slow` takes 30 s, `/orders` counts the orders it places.
async fn serve() -> (SocketAddr, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route(
            "/flaky",
            get(
                |State(seen): State<Arc<Seen>>, request: Request| async move {
                    seen.headers.lock().unwrap().push(request.headers().clone());
                    if seen.flaky.fetch_add(1, Ordering::Relaxed) < 2 {
                        (StatusCode::SERVICE_UNAVAILABLE, "not yet")
                    } else {
                        (StatusCode::OK, "finally")
                    }
                },
            )
            .post(
                |State(seen): State<Arc<Seen>>, request: Request| async move {
                    seen.headers.lock().unwrap().push(request.headers().clone());
                    seen.flaky.fetch_add(1, Ordering::Relaxed);
                    (StatusCode::SERVICE_UNAVAILABLE, "not now")
                },
            ),
        )
        .route(
            "/down",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "down") }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "slow"
            }),
        )
        .route(
            "/orders",
            post(|State(seen): State<Arc<Seen>>| async move {
                let n = seen.orders.fetch_add(1, Ordering::Relaxed) + 1;
                (StatusCode::CREATED, format!("order {n}"))
            }),
        )
        .with_state(Arc::clone(&seen))
        .layer(HttpServerLayer::new().timeout(
            ServerTimeoutLayer::new(Duration::from_millis(500)).accept(DeadlineHeader::grpc()),
        ));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

fn upstream() -> Upstream {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Fast backoff so the tests run quickly; the preset's budget otherwise.
fn quick_retry() -> RetryLayer<HttpPolicy> {
    RetryLayer::new()
        .policy(HttpPolicy::new())
        .backoff(Backoff::new(Duration::from_millis(5), Duration::from_millis(20)).unwrap())
        .budget(RetryBudget::unlimited())
}

fn preset() -> HttpClientLayer {
    HttpClientLayer::new()
        .total_timeout(Duration::from_secs(5))
        .attempt_timeout(Duration::from_secs(2))
        .retry(quick_retry())
}

fn get_request(addr: SocketAddr, path: &str) -> http::Request<Body> {
    http::Request::get(format!("http://{addr}{path}"))
        .body(Body::default())
        .unwrap()
}

fn post_request(addr: SocketAddr, path: &str) -> http::Request<Body> {
    http::Request::post(format!("http://{addr}{path}"))
        .body(Body::from("one espresso"))
        .unwrap()
}

async fn send(
    client: &mut HttpClient<Upstream>,
    request: http::Request<Body>,
) -> Result<http::Response<Incoming>, BoxError> {
    client.ready().await?.call(request).await
}

async fn text(response: http::Response<Incoming>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn the_client_preset_retries_a_flaky_get_and_tells_the_server_its_deadline() {
    support::init_tracing();
    let (addr, seen) = serve().await;
    let mut client = preset().layer(upstream());
    let response = send(&mut client, get_request(addr, "/flaky"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(text(response).await, "finally");
    assert_eq!(seen.flaky.load(Ordering::Relaxed), 3);
    let headers = seen.headers.lock().unwrap();
    assert!(headers.iter().all(|h| h.contains_key(GRPC_TIMEOUT)));
    assert!(headers.iter().all(|h| !h.contains_key(IDEMPOTENCY_KEY)));
}

#[tokio::test]
async fn a_post_without_a_key_is_sent_once_and_with_keys_on_it_is_retried_with_one_key() {
    support::init_tracing();
    let (addr, seen) = serve().await;
    let mut once = preset().layer(upstream());
    let response = send(&mut once, post_request(addr, "/flaky")).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(seen.flaky.load(Ordering::Relaxed), 1, "not safe to repeat");

    let mut keyed = preset()
        .idempotency_keys(AddIdempotencyKeyLayer::new())
        .layer(upstream());
    let response = send(&mut keyed, post_request(addr, "/flaky"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(seen.flaky.load(Ordering::Relaxed), 4, "three attempts");
    let headers = seen.headers.lock().unwrap();
    let keys: Vec<_> = headers[1..]
        .iter()
        .map(|h| h[IDEMPOTENCY_KEY].clone())
        .collect();
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|key| *key == keys[0]), "{keys:?}");
}

#[tokio::test]
async fn the_server_preset_runs_a_keyed_post_once_and_replays_it() {
    support::init_tracing();
    let (addr, seen) = serve().await;
    let mut client = preset().layer(upstream());
    let mut responses = Vec::new();
    for _ in 0..2 {
        let mut request = post_request(addr, "/orders");
        request
            .headers_mut()
            .insert(IDEMPOTENCY_KEY, "\"order-7\"".parse().unwrap());
        responses.push(send(&mut client, request).await.unwrap());
    }
    assert_eq!(seen.orders.load(Ordering::Relaxed), 1);
    let replayed = responses.pop().unwrap();
    assert_eq!(replayed.headers()[IDEMPOTENT_REPLAYED], "true");
    assert_eq!(text(replayed).await, "order 1");
    assert_eq!(text(responses.pop().unwrap()).await, "order 1");
}

#[tokio::test]
async fn the_server_preset_cuts_off_a_slow_handler_with_a_problem() {
    support::init_tracing();
    let (addr, _) = serve().await;
    // The server gives handlers 500 ms, far less than the client's limits.
    let mut client = preset().without_retry().layer(upstream());
    let response = send(&mut client, get_request(addr, "/slow")).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response.headers()[http::header::CONTENT_TYPE],
        "application/problem+json"
    );
    assert!(
        text(response)
            .await
            .contains("request timed out after 500ms")
    );
}

#[tokio::test]
async fn the_server_preset_honours_a_shorter_caller_deadline() {
    support::init_tracing();
    let (addr, _) = serve().await;
    let mut client = preset()
        .without_retry()
        .without_propagation()
        .layer(upstream());
    let mut request = get_request(addr, "/slow");
    request
        .headers_mut()
        .insert(GRPC_TIMEOUT, "50m".parse().unwrap());
    let response = send(&mut client, request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = text(response).await;
    assert!(
        body.contains("request deadline exceeded after 50ms"),
        "the caller's 50 ms, not the server's 500: {body}"
    );
}

#[tokio::test]
async fn a_total_timeout_shorter_than_the_server_s_ends_the_call_first() {
    support::init_tracing();
    let (addr, _) = serve().await;
    let mut hurried = preset()
        .without_retry()
        .total_timeout(Duration::from_millis(100))
        .layer(upstream());
    let err = send(&mut hurried, get_request(addr, "/slow"))
        .await
        .unwrap_err();
    // The attempt timeout inside sees the published 100 ms deadline and fires at it.
    assert!(
        matches!(
            Rejection::find(&*err),
            Some(Rejection::TimedOut(t)) if t.after() <= Duration::from_millis(100)
        ),
        "{err}"
    );
}

#[tokio::test]
async fn the_throttle_sheds_a_dependency_that_keeps_failing_and_says_when_to_come_back() {
    support::init_tracing();
    let (addr, _) = serve().await;
    let throttle = ThrottleLayer::builder()
        .classifier(StatusClassifier::new())
        .shed_after(NonZeroU32::new(3).unwrap())
        .probe_interval(Duration::from_secs(10))
        .probe_jitter(Ratio::ZERO)
        .build()
        .unwrap();
    let layer = preset().throttle(throttle);
    let handle = layer.throttle_handle().unwrap();
    let mut client = layer.layer(upstream());
    // Three attempts of the first call all fail: the third failure in a row starts shedding.
    let response = send(&mut client, get_request(addr, "/down")).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(handle.state(), palisade::throttle::ThrottleState::Shedding);
    // The next call is refused at once, with the probe slot as its retry-after.
    let err = send(&mut client, get_request(addr, "/down"))
        .await
        .unwrap_err();
    let Some(Rejection::Throttled(throttled)) = Rejection::find(&*err) else {
        panic!("{err}")
    };
    assert!(throttled.retry_after().unwrap() > Duration::from_secs(9));
    assert_eq!(Rejection::find(&*err).unwrap().status(), 503);
}

#[tokio::test]
async fn the_breaker_can_guard_instead() {
    support::init_tracing();
    let (addr, _) = serve().await;
    let breaker = CircuitBreakerLayer::builder()
        .classifier(StatusClassifier::new())
        .consecutive_failures(NonZeroU32::new(2).unwrap())
        .build()
        .unwrap();
    let layer = preset().breaker(breaker);
    let handle = layer.breaker_handle().unwrap();
    assert!(layer.throttle_handle().is_none());
    let mut client = layer.layer(upstream());
    let _ = send(&mut client, get_request(addr, "/down")).await;
    assert_eq!(handle.state(), palisade::circuit_breaker::State::Open);
    let err = send(&mut client, get_request(addr, "/down"))
        .await
        .unwrap_err();
    assert!(matches!(
        Rejection::find(&*err),
        Some(Rejection::CircuitOpen(_))
    ));
}

#[tokio::test]
async fn every_client_stage_can_be_removed() {
    support::init_tracing();
    let (addr, seen) = serve().await;
    let mut bare = HttpClientLayer::new()
        .without_total_timeout()
        .without_retry()
        .without_guard()
        .without_attempt_timeout()
        .without_propagation()
        .layer(upstream());
    for _ in 0..30 {
        let response = send(&mut bare, get_request(addr, "/down")).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    // No guard sheds, nothing retries; the server still answers the slow route itself.
    let response = send(&mut bare, get_request(addr, "/flaky")).await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "sent once"
    );
    assert_eq!(seen.flaky.load(Ordering::Relaxed), 1);
    assert!(!seen.headers.lock().unwrap()[0].contains_key(GRPC_TIMEOUT));
}

#[tokio::test]
async fn a_fallback_around_the_preset_answers_its_rejections_and_failures() {
    support::init_tracing();
    let (addr, _) = serve().await;
    let throttle = ThrottleLayer::builder()
        .classifier(StatusClassifier::new())
        .shed_after(NonZeroU32::new(3).unwrap())
        .probe_interval(Duration::from_secs(10))
        .build()
        .unwrap();
    let answer = |failure: Failure<Incoming>| {
        let text = format!("cached, because {:?}", failure.reason);
        http::Response::new(ResponseBody::full(Bytes::from(text)))
    };
    // On rejections only: the 503 the server sends is passed on, the throttle's refusal is
    // answered.
    let fallback = FallbackLayer::sync(answer);
    let mut client = fallback
        .clone()
        .layer(preset().throttle(throttle.clone()).layer(upstream()));
    let failed = client
        .ready()
        .await
        .unwrap()
        .call(get_request(addr, "/down"))
        .await
        .unwrap();
    assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(!failed.headers().contains_key(FALLBACK_HEADER));
    let answered = client
        .ready()
        .await
        .unwrap()
        .call(get_request(addr, "/down"))
        .await
        .unwrap();
    assert_eq!(answered.status(), StatusCode::OK);
    assert_eq!(answered.headers()[FALLBACK_HEADER], "throttled");
    assert_eq!(fallback.answered(), 1);

    // On failures too: a fresh throttle, and the server's own 503 is answered.
    let on_failures = FallbackLayer::sync(answer).on_failures(StatusClassifier::new());
    let mut client = on_failures
        .clone()
        .layer(preset().without_guard().layer(upstream()));
    let answered = client
        .ready()
        .await
        .unwrap()
        .call(get_request(addr, "/down"))
        .await
        .unwrap();
    assert_eq!(answered.headers()[FALLBACK_HEADER], "status-503");
    let body = answered.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "cached, because Status(503)");
    assert_eq!(on_failures.answered(), 1);
}
