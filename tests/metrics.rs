//! The `metrics` feature through the public API: every layer records into the installed
//! recorder what its table in `palisade::metrics` says, with its `name` label, on paused time.
//!
//! One recorder serves the whole binary (the facade has one global recorder), so each test
//! names its layers uniquely and reads only its own series.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use http::{Request, StatusCode};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};
use palisade::cache::CacheLayer;
use palisade::circuit_breaker::{CircuitBreakerError, CircuitBreakerLayer};
use palisade::deadline::Deadline;
use palisade::error::BoxError;
use palisade::idempotency::IdempotencyLayer;
use palisade::retry::{Backoff, Jitter, RetryBudget, RetryLayer};
use palisade::throttle::ThrottleLayer;
use palisade::timeout::{ServerTimeoutLayer, TimeoutLayer};
use palisade::{NoExtensions, Ratio};
use tokio::time::advance;
use tower::{Layer, Service, ServiceExt, service_fn};

const MS: Duration = Duration::from_millis(1);

/// A recorder that keeps every handle's value where the tests can read it without resetting
/// it (metrics-util's debugging recorder drains on each snapshot, which would let one test
/// zero another's counters).
struct Keeping(Arc<Registry<Key, AtomicStorage>>);

impl Recorder for Keeping {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0
            .get_or_create_counter(key, |c| Counter::from_arc(Arc::clone(c)))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.0
            .get_or_create_gauge(key, |g| Gauge::from_arc(Arc::clone(g)))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.0
            .get_or_create_histogram(key, |h| Histogram::from_arc(Arc::clone(h)))
    }
}

fn registry() -> &'static Registry<Key, AtomicStorage> {
    static REGISTRY: OnceLock<Arc<Registry<Key, AtomicStorage>>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let registry = Arc::new(Registry::atomic());
        metrics::set_global_recorder(Keeping(Arc::clone(&registry)))
            .expect("the only recorder of this binary");
        registry
    })
}

/// Whether `key` is `metric` with every one of `labels`.
fn matches(key: &Key, metric: &str, labels: &[(&str, &str)]) -> bool {
    key.name() == metric
        && labels.iter().all(|(name, value)| {
            key.labels()
                .any(|label| label.key() == *name && label.value() == *value)
        })
}

/// The sum of the counters `metric{labels…}` (0 if none was registered).
fn counter(metric: &str, labels: &[(&str, &str)]) -> u64 {
    registry()
        .get_counter_handles()
        .into_iter()
        .filter(|(key, _)| matches(key, metric, labels))
        .map(|(_, value)| value.load(std::sync::atomic::Ordering::SeqCst))
        .sum()
}

/// Whether a counter `metric{labels…}` is registered (at zero or more).
fn registered(metric: &str, labels: &[(&str, &str)]) -> bool {
    registry()
        .get_counter_handles()
        .into_iter()
        .any(|(key, _)| matches(&key, metric, labels))
}

/// The gauge `metric{labels…}`, if registered.
fn gauge(metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    registry()
        .get_gauge_handles()
        .into_iter()
        .find(|(key, _)| matches(key, metric, labels))
        .map(|(_, value)| f64::from_bits(value.load(std::sync::atomic::Ordering::SeqCst)))
}

/// The samples of the histogram `metric{labels…}`.
fn samples(metric: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    registry()
        .get_histogram_handles()
        .into_iter()
        .filter(|(key, _)| matches(key, metric, labels))
        .flat_map(|(_, bucket)| bucket.data())
        .collect()
}

/// Every `outcome` of `palisade_calls_total` for one layer instance.
fn outcomes(layer: &str, name: &str) -> HashMap<String, u64> {
    registry()
        .get_counter_handles()
        .into_iter()
        .filter(|(key, _)| {
            matches(
                key,
                "palisade_calls_total",
                &[("layer", layer), ("name", name)],
            )
        })
        .filter_map(|(key, value)| {
            let outcome = key
                .labels()
                .find(|l| l.key() == "outcome")?
                .value()
                .to_owned();
            let count = value.load(std::sync::atomic::Ordering::SeqCst);
            (count > 0).then_some((outcome, count))
        })
        .collect()
}

