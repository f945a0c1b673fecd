//! The event hooks through the public API, on paused tokio time: each layer tells its hook
//! what happened, when it happened, exactly once per event, and a hook set twice runs twice.

mod support;

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::cache::{CacheEvent, CacheLayer};
use palisade::circuit_breaker::{
    CircuitBreakerError, CircuitBreakerLayer, State, TransitionReason,
};
use palisade::deadline::Deadline;
use palisade::error::BoxError;
use palisade::retry::{
    Backoff, BudgetRefused, Decision, Jitter, Policy, RetryBudget, RetryEvent, RetryLayer,
    RetryReason,
};
use palisade::throttle::ThrottleLayer;
use palisade::timeout::{ServerTimeoutLayer, TimeoutKind, TimeoutLayer};
use palisade::{NoExtensions, Ratio};
use tokio::time::{Instant, advance};
use tower::{Layer, Service, ServiceExt, service_fn};

const MS: Duration = Duration::from_millis(1);

/// What a hook was told, in order.
fn recorder<T: Send + 'static>() -> (Arc<Mutex<Vec<T>>>, impl Fn(T) + Send + Sync + 'static) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let push = {
        let seen = Arc::clone(&seen);
        move |item: T| seen.lock().unwrap().push(item)
    };
    (seen, push)
}

fn failing() -> impl Service<(), Response = (), Error = BoxError> + Clone {
    service_fn(|()| async { Err::<(), BoxError>("down".into()) })
}

#[tokio::test(start_paused = true)]
async fn the_breaker_tells_each_transition_with_its_instant_and_each_rejection() {
    support::init_tracing();
    let (transitions, push) = recorder();
    let (rejections, reject) = recorder();
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(NonZeroU32::new(2).unwrap())
        .open_for(Duration::from_secs(1))
        .on_transition(move |t| push((t.from, t.to, t.reason, t.at)))
        .on_rejected(move |open| reject(open.state()))
        .build()
        .unwrap();
    let mut svc = layer.layer(failing());
    let start = Instant::now();
    advance(5 * MS).await;
    for _ in 0..2 {
        let result = svc.ready().await.unwrap().call(()).await;
        assert!(matches!(result, Err(CircuitBreakerError::Inner(_))));
    }
    assert_eq!(
        *transitions.lock().unwrap(),
        [(
            State::Closed,
            State::Open,
            TransitionReason::ConsecutiveFailures,
            start + 5 * MS
        )]
    );
    assert!(rejections.lock().unwrap().is_empty(), "no rejection yet");
    for _ in 0..3 {
        let result = svc.ready().await.unwrap().call(()).await;
        assert!(matches!(result, Err(CircuitBreakerError::Open(_))));
    }
    assert_eq!(*rejections.lock().unwrap(), [State::Open; 3]);
    advance(Duration::from_secs(1)).await;
    tokio::task::yield_now().await;
    let last = *transitions.lock().unwrap().last().unwrap();
    assert_eq!(
        (last.0, last.1, last.2),
        (State::Open, State::HalfOpen, TransitionReason::OpenElapsed)
    );
    assert!(last.3 >= start + 5 * MS + Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_hook_set_twice_runs_twice_in_order() {
    let (seen, push) = recorder();
    let push = Arc::new(push);
    let (first, second) = (Arc::clone(&push), Arc::clone(&push));
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(NonZeroU32::new(1).unwrap())
        .on_rejected(move |_| first("first"))
        .on_rejected(move |_| second("second"))
        .build()
        .unwrap();
    let mut svc = layer.layer(failing());
    let _ = svc.ready().await.unwrap().call(()).await;
    let _ = svc.ready().await.unwrap().call(()).await;
    assert_eq!(*seen.lock().unwrap(), ["first", "second"]);
}

/// Retries `Err`s; an error `wait <ms>` is a pushback of that long.
#[derive(Clone, Copy)]
struct Scripted;

impl Policy<NoExtensions<u32>, u32> for Scripted {
    fn clone_request(&self, request: &NoExtensions<u32>) -> Option<NoExtensions<u32>> {
        Some(*request)
    }

    fn decide(&self, result: &Result<u32, BoxError>) -> Decision {
        match result {
            Ok(_) => Decision::Done,
            Err(e) if e.to_string().starts_with("wait ") => Decision::RetryAfter(
                e.to_string()[5..]
                    .parse()
                    .map(Duration::from_millis)
                    .unwrap(),
            ),
            Err(_) => Decision::Retry,
        }
    }
}

/// A backend answering its `n`-th call (1-based) from `script` (the last entry repeats).
fn backend(
    script: &'static [Result<u32, &'static str>],
) -> impl Service<NoExtensions<u32>, Response = u32, Error = BoxError> + Clone {
    let calls = Arc::new(AtomicUsize::new(0));
    service_fn(move |_: NoExtensions<u32>| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        let answer = script[n.min(script.len() - 1)];
        async move { answer.map_err(BoxError::from) }
    })
}

