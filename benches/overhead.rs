//! Per-call overhead of each layer against the bare service, measured in the same run.
//!
//! One criterion group per layer. Every subject is one `ready().await` plus one `call().await`
//! on a current-thread runtime around an always-ready `tower::service_fn` (or one that is
//! pending exactly once, for timer paths); `bare` is that same service with no layer. After the
//! criterion run, a table prints each subject's median, its ratio to `bare` of its group, the
//! nanoseconds it adds, and the heap allocations per call it adds (counted separately, with a
//! counting allocator, so counting never slows the timed loops).
//!
//! ```text
//! cargo bench --bench overhead                  # everything
//! cargo bench --bench overhead -- timeout/      # one group
//! cargo bench --bench overhead --features metrics   # with every layer recording into a
//!                                                   # Prometheus recorder
//! ```
//!
//! Adding a layer: write a `fn <layer>_group(bench: &mut Bench)` next to `timeout_group` with a
//! bare subject and the layered ones (each names the bare subject it is compared with), and call
//! it from `main`.

use std::future::Future;
use std::hint::black_box;
use std::num::{NonZeroU32, NonZeroUsize};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use criterion::Criterion;
use palisade::RequestExtensions;
use palisade::deadline::Deadline;
use palisade::timeout::TimeoutLayer;
use tower::{Layer, Service, ServiceExt, service_fn};

#[path = "../tests/support/counting_alloc.rs"]
mod counting_alloc;

/// A request that carries no extensions (the cheapest a palisade layer can see).
#[derive(Clone)]
struct Ping(u32);
impl RequestExtensions for Ping {}

