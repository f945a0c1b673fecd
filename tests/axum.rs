//! The axum integration (feature `axum`) in a real `Router`: palisade's errors become their
//! problem+json answers through `HandleErrorLayer::new(handle_error)`, a handler returns a
//! rejection or a breaker's error as its own error, and an error that is no rejection gets a
//! `500` that does not repeat it.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::extract::State;
use axum::routing::get;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use palisade::circuit_breaker::{CircuitBreakerError, CircuitBreakerLayer};
use palisade::error::BoxError;
use palisade::http::Problem;
use palisade::timeout::TimeoutLayer;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

async fn answer(app: Router, path: &str) -> (StatusCode, Option<String>, serde_json::Value) {
    let request = Request::get(path).body(Body::empty()).unwrap();
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (status, content_type, json)
}

#[tokio::test(start_paused = true)]
async fn handle_error_answers_a_timeout_with_its_problem() {
    let app: Router = Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                "done"
            }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(palisade::http::handle_error))
                .layer(TimeoutLayer::new(Duration::from_secs(2))),
        );
    let (status, content_type, json) = answer(app, "/slow").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    assert_eq!(json["status"], 504);
    assert_eq!(json["type"], "urn:palisade:timed-out");
}

#[tokio::test(start_paused = true)]
async fn an_error_that_is_no_rejection_is_a_500_that_does_not_repeat_it() {
    let failing = tower::service_fn(|_: Request<Body>| async {
        Err::<axum::response::Response, BoxError>("db password is hunter2".into())
    });
    let app: Router = Router::new().route_service(
        "/broken",
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(palisade::http::handle_error))
            .service(failing),
    );
    let (status, _, json) = answer(app, "/broken").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!json.to_string().contains("hunter2"), "{json}");
}

type Upstream = tower::util::BoxCloneSyncService<(), &'static str, CircuitBreakerError>;

#[tokio::test(start_paused = true)]
async fn a_handler_returns_a_breakers_error_or_a_problem_as_its_own() {
    let breaker = CircuitBreakerLayer::builder()
        .name("inventory")
        .build()
        .unwrap();
    breaker.handle().isolate();
    let upstream: Upstream = tower::util::BoxCloneSyncService::new(
        breaker.layer(tower::service_fn(|()| async { Ok::<_, BoxError>("stock") })),
    );
    async fn stock(
        State(mut upstream): State<Upstream>,
    ) -> Result<&'static str, CircuitBreakerError> {
        upstream.ready().await?.call(()).await
    }
    async fn problem(State(mut upstream): State<Upstream>) -> Problem {
        let error = upstream.ready().await.unwrap().call(()).await.unwrap_err();
        error.as_open().expect("the breaker is isolated").problem()
    }
    let app: Router = Router::new()
        .route("/stock", get(stock))
        .route("/problem", get(problem))
        .with_state(upstream);
    let (status, _, json) = answer(app.clone(), "/stock").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json["type"], "urn:palisade:circuit-open");
    assert!(
        !json["detail"].as_str().unwrap().contains("inventory"),
        "the client is not told the breaker's name: {json}"
    );
    let (status, content_type, json) = answer(app, "/problem").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    assert_eq!(json["type"], "urn:palisade:circuit-open");
}