#[tokio::test(start_paused = true)]
async fn the_retry_tells_each_wait_with_its_reason_and_each_budget_refusal() {
    support::init_tracing();
    let (retries, push) = recorder::<RetryEvent>();
    let (refusals, refuse) = recorder::<BudgetRefused>();
    let layer = RetryLayer::new()
        .policy(Scripted)
        .max_attempts(NonZeroU32::new(4).unwrap())
        .backoff(
            Backoff::new(10 * MS, Duration::from_secs(1))
                .unwrap()
                .jitter(Jitter::None),
        )
        .budget(RetryBudget::unlimited())
        .on_retry(move |event| push(*event))
        .on_budget_exhausted(move |refused| refuse(*refused));
    let mut svc = layer.layer(backend(&[Err("down"), Err("wait 300"), Ok(7)]));
    let answer = svc.ready().await.unwrap().call(NoExtensions(0)).await;
    assert_eq!(answer.unwrap(), 7);
    let retries = retries.lock().unwrap().clone();
    assert_eq!(retries.len(), 2);
    assert_eq!(
        (retries[0].attempt, retries[0].delay, retries[0].reason),
        (2, 10 * MS, RetryReason::Backoff)
    );
    assert_eq!(
        (retries[1].attempt, retries[1].delay, retries[1].reason),
        (3, 300 * MS, RetryReason::Pushback)
    );
    assert!(refusals.lock().unwrap().is_empty());

    // A budget of two tokens at 0.1 each refuses the first retry of a failing call.
    let (retries, push) = recorder::<RetryEvent>();
    let (refusals, refuse) = recorder::<BudgetRefused>();
    let budget = RetryBudget::token_bucket()
        .max_tokens(NonZeroU32::new(2).unwrap())
        .token_ratio(Ratio::new_const(0.1))
        .build()
        .unwrap();
    let layer = RetryLayer::new()
        .policy(Scripted)
        .budget(budget)
        .on_retry(move |event| push(*event))
        .on_budget_exhausted(move |refused| refuse(*refused));
    let mut svc = layer.layer(backend(&[Err("down")]));
    let answer = svc.ready().await.unwrap().call(NoExtensions(0)).await;
    assert_eq!(answer.unwrap_err().to_string(), "down");
    assert!(retries.lock().unwrap().is_empty());
    assert_eq!(refusals.lock().unwrap().len(), 1);
    assert_eq!(refusals.lock().unwrap()[0].attempts, 1);
}

fn hanging() -> impl Service<http::Request<()>, Response = (), Error = BoxError> + Clone {
    service_fn(|_: http::Request<()>| std::future::pending::<Result<(), BoxError>>())
}

#[tokio::test(start_paused = true)]
async fn the_timeout_tells_each_request_it_abandons_as_the_timer_fires() {
    support::init_tracing();
    let (timeouts, push) = recorder();
    let layer = TimeoutLayer::new(Duration::from_secs(2))
        .on_timeout(move |timed_out| push((timed_out.kind(), timed_out.after(), Instant::now())));
    let mut svc = layer.layer(hanging());
    let start = Instant::now();
    let error = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("timed out"), "{error}");
    // A request whose deadline had passed: told at the call, the inner service never called.
    let mut late = http::Request::new(());
    late.extensions_mut().insert(Deadline::at(Instant::now()));
    svc.ready().await.unwrap().call(late).await.unwrap_err();
    assert_eq!(
        *timeouts.lock().unwrap(),
        [
            (
                TimeoutKind::Limit,
                Duration::from_secs(2),
                start + Duration::from_secs(2)
            ),
            (
                TimeoutKind::Deadline,
                Duration::ZERO,
                start + Duration::from_secs(2)
            ),
        ]
    );
    // A request answered in time tells nothing.
    let mut quick = TimeoutLayer::new(Duration::from_secs(2))
        .on_timeout(|_| panic!("not timed out"))
        .layer(service_fn(|_: http::Request<()>| async {
            Ok::<_, BoxError>(())
        }));
    quick
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_server_timeout_tells_each_handler_that_ran_out_of_time() {
    support::init_tracing();
    let (timeouts, push) = recorder();
    let layer = ServerTimeoutLayer::new(Duration::from_secs(1))
        .on_timeout(move |timed_out| push(timed_out.kind()));
    let mut svc = layer.layer(service_fn(|_: http::Request<()>| {
        std::future::pending::<Result<http::Response<String>, std::convert::Infallible>>()
    }));
    let response = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(*timeouts.lock().unwrap(), [TimeoutKind::Limit]);
}