fn expected(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

fn failing() -> impl Service<(), Response = (), Error = BoxError> + Clone {
    service_fn(|()| async { Err::<(), BoxError>("down".into()) })
}

#[tokio::test(start_paused = true)]
async fn the_breaker_counts_outcomes_rejections_transitions_and_its_state() {
    registry();
    let name = "metrics-breaker";
    let layer = CircuitBreakerLayer::builder()
        .name(name)
        .consecutive_failures(NonZeroU32::new(2).unwrap())
        .open_for(Duration::from_secs(1))
        .build()
        .unwrap();
    let labels = [("layer", "circuit_breaker"), ("name", name)];
    let state = |state| {
        gauge(
            "palisade_circuit_breaker_state",
            &[labels[1], ("state", state)],
        )
    };
    assert_eq!(
        state("closed"),
        None,
        "nothing is registered before the first call"
    );

    let mut svc = layer.layer(failing());
    for _ in 0..2 {
        let result = svc.ready().await.unwrap().call(()).await;
        assert!(matches!(result, Err(CircuitBreakerError::Inner(_))));
    }
    for _ in 0..3 {
        let result = svc.ready().await.unwrap().call(()).await;
        assert!(matches!(result, Err(CircuitBreakerError::Open(_))));
    }
    assert_eq!(
        outcomes("circuit_breaker", name),
        expected(&[("failure", 2), ("rejected", 3)])
    );
    assert_eq!(
        counter(
            "palisade_rejections_total",
            &[labels[0], labels[1], ("reason", "open")]
        ),
        3
    );
    assert_eq!(
        counter(
            "palisade_circuit_breaker_transitions_total",
            &[labels[1], ("from", "closed"), ("to", "open")]
        ),
        1
    );
    assert_eq!((state("closed"), state("open")), (Some(0.0), Some(1.0)));
    assert_eq!(gauge("palisade_in_flight", &labels), Some(0.0));
    assert_eq!(
        samples("palisade_request_duration_seconds", &labels).len(),
        2
    );

    // The open period ends: half-open, and a probe that is dropped counts as cancelled.
    advance(Duration::from_secs(1)).await;
    tokio::task::yield_now().await;
    assert_eq!((state("open"), state("half_open")), (Some(0.0), Some(1.0)));
    let mut hanging = layer.layer(service_fn(|()| {
        std::future::pending::<Result<(), BoxError>>()
    }));
    let probe = hanging.ready().await.unwrap().call(());
    assert_eq!(gauge("palisade_in_flight", &labels), Some(1.0));
    drop(probe);
    assert_eq!(gauge("palisade_in_flight", &labels), Some(0.0));
    assert_eq!(outcomes("circuit_breaker", name)["cancelled"], 1);
}

fn slow(delay: Duration) -> impl Service<Request<()>, Response = (), Error = BoxError> + Clone {
    service_fn(move |_: Request<()>| async move {
        tokio::time::sleep(delay).await;
        Ok::<(), BoxError>(())
    })
}

#[tokio::test(start_paused = true)]
async fn the_timeout_counts_answers_timeouts_by_kind_and_their_durations() {
    registry();
    let name = "metrics-timeout";
    let layer = TimeoutLayer::new(100 * MS).name(name);
    let labels = [("layer", "timeout"), ("name", name)];
    layer
        .layer(slow(30 * MS))
        .oneshot(Request::new(()))
        .await
        .unwrap();
    let error = layer
        .layer(slow(Duration::from_secs(1)))
        .oneshot(Request::new(()))
        .await;
    assert!(error.is_err());
    // A deadline sooner than the limit, and one already gone at the call.
    let mut soon = Request::new(());
    soon.extensions_mut().insert(Deadline::after(50 * MS));
    assert!(
        layer
            .layer(slow(Duration::from_secs(1)))
            .oneshot(soon)
            .await
            .is_err()
    );
    let mut gone = Request::new(());
    gone.extensions_mut()
        .insert(Deadline::after(Duration::ZERO));
    advance(MS).await;
    assert!(layer.layer(slow(MS)).oneshot(gone).await.is_err());

    assert_eq!(
        outcomes("timeout", name),
        expected(&[("success", 1), ("timeout", 3)])
    );
    let kind = |kind| {
        counter(
            "palisade_timeouts_total",
            &[labels[0], labels[1], ("kind", kind)],
        )
    };
    assert_eq!((kind("limit"), kind("deadline")), (1, 2));
    // On paused time the durations are exact: 30 ms, 100 ms, 50 ms (the expired call has
    // none).
    let mut durations = samples("palisade_request_duration_seconds", &labels);
    durations.sort_by(f64::total_cmp);
    assert_eq!(durations, [0.03, 0.05, 0.1]);
    assert_eq!(gauge("palisade_in_flight", &labels), Some(0.0));
}

#[tokio::test(start_paused = true)]
async fn the_server_timeout_counts_a_5xx_as_a_failure_and_a_late_handler_as_a_timeout() {
    registry();
    let name = "metrics-server-timeout";
    let app: Router = Router::new()
        .route("/ok", post(|| async { "fine" }))
        .route(
            "/broken",
            post(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
        )
        .route(
            "/late",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .layer(
            ServerTimeoutLayer::new(Duration::from_secs(1))
                .accept(palisade::http::DeadlineHeader::grpc())
                .name(name),
        );
    for (path, status) in [("/ok", 200), ("/broken", 500), ("/late", 503)] {
        let request = Request::post(path).body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), status, "{path}");
    }
    // A malformed deadline header is refused before the handler runs.
    let malformed = Request::post("/ok")
        .header("grpc-timeout", "soon")
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.oneshot(malformed).await.unwrap().status(), 400);
    assert_eq!(
        outcomes("server_timeout", name),
        expected(&[
            ("success", 1),
            ("failure", 1),
            ("timeout", 1),
            ("rejected", 1)
        ])
    );
    assert_eq!(
        counter(
            "palisade_rejections_total",
            &[("name", name), ("reason", "invalid_deadline")]
        ),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn the_retry_counts_waits_by_reason_attempts_and_budget_refusals() {
    registry();
    let name = "metrics-retry";
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let flaky = {
        let calls = Arc::clone(&calls);
        service_fn(move |_: NoExtensions<u32>| {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                tokio::time::sleep(10 * MS).await;
                if n % 2 == 0 {
                    Err::<(), BoxError>("flaky".into())
                } else {
                    Ok(())
                }
            }
        })
    };
    let layer = RetryLayer::new()
        .name(name)
        .backoff(
            Backoff::new(20 * MS, Duration::from_secs(1))
                .unwrap()
                .jitter(Jitter::None),
        )
        .budget(RetryBudget::unlimited());
    // Fails, waits 20 ms, succeeds.
    layer.layer(flaky).oneshot(NoExtensions(1)).await.unwrap();
    let labels = [("layer", "retry"), ("name", name)];
    assert_eq!(outcomes("retry", name), expected(&[("success", 1)]));
    assert_eq!(
        counter(
            "palisade_retries_total",
            &[labels[0], labels[1], ("reason", "backoff")]
        ),
        1
    );
    assert_eq!(
        samples("palisade_attempt_duration_seconds", &labels),
        [0.01, 0.01]
    );
    assert_eq!(
        samples("palisade_request_duration_seconds", &labels),
        [0.04]
    );

    // A budget that allows no retry: the failure is returned, and the refusal counted.
    // Two tokens at 0.1 each: the first retry is refused.
    let stingy = RetryBudget::token_bucket()
        .max_tokens(NonZeroU32::new(2).unwrap())
        .token_ratio(Ratio::new_const(0.1))
        .build()
        .unwrap();
    let refused = RetryLayer::new().name(name).budget(stingy);
    let down = service_fn(|_: NoExtensions<u32>| async { Err::<(), BoxError>("down".into()) });
    assert!(refused.layer(down).oneshot(NoExtensions(2)).await.is_err());
    assert_eq!(counter("palisade_retry_budget_refusals_total", &labels), 1);
    assert_eq!(outcomes("retry", name)["failure"], 1);
}

#[tokio::test(start_paused = true)]
async fn the_throttle_counts_what_it_sheds() {
    registry();
    let name = "metrics-throttle";
    let layer = ThrottleLayer::builder()
        .name(name)
        .window(NonZeroU32::new(10).unwrap())
        .minimum_calls(NonZeroU32::new(10).unwrap())
        .seed(7)
        .build()
        .unwrap();
    let mut svc = layer.layer(failing());
    let mut shed = 0;
    for _ in 0..200 {
        if let Err(palisade::throttle::ThrottleError::Throttled(_)) =
            svc.ready().await.unwrap().call(()).await
        {
            shed += 1;
        }
    }
    assert!(shed > 0, "a dependency that always fails is throttled");
    let labels = [("layer", "throttle"), ("name", name)];
    assert_eq!(
        counter(
            "palisade_rejections_total",
            &[labels[0], labels[1], ("reason", "throttled")]
        ),
        shed
    );
    let seen = outcomes("throttle", name);
    assert_eq!(seen["rejected"], shed);
    assert_eq!(seen["failure"] + shed, 200);
}

#[tokio::test(start_paused = true)]
async fn idempotency_counts_claims_replays_and_mismatches() {
    registry();
    let name = "metrics-idempotency";
    let app: Router = Router::new()
        .route("/orders", post(|| async { "placed" }))
        .layer(IdempotencyLayer::builder().name(name).build().unwrap());
    let order = |body: &'static str| {
        Request::post("/orders")
            .header("idempotency-key", "\"k-1\"")
            .body(Body::from(body))
            .unwrap()
    };
    let statuses = [
        app.clone().oneshot(order("one")).await.unwrap().status(),
        app.clone().oneshot(order("one")).await.unwrap().status(),
        app.clone().oneshot(order("two")).await.unwrap().status(),
    ];
    assert_eq!(statuses, [200, 200, 422]);
    let outcome = |outcome| {
        counter(
            "palisade_idempotency_requests_total",
            &[("name", name), ("outcome", outcome)],
        )
    };
    assert_eq!(
        (outcome("claimed"), outcome("replayed"), outcome("mismatch")),
        (1, 1, 1)
    );
    let malformed = Request::post("/orders")
        .header("idempotency-key", "not quoted")
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.oneshot(malformed).await.unwrap().status(), 400);
    assert_eq!(outcome("invalid"), 1);
}

