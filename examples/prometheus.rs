//! palisade's metrics in Prometheus: an axum app behind the server preset, calling a flaky
//! upstream through the client preset and a pricing backend through a cache and a circuit
//! breaker, with `/metrics` served next to it. Every metric of `palisade::metrics` shows up.
//!
//! ```text
//! cargo run --example prometheus                 # a burst of traffic, then the palisade_* series
//! cargo run --example prometheus -- --serve 9000 # keep serving on 127.0.0.1:9000
//! curl -s -XPOST 127.0.0.1:9000/orders ; curl -s 127.0.0.1:9000/metrics | grep palisade_
//! ```
//!
//! The recorder is `metrics-exporter-prometheus`, installed first thing in `main` (the layers
//! resolve their handles at their first call, so it only has to come before traffic). Its
//! output is rendered by an axum handler, so no second listener is needed; the handler is
//! routed *outside* the palisade layers, so a scrape is never throttled, timed out or counted.
//!
//! # Queries
//!
//! Requests per second per pod, and the requests the handlers are working on now (the queue
//! depth), from the server timeout, the outermost server layer:
//!
//! ```text
//! sum by (pod) (rate(palisade_calls_total{layer="server_timeout", name="api"}[1m]))
//! sum by (pod) (palisade_in_flight{layer="server_timeout", name="api"})
//! ```
//!
//! Upstream health, from the client preset (its stages are named `upstream`,
//! `upstream/total` and `upstream/attempt`):
//!
//! ```text
//! # share of attempts the throttle shed
//! sum(rate(palisade_rejections_total{layer="throttle", name="upstream"}[5m]))
//!   / sum(rate(palisade_calls_total{layer="throttle", name="upstream"}[5m]))
//! # retries per request, and the budget's refusals
//! sum(rate(palisade_retries_total{name="upstream"}[5m]))
//!   / sum(rate(palisade_calls_total{layer="retry", name="upstream"}[5m]))
//! rate(palisade_retry_budget_refusals_total{name="upstream"}[5m])
//! # p99 of a whole client call, attempts and waits included
//! histogram_quantile(0.99, sum by (le) (rate(palisade_request_duration_seconds_bucket{layer="timeout", name="upstream/total"}[5m])))
//! ```
//!
//! # A Kubernetes HPA on requests per second
//!
//! The reference system's HPA scales on `http_requests_per_second` (a per-pod custom metric).
//! A `prometheus-adapter` rule that derives it, and the in-flight depth, from palisade's
//! series:
//!
//! ```yaml
//! rules:
//!   - seriesQuery: 'palisade_calls_total{layer="server_timeout",namespace!="",pod!=""}'
//!     resources: {overrides: {namespace: {resource: namespace}, pod: {resource: pod}}}
//!     name: {matches: "palisade_calls_total", as: "http_requests_per_second"}
//!     metricsQuery: 'sum(rate(<<.Series>>{<<.LabelMatchers>>}[1m])) by (<<.GroupBy>>)'
//!   - seriesQuery: 'palisade_in_flight{layer="server_timeout",namespace!="",pod!=""}'
//!     resources: {overrides: {namespace: {resource: namespace}, pod: {resource: pod}}}
//!     name: {matches: "palisade_in_flight", as: "http_requests_in_flight"}
//!     metricsQuery: 'sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)'
//! ```
//!
//! and the HPA that reads it (`autoscaling/v2`):
//!
//! ```yaml
//! metrics:
//!   - type: Pods
//!     pods:
//!       metric: {name: http_requests_per_second}
//!       target: {type: AverageValue, averageValue: "100"}
//! ```
//!
//! The `namespace` and `pod` labels come from Prometheus' Kubernetes service discovery, not
//! from palisade: a scrape config with `kubernetes_sd_configs` (role `pod`) adds them.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use palisade::cache::CacheLayer;
use palisade::circuit_breaker::CircuitBreakerLayer;
use palisade::error::BoxError;
use palisade::http::ReplayBody;
use palisade::preset::{HttpClientLayer, HttpServerLayer};
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

