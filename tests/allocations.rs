//! Heap allocations per call, counted by a global allocator.
//!
//! The counter is per thread and every call runs on the test's own thread (a current-thread
//! runtime), so tests running in parallel do not disturb each other's counts. Each figure is the
//! allocations a layer *adds*: the same requests are built for the bare service and for the
//! layered one, and the difference is what the layer costs.
//!
//! Run with `--nocapture` to see the table.

use std::future::Future;
use std::num::NonZeroU32;
use std::time::Duration;

use palisade::RequestExtensions;
use palisade::deadline::Deadline;
use palisade::error::BoxError;
use palisade::http::DeadlineHeader;
use palisade::timeout::{PropagateDeadlineLayer, TimeoutLayer};
use tower::{Layer, Service, ServiceExt, service_fn};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations;

const CALLS: u64 = 1_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// Allocations per call of `svc` on requests from `make`, after a warm-up.
fn per_call<S, Req>(mut svc: S, mut make: impl FnMut() -> Req) -> f64
where
    S: Service<Req>,
    S::Error: std::fmt::Debug,
{
    let rt = runtime();
    rt.block_on(async {
        for _ in 0..100 {
            svc.ready().await.unwrap().call(make()).await.unwrap();
        }
        let before = allocations();
        for _ in 0..CALLS {
            svc.ready().await.unwrap().call(make()).await.unwrap();
        }
        #[allow(clippy::cast_precision_loss)]
        let per_call = (allocations() - before) as f64 / CALLS as f64;
        per_call
    })
}

/// A request type that carries no extensions, as in the benches.
struct Ping(u32);
impl RequestExtensions for Ping {}

fn ready_ping() -> impl Service<Ping, Response = u32, Error = BoxError> + Clone {
    service_fn(|Ping(n): Ping| std::future::ready(Ok::<_, BoxError>(n)))
}

fn ready_http() -> impl Service<http::Request<()>, Response = (), Error = BoxError> + Clone {
    service_fn(|_: http::Request<()>| std::future::ready(Ok::<_, BoxError>(())))
}

/// Pending on its first poll (waking itself), ready on the second: the path that arms a timer.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = Result<(), BoxError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        if self.0 {
            std::task::Poll::Ready(Ok(()))
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    }
}

fn pending_once() -> impl Service<Ping, Response = (), Error = BoxError> + Clone {
    service_fn(|_: Ping| YieldOnce(false))
}

fn with_deadline() -> http::Request<()> {
    let mut req = http::Request::new(());
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_secs(60)));
    req
}

fn report(name: &str, bare: f64, layered: f64) -> f64 {
    let added = layered - bare;
    println!("{name:<48} bare {bare:>5.2}  layered {layered:>5.2}  added {added:>5.2}");
    added
}

#[test]
fn timeout_adds_no_allocation_when_the_inner_future_is_ready() {
    let bare = per_call(ready_ping(), || Ping(1));
    let layered = per_call(
        TimeoutLayer::new(Duration::from_secs(1)).layer(ready_ping()),
        || Ping(1),
    );
    assert_eq!(bare, 0.0);
    assert_eq!(report("timeout, ready inner", bare, layered), 0.0);
}

#[test]
fn timeout_adds_no_allocation_when_it_arms_its_timer() {
    let bare = per_call(pending_once(), || Ping(1));
    let layered = per_call(
        TimeoutLayer::new(Duration::from_secs(1)).layer(pending_once()),
        || Ping(1),
    );
    assert_eq!(
        report("timeout, pending once (timer armed)", bare, layered),
        0.0
    );
}

#[test]
fn timeout_tightening_an_existing_deadline_allocates_nothing() {
    let bare = per_call(ready_http(), with_deadline);
    let layered = per_call(
        TimeoutLayer::new(Duration::from_secs(1)).layer(ready_http()),
        with_deadline,
    );
    assert_eq!(
        report("timeout, request with a deadline", bare, layered),
        0.0
    );
}

#[test]
fn publishing_a_deadline_into_a_bare_request_costs_the_extension_insert() {
    let bare = per_call(ready_http(), || http::Request::new(()));
    let layered = per_call(
        TimeoutLayer::new(Duration::from_secs(1))
            .publish_deadline(true)
            .layer(ready_http()),
        || http::Request::new(()),
    );
    let added = report("timeout, publish into a request without one", bare, layered);
    // http's extension map: the map itself, its table, and the boxed value.
    assert!(added > 0.0 && added <= 3.0, "{added}");
}

