//! The SWR cache through its public API, on paused tokio time: every phase at both sides of
//! its boundary, single flight under 1,000 concurrent callers (cold, expired and stale keys), a
//! leader dropped mid-fetch, stale-if-error, invalidation during a refresh, the leader-failure
//! policies, the lock timeout, TTL jitter and XFetch against their formulas, the marking of
//! stale-if-error answers, and bounded memory under a flood of keys.

mod support;

use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade::Ratio;
use palisade::cache::{Cache, CacheHandle, CacheLayer, LeaderFailed, LeaderFailure};
use palisade::error::{BoxError, Rejection};
use tokio::time::{advance, sleep};
use tower::{Layer, Service, ServiceExt};

const MS: Duration = Duration::from_millis(1);
const TTL: Duration = Duration::from_secs(10);

/// An origin that answers `"key#n"` for its n-th call, after `delay`, unless it is down.
#[derive(Clone, Default)]
struct Origin {
    calls: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
}

type Value = Arc<str>;

impl Service<u64> for Origin {
    type Response = Value;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Value, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, key: u64) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let down = self.down.load(Ordering::SeqCst);
        let delay = Duration::from_millis(self.delay_ms.load(Ordering::SeqCst));
        Box::pin(async move {
            if !delay.is_zero() {
                sleep(delay).await;
            }
            if down {
                Err("origin down".into())
            } else {
                Ok(Value::from(format!("{key}#{n}")))
            }
        })
    }
}

impl Origin {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap();
        self.delay_ms.store(ms, Ordering::SeqCst);
    }
}

type KeyOf = fn(&u64) -> Option<u64>;
type Svc = Cache<Origin, KeyOf, palisade::classify::DefaultClassifier, u64, Value>;

/// Keys below 1000 are cached; the rest pass through.
fn key_of(key: &u64) -> Option<u64> {
    (*key < 1000).then_some(*key)
}

/// A cache over `origin`: `ttl` 10 s, the windows given, no jitter and no early refresh
/// (tests that want them turn them on), as the service and its handle.
fn cache(origin: &Origin, swr: Duration, sie: Duration) -> (Svc, CacheHandle<u64, Value>) {
    let layer = CacheLayer::builder(TTL, key_of as KeyOf)
        .stale_while_revalidate(swr)
        .stale_if_error(sie)
        .ttl_jitter(Ratio::ZERO)
        .early_refresh(palisade::Factor::new_const(0.0))
        .build()
        .unwrap();
    let handle = layer.handle();
    (layer.layer(origin.clone()), handle)
}

async fn get(svc: &mut Svc, key: u64) -> Result<Value, BoxError> {
    svc.ready().await?.call(key).await
}