/// A request whose extensions hold a deadline, borrowed so building it costs nothing.
struct Scoped(&'static http::Extensions, u32);
impl RequestExtensions for Scoped {
    fn extensions(&self) -> Option<&http::Extensions> {
        Some(self.0)
    }
}

/// Pending on its first poll (waking itself), ready on the second: the path that arms a timer.
struct YieldOnce(Option<u32>, bool);

impl Future for YieldOnce {
    type Output = Result<u32, palisade::error::BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.1 {
            Poll::Ready(Ok(self.0.take().unwrap_or_default()))
        } else {
            self.1 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

type BoxError = palisade::error::BoxError;

fn ready_ping() -> impl Service<Ping, Response = u32, Error = BoxError, Future: Send> + Clone + Send
{
    service_fn(|Ping(n): Ping| std::future::ready(Ok::<_, BoxError>(n)))
}

fn ready_scoped() -> impl Service<Scoped, Response = u32, Error = BoxError> + Clone {
    service_fn(|Scoped(_, n): Scoped| std::future::ready(Ok::<_, BoxError>(n)))
}

fn pending_once() -> impl Service<Ping, Response = u32, Error = BoxError> + Clone {
    service_fn(|Ping(n): Ping| YieldOnce(Some(n), false))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

/// Times `iters` calls of `svc`, each on a request from `make`.
#[allow(clippy::disallowed_methods)] // criterion measures wall time: std's clock is the point
fn time_calls<S, Req>(
    rt: &tokio::runtime::Runtime,
    svc: &mut S,
    make: &mut impl FnMut() -> Req,
    iters: u64,
) -> Duration
where
    S: Service<Req>,
    S::Error: std::fmt::Debug,
{
    rt.block_on(async {
        let start = std::time::Instant::now();
        for _ in 0..iters {
            let ready = svc.ready().await.expect("ready");
            // Rejections are results too (the open-breaker rows measure them).
            black_box(ready.call(black_box(make())).await.is_ok());
        }
        start.elapsed()
    })
}

/// Allocations per call, outside the timed loops.
fn allocations_per_call<S, Req>(
    rt: &tokio::runtime::Runtime,
    svc: &mut S,
    make: &mut impl FnMut() -> Req,
) -> f64
where
    S: Service<Req>,
    S::Error: std::fmt::Debug,
{
    const CALLS: u64 = 10_000;
    let _ = time_calls(rt, svc, make, 1_000);
    let before = counting_alloc::allocations();
    let _ = time_calls(rt, svc, make, CALLS);
    #[allow(clippy::cast_precision_loss)]
    let per_call = (counting_alloc::allocations() - before) as f64 / CALLS as f64;
    per_call
}

/// The criterion run plus what the closing table needs about each subject.
struct Bench {
    criterion: Criterion,
    /// One current-thread runtime for every single-task subject, alive for the whole run (a
    /// breaker tripped in it keeps its open timer armed).
    rt: tokio::runtime::Runtime,
    rows: Vec<Row>,
}

/// What a subject's calls must return, checked once before it is measured.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    Ok,
    Err,
}

/// One subject: its id, the bare subject it is compared with, and its allocations per call
/// (not counted for the multi-threaded rows: the counter is per thread).
struct Row {
    id: String,
    baseline: String,
    allocations: Option<f64>,
}

impl Bench {
    /// Measures `svc` on requests from `make` as `group/name`, to be compared with
    /// `group/baseline`.
    fn subject<S, Req>(
        &mut self,
        group: &str,
        name: &str,
        baseline: &str,
        mut svc: S,
        mut make: impl FnMut() -> Req,
        expect: Expect,
    ) where
        S: Service<Req>,
        S::Error: std::fmt::Debug,
    {
        let id = format!("{group}/{name}");
        let outcome = self.rt.block_on(async {
            let ready = svc.ready().await.expect("ready");
            ready.call(make()).await
        });
        let succeeded = outcome.is_ok();
        assert_eq!(
            succeeded,
            expect == Expect::Ok,
            "{id} must {} before it is measured: {:?}",
            if expect == Expect::Ok {
                "succeed"
            } else {
                "fail"
            },
            outcome.err()
        );
        self.rows.push(Row {
            id: id.clone(),
            baseline: format!("{group}/{baseline}"),
            allocations: Some(allocations_per_call(&self.rt, &mut svc, &mut make)),
        });
        let rt = &self.rt;
        let mut criterion_group = self.criterion.benchmark_group(group);
        criterion_group.bench_function(name, |b| {
            b.iter_custom(|iters| time_calls(rt, &mut svc, &mut make, iters));
        });
        criterion_group.finish();
    }

    /// As [`subject`](Self::subject), but called outside any tokio runtime, each future polled
    /// once with a no-op waker (it must be ready at once: a cache hit). Outside a runtime
    /// tokio's `Instant::now` is the standard clock, as in a production build; inside one, the
    /// `test-util` feature that every dev build carries (the tests pause time) makes each clock
    /// read take the runtime clock's mutex.
    fn subject_no_runtime<S, Req>(
        &mut self,
        group: &str,
        name: &str,
        baseline: &str,
        mut svc: S,
        mut make: impl FnMut() -> Req,
    ) where
        S: Service<Req>,
        S::Error: std::fmt::Debug,
    {
        #[allow(clippy::disallowed_methods)] // criterion measures wall time: std's clock is the point
        fn time_ready<S: Service<Req>, Req>(
            svc: &mut S,
            make: &mut impl FnMut() -> Req,
            iters: u64,
        ) -> Duration
        where
            S::Error: std::fmt::Debug,
        {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let start = std::time::Instant::now();
            for _ in 0..iters {
                assert!(svc.poll_ready(&mut cx).is_ready(), "ready at once");
                let mut future = std::pin::pin!(svc.call(black_box(make())));
                match future.as_mut().poll(&mut cx) {
                    Poll::Ready(result) => black_box(result.is_ok()),
                    Poll::Pending => panic!("a subject without a runtime must answer at once"),
                };
            }
            start.elapsed()
        }
        let id = format!("{group}/{name}");
        let _ = time_ready(&mut svc, &mut make, 1_000);
        let before = counting_alloc::allocations();
        let calls = 10_000;
        let _ = time_ready(&mut svc, &mut make, calls);
        #[allow(clippy::cast_precision_loss)]
        let allocations = (counting_alloc::allocations() - before) as f64 / calls as f64;
        self.rows.push(Row {
            id,
            baseline: format!("{group}/{baseline}"),
            allocations: Some(allocations),
        });
        let mut criterion_group = self.criterion.benchmark_group(group);
        criterion_group.bench_function(name, |b| {
            b.iter_custom(|iters| time_ready(&mut svc, &mut make, iters));
        });
        criterion_group.finish();
    }

    /// As [`subject`](Self::subject), but on a fresh service from `build` for every sample
    /// (built outside the timed loop): for subjects whose state grows with every call, such
    /// as an idempotency store that keeps each new key.
    fn subject_fresh<S, Req>(
        &mut self,
        group: &str,
        name: &str,
        baseline: &str,
        build: impl Fn() -> S,
        mut make: impl FnMut() -> Req,
    ) where
        S: Service<Req>,
        S::Error: std::fmt::Debug,
    {
        let id = format!("{group}/{name}");
        let mut svc = build();
        let outcome = self.rt.block_on(async {
            let ready = svc.ready().await.expect("ready");
            ready.call(make()).await
        });
        assert!(outcome.is_ok(), "{id} must succeed: {:?}", outcome.err());
        self.rows.push(Row {
            id,
            baseline: format!("{group}/{baseline}"),
            allocations: Some(allocations_per_call(&self.rt, &mut build(), &mut make)),
        });
        let rt = &self.rt;
        let mut criterion_group = self.criterion.benchmark_group(group);
        criterion_group.bench_function(name, |b| {
            b.iter_custom(|iters| time_calls(rt, &mut build(), &mut make, iters));
        });
        criterion_group.finish();
    }

    /// Measures two tasks on a two-worker runtime, each calling its own clone of `svc`
    /// `iters` times; the time is per call per task.
    fn contended<S, Req>(
        &mut self,
        group: &str,
        name: &str,
        baseline: &str,
        svc: &S,
        make: fn() -> Req,
    ) where
        S: Service<Req> + Clone + Send + 'static,
        S::Future: Send,
        S::Error: std::fmt::Debug + Send,
        Req: Send + 'static,
    {
        let id = format!("{group}/{name}");
        self.rows.push(Row {
            id,
            baseline: format!("{group}/{baseline}"),
            allocations: None,
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .expect("runtime");
        let mut criterion_group = self.criterion.benchmark_group(group);
        criterion_group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start_line = std::sync::Arc::new(tokio::sync::Barrier::new(2));
                    #[allow(clippy::disallowed_methods)] // wall time is what criterion wants
                    let tasks: Vec<_> = (0..2)
                        .map(|_| {
                            let mut svc = svc.clone();
                            let start_line = std::sync::Arc::clone(&start_line);
                            tokio::spawn(async move {
                                start_line.wait().await;
                                let start = std::time::Instant::now();
                                for _ in 0..iters {
                                    let ready = svc.ready().await.expect("ready");
                                    black_box(ready.call(black_box(make())).await.is_ok());
                                }
                                start.elapsed()
                            })
                        })
                        .collect();
                    let mut slowest = Duration::ZERO;
                    for task in tasks {
                        slowest = slowest.max(task.await.expect("task"));
                    }
                    slowest
                })
            });
        });
        criterion_group.finish();
    }

    /// The table: median, ratio and added nanoseconds against the baseline of the same run, and
    /// added allocations per call.
    #[allow(clippy::print_stdout)]
    fn report(&self) {
        println!();
        println!(
            "{:<34} {:>9} {:>8} {:>9} {:>9}",
            "subject", "ns/call", "x bare", "+ns", "+allocs"
        );
        for row in &self.rows {
            let base_allocations = self
                .rows
                .iter()
                .find(|other| other.id == row.baseline)
                .and_then(|base| base.allocations)
                .unwrap_or(0.0);
            let allocations = row.allocations.map_or_else(
                || "-".to_owned(),
                |a| format!("{:+.2}", a - base_allocations),
            );
            match (median_ns(&row.id), median_ns(&row.baseline)) {
                (Some(ns), Some(base)) => println!(
                    "{:<34} {ns:>9.2} {:>8.2} {:>+9.2} {allocations:>9}",
                    row.id,
                    ns / base,
                    ns - base,
                ),
                _ => println!(
                    "{:<34} {:>9} {:>8} {:>9} {allocations:>9}",
                    row.id, "-", "-", "-"
                ),
            }
        }
    }
}

