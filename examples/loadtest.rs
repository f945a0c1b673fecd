//! A k6-style load test on loopback: virtual users ramped through stages, a check on every
//! answer, and an end-of-run summary (requests, rate, latency percentiles, errors by kind,
//! checks passed).
//!
//! ```text
//! cargo run --release --example loadtest                       # bare client vs palisade, built-in target
//! cargo run --release --example loadtest -- --stages 5s:20,10s:100,5s:0
//! cargo run --release --example loadtest -- --url http://127.0.0.1:8080/ --palisade
//! cargo run --release --example loadtest -- --serve 8080       # a target for oha or wrk
//! ```
//!
//! With no `--url`, it starts its own target on a free loopback port, an axum handler that
//! answers in about 2 ms but, like a dependency under load, fails 10 % of calls with `503`
//! and stalls 1 % of them for 3 s, and runs the same stages twice: through the bare hyper
//! client, then through palisade's client preset (a 1 s total timeout, 100 ms per attempt,
//! retries with a budget, the throttle). The two summaries show what the stack changes: the
//! stalls and the 503s absorbed, the tail bounded by the timeout.
//!
//! `--url` drives any loopback URL instead (the bare client, or the preset with
//! `--palisade`). `--serve PORT` only serves the target, bare on `PORT` and behind palisade's
//! server preset on `PORT + 1`, for another load generator:
//!
//! ```text
//! oha -z 20s -c 50 http://127.0.0.1:8080/     # the bare target
//! oha -z 20s -c 50 http://127.0.0.1:8081/     # behind HttpServerLayer (10 s handler timeout)
//! wrk -t2 -c50 -d20s http://127.0.0.1:8081/
//! ```
//!
//! Stages follow k6's `stages: [{duration, target}]`: the number of virtual users moves
//! linearly from the previous stage's target (0 at the start) to this one's over its
//! duration. Each virtual user sends one request at a time, back to back. Bounded: loopback
//! only, at most 1000 virtual users, 10 minutes and 2 000 000 requests per run.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade::error::{BoxError, Rejection};
use palisade::http::ReplayBody;
use palisade::preset::{HttpClientLayer, HttpServerLayer};
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

const MAX_USERS: usize = 1000;
const MAX_DURATION: Duration = Duration::from_secs(600);
const MAX_REQUESTS: u64 = 2_000_000;

/// One stage: over `duration`, move to `target` virtual users.
#[derive(Clone, Copy, Debug)]
struct Stage {
    duration: Duration,
    target: usize,
}

fn parse_stages(text: &str) -> Result<Vec<Stage>, String> {
    let stages = text
        .split(',')
        .map(|stage| {
            let (duration, target) = stage
                .split_once(':')
                .ok_or_else(|| format!("stage {stage:?}: expected <duration>:<users>"))?;
            let seconds = duration
                .strip_suffix('s')
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| format!("stage {stage:?}: a duration is whole seconds, as 10s"))?;
            let target = target
                .parse::<usize>()
                .map_err(|_| format!("stage {stage:?}: users is a whole number"))?;
            if target > MAX_USERS {
                return Err(format!("stage {stage:?}: at most {MAX_USERS} users"));
            }
            Ok(Stage {
                duration: Duration::from_secs(seconds),
                target,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let total: Duration = stages.iter().map(|stage| stage.duration).sum();
    if total.is_zero() || total > MAX_DURATION {
        return Err(format!(
            "the stages last {total:?}: between 1 s and {MAX_DURATION:?}"
        ));
    }
    Ok(stages)
}

/// The virtual users wanted `elapsed` into the run.
fn users_at(stages: &[Stage], elapsed: Duration) -> Option<usize> {
    let mut from = 0usize;
    let mut start = Duration::ZERO;
    for stage in stages {
        let end = start + stage.duration;
        if elapsed < end {
            // Linear from `from` to the target, in integers: (to - from) * in / length.
            let (inside, length) = ((elapsed - start).as_nanos(), stage.duration.as_nanos());
            let (from_n, to_n) = (from as u128, stage.target as u128);
            let users = if to_n >= from_n {
                from_n + (to_n - from_n) * inside / length
            } else {
                from_n - (from_n - to_n) * inside / length
            };
            return Some(usize::try_from(users).unwrap_or(MAX_USERS));
        }
        from = stage.target;
        start = end;
    }
    None
}

/// How one request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Ending {
    Ok,
    ServerError,
    ClientError,
    TimedOut,
    Rejected,
    Transport,
}

impl Ending {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::ServerError => "5xx",
            Self::ClientError => "4xx",
            Self::TimedOut => "timed out",
            Self::Rejected => "rejected by palisade",
            Self::Transport => "transport error",
        }
    }
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    endings: std::collections::BTreeMap<Ending, u64>,
    checks_passed: u64,
}

