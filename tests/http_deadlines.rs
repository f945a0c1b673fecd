//! The HTTP side of the timeout on paused time: the server-side timeout in a real axum `Router`
//! (status mapping, problem bodies, accepted and malformed deadline headers) and deadline
//! propagation into outgoing headers.

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::routing::get;
use http::{HeaderName, HeaderValue, StatusCode};
use palisade::deadline::Deadline;
use palisade::error::{BoxError, Rejection};
use palisade::http::{DeadlineHeader, PROBLEM_JSON};
use palisade::timeout::{
    OnInvalidHeader, PropagateDeadlineLayer, ServerTimeoutLayer, TimeoutKind, TimeoutLayer,
};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

const MS: Duration = Duration::from_millis(1);
const MILLIS_HEADER: HeaderName = HeaderName::from_static("x-request-timeout-ms");

/// A router whose `/sleep/{ms}` handler sleeps, then answers with the deadline it was given
/// (`remaining=<ms>` or `none`); `runs` counts handler executions.
fn app(layer: ServerTimeoutLayer, runs: Arc<AtomicUsize>) -> Router {
    Router::new()
        .route(
            "/sleep/{ms}",
            get(
                move |axum::extract::Path(ms): axum::extract::Path<u64>, req: Request| async move {
                    runs.fetch_add(1, Ordering::Relaxed);
                    let deadline = req.extensions().get::<Deadline>().copied();
                    let seen = match deadline {
                        Some(deadline) => format!("remaining={}", deadline.remaining().as_millis()),
                        None => "none".to_owned(),
                    };
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    ([("x-handler", "ran")], seen)
                },
            ),
        )
        .layer(layer)
}

