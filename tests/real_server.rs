//! End to end over real sockets: a hyper-util client stack with the timeout and deadline
//! propagation, against an axum server on 127.0.0.1 with the server-side timeout.
//!
//! Real time, not paused (real I/O makes tokio's paused clock jump), so the assertions are about
//! what happened, with wide margins, never about how fast.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::routing::get;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use palisade::deadline::Deadline;
use palisade::error::{BoxError, Rejection};
use palisade::http::{DeadlineHeader, GRPC_TIMEOUT};
use palisade::timeout::{PropagateDeadlineLayer, ServerTimeoutLayer, TimeoutKind, TimeoutLayer};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// The client stack: each call gets at most `limit` (published as its deadline) and the server
/// is told what is left in `grpc-timeout`.
fn client_stack(
    limit: Duration,
) -> impl Service<
    http::Request<Empty<Bytes>>,
    Response = http::Response<Incoming>,
    Error = BoxError,
    Future: Send,
> + Clone
+ Send
+ 'static {
    ServiceBuilder::new()
        .layer(TimeoutLayer::new(limit).publish_deadline(true))
        .layer(PropagateDeadlineLayer::new(DeadlineHeader::grpc()))
        .service(http_client())
}

fn request(addr: SocketAddr, path: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(format!("http://{addr}{path}"))
        .body(Empty::new())
        .unwrap()
}

/// What `/budget` saw: the `grpc-timeout` header and the deadline the server published.
fn budget(req: &Request) -> String {
    let header = req
        .headers()
        .get(GRPC_TIMEOUT)
        .map_or("none", |v| v.to_str().unwrap_or("?"))
        .to_owned();
    let remaining = req
        .extensions()
        .get::<Deadline>()
        .map_or(u128::MAX, |d| d.remaining().as_millis());
    format!("{header} {remaining}")
}

async fn serve() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/fast", get(|| async { "fast" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "slow"
            }),
        )
        .route("/budget", get(|req: Request| async move { budget(&req) }))
        .route(
            "/chain",
            get(move |req: Request| async move {
                // A handler's own outgoing call inherits the deadline it was given.
                let mut downstream = request(addr, "/budget");
                if let Some(deadline) = req.extensions().get::<Deadline>() {
                    downstream.extensions_mut().insert(*deadline);
                }
                let client = client_stack(Duration::from_secs(60));
                let response = client.oneshot(downstream).await.unwrap();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                String::from_utf8(body.to_vec()).unwrap()
            }),
        )
        .layer(ServerTimeoutLayer::new(Duration::from_secs(3)).accept(DeadlineHeader::grpc()));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn body_text(response: http::Response<Incoming>) -> String {
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// Parses `"<header> <remaining ms>"` into the header's duration and the remaining time.
fn parse_budget(text: &str) -> (Duration, u128) {
    let (header, remaining) = text.split_once(' ').unwrap();
    let header = DeadlineHeader::grpc().parse(header.as_bytes()).unwrap();
    (header, remaining.parse().unwrap())
}

#[tokio::test]
async fn a_fast_call_passes_through_both_stacks() {
    support::init_tracing();
    let addr = serve().await;
    let response = client_stack(Duration::from_secs(5))
        .oneshot(request(addr, "/fast"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response).await, "fast");
}

#[tokio::test]
async fn the_server_sees_the_clients_remaining_time_capped_by_its_own_limit() {
    support::init_tracing();
    let addr = serve().await;
    let response = client_stack(Duration::from_secs(2))
        .oneshot(request(addr, "/budget"))
        .await
        .unwrap();
    let (header, remaining) = parse_budget(&body_text(response).await);
    assert!(
        header <= Duration::from_secs(2) && header > Duration::from_secs(1),
        "{header:?}"
    );
    assert!(remaining <= 2000 && remaining > 1000, "{remaining}");

    // A caller with more time than the server allows is capped at the server's 3 s.
    let response = client_stack(Duration::from_secs(60))
        .oneshot(request(addr, "/budget"))
        .await
        .unwrap();
    let (header, remaining) = parse_budget(&body_text(response).await);
    assert!(header > Duration::from_secs(59), "{header:?}");
    assert!(remaining <= 3000 && remaining > 2000, "{remaining}");
}

#[tokio::test]
async fn a_handlers_downstream_call_inherits_the_callers_deadline() {
    support::init_tracing();
    let addr = serve().await;
    let response = client_stack(Duration::from_secs(2))
        .oneshot(request(addr, "/chain"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (header, remaining) = parse_budget(&body_text(response).await);
    // The handler's own client allows 60 s, but the caller only had 2 s: that is what travels.
    assert!(header <= Duration::from_secs(2), "{header:?}");
    assert!(remaining <= 2000, "{remaining}");
}

#[tokio::test]
async fn a_handler_overrunning_the_callers_deadline_is_cut_off_by_the_server() {
    support::init_tracing();
    let addr = serve().await;
    let start = Instant::now();
    // The client allows 1 s; the server cuts the handler at what the caller said it had left,
    // so the answer is the server's 503, not a client-side timeout.
    let mut client = ServiceBuilder::new()
        .layer(PropagateDeadlineLayer::new(DeadlineHeader::grpc()))
        .service(http_client());
    let mut req = request(addr, "/slow");
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_millis(500)));
    let response = client.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response.headers()[http::header::CONTENT_TYPE],
        "application/problem+json"
    );
    let problem: serde_json::Value = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(problem["type"], "urn:palisade:timed-out");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "not the 30 s handler"
    );
}

#[tokio::test]
async fn a_client_timeout_shorter_than_the_server_gives_a_timed_out_error() {
    support::init_tracing();
    let addr = serve().await;
    let err = client_stack(Duration::from_millis(200))
        .oneshot(request(addr, "/slow"))
        .await
        .unwrap_err();
    match Rejection::find(&*err) {
        Some(Rejection::TimedOut(timed_out)) => {
            assert_eq!(timed_out.kind(), TimeoutKind::Limit);
            assert_eq!(timed_out.after(), Duration::from_millis(200));
        }
        other => panic!("expected a client-side timeout, got {other:?}: {err}"),
    }
}
