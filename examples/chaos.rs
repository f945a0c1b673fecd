//! palisade's end-to-end check: client stacks against an upstream that degrades, on loopback.
//!
//! ```text
//! cargo run --release --example chaos                          # seed 1
//! cargo run --release --example chaos -- --seed 7              # another failure pattern
//! cargo run --release --example chaos -- --phases 5,5,5,5,5    # other phase lengths (s)
//! ```
//!
//! An open-loop client sends 200 requests per second, each with a 1 s caller deadline, to an
//! upstream that goes through five phases (5, 10, 5, 5 and 10 s; `--phases 5,5,5,5,5` to
//! change them):
//!
//! - **healthy**: every request answered at once;
//! - **brownout**: half the requests answered `503` at once, a quarter of those with
//!   `Retry-After: 1`;
//! - **slow**: every answer takes 2 s;
//! - **outage**: requests hang, never answered;
//! - **recovery**: healthy again.
//!
//! Four client stacks run side by side, each against its own upstream and on the same
//! timeline:
//!
//! - **none**: the bare hyper-util client, the caller's deadline only;
//! - **retry**: a 1 s total timeout publishing the deadline ⊃ a retry (3 attempts, equal jitter,
//!   a 20 % percentage budget) ⊃ a 200 ms attempt timeout;
//! - **breaker**: the same with a circuit breaker between the retry and the attempt timeout (50 %
//!   over a count window of 20, at least 10 calls, open 2 s, 1 probe, 5xx and 429 failures);
//! - **preset**: [`HttpClientLayer`] with its defaults, given the scenario's two timeouts (1 s
//!   total, 200 ms per attempt).
//!
//! Per phase it prints each stack's success rate, p50 and p99 latency, amplification (requests
//! the upstream saw over requests the client sent), retries, budget refusals and guard
//! transitions, and then the first success after recovery and whether the targets hold; it
//! exits with status 1 if one does not. The targets are those of the composition work (see
//! `BENCHMARKS.md`), checked for the preset and for the breaker stack.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use palisade::Ratio;
use palisade::circuit_breaker::{CircuitBreakerHandle, CircuitBreakerLayer};
use palisade::classify::StatusClassifier;
use palisade::error::BoxError;
use palisade::http::ReplayBody;
use palisade::preset::HttpClientLayer;
use palisade::retry::{Backoff, BufferBodyLayer, HttpPolicy, Jitter, RetryBudget, RetryLayer};
use palisade::throttle::ThrottleHandle;
use palisade::timeout::TimeoutLayer;
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceBuilder, ServiceExt};
use tracing::Instrument;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

const RATE: u32 = 200;
/// Each phase's length, in seconds, unless `--phases` says otherwise. The brownout and the
/// recovery last 10 s: a retry budget remembers the last 10 s of requests, so a shorter
/// brownout measures the healthy phase's deposits more than the budget; and a 97 % recovery
/// over 5 s would leave 150 ms to notice it, a quarter of what 2 % of the outage's load buys.
const DEFAULT_PHASES: [u64; 5] = [5, 10, 5, 5, 10];
const DEADLINE: Duration = Duration::from_secs(1);
const ATTEMPT: Duration = Duration::from_millis(200);
const PHASES: [&str; 5] = ["healthy", "brownout", "slow", "outage", "recovery"];
const BROWNOUT: usize = 1;
const SLOW: usize = 2;
const OUTAGE: usize = 3;
const RECOVERY: usize = 4;

type Body = Full<Bytes>;
type Upstream = Client<HttpConnector, ReplayBody<Body>>;
type Stack =
    BoxCloneSyncService<http::Request<Body>, http::Response<hyper::body::Incoming>, BoxError>;

/// The scenario's clock: which phase a moment falls in.
#[derive(Clone, Copy)]
struct Timeline {
    start: Instant,
    /// Each phase's length.
    lengths: [Duration; 5],
}

impl Timeline {
    fn phase_at(&self, at: Instant) -> usize {
        let elapsed = at.saturating_duration_since(self.start);
        let mut end = Duration::ZERO;
        for (phase, length) in self.lengths.iter().enumerate() {
            end += *length;
            if elapsed < end {
                return phase;
            }
        }
        PHASES.len() - 1
    }

    fn phase_start(&self, phase: usize) -> Instant {
        self.start + self.lengths[..phase].iter().sum::<Duration>()
    }

    fn total(&self) -> Duration {
        self.lengths.iter().sum()
    }
}

