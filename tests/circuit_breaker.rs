//! The circuit breaker through its public API, on paused tokio time: every transition at both
//! sides of its boundary, probes in flight, drops, the handle, sharing, server pushback and
//! composition with the timeout.

mod support;

use std::num::NonZeroU32;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use palisade::Ratio;
use palisade::circuit_breaker::{
    CircuitBreakerError, CircuitBreakerLayer, CircuitOpen, HalfOpenTimeout, State, TransitionReason,
};
use palisade::classify::Outcome;
use palisade::error::{BoxError, Rejection};
use tokio::time::{Instant, sleep};
use tower::{Layer, Service, ServiceExt, service_fn};

const MS: Duration = Duration::from_millis(1);

/// An inner service that counts its calls and fails when asked to.
#[derive(Clone, Default)]
struct Backend {
    calls: Arc<AtomicUsize>,
}

/// What one call asks the backend to do.
#[derive(Clone, Copy, Debug)]
enum Ask {
    Ok,
    Fail,
    /// Succeed after this long.
    Slow(Duration),
}

impl Service<Ask> for Backend {
    type Response = ();
    type Error = BoxError;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, ask: Ask) -> Self::Future {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            match ask {
                Ask::Ok => Ok(()),
                Ask::Fail => Err("backend failed".into()),
                Ask::Slow(d) => {
                    sleep(d).await;
                    Ok(())
                }
            }
        })
    }
}

impl Backend {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }
}

async fn call<S>(svc: &mut S, ask: Ask) -> Result<(), CircuitBreakerError>
where
    S: Service<Ask, Response = (), Error = CircuitBreakerError>,
{
    svc.ready().await?.call(ask).await
}