#[tokio::test(start_paused = true)]
async fn the_cache_counts_misses_hits_and_collapsed_callers() {
    registry();
    let name = "metrics-cache";
    let origin = service_fn(|id: u64| async move {
        tokio::time::sleep(10 * MS).await;
        Ok::<_, BoxError>(Arc::<str>::from(format!("value {id}")))
    });
    let cache = CacheLayer::builder(Duration::from_secs(1), |id: &u64| Some(*id))
        .name(name)
        .build::<u64, Arc<str>>()
        .unwrap();
    let svc = cache.layer(origin);
    let (a, b) = tokio::join!(svc.clone().oneshot(1), svc.clone().oneshot(1));
    assert_eq!((&*a.unwrap(), &*b.unwrap()), ("value 1", "value 1"));
    svc.clone().oneshot(1).await.unwrap();
    svc.clone().oneshot(1).await.unwrap();
    let result = |result| {
        counter(
            "palisade_cache_results_total",
            &[("layer", "cache"), ("name", name), ("result", result)],
        )
    };
    assert_eq!(
        (result("miss"), result("collapsed"), result("hit")),
        (1, 1, 2)
    );
    // Every result is registered with the first, so a ratio over them has its series.
    let stale = [
        ("layer", "cache"),
        ("name", name),
        ("result", "stale_if_error"),
    ];
    assert!(registered("palisade_cache_results_total", &stale));
    assert_eq!(result("stale_if_error"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_named_client_preset_names_every_stage_even_its_retry_switched_off() {
    use palisade::http::ReplayBody;
    use palisade::preset::HttpClientLayer;
    registry();
    let name = "metrics-preset";
    let client = HttpClientLayer::new()
        .name(name)
        .without_retry()
        .layer(service_fn(|_: Request<ReplayBody<String>>| async {
            Ok::<_, BoxError>(http::Response::new(String::new()))
        }));
    client
        .oneshot(Request::new(String::from("x")))
        .await
        .unwrap();
    for (layer, stage) in [
        ("retry", name.to_owned()),
        ("throttle", name.to_owned()),
        ("timeout", format!("{name}/total")),
        ("timeout", format!("{name}/attempt")),
    ] {
        assert_eq!(
            outcomes(layer, &stage),
            expected(&[("success", 1)]),
            "{layer} {stage}"
        );
    }
}
