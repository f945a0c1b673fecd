//! The idempotency layer through a real axum `Router`, on paused time: the IETF draft's flows,
//! the storage policy, releases, leases and fencing, the store's bounds.

mod support;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::routing::post;
use http::{HeaderName, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use palisade::idempotency::{
    IdempotencyLayer, IdempotencyRejection, IdentityHeader, InFlight, MemoryStore, OversizedBody,
};
use tower::ServiceExt;

const KEY: &str = "\"8e03978e-40d5-43e8-bc93-6894a57f9324\"";

/// How many times the handlers ran.
#[derive(Clone, Default)]
struct Runs(Arc<AtomicUsize>);

impl Runs {
    fn next(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// The handlers under test, each counting its runs:
///
/// - `POST /orders`: 201, `x-order: <run>`, body `order <run> for <request body>`.
/// - `POST /slow/{secs}`: the same after sleeping that long.
/// - `POST /fail`: 500. `POST /limited`: 429. `POST /missing`: 404. `POST /invalid`: 422.
///   `POST /unauthorized`: 401. `POST /forbidden`: 403.
/// - `POST /panic`: panics. `POST /big`: 201 with a 4 KiB body. `POST /slow-big`: the same
///   after 1 s. `POST /trickle`: 201 with a body that takes 5 s.
/// - `POST /cookie`: 201 with `set-cookie` and `x-order` headers.
/// - `GET /orders`: 200 (a method the layer does not cover).
fn app<St: palisade::idempotency::IdempotencyStore>(
    runs: &Runs,
    layer: IdempotencyLayer<St>,
) -> Router {
    async fn order(State(runs): State<Runs>, body: Bytes) -> Response<Body> {
        let run = runs.next();
        Response::builder()
            .status(StatusCode::CREATED)
            .header("x-order", run.to_string())
            .header(header::CONTENT_TYPE, "text/plain")
            .header(header::CONNECTION, "keep-alive")
            .body(Body::from(format!(
                "order {run} for {}",
                String::from_utf8_lossy(&body)
            )))
            .unwrap()
    }
    async fn slow(
        State(runs): State<Runs>,
        axum::extract::Path(secs): axum::extract::Path<u64>,
        body: Bytes,
    ) -> Response<Body> {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        order(State(runs), body).await
    }
    async fn status(runs: Runs, status: StatusCode) -> StatusCode {
        runs.next();
        status
    }
    async fn big(State(runs): State<Runs>) -> (StatusCode, Vec<u8>) {
        runs.next();
        (StatusCode::CREATED, vec![b'x'; 4096])
    }
    async fn panics(State(runs): State<Runs>) -> StatusCode {
        runs.next();
        panic!("the handler panicked");
    }
    /// 201 with a body whose second half arrives 5 s after its first.
    async fn trickle(State(runs): State<Runs>) -> Response<Body> {
        let run = runs.next();
        Response::builder()
            .status(StatusCode::CREATED)
            .body(Body::new(Trickle {
                parts: vec![format!("order {run}, "), "delivered slowly".to_owned()],
                pause: None,
            }))
            .unwrap()
    }
    Router::new()
        .route("/trickle", post(trickle))
        .route(
            "/orders",
            post(order).get(|State(runs): State<Runs>| async move {
                runs.next();
                "listed"
            }),
        )
        .route("/slow/{secs}", post(slow))
        .route(
            "/fail",
            post(|State(runs): State<Runs>| status(runs, StatusCode::INTERNAL_SERVER_ERROR)),
        )
        .route(
            "/limited",
            post(|State(runs): State<Runs>| status(runs, StatusCode::TOO_MANY_REQUESTS)),
        )
        .route(
            "/missing",
            post(|State(runs): State<Runs>| status(runs, StatusCode::NOT_FOUND)),
        )
        .route(
            "/invalid",
            post(|State(runs): State<Runs>| status(runs, StatusCode::UNPROCESSABLE_ENTITY)),
        )
        .route(
            "/unauthorized",
            post(|State(runs): State<Runs>| status(runs, StatusCode::UNAUTHORIZED)),
        )
        .route(
            "/forbidden",
            post(|State(runs): State<Runs>| status(runs, StatusCode::FORBIDDEN)),
        )
        .route(
            "/cookie",
            post(|State(runs): State<Runs>| async move {
                let run = runs.next();
                Response::builder()
                    .status(StatusCode::CREATED)
                    .header(header::SET_COOKIE, format!("session=caller-{run}"))
                    .header("x-order", run.to_string())
                    .body(Body::from(format!("order {run}")))
                    .unwrap()
            }),
        )
        .route("/big", post(big))
        .route(
            "/slow-big",
            post(|State(runs): State<Runs>| async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                big(State(runs)).await
            }),
        )
        .route("/panic", post(panics))
        .layer(layer)
        .with_state(runs.clone())
}

/// A body sending its parts 5 s apart.
struct Trickle {
    parts: Vec<String>,
    pause: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl http_body::Body for Trickle {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if let Some(pause) = self.pause.as_mut() {
            std::task::ready!(pause.as_mut().poll(cx));
        }
        if self.parts.is_empty() {
            return std::task::Poll::Ready(None);
        }
        let part = self.parts.remove(0);
        self.pause =
            (!self.parts.is_empty()).then(|| Box::pin(tokio::time::sleep(Duration::from_secs(5))));
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(part)))))
    }
}