/// One upstream: its behaviour follows the timeline; it counts what reaches it.
struct UpstreamState {
    timeline: Timeline,
    /// splitmix64 counter for the brownout's draws.
    draws: AtomicU64,
    arrivals: [AtomicUsize; 5],
    /// When each request id was last told `Retry-After: 1`.
    told_to_wait: Mutex<HashMap<u64, Instant>>,
    /// Requests that came back inside a `Retry-After` window.
    early_returns: AtomicUsize,
}

impl UpstreamState {
    fn draw(&self) -> f64 {
        let mut z = self
            .draws
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        #[allow(clippy::cast_precision_loss)]
        let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
        unit
    }
}

async fn upstream(State(state): State<Arc<UpstreamState>>, headers: HeaderMap) -> Response {
    let now = Instant::now();
    let phase = state.timeline.phase_at(now);
    state.arrivals[phase].fetch_add(1, Ordering::Relaxed);
    let id: u64 = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX);
    {
        let told = state.told_to_wait.lock().expect("lock");
        if told
            .get(&id)
            .is_some_and(|at| now.saturating_duration_since(*at) < Duration::from_secs(1))
        {
            state.early_returns.fetch_add(1, Ordering::Relaxed);
        }
    }
    match phase {
        BROWNOUT => {
            let draw = state.draw();
            if draw < 0.125 {
                state.told_to_wait.lock().expect("lock").insert(id, now);
                let mut headers = HeaderMap::new();
                headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
                (StatusCode::SERVICE_UNAVAILABLE, headers, "come back in 1 s").into_response()
            } else if draw < 0.5 {
                (StatusCode::SERVICE_UNAVAILABLE, "brownout").into_response()
            } else {
                "ok".into_response()
            }
        }
        SLOW => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            "slow ok".into_response()
        }
        OUTAGE => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            "never".into_response()
        }
        _ => "ok".into_response(),
    }
}

async fn serve(state: Arc<UpstreamState>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("address");
    let app = Router::new()
        .route("/", axum::routing::get(upstream))
        .with_state(state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

fn hyper_client() -> Upstream {
    Client::builder(TokioExecutor::new()).build_http()
}

/// The retry of the "retry" and "breaker" stacks: 3 attempts, equal jitter, a 20 % budget.
fn measured_retry() -> RetryLayer<HttpPolicy> {
    RetryLayer::new()
        .policy(HttpPolicy::new())
        .max_attempts(NonZeroU32::new(3).expect("non-zero"))
        .backoff(Backoff::default().jitter(Jitter::Equal))
        .budget(
            // The defaults: 20 % of the last 10 s of requests plus 10 retries a second.
            RetryBudget::percent().build().expect("valid budget"),
        )
}

/// What a stack's guard can tell us.
#[derive(Clone)]
enum Guard {
    None,
    Breaker(CircuitBreakerHandle),
    Throttle(ThrottleHandle),
}

impl Guard {
    fn transitions(&self) -> u64 {
        match self {
            Self::None => 0,
            Self::Breaker(handle) => handle.metrics().transitions,
            Self::Throttle(handle) => handle.metrics().transitions,
        }
    }
}

fn stacks() -> Vec<(&'static str, Stack, Guard)> {
    let plain: Client<HttpConnector, Body> = Client::builder(TokioExecutor::new()).build_http();
    let none =
        BoxCloneSyncService::new(ServiceBuilder::new().map_err(BoxError::from).service(plain));
    let retry = BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(TimeoutLayer::new(DEADLINE).publish_deadline(true))
            .layer(BufferBodyLayer::default())
            .layer(measured_retry())
            .layer(TimeoutLayer::new(ATTEMPT))
            .service(hyper_client()),
    );
    let breaker_layer = CircuitBreakerLayer::builder()
        .classifier(StatusClassifier::new())
        .count_window(NonZeroU32::new(20).unwrap())
        .minimum_calls(NonZeroU32::new(10).unwrap())
        .failure_rate(Ratio::new_const(0.5))
        .open_for(Duration::from_secs(2))
        .build()
        .expect("valid breaker");
    let breaker_handle = breaker_layer.handle();
    let breaker = BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(TimeoutLayer::new(DEADLINE).publish_deadline(true))
            .layer(BufferBodyLayer::default())
            .layer(measured_retry())
            .layer(breaker_layer)
            .layer(TimeoutLayer::new(ATTEMPT))
            .service(hyper_client()),
    );
    let preset_layer = HttpClientLayer::new()
        .total_timeout(DEADLINE)
        .attempt_timeout(ATTEMPT);
    let throttle_handle = preset_layer
        .throttle_handle()
        .expect("the preset throttles");
    let preset = BoxCloneSyncService::new(preset_layer.layer(hyper_client()));
    vec![
        ("none", none, Guard::None),
        ("retry", retry, Guard::None),
        ("breaker", breaker, Guard::Breaker(breaker_handle)),
        ("preset", preset, Guard::Throttle(throttle_handle)),
    ]
}