fn rejection(result: Result<(), CircuitBreakerError>) -> CircuitOpen {
    match result {
        Err(CircuitBreakerError::Open(open)) => open,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn consecutive(n: u32) -> palisade::circuit_breaker::CircuitBreakerBuilder {
    CircuitBreakerLayer::builder()
        .consecutive_failures(NonZeroU32::new(n).unwrap())
        .open_for(100 * MS)
}

/// A paused clock can run decades ahead of real time (tokio jumps it forward whenever the
/// runtime idles), while another runtime's clock stays at real time. Breakers built on both still
/// name when they reopen: the rejection's time base is fixed from the real clock, never from
/// whichever breaker's clock asked first.
#[test]
fn breakers_on_clocks_decades_apart_both_know_when_they_reopen() {
    support::init_tracing();
    fn paused_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    }
    async fn trip_and_ask() -> palisade::circuit_breaker::CircuitOpen {
        let mut svc = consecutive(1).build().unwrap().layer(Backend::default());
        call(&mut svc, Ask::Fail).await.unwrap_err();
        tokio::time::advance(30 * MS).await;
        rejection(call(&mut svc, Ask::Ok).await)
    }

    let ahead = paused_runtime().block_on(async {
        tokio::time::advance(Duration::from_secs(40 * 365 * 24 * 3600)).await;
        trip_and_ask().await.retry_after()
    });
    let now = paused_runtime().block_on(async { trip_and_ask().await.retry_after() });
    assert_eq!(ahead, Some(70 * MS + MS), "built 40 years ahead");
    assert_eq!(
        now,
        Some(70 * MS + MS),
        "built at real time, after the other"
    );
}

#[tokio::test(start_paused = true)]
async fn opens_after_exactly_the_threshold_of_consecutive_failures() {
    support::init_tracing();
    let backend = Backend::default();
    let layer = consecutive(3).build().unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(backend.clone());

    call(&mut svc, Ask::Fail).await.unwrap_err();
    call(&mut svc, Ask::Fail).await.unwrap_err();
    assert_eq!(handle.state(), State::Closed, "2 failures, threshold 3");
    call(&mut svc, Ask::Fail).await.unwrap_err();
    assert_eq!(handle.state(), State::Open);

    let open = rejection(call(&mut svc, Ask::Ok).await);
    assert_eq!(open.state(), State::Open);
    // The time left, plus the millisecond that keeps a caller from racing the open timer.
    assert_eq!(open.retry_after(), Some(100 * MS + MS));
    assert_eq!(
        backend.calls(),
        3,
        "the rejected call never reached the backend"
    );
}

#[tokio::test(start_paused = true)]
async fn stays_open_until_the_open_duration_then_admits_one_probe() {
    support::init_tracing();
    let backend = Backend::default();
    let layer = consecutive(1).build().unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(backend.clone());
    call(&mut svc, Ask::Fail).await.unwrap_err();

    sleep(99 * MS).await;
    let open = rejection(call(&mut svc, Ask::Ok).await);
    assert_eq!(
        open.retry_after(),
        Some(MS + MS),
        "1 ms before: rejected, 1 ms left (+1)"
    );

    sleep(2 * MS).await;
    assert_eq!(handle.state(), State::HalfOpen, "the open timer fired");
    call(&mut svc, Ask::Ok).await.unwrap();
    assert_eq!(handle.state(), State::Closed, "the probe succeeded");
    assert_eq!(backend.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_success_ends_a_run_of_failures() {
    support::init_tracing();
    let layer = consecutive(2).build().unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(Backend::default());
    for _ in 0..5 {
        call(&mut svc, Ask::Fail).await.unwrap_err();
        call(&mut svc, Ask::Ok).await.unwrap();
    }
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_count_window_waits_for_minimum_calls_then_trips_at_the_rate() {
    support::init_tracing();
    let layer = CircuitBreakerLayer::builder()
        .count_window(NonZeroU32::new(10).unwrap())
        .minimum_calls(NonZeroU32::new(5).unwrap())
        .failure_rate(Ratio::new_const(0.6))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(Backend::default());
    for _ in 0..4 {
        call(&mut svc, Ask::Fail).await.unwrap_err();
    }
    assert_eq!(handle.state(), State::Closed, "4 calls, minimum 5");
    call(&mut svc, Ask::Ok).await.unwrap();
    assert_eq!(handle.state(), State::Open, "4 of 5 failed (80 % >= 60 %)");
    assert_eq!(
        handle.metrics().transitions,
        1,
        "a success that brings the window to minimum_calls is evaluated"
    );
}

#[tokio::test(start_paused = true)]
async fn after_many_successes_only_the_last_n_outcomes_decide() {
    support::init_tracing();
    let layer = CircuitBreakerLayer::builder()
        .count_window(NonZeroU32::new(4).unwrap())
        .minimum_calls(NonZeroU32::new(4).unwrap())
        .failure_rate(Ratio::new_const(0.75))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(Backend::default());
    for _ in 0..1000 {
        call(&mut svc, Ask::Ok).await.unwrap();
    }
    for _ in 0..2 {
        call(&mut svc, Ask::Fail).await.unwrap_err();
    }
    assert_eq!(handle.metrics().failure_rate, Some(0.5));
    call(&mut svc, Ask::Fail).await.unwrap_err();
    assert_eq!(
        handle.state(),
        State::Open,
        "3 of the last 4, whatever came before"
    );
}

#[tokio::test(start_paused = true)]
async fn a_time_window_forgets_failures_older_than_its_span() {
    support::init_tracing();
    let layer = CircuitBreakerLayer::builder()
        .time_window(Duration::from_secs(10), NonZeroU32::new(10).unwrap())
        .minimum_calls(NonZeroU32::new(3).unwrap())
        .failure_rate(Ratio::ONE)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(Backend::default());
    call(&mut svc, Ask::Fail).await.unwrap_err();
    call(&mut svc, Ask::Fail).await.unwrap_err();

    // The first bucket (0–1 s) is in the window until 10 s: 1 ms before, 3 of 3 fail.
    sleep(Duration::from_secs(10) - MS).await;
    assert_eq!(handle.metrics().calls, 2);
    sleep(MS).await;
    assert_eq!(
        handle.metrics().calls,
        0,
        "at 10 s the first bucket has left"
    );
    call(&mut svc, Ask::Fail).await.unwrap_err();
    assert_eq!(
        handle.state(),
        State::Closed,
        "only 1 call in the window now"
    );
}

#[tokio::test(start_paused = true)]
async fn slow_successes_alone_open_the_breaker_and_the_threshold_is_strict() {
    support::init_tracing();
    let backend = Backend::default();
    let layer = CircuitBreakerLayer::builder()
        .count_window(NonZeroU32::new(2).unwrap())
        .minimum_calls(NonZeroU32::new(2).unwrap())
        .slow_calls(50 * MS, Ratio::ONE)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(backend);
    call(&mut svc, Ask::Slow(50 * MS)).await.unwrap();
    call(&mut svc, Ask::Slow(50 * MS)).await.unwrap();
    assert_eq!(
        handle.metrics().slow_calls,
        0,
        "exactly the threshold is not slow"
    );
    call(&mut svc, Ask::Slow(51 * MS)).await.unwrap();
    assert_eq!(handle.state(), State::Closed, "1 of 2 slow");
    call(&mut svc, Ask::Slow(51 * MS)).await.unwrap();
    assert_eq!(
        handle.state(),
        State::Open,
        "2 of 2 slow, no failure at all"
    );
    let events = handle.metrics();
    assert_eq!(events.failures, 0);
}

type MockBreaker = tower_test::mock::Spawn<
    palisade::circuit_breaker::CircuitBreaker<tower_test::mock::Mock<Ask, ()>>,
>;
type MockHandle = tower_test::mock::Handle<Ask, ()>;

/// A mock inner service whose calls stay in flight until the test answers them.
fn mock_breaker(
    builder: palisade::circuit_breaker::CircuitBreakerBuilder,
) -> (
    palisade::circuit_breaker::CircuitBreakerHandle,
    MockBreaker,
    MockHandle,
) {
    let layer = builder.build().unwrap();
    let handle = layer.handle();
    let (svc, mock) = tower_test::mock::spawn_layer(layer);
    (handle, svc, mock)
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_one_probe_while_it_is_in_flight() {
    support::init_tracing();
    let (handle, mut svc, mut mock) = mock_breaker(consecutive(1));
    assert!(svc.poll_ready().is_ready());
    let first = svc.call(Ask::Fail);
    mock.next_request().await.unwrap().1.send_error("down");
    first.await.unwrap_err();
    sleep(101 * MS).await;

    assert!(svc.poll_ready().is_ready());
    let mut probe = tokio_test::task::spawn(svc.call(Ask::Ok));
    assert!(probe.poll().is_pending());
    let (_, probe_reply) = mock.next_request().await.unwrap();

    assert!(svc.poll_ready().is_ready());
    let second = rejection(svc.call(Ask::Ok).await);
    assert_eq!(
        second.state(),
        State::HalfOpen,
        "the only probe slot is taken"
    );
    assert_eq!(handle.metrics().probes_admitted, 1);

    probe_reply.send_response(());
    assert!(matches!(probe.poll(), Poll::Ready(Ok(()))));
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_returns_its_permit() {
    support::init_tracing();
    let (handle, mut svc, mut mock) = mock_breaker(consecutive(1));
    assert!(svc.poll_ready().is_ready());
    let first = svc.call(Ask::Fail);
    mock.next_request().await.unwrap().1.send_error("down");
    first.await.unwrap_err();
    sleep(101 * MS).await;

    assert!(svc.poll_ready().is_ready());
    let mut probe = tokio_test::task::spawn(svc.call(Ask::Ok));
    assert!(probe.poll().is_pending());
    let _ = mock.next_request().await.unwrap();
    drop(probe); // the caller went away
    assert_eq!(handle.metrics().probes_admitted, 0);

    assert!(svc.poll_ready().is_ready());
    let mut next = tokio_test::task::spawn(svc.call(Ask::Ok));
    assert!(next.poll().is_pending(), "a new probe got the slot");
    mock.next_request().await.unwrap().1.send_response(());
    assert!(matches!(next.poll(), Poll::Ready(Ok(()))));
    assert_eq!(handle.state(), State::Closed);
}

/// The classifier is user code. One that panics while judging a probe must not keep the only
/// half-open slot taken: the unwinding call gives the slot back, and the next call probes.
#[tokio::test(start_paused = true)]
async fn a_classifier_that_panics_on_a_probe_gives_its_slot_back() {
    support::init_tracing();
    let panicking = |result: &Result<(), BoxError>| match result {
        Ok(()) => Outcome::Success,
        Err(e) if e.to_string() == "599" => panic!("the classifier cannot judge a 599"),
        Err(_) => Outcome::Failure,
    };
    let layer = consecutive(1).classifier(panicking).build().unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|status: u16| async move {
        if status >= 400 {
            Err::<(), BoxError>(status.to_string().into())
        } else {
            Ok(())
        }
    }));
    svc.clone().oneshot(503).await.unwrap_err();
    assert_eq!(handle.state(), State::Open);
    sleep(101 * MS).await;

    let probe = tokio::spawn(svc.clone().oneshot(599));
    assert!(probe.await.unwrap_err().is_panic());
    assert_eq!(handle.metrics().probes_admitted, 0);

    svc.clone()
        .oneshot(200)
        .await
        .expect("the next call takes the probe slot");
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_for_longer_with_backoff() {
    support::init_tracing();
    let backend = Backend::default();
    let layer = consecutive(1)
        .open_backoff(Duration::from_secs(1))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(backend);
    call(&mut svc, Ask::Fail).await.unwrap_err();
    sleep(101 * MS).await;
    call(&mut svc, Ask::Fail).await.unwrap_err(); // the probe fails
    assert_eq!(handle.state(), State::Open);
    let open = rejection(call(&mut svc, Ask::Ok).await);
    assert_eq!(
        open.retry_after(),
        Some(200 * MS + MS),
        "second open lasts twice as long (+1 ms)"
    );
    sleep(199 * MS).await;
    assert_eq!(handle.state(), State::Open);
    sleep(2 * MS).await;
    assert_eq!(handle.state(), State::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_never_finishes_cannot_wedge_the_breaker() {
    support::init_tracing();
    let (handle, mut svc, mut mock) = mock_breaker(
        consecutive(1).half_open_max_wait(Duration::from_secs(1), HalfOpenTimeout::Rearm),
    );
    assert!(svc.poll_ready().is_ready());
    let first = svc.call(Ask::Fail);
    mock.next_request().await.unwrap().1.send_error("down");
    first.await.unwrap_err();
    sleep(101 * MS).await;

    assert!(svc.poll_ready().is_ready());
    let mut hung = tokio_test::task::spawn(svc.call(Ask::Ok));
    assert!(hung.poll().is_pending());
    let (_, hung_reply) = mock.next_request().await.unwrap();

    sleep(Duration::from_secs(1) - MS).await;
    assert!(svc.poll_ready().is_ready());
    let open = rejection(svc.call(Ask::Ok).await);
    assert_eq!(open.retry_after(), Some(MS), "1 ms before the maximum wait");

    sleep(MS).await;
    assert!(svc.poll_ready().is_ready());
    let mut fresh = tokio_test::task::spawn(svc.call(Ask::Ok));
    assert!(fresh.poll().is_pending(), "a fresh probe was admitted");
    let (_, fresh_reply) = mock.next_request().await.unwrap();

    // The hung probe finally fails: it belongs to an older generation and changes nothing.
    hung_reply.send_error("late");
    let _ = hung.poll();
    assert_eq!(handle.state(), State::HalfOpen);
    fresh_reply.send_response(());
    assert!(matches!(fresh.poll(), Poll::Ready(Ok(()))));
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn ignored_outcomes_count_nowhere() {
    support::init_tracing();
    let ignore_client_errors = |result: &Result<(), BoxError>| match result {
        Ok(()) => Outcome::Success,
        Err(e) if e.to_string().starts_with("4") => Outcome::Ignore,
        Err(_) => Outcome::Failure,
    };
    let layer = CircuitBreakerLayer::builder()
        .count_window(NonZeroU32::new(4).unwrap())
        .minimum_calls(NonZeroU32::new(1).unwrap())
        .classifier(ignore_client_errors)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|status: u16| async move {
        if status >= 400 {
            Err::<(), BoxError>(status.to_string().into())
        } else {
            Ok(())
        }
    }));
    for _ in 0..10 {
        svc.ready().await.unwrap().call(404).await.unwrap_err();
    }
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.metrics().calls, 0);
    svc.ready().await.unwrap().call(503).await.unwrap_err();
    assert_eq!(handle.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn every_clone_and_every_layer_call_shares_one_breaker() {
    support::init_tracing();
    let layer = consecutive(2).build().unwrap();
    let handle = layer.handle();
    let mut a = layer.layer(Backend::default());
    let mut b = layer.clone().layer(Backend::default());
    let mut c = a.clone();
    call(&mut a, Ask::Fail).await.unwrap_err();
    call(&mut b, Ask::Fail).await.unwrap_err();
    assert_eq!(handle.state(), State::Open);
    rejection(call(&mut c, Ask::Ok).await);
    assert_eq!(c.handle().state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn the_handle_isolates_forces_closed_resets_and_reports() {
    support::init_tracing();
    let backend = Backend::default();
    let layer = consecutive(1).name("payments").build().unwrap();
    let handle = layer.handle();
    let mut events = handle.subscribe();
    let mut svc = layer.layer(backend.clone());
    assert_eq!(handle.name(), Some("payments"));

    handle.isolate();
    let open = rejection(call(&mut svc, Ask::Ok).await);
    assert_eq!((open.state(), open.retry_after()), (State::Isolated, None));

    handle.force_closed();
    for _ in 0..5 {
        call(&mut svc, Ask::Fail).await.unwrap_err();
    }
    assert_eq!(
        handle.state(),
        State::ForcedClosed,
        "nothing counted while forced closed"
    );

    handle.reset();
    call(&mut svc, Ask::Fail).await.unwrap_err();
    assert_eq!(handle.state(), State::Open);

    let reasons: Vec<_> = std::iter::from_fn(|| events.try_recv().ok())
        .map(|t| (t.to, t.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            (State::Isolated, TransitionReason::Isolated),
            (State::ForcedClosed, TransitionReason::ForcedClosed),
            (State::Closed, TransitionReason::Reset),
            (State::Open, TransitionReason::ConsecutiveFailures),
        ]
    );
    assert_eq!(handle.metrics().transitions, 4);
    assert_eq!(backend.calls(), 6);
}

#[tokio::test(start_paused = true)]
async fn a_subscriber_is_told_of_the_timer_driven_transition() {
    support::init_tracing();
    let layer = consecutive(1).build().unwrap();
    let handle = layer.handle();
    let mut events = handle.subscribe();
    let mut svc = layer.layer(Backend::default());
    call(&mut svc, Ask::Fail).await.unwrap_err();
    let opened = events.recv().await.unwrap();
    assert_eq!((opened.from, opened.to), (State::Closed, State::Open));
    let start = Instant::now();
    let half = events.recv().await.unwrap();
    assert_eq!(
        (half.to, half.reason),
        (State::HalfOpen, TransitionReason::OpenElapsed)
    );
    assert_eq!(Instant::now() - start, 100 * MS);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_inside_the_breaker_counts_as_a_failure_and_stays_findable() {
    support::init_tracing();
    use palisade::timeout::TimeoutLayer;
    let layer = consecutive(2).build().unwrap();
    let handle = layer.handle();
    let mut svc = tower::ServiceBuilder::new()
        .layer(layer)
        .layer(TimeoutLayer::new(10 * MS))
        .service(service_fn(|req: http::Request<Duration>| async move {
            sleep(*req.body()).await;
            Ok::<_, BoxError>(())
        }));
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(Duration::from_secs(1)))
        .await
        .unwrap_err();
    let boxed: BoxError = err.into();
    assert!(matches!(
        Rejection::find(&*boxed),
        Some(Rejection::TimedOut(_))
    ));
    let _ = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(Duration::from_secs(1)))
        .await;
    assert_eq!(handle.state(), State::Open, "two timeouts, threshold 2");
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(Duration::ZERO))
        .await
        .unwrap_err();
    let boxed: BoxError = err.into();
    match Rejection::find(&*boxed) {
        Some(Rejection::CircuitOpen(open)) => {
            assert_eq!(open.retry_after(), Some(100 * MS + MS));
        }
        other => panic!("expected an open circuit, got {other:?}"),
    }
}

/// Breaker ⊃ 10 ms attempt timeout ⊃ a backend that sleeps for the request's body.
fn breaker_over_timeout(
    layer: CircuitBreakerLayer,
) -> impl Service<http::Request<Duration>, Response = (), Error = CircuitBreakerError> {
    use palisade::timeout::TimeoutLayer;
    tower::ServiceBuilder::new()
        .layer(layer)
        .layer(TimeoutLayer::new(10 * MS))
        .service(service_fn(|req: http::Request<Duration>| async move {
            sleep(*req.body()).await;
            Ok::<_, BoxError>(())
        }))
}

fn with_deadline(sleep_for: Duration, deadline_in: Duration) -> http::Request<Duration> {
    let mut request = http::Request::new(sleep_for);
    request
        .extensions_mut()
        .insert(palisade::deadline::Deadline::after(deadline_in));
    request
}

#[tokio::test(start_paused = true)]
async fn a_deadline_that_runs_out_or_had_passed_counts_nowhere() {
    support::init_tracing();
    let layer = consecutive(1).build().unwrap();
    let handle = layer.handle();
    let mut svc = breaker_over_timeout(layer);
    // Never sent: the deadline had passed at the call.
    let never_sent = svc
        .ready()
        .await
        .unwrap()
        .call(with_deadline(Duration::ZERO, Duration::ZERO))
        .await
        .unwrap_err();
    assert!(matches!(never_sent, CircuitBreakerError::Inner(_)));
    // Sent, cut off by the caller's 5 ms deadline before the 10 ms attempt limit.
    let cut_off = svc
        .ready()
        .await
        .unwrap()
        .call(with_deadline(Duration::from_secs(1), 5 * MS))
        .await
        .unwrap_err();
    let boxed: BoxError = cut_off.into();
    assert!(matches!(Rejection::find(&*boxed), Some(Rejection::TimedOut(t)) if t.is_deadline()));
    // A threshold of one failure, and still closed with an empty record: neither was a
    // failure of the dependency.
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.metrics().consecutive_failures, 0);
    // The attempt timeout's own limit is a failure.
    let _ = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(Duration::from_secs(1)))
        .await;
    assert_eq!(handle.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_probe_whose_deadline_had_passed_gives_its_slot_back() {
    support::init_tracing();
    let layer = consecutive(1).open_for(100 * MS).build().unwrap();
    let handle = layer.handle();
    let mut svc = breaker_over_timeout(layer);
    let _ = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(Duration::from_secs(1)))
        .await;
    assert_eq!(handle.state(), State::Open);
    sleep(101 * MS).await;
    assert_eq!(handle.state(), State::HalfOpen);
    // The only probe slot goes to a request whose deadline has passed: it is never sent,
    // says nothing, and must not reopen a breaker whose dependency may be healthy.
    let _ = svc
        .ready()
        .await
        .unwrap()
        .call(with_deadline(Duration::ZERO, Duration::ZERO))
        .await
        .unwrap_err();
    assert_eq!(handle.state(), State::HalfOpen);
    assert_eq!(
        handle.metrics().probes_admitted,
        0,
        "the slot was given back"
    );
    // The next caller gets the slot, succeeds, and closes the breaker.
    svc.ready()
        .await
        .unwrap()
        .call(http::Request::new(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(handle.state(), State::Closed);
}

/// A request for the keyed tests: the upstream it goes to, and whether it fails.
#[derive(Clone, Copy, Debug)]
struct To(&'static str, bool);

fn keyed_backend() -> impl Service<To, Response = (), Error = BoxError, Future: Send> + Clone {
    service_fn(|To(_, fail)| async move {
        if fail {
            Err::<(), BoxError>("upstream failed".into())
        } else {
            Ok(())
        }
    })
}

async fn keyed_call<S>(svc: &mut S, to: To) -> Result<(), CircuitBreakerError>
where
    S: Service<To, Response = (), Error = CircuitBreakerError>,
{
    svc.ready().await?.call(to).await
}

#[tokio::test(start_paused = true)]
async fn one_failing_key_does_not_cut_off_the_others() {
    support::init_tracing();
    let layer = consecutive(2)
        .name("upstreams")
        .keyed(|to: &To| to.0)
        .unwrap();
    let mut svc = layer.layer(keyed_backend());
    keyed_call(&mut svc, To("a", true)).await.unwrap_err();
    keyed_call(&mut svc, To("a", true)).await.unwrap_err();
    rejection(keyed_call(&mut svc, To("a", false)).await);
    keyed_call(&mut svc, To("b", false)).await.unwrap();
    keyed_call(&mut svc, To("b", true)).await.unwrap_err();
    keyed_call(&mut svc, To("b", false)).await.unwrap();

    assert_eq!(layer.handle("a").unwrap().state(), State::Open);
    assert_eq!(layer.handle("b").unwrap().state(), State::Closed);
    assert_eq!(layer.handle("a").unwrap().name(), Some("upstreams[\"a\"]"));
    assert!(layer.handle("c").is_none());
    assert_eq!(layer.keys(), 2);
    assert_eq!(layer.handles().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn keyed_breakers_stay_bounded_and_evict_keys_left_idle() {
    support::init_tracing();
    let layer = consecutive(1)
        .max_keys(NonZeroUsize::new(2).unwrap())
        .keyed(|to: &To| to.0)
        .unwrap();
    let mut svc = layer.layer(keyed_backend());
    keyed_call(&mut svc, To("a", false)).await.unwrap();
    keyed_call(&mut svc, To("b", false)).await.unwrap();

    // Full, and both keys were just used: a third key shares the overflow breaker.
    keyed_call(&mut svc, To("c", true)).await.unwrap_err();
    assert!(layer.handle("c").is_none());
    assert_eq!(layer.overflow_handle().state(), State::Open);
    assert_eq!(layer.keys(), 2);

    // "b" keeps being used; "a" stays idle for a whole sweep interval and is evicted for "d".
    sleep(Duration::from_millis(500)).await;
    keyed_call(&mut svc, To("b", false)).await.unwrap();
    sleep(Duration::from_secs(1)).await;
    keyed_call(&mut svc, To("b", false)).await.unwrap();
    keyed_call(&mut svc, To("d", false)).await.unwrap();
    assert!(layer.handle("a").is_none(), "idle key evicted");
    assert!(layer.handle("b").is_some());
    assert!(layer.handle("d").is_some());
    assert_eq!(layer.keys(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_open_keyed_breaker_is_kept_until_its_open_period_and_probe_wait_have_passed() {
    support::init_tracing();
    let layer = consecutive(1)
        .open_for(Duration::from_secs(3600))
        .max_keys(NonZeroUsize::new(1).unwrap())
        .keyed(|to: &To| to.0)
        .unwrap();
    let mut svc = layer.layer(keyed_backend());
    keyed_call(&mut svc, To("down", true)).await.unwrap_err();
    assert_eq!(layer.handle("down").unwrap().state(), State::Open);
    // Callers honour the open breaker and stop calling "down"; new keys keep arriving.
    for _ in 0..5 {
        sleep(Duration::from_secs(2)).await;
        keyed_call(&mut svc, To("other", false)).await.unwrap();
    }
    assert!(
        layer.handle("down").is_some(),
        "the open breaker survives: forgetting it would send the failing upstream full traffic"
    );
    assert!(
        layer.handle("other").is_none(),
        "the new key shared the overflow breaker"
    );

    // The hour open, then the probe wait (by default the open duration): half-open with no
    // probe in sight. Its slot goes to the next new key.
    sleep(Duration::from_secs(3600)).await;
    assert_eq!(layer.handle("down").unwrap().state(), State::HalfOpen);
    keyed_call(&mut svc, To("other", false)).await.unwrap();
    assert!(layer.handle("down").is_some(), "the probe wait is not over");
    sleep(Duration::from_secs(3600)).await;
    keyed_call(&mut svc, To("other", false)).await.unwrap();
    assert!(
        layer.handle("down").is_none(),
        "forgotten after its probe wait"
    );
    assert!(
        layer.handle("other").is_some(),
        "the new key has its own breaker"
    );
}

/// A week of uptime on paused time: every hour new upstreams appear, a few minutes apart; some
/// trip and are never called again, some fail once and go quiet, one is healthy. The tripped and
/// failed ones must not pile up: every healthy newcomer still gets its own breaker instead of
/// sharing the overflow one (which the abandoned failing keys would have tripped).
#[tokio::test(start_paused = true)]
async fn a_week_of_tripped_and_abandoned_keys_never_fills_the_map() {
    support::init_tracing();
    let layer = consecutive(3)
        .open_for(Duration::from_secs(30))
        .open_backoff(Duration::from_secs(600))
        .max_keys(NonZeroUsize::new(16).unwrap())
        .keyed(|key: &(u32, bool)| key.0)
        .unwrap();
    let mut svc = layer.layer(service_fn(|(_, fail): (u32, bool)| async move {
        if fail {
            Err::<(), BoxError>("upstream failed".into())
        } else {
            Ok(())
        }
    }));
    let mut next = 0u32;
    let mut key = || {
        next += 1;
        next
    };
    let minutes = |m: u64| Duration::from_secs(60 * m);
    for hour in 0..7 * 24 {
        // Four upstreams that trip and are abandoned, one after a failed probe (reopened with
        // backoff), and four that fail once and are never called again.
        for n in 0..4 {
            let tripped = key();
            for _ in 0..3 {
                svc.ready()
                    .await
                    .unwrap()
                    .call((tripped, true))
                    .await
                    .unwrap_err();
            }
            if n == 0 {
                sleep(Duration::from_secs(31)).await;
                svc.ready()
                    .await
                    .unwrap()
                    .call((tripped, true))
                    .await
                    .unwrap_err();
            }
            sleep(minutes(6)).await;
            let failed_once = key();
            svc.ready()
                .await
                .unwrap()
                .call((failed_once, true))
                .await
                .unwrap_err();
            sleep(minutes(6)).await;
        }
        let healthy = key();
        let answer = svc.ready().await.unwrap().call((healthy, false)).await;
        assert!(
            answer.is_ok(),
            "hour {hour}: {answer:?} ({} keys)",
            layer.keys()
        );
        assert!(
            layer.handle(&healthy).is_some(),
            "hour {hour}: the healthy newcomer shares the overflow breaker ({} keys)",
            layer.keys()
        );
        assert!(layer.keys() <= 16, "hour {hour}: {} keys", layer.keys());
        sleep(minutes(12)).await;
    }
    assert_eq!(
        layer.overflow_handle().metrics().calls,
        0,
        "no key ever had to share the overflow breaker"
    );
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_distinct_keys_never_grows_past_the_bound() {
    support::init_tracing();
    let layer = consecutive(3)
        .max_keys(NonZeroUsize::new(16).unwrap())
        .keyed(|n: &u32| *n)
        .unwrap();
    let mut svc = layer.layer(service_fn(|_: u32| async { Ok::<(), BoxError>(()) }));
    for n in 0..10_000u32 {
        svc.ready().await.unwrap().call(n).await.unwrap();
        if n % 1000 == 0 {
            sleep(Duration::from_millis(1500)).await;
        }
        assert!(layer.keys() <= 16, "{} keys after {n}", layer.keys());
    }
}

/// The open timer lives on the runtime that tripped the breaker. When that is a current-thread
/// runtime whose `block_on` has returned, the timer never fires; calls made from elsewhere
/// must still see the open period end (they sample the clock) instead of being rejected forever.
#[test]
fn a_breaker_whose_timer_runtime_stopped_still_leaves_open() {
    support::init_tracing();
    let layer = consecutive(1).open_for(20 * MS).build().unwrap();
    let handle = layer.handle();
    let svc = layer.layer(Backend::default());
    let tripping = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    tripping.block_on(async {
        call(&mut svc.clone(), Ask::Fail).await.unwrap_err();
    });
    assert_eq!(handle.state(), State::Open);
    // `tripping` is kept alive but never driven again: its timer task never runs.
    std::thread::sleep(Duration::from_millis(40));

    let other = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap();
    let admitted = other.block_on(async {
        let mut svc = svc.clone();
        let mut rejected = 0;
        loop {
            match call(&mut svc, Ask::Ok).await {
                Ok(()) => break rejected,
                Err(CircuitBreakerError::Open(_)) if rejected < 1000 => rejected += 1,
                other => panic!("after {rejected} rejections: {other:?}"),
            }
        }
    });
    assert!(admitted < 64, "left Open after {admitted} rejections");
    assert_eq!(handle.state(), State::Closed);
    drop(tripping);
}

#[test]
fn a_breaker_tripped_without_a_runtime_leaves_open_by_the_clock() {
    support::init_tracing();
    // No runtime: no timer can be armed, so calls compare the clock themselves.
    let clock = palisade::clock::ManualClock::new();
    let layer = consecutive(1).clock(clock.clone()).build().unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|fail: bool| {
        std::future::ready(if fail {
            Err::<(), BoxError>("down".into())
        } else {
            Ok(())
        })
    }));
    let mut call = |fail| {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(svc.poll_ready(&mut cx).is_ready());
        let mut future = std::pin::pin!(svc.call(fail));
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(result) => result,
            Poll::Pending => panic!("ready services answer at once"),
        }
    };
    call(true).unwrap_err();
    clock.advance(99 * MS);
    assert!(matches!(call(false), Err(CircuitBreakerError::Open(_))));
    clock.advance(MS);
    call(false).unwrap();
    assert_eq!(handle.state(), State::Closed);
}

#[cfg(feature = "http")]
mod http_mapping {
    use super::*;
    use http::{Response, StatusCode, header};
    use palisade::classify::StatusClassifier;

    #[tokio::test(start_paused = true)]
    async fn an_open_circuit_is_a_503_with_retry_after_and_a_problem_body() {
        support::init_tracing();
        let layer = consecutive(1)
            .open_for(Duration::from_millis(1500))
            .build()
            .unwrap();
        let mut svc = layer.layer(Backend::default());
        call(&mut svc, Ask::Fail).await.unwrap_err();
        let err: BoxError = call(&mut svc, Ask::Ok).await.unwrap_err().into();
        let rejection = Rejection::find(&*err).unwrap();
        assert_eq!(rejection.status(), StatusCode::SERVICE_UNAVAILABLE);
        let response = rejection.problem().into_http_response::<axum::body::Body>();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers()[header::RETRY_AFTER],
            "2",
            "1.5 s rounds up"
        );
        let body = axum::body::to_bytes(axum::body::Body::new(response.into_body()), 4096)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["type"], "urn:palisade:circuit-open");
        assert_eq!(json["status"], 503);
    }

    #[tokio::test(start_paused = true)]
    async fn a_503_with_retry_after_opens_the_breaker_until_then() {
        support::init_tracing();
        let layer = CircuitBreakerLayer::builder()
            .classifier(StatusClassifier::new())
            .consecutive_failures(NonZeroU32::new(100).unwrap())
            .server_directed(Duration::from_secs(60))
            .build()
            .unwrap();
        let handle = layer.handle();
        let mut svc = layer.layer(service_fn(|retry_after: &'static str| async move {
            Ok::<_, BoxError>(
                Response::builder()
                    .status(StatusCode::SERVICE_UNAVAILABLE)
                    .header(header::RETRY_AFTER, retry_after)
                    .body(())
                    .unwrap(),
            )
        }));
        svc.ready().await.unwrap().call("2").await.unwrap();
        assert_eq!(
            handle.state(),
            State::Open,
            "one 503 with Retry-After is enough"
        );
        let err = svc.ready().await.unwrap().call("2").await.unwrap_err();
        assert_eq!(
            err.as_open().unwrap().retry_after(),
            Some(Duration::from_secs(2) + MS)
        );
        sleep(Duration::from_secs(2) - MS).await;
        assert_eq!(handle.state(), State::Open);
        sleep(2 * MS).await;
        assert_eq!(handle.state(), State::HalfOpen);
    }

    /// `Retry-After: 0` answered at full speed would open the breaker for a millisecond per
    /// answer, cycling its generation, its timer and its log line as fast as the server answers.
    /// Below one second a pushback is no pushback.
    #[tokio::test(start_paused = true)]
    async fn a_pushback_below_one_second_does_not_open_the_breaker() {
        support::init_tracing();
        let layer = CircuitBreakerLayer::builder()
            .classifier(StatusClassifier::new())
            .consecutive_failures(NonZeroU32::new(100).unwrap())
            .server_directed(Duration::from_secs(60))
            .build()
            .unwrap();
        let handle = layer.handle();
        let mut svc = layer.layer(service_fn(|retry_after: &'static str| async move {
            Ok::<_, BoxError>(
                Response::builder()
                    .status(StatusCode::SERVICE_UNAVAILABLE)
                    .header(header::RETRY_AFTER, retry_after)
                    .body(())
                    .unwrap(),
            )
        }));
        for _ in 0..50 {
            svc.ready().await.unwrap().call("0").await.unwrap();
        }
        assert_eq!(handle.state(), State::Closed);
        assert_eq!(
            handle.metrics().transitions,
            0,
            "no open-for-a-millisecond cycles"
        );
        svc.ready().await.unwrap().call("1").await.unwrap();
        assert_eq!(handle.state(), State::Open, "one second is honoured");

        assert_eq!(
            palisade::circuit_breaker::MIN_SERVER_PUSHBACK,
            Duration::from_secs(1)
        );
        assert!(matches!(
            CircuitBreakerLayer::builder()
                .server_directed(Duration::from_millis(500))
                .build()
                .unwrap_err(),
            palisade::error::ConfigError::DurationOutOfRange {
                setting: "server_directed",
                ..
            }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn later_pushback_extends_an_open_breaker_in_one_transition() {
        support::init_tracing();
        let layer = CircuitBreakerLayer::builder()
            .classifier(StatusClassifier::new())
            .server_directed(Duration::from_secs(60))
            .build()
            .unwrap();
        let handle = layer.handle();
        let (mut svc, mut mock) = tower_test::mock::spawn_layer::<(), Response<()>, _>(layer);
        let busy = |seconds: &str| {
            Response::builder()
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .header(header::RETRY_AFTER, seconds)
                .body(())
                .unwrap()
        };
        // Two calls in flight; the first answers "2 s", the second a moment later "5 s".
        assert!(svc.poll_ready().is_ready());
        let first = svc.call(());
        assert!(svc.poll_ready().is_ready());
        let second = svc.call(());
        mock.next_request()
            .await
            .unwrap()
            .1
            .send_response(busy("2"));
        first.await.unwrap();
        mock.next_request()
            .await
            .unwrap()
            .1
            .send_response(busy("5"));
        second.await.unwrap();
        assert_eq!(handle.metrics().transitions, 1, "one open, pushed later");

        sleep(Duration::from_secs(5) - MS).await;
        assert_eq!(
            handle.state(),
            State::Open,
            "the timer slept again until the later time"
        );
        sleep(2 * MS).await;
        assert_eq!(handle.state(), State::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn an_absurd_retry_after_cannot_panic_the_caller() {
        support::init_tracing();
        let layer = CircuitBreakerLayer::builder()
            .classifier(StatusClassifier::new())
            .server_directed(Duration::from_secs(60))
            .build()
            .unwrap();
        let mut svc = layer.layer(service_fn(|()| async {
            Ok::<_, BoxError>(
                Response::builder()
                    .status(StatusCode::SERVICE_UNAVAILABLE)
                    .header(header::RETRY_AFTER, "99999999999999999999999")
                    .body(())
                    .unwrap(),
            )
        }));
        svc.ready().await.unwrap().call(()).await.unwrap();
        let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
        assert_eq!(
            err.as_open().unwrap().retry_after(),
            Some(Duration::from_secs(60) + MS)
        );
        assert!(matches!(
            CircuitBreakerLayer::builder()
                .server_directed(Duration::MAX)
                .build()
                .unwrap_err(),
            palisade::error::ConfigError::DurationOutOfRange {
                setting: "server_directed",
                ..
            }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn pushback_is_capped_and_ignored_unless_enabled() {
        support::init_tracing();
        let capped = CircuitBreakerLayer::builder()
            .classifier(StatusClassifier::new())
            .server_directed(Duration::from_secs(10))
            .build()
            .unwrap();
        let off = CircuitBreakerLayer::builder()
            .classifier(StatusClassifier::new())
            .build()
            .unwrap();
        let busy = || {
            service_fn(|()| async {
                Ok::<_, BoxError>(
                    Response::builder()
                        .status(StatusCode::TOO_MANY_REQUESTS)
                        .header(header::RETRY_AFTER, "3600")
                        .body(())
                        .unwrap(),
                )
            })
        };
        let mut capped_svc = capped.layer(busy());
        capped_svc.ready().await.unwrap().call(()).await.unwrap();
        let err = capped_svc
            .ready()
            .await
            .unwrap()
            .call(())
            .await
            .unwrap_err();
        assert_eq!(
            err.as_open().unwrap().retry_after(),
            Some(Duration::from_secs(10) + MS)
        );

        let mut off_svc = off.layer(busy());
        off_svc.ready().await.unwrap().call(()).await.unwrap();
        assert_eq!(off.handle().state(), State::Closed);
    }

    /// Answers a breaker's error as the problem+json response its rejection maps to.
    async fn breaker_error_to_response(err: CircuitBreakerError) -> axum::response::Response {
        use axum::response::IntoResponse;
        match Rejection::find(&err) {
            Some(rejection) => rejection
                .problem()
                .into_http_response::<axum::body::Body>()
                .into_response(),
            None => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_route_layer_in_a_real_router_shares_one_breaker_across_requests() {
        support::init_tracing();
        use axum::Router;
        use axum::error_handling::HandleErrorLayer;
        use axum::routing::get;

        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        let layer = CircuitBreakerLayer::builder()
            .classifier(StatusClassifier::new())
            .consecutive_failures(NonZeroU32::new(3).unwrap())
            .open_for(Duration::from_secs(30))
            .build()
            .unwrap();
        let handle = layer.handle();
        let app: Router = Router::new()
            .route(
                "/flaky",
                get(move || {
                    counter.fetch_add(1, Ordering::Relaxed);
                    async { (StatusCode::INTERNAL_SERVER_ERROR, "broken") }
                }),
            )
            .route_layer(
                tower::ServiceBuilder::new()
                    .layer(HandleErrorLayer::new(breaker_error_to_response))
                    .layer(layer),
            )
            .route("/healthy", get(|| async { "fine" }));

        let get = |path: &str| {
            http::Request::get(path)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        // Each request goes through a fresh clone of the route's service.
        for _ in 0..3 {
            let response = app.clone().oneshot(get("/flaky")).await.unwrap();
            assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        }
        assert_eq!(handle.state(), State::Open);

        let response = app.clone().oneshot(get("/flaky")).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "30");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            palisade::http::PROBLEM_JSON
        );
        assert_eq!(
            hits.load(Ordering::Relaxed),
            3,
            "the open breaker kept the handler out"
        );

        let healthy = app.clone().oneshot(get("/healthy")).await.unwrap();
        assert_eq!(
            healthy.status(),
            StatusCode::OK,
            "routes outside the route_layer pass"
        );
    }
}
