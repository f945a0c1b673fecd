//! The cancellation sweep: each layer's response future is dropped at every point where it can
//! be pending (polled k times, then dropped, for k = 0, 1, 2, ... until it finishes within k
//! polls), and after each drop the layer's state machine must be consistent: probe slots given
//! back, outcomes recorded only for attempts that finished, claims released or handed to the
//! waiting duplicate, and nothing wedged. On paused time: between polls, time moves on by one
//! step, so every timer and every spawned task gets its turn.

mod support;

use std::future::{Future, poll_fn};
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::routing::post;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use palisade::circuit_breaker::{CircuitBreakerLayer, State as BreakerState};
use palisade::error::BoxError;
use palisade::http::IDEMPOTENT_REPLAYED;
use palisade::idempotency::{Anonymous, IdempotencyLayer, InFlight, MemoryStore};
use palisade::retry::{Backoff, Jitter, RetryBudget, RetryLayer};
use palisade::throttle::{ThrottleLayer, ThrottleState};
use palisade::{NoExtensions, Ratio};
use tokio::time::sleep;
use tower::{Layer, Service, ServiceExt, service_fn};

const MS: Duration = Duration::from_millis(1);
/// Paused time between two polls of the future under test.
const STEP: Duration = Duration::from_millis(1);
/// No scenario here takes this many polls; reaching it means the future never finishes.
const MAX_POLLS: usize = 2_000;

/// Polls `future` up to `polls` times, `STEP` of paused time apart; its output if it finished.
async fn poll_up_to<F: Future>(future: &mut Pin<Box<F>>, polls: usize) -> Option<F::Output> {
    for i in 0..polls {
        if i > 0 {
            sleep(STEP).await;
        }
        if let Poll::Ready(output) = poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await {
            return Some(output);
        }
    }
    None
}

/// The sweep. For k = 0, 1, 2, ...: `build` a fresh scenario (its shared state and the future
/// under test), poll the future k times, drop it, and `check` the state, told k and the output
/// if the future finished. Stops after the first k at which it finished; returns that k.
async fn sweep<S, F: Future>(
    mut build: impl AsyncFnMut() -> (S, F),
    mut check: impl AsyncFnMut(S, usize, Option<F::Output>),
) -> usize {
    for k in 0..MAX_POLLS {
        let (state, future) = build().await;
        let mut future = Box::pin(future);
        let output = poll_up_to(&mut future, k).await;
        let finished = output.is_some();
        drop(future);
        check(state, k, output).await;
        if finished {
            eprintln!("sweep: finished at k = {k}");
            return k;
        }
    }
    panic!("the future never finished within {MAX_POLLS} polls")
}

/// Counts calls started and finished.
#[derive(Clone, Default)]
struct Counter {
    started: Arc<AtomicUsize>,
    finished: Arc<AtomicUsize>,
}

impl Counter {
    fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }

    fn finished(&self) -> usize {
        self.finished.load(Ordering::SeqCst)
    }

    /// A backend whose calls take `took` and then fail while `fail(n)` for the n-th call.
    fn backend<R>(
        &self,
        took: Duration,
        fail: fn(usize) -> bool,
    ) -> impl Service<R, Response = (), Error = BoxError, Future: Send> + Clone + use<R> {
        let counter = self.clone();
        service_fn(move |_: R| {
            let n = counter.started.fetch_add(1, Ordering::SeqCst);
            let counter = counter.clone();
            async move {
                sleep(took).await;
                counter.finished.fetch_add(1, Ordering::SeqCst);
                if fail(n) {
                    Err::<(), BoxError>("backend failed".into())
                } else {
                    Ok(())
                }
            }
        })
    }
}