/// A failure with no data, so boxing it allocates nothing (a fair baseline for rejections).
#[derive(Debug)]
struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("refused")
    }
}

impl std::error::Error for Refused {}

fn failing_ping() -> impl Service<Ping, Response = u32, Error = BoxError> + Clone {
    service_fn(|_: Ping| std::future::ready(Err::<u32, BoxError>(Box::new(Refused))))
}

/// The least any layer that learns each call's outcome can cost: the response future holds a
/// reference count on shared state (so it can record after the service is gone) and reads one
/// atomic when the call completes. Measured beside the breaker and retry rows, it shows how much
/// of their cost is this floor and how much is their own bookkeeping.
#[derive(Clone)]
struct OutcomeFloor<S> {
    inner: S,
    shared: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<S> OutcomeFloor<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            shared: std::sync::Arc::default(),
        }
    }
}

impl<S: Service<Req>, Req> Service<Req> for OutcomeFloor<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = OutcomeFloorFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        OutcomeFloorFuture {
            inner: self.inner.call(request),
            shared: std::sync::Arc::clone(&self.shared),
        }
    }
}

pin_project_lite::pin_project! {
    struct OutcomeFloorFuture<F> {
        #[pin]
        inner: F,
        shared: std::sync::Arc<std::sync::atomic::AtomicU64>,
    }
}