fn request(method: Method, path: &str, key: Option<&str>, body: &'static str) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(key) = key {
        builder = builder.header("idempotency-key", key);
    }
    builder.body(Body::from(body)).unwrap()
}

fn post_order(key: Option<&str>, body: &'static str) -> Request<Body> {
    request(Method::POST, "/orders", key, body)
}

/// The response's status, headers and body.
async fn send(app: &Router, request: Request<Body>) -> (StatusCode, http::HeaderMap, Bytes) {
    let response = app.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

fn problem_type(body: &Bytes) -> String {
    let json: serde_json::Value = serde_json::from_slice(body).unwrap();
    json["type"].as_str().unwrap().to_owned()
}

#[tokio::test(start_paused = true)]
async fn a_sequential_duplicate_is_replayed_byte_for_byte() {
    support::init_tracing();
    let runs = Runs::default();
    let app = app(&runs, IdempotencyLayer::new());
    let (status, headers, body) = send(&app, post_order(Some(KEY), "{\"item\":42}")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body, "order 1 for {\"item\":42}");
    assert!(!headers.contains_key("idempotent-replayed"));

    let (again_status, again_headers, again_body) =
        send(&app, post_order(Some(KEY), "{\"item\":42}")).await;
    assert_eq!(runs.count(), 1, "the handler ran once");
    assert_eq!(again_status, status);
    assert_eq!(again_body, body, "the same bytes");
    assert_eq!(again_headers["x-order"], "1");
    assert_eq!(again_headers["idempotent-replayed"], "true");
    assert_eq!(
        again_headers[header::CONTENT_TYPE],
        headers[header::CONTENT_TYPE]
    );
    assert!(
        !again_headers.contains_key(header::CONNECTION),
        "hop-by-hop headers are not stored"
    );
}

#[tokio::test(start_paused = true)]
async fn the_same_key_with_another_request_is_422() {
    support::init_tracing();
    let runs = Runs::default();
    let app = app(&runs, IdempotencyLayer::new());
    send(&app, post_order(Some(KEY), "{\"item\":42}")).await;
    for other in [
        post_order(Some(KEY), "{\"item\":43}"),
        request(
            Method::POST,
            "/orders?express=1",
            Some(KEY),
            "{\"item\":42}",
        ),
    ] {
        let (status, headers, body) = send(&app, other).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
        assert_eq!(problem_type(&body), "urn:palisade:idempotency-key-reused");
    }
    assert_eq!(runs.count(), 1);
    // The original still replays.
    let (status, headers, _) = send(&app, post_order(Some(KEY), "{\"item\":42}")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["idempotent-replayed"], "true");
}

#[tokio::test(start_paused = true)]
async fn callers_with_different_identities_have_independent_records() {
    support::init_tracing();
    let runs = Runs::default();
    let layer = IdempotencyLayer::builder()
        .identity(IdentityHeader::new(HeaderName::from_static("x-tenant")))
        .build()
        .unwrap();
    let app = app(&runs, layer);
    let as_tenant = |tenant: &'static str| {
        let mut request = post_order(Some(KEY), "same");
        request
            .headers_mut()
            .insert("x-tenant", tenant.parse().unwrap());
        request
    };
    let (_, _, acme) = send(&app, as_tenant("acme")).await;
    let (_, headers, globex) = send(&app, as_tenant("globex")).await;
    assert_eq!(runs.count(), 2, "one run per caller");
    assert!(
        !headers.contains_key("idempotent-replayed"),
        "globex got no replay of acme's"
    );
    assert_ne!(acme, globex);
    let (_, headers, replayed) = send(&app, as_tenant("acme")).await;
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(replayed, acme, "each caller replays its own");
    assert_eq!(runs.count(), 2);
}