#[test]
fn propagation_costs_only_the_header_it_writes() {
    let bare = per_call(ready_http(), with_deadline);
    let layered = per_call(
        PropagateDeadlineLayer::new(DeadlineHeader::grpc()).layer(ready_http()),
        with_deadline,
    );
    let added = report("propagate grpc-timeout", bare, layered);
    // The header value's bytes, and the header map's first index and entry tables.
    assert!(added > 0.0 && added <= 3.0, "{added}");

    let without = per_call(
        PropagateDeadlineLayer::new(DeadlineHeader::grpc()).layer(ready_http()),
        || http::Request::new(()),
    );
    let bare_without = per_call(ready_http(), || http::Request::new(()));
    assert_eq!(
        report(
            "propagate, request without a deadline",
            bare_without,
            without
        ),
        0.0
    );
}

fn ready_u32() -> impl Service<u32, Response = u32, Error = BoxError> + Clone {
    service_fn(|n: u32| std::future::ready(Ok::<_, BoxError>(n)))
}

#[test]
fn the_breaker_allocates_nothing_on_its_closed_paths() {
    use palisade::circuit_breaker::CircuitBreakerLayer;
    let bare = per_call(ready_u32(), || 1);
    let count = per_call(CircuitBreakerLayer::new().layer(ready_u32()), || 1);
    let time = per_call(
        CircuitBreakerLayer::builder()
            .time_window(Duration::from_secs(10), NonZeroU32::new(10).unwrap())
            .build()
            .unwrap()
            .layer(ready_u32()),
        || 1,
    );
    let consecutive = per_call(
        CircuitBreakerLayer::builder()
            .consecutive_failures(std::num::NonZeroU32::new(5).unwrap())
            .build()
            .unwrap()
            .layer(ready_u32()),
        || 1,
    );
    let keyed = per_call(
        CircuitBreakerLayer::builder()
            .keyed(|n: &u32| *n % 8)
            .unwrap()
            .layer(ready_u32()),
        || 3,
    );
    assert_eq!(report("breaker, count window, closed", bare, count), 0.0);
    assert_eq!(report("breaker, time window, closed", bare, time), 0.0);
    assert_eq!(
        report("breaker, consecutive, closed", bare, consecutive),
        0.0
    );
    assert_eq!(report("breaker, keyed, closed", bare, keyed), 0.0);
}

#[test]
fn an_open_breaker_rejects_without_allocating() {
    use palisade::circuit_breaker::{CircuitBreakerLayer, State};
    let layer = CircuitBreakerLayer::new();
    let handle = layer.handle();
    handle.isolate();
    assert_eq!(handle.state(), State::Isolated);
    let rt = runtime();
    let mut svc = layer.layer(ready_u32());
    let rejected = rt.block_on(async {
        for _ in 0..100 {
            let _ = svc.ready().await.unwrap().call(1).await;
        }
        let before = allocations();
        for _ in 0..CALLS {
            let result = svc.ready().await.unwrap().call(1).await;
            assert!(result.is_err());
        }
        allocations() - before
    });
    println!(
        "{:<48} allocations over {CALLS} rejections: {rejected}",
        "breaker, open"
    );
    assert_eq!(rejected, 0);
}

#[cfg(feature = "retry")]
#[test]
fn retry_allocates_nothing_when_the_first_attempt_succeeds() {
    use palisade::retry::{RetryBudget, RetryLayer};

    #[derive(Clone)]
    struct Job(u32);
    impl RequestExtensions for Job {}
    let ready_job = || service_fn(|Job(n): Job| std::future::ready(Ok::<_, BoxError>(n)));

    let bare = per_call(ready_job(), || Job(1));
    assert_eq!(bare, 0.0);
    let unlimited = per_call(
        RetryLayer::new()
            .budget(RetryBudget::unlimited())
            .layer(ready_job()),
        || Job(1),
    );
    let tokens = per_call(RetryLayer::new().layer(ready_job()), || Job(1));
    let percent = per_call(
        RetryLayer::new()
            .budget(
                // The defaults: 20 % of the last 10 s of requests plus 10 retries a second.
                RetryBudget::percent().build().unwrap(),
            )
            .layer(ready_job()),
        || Job(1),
    );
    assert_eq!(report("retry, no budget", bare, unlimited), 0.0);
    assert_eq!(report("retry, token bucket", bare, tokens), 0.0);
    assert_eq!(report("retry, percent budget", bare, percent), 0.0);
}

#[cfg(feature = "throttle")]
#[test]
fn the_throttle_allocates_nothing_admitting_or_refusing() {
    use palisade::throttle::{ThrottleLayer, ThrottleState};
    let bare = per_call(ready_u32(), || 1);
    let healthy = per_call(ThrottleLayer::new().layer(ready_u32()), || 1);
    assert_eq!(report("throttle, healthy", bare, healthy), 0.0);

    // Shedding, with the next probe slot 250 ms away: every call is refused.
    let layer = ThrottleLayer::builder()
        .shed_after(std::num::NonZeroU32::MIN)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|_: u32| {
        std::future::ready(Err::<u32, BoxError>("down".into()))
    }));
    let rt = runtime();
    let refused = rt.block_on(async {
        let _ = svc.ready().await.unwrap().call(1).await;
        assert_eq!(handle.state(), ThrottleState::Shedding);
        // The first rejection resolves the rejection metrics (feature `metrics`), once per
        // layer: what is measured is every rejection after it.
        assert!(svc.ready().await.unwrap().call(1).await.is_err());
        let before = allocations();
        for _ in 0..CALLS {
            let result = svc.ready().await.unwrap().call(1).await;
            assert!(result.is_err());
        }
        allocations() - before
    });
    println!(
        "{:<48} allocations over {CALLS} rejections: {refused}",
        "throttle, shedding"
    );
    assert_eq!(refused, 0);
}