impl<F: Future<Output = Result<T, E>>, T, E> Future for OutcomeFloorFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if result.is_err() {
            this.shared
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        } else {
            black_box(this.shared.load(std::sync::atomic::Ordering::Relaxed));
        }
        Poll::Ready(result)
    }
}

fn circuit_breaker_group(bench: &mut Bench) {
    use palisade::circuit_breaker::{CircuitBreakerLayer, State};
    let g = "circuit_breaker";

    // Closed, every call succeeding: the ring is full and clean after the warm-up, so a
    // success writes nothing.
    bench.subject(g, "bare", "bare", ready_ping(), || Ping(42), Expect::Ok);
    let floor = OutcomeFloor::new(ready_ping());
    bench.subject(g, "outcome_floor", "bare", floor, || Ping(42), Expect::Ok);
    let count = CircuitBreakerLayer::new().layer(ready_ping());
    bench.subject(g, "count_window", "bare", count, || Ping(42), Expect::Ok);
    let time = CircuitBreakerLayer::builder()
        .time_window(Duration::from_secs(10), NonZeroU32::new(10).unwrap())
        .build()
        .expect("valid")
        .layer(ready_ping());
    bench.subject(g, "time_window", "bare", time, || Ping(42), Expect::Ok);
    let consecutive = CircuitBreakerLayer::builder()
        .consecutive_failures(std::num::NonZeroU32::new(5).expect("non-zero"))
        .build()
        .expect("valid")
        .layer(ready_ping());
    bench.subject(
        g,
        "consecutive",
        "bare",
        consecutive,
        || Ping(42),
        Expect::Ok,
    );
    let keyed = CircuitBreakerLayer::builder()
        .keyed(|Ping(n): &Ping| *n % 16)
        .expect("valid")
        .layer(ready_ping());
    bench.subject(g, "keyed", "bare", keyed, || Ping(42), Expect::Ok);

    // Open: tripped inside the bench's runtime, so its (30-day) open timer stays armed and a
    // rejection reads no clock. Compared with a bare service that fails at once.
    bench.subject(
        g,
        "bare_err",
        "bare_err",
        failing_ping(),
        || Ping(42),
        Expect::Err,
    );
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(std::num::NonZeroU32::MIN)
        .open_for(Duration::from_secs(30 * 24 * 3600))
        .build()
        .expect("valid");
    let handle = layer.handle();
    let mut open = layer.layer(failing_ping());
    bench.rt.block_on(async {
        let _ = open.ready().await.expect("ready").call(Ping(1)).await;
    });
    assert_eq!(handle.state(), State::Open);
    bench.subject(
        g,
        "open_rejection",
        "bare_err",
        open,
        || Ping(42),
        Expect::Err,
    );

    // Two tasks on a two-worker runtime sharing one breaker (count window, all succeeding).
    bench.contended(g, "shared_bare", "shared_bare", &ready_ping(), || Ping(42));
    let shared = CircuitBreakerLayer::new().layer(ready_ping());
    bench.contended(g, "shared_count_window", "shared_bare", &shared, || {
        Ping(42)
    });
    let shared = CircuitBreakerLayer::builder()
        .consecutive_failures(std::num::NonZeroU32::new(5).expect("non-zero"))
        .build()
        .expect("valid")
        .layer(ready_ping());
    bench.contended(g, "shared_consecutive", "shared_bare", &shared, || Ping(42));
}