/// Bucket bounds for the duration histograms, in seconds: 1 ms to 10 s.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The requests the example sends itself before printing the series.
const BURST: usize = 300;

type Upstream = BoxCloneSyncService<http::Request<Full<Bytes>>, http::Response<Bytes>, BoxError>;
type Prices = BoxCloneSyncService<u64, Arc<str>, BoxError>;

/// What the order handler calls.
#[derive(Clone)]
struct Deps {
    stock: Upstream,
    stock_url: String,
    prices: Prices,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let serve = parse_serve()?;
    // First: every layer records into the recorder installed when it first records.
    let metrics = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("duration_seconds".to_owned()), BUCKETS)?
        .install_recorder()?;
    // Histograms need the exporter's upkeep; without the HTTP listener feature, it is ours.
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });

    let upstream = serve_upstream().await?;
    let app = app(upstream, metrics);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", serve.unwrap_or(0))).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            eprintln!("app server stopped: {error}");
        }
    });

    println!("app on http://{addr} (POST /orders, GET /metrics)");
    burst(addr).await?;
    let scrape = get_text(addr, "/metrics").await?;
    println!("\nthe palisade series after {BURST} orders (zeros and buckets left out):\n");
    for line in scrape.lines().filter(|line| {
        line.starts_with("palisade_") && !line.contains("_bucket{") && !line.ends_with(" 0")
    }) {
        println!("  {line}");
    }
    let mut names: Vec<&str> = scrape
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split(' ').next())
        .filter(|name| name.starts_with("palisade_"))
        .collect();
    names.sort_unstable();
    println!(
        "\n{} palisade metrics exposed: {}",
        names.len(),
        names.join(", ")
    );
    if serve.is_some() {
        println!("\nserving on http://{addr} until interrupted");
        tokio::signal::ctrl_c().await?;
    }
    Ok(())
}

/// `--serve PORT`, if given.
fn parse_serve() -> Result<Option<u16>, BoxError> {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next()) {
        (None, _) => Ok(None),
        (Some("--serve"), Some(port)) => Ok(Some(port.parse()?)),
        _ => Err("usage: prometheus [--serve PORT]".into()),
    }
}

/// The app: `/orders` behind the server preset, calling the upstream through the client
/// preset; `/metrics` outside both.
fn app(upstream: SocketAddr, metrics: PrometheusHandle) -> Router {
    let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Full<Bytes>>>();
    let upstream_client = collected(
        HttpClientLayer::new()
            .name("upstream")
            .total_timeout(Duration::from_secs(1))
            .attempt_timeout(Duration::from_millis(100))
            .layer(client),
    );
    let deps = Deps {
        stock: upstream_client,
        stock_url: format!("http://{upstream}/stock"),
        prices: prices(),
    };
    let orders = Router::new()
        .route("/orders/{item}", post(place_order))
        .with_state(deps)
        .layer(HttpServerLayer::new().name("api"));
    orders.merge(Router::new().route("/metrics", get(move || async move { metrics.render() })))
}

/// Prices by item: a stale-while-revalidate cache (`prices`) over a circuit breaker
/// (`pricing`) over a backend that goes down for 200 ms at its 20th call.
fn prices() -> Prices {
    let calls = Arc::new(AtomicU64::new(0));
    let outage = Arc::new(std::sync::OnceLock::new());
    let backend = tower::service_fn(move |item: u64| {
        if calls.fetch_add(1, Ordering::Relaxed) == 20 {
            outage.get_or_init(tokio::time::Instant::now);
        }
        let down = outage.get().is_some_and(|since: &tokio::time::Instant| {
            since.elapsed() < Duration::from_millis(200)
        });
        async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            if down {
                Err::<Arc<str>, BoxError>("pricing backend down".into())
            } else {
                Ok(Arc::from(format!("{}.00", 10 + item)))
            }
        }
    });
    let breaker = CircuitBreakerLayer::builder()
        .name("pricing")
        .consecutive_failures(NonZeroU32::new(5).expect("five"))
        .open_for(Duration::from_millis(20))
        .build()
        .expect("a valid breaker");
    let cache = CacheLayer::builder(Duration::from_millis(20), |item: &u64| Some(*item))
        .name("prices")
        .stale_while_revalidate(Duration::from_millis(20))
        .stale_if_error(Duration::from_secs(1))
        .build::<u64, Arc<str>>()
        .expect("a valid cache");
    let guarded = breaker
        .layer(backend)
        .map_err(palisade::circuit_breaker::CircuitBreakerError::into_box_error);
    BoxCloneSyncService::new(cache.layer(guarded).map_err(BoxError::from))
}