/// One client request's fate.
struct Sample {
    phase: usize,
    ok: bool,
    latency: Duration,
    done: Instant,
}

/// Event counts by stack, phase and what happened.
type EventCounts = HashMap<(&'static str, usize, &'static str), u64>;

/// Counts the retry layer's events per stack and phase, from the span each request runs in.
#[derive(Clone, Default)]
struct RetryEvents {
    counts: Arc<Mutex<EventCounts>>,
}

/// The span fields a request is tagged with.
struct Tag {
    stack: &'static str,
    phase: usize,
}

#[derive(Default)]
struct TagVisitor {
    stack: Option<&'static str>,
    phase: Option<usize>,
}

impl tracing::field::Visit for TagVisitor {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "stack" {
            self.stack = ["none", "retry", "breaker", "preset"]
                .into_iter()
                .find(|name| *name == value);
        }
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if field.name() == "phase" {
            self.phase = usize::try_from(value).ok();
        }
    }

    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

#[derive(Default)]
struct MessageVisitor {
    message: String,
    outcome: String,
}

impl tracing::field::Visit for MessageVisitor {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "outcome" => self.outcome = format!("{value:?}"),
            _ => {}
        }
    }
}

impl<S> tracing_subscriber::Layer<S> for RetryEvents
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut visitor = TagVisitor::default();
        attrs.record(&mut visitor);
        if let (Some(stack), Some(phase), Some(span)) = (visitor.stack, visitor.phase, ctx.span(id))
        {
            span.extensions_mut().insert(Tag { stack, phase });
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        if !event.metadata().target().starts_with("palisade::retry") {
            return;
        }
        let mut visitor = MessageVisitor::default();
        event.record(&mut visitor);
        let what = if visitor.message == "retrying" {
            "retries"
        } else if visitor.message.starts_with("retry budget exhausted") {
            if visitor.outcome.contains("circuit") || visitor.outcome.contains("throttled") {
                "refusals_on_rejections"
            } else {
                "refusals"
            }
        } else {
            return;
        };
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        for span in scope {
            if let Some(tag) = span.extensions().get::<Tag>() {
                *self
                    .counts
                    .lock()
                    .expect("lock")
                    .entry((tag.stack, tag.phase, what))
                    .or_default() += 1;
                return;
            }
        }
    }
}

impl RetryEvents {
    fn get(&self, stack: &'static str, phase: usize, what: &'static str) -> u64 {
        self.counts
            .lock()
            .expect("lock")
            .get(&(stack, phase, what))
            .copied()
            .unwrap_or(0)
    }
}

/// One stack's results.
struct Run {
    name: &'static str,
    samples: Vec<Sample>,
    arrivals: [usize; 5],
    early_returns: usize,
    transitions: [u64; 5],
}

#[allow(clippy::too_many_lines)]
async fn drive(
    name: &'static str,
    stack: Stack,
    guard: Guard,
    state: Arc<UpstreamState>,
    addr: SocketAddr,
) -> Run {
    let timeline = state.timeline;
    let samples = Arc::new(Mutex::new(Vec::new()));
    let total = u32::try_from(timeline.total().as_millis() * u128::from(RATE) / 1000).unwrap_or(0);
    let gap = Duration::from_secs(1) / RATE;
    let mut transitions = [0u64; 5];
    let mut tasks = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    let mut last_phase = 0;
    for i in 0..total {
        let at = timeline.start + gap * i;
        tokio::time::sleep_until(at).await;
        let phase = timeline.phase_at(at);
        if phase != last_phase {
            transitions[last_phase] = guard.transitions();
            last_phase = phase;
        }
        let mut request = http::Request::get(format!("http://{addr}/"))
            .body(Body::default())
            .expect("request");
        request
            .headers_mut()
            .insert("x-request-id", HeaderValue::from(u64::from(i)));
        let stack = stack.clone();
        let samples = Arc::clone(&samples);
        let span = tracing::info_span!("request", stack = name, phase = phase as u64);
        tasks.push(tokio::spawn(
            async move {
                let started = Instant::now();
                let result = tokio::time::timeout(DEADLINE, stack.oneshot(request)).await;
                let ok = matches!(&result, Ok(Ok(response)) if response.status() == StatusCode::OK);
                let done = Instant::now();
                samples.lock().expect("lock").push(Sample {
                    phase,
                    ok,
                    latency: done - started,
                    done,
                });
            }
            .instrument(span),
        ));
    }
    for task in tasks {
        let _ = task.await;
    }
    transitions[PHASES.len() - 1] = guard.transitions();
    for phase in (1..PHASES.len()).rev() {
        transitions[phase] -= transitions[phase - 1];
    }
    let samples = std::mem::take(&mut *samples.lock().expect("lock"));
    Run {
        name,
        samples,
        arrivals: std::array::from_fn(|p| state.arrivals[p].load(Ordering::Relaxed)),
        early_returns: state.early_returns.load(Ordering::Relaxed),
        transitions,
    }
}