/// tower's retry with the canonical budgeted policy (deposit on success, withdraw to retry),
/// for comparison in the same run.
#[derive(Clone)]
struct TowerBudgeted(std::sync::Arc<tower::retry::budget::TpsBudget>);

impl tower::retry::Policy<Ping, u32, BoxError> for TowerBudgeted {
    type Future = std::future::Ready<()>;

    fn retry(&mut self, _: &mut Ping, result: &mut Result<u32, BoxError>) -> Option<Self::Future> {
        use tower::retry::budget::Budget;
        match result {
            Ok(_) => {
                self.0.deposit();
                None
            }
            Err(_) => self.0.withdraw().then(|| std::future::ready(())),
        }
    }

    fn clone_request(&mut self, request: &Ping) -> Option<Ping> {
        Some(request.clone())
    }
}

fn retry_group(bench: &mut Bench) {
    use palisade::retry::{RetryBudget, RetryLayer};
    let g = "retry";

    // Every first attempt succeeds: the path a healthy client takes on every call.
    bench.subject(g, "bare", "bare", ready_ping(), || Ping(42), Expect::Ok);
    let floor = OutcomeFloor::new(ready_ping());
    bench.subject(g, "outcome_floor", "bare", floor, || Ping(42), Expect::Ok);
    let unbudgeted = RetryLayer::new()
        .budget(RetryBudget::unlimited())
        .layer(ready_ping());
    bench.subject(g, "no_budget", "bare", unbudgeted, || Ping(42), Expect::Ok);
    let tokens = RetryLayer::new().layer(ready_ping());
    bench.subject(g, "token_bucket", "bare", tokens, || Ping(42), Expect::Ok);
    let percent = RetryLayer::new()
        .budget(
            // The defaults: 20 % of the last 10 s of requests plus 10 retries a second.
            RetryBudget::percent().build().expect("valid"),
        )
        .layer(ready_ping());
    bench.subject(
        g,
        "percent_budget",
        "bare",
        percent,
        || Ping(42),
        Expect::Ok,
    );
    let tower_budget = std::sync::Arc::new(tower::retry::budget::TpsBudget::new(
        Duration::from_secs(10),
        10,
        0.2,
    ));
    let tower = tower::retry::RetryLayer::new(TowerBudgeted(tower_budget)).layer(ready_ping());
    bench.subject(
        g,
        "tower_tps_budget",
        "bare",
        tower,
        || Ping(42),
        Expect::Ok,
    );

    // Two tasks on a two-worker runtime sharing one layer's budget.
    bench.contended(g, "shared_bare", "shared_bare", &ready_ping(), || Ping(42));
    let shared = RetryLayer::new().layer(ready_ping());
    bench.contended(g, "shared_token_bucket", "shared_bare", &shared, || {
        Ping(42)
    });
    let shared = RetryLayer::new()
        .budget(
            // The defaults: 20 % of the last 10 s of requests plus 10 retries a second.
            RetryBudget::percent().build().expect("valid"),
        )
        .layer(ready_ping());
    bench.contended(g, "shared_percent_budget", "shared_bare", &shared, || {
        Ping(42)
    });
}

/// The median of a subject from criterion's saved estimates, in nanoseconds per call.
fn median_ns(id: &str) -> Option<f64> {
    let dir = std::env::var_os("CRITERION_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR").map(|t| std::path::Path::new(&t).join("criterion"))
        })
        .unwrap_or_else(|| std::path::PathBuf::from("target/criterion"));
    let path = dir.join(id).join("new").join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["median"]["point_estimate"].as_f64()
}