/// Prices the item, checks stock upstream, and answers with what they said.
async fn place_order(
    State(deps): State<Deps>,
    Path(item): Path<u64>,
) -> Result<String, (StatusCode, String)> {
    let price = deps
        .prices
        .oneshot(item)
        .await
        .map_err(|error| (StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n")))?;
    let request = http::Request::get(deps.stock_url)
        .body(Full::new(Bytes::new()))
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    match deps.stock.oneshot(request).await {
        Ok(response) if response.status().is_success() => Ok(format!("placed at {price}\n")),
        Ok(response) => Err((
            StatusCode::BAD_GATEWAY,
            format!("upstream said {}\n", response.status()),
        )),
        Err(error) => Err((StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n"))),
    }
}

/// `service`, its response bodies collected, boxed.
fn collected<S, B>(service: S) -> Upstream
where
    S: tower::Service<http::Request<Full<Bytes>>, Response = http::Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<BoxError>,
{
    BoxCloneSyncService::new(tower::service_fn(move |request| {
        let service = service.clone();
        async move {
            let response = service.oneshot(request).await.map_err(Into::into)?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(Into::into)?.to_bytes();
            Ok::<_, BoxError>(http::Response::from_parts(parts, body))
        }
    }))
}

/// A flaky upstream on a free loopback port: every fifth call answers `503`, every 25th
/// stalls for 300 ms (past the client's 100 ms attempt timeout).
async fn serve_upstream() -> Result<SocketAddr, BoxError> {
    let calls = Arc::new(AtomicU64::new(0));
    let stock = Router::new().route(
        "/stock",
        get(move || {
            let n = calls.fetch_add(1, Ordering::Relaxed);
            async move {
                if n % 25 == 24 {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                if n % 5 == 4 {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, stock).await {
            eprintln!("upstream stopped: {error}");
        }
    });
    Ok(addr)
}

/// [`BURST`] orders for seven items, ten at a time, each with its own `Idempotency-Key`;
/// after each batch, its first order is sent again (a client's retry: replayed, not run).
async fn burst(addr: SocketAddr) -> Result<(), BoxError> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let order = |n: usize| {
        http::Request::post(format!("http://{addr}/orders/{}", n % 7))
            .header("idempotency-key", format!("\"order-{n}\""))
            .body(Body::empty())
    };
    let mut placed = 0;
    for batch in 0..BURST / 10 {
        let mut requests = Vec::new();
        for n in batch * 10..batch * 10 + 10 {
            requests.push(client.request(order(n)?));
        }
        for response in futures_join(requests).await {
            if response?.status().is_success() {
                placed += 1;
            }
        }
        client.request(order(batch * 10)?).await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("{placed} of {BURST} orders placed");
    Ok(())
}

/// Awaits every future of `futures`, concurrently.
async fn futures_join<F>(futures: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("a request task panicked"));
    }
    outputs
}

/// `GET path` on `addr`, the body as text.
async fn get_text(addr: SocketAddr, path: &str) -> Result<String, BoxError> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let response = client
        .request(http::Request::get(format!("http://{addr}{path}")).body(Body::empty())?)
        .await?;
    let body = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8(body.to_vec())?)
}
