//! The retry layer through its public API, on paused tokio time: attempts, exact waits, seeded
//! jitter, pushback, deadlines, budgets, readiness, and composition with the breaker.

mod support;

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use palisade::Factor;
use palisade::deadline::Deadline;
use palisade::error::{BoxError, Rejection};
use palisade::retry::{Backoff, Decision, Jitter, Policy, RetryBudget, RetryLayer};
use palisade::{NoExtensions, Ratio};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

const MS: Duration = Duration::from_millis(1);

/// A backend that answers from a script (one entry per attempt; the last repeats) and records
/// when each attempt arrived.
#[derive(Clone)]
struct Scripted {
    script: Arc<Vec<Result<u32, &'static str>>>,
    calls: Arc<Mutex<Vec<Instant>>>,
}

impl Scripted {
    fn new(script: Vec<Result<u32, &'static str>>) -> Self {
        Self {
            script: Arc::new(script),
            calls: Arc::default(),
        }
    }

    fn calls(&self) -> Vec<Instant> {
        self.calls.lock().unwrap().clone()
    }

    /// Offsets of each attempt from `start`.
    fn offsets(&self, start: Instant) -> Vec<Duration> {
        self.calls().iter().map(|at| *at - start).collect()
    }
}

impl Service<http::Request<()>> for Scripted {
    type Response = u32;
    type Error = BoxError;
    type Future = std::future::Ready<Result<u32, BoxError>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<()>) -> Self::Future {
        let mut calls = self.calls.lock().unwrap();
        let index = calls.len().min(self.script.len() - 1);
        calls.push(Instant::now());
        std::future::ready(self.script[index].map_err(BoxError::from))
    }
}

/// `http::Request` is not `Clone`; this policy copies `http::Request<()>` for the tests.
#[derive(Clone, Copy, Default)]
struct CopyUnitRequests;

impl Policy<http::Request<()>, u32> for CopyUnitRequests {
    fn clone_request(&self, request: &http::Request<()>) -> Option<http::Request<()>> {
        let mut copy = http::Request::new(());
        *copy.extensions_mut() = request.extensions().clone();
        Some(copy)
    }

    fn decide(&self, result: &Result<u32, BoxError>) -> Decision {
        match result {
            Ok(_) => Decision::Done,
            Err(e) if e.to_string().starts_with("wait ") => {
                let ms: u64 = e.to_string()[5..].parse().unwrap();
                Decision::RetryAfter(Duration::from_millis(ms))
            }
            Err(_) => Decision::Retry,
        }
    }
}

fn exact(base_ms: u64) -> Backoff {
    Backoff::new(Duration::from_millis(base_ms), Duration::from_secs(60))
        .unwrap()
        .jitter(Jitter::None)
}

fn layer(attempts: u32) -> RetryLayer<CopyUnitRequests> {
    RetryLayer::new()
        .policy(CopyUnitRequests)
        .max_attempts(NonZeroU32::new(attempts).unwrap())
        .budget(RetryBudget::unlimited())
}

async fn call<S>(svc: &mut S, request: http::Request<()>) -> Result<u32, BoxError>
where
    S: Service<http::Request<()>, Response = u32, Error = BoxError>,
{
    svc.ready().await?.call(request).await
}

fn request() -> http::Request<()> {
    http::Request::new(())
}