fn timeout_group(bench: &mut Bench) {
    let limit = Duration::from_secs(1);
    let g = "timeout";

    // Inner ready at once: no clock read, no timer.
    bench.subject(g, "bare", "bare", ready_ping(), || Ping(42), Expect::Ok);
    let palisade = TimeoutLayer::new(limit).layer(ready_ping());
    bench.subject(g, "palisade", "bare", palisade, || Ping(42), Expect::Ok);
    let tower = tower::timeout::TimeoutLayer::new(limit).layer(ready_ping());
    bench.subject(g, "tower", "bare", tower, || Ping(42), Expect::Ok);

    // A request carrying a deadline: the clock is read once at the call.
    let extensions: &'static http::Extensions = Box::leak(Box::new({
        let mut extensions = http::Extensions::new();
        extensions.insert(Deadline::after(Duration::from_secs(3600)));
        extensions
    }));
    let scoped = move || Scoped(extensions, 42);
    bench.subject(
        g,
        "bare_deadline",
        "bare_deadline",
        ready_scoped(),
        scoped,
        Expect::Ok,
    );
    let palisade = TimeoutLayer::new(limit).layer(ready_scoped());
    bench.subject(
        g,
        "palisade_deadline",
        "bare_deadline",
        palisade,
        scoped,
        Expect::Ok,
    );

    // What one clock read costs in this build, for reading the deadline row: the benches build
    // with the dev-dependencies, whose tokio has `test-util`, and there `Instant::now()` also
    // checks for a paused clock. Without `test-util` it is a plain monotonic clock read.
    let clock = service_fn(|Ping(n): Ping| {
        black_box(tokio::time::Instant::now());
        std::future::ready(Ok::<_, BoxError>(n))
    });
    bench.subject(g, "clock_read_only", "bare", clock, || Ping(42), Expect::Ok);

    // Inner pending once: the timer is armed, registered and cancelled.
    bench.subject(
        g,
        "bare_pending",
        "bare_pending",
        pending_once(),
        || Ping(42),
        Expect::Ok,
    );
    let palisade = TimeoutLayer::new(limit).layer(pending_once());
    bench.subject(
        g,
        "palisade_pending",
        "bare_pending",
        palisade,
        || Ping(42),
        Expect::Ok,
    );
    let tower = tower::timeout::TimeoutLayer::new(limit).layer(pending_once());
    bench.subject(
        g,
        "tower_pending",
        "bare_pending",
        tower,
        || Ping(42),
        Expect::Ok,
    );
}

/// An axum service whose response body is read to the end, as a server writing it would.
#[derive(Clone)]
struct ReadBody<S>(S);

impl<S, Req> Service<Req> for ReadBody<S>
where
    S: Service<Req, Response = http::Response<axum::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<palisade::error::BoxError>,
{
    type Response = (http::StatusCode, bytes::Bytes);
    type Error = palisade::error::BoxError;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        use http_body_util::BodyExt;
        let response = self.0.call(request);
        Box::pin(async move {
            let response = response.await.map_err(Into::into)?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok((status, body))
        })
    }
}

fn idempotency_group(bench: &mut Bench) {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::post;
    use palisade::idempotency::{IdempotencyLayer, MemoryStore};

    let g = "idempotency";
    // A handler that reads its small JSON body and answers 201 with a small body.
    let router = || {
        Router::new().route(
            "/orders",
            post(|body: bytes::Bytes| async move {
                black_box(body);
                (http::StatusCode::CREATED, "{\"order\":1}")
            }),
        )
    };
    let order = |key: http::HeaderValue| {
        http::Request::post("/orders")
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(Body::from(&b"{\"item\":42}"[..]))
            .expect("request")
    };
    // Every request a new key: the first-request path (claim, run, store). Keys are made the
    // same way for the bare router, which ignores them.
    fn fresh_key() -> http::HeaderValue {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        http::HeaderValue::try_from(format!("\"order-{n}\"")).expect("key")
    }
    bench.subject(
        g,
        "bare",
        "bare",
        ReadBody(router()),
        || order(fresh_key()),
        Expect::Ok,
    );
    bench.subject_fresh(
        g,
        "first_request",
        "bare",
        || {
            let store = MemoryStore::builder()
                .max_entries(NonZeroUsize::MAX)
                .max_bytes(usize::MAX)
                .build();
            ReadBody(router().layer(IdempotencyLayer::builder().store(store).build().unwrap()))
        },
        || order(fresh_key()),
    );
    // One key, stored once: every request is a replay.
    let replaying = ReadBody(router().layer(IdempotencyLayer::new()));
    let same_key = http::HeaderValue::from_static("\"order-replayed\"");
    bench.subject(
        g,
        "replay",
        "bare",
        replaying,
        || order(same_key.clone()),
        Expect::Ok,
    );
}