/// Lets spawned background work (refreshes) run to completion on paused time.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_hit_is_served_without_the_origin_and_an_unkeyed_request_passes_through() {
    support::init_tracing();
    let origin = Origin::default();
    let (mut svc, handle) = cache(&origin, Duration::ZERO, Duration::ZERO);
    assert_eq!(&*get(&mut svc, 1).await.unwrap(), "1#1");
    assert_eq!(&*get(&mut svc, 1).await.unwrap(), "1#1");
    assert_eq!(origin.calls(), 1);
    // Key function says `None`: never cached.
    assert_eq!(&*get(&mut svc, 5000).await.unwrap(), "5000#2");
    assert_eq!(&*get(&mut svc, 5000).await.unwrap(), "5000#3");
    let metrics = handle.metrics();
    assert_eq!(
        (metrics.hits, metrics.misses, metrics.entries),
        (1, 1, 1),
        "{metrics:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn each_phase_starts_exactly_at_its_boundary() {
    support::init_tracing();
    let origin = Origin::default();
    let swr = Duration::from_secs(5);
    let (mut svc, handle) = cache(&origin, swr, Duration::ZERO);
    get(&mut svc, 1).await.unwrap();
    // 1 ms before the end of freshness: a plain hit.
    advance(TTL - MS).await;
    assert_eq!(&*get(&mut svc, 1).await.unwrap(), "1#1");
    settle().await;
    assert_eq!(origin.calls(), 1, "fresh: no refresh");
    // At the boundary: stale, served at once, one background refresh.
    advance(MS).await;
    assert_eq!(&*get(&mut svc, 1).await.unwrap(), "1#1", "stale served");
    settle().await;
    assert_eq!(origin.calls(), 2, "one refresh");
    assert_eq!(
        &*get(&mut svc, 1).await.unwrap(),
        "1#2",
        "the refreshed value"
    );
    let metrics = handle.metrics();
    assert_eq!((metrics.stale_hits, metrics.refreshes), (1, 1));

    // A new entry, left alone past its stale window: 1 ms before its end, stale; at it, a
    // caller waits for a fetch.
    handle.invalidate(&1);
    get(&mut svc, 1).await.unwrap();
    let calls = origin.calls();
    advance(TTL + swr - MS).await;
    origin.set_delay(Duration::from_millis(50));
    let started = tokio::time::Instant::now();
    get(&mut svc, 1).await.unwrap();
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "1 ms before expiry: served stale"
    );
    settle().await;
    advance(Duration::from_millis(50)).await;
    settle().await;
    assert_eq!(origin.calls(), calls + 1);
    // The refresh made a new entry; expire that one whole.
    advance(TTL + swr).await;
    let started = tokio::time::Instant::now();
    get(&mut svc, 1).await.unwrap();
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(50),
        "expired: the caller waits for the fetch"
    );
}

/// Wraps a future, counting its polls.
struct Counted<F> {
    inner: Pin<Box<F>>,
    polls: Arc<AtomicUsize>,
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.inner.as_mut().poll(cx)
    }
}

