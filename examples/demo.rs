//! palisade's demo: a client stack and an axum server on 127.0.0.1, no external service.
//!
//! ```text
//! cargo run --example demo
//! RUST_LOG=palisade=debug cargo run --example demo     # and every decision the layers log
//! ```
//!
//! The server gives every handler at most 1 s, less if the caller says it has less
//! (`grpc-timeout`), and hands the handler's remaining time to its own outgoing calls. The client
//! gives every call a limit, publishes it as the request's deadline, and tells the server how
//! much of it is left.
//!
//! Then a route goes down: a circuit breaker in front of it opens after three failures,
//! rejects calls at once with the time left (`Retry-After` for HTTP callers) instead of sending
//! them, and closes again once a probe finds the route healthy.
//!
//! Then retries: a flaky route's failures are absorbed, a 503 with `Retry-After` is waited out
//! exactly, and a POST is repeated only when it carries an `Idempotency-Key`.
//!
//! Then idempotency end to end: the client gives a POST a key and retries it when its
//! response is lost on the way back; the server, which had placed the order, replays its
//! stored answer instead of placing it again.
//!
//! Then the stale-while-revalidate cache in front of a slow lookup: a burst of 100 callers on a
//! cold key makes one origin call, a stale entry is served at once while one refresh runs in
//! the background, and an origin outage is ridden out with the last good value
//! (stale-if-error).
//!
//! Then the HTTP cache in front of one route of the server: the answers' `Cache-Status` and
//! `Age`, a stale answer served at once while a `304` renews it in the background, and a `POST`
//! that invalidates the cached response.
//!
//! Last, the client preset: a route that fails every other call keeps answering what it can
//! (the throttle sheds nothing at 50 %); once it is down, calls are refused at once (or answered
//! by a fallback, marked) while one probe at a time checks on it; and the first probe that
//! succeeds brings full traffic back.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade::circuit_breaker::CircuitBreakerLayer;
use palisade::classify::StatusClassifier;
use palisade::deadline::Deadline;
use palisade::error::{BoxError, Rejection};
use palisade::fallback::{FALLBACK_HEADER, Failure, FallbackLayer};
use palisade::http::ResponseBody;
use palisade::http::{DeadlineHeader, GRPC_TIMEOUT, IDEMPOTENCY_KEY, ReplayBody};
use palisade::idempotency::{AddIdempotencyKeyLayer, IdempotencyLayer};
use palisade::preset::HttpClientLayer;
use palisade::retry::{BufferBodyLayer, HttpPolicy, RetryLayer};
use palisade::throttle::ThrottleState;
use palisade::timeout::{PropagateDeadlineLayer, ServerTimeoutLayer, TimeoutLayer};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

/// The state of the `/flaky` route: whether it works, and how many requests reached it; and
/// of the routes the retry demo uses.
#[derive(Default)]
struct Flaky {
    healthy: AtomicBool,
    hits: AtomicUsize,
    /// Requests to `/shaky` and `/throttled` and `/order` so far.
    shaky: AtomicUsize,
    throttled: AtomicUsize,
    orders: AtomicUsize,
    /// Orders the `/checkout` handler placed, and whether the network loses its next answer.
    checkouts: AtomicUsize,
    lose_next_checkout: AtomicBool,
    /// How `/unreliable` behaves: 0 healthy, 1 every other request a 503, 2 down (500).
    unreliable: AtomicUsize,
    unreliable_hits: AtomicUsize,
    /// `/prices`: the price list's version (a POST publishes the next), and GETs that reached
    /// the handler.
    prices_version: AtomicUsize,
    prices_hits: AtomicUsize,
}