fn throttle_group(bench: &mut Bench) {
    use palisade::circuit_breaker::CircuitBreakerLayer;
    use palisade::throttle::{ThrottleLayer, ThrottleState};
    let g = "throttle";

    // Healthy: every call succeeds, so after the warm-up the window is full and clean and a
    // call writes nothing shared. The count-window breaker is the target to match, measured
    // in the same run.
    bench.subject(g, "bare", "bare", ready_ping(), || Ping(42), Expect::Ok);
    let breaker = CircuitBreakerLayer::new().layer(ready_ping());
    bench.subject(
        g,
        "breaker_count_window",
        "bare",
        breaker,
        || Ping(42),
        Expect::Ok,
    );
    let throttle = ThrottleLayer::new().layer(ready_ping());
    bench.subject(g, "healthy", "bare", throttle, || Ping(42), Expect::Ok);

    // Shedding: tripped inside the bench's runtime with an hour between probes, so every call
    // is a rejection (one clock read, to compare with the probe slot). Compared with a bare
    // service that fails at once.
    bench.subject(
        g,
        "bare_err",
        "bare_err",
        failing_ping(),
        || Ping(42),
        Expect::Err,
    );
    let layer = ThrottleLayer::builder()
        .shed_after(std::num::NonZeroU32::MIN)
        .probe_interval(Duration::from_secs(3600))
        .build()
        .expect("valid");
    let handle = layer.handle();
    let mut shedding = layer.layer(failing_ping());
    bench.rt.block_on(async {
        let _ = shedding.ready().await.expect("ready").call(Ping(1)).await;
    });
    assert_eq!(handle.state(), ThrottleState::Shedding);
    bench.subject(
        g,
        "shedding_rejection",
        "bare_err",
        shedding,
        || Ping(42),
        Expect::Err,
    );

    // Two tasks on a two-worker runtime sharing one healthy throttle.
    bench.contended(g, "shared_bare", "shared_bare", &ready_ping(), || Ping(42));
    let shared = ThrottleLayer::new().layer(ready_ping());
    bench.contended(g, "shared_healthy", "shared_bare", &shared, || Ping(42));
}

fn http_ok() -> impl Service<
    http::Request<http_body_util::Empty<bytes::Bytes>>,
    Response = http::Response<()>,
    Error = BoxError,
    Future: Send,
> + Clone
+ Send {
    service_fn(|_: http::Request<http_body_util::Empty<bytes::Bytes>>| {
        std::future::ready(Ok::<_, BoxError>(http::Response::new(())))
    })
}

fn http_get() -> http::Request<http_body_util::Empty<bytes::Bytes>> {
    http::Request::get("http://upstream.test/items")
        .body(http_body_util::Empty::new())
        .expect("request")
}

fn fallback_group(bench: &mut Bench) {
    use palisade::fallback::{Failure, FallbackLayer};
    use palisade::http::ResponseBody;
    let g = "fallback";
    // A call the fallback does not answer: one reference count and a look at the result.
    bench.subject(g, "bare", "bare", http_ok(), http_get, Expect::Ok);
    let fallback = FallbackLayer::sync(|_: Failure<()>| {
        http::Response::new(ResponseBody::full(bytes::Bytes::from_static(b"[]")))
    })
    .layer(http_ok());
    bench.subject(g, "pass_through", "bare", fallback, http_get, Expect::Ok);
}

fn preset_group(bench: &mut Bench) {
    use palisade::http::ReplayBody;
    use palisade::preset::HttpClientLayer;
    let g = "preset";
    let upstream = || {
        service_fn(
            |_: http::Request<ReplayBody<http_body_util::Empty<bytes::Bytes>>>| {
                std::future::ready(Ok::<_, BoxError>(http::Response::new(())))
            },
        )
    };
    bench.subject(g, "bare", "bare", http_ok(), http_get, Expect::Ok);
    // Every default: the total timeout publishes a deadline (a clock read and the request's
    // first extension), the attempt timeout reads it, the deadline is written to
    // `grpc-timeout`, the percentage budget deposits, the throttle admits.
    let full = HttpClientLayer::new().layer(upstream());
    bench.subject(g, "client_defaults", "bare", full, http_get, Expect::Ok);
    // No deadline published or sent: the decisions alone (retry with its budget, throttle,
    // an attempt timeout that arms no timer for an answer ready at once).
    let decisions = HttpClientLayer::new()
        .without_total_timeout()
        .without_propagation()
        .layer(upstream());
    bench.subject(
        g,
        "client_no_deadline",
        "bare",
        decisions,
        http_get,
        Expect::Ok,
    );
}

