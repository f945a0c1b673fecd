//! The throttle through its public API, on paused tokio time: the rejection probability against
//! the formula, shedding and probing at both sides of each boundary, recovery after a total
//! outage at 1, 100 and 10 000 requests per second, slow and ignored calls, and composition
//! with the retry and the timeout.

mod support;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use palisade::classify::StatusClassifier;
use palisade::error::{BoxError, Rejection};
use palisade::retry::{Backoff, Jitter, RetryBudget, RetryLayer};
use palisade::throttle::{ThrottleError, ThrottleLayer, ThrottleState, Throttled};
use palisade::{NoExtensions, Ratio};
use tokio::time::{Instant, advance, sleep};
use tower::{Layer, Service, ServiceExt, service_fn};

const MS: Duration = Duration::from_millis(1);

/// A dependency whose health the test switches, counting the calls that reach it.
#[derive(Clone, Default)]
struct Dependency {
    down: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
}

impl Dependency {
    fn service(&self) -> impl Service<(), Response = (), Error = BoxError> + Clone + use<> {
        let (down, calls) = (Arc::clone(&self.down), Arc::clone(&self.calls));
        service_fn(move |()| {
            calls.fetch_add(1, Ordering::Relaxed);
            let fail = down.load(Ordering::Relaxed);
            async move {
                if fail {
                    Err::<(), BoxError>("dependency down".into())
                } else {
                    Ok(())
                }
            }
        })
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }
}

async fn call<S>(svc: &mut S) -> Result<(), ThrottleError>
where
    S: Service<(), Response = (), Error = ThrottleError>,
{
    svc.ready().await?.call(()).await
}