/// Sends `n` concurrent requests for `key`, each future polled and counted; returns the answers
/// and the most polls any one future needed.
async fn stampede(svc: &Svc, key: u64, n: usize) -> (Vec<Result<Value, BoxError>>, usize) {
    let mut tasks = Vec::new();
    let mut counters = Vec::new();
    for _ in 0..n {
        let mut svc = svc.clone();
        let polls = Arc::new(AtomicUsize::new(0));
        counters.push(Arc::clone(&polls));
        let call = async move { svc.ready().await?.call(key).await };
        tasks.push(tokio::spawn(Counted {
            inner: Box::pin(call),
            polls,
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    let most = counters
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .max()
        .unwrap();
    (answers, most)
}

#[tokio::test(start_paused = true)]
async fn a_thousand_callers_on_a_cold_key_make_one_origin_call_and_wake_once() {
    support::init_tracing();
    let origin = Origin::default();
    origin.set_delay(Duration::from_millis(100));
    let (svc, handle) = cache(&origin, Duration::ZERO, Duration::ZERO);
    let (answers, most_polls) = stampede(&svc, 7, 1000).await;
    assert_eq!(origin.calls(), 1);
    assert!(answers.iter().all(|a| a.as_deref().ok() == Some("7#1")));
    // A waiter is polled when spawned, when the landing wakes it, and at most a couple of
    // times more for the timer registration: never in a loop.
    assert!(most_polls <= 4, "a future was polled {most_polls} times");
    let metrics = handle.metrics();
    assert_eq!((metrics.misses, metrics.coalesced), (1, 999), "{metrics:?}");
    assert_eq!(metrics.in_flight, 0);

    // The same on the key once expired (no stale window).
    advance(TTL).await;
    let (answers, _) = stampede(&svc, 7, 1000).await;
    assert_eq!(origin.calls(), 2);
    assert!(answers.iter().all(|a| a.as_deref().ok() == Some("7#2")));
}

#[tokio::test(start_paused = true)]
async fn a_thousand_callers_on_a_stale_key_wait_for_nothing_and_start_one_refresh() {
    support::init_tracing();
    let origin = Origin::default();
    let (mut svc, handle) = cache(&origin, Duration::from_secs(60), Duration::ZERO);
    get(&mut svc, 7).await.unwrap();
    advance(TTL).await;
    origin.set_delay(Duration::from_millis(100));
    let (answers, most_polls) = stampede(&svc, 7, 1000).await;
    assert!(answers.iter().all(|a| a.as_deref().ok() == Some("7#1")));
    assert_eq!(most_polls, 1, "a stale hit is ready at its first poll");
    advance(Duration::from_millis(100)).await;
    settle().await;
    assert_eq!(origin.calls(), 2, "exactly one background refresh");
    let metrics = handle.metrics();
    assert_eq!((metrics.stale_hits, metrics.coalesced), (1000, 0));
    assert_eq!(&*get(&mut svc, 7).await.unwrap(), "7#2");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_leader_hands_over_to_one_waiter() {
    support::init_tracing();
    let origin = Origin::default();
    origin.set_delay(Duration::from_millis(100));
    let (svc, _handle) = cache(&origin, Duration::ZERO, Duration::ZERO);
    let mut leader_svc = svc.clone();
    let leader = tokio::spawn(async move { get(&mut leader_svc, 3).await });
    settle().await;
    let waiters = tokio::spawn({
        let svc = svc.clone();
        async move { stampede(&svc, 3, 50).await }
    });
    settle().await;
    leader.abort();
    let _ = leader.await;
    advance(Duration::from_millis(100)).await;
    let (answers, _) = waiters.await.unwrap();
    assert_eq!(origin.calls(), 2, "the dropped leader's call and one more");
    assert!(answers.iter().all(|a| a.as_deref().ok() == Some("3#2")));
}

#[tokio::test(start_paused = true)]
async fn a_failing_origin_is_covered_by_stale_if_error_then_the_error_shows() {
    support::init_tracing();
    let origin = Origin::default();
    let swr = Duration::from_secs(5);
    let sie = Duration::from_secs(60);
    let (mut svc, handle) = cache(&origin, swr, sie);
    get(&mut svc, 1).await.unwrap();
    origin.set_down(true);
    // Stale: served, and the refresh fails.
    advance(TTL).await;
    assert_eq!(&*get(&mut svc, 1).await.unwrap(), "1#1");
    settle().await;
    assert_eq!(handle.metrics().refresh_failures, 1);
    // Expired, within stale-if-error: the failed fetch is answered with the old value.
    advance(swr).await;
    assert_eq!(&*get(&mut svc, 1).await.unwrap(), "1#1");
    assert_eq!(handle.metrics().stale_if_error, 1);
    // 1 ms before the end of stale-if-error, still covered; at it, the error.
    advance(sie - swr - MS).await;
    assert_eq!(&*get(&mut svc, 1).await.unwrap(), "1#1");
    advance(MS).await;
    let error = get(&mut svc, 1).await.unwrap_err();
    assert_eq!(error.to_string(), "origin down");
    // The origin is back: the next call fetches.
    origin.set_down(false);
    assert!(get(&mut svc, 1).await.unwrap().starts_with("1#"));
}

#[tokio::test(start_paused = true)]
async fn a_value_served_for_a_failure_is_marked_for_its_caller_and_its_waiters() {
    support::init_tracing();
    let origin = Origin::default();
    let layer = CacheLayer::builder(TTL, key_of as KeyOf)
        .stale_if_error(Duration::from_secs(60))
        .ttl_jitter(Ratio::ZERO)
        .early_refresh(palisade::Factor::new_const(0.0))
        .build::<u64, Value>()
        .unwrap()
        .mark_stale_if_error(|value: Value| Value::from(format!("{value} (stale)")));
    let mut svc = layer.layer(origin.clone());
    assert_eq!(
        &*get(&mut svc, 1).await.unwrap(),
        "1#1",
        "a fresh value is not marked"
    );
    origin.set_down(true);
    origin.set_delay(100 * MS);
    advance(TTL).await;
    let callers: Vec<_> = (0..5)
        .map(|_| {
            let mut svc = svc.clone();
            tokio::spawn(async move { get(&mut svc, 1).await })
        })
        .collect();
    for caller in callers {
        assert_eq!(&*caller.await.unwrap().unwrap(), "1#1 (stale)");
    }
    assert_eq!(origin.calls(), 2, "one failed fetch for the five");
}

#[tokio::test(start_paused = true)]
async fn an_invalidation_or_an_insert_during_a_refresh_wins() {
    support::init_tracing();
    let origin = Origin::default();
    let (mut svc, handle) = cache(&origin, Duration::from_secs(60), Duration::ZERO);
    get(&mut svc, 1).await.unwrap();
    get(&mut svc, 2).await.unwrap();
    advance(TTL).await;
    origin.set_delay(Duration::from_millis(100));
    // Both stale: each starts a refresh that takes 100 ms.
    get(&mut svc, 1).await.unwrap();
    get(&mut svc, 2).await.unwrap();
    settle().await;
    assert!(handle.invalidate(&1));
    assert!(handle.insert(2, Value::from("written")));
    advance(Duration::from_millis(100)).await;
    settle().await;
    assert_eq!(origin.calls(), 4, "both refreshes ran");
    assert!(!handle.contains(&1), "the invalidated key stays absent");
    assert_eq!(
        &*get(&mut svc, 2).await.unwrap(),
        "written",
        "the insert stays"
    );
}

#[tokio::test(start_paused = true)]
async fn an_invalidation_during_a_cold_fetch_keeps_its_result_out() {
    support::init_tracing();
    let origin = Origin::default();
    origin.set_delay(Duration::from_millis(100));
    let (svc, handle) = cache(&origin, Duration::ZERO, Duration::ZERO);
    let mut first = svc.clone();
    let fetch = tokio::spawn(async move { get(&mut first, 1).await });
    settle().await;
    handle.invalidate(&1);
    advance(Duration::from_millis(100)).await;
    assert_eq!(
        &*fetch.await.unwrap().unwrap(),
        "1#1",
        "the caller still gets it"
    );
    assert!(!handle.contains(&1), "but it is not stored");
}

#[tokio::test(start_paused = true)]
async fn waiters_behind_a_failed_fetch_share_the_failure_or_each_try_once() {
    support::init_tracing();
    for (policy, calls) in [(LeaderFailure::Share, 1), (LeaderFailure::EachTries, 11)] {
        let origin = Origin::default();
        origin.set_down(true);
        origin.set_delay(Duration::from_millis(10));
        let layer = CacheLayer::builder(TTL, key_of as KeyOf)
            .on_leader_failure(policy)
            .build()
            .unwrap();
        let svc: Svc = layer.layer(origin.clone());
        let (answers, _) = stampede(&svc, 1, 11).await;
        assert_eq!(origin.calls(), calls, "{policy:?}");
        assert!(answers.iter().all(Result::is_err));
        let shared = answers
            .iter()
            .filter_map(|a| a.as_ref().err())
            .filter(|e| matches!(Rejection::find(&***e), Some(Rejection::LeaderFailed(_))))
            .count();
        if policy == LeaderFailure::Share {
            assert_eq!(shared, 10);
            let one = answers[1..]
                .iter()
                .find_map(|a| a.as_ref().err()?.downcast_ref::<LeaderFailed>().cloned())
                .unwrap();
            assert_eq!(one.leader_error(), "origin down");
        } else {
            assert_eq!(shared, 0);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_waiter_past_the_lock_timeout_fetches_itself() {
    support::init_tracing();
    let origin = Origin::default();
    origin.set_delay(Duration::from_secs(10));
    let layer = CacheLayer::builder(TTL, key_of as KeyOf)
        .lock_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let svc: Svc = layer.layer(origin.clone());
    let mut leader = svc.clone();
    let _leader = tokio::spawn(async move { get(&mut leader, 1).await });
    settle().await;
    let mut waiter = svc.clone();
    let waiting = tokio::spawn(async move { get(&mut waiter, 1).await });
    settle().await;
    advance(Duration::from_millis(999)).await;
    settle().await;
    assert_eq!(origin.calls(), 1, "still waiting 1 ms before the timeout");
    advance(MS).await;
    settle().await;
    assert_eq!(origin.calls(), 2, "at the timeout the waiter calls itself");
    advance(Duration::from_secs(10)).await;
    assert_eq!(&*waiting.await.unwrap().unwrap(), "1#2");
}

#[tokio::test(start_paused = true)]
async fn ttl_jitter_spreads_expiry_over_its_range() {
    support::init_tracing();
    let origin = Origin::default();
    let layer = CacheLayer::builder(TTL, key_of as KeyOf)
        .ttl_jitter(Ratio::new_const(0.1))
        .early_refresh(palisade::Factor::new_const(0.0))
        .seed(7)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc: Svc = layer.layer(origin.clone());
    for key in 0..500 {
        get(&mut svc, key).await.unwrap();
    }
    // Count the entries still fresh as time passes: none expire before 9 s, all by 11 s, and
    // about half by 10 s (uniform over ±1 s).
    let fresh = |handle: &CacheHandle<u64, Value>| (0..500).filter(|k| handle.contains(k)).count();
    advance(Duration::from_millis(9_000) - MS).await;
    assert_eq!(fresh(&handle), 500);
    advance(Duration::from_millis(1_000)).await;
    let half = fresh(&handle);
    assert!((200..=300).contains(&half), "{half} of 500 left at 10 s");
    advance(Duration::from_millis(1_000)).await;
    assert_eq!(fresh(&handle), 0);
}

#[tokio::test(start_paused = true)]
async fn xfetch_refreshes_early_at_the_rate_of_its_formula() {
    support::init_tracing();
    // δ = 100 ms fetches, β = 1: at τ = 100 ms before expiry a hit refreshes with
    // probability e^-1 ≈ 0.368. Each trial uses its own key, read once at τ.
    let origin = Origin::default();
    origin.set_delay(Duration::from_millis(100));
    let layer = CacheLayer::builder(TTL, key_of as KeyOf)
        .ttl_jitter(Ratio::ZERO)
        .max_refreshes(NonZeroUsize::new(1000).unwrap())
        .seed(11)
        .build()
        .unwrap();
    let mut svc: Svc = layer.layer(origin.clone());
    let trials = 600;
    let mut fills = Vec::new();
    for key in 0..trials {
        let mut svc = svc.clone();
        fills.push(tokio::spawn(async move { get(&mut svc, key).await }));
    }
    advance(Duration::from_millis(100)).await;
    for fill in fills {
        fill.await.unwrap().unwrap();
    }
    let filled = origin.calls();
    assert_eq!(filled, 600);
    advance(TTL - Duration::from_millis(100)).await;
    for key in 0..trials {
        get(&mut svc, key).await.unwrap();
    }
    settle().await;
    let early = origin.calls() - filled;
    // Binomial(600, 0.368): mean 221, sd 11.8; ±4 sd.
    assert!(
        (174..=268).contains(&early),
        "{early} early refreshes of {trials}"
    );
}

#[tokio::test(start_paused = true)]
async fn background_refreshes_are_bounded_across_keys() {
    support::init_tracing();
    let origin = Origin::default();
    let layer = CacheLayer::builder(TTL, key_of as KeyOf)
        .stale_while_revalidate(Duration::from_secs(60))
        .ttl_jitter(Ratio::ZERO)
        .early_refresh(palisade::Factor::new_const(0.0))
        .max_refreshes(NonZeroUsize::new(8).unwrap())
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc: Svc = layer.layer(origin.clone());
    for key in 0..100 {
        get(&mut svc, key).await.unwrap();
    }
    advance(TTL + TTL / 10).await;
    origin.set_delay(Duration::from_secs(1));
    for key in 0..100 {
        get(&mut svc, key).await.unwrap();
    }
    settle().await;
    assert_eq!(
        origin.calls(),
        108,
        "8 refreshes at once; the other stale hits start none"
    );
    advance(Duration::from_secs(1)).await;
    settle().await;
    assert_eq!(handle.metrics().refreshes, 8);
    // A later stale hit of a key that got no slot starts its refresh then.
    get(&mut svc, 50).await.unwrap();
    settle().await;
    assert_eq!(origin.calls(), 109);
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_distinct_keys_stays_within_the_entry_bound() {
    support::init_tracing();
    let origin = Origin::default();
    let layer = CacheLayer::builder(TTL, |key: &u64| Some(*key))
        .max_entries(NonZeroUsize::new(100).unwrap())
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(origin.clone());
    for key in 0..10_000u64 {
        svc.ready().await.unwrap().call(key).await.unwrap();
    }
    let metrics = handle.metrics();
    assert!(metrics.entries <= 100, "{metrics:?}");
    assert!(metrics.evictions >= 9_900, "{metrics:?}");
}

#[tokio::test(start_paused = true)]
async fn a_value_heavier_than_the_entry_bound_passes_through_uncached() {
    support::init_tracing();
    let origin = Origin::default();
    let weigh: palisade::cache::WeightOf<u64, Value> =
        Arc::new(
            |_, value: &Value| {
                if value.starts_with("999#") { 1_000 } else { 1 }
            },
        );
    let layer = CacheLayer::builder(TTL, key_of as KeyOf)
        .max_weight(10_000)
        .max_entry_weight(100)
        .build_with(None, Some(weigh))
        .unwrap();
    let handle = layer.handle();
    let mut svc: Svc = layer.layer(origin.clone());
    get(&mut svc, 999).await.unwrap();
    get(&mut svc, 999).await.unwrap();
    get(&mut svc, 1).await.unwrap();
    get(&mut svc, 1).await.unwrap();
    assert_eq!(origin.calls(), 3, "the heavy value was fetched twice");
    let metrics = handle.metrics();
    assert_eq!(
        (metrics.uncached, metrics.entries, metrics.weight),
        (2, 1, 1)
    );
}

#[test]
fn out_of_range_settings_are_refused_by_name() {
    support::init_tracing();
    let setting = |result: Result<CacheLayer<KeyOf, _, u64, Value>, _>| match result {
        Err(
            palisade::error::ConfigError::DurationOutOfRange { setting, .. }
            | palisade::error::ConfigError::ShareOutOfRange { setting, .. }
            | palisade::error::ConfigError::CountOutOfRange { setting, .. }
            | palisade::error::ConfigError::Conflict { setting, .. },
        ) => setting,
        other => panic!("expected a config error, got {other:?}"),
    };
    let builder = || CacheLayer::builder(TTL, key_of as KeyOf);
    assert_eq!(
        setting(CacheLayer::builder(Duration::ZERO, key_of as KeyOf).build()),
        "ttl"
    );
    assert_eq!(
        setting(builder().lock_timeout(Duration::ZERO).build()),
        "lock_timeout"
    );
    assert_eq!(
        setting(
            builder()
                .early_refresh(palisade::Factor::new_const(101.0))
                .build()
        ),
        "early_refresh"
    );
    assert_eq!(setting(builder().max_weight(10).build()), "max_weight");
    assert_eq!(
        setting(builder().max_entry_weight(10).build()),
        "max_entry_weight"
    );
}

#[test]
fn a_stale_hit_with_no_runtime_left_is_served_without_a_refresh_or_a_panic() {
    support::init_tracing();
    let origin = Origin::default();
    let layer = CacheLayer::builder(MS, key_of as KeyOf)
        .stale_while_revalidate(Duration::from_secs(3600))
        .ttl_jitter(Ratio::ZERO)
        .build()
        .unwrap();
    let mut svc: Svc = layer.layer(origin.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        get(&mut svc, 1).await.unwrap();
    });
    drop(runtime);
    std::thread::sleep(Duration::from_millis(5));
    // Outside any runtime: the entry is stale, the refresh cannot be spawned.
    let mut answer = std::pin::pin!(svc.call(1));
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match answer.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(value)) => assert_eq!(&*value, "1#1"),
        other => panic!("expected the stale value at once, got {other:?}"),
    }
    assert_eq!(origin.calls(), 1, "no refresh started");
}

#[tokio::test(start_paused = true)]
async fn the_smallest_caches_still_store() {
    support::init_tracing();
    for max in [1, 2, 3, 7] {
        let origin = Origin::default();
        let layer = CacheLayer::builder(TTL, key_of as KeyOf)
            .max_entries(NonZeroUsize::new(max).unwrap())
            .build()
            .unwrap();
        let mut svc: Svc = layer.layer(origin.clone());
        get(&mut svc, 1).await.unwrap();
        get(&mut svc, 1).await.unwrap();
        assert_eq!(
            origin.calls(),
            1,
            "max_entries {max}: the second get is a hit"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_insert_during_a_fetch_outside_a_flight_wins() {
    support::init_tracing();
    // A waiter past the lock timeout fetches on its own; an insert while it does stays.
    let origin = Origin::default();
    origin.set_delay(Duration::from_secs(8));
    let layer = CacheLayer::builder(TTL, key_of as KeyOf)
        .lock_timeout(Duration::from_secs(5))
        .ttl_jitter(Ratio::ZERO)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc: Svc = layer.layer(origin.clone());
    let mut leader = svc.clone();
    let leading = tokio::spawn(async move { get(&mut leader, 1).await });
    settle().await;
    let mut waiter = svc.clone();
    let waiting = tokio::spawn(async move { get(&mut waiter, 1).await });
    settle().await;
    advance(Duration::from_secs(5)).await;
    settle().await;
    assert_eq!(origin.calls(), 2, "the waiter fetches on its own");
    assert!(handle.insert(1, Value::from("written")));
    advance(Duration::from_secs(8)).await;
    assert_eq!(&*waiting.await.unwrap().unwrap(), "1#2");
    let _ = leading.await;
    let mut reader = svc.clone();
    assert_eq!(
        &*get(&mut reader, 1).await.unwrap(),
        "written",
        "the insert stays"
    );
}

#[tokio::test(start_paused = true)]
async fn a_values_own_lifetime_is_jittered_only_shorter() {
    support::init_tracing();
    let origin = Origin::default();
    let ttl_of: palisade::cache::TtlOf<Value> = Arc::new(|_| Some(Duration::from_secs(2)));
    let layer = CacheLayer::builder(TTL, key_of as KeyOf)
        .ttl_jitter(Ratio::new_const(0.5))
        .early_refresh(palisade::Factor::new_const(0.0))
        .seed(3)
        .build_with(Some(ttl_of), None)
        .unwrap();
    let handle = layer.handle();
    let mut svc: Svc = layer.layer(origin.clone());
    for key in 0..200 {
        get(&mut svc, key).await.unwrap();
    }
    // Jittered over (1 s, 2 s]: all still fresh 1 ms before 1 s, none at 2 s.
    advance(Duration::from_secs(1) - MS).await;
    assert_eq!((0..200).filter(|k| handle.contains(k)).count(), 200);
    advance(Duration::from_secs(1) + MS).await;
    assert_eq!((0..200).filter(|k| handle.contains(k)).count(), 0);
}