/// The server: `/fast`, `/slow`, `/budget` (what the caller said it had left), `/chain` (a
/// handler that calls `/budget` itself, passing its own deadline on) and `/flaky` (a 500 until
/// `flaky.healthy` is set).
async fn serve(flaky: Arc<Flaky>) -> SocketAddr {
    let (shaky, throttled, orders) = (Arc::clone(&flaky), Arc::clone(&flaky), Arc::clone(&flaky));
    let checkout = checkout_route(Arc::clone(&flaky));
    let unreliable = Arc::clone(&flaky);
    let prices = prices_route(Arc::clone(&flaky));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local address");
    let app = Router::new()
        .route(
            "/fast",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                "fast answer"
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                "slow answer"
            }),
        )
        .route("/budget", get(|req: Request| async move { budget(&req) }))
        .route(
            "/shaky",
            // Fails two requests out of three.
            get(move || async move {
                if shaky.shaky.fetch_add(1, Ordering::Relaxed) % 3 < 2 {
                    (http::StatusCode::BAD_GATEWAY, "upstream hiccup")
                } else {
                    (http::StatusCode::OK, "shaky route answered")
                }
            }),
        )
        .route(
            "/throttled",
            // Asks the first caller to come back in 1 s.
            get(move || async move {
                if throttled.throttled.fetch_add(1, Ordering::Relaxed) == 0 {
                    let mut headers = http::HeaderMap::new();
                    headers.insert(
                        http::header::RETRY_AFTER,
                        http::HeaderValue::from_static("1"),
                    );
                    (http::StatusCode::SERVICE_UNAVAILABLE, headers, "slow down")
                } else {
                    (
                        http::StatusCode::OK,
                        http::HeaderMap::new(),
                        "throttled route answered",
                    )
                }
            }),
        )
        .route(
            "/order",
            // Fails the first two requests, then accepts.
            axum::routing::post(move || async move {
                if orders.orders.fetch_add(1, Ordering::Relaxed) < 2 {
                    (http::StatusCode::SERVICE_UNAVAILABLE, "try again")
                } else {
                    (http::StatusCode::CREATED, "order placed")
                }
            }),
        )
        .route("/checkout", checkout)
        .route("/prices", prices)
        .route(
            "/unreliable",
            get(move || async move {
                let hit = unreliable.unreliable_hits.fetch_add(1, Ordering::Relaxed);
                match unreliable.unreliable.load(Ordering::Relaxed) {
                    1 if hit % 2 == 0 => (http::StatusCode::SERVICE_UNAVAILABLE, "browning out"),
                    2 => (http::StatusCode::INTERNAL_SERVER_ERROR, "down"),
                    _ => (http::StatusCode::OK, "unreliable route answered"),
                }
            }),
        )
        .route(
            "/flaky",
            get(move || async move {
                flaky.hits.fetch_add(1, Ordering::Relaxed);
                if flaky.healthy.load(Ordering::Relaxed) {
                    (http::StatusCode::OK, "flaky route is back")
                } else {
                    (
                        http::StatusCode::INTERNAL_SERVER_ERROR,
                        "flaky route is down",
                    )
                }
            }),
        )
        .route(
            "/chain",
            get(move |req: Request| async move {
                let mut downstream = get_request(addr, "/budget");
                if let Some(deadline) = req.extensions().get::<Deadline>() {
                    downstream.extensions_mut().insert(*deadline);
                }
                match call(&mut client(Duration::from_secs(30)), downstream).await {
                    Ok((_, body)) => format!("downstream saw: {body}"),
                    Err(err) => format!("downstream call failed: {err}"),
                }
            }),
        )
        .layer(ServerTimeoutLayer::new(Duration::from_secs(1)).accept(DeadlineHeader::grpc()));
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            eprintln!("server stopped: {err}");
        }
    });
    addr
}