#[tokio::test(start_paused = true)]
async fn a_success_on_the_first_attempt_is_not_retried() {
    support::init_tracing();
    let backend = Scripted::new(vec![Ok(7)]);
    let mut svc = layer(3).layer(backend.clone());
    assert_eq!(call(&mut svc, request()).await.unwrap(), 7);
    assert_eq!(backend.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn max_attempts_counts_the_first_and_the_last_error_is_returned() {
    support::init_tracing();
    let backend = Scripted::new(vec![Err("first"), Err("second"), Err("third"), Ok(1)]);
    let mut svc = layer(3).backoff(exact(10)).layer(backend.clone());
    let err = call(&mut svc, request()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "third",
        "the last real error, not a new one"
    );
    assert_eq!(backend.calls().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn waits_double_from_the_base_without_jitter() {
    support::init_tracing();
    let backend = Scripted::new(vec![Err("a"), Err("b"), Err("c"), Ok(9)]);
    let mut svc = layer(4).backoff(exact(100)).layer(backend.clone());
    let start = Instant::now();
    assert_eq!(call(&mut svc, request()).await.unwrap(), 9);
    assert_eq!(
        backend.offsets(start),
        [Duration::ZERO, 100 * MS, 300 * MS, 700 * MS],
        "waits of 100, 200 and 400 ms"
    );
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_gives_the_same_waits_and_full_jitter_stays_under_the_ceiling() {
    support::init_tracing();
    async fn offsets(seed: u64) -> Vec<Duration> {
        let backend = Scripted::new(vec![Err("a"), Err("b"), Err("c"), Err("d"), Ok(0)]);
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(250)).unwrap();
        let mut svc = layer(5)
            .backoff(backoff)
            .jitter_seed(seed)
            .layer(backend.clone());
        let start = Instant::now();
        call(&mut svc, request()).await.unwrap();
        backend.offsets(start)
    }
    let first = offsets(11).await;
    assert_eq!(first, offsets(11).await, "reproducible with a seed");
    assert_ne!(first, offsets(12).await);
    let waits: Vec<_> = first.windows(2).map(|w| w[1] - w[0]).collect();
    let ceilings = [100 * MS, 200 * MS, 250 * MS, 250 * MS];
    for (wait, ceiling) in waits.iter().zip(ceilings) {
        assert!(*wait <= ceiling, "{wait:?} over {ceiling:?} in {waits:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn pushback_replaces_the_computed_wait() {
    support::init_tracing();
    let backend = Scripted::new(vec![Err("wait 1500"), Ok(3)]);
    let mut svc = layer(3).backoff(exact(10)).layer(backend.clone());
    let start = Instant::now();
    call(&mut svc, request()).await.unwrap();
    assert_eq!(backend.offsets(start), [Duration::ZERO, 1500 * MS]);
}

#[tokio::test(start_paused = true)]
async fn pushback_longer_than_the_maximum_returns_the_result_at_once() {
    support::init_tracing();
    let backend = Scripted::new(vec![Err("wait 30000"), Ok(3)]);
    let mut svc = layer(3)
        .max_pushback(Duration::from_secs(10))
        .layer(backend.clone());
    let start = Instant::now();
    let err = call(&mut svc, request()).await.unwrap_err();
    assert_eq!(err.to_string(), "wait 30000");
    assert_eq!(Instant::now(), start, "nothing was waited for");
    assert_eq!(backend.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn no_wait_starts_that_would_end_past_the_deadline() {
    support::init_tracing();
    let backend = Scripted::new(vec![Err("a"), Err("b"), Err("c"), Ok(1)]);
    let mut svc = layer(4).backoff(exact(100)).layer(backend.clone());
    let mut req = request();
    // Waits of 100 and 200 ms end at 100 and 300 ms; a deadline at 300 ms allows only the
    // first (the second would end exactly at the deadline).
    req.extensions_mut().insert(Deadline::after(300 * MS));
    let start = Instant::now();
    let err = call(&mut svc, req).await.unwrap_err();
    assert_eq!(err.to_string(), "b");
    assert_eq!(backend.offsets(start), [Duration::ZERO, 100 * MS]);

    // 1 ms more and the second wait fits.
    let backend = Scripted::new(vec![Err("a"), Err("b"), Err("c"), Ok(1)]);
    let mut svc = layer(4).backoff(exact(100)).layer(backend.clone());
    let mut req = request();
    req.extensions_mut().insert(Deadline::after(301 * MS));
    call(&mut svc, req).await.unwrap_err();
    assert_eq!(backend.calls().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_total_time_limit_stops_retrying() {
    support::init_tracing();
    let backend = Scripted::new(vec![Err("a"), Err("b"), Err("c"), Ok(1)]);
    let mut svc = layer(4)
        .backoff(exact(100))
        .max_elapsed(250 * MS)
        .layer(backend.clone());
    call(&mut svc, request()).await.unwrap_err();
    assert_eq!(backend.calls().len(), 2, "100 ms fits, 100 + 200 does not");
}

#[tokio::test(start_paused = true)]
async fn the_token_bucket_stops_retries_across_calls_and_refills_on_success() {
    support::init_tracing();
    let budget = RetryBudget::token_bucket()
        .max_tokens(NonZeroU32::new(4).unwrap())
        .token_ratio(Ratio::new_const(0.5))
        .build()
        .unwrap();
    let failing = Scripted::new(vec![Err("down")]);
    let mut svc = layer(3)
        .budget(budget.clone())
        .backoff(exact(1))
        .layer(failing.clone());
    // Call 1: fail (3 left), retry, fail (2 left), no retry: 2 is not more than half of 4.
    call(&mut svc, request()).await.unwrap_err();
    assert_eq!(failing.calls().len(), 2);
    // Call 2: fail (1 left), no retry.
    call(&mut svc, request()).await.unwrap_err();
    assert_eq!(failing.calls().len(), 3);
    assert!(!budget.allows_retry());

    // Successes (0.5 each) refill the shared bucket: 1 + 3 × 0.5 = 2.5 > 2.
    let healthy = Scripted::new(vec![Ok(1)]);
    let mut ok = layer(3).budget(budget.clone()).layer(healthy);
    for _ in 0..3 {
        call(&mut ok, request()).await.unwrap();
    }
    assert!(budget.allows_retry());
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_budget_can_say_so() {
    support::init_tracing();
    let budget = RetryBudget::token_bucket()
        .max_tokens(NonZeroU32::new(2).unwrap())
        .token_ratio(Ratio::new_const(0.1))
        .build()
        .unwrap();
    let failing = Scripted::new(vec![Err("down")]);
    let mut svc = layer(3)
        .budget(budget)
        .fail_when_budget_exhausted(true)
        .layer(failing);
    let err = call(&mut svc, request()).await.unwrap_err();
    match Rejection::find(&*err) {
        Some(Rejection::BudgetExhausted(exhausted)) => {
            assert_eq!(exhausted.attempts(), 1);
            assert_eq!(exhausted.last_error().to_string(), "down");
        }
        other => panic!("expected BudgetExhausted, got {other:?}"),
    }
    assert_eq!(err.to_string(), "retry budget exhausted after 1 attempt");
}

#[tokio::test(start_paused = true)]
async fn the_percent_budget_allows_its_share_of_recent_requests() {
    support::init_tracing();
    let budget = RetryBudget::percent()
        .ttl(Duration::from_secs(10))
        .retry_share(Factor::new_const(0.5))
        .min_per_second(0)
        .build()
        .unwrap();
    let failing = Scripted::new(vec![Err("down")]);
    let mut svc = layer(2)
        .budget(budget)
        .backoff(exact(1))
        .layer(failing.clone());
    // Every call deposits half a retry: calls 1 and 2 together pay for one retry.
    call(&mut svc, request()).await.unwrap_err();
    assert_eq!(failing.calls().len(), 1, "half a retry is not a retry");
    call(&mut svc, request()).await.unwrap_err();
    assert_eq!(
        failing.calls().len(),
        3,
        "the second call's deposit completes one"
    );
}

#[tokio::test(start_paused = true)]
async fn every_attempt_waits_for_readiness_again() {
    support::init_tracing();
    let (mut svc, mut handle) =
        tower_test::mock::spawn_layer::<http::Request<()>, u32, _>(layer(2).backoff(exact(10)));
    handle.allow(1);
    assert!(svc.poll_ready().is_ready());
    let mut response = tokio_test::task::spawn(svc.call(request()));
    assert!(response.poll().is_pending());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error("try again");
    assert!(response.poll().is_pending(), "backing off");
    tokio::time::sleep(20 * MS).await;
    assert!(
        response.poll().is_pending(),
        "the backoff is over, but the service is not ready"
    );
    assert!(handle.poll_request().is_pending(), "so nothing was sent");
    handle.allow(1);
    assert!(response.poll().is_pending());
    let (_, send) = handle
        .next_request()
        .await
        .expect("the retry was sent once ready");
    send.send_response(5);
    assert!(matches!(response.poll(), Poll::Ready(Ok(5))));
}

/// A policy that never copies: nothing can be retried.
#[derive(Clone, Copy)]
struct NoCopies;

impl Policy<NoExtensions<u32>, u32> for NoCopies {
    fn clone_request(&self, _: &NoExtensions<u32>) -> Option<NoExtensions<u32>> {
        None
    }

    fn decide(&self, _: &Result<u32, BoxError>) -> Decision {
        Decision::Retry
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_the_policy_will_not_copy_is_sent_once() {
    support::init_tracing();
    let calls = Arc::new(Mutex::new(0));
    let counter = Arc::clone(&calls);
    let mut svc =
        RetryLayer::new()
            .policy(NoCopies)
            .layer(tower::service_fn(move |_: NoExtensions<u32>| {
                *counter.lock().unwrap() += 1;
                async { Err::<u32, BoxError>("no".into()) }
            }));
    svc.ready()
        .await
        .unwrap()
        .call(NoExtensions(1))
        .await
        .unwrap_err();
    assert_eq!(*calls.lock().unwrap(), 1);
}

/// Retry ⊃ breaker ⊃ a backend that fails twice, then recovers: the breaker opens after the
/// second failure for 500 ms. The backend takes `NoExtensions` requests, so the default
/// policy (any `Clone` request) applies.
fn retry_over_breaker(
    retry: RetryLayer,
    backend: &Scripted,
) -> impl Service<NoExtensions<u32>, Response = u32, Error = BoxError> {
    use palisade::circuit_breaker::CircuitBreakerLayer;
    let breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(NonZeroU32::new(2).unwrap())
        .open_for(500 * MS)
        .build()
        .unwrap();
    tower::ServiceBuilder::new()
        .layer(retry)
        .layer(breaker)
        .service(tower::service_fn({
            let backend = backend.clone();
            move |_: NoExtensions<u32>| {
                let mut backend = backend.clone();
                backend.call(http::Request::new(()))
            }
        }))
}

#[tokio::test(start_paused = true)]
async fn the_default_policy_retries_any_clone_request_and_fails_fast_on_an_open_circuit() {
    support::init_tracing();
    let backend = Scripted::new(vec![Err("a"), Err("b"), Ok(8)]);
    let budget = RetryBudget::token_bucket()
        .max_tokens(NonZeroU32::new(10).unwrap())
        .token_ratio(Ratio::new_const(0.1))
        .build()
        .unwrap();
    let mut svc = retry_over_breaker(
        RetryLayer::new()
            .max_attempts(NonZeroU32::new(4).unwrap())
            .backoff(exact(10))
            .budget(budget.clone()),
        &backend,
    );
    let start = Instant::now();
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(NoExtensions(1))
        .await
        .unwrap_err();
    // Attempt 1 at 0, attempt 2 at 10 ms (opens the breaker until 510 ms), attempt 3 is
    // rejected at 30 ms and returned then: waiting 480 ms for the reopening is not the
    // default.
    assert!(
        matches!(Rejection::find(&*err), Some(Rejection::CircuitOpen(_))),
        "{err}"
    );
    assert_eq!(Instant::now() - start, 30 * MS);
    assert_eq!(backend.offsets(start), [Duration::ZERO, 10 * MS]);
    // Two real failures took two tokens; the rejection took none and counted nowhere.
    assert!(format!("{budget:?}").contains("tokens: 8.0"), "{budget:?}");
}

#[tokio::test(start_paused = true)]
async fn a_rejection_waited_for_is_not_an_attempt_and_costs_no_budget() {
    support::init_tracing();
    let backend = Scripted::new(vec![Err("a"), Err("b"), Ok(8)]);
    let budget = RetryBudget::token_bucket()
        .max_tokens(NonZeroU32::new(10).unwrap())
        .token_ratio(Ratio::new_const(0.1))
        .build()
        .unwrap();
    let mut svc = retry_over_breaker(
        RetryLayer::new()
            .max_attempts(NonZeroU32::new(3).unwrap())
            .backoff(exact(10))
            .budget(budget.clone())
            .wait_for_reopening(Duration::from_secs(1))
            .jitter_seed(7),
        &backend,
    );
    let start = Instant::now();
    let answer = svc
        .ready()
        .await
        .unwrap()
        .call(NoExtensions(1))
        .await
        .unwrap();
    assert_eq!(answer, 8);
    // Attempt 3 is rejected at 30 ms and waits out the 481 ms left (the breaker names one
    // millisecond past its reopening) plus a jitter draw below the backoff's base (10 ms, and
    // timers round up to the next millisecond); it
    // then runs as attempt 3 of 3: the rejection used up no attempt.
    let offsets = backend.offsets(start);
    assert_eq!(offsets.len(), 3, "{offsets:?}");
    assert_eq!(offsets[..2], [Duration::ZERO, 10 * MS]);
    assert!(
        (511 * MS..=521 * MS).contains(&offsets[2]),
        "the wait is the time left plus less than the base: {offsets:?}"
    );
    // Two failures took two tokens, the success gave back 0.1: the rejection cost nothing.
    assert!(format!("{budget:?}").contains("tokens: 8.1"), "{budget:?}");
}

#[tokio::test(start_paused = true)]
async fn a_reopening_further_away_than_the_bound_is_not_waited_for() {
    support::init_tracing();
    let backend = Scripted::new(vec![Err("a"), Err("b"), Ok(8)]);
    let mut svc = retry_over_breaker(
        RetryLayer::new()
            .max_attempts(NonZeroU32::new(4).unwrap())
            .backoff(exact(10))
            .budget(RetryBudget::unlimited())
            .wait_for_reopening(400 * MS),
        &backend,
    );
    let start = Instant::now();
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(NoExtensions(1))
        .await
        .unwrap_err();
    assert!(matches!(
        Rejection::find(&*err),
        Some(Rejection::CircuitOpen(_))
    ));
    assert_eq!(
        Instant::now() - start,
        30 * MS,
        "481 ms is past the 400 ms bound"
    );
    assert_eq!(backend.calls().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_reopening_the_deadline_leaves_no_time_for_is_not_waited_for() {
    support::init_tracing();
    let backend = Scripted::new(vec![Err("a"), Err("b"), Ok(8)]);
    // The deadline travels in the request's extensions: a request type that carries them.
    #[derive(Clone)]
    struct WithDeadline(http::Extensions);
    impl palisade::RequestExtensions for WithDeadline {
        fn extensions(&self) -> Option<&http::Extensions> {
            Some(&self.0)
        }
        fn extensions_mut(&mut self) -> Option<&mut http::Extensions> {
            Some(&mut self.0)
        }
    }
    let mut svc = RetryLayer::new()
        .max_attempts(NonZeroU32::new(4).unwrap())
        .backoff(exact(10))
        .budget(RetryBudget::unlimited())
        .wait_for_reopening(Duration::from_secs(1))
        .layer(
            palisade::circuit_breaker::CircuitBreakerLayer::builder()
                .consecutive_failures(NonZeroU32::new(2).unwrap())
                .open_for(500 * MS)
                .build()
                .unwrap()
                .layer(tower::service_fn({
                    let backend = backend.clone();
                    move |_: WithDeadline| {
                        let mut backend = backend.clone();
                        backend.call(http::Request::new(()))
                    }
                })),
        );
    let mut extensions = http::Extensions::new();
    extensions.insert(Deadline::after(300 * MS));
    let start = Instant::now();
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(WithDeadline(extensions))
        .await
        .unwrap_err();
    assert!(matches!(
        Rejection::find(&*err),
        Some(Rejection::CircuitOpen(_))
    ));
    assert_eq!(
        Instant::now() - start,
        30 * MS,
        "the reopening is past the deadline"
    );
}

#[tokio::test(start_paused = true)]
async fn callers_rejected_together_come_back_at_different_times() {
    support::init_tracing();
    use palisade::circuit_breaker::CircuitBreakerLayer;
    // Ten callers are rejected by one open period; each waits for the reopening once. The
    // instants their second attempts reach the breaker must differ, all within the jitter
    // spread (the backoff's base, 50 ms) past the reopening.
    let breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(NonZeroU32::MIN)
        .open_for(200 * MS)
        .half_open_probes(NonZeroU32::new(10).unwrap())
        .build()
        .unwrap();
    let handle = breaker.handle();
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let fail_first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let inner = tower::ServiceBuilder::new()
        .layer(breaker)
        .service(tower::service_fn({
            let fail_first = Arc::clone(&fail_first);
            move |_: NoExtensions<u32>| {
                let fail = fail_first.swap(false, std::sync::atomic::Ordering::Relaxed);
                async move {
                    if fail {
                        Err::<u32, BoxError>("down".into())
                    } else {
                        Ok(1)
                    }
                }
            }
        }));
    // Records when each attempt reaches the breaker.
    let recorded = tower::service_fn({
        let arrivals = Arc::clone(&arrivals);
        let inner = inner.clone();
        move |request: NoExtensions<u32>| {
            arrivals.lock().unwrap().push(Instant::now());
            let mut inner = inner.clone();
            async move {
                inner
                    .ready()
                    .await?
                    .call(request)
                    .await
                    .map_err(BoxError::from)
            }
        }
    });
    let retry = RetryLayer::new()
        .max_attempts(NonZeroU32::new(2).unwrap())
        .budget(RetryBudget::unlimited())
        .wait_for_reopening(Duration::from_secs(1))
        .jitter_seed(3);
    // Trip the breaker (max_attempts 1 on this call, so no retry hides the failure).
    let mut once = RetryLayer::new()
        .max_attempts(NonZeroU32::MIN)
        .layer(recorded.clone());
    once.ready()
        .await
        .unwrap()
        .call(NoExtensions(0))
        .await
        .unwrap_err();
    assert_eq!(handle.state(), palisade::circuit_breaker::State::Open);
    let start = Instant::now();
    let calls: Vec<_> = (0..10)
        .map(|i| {
            let mut svc = retry.layer(recorded.clone());
            tokio::spawn(async move { svc.ready().await?.call(NoExtensions(i)).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), 1);
    }
    let mut second: Vec<Duration> = arrivals.lock().unwrap()[11..]
        .iter()
        .map(|at| *at - start)
        .collect();
    second.sort();
    assert_eq!(second.len(), 10, "each caller came back once");
    assert!(
        second.iter().all(|at| (201 * MS..=251 * MS).contains(at)),
        "{second:?}"
    );
    // Spread over the jitter range, not together: timers fire on whole milliseconds, so a
    // pair may share one, but not more.
    assert!(second[9] - second[0] >= 25 * MS, "{second:?}");
    assert!(
        second.windows(3).all(|w| w[0] != w[2]),
        "three callers came back in the same millisecond: {second:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_deadline_that_passes_while_waiting_for_readiness_returns_the_last_result() {
    support::init_tracing();
    let (mut svc, mut handle) =
        tower_test::mock::spawn_layer::<http::Request<()>, u32, _>(layer(3).backoff(exact(10)));
    handle.allow(1);
    assert!(svc.poll_ready().is_ready());
    let mut req = request();
    req.extensions_mut().insert(Deadline::after(50 * MS));
    let mut response = tokio_test::task::spawn(svc.call(req));
    assert!(response.poll().is_pending());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error("first");
    assert!(response.poll().is_pending(), "backing off 10 ms");
    // The wait ends at 10 ms, well before the deadline, but the service stays unready past it.
    tokio::time::sleep(60 * MS).await;
    assert!(response.poll().is_pending());
    handle.allow(1);
    match response.poll() {
        Poll::Ready(Err(error)) => assert_eq!(error.to_string(), "first"),
        other => panic!("expected the first attempt's error, got {other:?}"),
    }
    assert!(
        handle.poll_request().is_pending(),
        "no attempt starts after the deadline"
    );
}

#[tokio::test(start_paused = true)]
async fn a_service_that_fails_to_get_ready_for_a_retry_returns_the_last_result() {
    support::init_tracing();
    let (mut svc, mut handle) =
        tower_test::mock::spawn_layer::<http::Request<()>, u32, _>(layer(3).backoff(exact(10)));
    handle.allow(1);
    assert!(svc.poll_ready().is_ready());
    let mut response = tokio_test::task::spawn(svc.call(request()));
    assert!(response.poll().is_pending());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error("the real failure");
    assert!(response.poll().is_pending(), "backing off 10 ms");
    handle.send_error("connection pool closed");
    tokio::time::sleep(20 * MS).await;
    match response.poll() {
        Poll::Ready(Err(error)) => assert_eq!(
            error.to_string(),
            "the real failure",
            "the caller learns why the call failed, not why the retry could not start"
        ),
        other => panic!("expected the attempt's error, got {other:?}"),
    }
}

/// Counts the copies [`CopyUnitRequests`] makes.
#[derive(Clone, Default)]
struct CountCopies(Arc<Mutex<u32>>);

impl Policy<http::Request<()>, u32> for CountCopies {
    fn clone_request(&self, request: &http::Request<()>) -> Option<http::Request<()>> {
        *self.0.lock().unwrap() += 1;
        CopyUnitRequests.clone_request(request)
    }

    fn decide(&self, result: &Result<u32, BoxError>) -> Decision {
        CopyUnitRequests.decide(result)
    }
}

#[tokio::test(start_paused = true)]
async fn requests_are_copied_only_for_attempts_that_may_follow() {
    support::init_tracing();
    for (attempts, copies) in [(1, 0), (2, 1), (3, 2), (5, 4)] {
        let policy = CountCopies::default();
        let mut svc = layer(attempts)
            .policy(policy.clone())
            .backoff(exact(1))
            .layer(Scripted::new(vec![Err("down")]));
        call(&mut svc, request()).await.unwrap_err();
        assert_eq!(*policy.0.lock().unwrap(), copies, "{attempts} attempts");
    }
    // A success on the first attempt used only the first copy.
    let policy = CountCopies::default();
    let mut svc = layer(5)
        .policy(policy.clone())
        .layer(Scripted::new(vec![Ok(1)]));
    call(&mut svc, request()).await.unwrap();
    assert_eq!(*policy.0.lock().unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn ignored_results_are_returned_and_leave_the_budget_alone() {
    support::init_tracing();
    use palisade::classify::Outcome;
    use palisade::retry::RetryFailures;

    // Errors saying "cancelled" tell nothing about the backend: not retried, not counted.
    let classify = |result: &Result<u32, BoxError>| match result {
        Ok(_) => Outcome::Success,
        Err(e) if e.to_string() == "cancelled" => Outcome::Ignore,
        Err(_) => Outcome::Failure,
    };
    let budget = RetryBudget::token_bucket()
        .max_tokens(NonZeroU32::new(2).unwrap())
        .token_ratio(Ratio::new_const(0.1))
        .build()
        .unwrap();
    let backend = Scripted::new(vec![Err("cancelled")]);
    let mut svc = RetryLayer::new()
        .policy(RetryFailures::new(classify))
        .budget(budget.clone())
        .layer(tower::service_fn({
            let backend = backend.clone();
            move |_: NoExtensions<()>| backend.clone().call(request())
        }));
    for _ in 0..5 {
        let err = svc
            .ready()
            .await
            .unwrap()
            .call(NoExtensions(()))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "cancelled");
    }
    assert_eq!(backend.calls().len(), 5, "each sent once");
    assert!(
        budget.allows_retry(),
        "five failures would have emptied a bucket of 2: {budget:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn decorrelated_waits_start_again_from_the_base_after_a_pushback() {
    support::init_tracing();
    // Attempt 1 is told to come back in 10 s; attempt 2 fails plainly. Decorrelated jitter
    // grows from the previous *computed* wait: the next wait is within [base, 3 × base], not
    // up to 3 × 10 s.
    let backoff = Backoff::new(50 * MS, Duration::from_secs(60))
        .unwrap()
        .jitter(Jitter::Decorrelated);
    for seed in 0..20 {
        let backend = Scripted::new(vec![Err("wait 10000"), Err("plain"), Ok(4)]);
        let mut svc = layer(3)
            .backoff(backoff)
            .jitter_seed(seed)
            .layer(backend.clone());
        let start = Instant::now();
        call(&mut svc, request()).await.unwrap();
        let offsets = backend.offsets(start);
        assert_eq!(offsets[1], Duration::from_secs(10));
        let wait = offsets[2] - offsets[1];
        assert!(
            (50 * MS..=150 * MS).contains(&wait),
            "seed {seed}: {wait:?}"
        );
    }
}