#[tokio::test(start_paused = true)]
async fn bad_keys_are_400_and_store_nothing() {
    support::init_tracing();
    let runs = Runs::default();
    let store = MemoryStore::new();
    let app = app(
        &runs,
        IdempotencyLayer::builder()
            .store(store.clone())
            .max_key_length(NonZeroUsize::new(40).unwrap())
            .build()
            .unwrap(),
    );
    let too_long = format!("\"{}\"", "k".repeat(41));
    let too_long: &'static str = Box::leak(too_long.into_boxed_str());
    for (key, why) in [
        ("unquoted-key", "bare token"),
        ("\"\"", "empty"),
        ("\"open", "no closing quote"),
        ("\"a\";P=1", "a malformed parameter"),
        (too_long, "over the limit"),
    ] {
        let (status, _, body) = send(&app, post_order(Some(key), "x")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{why}");
        assert_eq!(
            problem_type(&body),
            "urn:palisade:idempotency-key-invalid",
            "{why}"
        );
    }
    let mut repeated = post_order(Some(KEY), "x");
    repeated
        .headers_mut()
        .append("idempotency-key", "\"other\"".parse().unwrap());
    let (status, _, body) = send(&app, repeated).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("more than once"));
    assert_eq!(runs.count(), 0, "no handler ran");
    assert!(store.is_empty(), "nothing stored");
}

#[tokio::test(start_paused = true)]
async fn keys_can_be_required_and_unquoted_keys_allowed() {
    support::init_tracing();
    let runs = Runs::default();
    let app = app(
        &runs,
        IdempotencyLayer::builder()
            .require_key(true)
            .accept_unquoted_keys(true)
            .build()
            .unwrap(),
    );
    let response = app.clone().oneshot(post_order(None, "x")).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.extensions().get::<IdempotencyRejection>(),
        Some(&IdempotencyRejection::MissingKey)
    );
    send(&app, post_order(Some("8e03978e-40d5"), "x")).await;
    let (_, headers, _) = send(&app, post_order(Some("8e03978e-40d5"), "x")).await;
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(runs.count(), 1);
    // GET is not covered: no key needed, runs every time.
    send(&app, request(Method::GET, "/orders", None, "")).await;
    send(&app, request(Method::GET, "/orders", Some(KEY), "")).await;
    assert_eq!(runs.count(), 3);
}