/// A phase's figures for one stack.
#[derive(Clone, Copy, Default)]
struct Figures {
    requests: usize,
    success: f64,
    p50: Duration,
    p99: Duration,
    amplification: f64,
    retries: u64,
    refusals: u64,
    refusals_on_rejections: u64,
    transitions: u64,
}

#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
fn figures(run: &Run, events: &RetryEvents, phase: Option<usize>) -> Figures {
    let in_phase = |s: &&Sample| phase.is_none_or(|p| s.phase == p);
    let samples: Vec<&Sample> = run.samples.iter().filter(in_phase).collect();
    let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    let requests = samples.len();
    let arrivals: usize = match phase {
        Some(p) => run.arrivals[p],
        None => run.arrivals.iter().sum(),
    };
    let phases: Vec<usize> = phase.map_or_else(|| (0..PHASES.len()).collect(), |p| vec![p]);
    let sum = |what| phases.iter().map(|p| events.get(run.name, *p, what)).sum();
    Figures {
        requests,
        success: samples.iter().filter(|s| s.ok).count() as f64 / requests.max(1) as f64,
        p50: at(0.5),
        p99: at(0.99),
        amplification: arrivals as f64 / requests.max(1) as f64,
        retries: sum("retries"),
        refusals: sum("refusals"),
        refusals_on_rejections: sum("refusals_on_rejections"),
        transitions: phases.iter().map(|p| run.transitions[*p]).sum(),
    }
}