/// A ready origin answering every key with one shared value: the clone of an `Arc`, as a hit
/// does, so the baseline pays for the same clone.
fn ready_value() -> impl Service<u64, Response = std::sync::Arc<str>, Error = BoxError, Future: Send>
+ Clone
+ Send
+ 'static {
    let value: std::sync::Arc<str> = std::sync::Arc::from("a cached value");
    service_fn(move |_: u64| std::future::ready(Ok::<_, BoxError>(std::sync::Arc::clone(&value))))
}

fn cache_group(bench: &mut Bench) {
    use palisade::cache::CacheLayer;
    let g = "cache";

    // A hit: `u64` keys, `Arc` values, an entry fresh for an hour (the subject's warm-up call
    // fills it), so every measured call is a fresh hit: one clock read, one map lookup, one
    // counter, one `Arc` clone.
    bench.subject(g, "bare", "bare", ready_value(), || 42u64, Expect::Ok);
    let layer = CacheLayer::builder(Duration::from_secs(3600), |key: &u64| Some(*key))
        .build()
        .expect("valid");
    bench.subject(
        g,
        "hit",
        "bare",
        layer.layer(ready_value()),
        || 42u64,
        Expect::Ok,
    );

    // The same hit outside any runtime: the clock read is the standard one, as in a
    // production build (inside a runtime, dev builds' `test-util` puts a mutex in each read).
    bench.subject_no_runtime(
        g,
        "bare_no_runtime",
        "bare_no_runtime",
        ready_value(),
        || 42u64,
    );
    bench.subject_no_runtime(
        g,
        "hit_no_runtime",
        "bare_no_runtime",
        layer.layer(ready_value()),
        || 42u64,
    );

    // The same hot key read by two tasks on a two-worker runtime.
    bench.contended(g, "shared_bare", "shared_bare", &ready_value(), || 42u64);
    let shared = layer.layer(ready_value());
    bench.contended(g, "shared_hit", "shared_bare", &shared, || 42u64);

    // HTTP mode: an axum handler answering 1 KiB fresh for an hour, bare and behind a shared
    // HTTP cache (every measured call a hit: the lookup, the stored headers cloned, `Age` and
    // `Cache-Status` written, the body a reference count). Both bodies are read to the end.
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use palisade::cache::{CacheMode, HttpCacheLayer};
    let kib = bytes::Bytes::from(vec![b'x'; 1024]);
    let router = move || {
        let kib = kib.clone();
        Router::new().route(
            "/items",
            get(move || {
                let kib = kib.clone();
                async move { ([("cache-control", "max-age=3600")], kib) }
            }),
        )
    };
    let request = || {
        http::Request::get("/items")
            .header("host", "api.test")
            .body(Body::empty())
            .expect("request")
    };
    bench.subject(
        g,
        "http_bare",
        "http_bare",
        ReadBody(router()),
        request,
        Expect::Ok,
    );
    let http_cache = HttpCacheLayer::builder(CacheMode::Shared)
        .build()
        .expect("valid");
    bench.subject(
        g,
        "http_hit",
        "http_bare",
        ReadBody(router().layer(http_cache)),
        request,
        Expect::Ok,
    );
}

fn main() {
    // With the `metrics` feature, the layers record into a Prometheus recorder, as in an
    // application: the run then measures what the instrumentation costs on top.
    // `PALISADE_BENCH_RECORDER=none` leaves the facade's no-op recorder instead, to tell
    // palisade's own share (clock reads, the reference count) from the exporter's.
    #[cfg(feature = "metrics")]
    let _recorder =
        (std::env::var("PALISADE_BENCH_RECORDER").as_deref() != Ok("none")).then(|| {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .expect("the bench's only recorder")
        });
    let criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut bench = Bench {
        criterion,
        rt: runtime(),
        rows: Vec::new(),
    };
    timeout_group(&mut bench);
    circuit_breaker_group(&mut bench);
    retry_group(&mut bench);
    throttle_group(&mut bench);
    fallback_group(&mut bench);
    preset_group(&mut bench);
    idempotency_group(&mut bench);
    cache_group(&mut bench);
    bench.criterion.final_summary();
    bench.report();
}