/// `/prices` behind a shared HTTP cache: `GET` answers the current version, fresh for 3 s and
/// served stale 10 s more while it is revalidated (an `ETag` makes that a `304`); `POST`
/// publishes the next version, and its success invalidates the cached one.
fn prices_route(state: Arc<Flaky>) -> axum::routing::MethodRouter {
    use palisade::cache::{CacheMode, HttpCacheLayer};
    let read = Arc::clone(&state);
    let cache = HttpCacheLayer::builder(CacheMode::Shared)
        .build()
        .expect("valid cache configuration");
    get(move |req: Request| async move {
        read.prices_hits.fetch_add(1, Ordering::Relaxed);
        let version = read.prices_version.load(Ordering::Relaxed);
        let etag = format!("\"v{version}\"");
        let headers = [
            (
                "cache-control",
                "max-age=3, stale-while-revalidate=10".to_owned(),
            ),
            ("etag", etag.clone()),
        ];
        if req
            .headers()
            .get("if-none-match")
            .is_some_and(|tag| *tag == *etag)
        {
            return (http::StatusCode::NOT_MODIFIED, headers, String::new());
        }
        (
            http::StatusCode::OK,
            headers,
            format!("price list v{version}"),
        )
    })
    .post(move || async move {
        let version = state.prices_version.fetch_add(1, Ordering::Relaxed) + 1;
        (http::StatusCode::CREATED, format!("published v{version}"))
    })
    .layer(cache)
}