/// A half-open probe dropped anywhere gives its only slot back: the breaker stays half-open
/// with no probe counted, and the next call probes.
#[tokio::test(start_paused = true)]
async fn a_dropped_probe_always_gives_its_slot_back() {
    support::init_tracing();
    let polls = sweep(
        async || {
            let layer = CircuitBreakerLayer::builder()
                .consecutive_failures(NonZeroU32::MIN)
                .open_for(100 * MS)
                .build()
                .unwrap();
            let handle = layer.handle();
            let counter = Counter::default();
            let mut svc = layer.layer(counter.backend(20 * MS, |n| n == 0));
            svc.ready().await.unwrap().call(()).await.unwrap_err();
            sleep(101 * MS).await;
            assert_eq!(handle.state(), BreakerState::HalfOpen);
            let probe = svc.clone().oneshot(());
            ((handle, svc), probe)
        },
        async |(handle, svc), k, output| {
            if let Some(result) = output {
                result.unwrap();
                assert_eq!(handle.state(), BreakerState::Closed);
                return;
            }
            let metrics = handle.metrics();
            assert_eq!(metrics.state, BreakerState::HalfOpen, "k = {k}");
            assert_eq!(metrics.probes_admitted, 0, "k = {k}: the slot came back");
            svc.oneshot(())
                .await
                .unwrap_or_else(|e| panic!("k = {k}: the next probe was refused: {e}"));
            assert_eq!(handle.state(), BreakerState::Closed, "k = {k}");
        },
    )
    .await;
    assert!(polls > 10, "the probe was pending at {polls} points");
}

/// A throttle probe dropped anywhere records nothing and wedges nothing: the throttle still
/// sheds, and the probe at the next slot closes it.
#[tokio::test(start_paused = true)]
async fn a_dropped_throttle_probe_records_nothing_and_the_next_probe_recovers() {
    support::init_tracing();
    sweep(
        async || {
            let layer = ThrottleLayer::builder()
                .shed_after(NonZeroU32::MIN)
                .probe_interval(100 * MS)
                .probe_jitter(Ratio::ZERO)
                .build()
                .unwrap();
            let handle = layer.handle();
            let counter = Counter::default();
            let svc = layer.layer(counter.backend(20 * MS, |n| n == 0));
            svc.clone().oneshot(()).await.unwrap_err();
            assert_eq!(handle.state(), ThrottleState::Shedding);
            sleep(100 * MS).await;
            let probe = svc.clone().oneshot(());
            ((handle, svc, handle_calls(&layer)), probe)
        },
        async |(handle, svc, calls_before), k, output| {
            if let Some(result) = output {
                result.unwrap();
                assert_eq!(handle.state(), ThrottleState::Throttling);
                return;
            }
            let metrics = handle.metrics();
            assert_eq!(metrics.state, ThrottleState::Shedding, "k = {k}");
            assert_eq!(metrics.calls, calls_before, "k = {k}: nothing recorded");
            sleep(100 * MS).await;
            svc.oneshot(())
                .await
                .unwrap_or_else(|e| panic!("k = {k}: the next probe was refused: {e}"));
            assert_eq!(handle.state(), ThrottleState::Throttling, "k = {k}");
        },
    )
    .await;
}

fn handle_calls(layer: &ThrottleLayer) -> u64 {
    layer.handle().metrics().calls
}

/// The budget's tokens, as its `Debug` shows them.
fn tokens(budget: &RetryBudget) -> f64 {
    let debug = format!("{budget:?}");
    let start = debug.find("tokens: ").expect("a token bucket") + "tokens: ".len();
    let end = start + debug[start..].find(',').unwrap();
    debug[start..end].parse().unwrap()
}