#[tokio::test(start_paused = true)]
async fn requests_without_a_key_run_unprotected_by_default() {
    support::init_tracing();
    let runs = Runs::default();
    let app = app(&runs, IdempotencyLayer::new());
    send(&app, post_order(None, "x")).await;
    send(&app, post_order(None, "x")).await;
    assert_eq!(runs.count(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_5xx_or_a_retryable_4xx_releases_the_key_and_the_retry_runs() {
    support::init_tracing();
    let runs = Runs::default();
    let store = MemoryStore::new();
    let app = app(
        &runs,
        IdempotencyLayer::builder()
            .store(store.clone())
            .build()
            .unwrap(),
    );
    for path in ["/fail", "/limited"] {
        let first = send(&app, request(Method::POST, path, Some(KEY), "")).await;
        let again = send(&app, request(Method::POST, path, Some(KEY), "")).await;
        assert_eq!(first.0, again.0);
        assert!(!again.1.contains_key("idempotent-replayed"), "{path}");
    }
    assert_eq!(runs.count(), 4, "each attempt ran");
    assert!(store.is_empty(), "released records leave the store");
    // A final 4xx is stored.
    send(&app, request(Method::POST, "/invalid", Some(KEY), "")).await;
    let (status, headers, _) = send(&app, request(Method::POST, "/invalid", Some(KEY), "")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(runs.count(), 5);
}

#[tokio::test(start_paused = true)]
async fn auth_failures_and_not_found_are_released_so_a_retry_is_heard() {
    support::init_tracing();
    // A client that refreshes its token and retries with the same key must not get the stale
    // 401 back; a 404 did nothing, and keeping it would let junk paths fill the store.
    let runs = Runs::default();
    let store = MemoryStore::new();
    let app = app(
        &runs,
        IdempotencyLayer::builder()
            .store(store.clone())
            .build()
            .unwrap(),
    );
    for path in ["/unauthorized", "/forbidden", "/missing"] {
        let first = send(&app, request(Method::POST, path, Some(KEY), "")).await;
        let again = send(&app, request(Method::POST, path, Some(KEY), "")).await;
        assert_eq!(first.0, again.0);
        assert!(!again.1.contains_key("idempotent-replayed"), "{path}");
    }
    assert_eq!(runs.count(), 6);
    assert!(store.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_stored_4xx_expires_sooner_than_a_success() {
    support::init_tracing();
    let runs = Runs::default();
    let app = app(&runs, IdempotencyLayer::new());
    send(&app, request(Method::POST, "/invalid", Some(KEY), "")).await;
    send(&app, post_order(Some("\"success\""), "x")).await;
    tokio::time::sleep(Duration::from_secs(5 * 60 - 1)).await;
    let (_, headers, _) = send(&app, request(Method::POST, "/invalid", Some(KEY), "")).await;
    assert_eq!(
        headers["idempotent-replayed"], "true",
        "1 s before 5 minutes"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, headers, _) = send(&app, request(Method::POST, "/invalid", Some(KEY), "")).await;
    assert!(
        !headers.contains_key("idempotent-replayed"),
        "expired at 5 minutes"
    );
    let (_, headers, _) = send(&app, post_order(Some("\"success\""), "x")).await;
    assert_eq!(
        headers["idempotent-replayed"], "true",
        "a success is kept 24 h"
    );
    assert_eq!(runs.count(), 3);
}

#[tokio::test(start_paused = true)]
async fn set_cookie_is_never_stored_or_replayed() {
    support::init_tracing();
    let runs = Runs::default();
    let app = app(&runs, IdempotencyLayer::new());
    let (_, first, _) = send(&app, request(Method::POST, "/cookie", Some(KEY), "")).await;
    assert_eq!(
        first[header::SET_COOKIE],
        "session=caller-1",
        "the caller gets its own"
    );
    let (_, replay, body) = send(&app, request(Method::POST, "/cookie", Some(KEY), "")).await;
    assert_eq!(replay["idempotent-replayed"], "true");
    assert_eq!(body, "order 1");
    assert_eq!(replay["x-order"], "1");
    assert!(
        !replay.contains_key(header::SET_COOKIE),
        "another request with the key must not receive the first caller's session"
    );
    // A list of one's own replaces the default.
    let app = self::app(
        &runs,
        IdempotencyLayer::builder()
            .strip_headers([header::SET_COOKIE, HeaderName::from_static("x-order")])
            .build()
            .unwrap(),
    );
    send(&app, request(Method::POST, "/cookie", Some(KEY), "")).await;
    let (_, replay, _) = send(&app, request(Method::POST, "/cookie", Some(KEY), "")).await;
    assert_eq!(replay["idempotent-replayed"], "true");
    assert!(!replay.contains_key("x-order") && !replay.contains_key(header::SET_COOKIE));
}

#[tokio::test(start_paused = true)]
async fn one_router_serving_two_hosts_keeps_their_records_apart() {
    support::init_tracing();
    let runs = Runs::default();
    let app = app(&runs, IdempotencyLayer::new());
    for host in ["a.example", "b.example", "a.example"] {
        let mut order = post_order(Some(KEY), "x");
        order
            .headers_mut()
            .insert(header::HOST, host.parse().unwrap());
        send(&app, order).await;
    }
    assert_eq!(
        runs.count(),
        2,
        "b.example's request is its own; a.example's second replays"
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_releases_the_key() {
    support::init_tracing();
    let runs = Runs::default();
    let app = app(&runs, IdempotencyLayer::new());
    for _ in 0..2 {
        let attempt =
            tokio::spawn(
                app.clone()
                    .oneshot(request(Method::POST, "/panic", Some(KEY), "")),
            );
        assert!(attempt.await.unwrap_err().is_panic());
    }
    assert_eq!(
        runs.count(),
        2,
        "the second attempt ran: the key was released"
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_that_goes_away_mid_handler_releases_the_key() {
    support::init_tracing();
    let runs = Runs::default();
    let app = app(&runs, IdempotencyLayer::new());
    let first = tokio::spawn(
        app.clone()
            .oneshot(request(Method::POST, "/slow/10", Some(KEY), "")),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, _, _) = send(&app, request(Method::POST, "/slow/10", Some(KEY), "")).await;
    assert_eq!(status, StatusCode::CONFLICT, "still in flight");
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    // The retry runs (and this time finishes).
    let (status, headers, _) = send(&app, request(Method::POST, "/slow/10", Some(KEY), "")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(!headers.contains_key("idempotent-replayed"));
    assert_eq!(runs.count(), 1, "only the retry finished its handler");
}

#[tokio::test(start_paused = true)]
async fn a_duplicate_in_flight_gets_409_with_retry_after_then_the_replay() {
    support::init_tracing();
    let runs = Runs::default();
    let app = app(&runs, IdempotencyLayer::new());
    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, request(Method::POST, "/slow/5", Some(KEY), "")).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, headers, body) = send(&app, request(Method::POST, "/slow/5", Some(KEY), "")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(headers[header::RETRY_AFTER], "1");
    assert_eq!(
        problem_type(&body),
        "urn:palisade:idempotency-key-in-flight"
    );
    let (first_status, _, first_body) = first.await.unwrap();
    assert_eq!(first_status, StatusCode::CREATED);
    let (status, headers, body) = send(&app, request(Method::POST, "/slow/5", Some(KEY), "")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(body, first_body);
    assert_eq!(runs.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_duplicate_replays_the_first_response() {
    support::init_tracing();
    let runs = Runs::default();
    let app = app(
        &runs,
        IdempotencyLayer::builder()
            .in_flight(InFlight::Wait(Duration::from_secs(10)))
            .build()
            .unwrap(),
    );
    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, request(Method::POST, "/slow/3", Some(KEY), "")).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, headers, body) = send(&app, request(Method::POST, "/slow/3", Some(KEY), "")).await;
    let (_, _, first_body) = first.await.unwrap();
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(body, first_body);
    assert_eq!(runs.count(), 1);

    // A wait shorter than the handler gives up with 409.
    let app = self::app(
        &runs,
        IdempotencyLayer::builder()
            .in_flight(InFlight::Wait(Duration::from_secs(1)))
            .build()
            .unwrap(),
    );
    let slow = tokio::spawn({
        let app = app.clone();
        async move { send(&app, request(Method::POST, "/slow/5", Some(KEY), "")).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let start = tokio::time::Instant::now();
    let (status, _, _) = send(&app, request(Method::POST, "/slow/5", Some(KEY), "")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(1),
        "it waited exactly its bound"
    );
    slow.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_expired_lease_is_taken_over_and_the_late_completion_is_refused() {
    support::init_tracing();
    let runs = Runs::default();
    let layer = IdempotencyLayer::builder()
        .lease(Duration::from_secs(2))
        .build()
        .unwrap();
    let app = app(&runs, layer);
    // The first holder hangs for 5 s, past its 2 s lease.
    let late = tokio::spawn({
        let app = app.clone();
        async move { send(&app, request(Method::POST, "/slow/5", Some(KEY), "")).await }
    });
    tokio::time::sleep(Duration::from_millis(1_999)).await;
    let (status, _, _) = send(&app, request(Method::POST, "/orders", Some(KEY), "")).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "another route: another record, unaffected"
    );
    let (status, _, _) = send(&app, request(Method::POST, "/slow/5", Some(KEY), "")).await;
    assert_eq!(status, StatusCode::CONFLICT, "1 ms before the lease ends");
    tokio::time::sleep(Duration::from_millis(1)).await;
    // The lease has ended: this request takes the key over and runs (for 5 s too).
    let taker = tokio::spawn({
        let app = app.clone();
        async move { send(&app, request(Method::POST, "/slow/5", Some(KEY), "")).await }
    });
    let (late_status, _, late_body) = late.await.unwrap();
    assert_eq!(
        late_status,
        StatusCode::CREATED,
        "the late holder still answers its client"
    );
    let (_, _, taker_body) = taker.await.unwrap();
    assert_ne!(late_body, taker_body);
    // The stored response is the taker's: the late completion carried a stale token.
    let (_, headers, replayed) = send(&app, request(Method::POST, "/slow/5", Some(KEY), "")).await;
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(replayed, taker_body);
    assert_eq!(runs.count(), 3);
}

#[tokio::test(start_paused = true)]
async fn records_expire_after_the_retention() {
    support::init_tracing();
    let runs = Runs::default();
    let app = app(
        &runs,
        IdempotencyLayer::builder()
            .retention(Duration::from_secs(60))
            .build()
            .unwrap(),
    );
    send(&app, post_order(Some(KEY), "x")).await;
    tokio::time::sleep(Duration::from_millis(59_999)).await;
    let (_, headers, _) = send(&app, post_order(Some(KEY), "x")).await;
    assert_eq!(headers["idempotent-replayed"], "true", "1 ms before expiry");
    tokio::time::sleep(Duration::from_millis(1)).await;
    let (_, headers, _) = send(
        &app,
        post_order(
            Some("\"8e03978e-40d5-43e8-bc93-6894a57f9324\""),
            "other body",
        ),
    )
    .await;
    assert!(
        !headers.contains_key("idempotent-replayed"),
        "expired: the key is free, even for another body"
    );
    assert_eq!(runs.count(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_store_stays_within_its_entry_bound_under_a_flood_of_keys() {
    support::init_tracing();
    let runs = Runs::default();
    let store = MemoryStore::builder()
        .max_entries(NonZeroUsize::new(10).unwrap())
        .build();
    let app = app(
        &runs,
        IdempotencyLayer::builder()
            .store(store.clone())
            .retention(Duration::from_secs(5))
            .build()
            .unwrap(),
    );
    let mut statuses = Vec::new();
    for n in 0..100 {
        let key: &'static str = Box::leak(format!("\"key-{n}\"").into_boxed_str());
        let (status, headers, body) = send(&app, post_order(Some(key), "x")).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(problem_type(&body), "urn:palisade:idempotency-store-full");
            assert_eq!(headers[header::RETRY_AFTER], "1");
        }
        statuses.push(status);
        assert!(store.len() <= 10, "{} records", store.len());
    }
    let stored = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    assert_eq!(stored, 10, "live records are never evicted for new ones");
    assert_eq!(runs.count(), 10);
    // Once they expire, the sweep makes room.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (status, _, _) = send(&app, post_order(Some("\"fresh\""), "x")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(store.len(), 1, "the expired ten were swept");
}

#[tokio::test(start_paused = true)]
async fn a_store_without_room_for_a_response_refuses_the_key_before_running_it() {
    support::init_tracing();
    // 10 000 bytes, and each response may take 5000 (the response limit): a key is only let in
    // while 5000 more bytes would fit, so a response that ran always has room.
    let runs = Runs::default();
    let store = MemoryStore::builder().max_bytes(10_000).build();
    let app = app(
        &runs,
        IdempotencyLayer::builder()
            .store(store.clone())
            .response_limit(5000)
            .build()
            .unwrap(),
    );
    let mut statuses = Vec::new();
    for n in 0..5 {
        let key: &'static str = Box::leak(format!("\"big-{n}\"").into_boxed_str());
        let (status, _, body) = send(&app, request(Method::POST, "/big", Some(key), "")).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(problem_type(&body), "urn:palisade:idempotency-store-full");
        } else {
            assert_eq!(body.len(), 4096);
        }
        statuses.push(status.as_u16());
        assert!(store.bytes() <= 10_000, "{} bytes", store.bytes());
    }
    assert_eq!(statuses, [201, 201, 503, 503, 503]);
    assert_eq!(runs.count(), 2, "a refused key never ran");
    // The two that ran are replayed, never run again.
    for key in ["\"big-0\"", "\"big-1\""] {
        let (_, headers, _) = send(&app, request(Method::POST, "/big", Some(key), "")).await;
        assert_eq!(headers["idempotent-replayed"], "true");
    }
    assert_eq!(runs.count(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_response_that_finds_no_room_is_recorded_as_run_and_never_runs_again() {
    support::init_tracing();
    // Three requests let in together (each saw room for 5000 bytes) answer 4 KiB each: the
    // third completion no longer fits. Its key records that the request ran.
    let runs = Runs::default();
    let store = MemoryStore::builder().max_bytes(10_000).build();
    let app = app(
        &runs,
        IdempotencyLayer::builder()
            .store(store.clone())
            .response_limit(5000)
            .build()
            .unwrap(),
    );
    let keys: [&'static str; 3] = ["\"slow-0\"", "\"slow-1\"", "\"slow-2\""];
    let calls: Vec<_> = keys
        .into_iter()
        .map(|key| {
            let app = app.clone();
            tokio::spawn(async move {
                let (status, _, body) =
                    send(&app, request(Method::POST, "/slow-big", Some(key), "")).await;
                (status, body.len())
            })
        })
        .collect();
    for call in calls {
        assert_eq!(
            call.await.unwrap(),
            (StatusCode::CREATED, 4096),
            "every client gets its answer"
        );
    }
    assert_eq!(runs.count(), 3);
    let mut not_kept = 0;
    for key in keys {
        let (status, headers, body) =
            send(&app, request(Method::POST, "/slow-big", Some(key), "")).await;
        if status == StatusCode::CONFLICT {
            assert_eq!(
                problem_type(&body),
                "urn:palisade:idempotency-result-not-kept"
            );
            not_kept += 1;
        } else {
            assert_eq!(headers["idempotent-replayed"], "true");
        }
    }
    assert_eq!(
        not_kept, 1,
        "two responses fit, the third is recorded as run"
    );
    assert_eq!(runs.count(), 3, "no request ran twice");
}

#[tokio::test(start_paused = true)]
async fn a_response_over_the_limit_is_sent_whole_and_its_key_never_runs_again() {
    support::init_tracing();
    let runs = Runs::default();
    let app = app(
        &runs,
        IdempotencyLayer::builder()
            .response_limit(1000)
            .build()
            .unwrap(),
    );
    let (status, headers, body) = send(&app, request(Method::POST, "/big", Some(KEY), "")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body.len(), 4096);
    assert!(!headers.contains_key("idempotent-replayed"));
    let (status, _, problem) = send(&app, request(Method::POST, "/big", Some(KEY), "")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        problem_type(&problem),
        "urn:palisade:idempotency-result-not-kept"
    );
    assert!(
        String::from_utf8_lossy(&problem).contains("status 201"),
        "the problem says how the request was answered"
    );
    assert_eq!(runs.count(), 1, "the request ran once");
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_limit_is_413_or_runs_unprotected() {
    support::init_tracing();
    let runs = Runs::default();
    let body = "0123456789abcdef";
    let app = app(
        &runs,
        IdempotencyLayer::builder().body_limit(10).build().unwrap(),
    );
    let (status, _, problem) = send(&app, post_order(Some(KEY), body)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        problem_type(&problem),
        "urn:palisade:idempotency-body-too-large"
    );
    assert_eq!(runs.count(), 0);

    let app = self::app(
        &runs,
        IdempotencyLayer::builder()
            .body_limit(10)
            .oversized_body(OversizedBody::PassThrough)
            .build()
            .unwrap(),
    );
    for _ in 0..2 {
        let (status, _, answer) = send(&app, post_order(Some(KEY), body)).await;
        assert_eq!(status, StatusCode::CREATED);
        assert!(
            answer.ends_with(body.as_bytes()),
            "the handler got the whole body"
        );
    }
    assert_eq!(runs.count(), 2, "unprotected: it ran twice");
}

#[tokio::test(start_paused = true)]
async fn a_body_within_the_limit_reaches_the_handler_intact() {
    support::init_tracing();
    let runs = Runs::default();
    let app = app(
        &runs,
        IdempotencyLayer::builder().body_limit(16).build().unwrap(),
    );
    let body = "0123456789abcdef";
    let (_, _, answer) = send(&app, post_order(Some(KEY), body)).await;
    assert_eq!(answer, format!("order 1 for {body}"));
}

#[tokio::test(start_paused = true)]
async fn the_layer_only_looks_at_the_methods_it_covers() {
    support::init_tracing();
    let runs = Runs::default();
    let app = app(
        &runs,
        IdempotencyLayer::builder()
            .methods([Method::GET])
            .build()
            .unwrap(),
    );
    send(&app, request(Method::GET, "/orders", Some(KEY), "")).await;
    let (_, headers, _) = send(&app, request(Method::GET, "/orders", Some(KEY), "")).await;
    assert_eq!(headers["idempotent-replayed"], "true");
    send(&app, post_order(Some(KEY), "x")).await;
    send(&app, post_order(Some(KEY), "x")).await;
    assert_eq!(runs.count(), 3, "POST is no longer covered");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_leaves_after_the_handler_answered_still_gets_its_response_stored() {
    support::init_tracing();
    let runs = Runs::default();
    let app = app(&runs, IdempotencyLayer::new());
    // The handler answers at once, but its body takes 5 s; the client leaves after 1 s.
    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, request(Method::POST, "/trickle", Some(KEY), "")).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    // The handler ran: its response is read to the end and stored without the client, so the
    // retry is a replay, not a second order.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (status, headers, body) =
        send(&app, request(Method::POST, "/trickle", Some(KEY), "")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(body, "order 1, delivered slowly");
    assert_eq!(runs.count(), 1);
}

/// A store whose first completions fail (a Redis that went away just after the handler
/// answered), then recovers: the in-memory store underneath.
#[derive(Clone)]
struct FailingCompletions {
    inner: MemoryStore,
    failures_left: Arc<AtomicUsize>,
}

impl palisade::idempotency::IdempotencyStore for FailingCompletions {
    type ClaimFuture = <MemoryStore as palisade::idempotency::IdempotencyStore>::ClaimFuture;
    type CompleteFuture = std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<
                        palisade::idempotency::Completion,
                        palisade::idempotency::StoreError,
                    >,
                > + Send,
        >,
    >;
    type ReleaseFuture = <MemoryStore as palisade::idempotency::IdempotencyStore>::ReleaseFuture;

    fn claim(&self, claim: palisade::idempotency::Claim) -> Self::ClaimFuture {
        self.inner.claim(claim)
    }

    fn complete(
        &self,
        key: palisade::idempotency::RecordKey,
        token: palisade::idempotency::FencingToken,
        completed: palisade::idempotency::Completed,
        retain_for: Duration,
    ) -> Self::CompleteFuture {
        let failing = self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        if failing {
            // Slow, then failed: the completion never reached the store.
            return Box::pin(async {
                tokio::time::sleep(Duration::from_millis(250)).await;
                Err(palisade::idempotency::StoreError::new("connection reset"))
            });
        }
        // (The in-memory store completes when called, not when polled.)
        let complete = self.inner.complete(key, token, completed, retain_for);
        Box::pin(complete)
    }

    fn release(
        &self,
        key: palisade::idempotency::RecordKey,
        token: palisade::idempotency::FencingToken,
    ) -> Self::ReleaseFuture {
        self.inner.release(key, token)
    }
}

#[tokio::test(start_paused = true)]
async fn a_completion_the_store_failed_is_tried_again_so_a_retry_never_runs_twice() {
    support::init_tracing();
    let runs = Runs::default();
    let store = FailingCompletions {
        inner: MemoryStore::new(),
        failures_left: Arc::new(AtomicUsize::new(3)),
    };
    let layer = IdempotencyLayer::builder()
        .store(store.clone())
        .lease(Duration::from_secs(10))
        .build()
        .unwrap();
    let app = app(&runs, layer);
    let (status, _, body) = send(&app, post_order(Some(KEY), "{}")).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "the client still gets its answer"
    );
    assert_eq!(
        store.failures_left.load(Ordering::SeqCst),
        2,
        "the first completion failed"
    );
    let (status, _, _) = send(&app, post_order(Some(KEY), "{}")).await;
    assert_eq!(status, StatusCode::CONFLICT, "claimed meanwhile");
    // Tried again 100, 200 and 400 ms later (each try takes 250 ms to fail, the third lands).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(store.failures_left.load(Ordering::SeqCst), 0);
    // Past the lease, a retry is a replay, not a second run.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (status, headers, replayed) = send(&app, post_order(Some(KEY), "{}")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(replayed, body);
    assert_eq!(runs.count(), 1);
}
