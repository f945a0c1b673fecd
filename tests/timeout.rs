//! The timeout through its public API, on paused tokio time: limits at both sides of each
//! boundary, deadline nesting, per-request limits, and what reaches the inner service.

mod support;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::Request;
use palisade::RequestExtensions;
use palisade::deadline::Deadline;
use palisade::error::{BoxError, Rejection};
use palisade::timeout::{
    TimedOut, Timeout, TimeoutKind, TimeoutLayer, TimeoutOverride, TimeoutPolicy,
};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

const MS: Duration = Duration::from_millis(1);

/// What the inner service saw: when it was called and the deadline its request carried.
#[derive(Debug, Clone, Copy)]
struct Seen {
    deadline: Option<Deadline>,
}

/// An inner service that sleeps for the request body's duration, then reports what it saw.
fn sleeper() -> impl Service<
    Request<Duration>,
    Response = Seen,
    Error = BoxError,
    Future = impl Future<Output = Result<Seen, BoxError>> + Send,
> + Clone {
    service_fn(|req: Request<Duration>| async move {
        let seen = Seen {
            deadline: req.extensions().get::<Deadline>().copied(),
        };
        tokio::time::sleep(*req.body()).await;
        Ok::<_, BoxError>(seen)
    })
}

fn request(sleep: Duration) -> Request<Duration> {
    Request::new(sleep)
}

fn with_deadline(sleep: Duration, deadline: Deadline) -> Request<Duration> {
    let mut req = Request::new(sleep);
    req.extensions_mut().insert(deadline);
    req
}

async fn call<S>(svc: &mut S, req: Request<Duration>) -> Result<Seen, BoxError>
where
    S: Service<Request<Duration>, Response = Seen, Error = BoxError>,
{
    svc.ready().await?.call(req).await
}

fn timed_out(err: &BoxError) -> TimedOut {
    match Rejection::find(&**err) {
        Some(Rejection::TimedOut(timed_out)) => *timed_out,
        other => panic!("expected TimedOut, got {other:?} from {err}"),
    }
}