fn first_success_after_recovery(run: &Run, timeline: Timeline) -> Option<Duration> {
    let recovery = timeline.phase_start(RECOVERY);
    run.samples
        .iter()
        .filter(|s| s.ok && s.done >= recovery)
        .map(|s| s.done - recovery)
        .min()
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

#[allow(clippy::too_many_lines, clippy::cast_precision_loss)]
fn main() {
    let arg = |name: &str| std::env::args().skip_while(|arg| arg != name).nth(1);
    let seed: u64 = arg("--seed").and_then(|v| v.parse().ok()).unwrap_or(1);
    let lengths: [Duration; 5] = arg("--phases")
        .map(|v| {
            v.split(',')
                .map(|s| {
                    s.trim()
                        .parse::<u64>()
                        .expect("--phases takes five whole seconds")
                })
                .collect::<Vec<_>>()
        })
        .and_then(|v| <[u64; 5]>::try_from(v).ok())
        .unwrap_or(DEFAULT_PHASES)
        .map(Duration::from_secs);
    let events = RetryEvents::default();
    let subscriber = tracing_subscriber::registry().with(tracing_subscriber::Layer::with_filter(
        events.clone(),
        tracing_subscriber::filter::Targets::new()
            .with_target("palisade::retry", tracing::Level::DEBUG)
            .with_target("chaos", tracing::Level::INFO),
    ));
    tracing::subscriber::set_global_default(subscriber).expect("one subscriber");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (runs, timeline) = runtime.block_on(async {
        let timeline = Timeline {
            start: Instant::now() + Duration::from_millis(500),
            lengths,
        };
        let mut upstreams = Vec::new();
        for (index, (name, stack, guard)) in stacks().into_iter().enumerate() {
            let state = Arc::new(UpstreamState {
                timeline,
                draws: AtomicU64::new(seed.wrapping_mul(1000) + index as u64),
                arrivals: Default::default(),
                told_to_wait: Mutex::default(),
                early_returns: AtomicUsize::new(0),
            });
            let addr = serve(Arc::clone(&state)).await;
            upstreams.push((name, stack, guard, state, addr));
        }
        let phases: Vec<String> = PHASES
            .iter()
            .zip(lengths)
            .map(|(name, length)| format!("{name} {} s", length.as_secs()))
            .collect();
        println!(
            "chaos: seed {seed}, {RATE} req/s, {}, 1 s caller deadline",
            phases.join(" → ")
        );
        let drivers: Vec<_> = upstreams
            .into_iter()
            .map(|(name, stack, guard, state, addr)| {
                tokio::spawn(drive(name, stack, guard, state, addr))
            })
            .collect();
        let mut runs = Vec::new();
        for driver in drivers {
            runs.push(driver.await.expect("driver"));
        }
        (runs, timeline)
    });

    println!();
    println!(
        "{:<9} {:<9} {:>6} {:>8} {:>9} {:>9} {:>6} {:>7} {:>8} {:>6}",
        "phase",
        "stack",
        "reqs",
        "success",
        "p50 ms",
        "p99 ms",
        "amp",
        "retries",
        "refusals",
        "trans"
    );
    for phase in (0..PHASES.len()).map(Some).chain([None]) {
        for run in &runs {
            let f = figures(run, &events, phase);
            println!(
                "{:<9} {:<9} {:>6} {:>7.1}% {:>9} {:>9} {:>6.3} {:>7} {:>8} {:>6}",
                phase.map_or("all", |p| PHASES[p]),
                run.name,
                f.requests,
                f.success * 100.0,
                ms(f.p50),
                ms(f.p99),
                f.amplification,
                f.retries,
                f.refusals,
                f.transitions
            );
        }
    }
    println!();
    for run in &runs {
        println!(
            "{:<9} first success after recovery: {:>8} ms; retries inside a Retry-After window: {}",
            run.name,
            first_success_after_recovery(run, timeline).map_or("never".into(), ms),
            run.early_returns
        );
    }

    // The targets.
    let run = |name| runs.iter().find(|r| r.name == name).expect("stack");
    let (none, retry, breaker, preset) = (run("none"), run("retry"), run("breaker"), run("preset"));
    let all = |r| figures(r, &events, None);
    let at = |r, p| figures(r, &events, Some(p));
    let brownout = at(preset, BROWNOUT);
    let attempt_p99 = ATTEMPT + Duration::from_millis(20);
    let first = first_success_after_recovery(preset, timeline);
    let checks = [
        (
            "preset: success over all phases ≥ the better of none and retry",
            all(preset).success >= all(none).success.max(all(retry).success),
            format!(
                "{:.1}% vs {:.1}% / {:.1}%",
                all(preset).success * 100.0,
                all(none).success * 100.0,
                all(retry).success * 100.0
            ),
        ),
        (
            "preset: brownout success ≥ 0.5 + 0.5·(amp − 1) − 0.03, amp ≤ 1.5",
            brownout.success >= 0.5 + 0.5 * (brownout.amplification - 1.0) - 0.03
                && brownout.amplification <= 1.5,
            format!(
                "{:.1}% at amp {:.3} (needs {:.1}%)",
                brownout.success * 100.0,
                brownout.amplification,
                (0.5 + 0.5 * (brownout.amplification - 1.0) - 0.03) * 100.0
            ),
        ),
        (
            "preset: slow phase amp ≤ 0.15",
            at(preset, SLOW).amplification <= 0.15,
            format!("{:.3}", at(preset, SLOW).amplification),
        ),
        (
            "preset: outage amp ≤ 0.02 and p99 ≤ attempt timeout + 20 ms",
            at(preset, OUTAGE).amplification <= 0.02 && at(preset, OUTAGE).p99 <= attempt_p99,
            format!(
                "amp {:.3}, p99 {} ms",
                at(preset, OUTAGE).amplification,
                ms(at(preset, OUTAGE).p99)
            ),
        ),
        (
            "preset: recovery success ≥ 97 %, first success ≤ 300 ms",
            at(preset, RECOVERY).success >= 0.97
                && first.is_some_and(|d| d <= Duration::from_millis(300)),
            format!(
                "{:.1}%, first after {} ms",
                at(preset, RECOVERY).success * 100.0,
                first.map_or("never".into(), ms)
            ),
        ),
        (
            "preset: no retry inside a Retry-After window",
            preset.early_returns == 0,
            format!("{}", preset.early_returns),
        ),
        (
            "breaker: outage p99 ≤ attempt timeout + 20 ms",
            at(breaker, OUTAGE).p99 <= attempt_p99,
            format!("{} ms", ms(at(breaker, OUTAGE).p99)),
        ),
        (
            "breaker and preset: no budget refusal caused by a rejection",
            all(breaker).refusals_on_rejections == 0 && all(preset).refusals_on_rejections == 0,
            format!(
                "{} / {}",
                all(breaker).refusals_on_rejections,
                all(preset).refusals_on_rejections
            ),
        ),
    ];
    println!();
    let mut failed = false;
    for (what, ok, detail) in &checks {
        println!("{} {what}: {detail}", if *ok { "PASS" } else { "MISS" });
        failed |= !ok;
    }
    if failed {
        std::process::exit(1);
    }
}