fn throttled(result: Result<(), ThrottleError>) -> Throttled {
    match result {
        Err(ThrottleError::Throttled(throttled)) => throttled,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// A throttle over a service that fails when asked to (`true`).
fn over_script(layer: &ThrottleLayer) -> impl Service<bool, Response = (), Error = ThrottleError> {
    layer.layer(service_fn(|fail: bool| async move {
        if fail {
            Err::<(), BoxError>("failed".into())
        } else {
            Ok(())
        }
    }))
}

async fn send<S>(svc: &mut S, fail: bool) -> Result<(), ThrottleError>
where
    S: Service<bool, Response = (), Error = ThrottleError>,
{
    svc.ready().await?.call(fail).await
}

#[tokio::test(start_paused = true)]
async fn nothing_is_shed_while_half_the_calls_succeed() {
    support::init_tracing();
    let layer = ThrottleLayer::builder()
        .window(NonZeroU32::new(100).unwrap())
        .seed(1)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = over_script(&layer);
    for i in 0..1000 {
        if let Err(ThrottleError::Throttled(t)) = send(&mut svc, i % 2 == 0).await {
            panic!("call {i} was shed at the K = 2 boundary: {t}");
        }
    }
    let metrics = handle.metrics();
    assert_eq!((metrics.calls, metrics.failures), (100, 50));
    assert_eq!(metrics.rejection_probability, 0.0);
    assert_eq!(metrics.rejected, 0);
}

#[tokio::test(start_paused = true)]
async fn the_share_shed_follows_the_formula() {
    support::init_tracing();
    // Nothing is shed until the window is full, so it fills with exactly the script.
    let layer = ThrottleLayer::builder()
        .window(NonZeroU32::new(100).unwrap())
        .minimum_calls(NonZeroU32::new(100).unwrap())
        .seed(2)
        .build()
        .unwrap();
    let handle = layer.handle();
    // The same throttle around a service that never answers: an admitted call stays pending
    // and, dropped, records nothing, so every draw meets the same probability.
    let mut pending = layer.clone().layer(service_fn(|()| {
        std::future::pending::<Result<(), BoxError>>()
    }));
    let mut svc = over_script(&layer);
    // 70 failures and 30 successes in the window, never more than 7 failures in a row.
    for i in 0..100 {
        let _ = send(&mut svc, i % 10 < 7).await;
    }
    let metrics = handle.metrics();
    assert_eq!((metrics.calls, metrics.failures), (100, 70));
    let expected = (100.0 - 2.0 * 30.0) / 101.0;
    assert!((metrics.rejection_probability - expected).abs() < 1e-12);
    let mut shed = 0u32;
    for _ in 0..10_000 {
        let mut future = pending.ready().await.unwrap().call(());
        match poll_once(&mut future) {
            Some(Err(ThrottleError::Throttled(t))) => {
                let p = t.rejection_probability().unwrap();
                assert!((p - expected).abs() < 1e-9, "{p}");
                shed += 1;
            }
            Some(other) => panic!("{other:?}"),
            None => drop(future),
        }
    }
    assert_eq!(handle.metrics().calls, 100, "no draw changed the window");
    // 3 960 expected; the binomial's standard deviation is 49.
    assert!((3_800..4_120).contains(&shed), "{shed} of 10 000 shed");
    assert_eq!(handle.metrics().rejected, u64::from(shed));
}

/// Polls a future once with a no-op waker.
fn poll_once<F: std::future::Future + Unpin>(future: &mut F) -> Option<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::Pin::new(future).poll(&mut cx) {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => None,
    }
}

fn exact_probes(shed_after: u32) -> ThrottleLayer {
    ThrottleLayer::builder()
        .shed_after(NonZeroU32::new(shed_after).unwrap())
        .probe_interval(100 * MS)
        .probe_jitter(Ratio::ZERO)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_start_shedding_at_exactly_the_threshold() {
    support::init_tracing();
    let layer = exact_probes(5);
    let handle = layer.handle();
    let dependency = Dependency::default();
    let mut svc = layer.layer(dependency.service());
    dependency.set_down(true);
    for _ in 0..4 {
        assert!(matches!(call(&mut svc).await, Err(ThrottleError::Inner(_))));
    }
    assert_eq!(handle.state(), ThrottleState::Throttling, "4 of 5");
    assert_eq!(handle.metrics().consecutive_failures, 4);
    let _ = call(&mut svc).await;
    assert_eq!(handle.state(), ThrottleState::Shedding);
    let refused = throttled(call(&mut svc).await);
    assert!(refused.is_shedding());
    assert_eq!(refused.retry_after(), Some(100 * MS));
    assert_eq!(dependency.calls(), 5, "the refused call was never sent");
}

#[tokio::test(start_paused = true)]
async fn a_success_ends_the_run_of_failures() {
    support::init_tracing();
    let layer = exact_probes(3);
    let handle = layer.handle();
    let mut svc = over_script(&layer);
    for fail in [true, true, false, true, true] {
        let _ = send(&mut svc, fail).await;
    }
    assert_eq!(handle.state(), ThrottleState::Throttling);
    assert_eq!(handle.metrics().consecutive_failures, 2);
}

#[tokio::test(start_paused = true)]
async fn a_probe_goes_through_at_its_slot_and_not_a_millisecond_before() {
    support::init_tracing();
    let layer = exact_probes(1);
    let handle = layer.handle();
    let dependency = Dependency::default();
    let mut svc = layer.layer(dependency.service());
    dependency.set_down(true);
    let _ = call(&mut svc).await;
    assert_eq!(handle.state(), ThrottleState::Shedding);
    advance(99 * MS).await;
    let refused = throttled(call(&mut svc).await);
    assert_eq!(refused.retry_after(), Some(MS), "1 ms before the slot");
    assert_eq!(dependency.calls(), 1);
    advance(MS).await;
    // At the slot: one probe, which fails, and says so as a rejection carrying its error and
    // the next slot; the next call waits for that slot.
    match call(&mut svc).await {
        Err(failed @ ThrottleError::ProbeFailed { .. }) => {
            assert_eq!(failed.as_throttled().unwrap().retry_after(), Some(100 * MS));
            assert_eq!(
                std::error::Error::source(&failed).unwrap().to_string(),
                "dependency down"
            );
            let boxed: BoxError = failed.into();
            assert!(Rejection::find(&*boxed).unwrap().protects_dependency());
        }
        other => panic!("expected a failed probe, got {other:?}"),
    }
    assert_eq!(dependency.calls(), 2);
    assert_eq!(
        throttled(call(&mut svc).await).retry_after(),
        Some(100 * MS)
    );
    assert_eq!(handle.state(), ThrottleState::Shedding);
    // The dependency recovers; the next probe succeeds and every call passes again.
    dependency.set_down(false);
    advance(100 * MS).await;
    call(&mut svc).await.unwrap();
    assert_eq!(handle.state(), ThrottleState::Throttling);
    assert_eq!(handle.metrics().calls, 0, "the window starts empty");
    for _ in 0..50 {
        call(&mut svc).await.unwrap();
    }
    assert_eq!(dependency.calls(), 53);
}

#[tokio::test(start_paused = true)]
async fn probe_intervals_are_jittered_up_to_their_share_and_never_shorter() {
    support::init_tracing();
    let layer = ThrottleLayer::builder()
        .shed_after(NonZeroU32::MIN)
        .probe_interval(100 * MS)
        .probe_jitter(Ratio::new_const(0.5))
        .seed(9)
        .build()
        .unwrap();
    let dependency = Dependency::default();
    let mut svc = layer.layer(dependency.service());
    dependency.set_down(true);
    let _ = call(&mut svc).await;
    let mut slots = Vec::new();
    for _ in 0..20 {
        let wait = throttled(call(&mut svc).await).retry_after().unwrap();
        slots.push(wait);
        advance(wait).await;
        let _ = call(&mut svc).await; // the probe, which fails
    }
    assert!(
        slots.iter().all(|w| (100 * MS..=150 * MS).contains(w)),
        "{slots:?}"
    );
    slots.sort();
    slots.dedup();
    assert!(slots.len() > 10, "the draws spread the slots: {slots:?}");
}

/// Drives `rate` requests per second at a dependency that is down for `outage`, then healthy
/// for `recovery`; returns (calls the dependency saw during the outage, requests sent during
/// it, time from recovery to the first success, failed requests after that first success).
async fn outage_then_recovery(
    rate: u32,
    outage: Duration,
    recovery: Duration,
) -> (usize, u64, Duration, u64) {
    let layer = ThrottleLayer::builder()
        .seed(u64::from(rate))
        .build()
        .unwrap();
    let handle = layer.handle();
    let dependency = Dependency::default();
    let mut svc = layer.layer(dependency.service());
    let gap = Duration::from_secs(1) / rate;
    // Healthy for a second, then down.
    let start = Instant::now();
    while Instant::now() - start < Duration::from_secs(1) {
        call(&mut svc).await.unwrap();
        advance(gap).await;
    }
    dependency.set_down(true);
    let (before, outage_start) = (dependency.calls(), Instant::now());
    let mut outage_requests = 0;
    while Instant::now() - outage_start < outage {
        let _ = call(&mut svc).await;
        outage_requests += 1;
        advance(gap).await;
    }
    let outage_calls = dependency.calls() - before;
    assert_eq!(handle.state(), ThrottleState::Shedding);
    dependency.set_down(false);
    let healthy_at = Instant::now();
    let mut first_success = None;
    let mut failed_after = 0;
    while Instant::now() - healthy_at < recovery {
        let ok = call(&mut svc).await.is_ok();
        match (ok, first_success) {
            (true, None) => first_success = Some(Instant::now() - healthy_at),
            (false, Some(_)) => failed_after += 1,
            _ => {}
        }
        advance(gap).await;
    }
    (
        outage_calls,
        outage_requests,
        first_success.expect("never recovered"),
        failed_after,
    )
}

#[tokio::test(start_paused = true)]
async fn recovery_after_a_total_outage_takes_at_most_a_probe_interval_at_any_rate() {
    support::init_tracing();
    // The stated bound: the first probe slot after recovery (an interval with up to 20 %
    // jitter, 300 ms) plus the gap to the next request; the first successful probe resumes
    // throttling at once (the reset rule), so nothing fails after it.
    for (rate, outage) in [
        (1, Duration::from_secs(60)),
        (100, Duration::from_secs(10)),
        (10_000, Duration::from_secs(2)),
    ] {
        let gap = Duration::from_secs(1) / rate;
        let (outage_calls, requests, first_success, failed_after) =
            outage_then_recovery(rate, outage, Duration::from_secs(3)).await;
        assert!(
            first_success <= 300 * MS + gap,
            "{rate}/s: recovered after {first_success:?}"
        );
        assert_eq!(failed_after, 0, "{rate}/s");
        // A dead dependency sees the run that started shedding, then at most one probe per
        // 250 ms (slot times are never earlier than the interval).
        let probes = u64::try_from(outage.as_millis() / 250).unwrap() + 1;
        let bound = usize::try_from(20 + probes).unwrap();
        assert!(
            outage_calls <= bound.min(usize::try_from(requests).unwrap()),
            "{rate}/s: {outage_calls} calls reached the dead dependency of {requests} sent"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_success_is_not_accepted_when_slow_calls_are_on() {
    support::init_tracing();
    let layer = ThrottleLayer::builder()
        .shed_after(NonZeroU32::new(2).unwrap())
        .slow_calls(100 * MS)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|delay: Duration| async move {
        sleep(delay).await;
        Ok::<_, BoxError>(())
    }));
    svc.ready().await.unwrap().call(100 * MS).await.unwrap();
    assert_eq!(handle.metrics().failures, 0, "100 ms is not over 100 ms");
    for _ in 0..2 {
        svc.ready().await.unwrap().call(101 * MS).await.unwrap();
    }
    assert_eq!(
        handle.state(),
        ThrottleState::Shedding,
        "two slow calls in a row"
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_deadline_that_runs_out_counts_nowhere() {
    support::init_tracing();
    use palisade::deadline::Deadline;
    use palisade::timeout::TimeoutLayer;
    let layer = exact_probes(1);
    let handle = layer.handle();
    let mut svc = tower::ServiceBuilder::new()
        .layer(layer)
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .service(service_fn(|_: http::Request<()>| async {
            sleep(Duration::from_secs(5)).await;
            Ok::<_, BoxError>(())
        }));
    for deadline in [Duration::ZERO, 10 * MS] {
        let mut request = http::Request::new(());
        request.extensions_mut().insert(Deadline::after(deadline));
        let err = svc.ready().await.unwrap().call(request).await.unwrap_err();
        assert!(matches!(err, ThrottleError::Inner(_)));
    }
    assert_eq!(
        handle.state(),
        ThrottleState::Throttling,
        "threshold of one, unmoved"
    );
    assert_eq!(handle.metrics().calls, 0);
}

#[tokio::test(start_paused = true)]
async fn a_retry_returns_a_throttled_call_at_once_and_spends_no_budget() {
    support::init_tracing();
    let layer = exact_probes(1);
    let dependency = Dependency::default();
    let budget = RetryBudget::token_bucket()
        .max_tokens(NonZeroU32::new(10).unwrap())
        .token_ratio(Ratio::new_const(0.1))
        .build()
        .unwrap();
    let mut svc = tower::ServiceBuilder::new()
        .layer(
            RetryLayer::new()
                .max_attempts(NonZeroU32::new(3).unwrap())
                .backoff(
                    Backoff::new(10 * MS, Duration::from_secs(1))
                        .unwrap()
                        .jitter(Jitter::None),
                )
                .budget(budget.clone()),
        )
        .layer(layer)
        .map_request(|_: NoExtensions<()>| ())
        .service(dependency.service());
    dependency.set_down(true);
    let start = Instant::now();
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(NoExtensions(()))
        .await
        .unwrap_err();
    // Attempt 1 fails and starts shedding; attempt 2 (after 10 ms) is refused and returned.
    assert!(
        matches!(Rejection::find(&*err), Some(Rejection::Throttled(t)) if t.is_shedding()),
        "{err}"
    );
    assert_eq!(Instant::now() - start, 10 * MS);
    assert_eq!(dependency.calls(), 1);
    // One failure took one token; the rejection none.
    assert!(format!("{budget:?}").contains("tokens: 9.0"), "{budget:?}");
    // Further calls during the shedding are refused at once, with no attempt and no budget.
    for _ in 0..10 {
        let start = Instant::now();
        let err = svc
            .ready()
            .await
            .unwrap()
            .call(NoExtensions(()))
            .await
            .unwrap_err();
        assert!(matches!(
            Rejection::find(&*err),
            Some(Rejection::Throttled(_))
        ));
        assert_eq!(Instant::now(), start);
    }
    assert!(format!("{budget:?}").contains("tokens: 9.0"), "{budget:?}");
}

#[tokio::test(start_paused = true)]
async fn a_throttled_call_is_a_503_naming_the_next_probe_slot() {
    support::init_tracing();
    let layer = ThrottleLayer::builder()
        .shed_after(NonZeroU32::MIN)
        .probe_interval(Duration::from_millis(1500))
        .probe_jitter(Ratio::ZERO)
        .classifier(StatusClassifier::new())
        .build()
        .unwrap();
    let mut svc = layer.layer(service_fn(|()| async {
        Ok::<_, BoxError>(http::Response::builder().status(502).body(()).unwrap())
    }));
    let response = svc.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(response.status(), 502, "the failure itself is passed on");
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    let boxed: BoxError = err.into();
    let rejection = Rejection::find(&*boxed).unwrap();
    assert_eq!(rejection.status(), 503);
    assert!(rejection.protects_dependency());
    let response = rejection.problem().into_http_response::<()>();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()[http::header::RETRY_AFTER], "2");
    assert_eq!(
        response.headers()[http::header::CONTENT_TYPE],
        "application/problem+json"
    );
}

#[tokio::test(start_paused = true)]
async fn every_clone_and_every_layer_call_shares_one_throttle() {
    support::init_tracing();
    let layer = exact_probes(4);
    let handle = layer.handle();
    let dependency = Dependency::default();
    dependency.set_down(true);
    let mut a = layer.layer(dependency.service());
    let mut b = layer.clone().layer(dependency.service());
    let mut c = a.clone();
    let _ = call(&mut a).await;
    let _ = call(&mut b).await;
    let _ = call(&mut c).await;
    assert_eq!(handle.metrics().consecutive_failures, 3);
    let _ = call(&mut b).await;
    assert_eq!(handle.state(), ThrottleState::Shedding);
    assert!(throttled(call(&mut a).await).is_shedding());
}

#[tokio::test(start_paused = true)]
async fn the_handle_resets_a_shedding_throttle() {
    support::init_tracing();
    let layer = exact_probes(1);
    let handle = layer.handle();
    let dependency = Dependency::default();
    let mut svc = layer.layer(dependency.service());
    dependency.set_down(true);
    let _ = call(&mut svc).await;
    assert_eq!(handle.state(), ThrottleState::Shedding);
    assert_eq!(handle.metrics().rejection_probability, 1.0);
    dependency.set_down(false);
    handle.reset();
    assert_eq!(handle.state(), ThrottleState::Throttling);
    call(&mut svc).await.unwrap();
    let metrics = handle.metrics();
    assert_eq!(
        (metrics.calls, metrics.failures, metrics.transitions),
        (1, 0, 2)
    );
}

#[tokio::test(start_paused = true)]
async fn a_dependency_failing_four_calls_in_five_is_throttled_not_taken_for_dead() {
    support::init_tracing();
    // Failures drawn at 80 % from a fixed sequence: runs of 20 and more happen every few
    // hundred calls, but not runs long enough to be chance at a 20 % success rate.
    let layer = ThrottleLayer::builder().seed(4).build().unwrap();
    let handle = layer.handle();
    let mut svc = over_script(&layer);
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let (mut sent, mut longest_run, mut run) = (0u32, 0u32, 0u32);
    for _ in 0..20_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let fail = state % 5 != 0;
        match send(&mut svc, fail).await {
            Err(ThrottleError::Throttled(t)) => assert!(!t.is_shedding(), "taken for dead"),
            _ => {
                sent += 1;
                run = if fail { run + 1 } else { 0 };
                longest_run = longest_run.max(run);
            }
        }
        assert_eq!(handle.state(), ThrottleState::Throttling);
    }
    assert!(
        longest_run >= 20,
        "the scenario has runs past shed_after: {longest_run}"
    );
    // 1 − 2 × 0.2 = 60 % shed: about 40 % sent.
    let share = f64::from(sent) / 20_000.0;
    assert!((0.33..0.47).contains(&share), "{share}");
}

#[tokio::test(start_paused = true)]
async fn a_retry_returns_a_failed_probe_at_once_instead_of_taking_the_next_slot() {
    support::init_tracing();
    let layer = exact_probes(1);
    let dependency = Dependency::default();
    let mut svc = tower::ServiceBuilder::new()
        .layer(
            RetryLayer::new()
                .max_attempts(NonZeroU32::new(3).unwrap())
                .backoff(
                    Backoff::new(10 * MS, Duration::from_secs(1))
                        .unwrap()
                        .jitter(Jitter::None),
                )
                .budget(RetryBudget::unlimited()),
        )
        .layer(layer)
        .map_request(|_: NoExtensions<()>| ())
        .service(dependency.service());
    dependency.set_down(true);
    let _ = svc.ready().await.unwrap().call(NoExtensions(())).await;
    assert_eq!(dependency.calls(), 1, "the first failure started shedding");
    advance(100 * MS).await;
    // This call takes the probe slot; the probe fails; the retry returns it at once rather
    // than backing off and trying again (it would be refused, or take the next slot).
    let start = Instant::now();
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(NoExtensions(()))
        .await
        .unwrap_err();
    assert_eq!(Instant::now(), start);
    assert_eq!(dependency.calls(), 2);
    assert!(matches!(
        Rejection::find(&*err),
        Some(Rejection::Throttled(t)) if t.retry_after() == Some(100 * MS)
    ));
    assert_eq!(
        std::error::Error::source(&*err).map(ToString::to_string),
        Some("dependency down".to_owned()),
        "the probe's own error is kept as the source"
    );
}