fn get_req(path: &str, headers: &[(&HeaderName, &str)]) -> Request {
    let mut req = Request::get(path).body(Body::empty()).unwrap();
    for (name, value) in headers {
        req.headers_mut()
            .append((*name).clone(), HeaderValue::from_str(value).unwrap());
    }
    req
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

async fn send(app: &Router, req: Request) -> Answer {
    let response = app.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .unwrap();
    Answer {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

fn problem(answer: &Answer) -> serde_json::Value {
    assert_eq!(answer.headers[http::header::CONTENT_TYPE], PROBLEM_JSON);
    serde_json::from_str(&answer.body).expect("problem body is JSON")
}

/// Compiles only if the layered router still has `Infallible` as its error type.
fn assert_infallible<S: Service<Request, Error = Infallible>>(_: &S) {}

#[tokio::test(start_paused = true)]
async fn a_handler_within_its_limit_answers_untouched() {
    support::init_tracing();
    let runs = Arc::new(AtomicUsize::new(0));
    let app = app(ServerTimeoutLayer::new(100 * MS), runs.clone());
    assert_infallible(&app);

    let answer = send(&app, get_req("/sleep/99", &[])).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["x-handler"], "ran");
    assert_eq!(answer.body, "remaining=100");
    assert_eq!(runs.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn a_handler_past_its_limit_is_answered_503_with_a_problem_at_the_limit() {
    support::init_tracing();
    let app = app(ServerTimeoutLayer::new(100 * MS), Arc::default());
    let start = Instant::now();
    let answer = send(&app, get_req("/sleep/101", &[])).await;
    assert_eq!(Instant::now() - start, 100 * MS);
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.headers.get("x-handler").is_none());
    let problem = problem(&answer);
    assert_eq!(problem["type"], "urn:palisade:timed-out");
    assert_eq!(problem["title"], "Request timed out");
    assert_eq!(problem["status"], 503);
    assert_eq!(problem["detail"], "request timed out after 100ms");
}

#[tokio::test(start_paused = true)]
async fn the_timeout_status_is_configurable_to_408() {
    support::init_tracing();
    let app = app(
        ServerTimeoutLayer::new(100 * MS).status(StatusCode::REQUEST_TIMEOUT),
        Arc::default(),
    );
    let answer = send(&app, get_req("/sleep/500", &[])).await;
    assert_eq!(answer.status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(problem(&answer)["status"], 408);
}

#[tokio::test(start_paused = true)]
async fn route_layer_applies_the_timeout_to_matched_routes() {
    support::init_tracing();
    let router: Router = Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                "late"
            }),
        )
        .route_layer(ServerTimeoutLayer::new(100 * MS));
    assert_infallible(&router);
    let answer = send(&router, get_req("/slow", &[])).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let missing = send(&router, get_req("/missing", &[])).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test(start_paused = true)]
async fn a_callers_grpc_timeout_shortens_the_handler_deadline() {
    support::init_tracing();
    let app = app(
        ServerTimeoutLayer::new(Duration::from_secs(1)).accept(DeadlineHeader::grpc()),
        Arc::default(),
    );
    let ok = send(
        &app,
        get_req("/sleep/99", &[(&palisade::http::GRPC_TIMEOUT, "100m")]),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.body, "remaining=100");

    let start = Instant::now();
    let late = send(
        &app,
        get_req("/sleep/101", &[(&palisade::http::GRPC_TIMEOUT, "100m")]),
    )
    .await;
    assert_eq!(Instant::now() - start, 100 * MS);
    assert_eq!(late.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        problem(&late)["detail"],
        "request deadline exceeded after 100ms"
    );
}

#[tokio::test(start_paused = true)]
async fn a_callers_deadline_beyond_the_limit_is_capped_at_the_limit() {
    support::init_tracing();
    let app = app(
        ServerTimeoutLayer::new(Duration::from_secs(1)).accept(DeadlineHeader::grpc()),
        Arc::default(),
    );
    let answer = send(
        &app,
        get_req("/sleep/1", &[(&palisade::http::GRPC_TIMEOUT, "10S")]),
    )
    .await;
    assert_eq!(answer.body, "remaining=1000");
    let huge = send(
        &app,
        get_req("/sleep/1", &[(&palisade::http::GRPC_TIMEOUT, "99999999H")]),
    )
    .await;
    assert_eq!(huge.body, "remaining=1000");
}

#[tokio::test(start_paused = true)]
async fn a_milliseconds_header_is_accepted_and_the_soonest_header_wins() {
    support::init_tracing();
    let layer = ServerTimeoutLayer::new(Duration::from_secs(1))
        .accept(DeadlineHeader::grpc())
        .accept(DeadlineHeader::millis(MILLIS_HEADER));
    let app = app(layer, Arc::default());
    let millis = send(&app, get_req("/sleep/1", &[(&MILLIS_HEADER, "250")])).await;
    assert_eq!(millis.body, "remaining=250");
    let both = send(
        &app,
        get_req(
            "/sleep/1",
            &[
                (&MILLIS_HEADER, "250"),
                (&palisade::http::GRPC_TIMEOUT, "120m"),
            ],
        ),
    )
    .await;
    assert_eq!(both.body, "remaining=120");
}

#[tokio::test(start_paused = true)]
async fn a_caller_out_of_time_is_answered_at_once_without_running_the_handler() {
    support::init_tracing();
    let runs = Arc::new(AtomicUsize::new(0));
    let app = app(
        ServerTimeoutLayer::new(Duration::from_secs(1)).accept(DeadlineHeader::grpc()),
        runs.clone(),
    );
    let start = Instant::now();
    let answer = send(
        &app,
        get_req("/sleep/1", &[(&palisade::http::GRPC_TIMEOUT, "0S")]),
    )
    .await;
    assert_eq!(Instant::now(), start);
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        problem(&answer)["detail"],
        "request deadline had already passed"
    );
    assert_eq!(runs.load(Ordering::Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn malformed_deadline_headers_get_400_and_the_handler_never_runs() {
    support::init_tracing();
    let runs = Arc::new(AtomicUsize::new(0));
    let app = app(
        ServerTimeoutLayer::new(Duration::from_secs(1))
            .accept(DeadlineHeader::grpc())
            .accept(DeadlineHeader::millis(MILLIS_HEADER)),
        runs.clone(),
    );
    let cases: [(&HeaderName, &str, &str); 6] = [
        (
            &palisade::http::GRPC_TIMEOUT,
            "123456789S",
            "the value has too many digits",
        ),
        (
            &palisade::http::GRPC_TIMEOUT,
            "5s",
            "the unit is not one of H, M, S, m, u, n",
        ),
        (
            &palisade::http::GRPC_TIMEOUT,
            "10",
            "the value has no unit (one of H, M, S, m, u, n)",
        ),
        (&palisade::http::GRPC_TIMEOUT, "", "the value is empty"),
        (&MILLIS_HEADER, "1.5", "the value is not a decimal number"),
        (
            &MILLIS_HEADER,
            "99999999999999999999",
            "the value is too large",
        ),
    ];
    for (name, value, reason) in cases {
        let answer = send(&app, get_req("/sleep/1", &[(name, value)])).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{name}: {value:?}");
        let problem = problem(&answer);
        assert_eq!(problem["type"], "urn:palisade:invalid-deadline-header");
        assert_eq!(problem["status"], 400);
        assert_eq!(
            problem["detail"],
            format!("invalid {name} header: {reason}")
        );
    }
    let repeated = send(
        &app,
        get_req(
            "/sleep/1",
            &[
                (&palisade::http::GRPC_TIMEOUT, "1S"),
                (&palisade::http::GRPC_TIMEOUT, "2S"),
            ],
        ),
    )
    .await;
    assert_eq!(repeated.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        runs.load(Ordering::Relaxed),
        0,
        "no handler ran for a bad header"
    );
}

#[tokio::test(start_paused = true)]
async fn malformed_deadline_headers_can_be_ignored() {
    support::init_tracing();
    let runs = Arc::new(AtomicUsize::new(0));
    let app = app(
        ServerTimeoutLayer::new(Duration::from_secs(1))
            .accept(DeadlineHeader::grpc())
            .on_invalid_header(OnInvalidHeader::Ignore),
        runs.clone(),
    );
    let answer = send(
        &app,
        get_req("/sleep/1", &[(&palisade::http::GRPC_TIMEOUT, "soon")]),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.body, "remaining=1000",
        "the server's own limit applies"
    );
    assert_eq!(runs.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn headers_that_are_not_accepted_are_not_read() {
    support::init_tracing();
    let app = app(
        ServerTimeoutLayer::new(Duration::from_secs(1)),
        Arc::default(),
    );
    let answer = send(
        &app,
        get_req("/sleep/1", &[(&palisade::http::GRPC_TIMEOUT, "garbage")]),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "remaining=1000");
}

#[tokio::test(start_paused = true)]
async fn the_deadline_is_not_published_when_told_not_to() {
    support::init_tracing();
    let app = app(
        ServerTimeoutLayer::new(Duration::from_secs(1)).publish_deadline(false),
        Arc::default(),
    );
    let answer = send(&app, get_req("/sleep/1", &[])).await;
    assert_eq!(answer.body, "none");
}

#[tokio::test(start_paused = true)]
async fn a_deadline_already_in_the_request_bounds_the_handler() {
    support::init_tracing();
    let app = app(
        ServerTimeoutLayer::new(Duration::from_secs(1)),
        Arc::default(),
    );
    let mut req = get_req("/sleep/1", &[]);
    req.extensions_mut().insert(Deadline::after(300 * MS));
    let answer = send(&app, req).await;
    assert_eq!(answer.body, "remaining=300");
}

// ---- deadline propagation (client side) ----

/// An inner "client" that records the headers it was sent.
fn recorder() -> (
    impl Service<http::Request<()>, Response = http::HeaderMap, Error = BoxError, Future: Send>
    + Clone
    + Send
    + 'static,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let svc = service_fn(move |req: http::Request<()>| {
        counter.fetch_add(1, Ordering::Relaxed);
        std::future::ready(Ok::<_, BoxError>(req.headers().clone()))
    });
    (svc, calls)
}

#[tokio::test(start_paused = true)]
async fn propagation_writes_the_time_left_to_every_configured_header() {
    support::init_tracing();
    let (client, _) = recorder();
    let mut client = ServiceBuilder::new()
        .layer(
            PropagateDeadlineLayer::new(DeadlineHeader::grpc())
                .also(DeadlineHeader::millis(MILLIS_HEADER)),
        )
        .service(client);
    let mut req = http::Request::new(());
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_millis(1500)));
    req.headers_mut().insert(
        palisade::http::GRPC_TIMEOUT,
        HeaderValue::from_static("99S"),
    );
    tokio::time::advance(500 * MS).await;

    let sent = client.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(
        sent[palisade::http::GRPC_TIMEOUT],
        "1000000u",
        "stale value replaced"
    );
    assert_eq!(sent.get_all(palisade::http::GRPC_TIMEOUT).iter().count(), 1);
    assert_eq!(sent[&MILLIS_HEADER], "1000");
}

#[tokio::test(start_paused = true)]
async fn propagation_leaves_requests_without_a_deadline_alone() {
    support::init_tracing();
    let (client, _) = recorder();
    let mut client = PropagateDeadlineLayer::new(DeadlineHeader::grpc()).layer(client);
    let sent = client
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await
        .unwrap();
    assert!(sent.get(palisade::http::GRPC_TIMEOUT).is_none());
}

#[tokio::test(start_paused = true)]
async fn propagation_refuses_to_send_a_request_whose_deadline_has_passed() {
    support::init_tracing();
    let (client, calls) = recorder();
    let mut client = PropagateDeadlineLayer::new(DeadlineHeader::grpc()).layer(client);
    let mut req = http::Request::new(());
    req.extensions_mut().insert(Deadline::after(10 * MS));
    tokio::time::advance(10 * MS).await;
    let err = client.ready().await.unwrap().call(req).await.unwrap_err();
    assert!(matches!(
        Rejection::find(&*err),
        Some(Rejection::TimedOut(t)) if t.kind() == TimeoutKind::Deadline && t.after().is_zero()
    ));
    assert_eq!(calls.load(Ordering::Relaxed), 0, "nothing was sent");
}

#[tokio::test(start_paused = true)]
async fn the_header_carries_what_is_left_when_the_request_leaves() {
    support::init_tracing();
    // total 1 s (published) ⊃ 300 ms of work before sending ⊃ propagation.
    let (client, _) = recorder();
    let mut client = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(1)).publish_deadline(true))
        .layer(tower::layer::layer_fn(|inner| DelayBy(inner, 300 * MS)))
        .layer(PropagateDeadlineLayer::new(DeadlineHeader::grpc()))
        .service(client);
    let sent = client
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await
        .unwrap();
    assert_eq!(sent[palisade::http::GRPC_TIMEOUT], "700000u");
}

/// Waits before passing the request on, like a slow layer or a queue would.
#[derive(Clone)]
struct DelayBy<S>(S, Duration);

impl<S> Service<http::Request<()>> for DelayBy<S>
where
    S: Service<http::Request<()>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<()>) -> Self::Future {
        // Take the instance that was polled ready and leave a fresh clone behind.
        let fresh = self.0.clone();
        let mut ready = std::mem::replace(&mut self.0, fresh);
        let delay = self.1;
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            ready.call(req).await
        })
    }
}

#[tokio::test(start_paused = true)]
async fn an_existing_deadline_is_tightened_even_when_not_publishing() {
    support::init_tracing();
    let app = app(
        ServerTimeoutLayer::new(Duration::from_secs(1)).publish_deadline(false),
        Arc::default(),
    );
    let mut req = get_req("/sleep/1", &[]);
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_secs(10)));
    let answer = send(&app, req).await;
    assert_eq!(answer.body, "remaining=1000");
}