/// A retried call dropped anywhere (in an attempt, in a backoff, readying the next attempt):
/// the budget holds exactly the outcomes of the attempts that finished, no attempt is started
/// beyond the limit, and the next call gets its full set of retries.
#[tokio::test(start_paused = true)]
async fn a_dropped_retry_leaves_the_budget_holding_exactly_the_finished_attempts() {
    support::init_tracing();
    sweep(
        async || {
            let budget = RetryBudget::token_bucket()
                .max_tokens(NonZeroU32::new(10).unwrap())
                .token_ratio(Ratio::new_const(0.5))
                .build()
                .unwrap();
            let counter = Counter::default();
            let layer = RetryLayer::new()
                .max_attempts(NonZeroU32::new(3).unwrap())
                .backoff(Backoff::new(10 * MS, 10 * MS).unwrap().jitter(Jitter::None))
                .budget(budget.clone());
            // Attempts 1 and 2 fail, 3 succeeds; each takes 5 ms.
            let svc = layer.layer(counter.backend(5 * MS, |n| n < 2));
            let call = svc.oneshot(NoExtensions(()));
            ((budget, counter), call)
        },
        async |(budget, counter), k, output| {
            let finished = counter.finished();
            assert!(counter.started() <= 3, "k = {k}");
            assert!(
                counter.started() - finished <= 1,
                "k = {k}: one attempt in flight at most"
            );
            let failed = finished.min(2);
            let succeeded = finished.saturating_sub(2);
            #[allow(clippy::cast_precision_loss)]
            let expected = 10.0 - failed as f64 + 0.5 * succeeded as f64;
            assert_eq!(
                tokens(&budget),
                expected,
                "k = {k}: {finished} attempts finished"
            );
            if let Some(result) = output {
                result.unwrap();
                assert_eq!(finished, 3);
            }
        },
    )
    .await;
}

/// How many times the handler ran to its end.
#[derive(Clone, Default)]
struct Runs(Arc<AtomicUsize>);

impl Runs {
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

fn keyed_request() -> Request<Body> {
    Request::post("/orders")
        .header("idempotency-key", "\"order-1\"")
        .body(Body::from("one order"))
        .unwrap()
}

async fn respond(app: &Router) -> (StatusCode, bool, Bytes) {
    let response = app.clone().oneshot(keyed_request()).await.unwrap();
    let replayed = response.headers().contains_key(IDEMPOTENT_REPLAYED);
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, replayed, body)
}

/// The first of two duplicates dropped anywhere (reading its body, claiming, in its handler,
/// storing the response): the duplicate waiting on it takes over or replays, the handler runs
/// to its end exactly once in all, and every later duplicate replays that one answer.
#[tokio::test(start_paused = true)]
async fn a_dropped_first_request_hands_its_key_to_the_waiting_duplicate() {
    support::init_tracing();
    sweep(
        async || {
            let runs = Runs::default();
            let layer = IdempotencyLayer::builder()
                .store(MemoryStore::new())
                .identity(Anonymous)
                .in_flight(InFlight::Wait(Duration::from_secs(10)))
                .build()
                .unwrap();
            let store = layer.store_handle().clone();
            let app = Router::new()
                .route(
                    "/orders",
                    post(|State(runs): State<Runs>, body: Bytes| async move {
                        sleep(30 * MS).await;
                        let run = runs.0.fetch_add(1, Ordering::SeqCst) + 1;
                        (
                            StatusCode::CREATED,
                            format!("order {run} for {}", String::from_utf8_lossy(&body)),
                        )
                    }),
                )
                .layer(layer)
                .with_state(runs.clone());
            // The duplicate arrives 1 ms after the first, and waits for it.
            let waiter = tokio::spawn({
                let app = app.clone();
                async move {
                    sleep(MS).await;
                    respond(&app).await
                }
            });
            let first = app.clone().oneshot(keyed_request());
            ((app, runs, store, waiter), first)
        },
        async |(app, runs, store, waiter), k, output| {
            let (status, _, body) = waiter.await.unwrap();
            assert_eq!(status, StatusCode::CREATED, "k = {k}: {body:?}");
            if let Some(response) = output {
                assert_eq!(response.unwrap().status(), StatusCode::CREATED);
            }
            sleep(Duration::from_secs(1)).await; // a detached store finishes
            assert_eq!(runs.count(), 1, "k = {k}: the handler ran to its end once");
            let (status, replayed, again) = respond(&app).await;
            assert_eq!(status, StatusCode::CREATED);
            assert!(replayed, "k = {k}: a later duplicate replays");
            assert_eq!(again, body, "k = {k}: the one answer");
            assert_eq!(store.len(), 1, "k = {k}: one record, no claim left behind");
        },
    )
    .await;
}