#[cfg(feature = "fallback")]
#[test]
fn a_fallback_that_does_not_answer_allocates_nothing() {
    use palisade::fallback::{Failure, FallbackLayer};
    use palisade::http::ResponseBody;
    let ok = || {
        service_fn(|_: http::Request<()>| {
            std::future::ready(Ok::<_, BoxError>(http::Response::new(())))
        })
    };
    let bare = per_call(ok(), || http::Request::new(()));
    let fallback = per_call(
        FallbackLayer::sync(|_: Failure<()>| http::Response::new(ResponseBody::full("[]".into())))
            .layer(ok()),
        || http::Request::new(()),
    );
    assert_eq!(
        report("fallback, passing a success through", bare, fallback),
        0.0
    );
}

#[cfg(all(feature = "retry", feature = "http"))]
#[test]
fn buffering_a_body_that_arrives_in_one_chunk_allocates_nothing() {
    use http_body_util::Full;
    use palisade::retry::{BufferBodyLayer, ReplayBody};
    let request = || http::Request::new(Full::new(bytes::Bytes::from_static(b"{\"item\":42}")));
    let bare = per_call(
        service_fn(|_: http::Request<Full<bytes::Bytes>>| {
            std::future::ready(Ok::<_, BoxError>(()))
        }),
        request,
    );
    let buffered = per_call(
        BufferBodyLayer::new(64 * 1024).layer(service_fn(
            |request: http::Request<ReplayBody<Full<bytes::Bytes>>>| {
                assert!(request.body().is_replayable());
                std::future::ready(Ok::<_, BoxError>(()))
            },
        )),
        request,
    );
    assert_eq!(
        report("buffer body, one chunk, kept for replay", bare, buffered),
        0.0
    );
}

#[cfg(feature = "idempotency")]
#[test]
fn idempotency_passes_requests_without_a_key_through_without_allocating() {
    use http_body_util::Empty;
    use palisade::http::ReplayBody;
    use palisade::idempotency::{Anonymous, IdempotencyLayer};
    fn ok<B>()
    -> impl Service<
        http::Request<B>,
        Response = http::Response<Empty<bytes::Bytes>>,
        Error = BoxError,
    > + Clone {
        service_fn(|_: http::Request<B>| {
            std::future::ready(Ok::<_, BoxError>(http::Response::new(Empty::new())))
        })
    }
    let post = || {
        http::Request::post("/orders")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    let bare = per_call(ok::<Empty<bytes::Bytes>>(), post);
    let layer = IdempotencyLayer::builder()
        .identity(Anonymous)
        .build()
        .unwrap();
    let unkeyed = per_call(layer.layer(ok::<ReplayBody<Empty<bytes::Bytes>>>()), post);
    assert_eq!(
        report("idempotency, a POST without a key", bare, unkeyed),
        0.0
    );
}

#[test]
fn the_server_timeout_allocates_nothing_on_a_ready_handler() {
    use palisade::timeout::ServerTimeoutLayer;
    let ok = || {
        service_fn(|_: http::Request<()>| {
            std::future::ready(Ok::<_, std::convert::Infallible>(http::Response::new(())))
        })
    };
    let bare = per_call(ok(), || http::Request::new(()));
    let timed = per_call(
        ServerTimeoutLayer::new(Duration::from_secs(10))
            .publish_deadline(false)
            .layer(ok()),
        || http::Request::new(()),
    );
    assert_eq!(report("server timeout, a ready handler", bare, timed), 0.0);
}

#[cfg(feature = "cache")]
#[test]
fn a_cache_hit_allocates_nothing() {
    use palisade::cache::CacheLayer;
    use std::sync::Arc;
    let value: Arc<str> = Arc::from("cached");
    let origin =
        service_fn(move |_: u64| std::future::ready(Ok::<_, BoxError>(Arc::clone(&value))));
    let bare = per_call(origin.clone(), || 7);
    let layer = CacheLayer::builder(std::time::Duration::from_secs(3600), |key: &u64| Some(*key))
        .build()
        .unwrap();
    // The warm-up's first call fills the entry; every counted call is a fresh hit.
    let hit = per_call(layer.layer(origin), || 7);
    assert_eq!(report("cache, fresh hit", bare, hit), 0.0);
}