/// `POST /checkout`: places an order, behind the idempotency layer; in front of it, a
/// "network" that loses the answer when told to (after the order was placed).
fn checkout_route(state: Arc<Flaky>) -> axum::routing::MethodRouter {
    async fn place(State(state): State<Arc<Flaky>>, req: Request) -> (http::StatusCode, String) {
        let n = state.checkouts.fetch_add(1, Ordering::Relaxed) + 1;
        let key = req
            .headers()
            .get(IDEMPOTENCY_KEY)
            .and_then(|key| key.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        (
            http::StatusCode::CREATED,
            format!("order #{n} placed (key {key})"),
        )
    }
    async fn lossy_network(State(state): State<Arc<Flaky>>, req: Request, next: Next) -> Response {
        let response = next.run(req).await;
        if state.lose_next_checkout.swap(false, Ordering::Relaxed) {
            println!("  ⇢ network: the server's answer is lost on the way back (502)");
            return (http::StatusCode::BAD_GATEWAY, "connection reset").into_response();
        }
        response
    }
    axum::routing::post(place)
        .layer(IdempotencyLayer::new())
        .layer(from_fn_with_state(Arc::clone(&state), lossy_network))
        .with_state(state)
}

/// What a handler was told and given: the `grpc-timeout` header and its published deadline.
fn budget(req: &Request) -> String {
    let header = req
        .headers()
        .get(GRPC_TIMEOUT)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("none");
    match req.extensions().get::<Deadline>() {
        Some(deadline) => format!(
            "grpc-timeout: {header}, handler deadline in {} ms",
            deadline.remaining().as_millis()
        ),
        None => format!("grpc-timeout: {header}, no deadline"),
    }
}

type Body = Empty<Bytes>;

/// The client stack: at most `limit` per call, published as the request's deadline and sent to
/// the server as `grpc-timeout`.
fn client(
    limit: Duration,
) -> impl Service<
    http::Request<Body>,
    Response = http::Response<hyper::body::Incoming>,
    Error = BoxError,
    Future: Send,
> + Send {
    let http = Client::builder(TokioExecutor::new()).build_http::<Body>();
    ServiceBuilder::new()
        .layer(TimeoutLayer::new(limit).publish_deadline(true))
        .layer(PropagateDeadlineLayer::new(DeadlineHeader::grpc()))
        .service(http)
}

fn get_request(addr: SocketAddr, path: &str) -> http::Request<Body> {
    http::Request::get(format!("http://{addr}{path}"))
        .body(Empty::new())
        .expect("valid request")
}

async fn call<S>(
    svc: &mut S,
    req: http::Request<Body>,
) -> Result<(http::StatusCode, String), BoxError>
where
    S: Service<
            http::Request<Body>,
            Response = http::Response<hyper::body::Incoming>,
            Error = BoxError,
        >,
{
    let response = svc.ready().await?.call(req).await?;
    let status = response.status();
    let replayed = response
        .headers()
        .contains_key(palisade::http::IDEMPOTENT_REPLAYED);
    let body = response.into_body().collect().await?.to_bytes();
    let mut body = String::from_utf8_lossy(&body).into_owned();
    if replayed {
        body.push_str("  [Idempotent-Replayed: true]");
    }
    Ok((status, body))
}

/// Makes one call and prints what happened to it.
async fn show<S>(title: &str, svc: &mut S, req: http::Request<Body>)
where
    S: Service<
            http::Request<Body>,
            Response = http::Response<hyper::body::Incoming>,
            Error = BoxError,
        >,
{
    let start = Instant::now();
    let outcome = call(svc, req).await;
    let took = start.elapsed().as_millis();
    println!("\n▶ {title}");
    match outcome {
        Ok((status, body)) => println!("  {status} after {took} ms: {body}"),
        Err(err) => match Rejection::find(&*err) {
            Some(Rejection::TimedOut(timed_out)) => println!(
                "  client gave up after {took} ms: {timed_out} (kind {:?})",
                timed_out.kind()
            ),
            Some(Rejection::Throttled(throttled)) => println!(
                "  rejected after {took} ms, never sent: {throttled}; next probe in {} ms (HTTP: {})",
                throttled.retry_after().unwrap_or_default().as_millis(),
                throttled.status()
            ),
            Some(Rejection::CircuitOpen(open)) => {
                let answer = open.problem().into_http_response::<Body>();
                let retry_after = &answer.headers()[http::header::RETRY_AFTER];
                println!(
                    "  rejected after {took} ms, never sent: {open}, retry after {} ms\n  \
                     (as an HTTP answer: {}, Retry-After: {})",
                    open.retry_after().unwrap_or_default().as_millis(),
                    answer.status(),
                    retry_after.to_str().unwrap_or("?"),
                );
            }
            _ => println!("  failed after {took} ms: {err}"),
        },
    }
}

#[tokio::main]
async fn main() {
    // palisade logs its decisions through `tracing`: `RUST_LOG=palisade=debug` shows them,
    // `RUST_LOG=palisade::circuit_breaker=info` only the breaker's transitions. Silent unset.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_target(true)
        .init();
    let flaky = Arc::new(Flaky::default());
    let addr = serve(Arc::clone(&flaky)).await;
    println!("palisade demo: server on http://{addr}, handlers limited to 1 s");

    show(
        "GET /fast, client limit 500 ms: answered in time",
        &mut client(Duration::from_millis(500)),
        get_request(addr, "/fast"),
    )
    .await;

    show(
        "GET /slow (2 s handler), client limit 500 ms: the client stops waiting",
        &mut client(Duration::from_millis(500)),
        get_request(addr, "/slow"),
    )
    .await;

    show(
        "GET /slow, client limit 5 s: the server cuts its handler at its own 1 s cap",
        &mut client(Duration::from_secs(5)),
        get_request(addr, "/slow"),
    )
    .await;

    show(
        "GET /budget, client limit 800 ms: the server learns how long the caller waits",
        &mut client(Duration::from_millis(800)),
        get_request(addr, "/budget"),
    )
    .await;

    show(
        "GET /chain, client limit 600 ms: the handler's own call inherits the caller's deadline",
        &mut client(Duration::from_millis(600)),
        get_request(addr, "/chain"),
    )
    .await;

    let mut malformed = get_request(addr, "/budget");
    malformed
        .headers_mut()
        .insert(GRPC_TIMEOUT, http::HeaderValue::from_static("soon"));
    show(
        "GET /budget with `grpc-timeout: soon`: a malformed header is a 400, the handler never runs",
        &mut Client::builder(TokioExecutor::new())
            .build_http::<Body>()
            .map_err(BoxError::from),
        malformed,
    )
    .await;

    breaker_demo(addr, &flaky).await;
    retry_demo(addr, &flaky).await;
    idempotency_demo(addr, &flaky).await;
    cache_demo().await;
    http_cache_demo(addr, &flaky).await;
    preset_demo(addr, &flaky).await;
}

/// The cache in front of a lookup that takes 50 ms and can be switched off.
async fn cache_demo() {
    use palisade::cache::CacheLayer;
    println!(
        "\n── stale-while-revalidate cache: fresh 300 ms, stale 300 ms more, errors covered 5 s ──"
    );
    let lookups = Arc::new(AtomicUsize::new(0));
    let down = Arc::new(AtomicBool::new(false));
    let origin = tower::service_fn({
        let (lookups, down) = (Arc::clone(&lookups), Arc::clone(&down));
        move |id: u64| {
            let n = lookups.fetch_add(1, Ordering::SeqCst) + 1;
            let down = down.load(Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if down {
                    Err::<Arc<str>, BoxError>("lookup failed: database unreachable".into())
                } else {
                    Ok(Arc::from(format!("price list {id}, version {n}")))
                }
            }
        }
    });
    let cache = CacheLayer::builder(Duration::from_millis(300), |id: &u64| Some(*id))
        .stale_while_revalidate(Duration::from_millis(300))
        .stale_if_error(Duration::from_secs(5))
        .build()
        .expect("valid cache configuration");
    let handle = cache.handle();
    let svc = ServiceBuilder::new().layer(cache).service(origin);

    let burst: Vec<_> = (0..100)
        .map(|_| {
            let mut svc = svc.clone();
            tokio::spawn(async move { svc.ready().await?.call(1).await })
        })
        .collect();
    let mut answered = 0;
    for caller in burst {
        if caller.await.is_ok_and(|answer| answer.is_ok()) {
            answered += 1;
        }
    }
    println!(
        "  100 callers at once on a cold key: {answered} answered, {} origin lookup",
        lookups.load(Ordering::SeqCst)
    );

    tokio::time::sleep(Duration::from_millis(350)).await;
    let mut one = svc.clone();
    let started = tokio::time::Instant::now();
    let answer = one.ready().await.expect("ready").call(1).await;
    println!(
        "  after 350 ms (stale): {:?} in {:?}, a refresh runs behind it",
        answer.as_deref().unwrap_or("?"),
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answer = one.ready().await.expect("ready").call(1).await;
    println!("  100 ms later: {:?}", answer.as_deref().unwrap_or("?"));

    down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let answer = one.ready().await.expect("ready").call(1).await;
    println!(
        "  the database goes down, the entry expires: {:?} (stale-if-error)",
        answer.as_deref().unwrap_or("?")
    );
    let metrics = handle.metrics();
    println!(
        "  cache: {} hits, {} stale, {} coalesced, {} refreshed, {} served stale on error, {} lookups",
        metrics.hits,
        metrics.stale_hits,
        metrics.coalesced,
        metrics.refreshes,
        metrics.stale_if_error,
        lookups.load(Ordering::SeqCst)
    );
}

/// The HTTP cache in front of `/prices`, seen from a client: what `Cache-Status` and `Age`
/// say on each answer.
async fn http_cache_demo(addr: SocketAddr, state: &Flaky) {
    println!("\n── HTTP cache in front of GET /prices (max-age=3, stale-while-revalidate=10) ──");
    let http = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let show = |what: &str, response: &http::Response<hyper::body::Incoming>| {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .unwrap_or("-")
                .to_owned()
        };
        println!(
            "  {what:<34} {} | Age: {:<2} | Cache-Status: {}",
            response.status(),
            header("age"),
            header("cache-status")
        );
    };
    for what in ["first GET (nothing stored)", "second GET", "third GET"] {
        let response = http.request(get_request(addr, "/prices")).await;
        if let Ok(response) = response {
            show(what, &response);
        }
    }
    tokio::time::sleep(Duration::from_millis(3200)).await;
    if let Ok(response) = http.request(get_request(addr, "/prices")).await {
        show("after 3.2 s: stale, served at once", &response);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    if let Ok(response) = http.request(get_request(addr, "/prices")).await {
        show("50 ms later: renewed by a 304", &response);
    }
    let publish = http::Request::post(format!("http://{addr}/prices"))
        .body(Empty::new())
        .expect("valid request");
    if let Ok(response) = http.request(publish).await {
        show("POST /prices (a new version)", &response);
    }
    if let Ok(response) = http.request(get_request(addr, "/prices")).await {
        show("GET after the POST: invalidated", &response);
    }
    println!(
        "  the handler ran for {} of 6 GETs (one of them a 304 to the background revalidation)",
        state.prices_hits.load(Ordering::Relaxed)
    );
}

/// The client preset against `/unreliable`: nothing shed while half the calls succeed, only
/// probes once it is down (rejections answered at once, or by a fallback), and full traffic
/// again at the first probe that succeeds.
async fn preset_demo(addr: SocketAddr, state: &Flaky) {
    println!(
        "\n── the client preset (total 2 s ⊃ retry with budget ⊃ throttle ⊃ 200 ms attempts) ──"
    );
    let preset = HttpClientLayer::new()
        .total_timeout(Duration::from_secs(2))
        .attempt_timeout(Duration::from_millis(200));
    let throttle = preset.throttle_handle().expect("the preset throttles");
    let http = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Body>>();
    let mut client = preset.layer(http);

    state.unreliable.store(1, Ordering::Relaxed);
    let mut ok = 0;
    for _ in 0..20 {
        if matches!(call(&mut client, get_request(addr, "/unreliable")).await, Ok((status, _)) if status == 200)
        {
            ok += 1;
        }
    }
    println!(
        "\n▶ 20 GETs while every other request is a 503: {ok} succeed (retries land where they can)\n  \
         the throttle sheds nothing while half the calls succeed: {:?}, rejection probability {}",
        throttle.state(),
        throttle.metrics().rejection_probability
    );

    state.unreliable.store(2, Ordering::Relaxed);
    let before = state.unreliable_hits.load(Ordering::Relaxed);
    while throttle.state() != ThrottleState::Shedding {
        let _ = call(&mut client, get_request(addr, "/unreliable")).await;
    }
    println!(
        "\n▶ the route goes down: after {} attempts failed in a row the throttle sends only probes",
        state.unreliable_hits.load(Ordering::Relaxed) - before
    );
    show(
        "GET /unreliable while shedding: refused at once, never sent",
        &mut client,
        get_request(addr, "/unreliable"),
    )
    .await;

    let fallback = FallbackLayer::sync(|failure: Failure<hyper::body::Incoming>| {
        let note = format!(
            "cached recommendations (the live ones are {:?})",
            failure.reason
        );
        http::Response::new(ResponseBody::full(Bytes::from(note)))
    });
    let mut answered = fallback.layer(&mut client);
    let start = Instant::now();
    if let Ok(response) = answered
        .ready()
        .await
        .expect("ready")
        .call(get_request(addr, "/unreliable"))
        .await
    {
        let mark = response.headers()[FALLBACK_HEADER].clone();
        let text = match response.into_body().collect().await {
            Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
            Err(err) => format!("(body failed: {err})"),
        };
        println!(
            "\n▶ the same call behind a fallback: answered in {} ms, marked `{FALLBACK_HEADER}: {}`\n  {text}",
            start.elapsed().as_millis(),
            mark.to_str().unwrap_or("?"),
        );
    }

    state.unreliable.store(0, Ordering::Relaxed);
    let wait = throttle.metrics().next_probe_in.unwrap_or_default();
    tokio::time::sleep(wait).await;
    show(
        "the route recovers; the next call is the probe, and succeeds",
        &mut client,
        get_request(addr, "/unreliable"),
    )
    .await;
    println!(
        "  the throttle is {:?} again, nothing shed",
        throttle.state()
    );
}

async fn idempotency_demo(addr: SocketAddr, state: &Flaky) {
    println!("\n── idempotency keys (client: key ⊃ retry; server: idempotency layer) ──");
    // Every POST gets a fresh key before the retry layer, so all its attempts share it.
    let mut client = ServiceBuilder::new()
        .layer(AddIdempotencyKeyLayer::new())
        .service(retrying_client());
    let checkout = || {
        http::Request::post(format!("http://{addr}/checkout"))
            .body(Empty::new())
            .expect("valid request")
    };
    state.lose_next_checkout.store(true, Ordering::Relaxed);
    show(
        "POST /checkout, first answer lost: retried with the same key, the stored answer replayed",
        &mut client,
        checkout(),
    )
    .await;
    show(
        "POST /checkout again (a new request, so a new key): a second order",
        &mut client,
        checkout(),
    )
    .await;
    println!(
        "  the handler placed {} orders for 2 requests and 3 attempts",
        state.checkouts.load(Ordering::Relaxed)
    );
}

/// The retry stack: request bodies kept for replay, then the HTTP retry policy (idempotent or
/// keyed requests; 5xx, 429 and errors retried; `Retry-After` honoured), 4 attempts.
fn retrying_client() -> impl Service<
    http::Request<Body>,
    Response = http::Response<hyper::body::Incoming>,
    Error = BoxError,
    Future: Send,
> + Send {
    let http = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Body>>();
    ServiceBuilder::new()
        .layer(BufferBodyLayer::default())
        .layer(
            RetryLayer::new()
                .policy(HttpPolicy::new())
                .max_attempts(NonZeroU32::new(4).expect("non-zero")),
        )
        .service(http)
}

async fn retry_demo(addr: SocketAddr, state: &Flaky) {
    println!("\n── retries (4 attempts, full-jitter backoff from 50 ms, Retry-After honoured) ──");
    show(
        "GET /shaky (fails 2 of 3): the client sees one success",
        &mut retrying_client(),
        get_request(addr, "/shaky"),
    )
    .await;
    println!(
        "  the route saw {} attempts",
        state.shaky.load(Ordering::Relaxed)
    );

    show(
        "GET /throttled (503, Retry-After: 1): waited out exactly as asked",
        &mut retrying_client(),
        get_request(addr, "/throttled"),
    )
    .await;

    let post = |key: Option<&'static str>| {
        let mut request = http::Request::post(format!("http://{addr}/order"));
        if let Some(key) = key {
            request = request.header(IDEMPOTENCY_KEY, key);
        }
        request.body(Empty::new()).expect("valid request")
    };
    show(
        "POST /order without Idempotency-Key: not safe to repeat, sent once",
        &mut retrying_client(),
        post(None),
    )
    .await;
    show(
        "POST /order with Idempotency-Key: retried after the first attempt fails",
        &mut retrying_client(),
        post(Some("order-42")),
    )
    .await;
    println!(
        "  the order route saw {} requests for 2 calls",
        state.orders.load(Ordering::Relaxed)
    );
}

/// A breaker in front of `/flaky`: opens after three failures, rejects at once while open,
/// and closes when a probe finds the route healthy again.
async fn breaker_demo(addr: SocketAddr, flaky: &Flaky) {
    println!("\n── circuit breaker in front of /flaky (opens after 3 failures, open for 1 s) ──");
    let breaker = CircuitBreakerLayer::builder()
        .name("flaky")
        .classifier(StatusClassifier::new())
        .consecutive_failures(NonZeroU32::new(3).expect("non-zero"))
        .open_for(Duration::from_secs(1))
        .build()
        .expect("valid breaker configuration");
    let handle = breaker.handle();
    let mut transitions = handle.subscribe();
    // Prints the transitions that happened since the last call, in order.
    let mut print_transitions = move || {
        while let Ok(t) = transitions.try_recv() {
            println!("  ⇢ breaker: {:?} → {:?} ({:?})", t.from, t.to, t.reason);
        }
    };
    let mut svc = ServiceBuilder::new()
        .map_err(BoxError::from)
        .layer(breaker)
        .service(client(Duration::from_millis(500)));

    for attempt in 1..=5 {
        let title = format!("GET /flaky #{attempt} (route down)");
        show(&title, &mut svc, get_request(addr, "/flaky")).await;
        print_transitions();
    }
    println!(
        "\n  the route saw {} requests for 5 calls; the breaker is {:?}",
        flaky.hits.load(Ordering::Relaxed),
        handle.state()
    );

    flaky.healthy.store(true, Ordering::Relaxed);
    println!("\n  the route recovers; waiting out the open duration…");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    print_transitions();
    for title in ["GET /flaky (the probe)", "GET /flaky (closed again)"] {
        show(title, &mut svc, get_request(addr, "/flaky")).await;
        print_transitions();
    }
    let metrics = handle.metrics();
    println!(
        "\n  breaker {:?} after {} transitions",
        metrics.state, metrics.transitions
    );
}