type Stack = BoxCloneSyncService<http::Request<Full<Bytes>>, http::Response<Bytes>, BoxError>;

/// `service`, its response bodies collected.
fn collected<S, B>(service: S) -> Stack
where
    S: tower::Service<http::Request<Full<Bytes>>, Response = http::Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<BoxError>,
{
    BoxCloneSyncService::new(tower::service_fn(move |request| {
        let service = service.clone();
        async move {
            let response = service.oneshot(request).await.map_err(Into::into)?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(Into::into)?.to_bytes();
            Ok::<_, BoxError>(http::Response::from_parts(parts, body))
        }
    }))
}

/// The bare hyper-util client.
fn bare_client() -> Stack {
    collected(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>())
}

/// palisade's client preset over the same client: 1 s in all, 100 ms per attempt.
fn palisade_client() -> Stack {
    let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Full<Bytes>>>();
    collected(
        HttpClientLayer::new()
            .total_timeout(Duration::from_secs(1))
            .attempt_timeout(Duration::from_millis(100))
            .layer(client),
    )
}

/// Runs `stages` of virtual users against `url` through `stack`, and tallies every request.
async fn run(stack: Stack, url: &str, stages: &[Stage]) -> (Tally, Duration) {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let sent = Arc::new(AtomicU64::new(0));
    let wanted = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut users = Vec::new();
    while let Some(target) = users_at(stages, started.elapsed()) {
        wanted.store(target, Ordering::Relaxed);
        while users.len() < target {
            let id = users.len();
            let (stack, url) = (stack.clone(), url.to_owned());
            let (tally, sent, wanted) =
                (Arc::clone(&tally), Arc::clone(&sent), Arc::clone(&wanted));
            users.push(tokio::spawn(async move {
                // A user above the wanted count rests; it is woken again on a ramp up.
                loop {
                    if id >= wanted.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        if wanted.load(Ordering::Relaxed) == usize::MAX {
                            return;
                        }
                        continue;
                    }
                    if sent.fetch_add(1, Ordering::Relaxed) >= MAX_REQUESTS {
                        return;
                    }
                    let request = http::Request::get(&url)
                        .body(Full::new(Bytes::new()))
                        .expect("request");
                    let begun = Instant::now();
                    let result = stack.clone().oneshot(request).await;
                    let latency = begun.elapsed();
                    let ending = match &result {
                        Ok(response) if response.status().is_success() => Ending::Ok,
                        Ok(response) if response.status().is_server_error() => Ending::ServerError,
                        Ok(_) => Ending::ClientError,
                        Err(error) => match Rejection::find(&**error) {
                            Some(Rejection::TimedOut(_)) => Ending::TimedOut,
                            Some(_) => Ending::Rejected,
                            None => Ending::Transport,
                        },
                    };
                    // The check: a 2xx with a body.
                    let passed =
                        matches!(&result, Ok(r) if r.status().is_success() && !r.body().is_empty());
                    let mut tally = tally.lock().expect("tally");
                    tally
                        .latencies_us
                        .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
                    *tally.endings.entry(ending).or_default() += 1;
                    tally.checks_passed += u64::from(passed);
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    wanted.store(usize::MAX, Ordering::Relaxed);
    // Users finish the request they are in (each is bounded by its stack's timeout, or by the
    // target's own answer).
    for user in users {
        user.abort();
    }
    let tally = std::mem::take(&mut *tally.lock().expect("tally"));
    (tally, elapsed)
}

/// The latency below which `per_mille` thousandths of the requests finished.
fn percentile(sorted: &[u32], per_mille: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = (sorted.len() - 1) * per_mille / 1000;
    Duration::from_micros(u64::from(sorted[at]))
}

fn summary(title: &str, tally: &mut Tally, elapsed: Duration) {
    let requests: u64 = tally.endings.values().sum();
    tally.latencies_us.sort_unstable();
    let latencies = &tally.latencies_us;
    println!("\n  {title}");
    println!(
        "    requests ........ {requests} in {:.1}s, {:.0}/s",
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64()
    );
    println!(
        "    latency ......... p50 {:?}  p90 {:?}  p95 {:?}  p99 {:?}  max {:?}",
        percentile(latencies, 500),
        percentile(latencies, 900),
        percentile(latencies, 950),
        percentile(latencies, 990),
        percentile(latencies, 1000),
    );
    let failed = requests - tally.endings.get(&Ending::Ok).copied().unwrap_or(0);
    println!(
        "    errors .......... {:.2} % ({failed})",
        100.0 * failed as f64 / requests.max(1) as f64
    );
    for (ending, count) in &tally.endings {
        if *ending != Ending::Ok {
            println!("      {:<18} {count}", ending.label());
        }
    }
    println!(
        "    checks .......... {:.2} % passed ({} of {requests}: a 2xx with a body)",
        100.0 * tally.checks_passed as f64 / requests.max(1) as f64,
        tally.checks_passed
    );
}

/// The built-in target: about 2 ms per answer; 10 % answered `503`, 1 % stalled 3 s.
async fn target() -> Response {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(2)).await;
    match n % 100 {
        0 => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            "late".into_response()
        }
        1..=10 => (StatusCode::SERVICE_UNAVAILABLE, "overloaded").into_response(),
        _ => "ok".into_response(),
    }
}

async fn serve(port: u16, behind_palisade: bool) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("address");
    let mut app = Router::new().route("/", axum::routing::get(target));
    if behind_palisade {
        app = app.layer(HttpServerLayer::new());
    }
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

struct Options {
    stages: Vec<Stage>,
    url: Option<String>,
    palisade: bool,
    serve: Option<u16>,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        stages: parse_stages("5s:50,10s:50,5s:0")?,
        url: None,
        palisade: false,
        serve: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--stages" => options.stages = parse_stages(&value()?)?,
            "--url" => {
                let url = value()?;
                let uri: http::Uri = url.parse().map_err(|e| format!("--url {url:?}: {e}"))?;
                let host = uri.host().unwrap_or_default();
                if !matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1") {
                    return Err(format!("--url {url:?}: loopback only (127.0.0.1, ::1)"));
                }
                options.url = Some(url);
            }
            "--palisade" => options.palisade = true,
            "--serve" => {
                let port = value()?;
                options.serve = Some(
                    port.parse()
                        .map_err(|_| format!("--serve {port:?}: a port"))?,
                );
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(options)
}

#[tokio::main]
async fn main() {
    let options = match options() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("loadtest: {error}");
            std::process::exit(2);
        }
    };
    if let Some(port) = options.serve {
        let bare = serve(port, false).await;
        let guarded = serve(port.saturating_add(1), true).await;
        println!(
            "serving the target: bare on http://{bare}/, behind HttpServerLayer on http://{guarded}/"
        );
        println!("try: oha -z 20s -c 50 http://{guarded}/   (Ctrl-C to stop)");
        std::future::pending::<()>().await;
    }
    let stages: Vec<String> = options
        .stages
        .iter()
        .map(|stage| format!("{}s:{}", stage.duration.as_secs(), stage.target))
        .collect();
    println!("stages {}", stages.join(","));
    match options.url {
        Some(url) => {
            let (stack, title) = if options.palisade {
                (palisade_client(), "palisade client preset")
            } else {
                (bare_client(), "bare client")
            };
            let (mut tally, elapsed) = run(stack, &url, &options.stages).await;
            summary(&format!("{title} -> {url}"), &mut tally, elapsed);
        }
        None => {
            let addr = serve(0, false).await;
            let url = format!("http://{addr}/");
            println!("target {url}: ~2 ms per answer, 10 % 503, 1 % stalled 3 s");
            for (title, stack) in [
                ("bare hyper client", bare_client()),
                (
                    "palisade client preset (1 s total, 100 ms per attempt)",
                    palisade_client(),
                ),
            ] {
                let (mut tally, elapsed) = run(stack, &url, &options.stages).await;
                summary(title, &mut tally, elapsed);
            }
        }
    }
}