#[tokio::test(start_paused = true)]
async fn the_throttle_tells_each_call_it_sheds() {
    support::init_tracing();
    let (shed, push) = recorder();
    let layer = ThrottleLayer::builder()
        .shed_after(NonZeroU32::new(3).unwrap())
        .probe_interval(100 * MS)
        .probe_jitter(Ratio::ZERO)
        .on_rejected(move |throttled| push(throttled.retry_after()))
        .build()
        .unwrap();
    let mut svc = layer.layer(failing());
    for _ in 0..3 {
        let _ = svc.ready().await.unwrap().call(()).await;
    }
    assert!(
        shed.lock().unwrap().is_empty(),
        "three failures, nothing shed yet"
    );
    for _ in 0..2 {
        let _ = svc.ready().await.unwrap().call(()).await;
    }
    assert_eq!(*shed.lock().unwrap(), [Some(100 * MS), Some(100 * MS)]);
}

#[tokio::test(start_paused = true)]
async fn the_cache_tells_misses_waits_refreshes_and_stale_if_error() {
    support::init_tracing();
    let (events, push) = recorder::<(u64, CacheEvent)>();
    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let origin = {
        let down = Arc::clone(&down);
        service_fn(move |id: u64| {
            let down = down.load(Ordering::SeqCst);
            async move {
                tokio::time::sleep(10 * MS).await;
                if down {
                    Err::<Arc<str>, BoxError>("origin down".into())
                } else {
                    Ok(Arc::from(format!("value {id}")))
                }
            }
        })
    };
    let cache = CacheLayer::builder(Duration::from_secs(1), |id: &u64| Some(*id))
        .stale_while_revalidate(Duration::from_secs(1))
        .stale_if_error(Duration::from_secs(10))
        .ttl_jitter(Ratio::ZERO)
        .early_refresh(palisade::Factor::new_const(0.0))
        .build::<u64, Arc<str>>()
        .unwrap()
        .on_event(move |id, event| push((*id, event)));
    let svc = cache.layer(origin);
    // A miss, and a caller coalesced behind it.
    let (a, b) = tokio::join!(svc.clone().oneshot(1), svc.clone().oneshot(1));
    assert_eq!((&*a.unwrap(), &*b.unwrap()), ("value 1", "value 1"));
    // A hit tells nothing.
    svc.clone().oneshot(1).await.unwrap();
    assert_eq!(
        *events.lock().unwrap(),
        [(1, CacheEvent::Miss), (1, CacheEvent::Coalesced)]
    );
    // Stale: served, and refreshed in the background.
    advance(Duration::from_millis(1_500)).await;
    svc.clone().oneshot(1).await.unwrap();
    // Paused time moves on while every task waits: the refresh runs meanwhile.
    tokio::time::sleep(50 * MS).await;
    assert_eq!(
        events.lock().unwrap().last(),
        Some(&(1, CacheEvent::Refreshed))
    );
    // Stale again with the origin down: the refresh fails.
    down.store(true, Ordering::SeqCst);
    advance(Duration::from_millis(1_500)).await;
    svc.clone().oneshot(1).await.unwrap();
    // Paused time moves on while every task waits: the refresh runs meanwhile.
    tokio::time::sleep(50 * MS).await;
    assert_eq!(
        events.lock().unwrap().last(),
        Some(&(1, CacheEvent::RefreshFailed))
    );
    // Past the stale window: a fetch that fails is answered with the old value.
    advance(Duration::from_secs(2)).await;
    assert_eq!(&*svc.clone().oneshot(1).await.unwrap(), "value 1");
    let tail: Vec<_> = events
        .lock()
        .unwrap()
        .iter()
        .rev()
        .take(2)
        .copied()
        .collect();
    assert_eq!(tail, [(1, CacheEvent::StaleIfError), (1, CacheEvent::Miss)]);
}

#[tokio::test(start_paused = true)]
async fn the_http_cache_tells_misses_and_revalidations_by_target() {
    use axum::Router;
    use axum::body::Body;
    use palisade::cache::{CacheMode, HttpCacheLayer};
    let (events, push) = recorder::<(String, CacheEvent)>();
    let cache = HttpCacheLayer::builder(CacheMode::Shared)
        .early_refresh(palisade::Factor::new_const(0.0))
        .on_event(move |target, event| push((target.to_owned(), event)))
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/items",
            axum::routing::get(|| async {
                (
                    [("cache-control", "max-age=1, stale-while-revalidate=10")],
                    "v",
                )
            }),
        )
        .layer(cache);
    let get = || {
        http::Request::get("/items")
            .header("host", "shop.example")
            .body(Body::empty())
            .unwrap()
    };
    app.clone().oneshot(get()).await.unwrap();
    app.clone().oneshot(get()).await.unwrap();
    assert_eq!(
        *events.lock().unwrap(),
        [("shop.example/items".to_owned(), CacheEvent::Miss)],
        "a hit tells nothing"
    );
    advance(Duration::from_millis(1_500)).await;
    app.clone().oneshot(get()).await.unwrap();
    tokio::time::sleep(50 * MS).await;
    assert_eq!(
        events.lock().unwrap().last(),
        Some(&("shop.example/items".to_owned(), CacheEvent::Refreshed))
    );
}