#[tokio::test(start_paused = true)]
async fn answers_that_arrive_1ms_before_the_limit_pass() {
    support::init_tracing();
    let mut svc = TimeoutLayer::new(100 * MS).layer(sleeper());
    assert!(call(&mut svc, request(99 * MS)).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn answers_that_would_arrive_1ms_after_the_limit_time_out_at_the_limit() {
    support::init_tracing();
    let mut svc = TimeoutLayer::new(100 * MS).layer(sleeper());
    let start = Instant::now();
    let err = call(&mut svc, request(101 * MS)).await.unwrap_err();
    assert_eq!(
        Instant::now() - start,
        100 * MS,
        "gave up exactly at the limit"
    );
    let timed_out = timed_out(&err);
    assert_eq!(timed_out.after(), 100 * MS);
    assert_eq!(timed_out.kind(), TimeoutKind::Limit);
    assert_eq!(err.to_string(), "request timed out after 100ms");
}

#[tokio::test(start_paused = true)]
async fn an_answer_ready_at_the_same_instant_as_the_limit_wins() {
    support::init_tracing();
    let mut svc = TimeoutLayer::new(100 * MS).layer(sleeper());
    assert!(call(&mut svc, request(100 * MS)).await.is_ok());
}

#[test]
fn a_ready_inner_future_needs_no_timer_and_no_runtime() {
    support::init_tracing();
    // Outside any tokio runtime, creating a timer panics ("no reactor running"). A timeout whose
    // inner future is ready on its first poll must complete here all the same: it never arms.
    let mut svc = TimeoutLayer::new(100 * MS).layer(service_fn(|req: Request<u32>| {
        std::future::ready(Ok::<_, BoxError>(*req.body() + 1))
    }));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let mut future = pin!(svc.call(Request::new(41)));
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(answer)) => assert_eq!(answer, 42),
        other => panic!("expected an immediate answer, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn the_limit_runs_from_the_first_pending_poll_not_from_the_call() {
    support::init_tracing();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let rx = Arc::new(std::sync::Mutex::new(Some(rx)));
    let mut svc = TimeoutLayer::new(100 * MS).layer(service_fn(move |_: Request<()>| {
        let rx = rx.lock().unwrap().take().expect("called once");
        async move {
            rx.await.ok();
            Ok::<_, BoxError>(())
        }
    }));
    svc.ready().await.unwrap();
    let future = svc.call(Request::new(()));
    // Not polled for 80 ms: that time does not count.
    tokio::time::advance(80 * MS).await;
    let mut task = tokio_test::task::spawn(future);
    assert!(task.poll().is_pending(), "first poll arms the timer");
    tokio::time::advance(99 * MS).await;
    assert!(
        task.poll().is_pending(),
        "99 ms after arming it has not fired"
    );
    tx.send(()).unwrap();
    assert!(matches!(task.poll(), Poll::Ready(Ok(()))));
}

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through_and_are_not_rejections() {
    support::init_tracing();
    let mut svc = TimeoutLayer::new(100 * MS).layer(service_fn(|_: Request<()>| async {
        Err::<(), BoxError>(std::io::Error::other("connection reset").into())
    }));
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap_err();
    assert!(Rejection::find(&*err).is_none());
    assert_eq!(err.to_string(), "connection reset");
}

#[tokio::test(start_paused = true)]
async fn a_request_whose_deadline_has_passed_fails_at_once_without_reaching_the_service() {
    support::init_tracing();
    let (mut svc, mut handle) = tower_test::mock::spawn_layer::<Request<()>, (), _>(
        TimeoutLayer::new(Duration::from_secs(1)),
    );
    let deadline = Deadline::after(10 * MS);
    tokio::time::advance(10 * MS).await;

    let mut req = Request::new(());
    req.extensions_mut().insert(deadline);
    assert!(svc.poll_ready().is_ready());
    let err = svc.call(req).await.unwrap_err();
    let timed_out = timed_out(&err);
    assert_eq!(timed_out.after(), Duration::ZERO);
    assert_eq!(timed_out.kind(), TimeoutKind::Deadline);
    assert_eq!(err.to_string(), "request deadline had already passed");
    assert!(
        handle.poll_request().is_pending(),
        "inner service was called"
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_with_1ms_of_deadline_left_reaches_the_service() {
    support::init_tracing();
    let (mut svc, mut handle) = tower_test::mock::spawn_layer::<Request<()>, (), _>(
        TimeoutLayer::new(Duration::from_secs(1)),
    );
    let deadline = Deadline::after(10 * MS);
    tokio::time::advance(9 * MS).await;

    let mut req = Request::new(());
    req.extensions_mut().insert(deadline);
    assert!(svc.poll_ready().is_ready());
    let mut response = tokio_test::task::spawn(svc.call(req));
    assert!(response.poll().is_pending());
    let (_, send) = handle
        .next_request()
        .await
        .expect("inner service was called");
    send.send_response(());
    assert!(matches!(response.poll(), Poll::Ready(Ok(()))));
}

#[tokio::test(start_paused = true)]
async fn a_deadline_sooner_than_the_limit_bounds_the_call() {
    support::init_tracing();
    let mut svc = TimeoutLayer::new(Duration::from_secs(1)).layer(sleeper());

    let ok = call(&mut svc, with_deadline(99 * MS, Deadline::after(100 * MS))).await;
    assert!(ok.is_ok());

    let start = Instant::now();
    let err = call(&mut svc, with_deadline(101 * MS, Deadline::after(100 * MS)))
        .await
        .unwrap_err();
    assert_eq!(Instant::now() - start, 100 * MS);
    let timed_out = timed_out(&err);
    assert_eq!(timed_out.kind(), TimeoutKind::Deadline);
    assert_eq!(timed_out.after(), 100 * MS);
    assert_eq!(err.to_string(), "request deadline exceeded after 100ms");
}

#[tokio::test(start_paused = true)]
async fn a_limit_sooner_than_the_deadline_bounds_the_call_and_tightens_the_deadline() {
    support::init_tracing();
    let mut svc = TimeoutLayer::new(100 * MS).layer(sleeper());
    let start = Instant::now();

    let seen = call(
        &mut svc,
        with_deadline(MS, Deadline::after(Duration::from_secs(1))),
    )
    .await
    .unwrap();
    assert_eq!(
        seen.deadline,
        Some(Deadline::at(start + 100 * MS)),
        "inner layers see the tighter bound"
    );

    let err = call(
        &mut svc,
        with_deadline(101 * MS, Deadline::after(Duration::from_secs(1))),
    )
    .await
    .unwrap_err();
    assert_eq!(timed_out(&err).kind(), TimeoutKind::Limit);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_sooner_than_the_limit_is_left_as_it_is() {
    support::init_tracing();
    let mut svc = TimeoutLayer::new(Duration::from_secs(1)).layer(sleeper());
    let deadline = Deadline::after(100 * MS);
    let seen = call(&mut svc, with_deadline(MS, deadline)).await.unwrap();
    assert_eq!(seen.deadline, Some(deadline));
}

#[tokio::test(start_paused = true)]
async fn only_publishing_timeouts_add_a_deadline_to_requests_without_one() {
    support::init_tracing();
    let start = Instant::now();
    let mut quiet = TimeoutLayer::new(100 * MS).layer(sleeper());
    assert_eq!(call(&mut quiet, request(MS)).await.unwrap().deadline, None);

    let mut publishing = TimeoutLayer::new(100 * MS)
        .publish_deadline(true)
        .layer(sleeper());
    let seen = call(&mut publishing, request(MS)).await.unwrap();
    assert_eq!(seen.deadline, Some(Deadline::at(start + MS + 100 * MS)));
}

#[tokio::test(start_paused = true)]
async fn a_publishing_outer_timeout_bounds_a_longer_inner_timeout() {
    support::init_tracing();
    // total 1 s ⊃ attempt 5 s: the attempt is cut at 1 s, by the deadline.
    let mut svc = tower::ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(1)).publish_deadline(true))
        .layer(TimeoutLayer::new(Duration::from_secs(5)))
        .service(sleeper());
    let start = Instant::now();
    let err = call(&mut svc, request(Duration::from_secs(3)))
        .await
        .unwrap_err();
    assert_eq!(Instant::now() - start, Duration::from_secs(1));
    let timed_out = timed_out(&err);
    assert_eq!(
        timed_out.kind(),
        TimeoutKind::Deadline,
        "the inner timeout fired first"
    );
    assert_eq!(timed_out.after(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_shorter_inner_timeout_fires_inside_a_publishing_outer_one() {
    support::init_tracing();
    // total 5 s ⊃ attempt 1 s: the attempt's own limit fires.
    let mut svc = tower::ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(5)).publish_deadline(true))
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .service(sleeper());
    let start = Instant::now();
    let err = call(&mut svc, request(Duration::from_secs(3)))
        .await
        .unwrap_err();
    assert_eq!(Instant::now() - start, Duration::from_secs(1));
    assert_eq!(timed_out(&err).kind(), TimeoutKind::Limit);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_override_replaces_the_layer_limit_in_both_directions() {
    support::init_tracing();
    let mut svc = TimeoutLayer::new(100 * MS).layer(sleeper());

    let mut longer = request(250 * MS);
    longer.extensions_mut().insert(TimeoutOverride(300 * MS));
    assert!(call(&mut svc, longer).await.is_ok());

    let mut shorter = request(50 * MS);
    shorter.extensions_mut().insert(TimeoutOverride(20 * MS));
    let err = call(&mut svc, shorter).await.unwrap_err();
    assert_eq!(timed_out(&err).after(), 20 * MS);
}

#[tokio::test(start_paused = true)]
async fn a_per_request_closure_chooses_the_limit_and_none_falls_back() {
    support::init_tracing();
    let layer = TimeoutLayer::new(100 * MS).per_request(|req: &Request<Duration>| {
        (req.uri().path() == "/report").then_some(Duration::from_secs(2))
    });
    let mut svc = layer.layer(sleeper());

    let mut report = request(Duration::from_secs(1));
    *report.uri_mut() = "/report".parse().unwrap();
    assert!(call(&mut svc, report).await.is_ok());

    let err = call(&mut svc, request(Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert_eq!(timed_out(&err).after(), 100 * MS);
}

#[tokio::test(start_paused = true)]
async fn an_unrepresentable_limit_means_no_limit_and_never_panics() {
    support::init_tracing();
    let mut svc = TimeoutLayer::new(Duration::MAX).layer(sleeper());
    let year = Duration::from_secs(365 * 24 * 3600);
    assert!(call(&mut svc, request(year)).await.is_ok());

    let mut publishing = TimeoutLayer::new(Duration::MAX)
        .publish_deadline(true)
        .layer(sleeper());
    let seen = call(&mut publishing, request(MS)).await.unwrap();
    assert_eq!(seen.deadline, None, "nothing to publish");

    // With a deadline the deadline still applies.
    let err = call(&mut svc, with_deadline(year, Deadline::after(50 * MS)))
        .await
        .unwrap_err();
    assert_eq!(timed_out(&err).kind(), TimeoutKind::Deadline);
}

/// A request type of the user's own that carries no extensions.
struct Ping(Duration);
impl RequestExtensions for Ping {}

#[tokio::test(start_paused = true)]
async fn request_types_without_extensions_get_the_plain_limit() {
    support::init_tracing();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let mut svc = Timeout::new(
        service_fn(move |Ping(sleep)| {
            counter.fetch_add(1, Ordering::Relaxed);
            async move {
                tokio::time::sleep(sleep).await;
                Ok::<_, BoxError>("pong")
            }
        }),
        100 * MS,
    );
    assert_eq!(
        svc.ready()
            .await
            .unwrap()
            .call(Ping(99 * MS))
            .await
            .unwrap(),
        "pong"
    );
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Ping(101 * MS))
        .await
        .unwrap_err();
    assert_eq!(timed_out(&err).after(), 100 * MS);
    assert_eq!(calls.load(Ordering::Relaxed), 2);
}

/// A policy of the user's own: limits scale with the request.
#[derive(Clone)]
struct PerByte;
impl TimeoutPolicy<Request<Duration>> for PerByte {
    fn timeout(&self, request: &Request<Duration>) -> Duration {
        *request.body() * 2
    }
}

#[tokio::test(start_paused = true)]
async fn a_custom_policy_chooses_each_limit() {
    support::init_tracing();
    let mut svc = TimeoutLayer::with_policy(PerByte).layer(sleeper());
    assert!(call(&mut svc, request(300 * MS)).await.is_ok());
    let mut with_override = request(300 * MS);
    with_override
        .extensions_mut()
        .insert(TimeoutOverride(100 * MS));
    let err = call(&mut svc, with_override).await.unwrap_err();
    assert_eq!(timed_out(&err).after(), 100 * MS, "the override still wins");
}

#[test]
fn accessors_reach_the_inner_service() {
    support::init_tracing();
    let mut svc = Timeout::new(7u8, MS);
    assert_eq!(*svc.get_ref(), 7);
    *svc.get_mut() = 8;
    assert_eq!(svc.into_inner(), 8);
}

/// Sets its flag when dropped.
struct DropFlag(Arc<AtomicUsize>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_call_drops_the_inner_future() {
    support::init_tracing();
    let dropped = Arc::new(AtomicUsize::new(0));
    let flag = Arc::clone(&dropped);
    let mut svc = TimeoutLayer::new(100 * MS).layer(service_fn(move |_: Request<()>| {
        let guard = DropFlag(Arc::clone(&flag));
        async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            Ok::<_, BoxError>(())
        }
    }));
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap_err();
    assert_eq!(timed_out(&err).after(), 100 * MS);
    assert_eq!(
        dropped.load(Ordering::Relaxed),
        1,
        "the inner work was cancelled"
    );
}

#[tokio::test]
async fn the_timer_fires_even_when_the_inner_future_spends_the_whole_coop_budget() {
    support::init_tracing();
    // An inner future that always has work (think of draining a busy socket): every poll spends
    // the task's cooperative budget, so tokio reports any budget-respecting timer as pending.
    // Real time: a busy task never lets a paused clock auto-advance.
    let mut svc = TimeoutLayer::new(20 * MS).layer(service_fn(|_: Request<()>| async {
        loop {
            tokio::task::consume_budget().await;
        }
        #[allow(unreachable_code)]
        Ok::<(), BoxError>(())
    }));
    let call = svc.ready().await.unwrap().call(Request::new(()));
    // tokio's own timeout copes with an exhausted budget, so it bounds this test if ours does not.
    let outcome = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("palisade's timeout never fired");
    assert_eq!(timed_out(&outcome.unwrap_err()).after(), 20 * MS);
}
